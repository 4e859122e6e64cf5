//! One member of a federated-training cluster, whatever the board: given an Ethernet
//! `phy::Device`, a millisecond clock and a text sink, it joins the cluster `build.rs`
//! describes (`cluster.rs`), trains its own shard of `asap_fed`'s problem between rounds,
//! averages at the end, evaluates, prints, and says whether it passed. Shared by
//! qemu-fed-m4 (Cortex-M4F, LAN9118) and qemu-virt-a53 (Cortex-A53, virtio-net)
//! through `#[path]`.
//!
//! The board stores no data: samples come from `(seed, rank, index)` as they are used.
//! Before each of the plan's training rounds it takes its local SGD steps, then mixes
//! its model with its neighbours through NOTIFY-ACK; the averaging rounds at the end
//! bring every member to the same model. It passes when it finished every round and its
//! held-out accuracy is within 1% of the centralised reference (trained on all shards by
//! build.rs on the host). It prints its final model as `model` lines (hex f32 bits) so
//! the test can check every member holds the same one.
//!
//! A board that was stopped and started again joins as a new incarnation (the caller
//! passes one that grew since its last start, see [`fresh_incarnation`]): its peers
//! forget what they had from its previous life, it learns from their frames how far the
//! cluster went while it was away and skips to that round (asap-core's catch-up), and it
//! takes its local steps for the round it is in. It prints `progress` lines as rounds
//! finish and, at the end, its counters (frames refused, and why) beside the model.

use core::fmt::Write;

use asap_core::topology::{Family, Topology, TopologySpec};
use asap_core::{Buffers, Config, Node, NodeId};
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketSet, SocketStorage};
use smoltcp::phy::Device;
use smoltcp::socket::udp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, IpEndpoint, Ipv4Address};
use static_cell::ConstStaticCell;
use transport_smoltcp::{Driver, Step};

use crate::cluster::{CLUSTER, MODEL, PEERS, PLAN, RANK, REFERENCE_ACCURACY, SEED, WORLD};

/// Most peers a node of this cluster has (its graph's degree is at most this).
const MAX_PEERS: usize = WORLD - 1;
/// UDP payloads each socket buffer holds, each way (frames keep arriving while the
/// board computes its local steps).
const RX_FRAMES: usize = 16;
const TX_FRAMES: usize = 4;
/// The address slirp (`-nic user`) gives the guest, and the host as the guest sees it.
const OWN_IP: [u8; 4] = [10, 0, 2, 15];
const GATEWAY: [u8; 4] = [10, 0, 2, 2];
/// Give up when the run takes longer (milliseconds).
const DEADLINE_MS: i64 = 240_000;
/// After the last round, keep answering peers' retransmissions this long.
const LINGER: Duration = Duration::from_millis(1_000);

const CONFIG: Config = Config::new(CLUSTER, NodeId(RANK), MODEL);
const CHUNKS: usize = MODEL.div_ceil(CONFIG.chunk_len());
const BITMAP_WORDS: usize = CHUNKS.div_ceil(32) * MAX_PEERS;
const FRAME: usize = CONFIG.max_frame;

// Static memory, taken once; `ConstStaticCell` keeps large values off the stack.
static STORAGE: ConstStaticCell<[SocketStorage<'static>; 1]> = ConstStaticCell::new([SocketStorage::EMPTY]);
static RX_META: ConstStaticCell<[udp::PacketMetadata; RX_FRAMES]> =
    ConstStaticCell::new([udp::PacketMetadata::EMPTY; RX_FRAMES]);
static RX_DATA: ConstStaticCell<[u8; RX_FRAMES * FRAME]> = ConstStaticCell::new([0; RX_FRAMES * FRAME]);
static TX_META: ConstStaticCell<[udp::PacketMetadata; TX_FRAMES]> =
    ConstStaticCell::new([udp::PacketMetadata::EMPTY; TX_FRAMES]);
static TX_DATA: ConstStaticCell<[u8; TX_FRAMES * FRAME]> = ConstStaticCell::new([0; TX_FRAMES * FRAME]);
static PARAMS: ConstStaticCell<[f32; MODEL]> = ConstStaticCell::new([0.0; MODEL]);
static SNAPSHOT: ConstStaticCell<[f32; MODEL]> = ConstStaticCell::new([0.0; MODEL]);
static ACCUMULATOR: ConstStaticCell<[f32; MODEL]> = ConstStaticCell::new([0.0; MODEL]);
static CHUNK_WEIGHTS: ConstStaticCell<[f32; CHUNKS]> = ConstStaticCell::new([0.0; CHUNKS]);
static CHUNK_BITS: ConstStaticCell<[u32; BITMAP_WORDS]> = ConstStaticCell::new([0; BITMAP_WORDS]);
static PEERS_TABLE: ConstStaticCell<[IpEndpoint; WORLD]> =
    ConstStaticCell::new([IpEndpoint::new(IpAddress::v4(0, 0, 0, 0), 0); WORLD]);
static TX: ConstStaticCell<[u8; FRAME]> = ConstStaticCell::new([0; FRAME]);

/// An incarnation no earlier start of this board had, from a clock of whole seconds
/// since 1970 (QEMU: the host's clock through semihosting SYS_TIME; a board with a
/// battery-backed RTC: that): the second it started in, counted from 2025-01-01, after
/// waiting for that second to pass, so a board started again at once still gets a
/// larger one. Costs at most a second at boot. A board without a clock that survives a
/// reset keeps a boot counter in flash instead, incremented and written back before it
/// joins.
pub fn fresh_incarnation(seconds: impl Fn() -> u32) -> u32 {
    const EPOCH_2025: u32 = 1_735_689_600;
    let mine = seconds();
    while seconds() == mine {}
    mine.saturating_sub(EPOCH_2025).max(1)
}

/// Prints `model` as lines `model OFFSET HEX...`, 64 values a line, each the 8 hex
/// digits of its f32 bits.
fn print_model(out: &mut dyn Write, model: &[f32]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = [0u8; 64 * 8];
    for (n, chunk) in model.chunks(64).enumerate() {
        for (v, slot) in chunk.iter().zip(hex.chunks_exact_mut(8)) {
            let bits = v.to_bits();
            for (k, digit) in slot.iter_mut().enumerate() {
                *digit = DIGITS[(bits >> (28 - 4 * k) & 0xf) as usize];
            }
        }
        let digits = core::str::from_utf8(&hex[..chunk.len() * 8]).unwrap_or("");
        let _ = writeln!(out, "model {} {}", n * 64, digits);
    }
}

/// Runs this member to the end on `device` (MAC address `mac`) as `incarnation` (new at
/// every start of the board); `clock` reads monotonic time. Returns whether it passed.
pub fn run<D: Device>(
    device: &mut D,
    mac: [u8; 6],
    clock: fn() -> Instant,
    incarnation: u32,
    out: &mut dyn Write,
) -> bool {
    let _ = writeln!(
        out,
        "board rank {}: incarnation {}, joining {} members",
        RANK, incarnation, WORLD
    );
    let mut iface = Interface::new(
        IfaceConfig::new(HardwareAddress::Ethernet(EthernetAddress(mac))),
        device,
        clock(),
    );
    let [a, b, c, d] = OWN_IP;
    iface.update_ip_addrs(|addrs| {
        let _ = addrs.push(IpCidr::new(IpAddress::v4(a, b, c, d), 24));
    });
    let [a, b, c, d] = GATEWAY;
    let _ = iface.routes_mut().add_default_ipv4_route(Ipv4Address::new(a, b, c, d));

    let storage = STORAGE.take();
    let rx_meta = RX_META.take();
    let rx_data = RX_DATA.take();
    let tx_meta = TX_META.take();
    let tx_data = TX_DATA.take();
    let mut sockets = SocketSet::new(&mut storage[..]);
    let mut socket = udp::Socket::new(
        udp::PacketBuffer::new(&mut rx_meta[..], &mut rx_data[..]),
        udp::PacketBuffer::new(&mut tx_meta[..], &mut tx_data[..]),
    );
    if socket.bind(PEERS[usize::from(RANK)].1).is_err() {
        let _ = writeln!(out, "cannot bind port {}", PEERS[usize::from(RANK)].1);
        return false;
    }
    let handle = sockets.add(socket);

    let params = PARAMS.take();
    let peers = PEERS_TABLE.take();
    for (slot, &([a, b, c, d], port)) in peers.iter_mut().zip(PEERS.iter()) {
        *slot = IpEndpoint::new(IpAddress::v4(a, b, c, d), port);
    }
    let mut scratch = [0.0f64; 3 * WORLD];
    let spec = TopologySpec {
        seed: SEED,
        ..TopologySpec::new(Family::Exponential, WORLD as u32)
    };
    let Ok(topology) = Topology::new(spec, &mut scratch) else {
        let _ = writeln!(out, "no exponential graph on {} nodes", WORLD);
        return false;
    };
    let buffers = Buffers {
        snapshot: SNAPSHOT.take(),
        accumulator: ACCUMULATOR.take(),
        chunk_weights: CHUNK_WEIGHTS.take(),
        chunk_bits: CHUNK_BITS.take(),
    };
    let start = asap_core::Instant::from_micros(clock().total_micros() as u64);
    let config = Config { incarnation, ..CONFIG };
    let node = match Node::<MAX_PEERS>::with_topology(config, &topology, buffers, start) {
        Ok(node) => node,
        Err(e) => {
            let _ = writeln!(out, "node: {}", e);
            return false;
        }
    };
    let Ok(mut driver) = Driver::new(node, handle, peers, TX.take()) else {
        let _ = writeln!(out, "driver: bad buffers");
        return false;
    };

    let problem = asap_fed::Problem::new(SEED, MODEL, WORLD as u32);
    let rank = u32::from(RANK);
    let total = PLAN.rounds();
    // Rounds the cluster finished as far as this node knows: the node's round, which
    // jumps ahead when it catches up after a restart.
    let mut round = 0u32;
    let mut local = Duration::ZERO;
    let mut train_end = None;
    let mut linger_until = None;
    // The local steps before round 1.
    let t = clock();
    PLAN.before_round(&problem, params, rank, 1);
    local += clock() - t;
    let started = clock();
    loop {
        let t = clock();
        driver.poll(t, &mut iface, device, &mut sockets);
        if round < total {
            let step = match driver.step(t, params) {
                Ok(step) => step,
                Err(e) => {
                    let _ = writeln!(out, "round {}: {:?}", round + 1, e);
                    break;
                }
            };
            if step == Step::Finished {
                round = driver.engine().round().min(total);
                let _ = writeln!(
                    out,
                    "progress round {} skipped {}",
                    round,
                    driver.engine().stats().rounds_skipped
                );
                if round >= PLAN.train_rounds && train_end.is_none() {
                    train_end = Some(clock());
                }
                if round == total {
                    linger_until = Some(clock() + LINGER);
                } else {
                    let t = clock();
                    PLAN.before_round(&problem, params, rank, round + 1);
                    local += clock() - t;
                }
            }
        }
        if linger_until.is_some_and(|end| t >= end) || t.total_millis() > DEADLINE_MS {
            break;
        }
    }
    let finished = clock() - LINGER;

    let t = clock();
    let end = problem.evaluate(params);
    let evaluation = clock() - t;
    let shard = problem.evaluate_shard(params, rank);
    let stats = *driver.engine().stats();
    let socket = driver.stats();
    let averaging_ms = (finished - train_end.unwrap_or(finished)).total_millis().max(1);
    let ok = round == total && (end.accuracy - REFERENCE_ACCURACY).abs() <= 0.01;
    print_model(out, params);
    let _ = writeln!(
        out,
        "board rank {}: counters: incarnation {}, rounds finished {}, rounds skipped {}, decode_errors {}, \
         frames_refused {}, auth_failures {}, replays {}, updates_rejected {}, stale {}, early {}, late {}, \
         driver refused {}, received {}",
        RANK,
        incarnation,
        stats.rounds,
        stats.rounds_skipped,
        stats.decode_errors,
        stats.frames_refused,
        stats.auth_failures,
        stats.replays,
        stats.updates_rejected,
        stats.stale,
        stats.early,
        stats.late,
        socket.refused,
        socket.received,
    );
    let _ = writeln!(
        out,
        "board rank {}: {} of {} rounds of {} values ({} training rounds of {} local steps, then {} averaging) \
         in {} ms; local steps {} ms; averaging rounds {:.1}/s; {} frames sent, {} received, {} refused, \
         {} chunks resent, {} peers down",
        RANK,
        round,
        total,
        MODEL,
        PLAN.train_rounds,
        PLAN.local_steps,
        PLAN.consensus_rounds,
        (finished - started).total_millis(),
        local.total_millis(),
        PLAN.consensus_rounds as f32 * 1000.0 / averaging_ms as f32,
        stats.frames_sent,
        stats.frames_received,
        socket.refused,
        stats.chunks_resent,
        stats.peers_down,
    );
    let _ = writeln!(
        out,
        "board rank {}: held-out accuracy {:.4} (loss {:.4}, {} ms to evaluate), own shard {:.4}, \
         reference on all shards {:.4}: {}",
        RANK,
        end.accuracy,
        end.loss,
        evaluation.total_millis(),
        shard.accuracy,
        REFERENCE_ACCURACY,
        if ok { "PASS" } else { "FAIL" }
    );
    ok
}

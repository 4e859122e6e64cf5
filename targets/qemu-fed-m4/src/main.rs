//! One member of a federated-training cluster on an emulated Cortex-M4F board: QEMU's
//! `mps2-an386`, its LAN9118 Ethernet on `-nic user` (slirp: the host's 127.0.0.1 is
//! 10.0.2.2 here), smoltcp and `transport-smoltcp`, beside `asap node --workload
//! federated` processes on the host.
//!
//! The board trains on its own shard of `asap_fed`'s problem (generated on the fly: it
//! stores no data): before each of the plan's training rounds it takes its local SGD
//! steps, then mixes its model with its neighbours through NOTIFY-ACK; the averaging
//! rounds at the end bring every member to the same model. It then evaluates that model
//! on the held-out set and exits through semihosting: 0 when it finished every round and
//! its accuracy is within 1% of the centralised reference (trained on all shards by
//! build.rs on the host). It prints its final model as `model` lines (hex f32 bits) so
//! that run.sh can check every member holds the same one.
//!
//! Rank, members' addresses, cluster id, seed, model size and plan come from build.rs
//! (environment variables, listed there and in targets/README.md).
#![no_std]
#![no_main]

#[path = "../../qemu-lan9118/src/lan9118.rs"]
mod lan9118;

mod cluster {
    include!(concat!(env!("OUT_DIR"), "/cluster.rs"));
}

use core::sync::atomic::{AtomicU32, Ordering};

use asap_core::topology::{Family, Topology, TopologySpec};
use asap_core::{Buffers, Config, Node, NodeId};
use cluster::{CLUSTER, MODEL, PEERS, PLAN, RANK, REFERENCE_ACCURACY, SEED, WORLD};
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::{entry, exception};
use cortex_m_semihosting::{debug, hio, hprintln};
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketSet, SocketStorage};
use smoltcp::socket::udp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, IpEndpoint, Ipv4Address};
use static_cell::ConstStaticCell;
use transport_smoltcp::{Driver, Step};

/// Most peers a node of this cluster has (its graph's degree is at most this).
const MAX_PEERS: usize = WORLD - 1;
/// UDP payloads each socket buffer holds, each way (frames keep arriving while the
/// board computes its local steps).
const RX_FRAMES: usize = 16;
const TX_FRAMES: usize = 4;
/// QEMU's `-nic user` default for the LAN9118.
const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
/// The mps2-an386 system clock.
const CPU_HZ: u32 = 25_000_000;
/// The address slirp gives the guest.
const OWN_IP: [u8; 4] = [10, 0, 2, 15];
/// Give up when the run takes longer (milliseconds).
const DEADLINE_MS: i64 = 240_000;
/// After the last round, keep answering peers' retransmissions this long.
const LINGER_MS: i64 = 1_000;

const CONFIG: Config = Config::new(CLUSTER, NodeId(RANK), MODEL);
const CHUNKS: usize = MODEL.div_ceil(CONFIG.chunk_len());
const BITMAP_WORDS: usize = CHUNKS.div_ceil(32) * MAX_PEERS;
const FRAME: usize = CONFIG.max_frame;

static MILLIS: AtomicU32 = AtomicU32::new(0);

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
static DEVICE: ConstStaticCell<lan9118::Lan9118> = ConstStaticCell::new(lan9118::Lan9118::new(MAC));

#[exception]
fn SysTick() {
    MILLIS.fetch_add(1, Ordering::Relaxed);
}

fn now() -> Instant {
    Instant::from_millis(i64::from(MILLIS.load(Ordering::Relaxed)))
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    hprintln!("panic: {}", info);
    debug::exit(debug::EXIT_FAILURE);
    loop {}
}

/// Prints `model` as lines `model OFFSET HEX...`, 64 values a line, each the 8 hex
/// digits of its f32 bits.
fn print_model(model: &[f32]) {
    let Ok(mut out) = hio::hstdout() else { return };
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut line = [0u8; 16 + 64 * 8 + 1];
    for (n, chunk) in model.chunks(64).enumerate() {
        let mut len = 0;
        let mut put = |b: u8, len: &mut usize| {
            line[*len] = b;
            *len += 1;
        };
        for &b in b"model " {
            put(b, &mut len);
        }
        let offset = n * 64;
        let mut div = 1_000_000;
        while div > 0 {
            put(b'0' + (offset / div % 10) as u8, &mut len);
            div /= 10;
        }
        put(b' ', &mut len);
        for v in chunk {
            let bits = v.to_bits();
            for shift in (0..8).rev() {
                put(DIGITS[(bits >> (4 * shift) & 0xf) as usize], &mut len);
            }
        }
        put(b'\n', &mut len);
        let _ = out.write_all(&line[..len]);
    }
}

#[entry]
fn main() -> ! {
    let mut core = cortex_m::Peripherals::take().unwrap();
    core.SYST.set_clock_source(SystClkSource::Core);
    core.SYST.set_reload(CPU_HZ / 1000 - 1);
    core.SYST.clear_current();
    core.SYST.enable_interrupt();
    core.SYST.enable_counter();

    let device = DEVICE.take();
    if let Err(lan9118::InitError::NotFound(test, id)) = device.init() {
        panic!("no LAN9118: BYTE_TEST {:#x}, ID_REV {:#x}", test, id);
    }
    let mut iface = Interface::new(
        IfaceConfig::new(HardwareAddress::Ethernet(EthernetAddress(device.mac()))),
        device,
        now(),
    );
    let [a, b, c, d] = OWN_IP;
    iface.update_ip_addrs(|addrs| {
        let _ = addrs.push(IpCidr::new(IpAddress::v4(a, b, c, d), 24));
    });
    let _ = iface.routes_mut().add_default_ipv4_route(Ipv4Address::new(10, 0, 2, 2));

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
    socket.bind(PEERS[usize::from(RANK)].1).unwrap();
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
        panic!("topology")
    };
    let buffers = Buffers {
        snapshot: SNAPSHOT.take(),
        accumulator: ACCUMULATOR.take(),
        chunk_weights: CHUNK_WEIGHTS.take(),
        chunk_bits: CHUNK_BITS.take(),
    };
    let start = asap_core::Instant::from_micros(now().total_micros() as u64);
    let node = Node::<MAX_PEERS>::with_topology(CONFIG, &topology, buffers, start).unwrap();
    let mut driver = Driver::new(node, handle, peers, TX.take()).unwrap();

    let problem = asap_fed::Problem::new(SEED, MODEL, WORLD as u32);
    let rank = u32::from(RANK);
    let total = PLAN.rounds();
    let mut round = 0u32;
    let mut local_ms = 0i64;
    let mut train_end_ms = 0i64;
    let mut linger_until = None;
    // The local steps before round 1.
    let t = now();
    PLAN.before_round(&problem, params, rank, 1);
    local_ms += (now() - t).total_millis() as i64;
    let started = now();
    loop {
        let t = now();
        driver.poll(t, &mut iface, device, &mut sockets);
        if round < total && driver.step(t, params).unwrap() == Step::Finished {
            round += 1;
            if round == PLAN.train_rounds {
                train_end_ms = (now() - started).total_millis() as i64;
            }
            if round == total {
                linger_until = Some(now() + smoltcp::time::Duration::from_millis(LINGER_MS as u64));
            } else {
                let t = now();
                PLAN.before_round(&problem, params, rank, round + 1);
                local_ms += (now() - t).total_millis() as i64;
            }
        }
        if linger_until.is_some_and(|end| t >= end) {
            break;
        }
        if t.total_millis() > DEADLINE_MS {
            break;
        }
    }
    let total_ms = (now() - started).total_millis() as i64 - LINGER_MS;

    let t = now();
    let end = problem.evaluate(params);
    let eval_ms = (now() - t).total_millis();
    let shard = problem.evaluate_shard(params, rank);
    let stats = *driver.engine().stats();
    let socket = driver.stats();
    let consensus_ms = (total_ms - train_end_ms).max(1);
    let ok = round == total && (end.accuracy - REFERENCE_ACCURACY).abs() <= 0.01;
    print_model(params);
    hprintln!(
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
        total_ms,
        local_ms,
        PLAN.consensus_rounds as f32 * 1000.0 / consensus_ms as f32,
        stats.frames_sent,
        stats.frames_received,
        socket.refused,
        stats.chunks_resent,
        stats.peers_down,
    );
    hprintln!(
        "board rank {}: held-out accuracy {:.4} (loss {:.4}, {} ms to evaluate), own shard {:.4}, \
         reference on all shards {:.4}: {}",
        RANK,
        end.accuracy,
        end.loss,
        eval_ms,
        shard.accuracy,
        REFERENCE_ACCURACY,
        if ok { "PASS" } else { "FAIL" }
    );
    debug::exit(if ok { debug::EXIT_SUCCESS } else { debug::EXIT_FAILURE });
    loop {}
}

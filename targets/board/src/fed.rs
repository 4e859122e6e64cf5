//! What every federated board shares, whatever its network loop: the node's static
//! memory and set-up, the training plan around the rounds, the incarnation, and the
//! report, for the cluster in [`crate::cluster`] (build.rs). Used by `member`
//! (a polled smoltcp loop: qemu-fed-m4, qemu-virt-a53) and nucleo-f767zi (embassy-net
//! and `transport-smoltcp`'s `AsyncDriver`).
//!
//! The board stores no data: samples come from `(seed, rank, index)` as they are used.
//! Before each of the plan's training rounds it takes its local SGD steps, then mixes
//! its model with its neighbours through NOTIFY-ACK; the averaging rounds at the end
//! bring every member to the same model. It passes when it finished every round and its
//! held-out accuracy is within 1% of the centralised reference (trained on all shards by
//! build.rs on the host). It prints its final model as `model` lines (hex f32 bits) so
//! a test can check every member holds the same one.
//!
//! Its functions are `#[inline]` so that the firmware calling them compiles them as its
//! own code, as it did when this file was its module (by `#[path]`): compiled in this
//! crate instead, LTO inlined differently and qemu-fed-m4's flash grew by ~500 B.

use core::fmt::Write;

use asap_core::topology::{Family, Topology, TopologySpec};
use asap_core::{Buffers, Config, Node, NodeId, Stats};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{IpAddress, IpEndpoint};
use static_cell::ConstStaticCell;
use transport_smoltcp::DriverStats;

use crate::cluster::{CLUSTER, MODEL, PEERS, PLAN, RANK, REFERENCE_ACCURACY, SEED, WORLD};

/// Most peers a node of this cluster has (its graph's degree is at most this).
pub const MAX_PEERS: usize = WORLD - 1;
/// After the last round, keep answering peers' retransmissions this long.
pub const LINGER: Duration = Duration::from_millis(1_000);

const CONFIG: Config = Config::new(CLUSTER, NodeId(RANK), MODEL);
const CHUNKS: usize = MODEL.div_ceil(CONFIG.chunk_len());
const BITMAP_WORDS: usize = CHUNKS.div_ceil(32) * MAX_PEERS;
/// The largest frame of this cluster: one socket buffer slot, the driver's frame buffers.
pub const FRAME: usize = CONFIG.max_frame;

// Static memory, taken once; `ConstStaticCell` keeps large values off the stack.
static PARAMS: ConstStaticCell<[f32; MODEL]> = ConstStaticCell::new([0.0; MODEL]);
static SNAPSHOT: ConstStaticCell<[f32; MODEL]> = ConstStaticCell::new([0.0; MODEL]);
static ACCUMULATOR: ConstStaticCell<[f32; MODEL]> = ConstStaticCell::new([0.0; MODEL]);
static CHUNK_WEIGHTS: ConstStaticCell<[f32; CHUNKS]> = ConstStaticCell::new([0.0; CHUNKS]);
static CHUNK_MASS: ConstStaticCell<[f32; 2 * CHUNKS]> = ConstStaticCell::new([0.0; 2 * CHUNKS]);
static CHUNK_BITS: ConstStaticCell<[u32; BITMAP_WORDS]> = ConstStaticCell::new([0; BITMAP_WORDS]);
static PEERS_TABLE: ConstStaticCell<[IpEndpoint; WORLD]> =
    ConstStaticCell::new([IpEndpoint::new(IpAddress::v4(0, 0, 0, 0), 0); WORLD]);
static TX: ConstStaticCell<[u8; FRAME]> = ConstStaticCell::new([0; FRAME]);

/// The port this board listens on (its own entry of the members' addresses).
#[inline]
pub fn own_port() -> u16 {
    PEERS[usize::from(RANK)].1
}

/// The members' endpoints in rank order (taken once).
#[inline]
pub fn peers() -> &'static mut [IpEndpoint; WORLD] {
    let peers = PEERS_TABLE.take();
    for (slot, &([a, b, c, d], port)) in peers.iter_mut().zip(PEERS.iter()) {
        *slot = IpEndpoint::new(IpAddress::v4(a, b, c, d), port);
    }
    peers
}

/// One frame's transmit buffer (taken once).
#[inline]
pub fn tx() -> &'static mut [u8; FRAME] {
    TX.take()
}

/// The model's values (taken once).
#[inline]
pub fn params() -> &'static mut [f32; MODEL] {
    PARAMS.take()
}

/// This member's node as `incarnation` on the cluster's exponential graph, started at
/// `start`; prints why not and returns `None` when it cannot be built.
#[inline]
pub fn node(incarnation: u32, start: Instant, out: &mut dyn Write) -> Option<Node<'static, MAX_PEERS>> {
    let _ = writeln!(
        out,
        "board rank {}: incarnation {}, joining {} members",
        RANK, incarnation, WORLD
    );
    const SPEC: TopologySpec = TopologySpec {
        seed: SEED,
        ..TopologySpec::new(Family::Exponential, WORLD as u32)
    };
    let mut scratch = [0.0f64; SPEC.scratch_len()];
    let Ok(topology) = Topology::new(SPEC, &mut scratch) else {
        let _ = writeln!(out, "no exponential graph on {} nodes", WORLD);
        return None;
    };
    let buffers = Buffers {
        snapshot: SNAPSHOT.take(),
        accumulator: ACCUMULATOR.take(),
        chunk_weights: CHUNK_WEIGHTS.take(),
        chunk_mass: CHUNK_MASS.take(),
        chunk_bits: CHUNK_BITS.take(),
    };
    let start = asap_core::Instant::from_micros(start.total_micros() as u64);
    let config = Config { incarnation, ..CONFIG };
    match Node::<MAX_PEERS>::with_topology(config, &topology, buffers, start) {
        Ok(node) => Some(node),
        Err(e) => {
            let _ = writeln!(out, "node: {}", e);
            None
        }
    }
}

/// An incarnation no earlier start of this board had, from a clock of whole seconds
/// since 1970 (QEMU: the host's clock through semihosting SYS_TIME; a board with a
/// battery-backed RTC: that): the second it started in, counted from 2025-01-01, after
/// waiting for that second to pass, so a board started again at once still gets a
/// larger one. Costs at most a second at boot. A board without a clock that survives a
/// reset keeps a boot counter in flash instead, incremented and written back before it
/// joins (nucleo-f767zi).
pub fn fresh_incarnation(seconds: impl Fn() -> u32) -> u32 {
    const EPOCH_2025: u32 = 1_735_689_600;
    let mine = seconds();
    while seconds() == mine {}
    mine.saturating_sub(EPOCH_2025).max(1)
}

/// Prints `model` as lines `model OFFSET HEX...`, 64 values a line, each the 8 hex
/// digits of its f32 bits.
#[inline]
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

/// The plan around the rounds: local steps before each training round, progress, timing.
pub struct Training {
    problem: asap_fed::Problem,
    /// Rounds the cluster finished as far as this node knows: the node's round, which
    /// jumps ahead when it catches up after a restart.
    round: u32,
    local: Duration,
    train_end: Option<Instant>,
    started: Instant,
    clock: fn() -> Instant,
}

impl Training {
    /// Takes the local steps before round 1; `clock` reads monotonic time.
    #[inline]
    pub fn new(params: &mut [f32], clock: fn() -> Instant) -> Self {
        let problem = asap_fed::Problem::new(SEED, MODEL, WORLD as u32);
        let t = clock();
        PLAN.before_round(&problem, params, u32::from(RANK), 1);
        let local = clock() - t;
        Training {
            problem,
            round: 0,
            local,
            train_end: None,
            started: clock(),
            clock,
        }
    }

    /// Whether every round of the plan finished.
    #[inline]
    pub fn done(&self) -> bool {
        self.round >= PLAN.rounds()
    }

    /// A round finished and the node is now at `node_round` (its round counter: more
    /// than one past the last when it caught up), having skipped `skipped` in all:
    /// prints the progress and takes the local steps for the next round, if any.
    #[inline]
    pub fn finished_round(&mut self, params: &mut [f32], node_round: u32, skipped: u64, out: &mut dyn Write) {
        let clock = self.clock;
        self.round = node_round.min(PLAN.rounds());
        let _ = writeln!(out, "progress round {} skipped {}", self.round, skipped);
        if self.round >= PLAN.train_rounds && self.train_end.is_none() {
            self.train_end = Some(clock());
        }
        if !self.done() {
            let t = clock();
            PLAN.before_round(&self.problem, params, u32::from(RANK), self.round + 1);
            self.local += clock() - t;
        }
    }

    /// Evaluates the model on the held-out set and prints the model, the counters and the
    /// report; `finished` is when the last round ended. Returns whether the member passed.
    #[inline]
    pub fn report(
        &self,
        params: &[f32],
        incarnation: u32,
        stats: &Stats,
        socket: DriverStats,
        finished: Instant,
        out: &mut dyn Write,
    ) -> bool {
        let clock = self.clock;
        let t = clock();
        let end = self.problem.evaluate(params);
        let evaluation = clock() - t;
        let shard = self.problem.evaluate_shard(params, u32::from(RANK));
        let total = PLAN.rounds();
        let averaging_ms = (finished - self.train_end.unwrap_or(finished)).total_millis().max(1);
        let ok = self.round == total && (end.accuracy - REFERENCE_ACCURACY).abs() <= 0.01;
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
            self.round,
            total,
            MODEL,
            PLAN.train_rounds,
            PLAN.local_steps,
            PLAN.consensus_rounds,
            (finished - self.started).total_millis(),
            self.local.total_millis(),
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
}

//! `pair`: nodes 0 and 1 (each the other's only peer, weight 1/2, a 200-value model in
//! two chunks of 512-byte frames) run their application loop over a channel the fuzz
//! bytes control: each frame is delivered, dropped, duplicated or delayed; the clock
//! moves by fuzzed steps; the application waits, takes local steps or restarts a node
//! (a new incarnation, parameters kept).
//!
//! While the bytes last: nothing panics, every transmitted frame is well formed, and
//! both replicas stay finite. When they run out, the channel turns clean (every frame
//! delivered at the next step, 1 ms later) and the applications act at once: within
//! [`CLEAN_TIME`] both nodes must finish at least [`CLEAN_ROUNDS`] more rounds and
//! agree within 1e-4 (they average). The clean phase steps 1 ms while frames are in
//! flight, and otherwise straight to the nodes' next deadline (at least 1 ms on): with
//! nothing in flight and the applications done acting, nothing happens before it, and
//! waiting out a peer timeout takes one step instead of thousands.

use arbitrary::{Arbitrary, Unstructured};
use asap_core::{Config, Duration, Instant, Node, NodeId, Reducer};

use crate::common::{self, Mem, MAX_FRAME};

/// `ASAP_FUZZ_TRACE=1`: print every step of the scenario (to read a failing input).
fn tracing() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("ASAP_FUZZ_TRACE").is_some())
}

macro_rules! trace {
    ($($arg:tt)*) => {
        if tracing() {
            eprintln!($($arg)*);
        }
    };
}

/// A frame in one line: sender → receiver, round, kind.
fn describe(bytes: &[u8]) -> String {
    match asap_core::wire::decode(bytes) {
        Ok((f, _)) => {
            let h = f.header;
            format!("{}→{} r{} i{} {:?}", h.from.0, h.to.0, h.round, h.incarnation, h.kind)
        }
        Err(e) => format!("{e:?}"),
    }
}

const MODEL: usize = 200;
const CHUNKS: u32 = 2;
const T0: Instant = Instant::from_millis(1_000);
/// Fuzzed steps at most (the rest of the bytes is ignored).
const FUZZ_STEPS: usize = 2_000;
/// Most frames a node writes in one batch (`poll_transmit_batch`).
const BATCH: usize = 4;
/// Time the pair gets on the clean channel to recover and agree (20,000 steps of 1 ms
/// at most).
pub const CLEAN_TIME: Duration = Duration::from_millis(20_000);
/// Longest step of the clean phase: while frames are in flight, and when no node has
/// a deadline.
const CLEAN_TICK: Duration = Duration::from_millis(1);
/// Rounds each node must finish in the clean phase.
pub const CLEAN_ROUNDS: u64 = 3;
const TOLERANCE: f32 = 1e-4;

/// What happens to one transmitted frame.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Fate {
    Deliver,
    Drop,
    Duplicate,
    /// Delivered `2 + k % 64` steps later (instead of the next step).
    Delay(u8),
}

/// How far the clock moves in one fuzzed step.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Tick {
    Millis(u8),
    /// Hundreds of milliseconds: retransmission backoff, peer timeouts.
    Long(u8),
    /// To the earlier of the nodes' deadlines.
    Deadline,
}

/// What one node's application does in one fuzzed step.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum App {
    /// Finish the round if it is ready, else start one if allowed.
    Act,
    /// Nothing this step.
    Wait,
    /// A local step: `params[i % 200] += delta / 64`, then act.
    Step(u8, i8),
    /// The node restarts (a new incarnation, same parameters), then acts.
    Restart,
}

struct Wire {
    due: usize,
    to: usize,
    bytes: Vec<u8>,
}

fn config(id: usize, incarnation: u32) -> Config {
    Config {
        incarnation,
        ..common::config(NodeId(id as u16), MODEL)
    }
}

/// The target body.
pub fn run(data: &[u8]) {
    scenario(data);
}

/// Runs one scenario; returns the rounds each node finished while the fuzz bytes lasted
/// (the seed generator ranks inputs by them).
pub fn scenario(data: &[u8]) -> [u64; 2] {
    let mut u = Unstructured::new(data);
    let mut mems = [Mem::new(&config(0, 0), 1), Mem::new(&config(1, 0), 1)];
    let [m0, m1] = &mut mems;
    let peers = [common::peers_of(NodeId(0)), common::peers_of(NodeId(1))];
    let mut nodes = [
        Some(Node::<4>::new(config(0, 0), &peers[0], m0.buffers(), T0).expect("node 0")),
        Some(Node::<4>::new(config(1, 0), &peers[1], m1.buffers(), T0).expect("node 1")),
    ];
    let mut incarnation = [0u32; 2];
    let offset = f32::from(u.arbitrary::<i8>().unwrap_or(0));
    let mut params: [Vec<f32>; 2] = [
        (0..MODEL).map(|i| i as f32 / 4.0).collect(),
        (0..MODEL).map(|i| offset - i as f32 / 8.0).collect(),
    ];
    let mut wires: Vec<Wire> = Vec::new();
    // Room for batches of up to `BATCH` frames; the input's length picks the cap (so
    // the bytes of saved inputs keep their meaning).
    let mut buf = vec![0u8; BATCH * MAX_FRAME];
    let max_segments = u.len() % BATCH + 1;
    let mut now = T0;
    let mut step = 0usize;

    // Phase 1: the fuzz bytes decide.
    while !u.is_empty() && step < FUZZ_STEPS {
        let t: Tick = u.arbitrary().unwrap_or(Tick::Millis(1));
        now = match t {
            Tick::Millis(ms) => now + Duration::from_millis(u64::from(ms)),
            Tick::Long(k) => now + Duration::from_millis(100 * u64::from(k % 32)),
            Tick::Deadline => nodes
                .iter()
                .filter_map(|n| n.as_ref().and_then(Node::poll_timeout))
                .min()
                .map_or(now, |d| d.max(now)),
        };
        trace!("-- step {step} at {now} ({t:?})");
        deliver(&mut nodes, &mut wires, step, now);
        timers(&mut nodes, now);
        for k in 0..2 {
            let app: App = u.arbitrary().unwrap_or(App::Act);
            trace!("   app {k}: {app:?}");
            match app {
                App::Act => act(&mut nodes[k], &mut params[k], now),
                App::Wait => {}
                App::Step(i, d) => {
                    params[k][usize::from(i) % MODEL] += f32::from(d) / 64.0;
                    act(&mut nodes[k], &mut params[k], now);
                }
                // Known bug: a restart in the middle of an update can deadlock the pair.
                App::Restart if crate::AVOID_KNOWN_BUGS => act(&mut nodes[k], &mut params[k], now),
                App::Restart => {
                    let buffers = nodes[k].take().expect("node present").into_buffers();
                    incarnation[k] += 1;
                    let node = Node::<4>::new(config(k, incarnation[k]), &peers[k], buffers, now);
                    nodes[k] = Some(node.expect("restarted node"));
                    act(&mut nodes[k], &mut params[k], now);
                }
            }
        }
        for (k, node) in nodes.iter_mut().enumerate() {
            transmit(node, k, now, &mut buf, max_segments, |bytes, to| {
                let fate: Fate = u.arbitrary().unwrap_or(Fate::Deliver);
                trace!("   send {} {fate:?}", describe(bytes));
                let mut send = |due| {
                    wires.push(Wire {
                        due,
                        to,
                        bytes: bytes.to_vec(),
                    })
                };
                match fate {
                    Fate::Deliver => send(step + 1),
                    Fate::Drop => {}
                    Fate::Duplicate => {
                        send(step + 1);
                        send(step + 1);
                    }
                    Fate::Delay(d) => send(step + 2 + usize::from(d % 64)),
                }
            });
        }
        step += 1;
    }

    // Phase 2: a clean channel; both nodes must make progress and agree.
    let start = [0, 1].map(|k| nodes[k].as_ref().expect("node").stats().rounds);
    let fuzz_steps = step;
    let fuzzed_rounds = start;
    trace!("== clean phase");
    let clean_start = now;
    let end = now + CLEAN_TIME;
    while now < end {
        // The next step: 1 ms on while frames are in flight (they arrive then) or no
        // node has a deadline, else the earlier deadline if it comes later than that.
        let tick = now + CLEAN_TICK;
        let deadline = nodes
            .iter()
            .filter_map(|n| n.as_ref().and_then(Node::poll_timeout))
            .min();
        now = match deadline {
            Some(d) if wires.is_empty() => d.max(tick).min(end),
            _ => tick,
        };
        trace!("-- step {step} at {now}");
        deliver(&mut nodes, &mut wires, step, now);
        timers(&mut nodes, now);
        for (node, params) in nodes.iter_mut().zip(params.iter_mut()) {
            act(node, params, now);
        }
        for (k, node) in nodes.iter_mut().enumerate() {
            transmit(node, k, now, &mut buf, max_segments, |bytes, to| {
                trace!("   send {}", describe(bytes));
                wires.push(Wire {
                    due: step + 1,
                    to,
                    bytes: bytes.to_vec(),
                })
            });
        }
        step += 1;
        let rounds = [0, 1].map(|k| nodes[k].as_ref().expect("node").stats().rounds - start[k]);
        let agree = params[0]
            .iter()
            .zip(&params[1])
            .all(|(&a, &b)| common::close(a, b, TOLERANCE));
        if rounds.iter().all(|&r| r >= CLEAN_ROUNDS) && agree {
            return fuzzed_rounds;
        }
    }
    let rounds = [0, 1].map(|k| nodes[k].as_ref().expect("node").stats().rounds - start[k]);
    let worst = params[0]
        .iter()
        .zip(&params[1])
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let state = [0, 1].map(|k| {
        let n = nodes[k].as_ref().expect("node");
        (
            n.round(),
            n.is_started(),
            n.is_ready(),
            n.can_start_round(),
            n.peer(NodeId(1 - k as u16)),
        )
    });
    panic!(
        "after {fuzz_steps} fuzzed steps, {} clean steps over {}: rounds finished {rounds:?}, \
         largest difference {worst}; nodes (round, started, ready, can_start, peer): {state:?}",
        step - fuzz_steps,
        now - clean_start
    );
}

/// Hands every frame due by `step` to its receiver.
fn deliver(nodes: &mut [Option<Node<'_, 4>>; 2], wires: &mut Vec<Wire>, step: usize, now: Instant) {
    let mut i = 0;
    while i < wires.len() {
        if wires[i].due <= step {
            let w = wires.remove(i);
            let node = nodes[w.to].as_mut().expect("node");
            let result = node.handle_frame(now, &w.bytes);
            trace!("   recv {} → {result:?}", describe(&w.bytes));
        } else {
            i += 1;
        }
    }
}

/// `handle_timeout` for each node whose deadline passed.
fn timers(nodes: &mut [Option<Node<'_, 4>>; 2], now: Instant) {
    for node in nodes.iter_mut().flatten() {
        if node.poll_timeout().is_some_and(|d| d <= now) {
            trace!("   timeout {}", node.id().0);
            node.handle_timeout(now);
        }
    }
}

/// The application's loop body: start a round when allowed, finish it when ready.
fn act(node: &mut Option<Node<'_, 4>>, params: &mut [f32], now: Instant) {
    let node = node.as_mut().expect("node");
    let advance = node.advance_round(now, params, true).expect("finite parameters");
    if let Some(round) = advance.started {
        trace!("   {} start round {round}", node.id().0);
    }
    if let Some(finished) = advance.finished {
        trace!("   {} finish {finished:?} → round {}", node.id().0, node.round());
        if let Some(i) = params.iter().position(|v| !v.is_finite()) {
            panic!("node {}: replica[{i}] = {} after a round", node.id().0, params[i]);
        }
    }
}

/// Sends everything node `k` has to send, checking each frame; drains its events.
fn transmit(
    node: &mut Option<Node<'_, 4>>,
    k: usize,
    now: Instant,
    buf: &mut [u8],
    max_segments: usize,
    mut send: impl FnMut(&[u8], usize),
) {
    let node = node.as_mut().expect("node");
    let me = NodeId(k as u16);
    for sent in 0.. {
        let Some(t) = node
            .poll_transmit_batch(now, buf, max_segments)
            .expect("buffer of max_frame")
        else {
            break;
        };
        assert!(t.segments() <= max_segments, "{t:?}: more than {max_segments} segments");
        // Each segment is a datagram of its own, as the receiver's GRO splits a batch.
        for segment in t.frames(buf) {
            common::check_transmit(segment, me, t.to, CHUNKS, false);
            send(segment, usize::from(t.to.0));
        }
        assert!(sent < 256, "poll_transmit never runs dry");
    }
    while let Some(e) = node.poll_event() {
        trace!("   event {k}: {e:?}");
    }
}

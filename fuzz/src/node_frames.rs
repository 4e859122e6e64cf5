//! `node_frames`: one node (id 1, peer 0 both ways with weight 1/2, a 300-value model
//! in three chunks of 512-byte frames) driven by a fuzzed sequence of operations: raw
//! bytes as a frame, well-formed frames built from fuzzed header fields, time passing,
//! and the application starting and finishing rounds. The first byte picks the mode: its
//! low bit the wait policy, all (plain averaging) or none (asynchronous rounds, which run
//! push-sum: weights are shares of a mass, set aside for busy edges and taken back); bit
//! 1 elastic membership (push-sum in exact rounds, the peer counted once heard from,
//! late updates mixed); bit 2 with it, joining (no mass until the model came).
//!
//! After every operation: nothing panicked; the parameters the application holds after a
//! successful `finish_round` are finite (and the push-sum mass); a failed call left them alone; the round never
//! goes back; every frame `poll_transmit` writes decodes, fits 512 bytes and carries
//! finite values; and after the timers that are due were handled and the frames sent,
//! the next deadline lies in the future (a run loop never spins). Once the node left it
//! sends only Leave frames, has no deadline and starts no round; a drained node runs
//! no round.

use arbitrary::{Arbitrary, Unstructured};
use asap_core::wire::{self, Encoding, Header, Integrity, Kind};
use asap_core::{Config, Duration, Instant, Node, NodeId, Reducer, RoundError, Stats, Wait};

use crate::common::{self, Mem, CLUSTER, MAX_FRAME};

const MODEL: usize = 300;
/// 116 values a chunk (512 − 42 − 4 bytes), so 116 + 116 + 68.
const CHUNK_LEN: usize = 116;
const CHUNKS: u32 = 3;
const ME: NodeId = NodeId(1);
const T0: Instant = Instant::from_millis(1_000);
/// A sequence longer than this is cut (keeps every run short).
const MAX_OPS: usize = 256;
/// With `avoid-known-bugs`: frames name no round above this (a node made to catch up
/// to round `u32::MAX` overflowed `round + 1`, bug 2, fixed; and finishing round
/// `u32::MAX` goes back to a caught-up round, bug 5, fixed: fuzz/README.md).
const ROUND_CAP: u32 = u32::MAX - (1 << 20);

/// One step of the scenario.
#[derive(Arbitrary, Debug)]
pub enum Op {
    /// Arbitrary bytes handed to `handle_frame`.
    Raw(Vec<u8>),
    /// A well-formed frame (right CRC) built from fuzzed fields.
    Frame(FrameSpec),
    /// A well-formed frame with one byte flipped afterwards.
    Flipped { frame: FrameSpec, at: u16, xor: u8 },
    /// Time passes; then `handle_timeout`.
    Advance(Tick),
    /// `start_round` with the held parameters, some values replaced (maybe by NaN or
    /// infinity: then the call must fail and the held parameters stay as they were).
    Start { edits: Vec<(u16, f32)>, short: Option<u8> },
    /// Local steps (finite edits only), then `finish_round`.
    Finish { edits: Vec<(u16, f32)> },
    /// `poll_transmit` and `poll_event` until both are empty.
    Drain,
    /// Local steps (any values before a round starts, finite ones while it runs), then
    /// `Reducer::advance_round` (start a round when allowed if `start`, finish it when
    /// ready).
    AdvanceRound { start: bool, edits: Vec<(u16, f32)> },
    /// `Node::leave`: from then on the node sends nothing but Leave frames and has no
    /// deadline.
    Leave,
    /// `record_local_step`.
    LocalStep,
}

/// How far the clock moves.
#[derive(Arbitrary, Debug)]
pub enum Tick {
    Micros(u16),
    Millis(u16),
    Secs(u8),
    /// To the node's next deadline (no move when it has none or it passed).
    Deadline,
}

/// Header fields of a well-formed frame.
#[derive(Arbitrary, Debug)]
pub struct FrameSpec {
    kind: KindSpec,
    round: RoundSpec,
    /// Sender: `from % 3` (0 the peer, 1 the node itself, 2 a stranger).
    from: u8,
    /// Receiver; `None` is the node.
    to: Option<u16>,
    /// Cluster; `None` is the node's (9).
    cluster: Option<u32>,
    /// Sender's incarnation; `None` is 0.
    incarnation: Option<u32>,
    payload: PayloadSpec,
}

/// The frame's round, near the node's or anywhere.
#[derive(Arbitrary, Debug)]
pub enum RoundSpec {
    /// The node's current round plus this (saturating).
    Near(i8),
    /// Any round.
    Abs(u32),
}

/// Every `Kind`, with its fields mostly right (so frames get past the layout checks)
/// and sometimes anything.
#[derive(Arbitrary, Debug)]
pub enum KindSpec {
    Hello {
        model_len: Option<u32>,
        chunk_len: Option<u32>,
        reply: bool,
    },
    Update {
        /// Below `0xf000_0000`: `chunk % 4`; above: as is.
        chunk: u32,
        chunks: Option<u32>,
        weight: WeightSpec,
    },
    Notify {
        chunks: Option<u32>,
    },
    Ack,
    Missing {
        /// Below `0xf000_0000`: `base % 4`; above: as is.
        base: u32,
        mask: u64,
    },
    Heartbeat,
    Barrier,
    Leave,
}

/// An update's mixing weight.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum WeightSpec {
    /// The configured 1/2.
    Half,
    /// Any bit pattern.
    Bits(f32),
}

/// An update's values: a fill, then patches of any bit pattern.
#[derive(Arbitrary, Debug)]
pub struct PayloadSpec {
    /// `None`: as many values as the chunk holds; `Some(n)`: `n` values.
    len: Option<u8>,
    /// Every value is `fill / 16`.
    fill: i16,
    patches: Vec<(u8, f32)>,
}

fn small_or_any(v: u32, modulus: u32) -> u32 {
    if v < 0xf000_0000 {
        v % modulus
    } else {
        v
    }
}

fn chunk_values(chunk: u32) -> usize {
    let start = (chunk as usize).saturating_mul(CHUNK_LEN).min(MODEL);
    (start + CHUNK_LEN).min(MODEL) - start
}

impl FrameSpec {
    fn encode(&self, node_round: u32) -> Vec<u8> {
        let (kind, values) = match self.kind {
            KindSpec::Hello {
                model_len,
                chunk_len,
                reply,
            } => (
                Kind::Hello {
                    model_len: model_len.unwrap_or(MODEL as u32),
                    chunk_len: chunk_len.unwrap_or(CHUNK_LEN as u32),
                    encoding: asap_core::wire::Encoding::F32Le,
                    reply,
                },
                0,
            ),
            KindSpec::Update { chunk, chunks, weight } => {
                let chunk = small_or_any(chunk, 4);
                let weight = match weight {
                    WeightSpec::Half => 0.5,
                    WeightSpec::Bits(w) => w,
                };
                let kind = Kind::Update {
                    chunk,
                    chunks: chunks.unwrap_or(CHUNKS),
                    weight,
                    encoding: Encoding::F32Le,
                };
                let n = self.payload.len.map_or(chunk_values(chunk), usize::from);
                (kind, n)
            }
            KindSpec::Notify { chunks } => (
                Kind::Notify {
                    chunks: chunks.unwrap_or(CHUNKS),
                },
                0,
            ),
            KindSpec::Ack => (Kind::Ack, 0),
            KindSpec::Missing { base, mask } => (
                Kind::Missing {
                    base: small_or_any(base, 4),
                    mask,
                },
                0,
            ),
            KindSpec::Heartbeat => (Kind::Heartbeat, 0),
            KindSpec::Barrier => (Kind::Barrier, 0),
            KindSpec::Leave => (Kind::Leave, 0),
        };
        let round = match self.round {
            RoundSpec::Near(d) => node_round.saturating_add_signed(i32::from(d)),
            RoundSpec::Abs(r) if crate::AVOID_KNOWN_BUGS => r.min(ROUND_CAP),
            RoundSpec::Abs(r) => r,
        };
        let header = Header {
            version: wire::VERSION,
            integrity: Integrity::Crc32,
            cluster: self.cluster.unwrap_or(CLUSTER),
            from: NodeId(u16::from(self.from % 3)),
            incarnation: self.incarnation.unwrap_or(0),
            to: NodeId(self.to.unwrap_or(ME.0)),
            round,
            kind,
            payload_len: 0,
        };
        let mut payload = vec![f32::from(self.payload.fill) / 16.0; values];
        if !payload.is_empty() {
            for &(i, v) in &self.payload.patches {
                let n = payload.len();
                payload[usize::from(i) % n] = v;
            }
        }
        let mut buf = vec![0u8; wire::MAX_HEADER_LEN + 4 * payload.len() + wire::CRC_LEN];
        let n = wire::encode(header, &payload, &mut buf).expect("buffer sized for the frame");
        buf.truncate(n);
        buf
    }
}

fn tick(now: Instant, t: &Tick, deadline: Option<Instant>) -> Instant {
    match *t {
        Tick::Micros(us) => now + Duration::from_micros(u64::from(us)),
        Tick::Millis(ms) => now + Duration::from_millis(u64::from(ms)),
        Tick::Secs(s) => now + Duration::from_secs(u64::from(s)),
        Tick::Deadline => deadline.map_or(now, |d| d.max(now)),
    }
}

/// Sends everything the node has to send, checking each frame; then drains events.
fn drain(node: &mut Node<'_, 4>, now: Instant, buf: &mut [u8]) {
    let push_sum = node.config().wait == Wait::None || node.config().elastic;
    for sent in 0.. {
        match node.poll_transmit(now, buf) {
            Ok(Some(t)) => {
                common::check_transmit(&buf[..t.len], ME, t.to, CHUNKS, push_sum);
                if node.has_left() {
                    let kind = wire::decode(&buf[..t.len]).map(|(f, _)| f.header.kind);
                    assert_eq!(kind, Ok(Kind::Leave), "a node that left sent something else");
                }
            }
            Ok(None) => break,
            Err(e) => panic!("poll_transmit with a {MAX_FRAME}-byte buffer: {e}"),
        }
        assert!(sent < 256, "poll_transmit never runs dry");
    }
    for n in 0.. {
        if node.poll_event().is_none() {
            break;
        }
        assert!(n <= asap_core::EVENT_CAPACITY, "poll_event never runs dry");
    }
}

/// The target body.
pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let config = Config {
        wait: if mode & 1 == 1 { Wait::None } else { Wait::All },
        elastic: mode & 2 != 0,
        join: mode & 6 == 6,
        ..common::config(ME, MODEL)
    };
    let Ok(ops) = Vec::<Op>::arbitrary_take_rest(Unstructured::new(rest)) else {
        return;
    };
    run_ops_with(&ops[..ops.len().min(MAX_OPS)], config);
}

/// Runs one scenario waiting for every update; returns the node's counters (the seed
/// generator ranks inputs by them).
pub fn run_ops(ops: &[Op]) -> Stats {
    run_ops_with(ops, common::config(ME, MODEL))
}

/// Runs one scenario on a node configured as `config`.
pub fn run_ops_with(ops: &[Op], config: Config) -> Stats {
    let mut mem = Mem::new(&config, 1);
    let mut node = Node::<4>::new(config, &common::peers_of(ME), mem.buffers(), T0).expect("fixture node");
    assert_eq!(node.layout().chunks, CHUNKS as usize);
    assert_eq!(config.chunk_len(), CHUNK_LEN);

    let mut now = T0;
    let mut params: Vec<f32> = (0..MODEL).map(|i| i as f32 / 8.0).collect();
    let mut buf = vec![0u8; MAX_FRAME];
    let mut round = node.round();
    for op in ops {
        match op {
            Op::Raw(bytes) => {
                let far = wire::peek(bytes).is_ok_and(|(h, _)| h.round > ROUND_CAP);
                if !(crate::AVOID_KNOWN_BUGS && far) {
                    let _ = node.handle_frame(now, bytes);
                }
            }
            Op::Frame(spec) => {
                let _ = node.handle_frame(now, &spec.encode(node.round()));
            }
            Op::Flipped { frame, at, xor } => {
                let mut bytes = frame.encode(node.round());
                let n = bytes.len();
                bytes[usize::from(*at) % n] ^= xor;
                let _ = node.handle_frame(now, &bytes);
            }
            Op::Advance(t) => {
                now = tick(now, t, node.poll_timeout());
                node.handle_timeout(now);
            }
            Op::Start { edits, short } => {
                let mut candidate = params.clone();
                for &(i, v) in edits {
                    candidate[usize::from(i) % MODEL] = v;
                }
                if let Some(len) = short {
                    let got = usize::from(*len);
                    let result = node.start_round(now, &candidate[..got]);
                    assert!(result.is_err(), "start_round took {got} of {MODEL} values");
                } else {
                    let finite = candidate.iter().all(|v| v.is_finite());
                    match node.start_round(now, &candidate) {
                        Ok(()) => {
                            assert!(finite, "start_round accepted non-finite parameters");
                            params = candidate;
                        }
                        Err(RoundError::NonFiniteParams) => assert!(!finite),
                        Err(_) => {}
                    }
                }
            }
            Op::Finish { edits } => {
                for &(i, v) in edits {
                    if v.is_finite() {
                        params[usize::from(i) % MODEL] = v;
                    }
                }
                let before = params.clone();
                let ready = node.is_ready();
                match node.finish_round(now, &mut params) {
                    Ok(_) => {
                        assert!(ready, "finish_round succeeded while not ready");
                        if let Some(i) = params.iter().position(|v| !v.is_finite()) {
                            panic!("params[{i}] = {} after finish_round", params[i]);
                        }
                        let mass = node.mass();
                        assert!(mass.is_finite() && mass >= 0.0, "push-sum mass {mass}");
                    }
                    Err(e) => {
                        let same = params.iter().zip(&before).all(|(a, b)| a.to_bits() == b.to_bits());
                        assert!(same, "finish_round failed ({e}) and changed the parameters");
                    }
                }
            }
            Op::Drain => {
                drain(&mut node, now, &mut buf);
                // What a run loop does next: handle the timers that are due, send, and
                // sleep until the next deadline, which must then lie ahead.
                if node.poll_timeout().is_some_and(|d| d <= now) {
                    node.handle_timeout(now);
                    drain(&mut node, now, &mut buf);
                    if let Some(d) = node.poll_timeout() {
                        assert!(
                            d > now,
                            "deadline {d} not after now {now} once handled: a run loop would spin"
                        );
                    }
                }
            }
            Op::AdvanceRound { start, edits } => {
                // While a round runs the application's steps are finite (the round it
                // finishes mixes into them); a new round may be offered anything.
                let was_started = node.is_started();
                let mut candidate = params.clone();
                for &(i, v) in edits.iter().filter(|e| !was_started || e.1.is_finite()) {
                    candidate[usize::from(i) % MODEL] = v;
                }
                let finite = candidate.iter().all(|v| v.is_finite());
                match node.advance_round(now, &mut candidate, *start) {
                    Ok(advance) => {
                        if advance.started.is_some() {
                            assert!(*start && !was_started, "advance_round started a round unasked");
                            assert!(finite, "advance_round started from non-finite parameters");
                        }
                        if advance.finished.is_some() || advance.started.is_some() {
                            if let Some(i) = candidate.iter().position(|v| !v.is_finite()) {
                                panic!("params[{i}] = {} after advance_round", candidate[i]);
                            }
                            params = candidate;
                        }
                    }
                    Err(RoundError::NonFiniteParams) => assert!(!finite && !was_started),
                    Err(e) => panic!("advance_round: {e}"),
                }
            }
            Op::Leave => {
                node.leave(now);
                assert_eq!(node.can_start_round(), Err(RoundError::Left));
            }
            Op::LocalStep => {
                node.record_local_step();
            }
        }
        assert!(
            node.round() >= round,
            "round went back from {round} to {}",
            node.round()
        );
        round = node.round();
        assert!(params.iter().all(|v| v.is_finite()), "held parameters not finite");
        if node.has_left() {
            assert_eq!(node.poll_timeout(), None, "a node that left has a deadline");
            assert!(!node.is_started());
        }
        assert!(!(node.is_drained() && node.is_started()), "drained while a round runs");
    }
    drain(&mut node, now, &mut buf);
    *node.stats()
}

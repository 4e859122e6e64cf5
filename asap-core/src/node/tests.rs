//! Transitions that need the node's inside. Fixture: this node ("b", id 1) and its
//! only neighbour "a" (id 0), weight 1/2; frames of at most 512 bytes, so a 300-value
//! model travels as 3 chunks (116 + 116 + 68 values). Frames from "a" are built by
//! hand, in any incarnation.

use super::*;
use crate::time::Duration;
use crate::wire::{Encoding, Header, Integrity, Kind};

const MODEL: usize = 300;
const CHUNKS: u32 = 3;
const A: NodeId = NodeId(0);
const B: NodeId = NodeId(1);
const T0: Instant = Instant::from_millis(1_000);

struct Mem {
    snapshot: [f32; MODEL],
    acc: [f32; MODEL],
    weights: [f32; CHUNKS as usize],
    mass: [f32; 2 * CHUNKS as usize],
    bits: [u32; 1],
}

impl Mem {
    fn new() -> Self {
        Mem {
            snapshot: [0.0; MODEL],
            acc: [0.0; MODEL],
            weights: [0.0; CHUNKS as usize],
            mass: [0.0; 2 * CHUNKS as usize],
            bits: [0; 1],
        }
    }

    fn node(&mut self, wait: Wait, staleness: Option<u32>) -> Node<'_, 2> {
        let config = Config {
            max_frame: 512,
            wait,
            staleness,
            ..Config::new(9, B, MODEL)
        };
        let buffers = Buffers {
            snapshot: &mut self.snapshot,
            accumulator: &mut self.acc,
            chunk_weights: &mut self.weights,
            chunk_mass: &mut self.mass,
            chunk_bits: &mut self.bits,
        };
        Node::new(config, &[PeerSpec::both(A, 0.5)], buffers, T0).unwrap()
    }
}

/// Hands `node` a frame from "a" in its life `incarnation`.
fn from_a<const P: usize>(node: &mut Node<'_, P>, now: Instant, incarnation: u32, round: u32, kind: Kind) {
    from_peer(node, now, A, incarnation, round, kind);
}

/// Hands `node` a frame from `from` in its life `incarnation`.
fn from_peer<const P: usize>(
    node: &mut Node<'_, P>,
    now: Instant,
    from: NodeId,
    incarnation: u32,
    round: u32,
    kind: Kind,
) {
    let mut buf = [0u8; 512];
    let len = frame(&mut buf, from, incarnation, round, kind);
    node.handle_frame(now, &buf[..len]).unwrap();
}

/// Writes a frame from `from` to "b" into `buf` (an update carries 1s); returns its length.
fn frame(buf: &mut [u8], from: NodeId, incarnation: u32, round: u32, kind: Kind) -> usize {
    let values = [1.0f32; 116];
    let values = match kind {
        Kind::Update { chunk: 2, .. } => &values[..68],
        Kind::Update { .. } => &values[..],
        _ => &values[..0],
    };
    let header = Header {
        version: wire::VERSION,
        integrity: Integrity::Crc32,
        cluster: 9,
        from,
        incarnation,
        to: B,
        round,
        kind,
        payload_len: 0,
    };
    wire::encode(header, values, buf).unwrap()
}

fn update(chunk: u32) -> Kind {
    Kind::Update {
        chunk,
        chunks: CHUNKS,
        weight: 0.5,
        encoding: Encoding::F32Le,
    }
}

const HELLO: Kind = Kind::Hello {
    model_len: MODEL as u32,
    chunk_len: 116,
    encoding: Encoding::F32Le,
    reply: true,
};
const NOTIFY: Kind = Kind::Notify { chunks: CHUNKS };

/// The frames `node` sends now: (kind, round).
fn sent<const P: usize>(node: &mut Node<'_, P>, now: Instant) -> Vec<(Kind, u32), 16> {
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    while let Some(t) = node.poll_transmit(now, &mut buf).unwrap() {
        let (frame, _) = wire::decode(&buf[..t.len]).unwrap();
        out.push((frame.header.kind, frame.header.round)).unwrap();
    }
    out
}

/// Regression (simulator seeds 4300 and 7501, `Wait::Barrier` with a crash): "a"
/// crashed after "b" had folded part of its round-1 update, and came back counting
/// from round 0. Its round-0 update is for a round "b" passed: "b" must acknowledge
/// it, or "a" never starts round 1 and the barrier of "b"'s round 1, which waits for
/// "a" to reach it, never opens. Before the fix the partial update of the old life
/// made round 0 look stale: ignored, no ACK, a deadlock.
#[test]
fn restarted_peer_is_acknowledged_past_a_superseded_partial_update() {
    let mut mem = Mem::new();
    let mut b = mem.node(Wait::Barrier, None);
    let mut params = [0.0f32; MODEL];
    // Round 0 with "a" in its first life.
    from_a(&mut b, T0, 0, 0, HELLO);
    b.start_round(T0, &params).unwrap();
    for c in 0..CHUNKS {
        from_a(&mut b, T0, 0, 0, update(c));
    }
    from_a(&mut b, T0, 0, 0, NOTIFY);
    b.finish_round(T0, &mut params).unwrap();
    from_a(&mut b, T0, 0, 0, Kind::Ack);
    sent(&mut b, T0);
    // Round 1: one chunk of "a"'s update arrives, then "a" crashes.
    b.start_round(T0, &params).unwrap();
    from_a(&mut b, T0, 0, 1, update(0));
    sent(&mut b, T0);
    assert!(!b.is_ready());

    // "a" is back, in its second life, and sends its round-0 update.
    let folded = b.stats().chunks_folded;
    let t1 = T0 + Duration::from_millis(500);
    from_a(&mut b, t1, 1, 0, HELLO);
    for c in 0..CHUNKS {
        from_a(&mut b, t1, 1, 0, update(c));
    }
    from_a(&mut b, t1, 1, 0, NOTIFY);
    let out = sent(&mut b, t1);
    assert!(
        out.contains(&(Kind::Ack, 0)),
        "round 0 of the new life acknowledged: {out:?}"
    );
    assert_eq!(b.stats().chunks_folded, folded, "passed over, not mixed");
    assert!(!b.is_ready(), "the barrier waits for \"a\" to reach round 1");

    // Acknowledged, "a" starts round 1: the barrier opens. What arrived of the old
    // life's update is mixed; the new one is acknowledged and dropped.
    for c in 0..CHUNKS {
        from_a(&mut b, t1, 1, 1, update(c));
    }
    from_a(&mut b, t1, 1, 1, NOTIFY);
    assert!(b.is_ready());
    let done = b.finish_round(t1, &mut params).unwrap();
    assert_eq!(done.round, 1);
    assert!(sent(&mut b, t1).contains(&(Kind::Ack, 1)));
    assert_eq!(b.round(), 2);
}

/// Bounded staleness (`s` = 2, waiting for at least one update): "b" restarted and
/// is far behind "a", which the bound holds back. "b" moves up to
/// `s` rounds behind "a" instead of redoing the rounds one by one, does not wait for
/// an update "a" cannot send before "b" moves, and tells "a" each round it starts.
#[test]
fn staleness_a_node_far_behind_catches_up_and_does_not_wait_for_who_waits_for_it() {
    let mut mem = Mem::new();
    let mut b = mem.node(Wait::AtLeast(1), Some(2));
    let mut params = [0.0f32; MODEL];
    from_a(&mut b, T0, 0, 0, HELLO);
    // "a" started round 20 (21 rounds): "b", between rounds, moves to round 19.
    from_a(&mut b, T0, 0, 21, Kind::Heartbeat);
    assert_eq!(b.round(), 19);
    assert_eq!(b.stats().rounds_skipped, 18);
    b.start_round(T0, &params).unwrap();
    assert!(sent(&mut b, T0).contains(&(NOTIFY, 19)));
    // "a" may start round 21 now (19 + 2), and "b" waits for its update...
    assert!(!b.is_ready());
    // ...until "a" started round 21: it can start no other before "b" moves, so
    // "b" does not wait for it.
    from_a(&mut b, T0, 0, 22, Kind::Heartbeat);
    assert!(b.is_ready());
    b.finish_round(T0, &mut params).unwrap();
    sent(&mut b, T0);
    // Its update to "a" is delivered, not consumed yet: "b" starts round 20
    // without sending "a" a new one, and says so with a heartbeat.
    from_a(&mut b, T0, 0, 19, Kind::Missing { base: 0, mask: 0 });
    b.start_round(T0, &params).unwrap();
    assert_eq!(sent(&mut b, T0).as_slice(), &[(Kind::Heartbeat, 21)]);
}

/// `Wait::None` on a time-varying graph (one-peer exponential, 4 nodes: "b" hears
/// "a" in even rounds): "b" finishes each round as it starts it, so "a"'s update of
/// round 0 comes after "b" passed round 0. It is mixed at the next finish, not
/// dropped as late (which dropped every update: the mode never mixed anything).
#[test]
fn wait_none_on_a_time_varying_graph_mixes_what_arrives_late() {
    use crate::topology::{Family, TopologySpec};
    let mut scratch = [0.0f64; 12];
    let topology = Topology::new(TopologySpec::new(Family::OnePeerExponential, 4), &mut scratch).unwrap();
    let (mut snapshot, mut acc) = ([0.0f32; MODEL], [0.0f32; MODEL]);
    let (mut weights, mut bits) = ([0.0f32; CHUNKS as usize], [0u32; 3]);
    let mut mass = [0.0f32; 2 * CHUNKS as usize];
    let buffers = Buffers {
        snapshot: &mut snapshot,
        accumulator: &mut acc,
        chunk_weights: &mut weights,
        chunk_mass: &mut mass,
        chunk_bits: &mut bits,
    };
    let config = Config {
        max_frame: 512,
        wait: Wait::None,
        ..Config::new(9, B, MODEL)
    };
    let mut b = Node::<4>::with_topology(config, &topology, buffers, T0).unwrap();
    let mut params = [0.0f32; MODEL];
    b.start_round(T0, &params).unwrap();
    assert!(b.is_ready(), "waits for nothing");
    b.finish_round(T0, &mut params).unwrap();
    sent(&mut b, T0);
    // Node 2, which "b" sends to in round 0, has the whole update.
    from_peer(&mut b, T0, NodeId(2), 0, 0, Kind::Missing { base: 0, mask: 0 });
    // "a"'s round-0 update (every value 1.0, weight 1/2) arrives in round 1.
    for c in 0..CHUNKS {
        from_a(&mut b, T0, 0, 0, update(c));
    }
    from_a(&mut b, T0, 0, 0, NOTIFY);
    assert_eq!(b.stats().chunks_folded, u64::from(CHUNKS));
    b.start_round(T0, &params).unwrap();
    let done = b.finish_round(T0, &mut params).unwrap();
    assert_eq!(done.updates, 1);
    // Push-sum (asynchronous rounds): "b" gave half its mass to 2 in round 0 and half
    // of what was left to 3 now, keeping 1/4; "a"'s update weighs 1/2. The mix is
    // mass-weighted: (1/4·0 + 1/2·1) / (3/4).
    assert!(params.iter().all(|&x| (x - 2.0 / 3.0).abs() < 1e-6), "{params:?}");
    assert!((b.mass() - 0.75).abs() < 1e-6, "mass {}", b.mass());
    assert!(sent(&mut b, T0).contains(&(Kind::Ack, 0)));
}

/// A receiver that is busy with its round answers NOTIFYs with "nothing missing",
/// and the sender's timer backs off (up to `retransmit_max`). Once the receiver
/// started a later round it has consumed the update and ACKed it; if that ACK was
/// lost, the sender asks again as soon as it hears of the later round, not when its
/// backed-off timer fires.
#[test]
fn lost_ack_is_asked_for_again_once_the_receiver_moved_on() {
    let mut mem = Mem::new();
    let mut b = mem.node(Wait::All, None);
    let params = [2.0f32; MODEL];
    from_a(&mut b, T0, 0, 0, HELLO);
    b.start_round(T0, &params).unwrap();
    let out = sent(&mut b, T0);
    assert_eq!(out.iter().filter(|f| f.0 == NOTIFY).count(), 1);
    // "a" is busy for a second: every NOTIFY of "b" is answered with nothing missing,
    // and the timer doubles each time.
    let (mut now, mut last) = (T0, T0);
    let mut gaps = [Duration::ZERO; 6];
    for gap in gaps.iter_mut() {
        // Heartbeats go out between the NOTIFYs.
        loop {
            now = b.poll_timeout().unwrap();
            b.handle_timeout(now);
            if sent(&mut b, now).contains(&(NOTIFY, 0)) {
                break;
            }
        }
        *gap = now - last;
        last = now;
        from_a(&mut b, now, 0, 0, Kind::Missing { base: 0, mask: 0 });
    }
    assert!(gaps.windows(2).all(|w| w[1] > w[0]), "backs off: {gaps:?}");
    let backed_off = b.peers[0].out.deadline().unwrap() - now;
    assert!(backed_off >= Duration::from_millis(500), "{backed_off}");

    // "a" finished its round 0 (its ACK is lost) and starts round 1: its barrier or
    // heartbeat says it started 2 rounds. "b" asks again at once.
    let t1 = now + Duration::from_millis(3);
    from_a(&mut b, t1, 0, 2, Kind::Heartbeat);
    assert_eq!(sent(&mut b, t1).as_slice(), &[(NOTIFY, 0)]);
    let retry = b.peers[0].out.deadline().unwrap();
    assert!(
        retry < t1 + Duration::from_millis(100),
        "the timeout restarts from the round trip"
    );
    from_a(&mut b, t1, 0, 0, Kind::Ack);
    assert!(b.peer(A).unwrap().send_idle);

    // A peer still in the update's round says nothing new: no extra NOTIFY.
    let mut mem = Mem::new();
    let mut b = mem.node(Wait::All, None);
    from_a(&mut b, T0, 0, 0, HELLO);
    b.start_round(T0, &params).unwrap();
    sent(&mut b, T0);
    from_a(&mut b, T0, 0, 1, Kind::Heartbeat);
    assert!(sent(&mut b, T0).is_empty());
}

/// A start refused for non-finite parameters has overwritten the snapshot as it checked
/// it (the copy and the check are one pass): the last round's update is gone, so a
/// peer that restarts between rounds is not sent what the snapshot now holds.
#[test]
fn a_refused_start_leaves_no_update_to_resend() {
    let updates_after_restart = |refuse: bool| {
        let mut mem = Mem::new();
        let mut b = mem.node(Wait::All, None);
        let mut params = [0.0f32; MODEL];
        from_a(&mut b, T0, 0, 0, HELLO);
        b.start_round(T0, &params).unwrap();
        for c in 0..CHUNKS {
            from_a(&mut b, T0, 0, 0, update(c));
        }
        from_a(&mut b, T0, 0, 0, NOTIFY);
        b.finish_round(T0, &mut params).unwrap();
        sent(&mut b, T0);
        from_a(&mut b, T0, 0, 0, Kind::Ack);
        if refuse {
            params[200] = f32::NAN;
            assert_eq!(b.start_round(T0, &params), Err(RoundError::NonFiniteParams));
            assert!(!b.is_started());
        }
        // "a" restarts, as a new incarnation.
        from_a(&mut b, T0, 1, 0, HELLO);
        let frames = sent(&mut b, T0);
        frames.iter().filter(|(k, _)| matches!(k, Kind::Update { .. })).count()
    };
    assert_eq!(updates_after_restart(false), CHUNKS as usize, "round 0's update again");
    assert_eq!(updates_after_restart(true), 0);
}

/// Fuzz regression (`node_frames`, 2026-12-03): an edge whose peer is not live does
/// not hold the snapshot back, so a round may start while that edge is still busy with
/// the last round's update; if the peer comes back, the edge resends that update from
/// the snapshot. A start refused for a NaN must not have overwritten it: the chunks "a"
/// asks for again are the last round's, finite.
#[test]
fn a_refused_start_keeps_the_update_an_edge_is_still_sending() {
    let mut mem = Mem::new();
    let mut b = mem.node(Wait::All, None);
    let mut params = [2.0f32; MODEL];
    from_a(&mut b, T0, 0, 0, HELLO);
    b.start_round(T0, &params).unwrap();
    sent(&mut b, T0);
    // "a" announces another layout before acknowledging: not live, its edge still busy.
    let other = Kind::Hello {
        model_len: MODEL as u32 - 1,
        chunk_len: 116,
        encoding: Encoding::F32Le,
        reply: true,
    };
    let mut buf = [0u8; 512];
    let len = frame(&mut buf, A, 0, 0, other);
    assert!(b.handle_frame(T0, &buf[..len]).is_err());
    b.finish_round(T0, &mut params).unwrap();
    params[200] = f32::NAN;
    assert_eq!(b.start_round(T0, &params), Err(RoundError::NonFiniteParams));
    // "a" is back with our layout and asks for round 0's chunks again.
    from_a(&mut b, T0, 0, 0, HELLO);
    from_a(&mut b, T0, 0, 0, Kind::Missing { base: 0, mask: 0b111 });
    let mut resent = 0;
    while let Some(t) = b.poll_transmit(T0, &mut buf).unwrap() {
        let (frame, _) = wire::decode(&buf[..t.len]).unwrap();
        if let Kind::Update { .. } = frame.header.kind {
            let values = wire::F32Le::new(frame.payload).unwrap();
            assert!(values.iter().all(|v| v == 2.0), "round 0's values, as sent");
            resent += 1;
        }
    }
    assert_eq!(resent, CHUNKS as usize);
}

/// Elastic membership: "b" joins a running cluster. It does not wait for "a" before
/// hearing from it; its first round waits for the model, whatever the wait policy, and
/// its mix makes the replica exactly what "a" sent (it had no mass of its own).
#[test]
fn a_joining_node_takes_the_model_its_in_neighbour_sends() {
    let mut m = Mem::new();
    let config = Config {
        max_frame: 512,
        wait: Wait::None,
        elastic: true,
        join: true,
        ..Config::new(9, B, MODEL)
    };
    let buffers = Buffers {
        snapshot: &mut m.snapshot,
        accumulator: &mut m.acc,
        chunk_weights: &mut m.weights,
        chunk_mass: &mut m.mass,
        chunk_bits: &mut m.bits,
    };
    let mut b = Node::<2>::new(config, &[PeerSpec::both(A, 0.5)], buffers, T0).unwrap();
    assert!(!b.has_model());
    let mut params = [7.0f32; MODEL];
    b.start_round(T0, &params).unwrap();
    assert!(!b.is_ready(), "waits for the model, though it waits for no one");
    // "a" is not there yet: nothing goes to it.
    assert!(sent(&mut b, T0).iter().all(|(k, _)| !matches!(k, Kind::Update { .. })));
    from_a(&mut b, T0, 0, 40, HELLO);
    for c in 0..CHUNKS - 1 {
        from_a(&mut b, T0, 0, 40, update(c));
    }
    assert!(!b.is_ready(), "two chunks of three");
    from_a(&mut b, T0, 0, 40, update(CHUNKS - 1));
    assert!(b.is_ready());
    b.finish_round(T0, &mut params).unwrap();
    assert!(params.iter().all(|&x| x == 1.0), "the model \"a\" sent: {params:?}");
    assert!(b.has_model());
    assert!(core::iter::from_fn(|| b.poll_event()).any(|e| e == Event::Joined { round: 0 }));
    assert_eq!(b.mass(), 0.5, "the share \"a\" gave");
}

/// `join` needs `elastic`; elastic membership excludes compression and the ring.
#[test]
fn joining_needs_elastic_membership() {
    let join = Config {
        join: true,
        ..Config::new(9, B, MODEL)
    };
    assert_eq!(join.validate(), Err(ConfigError::JoinNeedsElastic));
    let compressed = Config {
        elastic: true,
        compression: crate::compress::Compression::Q8,
        ..Config::new(9, B, MODEL)
    };
    let refused = compressed.validate();
    assert!(
        refused == Err(ConfigError::CompressionNeedsFixedMembership)
            || refused == Err(ConfigError::CompressionUnavailable),
        "{refused:?}"
    );
    let (mut work, mut bits) = ([0.0f32; MODEL], [0u32; 4]);
    let elastic = Config {
        elastic: true,
        ..Config::new(9, B, MODEL)
    };
    let buffers = crate::AllReduceBuffers {
        work: &mut work,
        chunk_bits: &mut bits,
    };
    let ring = crate::AllReduce::new(elastic, 2, buffers);
    assert_eq!(ring.err(), Some(ConfigError::ElasticUnsupported));
}

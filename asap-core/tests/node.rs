//! The Node's NOTIFY-ACK transitions, one at a time, with frames checked exactly.
//!
//! Fixture: node 0 ("a") and node 1 ("b") are each other's only neighbour with weight
//! 1/2; frames are at most 512 bytes, so a 300-value model travels as 3 chunks
//! (116 + 116 + 68 values).

use asap_core::wire::{self, Encoding, Header, Integrity, Kind};
use asap_core::{
    Accepted, Config, ConfigError, Duration, Event, FrameError, Instant, Node, NodeId, PeerSpec, RoundError, Violation,
    Wait,
};

mod common;
use common::Mem;

const MODEL: usize = 300;
const CHUNKS: u32 = 3;
const A: NodeId = NodeId(0);
const B: NodeId = NodeId(1);
const T0: Instant = Instant::from_millis(1_000);

fn config(id: NodeId) -> Config {
    Config {
        max_frame: 512,
        ..Config::new(9, id, MODEL)
    }
}

fn peers_of(id: NodeId) -> [PeerSpec; 1] {
    [PeerSpec::both(if id == A { B } else { A }, 0.5)]
}

fn mem() -> Mem {
    Mem::new(&config(A), 1)
}

fn node(id: NodeId, mem: &mut Mem) -> Node<'_, 4> {
    Node::new(config(id), &peers_of(id), mem.buffers(), T0).unwrap()
}

/// Every frame the node has to send now, decoded: (header, payload values, raw bytes).
fn drain(node: &mut Node<'_, 4>, now: Instant) -> Vec<(Header, Vec<f32>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 512];
    while let Some(t) = node.poll_transmit(now, &mut buf).unwrap() {
        let bytes = buf[..t.len].to_vec();
        let (frame, _) = wire::decode(&bytes).unwrap();
        assert_eq!(frame.header.to, t.to);
        let values = wire::F32Le::new(frame.payload).unwrap().iter().collect();
        out.push((frame.header, values, bytes));
    }
    out
}

/// Both nodes exchanged Hellos (and the replies), so later frames are all protocol.
fn handshake(a: &mut Node<'_, 4>, b: &mut Node<'_, 4>) {
    for _ in 0..2 {
        let (from_a, from_b) = (drain(a, T0), drain(b, T0));
        deliver(b, T0, &from_a);
        deliver(a, T0, &from_b);
    }
    assert!(drain(a, T0).is_empty() && drain(b, T0).is_empty());
}

fn kinds(frames: &[(Header, Vec<f32>, Vec<u8>)]) -> Vec<Kind> {
    frames.iter().map(|f| f.0.kind).collect()
}

fn events(node: &mut Node<'_, 4>) -> Vec<Event> {
    std::iter::from_fn(|| node.poll_event()).collect()
}

fn deliver(to: &mut Node<'_, 4>, now: Instant, frames: &[(Header, Vec<f32>, Vec<u8>)]) {
    for f in frames {
        to.handle_frame(now, &f.2).unwrap();
    }
}

fn update(chunk: u32) -> Kind {
    update_kind(chunk, CHUNKS, 0.5)
}

fn update_kind(chunk: u32, chunks: u32, weight: f32) -> Kind {
    Kind::Update {
        chunk,
        chunks,
        weight,
        encoding: Encoding::F32Le,
    }
}

/// A frame from `from` to `to` built by hand.
fn frame(from: NodeId, to: NodeId, round: u32, kind: Kind, values: &[f32]) -> Vec<u8> {
    let h = Header {
        version: wire::VERSION,
        integrity: Integrity::Crc32,
        cluster: 9,
        from,
        incarnation: 0,
        to,
        round,
        kind,
        payload_len: 0,
    };
    let mut buf = vec![0u8; 512];
    let len = wire::encode(h, values, &mut buf).unwrap();
    buf.truncate(len);
    buf
}

fn chunk_values(c: u32, v: f32) -> Vec<f32> {
    vec![v; if c == 2 { 68 } else { 116 }]
}

#[test]
fn update_goes_out_as_chunks_then_notify_then_nothing_until_ack() {
    let mut m = mem();
    let mut a = node(A, &mut m);
    let hello = drain(&mut a, T0);
    assert!(matches!(
        kinds(&hello)[..],
        [Kind::Hello {
            reply: false,
            model_len: 300,
            chunk_len: 116,
            encoding: asap_core::wire::Encoding::F32Le,
            ..
        }]
    ));

    let params: Vec<f32> = (0..MODEL).map(|i| i as f32).collect();
    a.start_round(T0, &params).unwrap();
    let sent = drain(&mut a, T0);
    assert_eq!(
        kinds(&sent),
        [update(0), update(1), update(2), Kind::Notify { chunks: CHUNKS }]
    );
    assert!(sent.iter().all(|f| f.0.round == 0 && f.0.to == B));
    let values: Vec<f32> = sent.iter().flat_map(|f| f.1.clone()).collect();
    assert_eq!(values, params, "chunks carry the snapshot in order");

    // The application changes its parameters; nothing new goes out, and the next round
    // cannot start before the ACK.
    assert!(drain(&mut a, T0 + Duration::from_millis(1)).is_empty());
    assert_eq!(a.can_start_round(), Err(RoundError::AlreadyStarted));
}

#[test]
fn receiver_folds_chunks_and_acks_only_once_consumed() {
    let (mut ma, mut mb) = (mem(), mem());
    let (mut a, mut b) = (node(A, &mut ma), node(B, &mut mb));
    drain(&mut a, T0);
    drain(&mut b, T0);
    let pa = vec![4.0f32; MODEL];
    let mut pb = vec![2.0f32; MODEL];
    a.start_round(T0, &pa).unwrap();
    let from_a = drain(&mut a, T0);
    deliver(&mut b, T0, &from_a);
    // b has everything but has not started its round: it reports "all here", no ACK.
    assert_eq!(kinds(&drain(&mut b, T0)), [Kind::Missing { base: 0, mask: 0 }]);
    assert!(!b.is_ready());

    b.start_round(T0, &pb).unwrap();
    assert!(b.is_ready(), "a's update already arrived");
    assert!(events(&mut b).contains(&Event::RoundReady { round: 0 }));
    let finished = b.finish_round(T0, &mut pb).unwrap();
    assert_eq!(finished.updates, 1);
    assert!(pb.iter().all(|&x| x == 3.0), "1/2·2 + 1/2·4");

    let from_b = drain(&mut b, T0);
    assert_eq!(from_b[0].0.kind, Kind::Ack);
    assert_eq!(from_b[0].0.round, 0);
    // Then b's own update to a.
    assert_eq!(
        kinds(&from_b[1..]),
        [update(0), update(1), update(2), Kind::Notify { chunks: CHUNKS }]
    );

    deliver(&mut a, T0, &from_b);
    assert!(events(&mut a).contains(&Event::SendComplete { round: 0 }));
    assert!(a.is_ready());
    assert_eq!(a.can_start_round(), Err(RoundError::AlreadyStarted));
}

#[test]
fn sender_waits_for_the_ack_before_sending_anew() {
    let (mut ma, mut mb) = (mem(), mem());
    let (mut a, mut b) = (node(A, &mut ma), node(B, &mut mb));
    let mut pa = vec![1.0f32; MODEL];
    let mut pb = vec![3.0f32; MODEL];
    a.start_round(T0, &pa).unwrap();
    b.start_round(T0, &pb).unwrap();
    let from_a = drain(&mut a, T0);
    let from_b = drain(&mut b, T0);
    deliver(&mut a, T0, &from_b);
    a.finish_round(T0, &mut pa).unwrap();
    assert_eq!(
        a.can_start_round(),
        Err(RoundError::SendWindowClosed),
        "b has not consumed round 0"
    );
    assert_eq!(a.start_round(T0, &pa), Err(RoundError::SendWindowClosed));

    deliver(&mut b, T0, &from_a);
    b.finish_round(T0, &mut pb).unwrap();
    let acks = drain(&mut b, T0);
    deliver(&mut a, T0, &acks);
    assert_eq!(a.can_start_round(), Ok(()));
    assert!(pa.iter().chain(&pb).all(|&x| x == 2.0));
}

#[test]
fn lost_chunk_is_reported_missing_and_resent() {
    let (mut ma, mut mb) = (mem(), mem());
    let (mut a, mut b) = (node(A, &mut ma), node(B, &mut mb));
    handshake(&mut a, &mut b);
    a.start_round(T0, &vec![8.0; MODEL]).unwrap();
    let mut from_a = drain(&mut a, T0);
    from_a.retain(|f| f.0.kind != update(1));
    deliver(&mut b, T0, &from_a);
    let reply = drain(&mut b, T0);
    assert_eq!(kinds(&reply), [Kind::Missing { base: 1, mask: 0b1 }]);

    deliver(&mut a, T0, &reply);
    let resent = drain(&mut a, T0);
    assert_eq!(kinds(&resent), [update(1), Kind::Notify { chunks: CHUNKS }]);
    assert_eq!(a.stats().chunks_resent, 1);
    assert_eq!(a.stats().notifies_resent, 1);

    deliver(&mut b, T0, &resent);
    let mut pb = vec![0.0f32; MODEL];
    b.start_round(T0, &pb).unwrap();
    b.finish_round(T0, &mut pb).unwrap();
    assert!(pb.iter().all(|&x| x == 4.0));
}

#[test]
fn lost_ack_is_recovered_by_the_retransmission_timer() {
    let (mut ma, mut mb) = (mem(), mem());
    let (mut a, mut b) = (node(A, &mut ma), node(B, &mut mb));
    handshake(&mut a, &mut b);
    a.start_round(T0, &vec![8.0; MODEL]).unwrap();
    deliver(&mut b, T0, &drain(&mut a, T0));
    let mut pb = vec![0.0f32; MODEL];
    b.start_round(T0, &pb).unwrap();
    b.finish_round(T0, &mut pb).unwrap();
    let lost = drain(&mut b, T0);
    assert_eq!(lost[0].0.kind, Kind::Ack);

    // No ACK arrives; a's timer fires after the initial RTO (20 ms) and a NOTIFYs again.
    let rto = config(A).retransmit_initial;
    assert_eq!(a.poll_timeout(), Some(T0 + rto));
    a.handle_timeout(T0 + rto);
    let again = drain(&mut a, T0 + rto);
    assert_eq!(kinds(&again), [Kind::Notify { chunks: CHUNKS }]);
    assert_eq!(a.stats().retransmit_timeouts, 1);

    // b already consumed round 0: it repeats the ACK, nothing else.
    deliver(&mut b, T0 + rto, &again);
    let ack = drain(&mut b, T0 + rto);
    assert_eq!(kinds(&ack), [Kind::Ack]);
    deliver(&mut a, T0 + rto, &ack);
    assert!(a.peer(B).unwrap().send_idle);
    // Backoff: the timer doubled before it was cleared; the next round starts afresh.
    assert!(a.poll_timeout().unwrap() > T0 + rto);
}

#[test]
fn duplicated_reordered_and_stale_frames_change_nothing() {
    let (mut ma, mut mb) = (mem(), mem());
    let (mut a, mut b) = (node(A, &mut ma), node(B, &mut mb));
    handshake(&mut a, &mut b);
    a.start_round(T0, &vec![6.0; MODEL]).unwrap();
    let mut from_a = drain(&mut a, T0);
    from_a.reverse();
    let mut doubled = from_a.clone();
    doubled.extend(from_a.iter().cloned());
    deliver(&mut b, T0, &doubled);
    assert_eq!(
        b.stats().duplicates,
        3,
        "three chunks twice; the second NOTIFY only asks for progress"
    );
    assert_eq!(b.stats().chunks_folded, 3);

    let mut pb = vec![2.0f32; MODEL];
    b.start_round(T0, &pb).unwrap();
    b.finish_round(T0, &mut pb).unwrap();
    assert!(pb.iter().all(|&x| x == 4.0));

    let after = drain(&mut b, T0);
    assert_eq!(
        after[0].0.kind,
        Kind::Ack,
        "the ACK answers the pending progress request too"
    );
    assert!(!kinds(&after).iter().any(|k| matches!(k, Kind::Missing { .. })));

    // Replays of the consumed round are ignored: the next mix sees only new data.
    deliver(&mut b, T0, &from_a[..3]);
    assert_eq!(b.stats().chunks_folded, 3);
    assert_eq!(b.stats().duplicates, 6);
    assert_eq!(
        kinds(&drain(&mut b, T0)),
        [Kind::Ack],
        "the ACK, repeated for the replayed NOTIFY"
    );
}

#[test]
fn non_finite_update_is_rejected_and_never_reaches_the_replica() {
    let mut mb = mem();
    let mut b = node(B, &mut mb);
    let mut bad = chunk_values(1, 1.0);
    bad[7] = f32::NAN;
    b.handle_frame(T0, &frame(A, B, 0, update(0), &chunk_values(0, 1.0)))
        .unwrap();
    assert_eq!(
        b.handle_frame(T0, &frame(A, B, 0, update(1), &bad)),
        Err(FrameError::Violation(A, Violation::NonFinite))
    );
    // The rest of the update is dropped, counted once.
    b.handle_frame(T0, &frame(A, B, 0, update(2), &chunk_values(2, 1.0)))
        .unwrap();
    b.handle_frame(T0, &frame(A, B, 0, Kind::Notify { chunks: CHUNKS }, &[]))
        .unwrap();
    assert_eq!(b.stats().updates_rejected, 1);
    assert!(events(&mut b)
        .iter()
        .any(|e| matches!(e, Event::UpdateRejected { peer: A, round: 0, .. })));

    let mut pb = vec![3.0f32; MODEL];
    b.start_round(T0, &pb).unwrap();
    assert!(b.is_ready(), "a rejected, announced update does not block the round");
    b.finish_round(T0, &mut pb).unwrap();
    assert!(pb.iter().all(|x| x.is_finite()));
    // Chunk 0 (finite, folded before the bad one) mixed; chunks 1 and 2 kept the replica.
    assert!(pb[..116].iter().all(|&x| x == 2.0));
    assert!(pb[116..].iter().all(|&x| x == 3.0));
    assert_eq!(
        kinds(&drain(&mut b, T0))[..2],
        [
            Kind::Hello {
                model_len: 300,
                chunk_len: 116,
                encoding: asap_core::wire::Encoding::F32Le,
                reply: false
            },
            Kind::Ack
        ]
    );
}

#[test]
fn frames_not_for_this_node_are_refused_and_counted() {
    let mut mb = mem();
    let mut b = node(B, &mut mb);
    let ok = frame(A, B, 0, Kind::Heartbeat, &[]);
    assert!(b.accepts(&ok));
    assert_eq!(
        b.handle_frame(T0, &ok),
        Ok(Accepted { from: A, fresh: false }),
        "no key: nothing proves the sender"
    );

    let other_cluster = {
        let f = Header {
            cluster: 10,
            ..wire::decode(&ok).unwrap().0.header
        };
        let mut buf = vec![0u8; 64];
        let n = wire::encode(f, &[], &mut buf).unwrap();
        buf.truncate(n);
        buf
    };
    assert!(!b.accepts(&other_cluster));
    assert_eq!(b.handle_frame(T0, &other_cluster), Err(FrameError::WrongCluster(10)));
    assert_eq!(
        b.handle_frame(T0, &frame(A, NodeId(5), 0, Kind::Heartbeat, &[])),
        Err(FrameError::Misaddressed(NodeId(5)))
    );
    assert_eq!(
        b.handle_frame(T0, &frame(NodeId(3), B, 0, Kind::Heartbeat, &[])),
        Err(FrameError::UnknownPeer(NodeId(3)))
    );
    let mut flipped = ok.clone();
    flipped[4] ^= 1;
    assert!(matches!(b.handle_frame(T0, &flipped), Err(FrameError::Decode(_))));
    assert_eq!(b.stats().frames_refused, 3);
    assert_eq!(b.stats().decode_errors, 1);

    // Protocol violations: wrong layout, bad weight, index out of range.
    let wrong_count = update_kind(0, 4, 0.5);
    assert_eq!(
        b.handle_frame(T0, &frame(A, B, 0, wrong_count, &chunk_values(0, 1.0))),
        Err(FrameError::Violation(A, Violation::ChunkCount))
    );
    let heavy = update_kind(0, CHUNKS, 1.5);
    assert_eq!(
        b.handle_frame(T0, &frame(A, B, 0, heavy, &chunk_values(0, 1.0))),
        Err(FrameError::Violation(A, Violation::Weight))
    );
    let past = update_kind(3, CHUNKS, 0.5);
    assert_eq!(
        b.handle_frame(T0, &frame(A, B, 0, past, &chunk_values(0, 1.0))),
        Err(FrameError::Violation(A, Violation::ChunkIndex))
    );
    assert_eq!(
        b.handle_frame(T0, &frame(A, B, 0, update(0), &chunk_values(2, 1.0))),
        Err(FrameError::Violation(A, Violation::ChunkLength))
    );
    assert_eq!(b.stats().chunks_folded, 0);
}

#[test]
fn weights_from_in_neighbours_never_exceed_one() {
    // Two in-neighbours that (misconfigured) each claim 3/4 of b's mix. (Rounds are
    // exact: asynchronous rounds run push-sum, where a weight is a share of the
    // sender's mass and may add up to more than 1.)
    let c = NodeId(2);
    let peers = [PeerSpec::both(A, 0.25), PeerSpec::both(c, 0.25)];
    let config = config(B);
    let mut mb = Mem::new(&config, 2);
    let mut b = Node::<4>::new(config, &peers, mb.buffers(), T0).unwrap();
    let heavy = |chunk| update_kind(chunk, CHUNKS, 0.75);
    b.handle_frame(T0, &frame(A, B, 0, heavy(0), &chunk_values(0, 1.0)))
        .unwrap();
    assert_eq!(
        b.handle_frame(T0, &frame(c, B, 0, heavy(0), &chunk_values(0, 1.0))),
        Err(FrameError::Violation(c, Violation::WeightOverflow))
    );
}

/// Asynchronous rounds run push-sum: an update its sender abandoned after part of it
/// was folded (it declared this node down, say) and the sender's next one are both
/// shares it gave up, so both are mixed, each at its weight (plain averaging would
/// count the sender twice: it drops the newer one until the mix).
#[test]
fn an_abandoned_partial_update_and_the_next_are_both_mixed_under_push_sum() {
    let mut mb = mem();
    let config = Config {
        wait: Wait::None,
        ..config(B)
    };
    let mut b = Node::<4>::new(config, &peers_of(B), mb.buffers(), T0).unwrap();
    b.handle_frame(T0, &frame(A, B, 0, update(0), &chunk_values(0, 4.0)))
        .unwrap();
    b.handle_frame(T0, &frame(A, B, 1, update(0), &chunk_values(0, 8.0)))
        .unwrap();
    assert_eq!(b.stats().updates_abandoned, 1);
    assert_eq!(b.stats().chunks_folded, 2);
    let mut pb = vec![0.0f32; MODEL];
    b.start_round(T0, &pb).unwrap();
    b.finish_round(T0, &mut pb).unwrap();
    // b gave half its mass to a and kept 1/2; a's two chunks weigh 1/2 each:
    // (1/2·0 + 1/2·4 + 1/2·8) / (3/2).
    assert!(pb[..116].iter().all(|&x| x == 4.0), "{:?}", &pb[..4]);
    assert!(pb[116..].iter().all(|&x| x == 0.0));
    assert_eq!(b.mass_at(0), 1.5);
}

#[test]
fn silent_peer_goes_down_is_not_waited_for_and_comes_back() {
    let mut ma = mem();
    let mut a = node(A, &mut ma);
    let mut pa = vec![1.0f32; MODEL];
    a.start_round(T0, &pa).unwrap();
    drain(&mut a, T0);
    assert!(!a.is_ready());
    let timeout = config(A).peer_timeout;
    // Timers up to just before the timeout keep b up.
    a.handle_timeout(Instant::from_micros((T0 + timeout).total_micros() - 1));
    assert!(a.peer(B).unwrap().up);
    a.handle_timeout(T0 + timeout);
    assert!(events(&mut a).contains(&Event::PeerDown(B)));
    assert!(!a.peer(B).unwrap().up);
    assert!(a.is_ready(), "a down in-neighbour is not waited for");
    a.finish_round(T0 + timeout, &mut pa).unwrap();
    assert!(pa.iter().all(|&x| x == 1.0), "nothing arrived: the replica is kept");
    assert_eq!(a.can_start_round(), Ok(()), "the update to a down peer was abandoned");

    a.handle_frame(T0 + timeout, &frame(B, A, 0, Kind::Heartbeat, &[]))
        .unwrap();
    assert!(events(&mut a).contains(&Event::PeerUp(B)));
    assert!(a.peer(B).unwrap().up);
}

/// A frame from `from` of incarnation `incarnation`.
fn frame_of(incarnation: u32, from: NodeId, to: NodeId, round: u32, kind: Kind, values: &[f32]) -> Vec<u8> {
    let mut bytes = frame(from, to, round, kind, values);
    let (mut frame, _) = wire::decode(&bytes).map(|(f, n)| (f.header, n)).unwrap();
    frame.incarnation = incarnation;
    let mut buf = vec![0u8; 512];
    let len = wire::encode(frame, values, &mut buf).unwrap();
    bytes.clear();
    bytes.extend_from_slice(&buf[..len]);
    bytes
}

#[test]
fn restarted_peer_is_accepted_from_round_zero() {
    let mut mb = mem();
    let mut b = node(B, &mut mb);
    let hello = Kind::Hello {
        model_len: 300,
        chunk_len: 116,
        encoding: asap_core::wire::Encoding::F32Le,
        reply: false,
    };
    b.handle_frame(T0, &frame_of(1, A, B, 0, hello, &[])).unwrap();
    for c in 0..CHUNKS {
        b.handle_frame(T0, &frame_of(1, A, B, 0, update(c), &chunk_values(c, 1.0)))
            .unwrap();
    }
    let mut pb = vec![0.0f32; MODEL];
    b.start_round(T0, &pb).unwrap();
    b.finish_round(T0, &mut pb).unwrap();
    b.handle_frame(T0, &frame_of(1, A, B, 0, update(0), &chunk_values(0, 1.0)))
        .unwrap();
    assert_eq!(b.stats().chunks_folded, 3, "round 0 already consumed");

    // Any frame of a newer incarnation says a restarted, even before its Hello.
    b.handle_frame(T0, &frame_of(2, A, B, 0, update(0), &chunk_values(0, 1.0)))
        .unwrap();
    assert!(events(&mut b).contains(&Event::PeerRestarted(A)));
    // The new incarnation starts again at round 0, behind b (at round 1): its update is
    // acknowledged and dropped, so it can move on and catch up.
    assert_eq!(b.stats().chunks_folded, 3);
    assert_eq!(b.stats().late, 1);
    b.handle_frame(T0, &frame_of(2, A, B, 0, Kind::Notify { chunks: CHUNKS }, &[]))
        .unwrap();
    let acks = drain(&mut b, T0)
        .into_iter()
        .filter(|f| f.0.kind == Kind::Ack && f.0.round == 0)
        .count();
    assert_eq!(acks, 1);
    // Frames of the old incarnation still in flight change nothing.
    let stale = b.stats().stale;
    b.handle_frame(T0, &frame_of(1, A, B, 1, Kind::Notify { chunks: CHUNKS }, &[]))
        .unwrap();
    assert_eq!(b.stats().stale, stale + 1);
    assert!(drain(&mut b, T0).iter().all(|f| f.0.kind != Kind::Ack));
}

#[test]
fn hello_replies_coalesce() {
    let mut mb = mem();
    let mut b = node(B, &mut mb);
    let hello = Kind::Hello {
        model_len: 300,
        chunk_len: 116,
        encoding: asap_core::wire::Encoding::F32Le,
        reply: false,
    };
    b.handle_frame(T0, &frame(A, B, 0, hello, &[])).unwrap();
    b.handle_frame(T0, &frame(A, B, 0, hello, &[])).unwrap();
    // b owes a Hello of its own and two replies: they coalesce into one frame.
    let hellos = drain(&mut b, T0)
        .into_iter()
        .filter(|f| matches!(f.0.kind, Kind::Hello { .. }))
        .count();
    assert_eq!(hellos, 1);
}

#[test]
fn a_node_behind_its_in_neighbours_catches_up() {
    let mut mb = mem();
    let mut b = node(B, &mut mb);
    let mut pb = vec![2.0f32; MODEL];
    b.start_round(T0, &pb).unwrap();
    assert!(!b.is_ready());
    // a is at round 5 (b missed its rounds, say in a partition): its update is early.
    b.handle_frame(T0, &frame(A, B, 5, update(0), &chunk_values(0, 6.0)))
        .unwrap();
    b.handle_frame(T0, &frame(A, B, 5, Kind::Notify { chunks: CHUNKS }, &[]))
        .unwrap();
    assert_eq!(b.stats().early, 2);
    assert_eq!(b.stats().chunks_folded, 0, "nothing of a future round is mixed now");
    assert!(b.is_ready(), "b finishes at once to catch up");
    b.finish_round(T0, &mut pb).unwrap();
    assert!(
        pb.iter().all(|&x| x == 2.0),
        "nothing arrived for round 0: the replica is kept"
    );
    assert_eq!(b.round(), 5, "jumped to a's round");
    assert_eq!(b.stats().rounds_skipped, 4);
    // The early NOTIFY is answered now: everything of round 5 is missing.
    let out = drain(&mut b, T0);
    assert!(out
        .iter()
        .any(|f| f.0.kind == Kind::Missing { base: 0, mask: 0b111 } && f.0.round == 5));
    // a, past round 0, acknowledges b's late round-0 update; then resends round 5.
    b.handle_frame(T0, &frame(A, B, 0, Kind::Ack, &[])).unwrap();
    b.start_round(T0, &pb).unwrap();
    for c in 0..CHUNKS {
        b.handle_frame(T0, &frame(A, B, 5, update(c), &chunk_values(c, 6.0)))
            .unwrap();
    }
    assert!(b.is_ready());
    b.finish_round(T0, &mut pb).unwrap();
    assert!(pb.iter().all(|&x| x == 4.0));
}

#[test]
fn incompatible_layout_is_refused() {
    let mut mb = mem();
    let mut b = node(B, &mut mb);
    let hello = Kind::Hello {
        model_len: 301,
        chunk_len: 116,
        encoding: asap_core::wire::Encoding::F32Le,
        reply: false,
    };
    assert_eq!(
        b.handle_frame(T0, &frame(A, B, 0, hello, &[])),
        Err(FrameError::Incompatible(A))
    );
    assert!(events(&mut b).contains(&Event::PeerIncompatible(A)));
    assert_eq!(
        b.handle_frame(T0, &frame(A, B, 0, Kind::Heartbeat, &[])),
        Err(FrameError::Incompatible(A))
    );
}

#[test]
fn wait_policies() {
    // Node 0 with three in-neighbours; only node 1's update has arrived.
    let peers = [
        PeerSpec::both(NodeId(1), 0.25),
        PeerSpec::both(NodeId(2), 0.25),
        PeerSpec::both(NodeId(3), 0.25),
    ];
    for (wait, ready) in [
        (Wait::All, false),
        (Wait::AtLeast(1), true),
        (Wait::AtLeast(2), false),
        (Wait::None, true),
    ] {
        let config = Config { wait, ..config(A) };
        let mut m = Mem::new(&config, 3);
        let mut n = Node::<4>::new(config, &peers, m.buffers(), T0).unwrap();
        let q = |c| update_kind(c, CHUNKS, 0.25);
        for c in 0..CHUNKS {
            n.handle_frame(T0, &frame(NodeId(1), A, 0, q(c), &chunk_values(c, 4.0)))
                .unwrap();
        }
        let mut p = vec![0.0f32; MODEL];
        n.start_round(T0, &p).unwrap();
        assert_eq!(n.is_ready(), ready, "{wait:?}");
        if ready {
            n.finish_round(T0, &mut p).unwrap();
            // Asynchronous rounds run push-sum: node 0 gave 3/4 of its mass to its
            // three out-neighbours and kept 1/4; node 1's update weighs 1/4. The mix is
            // mass-weighted: (1/4·0 + 1/4·4) / (1/2).
            assert!(p.iter().all(|&x| x == 2.0), "{wait:?}: {p:?}");
            assert_eq!(n.mass(), 0.5, "{wait:?}");
        } else {
            assert_eq!(n.finish_round(T0, &mut p), Err(RoundError::NotReady));
        }
    }
}

#[test]
fn barrier_waits_for_every_member() {
    let peers = [PeerSpec::both(B, 0.5), PeerSpec::member(NodeId(2))];
    let config = Config {
        wait: Wait::Barrier,
        ..config(A)
    };
    let mut m = Mem::new(&config, 2);
    let mut a = Node::<4>::new(config, &peers, m.buffers(), T0).unwrap();
    for c in 0..CHUNKS {
        a.handle_frame(T0, &frame(B, A, 0, update(c), &chunk_values(c, 2.0)))
            .unwrap();
    }
    let mut p = vec![0.0f32; MODEL];
    a.start_round(T0, &p).unwrap();
    let sent = drain(&mut a, T0);
    assert_eq!(
        sent.iter()
            .filter(|f| f.0.kind == Kind::Barrier && f.0.round == 1)
            .count(),
        2,
        "announced to both"
    );
    assert!(!a.is_ready(), "node 2 has not reached round 0");
    a.handle_frame(T0, &frame(NodeId(2), A, 1, Kind::Barrier, &[])).unwrap();
    assert!(a.is_ready());
    a.finish_round(T0, &mut p).unwrap();
    assert!(p.iter().all(|&x| x == 1.0));
}

#[test]
fn staleness_bound_holds_a_fast_node_back() {
    let config = Config {
        wait: Wait::None,
        staleness: Some(2),
        ..config(A)
    };
    let mut m = Mem::new(&config, 1);
    let mut a = Node::<4>::new(config, &peers_of(A), m.buffers(), T0).unwrap();
    let mut p = vec![0.0f32; MODEL];
    for round in 0..2 {
        a.start_round(T0, &p).unwrap();
        drain(&mut a, T0);
        a.finish_round(T0, &mut p).unwrap();
        // b consumes each update at once.
        a.handle_frame(T0, &frame(B, A, round, Kind::Ack, &[])).unwrap();
    }
    assert_eq!(
        a.can_start_round(),
        Err(RoundError::Staleness(B)),
        "b never started a round"
    );
    a.handle_frame(T0, &frame(B, A, 1, Kind::Heartbeat, &[])).unwrap();
    assert_eq!(a.can_start_round(), Ok(()), "b started round 0: a may run round 2");
}

#[test]
fn application_misuse_gets_typed_errors() {
    let mut ma = mem();
    let mut a = node(A, &mut ma);
    let mut p = vec![0.0f32; MODEL];
    assert_eq!(a.finish_round(T0, &mut p), Err(RoundError::NotStarted));
    assert_eq!(
        a.start_round(T0, &p[..10]),
        Err(RoundError::ParamsLength {
            expected: MODEL,
            got: 10
        })
    );
    p[3] = f32::INFINITY;
    assert_eq!(a.start_round(T0, &p), Err(RoundError::NonFiniteParams));
    p[3] = 0.0;
    a.start_round(T0, &p).unwrap();
    assert_eq!(a.start_round(T0, &p), Err(RoundError::AlreadyStarted));
    let mut small = [0u8; 100];
    assert_eq!(a.poll_transmit(T0, &mut small).unwrap_err().needed, 512);
    let mut count = 0;
    for _ in 0..12 {
        count += usize::from(a.record_local_step());
    }
    assert_eq!(count, 2, "period 5: a round every fifth step");
}

#[test]
fn bad_configurations_are_refused() {
    let cfg = config(A);
    let mut m = mem();
    let new = |cfg: Config, peers: &[PeerSpec], m: &mut Mem| Node::<2>::new(cfg, peers, m.buffers(), T0).map(|_| ());
    assert_eq!(
        new(Config { max_frame: 100, ..cfg }, &peers_of(A), &mut m),
        Err(ConfigError::FrameSize(100))
    );
    assert_eq!(
        new(cfg, &[PeerSpec::both(A, 0.5)], &mut m),
        Err(ConfigError::SelfAsPeer)
    );
    assert_eq!(
        new(
            cfg,
            &[PeerSpec::both(B, 0.6), PeerSpec::both(B, 0.1)],
            &mut Mem::new(&cfg, 2)
        ),
        Err(ConfigError::DuplicatePeer(B))
    );
    assert_eq!(
        new(
            cfg,
            &[PeerSpec::both(B, 0.6), PeerSpec::both(NodeId(2), 0.6)],
            &mut Mem::new(&cfg, 2)
        ),
        Err(ConfigError::SendWeightsExceedOne)
    );
    assert_eq!(
        new(cfg, &[PeerSpec::both(B, f32::NAN)], &mut m),
        Err(ConfigError::SendWeight(B))
    );
    let three = [
        PeerSpec::member(B),
        PeerSpec::member(NodeId(2)),
        PeerSpec::member(NodeId(3)),
    ];
    assert_eq!(
        new(cfg, &three, &mut Mem::new(&cfg, 3)),
        Err(ConfigError::TooManyPeers { capacity: 2 })
    );
    assert_eq!(
        new(
            Config {
                wait: Wait::AtLeast(2),
                ..cfg
            },
            &peers_of(A),
            &mut m
        ),
        Err(ConfigError::WaitExceedsInDegree)
    );
    assert_eq!(
        new(Config { period: 0, ..cfg }, &peers_of(A), &mut m),
        Err(ConfigError::ZeroPeriod)
    );
    assert_eq!(
        new(
            Config {
                staleness: Some(0),
                ..cfg
            },
            &peers_of(A),
            &mut m
        ),
        Err(ConfigError::Timers)
    );
    assert!(matches!(
        new(cfg, &peers_of(A), &mut Mem::new(&cfg, 2)),
        Err(ConfigError::Buffer {
            which: "chunk_bits",
            ..
        })
    ));
    assert_eq!(Config { model_len: 0, ..cfg }.layout(1), Err(ConfigError::EmptyModel));
}

/// Built alone (no `compress` feature; the workspace turns it on), asap-core refuses the
/// compressed mode by name rather than running without it.
#[cfg(not(feature = "compress"))]
#[test]
fn without_the_compress_feature_compression_is_a_configuration_error() {
    let config = asap_core::Config {
        compression: asap_core::compress::Compression::Q8,
        ..asap_core::Config::new(1, asap_core::NodeId(0), 100)
    };
    assert_eq!(config.layout(1), Err(asap_core::ConfigError::CompressionUnavailable));
    assert!(!config.is_compressed());
}

#[test]
fn a_node_that_left_stays_silent_and_repeats_only_leave() {
    let (mut ma, mut mb) = (mem(), mem());
    let (mut a, mut b) = (node(A, &mut ma), node(B, &mut mb));
    handshake(&mut a, &mut b);
    a.leave(T0);
    assert!(a.has_left());
    assert_eq!(a.can_start_round(), Err(RoundError::Left));
    let bye = drain(&mut a, T0);
    assert_eq!(kinds(&bye), [Kind::Leave]);
    deliver(&mut b, T0, &bye);
    assert_eq!(events(&mut b), [Event::PeerDown(A)]);

    // Long after: no heartbeat, Hello or retransmission, and no timer at all.
    let later = T0 + config(A).peer_timeout + config(A).peer_timeout;
    assert_eq!(a.poll_timeout(), None);
    a.handle_timeout(later);
    assert!(drain(&mut a, later).is_empty(), "a node that left sends nothing");
    // b, still running, neither sends to a nor brings it back up.
    b.handle_timeout(later);
    assert!(drain(&mut b, later).iter().all(|f| f.0.to != A));
    assert!(!b.peer(A).unwrap().up);

    // A peer that missed the Leave and still talks to a hears it again, and only it.
    a.handle_frame(later, &frame(B, A, 0, Kind::Heartbeat, &[])).unwrap();
    let again = drain(&mut a, later);
    assert_eq!(kinds(&again), [Kind::Leave]);
    assert!(events(&mut a).is_empty(), "b is not reported up by a node that left");
    assert_eq!(a.stats().peers_down, 0);
}

#[test]
fn nodes_leaving_in_turn_each_learn_that_the_others_left() {
    let (mut ma, mut mb) = (mem(), mem());
    let (mut a, mut b) = (node(A, &mut ma), node(B, &mut mb));
    handshake(&mut a, &mut b);
    a.leave(T0);
    deliver(&mut b, T0, &drain(&mut a, T0));
    assert_eq!(events(&mut b), [Event::PeerDown(A)]);
    // b leaves next: its Leave goes to a too, which left first and still listens.
    b.leave(T0);
    let bye = drain(&mut b, T0);
    assert_eq!(kinds(&bye), [Kind::Leave]);
    deliver(&mut a, T0, &bye);
    assert_eq!(events(&mut a), [Event::PeerDown(B)]);
    assert!(!a.peer(B).unwrap().up);
    assert!(drain(&mut a, T0).is_empty(), "a Leave is not answered");
}

#[test]
fn drained_once_the_last_update_is_delivered_and_acknowledgements_sent() {
    let (mut ma, mut mb) = (mem(), mem());
    let (mut a, mut b) = (node(A, &mut ma), node(B, &mut mb));
    handshake(&mut a, &mut b);
    assert!(a.is_drained(), "nothing owed before any round");
    let (mut pa, mut pb) = (vec![1.0f32; MODEL], vec![3.0f32; MODEL]);
    a.start_round(T0, &pa).unwrap();
    b.start_round(T0, &pb).unwrap();
    assert!(!a.is_drained(), "a round is running");
    let (fa, fb) = (drain(&mut a, T0), drain(&mut b, T0));
    deliver(&mut b, T0, &fa);
    deliver(&mut a, T0, &fb);
    a.finish_round(T0, &mut pa).unwrap();
    assert!(pa.iter().all(|&x| x == 2.0));
    assert!(!a.is_drained(), "the ACK for b's update is not sent yet");
    let fa = drain(&mut a, T0);
    assert!(kinds(&fa).contains(&Kind::Ack));
    assert!(!a.is_drained(), "b has not said that a's update arrived");
    // b answers a's NOTIFY: every chunk is here. a owes nothing more.
    let fb = drain(&mut b, T0);
    deliver(&mut a, T0, &fb);
    assert!(a.is_drained());
    // a leaves; b, still in the round, mixes a's update all the same. a's ACK, sent
    // before its Leave and delivered after it, does not bring a back.
    a.leave(T0);
    deliver(&mut b, T0, &drain(&mut a, T0));
    deliver(&mut b, T0, &fa);
    let seen = events(&mut b);
    assert!(seen.contains(&Event::PeerDown(A)), "{seen:?}");
    assert!(!seen.contains(&Event::PeerUp(A)), "{seen:?}");
    assert!(!b.peer(A).unwrap().up);
    assert!(b.is_ready());
    b.finish_round(T0, &mut pb).unwrap();
    assert!(pb.iter().all(|&x| x == 2.0), "a's last update was mixed");
}

/// Sixty-four peers that all fall silent are reported down in the same call, none
/// dropped: the event queue holds a burst of one event per peer of the largest tables
/// the runtimes build.
#[test]
fn sixty_four_peers_falling_silent_at_once_are_all_reported() {
    const PEERS: usize = 64;
    let me = NodeId(PEERS as u16);
    let peers: Vec<PeerSpec> = (0..PEERS as u16)
        .map(|i| PeerSpec::both(NodeId(i), 1.0 / (PEERS as f32 + 1.0)))
        .collect();
    let mut m = Mem::new(&config(me), PEERS);
    let mut node = Node::<PEERS>::new(config(me), &peers, m.buffers(), T0).unwrap();
    let later = T0 + config(me).peer_timeout + Duration::from_millis(1);
    node.handle_timeout(later);
    let mut down = 0;
    while let Some(event) = node.poll_event() {
        down += usize::from(matches!(event, Event::PeerDown(_)));
    }
    assert_eq!(down, PEERS);
    assert_eq!(node.stats().events_dropped, 0);
}

//! The ring all-reduce baseline's first step when neighbours start a round at different
//! times: the left neighbour starts sooner and sends before this node started.

use asap_core::wire::{self, Kind};
use asap_core::{AllReduce, AllReduceBuffers, Config, Instant, NodeId};

const MODEL: usize = 1_000;

fn config(id: u16) -> Config {
    Config {
        max_frame: 512,
        ..Config::new(3, NodeId(id), MODEL)
    }
}

/// A starts round 0 and sends to B, which has not started; `deliver(k)` says whether
/// A's k-th frame reaches B. Then B starts (after a refused start with a NaN at each
/// index of `refused`). Returns what B sends A at once, and both engines' replicas
/// after the round ends.
fn early_round(deliver: impl Fn(usize) -> bool, refused: &[usize]) -> (Vec<Kind>, [Vec<f32>; 2]) {
    let (ca, cb) = (config(0), config(1));
    let mut work = [vec![0.0f32; MODEL], vec![0.0f32; MODEL]];
    let mut bits = [
        vec![0u32; AllReduce::bitmap_words(&ca, 2)],
        vec![0u32; AllReduce::bitmap_words(&cb, 2)],
    ];
    let [wa, wb] = &mut work;
    let [ba, bb] = &mut bits;
    let mut a = AllReduce::new(
        ca,
        2,
        AllReduceBuffers {
            work: wa,
            chunk_bits: ba,
        },
    )
    .unwrap();
    let mut b = AllReduce::new(
        cb,
        2,
        AllReduceBuffers {
            work: wb,
            chunk_bits: bb,
        },
    )
    .unwrap();
    let mut params = [
        (0..MODEL).map(|k| k as f32).collect::<Vec<_>>(),
        (0..MODEL).map(|k| 3.0 - k as f32 / 7.0).collect(),
    ];
    let t0 = Instant::from_millis(1);
    a.start_round(t0, &params[0]).unwrap();
    let mut buf = vec![0u8; 512];
    let mut k = 0;
    while let Some(t) = a.poll_transmit(t0, &mut buf).unwrap() {
        if deliver(k) {
            b.handle_frame_mut(t0, &mut buf[..t.len]).unwrap();
        }
        k += 1;
    }
    let t1 = Instant::from_millis(2);
    for &k in refused {
        let mut bad = params[1].clone();
        bad[k] = f32::NAN;
        assert_eq!(b.start_round(t1, &bad), Err(asap_core::RoundError::NonFiniteParams));
    }
    b.start_round(t1, &params[1]).unwrap();
    let mut first_answers = Vec::new();
    while let Some(t) = b.poll_transmit(t1, &mut buf).unwrap() {
        let (h, _) = wire::peek(&buf[..t.len]).unwrap();
        if h.to == NodeId(0) && matches!(h.kind, Kind::Ack | Kind::Missing { .. }) {
            first_answers.push(h.kind);
        }
        a.handle_frame_mut(t1, &mut buf[..t.len]).unwrap();
    }
    // Then the round runs to its end over a perfect channel.
    let mut now = t1;
    for _ in 0..10_000 {
        if a.is_ready() && b.is_ready() {
            a.finish_round(now, &mut params[0]).unwrap();
            b.finish_round(now, &mut params[1]).unwrap();
            return (first_answers, params);
        }
        now = now + asap_core::Duration::from_millis(1);
        exchange(&mut a, &mut b, now, &mut buf);
        exchange(&mut b, &mut a, now, &mut buf);
    }
    panic!("the round did not end");
}

/// `from`'s timers and frames, all delivered to `to`.
fn exchange(from: &mut AllReduce<'_>, to: &mut AllReduce<'_>, now: Instant, buf: &mut [u8]) {
    from.handle_timeout(now);
    while let Some(t) = from.poll_transmit(now, buf).unwrap() {
        let _ = to.handle_frame_mut(now, &mut buf[..t.len]);
    }
}

fn expected_mean() -> Vec<f32> {
    (0..MODEL).map(|k| (k as f32 + (3.0 - k as f32 / 7.0)) / 2.0).collect()
}

/// Chunks of the first step that reach a node before it started the round are kept (the
/// work buffer is free between rounds) and completed with its own values when it starts:
/// its first answer is the ACK, nothing is sent twice, and the sum is exact.
#[test]
fn chunks_that_come_before_the_round_starts_are_kept() {
    let (answers, params) = early_round(|_| true, &[]);
    assert_eq!(answers.first(), Some(&Kind::Ack), "{answers:?}");
    assert!(
        !answers.iter().any(|k| matches!(k, Kind::Missing { .. })),
        "{answers:?}"
    );
    assert!(params[0] == expected_mean() && params[1] == expected_mean());
}

/// A NOTIFY that reached a node before it started the round, with a chunk of its update
/// lost, is answered as soon as the round starts: the lost chunk is reported missing at
/// once, not a retransmission timeout later; the round still ends exact.
#[test]
fn an_early_notify_with_a_lost_chunk_is_answered_when_the_round_starts() {
    let (answers, params) = early_round(|k| k != 2, &[]);
    assert!(
        matches!(answers.first(), Some(Kind::Missing { .. })),
        "B reports the lost chunk at once: {answers:?}"
    );
    assert!(params[0] == expected_mean() && params[1] == expected_mean());
}

/// A start refused for a non-finite value, inside the segment whose chunks came early or
/// outside it, changes none of those chunks: the round that starts next answers with the
/// ACK at once and ends exact.
#[test]
fn a_refused_start_keeps_the_chunks_that_came_early() {
    let (answers, params) = early_round(|_| true, &[0, MODEL / 2, MODEL - 1]);
    assert_eq!(answers.first(), Some(&Kind::Ack), "{answers:?}");
    assert!(params[0] == expected_mean() && params[1] == expected_mean());
}

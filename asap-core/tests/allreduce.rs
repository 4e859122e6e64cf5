//! The ring all-reduce baseline's first step when neighbours start a round at different
//! times.

use asap_core::wire::{self, Kind};
use asap_core::{AllReduce, AllReduceBuffers, Config, Instant, NodeId};

const MODEL: usize = 1_000;

/// A NOTIFY that reached a node before it started the round (its left neighbour started
/// sooner; the chunks were dropped) is answered as soon as the round starts: every chunk
/// is reported missing at once, not a retransmission timeout later.
#[test]
fn an_early_notify_is_answered_when_the_round_starts() {
    let config = |id| Config {
        max_frame: 512,
        ..Config::new(3, NodeId(id), MODEL)
    };
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
    let t0 = Instant::from_millis(1);
    a.start_round(t0, &[1.0; MODEL]).unwrap();
    let mut buf = vec![0u8; 512];
    let mut notifies = 0;
    while let Some(t) = a.poll_transmit(t0, &mut buf).unwrap() {
        let (h, _) = wire::peek(&buf[..t.len]).unwrap();
        notifies += u32::from(matches!(h.kind, Kind::Notify { .. }));
        // B has not started: it drops the chunks and notes the NOTIFY.
        b.handle_frame_mut(t0, &mut buf[..t.len]).unwrap();
    }
    assert_eq!(notifies, 1);
    let t1 = Instant::from_millis(2);
    b.start_round(t1, &[3.0; MODEL]).unwrap();
    let mut answers = Vec::new();
    while let Some(t) = b.poll_transmit(t1, &mut buf).unwrap() {
        let (h, _) = wire::peek(&buf[..t.len]).unwrap();
        if h.to == NodeId(0) {
            answers.push(h.kind);
        }
    }
    assert!(
        answers.iter().any(|k| matches!(k, Kind::Missing { .. })),
        "B reports the dropped chunks at once: {answers:?}"
    );
}

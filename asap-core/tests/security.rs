//! Authenticated clusters: nodes with a shared key reach the mean; frames with the wrong
//! key, replayed, unauthenticated, altered or from outside the cluster are refused,
//! counted, and leave the replicas as they were. And the poisoning guard: a peer's
//! outlandish (but finite) update moves a replica no farther than `Config::clip` allows.
//! Encrypting clusters: the same, and the values never cross the wire in clear.

use asap_core::auth::Key;
use asap_core::wire::{self, DecodeError, Header, Integrity, Kind};
use asap_core::{Accepted, Clip, Config, ConfigError, FrameError, Instant, Node, NodeId, PeerSpec, Wait};

mod common;
use common::Mem;

const MODEL: usize = 300;
const A: NodeId = NodeId(0);
const B: NodeId = NodeId(1);
const K1: Key = Key::new([1; 32]);
const K2: Key = Key::new([2; 32]);

fn config(id: NodeId, key: Option<Key>, wait: Wait) -> Config {
    Config {
        max_frame: 512,
        key,
        wait,
        ..Config::new(9, id, MODEL)
    }
}

#[cfg(feature = "encrypt")]
fn encrypting(id: NodeId, key: Key, wait: Wait) -> Config {
    Config {
        encrypt: true,
        incarnation: 1,
        ..config(id, Some(key), wait)
    }
}

fn node(config: Config, mem: &mut Mem) -> Node<'_, 4> {
    let other = if config.id == A { B } else { A };
    Node::new(config, &[PeerSpec::both(other, 0.5)], mem.buffers(), Instant::ZERO).unwrap()
}

fn frames(node: &mut Node<'_, 4>, now: Instant) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 512];
    while let Some(t) = node.poll_transmit(now, &mut buf).unwrap() {
        out.push(buf[..t.len].to_vec());
    }
    out
}

fn replica(seed: f32) -> Vec<f32> {
    (0..MODEL).map(|k| seed + k as f32 / 100.0).collect()
}

/// Runs both nodes `rounds` rounds on a lossless link (1 ms steps); returns their replicas.
fn run_pair<'m>(a: &mut Node<'m, 4>, b: &mut Node<'m, 4>, rounds: u32) -> (Vec<f32>, Vec<f32>) {
    let (mut pa, mut pb) = (replica(0.0), replica(1.0));
    let (mut da, mut db) = (0, 0);
    for ms in 0..10_000u64 {
        let now = Instant::from_millis(ms);
        for (n, p, done) in [(&mut *a, &mut pa, &mut da), (&mut *b, &mut pb, &mut db)] {
            if *done < rounds && !n.is_started() && n.can_start_round().is_ok() {
                n.start_round(now, p).unwrap();
            }
            if n.is_ready() {
                n.finish_round(now, p).unwrap();
                *done += 1;
            }
        }
        for mut bytes in frames(a, now) {
            // Every frame of a keyed node is authenticated: a node without the key cannot read it.
            assert_eq!(wire::decode(&bytes).unwrap_err(), DecodeError::NoKey);
            b.handle_frame_mut(now, &mut bytes).unwrap();
        }
        for mut bytes in frames(b, now) {
            a.handle_frame_mut(now, &mut bytes).unwrap();
        }
        if a.poll_timeout().is_some_and(|t| t <= now) {
            a.handle_timeout(now);
        }
        if b.poll_timeout().is_some_and(|t| t <= now) {
            b.handle_timeout(now);
        }
        if da == rounds && db == rounds {
            return (pa, pb);
        }
    }
    panic!("rounds did not finish: {da} and {db}");
}

/// Runs both nodes three rounds: each ends at the mean of the two starting replicas,
/// and neither refused a frame.
fn assert_pair_averages_refusing_nothing<'m>(a: &mut Node<'m, 4>, b: &mut Node<'m, 4>) {
    let (pa, pb) = run_pair(a, b, 3);
    for k in 0..MODEL {
        let mean = k as f32 / 100.0 + 0.5;
        assert!(
            (pa[k] - mean).abs() < 1e-5 && (pb[k] - mean).abs() < 1e-5,
            "{k}: {} {}",
            pa[k],
            pb[k]
        );
    }
    for n in [&*a, &*b] {
        assert_eq!(
            (n.stats().auth_failures, n.stats().replays, n.stats().frames_refused),
            (0, 0, 0)
        );
    }
}

#[test]
fn a_keyed_pair_averages_and_refuses_nothing() {
    let (ca, cb) = (config(A, Some(K1), Wait::All), config(B, Some(K1), Wait::All));
    let (mut ma, mut mb) = (Mem::new(&ca, 1), Mem::new(&cb, 1));
    let (mut a, mut b) = (node(ca, &mut ma), node(cb, &mut mb));
    assert_pair_averages_refusing_nothing(&mut a, &mut b);
}

#[test]
fn frames_with_another_key_are_refused_and_change_nothing() {
    let (ca, cb) = (config(A, Some(K1), Wait::All), config(B, Some(K2), Wait::None));
    let (mut ma, mut mb) = (Mem::new(&ca, 1), Mem::new(&cb, 1));
    let (mut a, mut b) = (node(ca, &mut ma), node(cb, &mut mb));
    let now = Instant::from_millis(1);
    a.start_round(now, &replica(0.0)).unwrap();
    let sent = frames(&mut a, now);
    assert!(sent.len() >= 3, "Hello and update chunks");
    for bytes in &sent {
        assert_eq!(b.handle_frame(now, bytes), Err(FrameError::Decode(DecodeError::BadTag)));
    }
    assert_eq!(b.stats().auth_failures, sent.len() as u64);
    assert_eq!(b.stats().frames_received, 0);
    // B's round mixes nothing of A's.
    let mut pb = replica(1.0);
    b.start_round(now, &pb).unwrap();
    b.finish_round(now, &mut pb).unwrap();
    assert_eq!(pb, replica(1.0));
}

#[test]
fn replayed_frames_are_refused_counted_and_change_nothing() {
    let (ca, cb) = (config(A, Some(K1), Wait::All), config(B, Some(K1), Wait::All));
    let (mut ma, mut mb) = (Mem::new(&ca, 1), Mem::new(&cb, 1));
    let (mut a, mut b) = (node(ca, &mut ma), node(cb, &mut mb));
    let now = Instant::from_millis(1);
    a.start_round(now, &replica(0.0)).unwrap();
    let sent = frames(&mut a, now);
    for bytes in &sent {
        // Authenticated and new: proof enough to move A's address (the roaming rule).
        assert_eq!(b.handle_frame(now, bytes), Ok(Accepted { from: A, fresh: true }));
    }
    let received = b.stats().frames_received;
    // The attacker sends every frame again (say, the update of a round long gone).
    for bytes in &sent {
        assert_eq!(b.handle_frame(now, bytes), Err(FrameError::Replay(A)));
    }
    assert_eq!(b.stats().replays, sent.len() as u64);
    assert_eq!(b.stats().frames_received, received);
    // B mixes A's update exactly once.
    let mut pb = replica(1.0);
    b.start_round(now, &pb).unwrap();
    assert!(b.is_ready());
    b.finish_round(now, &mut pb).unwrap();
    for (k, v) in pb.iter().enumerate() {
        assert!((v - (k as f32 / 100.0 + 0.5)).abs() < 1e-5, "{k}: {v}");
    }
}

#[test]
fn plain_altered_and_outsider_frames_are_refused_at_a_keyed_node() {
    let cb = config(B, Some(K1), Wait::None);
    let mut mb = Mem::new(&cb, 1);
    let mut b = node(cb, &mut mb);
    let now = Instant::from_millis(1);
    // A keyless node's frames carry only a CRC.
    let cp = config(A, None, Wait::All);
    let mut mp = Mem::new(&cp, 1);
    let mut plain = node(cp, &mut mp);
    plain.start_round(now, &replica(0.0)).unwrap();
    for bytes in frames(&mut plain, now) {
        assert_eq!(
            b.handle_frame(now, &bytes),
            Err(FrameError::Decode(DecodeError::Unauthenticated))
        );
    }
    // An authenticated frame with one bit flipped.
    let ca = config(A, Some(K1), Wait::All);
    let mut ma = Mem::new(&ca, 1);
    let mut a = node(ca, &mut ma);
    a.start_round(now, &replica(0.0)).unwrap();
    let mut altered = frames(&mut a, now).pop().unwrap();
    let middle = altered.len() / 2;
    altered[middle] ^= 0x10;
    assert_eq!(
        b.handle_frame(now, &altered),
        Err(FrameError::Decode(DecodeError::BadTag))
    );
    // A frame with the right key from a node id outside the cluster (a member's stolen key
    // cannot be told apart: that is the threat model's limit, see the README).
    let outsider = Header {
        version: wire::VERSION,
        integrity: Integrity::Blake3 { seq: 0 },
        cluster: 9,
        from: NodeId(7),
        incarnation: 0,
        to: B,
        round: 0,
        kind: Kind::Heartbeat,
        payload_len: 0,
    };
    let mut buf = [0u8; 128];
    let n = wire::encode_keyed(outsider, &[], &mut buf, Some(&K1)).unwrap();
    assert_eq!(b.handle_frame(now, &buf[..n]), Err(FrameError::UnknownPeer(NodeId(7))));
    let s = b.stats();
    assert!(s.auth_failures >= 2, "{s:?}");
    assert_eq!((s.frames_received, s.frames_refused), (0, 1));
    let mut pb = replica(1.0);
    b.start_round(now, &pb).unwrap();
    b.finish_round(now, &mut pb).unwrap();
    assert_eq!(pb, replica(1.0));
}

/// B's replica after one round in which A sent `a_values` (A's own round is not run).
fn b_after_one_update(clip: Option<Clip>, a_values: &[f32]) -> (Vec<f32>, u64) {
    let ca = config(A, None, Wait::All);
    let cb = Config {
        clip,
        ..config(B, None, Wait::All)
    };
    let (mut ma, mut mb) = (Mem::new(&ca, 1), Mem::new(&cb, 1));
    let (mut a, mut b) = (node(ca, &mut ma), node(cb, &mut mb));
    let now = Instant::from_millis(1);
    let mut pb = replica(1.0);
    b.start_round(now, &pb).unwrap();
    a.start_round(now, a_values).unwrap();
    for bytes in frames(&mut a, now) {
        b.handle_frame(now, &bytes).unwrap();
    }
    assert!(b.is_ready());
    b.finish_round(now, &mut pb).unwrap();
    (pb, b.stats().chunks_clipped)
}

fn distance(u: &[f32], v: &[f32]) -> f64 {
    u.iter()
        .zip(v)
        .map(|(a, b)| f64::from(a - b).powi(2))
        .sum::<f64>()
        .sqrt()
}

#[test]
fn clipping_bounds_how_far_one_poisoned_update_moves_a_replica() {
    let poison: Vec<f32> = (0..MODEL).map(|k| 1e6 * if k % 2 == 0 { 1.0 } else { -1.0 }).collect();
    let own = replica(1.0);
    // Unguarded, the replica goes halfway to the poison.
    let (unguarded, clipped) = b_after_one_update(None, &poison);
    assert_eq!(clipped, 0);
    assert!(distance(&unguarded, &own) > 1e6);
    // Guarded: every chunk pulled to within 10% of the local chunk's norm, then mixed
    // with weight 1/2, so the replica moves at most 5% of its norm.
    let clip = Clip {
        relative: 0.1,
        absolute: 0.0,
    };
    let (guarded, clipped) = b_after_one_update(Some(clip), &poison);
    assert_eq!(
        clipped, 3,
        "all three chunks of the 300-value model (512-byte frames) were clipped"
    );
    let moved = distance(&guarded, &own);
    let norm = own.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
    assert!(
        moved > 0.0 && moved <= 0.05 * norm * 1.0001,
        "moved {moved} of norm {norm}"
    );
    // An honest update (close to the replica) passes untouched.
    let honest: Vec<f32> = own.iter().map(|v| v + 0.01).collect();
    let (mixed, clipped) = b_after_one_update(Some(clip), &honest);
    assert_eq!(clipped, 0);
    for (m, v) in mixed.iter().zip(&own) {
        assert!((m - (v + 0.005)).abs() < 1e-5);
    }
}

#[cfg(feature = "encrypt")]
#[test]
fn an_encrypting_pair_averages_and_sends_no_value_in_clear() {
    let (ca, cb) = (encrypting(A, K1, Wait::All), encrypting(B, K1, Wait::All));
    let (mut ma, mut mb) = (Mem::new(&ca, 1), Mem::new(&cb, 1));
    let (mut a, mut b) = (node(ca, &mut ma), node(cb, &mut mb));
    // What A's first update looks like on the wire: no value's bytes in clear.
    let now = Instant::ZERO;
    let mine = replica(0.0);
    a.start_round(now, &mine).unwrap();
    let sent = frames(&mut a, now);
    let mut updates = 0;
    for bytes in &sent {
        let (header, header_len) = wire::peek(bytes).unwrap();
        assert!(matches!(header.integrity, Integrity::XChaCha20Poly1305 { .. }));
        if let Kind::Update { .. } = header.kind {
            updates += 1;
            let payload = &bytes[header_len..header_len + usize::from(header.payload_len)];
            let in_clear = payload
                .chunks(4)
                .filter(|w| mine.iter().any(|v| v.to_le_bytes() == **w))
                .count();
            assert!(in_clear <= 1, "{in_clear} values readable in {} bytes", payload.len());
        }
        assert_eq!(
            wire::decode_keyed(bytes, Some(&K1)).unwrap_err(),
            DecodeError::Encrypted
        );
    }
    assert!(updates >= 2, "{updates}");
    for mut bytes in sent {
        b.handle_frame_mut(now, &mut bytes).unwrap();
    }
    assert_eq!(b.stats().frames_received, a.stats().frames_sent);
    // Fresh nodes run three rounds: the mean comes out as with plain frames.
    drop((a, b));
    let (mut ma, mut mb) = (Mem::new(&ca, 1), Mem::new(&cb, 1));
    let (mut a, mut b) = (node(ca, &mut ma), node(cb, &mut mb));
    assert_pair_averages_refusing_nothing(&mut a, &mut b);
}

#[cfg(feature = "encrypt")]
#[test]
fn an_encrypting_node_refuses_other_schemes_forgeries_and_replays_and_changes_nothing() {
    let cb = encrypting(B, K1, Wait::None);
    let mut mb = Mem::new(&cb, 1);
    let mut b = node(cb, &mut mb);
    let now = Instant::from_millis(1);
    let sent_by = |config: Config| {
        let mut m = Mem::new(&config, 1);
        let mut n = node(config, &mut m);
        n.start_round(now, &replica(0.0)).unwrap();
        frames(&mut n, now)
    };
    let refused = |b: &mut Node<'_, 4>, frames: Vec<Vec<u8>>, error: DecodeError| {
        for mut bytes in frames {
            let before = bytes.clone();
            assert_eq!(b.handle_frame_mut(now, &mut bytes), Err(FrameError::Decode(error)));
            assert_eq!(bytes, before, "a refused frame is not decrypted in place");
        }
    };
    // Tagged but in clear, CRC only, encrypted under another key.
    refused(
        &mut b,
        sent_by(config(A, Some(K1), Wait::All)),
        DecodeError::NotEncrypted,
    );
    refused(
        &mut b,
        sent_by(config(A, None, Wait::All)),
        DecodeError::Unauthenticated,
    );
    refused(&mut b, sent_by(encrypting(A, K2, Wait::All)), DecodeError::BadTag);
    // One flipped bit anywhere in a good frame: header, ciphertext or tag.
    let good = sent_by(encrypting(A, K1, Wait::All));
    let update = good.last().unwrap();
    for at in [1, update.len() / 2, update.len() - 1] {
        let mut altered = update.clone();
        altered[at] ^= 0x04;
        let before = altered.clone();
        let result = b.handle_frame_mut(now, &mut altered);
        assert!(
            matches!(
                result,
                Err(FrameError::Decode(DecodeError::BadTag | DecodeError::Malformed))
            ),
            "byte {at}: {result:?}"
        );
        assert_eq!(altered, before);
    }
    // Read-only bytes cannot be decrypted.
    assert_eq!(
        b.handle_frame(now, update),
        Err(FrameError::Decode(DecodeError::Encrypted))
    );
    let s = *b.stats();
    assert_eq!(s.frames_received, 0, "{s:?}");
    assert!(s.auth_failures >= 4, "{s:?}");
    // B mixed nothing.
    let mut pb = replica(1.0);
    b.start_round(now, &pb).unwrap();
    b.finish_round(now, &mut pb).unwrap();
    assert_eq!(pb, replica(1.0));
    // The good frames are taken once; their copies are replays.
    for mut bytes in good.clone() {
        b.handle_frame_mut(now, &mut bytes).unwrap();
    }
    for mut bytes in good {
        assert_eq!(b.handle_frame_mut(now, &mut bytes), Err(FrameError::Replay(A)));
    }
}

#[cfg(feature = "encrypt")]
#[test]
fn encryption_needs_a_key_and_an_incarnation() {
    let no_key = Config {
        key: None,
        ..encrypting(A, K1, Wait::All)
    };
    assert_eq!(no_key.layout(1), Err(ConfigError::EncryptionNeedsKey));
    let first_life = Config {
        incarnation: 0,
        ..encrypting(A, K1, Wait::All)
    };
    assert_eq!(first_life.layout(1), Err(ConfigError::EncryptionNeedsIncarnation));
    assert!(encrypting(A, K1, Wait::All).layout(1).is_ok());
}

#[cfg(not(feature = "encrypt"))]
#[test]
fn without_the_encrypt_feature_encryption_is_a_configuration_error() {
    let config = Config {
        encrypt: true,
        incarnation: 1,
        ..config(A, Some(K1), Wait::All)
    };
    assert_eq!(config.layout(1), Err(ConfigError::EncryptionUnavailable));
}

/// AES-256-GCM (servers) and XChaCha20-Poly1305 (boards) under one cluster key: each
/// node seals with its own suite, names it in every header, and opens the other's; the
/// pair averages as a plain one does. A frame of either suite, altered, is refused.
#[cfg(feature = "aes-gcm")]
#[test]
fn aes_gcm_and_xchacha_nodes_open_each_others_frames_and_average() {
    use asap_core::CipherSuite;
    let ca = Config {
        cipher: CipherSuite::Aes256Gcm,
        ..encrypting(A, K1, Wait::All)
    };
    let cb = encrypting(B, K1, Wait::All);
    let (mut ma, mut mb) = (Mem::new(&ca, 1), Mem::new(&cb, 1));
    let (mut a, mut b) = (node(ca, &mut ma), node(cb, &mut mb));
    let now = Instant::ZERO;
    a.start_round(now, &replica(0.0)).unwrap();
    b.start_round(now, &replica(1.0)).unwrap();
    let (from_a, from_b) = (frames(&mut a, now), frames(&mut b, now));
    for (sent, aes) in [(&from_a, true), (&from_b, false)] {
        for bytes in sent.iter() {
            let (header, _) = wire::peek(bytes).unwrap();
            let named = matches!(header.integrity, Integrity::Aes256Gcm { .. });
            assert_eq!(named, aes, "{:?}", header.integrity);
        }
    }
    // Altered frames of both suites are refused and change nothing.
    for (receiver, sent) in [(&mut b, &from_a), (&mut a, &from_b)] {
        for bytes in sent.iter() {
            let mut altered = bytes.clone();
            let last = altered.len() - 1;
            altered[last] ^= 0x40;
            let result = receiver.handle_frame_mut(now, &mut altered);
            assert_eq!(result, Err(FrameError::Decode(DecodeError::BadTag)));
        }
        assert_eq!(receiver.stats().frames_received, 0);
    }
    drop((a, b));
    let (mut ma, mut mb) = (Mem::new(&ca, 1), Mem::new(&cb, 1));
    let (mut a, mut b) = (node(ca, &mut ma), node(cb, &mut mb));
    assert_pair_averages_refusing_nothing(&mut a, &mut b);
}

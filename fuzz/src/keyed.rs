//! `keyed`: the authenticated path — `wire::decode_keyed` on raw bytes, and a keyed node
//! fed those bytes and a correctly sealed version of them, twice.
//!
//! The input's first byte picks which of two keys the attacker holds (the cluster's or
//! another); the rest is the frame. Checks: decoding never panics; a frame that decodes
//! under the key re-seals to exactly its bytes; no frame decodes under both a key and no
//! key; a keyed node refuses everything not sealed with its key (counted, nothing
//! received), takes a sealed frame at most once (the second copy is a replay), and its
//! counters add up.

use asap_core::auth::Key;
use asap_core::wire::{self, DecodeError, F32Le, Integrity};
use asap_core::{FrameError, Instant, Node, NodeId};

use crate::common::{config, peers_of, Mem, MAX_FRAME};

/// The cluster's key, and one an outsider might hold.
const CLUSTER_KEY: Key = Key::new([0x5a; 32]);
const OTHER_KEY: Key = Key::new([0xa5; 32]);

/// Values of the fixture's model.
const MODEL: usize = 300;

/// The target body.
pub fn run(data: &[u8]) {
    let Some((&selector, frame)) = data.split_first() else {
        return;
    };
    let attacker = if selector & 1 == 0 { CLUSTER_KEY } else { OTHER_KEY };

    // The wire: keyed decoding of arbitrary bytes.
    let keyed = wire::decode_keyed(frame, Some(&CLUSTER_KEY));
    let plain = wire::decode_keyed(frame, None);
    assert!(
        !(keyed.is_ok() && plain.is_ok()),
        "a frame decoded with and without the key"
    );
    if let Ok((decoded, used)) = &keyed {
        let values: Vec<f32> = F32Le::new(decoded.payload).expect("whole values").iter().collect();
        let mut buf = vec![0u8; wire::MAX_HEADER_LEN + decoded.payload.len() + asap_core::auth::TAG_LEN];
        let n = wire::encode_keyed(decoded.header, &values, &mut buf, Some(&CLUSTER_KEY)).expect("fits");
        assert_eq!(&buf[..n], &frame[..*used], "a keyed frame re-seals to other bytes");
    }

    // A keyed node (node 1 of the pair) fed the raw bytes.
    let cfg = asap_core::Config {
        key: Some(CLUSTER_KEY),
        ..config(NodeId(1), MODEL)
    };
    let mut mem = Mem::new(&cfg, 1);
    let mut node = Node::<4>::new(cfg, &peers_of(NodeId(1)), mem.buffers(), Instant::ZERO).expect("fixture");
    let now = Instant::from_millis(1);
    let raw = node.handle_frame(now, frame);
    if keyed.is_err() {
        assert!(raw.is_err(), "the node took bytes the key does not verify");
        assert_eq!(node.stats().frames_received, 0);
    }

    // The same content sealed by the attacker's key, delivered twice: with the cluster's
    // key the second copy is a replay; with another key both are refused.
    let Ok((decoded, _)) = wire::decode(frame).or(keyed) else {
        return;
    };
    let values: Vec<f32> = F32Le::new(decoded.payload).expect("whole values").iter().collect();
    let mut header = decoded.header;
    header.integrity = Integrity::Blake3 { seq: 1 << 40 };
    let mut buf = vec![0u8; MAX_FRAME.max(wire::MAX_HEADER_LEN + 4 * values.len() + 16)];
    let Ok(n) = wire::encode_keyed(header, &values, &mut buf, Some(&attacker)) else {
        return;
    };
    let before = *node.stats();
    let first = node.handle_frame(now, &buf[..n]);
    let second = node.handle_frame(now, &buf[..n]);
    let after = *node.stats();
    if attacker == OTHER_KEY {
        assert_eq!(first, Err(FrameError::Decode(DecodeError::BadTag)));
        assert_eq!(second, Err(FrameError::Decode(DecodeError::BadTag)));
        assert_eq!(after.auth_failures, before.auth_failures + 2);
        assert_eq!(after.frames_received, before.frames_received);
    } else if first.is_ok() {
        assert_eq!(
            second,
            Err(FrameError::Replay(header.from)),
            "a sealed frame taken twice"
        );
        assert_eq!(after.replays, before.replays + 1);
    }
}

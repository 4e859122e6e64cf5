//! `keyed`: the authenticated and the encrypted path — `wire::decode_keyed` and
//! `wire::open` on raw bytes, and a keyed (or encrypting) node fed those bytes and a
//! correctly sealed version of them, twice.
//!
//! The input's first byte picks which of two keys the attacker holds (the cluster's or
//! another, bit 0), whether the cluster encrypts (bit 1) and with which suite
//! (XChaCha20-Poly1305 or AES-256-GCM, bit 2), and whether the node runs per-node
//! identities (bit 3: `Config::identities`, its one peer's link key being the cluster's
//! key, so a frame naming any other sender is refused before it is opened); the rest is
//! the frame.
//! Checks: decoding never panics; a frame that opens under the key re-seals to exactly
//! its bytes (the AEAD is deterministic given its nonce); no frame decodes both with and
//! without a key; a refused frame's bytes are left as they came (an AES-256-GCM payload
//! may be wiped to zeros, nothing else may change); the node refuses
//! everything not sealed with its key and scheme (counted, nothing received), takes a
//! sealed frame at most once (the second copy is a replay), and its counters add up.

use asap_core::auth::{Cipher, CipherSuite, Key};
use asap_core::wire::{self, DecodeError, Sealing};
use asap_core::{FrameError, Instant, Node, NodeId};

use crate::common::{config, peers_of, Mem, MAX_FRAME};

/// The cluster's key, and one an outsider might hold.
const CLUSTER_KEY: Key = Key::new([0x5a; 32]);
const OTHER_KEY: Key = Key::new([0xa5; 32]);

/// Values of the fixture's model.
const MODEL: usize = 300;

fn cipher(key: &Key, suite: CipherSuite) -> Cipher {
    Cipher::from_key(key, suite).expect("built with encrypt and aes-gcm")
}

/// `header` and `payload` (bytes as they travel in clear) sealed as `sealing` says.
fn reseal(header: wire::Header, payload: &[u8], sealing: Sealing<'_>) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; MAX_FRAME.max(wire::MAX_HEADER_LEN + payload.len() + asap_core::auth::TAG_LEN)];
    let n = wire::seal_with(header, payload.len(), &mut buf, sealing, |out| {
        out.copy_from_slice(payload)
    })
    .ok()?;
    buf.truncate(n);
    Some(buf)
}

/// Whether `after` is `before` with its payload zeroed (ring wipes an AES-GCM payload
/// whose tag failed) and nothing else changed.
fn only_payload_wiped(after: &[u8], before: &[u8]) -> bool {
    let Ok((header, header_len)) = wire::peek(before) else {
        return false;
    };
    let payload = header_len..header_len + usize::from(header.payload_len);
    let Some(wiped) = after.get(payload.clone()) else {
        return false;
    };
    matches!(header.integrity, wire::Integrity::Aes256Gcm { .. })
        && wiped.iter().all(|&b| b == 0)
        && after[..payload.start] == before[..payload.start]
        && after[payload.end..] == before[payload.end..]
}

/// The target body.
pub fn run(data: &[u8]) {
    let Some((&selector, frame)) = data.split_first() else {
        return;
    };
    let attacker = if selector & 1 == 0 { CLUSTER_KEY } else { OTHER_KEY };
    let encrypt = selector & 2 != 0;
    let suite = match selector & 4 {
        0 => CipherSuite::XChaCha20Poly1305,
        _ => CipherSuite::Aes256Gcm,
    };
    let (cluster_cipher, attacker_cipher) = (cipher(&CLUSTER_KEY, suite), cipher(&attacker, suite));
    let (ours, theirs) = if encrypt {
        (Sealing::Encrypt(&cluster_cipher), Sealing::Encrypt(&attacker_cipher))
    } else {
        (Sealing::Tag(&CLUSTER_KEY), Sealing::Tag(&attacker))
    };

    // The wire: opening arbitrary bytes under the cluster's scheme (in a copy: it
    // decrypts in place).
    let mut copy = frame.to_vec();
    let opened = wire::open(&mut copy, ours).map(|(f, used)| (f.header, f.payload.to_vec(), used));
    let plain = wire::decode(frame);
    assert!(
        !(opened.is_ok() && plain.is_ok()),
        "a frame decoded with and without the key"
    );
    match &opened {
        Ok((header, payload, used)) => {
            // An encrypting node opens either suite: re-seal with the frame's own.
            let suite_cipher = header.integrity.cipher_suite().map(|s| cipher(&CLUSTER_KEY, s));
            let sealing = match (&suite_cipher, ours) {
                (Some(c), Sealing::Encrypt(_)) => Sealing::Encrypt(c),
                _ => ours,
            };
            let again = reseal(*header, payload, sealing).expect("fits");
            assert_eq!(&again[..], &frame[..*used], "an opened frame re-seals to other bytes");
        }
        Err(_) => assert!(
            copy == frame || only_payload_wiped(&copy, frame),
            "a refused frame was changed in place"
        ),
    }

    // A keyed node (node 1 of the pair) fed the raw bytes.
    let identities = selector & 8 != 0;
    let cfg = asap_core::Config {
        key: (!identities).then_some(CLUSTER_KEY),
        identities,
        encrypt,
        cipher: suite,
        incarnation: 1,
        ..config(NodeId(1), MODEL)
    };
    let mut mem = Mem::new(&cfg, 1);
    let mut node = Node::<4>::new(cfg, &peers_of(NodeId(1)), mem.buffers(), Instant::ZERO).expect("fixture");
    if identities {
        node.set_link_key(NodeId(0), CLUSTER_KEY).expect("fixture");
    }
    let now = Instant::from_millis(1);
    let raw = node.handle_frame_mut(now, &mut frame.to_vec());
    if opened.is_err() {
        assert!(raw.is_err(), "the node took bytes the key does not verify");
        assert_eq!(node.stats().frames_received, 0);
    }

    // The same content sealed by the attacker, delivered twice: with the cluster's key
    // the second copy is a replay; with another key both are refused.
    let content = plain
        .map(|(f, _)| (f.header, f.payload.to_vec()))
        .or(opened.map(|(h, p, _)| (h, p)))
        .ok()
        .or_else(|| {
            let (f, _) = wire::decode_keyed(frame, Some(&CLUSTER_KEY)).ok()?;
            Some((f.header, f.payload.to_vec()))
        });
    let Some((mut header, payload)) = content else {
        return;
    };
    header.integrity = theirs.integrity(1 << 40);
    let Some(sealed) = reseal(header, &payload, theirs) else {
        return;
    };
    let before = *node.stats();
    let first = node.handle_frame_mut(now, &mut sealed.clone());
    let second = node.handle_frame_mut(now, &mut sealed.clone());
    let after = *node.stats();
    if identities && header.from != NodeId(0) {
        // Not a peer: no link key to open it with.
        assert_eq!(first, Err(FrameError::UnknownPeer(header.from)));
        assert_eq!(second, Err(FrameError::UnknownPeer(header.from)));
        assert_eq!(after.frames_refused, before.frames_refused + 2);
        assert_eq!(after.frames_received, before.frames_received);
    } else if attacker == OTHER_KEY {
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

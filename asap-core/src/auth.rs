//! Frame authentication and encryption: a cluster-wide pre-shared key, a keyed BLAKE3
//! tag (its first 16 bytes) over header and payload, optionally XChaCha20-Poly1305
//! encryption of the payload instead, and a per-sender replay window.
//!
//! BLAKE3's keyed mode is a MAC by construction (no HMAC wrapping) and constant-time in
//! software; it uses SIMD on servers (runtime-detected with the `std` feature) and a
//! portable implementation on boards (~7 KiB of flash on Cortex-M4). Tags are compared
//! in constant time. A frame's sequence number lives in its (authenticated) header, in
//! [`crate::wire::Integrity::Blake3`]; a receiver keeps a [`ReplayWindow`] per sender
//! and drops repeats and frames too old to judge.
//!
//! Encryption is in [`Cipher`] (cargo feature `encrypt`).
//!
//! This module is below `wire` in the crate's layers: it knows keys and bytes, never
//! frames.

use core::fmt;

mod cipher;
#[cfg(feature = "identity")]
mod identity;

pub use cipher::{Cipher, CipherSuite, Nonce, OpenError};
#[cfg(feature = "identity")]
pub use identity::{LinkKeyError, NodeSecret, PublicKey};

/// Length of an authentication tag.
pub const TAG_LEN: usize = 16;

/// Length of a key.
pub const KEY_LEN: usize = 32;

/// A cluster's pre-shared key. `Debug` never prints it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Key([u8; KEY_LEN]);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

/// Why a key could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyError {
    /// Not 64 hexadecimal digits (32 bytes).
    Length(usize),
    /// A character that is not a hexadecimal digit, at this byte offset.
    NotHex(usize),
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Length(n) => write!(f, "a key is {} hexadecimal digits, not {n}", 2 * KEY_LEN),
            KeyError::NotHex(at) => write!(f, "character {at} of the key is not a hexadecimal digit"),
        }
    }
}

impl core::error::Error for KeyError {}

impl Key {
    /// A key from its bytes (draw them from a CSPRNG: `head -c 32 /dev/urandom`).
    pub const fn new(bytes: [u8; KEY_LEN]) -> Self {
        Key(bytes)
    }

    /// A key from 64 hexadecimal digits (surrounding whitespace ignored, as in a key
    /// file written by `od`/`xxd -p -c 32`).
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        parse_hex32(text).map(Key)
    }

    /// The key's bytes (for deriving subkeys).
    #[cfg(feature = "encrypt")]
    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The tag of `bytes`: the first 16 bytes of BLAKE3 in keyed mode.
    pub fn tag(&self, bytes: &[u8]) -> [u8; TAG_LEN] {
        let hash = blake3::keyed_hash(&self.0, bytes);
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&hash.as_bytes()[..TAG_LEN]);
        tag
    }

    /// Whether `tag` authenticates `bytes` (compared in constant time).
    pub fn verify(&self, bytes: &[u8], tag: &[u8]) -> bool {
        let Ok(tag) = <&[u8; TAG_LEN]>::try_from(tag) else {
            return false;
        };
        constant_time_eq::constant_time_eq_16(&self.tag(bytes), tag)
    }
}

/// 32 bytes from 64 hexadecimal digits (surrounding whitespace ignored).
fn parse_hex32(text: &str) -> Result<[u8; KEY_LEN], KeyError> {
    let text = text.trim().as_bytes();
    if text.len() != 2 * KEY_LEN {
        return Err(KeyError::Length(text.len()));
    }
    let digit = |at: usize| match text[at] {
        c @ b'0'..=b'9' => Ok(c - b'0'),
        c @ b'a'..=b'f' => Ok(c - b'a' + 10),
        c @ b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(KeyError::NotHex(at)),
    };
    let mut bytes = [0u8; KEY_LEN];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = digit(2 * i)? << 4 | digit(2 * i + 1)?;
    }
    Ok(bytes)
}

/// What a node seals its frames with, derived once from its configuration's `key` and
/// `encrypt` (the cipher key derivation is not redone per frame).
#[derive(Clone, Debug, PartialEq, Eq)]
// One per node, built once and never moved in a hot path; no allocator to box it in.
#[allow(clippy::large_enum_variant)]
pub enum Secret {
    /// No key: CRC frames.
    None,
    /// Keyed BLAKE3 tags.
    Tag(Key),
    /// Encryption (with the configured [`CipherSuite`]).
    Encrypt(Cipher),
}

impl Secret {
    /// The secret of a key, an `encrypt` flag and the suite to encrypt with; `None`
    /// when they ask for what cannot be had (encryption without a key, or in a build
    /// without the suite: `Config::validate` says which).
    pub fn new(key: Option<Key>, encrypt: bool, suite: CipherSuite) -> Option<Self> {
        match (key, encrypt) {
            (None, false) => Some(Secret::None),
            (None, true) => None,
            (Some(key), false) => Some(Secret::Tag(key)),
            (Some(key), true) => Cipher::from_key(&key, suite).map(Secret::Encrypt),
        }
    }
}

/// The sequence numbers a receiver has seen from one sender: the highest, and which of
/// the 64 below it. Frames may arrive reordered within the window; a repeat, or a frame
/// older than the window, is a replay (or too late to tell) and is dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    /// Highest sequence number accepted (meaningful once `seen`).
    highest: u64,
    /// Bit `i`: `highest - i` was accepted.
    bits: u64,
    seen: bool,
}

/// Why [`ReplayWindow::accept`] refused a sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replay {
    /// Accepted before.
    Repeat,
    /// Older than the window: cannot tell, so refused.
    TooOld,
}

impl ReplayWindow {
    /// Sequence numbers below the highest that the window remembers.
    pub const SPAN: u64 = 64;

    /// Records `seq` if it is new. Call only for frames whose tag verified.
    pub fn accept(&mut self, seq: u64) -> Result<(), Replay> {
        if !self.seen {
            *self = ReplayWindow {
                highest: seq,
                bits: 1,
                seen: true,
            };
            return Ok(());
        }
        if seq > self.highest {
            let shift = seq - self.highest;
            self.bits = if shift >= Self::SPAN { 0 } else { self.bits << shift };
            self.bits |= 1;
            self.highest = seq;
            return Ok(());
        }
        let age = self.highest - seq;
        if age >= Self::SPAN {
            return Err(Replay::TooOld);
        }
        let bit = 1u64 << age;
        if self.bits & bit != 0 {
            return Err(Replay::Repeat);
        }
        self.bits |= bit;
        Ok(())
    }

    /// Forgets everything (the sender restarted with a new incarnation).
    pub fn reset(&mut self) {
        *self = ReplayWindow::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: Key = Key::new([7; KEY_LEN]);

    #[test]
    fn tags_verify_only_with_the_key_and_the_bytes() {
        let tag = KEY.tag(b"frame");
        assert!(KEY.verify(b"frame", &tag));
        assert!(!Key::new([8; KEY_LEN]).verify(b"frame", &tag));
        assert!(!KEY.verify(b"framf", &tag));
        let mut flipped = tag;
        flipped[15] ^= 1;
        assert!(!KEY.verify(b"frame", &flipped));
        assert!(!KEY.verify(b"frame", &tag[..15]));
    }

    #[test]
    fn keyed_blake3_matches_the_reference_implementation() {
        // BLAKE3 keyed with 00..1f over the empty message, first 16 bytes, as computed by
        // the reference Python binding: blake3.blake3(b"", key=bytes(range(32))).digest()[:16].
        let key = Key::new(core::array::from_fn(|i| i as u8));
        let expected = [
            0x73, 0x49, 0x2b, 0x19, 0x99, 0x5d, 0x71, 0xcd, 0xb1, 0xe9, 0xd7, 0x4d, 0xec, 0xc0, 0x98, 0x09,
        ];
        assert_eq!(key.tag(b""), expected);
    }

    #[test]
    fn hex_keys_parse_and_bad_ones_are_refused() {
        let hex = "000102030405060708090a0b0c0d0e0f101112131415161718191A1B1C1D1E1F\n";
        assert_eq!(Key::from_hex(hex), Ok(Key::new(core::array::from_fn(|i| i as u8))));
        assert_eq!(Key::from_hex("00"), Err(KeyError::Length(2)));
        let bad = "zz0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
        assert_eq!(Key::from_hex(bad), Err(KeyError::NotHex(0)));
    }

    #[test]
    fn the_window_takes_new_and_reordered_numbers_once() {
        let mut w = ReplayWindow::default();
        assert_eq!(w.accept(10), Ok(()));
        assert_eq!(w.accept(10), Err(Replay::Repeat));
        assert_eq!(w.accept(12), Ok(()));
        assert_eq!(w.accept(11), Ok(()), "reordered within the window");
        assert_eq!(w.accept(11), Err(Replay::Repeat));
        assert_eq!(w.accept(12 + 63), Ok(()));
        assert_eq!(w.accept(12), Err(Replay::Repeat));
        assert_eq!(w.accept(11), Err(Replay::TooOld));
        assert_eq!(w.accept(u64::MAX), Ok(()), "a jump clears the window");
        assert_eq!(w.accept(u64::MAX - 64), Err(Replay::TooOld));
        assert_eq!(w.accept(u64::MAX - 63), Ok(()));
        w.reset();
        assert_eq!(w.accept(0), Ok(()), "a new incarnation starts over");
    }
}

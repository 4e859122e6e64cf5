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
//! Encryption ([`Cipher`]) is the RFC 8439 AEAD with XChaCha20's 24-byte nonce, under a
//! key derived from the cluster key (BLAKE3 `derive_key`, so the MAC and the cipher
//! never share a key). The header stays in clear (it is the associated data: routing,
//! round, chunk and weight are visible, only the values are hidden). The nonce is the
//! sender's id, incarnation and sequence number, so it never repeats as long as each
//! start of a node has a new incarnation — which is why an encrypting node refuses
//! incarnation 0 ([`crate::ConfigError::EncryptionNeedsIncarnation`]).

use core::fmt;

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::XChaCha20Poly1305;

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
        let mut key = [0u8; KEY_LEN];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = digit(2 * i)? << 4 | digit(2 * i + 1)?;
        }
        Ok(Key(key))
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

impl Key {
    /// The key frames are encrypted with: derived from the cluster key, so that the
    /// same secret never keys two different primitives.
    pub fn cipher(&self) -> Cipher {
        Cipher(blake3::derive_key(CIPHER_CONTEXT, &self.0))
    }
}

/// BLAKE3 `derive_key` context of the frame cipher's key (never change it: it would
/// change every key).
const CIPHER_CONTEXT: &str = "asap 2026-11-25 frame payload encryption, XChaCha20-Poly1305";

/// A frame's unique nonce: sender, incarnation and sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nonce {
    /// The sender's node id.
    pub from: u16,
    /// The sender's incarnation (new at every start).
    pub incarnation: u32,
    /// The sender's frame counter in this incarnation.
    pub seq: u64,
}

impl Nonce {
    fn bytes(self) -> chacha20poly1305::XNonce {
        let mut n = [0u8; 24];
        n[..2].copy_from_slice(&self.from.to_le_bytes());
        n[2..6].copy_from_slice(&self.incarnation.to_le_bytes());
        n[6..14].copy_from_slice(&self.seq.to_le_bytes());
        n.into()
    }
}

/// The payload cipher: XChaCha20-Poly1305 under a key derived with [`Key::cipher`].
/// `Debug` never prints the key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Cipher([u8; KEY_LEN]);

impl fmt::Debug for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cipher(..)")
    }
}

/// The tag of an encrypted frame did not verify: wrong key, or altered bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenError;

impl Cipher {
    fn aead(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.0.into())
    }

    /// Encrypts `payload` in place and returns the tag over `header` (in clear) and the
    /// ciphertext.
    pub fn seal(&self, nonce: Nonce, header: &[u8], payload: &mut [u8]) -> [u8; TAG_LEN] {
        // Encryption in place cannot fail below 2^38 bytes (a frame is at most 64 KiB).
        self.aead()
            .encrypt_inout_detached(&nonce.bytes(), header, payload.into())
            .map_or([0; TAG_LEN], Into::into)
    }

    /// Checks `tag` over `header` and the ciphertext, then decrypts `payload` in place.
    /// On error `payload` is unchanged.
    pub fn open(&self, nonce: Nonce, header: &[u8], payload: &mut [u8], tag: &[u8]) -> Result<(), OpenError> {
        let tag = <&[u8; TAG_LEN]>::try_from(tag).map_err(|_| OpenError)?;
        self.aead()
            .decrypt_inout_detached(&nonce.bytes(), header, payload.into(), &(*tag).into())
            .map_err(|_| OpenError)
    }
}

/// What a node seals its frames with, derived once from its configuration's `key` and
/// `encrypt` (the cipher key derivation is not redone per frame).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Secret {
    /// No key: CRC frames.
    None,
    /// Keyed BLAKE3 tags.
    Tag(Key),
    /// XChaCha20-Poly1305 encryption.
    Encrypt(Cipher),
}

impl Secret {
    /// The secret a configuration asks for (`encrypt` without a key is no secret; the
    /// configuration check refuses it).
    pub fn new(key: Option<Key>, encrypt: bool) -> Self {
        match (key, encrypt) {
            (None, _) => Secret::None,
            (Some(key), false) => Secret::Tag(key),
            (Some(key), true) => Secret::Encrypt(key.cipher()),
        }
    }

    /// How frames are sealed and opened with it.
    pub fn sealing(&self) -> crate::wire::Sealing<'_> {
        match self {
            Secret::None => crate::wire::Sealing::Crc,
            Secret::Tag(key) => crate::wire::Sealing::Tag(key),
            Secret::Encrypt(cipher) => crate::wire::Sealing::Encrypt(cipher),
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
    fn sealed_payloads_open_only_with_the_key_the_nonce_and_the_header() {
        let cipher = KEY.cipher();
        let nonce = Nonce {
            from: 3,
            incarnation: 7,
            seq: 11,
        };
        let mut payload = *b"sixteen bytes!!!values";
        let tag = cipher.seal(nonce, b"header", &mut payload);
        assert_ne!(&payload, b"sixteen bytes!!!values", "encrypted");
        let sealed = payload;
        for (cipher, nonce, header) in [
            (Key::new([8; KEY_LEN]).cipher(), nonce, &b"header"[..]),
            (cipher, Nonce { seq: 12, ..nonce }, b"header"),
            (cipher, Nonce { from: 4, ..nonce }, b"header"),
            (
                cipher,
                Nonce {
                    incarnation: 8,
                    ..nonce
                },
                b"header",
            ),
            (cipher, nonce, b"headeR"),
        ] {
            assert_eq!(cipher.open(nonce, header, &mut payload, &tag), Err(OpenError));
            assert_eq!(payload, sealed, "a refused frame is left as it came");
        }
        let mut flipped = tag;
        flipped[0] ^= 1;
        assert_eq!(cipher.open(nonce, b"header", &mut payload, &flipped), Err(OpenError));
        assert_eq!(cipher.open(nonce, b"header", &mut payload, &tag[..15]), Err(OpenError));
        assert_eq!(cipher.open(nonce, b"header", &mut payload, &tag), Ok(()));
        assert_eq!(&payload, b"sixteen bytes!!!values");
    }

    #[test]
    fn the_cipher_key_is_not_the_cluster_key() {
        assert_ne!(KEY.cipher().0, [7; KEY_LEN]);
        assert_ne!(KEY.cipher(), Key::new([8; KEY_LEN]).cipher());
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

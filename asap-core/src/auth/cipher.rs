//! Payload encryption (cargo feature `encrypt`): XChaCha20-Poly1305, the RFC 8439 AEAD
//! with a 24-byte nonce (RustCrypto's `chacha20poly1305`), under a key derived from the
//! cluster key with BLAKE3's `derive_key`, so the MAC and the cipher never share a key.
//!
//! The header stays in clear as the associated data: routing, round, chunk and weight
//! are visible, only the values are hidden. The nonce is the sender's id, incarnation and
//! sequence number, so it never repeats as long as each start of a node has a new
//! incarnation — which is why an encrypting node refuses incarnation 0
//! ([`crate::ConfigError::EncryptionNeedsIncarnation`]).
//!
//! Without the feature (it costs ~4 KiB of flash on a Cortex-M4), [`Cipher`] has no
//! values: nothing can be encrypted, encrypted frames are refused as
//! [`crate::DecodeError::Encrypted`], and `Config::encrypt` is
//! [`crate::ConfigError::EncryptionUnavailable`].

use core::fmt;

use super::{Key, TAG_LEN};

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

/// The tag of an encrypted frame did not verify: wrong key, or altered bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenError;

/// The payload cipher, keyed with [`Cipher::from_key`]. `Debug` never prints the key.
#[cfg(feature = "encrypt")]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Cipher([u8; super::KEY_LEN]);

/// The payload cipher, absent from this build (no `encrypt` feature): no value exists.
#[cfg(not(feature = "encrypt"))]
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Cipher {}

impl fmt::Debug for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cipher(..)")
    }
}

/// BLAKE3 `derive_key` context of the frame cipher's key (never change it: it would
/// change every key).
#[cfg(feature = "encrypt")]
const CONTEXT: &str = "asap 2026-11-25 frame payload encryption, XChaCha20-Poly1305";

#[cfg(feature = "encrypt")]
impl Cipher {
    /// The cipher keyed from the cluster key (`None` only in builds without the
    /// `encrypt` feature).
    pub fn from_key(key: &Key) -> Option<Self> {
        Some(Cipher(blake3::derive_key(CONTEXT, key.bytes())))
    }

    fn aead(&self) -> chacha20poly1305::XChaCha20Poly1305 {
        use chacha20poly1305::aead::KeyInit;
        chacha20poly1305::XChaCha20Poly1305::new(&self.0.into())
    }

    fn nonce(n: Nonce) -> chacha20poly1305::XNonce {
        let mut bytes = [0u8; 24];
        bytes[..2].copy_from_slice(&n.from.to_le_bytes());
        bytes[2..6].copy_from_slice(&n.incarnation.to_le_bytes());
        bytes[6..14].copy_from_slice(&n.seq.to_le_bytes());
        bytes.into()
    }

    /// Encrypts `payload` in place and returns the tag over `header` (in clear) and the
    /// ciphertext.
    pub fn seal(&self, nonce: Nonce, header: &[u8], payload: &mut [u8]) -> [u8; TAG_LEN] {
        use chacha20poly1305::aead::AeadInOut;
        // Encryption in place cannot fail below 2^38 bytes (a frame is at most 64 KiB).
        self.aead()
            .encrypt_inout_detached(&Self::nonce(nonce), header, payload.into())
            .map_or([0; TAG_LEN], Into::into)
    }

    /// Checks `tag` over `header` and the ciphertext, then decrypts `payload` in place.
    /// On error `payload` is unchanged.
    pub fn open(&self, nonce: Nonce, header: &[u8], payload: &mut [u8], tag: &[u8]) -> Result<(), OpenError> {
        use chacha20poly1305::aead::AeadInOut;
        let tag = <&[u8; TAG_LEN]>::try_from(tag).map_err(|_| OpenError)?;
        self.aead()
            .decrypt_inout_detached(&Self::nonce(nonce), header, payload.into(), &(*tag).into())
            .map_err(|_| OpenError)
    }
}

#[cfg(not(feature = "encrypt"))]
impl Cipher {
    /// Always `None`: this build cannot encrypt.
    pub fn from_key(_: &Key) -> Option<Self> {
        None
    }

    /// Never called: no `Cipher` exists in this build.
    pub fn seal(&self, _: Nonce, _: &[u8], _: &mut [u8]) -> [u8; TAG_LEN] {
        match *self {}
    }

    /// Never called: no `Cipher` exists in this build.
    pub fn open(&self, _: Nonce, _: &[u8], _: &mut [u8], _: &[u8]) -> Result<(), OpenError> {
        match *self {}
    }
}

#[cfg(all(test, feature = "encrypt"))]
mod tests {
    use super::*;
    use crate::auth::KEY_LEN;

    const KEY: Key = Key::new([7; KEY_LEN]);

    fn keyed(key: &Key) -> Cipher {
        Cipher::from_key(key).unwrap()
    }

    #[test]
    fn sealed_payloads_open_only_with_the_key_the_nonce_and_the_header() {
        let cipher = keyed(&KEY);
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
            (keyed(&Key::new([8; KEY_LEN])), nonce, &b"header"[..]),
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
        assert_ne!(keyed(&KEY).0, [7; KEY_LEN]);
        assert_ne!(keyed(&KEY), keyed(&Key::new([8; KEY_LEN])));
    }
}

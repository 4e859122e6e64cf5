//! Payload encryption (cargo feature `encrypt`): an AEAD under a key derived from the
//! cluster key with BLAKE3's `derive_key`, so the MAC and the ciphers never share a key.
//! Two suites, named in every frame's header ([`CipherSuite`]):
//!
//! * XChaCha20-Poly1305, the RFC 8439 AEAD with a 24-byte nonce (RustCrypto's
//!   `chacha20poly1305`): portable, fast without AES hardware, what boards use;
//! * AES-256-GCM (feature `aes-gcm`, servers: `ring`'s AES-NI/PCLMULQDQ and ARMv8 code):
//!   on this project's build machine 4–9 GB/s a core at 1,400 B–64 KiB against 0.9–6 GB/s
//!   for a keyed BLAKE3 tag alone and 0.5–1.5 for XChaCha20-Poly1305
//!   (`cargo bench -p asap-tests --bench ratios`). Its 12-byte nonce holds the sequence
//!   number's low 48 bits: a node seals at most 2^48 frames an incarnation (years at a
//!   million frames a second); past that its tags are refused.
//!
//! A node sends with its configured suite and opens frames of every suite its build has.
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

/// The AEAD a frame's payload is encrypted with, named in its header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CipherSuite {
    /// XChaCha20-Poly1305: every build with the `encrypt` feature, boards included.
    #[default]
    XChaCha20Poly1305,
    /// AES-256-GCM: builds with the `aes-gcm` feature (servers); several times faster
    /// where the CPU has AES instructions, and what a cluster of servers should use.
    Aes256Gcm,
}

impl CipherSuite {
    /// Whether this build can seal and open frames of the suite.
    pub const fn is_available(self) -> bool {
        match self {
            CipherSuite::XChaCha20Poly1305 => cfg!(feature = "encrypt"),
            CipherSuite::Aes256Gcm => cfg!(feature = "aes-gcm"),
        }
    }
}

/// The payload cipher, keyed with [`Cipher::from_key`]. `Debug` never prints the key.
#[cfg(feature = "encrypt")]
#[derive(Clone)]
pub struct Cipher {
    /// The suite this node seals with.
    suite: CipherSuite,
    xchacha: [u8; super::KEY_LEN],
    /// Expanded once: the key schedule per frame would cost a third of a 1,400-byte
    /// frame's encryption.
    #[cfg(feature = "aes-gcm")]
    aes: ring::aead::LessSafeKey,
}

#[cfg(feature = "encrypt")]
impl PartialEq for Cipher {
    fn eq(&self, other: &Self) -> bool {
        // Both keys derive from one cluster key: equal XChaCha keys, equal AES keys.
        self.suite == other.suite && self.xchacha == other.xchacha
    }
}

#[cfg(feature = "encrypt")]
impl Eq for Cipher {}

/// The payload cipher, absent from this build (no `encrypt` feature): no value exists.
#[cfg(not(feature = "encrypt"))]
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Cipher {}

impl fmt::Debug for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cipher(..)")
    }
}

/// BLAKE3 `derive_key` context of the XChaCha20-Poly1305 key (never change it: it would
/// change every key).
#[cfg(feature = "encrypt")]
const CONTEXT: &str = "asap 2026-11-25 frame payload encryption, XChaCha20-Poly1305";

/// BLAKE3 `derive_key` context of the AES-256-GCM key.
#[cfg(feature = "aes-gcm")]
const AES_CONTEXT: &str = "asap 2026-12-03 frame payload encryption, AES-256-GCM";

/// Sequence numbers an AES-GCM nonce holds (its low 48 bits).
#[cfg(feature = "aes-gcm")]
const AES_SEQ_LIMIT: u64 = 1 << 48;

#[cfg(feature = "encrypt")]
impl Cipher {
    /// The cipher keyed from the cluster key, sealing with `suite` (`None` when this
    /// build lacks the suite: [`CipherSuite::is_available`]).
    pub fn from_key(key: &Key, suite: CipherSuite) -> Option<Self> {
        if !suite.is_available() {
            return None;
        }
        Some(Cipher {
            suite,
            xchacha: blake3::derive_key(CONTEXT, key.bytes()),
            #[cfg(feature = "aes-gcm")]
            aes: {
                let bytes = blake3::derive_key(AES_CONTEXT, key.bytes());
                let key = ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &bytes).ok()?;
                ring::aead::LessSafeKey::new(key)
            },
        })
    }

    /// The suite this cipher seals with.
    pub const fn suite(&self) -> CipherSuite {
        self.suite
    }

    fn aead(&self) -> chacha20poly1305::XChaCha20Poly1305 {
        use chacha20poly1305::aead::KeyInit;
        chacha20poly1305::XChaCha20Poly1305::new(&self.xchacha.into())
    }

    #[cfg(feature = "aes-gcm")]
    fn aes_nonce(n: Nonce) -> Option<ring::aead::Nonce> {
        if n.seq >= AES_SEQ_LIMIT {
            return None;
        }
        let mut bytes = [0u8; 12];
        bytes[..2].copy_from_slice(&n.from.to_le_bytes());
        bytes[2..6].copy_from_slice(&n.incarnation.to_le_bytes());
        bytes[6..].copy_from_slice(&n.seq.to_le_bytes()[..6]);
        Some(ring::aead::Nonce::assume_unique_for_key(bytes))
    }

    fn nonce(n: Nonce) -> chacha20poly1305::XNonce {
        let mut bytes = [0u8; 24];
        bytes[..2].copy_from_slice(&n.from.to_le_bytes());
        bytes[2..6].copy_from_slice(&n.incarnation.to_le_bytes());
        bytes[6..14].copy_from_slice(&n.seq.to_le_bytes());
        bytes.into()
    }

    /// Encrypts `payload` in place with this cipher's suite and returns the tag over
    /// `header` (in clear) and the ciphertext.
    pub fn seal(&self, nonce: Nonce, header: &[u8], payload: &mut [u8]) -> [u8; TAG_LEN] {
        use chacha20poly1305::aead::AeadInOut;
        match self.suite {
            #[cfg(feature = "aes-gcm")]
            CipherSuite::Aes256Gcm => {
                // Past the nonce's range: an all-zero tag, which no receiver accepts.
                let Some(n) = Self::aes_nonce(nonce) else {
                    return [0; TAG_LEN];
                };
                let aad = ring::aead::Aad::from(header);
                self.aes
                    .seal_in_place_separate_tag(n, aad, payload)
                    .map_or([0; TAG_LEN], |tag| {
                        let mut out = [0; TAG_LEN];
                        out.copy_from_slice(tag.as_ref());
                        out
                    })
            }
            // Encryption in place cannot fail below 2^38 bytes (a frame is at most 64 KiB).
            _ => self
                .aead()
                .encrypt_inout_detached(&Self::nonce(nonce), header, payload.into())
                .map_or([0; TAG_LEN], Into::into),
        }
    }

    /// Checks `tag` over `header` and the ciphertext of a frame sealed with `suite`,
    /// then decrypts `payload` in place. On error `payload` holds no plaintext: it is
    /// unchanged (XChaCha20-Poly1305), or zeroed (AES-256-GCM: ring wipes what failed to
    /// authenticate).
    pub fn open(
        &self,
        suite: CipherSuite,
        nonce: Nonce,
        header: &[u8],
        payload: &mut [u8],
        tag: &[u8],
    ) -> Result<(), OpenError> {
        use chacha20poly1305::aead::AeadInOut;
        let tag = <&[u8; TAG_LEN]>::try_from(tag).map_err(|_| OpenError)?;
        match suite {
            CipherSuite::XChaCha20Poly1305 => self
                .aead()
                .decrypt_inout_detached(&Self::nonce(nonce), header, payload.into(), &(*tag).into())
                .map_err(|_| OpenError),
            #[cfg(feature = "aes-gcm")]
            CipherSuite::Aes256Gcm => {
                let n = Self::aes_nonce(nonce).ok_or(OpenError)?;
                let aad = ring::aead::Aad::from(header);
                let tag = ring::aead::Tag::from(*tag);
                // `open_in_place_separate_tag` leaves the ciphertext as it was on error.
                self.aes
                    .open_in_place_separate_tag(n, aad, tag, payload, 0..)
                    .map(|_| ())
                    .map_err(|_| OpenError)
            }
            #[cfg(not(feature = "aes-gcm"))]
            CipherSuite::Aes256Gcm => Err(OpenError),
        }
    }
}

#[cfg(not(feature = "encrypt"))]
impl Cipher {
    /// Always `None`: this build cannot encrypt.
    pub fn from_key(_: &Key, _: CipherSuite) -> Option<Self> {
        None
    }

    /// Never called: no `Cipher` exists in this build.
    pub const fn suite(&self) -> CipherSuite {
        match *self {}
    }

    /// Never called: no `Cipher` exists in this build.
    pub fn seal(&self, _: Nonce, _: &[u8], _: &mut [u8]) -> [u8; TAG_LEN] {
        match *self {}
    }

    /// Never called: no `Cipher` exists in this build.
    pub fn open(&self, _: CipherSuite, _: Nonce, _: &[u8], _: &mut [u8], _: &[u8]) -> Result<(), OpenError> {
        match *self {}
    }
}

#[cfg(all(test, feature = "encrypt"))]
mod tests {
    use super::*;
    use crate::auth::KEY_LEN;

    const KEY: Key = Key::new([7; KEY_LEN]);

    fn keyed(key: &Key) -> Cipher {
        Cipher::from_key(key, CipherSuite::XChaCha20Poly1305).unwrap()
    }

    /// Every suite this build has, keyed from `key`.
    fn suites(key: &Key) -> impl Iterator<Item = Cipher> + '_ {
        [CipherSuite::XChaCha20Poly1305, CipherSuite::Aes256Gcm]
            .into_iter()
            .filter_map(move |s| Cipher::from_key(key, s))
    }

    #[test]
    fn sealed_payloads_open_only_with_the_key_the_nonce_the_header_and_the_suite() {
        for cipher in suites(&KEY) {
            seals_and_opens(cipher);
        }
    }

    fn seals_and_opens(cipher: Cipher) {
        let suite = cipher.suite();
        let other = match suite {
            CipherSuite::XChaCha20Poly1305 => CipherSuite::Aes256Gcm,
            CipherSuite::Aes256Gcm => CipherSuite::XChaCha20Poly1305,
        };
        let nonce = Nonce {
            from: 3,
            incarnation: 7,
            seq: 11,
        };
        let mut payload = *b"sixteen bytes!!!values";
        let tag = cipher.seal(nonce, b"header", &mut payload);
        assert_ne!(&payload, b"sixteen bytes!!!values", "encrypted");
        let sealed = payload;
        let wrong_key = Cipher::from_key(&Key::new([8; KEY_LEN]), suite).unwrap();
        for (cipher, suite, nonce, header) in [
            (&wrong_key, suite, nonce, &b"header"[..]),
            (&cipher, suite, Nonce { seq: 12, ..nonce }, b"header"),
            (&cipher, suite, Nonce { from: 4, ..nonce }, b"header"),
            (
                &cipher,
                suite,
                Nonce {
                    incarnation: 8,
                    ..nonce
                },
                b"header",
            ),
            (&cipher, suite, nonce, b"headeR"),
            (&cipher, other, nonce, b"header"),
        ] {
            assert_eq!(cipher.open(suite, nonce, header, &mut payload, &tag), Err(OpenError));
            assert!(
                payload == sealed || payload.iter().all(|&b| b == 0),
                "{suite:?}: a refused frame is left as it came, or wiped"
            );
            payload = sealed;
        }
        let mut flipped = tag;
        flipped[0] ^= 1;
        assert_eq!(cipher.open(suite, nonce, b"header", &mut payload, &flipped), Err(OpenError));
        payload = sealed;
        assert_eq!(cipher.open(suite, nonce, b"header", &mut payload, &tag[..15]), Err(OpenError));
        assert_eq!(cipher.open(suite, nonce, b"header", &mut payload, &tag), Ok(()));
        assert_eq!(&payload, b"sixteen bytes!!!values");
    }

    #[cfg(feature = "aes-gcm")]
    #[test]
    fn aes_gcm_refuses_sequence_numbers_past_its_nonce() {
        let cipher = Cipher::from_key(&KEY, CipherSuite::Aes256Gcm).unwrap();
        let nonce = Nonce {
            from: 1,
            incarnation: 1,
            seq: AES_SEQ_LIMIT,
        };
        let mut payload = [1u8; 8];
        let tag = cipher.seal(nonce, b"h", &mut payload);
        assert_eq!(tag, [0; TAG_LEN]);
        let result = cipher.open(CipherSuite::Aes256Gcm, nonce, b"h", &mut payload, &tag);
        assert_eq!(result, Err(OpenError));
    }

    #[test]
    fn the_cipher_key_is_not_the_cluster_key() {
        assert_ne!(keyed(&KEY).xchacha, [7; KEY_LEN]);
        assert_ne!(keyed(&KEY), keyed(&Key::new([8; KEY_LEN])));
    }
}

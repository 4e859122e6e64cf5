//! Per-node identities (cargo feature `identity`): each member holds a static X25519 key
//! pair, and every pair of members derives a link key of its own from a static–static
//! Diffie–Hellman exchange, so a frame sealed with it proves which of the two sent it.
//! With one cluster key, any member can claim any node id; with link keys, member `k`
//! claiming to be `j` fails `i`'s check, because it does not know the key of `(j, i)`.
//!
//! The link key is BLAKE3's key derivation (`derive_key`, a fixed context string) over
//! the shared secret, the cluster id, both node ids and both public keys, lowest id
//! first: both ends compute the same key, and it differs between clusters and between
//! pairs even if a public key is reused. A peer public key of small order (the shared
//! secret all zeros: an attacker's choice, not a member's) is refused.
//!
//! A board computes one exchange per peer at start (no allocation; the scalar
//! multiplication takes no precomputed tables, to keep flash small).

use core::fmt;

use super::{Key, KeyError, KEY_LEN};

/// The context of the link-key derivation (BLAKE3 `derive_key`): fixed, unique to this
/// use, versioned.
const LINK_KEY_CONTEXT: &str = "asap 2026-12-03 pairwise link key v1";

/// A member's static secret. `Debug` never prints it; it is wiped on drop.
pub struct NodeSecret(x25519_dalek::StaticSecret);

impl fmt::Debug for NodeSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeSecret(..)")
    }
}

/// A member's public key, as a membership file lists it (64 hexadecimal digits).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; KEY_LEN]);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// Lower-case hexadecimal, as `from_hex` reads it.
impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl PublicKey {
    /// A public key from its bytes.
    pub const fn new(bytes: [u8; KEY_LEN]) -> Self {
        PublicKey(bytes)
    }

    /// A public key from 64 hexadecimal digits (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        super::parse_hex32(text).map(PublicKey)
    }

    /// Its bytes.
    pub const fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

/// Why no link key could be derived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkKeyError {
    /// The peer's public key is of small order: every secret gives the same (all-zero)
    /// shared secret, so the exchange would prove nothing.
    WeakPublicKey,
    /// A member has no link with itself.
    SameNode,
}

impl fmt::Display for LinkKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LinkKeyError::WeakPublicKey => "the peer's public key is of small order (refused: it proves nothing)",
            LinkKeyError::SameNode => "a node has no link key with itself",
        })
    }
}

impl core::error::Error for LinkKeyError {}

impl NodeSecret {
    /// A secret from 32 bytes drawn from a CSPRNG (`asap keygen --node`; clamping is
    /// done when it is used, as X25519 specifies).
    pub fn new(bytes: [u8; KEY_LEN]) -> Self {
        NodeSecret(x25519_dalek::StaticSecret::from(bytes))
    }

    /// A secret from 64 hexadecimal digits (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        super::parse_hex32(text).map(Self::new)
    }

    /// Its public key (one scalar multiplication).
    pub fn public_key(&self) -> PublicKey {
        PublicKey(x25519_dalek::PublicKey::from(&self.0).to_bytes())
    }

    /// The key of the link between this member (`me`, whose public key is `mine`) and
    /// `peer` (public key `theirs`) in cluster `cluster`: both ends derive the same.
    /// One scalar multiplication.
    pub fn link_key(
        &self,
        cluster: u32,
        me: u16,
        mine: &PublicKey,
        peer: u16,
        theirs: &PublicKey,
    ) -> Result<Key, LinkKeyError> {
        if me == peer {
            return Err(LinkKeyError::SameNode);
        }
        let shared = self.0.diffie_hellman(&x25519_dalek::PublicKey::from(theirs.0));
        if !shared.was_contributory() {
            return Err(LinkKeyError::WeakPublicKey);
        }
        let ((lo, lo_key), (hi, hi_key)) = if me < peer {
            ((me, mine), (peer, theirs))
        } else {
            ((peer, theirs), (me, mine))
        };
        let mut hasher = blake3::Hasher::new_derive_key(LINK_KEY_CONTEXT);
        hasher.update(shared.as_bytes());
        hasher.update(&cluster.to_le_bytes());
        hasher.update(&lo.to_le_bytes());
        hasher.update(&hi.to_le_bytes());
        hasher.update(&lo_key.0);
        hasher.update(&hi_key.0);
        Ok(Key::new(*hasher.finalize().as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(seed: u8) -> NodeSecret {
        NodeSecret::new([seed; KEY_LEN])
    }

    #[test]
    fn both_ends_derive_the_same_key_and_only_they_do() {
        let (a, b, c) = (secret(1), secret(2), secret(3));
        let (pa, pb, pc) = (a.public_key(), b.public_key(), c.public_key());
        let ab = a.link_key(7, 0, &pa, 1, &pb).unwrap();
        assert_eq!(b.link_key(7, 1, &pb, 0, &pa).unwrap(), ab);
        // Another pair, another cluster, other ids: other keys.
        assert_ne!(a.link_key(7, 0, &pa, 2, &pc).unwrap(), ab);
        assert_ne!(a.link_key(8, 0, &pa, 1, &pb).unwrap(), ab);
        assert_ne!(a.link_key(7, 0, &pa, 3, &pb).unwrap(), ab);
        // c, claiming to be b, cannot get the key of (a, b).
        assert_ne!(c.link_key(7, 1, &pb, 0, &pa).unwrap(), ab);
        assert_ne!(c.link_key(7, 1, &pc, 0, &pa).unwrap(), ab);
    }

    #[test]
    fn weak_public_keys_and_self_links_are_refused() {
        let a = secret(1);
        let pa = a.public_key();
        // The identity point and a point of order 8 (RFC 7748's low-order list).
        for weak in [[0u8; 32], {
            let mut p = [0u8; 32];
            p[0] = 1;
            p
        }] {
            assert_eq!(
                a.link_key(7, 0, &pa, 1, &PublicKey::new(weak)),
                Err(LinkKeyError::WeakPublicKey)
            );
        }
        assert_eq!(a.link_key(7, 0, &pa, 0, &pa), Err(LinkKeyError::SameNode));
    }

    #[test]
    fn public_keys_read_back_what_they_print() {
        let p = secret(9).public_key();
        let mut text = heapless::String::<64>::new();
        core::fmt::write(&mut text, format_args!("{p}")).unwrap();
        assert_eq!(PublicKey::from_hex(&text), Ok(p));
        assert!(PublicKey::from_hex("00").is_err());
        // The same secret from hex.
        let mut hex = heapless::String::<64>::new();
        (0..32).for_each(|_| hex.push_str("09").unwrap());
        assert_eq!(NodeSecret::from_hex(&hex).unwrap().public_key(), p);
    }
}

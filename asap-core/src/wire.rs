//! The frame format: a postcard-encoded header, a raw payload, an integrity trailer.
//!
//! ```text
//! +---------------------------+-----------------------------+-----------------+
//! | Header (postcard, <= 42B) | payload (payload_len bytes) | trailer (CRC32) |
//! +---------------------------+-----------------------------+-----------------+
//! ```
//!
//! * The header's first byte is the protocol [`VERSION`], so a node can refuse a frame of
//!   another version before it parses anything else.
//! * The header names its [`Integrity`] scheme, which fixes the trailer's length: a
//!   CRC-32 (IEEE) over header and payload, a keyed BLAKE3 tag, or an XChaCha20-Poly1305
//!   tag over the header and the encrypted payload ([`crate::auth`]).
//! * Updates name their payload [`Encoding`]: today raw little-endian `f32`, borrowed
//!   zero-copy on decode (never one varint per float); compressed encodings are new
//!   variants.
//! * `payload_len` makes a frame self-delimiting, so a byte stream (TCP) can carry frames
//!   back to back and a datagram may carry trailing garbage without confusing the parser.
//!
//! Only the header is parsed into a struct; the payload stays a checked byte view
//! ([`F32Le`]) whose accessors cannot panic once its length was checked.

use core::fmt;

use serde::{Deserialize, Serialize};

use crate::auth::{Cipher, CipherSuite, Key, Nonce, Secret, TAG_LEN};

/// Protocol version carried in the first byte of every frame.
pub const VERSION: u8 = 1;

/// Smallest frame a node can be configured for (small boards, smoltcp over UDP).
pub const MIN_FRAME_LEN: usize = 512;

/// Largest frame a node can be configured for.
pub const MAX_FRAME_LEN: usize = 65_536;

/// Upper bound of an encoded [`Header`] of any kind and scheme (every varint at its
/// widest).
pub const MAX_HEADER_LEN: usize = 52;

/// Upper bound of an encoded header of an [`Kind::Update`] frame with CRC-32 (see
/// [`Integrity::max_update_header_len`] for the others).
pub const MAX_UPDATE_HEADER_LEN: usize = 42;

/// Length of the CRC-32 trailer.
pub const CRC_LEN: usize = 4;

/// Identifies a node within a cluster; frames name their sender and receiver by it,
/// never by network address (NATs and QEMU's slirp rewrite ports).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u16);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {}", self.0)
    }
}

/// How the trailer protects the frame. New schemes (authentication tags) are appended
/// as variants; a node accepts only the scheme it is configured for. Authenticated
/// schemes carry a per-sender sequence number in their variant (replay windows need
/// one; a CRC cannot stop a forger anyway, so plain frames spend no bytes on it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Integrity {
    /// CRC-32 (IEEE 802.3) over header and payload, little-endian: catches corruption,
    /// not forgery.
    Crc32,
    /// A 16-byte keyed BLAKE3 tag over header and payload ([`crate::auth`]); `seq`
    /// counts the sender's frames, for the receiver's replay window.
    Blake3 {
        /// The sender's frame counter (grows by one per frame; restarts with a new
        /// incarnation).
        seq: u64,
    },
    /// The payload encrypted with XChaCha20-Poly1305 ([`crate::auth::Cipher`]), its
    /// 16-byte tag over the header (in clear) and the ciphertext; `seq` as for `Blake3`,
    /// and part of the nonce.
    XChaCha20Poly1305 {
        /// The sender's frame counter.
        seq: u64,
    },
    /// The payload encrypted with AES-256-GCM ([`crate::auth::CipherSuite::Aes256Gcm`]),
    /// its 16-byte tag over the header (in clear) and the ciphertext; `seq` as for
    /// `Blake3`, its low 48 bits part of the nonce.
    Aes256Gcm {
        /// The sender's frame counter.
        seq: u64,
    },
}

impl Integrity {
    /// Bytes the trailer takes.
    pub const fn trailer_len(self) -> usize {
        match self {
            Integrity::Crc32 => CRC_LEN,
            Integrity::Blake3 { .. } | Integrity::XChaCha20Poly1305 { .. } | Integrity::Aes256Gcm { .. } => TAG_LEN,
        }
    }

    /// The scheme of a frame encrypted with `suite`, carrying `seq`.
    pub const fn encrypted(suite: CipherSuite, seq: u64) -> Self {
        match suite {
            CipherSuite::XChaCha20Poly1305 => Integrity::XChaCha20Poly1305 { seq },
            CipherSuite::Aes256Gcm => Integrity::Aes256Gcm { seq },
        }
    }

    /// The suite an encrypted frame's payload is sealed with (`None`: not encrypted).
    pub const fn cipher_suite(self) -> Option<CipherSuite> {
        match self {
            Integrity::XChaCha20Poly1305 { .. } => Some(CipherSuite::XChaCha20Poly1305),
            Integrity::Aes256Gcm { .. } => Some(CipherSuite::Aes256Gcm),
            Integrity::Crc32 | Integrity::Blake3 { .. } => None,
        }
    }

    /// Whether frames of this scheme and of `other` protect alike: both checksummed,
    /// both tagged, or both encrypted (with any suite: a node opens every suite its build
    /// has). A node takes only frames protected as its own are.
    pub const fn protects_as(self, other: Integrity) -> bool {
        const fn level(i: Integrity) -> u8 {
            match i {
                Integrity::Crc32 => 0,
                Integrity::Blake3 { .. } => 1,
                Integrity::XChaCha20Poly1305 { .. } | Integrity::Aes256Gcm { .. } => 2,
            }
        }
        level(self) == level(other)
    }

    /// The sender's sequence number, for the schemes that carry one.
    pub const fn seq(self) -> Option<u64> {
        match self {
            Integrity::Crc32 => None,
            Integrity::Blake3 { seq } | Integrity::XChaCha20Poly1305 { seq } | Integrity::Aes256Gcm { seq } => {
                Some(seq)
            }
        }
    }

    /// The same scheme carrying sequence number `seq` (a CRC carries none).
    pub const fn with_seq(self, seq: u64) -> Self {
        match self {
            Integrity::Crc32 => Integrity::Crc32,
            Integrity::Blake3 { .. } => Integrity::Blake3 { seq },
            Integrity::XChaCha20Poly1305 { .. } => Integrity::XChaCha20Poly1305 { seq },
            Integrity::Aes256Gcm { .. } => Integrity::Aes256Gcm { seq },
        }
    }

    /// Upper bound of an update frame's header under this scheme.
    pub const fn max_update_header_len(self) -> usize {
        match self {
            Integrity::Crc32 => MAX_UPDATE_HEADER_LEN,
            // The sequence number's varint, at its widest.
            Integrity::Blake3 { .. } | Integrity::XChaCha20Poly1305 { .. } | Integrity::Aes256Gcm { .. } => {
                MAX_UPDATE_HEADER_LEN + 10
            }
        }
    }
}

/// How an update's payload encodes model values ([`crate::compress`] has the formats
/// and kernels). New encodings are appended: the order is the wire's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Encoding {
    /// Raw IEEE-754 binary32, little-endian, 4 bytes a value.
    F32Le,
    /// IEEE-754 binary16, little-endian, 2 bytes a value.
    F16Le,
    /// bfloat16, little-endian, 2 bytes a value.
    Bf16Le,
    /// 8-bit linear quantisation: `lo`, `step` (f32), then one byte a value.
    Q8,
    /// Sparse: (index `u32`, value `f32`) pairs with rising indices.
    TopK,
}

/// Bytes of a top-k entry ([`Encoding::TopK`]): index (`u32`) and value (`f32`).
pub const TOP_K_ENTRY: usize = 8;

/// Bytes of the `lo` and `step` that lead a [`Encoding::Q8`] chunk.
pub const Q8_HEADER: usize = 8;

/// What a frame says. The round it refers to is in the [`Header`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Kind {
    /// Join handshake: the sender's parameters. Sent at start and answered (with
    /// `reply = true`).
    Hello {
        /// Number of model values.
        model_len: u32,
        /// Values per update chunk; every member must agree.
        chunk_len: u32,
        /// How its updates are encoded (its compression); every member must agree.
        encoding: Encoding,
        /// `true` when this Hello answers one.
        reply: bool,
    },
    /// One chunk of the sender's replica for the header's round.
    Update {
        /// Chunk index, `0..chunks`.
        chunk: u32,
        /// Chunks in the whole update.
        chunks: u32,
        /// Mixing weight the receiver applies to these values.
        weight: f32,
        /// How the payload encodes the values.
        encoding: Encoding,
    },
    /// The sender finished sending the round's update; the receiver answers with
    /// [`Kind::Ack`] once it consumed it, or [`Kind::Missing`] before that.
    Notify {
        /// Chunks in the whole update.
        chunks: u32,
    },
    /// The receiver consumed (mixed in) the round's update: the sender may send anew.
    Ack,
    /// The receiver has not consumed the round's update yet; `mask` bit `i` set means
    /// chunk `base + i` is missing. `mask == 0` means all chunks arrived.
    Missing {
        /// First chunk the mask describes.
        base: u32,
        /// Missing chunks from `base`.
        mask: u64,
    },
    /// Liveness while there is nothing else to say; the round is the sender's current one.
    Heartbeat,
    /// Bulk-synchronous mode: the sender reached the header's round.
    Barrier,
    /// The sender leaves the cluster for good.
    Leave,
}

/// The parsed header of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// Protocol version; always [`VERSION`] when encoded by this crate.
    pub version: u8,
    /// Trailer scheme.
    pub integrity: Integrity,
    /// Cluster the frame belongs to; frames of other clusters are refused.
    pub cluster: u32,
    /// Sender.
    pub from: NodeId,
    /// The sender's incarnation: it grows with every restart, so a receiver tells a
    /// restarted peer (newer) from frames of its previous life still in flight (older).
    pub incarnation: u32,
    /// Receiver.
    pub to: NodeId,
    /// Round the frame refers to.
    pub round: u32,
    /// What the frame says.
    pub kind: Kind,
    /// Bytes of payload after the header.
    pub payload_len: u16,
}

/// A decoded frame: its header and a view of its payload.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    /// The header.
    pub header: Header,
    /// The payload bytes (already length-checked against the header's kind).
    pub payload: &'a [u8],
}

/// Why bytes are not a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than the header announces.
    Truncated,
    /// The first byte names a protocol version this build does not speak.
    UnsupportedVersion(u8),
    /// The header does not parse.
    Malformed,
    /// The integrity trailer does not match.
    BadChecksum,
    /// The payload length does not fit the frame kind.
    PayloadLength,
    /// A CRC-protected frame reached a node that accepts only authenticated ones.
    Unauthenticated,
    /// An authenticated frame reached a node that has no key.
    NoKey,
    /// The authentication tag does not match: wrong key, or altered bytes.
    BadTag,
    /// An encrypted frame reached a decoder that cannot decrypt it: a node that
    /// authenticates without encrypting, or the read-only `decode_sealed` (decrypting
    /// needs the mutable `open`).
    Encrypted,
    /// A frame that is authenticated but not encrypted reached a node that requires
    /// encryption.
    NotEncrypted,
    /// A frame encrypted with a cipher suite this build does not have (AES-256-GCM
    /// reaching a board built without the `aes-gcm` feature).
    UnsupportedCipher,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("frame truncated"),
            DecodeError::UnsupportedVersion(v) => {
                write!(f, "unsupported protocol version {v} (this build speaks {VERSION})")
            }
            DecodeError::Malformed => f.write_str("malformed frame header"),
            DecodeError::BadChecksum => f.write_str("frame checksum mismatch"),
            DecodeError::PayloadLength => f.write_str("payload length does not fit the frame kind"),
            DecodeError::Unauthenticated => f.write_str("frame is not authenticated and this node requires it"),
            DecodeError::NoKey => f.write_str("frame is authenticated and this node has no key"),
            DecodeError::BadTag => f.write_str("frame authentication tag mismatch"),
            DecodeError::Encrypted => f.write_str("frame is encrypted and cannot be decrypted here"),
            DecodeError::NotEncrypted => f.write_str("frame is not encrypted and this node requires it"),
            DecodeError::UnsupportedCipher => f.write_str("frame is encrypted with a cipher suite this build lacks"),
        }
    }
}

impl DecodeError {
    /// Whether the frame was refused for its authentication (a wrong or missing key, a
    /// bad tag, a scheme other than the node's), not for being malformed.
    pub const fn is_authentication(&self) -> bool {
        matches!(
            self,
            DecodeError::BadTag
                | DecodeError::NoKey
                | DecodeError::Unauthenticated
                | DecodeError::Encrypted
                | DecodeError::NotEncrypted
                | DecodeError::UnsupportedCipher
        )
    }
}

impl core::error::Error for DecodeError {}

/// The caller's buffer cannot hold the frame; `needed` bytes would.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferTooSmall {
    /// Bytes the buffer needs.
    pub needed: usize,
}

impl fmt::Display for BufferTooSmall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "buffer too small: {} bytes needed", self.needed)
    }
}

impl core::error::Error for BufferTooSmall {}

/// How frames are protected: what a sender seals with and what a receiver accepts.
#[derive(Clone, Copy, Debug)]
pub enum Sealing<'k> {
    /// A CRC-32: corruption is caught, forgery is not.
    Crc,
    /// A keyed BLAKE3 tag.
    Tag(&'k Key),
    /// Encryption of the payload, with the cipher's suite.
    Encrypt(&'k Cipher),
}

impl<'k> From<&'k Secret> for Sealing<'k> {
    fn from(secret: &'k Secret) -> Self {
        match secret {
            Secret::None => Sealing::Crc,
            Secret::Tag(key) => Sealing::Tag(key),
            Secret::Encrypt(cipher) => Sealing::Encrypt(cipher),
        }
    }
}

impl<'k> Sealing<'k> {
    /// Tag when there is a key, CRC when there is none.
    pub const fn keyed(key: Option<&'k Key>) -> Self {
        match key {
            Some(key) => Sealing::Tag(key),
            None => Sealing::Crc,
        }
    }

    /// The scheme a frame sealed this way carries (`seq` for the keyed schemes).
    pub const fn integrity(&self, seq: u64) -> Integrity {
        match self {
            Sealing::Crc => Integrity::Crc32,
            Sealing::Tag(_) => Integrity::Blake3 { seq },
            Sealing::Encrypt(cipher) => Integrity::encrypted(cipher.suite(), seq),
        }
    }
}

/// Encodes `header` followed by `payload` (as little-endian `f32`) and the trailer into
/// `buf`; returns the frame's length. `header.payload_len` is set from `payload`. The
/// frame is CRC-protected: `encode_keyed(.., None)`.
pub fn encode(header: Header, payload: &[f32], buf: &mut [u8]) -> Result<usize, BufferTooSmall> {
    encode_keyed(header, payload, buf, None)
}

/// [`encode`], authenticated when `key` is given: [`seal`] with [`Sealing::keyed`].
pub fn encode_keyed(
    header: Header,
    payload: &[f32],
    buf: &mut [u8],
    key: Option<&Key>,
) -> Result<usize, BufferTooSmall> {
    seal(header, payload, buf, Sealing::keyed(key))
}

/// Encodes a frame protected as `sealing` says. The sealing decides the scheme written:
/// the sequence number is taken from `header.integrity` when it carries one (0
/// otherwise); a CRC frame carries none.
///
/// The trailer is computed after the payload is written, in a second pass: fusing the
/// two (checksumming each block as it is written, while in L1) was measured no faster
/// (2026-12-03, a 4 MiB model: 0.162 ms in 64 KiB frames in two passes, 0.165–0.210 ms
/// fused in 16–1 KiB blocks; 0.240 against 0.216–0.259 ms in 1,400-byte frames):
/// crc32fast's carry-less multiply reads L2 at full speed.
pub fn seal(header: Header, payload: &[f32], buf: &mut [u8], sealing: Sealing<'_>) -> Result<usize, BufferTooSmall> {
    seal_with(header, payload.len() * 4, buf, sealing, |out| {
        crate::reduce::write_f32_le(payload, out)
    })
}

/// [`seal`] for a payload of `payload_bytes` bytes that `fill` writes (a compressed
/// one, [`crate::compress::encode`]).
pub fn seal_with(
    mut header: Header,
    payload_bytes: usize,
    buf: &mut [u8],
    sealing: Sealing<'_>,
    fill: impl FnOnce(&mut [u8]),
) -> Result<usize, BufferTooSmall> {
    header.integrity = sealing.integrity(header.integrity.seq().unwrap_or(0));
    let trailer = header.integrity.trailer_len();
    let too_small = BufferTooSmall {
        needed: MAX_HEADER_LEN + payload_bytes + trailer,
    };
    header.payload_len = u16::try_from(payload_bytes).map_err(|_| too_small)?;
    let header_len = postcard::to_slice(&header, buf).map_err(|_| too_small)?.len();
    let end = header_len + payload_bytes;
    let frame = buf.get_mut(..end + trailer).ok_or(too_small)?;
    fill(&mut frame[header_len..end]);
    let (body, trailer_bytes) = frame.split_at_mut(end);
    match sealing {
        Sealing::Crc => trailer_bytes.copy_from_slice(&crc32(body).to_le_bytes()),
        Sealing::Tag(key) => trailer_bytes.copy_from_slice(&key.tag(body)),
        Sealing::Encrypt(cipher) => {
            let (head, payload) = body.split_at_mut(header_len);
            trailer_bytes.copy_from_slice(&cipher.seal(nonce(&header), head, payload));
        }
    }
    Ok(end + trailer)
}

fn nonce(h: &Header) -> Nonce {
    Nonce {
        from: h.from.0,
        incarnation: h.incarnation,
        seq: h.integrity.seq().unwrap_or(0),
    }
}

/// The frame checksum: CRC-32 as zlib computes it (ISO-HDLC), over header and payload.
/// crc32fast (carry-less multiply or 16 KiB of slicing tables) by default; with the
/// `small-flash` feature a 1 KiB-table implementation, for boards short of flash.
pub fn crc32(bytes: &[u8]) -> u32 {
    #[cfg(feature = "small-flash")]
    {
        SMALL_CRC.checksum(bytes)
    }
    #[cfg(not(feature = "small-flash"))]
    {
        crc32fast::hash(bytes)
    }
}

/// CRC-32 with one 256-entry table.
#[cfg(any(test, feature = "small-flash"))]
const SMALL_CRC: crc::Crc<u32, crc::Table<1>> = crc::Crc::<u32, crc::Table<1>>::new(&crc::CRC_32_ISO_HDLC);

/// Parses the header only, without checking the trailer: enough to route a frame
/// (see `Node::accepts`), never enough to trust it.
pub fn peek(bytes: &[u8]) -> Result<(Header, usize), DecodeError> {
    let version = *bytes.first().ok_or(DecodeError::Truncated)?;
    if version != VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let (header, rest) = postcard::take_from_bytes::<Header>(bytes).map_err(|e| match e {
        postcard::Error::DeserializeUnexpectedEnd => DecodeError::Truncated,
        _ => DecodeError::Malformed,
    })?;
    let len = bytes.len() - rest.len();
    // postcard also reads over-long varints (0xdb 0x00 for 0x5b): accept only the one
    // canonical encoding, so a frame has exactly one byte form and its header stays
    // within MAX_HEADER_LEN.
    let mut canonical = [0u8; MAX_HEADER_LEN];
    match postcard::to_slice(&header, &mut canonical) {
        Ok(enc) if enc == &bytes[..len] => Ok((header, len)),
        _ => Err(DecodeError::Malformed),
    }
}

/// Decodes one frame from the front of `bytes`; returns it and the bytes it took.
/// Checks the version, the header, the payload length for the kind and the trailer.
/// Accepts CRC-protected frames only: `decode_keyed(bytes, None)`.
pub fn decode(bytes: &[u8]) -> Result<(Frame<'_>, usize), DecodeError> {
    decode_keyed(bytes, None)
}

/// [`decode`] for a node with or without a key: [`decode_sealed`] with
/// [`Sealing::keyed`].
pub fn decode_keyed<'a>(bytes: &'a [u8], key: Option<&Key>) -> Result<(Frame<'a>, usize), DecodeError> {
    decode_sealed(bytes, Sealing::keyed(key))
}

/// [`decode`] for a node protected as `sealing` says, on read-only bytes: only frames
/// of that scheme whose trailer verifies are returned (a CRC frame reaching a keyed node
/// is [`DecodeError::Unauthenticated`], a keyed frame reaching a node without a key
/// [`DecodeError::NoKey`]). Encrypted frames need [`open`], which decrypts in place:
/// here they are [`DecodeError::Encrypted`]. The replay check is the caller's: it knows
/// the sender ([`crate::auth::ReplayWindow`] on [`Integrity::seq`]).
pub fn decode_sealed<'a>(bytes: &'a [u8], sealing: Sealing<'_>) -> Result<(Frame<'a>, usize), DecodeError> {
    decode_sealed_with(bytes, |_| Ok(sealing))
}

/// [`decode_sealed`] with the sealing chosen from the frame's (clear) header, read once:
/// how a node whose peers each have their own key picks the sender's.
pub fn decode_sealed_with<'a, 'k, E: From<DecodeError>>(
    bytes: &'a [u8],
    choose: impl FnOnce(&Header) -> Result<Sealing<'k>, E>,
) -> Result<(Frame<'a>, usize), E> {
    let (header, header_len, total) = check_layout(bytes)?;
    let sealing = choose(&header)?;
    let end = total - header.integrity.trailer_len();
    let (body, trailer) = bytes[..total].split_at(end);
    verify(&header, body, trailer, sealing)?;
    Ok((
        Frame {
            header,
            payload: &body[header_len..],
        },
        total,
    ))
}

/// [`decode_sealed`] that also takes encrypted frames: their payload is decrypted in
/// place once the tag verified. A refused frame holds no plaintext: its bytes are left
/// as they came, but for an AES-256-GCM payload, which is zeroed.
pub fn open<'a>(bytes: &'a mut [u8], sealing: Sealing<'_>) -> Result<(Frame<'a>, usize), DecodeError> {
    open_with(bytes, |_| Ok(sealing))
}

/// [`open`] with the sealing chosen from the frame's (clear) header, read once (see
/// [`decode_sealed_with`]).
pub fn open_with<'a, 'k, E: From<DecodeError>>(
    bytes: &'a mut [u8],
    choose: impl FnOnce(&Header) -> Result<Sealing<'k>, E>,
) -> Result<(Frame<'a>, usize), E> {
    let (header, header_len, total) = check_layout(bytes)?;
    let sealing = choose(&header)?;
    let end = total - header.integrity.trailer_len();
    let (body, trailer) = bytes[..total].split_at_mut(end);
    match (header.integrity.cipher_suite(), sealing) {
        (Some(suite), Sealing::Encrypt(cipher)) => {
            if !suite.is_available() {
                return Err(DecodeError::UnsupportedCipher.into());
            }
            let (head, payload) = body.split_at_mut(header_len);
            cipher
                .open(suite, nonce(&header), head, payload, trailer)
                .map_err(|_| DecodeError::BadTag)?;
        }
        _ => verify(&header, body, trailer, sealing)?,
    }
    Ok((
        Frame {
            header,
            payload: &body[header_len..],
        },
        total,
    ))
}

/// Parses the header and checks the payload length for the kind and that the whole
/// frame is there: the header, its length and the frame's.
fn check_layout(bytes: &[u8]) -> Result<(Header, usize, usize), DecodeError> {
    let (header, header_len) = peek(bytes)?;
    let payload_len = usize::from(header.payload_len);
    let payload_ok = match header.kind {
        Kind::Update { encoding, .. } => match encoding {
            Encoding::F32Le => payload_len > 0 && payload_len % 4 == 0,
            Encoding::F16Le | Encoding::Bf16Le => payload_len > 0 && payload_len % 2 == 0,
            Encoding::Q8 => payload_len > Q8_HEADER,
            Encoding::TopK => payload_len % TOP_K_ENTRY == 0,
        },
        _ => payload_len == 0,
    };
    if !payload_ok {
        return Err(DecodeError::PayloadLength);
    }
    let total = header_len + payload_len + header.integrity.trailer_len();
    if bytes.len() < total {
        return Err(DecodeError::Truncated);
    }
    Ok((header, header_len, total))
}

/// Checks the trailer of a frame that need not be decrypted (an encrypted one is
/// [`DecodeError::Encrypted`] here).
fn verify(header: &Header, body: &[u8], trailer: &[u8], sealing: Sealing<'_>) -> Result<(), DecodeError> {
    match (header.integrity, sealing) {
        (Integrity::Crc32, Sealing::Crc) => {
            if trailer != crc32(body).to_le_bytes() {
                return Err(DecodeError::BadChecksum);
            }
        }
        (Integrity::Crc32, _) => return Err(DecodeError::Unauthenticated),
        (_, Sealing::Crc) => return Err(DecodeError::NoKey),
        (Integrity::Blake3 { .. }, Sealing::Tag(key)) => {
            if !key.verify(body, trailer) {
                return Err(DecodeError::BadTag);
            }
        }
        (Integrity::Blake3 { .. }, Sealing::Encrypt(_)) => return Err(DecodeError::NotEncrypted),
        (Integrity::XChaCha20Poly1305 { .. } | Integrity::Aes256Gcm { .. }, _) => return Err(DecodeError::Encrypted),
    }
    Ok(())
}

/// A checked view of little-endian `f32` values in a byte slice. Never casts the bytes
/// (they need not be aligned); reads them four at a time.
#[derive(Clone, Copy, Debug)]
pub struct F32Le<'a>(&'a [[u8; 4]]);

impl<'a> F32Le<'a> {
    /// A view of `bytes`, or `None` when the length is not a multiple of 4.
    pub fn new(bytes: &'a [u8]) -> Option<Self> {
        let (values, rest) = bytes.as_chunks::<4>();
        rest.is_empty().then_some(F32Le(values))
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// `true` when there are no values.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value at `index`, if any.
    pub fn get(&self, index: usize) -> Option<f32> {
        self.0.get(index).map(|b| f32::from_le_bytes(*b))
    }

    /// The values in order.
    pub fn iter(&self) -> impl Iterator<Item = f32> + 'a {
        self.0.iter().map(|b| f32::from_le_bytes(*b))
    }

    /// The raw 4-byte groups, for kernels.
    pub fn raw(&self) -> &'a [[u8; 4]] {
        self.0
    }
}

/// Values of model data one update frame carries when frames are at most `max_frame`
/// bytes (the largest update header and the trailer subtracted).
pub const fn chunk_len_for_frame(max_frame: usize, integrity: Integrity) -> usize {
    max_frame.saturating_sub(integrity.max_update_header_len() + integrity.trailer_len()) / 4
}

#[cfg(test)]
mod tests {
    #[test]
    fn both_crc_implementations_compute_zlib_crc32() {
        // The CRC-32 check value (RFC 1952's CRC, as zlib.crc32).
        assert_eq!(super::SMALL_CRC.checksum(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32fast::hash(b"123456789"), 0xcbf4_3926);
        let mut state = 0x1234_5678u32;
        let bytes: [u8; 4099] = core::array::from_fn(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 24) as u8
        });
        for len in [0, 1, 3, 64, 1400, 4099] {
            assert_eq!(
                super::SMALL_CRC.checksum(&bytes[..len]),
                crc32fast::hash(&bytes[..len]),
                "{len}"
            );
        }
    }

    use super::*;

    fn header(kind: Kind) -> Header {
        Header {
            version: VERSION,
            integrity: Integrity::Crc32,
            cluster: 7,
            from: NodeId(1),
            incarnation: 0,
            to: NodeId(2),
            round: 3,
            kind,
            payload_len: 0,
        }
    }

    fn widest(kind: Kind) -> Header {
        Header {
            cluster: u32::MAX,
            from: NodeId(u16::MAX),
            incarnation: u32::MAX,
            to: NodeId(u16::MAX),
            round: u32::MAX,
            payload_len: u16::MAX,
            ..header(kind)
        }
    }

    /// Fixture: an ACK from node 1 to node 2 in cluster 7, round 3.
    static ACK_BYTES: [u8; 14] = [
        0x01, // version
        0x00, // integrity: Crc32
        0x07, // cluster
        0x01, // from
        0x00, // incarnation
        0x02, // to
        0x03, // round
        0x03, // kind: Ack (variant 3)
        0x00, // payload_len
        0xd7, 0xc8, 0xeb, 0x7c, // CRC-32 of the 9 bytes above (zlib.crc32), little-endian
        0xee, // trailing byte that is not part of the frame
    ];

    #[test]
    fn deconstruct_ack_fixture() {
        let (frame, used) = decode(&ACK_BYTES).unwrap();
        assert_eq!(used, 13);
        assert_eq!(frame.header, header(Kind::Ack));
        assert!(frame.payload.is_empty());
    }

    #[test]
    fn construct_ack_fixture() {
        let mut buf = [0xa5u8; 64];
        let len = encode(header(Kind::Ack), &[], &mut buf).unwrap();
        assert_eq!(&buf[..len], &ACK_BYTES[..13]);
        assert!(buf[len..].iter().all(|&b| b == 0xa5), "wrote past the frame");
    }

    #[test]
    fn update_round_trips_payload_zero_copy() {
        let values = [1.0f32, -2.5, 3.25e-7, f32::MAX];
        let kind = Kind::Update {
            chunk: 1,
            chunks: 9,
            weight: 0.25,
            encoding: Encoding::F32Le,
        };
        let mut buf = [0xa5u8; 128];
        let len = encode(header(kind), &values, &mut buf).unwrap();
        let (frame, used) = decode(&buf[..len]).unwrap();
        assert_eq!(used, len);
        assert_eq!(frame.header.kind, kind);
        assert_eq!(frame.header.payload_len, 16);
        let view = F32Le::new(frame.payload).unwrap();
        assert!(view.iter().eq(values.iter().copied()));
        assert_eq!(view.get(4), None);
    }

    const KEY: Key = Key::new([0x42; 32]);

    fn update_kind() -> Kind {
        Kind::Update {
            chunk: 1,
            chunks: 3,
            weight: 0.5,
            encoding: Encoding::F32Le,
        }
    }

    #[test]
    fn keyed_frames_round_trip_and_carry_their_sequence_number() {
        let values = [1.0f32, -2.5, 3.25];
        let mut buf = [0u8; 256];
        let sent = Header {
            integrity: Integrity::Blake3 { seq: 1_000_000 },
            ..header(update_kind())
        };
        let len = encode_keyed(sent, &values, &mut buf, Some(&KEY)).unwrap();
        let (frame, used) = decode_keyed(&buf[..len], Some(&KEY)).unwrap();
        assert_eq!(used, len);
        assert_eq!(frame.header.integrity, Integrity::Blake3 { seq: 1_000_000 });
        assert_eq!(frame.header.kind, update_kind());
        assert_eq!(frame.payload.len(), 12);
        // A CRC header is sealed as sequence 0 when a key is given.
        let len = encode_keyed(header(Kind::Ack), &[], &mut buf, Some(&KEY)).unwrap();
        let (frame, _) = decode_keyed(&buf[..len], Some(&KEY)).unwrap();
        assert_eq!(frame.header.integrity, Integrity::Blake3 { seq: 0 });
    }

    #[test]
    fn keyed_decoding_refuses_wrong_keys_altered_bytes_and_plain_frames() {
        let mut buf = [0u8; 256];
        let sent = Header {
            integrity: Integrity::Blake3 { seq: 9 },
            ..header(update_kind())
        };
        let len = encode_keyed(sent, &[0.5, 0.25], &mut buf, Some(&KEY)).unwrap();
        let frame = &buf[..len];
        let other = Key::new([0x43; 32]);
        assert_eq!(decode_keyed(frame, Some(&other)).unwrap_err(), DecodeError::BadTag);
        assert_eq!(decode_keyed(frame, None).unwrap_err(), DecodeError::NoKey);
        assert_eq!(decode(frame).unwrap_err(), DecodeError::NoKey);
        for bit in 0..len * 8 {
            let mut altered = [0u8; 256];
            altered[..len].copy_from_slice(frame);
            altered[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode_keyed(&altered[..len], Some(&KEY)).is_err(),
                "bit {bit} flipped and accepted"
            );
        }
        let plain = encode(header(Kind::Ack), &[], &mut buf).unwrap();
        assert_eq!(
            decode_keyed(&buf[..plain], Some(&KEY)).unwrap_err(),
            DecodeError::Unauthenticated
        );
    }

    #[test]
    fn keyed_update_frames_never_exceed_the_configured_size() {
        let scheme = Integrity::Blake3 { seq: u64::MAX };
        for max_frame in [MIN_FRAME_LEN, 1_400, MAX_FRAME_LEN - 1] {
            let n = chunk_len_for_frame(max_frame, scheme);
            let values = [0.5f32; MAX_FRAME_LEN / 4];
            let mut buf = [0u8; MAX_FRAME_LEN];
            let widest_keyed = Header {
                integrity: scheme,
                ..widest(Kind::Update {
                    chunk: u32::MAX,
                    chunks: u32::MAX,
                    weight: 1.0,
                    encoding: Encoding::F32Le,
                })
            };
            let len = encode_keyed(widest_keyed, &values[..n], &mut buf, Some(&KEY)).unwrap();
            assert!(len <= max_frame, "{max_frame}: {len}");
            let header_len = postcard::to_slice(&widest_keyed, &mut [0u8; 128]).unwrap().len();
            assert!(header_len <= scheme.max_update_header_len() && header_len <= MAX_HEADER_LEN);
        }
    }

    #[test]
    fn widest_headers_fit_the_bounds() {
        let mut buf = [0u8; 128];
        let kinds = [
            Kind::Hello {
                model_len: u32::MAX,
                chunk_len: u32::MAX,
                encoding: Encoding::F32Le,
                reply: true,
            },
            Kind::Update {
                chunk: u32::MAX,
                chunks: u32::MAX,
                weight: 1.0,
                encoding: Encoding::F32Le,
            },
            Kind::Notify { chunks: u32::MAX },
            Kind::Ack,
            Kind::Missing {
                base: u32::MAX,
                mask: u64::MAX,
            },
            Kind::Heartbeat,
            Kind::Barrier,
            Kind::Leave,
        ];
        for kind in kinds {
            let len = postcard::to_slice(&widest(kind), &mut buf).unwrap().len();
            assert!(len <= MAX_HEADER_LEN, "{kind:?}: {len}");
            if matches!(kind, Kind::Update { .. }) {
                assert_eq!(len, MAX_UPDATE_HEADER_LEN);
            }
        }
    }

    #[test]
    fn frames_never_exceed_the_configured_size() {
        for max_frame in [MIN_FRAME_LEN, 1_400, MAX_FRAME_LEN - 1] {
            let n = chunk_len_for_frame(max_frame, Integrity::Crc32);
            let values = [0.5f32; MAX_FRAME_LEN / 4];
            let kind = Kind::Update {
                chunk: u32::MAX,
                chunks: u32::MAX,
                weight: 1.0,
                encoding: Encoding::F32Le,
            };
            let mut buf = [0u8; MAX_FRAME_LEN];
            let len = encode(widest(kind), &values[..n], &mut buf).unwrap();
            assert!(len <= max_frame, "{max_frame}: {len}");
        }
    }

    #[test]
    fn rejects_bad_input_with_typed_errors() {
        assert_eq!(decode(&[]).unwrap_err(), DecodeError::Truncated);
        assert_eq!(decode(&[2, 0]).unwrap_err(), DecodeError::UnsupportedVersion(2));
        assert_eq!(decode(&ACK_BYTES[..5]).unwrap_err(), DecodeError::Truncated);
        assert_eq!(decode(&ACK_BYTES[..12]).unwrap_err(), DecodeError::Truncated);
        let mut flipped = ACK_BYTES;
        flipped[5] ^= 0x10;
        assert_eq!(decode(&flipped).unwrap_err(), DecodeError::BadChecksum);
        let mut bad_kind = ACK_BYTES;
        bad_kind[7] = 0x55;
        assert_eq!(decode(&bad_kind).unwrap_err(), DecodeError::Malformed);
        let mut ack_with_payload = ACK_BYTES;
        ack_with_payload[8] = 4;
        assert_eq!(decode(&ack_with_payload).unwrap_err(), DecodeError::PayloadLength);
    }

    #[test]
    fn over_long_varints_are_refused() {
        // The Ack fixture with its cluster id (7) spelled in two bytes: 0x87 0x00.
        let mut bytes = [0u8; 14];
        bytes[..2].copy_from_slice(&ACK_BYTES[..2]);
        bytes[2] = 0x87;
        bytes[3] = 0x00;
        bytes[4..10].copy_from_slice(&ACK_BYTES[3..9]);
        let crc = crc32fast::hash(&bytes[..10]);
        bytes[10..].copy_from_slice(&crc.to_le_bytes());
        // A valid CRC over the over-long form: still refused, before the CRC is read.
        assert_eq!(postcard::from_bytes::<Header>(&bytes[..10]).map(|h| h.cluster), Ok(7));
        assert_eq!(decode(&bytes).unwrap_err(), DecodeError::Malformed);
    }

    #[test]
    fn small_buffer_reports_the_size_needed() {
        let mut buf = [0u8; 8];
        let err = encode(header(Kind::Ack), &[], &mut buf).unwrap_err();
        assert!(err.needed > 8);
        let mut buf = [0u8; 20];
        let kind = Kind::Update {
            chunk: 0,
            chunks: 1,
            weight: 1.0,
            encoding: Encoding::F32Le,
        };
        let err = encode(header(kind), &[1.0; 4], &mut buf).unwrap_err();
        assert_eq!(err.needed, MAX_HEADER_LEN + 16 + CRC_LEN);
    }

    #[test]
    fn f32_view_checks_length() {
        assert!(F32Le::new(&[0; 7]).is_none());
        let view = F32Le::new(&[0, 0, 0x80, 0x3f]).unwrap();
        assert_eq!(view.get(0), Some(1.0));
        assert_eq!(view.len(), 1);
    }
}

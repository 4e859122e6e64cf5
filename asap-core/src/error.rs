//! Error families, kept apart as in rustls: bytes that are not a frame ([`DecodeError`],
//! in `wire`), frames that are legal bytes but break a protocol rule ([`Violation`]),
//! frames that are not for this node ([`FrameError`]), and misuse of the API by the
//! application ([`RoundError`], [`ConfigError`]). All are small `Copy` enums.

use core::fmt;

use crate::wire::{DecodeError, NodeId};

/// A rule of the protocol that a peer's (well-formed) frame broke. The frame is dropped
/// and counted; the replica is never touched by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// The update's chunk count differs from this node's model layout.
    ChunkCount,
    /// The chunk index is past the last chunk.
    ChunkIndex,
    /// The chunk carries a different number of values than the layout says.
    ChunkLength,
    /// The mixing weight is not finite or not in `(0, 1]`.
    Weight,
    /// The weight changed between chunks of one update.
    WeightChanged,
    /// Folding the chunk would give neighbours more than the whole weight of a value.
    WeightOverflow,
    /// The update holds a NaN or infinity: the rest of it is dropped.
    NonFinite,
    /// The payload encoding is not one this node accepts.
    Encoding,
    /// The sender is not configured as an in-neighbour, so its updates are not mixed.
    NotInNeighbour,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Violation::ChunkCount => "update chunk count does not match the model layout",
            Violation::ChunkIndex => "update chunk index out of range",
            Violation::ChunkLength => "update chunk length does not match the model layout",
            Violation::Weight => "mixing weight not finite or outside (0, 1]",
            Violation::WeightChanged => "mixing weight changed within one update",
            Violation::WeightOverflow => "in-neighbour weights would exceed 1",
            Violation::NonFinite => "update holds a non-finite value",
            Violation::Encoding => "payload encoding not accepted",
            Violation::NotInNeighbour => "update from a peer that is not an in-neighbour",
        })
    }
}

/// Why `Node::handle_frame` refused a frame. Every refusal is also counted in `Stats`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The bytes are not a frame.
    Decode(DecodeError),
    /// The frame belongs to another cluster.
    WrongCluster(u32),
    /// The frame is addressed to another node.
    Misaddressed(NodeId),
    /// The sender is not one of this node's peers.
    UnknownPeer(NodeId),
    /// The frame uses an integrity scheme this node is not configured for.
    Integrity,
    /// The sender's model layout (from its Hello) differs from ours; its frames are ignored.
    Incompatible(NodeId),
    /// The sender broke a protocol rule.
    Violation(NodeId, Violation),
    /// An authenticated frame this node accepted before (a replay), or too old to tell.
    Replay(NodeId),
}

impl From<DecodeError> for FrameError {
    fn from(e: DecodeError) -> Self {
        FrameError::Decode(e)
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Decode(e) => e.fmt(f),
            FrameError::WrongCluster(c) => write!(f, "frame for cluster {c}"),
            FrameError::Misaddressed(to) => write!(f, "frame addressed to {to}"),
            FrameError::UnknownPeer(p) => write!(f, "frame from {p}, which is not a peer"),
            FrameError::Integrity => f.write_str("frame uses an integrity scheme this node does not accept"),
            FrameError::Replay(p) => write!(f, "frame from {p} replayed or too old"),
            FrameError::Incompatible(p) => write!(f, "{p} announced a different model layout"),
            FrameError::Violation(p, v) => write!(f, "{p}: {v}"),
        }
    }
}

impl core::error::Error for FrameError {}

/// Why a round cannot be started or finished now (the application's call, not the
/// network, is at fault or early).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RoundError {
    /// `start_round` called twice without `finish_round`.
    AlreadyStarted,
    /// `finish_round` called without `start_round`.
    NotStarted,
    /// The parameter slice has the wrong length.
    ParamsLength {
        /// The model length.
        expected: usize,
        /// The slice's length.
        got: usize,
    },
    /// The parameters hold a NaN or infinity; nothing was sent.
    NonFiniteParams,
    /// An out-neighbour has not acknowledged the previous update yet (NOTIFY-ACK flow
    /// control): wait for `Event::SendComplete` or a later `can_start_round`.
    SendWindowClosed,
    /// Starting would put this node more than the staleness bound ahead of this peer.
    Staleness(NodeId),
    /// The wait policy is not satisfied yet: wait for `Event::RoundReady`.
    NotReady,
    /// The node left the cluster (`leave`): it starts no more rounds.
    Left,
}

impl fmt::Display for RoundError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RoundError::AlreadyStarted => f.write_str("round already started"),
            RoundError::NotStarted => f.write_str("no round started"),
            RoundError::ParamsLength { expected, got } => {
                write!(f, "parameters have {got} values, the model has {expected}")
            }
            RoundError::NonFiniteParams => f.write_str("parameters hold a non-finite value"),
            RoundError::SendWindowClosed => f.write_str("an out-neighbour has not acknowledged the previous update"),
            RoundError::Staleness(p) => {
                write!(f, "starting would exceed the staleness bound with {p}")
            }
            RoundError::NotReady => f.write_str("the round's wait policy is not satisfied yet"),
            RoundError::Left => f.write_str("the node left the cluster"),
        }
    }
}

impl core::error::Error for RoundError {}

/// Why a node cannot be built from a configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// `max_frame` is outside `MIN_FRAME_LEN..=MAX_FRAME_LEN`.
    FrameSize(usize),
    /// The model has no values.
    EmptyModel,
    /// The model needs more chunks than a frame can index.
    ModelTooLarge,
    /// More peers than the node's capacity.
    TooManyPeers {
        /// The capacity (the `P` of `Node<P>`).
        capacity: usize,
    },
    /// A peer is listed twice.
    DuplicatePeer(NodeId),
    /// The node lists itself as a peer.
    SelfAsPeer,
    /// A send weight is not finite or not in `(0, 1]`.
    SendWeight(NodeId),
    /// The send weights add up to more than 1 (mass would be created).
    SendWeightsExceedOne,
    /// A caller-provided buffer has the wrong length.
    Buffer {
        /// Which buffer.
        which: &'static str,
        /// The length it needs.
        needed: usize,
        /// The length it has.
        got: usize,
    },
    /// `period` is zero.
    ZeroPeriod,
    /// `Wait::AtLeast(k)` with `k` larger than the number of in-neighbours.
    WaitExceedsInDegree,
    /// A timer is zero or the retransmission bounds are out of order.
    Timers,
    /// The node's id is not below the topology's node count.
    NotInTopology,
    /// `encrypt` without a `key`.
    EncryptionNeedsKey,
    /// `encrypt` in a build without asap-core's `encrypt` feature, or with a `cipher`
    /// this build lacks (AES-256-GCM needs the `aes-gcm` feature).
    EncryptionUnavailable,
    /// A top-k fraction outside `(0, 1]`, a consensus step outside `(0, 1]`, or
    /// compression asked of the all-reduce baseline (it sends f32 only).
    Compression,
    /// Compression with a wait policy that lets rounds finish without every update
    /// (`Wait::None`, `Wait::AtLeast`): public copies would drift apart.
    CompressionNeedsExactRounds,
    /// Compression on a push-sum graph (`Random`: directed, irregular): the mode needs
    /// doubly stochastic weights to keep the average.
    CompressionNeedsStaticGraph,
    /// Compression with `clip`: the guard bounds replicas, not differences.
    CompressionWithClip,
    /// Compression in a build without asap-core's `compress` feature.
    CompressionUnavailable,
    /// `encrypt` with incarnation 0: a restart would reuse nonces (set it to a boot
    /// counter or a clock reading, new at every start).
    EncryptionNeedsIncarnation,
    /// `identities` together with a cluster `key`: frames would not say which to trust.
    IdentitiesWithClusterKey,
    /// `identities` asked of the all-reduce baseline (ASAP nodes only).
    IdentitiesUnsupported,
    /// A link key set on a node configured without `identities`.
    NoIdentities,
    /// `join` without `elastic` membership.
    JoinNeedsElastic,
    /// Compression with `elastic` membership: its sums assume fixed neighbours.
    CompressionNeedsFixedMembership,
    /// `elastic` membership asked of the all-reduce baseline (its ring is fixed).
    ElasticUnsupported,
    /// A link key for a node that is not a peer.
    UnknownPeer(NodeId),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::FrameSize(n) => write!(
                f,
                "max_frame {n} outside {}..={}",
                crate::wire::MIN_FRAME_LEN,
                crate::wire::MAX_FRAME_LEN
            ),
            ConfigError::EmptyModel => f.write_str("model length is zero"),
            ConfigError::ModelTooLarge => f.write_str("model needs more chunks than a frame can index"),
            ConfigError::TooManyPeers { capacity } => write!(f, "more than {capacity} peers"),
            ConfigError::DuplicatePeer(p) => write!(f, "{p} listed twice"),
            ConfigError::SelfAsPeer => f.write_str("a node cannot be its own peer"),
            ConfigError::SendWeight(p) => write!(f, "send weight for {p} not in (0, 1]"),
            ConfigError::SendWeightsExceedOne => f.write_str("send weights add up to more than 1"),
            ConfigError::Buffer { which, needed, got } => {
                write!(f, "buffer `{which}` has {got} elements, needs {needed}")
            }
            ConfigError::ZeroPeriod => f.write_str("communication period must be at least 1"),
            ConfigError::WaitExceedsInDegree => f.write_str("wait count exceeds the number of in-neighbours"),
            ConfigError::Timers => f.write_str("timers must be non-zero and the retransmission bounds in order"),
            ConfigError::NotInTopology => f.write_str("node id not below the topology's node count"),
            ConfigError::EncryptionNeedsKey => f.write_str("encryption needs a key"),
            ConfigError::Compression => f.write_str("top-k fraction and consensus step must be in (0, 1]"),
            ConfigError::CompressionNeedsExactRounds => {
                f.write_str("compression needs wait all or barrier (every update consumed in its round)")
            }
            ConfigError::CompressionNeedsStaticGraph => {
                f.write_str("compression needs a doubly stochastic graph (not random, which runs push-sum)")
            }
            ConfigError::CompressionWithClip => f.write_str("compression and clip cannot be combined"),
            ConfigError::CompressionUnavailable => {
                f.write_str("compression is not in this build (asap-core's cargo feature `compress`)")
            }
            ConfigError::EncryptionUnavailable => {
                f.write_str("this encryption is not in this build (asap-core's cargo features `encrypt`, and `aes-gcm` for AES-256-GCM)")
            }
            ConfigError::EncryptionNeedsIncarnation => f.write_str(
                "encryption needs a non-zero incarnation, new at every start (a boot counter or a clock reading)",
            ),
            ConfigError::IdentitiesWithClusterKey => {
                f.write_str("per-node identities replace the cluster key: give one or the other")
            }
            ConfigError::IdentitiesUnsupported => {
                f.write_str("per-node identities are for ASAP nodes; the all-reduce baseline takes a cluster key")
            }
            ConfigError::NoIdentities => f.write_str("a link key needs a configuration with identities"),
            ConfigError::JoinNeedsElastic => f.write_str("joining a running cluster needs elastic membership"),
            ConfigError::CompressionNeedsFixedMembership => {
                f.write_str("compression needs a fixed member set: not with elastic membership")
            }
            ConfigError::ElasticUnsupported => {
                f.write_str("elastic membership is for ASAP nodes; the all-reduce ring is fixed")
            }
            ConfigError::UnknownPeer(p) => write!(f, "{p} is not a peer of this node"),
        }
    }
}

impl core::error::Error for ConfigError {}

//! What the application decides before a node starts: cluster, model layout, wait
//! policy, timers, neighbours, and the memory it lends the node.

use crate::auth::{CipherSuite, Key, Secret};
use crate::compress::Compression;
use crate::error::{ConfigError, RoundError};
use crate::time::Duration;
use crate::wire::{self, Integrity, NodeId};

/// When a started round may finish, i.e. which in-neighbours' updates it waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// NOTIFY-ACK's consistent reduce: the update of every live in-neighbour.
    All,
    /// At least this many in-neighbours' updates (fewer if fewer are alive).
    AtLeast(u16),
    /// Asynchronous: finish at once with whatever has arrived; late chunks count toward
    /// the next round.
    None,
    /// Bulk-synchronous, for comparison: as `All`, and also every member of the peer
    /// table must have reached this round (a global barrier when the table lists the
    /// whole cluster).
    Barrier,
}

/// Names of the wait policies, as configuration files and command lines spell them:
/// `all`, `none`, `barrier`, or a number `k` for `AtLeast(k)`.
impl core::str::FromStr for Wait {
    type Err = UnknownWait;

    fn from_str(s: &str) -> Result<Self, UnknownWait> {
        match s {
            "all" => Ok(Wait::All),
            "none" => Ok(Wait::None),
            "barrier" => Ok(Wait::Barrier),
            k => k.parse().map(Wait::AtLeast).map_err(|_| UnknownWait),
        }
    }
}

impl core::fmt::Display for Wait {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Wait::All => f.write_str("all"),
            Wait::None => f.write_str("none"),
            Wait::Barrier => f.write_str("barrier"),
            Wait::AtLeast(k) => write!(f, "{k}"),
        }
    }
}

/// A wait policy name that is none of `all`, `none`, `barrier` or a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownWait;

impl core::fmt::Display for UnknownWait {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("a wait policy is one of all, none, barrier, or a number k (at least k updates)")
    }
}

/// One entry of the peer table.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PeerSpec {
    /// The peer.
    pub id: NodeId,
    /// `Some(w)`: an out-neighbour, sent this node's replica with mixing weight `w`.
    pub send_weight: Option<f32>,
    /// `true`: an in-neighbour, whose updates this node waits for and mixes in.
    pub receive: bool,
}

impl PeerSpec {
    /// A neighbour in both directions with the same weight (undirected graphs).
    pub const fn both(id: NodeId, weight: f32) -> Self {
        PeerSpec {
            id,
            send_weight: Some(weight),
            receive: true,
        }
    }

    /// A member that is not a neighbour (only heartbeats and barriers).
    pub const fn member(id: NodeId) -> Self {
        PeerSpec {
            id,
            send_weight: None,
            receive: false,
        }
    }
}

/// Everything a node needs besides its peers and its memory. Build with
/// [`Config::new`], adjust fields, then hand it to `Node::new`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Config {
    /// Cluster identifier; frames of other clusters are refused.
    pub cluster: u32,
    /// This node.
    pub id: NodeId,
    /// Must grow with every (re)start of this node (a boot counter, or seconds since an
    /// epoch): peers tell a restart (a newer incarnation) from frames of its previous
    /// life still in flight (older ones, dropped). Default 0.
    pub incarnation: u32,
    /// Number of model values (`f32`).
    pub model_len: usize,
    /// Largest frame this node sends, `MIN_FRAME_LEN..=MAX_FRAME_LEN` bytes. Every member
    /// must use the same value (it fixes the chunk layout). Default 1,400 (an Ethernet
    /// MTU minus IP and UDP headers, with room to spare).
    pub max_frame: usize,
    /// Which updates a round waits for. Default [`Wait::All`].
    pub wait: Wait,
    /// Local steps between two rounds (see `Node::record_local_step`). Default 5, as in
    /// the reference implementation.
    pub period: u32,
    /// Never start a round more than this many rounds ahead of a live in-neighbour.
    /// Default `None` (unbounded; `Wait::All` keeps neighbours in lockstep anyway).
    pub staleness: Option<u32>,
    /// Retransmission timeout of an unanswered NOTIFY before the edge measured its
    /// round-trip time. Default 20 ms.
    pub retransmit_initial: Duration,
    /// Floor of the measured retransmission timeout (`srtt + 4·rttvar`). Default 1 ms.
    pub retransmit_min: Duration,
    /// Cap of the exponential retransmission backoff. Default 1 s.
    pub retransmit_max: Duration,
    /// Send a heartbeat to a peer after this long without sending it anything.
    /// Default 100 ms.
    pub heartbeat_interval: Duration,
    /// Declare a peer down after this long without hearing from it. Default 2 s.
    pub peer_timeout: Duration,
    /// The cluster's pre-shared key. `Some`: every frame sent carries a keyed BLAKE3
    /// tag and a sequence number, and only frames whose tag verifies and whose number is
    /// new are accepted (the `auth` module). `None` (the default): frames carry a CRC-32,
    /// which catches corruption but not forgery — for closed networks only.
    pub key: Option<Key>,
    /// With a key: encrypt every payload (XChaCha20-Poly1305 under a key derived from
    /// `key`) instead of only tagging it, so update values are hidden from the network
    /// (headers stay in clear). Needs a non-zero `incarnation` that is new at every
    /// start: it is part of the nonce. Every member must agree. Default `false`.
    pub encrypt: bool,
    /// The AEAD an encrypting node seals with ([`CipherSuite`]); it opens frames of every
    /// suite its build has. Default XChaCha20-Poly1305, which every build with `encrypt`
    /// has; AES-256-GCM (feature `aes-gcm`) is several times faster on servers with AES
    /// instructions, but a board built without it refuses such frames.
    pub cipher: CipherSuite,
    /// Per-node identities: frames to and from each peer are sealed with the key of
    /// that pair of members ([`Node::set_link_key`](crate::Node::set_link_key), e.g.
    /// derived by X25519 from the members' static keys, feature `identity`), not with a
    /// cluster `key` (which must be `None`), so a frame proves which member sent it: a
    /// member claiming another's id fails every check. `encrypt` and `cipher` apply to
    /// the link keys. A peer whose key is not set yet is neither heard nor sent to.
    /// ASAP nodes only (not the all-reduce baseline). Default `false`.
    pub identities: bool,
    /// Elastic membership: members may be absent at the start, join a running cluster
    /// later ([`join`](Self::join)) and leave it. A peer counts once it is heard from,
    /// not before (it is not waited for until then), and stops counting when it leaves
    /// or is silent past `peer_timeout`. The node runs push-sum on any graph: a share
    /// meant for a member not there stays with its sender, so the mass-weighted average
    /// of the members present is what converges, exactly, whoever comes and goes. Not
    /// with compression (its sums assume fixed neighbours) nor the all-reduce baseline.
    /// Default `false`.
    pub elastic: bool,
    /// Elastic membership: this node joins a running cluster. It starts with no mass,
    /// so its first round's mix makes its replica what its in-neighbours sent: the
    /// cluster's model, fetched through the ordinary updates and their flow control
    /// ([`Node::has_model`](crate::Node::has_model) says when; train only after). The
    /// average of the others does not move. Needs `elastic`. Default `false`.
    pub join: bool,
    /// How updates travel ([`Compression`]). With anything but `None` the node runs the
    /// compressed mode (CHOCO-gossip, Koloskova, Stich and Jaggi, ICML 2019): it keeps a
    /// public copy `x̂` of its replica and the disagreement `t = Σ_j w_j·x̂_j − W·x̂`
    /// with its in-neighbours' public copies, sends the compressed difference
    /// `q = Q(x − x̂)`, and mixes `x ← x + γ·t` — what compression drops stays in
    /// `x − x̂` and goes out in later rounds, and the average is kept exactly. It needs
    /// `Wait::All` or `Wait::Barrier` (every update consumed in its round, NOTIFY-ACK
    /// keeping `x̂` equal on both ends), a symmetric doubly stochastic graph (not push-sum
    /// `Random`; a time-varying one, one-peer-exp, runs on the union of a period's graphs
    /// with `q` computed once a period and `t` mixed at its end), no `clip`, and an
    /// accumulator of three model lengths ([`Layout::accumulator`]: `t` as a compensated
    /// sum, and `x̂`). Every member must agree. Default `None`.
    pub compression: Compression,
    /// Compressed mode: the consensus step `γ` in `(0, 1]`; 1 is plain gossip on what
    /// arrives, and coarse compressors need smaller steps or they diverge. Default
    /// `None`: [`Compression::default_step`] (1 for f16, bf16 and q8; top-k's falls
    /// with its fraction and, on slowly mixing graphs, with the spectral gap).
    pub consensus_step: Option<f32>,
    /// Compressed mode: every this many rounds all nodes reset `x̂` and `s` to zero at
    /// the same round, so a neighbour that went down or restarted (whose public copy can
    /// no longer be kept in step) stops counting. 0: never. Default 1,000.
    pub compression_epoch: u32,
    /// Poisoning guard: bring every incoming update chunk within this distance of the
    /// local replica's chunk before mixing it (counted in `Stats::chunks_clipped`).
    /// `None` (the default): updates are mixed as they come (non-finite ones are
    /// always refused).
    pub clip: Option<Clip>,
}

/// How far an incoming update chunk `u` may be from the local chunk `x`:
/// `‖u − x‖ ≤ max(relative · ‖x‖, absolute · √len)` (L2 norms over the chunk). Farther
/// chunks are pulled in along `u − x` to that distance, so one faulty or malicious peer
/// moves a replica by at most its share of that bound per round.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Clip {
    /// Bound relative to the local chunk's norm.
    pub relative: f32,
    /// Bound per value (root mean square), for replicas near zero.
    pub absolute: f32,
}

impl Clip {
    /// The distance allowed from a local chunk of norm `x_norm` and `len` values.
    pub fn bound(&self, x_norm: f64, len: usize) -> f64 {
        (f64::from(self.relative) * x_norm).max(f64::from(self.absolute) * libm::sqrt(len as f64))
    }
}

impl Config {
    /// A configuration with the defaults documented on each field.
    pub const fn new(cluster: u32, id: NodeId, model_len: usize) -> Self {
        Config {
            cluster,
            id,
            incarnation: 0,
            model_len,
            max_frame: 1_400,
            wait: Wait::All,
            period: 5,
            staleness: None,
            retransmit_initial: Duration::from_millis(20),
            retransmit_min: Duration::from_millis(1),
            retransmit_max: Duration::from_secs(1),
            heartbeat_interval: Duration::from_millis(100),
            peer_timeout: Duration::from_secs(2),
            key: None,
            encrypt: false,
            cipher: CipherSuite::XChaCha20Poly1305,
            identities: false,
            elastic: false,
            join: false,
            compression: Compression::None,
            consensus_step: None,
            compression_epoch: 1_000,
            clip: None,
        }
    }

    /// The integrity scheme frames use: authenticated when the configuration has a key,
    /// encrypted when it also says `encrypt` (the sequence number shown is a
    /// placeholder; each frame carries its own).
    pub const fn integrity(&self) -> Integrity {
        let keyed = self.key.is_some() || self.identities;
        match (keyed, self.encrypt) {
            (true, false) => Integrity::Blake3 { seq: 0 },
            (true, true) => Integrity::encrypted(self.cipher, 0),
            (false, _) => Integrity::Crc32,
        }
    }

    /// Model values per update chunk (compressed payloads fit more into a frame).
    pub const fn chunk_len(&self) -> usize {
        let integrity = self.integrity();
        let room = self
            .max_frame
            .saturating_sub(integrity.max_update_header_len() + integrity.trailer_len());
        self.compression.chunk_values(room)
    }

    /// The compressed mode's consensus step on a graph with this spectral gap:
    /// `consensus_step`, or the compression's default.
    pub fn step(&self, gap: Option<f64>) -> f32 {
        self.consensus_step.unwrap_or(self.compression.default_step(gap))
    }

    /// Whether the node runs the compressed mode. Always `false` without the
    /// `compress` feature, so the mode's code is left out of the build.
    pub fn is_compressed(&self) -> bool {
        cfg!(feature = "compress") && self.compression != Compression::None
    }

    /// Checks everything the configuration says on its own (the peer table and buffers
    /// are checked when a node is built from it): every engine's constructor and
    /// [`layout`](Self::layout) call it, so a bad configuration is refused before any
    /// memory is sized from it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(wire::MIN_FRAME_LEN..=wire::MAX_FRAME_LEN).contains(&self.max_frame) {
            return Err(ConfigError::FrameSize(self.max_frame));
        }
        if self.model_len == 0 {
            return Err(ConfigError::EmptyModel);
        }
        if self.identities && self.key.is_some() {
            return Err(ConfigError::IdentitiesWithClusterKey);
        }
        if self.encrypt && self.key.is_none() && !self.identities {
            return Err(ConfigError::EncryptionNeedsKey);
        }
        if self.encrypt && !self.cipher.is_available() {
            return Err(ConfigError::EncryptionUnavailable);
        }
        if self.encrypt && self.incarnation == 0 {
            return Err(ConfigError::EncryptionNeedsIncarnation);
        }
        if self.compression != Compression::None && !cfg!(feature = "compress") {
            return Err(ConfigError::CompressionUnavailable);
        }
        let step = self.step(None);
        if !(self.compression.is_valid() && step > 0.0 && step <= 1.0) {
            return Err(ConfigError::Compression);
        }
        if self.is_compressed() && !matches!(self.wait, Wait::All | Wait::Barrier) {
            return Err(ConfigError::CompressionNeedsExactRounds);
        }
        if self.is_compressed() && self.clip.is_some() {
            return Err(ConfigError::CompressionWithClip);
        }
        if self.join && !self.elastic {
            return Err(ConfigError::JoinNeedsElastic);
        }
        if self.is_compressed() && self.elastic {
            return Err(ConfigError::CompressionNeedsFixedMembership);
        }
        let chunk_len = self.chunk_len();
        if chunk_len == 0 {
            return Err(ConfigError::FrameSize(self.max_frame));
        }
        let chunks = self.model_len.div_ceil(chunk_len);
        if u32::try_from(chunks).is_err() || u32::try_from(self.model_len).is_err() {
            return Err(ConfigError::ModelTooLarge);
        }
        if self.period == 0 {
            return Err(ConfigError::ZeroPeriod);
        }
        if self.staleness == Some(0)
            || self.retransmit_min.total_micros() == 0
            || self.retransmit_initial < self.retransmit_min
            || self.retransmit_max < self.retransmit_initial
            || self.heartbeat_interval.total_micros() == 0
            || self.peer_timeout.total_micros() == 0
        {
            return Err(ConfigError::Timers);
        }
        Ok(())
    }

    /// What frames are sealed with: the key, and the cipher derived from it when
    /// encrypting (derived once, not per frame).
    /// With `identities`, the node-wide secret seals nothing (each peer has its own):
    /// `Secret::None`, once the link keys could be used as asked.
    pub fn secret(&self) -> Result<Secret, ConfigError> {
        if self.identities {
            if self.key.is_some() {
                return Err(ConfigError::IdentitiesWithClusterKey);
            }
            // Whether link keys can seal as asked (the key itself does not matter here).
            return match Secret::new(Some(Key::new([0; 32])), self.encrypt, self.cipher) {
                Some(_) => Ok(Secret::None),
                None => Err(ConfigError::EncryptionUnavailable),
            };
        }
        Secret::new(self.key, self.encrypt, self.cipher).ok_or(match self.key {
            None => ConfigError::EncryptionNeedsKey,
            Some(_) => ConfigError::EncryptionUnavailable,
        })
    }

    /// Sizes of the buffers a node with `peers` table entries needs (after
    /// [`validate`](Self::validate)).
    pub fn layout(&self, peers: usize) -> Result<Layout, ConfigError> {
        self.validate()?;
        let chunks = self.model_len.div_ceil(self.chunk_len());
        let words_per_peer = chunks.div_ceil(32);
        Ok(Layout {
            model_len: self.model_len,
            accumulator: if self.is_compressed() {
                3 * self.model_len
            } else {
                self.model_len
            },
            chunks,
            // The compressed mode never runs push-sum (it needs a static, doubly
            // stochastic graph and exact rounds).
            chunk_mass: if self.is_compressed() { 0 } else { 2 * chunks },
            words_per_peer,
            bitmap_words: words_per_peer * peers,
        })
    }
}

/// How much memory a node borrows, from [`Config::layout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Length of `Buffers::snapshot`.
    pub model_len: usize,
    /// Length of `Buffers::accumulator`: the model length, three times that in the
    /// compressed mode (the disagreement with the in-neighbours' public copies as a
    /// compensated sum of two parts, then this node's public copy).
    pub accumulator: usize,
    /// Chunks in an update; the length of `Buffers::chunk_weights`.
    pub chunks: usize,
    /// Length of `Buffers::chunk_mass`: two masses a chunk (0 in the compressed mode).
    pub chunk_mass: usize,
    /// Bitmap words each peer's receive state takes.
    pub words_per_peer: usize,
    /// Length of `Buffers::chunk_bits`.
    pub bitmap_words: usize,
}

impl Layout {
    /// Bytes of all the buffers together.
    pub const fn bytes(&self) -> usize {
        4 * (self.model_len + self.accumulator + self.chunks + self.chunk_mass + self.bitmap_words)
    }
}

/// Memory the application lends a node for its whole life. The model (the application's
/// parameters) is not here: it is passed to `start_round` / `finish_round`.
///
/// Memory is `O(model)` whatever the degree: one accumulator receives every
/// neighbour's update, chunk by chunk, as it arrives.
#[derive(Debug)]
pub struct Buffers<'a> {
    /// The replica as sent this round (kept until every out-neighbour acknowledged it).
    pub snapshot: &'a mut [f32],
    /// The weighted sum of in-neighbours' updates received since the last mix.
    pub accumulator: &'a mut [f32],
    /// Per chunk, the total weight folded into the accumulator.
    pub chunk_weights: &'a mut [f32],
    /// Push-sum (directed irregular graphs, and the asynchronous modes): per chunk, the
    /// mass its values carry now, then the mass when the round's snapshot was taken.
    /// Each chunk is its own push-sum instance, so a chunk mixed from an update that
    /// arrived in part keeps its mass exact. Unused otherwise, but lent all the same:
    /// the layout does not know the graph.
    pub chunk_mass: &'a mut [f32],
    /// Per peer, which chunks of its current update arrived.
    pub chunk_bits: &'a mut [u32],
}

impl Buffers<'_> {
    pub(crate) fn check(&self, layout: &Layout) -> Result<(), ConfigError> {
        let check = |which, needed, got| {
            if needed == got {
                Ok(())
            } else {
                Err(ConfigError::Buffer { which, needed, got })
            }
        };
        check("snapshot", layout.model_len, self.snapshot.len())?;
        check("accumulator", layout.accumulator, self.accumulator.len())?;
        check("chunk_weights", layout.chunks, self.chunk_weights.len())?;
        check("chunk_mass", layout.chunk_mass, self.chunk_mass.len())?;
        check("chunk_bits", layout.bitmap_words, self.chunk_bits.len())
    }
}

impl Layout {
    /// The checks every round makes of the application's parameters: the model's
    /// length, and only finite values (a NaN sent would be refused by every peer).
    pub(crate) fn check_params(&self, params: &[f32]) -> Result<(), RoundError> {
        self.check_params_len(params)?;
        if !crate::reduce::all_finite(params) {
            return Err(RoundError::NonFiniteParams);
        }
        Ok(())
    }

    /// The model's length alone, for a caller that checks the values as it reads them.
    pub(crate) fn check_params_len(&self, params: &[f32]) -> Result<(), RoundError> {
        if params.len() != self.model_len {
            return Err(RoundError::ParamsLength {
                expected: self.model_len,
                got: params.len(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write;

    #[test]
    fn wait_policies_parse_from_their_names_and_print_back() {
        for (name, wait) in [
            ("all", Wait::All),
            ("none", Wait::None),
            ("barrier", Wait::Barrier),
            ("3", Wait::AtLeast(3)),
        ] {
            assert_eq!(name.parse(), Ok(wait));
            let mut printed = heapless::String::<16>::new();
            write!(printed, "{wait}").unwrap();
            assert_eq!(printed, name);
        }
        for bad in ["", "sometimes", "-1", "70000", "All"] {
            assert_eq!(bad.parse::<Wait>(), Err(UnknownWait), "{bad:?}");
        }
    }
}

//! What an engine reports to its runtime and application, shared by [`Node`] and
//! [`AllReduce`]: frames to send ([`Transmit`]), events ([`Event`]), counters
//! ([`Stats`]) and the results of round and peer queries.
//!
//! [`Node`]: crate::Node
//! [`AllReduce`]: crate::allreduce::AllReduce

use crate::error::Violation;
use crate::time::Duration;
use crate::wire::{DecodeError, NodeId};

/// Capacity of the event queue; events past it are dropped and counted
/// (`Stats::events_dropped`). 64: a node of 64 peers that all fall silent at once reports
/// every one down in the same call (the mio runtime's `MAX_PEERS`); a larger burst of
/// per-peer events loses the rest, whose state `Node::peer` still gives.
pub const EVENT_CAPACITY: usize = 64;

/// Frames `poll_transmit` or `poll_transmit_batch` wrote into the caller's buffer, all
/// for one peer: one frame, or several back to back as a batch of datagrams (quinn's
/// `Transmit`), each `segment_size` bytes but the last, which may be shorter. A
/// transport hands the batch to the kernel in one call (Linux `UDP_SEGMENT`, "GSO"), or
/// sends `buf[..len].chunks(segment_size)` one datagram each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "the frames in the buffer must be sent"]
pub struct Transmit {
    /// The peer to send them to.
    pub to: NodeId,
    /// Bytes of the buffer the frames take.
    pub len: usize,
    /// Bytes of each frame but the last (`len` when there is one frame).
    pub segment_size: usize,
}

impl Transmit {
    /// One frame of `len` bytes.
    pub(crate) const fn one(to: NodeId, len: usize) -> Self {
        Transmit {
            to,
            len,
            segment_size: len,
        }
    }

    /// Frames in the batch.
    pub const fn segments(&self) -> usize {
        if self.segment_size == 0 {
            return 0;
        }
        self.len.div_ceil(self.segment_size)
    }

    /// The frames of the batch in `buf` (the buffer it was written to), one by one.
    pub fn frames<'b>(&self, buf: &'b [u8]) -> core::slice::Chunks<'b, u8> {
        buf[..self.len.min(buf.len())].chunks(self.segment_size.max(1))
    }
}

/// A frame an engine accepted (`handle_frame`, `handle_frame_mut`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// Its sender.
    pub from: NodeId,
    /// The frame proved who sent it and was new: its tag verified under the cluster key
    /// and it advanced the sender's replay window. Only such a frame may move the
    /// sender's address to the frame's source (WireGuard's roaming rule): a replay, from
    /// anywhere, is refused or only noted. Always `false` in a cluster without a key
    /// (anyone can send any frame from anywhere), and for a keyed frame the engine only
    /// took note of (one of the sender's previous incarnation, say).
    pub fresh: bool,
}

/// Something the application may want to act on. Drain with `poll_event` after
/// every `handle_*` call and every application command.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The started round's wait policy is satisfied: `finish_round` will succeed.
    /// Edge-triggered, once a round (`is_ready` is the level).
    RoundReady {
        /// The round.
        round: u32,
    },
    /// Every live out-neighbour acknowledged this round's update: the next round may
    /// start. Edge-triggered, once a round.
    SendComplete {
        /// The round.
        round: u32,
    },
    /// The peer was silent past `peer_timeout` (or left): it is neither waited for nor
    /// sent to until it speaks again.
    PeerDown(NodeId),
    /// A peer that was down spoke again.
    PeerUp(NodeId),
    /// A peer announced a new incarnation (it restarted and lost its state).
    PeerRestarted(NodeId),
    /// A peer announced a model layout different from ours; its frames are ignored.
    PeerIncompatible(NodeId),
    /// A joining node (`Config::join`) holds the cluster's model: every chunk got mass
    /// from its in-neighbours in the round just finished. It may train from now on.
    Joined {
        /// The round whose finish completed the model.
        round: u32,
    },
    /// An update broke a rule (e.g. a non-finite value); its remaining chunks are dropped.
    UpdateRejected {
        /// The sender.
        peer: NodeId,
        /// The update's round.
        round: u32,
        /// The rule it broke.
        reason: Violation,
    },
}

/// Counters, for logs and tests. All monotonic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames written by `poll_transmit`.
    pub frames_sent: u64,
    /// Bytes written by `poll_transmit`.
    pub bytes_sent: u64,
    /// Frames accepted by `handle_frame`.
    pub frames_received: u64,
    /// Bytes of accepted frames.
    pub bytes_received: u64,
    /// Update chunks sent (first transmissions).
    pub chunks_sent: u64,
    /// Update chunks sent again because the receiver reported them missing.
    pub chunks_resent: u64,
    /// NOTIFYs sent again after a timeout or a resend.
    pub notifies_resent: u64,
    /// Retransmission timers that fired.
    pub retransmit_timeouts: u64,
    /// Chunks folded into the accumulator.
    pub chunks_folded: u64,
    /// Frames that repeated something already received (ignored).
    pub duplicates: u64,
    /// Frames about a round already superseded (ignored).
    pub stale: u64,
    /// Updates whose sender moved on before they were complete.
    pub updates_abandoned: u64,
    /// Updates rejected for breaking a rule (non-finite values, bad weights, ...).
    pub updates_rejected: u64,
    /// Frames refused because their bytes were not a valid frame.
    pub decode_errors: u64,
    /// Valid frames refused (other cluster, not for us, unknown peer, incompatible).
    pub frames_refused: u64,
    /// Times a peer was declared down.
    pub peers_down: u64,
    /// Rounds finished.
    pub rounds: u64,
    /// Events dropped because the queue was full.
    pub events_dropped: u64,
    /// Frames for a round this node has not reached yet (exact-round modes): dropped,
    /// and the early NOTIFY answered when the round comes.
    pub early: u64,
    /// Updates for a round this node had already passed (exact-round modes):
    /// acknowledged and dropped.
    pub late: u64,
    /// Rounds skipped to catch up with in-neighbours that were ahead.
    pub rounds_skipped: u64,
    /// Chunks not mixed because the result would have overflowed to infinity.
    pub chunks_overflowed: u64,
    /// Frames refused for authentication: a bad tag (wrong key or altered bytes), an
    /// unauthenticated frame at a keyed node or the reverse, a plain frame at an
    /// encrypting node or the reverse.
    pub auth_failures: u64,
    /// Authenticated frames refused as replays (or too old to tell).
    pub replays: u64,
    /// Update chunks pulled in to the `Config::clip` bound before mixing.
    pub chunks_clipped: u64,
}

impl Stats {
    /// Counts a frame that did not decode: as an authentication failure, or as
    /// malformed.
    pub(crate) fn count_undecodable(&mut self, e: &DecodeError) {
        if e.is_authentication() {
            self.auth_failures += 1;
        } else {
            self.decode_errors += 1;
        }
    }
}

/// What `finish_round` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Finished {
    /// The round that finished.
    pub round: u32,
    /// Complete in-neighbour updates mixed in (and acknowledged).
    pub updates: usize,
}

/// A peer's state as seen from this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// Heard from within `peer_timeout` and not left.
    pub up: bool,
    /// Rounds the peer announced it started.
    pub rounds_started: u32,
    /// No update of ours in flight to it.
    pub send_idle: bool,
    /// Smoothed round-trip time to it, once measured.
    pub rtt: Option<Duration>,
}

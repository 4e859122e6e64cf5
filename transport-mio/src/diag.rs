//! Diagnostics through the `log` facade that stay readable under attack: what can
//! happen once a datagram (a refused frame, an address that moves) is logged at most
//! once per [`LOG_INTERVAL`], with a count of what was left out.
//!
//! An attacker who controls the datagrams also controls how often a naive logger
//! writes; one line per refused datagram would fill a disk at line rate and bury the
//! lines that matter (a peer going down). Counters (`SocketStats`, the engine's
//! `Stats`) keep the exact numbers; the log says that something happens and how much.

use std::net::SocketAddr;
use std::time::{Duration, Instant as WallClock};

use asap_core::{DecodeError, FrameError};

/// Shortest time between two lines about one kind of thing.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Lets one occurrence through per [`LOG_INTERVAL`] and counts the others.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    last: Option<WallClock>,
    suppressed: u64,
}

impl Throttle {
    /// `Some(n)`: log this occurrence now and mention the `n` left out since the last
    /// line; `None`: counted, stay quiet.
    pub(crate) fn admit(&mut self, now: WallClock) -> Option<u64> {
        if self.last.is_some_and(|t| now.duration_since(t) < LOG_INTERVAL) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }

    /// `Some(n)`: `n > 0` occurrences were left out and the interval is over: say so
    /// now (called every turn, so a burst that stopped is still reported).
    pub(crate) fn flush(&mut self, now: WallClock) -> Option<u64> {
        if self.suppressed == 0 || self.last.is_some_and(|t| now.duration_since(t) < LOG_INTERVAL) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Why frames were refused, in the classes an operator acts on differently.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RefusalCounts {
    /// Bad tags, unauthenticated frames at a keyed node, the reverse: a wrong key or
    /// forged bytes.
    auth: u64,
    /// Authenticated frames seen before.
    replays: u64,
    /// Bytes that are not a frame (or fail their checksum).
    garbage: u64,
    /// Frames of another cluster, for another node, from a node that is not a peer.
    foreign: u64,
    /// Peers breaking a rule or speaking another model layout.
    protocol: u64,
}

impl RefusalCounts {
    fn count(&mut self, e: &FrameError) {
        let class = match e {
            FrameError::Decode(
                DecodeError::Unauthenticated
                | DecodeError::NoKey
                | DecodeError::BadTag
                | DecodeError::Encrypted
                | DecodeError::NotEncrypted,
            )
            | FrameError::Integrity => &mut self.auth,
            FrameError::Replay(_) => &mut self.replays,
            FrameError::Decode(_) => &mut self.garbage,
            FrameError::WrongCluster(_) | FrameError::Misaddressed(_) | FrameError::UnknownPeer(_) => &mut self.foreign,
            // Incompatible layouts, rule violations, and whatever a later core adds.
            _ => &mut self.protocol,
        };
        *class += 1;
    }

    fn total(&self) -> u64 {
        self.auth + self.replays + self.garbage + self.foreign + self.protocol
    }
}

impl std::fmt::Display for RefusalCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts = [
            (self.auth, "authentication"),
            (self.replays, "replay"),
            (self.garbage, "undecodable"),
            (self.foreign, "not for this node"),
            (self.protocol, "protocol"),
        ];
        let mut first = true;
        for (n, what) in parts.into_iter().filter(|(n, _)| *n > 0) {
            if !first {
                f.write_str(", ")?;
            }
            write!(f, "{what} {n}")?;
            first = false;
        }
        Ok(())
    }
}

/// Refused frames, logged at `warn` at most once per [`LOG_INTERVAL`]: the first of a
/// burst with its reason and source, then a summary by class.
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    throttle: Throttle,
    /// Refusals left out of the log since its last line.
    pending: RefusalCounts,
}

impl Refusals {
    /// Notes one refused frame from `from`.
    pub(crate) fn refused(&mut self, now: WallClock, e: &FrameError, from: SocketAddr) {
        match self.throttle.admit(now) {
            Some(0) => log::warn!("refused a frame from {from}: {e}"),
            Some(_) => {
                let before = std::mem::take(&mut self.pending);
                log::warn!(
                    "refused a frame from {from}: {e}; {} more refused in the last {} s ({before})",
                    before.total(),
                    LOG_INTERVAL.as_secs()
                );
            }
            None => self.pending.count(e),
        }
    }

    /// Reports refusals left out once the interval is over (call every turn).
    pub(crate) fn flush(&mut self, now: WallClock) {
        if let Some(n) = self.throttle.flush(now) {
            let counts = std::mem::take(&mut self.pending);
            log::warn!(
                "refused {n} more frames in the last {} s ({counts})",
                LOG_INTERVAL.as_secs()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_gives_one_line_then_one_summary_per_interval() {
        let t0 = WallClock::now();
        let mut t = Throttle::default();
        assert_eq!(t.admit(t0), Some(0));
        for k in 1..=1000u64 {
            assert_eq!(t.admit(t0 + Duration::from_millis(k)), None);
        }
        assert_eq!(t.flush(t0 + Duration::from_secs(1)), None, "interval not over");
        assert_eq!(t.flush(t0 + LOG_INTERVAL + Duration::from_secs(1)), Some(1000));
        assert_eq!(t.flush(t0 + 3 * LOG_INTERVAL), None, "nothing left out");
        assert_eq!(t.admit(t0 + 3 * LOG_INTERVAL), Some(0));
    }

    #[test]
    fn refusals_are_counted_by_class() {
        let mut c = RefusalCounts::default();
        c.count(&FrameError::Decode(DecodeError::BadTag));
        c.count(&FrameError::Replay(asap_core::NodeId(1)));
        c.count(&FrameError::Replay(asap_core::NodeId(2)));
        c.count(&FrameError::Decode(DecodeError::Truncated));
        c.count(&FrameError::Misaddressed(asap_core::NodeId(3)));
        assert_eq!(c.total(), 5);
        assert_eq!(
            c.to_string(),
            "authentication 1, replay 2, undecodable 1, not for this node 1"
        );
    }
}

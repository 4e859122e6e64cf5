//! Time as the caller sees it: the core never reads a clock.
//!
//! Every mutating call takes `now: Instant`. Instants and durations are plain
//! microsecond counts, so a simulator can drive the core with a virtual clock and a
//! board with its SysTick counter.

use core::fmt;
use core::ops::{Add, Sub};

/// A point in time, in microseconds since an epoch the caller chooses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

/// A span of time in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(u64);

impl Instant {
    /// The epoch.
    pub const ZERO: Instant = Instant(0);

    /// An instant `micros` microseconds after the epoch.
    pub const fn from_micros(micros: u64) -> Self {
        Instant(micros)
    }

    /// An instant `millis` milliseconds after the epoch.
    pub const fn from_millis(millis: u64) -> Self {
        Instant(millis.saturating_mul(1_000))
    }

    /// Microseconds since the epoch.
    pub const fn total_micros(self) -> u64 {
        self.0
    }

    /// Time elapsed since `earlier`, zero if `earlier` is in the future.
    pub const fn saturating_since(self, earlier: Instant) -> Duration {
        Duration(self.0.saturating_sub(earlier.0))
    }
}

impl Duration {
    /// No time.
    pub const ZERO: Duration = Duration(0);

    /// `micros` microseconds.
    pub const fn from_micros(micros: u64) -> Self {
        Duration(micros)
    }

    /// `millis` milliseconds.
    pub const fn from_millis(millis: u64) -> Self {
        Duration(millis.saturating_mul(1_000))
    }

    /// `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Duration(secs.saturating_mul(1_000_000))
    }

    /// The length in microseconds.
    pub const fn total_micros(self) -> u64 {
        self.0
    }

    /// Twice as long, but never longer than `cap` (exponential backoff).
    pub fn doubled_up_to(self, cap: Duration) -> Duration {
        Duration(self.0.saturating_mul(2).min(cap.0))
    }
}

/// `core::time::Duration` is `std::time::Duration`: runtimes convert with `into()`.
/// Longer than `u64::MAX` microseconds (584,000 years) saturates.
impl From<core::time::Duration> for Duration {
    fn from(d: core::time::Duration) -> Self {
        Duration(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }
}

impl From<Duration> for core::time::Duration {
    fn from(d: Duration) -> Self {
        core::time::Duration::from_micros(d.0)
    }
}

/// The instant `since_epoch` after the epoch: with std, `Instant::from(epoch.elapsed())`
/// for an `epoch: std::time::Instant` taken when the runtime started.
impl From<core::time::Duration> for Instant {
    fn from(since_epoch: core::time::Duration) -> Self {
        Instant(Duration::from(since_epoch).0)
    }
}

/// Time since the epoch: with std, `epoch + core::time::Duration::from(instant)` is the
/// `std::time::Instant` (to arm a timer at [`Node::poll_timeout`](crate::Node::poll_timeout)).
impl From<Instant> for core::time::Duration {
    fn from(at: Instant) -> Self {
        core::time::Duration::from_micros(at.0)
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        Instant(self.0.saturating_add(rhs.0))
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_since(rhs)
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}s", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}us", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_to_and_from_core_durations() {
        let d = core::time::Duration::from_nanos(2_500_999);
        assert_eq!(Duration::from(d), Duration::from_micros(2_500));
        assert_eq!(
            core::time::Duration::from(Duration::from_millis(7)),
            core::time::Duration::from_millis(7)
        );
        assert_eq!(Instant::from(d), Instant::from_micros(2_500));
        assert_eq!(
            core::time::Duration::from(Instant::from_millis(3_000)),
            core::time::Duration::from_secs(3)
        );
        assert_eq!(
            Duration::from(core::time::Duration::MAX),
            Duration::from_micros(u64::MAX)
        );
    }

    #[test]
    fn arithmetic_saturates() {
        let t = Instant::from_millis(5);
        assert_eq!(t + Duration::from_micros(10), Instant::from_micros(5_010));
        assert_eq!(Instant::ZERO - t, Duration::ZERO);
        assert_eq!(t - Instant::ZERO, Duration::from_millis(5));
        assert_eq!(
            Instant::from_micros(u64::MAX) + Duration::from_secs(1),
            Instant::from_micros(u64::MAX)
        );
        assert_eq!(
            Duration::from_millis(3).doubled_up_to(Duration::from_millis(5)),
            Duration::from_millis(5)
        );
    }
}

//! Pacing: a sender that may put a whole multi-megabyte update on the wire at once (it
//! bursts an update, then waits for the ACK) is held to a rate instead, so a switch
//! port or a receiver's socket buffer that several in-neighbours share is not flooded
//! faster than it drains. A token bucket, time as an argument (sans-IO, like the core):
//! the runtime asks [`Pacer::admit`] before each send and waits until the instant it
//! names when the bucket is empty.
//!
//! Off by default: on one machine, or a network whose links are faster than the hosts,
//! nothing is gained by waiting. `asap node --pace MBIT` turns it on.

use std::time::{Duration, Instant};

/// A token bucket of `rate` bytes a second holding at most `burst` bytes.
#[derive(Clone, Copy, Debug)]
pub struct Pacer {
    rate: f64,
    burst: f64,
    /// Bytes that may go now; negative after a send larger than what was left (the
    /// next send waits until it is paid off).
    tokens: f64,
    at: Instant,
}

impl Pacer {
    /// A full bucket at `now`: `rate` bytes a second (> 0), bursts of `burst` bytes (a
    /// batch of datagrams, say).
    pub fn new(rate: u64, burst: usize, now: Instant) -> Self {
        Pacer {
            rate: rate.max(1) as f64,
            burst: burst.max(1) as f64,
            tokens: burst.max(1) as f64,
            at: now,
        }
    }

    /// Whether `bytes` may be sent at `now`: `Ok` (and they are counted), or the instant
    /// from which they may.
    pub fn admit(&mut self, now: Instant, bytes: usize) -> Result<(), Instant> {
        self.refill(now);
        if self.tokens < 0.0 {
            // At least a microsecond: a caller that waits until then makes progress.
            let wait = Duration::from_secs_f64(-self.tokens / self.rate).max(Duration::from_micros(1));
            return Err(now + wait);
        }
        // A send larger than what is left goes whole, and the debt delays the next.
        self.tokens -= bytes as f64;
        Ok(())
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = self.at.max(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_goes_at_once_then_the_rate_holds() {
        let t0 = Instant::now();
        // 1 MB/s, bursts of 64 KiB.
        let mut p = Pacer::new(1_000_000, 65_536, t0);
        assert_eq!(p.admit(t0, 60_000), Ok(()));
        assert_eq!(p.admit(t0, 60_000), Ok(()), "what is left goes, in debt");
        let wait = p.admit(t0, 1).unwrap_err() - t0;
        // 65,536 - 120,000 = -54,464 bytes: 54.464 ms at 1 MB/s.
        assert!((wait.as_secs_f64() - 0.054_464).abs() < 1e-6, "{wait:?}");
        assert!(p.admit(t0 + wait - Duration::from_micros(10), 1).is_err());
        assert_eq!(p.admit(t0 + wait + Duration::from_micros(10), 1_000), Ok(()));
    }

    #[test]
    fn a_long_pause_refills_no_more_than_the_burst() {
        let t0 = Instant::now();
        let mut p = Pacer::new(1_000_000, 10_000, t0);
        let later = t0 + Duration::from_secs(60);
        assert_eq!(p.admit(later, 10_000), Ok(()));
        assert_eq!(p.admit(later, 1), Ok(()), "an empty bucket still sends, in debt");
        assert!(p.admit(later, 1).is_err(), "a minute idle earns one burst, not 60 MB");
    }

    #[test]
    fn over_a_second_it_sends_the_rate() {
        let t0 = Instant::now();
        let mut p = Pacer::new(1_000_000, 14_000, t0);
        let (mut now, mut sent) = (t0, 0u64);
        while now < t0 + Duration::from_secs(1) {
            match p.admit(now, 1_400) {
                Ok(()) => sent += 1_400,
                Err(at) => now = at,
            }
        }
        // The rate, plus the first burst.
        assert!((1_000_000..=1_016_800).contains(&sent), "{sent}");
    }
}

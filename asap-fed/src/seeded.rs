//! Seeded starting replicas for checks: rank `r` of a cluster starts from
//! `Replica::new(seed, r)`, so every participant — a server process, a board, a test —
//! can compute the exact mean the cluster must converge to without exchanging data.
//! `asap node --workload average` (asap-cli), the cluster tests and the board firmwares
//! use it.
//!
//! The stream is SplitMix64 on a per-rank state, whose `k`-th state is the start plus
//! `k` golden-ratio increments: any value can be computed directly ([`value`]), so the
//! mean needs no buffer, which matters on a board.

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

const fn start(seed: u64, rank: u32) -> u64 {
    seed ^ ((rank as u64) << 32) ^ 0x5eed
}

/// SplitMix64's output function, scaled to [-1, 1).
const fn mix(state: u64) -> f32 {
    let mut z = state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

/// Value `index` of rank `rank`'s replica.
pub const fn value(seed: u64, rank: u32, index: u64) -> f32 {
    mix(start(seed, rank).wrapping_add(index.wrapping_add(1).wrapping_mul(GOLDEN)))
}

/// Rank `rank`'s replica as an endless stream of values uniform in [-1, 1).
#[derive(Clone, Debug)]
pub struct Replica(u64);

impl Replica {
    /// The stream of rank `rank`.
    pub const fn new(seed: u64, rank: u32) -> Self {
        Replica(start(seed, rank))
    }
}

impl Iterator for Replica {
    type Item = f32;

    fn next(&mut self) -> Option<f32> {
        self.0 = self.0.wrapping_add(GOLDEN);
        Some(mix(self.0))
    }
}

/// The largest distance of `values` from the exact mean, value by value, of the
/// replicas of ranks `0..world`.
pub fn max_error_to_mean(values: &[f32], seed: u64, world: u32) -> f64 {
    max_error_to_mean_of(values, seed, 0..world)
}

/// The largest distance of `values` from the exact mean, value by value, of the
/// replicas of `ranks` (a cluster's founders, when a member joined it later).
pub fn max_error_to_mean_of(values: &[f32], seed: u64, ranks: core::ops::Range<u32>) -> f64 {
    let n = f64::from(ranks.len().max(1) as u32);
    let mut worst = 0.0f64;
    for (k, &v) in values.iter().enumerate() {
        let sum: f64 = ranks.clone().map(|r| f64::from(value(seed, r, k as u64))).sum();
        worst = worst.max((f64::from(v) - sum / n).abs());
    }
    worst
}

/// Rank `rank`'s first `len` values: what `asap node --workload average` starts from.
#[cfg(feature = "std")]
pub fn vector(seed: u64, rank: u32, len: usize) -> std::vec::Vec<f32> {
    Replica::new(seed, rank).take(len).collect()
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    #[test]
    fn streams_are_uniform_in_range_differ_by_rank_and_match_direct_values() {
        let a: Vec<f32> = Replica::new(1, 0).take(1000).collect();
        let b: Vec<f32> = Replica::new(1, 1).take(1000).collect();
        assert!(a.iter().all(|v| (-1.0..1.0).contains(v)));
        assert_ne!(a, b);
        let mean = a.iter().map(|&v| f64::from(v)).sum::<f64>() / 1000.0;
        assert!(mean.abs() < 0.1, "{mean}");
        for (k, &v) in b.iter().enumerate() {
            assert_eq!(value(1, 1, k as u64).to_bits(), v.to_bits());
        }
    }

    #[test]
    fn the_mean_itself_has_no_error_and_a_replica_has_some() {
        let (seed, world) = (7, 4u32);
        let mut mean = [0.0f32; 64];
        for r in 0..world {
            for (m, v) in mean.iter_mut().zip(Replica::new(seed, r)) {
                *m += v / world as f32;
            }
        }
        assert!(max_error_to_mean(&mean, seed, world) < 1e-6);
        let own: Vec<f32> = Replica::new(seed, 0).take(64).collect();
        assert!(max_error_to_mean(&own, seed, world) > 0.1);
    }
}

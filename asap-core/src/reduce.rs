//! The reduce kernels: fold a received chunk into the accumulator, mix the accumulator
//! into the replica.
//!
//! They are written as straight loops over slices of equal length so the compiler
//! vectorises them (see the `ratios` bench for how they compare to `memcpy`). Values
//! arrive as little-endian bytes and are read four at a time, never cast.
//!
//! A chunk of the accumulator is live only while its received weight is non-zero. The
//! first update to reach a chunk in a round therefore *initialises* it
//! ([`init_le`]: one fused pass that scales, stores and checks, like a `memcpy`), and
//! later ones *fold* into it ([`fold_le`]: check, then add). Mixing reads the
//! accumulator only where weight arrived and never has to clear it.
//!
//! Non-finite values never reach a replica: a chunk holding a NaN or an infinity is
//! refused whole, and the accumulator's live contents are never changed by it.

use core::fmt;

/// Why a chunk was not folded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FoldError {
    /// The chunk holds a NaN or an infinity.
    NonFinite,
    /// The chunk and the accumulator slice differ in length.
    LengthMismatch,
}

impl fmt::Display for FoldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FoldError::NonFinite => f.write_str("update holds a non-finite value"),
            FoldError::LengthMismatch => f.write_str("update chunk length does not match the model"),
        }
    }
}

impl core::error::Error for FoldError {}

const EXPONENT: u32 = 0x7f80_0000;

/// `true` when every little-endian `f32` in `values` is finite.
///
/// Branch-free: adding one exponent step to the exponent bits carries into the sign bit
/// exactly when the exponent is all ones (NaN or infinity).
pub fn all_finite_le(values: &[[u8; 4]]) -> bool {
    let carry = values.iter().fold(0u32, |acc, b| {
        acc | (u32::from_le_bytes(*b) & EXPONENT).wrapping_add(0x0080_0000)
    });
    carry & 0x8000_0000 == 0
}

/// `true` when every value is finite.
pub fn all_finite(values: &[f32]) -> bool {
    let carry = values
        .iter()
        .fold(0u32, |acc, x| acc | (x.to_bits() & EXPONENT).wrapping_add(0x0080_0000));
    carry & 0x8000_0000 == 0
}

/// `dst = src` in one pass that also checks the values: `true` when every one is
/// finite (`dst` holds the copy either way).
pub fn copy_finite(dst: &mut [f32], src: &[f32]) -> bool {
    let carry = dst.iter_mut().zip(src).fold(0u32, |acc, (d, s)| {
        *d = *s;
        acc | (s.to_bits() & EXPONENT).wrapping_add(0x0080_0000)
    });
    carry & 0x8000_0000 == 0
}

/// `true` when every `x[i] − p[i]` is finite (computed as the caller computes it).
pub(crate) fn all_finite_differences(x: &[f32], p: &[f32]) -> bool {
    let carry = x.iter().zip(p).fold(0u32, |acc, (x, p)| {
        acc | ((x - p).to_bits() & EXPONENT).wrapping_add(0x0080_0000)
    });
    carry & 0x8000_0000 == 0
}

/// `acc[i] = weight * values[i]`: the first update into a chunk that holds no weight
/// yet. Checks and stores in one pass; on error the slice holds garbage, which is fine
/// because a chunk without weight is never read.
pub fn init_le(acc: &mut [f32], weight: f32, values: &[[u8; 4]]) -> Result<(), FoldError> {
    if acc.len() != values.len() {
        return Err(FoldError::LengthMismatch);
    }
    let mut carry = 0u32;
    for (a, b) in acc.iter_mut().zip(values) {
        let bits = u32::from_le_bytes(*b);
        carry |= (bits & EXPONENT).wrapping_add(0x0080_0000);
        *a = weight * f32::from_bits(bits);
    }
    if carry & 0x8000_0000 == 0 {
        Ok(())
    } else {
        Err(FoldError::NonFinite)
    }
}

/// `acc[i] += weight * values[i]`, after checking every value is finite. On error the
/// accumulator is unchanged (it holds other neighbours' values, so it cannot be
/// rebuilt: the check must come first).
pub fn fold_le(acc: &mut [f32], weight: f32, values: &[[u8; 4]]) -> Result<(), FoldError> {
    if acc.len() != values.len() {
        return Err(FoldError::LengthMismatch);
    }
    if !all_finite_le(values) {
        return Err(FoldError::NonFinite);
    }
    for (a, b) in acc.iter_mut().zip(values) {
        *a += weight * f32::from_le_bytes(*b);
    }
    Ok(())
}

/// Scalar reference for [`fold_le`] over already-decoded values (tests compare the two).
pub fn fold(acc: &mut [f32], weight: f32, values: &[f32]) -> Result<(), FoldError> {
    if acc.len() != values.len() {
        return Err(FoldError::LengthMismatch);
    }
    if !all_finite(values) {
        return Err(FoldError::NonFinite);
    }
    for (a, x) in acc.iter_mut().zip(values) {
        *a += weight * x;
    }
    Ok(())
}

/// The factor `s` in `[0, 1]` that brings an incoming chunk `u` (little-endian) within
/// `limit` of the local chunk `x`: 1 if `‖u − x‖ ≤ limit(‖x‖)`, else `limit / ‖u − x‖`
/// (the clipped chunk is `x + s·(u − x)`). Lengths must match; non-finite input yields 1
/// and is refused by the fold that follows.
pub fn clip_factor(values: &[[u8; 4]], x: &[f32], limit: impl Fn(f64) -> f64) -> f32 {
    let (mut d2, mut x2) = (0.0f64, 0.0f64);
    for (b, &xi) in values.iter().zip(x) {
        let d = f64::from(f32::from_le_bytes(*b)) - f64::from(xi);
        d2 += d * d;
        x2 += f64::from(xi) * f64::from(xi);
    }
    let (distance, bound) = (libm::sqrt(d2), limit(libm::sqrt(x2)));
    // NaN (a non-finite input) falls through to 1: the fold refuses it.
    if distance.is_finite() && distance > bound {
        (bound / distance) as f32
    } else {
        1.0
    }
}

/// Mixes one chunk into the replica: `params[i] += acc[i] - received_weight * snapshot[i]`.
///
/// With `snapshot` the replica as it was sent and `acc` the weighted sum of the
/// neighbours' updates, this is the stochastic-reduce step `x ← w_self·x + Σ w_j·x_j`
/// where `w_self = 1 - received_weight`, applied as a correction so that local steps the
/// application took since the snapshot are kept. A chunk that received nothing is left
/// alone (its accumulator is not read).
pub fn mix_chunk(params: &mut [f32], snapshot: &[f32], acc: &[f32], received_weight: f32) -> Result<(), FoldError> {
    if received_weight == 0.0 {
        return Ok(());
    }
    let mixed = |p: f32, s: f32, a: f32| p + (a - received_weight * s);
    commit_if_finite(params, snapshot, acc, mixed)
}

/// Applies `f(p, s, a)` to every element only if every result is finite (finite inputs
/// can still overflow): a chunk that would not be is left alone.
fn commit_if_finite(
    params: &mut [f32],
    snapshot: &[f32],
    acc: &[f32],
    f: impl Fn(f32, f32, f32) -> f32,
) -> Result<(), FoldError> {
    let carry = params.iter().zip(snapshot).zip(acc).fold(0u32, |c, ((p, s), a)| {
        c | (f(*p, *s, *a).to_bits() & EXPONENT).wrapping_add(0x0080_0000)
    });
    if carry & 0x8000_0000 != 0 {
        return Err(FoldError::NonFinite);
    }
    for ((p, s), a) in params.iter_mut().zip(snapshot).zip(acc) {
        *p = f(*p, *s, *a);
    }
    Ok(())
}

/// Push-sum mix of one chunk: the new replica is the mass-weighted average
/// `(kept·s + acc) / (kept + received)`, applied as a correction like [`mix_chunk`].
/// `kept` is the mass the node kept, `received` the mass folded into this chunk.
pub fn mix_chunk_normalised(
    params: &mut [f32],
    snapshot: &[f32],
    acc: &[f32],
    kept: f32,
    received: f32,
) -> Result<(), FoldError> {
    if received == 0.0 {
        return Ok(());
    }
    // `(kept·s + acc) / total − s`, as `(acc − received·s) / total`: the difference
    // first, so a chunk whose neighbours differ by a few ulps still moves (dividing the
    // whole sum and subtracting `s` after rounds such a step away, and replicas stall
    // apart by tens of ulps on a poorly mixing graph).
    let total = kept + received;
    commit_if_finite(params, snapshot, acc, |p, s, a| p + (a - received * s) / total)
}

/// The compressed mode's mix, `p + γ·(hi + lo)` with `hi + lo` the disagreement between
/// the in-neighbours' public copies and this node's (a compensated sum, [`add_two`]);
/// only if every result is finite (else the chunk is left alone).
pub fn mix_public(params: &mut [f32], hi: &[f32], lo: &[f32], gamma: f32) -> Result<(), FoldError> {
    commit_if_finite(params, hi, lo, |p, h, l| p + gamma * (h + l))
}

/// `hi + lo += v` without losing what `hi + v` rounds away: Knuth's TwoSum keeps the
/// rounding error in `lo`. A running sum kept this way does not drift with the
/// rounding of its early, large terms — which in the compressed mode would move every
/// replica by the same small amount every round, forever.
#[inline]
pub fn add_two(hi: &mut f32, lo: &mut f32, v: f32) {
    let s = *hi + v;
    let b = s - *hi;
    let err = (*hi - (s - b)) + (v - b);
    *hi = s;
    *lo += err;
}

/// Writes `values` as little-endian bytes into `out` (which must be 4× as long; extra
/// bytes are left alone).
pub fn write_f32_le(values: &[f32], out: &mut [u8]) {
    let (groups, _) = out.as_chunks_mut::<4>();
    for (g, v) in groups.iter_mut().zip(values) {
        *g = v.to_le_bytes();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn le(values: &[f32]) -> heapless::Vec<[u8; 4], 64> {
        values.iter().map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn finite_check_catches_every_special_value() {
        for bad in [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::from_bits(0x7fc0_0001),
            f32::from_bits(0xff80_0001),
        ] {
            assert!(!all_finite(&[1.0, bad, 2.0]));
            assert!(!all_finite_le(&le(&[1.0, bad, 2.0])));
            let mut copy = [0.0f32; 3];
            assert!(!copy_finite(&mut copy, &[1.0, bad, 2.0]));
            assert_eq!(copy[1].to_bits(), bad.to_bits(), "copied as it was checked");
            assert!(!all_finite_differences(&[1.0, bad], &[0.0, 0.0]));
        }
        assert!(!all_finite_differences(&[f32::MAX], &[f32::MIN]), "overflows");
        for good in [
            0.0,
            -0.0,
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            f32::from_bits(1),
            1e-40,
        ] {
            assert!(all_finite(&[good]));
            assert!(all_finite_le(&le(&[good])));
            let mut copy = [7.0f32];
            assert!(copy_finite(&mut copy, &[good]));
            assert_eq!(copy[0].to_bits(), good.to_bits());
            assert!(all_finite_differences(&[good], &[0.0]));
        }
    }

    #[test]
    fn rejected_fold_leaves_accumulator_untouched() {
        let mut acc = [1.0f32; 3];
        assert_eq!(
            fold_le(&mut acc, 0.5, &le(&[1.0, f32::NAN, 1.0])),
            Err(FoldError::NonFinite)
        );
        assert_eq!(acc, [1.0; 3]);
        assert_eq!(fold_le(&mut acc, 0.5, &le(&[1.0])), Err(FoldError::LengthMismatch));
    }

    #[test]
    fn mix_applies_the_correction() {
        let mut params = [10.0f32, 20.0];
        let snapshot = [8.0f32, 20.0];
        let acc = [0.5 * 4.0, 0.5 * 6.0];
        mix_chunk(&mut params, &snapshot, &acc, 0.5).unwrap();
        // x_new = x + (0.5*s + acc) - s: local progress (10 - 8) is kept.
        assert_eq!(params, [10.0 + 0.5 * 4.0 - 4.0, 20.0 + 3.0 - 10.0]);
        // Without weight the accumulator is garbage and must not be read.
        mix_chunk(&mut params, &snapshot, &[f32::NAN; 2], 0.0).unwrap();
        assert_eq!(params, [8.0, 13.0]);
        // A result that overflows leaves the chunk alone.
        assert_eq!(
            mix_chunk(&mut params, &[-f32::MAX; 2], &[f32::MAX; 2], 1.0),
            Err(FoldError::NonFinite)
        );
        assert_eq!(params, [8.0, 13.0]);
    }

    #[test]
    fn init_scales_and_refuses_non_finite() {
        let mut acc = [f32::NAN; 3];
        assert_eq!(init_le(&mut acc, 0.5, &le(&[2.0, -4.0, 1.0])), Ok(()));
        assert_eq!(acc, [1.0, -2.0, 0.5]);
        assert_eq!(
            init_le(&mut acc, 0.5, &le(&[1.0, f32::INFINITY, 1.0])),
            Err(FoldError::NonFinite)
        );
        assert_eq!(init_le(&mut acc, 0.5, &le(&[1.0])), Err(FoldError::LengthMismatch));
    }

    proptest! {
        /// The byte kernel and the scalar reference agree bit for bit.
        #[test]
        fn byte_kernel_matches_reference(values in proptest::collection::vec(any::<f32>(), 0..64), w in 0.0f32..1.0) {
            let mut fast = [0.25f32; 64];
            let mut slow = [0.25f32; 64];
            let n = values.len();
            let a = fold_le(&mut fast[..n], w, &le(&values));
            let b = fold(&mut slow[..n], w, &values);
            prop_assert_eq!(a, b);
            // Initialising equals folding into zeros.
            let mut init = [f32::NAN; 64];
            let mut zeros = [0.0f32; 64];
            let c = init_le(&mut init[..n], w, &le(&values));
            prop_assert_eq!(c, fold(&mut zeros[..n], w, &values));
            if c.is_ok() {
                // Equal as numbers (0 + -0 is +0, so the bits of zeros may differ).
                prop_assert_eq!(&init[..n], &zeros[..n]);
            }
            prop_assert_eq!(a.is_ok(), values.iter().all(|v| v.is_finite()));
            for (x, y) in fast.iter().zip(&slow) {
                prop_assert_eq!(x.to_bits(), y.to_bits());
            }
        }
    }
}

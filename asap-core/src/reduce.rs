//! The reduce kernels: fold a received chunk into the accumulator, mix the accumulator
//! into the replica.
//!
//! They are written as straight loops over slices of equal length so the compiler
//! vectorises them (see the `reduce` bench for how they compare to `memcpy`). Values
//! arrive as little-endian bytes and are read four at a time, never cast.
//!
//! Non-finite values never reach a replica: [`fold_le`] checks the whole chunk first and
//! leaves the accumulator untouched when any value is NaN or infinite.

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

/// `acc[i] += weight * values[i]`, after checking every value is finite. On error the
/// accumulator is unchanged.
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

/// Mixes one chunk into the replica and clears the accumulator for the next round:
/// `params[i] += acc[i] - received_weight * snapshot[i]; acc[i] = 0`.
///
/// With `snapshot` the replica as it was sent and `acc` the weighted sum of the
/// neighbours' updates, this is the stochastic-reduce step `x ← w_self·x + Σ w_j·x_j`
/// where `w_self = 1 - received_weight`, applied as a correction so that local steps the
/// application took since the snapshot are kept.
pub fn mix_chunk(params: &mut [f32], snapshot: &[f32], acc: &mut [f32], received_weight: f32) {
    for ((p, s), a) in params.iter_mut().zip(snapshot).zip(acc.iter_mut()) {
        *p += *a - received_weight * *s;
        *a = 0.0;
    }
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
        }
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
    fn mix_applies_the_correction_and_clears() {
        let mut params = [10.0f32, 20.0];
        let snapshot = [8.0f32, 20.0];
        let mut acc = [0.5 * 4.0, 0.5 * 6.0];
        mix_chunk(&mut params, &snapshot, &mut acc, 0.5);
        // x_new = x + (0.5*s + acc) - s: local progress (10 - 8) is kept.
        assert_eq!(params, [10.0 + 0.5 * 4.0 - 4.0, 20.0 + 3.0 - 10.0]);
        assert_eq!(acc, [0.0, 0.0]);
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
            prop_assert_eq!(a.is_ok(), values.iter().all(|v| v.is_finite()));
            for (x, y) in fast.iter().zip(&slow) {
                prop_assert_eq!(x.to_bits(), y.to_bits());
            }
        }
    }
}

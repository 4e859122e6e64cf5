//! `reduce`: the kernels on arbitrary `f32` bit patterns (NaN, infinities, subnormals)
//! and on slices of equal or unequal lengths.
//!
//! * `fold_le`: `Ok` exactly when the lengths match and every value is finite; then
//!   `acc[i] + weight·v[i]`, correctly rounded, and finite whenever it cannot overflow
//!   (finite acc, |weight| ≤ 1, |acc|, |v| ≤ f32::MAX / 2); on `Err` the accumulator
//!   is unchanged, bit for bit.
//! * `init_le`: the same `Ok` condition; then `weight·v[i]`, finite when the weight is
//!   finite with |weight| ≤ 1; on a length mismatch the accumulator is unchanged.
//! * `mix_chunk` / `mix_chunk_normalised`: on `Ok` every value written is finite and is
//!   the documented formula; on `Err` nothing changed.
//! * `all_finite` / `all_finite_le` agree with `f32::is_finite`.

use arbitrary::{Arbitrary, Unstructured};
use asap_core::reduce::{self, FoldError};

/// Fuzzed operands.
#[derive(Arbitrary, Debug)]
pub struct Input {
    /// Cut every slice to the shortest length first.
    same_len: bool,
    acc: Vec<f32>,
    values: Vec<f32>,
    weight: f32,
    params: Vec<f32>,
    snapshot: Vec<f32>,
    received: f32,
    kept: f32,
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The target body.
pub fn run(data: &[u8]) {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    check(input);
}

/// Runs every kernel on the operands.
pub fn check(mut input: Input) {
    if input.same_len {
        let n = input
            .acc
            .len()
            .min(input.values.len())
            .min(input.params.len())
            .min(input.snapshot.len());
        input.acc.truncate(n);
        input.values.truncate(n);
        input.params.truncate(n);
        input.snapshot.truncate(n);
    }
    let Input {
        acc,
        values,
        weight: w,
        params,
        snapshot,
        received,
        kept,
        ..
    } = input;
    let le: Vec<[u8; 4]> = values.iter().map(|v| v.to_le_bytes()).collect();
    let all_finite = values.iter().all(|v| v.is_finite());
    assert_eq!(reduce::all_finite(&values), all_finite);
    assert_eq!(reduce::all_finite_le(&le), all_finite);
    let expected_err = if acc.len() != values.len() {
        Some(FoldError::LengthMismatch)
    } else if !all_finite {
        Some(FoldError::NonFinite)
    } else {
        None
    };

    // fold_le
    let mut folded = acc.clone();
    let result = reduce::fold_le(&mut folded, w, &le);
    assert_eq!(result.err(), expected_err, "fold_le({acc:?}, {w}, {values:?})");
    assert_eq!(
        result,
        reduce::fold(&mut acc.clone(), w, &values),
        "fold_le and fold disagree"
    );
    if result.is_err() {
        assert_eq!(bits(&folded), bits(&acc), "a refused fold changed the accumulator");
    } else {
        for ((&a, &v), &r) in acc.iter().zip(&values).zip(&folded) {
            let product = w * v;
            // One f32 addition, correctly rounded: exact in f64, then rounded once.
            let sum = (f64::from(a) + f64::from(product)) as f32;
            assert!(
                r.to_bits() == sum.to_bits() || (r.is_nan() && sum.is_nan()),
                "fold: {a} + {w}·{v} = {r}, expected {sum}"
            );
            let tame = a.is_finite() && w.abs() <= 1.0 && a.abs() <= f32::MAX / 2.0 && v.abs() <= f32::MAX / 2.0;
            if tame {
                assert!(r.is_finite(), "fold of finite values without overflow gave {r}");
            }
        }
    }

    // init_le
    let mut init = acc.clone();
    let result = reduce::init_le(&mut init, w, &le);
    assert_eq!(result.err(), expected_err, "init_le({w}, {values:?})");
    match result {
        Ok(()) => {
            for ((&v, &r), i) in values.iter().zip(&init).zip(0..) {
                let p = w * v;
                assert!(r.to_bits() == p.to_bits() || (r.is_nan() && p.is_nan()), "init[{i}]");
                if w.is_finite() && w.abs() <= 1.0 {
                    assert!(r.is_finite(), "init of finite values gave {r}");
                }
            }
        }
        Err(FoldError::LengthMismatch) => assert_eq!(bits(&init), bits(&acc)),
        Err(_) => {}
    }

    // mix_chunk over the shortest of the three slices (the kernel zips them).
    let n = params.len().min(snapshot.len()).min(acc.len());
    let mut mixed = params.clone();
    let result = reduce::mix_chunk(&mut mixed, &snapshot, &acc, received);
    check_mix(result, &params, &mixed, n, received == 0.0, |i| {
        params[i] + (acc[i] - received * snapshot[i])
    });

    let mut normalised = params.clone();
    let result = reduce::mix_chunk_normalised(&mut normalised, &snapshot, &acc, kept, received);
    let total = kept + received;
    check_mix(result, &params, &normalised, n, received == 0.0, |i| {
        // `(kept·s + acc) / total − s`, computed as the difference first (see
        // `reduce::mix_chunk_normalised`).
        params[i] + (acc[i] - received * snapshot[i]) / total
    });
}

fn check_mix(
    result: Result<(), FoldError>,
    before: &[f32],
    after: &[f32],
    n: usize,
    nothing_received: bool,
    formula: impl Fn(usize) -> f32,
) {
    assert_eq!(
        bits(&after[n..]),
        bits(&before[n..]),
        "mix wrote past the shortest slice"
    );
    match result {
        Ok(()) if nothing_received => assert_eq!(bits(after), bits(before), "mix without weight changed values"),
        Ok(()) => {
            for (i, v) in after.iter().enumerate().take(n) {
                assert!(v.is_finite(), "mix produced {v} at {i}");
                assert_eq!(v.to_bits(), formula(i).to_bits(), "mix[{i}]");
            }
        }
        Err(e) => {
            assert_eq!(e, FoldError::NonFinite);
            assert_eq!(bits(after), bits(before), "a refused mix changed values");
            assert!((0..n).any(|i| !formula(i).is_finite()), "mix refused finite results");
        }
    }
}

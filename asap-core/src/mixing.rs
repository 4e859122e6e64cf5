//! How received updates change the replica — the layer between the per-edge flow
//! control (`flow`) and the [`Node`](crate::Node) facade:
//!
//! * plain averaging on doubly stochastic weights: chunks are folded into one
//!   accumulator as they arrive ([`fold`], clipped when `Config::clip` asks), and mixed
//!   into the replica when the round finishes ([`mix`]):
//!   `x ← x + Σ_j w_j·x_j − (Σ_j w_j)·snapshot`, chunk by chunk over what arrived;
//! * push-sum on directed, irregular graphs: the same fold, and a [`Mass`] beside the
//!   replica that travels as the updates' weight, so the application's de-biased
//!   `x / y` converges to the average;
//! * the compressed CHOCO mode ([`choco`], cargo feature `compress`).

use crate::config::Clip;
use crate::error::Violation;
use crate::reduce::{self, FoldError};

pub(crate) mod choco;

/// Tolerance on in-neighbour weights adding up to 1 (float rounding of e.g. 3 × 1/3).
pub(crate) const WEIGHT_SLACK: f32 = 1e-4;

/// Largest push-sum weight a frame may carry: masses add up to the node count, at most
/// 65,536.
pub(crate) const MAX_PUSH_SUM_WEIGHT: f32 = 65_536.0;

/// Push-sum masses `y`, one pair a chunk (`Buffers::chunk_mass`): the mass the chunk's
/// values carry now, then its mass when the round's snapshot was taken (what this
/// round's shares are cut from). The replica the application sees is the de-biased
/// `x / y`, chunk by chunk. A mass per chunk, not per node, because asynchronous modes
/// mix an update that arrived in part: its chunks that arrived move their mass, the
/// others do not yet.
pub(crate) struct Masses<'m>(pub(crate) &'m mut [f32]);

impl Masses<'_> {
    /// Every chunk starts with mass 1 (the masses add up to the node count), or 0 for
    /// a node joining a running cluster: it brings no replica of its own.
    pub(crate) fn reset(&mut self, joining: bool) {
        self.0.fill(if joining { 0.0 } else { 1.0 });
    }

    /// Whether every chunk has mass (a joining node received the whole model).
    pub(crate) fn all_positive(&self) -> bool {
        halves(self.0).0.iter().all(|&m| m > 0.0)
    }

    fn split(&mut self) -> (&mut [f32], &mut [f32]) {
        let half = self.0.len() / 2;
        self.0.split_at_mut(half)
    }

    /// A round started: its shares are cut from the masses now.
    pub(crate) fn snapshot(&mut self) {
        let (now, at_snapshot) = self.split();
        at_snapshot.copy_from_slice(now);
    }
}

/// Below this mass a chunk gives nothing away: it keeps its whole mass and sends its
/// values at weight 0 until in-neighbours give it mass again. Push-sum drains mass from
/// nodes no one sends to (a partition can leave a few that only feed the rest); left to
/// halve, their masses would reach subnormal floats, where `w·x` and the normalised mix
/// lose every digit. Keeping is always allowed (a column of weight 1 on the node
/// itself), so the sums stay exact. 2⁻⁶⁴: far below any share that matters, far above
/// the subnormals.
pub(crate) const MASS_FLOOR: f32 = 5.421_011e-20;

/// The share of its mass chunk `c` gives to an out-neighbour whose share is `share`
/// (none below [`MASS_FLOOR`]).
fn giving(at_snapshot: f32, share: f32) -> f32 {
    if at_snapshot < MASS_FLOOR {
        0.0
    } else {
        share
    }
}

/// The masses now and the masses at the snapshot (`Buffers::chunk_mass`'s two halves).
fn halves(masses: &[f32]) -> (&[f32], &[f32]) {
    masses.split_at(masses.len() / 2)
}

/// The weight chunk `c` of an update carries to an out-neighbour whose share is `share`.
pub(crate) fn carried(masses: &[f32], c: usize, share: f32) -> f32 {
    let at = halves(masses).1[c];
    giving(at, share) * at
}

/// Folds `share` of the snapshot (at the snapshot's masses) into the accumulator, as an
/// update from the node itself: a share it set aside to send and could not. Returns
/// the chunks it could not fold without overflowing (their share is lost).
pub(crate) fn take_back(
    accumulator: &mut [f32],
    chunk_weights: &mut [f32],
    snapshot: &[f32],
    masses: &[f32],
    share: f32,
    chunk_len: usize,
) -> u64 {
    let at_snapshot = halves(masses).1;
    let mut lost = 0;
    let parts = accumulator
        .chunks_mut(chunk_len)
        .zip(snapshot.chunks(chunk_len))
        .zip(chunk_weights.iter_mut())
        .zip(at_snapshot);
    for (((acc, s), w), at) in parts {
        let weight = giving(*at, share) * *at;
        if weight == 0.0 {
            continue;
        }
        if *w == 0.0 {
            acc.fill(0.0);
        }
        match reduce::fold(acc, weight, s) {
            Ok(()) => *w += weight,
            Err(_) => lost += 1,
        }
    }
    lost
}

/// The mean of the chunks' masses now (1 when push-sum does not run, or has no drift).
pub(crate) fn mean_mass(masses: &[f32]) -> f64 {
    let now = halves(masses).0;
    if now.is_empty() {
        return 1.0;
    }
    now.iter().map(|&m| f64::from(m)).sum::<f64>() / now.len() as f64
}

/// Folds an f32 chunk `values` of weight `weight` into `acc` (`first`: the chunk's
/// first update this round, which initialises it). With `clip`, a chunk farther from
/// the local one `x` than the bound is pulled in along `u − x` to it: the clipped chunk
/// is `x + s·(u − x)`, so the rest of its weight goes to `x`. Returns whether it was
/// clipped; a refused chunk may have left `acc` partly changed (the update is rejected
/// and the round's mix of that chunk keeps it finite).
pub(crate) fn fold(
    acc: &mut [f32],
    x: &[f32],
    weight: f32,
    values: &[[u8; 4]],
    first: bool,
    clip: Option<Clip>,
) -> Result<bool, Violation> {
    let factor = match clip {
        Some(clip) => reduce::clip_factor(values, x, |norm| clip.bound(norm, x.len())),
        None => 1.0,
    };
    let mut folded = if first {
        reduce::init_le(acc, weight * factor, values)
    } else {
        reduce::fold_le(acc, weight * factor, values)
    };
    let clipped = factor < 1.0;
    if clipped && folded.is_ok() {
        folded = reduce::fold(acc, weight * (1.0 - factor), x);
    }
    match folded {
        Ok(()) => Ok(clipped),
        Err(FoldError::NonFinite) => Err(Violation::NonFinite),
        Err(_) => Err(Violation::ChunkLength),
    }
}

/// Mixes every chunk's accumulated updates into `params` at a round's finish and frees
/// the chunks (zero weight: the next update initialises them). `push_sum`: the share of
/// its own mass the node kept this round, and the chunks' masses; each chunk's mix is
/// normalised by its kept mass plus what it received, which becomes its mass. Returns
/// the chunks left as they were because mixing would have overflowed to infinity
/// (finite updates still can); such a chunk keeps only its own mass.
pub(crate) fn mix(
    params: &mut [f32],
    snapshot: &[f32],
    accumulator: &[f32],
    chunk_weights: &mut [f32],
    chunk_len: usize,
    push_sum: Option<(f32, Masses<'_>)>,
) -> u64 {
    let mut overflowed = 0;
    let parts = params
        .chunks_mut(chunk_len)
        .zip(snapshot.chunks(chunk_len))
        .zip(accumulator.chunks(chunk_len))
        .zip(chunk_weights.iter_mut());
    match push_sum {
        Some((kept_share, mut masses)) => {
            let (now, at_snapshot) = masses.split();
            for ((((p, s), a), w), (mass, at)) in parts.zip(now.iter_mut().zip(at_snapshot.iter())) {
                // A chunk below the floor gave nothing: it keeps it all.
                let kept = if *at < MASS_FLOOR { *at } else { kept_share * *at };
                let mixed = reduce::mix_chunk_normalised(p, s, a, kept, *w);
                overflowed += u64::from(mixed.is_err());
                *mass = if mixed.is_ok() { kept + *w } else { kept };
                *w = 0.0;
            }
        }
        None => {
            for (((p, s), a), w) in parts {
                overflowed += u64::from(reduce::mix_chunk(p, s, a, *w).is_err());
                *w = 0.0;
            }
        }
    }
    overflowed
}

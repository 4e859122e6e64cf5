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

/// Push-sum mass `y` (1 on doubly stochastic graphs, where it is not used): the replica
/// the application sees is the de-biased `x / y`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Mass {
    /// The mass now.
    pub(crate) value: f64,
    /// The mass when the snapshot was taken (what this round's shares are cut from).
    at_snapshot: f64,
}

impl Mass {
    pub(crate) const ONE: Mass = Mass {
        value: 1.0,
        at_snapshot: 1.0,
    };

    /// A round started: its shares are cut from the mass now.
    pub(crate) fn snapshot(&mut self) {
        self.at_snapshot = self.value;
    }

    /// The weight an update carries to an out-neighbour whose share is `share`.
    pub(crate) fn carried(&self, share: f32) -> f32 {
        (f64::from(share) * self.at_snapshot) as f32
    }

    /// The mass this node keeps of its own when its share is `self_share`.
    pub(crate) fn kept(&self, self_share: f64) -> f32 {
        (self_share * self.at_snapshot) as f32
    }

    /// The round finished: the kept share plus what the in-neighbours sent.
    pub(crate) fn mix(&mut self, self_share: f64, received: f64) {
        self.value = self_share * self.at_snapshot + received;
    }
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
/// the chunks (zero weight: the next update initialises them). `kept`: push-sum's own
/// mass, which normalises the mix. Returns the chunks left as they were because mixing
/// would have overflowed to infinity (finite updates still can).
pub(crate) fn mix(
    params: &mut [f32],
    snapshot: &[f32],
    accumulator: &[f32],
    chunk_weights: &mut [f32],
    chunk_len: usize,
    kept: Option<f32>,
) -> u64 {
    let mut overflowed = 0;
    let parts = params
        .chunks_mut(chunk_len)
        .zip(snapshot.chunks(chunk_len))
        .zip(accumulator.chunks(chunk_len))
        .zip(chunk_weights.iter_mut());
    for (((p, s), a), w) in parts {
        let mixed = match kept {
            Some(kept) => reduce::mix_chunk_normalised(p, s, a, kept, *w),
            None => reduce::mix_chunk(p, s, a, *w),
        };
        overflowed += u64::from(mixed.is_err());
        *w = 0.0;
    }
    overflowed
}

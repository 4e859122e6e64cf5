//! The compressed mode (`Config::compression`, cargo feature `compress`): CHOCO-gossip
//! (Koloskova, Stich and Jaggi, ICML 2019) over NOTIFY-ACK.
//!
//! The node keeps its public copy `x̂` (what its neighbours know of its replica) and the
//! disagreement `t = Σ_j w_j·x̂_j − W·x̂` with its in-neighbours' public copies (`W = Σ_j
//! w_j`) as a compensated pair `t = hi + lo`, in an accumulator of three model lengths
//! (`hi`, `lo`, `x̂`). A round sends `q = Q(x − x̂)` (the snapshot holds it: q8's payload
//! itself, quantised once a round, or `x − x̂` for the other encodings), moves
//! `x̂` by what the receivers decode from it, folds the neighbours' `q` into `t`, and
//! mixes `x ← x + γ·t`: what compression drops stays in `x − x̂` and goes out later, and
//! the average is kept exactly.
//!
//! Epochs (`compression_epoch` rounds, whole periods) reset every public copy to zero at
//! the same round cluster-wide, so a neighbour that went down, restarted or sent a
//! refused chunk ([`Membership::excluded`]) stops counting until the next one. On a
//! time-varying graph (one-peer-exp) the mode runs on the union of a period's graphs,
//! lazily: `q` is computed at the period's start and goes to one partner a round, `t`
//! is mixed at the period's end.
//!
//! Without the feature, [`Choco`] has no values: the mode's code is left out of the
//! build and a configured compression is a configuration error.

#[cfg(feature = "compress")]
use crate::compress::{self, Compression};
#[cfg(feature = "compress")]
use crate::config::Config;
use crate::error::{RoundError, Violation};
#[cfg(feature = "compress")]
use crate::flow::bits;
#[cfg(feature = "compress")]
use crate::reduce;
#[cfg(feature = "compress")]
use crate::topology::Topology;
use crate::wire::Encoding;

/// A compressed node's public copy and its disagreement with its in-neighbours'
/// ([`Node::public_copies`](crate::Node::public_copies)).
#[derive(Clone, Copy, Debug)]
pub struct PublicCopies<'a> {
    /// `x̂`: the replica as the neighbours know it.
    pub public: &'a [f32],
    /// `t = Σ_j w_j·x̂_j − W·x̂`, high part.
    pub hi: &'a [f32],
    /// Low part (`t = hi + lo`).
    pub lo: &'a [f32],
}

/// A neighbour's standing in the current epoch's sums.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Membership {
    /// Its first update of the epoch was folded whole: its weight is in every chunk's
    /// in-weight.
    pub(crate) member: bool,
    /// It went down, restarted or sent a refused chunk this epoch, so its public copy
    /// here can no longer follow its own: its updates are received but not folded
    /// until the next epoch.
    pub(crate) excluded: bool,
    /// The weight its public copy carries in the sum (once a member).
    pub(crate) weight: f32,
}

impl Membership {
    /// Its update of `weight` was consumed whole: unless excluded, its public copy is in
    /// every chunk's sum from now on.
    pub(crate) fn consumed(&mut self, weight: f32) {
        if !self.member && !self.excluded {
            self.member = true;
            self.weight = weight;
        }
    }
}

/// A neighbour whose public copy is in `t` when a round starts: it sees this node's `q`
/// at its weight, so `t` loses `w·q` once for it, computed as it computes it (the sum
/// over the cluster of every `t` then stays 0).
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(feature = "compress"), allow(dead_code))]
pub(crate) struct Sharer {
    /// Its index in the peer table.
    pub(crate) peer: usize,
    pub(crate) weight: f32,
    /// A member is in every chunk; a neighbour whose first update of the epoch began
    /// arriving before this start only in the chunks that arrived (its bitmap says
    /// which: it joined them against the old `x̂`).
    pub(crate) all_chunks: bool,
}

/// The compressed mode's state: the epoch and what the configuration fixes.
#[cfg(feature = "compress")]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Choco {
    compression: Compression,
    chunk_len: usize,
    model: usize,
    /// Rounds after which the schedule repeats (1 for static graphs and peer tables).
    period: u32,
    /// Rounds of an epoch: `compression_epoch` rounded up to whole periods (0: never).
    epoch_len: u32,
    /// The consensus step `γ`.
    step: f32,
    /// The epoch the public copies belong to.
    epoch: u32,
    /// No round started yet in this life.
    fresh: bool,
}

/// The compressed mode, absent from this build (no `compress` feature): no value exists.
#[cfg(not(feature = "compress"))]
#[derive(Clone, Copy, Debug)]
pub(crate) enum Choco {}

#[cfg(feature = "compress")]
impl Choco {
    /// The mode of a compressing configuration on `schedule` (`None`: a peer table).
    pub(crate) fn new(config: &Config, schedule: Option<&Topology>) -> Option<Self> {
        let period = schedule.map_or(1, Topology::period);
        config.is_compressed().then(|| Choco {
            compression: config.compression,
            chunk_len: config.chunk_len(),
            model: config.model_len,
            period,
            epoch_len: config.compression_epoch.div_ceil(period) * period,
            step: config.step(schedule.map(Topology::spectral_gap)),
            epoch: 0,
            fresh: true,
        })
    }

    /// On a time-varying graph, the weight of a union edge: the period's partners and
    /// the node itself share it equally. `None` on a static graph.
    pub(crate) fn union_weight(&self) -> Option<f32> {
        (self.period > 1).then(|| 1.0 / (self.period + 1) as f32)
    }

    /// `x̂` and `t` in the accumulator.
    pub(crate) fn public_copies<'b>(&self, accumulator: &'b [f32]) -> PublicCopies<'b> {
        let (hi, rest) = accumulator.split_at(self.model);
        let (lo, public) = rest.split_at(self.model);
        PublicCopies { public, hi, lo }
    }

    /// The node moved into `round`. Returns `true` when that begins a new epoch: the
    /// public copies and the disagreement are reset here (the caller resets every
    /// [`Membership`]) rather than at the round's start, so that the new epoch's updates
    /// arriving before that start are kept (those of the old one can no longer arrive:
    /// every in-neighbour's update of the last round was consumed, and later ones are
    /// early until now).
    pub(crate) fn enter(&mut self, round: u32, accumulator: &mut [f32], chunk_weights: &mut [f32]) -> bool {
        let epoch = round.checked_div(self.epoch_len).unwrap_or(0);
        if epoch == self.epoch {
            return false;
        }
        self.epoch = epoch;
        accumulator.fill(0.0);
        chunk_weights.fill(0.0);
        true
    }

    /// The first round of this life starts at `round`. Returns `true` when that is in
    /// the middle of an epoch (the node restarted, or joined late): it knows no
    /// neighbour's public copy, and the caller excludes every neighbour until the next.
    pub(crate) fn begins_mid_epoch(&mut self, round: u32) -> bool {
        let mid = self.fresh && round != self.epoch * self.epoch_len;
        self.fresh = false;
        mid
    }

    /// Whether `round`, on a time-varying graph, sends the period's `q` (already in the
    /// snapshot) as it is, to this round's partner.
    pub(crate) fn reuses_q(&self, round: u32) -> bool {
        self.union_weight().is_some() && !round.is_multiple_of(self.period)
    }

    /// A round starts from `params`: the snapshot takes this round's `q = Q(x − x̂)`
    /// and `x̂` moves by what the receivers will decode from it, `t` losing `w·q` for
    /// every sharer — checked for every chunk before anything but the snapshot changes.
    ///
    /// Each chunk is quantised once: a q8 chunk keeps its payload packed in its own words
    /// of the snapshot ([`compress::packs`]), which every frame, every resend and the move
    /// of `x̂` then read; the other encodings keep `d = x − x̂` there, quantised again
    /// where needed.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        &self,
        params: &[f32],
        snapshot: &mut [f32],
        accumulator: &mut [f32],
        chunk_bits: &[u32],
        words_per_peer: usize,
        sharers: &[Sharer],
    ) -> Result<(), RoundError> {
        let (compression, chunk_len) = (self.compression, self.chunk_len);
        let total: f32 = sharers.iter().map(|s| s.weight).sum();
        let (hi, rest) = accumulator.split_at_mut(self.model);
        let (lo, public) = rest.split_at_mut(self.model);
        // Both sums must stay finite for every value of every chunk.
        let fits = |p: &[f32], t: &[f32], k: usize, q: f32| (p[k] + q).is_finite() && (t[k] - total * q).is_finite();
        let chunks = snapshot
            .chunks_mut(chunk_len)
            .zip(params.chunks(chunk_len))
            .zip(public.chunks(chunk_len))
            .zip(hi.chunks(chunk_len));
        for (((s, x), p), t) in chunks {
            let mut ok = true;
            let finite = if compress::packs(compression, s.len()) {
                compress::q8_pack_difference(x, p, s, |at, q| {
                    // Folded into a local first, so the loop vectorises.
                    let block = q.iter().zip(&p[at..]).zip(&t[at..]);
                    ok &= block.fold(true, |ok, ((q, p), t)| {
                        ok & (p + q).is_finite() & (t - total * q).is_finite()
                    });
                })
            } else {
                for ((d, x), p) in s.iter_mut().zip(x).zip(p) {
                    *d = x - p;
                }
                // One quantisation pass checks both sums (top-k's costs 32 counting
                // passes: it is not done twice).
                let finite = reduce::all_finite(s);
                if finite {
                    compress::for_each_quantized(compression, s, |k, q| ok &= fits(p, t, k, q));
                }
                finite
            };
            if !(finite && ok) {
                return Err(RoundError::NonFiniteParams);
            }
        }
        let bitmap = |peer: usize| &chunk_bits[peer * words_per_peer..(peer + 1) * words_per_peer];
        for (c, s) in snapshot.chunks(chunk_len).enumerate() {
            let in_chunk = |s: &&Sharer| s.all_chunks || bits::get(bitmap(s.peer), c as u32);
            let base = c * chunk_len;
            if compress::packs(compression, s.len()) {
                compress::q8_unpack(s, s.len(), |at, q| {
                    let r = base + at..base + at + q.len();
                    for (x, q) in public[r.clone()].iter_mut().zip(q) {
                        *x += q;
                    }
                    for s in sharers.iter().filter(in_chunk) {
                        for ((h, l), q) in hi[r.clone()].iter_mut().zip(&mut lo[r.clone()]).zip(q) {
                            reduce::add_two(h, l, -(s.weight * q));
                        }
                    }
                });
            } else {
                compress::for_each_quantized(compression, s, |k, q| {
                    let k = base + k;
                    public[k] += q;
                    for s in sharers.iter().filter(in_chunk) {
                        reduce::add_two(&mut hi[k], &mut lo[k], -(s.weight * q));
                    }
                });
            }
        }
        Ok(())
    }

    /// Writes the payload of the snapshot's chunk `chunk` (as [`start`](Self::start)
    /// left it) into `out`, whose length is the payload's.
    pub(crate) fn write_payload(&self, chunk: &[f32], out: &mut [u8]) {
        if compress::packs(self.compression, chunk.len()) {
            compress::unpack(chunk, out);
        } else {
            // Cannot fail: the snapshot is finite (checked when the round started) and
            // `out` has the payload's length.
            let _ = compress::encode(self.compression, chunk, out);
        }
    }

    /// Folds a neighbour's chunk (`range` of the model, `weight`) into `t`. An excluded
    /// neighbour's chunk is received for flow control only. A neighbour joining the
    /// chunk's sum this epoch (`joins`) brings `w·(x̂_j − x̂)`: its public copy, against
    /// ours of this round.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn fold(
        &self,
        accumulator: &mut [f32],
        range: core::ops::Range<usize>,
        encoding: Encoding,
        payload: &[u8],
        weight: f32,
        excluded: bool,
        joins: bool,
    ) -> Result<(), Violation> {
        if excluded {
            return Ok(());
        }
        let (hi, rest) = accumulator.split_at_mut(self.model);
        let (lo, public) = rest.split_at_mut(self.model);
        let (hi, lo, public) = (&mut hi[range.clone()], &mut lo[range.clone()], &public[range]);
        let folded = compress::for_each_decoded(encoding, payload, hi.len(), |k, v| {
            reduce::add_two(&mut hi[k], &mut lo[k], weight * v);
        });
        match folded {
            Ok(()) => {
                if joins {
                    for ((h, l), x) in hi.iter_mut().zip(lo.iter_mut()).zip(public) {
                        reduce::add_two(h, l, -(weight * x));
                    }
                }
                Ok(())
            }
            Err(compress::CodecError::NonFinite) => Err(Violation::NonFinite),
            Err(_) => Err(Violation::ChunkLength),
        }
    }

    /// The round `round` finishes: `x ← x + γ·t` chunk by chunk (on a time-varying
    /// graph, at the end of a period only). Returns the chunks left as they were
    /// because mixing would have overflowed.
    pub(crate) fn finish(&self, round: u32, params: &mut [f32], accumulator: &[f32]) -> u64 {
        if self.union_weight().is_some() && !round.wrapping_add(1).is_multiple_of(self.period) {
            return 0;
        }
        let (hi, rest) = accumulator.split_at(self.model);
        let lo = &rest[..self.model];
        let parts = params
            .chunks_mut(self.chunk_len)
            .zip(hi.chunks(self.chunk_len))
            .zip(lo.chunks(self.chunk_len));
        let mut overflowed = 0;
        for ((p, h), l) in parts {
            overflowed += u64::from(reduce::mix_public(p, h, l, self.step).is_err());
        }
        overflowed
    }
}

/// Without the `compress` feature no [`Choco`] exists: every method is unreachable, and
/// the code that calls it is left out of the build.
#[cfg(not(feature = "compress"))]
#[allow(clippy::too_many_arguments, missing_docs)]
impl Choco {
    pub(crate) fn new(_: &crate::config::Config, _: Option<&crate::topology::Topology>) -> Option<Self> {
        None
    }
    pub(crate) fn union_weight(&self) -> Option<f32> {
        match *self {}
    }
    pub(crate) fn public_copies<'b>(&self, _: &'b [f32]) -> PublicCopies<'b> {
        match *self {}
    }
    pub(crate) fn enter(&mut self, _: u32, _: &mut [f32], _: &mut [f32]) -> bool {
        match *self {}
    }
    pub(crate) fn begins_mid_epoch(&mut self, _: u32) -> bool {
        match *self {}
    }
    pub(crate) fn reuses_q(&self, _: u32) -> bool {
        match *self {}
    }
    pub(crate) fn start(
        &self,
        _: &[f32],
        _: &mut [f32],
        _: &mut [f32],
        _: &[u32],
        _: usize,
        _: &[Sharer],
    ) -> Result<(), RoundError> {
        match *self {}
    }
    pub(crate) fn write_payload(&self, _: &[f32], _: &mut [u8]) {
        match *self {}
    }
    pub(crate) fn fold(
        &self,
        _: &mut [f32],
        _: core::ops::Range<usize>,
        _: Encoding,
        _: &[u8],
        _: f32,
        _: bool,
        _: bool,
    ) -> Result<(), Violation> {
        match *self {}
    }
    pub(crate) fn finish(&self, _: u32, _: &mut [f32], _: &[f32]) -> u64 {
        match *self {}
    }
}

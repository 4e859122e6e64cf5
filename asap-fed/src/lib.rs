//! The training workloads of ASAP clusters, in one home that the `asap` command, the
//! firmwares and the simulator (its logistic workload is the dense problem) share:
//!
//! * dense, `no_std`, no alloc (always built): a federated-learning problem every member
//!   of a cluster, board or server, can build from a seed — this crate root;
//! * sparse, std (feature `std`): logistic regression on sparse rows from a seeded
//!   RCV1-shaped dataset or a LIBSVM file, what servers train (module `sparse`).
//!
//! The default build stays `no_std` without an allocator, so a firmware's dependency on
//! this crate never pulls in std.
//!
//! # The dense problem
//!
//! Binary logistic regression on dense features, one shard per rank, the shards
//! differing in distribution as edge data does, and a held-out test set.
//!
//! No member stores data. Sample `index` of rank `rank` is a pure function of
//! `(seed, rank, index)`, produced feature by feature from a counter-based hash, so a
//! board with a few KiB of RAM trains on its shard and evaluates on the test set with no
//! buffer beyond the model itself.
//!
//! ## The data
//!
//! Feature 0 is a constant 1 (the bias). The other `d = features − 1` features of a
//! sample of class `y ∈ {0, 1}` drawn by rank `r` are
//!
//! ```text
//! x_i = (±separation · μ_i + shift · s_{r,i}) / √d + n_i        (+ for y = 1, − for y = 0)
//! ```
//!
//! where `μ_i = ±1` is the hidden class direction (the same everywhere), `s_{r,i} = ±1`
//! a direction of rank `r`'s own (its feature means are shifted, by `shift` in norm) and
//! `n_i` uniform noise of variance 1. So the classes are two clouds `2 · separation`
//! noise deviations apart: the best classifier reaches Φ(separation) (97.7% for 2).
//! Rank `r` also sees the classes in its own proportion:
//! `P(y = 1) = 0.5 + skew · (2r / (world − 1) − 1)`, from `0.5 − skew` on rank 0 to
//! `0.5 + skew` on the last rank. A model trained on one shard sees too few samples to
//! find the class direction among `d` and learns its shard's class balance; the model
//! the cluster shares learns from all of them.
//!
//! Each rank's shard holds `shard_len` samples (indices `0..shard_len`); the test set
//! is `test_len` samples beyond every shard, drawn from every rank in turn (the mixture
//! of the members' distributions).
//!
//! ## Training
//!
//! [`Problem::local_step`] is one minibatch SGD step of a member on its shard;
//! [`Plan`] lays out a federated run (local steps between rounds, then rounds of pure
//! averaging so every member ends with the same model); [`Plan::reference`] trains one
//! model on all shards together with the same number of steps, each on a batch from
//! every shard — what a synchronous all-reduce of the same steps would compute — to
//! compare against.
//!
//! Float arithmetic is plain IEEE single precision (no fused multiply-add), so a board
//! and a server generate bit-identical samples.
#![no_std]
#![forbid(unsafe_code)]
#![warn(clippy::std_instead_of_core, clippy::alloc_instead_of_core)]

// Only the sparse workload needs std (and its allocator); the dense problem never does.
#[cfg(feature = "std")]
extern crate std;

pub mod seeded;
#[cfg(feature = "std")]
pub mod sparse;

/// Largest minibatch a step takes (its errors live on the stack).
pub const MAX_BATCH: usize = 64;
/// Largest world the reference trainer takes (it holds `world × batch` errors).
pub const MAX_WORLD: usize = 32;

const GOLDEN: u32 = 0x9e37_79b9;
/// √12: scales a uniform [-0.5, 0.5) draw to variance 1.
const SQRT_12: f32 = 3.464_101_6;

// Hash domains: one family of streams per use.
const DOMAIN_MU: u32 = 0x6d75_0001;
const DOMAIN_SHIFT: u32 = 0x7368_0002;
const DOMAIN_SAMPLE: u32 = 0x736d_0003;
const DOMAIN_PICK: u32 = 0x7069_0004;
const DOMAIN_LABEL: u32 = 0x6c61_0005;

/// A 32-bit integer hash with good avalanche (Wellons' "lowbias32").
const fn mix(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// The key of stream `(domain, a, b)` under `seed`.
const fn stream(seed: u64, domain: u32, a: u32, b: u32) -> u32 {
    let s = mix(seed as u32 ^ mix((seed >> 32) as u32 ^ domain));
    mix(mix(s ^ a.wrapping_mul(GOLDEN)) ^ b)
}

/// Element `i` of stream `key`.
const fn at(key: u32, i: u32) -> u32 {
    mix(key ^ i.wrapping_mul(GOLDEN))
}

/// ±`v` by a hash's top bit.
fn signed(h: u32, v: f32) -> f32 {
    if h >> 31 == 0 {
        v
    } else {
        -v
    }
}

/// A uniform draw in [0, 1) from a hash (24 bits: exact in f32).
fn unit(h: u32) -> f32 {
    (h >> 8) as f32 * (1.0 / (1u32 << 24) as f32)
}

/// σ(z) = 1 / (1 + e^−z).
fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + libm::expf(-z))
}

/// The problem: data of every rank, and the test set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Problem {
    /// Seed of everything.
    pub seed: u64,
    /// Model length: features of a sample, the bias (feature 0) included. At least 2.
    pub features: usize,
    /// Ranks (members) the data is split across.
    pub world: u32,
    /// Training samples per rank.
    pub shard_len: u32,
    /// Held-out samples.
    pub test_len: u32,
    /// Distance of each class's mean from the middle, in noise standard deviations.
    pub separation: f32,
    /// Norm of each rank's own shift of the feature means, in noise standard deviations.
    pub shift: f32,
    /// Class imbalance: rank `r` draws class 1 with probability
    /// `0.5 + skew · (2r / (world − 1) − 1)`; below 0.5.
    pub skew: f32,
}

impl Problem {
    /// The problem the cluster tests use: `features` parameters over `world` ranks,
    /// 300 samples a shard, 1,000 held out, separation 2, shift 2, skew 0.3.
    pub const fn new(seed: u64, features: usize, world: u32) -> Self {
        Problem {
            seed,
            features,
            world,
            shard_len: 300,
            test_len: 1_000,
            separation: 2.0,
            shift: 2.0,
            skew: 0.3,
        }
    }

    /// Rank `rank`'s probability of class 1.
    pub fn positive_rate(&self, rank: u32) -> f32 {
        if self.world < 2 {
            return 0.5;
        }
        let t = 2.0 * rank as f32 / (self.world - 1) as f32 - 1.0;
        0.5 + self.skew * t
    }

    /// Sample `index` of rank `rank` (a training sample for `index < shard_len`).
    pub fn sample(&self, rank: u32, index: u32) -> Sample {
        let noise = stream(self.seed, DOMAIN_SAMPLE, rank, index);
        let positive = unit(mix(noise ^ DOMAIN_LABEL)) < self.positive_rate(rank);
        let scale = 1.0 / libm::sqrtf(self.features.saturating_sub(1).max(1) as f32);
        Sample {
            positive,
            len: self.features as u32,
            mu: stream(self.seed, DOMAIN_MU, 0, 0),
            shift: stream(self.seed, DOMAIN_SHIFT, rank, 0),
            noise,
            class: signed(u32::from(!positive) << 31, self.separation * scale),
            rank_shift: self.shift * scale,
        }
    }

    /// Held-out sample `j` (`j < test_len`): rank `j mod world`'s distribution, beyond
    /// every shard.
    pub fn test_sample(&self, j: u32) -> Sample {
        let world = self.world.max(1);
        self.sample(j % world, self.shard_len + j / world)
    }

    /// The shard index rank `rank` trains on as sample `k` of step `step`.
    pub fn pick(&self, rank: u32, step: u32, k: u32) -> u32 {
        at(stream(self.seed, DOMAIN_PICK, rank, step), k) % self.shard_len.max(1)
    }

    /// One minibatch SGD step of rank `rank` on its shard (step number `step` chooses
    /// the batch): `model −= lr · mean gradient of the logistic loss` over `batch`
    /// samples (at most [`MAX_BATCH`]). `model` has `features` values.
    pub fn local_step(&self, model: &mut [f32], rank: u32, step: u32, lr: f32, batch: usize) {
        let batch = batch.clamp(1, MAX_BATCH);
        let mut errors = [0.0f32; MAX_BATCH];
        for (k, e) in errors[..batch].iter_mut().enumerate() {
            let s = self.sample(rank, self.pick(rank, step, k as u32));
            *e = sigmoid(s.dot(model)) - s.label();
        }
        let scale = lr / batch as f32;
        for (k, e) in errors[..batch].iter().enumerate() {
            let s = self.sample(rank, self.pick(rank, step, k as u32));
            s.add_to(model, -scale * e);
        }
    }

    /// One step of the centralised trainer: the gradient over `batch` samples of every
    /// rank's shard — the samples step `step` of each rank's [`local_step`] takes.
    /// At most [`MAX_WORLD`] ranks.
    ///
    /// [`local_step`]: Self::local_step
    pub fn reference_step(&self, model: &mut [f32], step: u32, lr: f32, batch: usize) {
        let batch = batch.clamp(1, MAX_BATCH);
        let world = (self.world as usize).clamp(1, MAX_WORLD);
        let sample = |n: usize| {
            let (rank, k) = ((n / batch) as u32, (n % batch) as u32);
            self.sample(rank, self.pick(rank, step, k))
        };
        let mut errors = [0.0f32; MAX_WORLD * MAX_BATCH];
        for (n, e) in errors[..world * batch].iter_mut().enumerate() {
            let s = sample(n);
            *e = sigmoid(s.dot(model)) - s.label();
        }
        let scale = lr / (world * batch) as f32;
        for (n, e) in errors[..world * batch].iter().enumerate() {
            sample(n).add_to(model, -scale * e);
        }
    }

    /// Mean logistic loss and accuracy of `model` on the test set.
    pub fn evaluate(&self, model: &[f32]) -> Evaluation {
        evaluate_on((0..self.test_len).map(|j| self.test_sample(j)), model)
    }

    /// Mean logistic loss and accuracy of `model` on rank `rank`'s shard.
    pub fn evaluate_shard(&self, model: &[f32], rank: u32) -> Evaluation {
        evaluate_on((0..self.shard_len).map(|i| self.sample(rank, i)), model)
    }
}

fn evaluate_on(samples: impl Iterator<Item = Sample>, model: &[f32]) -> Evaluation {
    let (mut loss, mut correct, mut n) = (0.0f64, 0u32, 0u32);
    for s in samples {
        let z = f64::from(s.dot(model));
        // log(1 + e^z) − y·z, stable for large |z|.
        loss += z.max(0.0) + libm::log1p(libm::exp(-libm::fabs(z))) - f64::from(s.label()) * z;
        correct += u32::from((z > 0.0) == s.positive);
        n += 1;
    }
    let n = f64::from(n.max(1));
    Evaluation {
        loss: loss / n,
        accuracy: f64::from(correct) / n,
    }
}

/// One sample, produced feature by feature (nothing stored).
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    positive: bool,
    len: u32,
    mu: u32,
    shift: u32,
    noise: u32,
    class: f32,
    rank_shift: f32,
}

impl Sample {
    /// The label: 1.0 for class 1, 0.0 for class 0.
    pub fn label(&self) -> f32 {
        if self.positive {
            1.0
        } else {
            0.0
        }
    }

    /// Features (`features` values, the bias first).
    pub fn features(&self) -> Features {
        Features { sample: *self, i: 0 }
    }

    fn feature(&self, i: u32) -> f32 {
        if i == 0 {
            return 1.0;
        }
        let mean = signed(at(self.mu, i), self.class) + signed(at(self.shift, i), self.rank_shift);
        mean + (unit(at(self.noise, i)) - 0.5) * SQRT_12
    }

    /// `model · x`.
    pub fn dot(&self, model: &[f32]) -> f32 {
        model.iter().zip(self.features()).map(|(w, x)| w * x).sum()
    }

    /// `model += c · x`.
    pub fn add_to(&self, model: &mut [f32], c: f32) {
        for (w, x) in model.iter_mut().zip(self.features()) {
            *w += c * x;
        }
    }
}

/// The features of a [`Sample`].
#[derive(Clone, Debug)]
pub struct Features {
    sample: Sample,
    i: u32,
}

impl Iterator for Features {
    type Item = f32;

    fn next(&mut self) -> Option<f32> {
        if self.i >= self.sample.len {
            return None;
        }
        let x = self.sample.feature(self.i);
        self.i += 1;
        Some(x)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.sample.len - self.i) as usize;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Features {}

/// Loss and accuracy of a model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    /// Mean logistic loss (natural log).
    pub loss: f64,
    /// Fraction classified right.
    pub accuracy: f64,
}

/// A federated run: `train_rounds` rounds, each after `local_steps` SGD steps of every
/// member on its shard, then `consensus_rounds` rounds of averaging only, so that the
/// members' replicas, which local steps on different shards pull apart, end equal.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Plan {
    /// Rounds preceded by local steps.
    pub train_rounds: u32,
    /// SGD steps before each training round.
    pub local_steps: u32,
    /// Averaging-only rounds at the end.
    pub consensus_rounds: u32,
    /// Learning rate.
    pub lr: f32,
    /// Samples a step.
    pub batch: usize,
}

impl Plan {
    /// The run the cluster tests use: 30 training rounds of 4 local steps of 8 samples
    /// at learning rate 0.02, then 30 averaging rounds.
    pub const DEFAULT: Plan = Plan {
        train_rounds: 30,
        local_steps: 4,
        consensus_rounds: 30,
        lr: 0.02,
        batch: 8,
    };

    /// Rounds in all.
    pub fn rounds(&self) -> u32 {
        self.train_rounds + self.consensus_rounds
    }

    /// SGD steps of each member (and of the reference trainer).
    pub fn steps(&self) -> u32 {
        self.train_rounds * self.local_steps
    }

    /// What rank `rank` does before round `round` (counted from 1): its local steps
    /// while training, nothing after. Returns the steps taken.
    pub fn before_round(&self, problem: &Problem, model: &mut [f32], rank: u32, round: u32) -> u32 {
        if round == 0 || round > self.train_rounds {
            return 0;
        }
        for s in 0..self.local_steps {
            let step = (round - 1) * self.local_steps + s;
            problem.local_step(model, rank, step, self.lr, self.batch);
        }
        self.local_steps
    }

    /// Trains `model` (usually zeros) centrally: [`steps`](Self::steps) steps, each on
    /// a batch from every shard.
    pub fn reference(&self, problem: &Problem, model: &mut [f32]) {
        for step in 0..self.steps() {
            problem.reference_step(model, step, self.lr, self.batch);
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::vec;
    use std::vec::Vec;

    use super::*;

    const FEATURES: usize = 1_024;

    fn problem() -> Problem {
        Problem::new(7, FEATURES, 4)
    }

    /// The mean projection of rank `rank`'s samples on rank `other`'s shift direction
    /// (a unit vector), and the rank's fraction of class 1.
    fn shard_shape(p: &Problem, rank: u32, other: u32) -> (f32, f32) {
        let dir = p.sample(other, 0).shift;
        let unit_len = 1.0 / libm::sqrtf((p.features - 1) as f32);
        let (mut along, mut positive) = (0.0, 0.0);
        for i in 0..p.shard_len {
            let s = p.sample(rank, i);
            along += s
                .features()
                .enumerate()
                .skip(1)
                .map(|(k, x)| x * signed(at(dir, k as u32), unit_len))
                .sum::<f32>();
            positive += s.label();
        }
        (along / p.shard_len as f32, positive / p.shard_len as f32)
    }

    #[test]
    fn samples_are_reproducible() {
        let p = problem();
        let a: Vec<f32> = p.sample(2, 17).features().collect();
        let b: Vec<f32> = p.sample(2, 17).features().collect();
        assert_eq!(a, b);
        assert_eq!(a.len(), FEATURES);
        assert_eq!(a[0], 1.0);
        assert_ne!(a, p.sample(2, 18).features().collect::<Vec<_>>());
        assert_ne!(a, p.sample(3, 17).features().collect::<Vec<_>>());
        let variance = a[1..].iter().map(|x| x * x).sum::<f32>() / (FEATURES - 1) as f32;
        assert!((0.9..1.1).contains(&variance), "{variance}");
    }

    #[test]
    fn shards_differ_in_feature_means_and_class_balance() {
        let p = problem();
        for r in 0..p.world {
            let (own, rate) = shard_shape(&p, r, r);
            let (other, _) = shard_shape(&p, r, (r + 1) % p.world);
            assert!((own - p.shift).abs() < 0.2 * p.shift, "rank {r}: {own}");
            assert!(other.abs() < 0.2 * p.shift, "rank {r}: {other}");
            assert!((rate - p.positive_rate(r)).abs() < 0.08, "rank {r}: {rate}");
        }
        assert!(p.positive_rate(0) < 0.25 && p.positive_rate(3) > 0.75);
    }

    #[test]
    fn the_test_set_is_held_out_and_mixes_every_rank() {
        let p = problem();
        let positive: f32 = (0..p.test_len).map(|j| p.test_sample(j).label()).sum();
        assert!((positive / p.test_len as f32 - 0.5).abs() < 0.05);
        for j in 0..p.test_len {
            let s = p.test_sample(j);
            assert_eq!(s.shift, p.sample(j % p.world, 0).shift);
            assert!((0..p.shard_len).all(|i| s.noise != p.sample(j % p.world, i).noise));
        }
    }

    #[test]
    fn the_reference_reaches_a_sensible_accuracy() {
        let p = problem();
        let mut w = vec![0.0; FEATURES];
        let start = p.evaluate(&w);
        assert!((start.loss - core::f64::consts::LN_2).abs() < 1e-9);
        Plan::DEFAULT.reference(&p, &mut w);
        let end = p.evaluate(&w);
        assert!(end.accuracy > 0.85 && end.loss < 0.45, "{end:?}");
    }

    /// Federated training with exact averages after every round (what the cluster's
    /// rounds approach), or each shard trained alone.
    fn federated(p: &Problem, plan: &Plan, average: bool) -> Vec<Vec<f32>> {
        let mut models = vec![vec![0.0f32; p.features]; p.world as usize];
        for round in 1..=plan.rounds() {
            for (r, m) in models.iter_mut().enumerate() {
                plan.before_round(p, m, r as u32, round);
            }
            if average {
                let mean: Vec<f32> = (0..p.features)
                    .map(|i| models.iter().map(|m| m[i]).sum::<f32>() / p.world as f32)
                    .collect();
                models.iter_mut().for_each(|m| m.copy_from_slice(&mean));
            }
        }
        models
    }

    #[test]
    fn one_local_step_with_exact_averages_is_the_reference() {
        let p = problem();
        let plan = Plan {
            local_steps: 1,
            train_rounds: 10,
            consensus_rounds: 0,
            ..Plan::DEFAULT
        };
        let fed = federated(&p, &plan, true).remove(0);
        let mut reference = vec![0.0; FEATURES];
        plan.reference(&p, &mut reference);
        let worst = fed
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(worst < 1e-5, "{worst}");
    }

    #[test]
    fn federated_averaging_approaches_the_reference_and_beats_each_shard_alone() {
        let p = problem();
        let plan = Plan::DEFAULT;
        let mut reference = vec![0.0; FEATURES];
        plan.reference(&p, &mut reference);
        let reference = p.evaluate(&reference).accuracy;
        let fed = p.evaluate(&federated(&p, &plan, true)[0]).accuracy;
        assert!(
            (fed - reference).abs() <= 0.01,
            "federated {fed}, reference {reference}"
        );
        for (r, m) in federated(&p, &plan, false).iter().enumerate() {
            let alone = p.evaluate(m).accuracy;
            assert!(
                alone < reference - 0.03,
                "rank {r} alone {alone}, reference {reference}"
            );
        }
    }
}

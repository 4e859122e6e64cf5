//! The sparse workload (feature `std`): logistic regression with minibatch SGD on
//! sparse rows, from a seeded synthetic dataset or a LIBSVM file. It trains in
//! `asap demo` and `asap node --workload logistic`; it needs an allocator (rows of any
//! length, files of any size), so boards train the dense problem of the crate root.
//!
//! The synthetic data has the shape of RCV1 (Lewis et al., 2004: 47,236 features, ~75
//! non-zeros a row, rows of unit L2 norm): a few features are common and most are rare,
//! so a rare feature's weight is learnt only from the workers whose shards hold it —
//! replicas must be averaged for every worker to learn all of them. Labels come from a
//! hidden weight vector, with a fraction flipped so the loss has a floor.
//!
//! Every worker builds its own shard and the shared test set from the seed alone, so
//! `N` processes need no data exchange to agree on the problem.

use core::fmt;
use std::io::BufRead;
use std::string::{String, ToString};
use std::vec::Vec;
use std::{format, vec};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Largest feature index a LIBSVM file may use (the model is one f32 per feature).
pub const MAX_FEATURES: usize = 1 << 26;

/// A set of sparse rows with 0/1 labels (compressed sparse rows).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dataset {
    features: usize,
    row_start: Vec<usize>,
    indices: Vec<u32>,
    values: Vec<f32>,
    labels: Vec<f32>,
}

impl Dataset {
    /// An empty set over `features` features.
    pub fn new(features: usize) -> Self {
        Dataset {
            features,
            row_start: vec![0],
            ..Dataset::default()
        }
    }

    /// Features (the model's length).
    pub fn features(&self) -> usize {
        self.features
    }

    /// Rows.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Appends a row. Indices must be below `features()`.
    pub fn push(&mut self, entries: impl IntoIterator<Item = (u32, f32)>, label: f32) {
        for (i, v) in entries {
            debug_assert!((i as usize) < self.features);
            self.indices.push(i);
            self.values.push(v);
        }
        self.row_start.push(self.indices.len());
        self.labels.push(label);
    }

    /// Row `i`: its feature indices, values and label.
    pub fn row(&self, i: usize) -> (&[u32], &[f32], f32) {
        let span = self.row_start[i]..self.row_start[i + 1];
        (&self.indices[span.clone()], &self.values[span], self.labels[i])
    }

    /// Mean logistic loss and accuracy of `weights` on every row.
    pub fn evaluate(&self, weights: &[f32]) -> Evaluation {
        let (mut loss, mut correct) = (0.0f64, 0usize);
        for i in 0..self.len() {
            let (idx, val, label) = self.row(i);
            let z = f64::from(dot(weights, idx, val));
            // log(1 + e^z) - y·z, stable for large |z|.
            loss += z.max(0.0) + (-z.abs()).exp().ln_1p() - f64::from(label) * z;
            correct += usize::from((z > 0.0) == (label > 0.5));
        }
        let n = self.len().max(1) as f64;
        Evaluation {
            loss: loss / n,
            accuracy: correct as f64 / n,
        }
    }
}

fn dot(weights: &[f32], idx: &[u32], val: &[f32]) -> f32 {
    idx.iter().zip(val).map(|(&i, v)| weights[i as usize] * v).sum()
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// Loss and accuracy of a model on a dataset.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    /// Mean logistic loss (natural log).
    pub loss: f64,
    /// Fraction of rows classified right.
    pub accuracy: f64,
}

/// The parameters of the synthetic problem.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Synthetic {
    /// Features (the model's length).
    pub features: usize,
    /// Training rows per worker.
    pub rows_per_worker: usize,
    /// Rows of the shared test set.
    pub test_rows: usize,
    /// Mean non-zeros a row.
    pub nonzeros: usize,
    /// Fraction of labels flipped.
    pub label_noise: f64,
    /// Seed of everything.
    pub seed: u64,
}

impl Synthetic {
    /// RCV1's shape at a size a laptop trains in seconds.
    pub fn new(seed: u64) -> Self {
        Synthetic {
            features: 20_000,
            rows_per_worker: 10_000,
            test_rows: 2_000,
            nonzeros: 75,
            label_noise: 0.05,
            seed,
        }
    }

    /// The hidden weights the labels come from.
    fn truth(&self) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        (0..self.features).map(|_| rng.random_range(-4.0f32..4.0)).collect()
    }

    /// Worker `rank`'s training shard.
    pub fn shard(&self, rank: u32) -> Dataset {
        self.rows(u64::from(rank) + 1, self.rows_per_worker)
    }

    /// The test set every worker evaluates on.
    pub fn test_set(&self) -> Dataset {
        self.rows(0, self.test_rows)
    }

    fn rows(&self, stream: u64, rows: usize) -> Dataset {
        let truth = self.truth();
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(stream);
        let mut data = Dataset::new(self.features);
        let mut row: Vec<(u32, f32)> = Vec::with_capacity(2 * self.nonzeros);
        for _ in 0..rows {
            row.clear();
            let nnz = rng
                .random_range(self.nonzeros.div_ceil(2)..=self.nonzeros * 3 / 2)
                .max(1);
            for _ in 0..nnz {
                // u³ puts most draws on low indices: common words and a long rare tail.
                let u: f64 = rng.random();
                let index = ((u * u * u) * self.features as f64) as u32;
                row.push((index.min(self.features as u32 - 1), rng.random_range(0.5f32..1.5)));
            }
            row.sort_unstable_by_key(|&(i, _)| i);
            row.dedup_by_key(|e| e.0);
            let norm = row.iter().map(|e| e.1 * e.1).sum::<f32>().sqrt();
            row.iter_mut().for_each(|e| e.1 /= norm);
            let (idx, val): (Vec<u32>, Vec<f32>) = row.iter().copied().unzip();
            let positive = dot(&truth, &idx, &val) > 0.0;
            let flip = rng.random_bool(self.label_noise);
            data.push(row.iter().copied(), f32::from(u8::from(positive != flip)));
        }
        data
    }
}

/// Why a LIBSVM file could not be read.
#[derive(Debug)]
pub struct DataError {
    /// 1-based line number (0: the file as a whole).
    pub line: usize,
    /// What is wrong.
    pub what: String,
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            f.write_str(&self.what)
        } else {
            write!(f, "line {}: {}", self.line, self.what)
        }
    }
}

impl core::error::Error for DataError {}

/// Reads a LIBSVM file (`label index:value ...`, indices from 1, `#` comments) and
/// splits it as every worker does: every tenth row is the test set, the others are dealt
/// to the workers in turn. Labels above 0 are positive (so `+1/-1` and `1/0` both work).
pub fn read_libsvm(reader: impl BufRead, rank: u32, world: u32) -> Result<(Dataset, Dataset), DataError> {
    let mut rows: Vec<(Vec<(u32, f32)>, f32)> = Vec::new();
    let mut features = 0usize;
    for (n, line) in reader.lines().enumerate() {
        let at = |what: String| DataError { line: n + 1, what };
        let line = line.map_err(|e| at(e.to_string()))?;
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut fields = line.split_ascii_whitespace();
        let label: f32 = fields
            .next()
            .and_then(|l| l.parse().ok())
            .filter(|l: &f32| l.is_finite())
            .ok_or_else(|| at("the label is not a number".into()))?;
        let mut entries = Vec::new();
        for field in fields {
            let (i, v) = field
                .split_once(':')
                .ok_or_else(|| at(format!("`{field}` is not index:value")))?;
            let i: usize = i.parse().map_err(|_| at(format!("bad feature index `{i}`")))?;
            if !(1..=MAX_FEATURES).contains(&i) {
                return Err(at(format!("feature index {i} outside 1..={MAX_FEATURES}")));
            }
            let v: f32 = v
                .parse()
                .ok()
                .filter(|v: &f32| v.is_finite())
                .ok_or_else(|| at(format!("bad value `{v}`")))?;
            features = features.max(i);
            entries.push((i as u32 - 1, v));
        }
        rows.push((entries, f32::from(u8::from(label > 0.0))));
    }
    if rows.len() < 10 {
        return Err(DataError {
            line: 0,
            what: format!("{} rows: need at least 10 (one in ten is the test set)", rows.len()),
        });
    }
    let (mut train, mut test) = (Dataset::new(features), Dataset::new(features));
    let mut dealt = 0u32;
    for (i, (entries, label)) in rows.into_iter().enumerate() {
        if i % 10 == 9 {
            test.push(entries, label);
        } else {
            if dealt % world == rank {
                train.push(entries, label);
            }
            dealt += 1;
        }
    }
    Ok((train, test))
}

/// Minibatch SGD over one shard, cycling through it in a seeded order.
#[derive(Debug)]
pub struct Sgd {
    /// Rows a step.
    pub batch: usize,
    /// Learning rate.
    pub rate: f32,
    order: Vec<usize>,
    cursor: usize,
    errors: Vec<f32>,
}

impl Sgd {
    /// SGD over `rows` rows.
    pub fn new(rows: usize, batch: usize, rate: f32, seed: u64) -> Self {
        let mut order: Vec<usize> = (0..rows).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for i in (1..rows).rev() {
            order.swap(i, rng.random_range(0..=i));
        }
        Sgd {
            batch,
            rate,
            order,
            cursor: 0,
            errors: Vec::with_capacity(batch),
        }
    }

    /// One step on the next `batch` rows of `shard`.
    pub fn step(&mut self, shard: &Dataset, weights: &mut [f32]) {
        if self.order.is_empty() {
            return;
        }
        let batch: Vec<usize> = (0..self.batch)
            .map(|k| self.order[(self.cursor + k) % self.order.len()])
            .collect();
        self.cursor = (self.cursor + self.batch) % self.order.len();
        // The gradient at the step's starting point, then the (sparse) update.
        self.errors.clear();
        for &r in &batch {
            let (idx, val, label) = shard.row(r);
            self.errors.push(sigmoid(dot(weights, idx, val)) - label);
        }
        let scale = self.rate / self.batch as f32;
        for (&r, &err) in batch.iter().zip(&self.errors) {
            let (idx, val, _) = shard.row(r);
            for (&i, v) in idx.iter().zip(val) {
                weights[i as usize] -= scale * err * v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_data_is_reproducible_and_shaped_like_rcv1() {
        let p = Synthetic {
            features: 5_000,
            rows_per_worker: 500,
            ..Synthetic::new(7)
        };
        let (a, b) = (p.shard(3), p.shard(3));
        assert_eq!(a, b);
        assert_ne!(a, p.shard(4));
        let nnz = (0..a.len()).map(|i| a.row(i).0.len()).sum::<usize>() as f64 / a.len() as f64;
        assert!((50.0..=80.0).contains(&nnz), "mean non-zeros {nnz}");
        for i in 0..a.len() {
            let norm: f32 = a.row(i).1.iter().map(|v| v * v).sum();
            assert!((norm - 1.0).abs() < 1e-4);
        }
        let positive = (0..a.len()).filter(|&i| a.row(i).2 > 0.5).count();
        assert!((100..=400).contains(&positive), "{positive} positives of 500");
    }

    #[test]
    fn sgd_on_one_shard_lowers_the_test_loss() {
        let p = Synthetic {
            features: 2_000,
            ..Synthetic::new(1)
        };
        let (shard, test) = (p.shard(0), p.test_set());
        let mut w = vec![0.0; p.features];
        let start = test.evaluate(&w);
        assert!((start.loss - core::f64::consts::LN_2).abs() < 1e-9);
        let mut sgd = Sgd::new(shard.len(), 64, 128.0, 1);
        for _ in 0..300 {
            sgd.step(&shard, &mut w);
        }
        let end = test.evaluate(&w);
        assert!(end.loss < start.loss - 0.1 && end.accuracy > 0.75, "{end:?}");
    }

    #[test]
    fn libsvm_is_read_and_split_by_rank() {
        let text: String = (0..20)
            .map(|i| format!("{} 1:{i} 3:0.5 # row {i}\n", if i % 2 == 0 { "+1" } else { "-1" }))
            .collect();
        let (train, test) = read_libsvm(text.as_bytes(), 1, 2).unwrap();
        assert_eq!((train.features(), train.len(), test.len()), (3, 9, 2));
        // Training rows are 0..=8 and 10..=18; rank 1 gets every second: rows 1, 3, ...
        assert_eq!(train.row(0), (&[0, 2][..], &[1.0, 0.5][..], 0.0));
        assert_eq!(test.row(0).2, 0.0); // row 9 is odd: -1
    }

    #[test]
    fn bad_libsvm_lines_are_typed_errors_with_line_numbers() {
        for (text, line, what) in [
            ("x 1:1\n", 1, "label"),
            ("1 1:1\n1 0:1\n", 2, "outside"),
            ("1 2\n", 1, "index:value"),
            ("1 1:nan\n", 1, "bad value"),
            ("1 99999999999:1\n", 1, "outside"),
            ("1 1:1\n", 0, "at least 10"),
        ] {
            let e = read_libsvm(text.as_bytes(), 0, 1).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.what.contains(what), "{text:?}: {e}");
        }
    }
}

//! Test harnesses shared by the workspace-level tests: the deterministic simulator
//! ([`sim`]) that runs real `asap-core` nodes on a virtual clock through a seeded,
//! faulty network, and the helpers around it (node memory, seeded replicas, means).
//!
//! Everything is deterministic from one seed: no threads, no wall clock, no sleeps.

pub mod sim;

use asap_core::{Buffers, Layout};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Memory one node borrows for its life.
#[derive(Debug)]
pub struct NodeMemory {
    snapshot: Vec<f32>,
    accumulator: Vec<f32>,
    chunk_weights: Vec<f32>,
    chunk_mass: Vec<f32>,
    chunk_bits: Vec<u32>,
}

impl NodeMemory {
    /// Memory sized for `layout`.
    pub fn new(layout: &Layout) -> Self {
        NodeMemory {
            snapshot: vec![0.0; layout.model_len],
            accumulator: vec![0.0; layout.accumulator],
            chunk_weights: vec![0.0; layout.chunks],
            chunk_mass: vec![0.0; layout.chunk_mass],
            chunk_bits: vec![0; layout.bitmap_words],
        }
    }

    /// The buffers to hand to `Node::new`.
    pub fn buffers(&mut self) -> Buffers<'_> {
        Buffers {
            snapshot: &mut self.snapshot,
            accumulator: &mut self.accumulator,
            chunk_weights: &mut self.chunk_weights,
            chunk_mass: &mut self.chunk_mass,
            chunk_bits: &mut self.chunk_bits,
        }
    }
}

/// Seeded initial replicas: `n` vectors of `len` values uniform in `[-1, 1)`.
pub fn random_vectors(n: usize, len: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| (0..len).map(|_| rng.random_range(-1.0..1.0)).collect())
        .collect()
}

/// The exact mean of `vectors` (all of one length), computed in f64.
pub fn mean<V: AsRef<[f32]>>(vectors: &[V]) -> Vec<f64> {
    let n = vectors.len() as f64;
    let len = vectors.first().map_or(0, |v| v.as_ref().len());
    (0..len)
        .map(|k| vectors.iter().map(|v| f64::from(v.as_ref()[k])).sum::<f64>() / n)
        .collect()
}

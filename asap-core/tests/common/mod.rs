//! What the Node test files share: the memory a node borrows, owned by the test.

use asap_core::{Buffers, Config};

/// A node's buffers for `peers` table entries, sized from its configuration.
pub(crate) struct Mem {
    snapshot: Vec<f32>,
    acc: Vec<f32>,
    weights: Vec<f32>,
    mass: Vec<f32>,
    bits: Vec<u32>,
}

impl Mem {
    pub(crate) fn new(config: &Config, peers: usize) -> Self {
        let l = config.layout(peers).unwrap();
        Mem {
            snapshot: vec![0.0; l.model_len],
            acc: vec![0.0; l.accumulator],
            weights: vec![0.0; l.chunks],
            mass: vec![0.0; l.chunk_mass],
            bits: vec![0; l.bitmap_words],
        }
    }

    pub(crate) fn buffers(&mut self) -> Buffers<'_> {
        Buffers {
            snapshot: &mut self.snapshot,
            accumulator: &mut self.acc,
            chunk_weights: &mut self.weights,
            chunk_mass: &mut self.mass,
            chunk_bits: &mut self.bits,
        }
    }
}

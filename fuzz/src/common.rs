//! Helpers the targets share: node memory, the two-node fixture's configuration, and
//! the checks every transmitted frame must pass.

use asap_core::wire::{self, F32Le, Kind};
use asap_core::{Buffers, Config, NodeId, PeerSpec};

/// Cluster of every fixture.
pub const CLUSTER: u32 = 9;
/// Largest frame of every fixture (the smallest a node accepts).
pub const MAX_FRAME: usize = 512;

/// The memory a node borrows, sized by `Config::layout`.
pub struct Mem {
    snapshot: Vec<f32>,
    acc: Vec<f32>,
    weights: Vec<f32>,
    mass: Vec<f32>,
    bits: Vec<u32>,
}

impl Mem {
    /// Buffers for `config` with `peers` table entries.
    pub fn new(config: &Config, peers: usize) -> Self {
        let l = config.layout(peers).expect("fixture layout");
        Mem {
            snapshot: vec![0.0; l.model_len],
            acc: vec![0.0; l.model_len],
            weights: vec![0.0; l.chunks],
            mass: vec![0.0; l.chunk_mass],
            bits: vec![0; l.bitmap_words],
        }
    }

    /// The buffers to hand to `Node::new`.
    pub fn buffers(&mut self) -> Buffers<'_> {
        Buffers {
            snapshot: &mut self.snapshot,
            accumulator: &mut self.acc,
            chunk_weights: &mut self.weights,
            chunk_mass: &mut self.mass,
            chunk_bits: &mut self.bits,
        }
    }
}

/// The two-node fixture of `asap-core/tests/node.rs`: cluster 9, 512-byte frames.
pub fn config(id: NodeId, model_len: usize) -> Config {
    Config {
        max_frame: MAX_FRAME,
        ..Config::new(CLUSTER, id, model_len)
    }
}

/// The other node of a pair, as the only (both-ways, weight 1/2) peer.
pub fn peers_of(id: NodeId) -> [PeerSpec; 1] {
    [PeerSpec::both(NodeId(1 - id.0.min(1)), 0.5)]
}

/// Checks a frame a node sent (one transmit, or one segment of a batch): at most
/// `MAX_FRAME` bytes, decodes whole, says who sent it and to whom, and an update carries
/// finite values (a node only ever snapshots finite parameters) with a weight in (0, 1],
/// or with `push_sum` (asynchronous rounds) a share of a mass: in [0, 65,536].
pub fn check_transmit(bytes: &[u8], me: NodeId, to: NodeId, chunks: u32, push_sum: bool) {
    assert!(bytes.len() <= MAX_FRAME, "frame of {} bytes", bytes.len());
    let (frame, used) = match wire::decode(bytes) {
        Ok(f) => f,
        Err(e) => panic!("a transmitted frame does not decode: {e:?}: {bytes:02x?}"),
    };
    // A segment of a batch may be padded with zeros past its frame.
    assert!(
        bytes[used..].iter().all(|&b| b == 0),
        "bytes after the frame that are not padding"
    );
    let h = frame.header;
    assert_eq!(h.version, wire::VERSION);
    assert_eq!(h.cluster, CLUSTER);
    assert_eq!(h.from, me);
    assert_eq!(h.to, to);
    if let Kind::Update {
        chunk,
        chunks: c,
        weight,
        ..
    } = h.kind
    {
        assert_eq!(c, chunks, "update announces another chunk count");
        assert!(chunk < chunks, "chunk {chunk} of {chunks}");
        let weight_ok = if push_sum {
            (0.0..=65_536.0).contains(&weight)
        } else {
            weight > 0.0 && weight <= 1.0
        };
        assert!(weight_ok, "weight {weight}");
        let values = F32Le::new(frame.payload).expect("payload of whole f32s");
        assert!(values.iter().all(f32::is_finite), "a node sent a non-finite value");
    }
}

/// `true` when `a` and `b` agree within `tol`, relative to their size past 1.
pub fn close(a: f32, b: f32, tol: f32) -> bool {
    (a - b).abs() <= tol * a.abs().max(b.abs()).max(1.0)
}

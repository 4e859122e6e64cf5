//! Test harnesses shared by the workspace-level tests: an in-memory cluster of real
//! `asap-core` nodes on a virtual clock, wired through a seeded lossy network.
//!
//! Everything is deterministic from one seed: no threads, no wall clock, no sleeps. The
//! harness does not allocate once built (frames live in a pre-allocated pool), so the
//! zero-allocation test can run on it.

pub mod sim;

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use asap_core::{
    Advance, Buffers, Config, ConfigError, Duration, Event, Instant, Layout, Node, NodeId, PeerSpec, Reducer, Topology,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Peer-table capacity of the harness's nodes.
pub const PEERS: usize = 16;

/// Memory one node borrows for its life.
#[derive(Debug)]
pub struct NodeMemory {
    snapshot: Vec<f32>,
    accumulator: Vec<f32>,
    chunk_weights: Vec<f32>,
    chunk_bits: Vec<u32>,
}

impl NodeMemory {
    /// Memory sized for `layout`.
    pub fn new(layout: &Layout) -> Self {
        NodeMemory {
            snapshot: vec![0.0; layout.model_len],
            accumulator: vec![0.0; layout.accumulator],
            chunk_weights: vec![0.0; layout.chunks],
            chunk_bits: vec![0; layout.bitmap_words],
        }
    }

    /// The buffers to hand to `Node::new`.
    pub fn buffers(&mut self) -> Buffers<'_> {
        Buffers {
            snapshot: &mut self.snapshot,
            accumulator: &mut self.accumulator,
            chunk_weights: &mut self.chunk_weights,
            chunk_bits: &mut self.chunk_bits,
        }
    }
}

/// The peer table of node `i` on an undirected ring of `n` nodes with uniform weights
/// (`1/3` each, `1/2` for two nodes).
pub fn ring(n: usize, i: usize) -> Vec<PeerSpec> {
    let id = |k: usize| NodeId(k as u16);
    match n {
        0 | 1 => Vec::new(),
        2 => vec![PeerSpec::both(id(1 - i), 0.5)],
        _ => vec![
            PeerSpec::both(id((i + n - 1) % n), 1.0 / 3.0),
            PeerSpec::both(id((i + 1) % n), 1.0 / 3.0),
        ],
    }
}

/// What the simulated links do to frames.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkModel {
    /// Probability a frame is lost.
    pub loss: f64,
    /// Probability a frame is delivered twice.
    pub duplicate: f64,
    /// Fixed one-way delay.
    pub delay: Duration,
    /// Extra uniform delay in `0..jitter` (reorders frames).
    pub jitter: Duration,
}

impl Default for LinkModel {
    fn default() -> Self {
        LinkModel {
            loss: 0.0,
            duplicate: 0.0,
            delay: Duration::from_micros(500),
            jitter: Duration::ZERO,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: Instant,
    seq: u64,
    slot: usize,
}

/// N nodes averaging their replicas through a simulated network.
#[derive(Debug)]
pub struct Cluster<'m> {
    /// The nodes, indexed by node id.
    pub nodes: Vec<Node<'m, PEERS>>,
    /// Each node's replica (the application's parameters).
    pub params: Vec<Vec<f32>>,
    /// Rounds each node finished.
    pub rounds_done: Vec<u32>,
    /// Virtual time.
    pub now: Instant,
    /// Frames the network dropped.
    pub dropped: u64,
    /// Events observed, per kind: [round ready, send complete, peer down, peer up, other].
    pub event_counts: [u64; 5],
    link: LinkModel,
    rng: ChaCha8Rng,
    queue: BinaryHeap<Reverse<InFlight>>,
    pool: Vec<(NodeId, usize, Vec<u8>)>,
    free: Vec<usize>,
    next_seq: u64,
    buf: Vec<u8>,
}

/// Frame slots pre-allocated per node.
const SLOTS_PER_NODE: usize = 512;

impl<'m> Cluster<'m> {
    /// Builds one node per entry of `memory` with `config_for(i)` and `peers_for(i)`, each
    /// starting from `initial[i]`.
    pub fn new(
        memory: &'m mut [NodeMemory],
        config_for: impl Fn(usize) -> Config,
        peers_for: impl Fn(usize) -> Vec<PeerSpec>,
        initial: Vec<Vec<f32>>,
        link: LinkModel,
        seed: u64,
    ) -> Self {
        let build =
            |i: usize, m: &'m mut NodeMemory| Node::new(config_for(i), &peers_for(i), m.buffers(), Instant::ZERO);
        Self::build(memory, build, initial, link, seed)
    }

    /// As [`Cluster::new`], with neighbours and weights from `topology`.
    pub fn with_topology(
        memory: &'m mut [NodeMemory],
        config_for: impl Fn(usize) -> Config,
        topology: &Topology,
        initial: Vec<Vec<f32>>,
        link: LinkModel,
        seed: u64,
    ) -> Self {
        let build =
            |i: usize, m: &'m mut NodeMemory| Node::with_topology(config_for(i), topology, m.buffers(), Instant::ZERO);
        Self::build(memory, build, initial, link, seed)
    }

    fn build(
        memory: &'m mut [NodeMemory],
        build: impl Fn(usize, &'m mut NodeMemory) -> Result<Node<'m, PEERS>, ConfigError>,
        initial: Vec<Vec<f32>>,
        link: LinkModel,
        seed: u64,
    ) -> Self {
        let n = memory.len();
        let now = Instant::ZERO;
        let nodes: Vec<_> = memory
            .iter_mut()
            .enumerate()
            .map(|(i, m)| build(i, m).expect("valid test configuration"))
            .collect();
        let max_frame = nodes.first().map_or(1_400, |node| node.config().max_frame);
        let slots = SLOTS_PER_NODE * n;
        Cluster {
            nodes,
            params: initial,
            rounds_done: vec![0; n],
            now,
            dropped: 0,
            event_counts: [0; 5],
            link,
            rng: ChaCha8Rng::seed_from_u64(seed),
            queue: BinaryHeap::with_capacity(slots),
            pool: (0..slots).map(|_| (NodeId(0), 0, vec![0; max_frame])).collect(),
            free: (0..slots).rev().collect(),
            next_seq: 0,
            buf: vec![0; max_frame],
        }
    }

    /// Memory for `n` nodes configured by `config_for`, each with the peer table
    /// `topology` gives it.
    pub fn topology_memory(config_for: impl Fn(usize) -> Config, topology: &Topology) -> Vec<NodeMemory> {
        let n = topology.nodes() as usize;
        Self::memory(n, config_for, |i| topology.peers_of(i as u32).count())
    }

    /// Memory for `n` nodes configured by `config_for`, each with `peers` table entries.
    pub fn memory(n: usize, config_for: impl Fn(usize) -> Config, peers: impl Fn(usize) -> usize) -> Vec<NodeMemory> {
        (0..n)
            .map(|i| NodeMemory::new(&config_for(i).layout(peers(i)).expect("valid layout")))
            .collect()
    }

    /// Runs until every node finished `rounds` rounds, or `limit` of virtual time passed.
    /// Returns `true` when the rounds were reached.
    pub fn run_rounds(&mut self, rounds: u32, limit: Duration) -> bool {
        let deadline = self.now + limit;
        loop {
            if self.rounds_done.iter().all(|&r| r >= rounds) {
                return true;
            }
            if self.now > deadline {
                return false;
            }
            let mut progress = false;
            for i in 0..self.nodes.len() {
                progress |= self.step_application(i, rounds);
                progress |= self.flush(i);
            }
            progress |= self.deliver_due();
            if !progress {
                self.advance_clock();
            }
        }
    }

    /// The application side of node `i`: start a round when allowed, finish it when ready.
    fn step_application(&mut self, i: usize, rounds: u32) -> bool {
        let start = self.rounds_done[i] < rounds;
        let advance = self.nodes[i]
            .advance_round(self.now, &mut self.params[i], start)
            .expect("finite parameters of the model's length");
        if advance.finished.is_some() {
            self.rounds_done[i] += 1;
        }
        advance != Advance::default()
    }

    /// Moves node `i`'s frames into the network and drains its events.
    fn flush(&mut self, i: usize) -> bool {
        let mut progress = false;
        while let Some(t) = self.nodes[i]
            .poll_transmit(self.now, &mut self.buf)
            .expect("buffer holds max_frame")
        {
            progress = true;
            if self.rng.random_bool(self.link.loss) {
                self.dropped += 1;
                continue;
            }
            let copies = if self.rng.random_bool(self.link.duplicate) {
                2
            } else {
                1
            };
            for _ in 0..copies {
                self.enqueue(t.to, t.len);
            }
        }
        while let Some(event) = self.nodes[i].poll_event() {
            let k = match event {
                Event::RoundReady { .. } => 0,
                Event::SendComplete { .. } => 1,
                Event::PeerDown(_) => 2,
                Event::PeerUp(_) => 3,
                _ => 4,
            };
            self.event_counts[k] += 1;
        }
        progress
    }

    fn enqueue(&mut self, to: NodeId, len: usize) {
        let jitter = match self.link.jitter.total_micros() {
            0 => 0,
            j => self.rng.random_range(0..j),
        };
        let at = self.now + self.link.delay + Duration::from_micros(jitter);
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.pool.push((to, 0, vec![0; self.buf.len()]));
                self.pool.len() - 1
            }
        };
        let entry = &mut self.pool[slot];
        entry.0 = to;
        entry.1 = len;
        entry.2[..len].copy_from_slice(&self.buf[..len]);
        self.next_seq += 1;
        self.queue.push(Reverse(InFlight {
            at,
            seq: self.next_seq,
            slot,
        }));
    }

    /// Delivers every frame due by now.
    fn deliver_due(&mut self) -> bool {
        let mut progress = false;
        while let Some(&Reverse(f)) = self.queue.peek() {
            if f.at > self.now {
                break;
            }
            self.queue.pop();
            let (to, len, ref mut bytes) = self.pool[f.slot];
            if let Some(node) = self.nodes.get_mut(usize::from(to.0)) {
                // Refusals are counted by the node; the harness only moves bytes.
                let _ = node.handle_frame_mut(self.now, &mut bytes[..len]);
            }
            self.free.push(f.slot);
            progress = true;
        }
        progress
    }

    /// Jumps the clock to the next delivery or timer and fires the timers.
    fn advance_clock(&mut self) {
        let next_frame = self.queue.peek().map(|Reverse(f)| f.at);
        let next_timer = self.nodes.iter().filter_map(|n| n.poll_timeout()).min();
        let next = match (next_frame, next_timer) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b).unwrap_or(self.now + Duration::from_millis(1)),
        };
        self.now = next.max(self.now);
        for node in &mut self.nodes {
            if node.poll_timeout().is_some_and(|t| t <= self.now) {
                node.handle_timeout(self.now);
            }
        }
    }

    /// The exact mean of `vectors`, computed in f64.
    pub fn mean(vectors: &[Vec<f32>]) -> Vec<f64> {
        let n = vectors.len() as f64;
        let len = vectors.first().map_or(0, Vec::len);
        (0..len)
            .map(|k| vectors.iter().map(|v| f64::from(v[k])).sum::<f64>() / n)
            .collect()
    }

    /// Largest distance of any replica value from `target`.
    pub fn max_error(&self, target: &[f64]) -> f64 {
        self.params
            .iter()
            .flat_map(|p| p.iter().zip(target).map(|(x, t)| (f64::from(*x) - t).abs()))
            .fold(0.0, f64::max)
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

//! Communication graphs: who sends to whom in which round, with which weight, and how
//! fast the resulting stochastic reduce converges (its spectral gap).
//!
//! Every family is a pure function of `(family, n, degree, seed, round)`: all nodes
//! derive the same schedule locally, without messages and without allocation. Send
//! lists are ordered by priority, as in the reference implementation (MALT-2's `dstorm`
//! graphs): under a bandwidth limit a node sends to its first `max_send` entries only,
//! and the receive lists follow from everyone's send lists, so mixing stays consistent.
//!
//! Weights: every family here is regular (each node sends to and receives from the same
//! number of peers), so uniform weights `1/(d+1)` are doubly stochastic and the reduce
//! converges to the exact average; on undirected graphs they equal Metropolis–Hastings.
//! `Random` graphs are irregular and directed: they need push-sum (a scalar mass carried
//! beside the vector), and [`Topology::needs_push_sum`] says so.
//!
//! The gap `1 - ρ`, with `ρ` the contraction of the consensus error per round (`|λ2(W)|`
//! for the normal matrices of these families; per period for time-varying graphs), is
//! computed exactly for circulant graphs, tori and hypercubes, and by power iteration
//! over the implicit mixing operator (caller-provided buffers) for the others. A
//! topology whose gap is below a threshold is refused when it is built: a graph that
//! cannot converge never runs.

use core::f64::consts::PI;
use core::fmt;

use heapless::Vec;

/// Most entries a circulant offset list holds (degree cap of Halton, Chord, exponential).
pub const MAX_OFFSETS: usize = 32;

/// Gap below which [`Topology::new`] refuses a graph (it would need more than about
/// 14 million rounds per factor e of consensus).
pub const DEFAULT_MIN_GAP: f64 = 1e-7;

/// The graph families.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// Undirected ring: `i ± 1`.
    Ring,
    /// Undirected 2-D torus `r × c` (`r·c = n`, both at least 3, `r` the largest divisor
    /// of `n` not above `√n`): up, down, left, right.
    Torus,
    /// Undirected hypercube (`n` a power of two): `i XOR 2^k`.
    Hypercube,
    /// Static exponential graph (Ying et al., 2021): `i + 2^k` for `k < ⌈log2 n⌉`.
    Exponential,
    /// One-peer exponential graph, time-varying: in round `r`, `i + 2^(r mod ⌈log2 n⌉)`.
    /// Exact average after one period when `n` is a power of two.
    OnePeerExponential,
    /// Random `d`-regular undirected graph, seeded, the same on every node (default
    /// `d = 4`): the union of `d/2` seeded permutations and their inverses (plus a
    /// seeded perfect matching when `d` is odd). Its rare self-loops and parallel edges
    /// keep their weight: a self-loop stays with the node, a parallel edge counts twice.
    Expander,
    /// Every other node: the all-reduce limit.
    Complete,
    /// `dstorm` Halton graph: offsets from the van der Corput (Halton base 2) sequence
    /// `h(1), h(2), … = 1/2, 1/4, 3/4, 1/8, …`, cyclically shifted so the first offset is
    /// 1: `⌊n·h(r)⌋ − ⌊n/2⌋ + 1 mod n` (n = 8: 1, 7, 3, 6, 2, 4). Connected down to
    /// degree 1.
    Halton,
    /// `dstorm` Chord graph: offsets `⌈n/2⌉, ⌈n/4⌉, ⌈n/8⌉, …, 1`.
    Chord,
    /// `dstorm` "All" limited to degree `d`: offsets `1..=d` (`d = n - 1` is all-to-all).
    AllLimited,
    /// `dstorm` Random graph: the next node always (so it is strongly connected), every
    /// other destination accepted with a seeded probability for `degree` expected
    /// destinations. Directed and irregular: needs push-sum.
    Random,
}

impl Family {
    /// Every family, in the order tools list them.
    pub const ALL: [Family; 11] = [
        Family::Ring,
        Family::Torus,
        Family::Hypercube,
        Family::Exponential,
        Family::OnePeerExponential,
        Family::Expander,
        Family::Complete,
        Family::Halton,
        Family::Chord,
        Family::AllLimited,
        Family::Random,
    ];

    /// The name tools use (`asap topology --kind NAME`).
    pub const fn name(self) -> &'static str {
        match self {
            Family::Ring => "ring",
            Family::Torus => "torus",
            Family::Hypercube => "hypercube",
            Family::Exponential => "exp",
            Family::OnePeerExponential => "one-peer-exp",
            Family::Expander => "expander",
            Family::Complete => "complete",
            Family::Halton => "halton",
            Family::Chord => "chord",
            Family::AllLimited => "all",
            Family::Random => "random",
        }
    }

    /// The family with this name.
    pub fn from_name(name: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Whether `degree` is a parameter of the family (the others fix their degree).
    pub const fn takes_degree(self) -> bool {
        matches!(
            self,
            Family::Expander | Family::Halton | Family::Chord | Family::AllLimited | Family::Random
        )
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a user asks for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TopologySpec {
    /// The family.
    pub family: Family,
    /// Nodes in the cluster.
    pub nodes: u32,
    /// Degree for the families that take one (for `Random`, the expected out-degree).
    /// Defaults to `⌈log2 n⌉`, and 4 for `Expander`.
    pub degree: Option<u32>,
    /// Send to at most this many entries of the send list (the bandwidth knob).
    pub max_send: Option<u32>,
    /// Seed of the random families.
    pub seed: u64,
    /// Refuse graphs whose gap is below this.
    pub min_gap: f64,
}

impl TopologySpec {
    /// A spec with default degree, no send limit, seed 0 and [`DEFAULT_MIN_GAP`].
    pub const fn new(family: Family, nodes: u32) -> Self {
        TopologySpec {
            family,
            nodes,
            degree: None,
            max_send: None,
            seed: 0,
            min_gap: DEFAULT_MIN_GAP,
        }
    }
}

/// Why a topology cannot be built.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub enum TopologyError {
    /// Fewer than two nodes, or more than node ids can name (65,536).
    Nodes(u32),
    /// A hypercube needs a power-of-two node count.
    NotPowerOfTwo(u32),
    /// No factorisation `n = r·c` with `r, c ≥ 3` for a torus.
    TorusShape(u32),
    /// The degree is zero, not below `n`, or above what the family supports.
    Degree(u32),
    /// A `d`-regular graph on `n` nodes needs `n·d` even.
    OddRegular {
        /// Nodes.
        nodes: u32,
        /// Degree.
        degree: u32,
    },
    /// `max_send` is zero.
    MaxSend,
    /// The graph does not mix: its spectral gap is below the threshold (a gap of 0
    /// means disconnected).
    GapTooSmall {
        /// The gap.
        gap: f64,
        /// The threshold.
        min_gap: f64,
    },
    /// The scratch buffer is shorter than [`Topology::scratch_len`].
    Scratch(usize),
}

impl fmt::Display for TopologyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopologyError::Nodes(n) => write!(f, "{n} nodes: need 2..=65536"),
            TopologyError::NotPowerOfTwo(n) => write!(f, "a hypercube needs a power-of-two node count, not {n}"),
            TopologyError::TorusShape(n) => write!(f, "{n} nodes do not factor into a torus r×c with r, c ≥ 3"),
            TopologyError::Degree(d) => write!(f, "degree {d} does not fit this family and node count"),
            TopologyError::OddRegular { nodes, degree } => {
                write!(f, "a {degree}-regular graph on {nodes} nodes needs nodes × degree even")
            }
            TopologyError::MaxSend => f.write_str("max_send must be at least 1"),
            TopologyError::GapTooSmall { gap, min_gap } => {
                write!(
                    f,
                    "spectral gap {gap:.3e} below {min_gap:.1e}: the graph does not mix (disconnected?)"
                )
            }
            TopologyError::Scratch(n) => write!(f, "scratch buffer needs {n} values"),
        }
    }
}

impl core::error::Error for TopologyError {}

/// A validated communication graph. Cheap to clone; every query is computed on demand.
#[derive(Clone, Debug, PartialEq)]
pub struct Topology {
    family: Family,
    n: u32,
    /// Full out-degree before `max_send`.
    degree: u32,
    /// Entries actually sent to.
    send: u32,
    seed: u64,
    /// Circulant offsets (Halton, Chord, exponential), priority order.
    offsets: Vec<u32, MAX_OFFSETS>,
    /// Torus rows (columns = n / rows).
    rows: u32,
    gap: f64,
}

/// Out-neighbours of one node in one round, in priority order. No allocation.
#[derive(Clone, Debug)]
pub struct Neighbours<'t> {
    topology: &'t Topology,
    node: u32,
    round: u32,
    next: u32,
}

impl Iterator for Neighbours<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        let t = self.topology;
        if t.family == Family::Random {
            // Scan destinations in offset order; accept by the seeded coin.
            while self.next < t.n - 1 {
                self.next += 1;
                let to = (self.node + self.next) % t.n;
                if t.random_edge(self.node, to) {
                    return Some(to);
                }
            }
            return None;
        }
        while self.next < t.send_degree(self.round) {
            let k = self.next;
            self.next += 1;
            let to = t.neighbour(self.node, self.round, k);
            // Expander self-loops and parallel edges: each peer once (see `edge_weight`).
            if to != self.node && (0..k).all(|l| t.neighbour(self.node, self.round, l) != to) {
                return Some(to);
            }
        }
        None
    }
}

impl Topology {
    /// Builds and checks a topology. `scratch` (at least [`Topology::scratch_len`] values)
    /// is used to measure the gap of the families without a closed form.
    pub fn new(spec: TopologySpec, scratch: &mut [f64]) -> Result<Topology, TopologyError> {
        let n = spec.nodes;
        if !(2..=65_536).contains(&n) {
            return Err(TopologyError::Nodes(n));
        }
        let log2 = 32 - (n - 1).leading_zeros(); // ⌈log2 n⌉, ≥ 1 for n ≥ 2
        let default_degree = if spec.family == Family::Expander { 4 } else { log2 };
        let asked = spec.degree.unwrap_or(default_degree);
        if spec.family.takes_degree() && (asked == 0 || asked >= n) {
            return Err(TopologyError::Degree(asked));
        }
        if spec.max_send == Some(0) {
            return Err(TopologyError::MaxSend);
        }
        let mut t = Topology {
            family: spec.family,
            n,
            degree: 0,
            send: 0,
            seed: spec.seed,
            offsets: Vec::new(),
            rows: 0,
            gap: 0.0,
        };
        t.degree = match spec.family {
            Family::Ring => 2.min(n - 1),
            Family::Torus => {
                let rows = (3..=n)
                    .take_while(|r| r * r <= n)
                    .filter(|r| n.is_multiple_of(*r))
                    .last();
                t.rows = rows.ok_or(TopologyError::TorusShape(n))?;
                4
            }
            Family::Hypercube => {
                if !n.is_power_of_two() {
                    return Err(TopologyError::NotPowerOfTwo(n));
                }
                n.trailing_zeros()
            }
            Family::Exponential | Family::OnePeerExponential => {
                for k in 0..log2 {
                    t.push_offset(1 << k);
                }
                if spec.family == Family::OnePeerExponential {
                    1
                } else {
                    log2
                }
            }
            Family::Complete => n - 1,
            Family::AllLimited => asked,
            Family::Random => asked,
            Family::Halton => {
                t.halton_offsets(asked)?;
                asked
            }
            Family::Chord => {
                for m in 1..=log2 {
                    t.push_offset(n.div_ceil(1 << m));
                }
                if asked as usize > t.offsets.len() {
                    return Err(TopologyError::Degree(asked));
                }
                t.offsets.truncate(asked as usize);
                asked
            }
            Family::Expander => {
                let d = asked;
                if (u64::from(n) * u64::from(d)) % 2 == 1 {
                    return Err(TopologyError::OddRegular { nodes: n, degree: d });
                }
                d
            }
        };
        t.send = spec.max_send.map_or(t.degree, |k| k.min(t.degree));
        if t.send < t.degree && !t.is_circulant() && t.family != Family::Random {
            // Truncating an undirected send list breaks the symmetry the weights rely on.
            return Err(TopologyError::Degree(t.send));
        }
        if scratch.len() < t.scratch_len() {
            return Err(TopologyError::Scratch(t.scratch_len()));
        }
        t.gap = match t.exact_contraction() {
            Some(rho) => 1.0 - rho,
            None => 1.0 - t.measured_contraction(scratch),
        };
        // A random regular graph on few nodes can come out disconnected: draw again
        // from seeds derived from the user's (the same on every node).
        let mut attempt = 0u64;
        while t.family == Family::Expander && (t.gap.is_nan() || t.gap < spec.min_gap) && attempt < 64 {
            attempt += 1;
            t.seed = mix(spec.seed ^ attempt);
            t.gap = 1.0 - t.measured_contraction(scratch);
        }
        if t.gap.is_nan() || t.gap < spec.min_gap {
            return Err(TopologyError::GapTooSmall {
                gap: t.gap,
                min_gap: spec.min_gap,
            });
        }
        Ok(t)
    }

    fn push_offset(&mut self, o: u32) {
        let o = o % self.n;
        if o != 0 && !self.offsets.contains(&o) {
            let _ = self.offsets.push(o);
        }
    }

    fn halton_offsets(&mut self, degree: u32) -> Result<(), TopologyError> {
        if degree as usize > MAX_OFFSETS {
            return Err(TopologyError::Degree(degree));
        }
        // Van der Corput base 2, cyclically shifted (a Cranley–Patterson rotation) so
        // that its first point lands on offset 1: o_r = ⌊n·h(r)⌋ - ⌊n·h(1)⌋ + 1 mod n.
        let n = u64::from(self.n);
        let point = |r: u32| (n * u64::from(r.reverse_bits())) >> 32;
        let shift = n + 1 - point(1);
        let mut r = 1u32;
        while self.offsets.len() < degree as usize && r < 4 * self.n + 64 {
            self.push_offset(((point(r) + shift) % n) as u32);
            r += 1;
        }
        if self.offsets.len() < degree as usize {
            return Err(TopologyError::Degree(degree));
        }
        Ok(())
    }

    /// Neighbour `k` of `i` in the expander: pairs of a seeded permutation and its
    /// inverse, plus a seeded perfect matching when the degree is odd.
    fn expander_neighbour(&self, i: u32, k: u32) -> u32 {
        let perm = Feistel::new(self.n, self.seed.wrapping_add(u64::from(k / 2)));
        if k == self.degree - 1 && self.degree % 2 == 1 {
            let m = Feistel::new(self.n, self.seed ^ 0x5bd1_e995);
            return m.forward(m.inverse(i) ^ 1);
        }
        if k.is_multiple_of(2) {
            perm.forward(i)
        } else {
            perm.inverse(i)
        }
    }

    fn random_edge(&self, from: u32, to: u32) -> bool {
        if to == (from + 1) % self.n {
            return true;
        }
        if from == to || self.n <= 2 {
            return false;
        }
        let p = f64::from(self.degree - 1) / f64::from(self.n - 2);
        let coin = (mix(self.seed ^ (u64::from(from) << 32 | u64::from(to))) >> 11) as f64 / (1u64 << 53) as f64;
        coin < p
    }

    // ----- queries -----

    /// The family.
    pub fn family(&self) -> Family {
        self.family
    }

    /// Nodes.
    pub fn nodes(&self) -> u32 {
        self.n
    }

    /// Full out-degree (before `max_send`).
    pub fn degree(&self) -> u32 {
        self.degree
    }

    /// Peers each node sends to per round (after `max_send`).
    pub fn send_degree(&self, _round: u32) -> u32 {
        self.send
    }

    /// Rounds after which the schedule repeats (1 for static graphs).
    pub fn period(&self) -> u32 {
        match self.family {
            Family::OnePeerExponential => self.offsets.len() as u32,
            _ => 1,
        }
    }

    /// Whether the graph changes from round to round.
    pub fn is_time_varying(&self) -> bool {
        self.period() > 1
    }

    /// Whether uniform weights are not doubly stochastic here, so exact averaging needs
    /// push-sum (directed, irregular graphs).
    pub fn needs_push_sum(&self) -> bool {
        self.family == Family::Random
    }

    /// `1 - ρ`, with `ρ` the per-round contraction of the consensus error (for
    /// time-varying graphs, the per-round rate of one period's product).
    pub fn spectral_gap(&self) -> f64 {
        self.gap
    }

    /// Length of the scratch buffer `new` and the measuring functions need.
    pub fn scratch_len(&self) -> usize {
        3 * self.n as usize
    }

    /// Send list of `node` in `round`, in priority order.
    pub fn out_neighbours(&self, node: u32, round: u32) -> Neighbours<'_> {
        Neighbours {
            topology: self,
            node: node % self.n,
            round,
            next: 0,
        }
    }

    /// Receive list of `node` in `round`: every node whose send list names it.
    pub fn in_neighbours(&self, node: u32, round: u32) -> impl Iterator<Item = u32> + '_ {
        let node = node % self.n;
        (0..self.n).filter(move |&j| j != node && self.out_neighbours(j, round).any(|k| k == node))
    }

    /// Every node `node` ever exchanges updates with, over a period, in either
    /// direction: the peer table a node needs.
    pub fn peers_of(&self, node: u32) -> impl Iterator<Item = u32> + '_ {
        let node = node % self.n;
        (0..self.n).filter(move |&j| {
            j != node
                && (0..self.period()).any(|r| self.edge_weight(node, j, r) > 0.0 || self.edge_weight(j, node, r) > 0.0)
        })
    }

    /// Weight `from` gives `to` in `round`: its share per edge times the edges between
    /// them (parallel expander edges count twice). Zero when `to` is not a destination.
    pub fn edge_weight(&self, from: u32, to: u32, round: u32) -> f64 {
        let edges = match self.family {
            Family::Random => u32::from(self.random_edge(from, to)),
            _ => (0..self.send_degree(round))
                .filter(|&k| self.neighbour(from, round, k) == to)
                .count() as u32,
        };
        f64::from(edges) * self.weight(from, round)
    }

    /// Share of `from`'s value each of its edges carries (its self share is the same,
    /// plus the shares of self-loops). For `Random` (push-sum) it is `1/(d_out + 1)`.
    pub fn weight(&self, from: u32, round: u32) -> f64 {
        let d = match self.family {
            Family::Random => self.out_neighbours(from, round).count() as u32,
            _ => self.send_degree(round),
        };
        1.0 / f64::from(d + 1)
    }

    fn is_circulant(&self) -> bool {
        matches!(
            self.family,
            Family::Exponential | Family::OnePeerExponential | Family::Halton | Family::Chord | Family::AllLimited
        ) || (self.family == Family::Complete)
    }

    /// Neighbour `k` (priority order) of `i` in `round`.
    fn neighbour(&self, i: u32, round: u32, k: u32) -> u32 {
        let n = self.n;
        match self.family {
            Family::Ring => {
                if k == 0 {
                    (i + 1) % n
                } else {
                    (i + n - 1) % n
                }
            }
            Family::Torus => {
                let cols = n / self.rows;
                let (r, c) = (i / cols, i % cols);
                match k {
                    0 => r * cols + (c + 1) % cols,
                    1 => ((r + 1) % self.rows) * cols + c,
                    2 => r * cols + (c + cols - 1) % cols,
                    _ => ((r + self.rows - 1) % self.rows) * cols + c,
                }
            }
            Family::Hypercube => i ^ (1 << k),
            Family::OnePeerExponential => {
                let o = self.offsets[(round % self.offsets.len() as u32) as usize];
                (i + o) % n
            }
            Family::Exponential | Family::Halton | Family::Chord => (i + self.offsets[k as usize]) % n,
            Family::AllLimited | Family::Complete => (i + k + 1) % n,
            Family::Expander => self.expander_neighbour(i, k),
            Family::Random => (i + k + 1) % n, // not reached: Random iterates by coin
        }
    }

    // ----- convergence -----

    /// Per-round contraction in closed form, where one exists: circulant graphs (from
    /// their eigenvalues `w₀ + Σ w·e^{2πi·o·k/n}`), tori and hypercubes.
    fn exact_contraction(&self) -> Option<f64> {
        let n = self.n;
        let d = self.send;
        let w = 1.0 / f64::from(d + 1);
        match self.family {
            Family::Hypercube => Some(if d == 0 {
                1.0
            } else {
                (1.0 - 2.0 / f64::from(d + 1)).abs()
            }),
            Family::Ring if n == 2 => Some(0.0),
            Family::Ring => Some(
                (1..n)
                    .map(|k| (w * (1.0 + 2.0 * libm::cos(2.0 * PI * f64::from(k) / f64::from(n)))).abs())
                    .fold(0.0, f64::max),
            ),
            Family::Torus => {
                let (rows, cols) = (self.rows, n / self.rows);
                let mut rho = 0.0f64;
                for a in 0..rows {
                    for b in 0..cols {
                        if a == 0 && b == 0 {
                            continue;
                        }
                        let ca = libm::cos(2.0 * PI * f64::from(a) / f64::from(rows));
                        let cb = libm::cos(2.0 * PI * f64::from(b) / f64::from(cols));
                        rho = rho.max((w * (1.0 + 2.0 * ca + 2.0 * cb)).abs());
                    }
                }
                Some(rho)
            }
            Family::OnePeerExponential => {
                // The period's product is circulant too: multiply the eigenvalues.
                let l = self.offsets.len();
                let rho_period = (1..n)
                    .map(|k| {
                        self.offsets.iter().fold(1.0, |m, &o| {
                            let th = 2.0 * PI * f64::from(o) * f64::from(k) / f64::from(n);
                            m * libm::sqrt(sq(0.5 + 0.5 * libm::cos(th)) + sq(0.5 * libm::sin(th)))
                        })
                    })
                    .fold(0.0, f64::max);
                // n a power of two: the product is exactly the average (up to rounding).
                Some(if rho_period < 1e-12 {
                    0.0
                } else {
                    libm::pow(rho_period, 1.0 / l as f64)
                })
            }
            _ if self.is_circulant() => Some(
                (1..n)
                    .map(|k| {
                        let (mut re, mut im) = (w, 0.0);
                        for j in 0..d {
                            let o = self.neighbour(0, 0, j);
                            let th = 2.0 * PI * f64::from(o) * f64::from(k) / f64::from(n);
                            re += w * libm::cos(th);
                            im += w * libm::sin(th);
                        }
                        libm::sqrt(re * re + im * im)
                    })
                    .fold(0.0, f64::max),
            ),
            _ => None,
        }
    }

    /// Applies one round of mixing: `next = W x` (push-sum: column-stochastic shares).
    pub fn mix_into(&self, round: u32, x: &[f64], next: &mut [f64]) {
        let n = self.n as usize;
        for (i, v) in next.iter_mut().enumerate().take(n) {
            *v = x[i] * self.weight(i as u32, round);
        }
        for j in 0..self.n {
            let w = self.weight(j, round);
            if self.family == Family::Random {
                for i in self.out_neighbours(j, round) {
                    next[i as usize] += w * x[j as usize];
                }
            } else {
                // Every edge, self-loops and parallel edges included.
                for k in 0..self.send_degree(round) {
                    next[self.neighbour(j, round, k) as usize] += w * x[j as usize];
                }
            }
        }
    }

    /// Splits `scratch` into a seeded random start `x` (values in [-0.5, 0.5)), a
    /// buffer for the next iterate, and a unit push-sum mass.
    fn seeded_start<'s>(&self, scratch: &'s mut [f64], salt: u64) -> (&'s mut [f64], &'s mut [f64], &'s mut [f64]) {
        let n = self.n as usize;
        let (x, rest) = scratch.split_at_mut(n);
        let (next, rest) = rest.split_at_mut(n);
        let mass = &mut rest[..n];
        let mut state = self.seed ^ salt;
        for v in x.iter_mut() {
            state = mix(state.wrapping_add(1));
            *v = (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
        }
        mass.fill(1.0);
        (x, next, mass)
    }

    /// Power iteration over the implicit operator: the asymptotic per-round contraction
    /// of the consensus error (`|λ2|`), per round of a period for time-varying graphs.
    /// Uses `scratch[..3n]`. Push-sum graphs are iterated with their mass vector.
    pub fn measured_contraction(&self, scratch: &mut [f64]) -> f64 {
        let n = self.n as usize;
        let (x, next, mass) = self.seeded_start(scratch, 0x2545_f491_4f6c_dd1d);
        let period = self.period();
        let mut rate = 1.0;
        let mut last = f64::NAN;
        let mut round = 0;
        let start = self.deviation(x, mass);
        for it in 0..20_000 {
            let before = self.deviation(x, mass);
            if before < 1e-280 {
                return 0.0;
            }
            for _ in 0..period {
                self.mix_into(round, x, next);
                x.copy_from_slice(next);
                if self.needs_push_sum() {
                    self.mix_into(round, mass, next);
                    mass.copy_from_slice(next);
                }
                round = round.wrapping_add(1);
            }
            let after = self.deviation(x, mass);
            if self.needs_push_sum() {
                // Push-sum is not rescaled (the mass must stay consistent): report the
                // mean rate until the error nears rounding noise.
                rate = libm::pow(after / start, 1.0 / f64::from(round));
                if after <= 1e-10 * start {
                    break;
                }
                continue;
            }
            rate = libm::pow(after / before, 1.0 / f64::from(period));
            if !self.needs_push_sum() {
                // Stay in the mean-free subspace at unit length: no cancellation against
                // a growing mean, no underflow.
                let mean = x.iter().sum::<f64>() / n as f64;
                let scale = 1.0 / after.max(1e-300);
                x.iter_mut().for_each(|v| *v = (*v - mean) * scale);
            }
            if it > 50 && (rate - last).abs() < 1e-13 {
                break;
            }
            last = rate;
        }
        rate.min(1.0)
    }

    /// Euclidean norm of the consensus error of `x` (de-biased by `mass` for push-sum).
    fn deviation(&self, x: &[f64], mass: &[f64]) -> f64 {
        let n = x.len() as f64;
        if self.needs_push_sum() {
            let total: f64 = x.iter().sum::<f64>() / mass.iter().sum::<f64>();
            libm::sqrt(x.iter().zip(mass).map(|(v, m)| sq(v / m - total)).sum::<f64>())
        } else {
            let mean = x.iter().sum::<f64>() / n;
            libm::sqrt(x.iter().map(|v| sq(v - mean)).sum::<f64>())
        }
    }

    /// Rounds the gap predicts to shrink the consensus error by `factor` (e.g. 1e-6).
    pub fn predicted_rounds(&self, factor: f64) -> u32 {
        let rho = 1.0 - self.gap;
        if rho <= 1e-12 {
            return self.period();
        }
        let r = libm::ceil(libm::log(factor) / libm::log(rho));
        if r.is_finite() && r < f64::from(u32::MAX) {
            r as u32
        } else {
            u32::MAX
        }
    }

    /// Rounds of actual mixing, from a seeded random start, until the largest deviation
    /// from the average is at most `factor` times the initial one (`None` past `limit`).
    /// Uses `scratch[..3n]`.
    pub fn measured_rounds(&self, factor: f64, limit: u32, scratch: &mut [f64]) -> Option<u32> {
        let n = self.n as usize;
        let (x, next, mass) = self.seeded_start(scratch, 0x9e37_79b9);
        let mean = x.iter().sum::<f64>() / n as f64;
        let spread = |x: &[f64], m: &[f64]| x.iter().zip(m).map(|(v, w)| (v / w - mean).abs()).fold(0.0, f64::max);
        let start = spread(x, mass);
        for round in 0..limit {
            if spread(x, mass) <= factor * start {
                return Some(round);
            }
            self.mix_into(round, x, next);
            x.copy_from_slice(next);
            self.mix_into(round, mass, next);
            mass.copy_from_slice(next);
        }
        None
    }
}

/// A seeded pseudorandom permutation of `0..n` computable per element in both
/// directions: a 4-round Feistel network on the smallest even-width domain ≥ `n`,
/// cycle-walking back into range.
#[derive(Clone, Copy, Debug)]
struct Feistel {
    n: u32,
    half_bits: u32,
    seed: u64,
}

impl Feistel {
    fn new(n: u32, seed: u64) -> Self {
        let bits = 32 - (n.max(2) - 1).leading_zeros();
        Feistel {
            n,
            half_bits: bits.div_ceil(2).max(1),
            seed,
        }
    }

    fn round_fn(&self, round: u32, half: u32) -> u32 {
        (mix(self.seed ^ (u64::from(round) << 40) ^ u64::from(half)) as u32) & ((1 << self.half_bits) - 1)
    }

    fn encrypt(&self, v: u32) -> u32 {
        let mask = (1 << self.half_bits) - 1;
        let (mut l, mut r) = (v >> self.half_bits, v & mask);
        for round in 0..4 {
            let next = l ^ self.round_fn(round, r);
            l = r;
            r = next;
        }
        l << self.half_bits | r
    }

    fn decrypt(&self, v: u32) -> u32 {
        let mask = (1 << self.half_bits) - 1;
        let (mut l, mut r) = (v >> self.half_bits, v & mask);
        for round in (0..4).rev() {
            let prev = r ^ self.round_fn(round, l);
            r = l;
            l = prev;
        }
        l << self.half_bits | r
    }

    fn forward(&self, i: u32) -> u32 {
        let mut v = self.encrypt(i);
        while v >= self.n {
            v = self.encrypt(v);
        }
        v
    }

    fn inverse(&self, i: u32) -> u32 {
        let mut v = self.decrypt(i);
        while v >= self.n {
            v = self.decrypt(v);
        }
        v
    }
}

fn sq(x: f64) -> f64 {
    x * x
}

/// SplitMix64's finaliser: a cheap, well-mixing 64-bit hash.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feistel_is_a_permutation_with_an_inverse() {
        for n in [2u32, 3, 7, 64, 1000] {
            let f = Feistel::new(n, 42);
            let mut seen = [false; 1000];
            for i in 0..n {
                let j = f.forward(i);
                assert!(j < n);
                assert!(!seen[j as usize], "n={n}: {j} twice");
                seen[j as usize] = true;
                assert_eq!(f.inverse(j), i);
            }
        }
    }

    #[test]
    fn halton_offsets_start_at_one() {
        let mut scratch = [0.0; 3 * 8];
        let t = Topology::new(
            TopologySpec {
                degree: Some(3),
                ..TopologySpec::new(Family::Halton, 8)
            },
            &mut scratch,
        )
        .unwrap();
        let out: heapless::Vec<u32, 8> = t.out_neighbours(0, 0).collect();
        assert_eq!(&out[..], &[1, 7, 3]);
    }
}

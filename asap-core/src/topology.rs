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
//! The gap `1 - ρ`, with `ρ` the contraction of the consensus error per round (`|λ2(W)|`,
//! the second largest eigenvalue modulus; per period for time-varying graphs), is
//! computed in closed form for circulant graphs, tori, hypercubes and the degree-1
//! `Random` graph (a directed ring), and measured over the implicit mixing operator
//! (three caller-provided vectors) for the others: Lanczos for the symmetric expander
//! (after an exact connectivity check), power iteration with a two-dimensional
//! Rayleigh–Ritz step for the directed `Random` graph. The measurement's work is
//! bounded ([`MAX_GAP_WORK`]). A topology whose gap is below a threshold, or 0, is
//! refused when it is built: a graph that cannot converge never runs.

use core::f64::consts::PI;
use core::fmt;

use heapless::Vec;

/// Most entries a circulant offset list holds (degree cap of Halton, Chord, exponential).
pub const MAX_OFFSETS: usize = 32;

/// Gap below which [`Topology::new`] refuses a graph (it would need more than about
/// 14 million rounds per factor e of consensus).
pub const DEFAULT_MIN_GAP: f64 = 1e-7;

/// Most work [`Topology::new`] spends measuring the gap of the families without a closed
/// form (`Expander`, `Random`), over all of an expander's redraws, in units of about a
/// nanosecond: a `Random` coin is one, a round of an `Expander` permutation's Feistel
/// network two. A few seconds at most on one core of a current x86 machine; past it the
/// spec is refused with [`TopologyError::GapUnmeasured`] rather than measured for
/// minutes. Every graph of up to 1,024 nodes fits, as do expanders of degree up to 16 on
/// 65,536 nodes; a `Random` graph costs `n²` coins a round of iteration and needs at
/// least 128 rounds, so it fits to about 2,890 nodes. (An expander whose draws each need
/// a full measurement, against a threshold within a hair of their gaps, may not fit.)
pub const MAX_GAP_WORK: u64 = 1 << 30;

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
    /// `dstorm` Halton graph, as MALT-2's `IoNetHalton::mkSend` builds it: the send
    /// offsets are `⌊n·h(i)⌋` for `degree` consecutive indices of the van der Corput
    /// sequence (Halton base 2, `h(1), h(2), h(3), … = 1/2, 1/4, 3/4, 1/8, …`), from
    /// `i = 2^⌊log2 n⌋ / 2`, whose point `2^-⌊log2 n⌋` puts the first offset on 1, and
    /// wrapping to `i = 1` after `i = n`. An offset of 0 (a self-loop) or a repeat is
    /// skipped but still counts toward `degree`, so the out-degree
    /// ([`Topology::degree`]) can be lower than asked (n = 5, degree 4: 1, 3). n = 16,
    /// degree 4: 1, 9, 5, 13 (gap 0.175). Connected down to degree 1 (offset 1 comes
    /// first). A directed circulant: every node sends to and receives from the same
    /// number of peers, so uniform weights are doubly stochastic without push-sum.
    ///
    /// The reference multiplies in `f32`, which rounds `n·h(i)` up to the next integer
    /// for some indices from n = 6,655 on; the offsets here are the exact
    /// `⌊n·h(i)⌋`. Until issue #18 `halton` shifted the sequence's values instead of
    /// its index (`⌊n·h(r)⌋ − ⌊n/2⌋ + 1 mod n`, r = 1, 2, …), a different graph. That
    /// one is not kept: at degree `⌈log2 n⌉` its gap is larger at 344 sizes of
    /// 2..=1024 (0.40 against 0.175 at n = 16), smaller at 613, equal at 66 (geometric
    /// means 0.0034 and 0.0036), and beats both `exp` and `chord` of the same degree
    /// only at n = 10, 14 and 17.
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

    /// Length of the scratch buffer [`Topology::new`] needs for this spec, in `f64`s: the
    /// same as the built topology's [`Topology::scratch_len`], but known before it exists
    /// (and in `const` context), so that firmware can size a static buffer. Three vectors
    /// of one value per node, whatever the family: the gap measurements of `Expander` and
    /// `Random` and [`Topology::measured_rounds`] work in them. Saturates rather than
    /// overflows for node counts `new` refuses anyway.
    ///
    /// ```
    /// use asap_core::topology::{Family, Topology, TopologySpec};
    ///
    /// const SPEC: TopologySpec = TopologySpec::new(Family::Exponential, 8);
    /// let mut scratch = [0.0f64; SPEC.scratch_len()];
    /// let topology = Topology::new(SPEC, &mut scratch).unwrap();
    /// assert_eq!(topology.scratch_len(), SPEC.scratch_len());
    /// ```
    pub const fn scratch_len(&self) -> usize {
        scratch_len(self.nodes)
    }
}

/// Scratch values for `nodes` nodes: three vectors (see [`TopologySpec::scratch_len`]).
const fn scratch_len(nodes: u32) -> usize {
    (nodes as usize).saturating_mul(3)
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
    /// The graph does not mix: its spectral gap is below the threshold, or 0
    /// (disconnected) whatever the threshold.
    GapTooSmall {
        /// The gap, or an upper bound on it below the threshold when the measurement of
        /// an expander stopped as soon as it proved the graph too slow.
        gap: f64,
        /// The threshold.
        min_gap: f64,
    },
    /// The scratch buffer is shorter than the length it carries, which
    /// [`TopologySpec::scratch_len`] gives before building (three values per node).
    Scratch(usize),
    /// Measuring the gap would take more than [`MAX_GAP_WORK`] (a `Random` graph of
    /// thousands of nodes, an `Expander` of tens of thousands and a high degree, or a
    /// threshold so close to the gaps of an expander's draws that each needs a full
    /// measurement to decide).
    GapUnmeasured {
        /// Nodes.
        nodes: u32,
        /// Degree.
        degree: u32,
    },
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
            TopologyError::GapTooSmall { gap, .. } if *gap <= 0.0 => {
                f.write_str("spectral gap 0: the graph is disconnected and does not mix")
            }
            TopologyError::GapTooSmall { gap, min_gap } => {
                write!(
                    f,
                    "spectral gap {gap:.3e} below {min_gap:.1e}: the graph does not mix (disconnected?)"
                )
            }
            TopologyError::Scratch(n) => write!(f, "scratch buffer needs {n} values"),
            TopologyError::GapUnmeasured { nodes, degree } => write!(
                f,
                "measuring the spectral gap of {nodes} nodes at degree {degree} takes too long \
                 (more than {MAX_GAP_WORK} units of work): fewer nodes or a lower degree"
            ),
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
    /// `Random`: the coins that take an edge are below this (see `random_threshold`).
    threshold: u64,
}

impl Iterator for Neighbours<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        let t = self.topology;
        if t.family == Family::Random {
            // Scan destinations in offset order: the next node always, the others by
            // their seeded coin (as `random_edge` decides, without its other cases).
            if self.next == 0 {
                self.next = 1;
                return Some(if self.node + 1 == t.n { 0 } else { self.node + 1 });
            }
            while self.next < t.n - 1 {
                self.next += 1;
                let to = self.node + self.next;
                let to = if to >= t.n { to - t.n } else { to };
                if t.random_coin(self.node as usize, to as usize) < self.threshold {
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
            // The other families' lists have no repeats by construction (distinct
            // non-zero offsets, torus sides of at least 3, hypercube bits).
            let repeat = t.family == Family::Expander
                && (to == self.node || (0..k).any(|l| t.neighbour(self.node, self.round, l) == to));
            if !repeat {
                return Some(to);
            }
        }
        None
    }
}

impl Topology {
    /// Builds and checks a topology. `scratch` must hold at least
    /// [`TopologySpec::scratch_len`] values (three per node; shorter is
    /// [`TopologyError::Scratch`] with that length): it is used to measure the gap of the
    /// families without a closed form, which takes at most [`MAX_GAP_WORK`] (a few
    /// seconds at most; an expander's redraws included). The caller owns it, so the core
    /// never allocates; it holds nothing once `new` returns and can be reused, e.g. for
    /// [`Topology::measured_rounds`].
    ///
    /// ```
    /// use asap_core::topology::{Family, Topology, TopologySpec};
    ///
    /// let spec = TopologySpec { degree: Some(3), ..TopologySpec::new(Family::Expander, 64) };
    /// let mut scratch = vec![0.0; spec.scratch_len()];
    /// let topology = Topology::new(spec, &mut scratch)?;
    /// assert!(topology.spectral_gap() > 0.0);
    /// # Ok::<(), asap_core::TopologyError>(())
    /// ```
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
                t.offsets.len() as u32
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
        // A gap of 0 (disconnected) never mixes, whatever the threshold.
        let refused = |gap: f64| !(gap > 0.0 && gap >= spec.min_gap);
        let mut work = MAX_GAP_WORK;
        t.gap = match t.exact_contraction() {
            Some(rho) => 1.0 - rho,
            None => 1.0 - t.measure(scratch, spec.min_gap, &mut work)?,
        };
        // A random regular graph on few nodes can come out disconnected: draw again
        // from seeds derived from the user's (the same on every node). All draws share
        // one work budget.
        let mut attempt = 0u64;
        while t.family == Family::Expander && refused(t.gap) && attempt < 64 {
            attempt += 1;
            t.seed = mix(spec.seed ^ attempt);
            t.gap = 1.0 - t.measure(scratch, spec.min_gap, &mut work)?;
        }
        if refused(t.gap) {
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

    /// The Halton offsets of `terms` consecutive sequence indices (see [`Family::Halton`]);
    /// `push_offset` drops the self-loops and repeats among them.
    fn halton_offsets(&mut self, terms: u32) -> Result<(), TopologyError> {
        if terms as usize > MAX_OFFSETS {
            return Err(TopologyError::Degree(terms));
        }
        let n = self.n;
        // h(i) is the bit reversal of i read as a 32-bit fraction, so ⌊n·h(i)⌋ is exact
        // in integers (i ≤ n ≤ 2^16).
        let point = |i: u32| ((u64::from(n) * u64::from(i.reverse_bits())) >> 32) as u32;
        // Index (from 0, as the reference counts) of 2^-⌊log2 n⌋, the point n maps to 1.
        let first = (1u32 << (31 - n.leading_zeros())) / 2 - 1;
        for r in 0..terms {
            // `terms < n`: wraps at most once.
            self.push_offset(point((first + r) % n + 1));
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
        self.random_coin(from as usize, to as usize) < self.random_threshold()
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

    /// Length of the scratch buffer `new` and the measuring functions need: the spec's
    /// [`TopologySpec::scratch_len`].
    pub fn scratch_len(&self) -> usize {
        scratch_len(self.n)
    }

    /// Send list of `node` in `round`, in priority order.
    pub fn out_neighbours(&self, node: u32, round: u32) -> Neighbours<'_> {
        Neighbours {
            topology: self,
            node: node % self.n,
            round,
            next: 0,
            threshold: if self.family == Family::Random && self.n > 2 {
                self.random_threshold()
            } else {
                0
            },
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
        let n = self.n;
        // A circulant's edge is an offset among the first `send`: found without
        // computing every neighbour.
        let offset = (from < n && to < n).then(|| if to >= from { to - from } else { to + n - from });
        let edges = match (self.family, offset) {
            (Family::Random, _) => u32::from(self.random_edge(from, to)),
            (Family::AllLimited | Family::Complete, Some(o)) => u32::from(o >= 1 && o <= self.send),
            (Family::Exponential | Family::Halton | Family::Chord, Some(o)) => {
                u32::from(self.offsets[..self.send as usize].contains(&o))
            }
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
            Family::Ring => Some(ring_contraction(n, w)),
            // Degree 1 is the directed ring `i → i + 1` alone (no coin comes up), with
            // shares 1/2: eigenvalues `(1 + e^{2πik/n}) / 2`, moduli `|cos(πk/n)|`.
            Family::Random if self.degree == 1 => Some(libm::cos(PI / f64::from(n))),
            // Offsets 1..=d: `|Σ_{j=0..d} e^{iθj}| / (d+1)` with `θ = 2πk/n` is
            // `|sin((d+1)θ/2)| / ((d+1)·sin(θ/2))` (reduced mod 2n first: exact angles).
            Family::AllLimited | Family::Complete => Some(
                (1..n)
                    .map(|k| {
                        let turns = (u64::from(d + 1) * u64::from(k)) % (2 * u64::from(n));
                        let num = libm::sin(PI * turns as f64 / f64::from(n)).abs();
                        num / (f64::from(d + 1) * libm::sin(PI * f64::from(k) / f64::from(n)))
                    })
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
        fill_seeded(x, self.seed ^ salt);
        mass.fill(1.0);
        (x, next, mass)
    }

    /// The per-round contraction `ρ = 1 - gap`, measured again (`scratch[..3n]`): the
    /// closed form where there is one, else the measurement [`Topology::new`] makes, with
    /// a fresh budget of [`MAX_GAP_WORK`].
    pub fn measured_contraction(&self, scratch: &mut [f64]) -> Result<f64, TopologyError> {
        if scratch.len() < self.scratch_len() {
            return Err(TopologyError::Scratch(self.scratch_len()));
        }
        match self.exact_contraction() {
            Some(rho) => Ok(rho),
            None => {
                let mut work = MAX_GAP_WORK;
                self.measure(scratch, 0.0, &mut work)
            }
        }
    }

    /// Measures `ρ` of the families without a closed form (`Expander`, `Random`), taking
    /// the work it does from `work` (see [`MAX_GAP_WORK`]); [`TopologyError::GapUnmeasured`]
    /// when that runs out first. The result is `ρ` to about 1e-8 of the gap for an
    /// expander and 1e-4 for most random digraphs (see [`Topology::measure_random`] for
    /// the others), or, for an expander once it proves `1 - ρ < min_gap`, the lower
    /// bound on `ρ` that proves it.
    fn measure(&self, scratch: &mut [f64], min_gap: f64, work: &mut u64) -> Result<f64, TopologyError> {
        let n = self.n as usize;
        let (a, rest) = scratch.split_at_mut(n);
        let (b, rest) = rest.split_at_mut(n);
        let c = &mut rest[..n];
        if self.family == Family::Expander {
            self.measure_expander(a, b, c, min_gap, work)
        } else {
            self.measure_random(a, b, c, work)
        }
    }

    /// Takes `cost` from `work`, or says the gap cannot be measured.
    fn spend(&self, work: &mut u64, cost: u64) -> Result<(), TopologyError> {
        *work = work.checked_sub(cost).ok_or(TopologyError::GapUnmeasured {
            nodes: self.n,
            degree: self.degree,
        })?;
        Ok(())
    }

    // ----- expander: connectivity, then Lanczos -----

    /// Every edge of the expander once, as a pair of nodes: `i — p(i)` for each
    /// permutation `p` (its inverse gives the same edges the other way), and each pair of
    /// the matching. Self-loops (`p(i) = i`) come as `(i, i)`.
    fn expander_edges(&self, mut edge: impl FnMut(usize, usize)) {
        let n = self.n;
        for m in 0..self.degree / 2 {
            let perm = Feistel::new(n, self.seed.wrapping_add(u64::from(m)));
            for i in 0..n {
                edge(i as usize, perm.forward(i) as usize);
            }
        }
        if self.degree % 2 == 1 {
            // `i ↦ F(F⁻¹(i) ^ 1)` pairs F(2t) with F(2t + 1); n is even.
            let m = Feistel::new(n, self.seed ^ 0x5bd1_e995);
            for t in 0..n / 2 {
                edge(m.forward(2 * t) as usize, m.forward(2 * t + 1) as usize);
            }
        }
    }

    /// Work of one [`Topology::expander_edges`]: a sweep of a Feistel permutation over
    /// `0..n` walks each point of its domain at most once, four rounds a step.
    fn expander_edges_cost(&self) -> u64 {
        let domain = 1u64 << (2 * Feistel::new(self.n, 0).half_bits);
        u64::from(self.degree.div_ceil(2)) * 4 * domain * FEISTEL_ROUND_WORK
    }

    /// Whether the expander is connected (union–find; `parent` holds node numbers, exact
    /// in `f64`).
    fn expander_connected(&self, parent: &mut [f64]) -> bool {
        fn root(parent: &mut [f64], mut i: usize) -> usize {
            while parent[i] as usize != i {
                let grand = parent[parent[i] as usize];
                parent[i] = grand;
                i = grand as usize;
            }
            i
        }
        for (i, p) in parent.iter_mut().enumerate() {
            *p = i as f64;
        }
        let mut components = parent.len();
        self.expander_edges(|i, j| {
            let (ri, rj) = (root(parent, i), root(parent, j));
            if ri != rj {
                parent[ri] = rj as f64;
                components -= 1;
            }
        });
        components == 1
    }

    /// The expander's `ρ`. A disconnected draw has `ρ = 1` exactly; a connected one of
    /// degree 2 is a single cycle (a permutation and its inverse), whose `ρ` is the
    /// ring's. Otherwise Lanczos on the symmetric mixing matrix restricted to mean-free
    /// vectors (three vectors of `n`, no reorthogonalisation, which keeps the extreme
    /// Ritz values accurate): its extreme Ritz values approach the extreme eigenvalues
    /// from inside, so they are lower bounds on `ρ` at every step and converge in about
    /// `n^(1/3)` steps for random regular graphs.
    #[inline(never)] // its stack frame (the tridiagonal matrix) only when measuring
    fn measure_expander(
        &self,
        a: &mut [f64],
        b: &mut [f64],
        c: &mut [f64],
        min_gap: f64,
        work: &mut u64,
    ) -> Result<f64, TopologyError> {
        let sweep = self.expander_edges_cost();
        self.spend(work, sweep)?;
        if !self.expander_connected(a) {
            return Ok(1.0);
        }
        if self.degree == 2 {
            return Ok(ring_contraction(self.n, 1.0 / 3.0));
        }
        let w = 1.0 / f64::from(self.degree + 1);
        let (mut prev, mut v, mut next) = (a, b, c);
        fill_seeded(v, self.seed ^ 0x2545_f491_4f6c_dd1d);
        centre(v);
        let norm = libm::sqrt(dot(v, v));
        v.iter_mut().for_each(|x| *x /= norm);
        prev.fill(0.0);
        let mut alpha = [0.0f64; MAX_LANCZOS];
        let mut beta = [0.0f64; MAX_LANCZOS];
        let mut recent = [0.0f64; LANCZOS_WINDOW];
        let mut beta_prev = 0.0;
        for j in 0..MAX_LANCZOS {
            self.spend(work, sweep)?;
            // next = W v - β_{j-1} prev
            for ((x, &p), &y) in next.iter_mut().zip(prev.iter()).zip(v.iter()) {
                *x = w * y - beta_prev * p;
            }
            self.expander_edges(|i, k| {
                next[i] += w * v[k];
                next[k] += w * v[i];
            });
            let mut a_j = dot(next, v);
            axpy(next, -a_j, v);
            // Back into the mean-free subspace, and orthogonal to v once more: rounding
            // must not bring the average (eigenvalue 1) back.
            centre(next);
            let again = dot(next, v);
            axpy(next, -again, v);
            a_j += again;
            let b_j = libm::sqrt(dot(next, next));
            alpha[j] = a_j;
            beta[j] = b_j;
            let (lo, hi) = tridiagonal_extremes(&alpha[..=j], &beta[..j]);
            let rho = hi.max(-lo).clamp(0.0, 1.0);
            // Stop at a lower bound that already refuses the graph; at an invariant Krylov
            // space (its Ritz values are eigenvalues); or when ρ (which only grows) grew by
            // less than LANCZOS_TOL of the gap over the last LANCZOS_WINDOW steps.
            let settled = j >= LANCZOS_WINDOW && rho - recent[j % LANCZOS_WINDOW] <= LANCZOS_TOL * (1.0 - rho);
            recent[j % LANCZOS_WINDOW] = rho;
            if 1.0 - rho < min_gap || b_j <= 1e-12 || settled {
                return Ok(rho);
            }
            next.iter_mut().for_each(|x| *x /= b_j);
            (prev, v, next) = (v, next, prev);
            beta_prev = b_j;
        }
        Err(TopologyError::GapUnmeasured {
            nodes: self.n,
            degree: self.degree,
        })
    }

    // ----- random digraph: power iteration with a two-dimensional Ritz step -----

    /// The coins (53 bits) below which an edge beyond the ring is taken, `p` the
    /// probability `(d - 1) / (n - 2)` (`n > 2`): `c < ⌈p·2^53⌉` exactly when
    /// `c / 2^53 < p` (the 53-bit coin as a uniform draw in [0, 1)).
    fn random_threshold(&self) -> u64 {
        let p = f64::from(self.degree - 1) / f64::from(self.n - 2);
        libm::ceil(p * (1u64 << 53) as f64) as u64
    }

    /// The coin of edge `from → to` (53 bits).
    fn random_coin(&self, from: usize, to: usize) -> u64 {
        mix(self.seed ^ ((from as u64) << 32 | to as u64)) >> 11
    }

    /// `(W x)[i]` on a `Random` graph (`n ≥ 3`), `w` the nodes' shares: `i`'s own share
    /// and those of its in-neighbours (its ring predecessor, and every node whose coin
    /// for `i` came up). `n - 2` coins.
    fn random_gather(&self, i: usize, x: &[f64], w: &[f64], threshold: u64) -> f64 {
        let n = x.len();
        let prev = if i == 0 { n - 1 } else { i - 1 };
        let acc = w[i] * x[i] + w[prev] * x[prev];
        // Every other j in order: two ranges around the pair {prev, i}.
        let (first, second) = if i == 0 { (1..n - 1, n..n) } else { (0..i - 1, i + 1..n) };
        first.chain(second).fold(acc, |acc, j| {
            if self.random_coin(j, i) < threshold {
                acc + w[j] * x[j]
            } else {
                acc
            }
        })
    }

    /// The contraction of a `Random` graph (degree ≥ 2, so `n ≥ 3`): power iteration on
    /// zero-sum vectors, which the column-stochastic push-sum matrix keeps zero-sum
    /// (where its consensus error lives). Iterates are formed in place (`(W y₁)[i]`
    /// overwrites `y₀[i]` once read) and shares are counted once: three vectors, `n²`
    /// coins a round.
    ///
    /// The matrix is not normal and its dominant eigenvalues are often a complex pair,
    /// whose modulus a ratio of norms never settles on: each round fits `y₂ = a·y₁ - b·y₀`
    /// to the last three iterates (Rayleigh–Ritz on their span) and takes the larger
    /// root modulus of `z² - a·z + b`, which is exact once the iterates live in the
    /// dominant eigenspace; it stops when that estimate stayed within `RANDOM_TOL` of
    /// the gap for `RANDOM_WINDOW` rounds (checked against dense eigenvalues: within
    /// 3e-4 of the gap). When more than two eigenvalues of nearly the same modulus share
    /// the top (a real one and a complex pair, say), no such fit settles until the others
    /// have died out, which may take thousands of rounds. After `RANDOM_MAX_ROUNDS` (or
    /// as many as the work budget allows) the result is the growth rate of the norm over
    /// the second half, `(|y_k| / |y_{k/2}|)^(2/k)`, which lies about among those nearly
    /// equal moduli: checked, within 2e-3 of the gap, and 1.2e-2 for a graph of degree 2
    /// whose gap (0.137) is small beside how close its top moduli are (0.3% apart).
    fn measure_random(
        &self,
        a: &mut [f64],
        b: &mut [f64],
        w: &mut [f64],
        work: &mut u64,
    ) -> Result<f64, TopologyError> {
        let n = w.len();
        let sweep = (n * n) as u64;
        // The shares and the first product, then at least RANDOM_MIN_ROUNDS rounds.
        let affordable = (*work / sweep).saturating_sub(2).min(RANDOM_MAX_ROUNDS as u64) as usize;
        if affordable < RANDOM_MIN_ROUNDS {
            return Err(TopologyError::GapUnmeasured {
                nodes: self.n,
                degree: self.degree,
            });
        }
        let rounds = affordable;
        let threshold = self.random_threshold();
        self.spend(work, sweep)?;
        for (j, share) in w.iter_mut().enumerate() {
            // Every t but j and its ring successor: two ranges around that pair.
            let (first, second) = if j + 1 == n { (1..n - 1, n..n) } else { (0..j, j + 2..n) };
            let extra = first
                .chain(second)
                .filter(|&t| self.random_coin(j, t) < threshold)
                .count();
            *share = 1.0 / (extra + 2) as f64;
        }
        let (mut older, mut newer) = (a, b);
        fill_seeded(older, self.seed ^ 0x2545_f491_4f6c_dd1d);
        centre(older);
        let norm = libm::sqrt(dot(older, older));
        older.iter_mut().for_each(|x| *x /= norm);
        self.spend(work, sweep)?;
        for (i, y) in newer.iter_mut().enumerate() {
            *y = self.random_gather(i, older, w, threshold);
        }
        centre(newer);
        let (mut g00, mut g01, mut g11) = (1.0, dot(older, newer), dot(newer, newer));
        let mut recent = [0.0f64; RANDOM_WINDOW];
        let mut log_norm = 0.0; // ln |y_k| / |y_1|
        let mut log_norm_half = 0.0; // the same at k = rounds / 2
        for round in 1..=rounds {
            if g11 <= 1e-300 {
                return Ok(0.0); // W sends every zero-sum vector to 0: exact averaging
            }
            self.spend(work, sweep)?;
            let (mut s0, mut s1, mut s2) = (0.0, 0.0, 0.0);
            let (mut g02, mut g12, mut g22) = (0.0, 0.0, 0.0);
            for i in 0..n {
                let y2 = self.random_gather(i, newer, w, threshold);
                let (y0, y1) = (older[i], newer[i]);
                s0 += y0;
                s1 += y1;
                s2 += y2;
                g02 += y0 * y2;
                g12 += y1 * y2;
                g22 += y2 * y2;
                older[i] = y2;
            }
            // Remove the rounding that leaked into the sum (the average's direction).
            let mean = s2 / n as f64;
            older.iter_mut().for_each(|x| *x -= mean);
            g02 -= mean * s0;
            g12 -= mean * s1;
            g22 = (g22 - n as f64 * mean * mean).max(0.0);
            let fitted = ritz_pair(g00, g01, g11, g02, g12, g22).clamp(0.0, 1.0);
            recent[round % RANDOM_WINDOW] = fitted;
            if round >= RANDOM_WINDOW {
                let (lo, hi) = recent.iter().fold((1.0f64, 0.0f64), |(l, h), &r| (l.min(r), h.max(r)));
                if hi - lo <= RANDOM_TOL * (1.0 - fitted) {
                    return Ok(fitted);
                }
            }
            if g22 <= 1e-300 {
                return Ok(fitted);
            }
            log_norm += 0.5 * libm::log(g22 / g11);
            if round == rounds / 2 {
                log_norm_half = log_norm;
            }
            // Unit length again (both iterates alike, so that y₂ = W y₁ still holds).
            let scale = 1.0 / libm::sqrt(g22);
            older.iter_mut().for_each(|x| *x *= scale);
            newer.iter_mut().for_each(|x| *x *= scale);
            (g00, g01, g11) = (g11 * scale * scale, g12 * scale * scale, 1.0);
            (older, newer) = (newer, older);
        }
        Ok(libm::exp((log_norm - log_norm_half) / (rounds - rounds / 2) as f64).min(1.0))
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

/// Work units of one Feistel round (a hash whose input is the previous round's output:
/// about twice as slow as independent coins).
const FEISTEL_ROUND_WORK: u64 = 2;

/// Most Lanczos steps of one expander measurement: random regular graphs need about
/// 50 at 300 nodes, 150 at 1,024 and 550 at 65,536 (degree 3). Its tridiagonal matrix
/// lives on the stack (16 bytes a step), in a frame of its own.
const MAX_LANCZOS: usize = 768;

/// Lanczos stops when `ρ` grew by at most `LANCZOS_TOL` of the gap over
/// `LANCZOS_WINDOW` steps.
const LANCZOS_WINDOW: usize = 4;
const LANCZOS_TOL: f64 = 1e-8;

/// The random-digraph iteration stops when its fitted `ρ` stayed within `RANDOM_TOL` of
/// the gap for `RANDOM_WINDOW` rounds, else after `RANDOM_MAX_ROUNDS` (about 0.3 s at 300
/// nodes) with the norm's growth rate; if the work budget does not allow
/// `RANDOM_MIN_ROUNDS`, it does not start.
const RANDOM_WINDOW: usize = 32;
const RANDOM_TOL: f64 = 1e-4;
const RANDOM_MAX_ROUNDS: usize = 1024;
const RANDOM_MIN_ROUNDS: usize = 128;

/// `ρ` of a ring (a single cycle) of `n` nodes whose every edge weighs `w`:
/// `max |w·(1 + 2cos(2πk/n))|` over `k ≠ 0`.
fn ring_contraction(n: u32, w: f64) -> f64 {
    (1..n)
        .map(|k| (w * (1.0 + 2.0 * libm::cos(2.0 * PI * f64::from(k) / f64::from(n)))).abs())
        .fold(0.0, f64::max)
}

/// Seeded pseudorandom values in [-0.5, 0.5).
fn fill_seeded(x: &mut [f64], seed: u64) {
    let mut state = seed;
    for v in x.iter_mut() {
        state = mix(state.wrapping_add(1));
        *v = (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
    }
}

fn dot(x: &[f64], y: &[f64]) -> f64 {
    x.iter().zip(y).map(|(a, b)| a * b).sum()
}

/// `y += a·x`.
fn axpy(y: &mut [f64], a: f64, x: &[f64]) {
    y.iter_mut().zip(x).for_each(|(v, u)| *v += a * u);
}

/// Subtracts the mean.
fn centre(x: &mut [f64]) {
    let mean = x.iter().sum::<f64>() / x.len() as f64;
    x.iter_mut().for_each(|v| *v -= mean);
}

/// Smallest and largest eigenvalue of the symmetric tridiagonal matrix with diagonal
/// `alpha` and off-diagonal `beta` (`alpha.len() - 1` entries), by bisection on Sturm
/// counts, to rounding.
///
/// Why by hand and not nalgebra (issue #18; nalgebra 0.35 checks these results in the
/// tests, to 1e-9). Lanczos solves `T_k` at every step `k`, up to [`MAX_LANCZOS`] (about
/// 50 steps at 300 nodes, 150 at 1,024, 550 at 65,536): the size grows at run time, and
/// without `alloc` nalgebra only has compile-time sizes. An `SMatrix<f64, 768, 768>` is
/// 4.5 MiB; padded to 64 (32 KiB of stack a matrix) it caps Lanczos below what 1,024
/// nodes need. nalgebra has no solver for a given tridiagonal: `SymmetricEigen` and
/// `symmetric_eigenvalues` first reduce a dense matrix to one (Householder, `O(k³)`),
/// then find every eigenvalue, where this needs two in `O(k)` a bisection step.
/// Measured (2026-12, nalgebra `default-features = false, features = ["libm"]`):
/// - flash, thumbv7em-none-eabihf, opt-level "s", LTO: a firmware linking
///   `Topology::new` with a run-time family grows from 30,320 to 36,224 bytes
///   (+5,904) with the padded 64×64 solve in place of this function;
/// - speed, x86-64 release, one shared core: one `T_k` takes 34 µs here against 152 µs
///   (nalgebra, dynamic size) at k = 50, 143 µs against 2.8 ms at 150, 591 µs against
///   215 ms at 768; a whole run of `T_1..T_K` 8.8 ms against 120 ms at K = 150 and
///   0.22 s against 39 s at K = 768; the padded fixed 64×64 solve takes 79 µs at
///   k = 16 and 242 µs at 64 (8 and 56 µs here).
fn tridiagonal_extremes(alpha: &[f64], beta: &[f64]) -> (f64, f64) {
    let m = alpha.len();
    // Eigenvalues below x: the negative pivots of T - x·I's LDLᵀ factorisation.
    let below = |x: f64| {
        let mut count = 0;
        let mut q = 1.0;
        for (k, &a) in alpha.iter().enumerate() {
            let off = if k == 0 { 0.0 } else { sq(beta[k - 1]) / q };
            q = a - x - off;
            if q == 0.0 {
                q = -f64::MIN_POSITIVE;
            }
            count += usize::from(q < 0.0);
        }
        count
    };
    // Gershgorin discs bound the spectrum; widen by a little so that no eigenvalue
    // sits on an end.
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for (k, &a) in alpha.iter().enumerate() {
        let r = if k > 0 { beta[k - 1].abs() } else { 0.0 } + beta.get(k).map_or(0.0, |b| b.abs());
        lo = lo.min(a - r);
        hi = hi.max(a + r);
    }
    let margin = 1e-12 * (hi - lo) + f64::MIN_POSITIVE;
    let (lo, hi) = (lo - margin, hi + margin);
    // Halve [l, h] while keeping the wanted eigenvalue in it: `inside(x)` says whether
    // it lies below x.
    let bisect = |inside: &dyn Fn(f64) -> bool| {
        let (mut l, mut h) = (lo, hi);
        loop {
            let mid = 0.5 * (l + h);
            if h - l <= f64::EPSILON || mid <= l || mid >= h {
                return mid;
            }
            if inside(mid) {
                h = mid;
            } else {
                l = mid;
            }
        }
    };
    (bisect(&|x| below(x) > 0), bisect(&|x| below(x) == m))
}

/// The larger root modulus of `z² - a·z + b`, with `a`, `b` fitted to three iterates
/// `y₁ = W y₀`, `y₂ = W y₁` from their inner products `gᵢⱼ = yᵢ·yⱼ` (Rayleigh–Ritz on
/// `span{y₀, y₁}`, where `W` acts as the companion matrix of that polynomial). When
/// `y₀` and `y₁` are parallel to rounding (a real dominant eigenvalue has taken over),
/// the ratio of norms.
fn ritz_pair(g00: f64, g01: f64, g11: f64, g02: f64, g12: f64, g22: f64) -> f64 {
    let det = g00 * g11 - g01 * g01;
    if det <= 1e-10 * g00 * g11 {
        return libm::sqrt(g22 / g11);
    }
    let a = (g00 * g12 - g01 * g02) / det;
    let b = (g01 * g12 - g11 * g02) / det;
    let disc = 0.25 * a * a - b;
    if disc < 0.0 {
        libm::sqrt(b)
    } else {
        0.5 * a.abs() + libm::sqrt(disc)
    }
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
        // h(4), h(5), h(6) = 1/8, 5/8, 3/8.
        let out: heapless::Vec<u32, 8> = t.out_neighbours(0, 0).collect();
        assert_eq!(&out[..], &[1, 5, 3]);
    }

    extern crate std;
    use nalgebra::DMatrix;
    use std::vec;
    use std::vec::Vec;

    fn build(family: Family, n: u32, degree: u32, seed: u64, min_gap: f64) -> Result<Topology, TopologyError> {
        let spec = TopologySpec {
            degree: Some(degree),
            seed,
            min_gap,
            ..TopologySpec::new(family, n)
        };
        Topology::new(spec, &mut vec![0.0; 3 * n as usize])
    }

    /// Second largest eigenvalue modulus of the dense mixing matrix (column j: node j's
    /// shares).
    fn dense_contraction(t: &Topology) -> f64 {
        let n = t.nodes() as usize;
        let mut w = DMatrix::<f64>::zeros(n, n);
        for j in 0..t.nodes() {
            for i in t.out_neighbours(j, 0) {
                w[(i as usize, j as usize)] += t.edge_weight(j, i, 0);
            }
            let sent: f64 = t.out_neighbours(j, 0).map(|i| t.edge_weight(j, i, 0)).sum();
            w[(j as usize, j as usize)] = 1.0 - sent;
        }
        let mut moduli: Vec<f64> = if w == w.transpose() {
            w.symmetric_eigenvalues().iter().map(|v| v.abs()).collect()
        } else {
            w.complex_eigenvalues().iter().map(|v| v.norm()).collect()
        };
        moduli.sort_by(|a, b| b.total_cmp(a));
        moduli[1]
    }

    #[test]
    fn tridiagonal_extremes_of_a_path() {
        // Diagonal 0, off-diagonal 1: eigenvalues 2cos(kπ/(m+1)), k = 1..=m.
        for m in [1usize, 2, 5, 40] {
            let (alpha, beta) = (vec![0.0; m], vec![1.0; m - 1]);
            let (lo, hi) = tridiagonal_extremes(&alpha, &beta);
            let top = 2.0 * libm::cos(PI / (m + 1) as f64);
            assert!((hi - top).abs() < 1e-14 && (lo + top).abs() < 1e-14, "m={m}: {lo} {hi}");
        }
    }

    #[test]
    fn random_gaps_match_dense_eigenvalues() {
        // Including seeds whose top eigenvalues nearly tie (16/4/2: a real one and a
        // complex pair 0.15% apart), where the two-dimensional fit does not settle and
        // the growth rate is taken.
        for (n, d, seed) in [
            (3, 2, 0),
            (4, 2, 0),
            (8, 3, 0),
            (16, 4, 0),
            (16, 4, 2),
            (24, 3, 1),
            (32, 5, 3),
            (64, 2, 0),
            (64, 6, 1),
            (100, 3, 0),
        ] {
            let t = build(Family::Random, n, d, seed, 0.0).unwrap();
            let dense = 1.0 - dense_contraction(&t);
            let err = (t.spectral_gap() - dense).abs() / dense;
            assert!(
                err < 1e-3,
                "random n={n} d={d} seed={seed}: gap {} vs {dense}",
                t.spectral_gap()
            );
        }
    }

    #[test]
    fn expander_gaps_match_dense_eigenvalues() {
        for (n, d, seed) in [
            (8, 3, 0),
            (10, 3, 0),
            (30, 29, 0),
            (64, 3, 0),
            (64, 63, 0),
            (100, 7, 0),
            (150, 2, 0),
        ] {
            let t = build(Family::Expander, n, d, seed, 0.0).unwrap();
            let dense = 1.0 - dense_contraction(&t);
            let err = (t.spectral_gap() - dense).abs() / dense;
            assert!(
                err < 1e-7,
                "expander n={n} d={d} seed={seed}: gap {} vs {dense}",
                t.spectral_gap()
            );
        }
    }

    #[test]
    fn degree_one_random_graph_is_the_directed_ring() {
        for n in [2u32, 3, 12, 300] {
            let t = build(Family::Random, n, 1, 7, 0.0).unwrap();
            assert!((0..n).all(|i| t.out_neighbours(i, 0).eq([(i + 1) % n])));
            assert_eq!(t.spectral_gap(), 1.0 - libm::cos(PI / f64::from(n)));
            if n <= 12 {
                assert!((t.spectral_gap() - (1.0 - dense_contraction(&t))).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn all_limited_closed_form_matches_the_sum_of_its_terms() {
        for (n, d) in [(2u32, 1u32), (7, 3), (64, 6), (1000, 50), (1000, 999)] {
            let t = build(Family::AllLimited, n, d, 0, 0.0).unwrap();
            let w = 1.0 / f64::from(d + 1);
            let rho = (1..n)
                .map(|k| {
                    let (mut re, mut im) = (w, 0.0);
                    for o in 1..=d {
                        let th = 2.0 * PI * f64::from(o) * f64::from(k) / f64::from(n);
                        re += w * libm::cos(th);
                        im += w * libm::sin(th);
                    }
                    libm::sqrt(re * re + im * im)
                })
                .fold(0.0, f64::max);
            assert!((t.spectral_gap() - (1.0 - rho)).abs() < 1e-12, "all n={n} d={d}");
        }
        // O(n), not O(n²): the all-reduce limit of 65,536 nodes builds at once.
        assert!((build(Family::Complete, 65_536, 65_535, 0, 0.1).unwrap().spectral_gap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn disconnected_expanders_measure_a_gap_of_exactly_zero() {
        // Degree 2: a permutation and its inverse, connected only when the permutation
        // is a single cycle (then a ring).
        let mut scratch = vec![0.0; 3 * 16];
        let (mut disconnected, mut rings) = (0, 0);
        for seed in 0..100 {
            let t = Topology {
                family: Family::Expander,
                n: 12,
                degree: 2,
                send: 2,
                seed,
                offsets: heapless::Vec::new(),
                rows: 0,
                gap: 0.0,
            };
            let rho = t.measured_contraction(&mut scratch).unwrap();
            if rho == 1.0 {
                disconnected += 1;
            } else {
                rings += 1;
                assert_eq!(rho, ring_contraction(12, 1.0 / 3.0));
            }
        }
        assert!(disconnected > 50 && rings > 0, "{disconnected} {rings}");
        // A threshold of 0 still refuses a gap of 0 (a chord graph of offsets 8 and 4).
        let spec = TopologySpec {
            max_send: Some(2),
            min_gap: 0.0,
            ..TopologySpec::new(Family::Chord, 16)
        };
        assert_eq!(
            Topology::new(spec, &mut scratch),
            Err(TopologyError::GapTooSmall { gap: 0.0, min_gap: 0.0 })
        );
    }

    #[test]
    fn expander_refusal_reports_an_upper_bound_below_the_threshold() {
        let gap = build(Family::Expander, 64, 3, 0, 0.0).unwrap().spectral_gap();
        match build(Family::Expander, 64, 3, 0, 0.5) {
            Err(TopologyError::GapTooSmall { gap: bound, min_gap }) => {
                assert_eq!(min_gap, 0.5);
                assert!(bound < 0.5, "{bound}");
            }
            other => panic!("{other:?} (gap {gap})"),
        }
    }

    #[test]
    fn measuring_stops_when_the_work_runs_out() {
        let t = build(Family::Random, 300, 9, 0, 0.0).unwrap();
        let mut scratch = vec![0.0; 900];
        assert_eq!(
            t.measure(&mut scratch, 0.0, &mut 1_000_000),
            Err(TopologyError::GapUnmeasured { nodes: 300, degree: 9 })
        );
        let t = build(Family::Expander, 300, 64, 0, 0.0).unwrap();
        assert_eq!(
            t.measure(&mut scratch, 0.0, &mut 1_000_000),
            Err(TopologyError::GapUnmeasured { nodes: 300, degree: 64 })
        );
        // Too many nodes for even one round of a random digraph: refused before any work.
        assert_eq!(
            build(Family::Random, 4_096, 12, 0, 0.0),
            Err(TopologyError::GapUnmeasured {
                nodes: 4_096,
                degree: 12
            })
        );
    }
}

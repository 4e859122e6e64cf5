//! `topology`: `Topology::new` from a fuzzed spec (any family, 0..=300 nodes, small
//! degree and send limit, any seed, a sane gap threshold; the two families whose gap is
//! measured, `Random` and `Expander`, get more than 32 nodes from one seed in 64, see
//! [`MEASURED_NODES`]); when it builds, the
//! neighbour lists and weights of a few nodes in a few rounds are checked: every
//! neighbour is a node other than itself, in- and out-lists agree, edge weights are
//! finite in (0, 1] for neighbours and 0 for others, and a node never gives away more
//! than all of its value. The gap is in (0, 1] and at least the threshold, and the
//! measurement of the gap never runs out of its work bound.

use arbitrary::{Arbitrary, Unstructured};
use asap_core::{Family, Topology, TopologyError, TopologySpec};

/// Largest cluster the target builds.
pub const MAX_NODES: u16 = 300;

/// Largest `Random` or `Expander` graph of most inputs. Building those two measures the
/// gap (`n²` coins a round of iteration for `Random`), up to 0.3 s at 300 nodes (more
/// under the fuzzer's instrumentation) against microseconds for the others; one seed in
/// `LARGE_MEASURED` (by a hash) draws them from the whole range, so that a run still
/// gets through millions of inputs and every spec stays reachable.
/// (`topology_new_takes_at_most_a_second` in `tests/regressions.rs` times the slowest.)
pub const MEASURED_NODES: u32 = 32;

/// See [`MEASURED_NODES`].
pub const LARGE_MEASURED: u64 = 1 << 6;

/// A fuzzed `TopologySpec` and where to look at the result.
#[derive(Arbitrary, Debug)]
pub struct Input {
    /// `Family::ALL[family % 11]`.
    family: u8,
    nodes: NodesSpec,
    degree: Option<u8>,
    max_send: Option<u8>,
    seed: u64,
    min_gap: GapSpec,
    /// Extra (node, round) pairs to check.
    probes: [(u16, u32); 2],
}

/// The node count: a small graph (cheap to build and check, and where the edge cases
/// are) or any up to `MAX_NODES`.
#[derive(Arbitrary, Debug)]
pub enum NodesSpec {
    /// `n % 33`.
    Small(u8),
    /// `n % (MAX_NODES + 1)` (`Random`, `Expander`: see [`MEASURED_NODES`]).
    Any(u16),
}

/// The gap threshold.
#[derive(Arbitrary, Debug)]
pub enum GapSpec {
    /// `DEFAULT_MIN_GAP` (1e-7).
    Default,
    /// `10^-(1 + e % 12)`: 1e-1 down to 1e-12.
    Decade(u8),
    /// No threshold (a disconnected graph must still be refused: its gap is 0).
    Zero,
}

/// Whether this seed draws a `Random` or `Expander` graph from the whole range: one in
/// [`LARGE_MEASURED`], by the top bits of a multiplicative hash (not the low bits: fuzzed
/// seeds are often round numbers, 0 most of all).
fn large_measured(seed: u64) -> bool {
    (seed ^ 0x2545_f491_4f6c_dd1d).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - LARGE_MEASURED.trailing_zeros()) == 0
}

/// The target body.
pub fn run(data: &[u8]) {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    check(&input);
}

/// Builds the topology and checks it; `true` when it built.
pub fn check(input: &Input) -> bool {
    let family = Family::ALL[usize::from(input.family) % Family::ALL.len()];
    let nodes = match input.nodes {
        NodesSpec::Small(n) => u32::from(n % 33),
        NodesSpec::Any(n) if matches!(family, Family::Random | Family::Expander) && !large_measured(input.seed) => {
            u32::from(n) % (MEASURED_NODES + 1)
        }
        NodesSpec::Any(n) => u32::from(n % (MAX_NODES + 1)),
    };
    let min_gap = match input.min_gap {
        GapSpec::Default => TopologySpec::new(family, nodes).min_gap,
        GapSpec::Decade(e) => 10f64.powi(-(1 + i32::from(e % 12))),
        GapSpec::Zero => 0.0,
    };
    let spec = TopologySpec {
        degree: input.degree.map(u32::from),
        max_send: input.max_send.map(u32::from),
        seed: input.seed,
        min_gap,
        ..TopologySpec::new(family, nodes)
    };
    let mut scratch = vec![0.0f64; 3 * nodes as usize];
    let t = match Topology::new(spec, &mut scratch) {
        Ok(t) => t,
        // The work bound (asap_core::topology::MAX_GAP_WORK) leaves room for every graph
        // this small, with thresholds this low (fuzz/README.md, bug 4).
        Err(e @ TopologyError::GapUnmeasured { .. }) => panic!("{spec:?}: {e}"),
        Err(_) => return false,
    };
    assert_eq!(t.family(), family);
    assert_eq!(t.nodes(), nodes);
    assert!(nodes >= 2);
    let gap = t.spectral_gap();
    assert!(
        gap.is_finite() && gap > 0.0 && gap >= min_gap && gap <= 1.0 + 1e-9,
        "gap {gap} (min {min_gap}) for {spec:?}"
    );
    let period = t.period();
    assert!(period >= 1);

    let mut probes = vec![(0, 0), (nodes - 1, 1), (nodes / 2, period - 1), (1, u32::MAX)];
    probes.extend(input.probes.iter().map(|&(n, r)| (u32::from(n) % nodes, r)));
    // `in_neighbours` lists all n send lists, each O(d²) (duplicates are filtered, by
    // recomputing an expander's earlier neighbours): on big dense graphs check it for
    // two probes only, on the biggest expanders (0.1 s a probe) for none, to keep the
    // target fast.
    let work = u64::from(nodes) * u64::from(t.degree()).pow(2);
    let in_probes = match work {
        _ if family != Family::Expander || work <= 1 << 20 => usize::MAX,
        w if w <= 1 << 22 => 2,
        _ => 0,
    };
    for (k, (node, round)) in probes.into_iter().enumerate() {
        let outs: Vec<u32> = t.out_neighbours(node, round).collect();
        let mut given = 0.0f64;
        for (k, &o) in outs.iter().enumerate() {
            assert!(o < nodes, "{spec:?}: out-neighbour {o} of {node} in round {round}");
            assert_ne!(o, node, "{spec:?}: {node} sends to itself in round {round}");
            assert!(!outs[..k].contains(&o), "{spec:?}: {node} lists {o} twice");
            let w = t.edge_weight(node, o, round);
            assert!(
                w.is_finite() && w > 0.0 && w <= 1.0,
                "{spec:?}: edge_weight({node}, {o}, {round}) = {w}"
            );
            given += w;
        }
        assert!(
            given < 1.0 + 1e-12,
            "{spec:?}: {node} gives away {given} in round {round}"
        );
        if family != Family::Random {
            assert!(outs.len() as u32 <= t.send_degree(round));
        }
        let own = t.weight(node, round);
        assert!(own.is_finite() && own > 0.0 && own <= 1.0, "{spec:?}: weight {own}");

        if k >= in_probes {
            continue;
        }
        // The receive list is exactly the nodes whose send list names this one.
        let ins: Vec<u32> = t.in_neighbours(node, round).collect();
        for &i in &ins {
            assert!(i < nodes && i != node, "{spec:?}: in-neighbour {i} of {node}");
            assert!(
                t.out_neighbours(i, round).any(|o| o == node),
                "{spec:?}: {i} listed as sending to {node} in round {round}, but does not"
            );
            let w = t.edge_weight(i, node, round);
            assert!(
                w.is_finite() && w > 0.0 && w <= 1.0,
                "{spec:?}: edge_weight({i}, {node}) = {w}"
            );
        }
        // A node that is not a destination gets nothing, and is not missing from `ins`
        // when it does send.
        let other = (node + 1 + round % nodes) % nodes;
        if other != node {
            if !outs.contains(&other) {
                assert_eq!(
                    t.edge_weight(node, other, round),
                    0.0,
                    "{spec:?}: {node} → {other} weighted but not listed in round {round}"
                );
            }
            let sends = t.out_neighbours(other, round).any(|o| o == node);
            assert_eq!(sends, ins.contains(&other), "{spec:?}: in_neighbours({node}, {round})");
        }
    }
    // The peer table of node 0 covers every neighbour over a period.
    let peers: Vec<u32> = t.peers_of(0).collect();
    assert!(peers.iter().all(|&p| p != 0 && p < nodes));
    for r in 0..period.min(16) {
        for o in t.out_neighbours(0, r) {
            assert!(peers.contains(&o), "{spec:?}: peers_of(0) misses {o} (round {r})");
        }
    }
    true
}

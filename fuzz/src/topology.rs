//! `topology`: `Topology::new` from a fuzzed spec (any family, 0..=300 nodes, small
//! degree and send limit, any seed, a sane gap threshold; the two families whose gap is
//! measured, `Random` and `Expander`, get more than 16 nodes from one input in 1,024, see
//! [`MEASURED_NODES`]); when it builds, the
//! neighbour lists and weights of six nodes in six rounds are checked: every
//! neighbour is a node other than itself, edge weights are finite in (0, 1] for
//! neighbours and 0 for others, and a node never gives away more than all of its value;
//! in- and out-lists agree for as many of those nodes as [`IN_LIST_WORK`] allows, at
//! least one (a fuzzed one). The gap is in (0, 1] and at least the threshold, and the
//! measurement of the gap never runs out of its work bound.

use arbitrary::{Arbitrary, Unstructured};
use asap_core::{Family, Topology, TopologyError, TopologySpec};

/// Largest cluster the target builds.
pub const MAX_NODES: u16 = 300;

/// Largest `Random` or `Expander` graph of most inputs. Building those two measures the
/// gap (`n²` coins a round of up to 1,024 rounds of iteration for `Random`, Lanczos on
/// `n·d` Feistel evaluations a step for `Expander`): about 50 µs at 16 nodes, 1 ms at
/// 32, up to 0.3 s at 300 (more under the fuzzer's instrumentation), against
/// microseconds for the others. One input in [`LARGE_MEASURED`], by a hash of all its
/// bytes, draws them from the whole range: every spec stays reachable, but as a mutation
/// of such an input almost never is one again, the fuzzer cannot dwell on the slow specs
/// and a run still gets through millions of inputs. (A crash there does not minimise:
/// its panic message names the spec, rebuild it in a test.)
/// `topology_new_takes_at_most_a_second` in `tests/regressions.rs` times the slowest.
pub const MEASURED_NODES: u32 = 16;

/// See [`MEASURED_NODES`].
pub const LARGE_MEASURED: u64 = 1 << 10;

/// Neighbour evaluations (a coin for `Random`, a Feistel permutation for `Expander`, an
/// offset for the others) the in-list checks of one input may take: checking a node's
/// receive list lists all `n` send lists, and then the send list of each sender, so on
/// big dense graphs only the first probe (a fuzzed one) gets it, on small sparse graphs
/// all six.
pub const IN_LIST_WORK: u64 = 1 << 13;

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
    /// `n % 33` (`Random`, `Expander`: see [`MEASURED_NODES`]).
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

/// Whether these input bytes may draw a `Random` or `Expander` graph from the whole
/// range: one input in [`LARGE_MEASURED`], by the top bits of a hash of all of them.
pub fn large_measured(data: &[u8]) -> bool {
    // FNV-1a, then a multiplicative mix so that the top bits depend on every byte.
    let h = data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (h ^ h >> 29).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - LARGE_MEASURED.trailing_zeros()) == 0
}

/// The target body.
pub fn run(data: &[u8]) {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    check(&input, large_measured(data));
}

/// The spec an input asks for; `large`: whether a `Random` or `Expander` graph may have
/// more than [`MEASURED_NODES`] nodes.
pub fn spec(input: &Input, large: bool) -> TopologySpec {
    let family = Family::ALL[usize::from(input.family) % Family::ALL.len()];
    let capped = matches!(family, Family::Random | Family::Expander) && !large;
    let nodes = match input.nodes {
        NodesSpec::Small(n) if capped => u32::from(n) % (MEASURED_NODES + 1),
        NodesSpec::Any(n) if capped => u32::from(n) % (MEASURED_NODES + 1),
        NodesSpec::Small(n) => u32::from(n % 33),
        NodesSpec::Any(n) => u32::from(n % (MAX_NODES + 1)),
    };
    let min_gap = match input.min_gap {
        GapSpec::Default => TopologySpec::new(family, nodes).min_gap,
        GapSpec::Decade(e) => 10f64.powi(-(1 + i32::from(e % 12))),
        GapSpec::Zero => 0.0,
    };
    TopologySpec {
        degree: input.degree.map(u32::from),
        max_send: input.max_send.map(u32::from),
        seed: input.seed,
        min_gap,
        ..TopologySpec::new(family, nodes)
    }
}

/// Builds the topology and checks it; `true` when it built. `large`: see [`spec`].
pub fn check(input: &Input, large: bool) -> bool {
    let spec = spec(input, large);
    let (family, nodes, min_gap) = (spec.family, spec.nodes, spec.min_gap);
    let mut scratch = vec![0.0f64; spec.scratch_len()];
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

    // The fuzzed probes first: the in-list check of the first one is always made.
    let mut probes: Vec<(u32, u32)> = input.probes.iter().map(|&(n, r)| (u32::from(n) % nodes, r)).collect();
    probes.extend([(0, 0), (nodes - 1, 1), (nodes / 2, period - 1), (1, u32::MAX)]);
    // `in_neighbours` lists all n send lists (n coins each for `Random`; d² Feistel
    // evaluations for `Expander`, whose duplicates are filtered by recomputing the
    // earlier neighbours; d offsets for the others), and checking it lists the send list
    // of every sender again: about 2·n send lists a probe, against IN_LIST_WORK.
    let send_list = match family {
        Family::Random => u64::from(nodes),
        Family::Expander => u64::from(t.degree()) * u64::from(t.degree() + 1) / 2,
        _ => u64::from(t.send_degree(0)),
    };
    let in_probes = (IN_LIST_WORK / (2 * u64::from(nodes) * send_list.max(1))).max(1) as usize;
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

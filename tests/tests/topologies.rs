//! Nodes built from topologies average exactly, static and time-varying, over perfect
//! and lossy links; the one-peer exponential graph needs its deferred ACKs for that.

use asap_core::topology::{Family, Topology, TopologySpec};
use asap_core::{Config, Duration, NodeId};
use asap_tests::{random_vectors, Cluster, LinkModel};

const MODEL: usize = 600;

fn run(
    family: Family,
    n: u32,
    degree: Option<u32>,
    rounds: u32,
    link: LinkModel,
    seed: u64,
) -> (f64, Cluster<'static>) {
    let spec = TopologySpec {
        degree,
        seed,
        ..TopologySpec::new(family, n)
    };
    let topology = Topology::new(spec, &mut vec![0.0; spec.scratch_len()]).expect("valid topology");
    let config = |i: usize| Config::new(3, NodeId(i as u16), MODEL);
    let memory = Box::leak(Cluster::topology_memory(config, &topology).into_boxed_slice());
    let initial = random_vectors(n as usize, MODEL, seed);
    let target = Cluster::mean(&initial);
    let mut cluster = Cluster::with_topology(memory, config, &topology, initial, link, seed);
    assert!(
        cluster.run_rounds(rounds, Duration::from_secs(3_600)),
        "{family}: stuck at t={}",
        cluster.now
    );
    (cluster.max_error(&target), cluster)
}

#[test]
fn one_peer_exponential_is_exact_after_one_period() {
    for m in [1u32, 2, 3, 4] {
        let n = 1 << m;
        // One period (m rounds) gives the exact average, up to f32 rounding.
        let (err, _) = run(
            Family::OnePeerExponential,
            n,
            None,
            m,
            LinkModel::default(),
            u64::from(m),
        );
        assert!(err <= 1e-6, "n={n}: {err:e} after {m} rounds");
    }
}

#[test]
fn one_peer_exponential_stays_exact_under_loss_and_reordering() {
    let link = LinkModel {
        loss: 0.2,
        duplicate: 0.05,
        delay: Duration::from_micros(300),
        jitter: Duration::from_millis(2),
    };
    for n in [8u32, 16] {
        let period = n.trailing_zeros();
        let (err, cluster) = run(Family::OnePeerExponential, n, None, 3 * period, link, 9);
        assert!(err <= 1e-6, "n={n}: {err:e}");
        assert!(cluster.dropped > 0);
    }
}

#[test]
fn static_families_reach_the_average() {
    let lossy = LinkModel {
        loss: 0.1,
        ..LinkModel::default()
    };
    for (family, n, degree, rounds) in [
        (Family::Exponential, 16, None, 40),
        (Family::Hypercube, 16, None, 60),
        (Family::Torus, 9, None, 80),
        (Family::Expander, 16, Some(4), 200),
        (Family::Halton, 16, Some(4), 120),
        (Family::Complete, 6, None, 2),
    ] {
        let (err, _) = run(family, n, degree, rounds, lossy, 5);
        assert!(err <= 1e-5, "{family} n={n}: {err:e} after {rounds} rounds");
    }
}

#[test]
fn push_sum_on_random_digraphs_reaches_the_exact_average() {
    let lossy = LinkModel {
        loss: 0.1,
        ..LinkModel::default()
    };
    for (n, seed) in [(8u32, 1u64), (16, 2), (24, 3)] {
        let (err, cluster) = run(Family::Random, n, Some(3), 150, lossy, seed);
        assert!(err <= 1e-5, "n={n}: {err:e}");
        // Mass is conserved: it adds up to the node count.
        let mass: f64 = cluster.nodes.iter().map(|node| node.mass()).sum();
        assert!((mass - f64::from(n)).abs() < 1e-3, "n={n}: total mass {mass}");
        assert!(
            cluster.nodes.iter().any(|node| (node.mass() - 1.0).abs() > 1e-3),
            "irregular: masses differ"
        );
    }
}

//! Nodes built from topologies average exactly, static and time-varying, over perfect
//! and lossy links; the one-peer exponential graph needs its deferred ACKs for that.

use asap_core::topology::Family;
use asap_core::Duration;
use asap_tests::sim::{Network, Scenario, Sim};

const MODEL: usize = 600;

/// Links of 500 µs that lose `loss` of the frames.
fn links(loss: f64) -> Network {
    Network {
        latency: Duration::from_micros(500),
        loss,
        ..Network::default()
    }
}

/// `n` nodes of `family` (graph, replicas and links seeded by `seed`), with no compute
/// between rounds, after `rounds` rounds.
fn run(family: Family, n: u32, degree: Option<u32>, rounds: u32, network: Network, seed: u64) -> Sim {
    let scenario = Scenario {
        degree,
        model_len: MODEL,
        rounds,
        max_frame: 1_400,
        compute: Duration::ZERO,
        network,
        ..Scenario::new(seed, n, family)
    };
    let mut sim = Sim::new(scenario).expect("a valid scenario");
    sim.run_until(rounds).unwrap_or_else(|v| panic!("{family}: {v}"));
    sim
}

#[test]
fn one_peer_exponential_is_exact_after_one_period() {
    for m in [1u32, 2, 3, 4] {
        let n = 1 << m;
        // One period (m rounds) gives the exact average, up to f32 rounding.
        let sim = run(Family::OnePeerExponential, n, None, m, links(0.0), u64::from(m));
        let err = sim.error();
        assert!(err <= 1e-6, "n={n}: {err:e} after {m} rounds");
    }
}

#[test]
fn one_peer_exponential_stays_exact_under_loss_and_reordering() {
    let network = Network {
        loss: 0.2,
        duplicate: 0.05,
        latency: Duration::from_micros(300),
        jitter: Duration::from_millis(2),
        bandwidth: None,
    };
    for n in [8u32, 16] {
        let period = n.trailing_zeros();
        let sim = run(Family::OnePeerExponential, n, None, 3 * period, network, 9);
        let err = sim.error();
        assert!(err <= 1e-6, "n={n}: {err:e}");
        assert!(sim.report().dropped > 0);
    }
}

#[test]
fn static_families_reach_the_average() {
    for (family, n, degree, rounds) in [
        (Family::Exponential, 16, None, 40),
        (Family::Hypercube, 16, None, 60),
        (Family::Torus, 9, None, 80),
        (Family::Expander, 16, Some(4), 200),
        (Family::Halton, 16, Some(4), 120),
        (Family::Complete, 6, None, 2),
    ] {
        let err = run(family, n, degree, rounds, links(0.1), 5).error();
        assert!(err <= 1e-5, "{family} n={n}: {err:e} after {rounds} rounds");
    }
}

#[test]
fn push_sum_on_random_digraphs_reaches_the_exact_average() {
    for (n, seed) in [(8u32, 1u64), (16, 2), (24, 3)] {
        let sim = run(Family::Random, n, Some(3), 150, links(0.1), seed);
        let err = sim.error();
        assert!(err <= 1e-5, "n={n}: {err:e}");
        // Mass is conserved: it adds up to the node count.
        let mass: f64 = sim.nodes().map(|node| node.mass()).sum();
        assert!((mass - f64::from(n)).abs() < 1e-3, "n={n}: total mass {mass}");
        assert!(
            sim.nodes().any(|node| (node.mass() - 1.0).abs() > 1e-3),
            "irregular: masses differ"
        );
    }
}

//! Stochastic reduce with NOTIFY-ACK on a ring reaches the exact average of the initial
//! replicas, over a perfect network and over one that drops a fifth of all frames.

use asap_core::topology::Family;
use asap_core::Duration;
use asap_tests::sim::{Network, Scenario, Sim};

/// 1,000 values: several chunks per update at 1,400-byte frames, and a partial last one.
const MODEL: usize = 1_000;

/// Links of 500 µs that lose `loss` of the frames.
fn links(loss: f64) -> Network {
    Network {
        latency: Duration::from_micros(500),
        loss,
        ..Network::default()
    }
}

/// `n` nodes on a ring (weights 1/3, or 1/2 for two nodes), with no compute between
/// rounds, after 200 rounds.
fn converge(n: u32, network: Network, seed: u64) -> Sim {
    let scenario = Scenario {
        model_len: MODEL,
        rounds: 200,
        max_frame: 1_400,
        compute: Duration::ZERO,
        network,
        time_limit: Duration::from_secs(600),
        ..Scenario::new(seed, n, Family::Ring)
    };
    let mut sim = Sim::new(scenario).expect("a valid scenario");
    // Ring of 8 with 1/3 weights: |λ2| = (1 + 2cos(2π/8))/3 ≈ 0.805, so ~70 rounds per
    // factor 1e-6 from an initial spread of 1; 200 rounds leave a wide margin.
    sim.run_until(200).unwrap_or_else(|v| panic!("n={n}: {v}"));
    assert_eq!(sim.nodes().count(), n as usize);
    sim
}

#[test]
fn ring_of_2_4_8_reaches_the_exact_average() {
    for n in [2, 4, 8] {
        let sim = converge(n, links(0.0), u64::from(n));
        let err = sim.error();
        assert!(err <= 1e-6, "n={n}: max error {err:e}");
        assert_eq!(sim.report().dropped, 0);
        for node in sim.nodes() {
            assert_eq!(node.stats().rounds, 200);
            assert_eq!(node.stats().chunks_resent, 0, "nothing to resend on a perfect network");
        }
    }
}

#[test]
fn ring_converges_with_a_fifth_of_frames_lost() {
    for n in [2, 4, 8] {
        let sim = converge(n, links(0.2), 100 + u64::from(n));
        let err = sim.error();
        assert!(err <= 1e-6, "n={n}: max error {err:e}");
        let report = sim.report();
        let sent: u64 = sim.nodes().map(|n| n.stats().frames_sent).sum();
        let share = report.dropped as f64 / sent as f64;
        assert!(
            (0.15..0.25).contains(&share),
            "n={n}: the network dropped {share:.3} of frames"
        );
        let resent: u64 = sim
            .nodes()
            .map(|n| n.stats().chunks_resent + n.stats().notifies_resent)
            .sum();
        assert!(resent > 0, "losses are recovered by retransmission");
        assert_eq!(report.peers_down, 0, "no peer declared down under 20% loss");
    }
}

#[test]
fn reordering_and_duplication_do_not_change_the_result() {
    let messy = Network {
        loss: 0.05,
        duplicate: 0.1,
        latency: Duration::from_micros(200),
        jitter: Duration::from_millis(3),
        bandwidth: None,
    };
    let sim = converge(8, messy, 42);
    let err = sim.error();
    assert!(err <= 1e-6, "max error {err:e}");
    let dups: u64 = sim.nodes().map(|n| n.stats().duplicates).sum();
    assert!(dups > 0, "duplicated frames were seen and ignored");
}

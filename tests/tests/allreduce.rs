//! The ring all-reduce baseline computes the exact average on a perfect and on a lossy,
//! reordering network, round after round.

use asap_core::topology::Family;
use asap_core::Duration;
use asap_tests::sim::{Network, Scenario, Sim};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Runs `rounds` all-reduce rounds among `n` nodes, every node changing its replica
/// between rounds; returns the max error to the mean of that round's replicas after
/// each round, and the bytes each node sent per round.
fn run(n: u32, model: usize, network: Network, rounds: u32, seed: u64) -> (Vec<f64>, f64) {
    let scenario = Scenario {
        model_len: model,
        rounds,
        max_frame: 512,
        compute: Duration::ZERO,
        network,
        allreduce: true,
        time_limit: Duration::from_secs(600),
        ..Scenario::new(seed, n, Family::Ring)
    };
    let mut sim = Sim::new(scenario).expect("a valid scenario");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut errors = Vec::new();
    for round in 1..=rounds {
        sim.run_until(round).unwrap_or_else(|v| panic!("n={n}: {v}"));
        errors.push(sim.error());
        // Next round: every node perturbs its replica (a stand-in for a training step).
        sim.change_replicas(|_, replica| {
            for x in replica.iter_mut() {
                *x += rng.random_range(-0.5..0.5);
            }
        });
    }
    (errors, sim.report().bytes_per_node / f64::from(rounds))
}

#[test]
fn ring_allreduce_is_exact_every_round() {
    // In order: a fixed 300 µs.
    let perfect = Network {
        latency: Duration::from_micros(300),
        ..Network::default()
    };
    for n in [2u32, 3, 4, 7, 8] {
        let (errors, bytes) = run(n, 1_000, perfect, 3, u64::from(n));
        assert!(errors.iter().all(|&e| e <= 1e-6), "n={n}: {errors:?}");
        // 2(n-1)/n models a round, plus headers and control frames.
        let model_bytes = 4_000.0 * 2.0 * f64::from(n - 1) / f64::from(n);
        assert!(
            bytes > model_bytes && bytes < 1.2 * model_bytes,
            "n={n}: {bytes} bytes a round, model part {model_bytes}"
        );
    }
}

#[test]
fn ring_allreduce_survives_loss_and_reordering() {
    // A fifth lost, the rest 100 to 900 µs late.
    let lossy = Network {
        latency: Duration::from_micros(100),
        jitter: Duration::from_micros(800),
        loss: 0.2,
        ..Network::default()
    };
    for n in [3u32, 5, 8] {
        let (errors, _) = run(n, 700, lossy, 3, 40 + u64::from(n));
        assert!(errors.iter().all(|&e| e <= 1e-6), "n={n}: {errors:?}");
    }
}

//! Seeded simulations across fault mixes: loss, duplication, reordering, bandwidth,
//! stragglers, partitions, crashes with restart. Each scenario derives from one seed;
//! every invariant is checked as the run goes (see `asap_tests::sim`).
//!
//! `ASAP_SIM_SEEDS=10000 cargo test --release -p asap-tests --test sim` soaks more seeds;
//! `ASAP_SIM_SEED=1234` replays one.

use asap_tests::sim::{self, Scenario};

fn seeds() -> Vec<u64> {
    if let Ok(seed) = std::env::var("ASAP_SIM_SEED") {
        return vec![seed.parse().expect("ASAP_SIM_SEED is a u64")];
    }
    let count = std::env::var("ASAP_SIM_SEEDS").map_or(200, |s| s.parse().expect("ASAP_SIM_SEEDS is a count"));
    (0..count).collect()
}

#[test]
fn seeded_scenarios_keep_every_invariant() {
    let mut failures = Vec::new();
    let seeds = seeds();
    for &seed in &seeds {
        let scenario = Scenario::random(seed);
        let text = scenario.to_string();
        if let Err(v) = sim::run(scenario) {
            failures.push(format!("{v}\n    scenario: {text}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} scenarios failed:\n{}",
        failures.len(),
        seeds.len(),
        failures.join("\n")
    );
}

#[test]
fn learning_progresses_under_loss_and_a_straggler() {
    use asap_core::topology::Family;
    use asap_tests::sim::{Network, Workload};
    let mut scenario = Scenario::new(11, 16, Family::Exponential);
    scenario.model_len = 20;
    scenario.rounds = 100;
    scenario.workload = Workload::Logistic {
        samples: 100,
        rate: 0.5,
    };
    scenario.network = Network {
        loss: 0.1,
        ..Network::default()
    };
    scenario.stragglers = vec![(3, 4.0)];
    let report = sim::run(scenario).unwrap_or_else(|v| panic!("{v}"));
    let (first, last) = (report.loss_per_round[0], *report.loss_per_round.last().unwrap());
    assert!(last < 0.7 * first, "loss {first} -> {last}");
    // Mostly downhill: at most a few rounds where the average model got worse.
    let ups = report.loss_per_round.windows(2).filter(|w| w[1] > w[0] + 1e-9).count();
    assert!(ups <= 5, "{ups} rounds increased the loss");
}

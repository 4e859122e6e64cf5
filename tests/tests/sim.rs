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

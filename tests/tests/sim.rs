//! Seeded simulations across fault mixes: loss, duplication, reordering, bandwidth,
//! stragglers, partitions, crashes with restart, every wait policy, staleness bounds,
//! members joining and leaving.
//! Each scenario derives from one seed; every invariant is checked as the run goes (see
//! `asap_tests::sim`).
//!
//! `ASAP_SIM_SEEDS=10000 cargo test --release -p asap-tests --test sim` soaks seeds 0 to
//! 9,999 (200 by default); `ASAP_SIM_SEED=1234` replays one.

use asap_core::topology::Family;
use asap_core::{Duration, Instant, Wait};
use asap_tests::sim::{self, Crash, Join, Network, Scenario, Sim};

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

/// Learning, not only averaging: a minibatch step of logistic regression before every
/// round on asap-fed's federated problem (shards that differ in feature means and class
/// balance), with 10% loss and a 4x straggler.
#[test]
fn learning_progresses_under_loss_and_a_straggler() {
    use asap_tests::sim::Workload;
    let mut scenario = Scenario::new(11, 16, Family::Exponential);
    scenario.model_len = 20;
    scenario.rounds = 100;
    scenario.workload = Workload::Logistic {
        samples: 100,
        batch: 32,
        rate: 0.2,
    };
    scenario.network = Network {
        loss: 0.1,
        ..Network::default()
    };
    scenario.stragglers = vec![(3, 4.0)];
    let report = sim::run(scenario).unwrap_or_else(|v| panic!("{v}"));
    // The held-out loss of the average model falls to a fifth (0.50 to 0.10 with this
    // seed), ...
    let (first, last) = (report.loss_per_round[0], *report.loss_per_round.last().unwrap());
    assert!(last < 0.3 * first, "loss {first} -> {last}");
    // ... and all but downhill: at most a couple of rounds where it got worse (none with
    // this seed; at rate 0.5 minibatch noise makes 8 rounds of 100 worse).
    let ups = report.loss_per_round.windows(2).filter(|w| w[1] > w[0] + 1e-9).count();
    assert!(ups <= 2, "{ups} rounds increased the loss");
}

/// The scenarios of soak seeds 4300 and 7501 as they were drawn (spelled out, so they
/// stay these scenarios whatever `Scenario::random` draws later): `Wait::Barrier`, 19%
/// and 24% loss, and a node that crashes while its update is partly delivered, then
/// comes back counting rounds from 0. Its neighbours took its round-0 update for older
/// than the partial one of its previous life and ignored it, so it never started round
/// 1, and the barrier waiting for it to get there never opened (deadlock, fixed in
/// `flow::InEdge::place`). Each run must stay live: every node finishes every round, and
/// none goes longer than the liveness bound without finishing one once the crashed
/// node is back. (With today's timing 7501 still reaches that transition and fails
/// without the fix; 4300 no longer does. `node::tests` replays the transition itself.)
fn barrier_crash(seed: u64, family: Family, nodes: u32, crash: Crash) -> Scenario {
    Scenario {
        wait: Wait::Barrier,
        crashes: vec![crash],
        ..Scenario::new(seed, nodes, family)
    }
}

fn check_live(scenario: Scenario) -> sim::Report {
    let (rounds, healed) = (scenario.rounds, scenario.healed_at());
    let report = sim::run(scenario).unwrap_or_else(|v| panic!("{v}"));
    assert!(report.rounds >= rounds);
    // Rounds went on after the restart, not only before the crash.
    let after = report
        .time_per_round
        .iter()
        .filter(|t| Instant::ZERO + **t > healed)
        .count();
    assert!(after >= 10, "{after} rounds after the heal");
    report
}

#[test]
fn seed_4300_barrier_restarted_node_is_acknowledged() {
    let scenario = Scenario {
        model_len: 397,
        rounds: 15,
        max_frame: 1_400,
        network: Network {
            latency: Duration::from_micros(1_451),
            loss: 0.18884163629659914,
            ..Network::default()
        },
        compute: Duration::from_micros(387),
        ..barrier_crash(
            4300,
            Family::Exponential,
            10,
            Crash {
                node: 3,
                at: Instant::from_millis(254),
                down_for: Duration::from_millis(1_402),
            },
        )
    };
    // Seeds now also draw whether the cluster is keyed (last, so nothing else moved).
    let scenario = Scenario {
        key: Scenario::random(4300).key,
        ..scenario
    };
    assert_eq!(scenario.to_string(), Scenario::random(4300).to_string());
    check_live(scenario);
}

#[test]
fn seed_7501_barrier_restarted_node_is_acknowledged() {
    let scenario = Scenario {
        model_len: 274,
        rounds: 31,
        max_frame: 512,
        network: Network {
            latency: Duration::from_micros(862),
            jitter: Duration::from_micros(2_114),
            loss: 0.23723771097116222,
            ..Network::default()
        },
        compute: Duration::from_micros(2_445),
        ..barrier_crash(
            7501,
            Family::Hypercube,
            8,
            Crash {
                node: 0,
                at: Instant::from_millis(143),
                down_for: Duration::from_millis(1_922),
            },
        )
    };
    // Seeds now also draw whether the cluster is keyed (last, so nothing else moved).
    let scenario = Scenario {
        key: Scenario::random(7501).key,
        ..scenario
    };
    assert_eq!(scenario.to_string(), Scenario::random(7501).to_string());
    check_live(scenario);
}

/// Bounded staleness in the asynchronous modes, where it is what keeps a fast node
/// from running away: seeded fault mixes with a bound of 1 to 3 rounds, every
/// invariant checked (the simulator checks the bound itself at every round start).
#[test]
fn seeded_scenarios_with_a_staleness_bound() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for seed in 0..400 {
        let mut scenario = Scenario::random(seed);
        if scenario.allreduce {
            continue;
        }
        scenario.wait = [Wait::None, Wait::AtLeast(1), Wait::All][seed as usize % 3];
        scenario.staleness = Some(1 + (seed % 3) as u32);
        let text = scenario.to_string();
        checked += 1;
        if let Err(v) = sim::run(scenario) {
            failures.push(format!("{v}\n    scenario: {text}"));
        }
    }
    assert!(checked > 300);
    assert!(
        failures.is_empty(),
        "{} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The bound holds fast nodes back: with a 4x straggler, `Wait::None` lets the others
/// run far ahead of it; with a bound of 1 none gets more than a round ahead of an
/// in-neighbour, so within a few hops of the straggler. And a node that restarts far
/// behind does not hold the others back while it redoes those rounds: it catches up to
/// within the bound.
#[test]
fn staleness_holds_fast_nodes_back_and_a_restarted_node_catches_up() {
    let base = Scenario {
        wait: Wait::None,
        rounds: 40,
        compute: Duration::from_millis(2),
        stragglers: vec![(5, 4.0)],
        ..Scenario::new(3, 16, Family::Exponential)
    };
    let ahead = |r: &sim::Report| r.rounds_per_node.iter().max().unwrap() - r.rounds_per_node.iter().min().unwrap();
    let free = sim::run(base.clone()).unwrap_or_else(|v| panic!("{v}"));
    assert!(ahead(&free) > 60, "{:?}", free.rounds_per_node);
    let bounded = sim::run(Scenario {
        staleness: Some(1),
        ..base.clone()
    })
    .unwrap_or_else(|v| panic!("{v}"));
    // Every node is within 4 hops of every other on the exponential graph of 16.
    assert!(ahead(&bounded) <= 4 + 1, "{:?}", bounded.rounds_per_node);

    let restarted = check_live(Scenario {
        staleness: Some(2),
        wait: Wait::AtLeast(1),
        stragglers: Vec::new(),
        rounds: 700,
        crashes: vec![Crash {
            node: 2,
            at: Instant::from_millis(1_000),
            down_for: Duration::from_millis(300),
        }],
        ..base
    });
    // Node 2 comes back some 400 rounds behind; redoing them at 2 ms each would hold
    // its out-neighbours back for most of a second.
    assert!(
        restarted.longest_round < Duration::from_millis(100),
        "{}",
        restarted.longest_round
    );
}

/// The compressed mode at n = 64 with 10% loss: f16, bf16 and q8 reach the exact
/// average (1e-5) on an expander, a static exponential graph, the one-peer exponential
/// graph (mixed once a period over its union) and a ring; top-k 0.1 does on the first
/// three, and on the ring (gap 0.003, and top-k's step is ten times smaller)
/// it is still converging after 4,000 rounds: stated tolerance 0.15, error at least
/// halved since round 1,000. The simulator checks the public-copy invariant whenever the
/// cluster is quiescent, and the mean after every round.
#[test]
fn compressed_modes_reach_the_exact_average_at_64_nodes_under_loss() {
    use asap_core::compress::Compression;
    let mut failures = Vec::new();
    for (family, rounds) in [
        (Family::Expander, 150),
        (Family::Exponential, 60),
        (Family::OnePeerExponential, 300),
        (Family::Ring, 4_000),
    ] {
        for compression in [
            Compression::F16,
            Compression::Bf16,
            Compression::Q8,
            Compression::TopK { fraction: 0.1 },
        ] {
            let top_k = matches!(compression, Compression::TopK { .. });
            let mut scenario = Scenario::new(64, 64, family);
            scenario.compression = compression;
            scenario.rounds = if top_k && family != Family::Ring {
                4 * rounds
            } else {
                rounds
            };
            scenario.network = Network {
                loss: 0.1,
                ..Network::default()
            };
            let text = scenario.to_string();
            let report = match sim::run(scenario) {
                Ok(report) => report,
                Err(v) => {
                    failures.push(format!("{v}\n    scenario: {text}"));
                    continue;
                }
            };
            let errors = &report.error_per_round;
            let err = *errors.last().unwrap();
            let ok = match (top_k, family) {
                (true, Family::Ring) => err <= 0.15 && err <= errors[1_000] / 2.0,
                _ => err <= 1e-5,
            };
            if !ok {
                failures.push(format!(
                    "{family:?} {compression:?}: error {err:e} after {} rounds",
                    report.rounds
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Asynchronous rounds run push-sum: a round mixes whatever arrived, however stale, and
/// a share sent is a share given, so the replicas agree on the exact average of the
/// initial ones although a 4× straggler mixed a quarter as often as the others. (Plain
/// averaging in these modes moved the mean at every one-sided mix: the same runs ended
/// with the replicas agreeing 0.04–0.10 away from the average.) Not `wait 1`: here the
/// others stop after their rounds, and the straggler would wait for them forever.
#[test]
fn asynchronous_rounds_keep_the_exact_average_with_a_straggler() {
    for (family, wait, staleness) in [
        (Family::OnePeerExponential, Wait::None, None),
        (Family::Exponential, Wait::None, None),
        (Family::Exponential, Wait::None, Some(2)),
    ] {
        for seed in 0..3 {
            let scenario = Scenario {
                wait,
                staleness,
                rounds: 400,
                compute: Duration::from_millis(2),
                stragglers: vec![(3, 4.0)],
                ..Scenario::new(seed, 16, family)
            };
            let text = scenario.to_string();
            let mut sim = Sim::new(scenario).unwrap();
            sim.run_until(400).unwrap_or_else(|v| panic!("{text}: {v}"));
            let error = sim.error();
            assert!(error < 1e-5, "{text}: replicas {error:e} from the average");
        }
    }
}

/// Largest distance between any value of replica `a` and the same value of `b`.
fn distance(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).abs())
        .fold(0.0, f64::max)
}

/// Elastic membership: node 5 of 16 joins the running cluster when the others have
/// finished 50 rounds, and all go on to 200. The joiner brings no mass: its first round
/// takes the model its in-neighbours send, so it ends with the others (within 1e-5),
/// and everyone ends within 1e-5 of the founding members' initial average: the join
/// did not move it. On one-peer-exp and exp, waiting for all in-neighbours or none.
#[test]
fn a_member_joins_at_round_50_of_200_and_ends_within_1e5_of_the_others() {
    const JOINER: u32 = 5;
    for family in [Family::OnePeerExponential, Family::Exponential] {
        for wait in [Wait::All, Wait::None] {
            let scenario = |at| Scenario {
                elastic: true,
                wait,
                rounds: 200,
                joins: vec![Join { node: JOINER, at }],
                ..Scenario::new(22, 16, family)
            };
            // When the founders finish round 50 (the joiner absent, as it will be up to
            // then: the run is the same until it joins).
            let mut probe = Sim::new(scenario(Instant::from_millis(3_600_000))).unwrap();
            probe.run_until(50).unwrap_or_else(|v| panic!("{v}"));
            let at = probe.now();
            let scenario = scenario(at);
            let text = scenario.to_string();
            let mut sim = Sim::new(scenario).unwrap();
            sim.run_until(200).unwrap_or_else(|v| panic!("{text}: {v}"));
            let joiner = sim.node(JOINER).expect("the joiner is up");
            assert!(joiner.has_model(), "{text}: the joiner holds no model");
            // It joined when the others had done 50 rounds, not before: it finished
            // about 150 of the 200 (it counts the cluster's rounds from its join).
            let rounds = joiner.stats().rounds;
            assert!(rounds < 160, "{text}: the joiner finished {rounds} rounds");
            let others = (0..16).filter(|&i| i != JOINER);
            let apart = others
                .clone()
                .map(|i| distance(sim.replica(JOINER), sim.replica(i)))
                .fold(0.0, f64::max);
            assert!(apart < 1e-5, "{text}: the joiner ends {apart:e} from the others");
            // The target is the founders' initial average, and the replicas are there.
            let initial = asap_tests::random_vectors(16, sim.scenario().model_len, 22);
            let founders: Vec<&Vec<f32>> = others.map(|i| &initial[i as usize]).collect();
            assert_eq!(sim.target(), asap_tests::mean(&founders), "{text}");
            let error = sim.error();
            assert!(error < 1e-5, "{text}: replicas {error:e} from the founders' average");
        }
    }
}

/// Elastic membership: a join while the founders' replicas still differ (3 ms in, their
/// third round) must not move their average either — the joiner brings no mass, and
/// every share given to it or by it arrives somewhere. The join at round 50 above comes
/// when the replicas agree, where a share lost on the way moves nothing visible; here it
/// would. Everyone must end within 1e-5 of the founders' initial average (the sim also
/// checks the mass-weighted mean between rounds in `Wait::All`).
#[test]
fn a_join_while_the_replicas_differ_keeps_the_founders_average() {
    let mut failures = Vec::new();
    for family in [Family::OnePeerExponential, Family::Exponential] {
        for wait in [Wait::All, Wait::None] {
            let scenario = Scenario {
                elastic: true,
                wait,
                rounds: 200,
                joins: vec![Join {
                    node: 5,
                    at: Instant::from_millis(3),
                }],
                ..Scenario::new(22, 16, family)
            };
            let text = scenario.to_string();
            let mut sim = Sim::new(scenario).unwrap();
            match sim.run_until(200) {
                Err(v) => failures.push(format!("{text}: {v}")),
                Ok(()) if sim.error() > 1e-5 => failures.push(format!(
                    "{text}: replicas {:e} from the founders' average (spread {:e})",
                    sim.error(),
                    sim.report().spread
                )),
                Ok(()) => {}
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Elastic membership: node 9 of 16 leaves at round 100 and the others go on to 200.
/// So that the leave matters, the replicas are first changed to fresh values (a stand-in
/// for the training that makes members differ), so the mean of those who stay is not
/// the mean of all. They end within 1e-5 of the mass-weighted mean of those present at
/// the leave. That is exact in `Wait::All`: between rounds every update sent was folded
/// (no mass in flight), the one that leaves takes only its own mass, and the others,
/// held between rounds until they heard its Leave, never give it a share again — a
/// share meant for it stays with its sender — so `Σ m·x` and `Σ m` of those present
/// are conserved from then on, and push-sum drives every replica to their ratio.
#[test]
fn a_member_leaves_at_round_100_and_the_rest_converge_to_the_mean_of_those_present() {
    const LEAVER: u32 = 9;
    for family in [Family::OnePeerExponential, Family::Exponential] {
        let scenario = Scenario {
            elastic: true,
            rounds: 200,
            ..Scenario::new(23, 16, family)
        };
        let text = scenario.to_string();
        let model_len = scenario.model_len;
        let mut sim = Sim::new(scenario).unwrap();
        sim.run_until(100).unwrap_or_else(|v| panic!("{text}: {v}"));
        let fresh = asap_tests::random_vectors(16, model_len, 99);
        sim.change_replicas(|i, replica| replica.copy_from_slice(&fresh[i as usize]));
        let all = sim.target().to_vec();
        sim.leave(LEAVER).unwrap_or_else(|v| panic!("{text}: {v}"));
        // The mean of those present, weighted by mass, reckoned here from outside.
        let rest: Vec<u32> = (0..16).filter(|&i| i != LEAVER).collect();
        let target: Vec<f64> = (0..model_len)
            .map(|k| {
                let node = |i: u32| sim.node(i).expect("up");
                let mass: f64 = rest.iter().map(|&i| node(i).mass_at(k)).sum();
                let sum: f64 = rest
                    .iter()
                    .map(|&i| node(i).mass_at(k) * f64::from(sim.replica(i)[k]))
                    .sum();
                sum / mass
            })
            .collect();
        let moved = distance_f64(&target, &all);
        assert!(moved > 1e-2, "{text}: the leave moved the mean by {moved:e} only");
        assert!(distance_f64(&target, sim.target()) < 1e-9, "{text}");
        sim.run_until(200).unwrap_or_else(|v| panic!("{text}: {v}"));
        assert!(sim.node(LEAVER).is_none(), "{text}: gone");
        for i in rest {
            let error = sim
                .replica(i)
                .iter()
                .zip(&target)
                .map(|(x, t)| (f64::from(*x) - t).abs())
                .fold(0.0, f64::max);
            assert!(
                error < 1e-5,
                "{text}: node {i} ends {error:e} from the mean of those present"
            );
        }
    }
}

fn distance_f64(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

//! The cost model (`asap_cli::cost`) against the simulator: the predicted time to shrink
//! the consensus error by 1e-6 is within 25% of the simulated time, on graphs whose rounds
//! come from different sources (exact after log n rounds; closed-form gap; measured gap).

use asap_cli::cost::{self, Job, Network as Links};
use asap_core::topology::{Family, Topology, TopologySpec};
use asap_core::Duration;
use asap_tests::sim::{self, Network, Scenario};

const MODEL: usize = 2_500;
const LATENCY_US: u64 = 50;
const BANDWIDTH: u64 = 125_000_000;
const COMPUTE_US: u64 = 20_000;

/// (predicted seconds, simulated seconds) to shrink the consensus error by 1e-6.
fn predicted_and_simulated(family: Family, nodes: u32, degree: Option<u32>) -> (f64, f64) {
    let spec = TopologySpec {
        degree,
        ..TopologySpec::new(family, nodes)
    };
    let t = Topology::new(spec, &mut vec![0.0; 3 * nodes as usize]).unwrap();
    let job = Job {
        model_bytes: (4 * MODEL) as f64,
        compute: COMPUTE_US as f64 * 1e-6,
    };
    let links = Links {
        bandwidth: BANDWIDTH as f64,
        latency: LATENCY_US as f64 * 1e-6,
    };
    let p = cost::asap(&t, 1e-6, &job, &links);
    let scenario = Scenario {
        degree,
        model_len: MODEL,
        rounds: p.rounds + 40,
        max_frame: 1_400,
        compute: Duration::from_micros(COMPUTE_US),
        network: Network {
            latency: Duration::from_micros(LATENCY_US),
            bandwidth: Some(BANDWIDTH),
            ..Network::default()
        },
        ..Scenario::new(1, nodes, family)
    };
    let report = sim::run(scenario).unwrap_or_else(|v| panic!("{v:?}"));
    let e0 = report.error_per_round[0];
    let rounds = report
        .error_per_round
        .iter()
        .position(|&e| e <= 1e-6 * e0)
        .expect("reached 1e-6 of the initial error");
    let simulated = report.time_per_round[rounds - 1].total_micros() as f64 * 1e-6;
    (p.seconds(), simulated)
}

#[test]
fn predictions_are_within_a_quarter_of_the_simulated_time() {
    for (family, nodes, degree) in [
        (Family::OnePeerExponential, 16, None),
        (Family::Ring, 16, None),
        (Family::Exponential, 32, None),
        (Family::Expander, 32, Some(4)),
    ] {
        let (predicted, simulated) = predicted_and_simulated(family, nodes, degree);
        let error = (predicted - simulated) / simulated;
        assert!(
            error.abs() <= 0.25,
            "{family} n={nodes}: predicted {predicted:.3} s, simulated {simulated:.3} s"
        );
    }
}

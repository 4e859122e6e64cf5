//! Eight nodes on a ring average their replicas with stochastic reduce and NOTIFY-ACK
//! over a simulated network that loses, duplicates and reorders frames, on a virtual
//! clock. Prints the consensus error as the rounds go by, then the traffic each node
//! sent.
//!
//! ```text
//! cargo run --release -p asap-tests --example cluster [-- NODES LOSS SEED]
//! ```

use asap_core::topology::Family;
use asap_core::Duration;
use asap_tests::sim::{Network, Scenario, Sim};

const MODEL: usize = 100_000;
const ROUNDS: u32 = 400;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u32 = args.next().map_or(8, |a| a.parse().expect("NODES: a number of nodes"));
    let loss: f64 = args.next().map_or(0.1, |a| a.parse().expect("LOSS: a probability"));
    let seed: u64 = args.next().map_or(1, |a| a.parse().expect("SEED: an integer"));
    assert!((2..=256).contains(&n), "NODES must be in 2..=256");
    assert!((0.0..0.9).contains(&loss), "LOSS must be in [0, 0.9)");

    let scenario = Scenario {
        model_len: MODEL,
        rounds: ROUNDS,
        max_frame: 1_400,
        compute: Duration::ZERO,
        network: Network {
            loss,
            duplicate: 0.01,
            latency: Duration::from_micros(200),
            jitter: Duration::from_micros(400),
            bandwidth: None,
        },
        ..Scenario::new(seed, n, Family::Ring)
    };
    let mut sim = Sim::new(scenario).expect("a valid scenario");

    println!(
        "{n} nodes on a ring, {MODEL} values each, {:.0}% frame loss, seed {seed}",
        loss * 100.0
    );
    println!("{:>6} {:>14} {:>12}", "round", "max |x - mean|", "virtual time");
    println!("{:>6} {:>14.3e} {:>12}", 0, sim.error(), sim.now());
    let mut round = 0;
    while round < ROUNDS {
        round += 20;
        if let Err(violation) = sim.run_until(round) {
            eprintln!("{violation}");
            std::process::exit(1);
        }
        let err = sim.error();
        println!("{round:>6} {err:>14.3e} {:>12}", sim.now());
        if err < 1e-6 {
            break;
        }
    }
    let sent: u64 = sim.nodes().map(|n| n.stats().bytes_sent).sum();
    let resent: u64 = sim.nodes().map(|n| n.stats().chunks_resent).sum();
    println!(
        "bytes sent per node per round: {:.0} (model {} bytes); frames lost {}, chunks resent {resent}",
        sent as f64 / f64::from(n) / f64::from(round),
        4 * MODEL,
        sim.report().dropped
    );
}

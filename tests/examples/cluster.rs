//! The main job until the `asap` command lands: eight nodes on a ring average their
//! replicas with stochastic reduce and NOTIFY-ACK over an in-memory network that loses,
//! duplicates and reorders frames, on a virtual clock. Prints the consensus error as the
//! rounds go by, then the traffic each node sent.
//!
//! ```text
//! cargo run --release -p asap-tests --example cluster [-- NODES LOSS SEED]
//! ```

use asap_core::{Config, Duration, NodeId};
use asap_tests::{random_vectors, ring, Cluster, LinkModel};

const MODEL: usize = 100_000;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(8, |a| a.parse().expect("NODES: a number of nodes"));
    let loss: f64 = args.next().map_or(0.1, |a| a.parse().expect("LOSS: a probability"));
    let seed: u64 = args.next().map_or(1, |a| a.parse().expect("SEED: an integer"));
    assert!((2..=256).contains(&n), "NODES must be in 2..=256");
    assert!((0.0..0.9).contains(&loss), "LOSS must be in [0, 0.9)");

    let config = |i: usize| Config::new(0xa5a9, NodeId(i as u16), MODEL);
    let mut memory = Cluster::memory(n, config, |i| ring(n, i).len());
    let initial = random_vectors(n, MODEL, seed);
    let target = Cluster::mean(&initial);
    let link = LinkModel {
        loss,
        duplicate: 0.01,
        delay: Duration::from_micros(200),
        jitter: Duration::from_micros(400),
    };
    let mut cluster = Cluster::new(&mut memory, config, |i| ring(n, i), initial, link, seed);

    println!(
        "{n} nodes on a ring, {MODEL} values each, {:.0}% frame loss, seed {seed}",
        loss * 100.0
    );
    println!("{:>6} {:>14} {:>12}", "round", "max |x - mean|", "virtual time");
    println!("{:>6} {:>14.3e} {:>12}", 0, cluster.max_error(&target), cluster.now);
    let mut round = 0;
    while round < 400 {
        round += 20;
        if !cluster.run_rounds(round, Duration::from_secs(3_600)) {
            eprintln!("round {round} not reached within an hour of virtual time");
            std::process::exit(1);
        }
        let err = cluster.max_error(&target);
        println!("{round:>6} {err:>14.3e} {:>12}", cluster.now);
        if err < 1e-6 {
            break;
        }
    }
    let sent: u64 = cluster.nodes.iter().map(|n| n.stats().bytes_sent).sum();
    let resent: u64 = cluster.nodes.iter().map(|n| n.stats().chunks_resent).sum();
    println!(
        "bytes sent per node per round: {:.0} (model {} bytes); frames lost {}, chunks resent {resent}",
        sent as f64 / n as f64 / f64::from(round),
        4 * MODEL,
        cluster.dropped
    );
}

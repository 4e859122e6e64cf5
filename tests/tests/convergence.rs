//! Stochastic reduce with NOTIFY-ACK on a ring reaches the exact average of the initial
//! replicas, over a perfect network and over one that drops a fifth of all frames.

use asap_core::{Config, Duration, NodeId};
use asap_tests::{random_vectors, ring, Cluster, LinkModel};

/// 1,000 values: several chunks per update at 1,400-byte frames, and a partial last one.
const MODEL: usize = 1_000;

fn converge(n: usize, link: LinkModel, seed: u64) -> (f64, Cluster<'static>) {
    let config = |i: usize| Config::new(0xa5a9, NodeId(i as u16), MODEL);
    let memory = Box::leak(Cluster::memory(n, config, |i| ring(n, i).len()).into_boxed_slice());
    let initial = random_vectors(n, MODEL, seed);
    let target = Cluster::mean(&initial);
    let mut cluster = Cluster::new(memory, config, |i| ring(n, i), initial, link, seed);
    // Ring of 8 with 1/3 weights: |λ2| = (1 + 2cos(2π/8))/3 ≈ 0.805, so ~70 rounds per
    // factor 1e-6 from an initial spread of 1; 200 rounds leave a wide margin.
    assert!(
        cluster.run_rounds(200, Duration::from_secs(600)),
        "rounds not reached by t={}",
        cluster.now
    );
    (cluster.max_error(&target), cluster)
}

#[test]
fn ring_of_2_4_8_reaches_the_exact_average() {
    for n in [2, 4, 8] {
        let (err, cluster) = converge(n, LinkModel::default(), n as u64);
        assert!(err <= 1e-6, "n={n}: max error {err:e}");
        assert_eq!(cluster.dropped, 0);
        for node in &cluster.nodes {
            assert_eq!(node.stats().rounds, 200);
            assert_eq!(node.stats().chunks_resent, 0, "nothing to resend on a perfect network");
        }
    }
}

#[test]
fn ring_converges_with_a_fifth_of_frames_lost() {
    let lossy = LinkModel {
        loss: 0.2,
        ..LinkModel::default()
    };
    for n in [2, 4, 8] {
        let (err, cluster) = converge(n, lossy, 100 + n as u64);
        assert!(err <= 1e-6, "n={n}: max error {err:e}");
        let sent: u64 = cluster.nodes.iter().map(|n| n.stats().frames_sent).sum();
        let share = cluster.dropped as f64 / sent as f64;
        assert!(
            (0.15..0.25).contains(&share),
            "n={n}: the network dropped {share:.3} of frames"
        );
        let resent: u64 = cluster
            .nodes
            .iter()
            .map(|n| n.stats().chunks_resent + n.stats().notifies_resent)
            .sum();
        assert!(resent > 0, "losses are recovered by retransmission");
        assert_eq!(cluster.event_counts[2], 0, "no peer declared down under 20% loss");
    }
}

#[test]
fn reordering_and_duplication_do_not_change_the_result() {
    let messy = LinkModel {
        loss: 0.05,
        duplicate: 0.1,
        delay: Duration::from_micros(200),
        jitter: Duration::from_millis(3),
    };
    let (err, cluster) = converge(8, messy, 42);
    assert!(err <= 1e-6, "max error {err:e}");
    let dups: u64 = cluster.nodes.iter().map(|n| n.stats().duplicates).sum();
    assert!(dups > 0, "duplicated frames were seen and ignored");
}

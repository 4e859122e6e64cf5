//! The compressed mode (CHOCO-gossip over NOTIFY-ACK): with every encoding, replicas on
//! a lossy network reach the exact average of the initial ones, the average is kept at
//! every round, the public-copy invariant holds once everything sent was folded, and
//! fewer bytes travel than with f32.

use asap_core::compress::Compression;
use asap_core::topology::{Family, Topology, TopologySpec};
use asap_core::{Config, ConfigError, Duration, NodeId, Wait};
use asap_tests::{random_vectors, ring, Cluster, LinkModel};

const MODEL: usize = 1_000;

fn config(compression: Compression, gamma: f32) -> impl Fn(usize) -> Config + Copy {
    move |i| Config {
        compression,
        consensus_step: Some(gamma),
        ..Config::new(0xc40c, NodeId(i as u16), MODEL)
    }
}

/// Largest gap between the replicas' mean and the initial mean.
fn mean_drift(cluster: &Cluster<'_>, target: &[f64]) -> f64 {
    let n = cluster.params.len() as f64;
    (0..MODEL)
        .map(|k| (cluster.params.iter().map(|p| f64::from(p[k])).sum::<f64>() / n - target[k]).abs())
        .fold(0.0, f64::max)
}

/// `t_i == Σ_j w_ji·(x̂_j − x̂_i)` for every node: the public-copy invariant, checked
/// once every update sent was folded (all rounds done on every node), to float
/// rounding.
fn public_copies_agree(cluster: &Cluster<'_>, weight_to: impl Fn(usize, usize) -> f32) -> f64 {
    let n = cluster.nodes.len();
    let copies: Vec<_> = cluster
        .nodes
        .iter()
        .map(|n| n.public_copies().expect("compressed"))
        .collect();
    let mut worst = 0.0f64;
    for i in 0..n {
        for k in 0..MODEL {
            let expected: f64 = (0..n)
                .map(|j| f64::from(weight_to(j, i)) * (f64::from(copies[j].public[k]) - f64::from(copies[i].public[k])))
                .sum();
            let t = f64::from(copies[i].hi[k]) + f64::from(copies[i].lo[k]);
            worst = worst.max((t - expected).abs());
        }
    }
    worst
}

struct Outcome {
    error: f64,
    drift: f64,
    invariant: f64,
    bytes: u64,
}

fn ring_run(compression: Compression, gamma: f32, rounds: u32, link: LinkModel, seed: u64) -> Outcome {
    let n = 8;
    let config = config(compression, gamma);
    let memory = Box::leak(Cluster::memory(n, config, |i| ring(n, i).len()).into_boxed_slice());
    let initial = random_vectors(n, MODEL, seed);
    let target = Cluster::mean(&initial);
    let mut cluster = Cluster::new(memory, config, |i| ring(n, i), initial, link, seed);
    assert!(
        cluster.run_rounds(rounds, Duration::from_secs(3_600)),
        "{compression:?}: rounds not reached"
    );
    // Ring weights: 1/3 to each side.
    let weight = |j: usize, i: usize| {
        if (j + 1) % n == i || (i + 1) % n == j {
            1.0 / 3.0
        } else {
            0.0
        }
    };
    let compressed = compression != Compression::None;
    Outcome {
        error: cluster.max_error(&target),
        drift: mean_drift(&cluster, &target),
        invariant: if compressed {
            public_copies_agree(&cluster, weight)
        } else {
            0.0
        },
        bytes: cluster.nodes.iter().map(|n| n.stats().bytes_sent).sum(),
    }
}

#[test]
fn every_encoding_reaches_the_exact_average_on_a_lossy_ring() {
    let lossy = LinkModel {
        loss: 0.1,
        ..LinkModel::default()
    };
    let plain = ring_run(Compression::None, 1.0, 300, lossy, 1);
    assert!(plain.error <= 1e-5, "f32: {:e}", plain.error);
    for (compression, gamma, rounds, bytes_share) in [
        (Compression::F16, 1.0, 300, 0.55),
        (Compression::Bf16, 1.0, 300, 0.55),
        (Compression::Q8, 1.0, 300, 0.3),
        (Compression::TopK { fraction: 0.1 }, 0.25, 600, 0.5),
    ] {
        let o = ring_run(compression, gamma, rounds, lossy, 1);
        assert!(o.error <= 1e-5, "{compression:?}: max error {:e}", o.error);
        assert!(o.drift <= 1e-5, "{compression:?}: the mean moved by {:e}", o.drift);
        assert!(
            o.invariant <= 1e-4,
            "{compression:?}: s and Σ w·x̂ differ by {:e}",
            o.invariant
        );
        let share = o.bytes as f64 / plain.bytes as f64 * 300.0 / f64::from(rounds);
        assert!(
            share <= bytes_share,
            "{compression:?}: {share:.3} of f32's bytes a round"
        );
    }
}

#[test]
fn the_average_is_kept_at_every_round_while_replicas_converge() {
    let n = 8;
    let config = config(Compression::Q8, 1.0);
    let memory = Box::leak(Cluster::memory(n, config, |i| ring(n, i).len()).into_boxed_slice());
    let initial = random_vectors(n, MODEL, 9);
    let target = Cluster::mean(&initial);
    let mut cluster = Cluster::new(memory, config, |i| ring(n, i), initial, LinkModel::default(), 9);
    let mut last = f64::INFINITY;
    for r in 1..=10u32 {
        assert!(cluster.run_rounds(20 * r, Duration::from_secs(600)));
        assert!(mean_drift(&cluster, &target) <= 1e-5, "round {}", 20 * r);
        let err = cluster.max_error(&target);
        assert!(
            err < last || err <= 1e-6,
            "round {}: error {err:e} after {last:e}",
            20 * r
        );
        last = err;
    }
}

#[test]
fn expander_static_and_one_peer_exponential_graphs_converge_compressed() {
    for family in [Family::Expander, Family::Exponential, Family::OnePeerExponential] {
        let n = 16;
        let topology = Topology::new(TopologySpec::new(family, n), &mut vec![0.0; 3 * n as usize]).unwrap();
        let config = config(Compression::Q8, 1.0);
        let memory = Box::leak(Cluster::topology_memory(config, &topology).into_boxed_slice());
        let initial = random_vectors(n as usize, MODEL, 3);
        let target = Cluster::mean(&initial);
        let link = LinkModel {
            loss: 0.1,
            ..LinkModel::default()
        };
        let mut cluster = Cluster::with_topology(memory, config, &topology, initial, link, 3);
        assert!(cluster.run_rounds(300, Duration::from_secs(3_600)));
        let err = cluster.max_error(&target);
        assert!(err <= 1e-5, "{family:?}: max error {err:e}");
        // A time-varying graph runs on its period's union, each edge at 1 / (period + 1)
        // (300 rounds: a whole number of periods of 4).
        let union = 1.0 / (topology.period() + 1) as f32;
        let weight = |j: usize, i: usize| match topology.period() {
            1 => topology.edge_weight(j as u32, i as u32, 0) as f32,
            _ if topology.peers_of(i as u32).any(|p| p == j as u32) => union,
            _ => 0.0,
        };
        let invariant = public_copies_agree(&cluster, weight);
        assert!(invariant <= 1e-4, "{family:?}: {invariant:e}");
    }
}

#[test]
fn compression_refuses_what_it_cannot_keep_exact() {
    let base = config(Compression::F16, 1.0)(0);
    let asynchronous = Config {
        wait: Wait::None,
        ..base
    };
    assert_eq!(asynchronous.layout(2), Err(ConfigError::CompressionNeedsExactRounds));
    let bad_fraction = Config {
        compression: Compression::TopK { fraction: 0.0 },
        ..base
    };
    assert_eq!(bad_fraction.layout(2), Err(ConfigError::Compression));
    let clipped = Config {
        clip: Some(asap_core::Clip {
            relative: 1.0,
            absolute: 1.0,
        }),
        ..base
    };
    assert_eq!(clipped.layout(2), Err(ConfigError::CompressionWithClip));
    let n = 8;
    let push_sum = Topology::new(TopologySpec::new(Family::Random, n), &mut [0.0; 24]).unwrap();
    let memory = &mut Cluster::topology_memory(config(Compression::F16, 1.0), &push_sum)[0];
    let built = asap_core::Node::<8>::with_topology(base, &push_sum, memory.buffers(), asap_core::Instant::ZERO);
    assert_eq!(built.err(), Some(ConfigError::CompressionNeedsStaticGraph));
    // The accumulator holds the disagreement (two parts) and the public copy.
    let layout = base.layout(2).unwrap();
    assert_eq!(layout.accumulator, 3 * MODEL);
}

#[test]
fn members_with_another_encoding_are_incompatible_from_the_handshake() {
    use asap_core::{Event, FrameError, Instant, Node, PeerSpec};
    // f16 and bf16 chunks hold as many values: only the Hello's encoding tells them apart.
    let f16 = config(Compression::F16, 1.0)(0);
    let bf16 = config(Compression::Bf16, 1.0)(1);
    assert_eq!(f16.chunk_len(), bf16.chunk_len());
    let mut memory = [f16, bf16].map(|c| asap_tests::NodeMemory::new(&c.layout(1).unwrap()));
    let [ma, mb] = &mut memory;
    let mut a: Node<'_, 4> = Node::new(f16, &[PeerSpec::both(NodeId(1), 0.5)], ma.buffers(), Instant::ZERO).unwrap();
    let mut b: Node<'_, 4> = Node::new(bf16, &[PeerSpec::both(NodeId(0), 0.5)], mb.buffers(), Instant::ZERO).unwrap();
    let mut buf = vec![0u8; 1_400];
    let t = a.poll_transmit(Instant::ZERO, &mut buf).unwrap().expect("a Hello");
    assert_eq!(
        b.handle_frame(Instant::ZERO, &buf[..t.len]),
        Err(FrameError::Incompatible(NodeId(0)))
    );
    assert!(std::iter::from_fn(|| b.poll_event()).any(|e| e == Event::PeerIncompatible(NodeId(0))));
}

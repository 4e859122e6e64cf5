//! The compressed mode (CHOCO-gossip over NOTIFY-ACK): with every encoding, replicas on
//! a lossy network reach the exact average of the initial ones, the average is kept at
//! every round, the public-copy invariant holds once everything sent was folded, and
//! fewer bytes travel than with f32.

use asap_core::compress::Compression;
use asap_core::topology::{Family, Topology, TopologySpec};
use asap_core::{Config, ConfigError, Duration, NodeId, Wait};
use asap_tests::sim::{Crash, Network, Scenario, Sim};
use asap_tests::NodeMemory;

const MODEL: usize = 1_000;

fn config(compression: Compression, gamma: f32) -> impl Fn(usize) -> Config + Copy {
    move |i| Config {
        compression,
        consensus_step: Some(gamma),
        ..Config::new(0xc40c, NodeId(i as u16), MODEL)
    }
}

/// Links of 500 µs that lose `loss` of the frames.
fn links(loss: f64) -> Network {
    Network {
        latency: Duration::from_micros(500),
        loss,
        ..Network::default()
    }
}

/// `n` nodes of `family` in the compressed mode with step `gamma` (no compression:
/// plain averaging), with no compute between rounds, ready to run.
fn cluster(family: Family, n: u32, compression: Compression, gamma: f32, loss: f64, seed: u64) -> Sim {
    let scenario = Scenario {
        model_len: MODEL,
        compression,
        consensus_step: Some(gamma),
        max_frame: 1_400,
        compute: Duration::ZERO,
        network: links(loss),
        ..Scenario::new(seed, n, family)
    };
    Sim::new(scenario).expect("a valid scenario")
}

/// Runs to `rounds`; the simulator checks the mean after every round and the
/// public-copy invariant whenever the cluster is between rounds on the way.
fn run_to(sim: &mut Sim, rounds: u32) {
    let compression = sim.scenario().compression;
    sim.run_until(rounds).unwrap_or_else(|v| panic!("{compression:?}: {v}"));
    if compression != Compression::None {
        assert!(sim.nodes().all(|n| n.public_copies().is_some()), "compressed");
    }
}

struct Outcome {
    error: f64,
    drift: f64,
    invariant: f64,
    bytes: u64,
}

fn ring_run(compression: Compression, gamma: f32, rounds: u32, loss: f64, seed: u64) -> Outcome {
    let mut sim = cluster(Family::Ring, 8, compression, gamma, loss, seed);
    run_to(&mut sim, rounds);
    // Every node finished `rounds` and none started another: everything sent was
    // folded, so `t == Σ_j w_ji·(x̂_j − x̂_i)` (ring weights: 1/3 each side) to float
    // rounding.
    Outcome {
        error: sim.error(),
        drift: sim.mean_drift(),
        invariant: sim.public_copy_gap(),
        bytes: sim.nodes().map(|n| n.stats().bytes_sent).sum(),
    }
}

#[test]
fn every_encoding_reaches_the_exact_average_on_a_lossy_ring() {
    let plain = ring_run(Compression::None, 1.0, 300, 0.1, 1);
    assert!(plain.error <= 1e-5, "f32: {:e}", plain.error);
    for (compression, gamma, rounds, bytes_share) in [
        (Compression::F16, 1.0, 300, 0.55),
        (Compression::Bf16, 1.0, 300, 0.55),
        (Compression::Q8, 1.0, 300, 0.3),
        (Compression::TopK { fraction: 0.1 }, 0.25, 600, 0.5),
    ] {
        let o = ring_run(compression, gamma, rounds, 0.1, 1);
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
    let mut sim = cluster(Family::Ring, 8, Compression::Q8, 1.0, 0.0, 9);
    let mut last = f64::INFINITY;
    for r in 1..=10u32 {
        run_to(&mut sim, 20 * r);
        assert!(sim.mean_drift() <= 1e-5, "round {}", 20 * r);
        let err = sim.error();
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
        let mut sim = cluster(family, 16, Compression::Q8, 1.0, 0.1, 3);
        run_to(&mut sim, 300);
        let err = sim.error();
        assert!(err <= 1e-5, "{family:?}: max error {err:e}");
        // A time-varying graph runs on its period's union, each edge at 1 / (period + 1)
        // (300 rounds: a whole number of periods of 4).
        let invariant = sim.public_copy_gap();
        assert!(invariant <= 1e-4, "{family:?}: {invariant:e}");
    }
    // Without loss no peer is ever down, so the simulator checks the invariant at the
    // end of every period on the way (over in-neighbours only: one-peer-exp is directed).
    for seed in [1, 2, 3] {
        let mut sim = cluster(Family::OnePeerExponential, 8, Compression::Q8, 1.0, 0.0, seed);
        run_to(&mut sim, 60);
        assert!(sim.error() <= 1e-5, "seed {seed}: {:e}", sim.error());
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
    let memory = &mut NodeMemory::new(&base.layout(push_sum.peers_of(0).count()).unwrap());
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
    let mut memory = [f16, bf16].map(|c| NodeMemory::new(&c.layout(1).unwrap()));
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

/// FNV-1a over 64 bits: a digest of a run's end state that any change of a bit shows.
fn fnv(hash: &mut u64, word: u64) {
    for byte in word.to_le_bytes() {
        *hash = (*hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
}

/// Digest of every replica, public copy and disagreement (`hi`, `lo`) and of the bytes
/// each node sent, after `rounds` rounds of `scenario`.
fn end_state(name: &str, scenario: Scenario, rounds: u32) -> u64 {
    let nodes = scenario.nodes;
    let mut sim = Sim::new(scenario).expect("a valid scenario");
    sim.run_until(rounds).unwrap_or_else(|v| panic!("{name}: {v}"));
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for i in 0..nodes {
        sim.replica(i).iter().for_each(|v| fnv(&mut hash, v.to_bits().into()));
        let node = sim.node(i).expect("every node is up at the end");
        let copies = node.public_copies().expect("compressed");
        for part in [copies.public, copies.hi, copies.lo] {
            part.iter().for_each(|v| fnv(&mut hash, v.to_bits().into()));
        }
        fnv(&mut hash, node.stats().bytes_sent);
        fnv(&mut hash, node.stats().chunks_resent);
    }
    hash
}

/// Changes to how the sender computes its compressed payloads (when it quantises, where
/// it keeps the result) must not change one bit of what the nodes compute or send: each
/// digest was recorded before such a change, on lossy links (resends), on a static and a
/// time-varying graph (where one period's payload goes to several partners), with a
/// crash and restart, and with models whose last chunk holds one value, or whose only
/// chunk holds two.
#[test]
fn compressed_runs_end_bit_for_bit_as_recorded() {
    let chunk = Config {
        compression: Compression::Q8,
        max_frame: 512,
        ..Config::new(0, NodeId(0), 1)
    }
    .chunk_len();
    let lossy = Network {
        latency: Duration::from_micros(300),
        jitter: Duration::from_micros(200),
        loss: 0.05,
        duplicate: 0.02,
        bandwidth: None,
    };
    let scenario = |compression, family, nodes, model_len| Scenario {
        model_len,
        compression,
        compute: Duration::from_micros(100),
        network: lossy,
        ..Scenario::new(0x5eed, nodes, family)
    };
    let q8 = Compression::Q8;
    let mut crashed = scenario(q8, Family::Ring, 6, 3_000);
    crashed.crashes = vec![Crash {
        node: 2,
        at: asap_core::Instant::from_millis(8),
        down_for: Duration::from_millis(5),
    }];
    let cases: [(&str, Scenario, u64); 8] = [
        ("q8 ring", scenario(q8, Family::Ring, 8, 3_000), 0x5886_d22c_2247_8e17),
        (
            "q8 exponential",
            scenario(q8, Family::Exponential, 8, 2 * chunk + 1),
            0x2b46_dbf6_c95b_0d95,
        ),
        ("q8 two values", scenario(q8, Family::Ring, 4, 2), 0x2db5_0320_adb7_121e),
        ("q8 crash", crashed, 0x4d63_9723_99b6_68dc),
        (
            "f16 ring",
            scenario(Compression::F16, Family::Ring, 8, 3_000),
            0xe748_5062_476a_1267,
        ),
        (
            "bf16 expander",
            scenario(Compression::Bf16, Family::Expander, 8, 3_000),
            0x7a13_4a7c_f99d_b3b4,
        ),
        (
            "top-k 0.1 ring",
            scenario(Compression::TopK { fraction: 0.1 }, Family::Ring, 8, 3_000),
            0x6b63_f7ed_7c75_e766,
        ),
        (
            "top-k 0.75 ring",
            scenario(Compression::TopK { fraction: 0.75 }, Family::Ring, 4, 3_000),
            0xed06_7f1b_94f1_312f,
        ),
    ];
    let mut wrong = Vec::new();
    for (name, scenario, expected) in cases {
        let got = end_state(name, scenario, 24);
        if got != expected {
            wrong.push(format!("{name}: {got:#018x}, recorded {expected:#018x}"));
        }
    }
    assert!(wrong.is_empty(), "end states changed:\n{}", wrong.join("\n"));
}

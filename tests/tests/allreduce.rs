//! The ring all-reduce baseline computes the exact average on a perfect and on a lossy,
//! reordering network, round after round.

use std::collections::VecDeque;

use asap_core::{AllReduce, AllReduceBuffers};
use asap_core::{Config, Duration, Instant, NodeId};
use asap_tests::random_vectors;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Runs `rounds` all-reduce rounds among `n` nodes; returns the max error to the mean
/// after each round and the bytes each node sent per round.
fn run(n: usize, model: usize, loss: f64, rounds: u32, seed: u64) -> (Vec<f64>, f64) {
    let config = |i: usize| Config {
        max_frame: 512,
        ..Config::new(5, NodeId(i as u16), model)
    };
    let mut work: Vec<Vec<f32>> = vec![vec![0.0; model]; n];
    let mut bits: Vec<Vec<u32>> = (0..n)
        .map(|i| vec![0; AllReduce::bitmap_words(&config(i), n as u32)])
        .collect();
    let mut nodes: Vec<AllReduce<'_>> = work
        .iter_mut()
        .zip(bits.iter_mut())
        .enumerate()
        .map(|(i, (w, b))| {
            AllReduce::new(config(i), n as u32, AllReduceBuffers { work: w, chunk_bits: b }).expect("valid config")
        })
        .collect();
    let mut params = random_vectors(n, model, seed);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut now = Instant::ZERO;
    let mut wire: VecDeque<(Instant, usize, Vec<u8>)> = VecDeque::new();
    let mut buf = vec![0u8; 512];
    let mut errors = Vec::new();
    let mut bytes = 0u64;
    for _ in 0..rounds {
        let mean = asap_tests::Cluster::mean(&params);
        let mut finished = vec![false; n];
        for (node, p) in nodes.iter_mut().zip(&params) {
            node.start_round(now, p).expect("start");
        }
        let deadline = now + Duration::from_secs(600);
        while finished.iter().any(|f| !f) {
            assert!(now < deadline, "round stuck");
            for (i, node) in nodes.iter_mut().enumerate() {
                while let Some(t) = node.poll_transmit(now, &mut buf).expect("buffer") {
                    bytes += t.len as u64;
                    if rng.random_bool(loss) {
                        continue;
                    }
                    // A lossy network also reorders; a perfect one keeps order.
                    let delay = if loss > 0.0 { rng.random_range(100..900) } else { 300 };
                    let delay = Duration::from_micros(delay);
                    wire.push_back((now + delay, usize::from(t.to.0), buf[..t.len].to_vec()));
                }
                if !finished[i] && node.is_ready() {
                    node.finish_round(now, &mut params[i]).expect("finish");
                    finished[i] = true;
                }
            }
            // Deliver the earliest frame, or jump to the next timer.
            let next_frame = wire.iter().map(|w| w.0).min();
            let next_timer = nodes.iter().filter_map(|n| n.poll_timeout()).min();
            match (next_frame, next_timer) {
                (Some(f), t) if t.is_none_or(|t| f <= t) => {
                    let at = wire.iter().position(|w| w.0 == f).expect("present");
                    let (when, to, bytes) = wire.remove(at).expect("present");
                    now = now.max(when);
                    let _ = nodes[to].handle_frame(now, &bytes);
                }
                (_, Some(t)) => {
                    now = now.max(t);
                    for node in nodes.iter_mut() {
                        node.handle_timeout(now);
                    }
                }
                (Some(_), None) | (None, None) => {}
            }
        }
        let err = params
            .iter()
            .flat_map(|p| p.iter().zip(&mean).map(|(x, m)| (f64::from(*x) - m).abs()))
            .fold(0.0, f64::max);
        errors.push(err);
        // Next round: every node perturbs its replica (a stand-in for a training step).
        for p in params.iter_mut() {
            for x in p.iter_mut() {
                *x += rng.random_range(-0.5..0.5);
            }
        }
    }
    (errors, bytes as f64 / n as f64 / f64::from(rounds))
}

#[test]
fn ring_allreduce_is_exact_every_round() {
    for n in [2usize, 3, 4, 7, 8] {
        let (errors, bytes) = run(n, 1_000, 0.0, 3, n as u64);
        assert!(errors.iter().all(|&e| e <= 1e-6), "n={n}: {errors:?}");
        // 2(n-1)/n models a round, plus headers and control frames.
        let model_bytes = 4_000.0 * 2.0 * (n - 1) as f64 / n as f64;
        assert!(
            bytes > model_bytes && bytes < 1.2 * model_bytes,
            "n={n}: {bytes} bytes a round, model part {model_bytes}"
        );
    }
}

#[test]
fn ring_allreduce_survives_loss_and_reordering() {
    for n in [3usize, 5, 8] {
        let (errors, _) = run(n, 700, 0.2, 3, 40 + n as u64);
        assert!(errors.iter().all(|&e| e <= 1e-6), "n={n}: {errors:?}");
    }
}

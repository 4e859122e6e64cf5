//! `asap demo`, the README's main job: N worker processes on loopback train the same
//! logistic regression twice, once with ASAP and once with the ring all-reduce baseline,
//! and the two runs are compared on wall time, loss, accuracy and bytes.
//!
//! The demo is only an orchestrator: each worker is an `asap node` process (the same
//! command a cluster runs), which prints one JSON line per evaluation and a summary at
//! the end. The demo stamps every line with its own clock as it arrives, so the loss
//! curves of all workers share one time axis.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use asap_fed::sparse::Dataset;
use serde::{Deserialize, Serialize};

use crate::worker::{Engine, Progress, Summary};

/// A line a worker prints with `--progress --json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Line {
    /// An evaluation.
    Progress(Progress),
    /// The end.
    Done(Box<Summary>),
}

/// One cluster run as the demo saw it.
#[derive(Debug, Serialize)]
pub struct Run {
    /// ASAP or all-reduce.
    pub engine: Engine,
    /// Graph (or "ring all-reduce").
    pub topology: String,
    /// How ASAP's updates travel (`none`, `q8`, ...).
    pub compression: String,
    /// ASAP's wait policy (`all`, `none`, k); empty for the ring.
    pub wait: String,
    /// Seconds from the spawn of the workers to the exit of the last one (start-up and
    /// leaving included).
    pub wall_s: f64,
    /// Seconds from the first round to the last, on the slowest worker.
    pub train_s: f64,
    /// Rounds each worker finished (the fewest).
    pub rounds: u64,
    /// Rounds the busiest worker finished (more than `rounds` when members do not wait
    /// for the slowest: asynchronous ASAP under a budget).
    pub rounds_max: u64,
    /// The cluster's loss over time: `(seconds, mean test loss of the workers' replicas)`,
    /// one point per evaluation received.
    pub curve: Vec<(f64, f64)>,
    /// Mean bytes sent per worker at each point of `curve` (as far as the workers had
    /// reported).
    pub bytes_curve: Vec<f64>,
    /// Mean final test loss of the workers' replicas.
    pub final_loss: f64,
    /// Mean final test accuracy.
    pub final_accuracy: f64,
    /// Mean bytes sent per worker.
    pub bytes_per_worker: f64,
    /// Update chunks resent, all workers together.
    pub chunks_resent: u64,
    /// The workers' final replicas on the test set, when they were saved
    /// ([`FinalModels::score`]).
    pub models: Option<FinalModels>,
    /// Every worker's summary.
    pub workers: Vec<Summary>,
}

/// How the workers' final replicas do on the test set: their mean (the model the
/// cluster's average converges to; what one would deploy), and the worst one (the
/// member furthest from it, by test loss).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct FinalModels {
    /// Test loss of the mean of the replicas.
    pub averaged_loss: f64,
    /// Test accuracy of the mean of the replicas.
    pub averaged_accuracy: f64,
    /// The highest test loss of a replica.
    pub worst_loss: f64,
    /// That replica's test accuracy.
    pub worst_accuracy: f64,
    /// Its worker.
    pub worst_rank: u32,
}

impl FinalModels {
    /// Scores `replicas` (by rank, all of the test set's length) on `test`.
    pub fn score(replicas: &[Vec<f32>], test: &Dataset) -> Result<FinalModels, String> {
        let len = test.features();
        if replicas.is_empty() {
            return Err("no replicas to score".into());
        }
        if let Some((rank, r)) = replicas.iter().enumerate().find(|(_, r)| r.len() != len) {
            return Err(format!("replica {rank} has {} values, the model {len}", r.len()));
        }
        let mut mean = vec![0.0f64; len];
        for r in replicas {
            mean.iter_mut().zip(r).for_each(|(m, v)| *m += f64::from(*v));
        }
        let n = replicas.len() as f64;
        let mean: Vec<f32> = mean.iter().map(|m| (m / n) as f32).collect();
        let averaged = test.evaluate(&mean);
        let (worst_rank, worst) = replicas
            .iter()
            .map(|r| test.evaluate(r))
            .enumerate()
            .max_by(|a, b| a.1.loss.total_cmp(&b.1.loss))
            .expect("not empty");
        Ok(FinalModels {
            averaged_loss: averaged.loss,
            averaged_accuracy: averaged.accuracy,
            worst_loss: worst.loss,
            worst_accuracy: worst.accuracy,
            worst_rank: worst_rank as u32,
        })
    }
}

impl Run {
    /// Seconds until the cluster's loss first reached `target`.
    pub fn time_to(&self, target: f64) -> Option<f64> {
        self.curve.iter().find(|p| p.1 <= target).map(|p| p.0)
    }

    /// Mean bytes a worker had sent when the cluster's loss first reached `target`.
    pub fn bytes_to(&self, target: f64) -> Option<f64> {
        let at = self.curve.iter().position(|p| p.1 <= target)?;
        self.bytes_curve.get(at).copied()
    }

    /// What the table calls it: the engine, the compression if any, and ASAP's wait
    /// policy.
    pub fn label(&self) -> String {
        let mut label = self.engine.to_string();
        if !matches!(self.compression.as_str(), "none" | "") {
            label += &format!(" {}", self.compression);
        }
        if !self.wait.is_empty() {
            label += &format!(" wait {}", self.wait);
        }
        label
    }

    /// Rounds per worker: "300", or "min-max" when they differ.
    pub fn rounds_span(&self) -> String {
        if self.rounds == self.rounds_max {
            self.rounds.to_string()
        } else {
            format!("{}-{}", self.rounds, self.rounds_max)
        }
    }

    /// Mean wall time of a round.
    pub fn seconds_per_round(&self) -> f64 {
        self.train_s / self.rounds.max(1) as f64
    }
}

/// Spawns `commands` (one per rank; stdout piped) and follows their progress lines.
/// `on_progress(rank, progress, cluster_loss)` is called for each. Fails with the
/// first failing worker's stderr.
///
/// The curve's time counts from `opens_after` seconds after the spawn: when a budget's
/// window opens (the workers are ready by then and start together), else 0.
pub fn run_cluster(
    commands: Vec<Command>,
    initial_loss: f64,
    opens_after: f64,
    mut on_progress: impl FnMut(u32, &Progress, f64),
) -> Result<Run, String> {
    let world = commands.len();
    let start = Instant::now();
    let mut children: Vec<Child> = Vec::with_capacity(world);
    for (rank, mut command) in commands.into_iter().enumerate() {
        let child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start worker {rank}: {e}"));
        match child {
            Ok(c) => children.push(c),
            Err(e) => {
                children.iter_mut().for_each(|c| drop(c.kill()));
                return Err(e);
            }
        }
    }
    // One reader thread per worker: lines are stamped on arrival.
    let (tx, rx) = mpsc::channel::<(u32, Result<Line, String>, f64)>();
    let readers: Vec<_> = children
        .iter_mut()
        .enumerate()
        .map(|(rank, child)| {
            let stdout = child.stdout.take().expect("piped");
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let parsed = serde_json::from_str::<Line>(&line).map_err(|e| format!("{e}: {line}"));
                    let at = (start.elapsed().as_secs_f64() - opens_after).max(0.0);
                    if tx.send((rank as u32, parsed, at)).is_err() {
                        break;
                    }
                }
            })
        })
        .collect();
    drop(tx);
    let mut latest = vec![initial_loss; world];
    let mut accuracy = vec![0.0; world];
    let mut bytes = vec![0u64; world];
    let mut curve = vec![(0.0, initial_loss)];
    let mut bytes_curve = vec![0.0];
    let mut summaries: Vec<Option<Summary>> = (0..world).map(|_| None).collect();
    let mut bad_line = None;
    for (rank, line, at) in rx {
        match line {
            Ok(Line::Progress(p)) => {
                if let Some(loss) = p.loss {
                    latest[rank as usize] = loss;
                    accuracy[rank as usize] = p.accuracy.unwrap_or(0.0);
                    bytes[rank as usize] = p.bytes_sent;
                    let mean = latest.iter().sum::<f64>() / world as f64;
                    curve.push((at, mean));
                    bytes_curve.push(bytes.iter().sum::<u64>() as f64 / world as f64);
                    on_progress(rank, &p, mean);
                }
            }
            Ok(Line::Done(s)) => summaries[rank as usize] = Some(*s),
            Err(e) => bad_line = Some(format!("worker {rank} printed {e}")),
        }
    }
    readers.into_iter().for_each(|r| drop(r.join()));
    for (rank, child) in children.iter_mut().enumerate() {
        let status = child.wait().map_err(|e| e.to_string())?;
        if !status.success() {
            let mut err = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                let _ = stderr.read_to_string(&mut err);
            }
            return Err(format!("worker {rank} failed ({status}): {}", err.trim()));
        }
    }
    if let Some(e) = bad_line {
        return Err(e);
    }
    let wall_s = start.elapsed().as_secs_f64();
    let workers: Vec<Summary> = summaries
        .into_iter()
        .enumerate()
        .map(|(rank, s)| s.ok_or(format!("worker {rank} exited without a summary")))
        .collect::<Result<_, _>>()?;
    let n = world as f64;
    let last = |w: &Summary| w.last.as_ref().and_then(|p| p.loss.zip(p.accuracy));
    let (loss_sum, acc_sum) = workers
        .iter()
        .filter_map(last)
        .fold((0.0, 0.0), |(l, a), (wl, wa)| (l + wl, a + wa));
    Ok(Run {
        engine: workers[0].engine,
        topology: workers[0].topology.clone(),
        compression: workers[0].compression.clone(),
        wait: workers[0].wait.clone(),
        wall_s,
        train_s: workers.iter().map(|w| w.elapsed_s).fold(0.0, f64::max),
        rounds: workers.iter().map(|w| w.rounds).min().unwrap_or(0),
        rounds_max: workers.iter().map(|w| w.rounds).max().unwrap_or(0),
        curve,
        bytes_curve,
        final_loss: loss_sum / n,
        final_accuracy: acc_sum / n,
        bytes_per_worker: workers.iter().map(|w| w.bytes_sent as f64).sum::<f64>() / n,
        chunks_resent: workers.iter().map(|w| w.chunks_resent).sum(),
        models: None,
        workers,
    })
}

/// The comparison table. "loss" is the mean of the workers' final test losses (where
/// the curve ends); "avg model" scores the mean of their replicas, "worst" the worst
/// replica (loss and accuracy each).
pub fn table(runs: &[Run], target: f64) -> String {
    let mut out = format!(
        "{:<22} {:<15} {:>9} {:>8} {:>9} {:>12} {:>7} {:>14} {:>14} {:>8} {:>12}\n",
        "engine",
        "graph",
        "rounds",
        "train s",
        "ms/round",
        "s to target",
        "loss",
        "avg model",
        "worst",
        "MB/node",
        "MB to target"
    );
    for r in runs {
        out += &format!(
            "{:<22} {:<15} {:>9} {:>8.2} {:>9.2} {:>12} {:>7.4} {:>14} {:>14} {:>8.2} {:>12}\n",
            r.label(),
            r.topology,
            r.rounds_span(),
            r.train_s,
            1e3 * r.seconds_per_round(),
            or_not_reached(r.time_to(target), 1.0),
            r.final_loss,
            loss_and_accuracy(r.models.map(|m| (m.averaged_loss, m.averaged_accuracy))),
            loss_and_accuracy(r.models.map(|m| (m.worst_loss, m.worst_accuracy))),
            r.bytes_per_worker / 1e6,
            or_not_reached(r.bytes_to(target), 1e6),
        );
    }
    out
}

/// `value / unit` with two decimals, or "not reached".
fn or_not_reached(value: Option<f64>, unit: f64) -> String {
    value.map_or("not reached".to_string(), |v| format!("{:.2}", v / unit))
}

/// "0.5067 77.2%", or "-" when the replicas were not scored.
fn loss_and_accuracy(scored: Option<(f64, f64)>) -> String {
    scored.map_or("-".to_string(), |(l, a)| format!("{l:.4} {:.1}%", 100.0 * a))
}

/// A run's figures as `summary.json` holds them.
pub fn run_json(r: &Run, target: f64) -> serde_json::Value {
    serde_json::json!({
        "engine": r.engine,
        "topology": r.topology,
        "compression": r.compression,
        "wait": r.wait,
        "rounds": r.rounds,
        "rounds_min": r.rounds,
        "rounds_max": r.rounds_max,
        "train_s": r.train_s,
        "wall_s": r.wall_s,
        "ms_per_round": 1e3 * r.seconds_per_round(),
        "time_to_target_s": r.time_to(target),
        "final_loss": r.final_loss,
        "final_accuracy": r.final_accuracy,
        "averaged_model": r.models.map(|m| serde_json::json!({
            "loss": m.averaged_loss,
            "accuracy": m.averaged_accuracy,
        })),
        "worst_worker": r.models.map(|m| serde_json::json!({
            "rank": m.worst_rank,
            "loss": m.worst_loss,
            "accuracy": m.worst_accuracy,
        })),
        "bytes_per_worker": r.bytes_per_worker,
        "bytes_to_target": r.bytes_to(target),
        "chunks_resent": r.chunks_resent,
        "curve": r.curve,
    })
}

/// How `asap` did against the `ring` all-reduce, both timed to `target`: ring's time
/// to the target over ASAP's (above 1: ASAP is faster), ASAP's bytes to the target over
/// the ring's (below 1: ASAP sends less), and the test loss of ASAP's averaged model over
/// the ring's (1: the same final model quality). `None` where either did not reach it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Ratios {
    /// The ring's time to the target over ASAP's.
    pub speedup: f64,
    /// ASAP's bytes to the target over the ring's.
    pub bytes: f64,
    /// ASAP's averaged model's final test loss over the ring's (the mean final loss of
    /// the workers when the replicas were not scored).
    pub final_loss: f64,
}

impl Ratios {
    /// `asap` against `ring` at `target`.
    pub fn of(asap: &Run, ring: &Run, target: f64) -> Option<Ratios> {
        let loss = |r: &Run| r.models.map_or(r.final_loss, |m| m.averaged_loss);
        Some(Ratios {
            speedup: ring.time_to(target)? / asap.time_to(target).filter(|t| *t > 0.0)?,
            bytes: asap.bytes_to(target)? / ring.bytes_to(target).filter(|b| *b > 0.0)?,
            final_loss: loss(asap) / loss(ring),
        })
    }
}

/// A line that says how `asap` did against the `ring` (see [`Ratios`]).
pub fn against_ring(asap: &Run, ring: &Run, target: f64) -> Option<String> {
    let r = Ratios::of(asap, ring, target)?;
    Some(format!(
        "{}: reached the target {:.2}x as fast as the ring all-reduce, with {:.2}x its bytes; final loss {:.3}x the ring's",
        asap.label(),
        r.speedup,
        r.bytes,
        r.final_loss
    ))
}

/// One run of a straggler sweep: one worker `factor` times slower.
#[derive(Debug)]
pub struct SweepPoint {
    /// How much slower the straggler computes (1: no straggler).
    pub factor: f64,
    /// The run.
    pub run: Run,
}

/// The sweep's table: a line per factor and run, timed to one `target`.
pub fn sweep_table(points: &[SweepPoint], target: f64) -> String {
    let mut out = format!(
        "{:>6} {:<22} {:>12} {:>12} {:>7} {:>14} {:>14} {:>9}\n",
        "slower", "engine", "s to target", "MB to target", "loss", "avg model", "worst", "rounds"
    );
    for p in points {
        let r = &p.run;
        out += &format!(
            "{:>5}x {:<22} {:>12} {:>12} {:>7.4} {:>14} {:>14} {:>9}\n",
            p.factor,
            r.label(),
            or_not_reached(r.time_to(target), 1.0),
            or_not_reached(r.bytes_to(target), 1e6),
            r.final_loss,
            loss_and_accuracy(r.models.map(|m| (m.averaged_loss, m.averaged_accuracy))),
            loss_and_accuracy(r.models.map(|m| (m.worst_loss, m.worst_accuracy))),
            r.rounds_span(),
        );
    }
    out
}

/// The loss both runs are timed to: `slack` above the worse of the final losses (so
/// both reach it), unless the user set one.
pub fn default_target<'a>(runs: impl IntoIterator<Item = &'a Run>, slack: f64) -> f64 {
    runs.into_iter().map(|r| r.final_loss).fold(f64::MIN, f64::max) * (1.0 + slack)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(curve: Vec<(f64, f64)>, final_loss: f64) -> Run {
        Run {
            engine: Engine::Asap,
            topology: "exp".into(),
            compression: "none".into(),
            wait: "all".into(),
            wall_s: 2.0,
            train_s: 1.0,
            rounds: 10,
            rounds_max: 10,
            bytes_curve: (0..curve.len()).map(|i| 1e5 * i as f64).collect(),
            curve,
            final_loss,
            final_accuracy: 0.9,
            bytes_per_worker: 1e6,
            chunks_resent: 0,
            models: None,
            workers: vec![],
        }
    }

    #[test]
    fn time_to_target_is_the_first_crossing() {
        let r = run(vec![(0.0, 0.69), (0.5, 0.4), (0.7, 0.45), (0.9, 0.3)], 0.3);
        assert_eq!(r.time_to(0.42), Some(0.5));
        assert_eq!(r.time_to(0.3), Some(0.9));
        assert_eq!(r.time_to(0.2), None);
        assert!((r.seconds_per_round() - 0.1).abs() < 1e-12);
        // Bytes are read at the same crossing.
        assert_eq!(r.bytes_to(0.42), Some(1e5));
        assert_eq!(r.bytes_to(0.3), Some(3e5));
        assert_eq!(r.bytes_to(0.2), None);
        assert_eq!(r.label(), "asap wait all");
    }

    #[test]
    fn ratios_to_the_ring_are_read_at_the_target() {
        let ring = run(vec![(0.0, 0.69), (2.0, 0.5), (4.0, 0.3)], 0.3);
        let mut asap = run(vec![(0.0, 0.69), (1.0, 0.3)], 0.33);
        asap.compression = "q8".into();
        // Time: 4 s against 1 s; bytes: 1e5 (first point) against 2e5 (second).
        let r = Ratios::of(&asap, &ring, 0.3).expect("both reach it");
        assert_eq!((r.speedup, r.bytes), (4.0, 0.5));
        assert!((r.final_loss - 1.1).abs() < 1e-12, "{r:?}");
        let line = against_ring(&asap, &ring, 0.3).expect("a line");
        assert!(line.starts_with("asap q8 wait all: reached the target 4.00x"), "{line}");
        assert!(line.contains("0.50x its bytes") && line.contains("1.100x"), "{line}");
        // The scored averaged models decide the loss ratio when there are some.
        let scored = |averaged_loss| FinalModels {
            averaged_loss,
            averaged_accuracy: 0.7,
            worst_loss: 0.5,
            worst_accuracy: 0.6,
            worst_rank: 0,
        };
        asap.models = Some(scored(0.3));
        let mut ring = ring;
        ring.models = Some(scored(0.3));
        assert_eq!(Ratios::of(&asap, &ring, 0.3).map(|r| r.final_loss), Some(1.0));
        assert_eq!(Ratios::of(&asap, &ring, 0.2), None);
    }

    #[test]
    fn default_target_is_reached_by_both_runs() {
        let runs = [
            run(vec![(0.0, 0.69), (1.0, 0.3)], 0.3),
            run(vec![(0.0, 0.69), (2.0, 0.35)], 0.35),
        ];
        let target = default_target(&runs, 0.01);
        assert!((target - 0.3535).abs() < 1e-9);
        assert!(runs.iter().all(|r| r.time_to(target).is_some()));
        let text = table(&runs, target);
        assert_eq!(text.lines().count(), 3);
        assert!(text.contains("asap") && text.contains("1.00"), "{text}");
    }

    #[test]
    fn labels_name_the_compression_and_the_wait_policy() {
        let mut r = run(vec![(0.0, 0.69)], 0.69);
        assert_eq!(r.label(), "asap wait all");
        r.wait = "none".into();
        r.compression = "q8".into();
        assert_eq!(r.label(), "asap q8 wait none");
        r.engine = Engine::Allreduce;
        (r.wait, r.compression) = (String::new(), "none".into());
        assert_eq!(r.label(), "allreduce");
        assert_eq!(r.rounds_span(), "10");
        r.rounds_max = 31;
        assert_eq!(r.rounds_span(), "10-31");
    }

    /// Four rows over two features: label 1 when feature 0 is on, 0 when feature 1 is.
    fn tiny_test_set() -> Dataset {
        let mut test = Dataset::new(2);
        for _ in 0..2 {
            test.push([(0, 1.0)], 1.0);
            test.push([(1, 1.0)], 0.0);
        }
        test
    }

    #[test]
    fn final_models_score_the_mean_replica_and_the_worst_one() {
        let test = tiny_test_set();
        assert_eq!(test.len(), 4);
        // Two replicas that each get half the rows wrong; their mean gets all right.
        let replicas = vec![vec![3.0, 2.0], vec![-1.0, -4.0]];
        let m = FinalModels::score(&replicas, &test).expect("scored");
        assert_eq!(m.averaged_accuracy, 1.0);
        assert_eq!((m.worst_accuracy, m.worst_rank), (0.5, 0));
        assert!(m.averaged_loss < m.worst_loss, "{m:?}");
        // The mean is [1, -1]: loss ln(1 + e^-1) on every row.
        assert!((m.averaged_loss - (-1f64).exp().ln_1p()).abs() < 1e-6, "{m:?}");
        assert!(FinalModels::score(&[vec![1.0]], &test).is_err());
        assert!(FinalModels::score(&[], &test).is_err());
    }

    #[test]
    fn sweep_table_has_a_line_per_run_and_marks_targets_not_reached() {
        let points = [
            SweepPoint {
                factor: 1.0,
                run: run(vec![(0.0, 0.69), (1.0, 0.3)], 0.3),
            },
            SweepPoint {
                factor: 4.0,
                run: run(vec![(0.0, 0.69), (2.0, 0.5)], 0.5),
            },
        ];
        let text = sweep_table(&points, 0.4);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[1].contains("1x") && lines[1].contains("1.00"), "{text}");
        assert!(lines[2].contains("4x") && lines[2].contains("not reached"), "{text}");
        let json = run_json(&points[0].run, 0.4);
        assert_eq!(json["time_to_target_s"], 1.0);
        assert_eq!(
            (json["rounds_min"].as_u64(), json["rounds_max"].as_u64()),
            (Some(10), Some(10))
        );
    }
}

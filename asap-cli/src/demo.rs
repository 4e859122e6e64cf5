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
    /// Seconds from the spawn of the workers to the exit of the last one.
    pub wall_s: f64,
    /// Seconds from the first round to the last, on the slowest worker.
    pub train_s: f64,
    /// Rounds each worker finished (the fewest).
    pub rounds: u64,
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
    /// Every worker's summary.
    pub workers: Vec<Summary>,
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

    /// What the table calls it: the engine, and the compression if any.
    pub fn label(&self) -> String {
        match self.compression.as_str() {
            "none" | "" => self.engine.to_string(),
            c => format!("{} {c}", self.engine),
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
pub fn run_cluster(
    commands: Vec<Command>,
    initial_loss: f64,
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
                    if tx.send((rank as u32, parsed, start.elapsed().as_secs_f64())).is_err() {
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
        wall_s,
        train_s: workers.iter().map(|w| w.elapsed_s).fold(0.0, f64::max),
        rounds: workers.iter().map(|w| w.rounds).min().unwrap_or(0),
        curve,
        bytes_curve,
        final_loss: loss_sum / n,
        final_accuracy: acc_sum / n,
        bytes_per_worker: workers.iter().map(|w| w.bytes_sent as f64).sum::<f64>() / n,
        chunks_resent: workers.iter().map(|w| w.chunks_resent).sum(),
        workers,
    })
}

/// The comparison table.
pub fn table(runs: &[Run], target: f64) -> String {
    let mut out = format!(
        "{:<16} {:<15} {:>6} {:>9} {:>10} {:>15} {:>10} {:>9} {:>13} {:>13}\n",
        "engine",
        "graph",
        "rounds",
        "train s",
        "ms/round",
        "s to target",
        "final loss",
        "accuracy",
        "MB sent/node",
        "MB to target"
    );
    for r in runs {
        let to_target = r
            .time_to(target)
            .map_or("not reached".to_string(), |t| format!("{t:.2}"));
        let bytes_to_target = r
            .bytes_to(target)
            .map_or("not reached".to_string(), |b| format!("{:.2}", b / 1e6));
        out += &format!(
            "{:<16} {:<15} {:>6} {:>9.2} {:>10.2} {:>15} {:>10.4} {:>8.1}% {:>13.2} {:>13}\n",
            r.label(),
            r.topology,
            r.rounds,
            r.train_s,
            1e3 * r.seconds_per_round(),
            to_target,
            r.final_loss,
            100.0 * r.final_accuracy,
            r.bytes_per_worker / 1e6,
            bytes_to_target,
        );
    }
    out
}

/// The loss both runs are timed to: `slack` above the worse of the final losses (so
/// both reach it), unless the user set one.
pub fn default_target(runs: &[Run], slack: f64) -> f64 {
    runs.iter().map(|r| r.final_loss).fold(f64::MIN, f64::max) * (1.0 + slack)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(curve: Vec<(f64, f64)>, final_loss: f64) -> Run {
        Run {
            engine: Engine::Asap,
            topology: "exp".into(),
            compression: "none".into(),
            wall_s: 2.0,
            train_s: 1.0,
            rounds: 10,
            bytes_curve: (0..curve.len()).map(|i| 1e5 * i as f64).collect(),
            curve,
            final_loss,
            final_accuracy: 0.9,
            bytes_per_worker: 1e6,
            chunks_resent: 0,
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
        assert_eq!(r.label(), "asap");
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
}

//! One worker process of a cluster, as `asap node` runs it: build the engine (ASAP or
//! the ring all-reduce baseline) over a UDP socket, then alternate the workload's local
//! step with a round of reduce, reporting progress as it goes. What happens to its
//! peers (down, back, restarted, incompatible, rejected updates) goes to the `log`
//! facade as it happens ([`log_event`]).

use std::fmt;
use std::time::{Duration, Instant as WallClock};

use asap_core::{Event, Reducer, Stats};
use serde::{Deserialize, Serialize};

use asap_fed::sparse::{Dataset, Sgd};
use transport_mio::member::{self, Bound, Drive, MemberSpec};
use transport_mio::runtime::{Link, Runtime, RuntimeError};

/// Which reduce a worker runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Engine {
    /// ASAP: stochastic reduce with neighbours, NOTIFY-ACK per edge.
    Asap,
    /// The baseline: a ring all-reduce with a barrier every round.
    Allreduce,
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Engine::Asap => "asap",
            Engine::Allreduce => "allreduce",
        })
    }
}

/// How frames travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// Datagrams (lost ones are retransmitted by the protocol).
    Udp,
    /// Length-prefixed frames on one TCP stream per directed edge.
    Tcp,
}

impl Transport {
    /// The frame size when none is given (see `transport_mio::member::Transport`).
    pub fn default_max_frame(self) -> usize {
        member::Transport::from(self).default_max_frame()
    }
}

impl From<Transport> for member::Transport {
    fn from(t: Transport) -> Self {
        match t {
            Transport::Udp => member::Transport::Udp,
            Transport::Tcp => member::Transport::Tcp,
        }
    }
}

impl From<member::Transport> for Transport {
    fn from(t: member::Transport) -> Self {
        match t {
            member::Transport::Udp => Transport::Udp,
            member::Transport::Tcp => Transport::Tcp,
        }
    }
}

impl From<Engine> for member::Engine {
    fn from(e: Engine) -> Self {
        match e {
            Engine::Asap => member::Engine::Asap,
            Engine::Allreduce => member::Engine::Allreduce,
        }
    }
}

impl From<member::Engine> for Engine {
    fn from(e: member::Engine) -> Self {
        match e {
            member::Engine::Asap => Engine::Asap,
            member::Engine::Allreduce => Engine::Allreduce,
        }
    }
}

/// What a worker does between rounds.
#[derive(Debug)]
pub enum Workload {
    /// Nothing: the replicas (seeded, see [`asap_fed::seeded::vector`]) are averaged.
    Average {
        /// Model values.
        model: usize,
    },
    /// Minibatch SGD of logistic regression on a shard, evaluated on a test set.
    Logistic {
        /// This worker's training rows.
        shard: Box<Dataset>,
        /// The rows every worker is evaluated on.
        test: Box<Dataset>,
        /// Rows per step.
        batch: usize,
        /// Learning rate.
        rate: f32,
        /// Evaluate every this many rounds (and after the last).
        eval_every: u32,
    },
    /// Federated training (`asap_fed`): local SGD steps on this rank's shard before each
    /// training round, then averaging-only rounds; the shared model is evaluated on the
    /// held-out set at the end, beside a model trained on all shards together.
    Federated {
        /// The data of every rank (`world` must be the cluster's).
        problem: asap_fed::Problem,
        /// Local steps, rounds, learning rate; `plan.rounds()` is the run's round count.
        plan: asap_fed::Plan,
    },
}

impl Workload {
    fn model_len(&self) -> usize {
        match self {
            Workload::Average { model } => *model,
            Workload::Logistic { shard, .. } => shard.features(),
            Workload::Federated { problem, .. } => problem.features,
        }
    }
}

/// How long a worker trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// This many rounds.
    Rounds(u32),
    /// Until this moment of the wall clock (a budget, [`window`]): the round running
    /// then is finished, and the worker leaves. Every member should be given the same
    /// moment, so asynchronous and synchronous runs are compared on the same window.
    ///
    /// ASAP members stop each on its own clock: a member that left is no longer waited
    /// for (its Leave, or its silence past the peer timeout). The ring all-reduce cannot
    /// lose a member, so its members agree on their last round in-band: each round's
    /// all-reduce carries one more value, 1 from a member whose clock had passed the
    /// deadline when it started the round, and a non-zero sum makes that round the last
    /// for all ([`RING_VOTE`]).
    Deadline(WallClock),
}

/// Extra values a ring all-reduce with a [`Stop::Deadline`] reduces each round beside
/// the model: the stop vote.
pub const RING_VOTE: usize = 1;

/// A budget's window on this machine's clock: it opens at `opens_unix_s` (seconds since
/// the Unix epoch, from the system clock; `None`: now) and lasts `seconds`. A demo gives
/// every worker the same opening, a little after it spawns them, so that all start
/// their first round together ([`WorkerSpec::start`]) and stop together; members on
/// several machines need synchronised clocks (NTP) to share it.
pub fn window(seconds: f64, opens_unix_s: Option<f64>) -> (WallClock, WallClock) {
    let now = WallClock::now();
    let opens = opens_unix_s.map_or(now, |opens| {
        let unix_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let ahead = opens - unix_now;
        if ahead >= 0.0 {
            now + Duration::from_secs_f64(ahead)
        } else {
            // Opened already: as long ago as the clock can say (an Instant cannot
            // precede the machine's boot).
            now.checked_sub(Duration::from_secs_f64(-ahead)).unwrap_or(now)
        }
    });
    (opens, opens + Duration::from_secs_f64(seconds))
}

/// Writes a replica as little-endian f32 values (what [`read_replica`] reads): the
/// demo averages the workers' final replicas.
pub fn write_replica(path: &std::path::Path, values: &[f32]) -> std::io::Result<()> {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes)
}

/// Reads a replica [`write_replica`] wrote.
pub fn read_replica(path: &std::path::Path) -> std::io::Result<Vec<f32>> {
    let bytes = std::fs::read(path)?;
    if bytes.len() % 4 != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {} bytes is not a whole number of f32", path.display(), bytes.len()),
        ));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// Everything a worker needs: the cluster member it is (engine, graph, wait policy,
/// keys, ...: transport-mio's [`MemberSpec`]) and what it does between rounds.
#[derive(Debug)]
pub struct WorkerSpec {
    /// The member: rank, peers, engine, transport, graph, wait policy, frames, pace,
    /// timeouts, keys or identity, compression, incarnation, clip.
    pub member: MemberSpec,
    /// Rounds to run, or the deadline.
    pub stop: Stop,
    /// Start the first round no sooner than this (serving peers until then), so that
    /// the members of a budgeted run start together (`None`: at once).
    pub start: Option<WallClock>,
    /// Write the final replica here ([`write_replica`]).
    pub save_replica: Option<std::path::PathBuf>,
    /// Seed of the replicas and of the SGD order.
    pub seed: u64,
    /// Emulated compute a round (the event loop keeps serving peers meanwhile, as a
    /// communication thread beside a GPU would).
    pub compute: Duration,
}

/// One line of progress.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Progress {
    /// Rounds finished.
    pub round: u32,
    /// Seconds since the worker started its first round.
    pub elapsed_s: f64,
    /// Test loss of this worker's replica (logistic workload).
    pub loss: Option<f64>,
    /// Test accuracy of this worker's replica (logistic workload).
    pub accuracy: Option<f64>,
    /// Bytes this worker sent so far.
    pub bytes_sent: u64,
}

/// What a worker did.
#[derive(Debug, Serialize, Deserialize)]
pub struct Summary {
    /// This worker.
    pub rank: u32,
    /// Workers.
    pub world: u32,
    /// ASAP or all-reduce.
    pub engine: Engine,
    /// UDP or TCP.
    pub transport: Transport,
    /// The graph (ASAP).
    pub topology: String,
    /// How updates travel (`none`, `f16`, `bf16`, `q8`, `topk:F`).
    #[serde(default = "uncompressed")]
    pub compression: String,
    /// ASAP's wait policy (`all`, `none`, `barrier`, or k); empty for the ring.
    #[serde(default)]
    pub wait: String,
    /// Rounds finished.
    pub rounds: u64,
    /// Seconds from the first round's start to the last round's end.
    pub elapsed_s: f64,
    /// Bytes sent (headers, retransmissions and control frames included).
    pub bytes_sent: u64,
    /// Frames sent.
    pub frames_sent: u64,
    /// Update chunks sent again.
    pub chunks_resent: u64,
    /// Peers declared down.
    pub peers_down: u64,
    /// Datagrams the engine refused.
    pub datagrams_refused: u64,
    /// Connections lost or refused and tried again (TCP).
    pub reconnects: u64,
    /// Frames refused for authentication (bad tag, or a scheme this node does not take).
    pub auth_failures: u64,
    /// Authenticated frames refused as replays.
    pub replays: u64,
    /// Update chunks pulled in by the poisoning guard.
    pub chunks_clipped: u64,
    /// The socket receive buffer the kernel granted.
    pub recv_buffer: usize,
    /// Datagrams the kernel dropped because that buffer was full (Linux, UDP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_drops: Option<u64>,
    /// The last evaluation (logistic workload).
    pub last: Option<Progress>,
    /// The final replica (average and federated workloads: models can be large).
    #[serde(rename = "final", skip_serializing_if = "Option::is_none")]
    pub final_replica: Option<Vec<f32>>,
    /// Federated workload: the shared model on the held-out set, and the reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub federated: Option<Box<FederatedResult>>,
    /// Average workload: the largest distance of the final replica from the exact mean
    /// of every rank's starting replica (what the cluster should agree on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_error_to_mean: Option<f64>,
}

fn uncompressed() -> String {
    "none".into()
}

/// What a federated worker ends with.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FederatedResult {
    /// Training rounds (each after `local_steps` SGD steps).
    pub train_rounds: u32,
    /// SGD steps before each training round.
    pub local_steps: u32,
    /// Averaging-only rounds after training.
    pub consensus_rounds: u32,
    /// Held-out accuracy of this worker's final replica.
    pub test_accuracy: f64,
    /// Held-out mean logistic loss of this worker's final replica.
    pub test_loss: f64,
    /// Accuracy of the same replica on this rank's own shard.
    pub shard_accuracy: f64,
    /// Held-out accuracy of one model trained on every shard together with the same
    /// steps (`asap_fed::Plan::reference`).
    pub reference_accuracy: f64,
    /// Held-out loss of that model.
    pub reference_loss: f64,
    /// Seconds spent in local SGD steps.
    pub local_steps_s: f64,
}

/// Why a worker stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerError {
    /// It could not start: a bad graph, model or address, a port in use.
    Setup(String),
    /// It started and failed: a socket error, a round that never finished.
    Run(String),
}

impl fmt::Display for WorkerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkerError::Setup(e) | WorkerError::Run(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for WorkerError {}

/// Runs one worker to the end; `report` sees every evaluation.
pub fn run(spec: &WorkerSpec, mut workload: Workload, report: impl FnMut(&Progress)) -> Result<Summary, WorkerError> {
    let m = &spec.member;
    let model_len = workload.model_len();
    // What the engine reduces: the model, and the ring's stop vote when a deadline ends it.
    let reduced_len = match (m.engine, spec.stop) {
        (member::Engine::Allreduce, Stop::Deadline(_)) => model_len + RING_VOTE,
        _ => model_len,
    };
    let bound = Bound::listen(m.transport, m.peers[m.rank as usize]).map_err(WorkerError::Setup)?;
    let mut params = match &workload {
        Workload::Average { model } => asap_fed::seeded::vector(spec.seed, m.rank, *model),
        Workload::Logistic { .. } | Workload::Federated { .. } => vec![0.0; model_len],
    };
    params.resize(reduced_len, 0.0);
    let driver = Rounds {
        spec,
        params: &mut params,
        workload: &mut workload,
        report,
    };
    member::with_runtime(m, reduced_len, bound, driver).map_err(WorkerError::Setup)?
}

/// The worker's rounds, over whichever engine and link [`member::with_runtime`] built.
struct Rounds<'a, F> {
    spec: &'a WorkerSpec,
    params: &'a mut [f32],
    workload: &'a mut Workload,
    report: F,
}

impl<F: FnMut(&Progress)> Drive for Rounds<'_, F> {
    type Output = Result<Summary, WorkerError>;

    fn drive<R: Reducer, L: Link>(self, runtime: Runtime<R, L>) -> Self::Output {
        rounds(self.spec, runtime, self.params, self.workload, self.report)
    }
}

/// Logs one engine event (the `asap` binary's logger names the worker on each line).
/// A peer going down mid-run is a `warn`ing
/// (it is no longer waited for: the average is the remaining members'); after the
/// last round, or past a budget's deadline, it is the peers saying goodbye (`info`).
/// Round progress is `trace`.
pub fn log_event(event: &Event, after_last_round: bool) {
    use log::Level::{Debug, Info, Trace, Warn};
    let (level, what) = match event {
        Event::PeerDown(p) if after_last_round => (Info, format!("{p} is gone (left or silent)")),
        Event::PeerDown(p) => (
            Warn,
            format!("{p} is down (left or silent past the peer timeout); the round goes on without it"),
        ),
        Event::PeerUp(p) => (Info, format!("{p} is up")),
        Event::PeerRestarted(p) => (
            Info,
            format!("{p} restarted (new incarnation); its old state is forgotten"),
        ),
        Event::PeerIncompatible(p) => (
            Warn,
            format!("{p} announced another model layout: its frames are ignored"),
        ),
        Event::UpdateRejected { peer, round, reason } => {
            (Warn, format!("{peer}'s update of round {round} rejected: {reason}"))
        }
        Event::RoundReady { round } => (Trace, format!("round {round} ready")),
        Event::SendComplete { round } => (Trace, format!("round {round} delivered to every live neighbour")),
        Event::Joined { round } => (Debug, format!("the model is complete (round {round})")),
        other => (Debug, format!("{other:?}")),
    };
    log::log!(level, "{what}");
}

/// Evaluates `model` on `test` as of the end of `round`.
fn evaluate<R: Reducer, L: Link>(
    test: &Dataset,
    model: &[f32],
    round: u32,
    started: WallClock,
    runtime: &Runtime<R, L>,
) -> Progress {
    let e = test.evaluate(model);
    Progress {
        round,
        elapsed_s: started.elapsed().as_secs_f64(),
        loss: Some(e.loss),
        accuracy: Some(e.accuracy),
        bytes_sent: runtime.node().stats().bytes_sent,
    }
}

/// Takes every event the runtime holds and logs it.
fn log_events<R: Reducer, L: Link>(runtime: &mut Runtime<R, L>, after_last_round: bool) {
    while let Some(event) = runtime.poll_event() {
        log_event(&event, after_last_round);
    }
}

fn rounds<R: Reducer, L: Link>(
    spec: &WorkerSpec,
    mut runtime: Runtime<R, L>,
    params: &mut [f32],
    workload: &mut Workload,
    mut report: impl FnMut(&Progress),
) -> Result<Summary, WorkerError> {
    let fail = |e: RuntimeError| WorkerError::Run(e.to_string());
    let mut sgd = match workload {
        Workload::Logistic { shard, batch, rate, .. } => Some(Sgd::new(
            shard.len(),
            *batch,
            *rate,
            spec.seed ^ u64::from(spec.member.rank),
        )),
        Workload::Average { .. } | Workload::Federated { .. } => None,
    };
    let model_len = workload.model_len();
    // The ring's stop vote rides after the model (`Stop::Deadline`).
    let voting = params.len() > model_len;
    if let Some(late) = spec.start.and_then(|at| WallClock::now().checked_duration_since(at)) {
        if !late.is_zero() {
            log::warn!("ready {:.2} s after the start it was given", late.as_secs_f64());
        }
    }
    if let Some(wait) = spec.start.map(|at| at.saturating_duration_since(WallClock::now())) {
        runtime.serve(wait).map_err(fail)?;
    }
    if !runtime.node().has_model() {
        let waited = WallClock::now();
        let rounds = runtime
            .join(params, spec.member.round_timeout)
            .map_err(|e| WorkerError::Run(format!("joining: {e}")))?;
        log_events(&mut runtime, false);
        log::info!(
            "joined: the model arrived from the neighbours in {rounds} round(s), {:.2} s",
            waited.elapsed().as_secs_f64()
        );
    }
    let started = WallClock::now();
    let mut last: Option<Progress> = None;
    let mut local_time = Duration::ZERO;
    let mut round = 0;
    loop {
        match spec.stop {
            Stop::Rounds(rounds) if round >= rounds => break,
            Stop::Deadline(at) if !voting && WallClock::now() >= at => break,
            _ => {}
        }
        round += 1;
        let (model, vote) = params.split_at_mut(model_len);
        if let (Some(sgd), Workload::Logistic { shard, .. }) = (&mut sgd, &*workload) {
            sgd.step(shard, model);
        }
        if let Workload::Federated { problem, plan } = &*workload {
            let t = WallClock::now();
            plan.before_round(problem, model, spec.member.rank, round);
            local_time += t.elapsed();
        }
        if !spec.compute.is_zero() {
            runtime.serve(spec.compute).map_err(fail)?;
        }
        if let (Stop::Deadline(at), [vote]) = (spec.stop, vote) {
            *vote = f32::from(u8::from(WallClock::now() >= at));
        }
        let done = runtime.run_round(params, spec.member.round_timeout);
        // Past the deadline, members leaving are expected, not news.
        let ending = matches!(spec.stop, Stop::Deadline(at) if WallClock::now() >= at);
        log_events(&mut runtime, ending);
        done.map_err(|e| WorkerError::Run(format!("round {round}: {e}")))?;
        if let Workload::Logistic { test, eval_every, .. } = workload {
            if round % *eval_every == 0 {
                last = Some(evaluate(test, &params[..model_len], round, started, &runtime));
                report(last.as_ref().expect("just set"));
            }
        }
        // Some member's clock passed the deadline: this round was everyone's last.
        if voting && params[model_len] > 0.0 {
            break;
        }
    }
    // The final replica is always evaluated.
    if let Workload::Logistic { test, .. } = workload {
        if last.as_ref().is_none_or(|p| p.round != round) {
            last = Some(evaluate(test, &params[..model_len], round, started, &runtime));
            report(last.as_ref().expect("just set"));
        }
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    let params = &mut params[..model_len];
    if let Some(path) = &spec.save_replica {
        write_replica(path, params).map_err(|e| WorkerError::Run(format!("{}: {e}", path.display())))?;
    }
    runtime.finish(spec.member.linger).map_err(fail)?;
    log_events(&mut runtime, true);
    let socket = runtime.stats();
    if socket.refused > 0 {
        log::info!("{} frames refused in all", socket.refused);
    }
    let federated = match &*workload {
        Workload::Federated { problem, plan } => {
            let end = problem.evaluate(params);
            let mut reference = vec![0.0; problem.features];
            plan.reference(problem, &mut reference);
            let reference = problem.evaluate(&reference);
            let p = Progress {
                round,
                elapsed_s,
                loss: Some(end.loss),
                accuracy: Some(end.accuracy),
                bytes_sent: runtime.node().stats().bytes_sent,
            };
            report(&p);
            last = Some(p);
            Some(Box::new(FederatedResult {
                train_rounds: plan.train_rounds,
                local_steps: plan.local_steps,
                consensus_rounds: plan.consensus_rounds,
                test_accuracy: end.accuracy,
                test_loss: end.loss,
                shard_accuracy: problem.evaluate_shard(params, spec.member.rank).accuracy,
                reference_accuracy: reference.accuracy,
                reference_loss: reference.loss,
                local_steps_s: local_time.as_secs_f64(),
            }))
        }
        _ => None,
    };
    let stats: Stats = *runtime.node().stats();
    let m = &spec.member;
    let engine = Engine::from(m.engine);
    Ok(Summary {
        rank: m.rank,
        world: m.world(),
        engine,
        transport: m.transport.into(),
        topology: match engine {
            Engine::Asap => m.topology.family.name().to_string(),
            Engine::Allreduce => "ring all-reduce".to_string(),
        },
        compression: match engine {
            Engine::Asap => m.compression.to_string(),
            Engine::Allreduce => "none".to_string(),
        },
        wait: match engine {
            Engine::Asap => m.wait.to_string(),
            Engine::Allreduce => String::new(),
        },
        rounds: stats.rounds,
        elapsed_s,
        bytes_sent: stats.bytes_sent,
        frames_sent: stats.frames_sent,
        chunks_resent: stats.chunks_resent,
        peers_down: stats.peers_down,
        datagrams_refused: runtime.stats().refused,
        reconnects: runtime.stats().reconnects,
        auth_failures: stats.auth_failures,
        replays: stats.replays,
        chunks_clipped: stats.chunks_clipped,
        recv_buffer: runtime.recv_buffer_size().unwrap_or(0),
        kernel_drops: runtime.kernel_drops(),
        last,
        final_replica: matches!(workload, Workload::Average { .. } | Workload::Federated { .. })
            .then(|| params.to_vec()),
        federated,
        max_error_to_mean: match workload {
            Workload::Average { .. } => Some(asap_fed::seeded::max_error_to_mean(params, spec.seed, m.world())),
            Workload::Logistic { .. } | Workload::Federated { .. } => None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_are_read_back_as_written() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("r.f32");
        let values = [0.0, -1.5, f32::MIN_POSITIVE, 3.25e7];
        write_replica(&path, &values).expect("written");
        assert_eq!(std::fs::metadata(&path).expect("file").len(), 16);
        assert_eq!(read_replica(&path).expect("read"), values);
        std::fs::write(&path, [0u8; 7]).expect("written");
        let err = read_replica(&path).expect_err("7 bytes");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_budget_counts_from_its_opening_not_from_the_call() {
        let before = WallClock::now();
        let (opens, closes) = window(2.0, None);
        let after = WallClock::now();
        assert!(opens >= before && opens <= after);
        assert_eq!(closes - opens, Duration::from_secs(2));
        let unix_now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs_f64();
        // Opened 5 s ago: a 2 s budget is over, a 60 s one has about 55 s left.
        assert!(window(2.0, Some(unix_now - 5.0)).1 <= WallClock::now());
        let left = window(60.0, Some(unix_now - 5.0))
            .1
            .saturating_duration_since(WallClock::now());
        assert!(
            left > Duration::from_secs(50) && left <= Duration::from_secs(55),
            "{left:?}"
        );
        // Opening in 30 s: the window is ahead, whole.
        let (opens, closes) = window(1.0, Some(unix_now + 30.0));
        let ahead = opens.saturating_duration_since(WallClock::now());
        assert!(
            ahead > Duration::from_secs(25) && ahead <= Duration::from_secs(30),
            "{ahead:?}"
        );
        assert_eq!(closes - opens, Duration::from_secs(1));
    }
}

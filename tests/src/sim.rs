//! The deterministic network simulator: many real `asap-core` nodes, one virtual clock,
//! one event queue, injected faults, invariants checked as it runs.
//!
//! Everything derives from one `u64` seed (the scenario's random choices and every link's
//! coin flips); no wall clock, no threads. A failing run reports
//! `reproduce with ASAP_SIM_SEED=<seed>`.
//!
//! Events are frame deliveries, node timers and the end of a node's local compute; time
//! jumps from one to the next. Only the node an event concerns is serviced, so a
//! thousand nodes cost what their traffic costs. Between rounds nodes average, or learn:
//! the logistic workload is asap-fed's federated problem, the one servers and boards
//! train.
//!
//! [`Sim::run`] plays a scenario to its end and judges it; [`Sim::run_until`] runs to a
//! round count, can be called again with a larger one, and leaves the cluster for a
//! test to inspect in between (nodes, replicas, counters: [`Sim::node`],
//! [`Sim::replica`], [`Sim::report`]). Once warmed up the simulator allocates nothing
//! (frames move through a pre-allocated pool, reports are reserved for the scenario's
//! rounds), so `tests/zero_alloc.rs` counts the nodes' allocations through it.
//!
//! Checked as it runs: NOTIFY-ACK on every update sent (no new update on an edge before
//! the previous one was acknowledged), finite replicas, replicas within the range of
//! the initial ones (averaging never drives them apart, in any mode), the exact mean
//! (push-sum: weighted by mass) when nothing cost it, the compressed mode's public
//! copies whenever the cluster is between rounds, the staleness bound at every round
//! start, and liveness: once the last fault healed, every live node finishes a round
//! within a bound (see `Sim::round_bound`). At the end of [`Sim::run`]: every round
//! done, and consensus when the gap says it is due.
//!
//! Elastic membership ([`Scenario::elastic`]): members may join the running cluster
//! ([`Join`]) and leave it ([`Leave`]). Whatever ranges over "the nodes" for judging —
//! rounds done, errors, spread, the range, the mean, the staleness bound — ranges over
//! the members present: founders, and joiners once they hold the model
//! (`Node::has_model`); not a node that is still absent, or left.
//!
//! `ASAP_SIM_TRACE=1` prints every frame (and whether the link lost it) and every round
//! started and finished; `ASAP_SIM_DUMP=1` prints every node's state when liveness
//! fails.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;

use asap_core::topology::{Family, Topology, TopologySpec};
use asap_core::{AllReduce, AllReduceBuffers};
use asap_core::{Config, Duration, Event, Instant, Node, NodeId, Reducer, Transmit, Wait};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{random_vectors, NodeMemory};

/// Frame slots the pool holds from the start, per node: well over what a node has in
/// flight in a steady state (17 in `tests/zero_alloc.rs`), so the pool does not grow
/// there. It grows when a run needs more (bandwidth-limited links queue many frames).
const SLOTS_PER_NODE: usize = 64;

/// At most this many bytes of frame slots are allocated up front (a thousand nodes of
/// jumbo frames would take gigabytes); past that the pool grows as it is used.
const POOL_BYTES: usize = 64 << 20;

/// Queue entries reserved per node beyond the frames: timers (superseded ones wait in
/// the queue until their time), compute ends, crashes. (`tests/zero_alloc.rs` peaks at
/// 35 entries a node, frames included.)
const EVENTS_PER_NODE: usize = 64;

/// Time a run goes on after its last fault healed, beyond the settle rounds: peers
/// must hear from each other again (heartbeats every 100 ms) before rounds mean much.
const SETTLE_TIME: Duration = Duration::from_millis(500);

/// Peer-table capacity of simulated nodes.
pub const SIM_PEERS: usize = 32;

/// What one simulated link does to frames. Every link is alike.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Network {
    /// Fixed one-way latency.
    pub latency: Duration,
    /// Extra uniform latency in `0..jitter` (reorders frames).
    pub jitter: Duration,
    /// Probability a frame is lost.
    pub loss: f64,
    /// Probability a frame is delivered twice.
    pub duplicate: f64,
    /// Sender link rate in bytes per second (`None`: infinite). Frames from one node
    /// queue behind each other.
    pub bandwidth: Option<u64>,
}

impl Default for Network {
    fn default() -> Self {
        Network {
            latency: Duration::from_micros(200),
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            bandwidth: None,
        }
    }
}

/// Frames between `side` and the other nodes are dropped during `[start, end)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Partition {
    /// When it starts.
    pub start: Instant,
    /// When it heals.
    pub end: Instant,
    /// One side (the rest is the other).
    pub side: Vec<u32>,
}

/// Node `node` loses its state at `at` and restarts `down_for` later as a new
/// incarnation, with its initial replica.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Crash {
    /// The node.
    pub node: u32,
    /// When it crashes.
    pub at: Instant,
    /// How long it stays down.
    pub down_for: Duration,
}

/// Elastic membership: node `node` is absent from the start and joins the running
/// cluster at `at` (`Config::join`: it brings no mass, and takes the model its
/// in-neighbours send). Until it holds the model it takes no local step and is not
/// judged; then it is a member like the others, and counts the cluster's rounds from
/// the one it joined in, not from 0. Every life of it joins: a crash and restart makes
/// it fetch the model again.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Join {
    /// The node.
    pub node: u32,
    /// When it joins.
    pub at: Instant,
}

/// Elastic membership: node `node` leaves the cluster for good at `at` (`Node::leave`:
/// its Leave frames go out, then it is gone). Mid-round a leave costs exactness (shares
/// in flight to or from it go with it), so a scenario with leaves is not judged against
/// the exact mean; [`Sim::leave`], between rounds, is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Leave {
    /// The node.
    pub node: u32,
    /// When it leaves.
    pub at: Instant,
}

/// What each node computes between rounds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Workload {
    /// Nothing: pure averaging; the target is the exact mean of the initial replicas.
    Average,
    /// One minibatch SGD step of logistic regression on the node's shard of asap-fed's
    /// federated problem ([`asap_fed::Problem`], seeded by the scenario: shards that
    /// differ in feature means and class balance, as edge data does) before each round.
    Logistic {
        /// Samples per node (`Problem::shard_len`).
        samples: u32,
        /// Samples a step (at most [`asap_fed::MAX_BATCH`]).
        batch: usize,
        /// Learning rate.
        rate: f32,
    },
}

/// A whole run.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// Seed of everything random.
    pub seed: u64,
    /// Nodes.
    pub nodes: u32,
    /// Graph family.
    pub family: Family,
    /// Degree (families that take one).
    pub degree: Option<u32>,
    /// Model values per node.
    pub model_len: usize,
    /// Rounds every node must finish ([`Sim::run`]). The reports are reserved for this
    /// many, so a [`Sim::run_until`] to at most this count allocates nothing for them.
    pub rounds: u32,
    /// Wait policy.
    pub wait: Wait,
    /// Bounded staleness of every node (`Config::staleness`).
    pub staleness: Option<u32>,
    /// The cluster key (`Config::key`): every frame authenticated, duplicates refused as
    /// replays.
    pub key: Option<asap_core::auth::Key>,
    /// With a key: encrypt payloads (`Config::encrypt`; nodes start at incarnation 1).
    pub encrypt: bool,
    /// The compressed mode (`Config::compression`): needs `Wait::All`/`Barrier` and a
    /// static graph. Its mixes are not convex (the hull check is off), and its rate is
    /// not the gap's (the end-of-run check is the caller's); the public-copy invariant
    /// is checked whenever the cluster is quiescent.
    pub compression: asap_core::compress::Compression,
    /// The compressed mode's consensus step γ (`Config::consensus_step`; `None`: the
    /// encoding's default).
    pub consensus_step: Option<f32>,
    /// Largest frame.
    pub max_frame: usize,
    /// The links.
    pub network: Network,
    /// Local compute time per round.
    pub compute: Duration,
    /// Nodes whose compute is this many times slower.
    pub stragglers: Vec<(u32, f64)>,
    /// Network partitions.
    pub partitions: Vec<Partition>,
    /// Crashes with restart.
    pub crashes: Vec<Crash>,
    /// Give up past this much virtual time (from the start of the run).
    pub time_limit: Duration,
    /// What nodes compute between rounds.
    pub workload: Workload,
    /// Run the synchronous ring all-reduce baseline instead of ASAP (same links, faults,
    /// stragglers and workload).
    pub allreduce: bool,
    /// Elastic membership on every node (`Config::elastic`: push-sum on any graph, a
    /// peer counts once heard from). Needed by `joins` and `leaves`; not with
    /// compression or the all-reduce baseline (they refuse it).
    pub elastic: bool,
    /// Members that join the running cluster.
    pub joins: Vec<Join>,
    /// Members that leave it for good.
    pub leaves: Vec<Leave>,
}

impl Scenario {
    /// A fault-free scenario.
    pub fn new(seed: u64, nodes: u32, family: Family) -> Self {
        Scenario {
            seed,
            nodes,
            family,
            degree: None,
            model_len: 64,
            rounds: 50,
            wait: Wait::All,
            staleness: None,
            key: None,
            encrypt: false,
            compression: asap_core::compress::Compression::None,
            consensus_step: None,
            max_frame: 512,
            network: Network::default(),
            compute: Duration::from_millis(1),
            stragglers: Vec::new(),
            partitions: Vec::new(),
            crashes: Vec::new(),
            time_limit: Duration::from_secs(3_600),
            workload: Workload::Average,
            allreduce: false,
            elastic: false,
            joins: Vec::new(),
            leaves: Vec::new(),
        }
    }

    /// A scenario whose every option is drawn from `seed`: the fault mixes the seeded
    /// test suite and soak runs sweep.
    pub fn random(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let families = [
            Family::Ring,
            Family::Exponential,
            Family::OnePeerExponential,
            Family::Expander,
            Family::Hypercube,
        ];
        let family = families[rng.random_range(0..families.len())];
        let nodes = match family {
            Family::Hypercube | Family::OnePeerExponential => 1 << rng.random_range(1..6),
            Family::Expander => 2 * rng.random_range(3..16),
            _ => rng.random_range(2..33),
        };
        let mut s = Scenario::new(seed, nodes, family);
        s.model_len = rng.random_range(1..400);
        s.max_frame = [512, 1_400, 9_000][rng.random_range(0..3)];
        s.rounds = rng.random_range(5..40);
        s.network = Network {
            latency: Duration::from_micros(rng.random_range(50..2_000)),
            jitter: Duration::from_micros(if rng.random_bool(0.5) {
                rng.random_range(0..3_000)
            } else {
                0
            }),
            loss: if rng.random_bool(0.7) {
                rng.random_range(0.0..0.3)
            } else {
                0.0
            },
            duplicate: if rng.random_bool(0.3) {
                rng.random_range(0.0..0.2)
            } else {
                0.0
            },
            bandwidth: rng.random_bool(0.3).then(|| rng.random_range(1_000_000..1_000_000_000)),
        };
        s.compute = Duration::from_micros(rng.random_range(0..5_000));
        s.wait = match rng.random_range(0..10) {
            0 => Wait::None,
            1 => Wait::AtLeast(1),
            2 => Wait::Barrier,
            _ => Wait::All,
        };
        if rng.random_bool(0.3) {
            s.stragglers
                .push((rng.random_range(0..nodes), rng.random_range(2.0..10.0)));
        }
        if rng.random_bool(0.2) && nodes > 2 {
            let start = Instant::from_millis(rng.random_range(0..200));
            let side = (0..nodes).filter(|_| rng.random_bool(0.5)).collect();
            s.partitions.push(Partition {
                start,
                end: start + Duration::from_millis(rng.random_range(10..3_000)),
                side,
            });
        }
        // The all-reduce baseline has no membership: it survives loss and partitions
        // (it waits them out), not crashes.
        s.allreduce = rng.random_bool(0.1);
        if !s.allreduce && rng.random_bool(0.15) {
            let at = Instant::from_millis(rng.random_range(0..300));
            s.crashes.push(Crash {
                node: rng.random_range(0..nodes),
                at,
                down_for: Duration::from_millis(rng.random_range(1..4_000)),
            });
        }
        // Drawn last, so every option above stays what it was for each seed.
        if !s.allreduce && rng.random_bool(0.25) {
            s.staleness = Some(rng.random_range(1..4));
        }
        // After the staleness draw, for the same reason.
        if rng.random_bool(0.25) {
            s.key = Some(asap_core::auth::Key::new(rng.random()));
            // Drawn only here, so unkeyed seeds stay what they were.
            s.encrypt = rng.random_bool(0.5);
        }
        // Elastic membership, drawn after everything else so every seed keeps what it
        // drew before. The all-reduce ring refuses it. A leave needs four nodes, so that
        // a joiner keeps an in-neighbour with the model on every graph; the leaver is
        // not the joiner.
        if !s.allreduce && rng.random_bool(0.2) {
            s.elastic = true;
            let joiner = rng.random_bool(0.6).then(|| rng.random_range(0..nodes));
            if let Some(node) = joiner {
                let at = Instant::from_millis(rng.random_range(0..300));
                s.joins.push(Join { node, at });
            }
            if nodes >= 4 && rng.random_bool(0.6) {
                let node = match joiner {
                    Some(j) => (j + 1 + rng.random_range(0..nodes - 1)) % nodes,
                    None => rng.random_range(0..nodes),
                };
                let at = Instant::from_millis(rng.random_range(0..300));
                s.leaves.push(Leave { node, at });
            }
        }
        s
    }

    /// When the last fault heals (partitions end, crashed nodes restart) or the
    /// membership last changed (a join is a node down from the start until it joins; a
    /// leave makes its neighbours stop waiting for it, within `peer_timeout`).
    pub fn healed_at(&self) -> Instant {
        let partitions = self.partitions.iter().map(|p| p.end);
        partitions
            .chain(self.crashes.iter().map(|c| c.at + c.down_for))
            .chain(self.joins.iter().map(|j| j.at))
            .chain(self.leaves.iter().map(|l| l.at))
            .max()
            .unwrap_or(Instant::ZERO)
    }

    /// Whether the exact average can be expected: no crash lost a replica's mass, and no
    /// member left mid-round, taking the shares in flight to it. A join keeps it: the
    /// joiner brings no mass, so the mean of the founding members is the target. (A
    /// peer declared down during a long partition costs exactness too; the simulator
    /// checks that at run time.)
    pub fn conserves_mean(&self) -> bool {
        self.crashes.is_empty() && self.leaves.is_empty() && self.workload == Workload::Average
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{} {:?} staleness={:?} authenticated={} encrypted={} compression={:?} n={} model={} rounds={} frame={} net={:?} compute={} stragglers={:?} partitions={:?} crashes={:?}",
            if self.allreduce { "allreduce-baseline/" } else { "" },
            self.family,
            self.wait,
            self.staleness,
            self.key.is_some(),
            self.encrypt,
            self.compression,
            self.nodes,
            self.model_len,
            self.rounds,
            self.max_frame,
            self.network,
            self.compute,
            self.stragglers,
            self.partitions,
            self.crashes
        )?;
        // Only when set: every scenario without them prints as it always did.
        if let Some(step) = self.consensus_step {
            write!(f, " consensus_step={step}")?;
        }
        if self.elastic {
            write!(f, " elastic joins={:?} leaves={:?}", self.joins, self.leaves)?;
        }
        Ok(())
    }
}

/// What a run measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// Largest distance of any replica from the target after each round every node
    /// finished (index 0: before the first round).
    pub error_per_round: Vec<f64>,
    /// Logistic workload: the loss of the average replica on the problem's held-out test
    /// set (a mix of every node's distribution), after each round every node finished
    /// (index 0: before the first round).
    pub loss_per_round: Vec<f64>,
    /// Virtual time at which every node had finished each round.
    pub time_per_round: Vec<Duration>,
    /// Bytes each node sent, on average.
    pub bytes_per_node: f64,
    /// Events processed.
    pub events: u64,
    /// Frames the network dropped.
    pub dropped: u64,
    /// Times a node declared a peer down (each one may cost exactness: see
    /// [`Scenario::conserves_mean`]), not counting members that left.
    pub peers_down: u64,
    /// Times a node noted that a member left (its Leave, or its silence past
    /// `peer_timeout` once it was gone).
    pub departures: u64,
    /// Rounds every node finished.
    pub rounds: u32,
    /// Rounds each node finished (in its last life), at the end.
    pub rounds_per_node: Vec<u32>,
    /// Largest distance of any replica from the replicas' own mean, at the end (they may
    /// agree on a value off the exact average: asynchronous modes do not conserve it).
    pub spread: f64,
    /// The longest any node went without finishing a round once the last fault healed
    /// (counted from the heal, or from its previous finish when that came later).
    pub longest_round: Duration,
    /// Virtual time at the end.
    pub time: Duration,
}

/// A broken invariant: what, when, and how to replay it.
#[derive(Clone, Debug, PartialEq)]
pub struct Violation {
    /// The seed to replay.
    pub seed: u64,
    /// Virtual time.
    pub at: Instant,
    /// What broke.
    pub what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at {} (reproduce with ASAP_SIM_SEED={})",
            self.what, self.at, self.seed
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum What {
    /// Deliver pool slot.
    Deliver(usize),
    /// A node's timer (stale when the node's deadline moved).
    Timer(u32),
    /// A node's local compute ended.
    Computed(u32),
    /// A crashed node comes back.
    Restart(u32),
    /// A node crashes.
    Crash(u32),
    /// An absent node joins the cluster.
    Join(u32),
    /// A member leaves it.
    Leave(u32),
}

/// Per-edge record for the NOTIFY-ACK invariant.
#[derive(Clone, Copy, Debug, Default)]
struct EdgeLog {
    /// Last update round seen leaving the sender on this edge.
    sent: Option<u32>,
    /// The receiver acknowledged `sent` (an ACK for it reached the sender).
    acked: bool,
}

/// What a simulated node runs: ASAP, or the all-reduce baseline.
#[derive(Debug)]
enum Engine {
    Asap(Box<Node<'static, SIM_PEERS>>),
    AllReduce(Box<AllReduce<'static>>),
}

impl Engine {
    fn handle_frame(&mut self, now: Instant, bytes: &mut [u8]) {
        // Refusals are counted by the engine; the simulator only moves bytes.
        let _ = match self {
            Engine::Asap(n) => n.handle_frame_mut(now, bytes),
            Engine::AllReduce(a) => a.handle_frame_mut(now, bytes),
        };
    }

    fn handle_timeout(&mut self, now: Instant) {
        match self {
            Engine::Asap(n) => n.handle_timeout(now),
            Engine::AllReduce(a) => a.handle_timeout(now),
        }
    }

    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        let t = match self {
            Engine::Asap(n) => n.poll_transmit(now, buf),
            Engine::AllReduce(a) => a.poll_transmit(now, buf),
        };
        t.expect("buffer holds max_frame")
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Engine::Asap(n) => n.poll_timeout(),
            Engine::AllReduce(a) => a.poll_timeout(),
        }
    }

    /// The engine behind the one interface every runtime drives.
    fn reducer(&mut self) -> &mut dyn Reducer {
        match self {
            Engine::Asap(n) => &mut **n,
            Engine::AllReduce(a) => &mut **a,
        }
    }

    fn is_started(&self) -> bool {
        match self {
            Engine::Asap(n) => n.is_started(),
            Engine::AllReduce(a) => a.is_started(),
        }
    }

    /// The engine's events since the last call (the ring has none).
    fn events(&mut self, mut on: impl FnMut(Event)) {
        if let Engine::Asap(n) = self {
            while let Some(event) = n.poll_event() {
                on(event);
            }
        }
    }

    /// Whether it holds a model to train (`Node::has_model`: a joiner once every chunk
    /// came).
    fn has_model(&self) -> bool {
        match self {
            Engine::Asap(n) => n.has_model(),
            Engine::AllReduce(_) => true,
        }
    }
}

/// Where a node stands in the cluster's membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Membership {
    /// Not there yet: it joins later ([`Scenario::joins`]).
    Absent,
    /// Up (or crashed) without the model: it runs rounds to fetch it, takes no local
    /// step, and is not judged.
    Joining,
    /// A member: a founder, or a joiner that holds the model. Judged (crashed too: a
    /// crashed node is a member that will be back).
    Present,
    /// Left for good.
    Left,
}

struct SimNode {
    node: Option<Engine>,
    member: Membership,
    params: Vec<f32>,
    rounds_done: u32,
    /// When it last finished a round (or restarted).
    finished_at: Instant,
    computing_until: Option<Instant>,
    /// The deadline the queue holds a timer event for.
    timer: Option<Instant>,
    link_free_at: Instant,
    incarnation: u32,
    bytes_sent: u64,
    /// Peers this node declared down since its last update to them.
    down: Vec<bool>,
    /// Rounds each of its past incarnations had started when it crashed.
    started_before: Vec<u32>,
}

impl SimNode {
    /// The push-sum mass of its parameter `k`: 1 unless it runs ASAP with push-sum
    /// (a graph that needs it, asynchronous rounds, elastic membership); none when it is
    /// not there.
    fn mass_at(&self, k: usize) -> f64 {
        match (&self.node, self.member) {
            (_, Membership::Absent | Membership::Left) => 0.0,
            (Some(Engine::Asap(n)), _) => n.mass_at(k),
            _ => 1.0,
        }
    }

    /// A member judged: present, whether up or crashed.
    fn is_present(&self) -> bool {
        self.member == Membership::Present
    }
}

/// The simulator: a scenario's cluster, its network and the invariants it checks.
pub struct Sim {
    scenario: Scenario,
    topology: Topology,
    nodes: Vec<SimNode>,
    initial: Vec<Vec<f32>>,
    /// Per value, the exact mean of the replicas the run started from (or that
    /// [`Sim::change_replicas`] or a departure left), weighted by push-sum mass.
    target: Vec<f64>,
    /// Per value, the members' total mass when `target` was taken: what averaging
    /// conserves with it.
    target_mass: Vec<f64>,
    /// Nothing the simulator did cost exactness so far (a departure mid-round does).
    /// With [`Scenario::conserves_mean`] and no peer declared down, the target is exact.
    exact: bool,
    rng: ChaCha8Rng,
    now: Instant,
    queue: BinaryHeap<Reverse<(Instant, u64, What)>>,
    seq: u64,
    pool: Vec<(u32, usize, Vec<u8>)>,
    free: Vec<usize>,
    buf: Vec<u8>,
    /// Where an encrypted frame is opened to check it (it leaves sealed).
    open_buf: Vec<u8>,
    /// What the nodes seal with (one key for the cluster), to open their frames from
    /// outside; `None` when the scenario asks for what this build cannot do.
    secret: Option<asap_core::auth::Secret>,
    edges: Vec<EdgeLog>,
    report: Report,
    /// Per value, the least and greatest initial replica, or of those
    /// [`Sim::change_replicas`] left (averaging never leaves them).
    hull: Vec<(f32, f32)>,
    /// The logistic workload's problem.
    problem: Option<asap_fed::Problem>,
    /// The average replica, for the loss (reused: the steady state allocates nothing).
    average: Vec<f32>,
    /// Nodes start no round past this many ([`Sim::run_until`]'s count; unbounded in
    /// [`Sim::run`]).
    stop_at: u32,
    /// Print every frame sent and every round started and finished to stderr
    /// (`ASAP_SIM_TRACE` set).
    trace: bool,
    /// When the last fault heals.
    healed: Instant,
    /// How long a live node may go without finishing a round once it healed.
    round_bound: Duration,
    /// When [`Sim::check_stalls`] has work next.
    next_stall_check: Instant,
    /// Per node, its in-neighbours (in any round of the period).
    in_neighbours: Vec<Vec<u32>>,
    /// `heard[i * n + j]`: the latest incarnation of node `j` whose frame node `i` handled.
    heard: Vec<u32>,
}

impl Sim {
    /// Builds the cluster of a scenario.
    pub fn new(scenario: Scenario) -> Result<Sim, String> {
        let n = scenario.nodes;
        check_membership(&scenario)?;
        let spec = TopologySpec {
            degree: scenario.degree,
            seed: scenario.seed,
            ..TopologySpec::new(scenario.family, n)
        };
        let topology = Topology::new(spec, &mut vec![0.0; spec.scratch_len()]).map_err(|e| format!("topology: {e}"))?;
        let problem = match scenario.workload {
            Workload::Logistic { samples, .. } if scenario.model_len >= 2 => Some(asap_fed::Problem {
                shard_len: samples,
                ..asap_fed::Problem::new(scenario.seed, scenario.model_len, n)
            }),
            Workload::Logistic { .. } => return Err("logistic workload: the model needs a bias and a feature".into()),
            Workload::Average => None,
        };
        let slots = (SLOTS_PER_NODE * n as usize).min(POOL_BYTES / scenario.max_frame.max(1));
        let mut report = Report::default();
        let rounds = scenario.rounds as usize + 1;
        report.error_per_round.reserve(rounds);
        report.time_per_round.reserve(rounds);
        if problem.is_some() {
            report.loss_per_round.reserve(rounds);
        }
        let mut sim = Sim {
            rng: ChaCha8Rng::seed_from_u64(scenario.seed ^ 0x51_3a_7e),
            topology,
            nodes: Vec::new(),
            target: Vec::new(),
            target_mass: Vec::new(),
            exact: true,
            now: Instant::ZERO,
            queue: BinaryHeap::with_capacity(slots + EVENTS_PER_NODE * n as usize),
            seq: 0,
            pool: (0..slots)
                .map(|_| (0, 0, Vec::with_capacity(scenario.max_frame)))
                .collect(),
            free: (0..slots).rev().collect(),
            buf: vec![0; scenario.max_frame],
            open_buf: Vec::with_capacity(scenario.max_frame),
            secret: asap_core::auth::Secret::new(scenario.key, scenario.encrypt, Default::default()),
            edges: vec![EdgeLog::default(); (n * n) as usize],
            report,
            hull: Vec::new(),
            problem,
            average: vec![0.0; scenario.model_len],
            stop_at: u32::MAX,
            initial: random_vectors(n as usize, scenario.model_len, scenario.seed),
            scenario,
            trace: std::env::var_os("ASAP_SIM_TRACE").is_some(),
            healed: Instant::ZERO,
            round_bound: Duration::ZERO,
            next_stall_check: Instant::ZERO,
            in_neighbours: Vec::new(),
            heard: vec![0; (n * n) as usize],
        };
        sim.healed = sim.scenario.healed_at();
        sim.round_bound = sim.round_bound();
        let period = sim.topology.period();
        let topology = &sim.topology;
        sim.in_neighbours = (0..n)
            .map(|i| {
                topology
                    .peers_of(i)
                    .filter(|&j| (0..period).any(|r| topology.edge_weight(j, i, r) > 0.0))
                    .collect()
            })
            .collect();
        for i in 0..n {
            // A joiner is absent until it joins.
            let (node, member) = match sim.joins_later(i) {
                true => (None, Membership::Absent),
                false => (Some(sim.build_node(i, 0)?), Membership::Present),
            };
            sim.nodes.push(SimNode {
                node,
                member,
                params: sim.initial[i as usize].clone(),
                rounds_done: 0,
                finished_at: Instant::ZERO,
                computing_until: None,
                timer: None,
                link_free_at: Instant::ZERO,
                incarnation: 0,
                bytes_sent: 0,
                down: vec![false; n as usize],
                started_before: Vec::new(),
            });
            if member == Membership::Present {
                sim.begin_compute(i);
            }
        }
        for c in sim.scenario.crashes.clone() {
            sim.push(c.at, What::Crash(c.node));
        }
        for j in sim.scenario.joins.clone() {
            sim.push(j.at, What::Join(j.node));
        }
        for l in sim.scenario.leaves.clone() {
            sim.push(l.at, What::Leave(l.node));
        }
        sim.take_replicas_as_reference();
        if sim.problem.is_some() {
            let loss = sim.loss();
            sim.report.loss_per_round.push(loss);
        }
        sim.report.error_per_round.push(sim.error());
        Ok(sim)
    }

    /// The members' replicas as they are become what the run is judged against: their
    /// exact mean the target, their range the hull.
    fn take_replicas_as_reference(&mut self) {
        self.take_target();
        let replicas: Vec<&[f32]> = self
            .nodes
            .iter()
            .filter(|s| s.is_present())
            .map(|s| &s.params[..])
            .collect();
        self.hull = (0..self.scenario.model_len)
            .map(|k| {
                let values = replicas.iter().map(|v| v[k]);
                (values.clone().fold(f32::MAX, f32::min), values.fold(f32::MIN, f32::max))
            })
            .collect();
    }

    /// The target becomes the mean of the replicas as they are, each value weighted by
    /// its push-sum mass (`Σ m·x / Σ m`, over every node that holds mass: members, and a
    /// joiner with part of the model): what averaging converges to from here. With
    /// every mass 1 it is the plain mean.
    fn take_target(&mut self) {
        let (target, mass) = (0..self.scenario.model_len)
            .map(|k| {
                let (sum, mass) = self.nodes.iter().fold((0.0, 0.0), |(sum, mass), s| {
                    let m = s.mass_at(k);
                    (sum + m * f64::from(s.params[k]), mass + m)
                });
                (sum / mass, mass)
            })
            .unzip();
        self.target = target;
        self.target_mass = mass;
    }

    /// Node `i` is absent at the start: it joins later.
    fn joins_later(&self, i: u32) -> bool {
        self.scenario.joins.iter().any(|j| j.node == i)
    }

    fn config(&self, i: u32, incarnation: u32) -> Config {
        Config {
            // An encrypting node's first life is incarnation 1 (0 would let nonces repeat).
            incarnation: incarnation + u32::from(self.scenario.encrypt),
            max_frame: self.scenario.max_frame,
            wait: self.scenario.wait,
            staleness: self.scenario.staleness,
            key: self.scenario.key,
            encrypt: self.scenario.encrypt,
            compression: self.scenario.compression,
            consensus_step: self.scenario.consensus_step,
            elastic: self.scenario.elastic,
            // Every life of a joiner joins: it has no model of its own.
            join: self.joins_later(i),
            ..Config::new(0xa5a9, NodeId(i as u16), self.scenario.model_len)
        }
    }

    fn build_node(&self, i: u32, incarnation: u32) -> Result<Engine, String> {
        let config = self.config(i, incarnation);
        if self.scenario.allreduce {
            let words = AllReduce::bitmap_words(&config, self.scenario.nodes);
            let work: &'static mut [f32] = Box::leak(vec![0.0; config.model_len].into_boxed_slice());
            let chunk_bits: &'static mut [u32] = Box::leak(vec![0; words].into_boxed_slice());
            let buffers = AllReduceBuffers { work, chunk_bits };
            return AllReduce::new(config, self.scenario.nodes, buffers)
                .map(|a| Engine::AllReduce(Box::new(a)))
                .map_err(|e| e.to_string());
        }
        let peers = self.topology.peers_of(i).count();
        let layout = config.layout(peers).map_err(|e| e.to_string())?;
        let memory: &'static mut NodeMemory = Box::leak(Box::new(NodeMemory::new(&layout)));
        let node =
            Node::with_topology(config, &self.topology, memory.buffers(), self.now).map_err(|e| e.to_string())?;
        Ok(Engine::Asap(Box::new(node)))
    }

    fn push(&mut self, at: Instant, what: What) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, what)));
    }

    fn begin_compute(&mut self, i: u32) {
        let factor = self.scenario.stragglers.iter().find(|s| s.0 == i).map_or(1.0, |s| s.1);
        let t = (self.scenario.compute.total_micros() as f64 * factor) as u64;
        let until = self.now + Duration::from_micros(t);
        self.nodes[i as usize].computing_until = Some(until);
        self.push(until, What::Computed(i));
    }

    /// Runs the scenario to the end: until every node finished the scenario's rounds
    /// (nodes go on with their rounds until the slowest is there, as training does) and,
    /// after faults, enough rounds to settle; then judges consensus. `Err` on the first
    /// broken invariant.
    pub fn run(&mut self) -> Result<Report, Violation> {
        self.resume(u32::MAX);
        let done = self.process_until(Self::done)?;
        self.report = self.report();
        if !done {
            return Err(self.violation(format!(
                "liveness: only {} of {} rounds done by {}",
                self.report.rounds, self.scenario.rounds, self.now
            )));
        }
        // Consensus: the replicas agree (with the exact average too, when nothing cost
        // exactness), once the gap says enough rounds ran after the faults healed.
        let mut clean_rounds = if self.has_faults() {
            self.healed_rounds()
        } else {
            self.report.rounds
        };
        if self.scenario.elastic {
            // Counts follow round numbers there, skipped rounds included: the rounds a
            // member actually mixed are what the gap bounds.
            let mixed = self.members().filter_map(|s| match &s.node {
                Some(Engine::Asap(n)) => Some(n.stats().rounds),
                _ => None,
            });
            let fewest = mixed.min().unwrap_or(0);
            let skipped = u64::from(self.report.rounds).saturating_sub(fewest);
            clean_rounds = clean_rounds.saturating_sub(skipped.min(u64::from(u32::MAX)) as u32);
        }
        // Asynchronous modes mix whatever arrived, so the gap says nothing about a round;
        // that they never drive the replicas apart is checked at every mix (`hull`).
        let synchronous = matches!(self.scenario.wait, Wait::All | Wait::Barrier);
        // Elastic membership runs push-sum, and members' masses grow uneven (a share meant
        // for a member not there stays with its sender): the ratio then converges at a
        // rate the gap does not bound round by round (one-peer-exp is exact in log2 n
        // rounds only with even masses). Elastic runs are judged as the asynchronous
        // ones are: range, liveness, the exact mean at quiet points, and replicas that
        // agree agreeing on the average (below).
        let gap_bounds = !self.scenario.elastic;
        if synchronous
            && gap_bounds
            && self.scenario.workload == Workload::Average
            && self.expected_error_bound(clean_rounds) < 1e-5
        {
            let exact = self.is_exact();
            let err = if exact { self.error() } else { self.spread() };
            if err > 1e-4 {
                let what = if exact {
                    "distance to the average"
                } else {
                    "spread between replicas"
                };
                return Err(self.violation(format!("consensus: {what} {err:e} after {} rounds", self.report.rounds)));
            }
        }
        // Asynchronous rounds and elastic membership run push-sum: replicas that agree
        // agree on the exact average, however stale the updates they mixed.
        let exact = self.is_exact();
        let push_sum = !synchronous || self.scenario.elastic;
        if push_sum && exact && !self.compressed() && self.spread() < 1e-6 && self.error() > 1e-4 {
            let err = self.error();
            return Err(self.violation(format!(
                "consensus off the average: {err:e} after {} rounds",
                self.report.rounds
            )));
        }
        Ok(self.report.clone())
    }

    /// Runs until every node finished `rounds` rounds; none starts a round past that
    /// count, so when it returns `Ok` the cluster is between rounds: every update sent
    /// was folded, and the replicas are there to inspect (or change:
    /// [`Sim::change_replicas`]). Call it again with a larger count to go on. Every
    /// invariant is checked on the way, as in [`Sim::run`] (not the end-of-run
    /// consensus: that is the caller's to judge); the run's time limit counts from the
    /// start of the run. `Err` on the first broken invariant, or when the rounds are not
    /// done within the time limit.
    pub fn run_until(&mut self, rounds: u32) -> Result<(), Violation> {
        self.resume(rounds);
        if self.process_until(|sim| sim.min_rounds() >= rounds)? {
            return Ok(());
        }
        Err(self.violation(format!(
            "liveness: only {} of {rounds} rounds done by {}",
            self.min_rounds(),
            self.now
        )))
    }

    /// Lets nodes start rounds up to `stop_at`. A node that was held at the previous
    /// count waited on the harness, not on its peers: its wait is no stall.
    fn resume(&mut self, stop_at: u32) {
        for s in &mut self.nodes {
            if s.rounds_done >= self.stop_at {
                s.finished_at = s.finished_at.max(self.now);
            }
        }
        self.stop_at = stop_at;
    }

    /// Services every node, then handles events in time order until `done` holds
    /// (`true`) or the next event is past the time limit (`false`).
    fn process_until(&mut self, done: impl Fn(&Sim) -> bool) -> Result<bool, Violation> {
        let deadline = Instant::ZERO + self.scenario.time_limit;
        for i in 0..self.scenario.nodes {
            self.service(i)?;
        }
        if done(self) {
            return Ok(true);
        }
        loop {
            let Some(Reverse((at, seq, what))) = self.queue.pop() else {
                return Ok(false);
            };
            if at > deadline {
                // Left for a later call with a larger limit.
                self.queue.push(Reverse((at, seq, what)));
                return Ok(false);
            }
            self.now = self.now.max(at);
            self.report.events += 1;
            match what {
                What::Deliver(slot) => {
                    let (to, len, ref mut bytes) = self.pool[slot];
                    let from = asap_core::wire::peek(&bytes[..len])
                        .map(|(h, _)| (h.from.0, h.incarnation))
                        .ok();
                    if let Some(node) = self.nodes[to as usize].node.as_mut() {
                        node.handle_frame(self.now, &mut bytes[..len]);
                        if let Some((from, incarnation)) = from.filter(|f| u32::from(f.0) < self.scenario.nodes) {
                            let heard = &mut self.heard[(to * self.scenario.nodes + u32::from(from)) as usize];
                            // In the simulator's count of lives (encrypting nodes start at 1).
                            let life = incarnation.saturating_sub(u32::from(self.scenario.encrypt));
                            *heard = (*heard).max(life);
                        }
                    }
                    let from = from.map(|f| f.0);
                    if let Some(from) = from {
                        self.observe_delivery(slot, u32::from(from), to);
                    }
                    self.free.push(slot);
                    self.service(to)?;
                }
                What::Timer(i) => {
                    let node = &mut self.nodes[i as usize];
                    if node.timer != Some(at) {
                        continue; // superseded
                    }
                    node.timer = None;
                    if let Some(n) = node.node.as_mut() {
                        n.handle_timeout(self.now);
                    }
                    self.service(i)?;
                }
                What::Computed(i) => {
                    if self.nodes[i as usize].computing_until == Some(at) {
                        self.nodes[i as usize].computing_until = None;
                        self.local_step(i);
                        self.service(i)?;
                    }
                }
                What::Crash(i) => {
                    // A node that is not there (yet, or any more) cannot crash.
                    if matches!(self.nodes[i as usize].member, Membership::Absent | Membership::Left) {
                        continue;
                    }
                    let down_for = self
                        .scenario
                        .crashes
                        .iter()
                        .find(|c| c.node == i && c.at == at)
                        .map(|c| c.down_for);
                    let started = self.rounds_started(i);
                    let node = &mut self.nodes[i as usize];
                    node.started_before.push(started);
                    node.node = None;
                    node.timer = None;
                    node.computing_until = None;
                    self.push(self.now + down_for.unwrap_or(Duration::ZERO), What::Restart(i));
                }
                // One that left while down stays gone.
                What::Restart(i) if self.nodes[i as usize].member == Membership::Left => {}
                What::Restart(i) => {
                    let incarnation = self.nodes[i as usize].incarnation + 1;
                    self.start_life(i, incarnation)?;
                }
                What::Join(i) => {
                    if self.nodes[i as usize].member == Membership::Absent {
                        self.start_life(i, 0)?;
                    }
                }
                What::Leave(i) => {
                    if self.nodes[i as usize].member != Membership::Left {
                        self.depart(i)?;
                        // Shares in flight to or from it may go with it: the mean of those
                        // present is the best target there is, not an exact one
                        // (`Scenario::conserves_mean`).
                        self.take_target();
                    }
                }
            }
            if self.now >= self.next_stall_check {
                self.check_stalls()?;
            }
            // Judged after an event that did something (a superseded timer did not).
            if done(self) {
                return Ok(true);
            }
        }
    }

    /// Node `i` starts a life as `incarnation`: a crashed node restarts with its
    /// initial replica, a joiner (every life of it) joins with no model. It heard
    /// nothing yet, and owes nothing.
    fn start_life(&mut self, i: u32, incarnation: u32) -> Result<(), Violation> {
        let fresh = self.build_node(i, incarnation).map_err(|e| self.violation(e))?;
        let joining = self.joins_later(i);
        let node = &mut self.nodes[i as usize];
        node.node = Some(fresh);
        node.member = if joining {
            Membership::Joining
        } else {
            Membership::Present
        };
        node.incarnation = incarnation;
        node.params = self.initial[i as usize].clone();
        node.rounds_done = 0;
        node.finished_at = self.now;
        // It heard nothing yet in its new life.
        let n = self.scenario.nodes;
        self.heard[(i * n) as usize..((i + 1) * n) as usize].fill(0);
        // Both directions of its edges start afresh: it forgot what it owed, and its
        // peers drop what they had in flight to it once its Hello arrives.
        for j in 0..n {
            self.edges[(i * n + j) as usize] = EdgeLog::default();
            self.edges[(j * n + i) as usize] = EdgeLog::default();
        }
        // A joiner has no model to take a step on: it starts its first round at once.
        if !joining {
            self.begin_compute(i);
        }
        self.service(i)
    }

    /// Node `i` leaves for good: `leave`, its Leave frames out, gone. (Down at the
    /// time, it just never comes back: its peers give up on it after `peer_timeout`.)
    fn depart(&mut self, i: u32) -> Result<(), Violation> {
        if self.trace {
            eprintln!("{} node {i}: leaves", self.now);
        }
        if self.nodes[i as usize].node.is_some() {
            // The staleness check judges it, in this life, by how far it got.
            let started = self.rounds_started(i);
            self.nodes[i as usize].started_before.push(started);
            if let Some(node) = self.nodes[i as usize].node.as_mut() {
                node.reducer().leave(self.now);
            }
            self.flush(i)?;
        }
        let node = &mut self.nodes[i as usize];
        node.member = Membership::Left;
        node.node = None;
        node.timer = None;
        node.computing_until = None;
        Ok(())
    }

    /// What the run measured so far (the counters as they stand; `rounds`: what every
    /// node finished).
    pub fn report(&self) -> Report {
        let n = f64::from(self.scenario.nodes);
        Report {
            time: self.now - Instant::ZERO,
            rounds: self.min_rounds(),
            rounds_per_node: self.nodes.iter().map(|s| s.rounds_done).collect(),
            spread: self.spread(),
            bytes_per_node: self.nodes.iter().map(|s| s.bytes_sent as f64).sum::<f64>() / n,
            ..self.report.clone()
        }
    }

    /// The scenario being run.
    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// The graph the nodes run on.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Node `i`, when it runs ASAP and is up (`None`: crashed, or the all-reduce
    /// baseline).
    pub fn node(&self, i: u32) -> Option<&Node<'static, SIM_PEERS>> {
        match self.nodes.get(i as usize)?.node.as_ref()? {
            Engine::Asap(node) => Some(node),
            Engine::AllReduce(_) => None,
        }
    }

    /// Every ASAP node that is up, by id.
    pub fn nodes(&self) -> impl Iterator<Item = &Node<'static, SIM_PEERS>> + '_ {
        (0..self.scenario.nodes).filter_map(|i| self.node(i))
    }

    /// Node `i`'s replica (the application's parameters).
    pub fn replica(&self, i: u32) -> &[f32] {
        &self.nodes[i as usize].params
    }

    /// The exact mean the replicas are judged against: of the initial ones, or of those
    /// [`Sim::change_replicas`] left.
    pub fn target(&self) -> &[f64] {
        &self.target
    }

    /// The application changes its replicas between rounds (a stand-in for training
    /// steps the workload does not model): `change(i, replica)` on every node. Their
    /// mean becomes the target and their range the hull the checks hold them to. Only
    /// between rounds: after [`Sim::run_until`], before anything else.
    pub fn change_replicas(&mut self, mut change: impl FnMut(u32, &mut [f32])) {
        let mid_round = self
            .nodes
            .iter()
            .any(|s| s.node.as_ref().is_some_and(Engine::is_started));
        assert!(!mid_round, "replicas change between rounds only");
        for (i, s) in self.nodes.iter_mut().enumerate() {
            change(i as u32, &mut s.params);
        }
        self.take_replicas_as_reference();
    }

    /// Member `i` leaves the cluster now, between rounds (after [`Sim::run_until`]):
    /// `leave`, its Leave frames out, gone for good. The others, held between rounds,
    /// are served until none holds it live any more (its Leave arrived, or it was
    /// silent past `peer_timeout`), so no round of theirs gives it a share it would take
    /// away. The target becomes the mass-weighted mean of those present (`Σ m·x / Σ m`
    /// per value). In `Wait::All` (or `Barrier`) that is exact: between rounds every
    /// update sent was folded, so their masses and replicas hold all there is, and from
    /// here on a share meant for the one that left stays with its sender. In the
    /// asynchronous modes updates may be in flight, so the run is no longer judged
    /// against the exact mean. The hull stays: every replica is still a convex mix of
    /// initial ones. `Err` on a broken invariant, or when the others do not note the
    /// departure within the time limit.
    pub fn leave(&mut self, i: u32) -> Result<(), Violation> {
        let held = self
            .members()
            .all(|s| s.rounds_done >= self.stop_at && s.node.as_ref().is_some_and(|n| !n.is_started()));
        assert!(held, "a member leaves between rounds only, after run_until");
        assert!(
            self.nodes[i as usize].is_present() && self.nodes[i as usize].node.is_some(),
            "node {i} is not a member that is up"
        );
        self.depart(i)?;
        if !self.process_until(|sim| !sim.holds_live(i))? {
            return Err(self.violation(format!("node {i} left, and a member still waits for it")));
        }
        self.exact &= matches!(self.scenario.wait, Wait::All | Wait::Barrier);
        self.take_target();
        Ok(())
    }

    /// Some node that is up holds peer `i` live (sends to it, waits for it).
    fn holds_live(&self, i: u32) -> bool {
        self.nodes().any(|n| n.peer(NodeId(i as u16)).is_some_and(|p| p.up))
    }

    /// Every node did the scenario's rounds and, when faults were injected, enough
    /// rounds after the last one healed to settle (ten periods, plus ten).
    fn done(&self) -> bool {
        self.min_rounds() >= self.scenario.rounds
            && (!self.has_faults() || (self.healed_rounds() >= self.settle() && self.now >= self.healed + SETTLE_TIME))
    }

    /// Whether the run is judged against the exact (mass-weighted) mean: the scenario
    /// conserves it, no peer was declared down, and no departure cost it.
    fn is_exact(&self) -> bool {
        self.exact && self.scenario.conserves_mean() && self.report.peers_down == 0
    }

    /// Faults, or changes of membership, that a run must settle after.
    fn has_faults(&self) -> bool {
        let s = &self.scenario;
        !s.partitions.is_empty() || !s.crashes.is_empty() || !s.joins.is_empty() || !s.leaves.is_empty()
    }

    fn settle(&self) -> u32 {
        10 * self.topology.period() + 10
    }

    /// Rounds every member present finished.
    fn min_rounds(&self) -> u32 {
        self.members().map(|s| s.rounds_done).min().unwrap_or(0)
    }

    /// The members present (up or crashed): what the run is judged on.
    fn members(&self) -> impl Iterator<Item = &SimNode> + Clone + '_ {
        self.nodes.iter().filter(|s| s.is_present())
    }

    /// The consensus error the gap predicts after `rounds` (from an initial spread of 2).
    fn expected_error_bound(&self, rounds: u32) -> f64 {
        if self.scenario.allreduce {
            return 0.0; // exact every round
        }
        if self.compressed() {
            return f64::INFINITY; // its rate is not the gap's: the caller judges the end
        }
        let members = self.members().count();
        let rho = if members == self.nodes.len() {
            1.0 - self.topology.spectral_gap()
        } else {
            // Some left (or never joined): the graph between the others is not the one
            // the gap was computed for, and mixes slower.
            self.members_contraction()
        };
        2.0 * (members as f64).sqrt() * rho.powi(rounds as i32)
    }

    /// What `1 − gap` is for the graph of the members present: the per-round shrinking
    /// of a disagreement between them under push-sum, where a share meant for a node
    /// that is not a member stays with its sender (as elastic nodes do). Measured the
    /// way power iteration finds an eigenvalue: a seeded disagreement is mixed round
    /// after round and rescaled as it shrinks; its rate over the second half of the
    /// rounds, once the faster modes died out, is the slowest mode's.
    fn members_contraction(&self) -> f64 {
        const ROUNDS: u32 = 256;
        let t = &self.topology;
        let member: Vec<bool> = self.nodes.iter().map(SimNode::is_present).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(self.scenario.seed);
        // Push-sum pairs: value times mass, and mass.
        let mut z: Vec<f64> = member
            .iter()
            .map(|&m| if m { rng.random_range(-1.0..1.0) } else { 0.0 })
            .collect();
        let mut y: Vec<f64> = member.iter().map(|&m| if m { 1.0 } else { 0.0 }).collect();
        let mut log_rate = 0.0;
        for r in 0..ROUNDS {
            let (mut next_z, mut next_y) = (vec![0.0; z.len()], vec![0.0; z.len()]);
            for j in (0..member.len()).filter(|&j| member[j]) {
                let share = t.weight(j as u32, r);
                let mut kept = 1.0;
                for i in t.out_neighbours(j as u32, r).filter(|&i| member[i as usize]) {
                    next_z[i as usize] += share * z[j];
                    next_y[i as usize] += share * y[j];
                    kept -= share;
                }
                next_z[j] += kept * z[j];
                next_y[j] += kept * y[j];
            }
            (z, y) = (next_z, next_y);
            // What the members converge to (mixing keeps both sums; taken afresh, so
            // rounding does not add up), and the disagreement with it, rescaled to 1.
            let target = z.iter().sum::<f64>() / y.iter().sum::<f64>();
            let apart = (0..z.len())
                .filter(|&i| member[i])
                .map(|i| (z[i] / y[i] - target).abs())
                .fold(0.0, f64::max);
            if apart == 0.0 || !apart.is_finite() {
                return 0.0; // exact consensus (or nothing left to agree)
            }
            for i in 0..z.len() {
                z[i] = target * y[i] + (z[i] - target * y[i]) / apart;
            }
            if r >= ROUNDS / 2 {
                log_rate += apart.ln();
            }
        }
        (log_rate / f64::from(ROUNDS / 2)).exp().min(1.0)
    }

    fn violation(&self, what: String) -> Violation {
        Violation {
            seed: self.scenario.seed,
            at: self.now,
            what,
        }
    }

    /// Lets node `i` act: application step, frames out, events, timer.
    fn service(&mut self, i: u32) -> Result<(), Violation> {
        let idx = i as usize;
        // Peers declared down by the input just handled count before the round it lets
        // finish is judged (a peer given up on costs exactness).
        self.drain_events(i)?;
        let s = &mut self.nodes[idx];
        let Some(node) = s.node.as_mut() else { return Ok(()) };
        // Nodes keep going until the slowest is done, as training does: one that stopped
        // early would starve its neighbours. A round may be ready as soon as it starts
        // (its updates came while the node computed, or it waits for nothing): the
        // application finishes it at once. None starts past `stop_at` (`run_until`).
        let start = s.computing_until.is_none() && s.rounds_done < self.stop_at;
        let advance = node
            .reducer()
            .advance_round(self.now, &mut s.params, start)
            .map_err(|e| Violation {
                seed: self.scenario.seed,
                at: self.now,
                what: format!("node {i}: round refused: {e}"),
            })?;
        if let Some(round) = advance.started {
            if self.trace {
                eprintln!("{} node {i}: started round {round}", self.now);
            }
            if let Some(bound) = self.scenario.staleness {
                self.check_staleness(i, round, bound)?;
            }
        }
        let finished = advance.finished.is_some();
        let elastic = self.scenario.elastic;
        let s = &mut self.nodes[idx];
        if finished {
            s.rounds_done += 1;
            // Elastic members catch up to each other's rounds (at the start, at a join)
            // and skip the rounds passed: a member's count follows its round, so all
            // stop at the same round (`run_until`) and none waits for ones that did.
            if let (true, Some(Engine::Asap(n))) = (elastic, s.node.as_ref()) {
                s.rounds_done = s.rounds_done.max(n.round());
            }
            let since = s.finished_at.max(self.healed);
            s.finished_at = self.now;
            if self.trace {
                eprintln!("{} node {i}: finished (rounds done {})", self.now, s.rounds_done);
            }
            if self.now >= self.healed {
                let gap = self.now - since;
                self.report.longest_round = self.report.longest_round.max(gap);
                if gap > self.round_bound {
                    return Err(self.stalled(i, since));
                }
            }
        }
        let s = &mut self.nodes[idx];
        if finished {
            if s.params.iter().any(|x| !x.is_finite()) {
                return Err(self.violation(format!("node {i}: non-finite replica")));
            }
            // The finish that completes a joiner's model makes it a member.
            self.drain_events(i)?;
            if self.nodes[idx].is_present() {
                self.check_hull(i)?;
                self.begin_compute(i);
            }
            self.on_round_finished()?;
        }
        self.flush(i)?;
        self.drain_events(i)?;
        let node = self.nodes[idx].node.as_ref().expect("checked above");
        let deadline = node.poll_timeout();
        if let Some(deadline) = deadline.filter(|d| Some(*d) != self.nodes[idx].timer) {
            let at = deadline.max(self.now);
            self.nodes[idx].timer = Some(at);
            self.push(at, What::Timer(i));
        }
        Ok(())
    }

    /// Liveness, as the run goes: once the last fault healed, every live node finishes a
    /// round within [`Sim::round_bound`] of the heal or of its previous round.
    fn check_stalls(&mut self) -> Result<(), Violation> {
        let mut next = None;
        for (i, s) in self.nodes.iter().enumerate() {
            if s.node.is_none() || s.rounds_done >= self.stop_at {
                continue; // crashed, or held at `run_until`'s count: not live
            }
            let since = s.finished_at.max(self.healed);
            let deadline = since + self.round_bound;
            if self.now > deadline {
                return Err(self.stalled(i as u32, since));
            }
            next = Some(next.map_or(deadline, |n: Instant| n.min(deadline)));
        }
        // Checked again at the first event past the earliest deadline.
        self.next_stall_check = next.map_or(self.now, |n| n + Duration::from_micros(1));
        Ok(())
    }

    fn stalled(&self, i: u32, since: Instant) -> Violation {
        if std::env::var_os("ASAP_SIM_DUMP").is_some() {
            eprintln!("{}", self.dump());
        }
        self.violation(format!(
            "liveness: node {i} finished no round from {since} to {} (bound {} after the last fault healed at {})",
            self.now, self.round_bound, self.healed
        ))
    }

    /// How long a live node may go without finishing a round once the last fault healed.
    /// A silent peer is given up on after `peer_timeout`, and a retransmission backed off
    /// during a fault comes within `retransmit_max` of the heal. Past that only loss stalls
    /// a round: a NOTIFY exchange fails when the NOTIFY or its answer is lost, and each
    /// failure costs at most `retransmit_max`; the bound allows the run of failures whose
    /// chance is below 1e-9. Add the slowest compute and the time to send a round's
    /// updates. An all-reduce round is `2(n - 1)` such steps, one after another.
    fn round_bound(&self) -> Duration {
        let c = self.config(0, 0);
        let s = &self.scenario;
        let retransmit = c.retransmit_max.total_micros() as f64;
        let mut us = (c.peer_timeout.total_micros() + c.retransmit_max.total_micros()) as f64;
        if s.network.loss > 0.0 {
            let fail = 1.0 - (1.0 - s.network.loss).powi(2);
            us += (1e-9f64.ln() / fail.ln()).ceil() * retransmit;
        }
        let slowest = s.stragglers.iter().map(|st| st.1).fold(1.0, f64::max);
        us += s.compute.total_micros() as f64 * slowest;
        if let Some(rate) = s.network.bandwidth {
            let chunks = s.model_len.div_ceil(c.chunk_len());
            // Values, and a header and CRC (under 64 bytes) per chunk.
            let bytes = (4 * s.model_len + 64 * chunks) as f64;
            let degree = (0..s.nodes)
                .map(|i| self.topology.peers_of(i).count())
                .max()
                .unwrap_or(0);
            us += 2.0 * bytes * degree as f64 * 1e6 / rate as f64;
        }
        if s.allreduce {
            us *= f64::from(2 * s.nodes.saturating_sub(1).max(1));
        }
        Duration::from_micros(us as u64)
    }

    /// Rounds node `i` started as it would announce them (`round + started`); 0 when
    /// crashed.
    fn rounds_started(&self, i: u32) -> u32 {
        match &self.nodes[i as usize].node {
            Some(Engine::Asap(n)) => n.round().saturating_add(u32::from(n.is_started())),
            _ => 0,
        }
    }

    /// Bounded staleness, checked from outside as node `i` starts a round `r`: every
    /// in-neighbour it holds live has started round `r - bound` (announces
    /// `rounds_started >= r + 1 - bound`). Each is judged in the life `i` last heard
    /// from: a restart it has not heard of yet cannot hold it back.
    /// Node `i` started `round`: no live in-neighbour it had heard of was more than
    /// `bound` rounds behind.
    fn check_staleness(&self, i: u32, round: u32, bound: u32) -> Result<(), Violation> {
        let Some(Engine::Asap(node)) = &self.nodes[i as usize].node else {
            return Ok(());
        };
        let n = self.scenario.nodes;
        for &j in &self.in_neighbours[i as usize] {
            if !node.peer(NodeId(j as u16)).is_some_and(|p| p.up) {
                continue;
            }
            let peer = &self.nodes[j as usize];
            let heard = self.heard[(i * n + j) as usize];
            let started = match peer.started_before.get(heard as usize) {
                Some(&then) => then,
                None => self.rounds_started(j),
            };
            if u64::from(round) + 1 > u64::from(started) + u64::from(bound) {
                return Err(self.violation(format!(
                    "staleness: node {i} started round {round} while its in-neighbour {j} had started {started} rounds (bound {bound})"
                )));
            }
        }
        Ok(())
    }

    /// Averaging never drives replicas apart, in any mode: every mix is a convex
    /// combination (weights at most 1) of values that were replicas, so each value stays
    /// between the least and the greatest initial one. (A learning workload moves them.)
    fn check_hull(&self, i: u32) -> Result<(), Violation> {
        if self.scenario.workload != Workload::Average || self.compressed() {
            return Ok(());
        }
        let params = &self.nodes[i as usize].params;
        let outside = params
            .iter()
            .zip(&self.hull)
            .position(|(&x, &(lo, hi))| x < lo - 1e-5 || x > hi + 1e-5);
        match outside {
            Some(k) => Err(self.violation(format!(
                "node {i}: replicas driven apart: value {k} is {} outside the initial range [{}, {}]",
                params[k], self.hull[k].0, self.hull[k].1
            ))),
            None => Ok(()),
        }
    }

    /// Takes node `i`'s events: the peers it declared down (a member that left is a
    /// departure, not a fault), and a joiner's `Joined`, which must come exactly with
    /// the finish that gave it the model (`Node::has_model`): then it is a member.
    fn drain_events(&mut self, i: u32) -> Result<(), Violation> {
        // Out of its slot while its events are read, which look at the other nodes.
        let Some(mut node) = self.nodes[i as usize].node.take() else {
            return Ok(());
        };
        let mut joined = None;
        node.events(|event| match event {
            Event::PeerDown(p) => {
                let p = usize::from(p.0);
                self.nodes[i as usize].down[p] = true;
                match self.nodes[p].member {
                    Membership::Left => self.report.departures += 1,
                    _ => self.report.peers_down += 1,
                }
            }
            Event::Joined { round } => joined = Some(round),
            _ => {}
        });
        let has_model = node.has_model();
        let round = node.reducer().round();
        self.nodes[i as usize].node = Some(node);
        let joining = self.nodes[i as usize].member == Membership::Joining;
        match joined {
            Some(r) if !joining || !has_model => Err(self.violation(format!(
                "node {i}: Joined {{ round: {r} }} without a model to join with (member {:?}, has_model {has_model})",
                self.nodes[i as usize].member
            ))),
            Some(r) => {
                self.become_member(i, r, round);
                Ok(())
            }
            None if joining && has_model => Err(self.violation(format!("node {i}: holds the model, no Joined event"))),
            None => Ok(()),
        }
    }

    /// Joiner `i` holds the model since its round `joined` finished (it is at `round`
    /// now): a member from here on. It counts the cluster's rounds, not its own: the
    /// round it is at (exact-round modes caught it up to its in-neighbours), and at
    /// least what every member present finished (it is not asked to redo the rounds it
    /// was absent for).
    fn become_member(&mut self, i: u32, joined: u32, round: u32) {
        let members = self.min_rounds();
        let s = &mut self.nodes[i as usize];
        s.member = Membership::Present;
        s.rounds_done = round.max(members);
        if self.trace {
            eprintln!(
                "{} node {i}: joined in round {joined} (counts {} rounds done)",
                self.now, s.rounds_done
            );
        }
    }

    /// When the slowest node finished a round: record the error, check the mean.
    fn on_round_finished(&mut self) -> Result<(), Violation> {
        let min = self.min_rounds() as usize;
        while self.report.error_per_round.len() <= min {
            self.report.error_per_round.push(self.error());
            if self.problem.is_some() {
                let loss = self.loss();
                self.report.loss_per_round.push(loss);
            }
            self.report.time_per_round.push(self.now - Instant::ZERO);
            // Quiescent: every member finished the same rounds and none is mid-round or
            // holds updates it folded and has not mixed (push-sum mixes an update of a
            // round passed at the next finish); no joiner is fetching the model (what it
            // folded is mass in flight).
            let unmixed = |s: &SimNode| matches!(&s.node, Some(Engine::Asap(n)) if n.holds_unmixed());
            let quiet = self.members().all(|s| {
                s.rounds_done as usize == min && s.node.as_ref().is_some_and(|n| !n.is_started()) && !unmixed(s)
            }) && self.nodes.iter().all(|s| s.member != Membership::Joining);
            let exact = self.is_exact();
            if quiet && exact && self.scenario.wait == Wait::All {
                let drift = self.mean_drift();
                if drift > 1e-4 {
                    return Err(self.violation(format!("mean not conserved: drift {drift:e} after round {min}")));
                }
            }
            // On a time-varying graph the sums are whole at the end of a period.
            let period = self.topology.period() as usize;
            if quiet && exact && self.compressed() && min.is_multiple_of(period) {
                let gap = self.public_copy_gap();
                if gap > 1e-4 {
                    return Err(self.violation(format!(
                        "public copies: a node's disagreement is {gap:e} off Σ w·(x̂_j − x̂_i) after round {min}"
                    )));
                }
            }
        }
        Ok(())
    }

    fn compressed(&self) -> bool {
        self.scenario.compression != asap_core::compress::Compression::None
    }

    /// The compressed mode's invariant, from outside: each node's disagreement `t`
    /// equals `Σ_j w_ji·(x̂_j − x̂_i)` over its in-neighbours' public copies. Holds when
    /// every update sent was folded (between rounds, nothing lost for good); returns the
    /// largest distance from it (0 when not compressing).
    pub fn public_copy_gap(&self) -> f64 {
        let copies = |j: u32| match self.nodes[j as usize].node.as_ref() {
            Some(Engine::Asap(n)) => n.public_copies(),
            _ => None,
        };
        // A time-varying graph's compressed mode runs on the union of a period's
        // graphs, each edge at 1 / (period + 1).
        let period = self.topology.period();
        let weight = |j: u32, i: u32| match period {
            1 => self.topology.edge_weight(j, i, 0),
            _ => 1.0 / f64::from(period + 1),
        };
        let mut worst = 0.0f64;
        for i in 0..self.scenario.nodes {
            let Some(mine) = copies(i) else { continue };
            for k in 0..self.scenario.model_len {
                let mut expected = 0.0f64;
                // In-neighbours in the period's union (a directed graph's out-neighbours
                // send nothing to i).
                let sends_to_i = |j: &u32| (0..period).any(|r| self.topology.edge_weight(*j, i, r) > 0.0);
                for j in self.topology.peers_of(i).filter(sends_to_i) {
                    if let Some(theirs) = copies(j) {
                        let w = f64::from(weight(j, i) as f32);
                        expected += w * (f64::from(theirs.public[k]) - f64::from(mine.public[k]));
                    }
                }
                let t = f64::from(mine.hi[k]) + f64::from(mine.lo[k]);
                worst = worst.max((t - expected).abs());
            }
        }
        worst
    }

    /// Largest distance of the replicas' mean from the target, each value weighted by
    /// its chunk's push-sum mass (1 unless push-sum runs) and divided by the mass there
    /// was when the target was taken: what averaging conserves, mass and all. Over every
    /// node that holds mass (a joiner with part of the model too). Exact only between
    /// rounds, when nothing cost exactness.
    pub fn mean_drift(&self) -> f64 {
        (0..self.scenario.model_len)
            .map(|k| {
                let sum: f64 = self.nodes.iter().map(|s| s.mass_at(k) * f64::from(s.params[k])).sum();
                (sum / self.target_mass[k] - self.target[k]).abs()
            })
            .fold(0.0, f64::max)
    }

    /// Rounds every node finished after the last fault healed.
    fn healed_rounds(&self) -> u32 {
        let healed = self.healed;
        let at = self
            .report
            .time_per_round
            .iter()
            .position(|t| Instant::ZERO + *t >= healed);
        at.map_or(0, |r| self.min_rounds().saturating_sub(r as u32))
    }

    /// The workload's local step on node `i`'s replica (before it starts a round): a
    /// minibatch step on its shard, the batch chosen by the rounds it finished.
    fn local_step(&mut self, i: u32) {
        let (Some(problem), Workload::Logistic { batch, rate, .. }) = (&self.problem, self.scenario.workload) else {
            return;
        };
        let s = &mut self.nodes[i as usize];
        if !s.is_present() {
            return; // a joiner trains once it holds the model
        }
        problem.local_step(&mut s.params, i, s.rounds_done, rate, batch);
    }

    /// Logistic loss of the members' average replica on the problem's held-out test set.
    fn loss(&mut self) -> f64 {
        let Some(problem) = &self.problem else {
            return 0.0;
        };
        let members = self.nodes.iter().filter(|s| s.is_present());
        let n = members.clone().count() as f64;
        for (k, a) in self.average.iter_mut().enumerate() {
            *a = (members.clone().map(|s| f64::from(s.params[k])).sum::<f64>() / n) as f32;
        }
        problem.evaluate(&self.average).loss
    }

    /// Largest distance of any member's replica from the members' own mean.
    fn spread(&self) -> f64 {
        let n = self.members().count() as f64;
        (0..self.scenario.model_len)
            .map(|k| {
                let mean = self.members().map(|s| f64::from(s.params[k])).sum::<f64>() / n;
                self.members()
                    .map(|s| (f64::from(s.params[k]) - mean).abs())
                    .fold(0.0, f64::max)
            })
            .fold(0.0, f64::max)
    }

    /// Largest distance of any member's replica value from the target ([`Sim::target`]).
    pub fn error(&self) -> f64 {
        self.members()
            .flat_map(|s| {
                s.params
                    .iter()
                    .zip(&self.target)
                    .map(|(x, t)| (f64::from(*x) - t).abs())
            })
            .fold(0.0, f64::max)
    }

    fn partitioned(&self, a: u32, b: u32) -> bool {
        self.scenario
            .partitions
            .iter()
            .any(|p| self.now >= p.start && self.now < p.end && (p.side.contains(&a) != p.side.contains(&b)))
    }

    /// Moves node `i`'s frames onto the network; checks NOTIFY-ACK on the way out.
    fn flush(&mut self, i: u32) -> Result<(), Violation> {
        loop {
            let idx = i as usize;
            let Some(node) = self.nodes[idx].node.as_mut() else {
                return Ok(());
            };
            let Some(t) = node.poll_transmit(self.now, &mut self.buf) else {
                return Ok(());
            };
            self.check_send(i, u32::from(t.to.0), t.len)?;
            let s = &mut self.nodes[idx];
            s.bytes_sent += t.len as u64;
            let net = self.scenario.network;
            let sent_at = match net.bandwidth {
                Some(rate) => {
                    let start = s.link_free_at.max(self.now);
                    let done = start + Duration::from_micros((t.len as u64 * 1_000_000).div_ceil(rate));
                    s.link_free_at = done;
                    done
                }
                None => self.now,
            };
            let to = u32::from(t.to.0);
            let lost = self.rng.random_bool(net.loss) || self.partitioned(i, to) || to >= self.scenario.nodes;
            if self.trace {
                if let Ok((h, _)) = asap_core::wire::peek(&self.buf[..t.len]) {
                    let fate = if lost { " (lost)" } else { "" };
                    eprintln!("{} {i}->{to} r{} {:?}{fate}", self.now, h.round, h.kind);
                }
            }
            if lost {
                self.report.dropped += 1;
                continue;
            }
            let copies = if self.rng.random_bool(net.duplicate) { 2 } else { 1 };
            for _ in 0..copies {
                let jitter = match net.jitter.total_micros() {
                    0 => 0,
                    j => self.rng.random_range(0..j),
                };
                let at = sent_at + net.latency + Duration::from_micros(jitter);
                let slot = self.free.pop().unwrap_or_else(|| {
                    self.pool.push((0, 0, Vec::with_capacity(self.buf.len())));
                    self.pool.len() - 1
                });
                let entry = &mut self.pool[slot];
                entry.0 = to;
                entry.1 = t.len;
                entry.2.clear();
                entry.2.extend_from_slice(&self.buf[..t.len]);
                self.push(at, What::Deliver(slot));
            }
        }
    }

    /// The header of the frame in `self.buf[..len]` if its receiver can open it (an
    /// encrypted one is opened in a copy, in a buffer kept for it).
    fn opened(&mut self, len: usize) -> Option<asap_core::wire::Header> {
        let secret = self.secret.as_ref()?;
        let frame = &self.buf[..len];
        let opened = match secret {
            asap_core::auth::Secret::Encrypt(_) => {
                self.open_buf.clear();
                self.open_buf.extend_from_slice(frame);
                asap_core::wire::open(&mut self.open_buf, asap_core::wire::Sealing::from(secret)).map(|f| f.0.header)
            }
            _ => asap_core::wire::decode_sealed(frame, asap_core::wire::Sealing::from(secret)).map(|f| f.0.header),
        };
        opened.ok()
    }

    /// NOTIFY-ACK, checked from outside: a sender starts a new update on an edge only
    /// after the previous one was acknowledged to it, or it declared the receiver down.
    fn check_send(&mut self, from: u32, to: u32, len: usize) -> Result<(), Violation> {
        let Some(header) = self.opened(len) else {
            return Err(self.violation(format!("node {from} sent a frame that does not decode")));
        };
        let asap_core::wire::Kind::Update { .. } = header.kind else {
            return Ok(());
        };
        let round = header.round;
        let n = self.scenario.nodes;
        let e = &mut self.edges[(from * n + to) as usize];
        match e.sent {
            Some(prev) if round > prev => {
                let down = std::mem::take(&mut self.nodes[from as usize].down[to as usize]);
                if !e.acked && !down {
                    let what = format!("edge {from}->{to}: update {round} sent before update {prev} was acknowledged");
                    return Err(self.violation(what));
                }
                *e = EdgeLog {
                    sent: Some(round),
                    acked: false,
                };
            }
            Some(prev) if round < prev && self.nodes[from as usize].incarnation == 0 => {
                return Err(self.violation(format!("edge {from}->{to}: round went back from {prev} to {round}")));
            }
            Some(_) => {}
            None => {
                *e = EdgeLog {
                    sent: Some(round),
                    acked: false,
                }
            }
        }
        Ok(())
    }

    /// Records ACKs reaching senders (for [`Sim::check_send`]); restarts reset edges.
    fn observe_delivery(&mut self, slot: usize, from: u32, to: u32) {
        // The receiver decrypted the frame in place: only its header (in clear) is read.
        let (_, len, ref bytes) = self.pool[slot];
        let Ok((header, _)) = asap_core::wire::peek(&bytes[..len]) else {
            return;
        };
        let n = self.scenario.nodes;
        match header.kind {
            // `from` (the receiver of the update) acknowledges to `to` (its sender).
            asap_core::wire::Kind::Ack => {
                let e = &mut self.edges[(to * n + from) as usize];
                if e.sent == Some(header.round) {
                    e.acked = true;
                }
            }
            // A restarted sender starts its rounds again; a restarted receiver has
            // forgotten what it owed: both ends of the edge start afresh.
            asap_core::wire::Kind::Hello { .. } if self.nodes[from as usize].incarnation > 0 => {
                self.edges[(from * n + to) as usize] = EdgeLog::default();
                self.edges[(to * n + from) as usize] = EdgeLog::default();
            }
            _ => {}
        }
    }
}

impl Sim {
    /// A snapshot of every node's state, for diagnosing a stuck run.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for (i, s) in self.nodes.iter().enumerate() {
            let Some(Engine::Asap(n)) = s.node.as_ref() else {
                out.push_str(&format!(
                    "node {i}: {:?}: crashed, absent, left, or all-reduce\n",
                    s.member
                ));
                continue;
            };
            out.push_str(&format!(
                "node {i}: {:?} done {} round {} started {} ready {} can_start {:?} computing {:?} timer {:?}\n",
                s.member,
                s.rounds_done,
                n.round(),
                n.is_started(),
                n.is_ready(),
                n.can_start_round(),
                s.computing_until,
                n.poll_timeout()
            ));
            for p in n.peer_ids() {
                out.push_str(&format!("    {:?}: {:?}\n", p, n.peer(p)));
            }
            if std::env::var("ASAP_SIM_DUMP_FULL").is_ok() {
                out.push_str(&format!("{n:#?}\n"));
            }
        }
        out
    }
}

/// A scenario's joins and leaves make sense: elastic, of nodes that exist, each node
/// joining and leaving at most once, a joiner leaving only after it joined, and at
/// least one founding member.
fn check_membership(s: &Scenario) -> Result<(), String> {
    if s.joins.is_empty() && s.leaves.is_empty() {
        return Ok(());
    }
    if !s.elastic {
        return Err("joins and leaves need elastic membership".into());
    }
    let mut nodes = s.joins.iter().map(|j| j.node).chain(s.leaves.iter().map(|l| l.node));
    if let Some(i) = nodes.find(|&i| i >= s.nodes) {
        return Err(format!("node {i} joins or leaves, of {}", s.nodes));
    }
    let twice = |ids: Vec<u32>| {
        ids.iter()
            .enumerate()
            .find(|(k, i)| ids[..*k].contains(i))
            .map(|(_, &i)| i)
    };
    if let Some(i) = twice(s.joins.iter().map(|j| j.node).collect()) {
        return Err(format!("node {i} joins twice"));
    }
    if let Some(i) = twice(s.leaves.iter().map(|l| l.node).collect()) {
        return Err(format!("node {i} leaves twice"));
    }
    for l in &s.leaves {
        if s.joins.iter().any(|j| j.node == l.node && j.at >= l.at) {
            return Err(format!("node {} leaves before it joins", l.node));
        }
    }
    if s.joins.len() >= s.nodes as usize {
        return Err("no founding member: every node joins".into());
    }
    Ok(())
}

/// Runs one scenario; `Err` carries the violation with its replay seed.
pub fn run(scenario: Scenario) -> Result<Report, Violation> {
    let seed = scenario.seed;
    let mut sim = Sim::new(scenario).map_err(|what| Violation {
        seed,
        at: Instant::ZERO,
        what,
    })?;
    sim.run()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Joins and leaves need elastic membership, nodes that exist, a leave after the
    /// join, and someone there from the start.
    #[test]
    fn membership_changes_that_make_no_sense_are_refused() {
        let at = |ms| Instant::from_millis(ms);
        let base = Scenario {
            elastic: true,
            ..Scenario::new(1, 4, Family::Ring)
        };
        let refused = |s: Scenario| Sim::new(s).err().unwrap_or_default();
        let joins = |joins: Vec<Join>| Scenario { joins, ..base.clone() };
        assert!(refused(Scenario {
            elastic: false,
            ..joins(vec![Join { node: 1, at: at(5) }])
        })
        .contains("elastic"));
        assert!(refused(joins(vec![Join { node: 4, at: at(5) }])).contains("node 4"));
        assert!(refused(joins(vec![Join { node: 1, at: at(5) }, Join { node: 1, at: at(9) }])).contains("twice"));
        assert!(refused(Scenario {
            leaves: vec![Leave { node: 1, at: at(5) }],
            ..joins(vec![Join { node: 1, at: at(9) }])
        })
        .contains("before it joins"));
        assert!(refused(joins((0..4).map(|node| Join { node, at: at(5) }).collect())).contains("founding"));
        assert!(Sim::new(Scenario {
            leaves: vec![Leave { node: 1, at: at(9) }],
            ..joins(vec![Join { node: 1, at: at(5) }])
        })
        .is_ok());
    }

    /// With every node a member, the measured contraction is the spectral gap's
    /// `1 − gap` (the expander's within 3%: its parallel edges).
    #[test]
    fn members_contraction_is_the_gap_when_all_are_members() {
        for family in [
            Family::Ring,
            Family::Exponential,
            Family::OnePeerExponential,
            Family::Expander,
            Family::Hypercube,
        ] {
            for n in [8, 16, 32] {
                let sim = Sim::new(Scenario::new(3, n, family)).unwrap();
                let (expected, measured) = (1.0 - sim.topology.spectral_gap(), sim.members_contraction());
                assert!(
                    (measured - expected).abs() <= 0.03 * expected.max(1e-9),
                    "{family:?} n={n}: {measured} vs {expected}"
                );
            }
        }
    }
}

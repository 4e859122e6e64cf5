//! A cluster member as an application with its own training loop uses it: what it is
//! ([`MemberSpec`]: engine, graph, wait policy, key, compression, ...), how its engine
//! and runtime are built from that ([`with_runtime`], shared with the `asap` command), and
//! [`Member`]: the engine and its socket on a thread of their own, which keeps serving
//! peers (acknowledging, resending, answering NOTIFYs) while the application computes,
//! and runs a round when the application hands it a model ([`Member::average`], or
//! [`Member::submit`] and [`Ticket::wait`] to overlap the round with compute).
//!
//! The Python package is a thin layer over [`Member`]: the model crosses as a pointer to
//! the caller's memory, never as a copy.

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use asap_core::topology::{Topology, TopologySpec};
use asap_core::{AllReduce, AllReduceBuffers, Buffers, CipherSuite, Clip, Compression, Config, Event, Key};
use asap_core::{Node, NodeId, NodeSecret, PublicKey, Reducer, Stats, Wait};

use crate::runtime::{Link, Runtime, RuntimeError, SocketStats, EVENT_QUEUE, MAX_PEERS, SOCKET_BUFFER};

/// Which reduce a member runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// ASAP: stochastic reduce with neighbours, NOTIFY-ACK per edge.
    Asap,
    /// The baseline: a ring all-reduce with a barrier every round.
    Allreduce,
}

/// How frames travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Datagrams (lost ones are retransmitted by the protocol).
    Udp,
    /// Length-prefixed frames on one TCP stream per directed edge.
    Tcp,
}

impl Transport {
    /// The frame size when none is given: the 1,400 bytes a 1,500-byte-MTU network
    /// carries as one datagram; a stream is not cut into datagrams, and large frames
    /// halve its per-frame work (measured 2026-12-02: 63 ms a round at 1,400 B, 31 ms at
    /// 65,000 B, 8 processes, 1M floats).
    pub const fn default_max_frame(self) -> usize {
        match self {
            Transport::Udp => 1_400,
            Transport::Tcp => 65_000,
        }
    }
}

/// Everything a member is, except the size of its model (known at its first round).
#[derive(Clone, Debug)]
pub struct MemberSpec {
    /// This member.
    pub rank: u32,
    /// Every member's address, by rank.
    pub peers: Vec<SocketAddr>,
    /// ASAP or all-reduce.
    pub engine: Engine,
    /// UDP or TCP.
    pub transport: Transport,
    /// ASAP's graph.
    pub topology: TopologySpec,
    /// ASAP's wait policy.
    pub wait: Wait,
    /// Cluster id.
    pub cluster: u32,
    /// Largest frame.
    pub max_frame: usize,
    /// Sending held to this many bytes a second (`None`: as fast as the socket takes it).
    pub pace: Option<u64>,
    /// Give up on a round after this long.
    pub round_timeout: Duration,
    /// At the end, keep answering peers until the engine is drained (its last update
    /// delivered), at most this long.
    pub linger: Duration,
    /// The cluster key (`asap_core::Config::key`).
    pub key: Option<Key>,
    /// With a key: payloads are encrypted too (`asap_core::Config::encrypt`).
    pub encrypt: bool,
    /// The cipher it encrypts with (`asap_core::Config::cipher`).
    pub cipher: CipherSuite,
    /// The compressed mode (`asap_core::Config::compression`).
    pub compression: Compression,
    /// Its consensus step (`None`: the compression's default for the graph).
    pub consensus_step: Option<f32>,
    /// This start of the member: peers tell a restart by it, and encryption's nonces
    /// depend on it being new (see `asap_core::Config::incarnation`).
    pub incarnation: u32,
    /// The poisoning guard (`asap_core::Config::clip`).
    pub clip: Option<Clip>,
    /// Per-node identities instead of a cluster key (`asap_core::Config::identities`):
    /// this member's secret and every member's public key.
    pub identity: Option<Arc<Identity>>,
    /// Elastic membership (`asap_core::Config::elastic`): members absent at the start
    /// are not waited for, and members may join and leave.
    pub elastic: bool,
    /// Joins a running elastic cluster (`asap_core::Config::join`): the first rounds
    /// fetch the model from the neighbours.
    pub join: bool,
}

/// A member's identity in a cluster of per-node keys: its static secret, and every
/// member's public key by node id (a membership file's).
#[derive(Debug)]
pub struct Identity {
    /// This member's static X25519 secret.
    pub secret: NodeSecret,
    /// Every member's public key, by node id.
    pub members: Vec<PublicKey>,
}

impl Identity {
    /// The keys of the links between member `me` and each of `peers` in cluster
    /// `cluster`: one Diffie-Hellman a peer, after one check that `me`'s listed public
    /// key is this secret's (not the wrong key file, or the wrong rank).
    pub fn link_keys(
        &self,
        cluster: u32,
        me: u32,
        peers: impl Iterator<Item = u32>,
    ) -> Result<Vec<(u32, Key)>, String> {
        let listed = |id: u32| {
            self.members.get(id as usize).ok_or(format!(
                "node {id} is not in the membership ({} members)",
                self.members.len()
            ))
        };
        let mine = listed(me)?;
        let public = self.secret.public_key();
        if *mine != public {
            return Err(format!(
                "this node key's public key is {public}, but the membership lists {mine} for node {me}"
            ));
        }
        peers
            .map(|peer| {
                let key = self
                    .secret
                    .link_key(cluster, me as u16, mine, peer as u16, listed(peer)?)
                    .map_err(|e| format!("link with node {peer}: {e}"))?;
                Ok((peer, key))
            })
            .collect()
    }
}

impl MemberSpec {
    /// Members in the cluster.
    pub fn world(&self) -> u32 {
        self.peers.len() as u32
    }

    /// The engine's configuration for a model of `model_len` values.
    pub fn config(&self, model_len: usize) -> Config {
        Config {
            wait: self.wait,
            max_frame: self.max_frame,
            key: self.key,
            encrypt: self.encrypt,
            cipher: self.cipher,
            compression: self.compression,
            consensus_step: self.consensus_step,
            incarnation: self.incarnation,
            clip: self.clip,
            identities: self.identity.is_some(),
            elastic: self.elastic || self.join,
            join: self.join,
            ..Config::new(self.cluster, NodeId(self.rank as u16), model_len)
        }
    }

    /// Builds the engine for a one-value model and drops it: the graph and the
    /// configuration's rules are checked before anything is bound or sent.
    pub fn check(&self) -> Result<(), String> {
        struct Nothing;
        impl UseEngine for Nothing {
            type Output = ();
            fn with<R: Reducer>(self, _engine: R, _receive_need: usize) {}
        }
        with_engine(self, 1, Nothing)
    }
}

/// The socket a member listens on, bound before the engine exists so that a taken port
/// is an error at start.
#[derive(Debug)]
pub enum Bound {
    /// A UDP socket.
    Udp(UdpSocket),
    /// A TCP listener.
    Tcp(TcpListener),
}

impl Bound {
    /// Binds `addr` for `transport`; the error names the address.
    pub fn listen(transport: Transport, addr: SocketAddr) -> Result<Bound, String> {
        match transport {
            Transport::Udp => UdpSocket::bind(addr).map(Bound::Udp),
            Transport::Tcp => TcpListener::bind(addr).map(Bound::Tcp),
        }
        .map_err(|e| format!("cannot listen on {addr}: {e}"))
    }
}

/// What runs an engine once it is built, over whichever link it got: an engine and its
/// buffers live in [`with_runtime`]'s frame, so the caller's work happens inside it.
pub trait Drive {
    /// What the work returns.
    type Output;
    /// Runs the engine.
    fn drive<R: Reducer, L: Link>(self, runtime: Runtime<R, L>) -> Self::Output;
}

/// Builds the engine `spec` names for a model of `model_len` values (its topology,
/// layout and buffers), puts it on a runtime over `bound` (asking for a receive buffer
/// that holds a round's burst, and pacing as asked), and hands that to `driver`.
pub fn with_runtime<D: Drive>(
    spec: &MemberSpec,
    model_len: usize,
    bound: Bound,
    driver: D,
) -> Result<D::Output, String> {
    struct OnLink<'s, D> {
        spec: &'s MemberSpec,
        bound: Bound,
        driver: D,
    }
    impl<D: Drive> UseEngine for OnLink<'_, D> {
        type Output = Result<D::Output, String>;
        fn with<R: Reducer>(self, engine: R, receive_need: usize) -> Self::Output {
            let peers = self.spec.peers.clone();
            let io = |e: std::io::Error| e.to_string();
            Ok(match self.bound {
                Bound::Udp(socket) => {
                    let mut runtime = Runtime::new(engine, socket, peers).map_err(io)?;
                    request_receive_buffer(&mut runtime, receive_need);
                    runtime.set_pacing(self.spec.pace);
                    self.driver.drive(runtime)
                }
                Bound::Tcp(listener) => {
                    let mut runtime = Runtime::tcp(engine, listener, peers).map_err(io)?;
                    runtime.set_pacing(self.spec.pace);
                    self.driver.drive(runtime)
                }
            })
        }
    }
    with_engine(spec, model_len, OnLink { spec, bound, driver })?
}

/// What is done with a built engine (see [`with_engine`]).
trait UseEngine {
    type Output;
    /// `receive_need`: bytes of datagrams a round may bring at once.
    fn with<R: Reducer>(self, engine: R, receive_need: usize) -> Self::Output;
}

/// Builds the engine in this frame (it borrows buffers allocated here) and lends it.
fn with_engine<U: UseEngine>(spec: &MemberSpec, model_len: usize, user: U) -> Result<U::Output, String> {
    let config = spec.config(model_len);
    match spec.engine {
        Engine::Asap => {
            let topology = Topology::new(spec.topology, &mut vec![0.0; spec.topology.scratch_len()])
                .map_err(|e| format!("topology: {e}"))?;
            let layout = config
                .layout(topology.peers_of(spec.rank).count())
                .map_err(|e| e.to_string())?;
            let (mut snapshot, mut acc) = (vec![0.0; layout.model_len], vec![0.0; layout.accumulator]);
            let (mut weights, mut bits) = (vec![0.0; layout.chunks], vec![0; layout.bitmap_words]);
            let mut mass = vec![0.0; layout.chunk_mass];
            let buffers = Buffers {
                snapshot: &mut snapshot,
                accumulator: &mut acc,
                chunk_weights: &mut weights,
                chunk_mass: &mut mass,
                chunk_bits: &mut bits,
            };
            // In-neighbours whose updates may arrive in the same round.
            let senders = (0..topology.period())
                .map(|r| {
                    topology
                        .peers_of(spec.rank)
                        .filter(|&j| topology.edge_weight(j, spec.rank, r) > 0.0)
                        .count()
                })
                .max()
                .unwrap_or(0);
            let need = receive_need(&config, senders);
            let mut node = Node::<MAX_PEERS>::with_topology(config, &topology, buffers, asap_core::Instant::ZERO)
                .map_err(|e| e.to_string())?;
            if let Some(identity) = &spec.identity {
                for (peer, key) in identity.link_keys(spec.cluster, spec.rank, topology.peers_of(spec.rank))? {
                    node.set_link_key(NodeId(peer as u16), key).map_err(|e| e.to_string())?;
                }
            }
            Ok(user.with(node, need))
        }
        Engine::Allreduce => {
            let world = spec.world();
            let mut work = vec![0.0; model_len];
            let mut bits = vec![0; AllReduce::bitmap_words(&config, world)];
            let buffers = AllReduceBuffers {
                work: &mut work,
                chunk_bits: &mut bits,
            };
            // One segment a step, from the left neighbour.
            let need = receive_need(&config, 1) / world.max(1) as usize;
            let ring = AllReduce::new(config, world, buffers).map_err(|e| e.to_string())?;
            Ok(user.with(ring, need))
        }
    }
}

/// Bytes of datagrams a round may bring at once: `senders` whole updates in frames of
/// `max_frame` bytes (a sender bursts its update, then waits for the ACK).
fn receive_need(config: &Config, senders: usize) -> usize {
    senders * config.model_len.div_ceil(config.chunk_len()) * config.max_frame
}

/// Asks for a receive buffer that holds a round's burst (`need` bytes) and warns when the
/// kernel grants less: datagrams past it are dropped and sent again after a
/// retransmission timeout.
fn request_receive_buffer<R: Reducer, L: Link>(runtime: &mut Runtime<R, L>, need: usize) {
    if need <= SOCKET_BUFFER {
        return;
    }
    // Linux reports twice what the buffer holds in payload (its own bookkeeping).
    let Ok(granted) = runtime.request_recv_buffer(need) else {
        return;
    };
    if granted / 2 < need {
        log::warn!(
            "the socket receive buffer holds ~{} KiB, a round's updates may bring {} KiB at once: \
             raise net.core.rmem_max (sysctl) to {need} or more, or expect retransmissions \
             (counted as kernel_drops)",
            granted / 2 / 1024,
            need / 1024,
        );
    }
}

/// Why a member could not average.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberError {
    /// The model is not the length of the first one averaged (the engine's layout is
    /// fixed by it).
    ModelLength {
        /// The first model's length.
        expected: usize,
        /// This one's.
        got: usize,
    },
    /// This round failed (timed out, or the engine refused it); the member goes on.
    Round(String),
    /// The member has stopped (shut down, or its engine or socket failed: the reason).
    Stopped(String),
}

impl std::fmt::Display for MemberError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MemberError::ModelLength { expected, got } => write!(
                f,
                "a model of {got} values, but this member averages {expected} (the length of its first)"
            ),
            MemberError::Round(why) => f.write_str(why),
            MemberError::Stopped(why) => write!(f, "the member has stopped: {why}"),
        }
    }
}

impl std::error::Error for MemberError {}

/// The counters of a member: the engine's and the socket's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemberStats {
    /// The engine's (`asap_core::Stats`).
    pub engine: Stats,
    /// The socket side's.
    pub socket: SocketStats,
    /// Engine events dropped because the application left [`EVENT_QUEUE`] undrained.
    pub events_dropped: u64,
    /// Datagrams the kernel dropped at the socket (Linux; `None` elsewhere, and on TCP).
    pub kernel_drops: Option<u64>,
}

/// How often the idle member thread looks for the application's next request while it
/// serves peers.
const IDLE_TURN: Duration = Duration::from_millis(1);

/// A model handed to the member thread: the caller's memory, untouched by anyone else
/// until the round's [`Ticket`] is answered.
struct Model {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: the memory behind `ptr` is lent to the member thread for one round; the
// submitter promised (`Member::submit`) that nobody else touches it meanwhile, and a
// `Ticket` waits for the round even when dropped.
unsafe impl Send for Model {}

enum Request {
    Average(Model, SyncSender<Result<(), MemberError>>),
    Stop,
}

/// What the member thread shares with the application.
#[derive(Debug, Default)]
struct Status {
    stats: MemberStats,
    events: VecDeque<Event>,
    /// Why the thread ended, once it has.
    stopped: Option<String>,
}

/// A round handed to the member thread. Dropping it waits for the round, because the
/// member writes the averaged model into the memory it was lent.
#[must_use = "dropping a ticket waits for its round"]
pub struct Ticket {
    answer: Option<Receiver<Result<(), MemberError>>>,
}

impl Ticket {
    /// Waits for the round: the averaged model is then in the memory submitted.
    pub fn wait(mut self) -> Result<(), MemberError> {
        Self::answer(self.answer.take())
    }

    /// Waits at most `timeout`: `None` if the round is still running (the ticket is
    /// still good), else its answer (and the ticket is spent: later calls give `Ok`).
    /// For callers that must look up now and then, e.g. for Ctrl+C.
    pub fn wait_for(&mut self, timeout: Duration) -> Option<Result<(), MemberError>> {
        let Some(answer) = self.answer.as_ref() else {
            return Some(Ok(()));
        };
        match answer.recv_timeout(timeout) {
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Ok(result) => {
                self.answer = None;
                Some(result)
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                self.answer = None;
                Some(Err(MemberError::Stopped("its thread ended during the round".into())))
            }
        }
    }

    fn answer(answer: Option<Receiver<Result<(), MemberError>>>) -> Result<(), MemberError> {
        match answer.map(|a| a.recv()) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(MemberError::Stopped("its thread ended during the round".into())),
            None => Ok(()),
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let _ = Self::answer(self.answer.take());
    }
}

/// A running member: its engine and socket on a thread of their own.
pub struct Member {
    spec: MemberSpec,
    requests: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
    status: Arc<Mutex<Status>>,
    /// The model's length, fixed by the first round.
    model_len: Mutex<Option<usize>>,
}

impl Member {
    /// Starts a member over `bound` (checked with [`MemberSpec::check`] first). Its
    /// engine is built at the first round, when the model's length is known; until then
    /// peers' frames wait in the socket (and are retransmitted if they overflow it).
    pub fn start(spec: MemberSpec, bound: Bound) -> Result<Member, String> {
        spec.check()?;
        let (requests, inbox) = mpsc::channel();
        let status = Arc::new(Mutex::new(Status::default()));
        let thread = {
            let (spec, status) = (spec.clone(), Arc::clone(&status));
            std::thread::Builder::new()
                .name(format!("asap member {}", spec.rank))
                .spawn(move || serve(spec, bound, inbox, status))
                .map_err(|e| format!("cannot start the member thread: {e}"))?
        };
        Ok(Member {
            spec,
            requests: Some(requests),
            thread: Some(thread),
            status,
            model_len: Mutex::new(None),
        })
    }

    /// What it is.
    pub fn spec(&self) -> &MemberSpec {
        &self.spec
    }

    /// Averages `params` with the cluster (one round), in place.
    pub fn average(&self, params: &mut [f32]) -> Result<(), MemberError> {
        // SAFETY: `params` is borrowed exclusively until the ticket is answered here.
        unsafe { self.submit(params.as_mut_ptr(), params.len()) }?.wait()
    }

    /// Hands the member `len` values at `ptr` for one round and returns at once; the
    /// averaged values are there when the [`Ticket`] is answered. Rounds run in the
    /// order submitted.
    ///
    /// # Safety
    /// `ptr` must point to `len` initialised `f32`s that stay valid, and that nothing
    /// else reads or writes, until the ticket's [`wait`](Ticket::wait) returns or the
    /// ticket is dropped (which waits).
    pub unsafe fn submit(&self, ptr: *mut f32, len: usize) -> Result<Ticket, MemberError> {
        {
            let mut fixed = lock(&self.model_len);
            match *fixed {
                Some(expected) if expected != len => return Err(MemberError::ModelLength { expected, got: len }),
                Some(_) => {}
                None => *fixed = Some(len),
            }
        }
        let stopped = || MemberError::Stopped(self.stopped_reason());
        let requests = self.requests.as_ref().ok_or_else(stopped)?;
        let (answer, answered) = mpsc::sync_channel(1);
        requests
            .send(Request::Average(Model { ptr, len }, answer))
            .map_err(|_| stopped())?;
        Ok(Ticket { answer: Some(answered) })
    }

    /// The counters now.
    pub fn stats(&self) -> MemberStats {
        lock(&self.status).stats
    }

    /// Takes the engine's events (peers down, up, restarted; updates rejected; ...),
    /// oldest first; at most [`EVENT_QUEUE`] wait, the newest dropped and counted.
    pub fn take_events(&self) -> Vec<Event> {
        lock(&self.status).events.drain(..).collect()
    }

    /// Ends the member's part in the cluster: finishes the rounds already submitted,
    /// serves peers until its last update is delivered (at most the spec's linger), says
    /// goodbye and stops the thread. Harmless when called again.
    pub fn shutdown(&mut self) -> Result<(), MemberError> {
        if let Some(requests) = self.requests.take() {
            let _ = requests.send(Request::Stop);
        }
        if let Some(thread) = self.thread.take() {
            thread
                .join()
                .map_err(|_| MemberError::Stopped("its thread panicked".into()))?;
        }
        match lock(&self.status).stopped.as_deref() {
            None | Some(SHUT_DOWN) => Ok(()),
            Some(why) => Err(MemberError::Stopped(why.to_string())),
        }
    }

    fn stopped_reason(&self) -> String {
        lock(&self.status).stopped.clone().unwrap_or_else(|| SHUT_DOWN.into())
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// Why a member that was asked to stop has stopped.
const SHUT_DOWN: &str = "shut down";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere cannot leave counters half-written in a way that matters here.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The member thread: waits for the first round (its model's length sizes the engine),
/// builds the engine and runs [`Serving`] until asked to stop.
fn serve(spec: MemberSpec, bound: Bound, inbox: Receiver<Request>, status: Arc<Mutex<Status>>) {
    let first = match inbox.recv() {
        Ok(Request::Average(model, answer)) => (model, answer),
        Ok(Request::Stop) | Err(_) => {
            lock(&status).stopped = Some(SHUT_DOWN.into());
            return;
        }
    };
    let len = first.0.len;
    let answer = first.1.clone();
    let serving = Serving {
        spec: &spec,
        inbox,
        status: Arc::clone(&status),
        first: Some(first),
    };
    let why = match with_runtime(&spec, len, bound, serving) {
        Ok(why) => why,
        Err(setup) => {
            let _ = answer.send(Err(MemberError::Stopped(setup.clone())));
            setup
        }
    };
    lock(&status).stopped = Some(why);
}

/// The member thread's loop over a built engine.
struct Serving<'s> {
    spec: &'s MemberSpec,
    inbox: Receiver<Request>,
    status: Arc<Mutex<Status>>,
    /// The request that built the engine, run first.
    first: Option<(Model, SyncSender<Result<(), MemberError>>)>,
}

impl Drive for Serving<'_> {
    /// Why it stopped.
    type Output = String;

    fn drive<R: Reducer, L: Link>(mut self, mut runtime: Runtime<R, L>) -> String {
        let mut next = self.first.take().map(|(m, a)| Request::Average(m, a));
        loop {
            let request = match next.take() {
                Some(r) => r,
                None => match self.inbox.try_recv() {
                    Ok(r) => r,
                    Err(TryRecvError::Disconnected) => Request::Stop,
                    Err(TryRecvError::Empty) => {
                        let served = runtime.serve(IDLE_TURN);
                        self.publish(&mut runtime, false);
                        if let Err(e) = served {
                            return e.to_string();
                        }
                        continue;
                    }
                },
            };
            match request {
                Request::Average(model, answer) => {
                    // SAFETY: `Member::submit`'s contract lends this memory to the
                    // thread until `answer` is sent.
                    let params = unsafe { std::slice::from_raw_parts_mut(model.ptr, model.len) };
                    // A member joining a running cluster takes its model first: its
                    // first average is the cluster's.
                    let done = if runtime.node().has_model() {
                        runtime.run_round(params, self.spec.round_timeout)
                    } else {
                        runtime.join(params, self.spec.round_timeout).map(drop)
                    };
                    self.publish(&mut runtime, true);
                    match done {
                        Ok(()) => drop(answer.send(Ok(()))),
                        Err(RuntimeError::Io(e)) => {
                            let why = format!("socket: {e}");
                            let _ = answer.send(Err(MemberError::Stopped(why.clone())));
                            return why;
                        }
                        Err(e) => drop(answer.send(Err(MemberError::Round(e.to_string())))),
                    }
                }
                Request::Stop => {
                    let done = runtime.finish(self.spec.linger);
                    self.publish(&mut runtime, true);
                    return done.map_or_else(|e| e.to_string(), |()| SHUT_DOWN.into());
                }
            }
        }
    }
}

impl Serving<'_> {
    /// Copies the counters and moves the events where the application reads them;
    /// `kernel_drops` too after a round (it reads /proc: not on every idle turn).
    fn publish<R: Reducer, L: Link>(&self, runtime: &mut Runtime<R, L>, after_round: bool) {
        let mut status = lock(&self.status);
        let kernel_drops = if after_round {
            runtime.kernel_drops()
        } else {
            status.stats.kernel_drops
        };
        status.stats = MemberStats {
            engine: *runtime.node().stats(),
            socket: runtime.stats(),
            events_dropped: status.stats.events_dropped,
            kernel_drops,
        };
        while let Some(event) = runtime.poll_event() {
            if status.events.len() < EVENT_QUEUE {
                status.events.push_back(event);
            } else {
                status.stats.events_dropped += 1;
            }
        }
    }
}

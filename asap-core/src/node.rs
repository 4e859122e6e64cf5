//! The sans-IO facade: one [`Node`] per worker, tying wire, flow control and reduce
//! together. See the type's documentation for the call order.

use heapless::{Deque, Vec};

use crate::auth::Secret;
use crate::config::{Buffers, Config, Layout, PeerSpec, Wait};
use crate::error::{ConfigError, FrameError, RoundError};
use crate::flow::{Control, InEdge, OutEdge, RtoBounds, Timer, Timers};
use crate::mixing::choco::{Choco, Membership};
use crate::mixing::{self, Masses};
use crate::output::{Accepted, Event, Finished, PeerStatus, Stats, Transmit, EVENT_CAPACITY};
use crate::reduce;
use crate::time::Instant;
use crate::topology::Topology;
use crate::wire::{self, BufferTooSmall, NodeId, Sealing};

pub use crate::mixing::choco::PublicCopies;

mod receive;
mod round;
mod transmit;

#[derive(Clone, Debug)]
struct Peer {
    spec: PeerSpec,
    out: OutEdge,
    inn: InEdge,
    up: bool,
    left: bool,
    incompatible: bool,
    /// A frame of it was handled (elastic membership; always `true` otherwise).
    heard: bool,
    /// Rounds the peer started, as far as its frames told us.
    rounds_started: u32,
    incarnation: Option<u32>,
    /// Link-level control frames owed to it.
    control: Control,
    timers: Timers,
    /// The last round whose update this node began sending to the peer.
    sent_round: Option<u32>,
    /// Sequence numbers of the peer's authenticated frames seen (this incarnation).
    replay: crate::auth::ReplayWindow,
    /// Compressed mode: its standing in the epoch's sums.
    choco: Membership,
    /// Push-sum, asynchronous rounds: the share of the snapshot's mass set aside for
    /// this out-neighbour when the round started while the edge was still busy. The
    /// edge sends it once acknowledged; a round that starts first takes it back.
    reserved: Option<f32>,
    /// Push-sum: the update on this edge carries no mass (sent between rounds, after
    /// the round's mix kept the share; see `resume_sending`).
    weightless: bool,
    /// What frames to and from it are sealed with.
    link: Link,
}

impl Peer {
    /// Waited for: live, or (elastic membership) not heard from yet but still expected
    /// within `first_contact` of the start.
    fn counts(&self) -> bool {
        self.up && !self.left && !self.incompatible && !matches!(self.link, Link::Missing)
    }

    /// Sent to and waited for. (An expected peer is not sent to: a share sent to a
    /// member that is not there would be lost.)
    fn live(&self) -> bool {
        self.heard && self.counts()
    }
}

/// Elastic membership: how long a member waits at its start for a peer it has not
/// heard from before counting it absent (members started together hear each other
/// within a round trip; waiting that long keeps them from running rounds alone).
fn first_contact(config: &Config) -> crate::time::Duration {
    let three_beats = crate::time::Duration::from_micros(3 * config.heartbeat_interval.total_micros());
    three_beats.min(config.peer_timeout)
}

/// The key of a peer's link.
#[derive(Clone, Debug)]
// One per peer, set once; no allocator to box the cipher in.
#[allow(clippy::large_enum_variant)]
enum Link {
    /// The node's own secret (a cluster key, or none).
    Cluster,
    /// Identities: the pair's link key (`Node::set_link_key`).
    Own(Secret),
    /// Identities, and no link key yet: the peer is neither heard nor sent to.
    Missing,
}

/// One worker of an ASAP cluster, as a sans-IO state machine.
///
/// The node owns no socket, clock or heap. It borrows its working memory ([`Buffers`])
/// for its whole life and the application's parameters only for the calls that read or
/// mix them. `P` is the capacity of the peer table.
///
/// # Call order
///
/// * inputs: [`handle_frame_mut`](Self::handle_frame_mut) (or
///   [`handle_frame`](Self::handle_frame) for read-only bytes) for every datagram
///   received, [`handle_timeout`](Self::handle_timeout) when the deadline from
///   [`poll_timeout`](Self::poll_timeout) passed (extra calls are harmless);
/// * application: [`start_round`](Self::start_round) snapshots the parameters and
///   starts sending them; after [`Event::RoundReady`],
///   [`finish_round`](Self::finish_round) mixes the neighbours' updates into them and
///   acknowledges those updates. [`Reducer::advance_round`](crate::Reducer::advance_round)
///   does each when it is due;
/// * outputs, after every input and command: [`poll_transmit`](Self::poll_transmit)
///   until `None`, [`poll_event`](Self::poll_event) until `None`, then
///   [`poll_timeout`](Self::poll_timeout) for the next deadline;
/// * the end: after the last round, keep serving until
///   [`is_drained`](Self::is_drained) (neighbours still finishing that round get this
///   node's update, and its acknowledgements), then [`leave`](Self::leave) and send
///   what `poll_transmit` still has. The node is silent from then on.
///
/// # Run loop
///
/// ```no_run
/// use asap_core::{Buffers, Config, Event, Instant, Node, NodeId, PeerSpec, Reducer};
/// # fn now() -> Instant { Instant::ZERO }
/// # fn send(_to: NodeId, _frame: &[u8]) {}
/// # fn recv(_buf: &mut [u8], _until: Option<Instant>) -> Option<usize> { None }
/// # fn local_sgd_step(_params: &mut [f32]) {}
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let config = Config::new(7, NodeId(0), 1_000);
/// let peers = [PeerSpec::both(NodeId(1), 1.0 / 3.0), PeerSpec::both(NodeId(2), 1.0 / 3.0)];
/// let layout = config.layout(peers.len())?;
/// let (mut snapshot, mut acc) = (vec![0.0; layout.model_len], vec![0.0; layout.accumulator]);
/// let (mut weights, mut bits) = (vec![0.0; layout.chunks], vec![0; layout.bitmap_words]);
/// let mut mass = vec![0.0; layout.chunk_mass];
/// let buffers = Buffers {
///     snapshot: &mut snapshot,
///     accumulator: &mut acc,
///     chunk_weights: &mut weights,
///     chunk_mass: &mut mass,
///     chunk_bits: &mut bits,
/// };
/// let mut node = Node::<4>::new(config, &peers, buffers, now())?;
/// let mut params = vec![0.0f32; 1_000];
/// let mut buf = vec![0u8; config.max_frame];
/// let (rounds, mut done, mut stepped) = (100, 0, false);
/// while done < rounds || !node.is_drained() {
///     // Local steps while no round runs; `period` of them make an update.
///     if done < rounds && !stepped && !node.is_started() && node.can_start_round().is_ok() {
///         local_sgd_step(&mut params);
///         stepped = node.record_local_step();
///     }
///     let advance = node.advance_round(now(), &mut params, stepped)?;
///     stepped &= advance.started.is_none();
///     done += u32::from(advance.finished.is_some());
///     while let Some(t) = node.poll_transmit(now(), &mut buf)? {
///         send(t.to, &buf[..t.len]);
///     }
///     while let Some(event) = node.poll_event() {
///         if let Event::PeerDown(peer) = event {
///             eprintln!("{peer} is down");
///         }
///     }
///     match recv(&mut buf, node.poll_timeout()) {
///         Some(len) => {
///             let _ = node.handle_frame_mut(now(), &mut buf[..len]);
///         }
///         None => node.handle_timeout(now()),
///     }
/// }
/// node.leave(now());
/// while let Some(t) = node.poll_transmit(now(), &mut buf)? {
///     send(t.to, &buf[..t.len]);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Node<'a, const P: usize> {
    config: Config,
    /// The configuration's key, and the cipher derived from it when encrypting.
    secret: Secret,
    /// Sequence number of the next authenticated frame (counts from 0 each incarnation).
    send_seq: u64,
    /// Who sends to whom in which round, when built from a topology.
    schedule: Option<Topology>,
    /// Push-sum: the share of its own mass this round keeps (1 less the shares of the
    /// out-neighbours its update goes to). The masses are in `Buffers::chunk_mass`.
    kept_share: f32,
    /// The node holds a model: always, unless it joins a running cluster and has not
    /// received every chunk yet (`Config::join`).
    joined: bool,
    /// The compressed mode's state, when compressing.
    choco: Option<Choco>,
    /// The round the snapshot was taken for.
    snapshot_round: Option<u32>,
    /// The highest round an in-neighbour's update announced (exact-round modes): a node
    /// behind it finishes at once and jumps ahead to it.
    catch_up: u32,
    /// [`Node::leave`] was called: the node is silent but for Leave frames.
    left: bool,
    layout: Layout,
    chunks: u32,
    peers: Vec<Peer, P>,
    buffers: Buffers<'a>,
    round: u32,
    started: bool,
    ready_reported: bool,
    /// Round whose snapshot is still being delivered.
    sending: Option<u32>,
    local_steps: u32,
    cursor: usize,
    events: Deque<Event, EVENT_CAPACITY>,
    stats: Stats,
}

impl<'a, const P: usize> Node<'a, P> {
    /// Builds a node. Checks the configuration, the peer table and the buffers' sizes
    /// (see [`Config::layout`]).
    pub fn new(config: Config, peers: &[PeerSpec], buffers: Buffers<'a>, now: Instant) -> Result<Self, ConfigError> {
        Self::build(config, peers, None, buffers, now)
    }

    /// Builds a node whose neighbours and weights come from `topology`, round by round
    /// (time-varying graphs included). The peer table holds [`Topology::peers_of`]
    /// this node: size the buffers with `config.layout(topology.peers_of(id).count())`.
    /// On push-sum topologies (directed, irregular: `Random`) the node carries a mass
    /// beside its replica and the application keeps seeing the de-biased average.
    pub fn with_topology(
        config: Config,
        topology: &Topology,
        buffers: Buffers<'a>,
        now: Instant,
    ) -> Result<Self, ConfigError> {
        let me = u32::from(config.id.0);
        if me >= topology.nodes() {
            return Err(ConfigError::NotInTopology);
        }
        let mut peers: Vec<PeerSpec, P> = Vec::new();
        for j in topology.peers_of(me) {
            let period = topology.period();
            let sends = (0..period)
                .map(|r| topology.edge_weight(me, j, r))
                .fold(0.0f64, f64::max);
            let spec = PeerSpec {
                id: NodeId(j as u16),
                send_weight: (sends > 0.0).then_some(sends as f32),
                receive: (0..period).any(|r| topology.edge_weight(j, me, r) > 0.0),
            };
            peers
                .push(spec)
                .map_err(|_| ConfigError::TooManyPeers { capacity: P })?;
        }
        Self::build(config, &peers, Some(topology.clone()), buffers, now)
    }

    fn build(
        config: Config,
        peers: &[PeerSpec],
        schedule: Option<Topology>,
        buffers: Buffers<'a>,
        now: Instant,
    ) -> Result<Self, ConfigError> {
        let layout = config.layout(peers.len())?;
        buffers.check(&layout)?;
        if peers.len() > P {
            return Err(ConfigError::TooManyPeers { capacity: P });
        }
        let mut total_weight = 0.0f32;
        let mut table = Vec::new();
        for (i, spec) in peers.iter().enumerate() {
            if spec.id == config.id {
                return Err(ConfigError::SelfAsPeer);
            }
            if peers[..i].iter().any(|p| p.id == spec.id) {
                return Err(ConfigError::DuplicatePeer(spec.id));
            }
            if let Some(w) = spec.send_weight {
                if !(w.is_finite() && w > 0.0 && w <= 1.0) {
                    return Err(ConfigError::SendWeight(spec.id));
                }
                total_weight += w;
            }
            let mut peer = Peer {
                spec: *spec,
                out: OutEdge::new(RtoBounds::of(&config)),
                inn: InEdge::default(),
                up: true,
                // Elastic membership: a member counts once heard from (and is
                // expected until `first_contact`).
                heard: !config.elastic,
                left: false,
                incompatible: false,
                rounds_started: 0,
                incarnation: None,
                control: Control::new(),
                timers: Timers::default(),
                sent_round: None,
                replay: crate::auth::ReplayWindow::default(),
                choco: Membership::default(),
                reserved: None,
                weightless: false,
                link: if config.identities {
                    Link::Missing
                } else {
                    Link::Cluster
                },
            };
            let silence = if config.elastic {
                first_contact(&config)
            } else {
                config.peer_timeout
            };
            peer.timers.set(Timer::PeerDown, now + silence);
            peer.timers.set(Timer::Heartbeat, now + config.heartbeat_interval);
            peer.timers.set(Timer::Hello, now + config.heartbeat_interval);
            // Cannot fail: the length was checked against P above.
            let _ = table.push(peer);
        }
        // A topology's weights are checked per round by construction.
        if schedule.is_none() && total_weight > 1.0 + mixing::WEIGHT_SLACK {
            return Err(ConfigError::SendWeightsExceedOne);
        }
        if let Wait::AtLeast(k) = config.wait {
            if usize::from(k) > peers.iter().filter(|p| p.receive).count() {
                return Err(ConfigError::WaitExceedsInDegree);
            }
        }
        if config.is_compressed() && schedule.as_ref().is_some_and(Topology::needs_push_sum) {
            return Err(ConfigError::CompressionNeedsStaticGraph);
        }
        buffers.chunk_weights.fill(0.0);
        Masses(&mut *buffers.chunk_mass).reset(config.join);
        buffers.chunk_bits.fill(0);
        buffers.accumulator.fill(0.0);
        Ok(Node {
            choco: Choco::new(&config, schedule.as_ref()),
            secret: config.secret()?,
            config,
            schedule,
            kept_share: 1.0,
            joined: !config.join,
            snapshot_round: None,
            send_seq: 0,
            catch_up: 0,
            left: false,
            layout,
            chunks: layout.chunks as u32,
            peers: table,
            buffers,
            round: 0,
            started: false,
            ready_reported: false,
            sending: None,
            local_steps: 0,
            cursor: 0,
            events: Deque::new(),
            stats: Stats::default(),
        })
    }

    // ----- getters -----

    /// Compressed mode: this node's public copy `x̂` (what its neighbours know of its
    /// replica) and the disagreement `t = Σ_j w_j·x̂_j − W·x̂` with its in-neighbours'
    /// public copies (`W = Σ_j w_j`), as the two parts of a compensated sum
    /// (`t = hi + lo`). `None` when not compressing. Once every update sent has been
    /// folded, `t` is exactly that: the invariant the mode rests on.
    pub fn public_copies(&self) -> Option<PublicCopies<'_>> {
        self.choco.as_ref().map(|c| c.public_copies(self.buffers.accumulator))
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.config.id
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Its memory layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The current round: started and not finished, or the next to start.
    pub fn round(&self) -> u32 {
        self.round
    }

    /// A round was started and not finished yet.
    pub fn is_started(&self) -> bool {
        self.started
    }

    /// Push-sum mass, the mean over the chunks (1 unless push-sum runs: on directed,
    /// irregular graphs and in the asynchronous modes).
    pub fn mass(&self) -> f64 {
        mixing::mean_mass(self.buffers.chunk_mass)
    }

    /// Push-sum mass of the chunk holding parameter `index` (1 unless push-sum runs,
    /// or past the model): what the de-biased replica's value there is weighted by in
    /// the average the cluster converges to.
    pub fn mass_at(&self, index: usize) -> f64 {
        let c = index / self.config.chunk_len();
        if !self.is_push_sum() {
            return 1.0;
        }
        self.buffers.chunk_mass.get(c).map_or(1.0, |&m| f64::from(m))
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The peers in the table.
    pub fn peer_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.peers.iter().map(|p| p.spec.id)
    }

    /// Ends the node and hands its memory back (to build a new incarnation in it, say).
    pub fn into_buffers(self) -> Buffers<'a> {
        self.buffers
    }

    /// A peer's state, if it is in the table.
    pub fn peer(&self, id: NodeId) -> Option<PeerStatus> {
        self.peers.iter().find(|p| p.spec.id == id).map(|p| PeerStatus {
            up: p.live(),
            rounds_started: p.rounds_started,
            send_idle: p.out.is_idle(),
            rtt: p.out.rtt().smoothed(),
        })
    }

    /// `true` when `bytes` look like a frame for this node (version, cluster and
    /// receiver), so one socket can serve several nodes. Checks nothing else.
    pub fn accepts(&self, bytes: &[u8]) -> bool {
        wire::peek(bytes).is_ok_and(|(h, _)| h.cluster == self.config.cluster && h.to == self.config.id)
    }

    /// Whether [`start_round`](Self::start_round) would succeed now (apart from the
    /// parameters themselves).
    pub fn can_start_round(&self) -> Result<(), RoundError> {
        if self.left {
            return Err(RoundError::Left);
        }
        if self.started {
            return Err(RoundError::AlreadyStarted);
        }
        // The snapshot is shared by every edge: no edge may still need it...
        if self.peers.iter().any(|p| p.live() && !p.out.releases_snapshot()) {
            return Err(RoundError::SendWindowClosed);
        }
        // ...and, when rounds are exact, an edge this round uses must have been
        // acknowledged. (Asynchronous modes skip such an edge this round: the receiver
        // holds our previous update, and waiting for it to finish a round could be
        // waiting for ourselves.)
        let busy = |i: usize| self.peers[i].live() && !self.peers[i].out.is_idle();
        let round = self.next_round();
        if self.exact_rounds() && (0..self.peers.len()).any(|i| busy(i) && self.send_weight(i, round).is_some()) {
            return Err(RoundError::SendWindowClosed);
        }
        if let Some(s) = self.config.staleness {
            let behind = self.peers.iter().find(|p| {
                // Our new round minus the peer's latest started round, which is
                // `rounds_started - 1`.
                p.live() && p.spec.receive && u64::from(self.round) + 1 > u64::from(p.rounds_started) + u64::from(s)
            });
            if let Some(p) = behind {
                return Err(RoundError::Staleness(p.spec.id));
            }
        }
        Ok(())
    }

    /// Whether the started round's wait policy is satisfied (the level behind
    /// [`Event::RoundReady`]).
    pub fn is_ready(&self) -> bool {
        self.started && self.wait_satisfied()
    }

    // ----- application commands -----

    /// Counts one local step; `true` when `period` steps have passed since the last
    /// `true`, i.e. when the application should start a round.
    pub fn record_local_step(&mut self) -> bool {
        self.local_steps += 1;
        if self.local_steps >= self.config.period {
            self.local_steps = 0;
            true
        } else {
            false
        }
    }

    /// Whether this node owes its peers nothing more after its last round: none
    /// running, every live out-neighbour has the whole of its last update (acknowledged,
    /// or every chunk reported received: a neighbour still finishing that round mixes
    /// it), and no acknowledgement or progress answer is waiting to be sent. Keep
    /// serving the network after the last [`finish_round`](Self::finish_round) until
    /// this holds, then [`leave`](Self::leave): neighbours then never wait for an
    /// update that will not come, nor for this node.
    pub fn is_drained(&self) -> bool {
        !self.started
            && self
                .peers
                .iter()
                .all(|p| !p.live() || (p.out.releases_snapshot() && p.inn.owes_nothing()))
    }

    /// Whether the node holds a model to train: always, unless it joins a running
    /// cluster (`Config::join`) and has not yet received every chunk from its
    /// in-neighbours (the round that completes it emits [`Event::Joined`]). Until then
    /// the application should only run rounds, without training on the replica.
    pub fn has_model(&self) -> bool {
        self.joined
    }

    /// Whether updates were folded since the last finish, to be mixed at the next: the
    /// replica does not show them yet. (Between rounds under push-sum, an update of a
    /// round this node passed is such; so is whatever arrived while the node computes.)
    /// Always `false` in the compressed mode, whose sums stay from round to round.
    pub fn holds_unmixed(&self) -> bool {
        self.choco.is_none() && self.buffers.chunk_weights.iter().any(|&w| w != 0.0)
    }

    /// Whether [`leave`](Self::leave) was called.
    pub fn has_left(&self) -> bool {
        self.left
    }

    /// Leaves the cluster for good: the next `poll_transmit` calls send every peer a
    /// Leave (peers that left already included, so they learn it too), and none waits
    /// for this node until its `peer_timeout`. Send them before closing the socket.
    ///
    /// From then on the node is silent: no heartbeat, Hello, retransmission or update
    /// leaves it, no round starts, and no timer is due. A peer that still sends to it
    /// (its Leave was lost) gets the Leave again in answer; a peer's Leave is still
    /// taken note of ([`Event::PeerDown`]).
    pub fn leave(&mut self, _now: Instant) {
        self.left = true;
        self.started = false;
        for p in self.peers.iter_mut() {
            p.control.leave = true;
        }
    }

    /// Starts the current round: snapshots `params` and begins sending them to every
    /// live out-neighbour. Non-finite parameters are refused
    /// ([`RoundError::NonFiniteParams`]); the snapshot is checked as it is copied, so a
    /// refused start leaves no update of the last round for a peer that comes back —
    /// unless an edge is still sending that update (asynchronous modes), which then
    /// keeps it: the values are checked first.
    pub fn start_round(&mut self, now: Instant, params: &[f32]) -> Result<(), RoundError> {
        self.can_start_round()?;
        let round = self.next_round();
        if round != self.round {
            self.advance_to(round);
        }
        if self.is_push_sum() {
            self.take_back_reserved();
        }
        match self.choco {
            // The plain snapshot checks the values as it copies them, below.
            None => self.layout.check_params_len(params)?,
            Some(_) => self.layout.check_params(params)?,
        }
        if let Some(choco) = &mut self.choco {
            if choco.begins_mid_epoch(self.round) {
                self.peers.iter_mut().for_each(|p| p.choco.excluded = true);
            }
        }
        match self.choco {
            Some(choco) if !choco.reuses_q(self.round) => {
                let sharers = self.sharers();
                let Buffers {
                    snapshot,
                    accumulator,
                    chunk_bits,
                    ..
                } = &mut self.buffers;
                let words = self.layout.words_per_peer;
                let started = choco.start(params, snapshot, accumulator, chunk_bits, words, &sharers);
                if started.is_err() {
                    // A refused start leaves the snapshot partly rewritten.
                    self.snapshot_round = None;
                }
                started?;
            }
            // A time-varying graph's `q` (the snapshot) goes to this round's partner as
            // it is.
            Some(_) => {}
            // An edge still busy with the last round's update (asynchronous modes)
            // resends its chunks from the snapshot: check before overwriting it, so a
            // refused start leaves that update whole.
            None if self.peers.iter().any(|p| !p.out.is_idle()) => {
                self.layout.check_params(params)?;
                self.buffers.snapshot.copy_from_slice(params);
            }
            None => {
                if !reduce::copy_finite(self.buffers.snapshot, params) {
                    // The snapshot no longer holds the last round's update: no peer
                    // that comes back gets it.
                    self.snapshot_round = None;
                    return Err(RoundError::NonFiniteParams);
                }
            }
        }
        let barrier = self.config.wait == Wait::Barrier;
        let stale = self.config.staleness.is_some();
        let push_sum = self.is_push_sum();
        let mut given = 0.0f32;
        for i in 0..self.peers.len() {
            let share = self.send_weight(i, self.round);
            let p = &mut self.peers[i];
            if p.left {
                continue;
            }
            let update = share.is_some() && p.live() && p.out.is_idle();
            if update {
                p.out.begin(self.round);
                p.sent_round = Some(self.round);
                p.weightless = false;
                given += share.unwrap_or(0.0);
            } else if push_sum && p.live() {
                // Busy with an earlier update (asynchronous modes): this round's share
                // waits for the edge, so the round's mix does not count it as kept.
                p.reserved = share;
                given += share.unwrap_or(0.0);
            }
            p.control.barrier |= barrier;
            // An out-neighbour held back by the staleness bound learns at once that this
            // node moved, from its update or, without one this round, a heartbeat.
            p.control.heartbeat |= stale && !update && p.spec.send_weight.is_some();
        }
        // Push-sum: the shares of out-neighbours that are down stay here, so no mass is
        // lost.
        self.kept_share = (1.0 - given).max(0.0);
        if self.is_push_sum() {
            Masses(&mut *self.buffers.chunk_mass).snapshot();
        }
        self.snapshot_round = Some(self.round);
        self.started = true;
        self.sending = Some(self.round);
        self.check_progress(now);
        Ok(())
    }

    /// Finishes the started round: mixes the in-neighbours' updates into `params`
    /// (`x ← x + Σ_j w_j·x_j − (Σ_j w_j)·snapshot`, per chunk over what arrived), clears
    /// the accumulator and acknowledges every update consumed.
    pub fn finish_round(&mut self, now: Instant, params: &mut [f32]) -> Result<Finished, RoundError> {
        if !self.started {
            return Err(RoundError::NotStarted);
        }
        if params.len() != self.layout.model_len {
            return Err(RoundError::ParamsLength {
                expected: self.layout.model_len,
                got: params.len(),
            });
        }
        if !self.is_ready() {
            return Err(RoundError::NotReady);
        }
        let push_sum = self.is_push_sum().then_some(self.kept_share);
        let Buffers {
            snapshot,
            accumulator,
            chunk_weights,
            chunk_mass,
            ..
        } = &mut self.buffers;
        // The compressed mode keeps its in-weights from round to round.
        self.stats.chunks_overflowed += match self.choco {
            Some(choco) => choco.finish(self.round, params, accumulator),
            None => mixing::mix(
                params,
                snapshot,
                accumulator,
                chunk_weights,
                self.config.chunk_len(),
                push_sum.map(|kept| (kept, Masses(chunk_mass))),
            ),
        };
        let mut updates = 0;
        for i in 0..self.peers.len() {
            let next_turn = self.next_turn(i, self.round);
            let (round, chunks) = (self.round, self.chunks);
            let p = &mut self.peers[i];
            if p.inn
                .incoming
                .is_some_and(|inc| inc.superseded && !inc.finished(chunks))
            {
                // Its folded chunks were mixed just now; the sender's newer update is
                // welcome from here on. (Its round says nothing about what the sender
                // sends next: it may be a new incarnation counting from 0.)
                p.inn.incoming = None;
            }
            if let Some(inc) = p.inn.incoming.filter(|inc| inc.finished(chunks)) {
                p.choco.consumed(inc.weight);
                p.inn.consume(inc.round, round, next_turn);
                updates += 1;
            }
        }
        let round = self.round;
        if !self.joined && Masses(self.buffers.chunk_mass).all_positive() {
            self.joined = true;
            self.push_event(Event::Joined { round });
        }
        self.advance_to(self.round.saturating_add(1).max(self.catch_up));
        self.started = false;
        self.ready_reported = false;
        self.stats.rounds += 1;
        self.check_progress(now);
        Ok(Finished { round, updates })
    }

    // ----- inputs -----

    /// Handles one received datagram (or one frame cut from a stream). Returns the
    /// sender and whether the frame proved it ([`Accepted::fresh`]: only then may a
    /// transport move the sender's address to the frame's source). Refused frames are
    /// counted and never touch the replica.
    ///
    /// Read-only bytes cannot be decrypted: a node configured to `encrypt` refuses every
    /// frame given here ([`DecodeError::Encrypted`](crate::DecodeError::Encrypted)) and needs
    /// [`handle_frame_mut`](Self::handle_frame_mut).
    pub fn handle_frame(&mut self, now: Instant, bytes: &[u8]) -> Result<Accepted, FrameError> {
        let decoded = wire::decode_sealed_with(bytes, |h| self.opening(h));
        let decoded = self.refuse_unopened(decoded)?;
        self.receive(now, decoded, bytes.len())
    }

    /// [`handle_frame`](Self::handle_frame) on bytes the node may overwrite: an
    /// encrypted frame is decrypted in place. What a transport that owns its receive
    /// buffer should call, whatever the configuration.
    pub fn handle_frame_mut(&mut self, now: Instant, bytes: &mut [u8]) -> Result<Accepted, FrameError> {
        let len = bytes.len();
        let decoded = wire::open_with(bytes, |h| self.opening(h));
        let decoded = self.refuse_unopened(decoded)?;
        self.receive(now, decoded, len)
    }

    /// Identities (`Config::identities`): sets the key of the link with `peer`, which
    /// seals every frame to it and opens every frame claiming to be from it (with the
    /// configured `encrypt` and `cipher`). Until it is set, the peer is neither heard
    /// nor sent to. Setting it again replaces it.
    pub fn set_link_key(&mut self, peer: NodeId, key: crate::auth::Key) -> Result<(), ConfigError> {
        if !self.config.identities {
            return Err(ConfigError::NoIdentities);
        }
        let secret = Secret::new(Some(key), self.config.encrypt, self.config.cipher)
            .ok_or(ConfigError::EncryptionUnavailable)?;
        let p = self
            .peers
            .iter_mut()
            .find(|p| p.spec.id == peer)
            .ok_or(ConfigError::UnknownPeer(peer))?;
        p.link = Link::Own(secret);
        Ok(())
    }

    /// What a frame is opened with: the node's secret, or with identities the link key
    /// of the peer its (clear, authenticated) header names as sender.
    fn opening(&self, header: &wire::Header) -> Result<Sealing<'_>, FrameError> {
        if !self.config.identities {
            return Ok(Sealing::from(&self.secret));
        }
        match self.peers.iter().find(|p| p.spec.id == header.from).map(|p| &p.link) {
            Some(Link::Own(secret)) => Ok(Sealing::from(secret)),
            _ => Err(FrameError::UnknownPeer(header.from)),
        }
    }

    /// Splits what opening a frame gave: bytes that are no frame (or fail their check)
    /// go on to [`receive`](Self::receive), which counts them; a frame with no key to
    /// open it is refused and counted here.
    fn refuse_unopened<T>(
        &mut self,
        opened: Result<T, FrameError>,
    ) -> Result<Result<T, wire::DecodeError>, FrameError> {
        match opened {
            Ok(frame) => Ok(Ok(frame)),
            Err(FrameError::Decode(e)) => Ok(Err(e)),
            Err(e) => {
                self.stats.frames_refused += 1;
                Err(e)
            }
        }
    }

    /// What frames to peer `i` are sealed with (`None`: its link key is not set).
    fn sealing(&self, i: usize) -> Option<Sealing<'_>> {
        match &self.peers[i].link {
            Link::Cluster => Some(Sealing::from(&self.secret)),
            Link::Own(secret) => Some(Sealing::from(secret)),
            Link::Missing => None,
        }
    }

    /// Handles timers: retransmissions, heartbeats, Hello retries, peers going down.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.left {
            return;
        }
        let cfg = self.config;
        for i in 0..self.peers.len() {
            let p = &mut self.peers[i];
            if p.left {
                continue;
            }
            if p.out.on_timeout(now) {
                self.stats.retransmit_timeouts += 1;
            }
            if p.up && !p.heard && p.timers.is_due(Timer::PeerDown, now) {
                // Elastic membership: never heard from, it is not there (yet). Nothing
                // was sent to it, so nothing is lost: no peer went down.
                p.up = false;
            }
            if p.up && p.timers.is_due(Timer::PeerDown, now) {
                p.up = false;
                p.choco.excluded = true;
                p.out.abandon();
                // Not delivered: if it comes back between rounds, it gets the update again.
                p.sent_round = None;
                self.stats.peers_down += 1;
                let id = p.spec.id;
                self.push_event(Event::PeerDown(id));
            }
            let p = &mut self.peers[i];
            if p.timers.is_due(Timer::Heartbeat, now) {
                p.control.heartbeat = true;
            }
            if !p.control.hello_heard && p.timers.is_due(Timer::Hello, now) {
                p.control.hello = true;
                p.timers.set(Timer::Hello, now + cfg.heartbeat_interval);
            }
        }
        self.check_progress(now);
    }

    // ----- outputs -----

    /// Writes the next frame to send into `buf` (which must hold `max_frame` bytes).
    /// Call until it returns `Ok(None)`.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Result<Option<Transmit>, BufferTooSmall> {
        self.poll_transmit_batch(now, buf, 1)
    }

    /// As [`poll_transmit`](Self::poll_transmit), but an update's frames for one peer
    /// come as a batch: up to `max_segments` frames back to back in `buf` (as many as it
    /// holds; it must hold at least `max_frame` bytes), each [`Transmit::segment_size`]
    /// bytes but the last, for a transport to send in one system call (GSO). Control
    /// frames still come one at a time, before any data. Call until it returns
    /// `Ok(None)`.
    pub fn poll_transmit_batch(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        max_segments: usize,
    ) -> Result<Option<Transmit>, BufferTooSmall> {
        if buf.len() < self.config.max_frame {
            return Err(BufferTooSmall {
                needed: self.config.max_frame,
            });
        }
        let n = self.peers.len();
        // Control frames first: they are small and unblock other nodes.
        for k in 0..n {
            let i = (self.cursor + k) % n;
            if matches!(self.peers[i].link, Link::Missing) {
                continue;
            }
            if let Some((kind, round)) = self.take_control(i) {
                return self.emit(now, i, kind, round, 0..0, buf).map(Some);
            }
        }
        // Then update data, one edge after the other (none once the node left).
        match self.left {
            true => Ok(None),
            false => self.next_update_batch(now, buf, max_segments.max(1)),
        }
    }

    /// The next deadline at which [`handle_timeout`](Self::handle_timeout) has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.left {
            return None;
        }
        self.peers
            .iter()
            .filter(|p| !p.left)
            .flat_map(|p| {
                [
                    p.out.deadline(),
                    p.timers.get(Timer::PeerDown).filter(|_| p.up),
                    p.timers.get(Timer::Heartbeat).filter(|_| !p.control.heartbeat),
                    p.timers
                        .get(Timer::Hello)
                        .filter(|_| !p.control.hello_heard && !p.control.hello),
                ]
            })
            .flatten()
            .min()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ----- internals -----

    fn chunk_range(&self, chunk: u32) -> core::ops::Range<usize> {
        let len = self.config.chunk_len();
        let start = (chunk as usize).saturating_mul(len).min(self.layout.model_len);
        start..(start + len).min(self.layout.model_len)
    }

    /// Push-sum: shares set aside last round for edges that never got free to send
    /// them (see `Peer::reserved`) come back as an update from this node itself, the
    /// last snapshot at its mass, mixed at the next finish like any other. Must run
    /// before the snapshot is overwritten.
    fn take_back_reserved(&mut self) {
        let share: f32 = self.peers.iter_mut().filter_map(|p| p.reserved.take()).sum();
        if share > 0.0 {
            let Buffers {
                snapshot,
                accumulator,
                chunk_weights,
                chunk_mass,
                ..
            } = &mut self.buffers;
            let chunk_len = self.config.chunk_len();
            let lost = mixing::take_back(accumulator, chunk_weights, snapshot, chunk_mass, share, chunk_len);
            self.stats.chunks_overflowed += lost;
        }
    }

    fn bitmap(&mut self, peer: usize) -> &mut [u32] {
        let w = self.layout.words_per_peer;
        &mut self.buffers.chunk_bits[peer * w..(peer + 1) * w]
    }

    fn push_event(&mut self, event: Event) {
        if self.events.push_back(event).is_err() {
            self.stats.events_dropped += 1;
        }
    }
}

#[cfg(test)]
mod tests;

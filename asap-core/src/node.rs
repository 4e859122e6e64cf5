//! The sans-IO facade: one [`Node`] per worker, tying wire, flow control and reduce
//! together. See the type's documentation for the call order.

use heapless::{Deque, Vec};

use crate::auth::Secret;
use crate::compress;
use crate::config::{Buffers, Config, Layout, PeerSpec, Wait};
use crate::error::{ConfigError, FrameError, RoundError, Violation};
use crate::flow::{self, bits, AckOutcome, Control, Emit, InEdge, OutEdge, Owed, Place, Timer, Timers};
use crate::mixing::choco::{Choco, Membership, Sharer};
use crate::mixing::{self, Mass};
use crate::output::{Event, Finished, PeerStatus, Stats, Transmit, EVENT_CAPACITY};
use crate::time::Instant;
use crate::topology::Topology;
use crate::wire::{self, BufferTooSmall, DecodeError, Encoding, F32Le, Header, Kind, NodeId, Sealing};

pub use crate::mixing::choco::PublicCopies;

#[derive(Clone, Copy, Debug)]
struct Peer {
    spec: PeerSpec,
    out: OutEdge,
    inn: InEdge,
    up: bool,
    left: bool,
    incompatible: bool,
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
}

impl Peer {
    fn live(&self) -> bool {
        self.up && !self.left && !self.incompatible
    }
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
/// let buffers = Buffers {
///     snapshot: &mut snapshot,
///     accumulator: &mut acc,
///     chunk_weights: &mut weights,
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
    /// Push-sum mass (1 on doubly stochastic graphs, where it is not used).
    mass: Mass,
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
                out: OutEdge::new(config.rto_bounds()),
                inn: InEdge::default(),
                up: true,
                left: false,
                incompatible: false,
                rounds_started: 0,
                incarnation: None,
                control: Control::new(),
                timers: Timers::default(),
                sent_round: None,
                replay: crate::auth::ReplayWindow::default(),
                choco: Membership::default(),
            };
            peer.timers.set(Timer::PeerDown, now + config.peer_timeout);
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
        buffers.chunk_bits.fill(0);
        buffers.accumulator.fill(0.0);
        Ok(Node {
            choco: Choco::new(&config, schedule.as_ref()),
            secret: config.secret()?,
            config,
            schedule,
            mass: Mass::ONE,
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

    /// Push-sum mass (1 unless the topology needs push-sum).
    pub fn mass(&self) -> f64 {
        self.mass.value
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
        if !self.started {
            return false;
        }
        let chunks = self.chunks;
        if self.exact_rounds() && self.catch_up > self.round {
            // In-neighbours are ahead: finish with what arrived and catch up.
            return true;
        }
        if self.stale_catch_up() > self.round.saturating_add(1) {
            // Far behind an out-neighbour that was not held back: likewise.
            return true;
        }
        // In exact-round modes an update belongs to one round; otherwise the next update
        // of each in-neighbour is the one to wait for.
        let exact = self.exact_rounds().then_some(self.round);
        let arrived = |p: &Peer| {
            p.inn.incoming.is_some_and(|inc| inc.finished(chunks) && exact.is_none_or(|r| inc.round == r))
                // An in-neighbour that already started a later round will never send
                // this one's update: it was delivered (then it is here) or abandoned
                // while we were down for it. Waiting for it could wait forever.
                || exact.is_some_and(|r| p.rounds_started > r.saturating_add(1))
                // An update its sender gave up on is mixed as far as it arrived; the
                // sender's next one is taken after this finish.
                || p.inn.incoming.is_some_and(|inc| inc.superseded)
                // Bounded staleness: an out-neighbour `s` rounds ahead of this round
                // cannot start another before this node does (it is behind: restarted,
                // or a straggler). Waiting for its next update would wait for ourselves.
                || self.holds_back(p)
        };
        let mut waiting = (0..self.peers.len())
            .filter(|&i| self.receives_from(i, self.round))
            .map(|i| &self.peers[i])
            .filter(|p| p.live());
        match self.config.wait {
            Wait::All => waiting.all(arrived),
            Wait::AtLeast(k) => {
                let (live, done) = waiting.fold((0u16, 0u16), |(l, d), p| (l + 1, d + u16::from(arrived(p))));
                done >= k.min(live)
            }
            Wait::None => true,
            Wait::Barrier => {
                waiting.all(arrived) && self.peers.iter().all(|p| !p.live() || p.rounds_started > self.round)
            }
        }
    }

    /// Under a staleness bound `s`, the round `s` rounds behind this node's furthest
    /// live out-neighbour (0 without a bound). Above this node's round by more than one,
    /// that out-neighbour went ahead without being held back by this node (which
    /// restarted, or was cut off and given up on): this node catches up to it rather than
    /// hold it back while it redoes those rounds, and finishes a started round at once.
    fn stale_catch_up(&self) -> u32 {
        let Some(s) = self.config.staleness else {
            return 0;
        };
        let ahead = self.peers.iter().filter(|p| p.live() && p.spec.send_weight.is_some());
        ahead.map(|p| p.rounds_started.saturating_sub(s)).max().unwrap_or(0)
    }

    /// Whether peer `p`, an out-neighbour, is as far ahead of this node's started
    /// round as the staleness bound lets it be: it started round `round + s` (or a later
    /// one, before it heard of this node's restart, say), so it starts no other before
    /// this node moves on.
    fn holds_back(&self, p: &Peer) -> bool {
        self.config.staleness.is_some_and(|s| {
            p.spec.send_weight.is_some() && u64::from(p.rounds_started) > u64::from(self.round) + u64::from(s)
        })
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
    /// live out-neighbour.
    pub fn start_round(&mut self, now: Instant, params: &[f32]) -> Result<(), RoundError> {
        self.can_start_round()?;
        let round = self.next_round();
        if round != self.round {
            self.advance_to(round);
        }
        self.layout.check_params(params)?;
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
                choco.start(params, snapshot, accumulator, chunk_bits, words, &sharers)?;
            }
            // A time-varying graph's `q` (the snapshot) goes to this round's partner as
            // it is.
            Some(_) => {}
            None => self.buffers.snapshot.copy_from_slice(params),
        }
        let barrier = self.config.wait == Wait::Barrier;
        let stale = self.config.staleness.is_some();
        for i in 0..self.peers.len() {
            let sends = self.send_weight(i, self.round).is_some();
            let p = &mut self.peers[i];
            if p.left {
                continue;
            }
            let update = sends && p.live() && p.out.is_idle();
            if update {
                p.out.begin(self.round);
                p.sent_round = Some(self.round);
            }
            p.control.barrier |= barrier;
            // An out-neighbour held back by the staleness bound learns at once that this
            // node moved, from its update or, without one this round, a heartbeat.
            p.control.heartbeat |= stale && !update && p.spec.send_weight.is_some();
        }
        self.mass.snapshot();
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
        let kept = self.push_sum_self_share().map(|share| self.mass.kept(share));
        let Buffers {
            snapshot,
            accumulator,
            chunk_weights,
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
                kept,
            ),
        };
        let mut received_mass = 0.0f64;
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
                if !inc.rejected {
                    received_mass += f64::from(inc.weight);
                }
                p.choco.consumed(inc.weight);
                p.inn.consume(inc.round, round, next_turn);
                updates += 1;
            }
        }
        if let Some(share) = self.push_sum_self_share() {
            self.mass.mix(share, received_mass);
        }
        let round = self.round;
        self.advance_to(self.round.saturating_add(1).max(self.catch_up));
        self.started = false;
        self.ready_reported = false;
        self.stats.rounds += 1;
        self.check_progress(now);
        Ok(Finished { round, updates })
    }

    // ----- inputs -----

    /// Handles one received datagram (or one frame cut from a stream). Returns the
    /// sender, so a transport can learn its address. Refused frames are counted and
    /// never touch the replica.
    ///
    /// Read-only bytes cannot be decrypted: a node configured to `encrypt` refuses every
    /// frame given here ([`DecodeError::Encrypted`]) and needs
    /// [`handle_frame_mut`](Self::handle_frame_mut).
    pub fn handle_frame(&mut self, now: Instant, bytes: &[u8]) -> Result<NodeId, FrameError> {
        let decoded = wire::decode_sealed(bytes, Sealing::from(&self.secret));
        self.receive(now, decoded, bytes.len())
    }

    /// [`handle_frame`](Self::handle_frame) on bytes the node may overwrite: an
    /// encrypted frame is decrypted in place. What a transport that owns its receive
    /// buffer should call, whatever the configuration.
    pub fn handle_frame_mut(&mut self, now: Instant, bytes: &mut [u8]) -> Result<NodeId, FrameError> {
        let len = bytes.len();
        let decoded = wire::open(bytes, Sealing::from(&self.secret));
        self.receive(now, decoded, len)
    }

    fn receive(
        &mut self,
        now: Instant,
        decoded: Result<(wire::Frame<'_>, usize), DecodeError>,
        len: usize,
    ) -> Result<NodeId, FrameError> {
        let (frame, _) = decoded.inspect_err(|e| self.stats.count_undecodable(e))?;
        let result = self.handle_decoded(now, frame.header, frame.payload);
        match result {
            Ok(()) => {
                self.stats.frames_received += 1;
                self.stats.bytes_received += len as u64;
            }
            Err(FrameError::Violation(..)) => {}
            Err(FrameError::Replay(_)) => self.stats.replays += 1,
            Err(_) => self.stats.frames_refused += 1,
        }
        self.check_progress(now);
        result.map(|()| frame.header.from)
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
        if buf.len() < self.config.max_frame {
            return Err(BufferTooSmall {
                needed: self.config.max_frame,
            });
        }
        let n = self.peers.len();
        // Control frames first: they are small and unblock other nodes.
        for k in 0..n {
            let i = (self.cursor + k) % n;
            if let Some((kind, round)) = self.take_control(i) {
                return self.emit(now, i, kind, round, 0..0, buf).map(Some);
            }
        }
        // Then update data, one frame per edge in turn (none once the node left).
        for k in (0..n).filter(|_| !self.left) {
            let i = (self.cursor + k) % n;
            let p = &mut self.peers[i];
            if !p.live() {
                continue;
            }
            let Some((what, again)) = p.out.next(self.chunks, now) else {
                continue;
            };
            let round = p.out.round;
            self.cursor = (i + 1) % n;
            return match what {
                Emit::Chunk(c) => {
                    if again {
                        self.stats.chunks_resent += 1;
                    } else {
                        self.stats.chunks_sent += 1;
                    }
                    let share = self.send_weight(i, round).unwrap_or(0.0);
                    // Push-sum: the share of the mass travels as the weight. Compressed
                    // on a time-varying graph: the edge's weight in the period's union.
                    let weight = if self.is_push_sum() {
                        self.mass.carried(share)
                    } else if let Some(w) = self.union_weight() {
                        w
                    } else {
                        share
                    };
                    let kind = Kind::Update {
                        chunk: c,
                        chunks: self.chunks,
                        weight,
                        encoding: Encoding::F32Le,
                    };
                    let kind = match kind {
                        Kind::Update {
                            chunk, chunks, weight, ..
                        } => Kind::Update {
                            chunk,
                            chunks,
                            weight,
                            encoding: self.config.compression.encoding(),
                        },
                        other => other,
                    };
                    let range = self.chunk_range(c);
                    self.emit(now, i, kind, round, range, buf).map(Some)
                }
                Emit::Notify => {
                    if again {
                        self.stats.notifies_resent += 1;
                    }
                    self.emit(now, i, Kind::Notify { chunks: self.chunks }, round, 0..0, buf)
                        .map(Some)
                }
            };
        }
        Ok(None)
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

    /// The weight this node gives peer `i` in `round`, if it sends to it then.
    fn send_weight(&self, i: usize, round: u32) -> Option<f32> {
        let p = &self.peers[i];
        match &self.schedule {
            Some(t) => {
                let w = t.edge_weight(u32::from(self.config.id.0), u32::from(p.spec.id.0), round);
                (w > 0.0).then_some(w as f32)
            }
            None => p.spec.send_weight,
        }
    }

    /// Whether peer `i` sends its update to this node in `round`.
    fn receives_from(&self, i: usize, round: u32) -> bool {
        let p = &self.peers[i];
        match &self.schedule {
            Some(t) => t.edge_weight(u32::from(p.spec.id.0), u32::from(self.config.id.0), round) > 0.0,
            None => p.spec.receive,
        }
    }

    /// Whether this node runs push-sum (its topology is directed and irregular).
    fn is_push_sum(&self) -> bool {
        self.schedule.as_ref().is_some_and(Topology::needs_push_sum)
    }

    /// Push-sum only: the share of its own mass a node keeps each round.
    fn push_sum_self_share(&self) -> Option<f64> {
        let t = self.schedule.as_ref().filter(|t| t.needs_push_sum())?;
        Some(t.weight(u32::from(self.config.id.0), self.round))
    }

    /// Whether updates belong to the round they are tagged with: when waiting for every
    /// in-neighbour (rounds must stay aligned, or after a partition nodes that skipped
    /// each other could wait on each other in a cycle) and on time-varying graphs while
    /// waiting for some (an update mixed in another round breaks exactness). `Wait::None`
    /// mixes whatever arrived, whatever its round: it finishes a round as it starts it,
    /// before this round's update can be there, so holding updates to their rounds would
    /// drop every one as late and never mix anything.
    fn exact_rounds(&self) -> bool {
        match self.config.wait {
            Wait::All | Wait::Barrier => true,
            Wait::AtLeast(_) => self.schedule.as_ref().is_some_and(Topology::is_time_varying),
            Wait::None => false,
        }
    }

    /// An in-neighbour of this round that already started a later one, without its
    /// update for this round here, passed us: this node fell behind (a partition, a
    /// restart) and catches up to it, so rounds line up again.
    ///
    /// Under a staleness bound `s`, in every mode, a node between rounds also moves up
    /// to `s` rounds behind its furthest out-neighbour. One further ahead was not held
    /// back by this node (it restarted, or was cut off and given up on), and is held
    /// back now: it should not wait for this node to redo those rounds.
    fn note_progress(&mut self) {
        let (round, chunks) = (self.round, self.chunks);
        if self.exact_rounds() {
            for i in 0..self.peers.len() {
                let p = &self.peers[i];
                let here = p
                    .inn
                    .incoming
                    .is_some_and(|inc| inc.round == round && inc.finished(chunks));
                if p.live() && !here && p.rounds_started > round.saturating_add(1) && self.receives_from(i, round) {
                    self.catch_up = self.catch_up.max(p.rounds_started - 1);
                }
            }
        }
        let target = self.stale_catch_up();
        if !self.started && target > self.round {
            self.advance_to(target);
        }
        // Between rounds, move at once: what this node owes for the rounds it skips
        // (deferred ACKs) may be what others wait for.
        if !self.started && self.catch_up > self.round {
            self.advance_to(self.catch_up);
        }
    }

    /// The round `start_round` would start: the current one, or the one to catch up to.
    fn next_round(&self) -> u32 {
        if self.exact_rounds() && self.catch_up > self.round {
            self.catch_up
        } else {
            self.round
        }
    }

    /// An update for a round this node has not reached: it is dropped (the sender repeats
    /// it when asked) and tells the node how far ahead its in-neighbours are. (A sender
    /// may run ahead on an edge's first use, or after a partition or a restart.)
    fn is_early(&mut self, round: u32) -> bool {
        let early = self.exact_rounds() && round > self.round;
        if early {
            // On a time-varying graph a sender may be up to a period ahead on an edge's
            // first use; only further ahead means this node fell behind.
            let period = self.schedule.as_ref().map_or(1, Topology::period);
            if round - self.round >= period {
                self.catch_up = self.catch_up.max(round);
            }
            self.stats.early += 1;
        }
        early
    }

    /// An update for a round this node has passed (its sender was behind): never mixed,
    /// but acknowledged so the sender can move on (and catch up).
    fn is_late(&self, round: u32) -> bool {
        self.exact_rounds() && round < self.round
    }

    /// Moves to `round` (the next one, or further when catching up): updates of rounds
    /// now passed are acknowledged and dropped; early NOTIFYs of this round are answered.
    fn advance_to(&mut self, round: u32) {
        if round > self.round.saturating_add(1) {
            self.stats.rounds_skipped += u64::from(round.wrapping_sub(self.round).wrapping_sub(1));
        }
        let skipped = round > self.round.saturating_add(1);
        self.round = round;
        if let Some(choco) = &mut self.choco {
            if choco.enter(round, self.buffers.accumulator, self.buffers.chunk_weights) {
                self.peers.iter_mut().for_each(|p| p.choco = Membership::default());
            }
            if skipped && choco.union_weight().is_some() {
                // Compressed on a time-varying graph: the skipped rounds' deliveries are
                // lost to this period's sums; nobody counts until the next epoch.
                self.peers.iter_mut().for_each(|p| p.choco.excluded = true);
            }
        }
        let exact = self.exact_rounds();
        for p in self.peers.iter_mut() {
            if p.inn.advance(round, exact) {
                self.stats.late += 1;
            }
        }
    }

    /// The first round after `round` in which peer `i` sends to this node, within one
    /// period (`None` for explicit neighbour lists: every round).
    fn next_turn(&self, i: usize, round: u32) -> Option<u32> {
        let t = self.schedule.as_ref()?;
        (1..=t.period())
            .map(|k| round.wrapping_add(k))
            .find(|&r| self.receives_from(i, r))
    }

    fn chunk_range(&self, chunk: u32) -> core::ops::Range<usize> {
        let len = self.config.chunk_len();
        let start = (chunk as usize).saturating_mul(len).min(self.layout.model_len);
        start..(start + len).min(self.layout.model_len)
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

    /// Emits the edge-triggered progress events.
    fn check_progress(&mut self, _now: Instant) {
        self.note_progress();
        if self.started && !self.ready_reported && self.is_ready() {
            self.ready_reported = true;
            self.push_event(Event::RoundReady { round: self.round });
        }
        if let Some(round) = self.sending {
            if self.peers.iter().all(|p| !p.live() || p.out.releases_snapshot()) {
                self.sending = None;
                self.push_event(Event::SendComplete { round });
            }
        }
    }

    /// The most urgent control frame owed to peer `i`, with its round.
    fn take_control(&mut self, i: usize) -> Option<(Kind, u32)> {
        let started_rounds = self.round.saturating_add(u32::from(self.started));
        let (model_len, chunk_len) = (self.layout.model_len as u32, self.config.chunk_len() as u32);
        let encoding = self.config.compression.encoding();
        let chunks = self.chunks;
        let p = &mut self.peers[i];
        if p.control.take_leave() {
            return Some((Kind::Leave, self.round));
        }
        if p.left || self.left {
            return None;
        }
        if let Some(reply) = p.control.take_hello() {
            let hello = Kind::Hello {
                model_len,
                chunk_len,
                encoding,
                reply,
            };
            return Some((hello, self.round));
        }
        if let Some(round) = p.inn.ack_due.take() {
            return Some((Kind::Ack, round));
        }
        if let Some(round) = p.inn.missing_due.take() {
            let consumed = p.inn.consumed.is_some_and(|c| c >= round);
            let (base, mask) = match p.inn.incoming {
                _ if consumed => (0, 0),
                Some(inc) if inc.round == round && inc.finished(chunks) => (0, 0),
                Some(inc) if inc.round == round => bits::missing(self.bitmap(i), chunks),
                // Nothing of that round yet (an early NOTIFY answered now): all missing.
                _ => bits::missing(&[], chunks),
            };
            return Some((Kind::Missing { base, mask }, round));
        }
        let kind = match p.control.take_progress()? {
            Owed::Barrier => Kind::Barrier,
            Owed::Heartbeat => Kind::Heartbeat,
        };
        Some((kind, started_rounds))
    }

    fn header_for(config: &Config, to: NodeId, round: u32, kind: Kind) -> Header {
        Header {
            version: wire::VERSION,
            integrity: config.integrity(),
            cluster: config.cluster,
            from: config.id,
            incarnation: config.incarnation,
            to,
            round,
            kind,
            payload_len: 0,
        }
    }

    /// Encodes a frame to peer `i` carrying `values` of the snapshot (empty for control).
    fn emit(
        &mut self,
        now: Instant,
        i: usize,
        kind: Kind,
        round: u32,
        values: core::ops::Range<usize>,
        buf: &mut [u8],
    ) -> Result<Transmit, BufferTooSmall> {
        let to = self.peers[i].spec.id;
        let mut header = Self::header_for(&self.config, to, round, kind);
        header.integrity = header.integrity.with_seq(self.send_seq);
        let values = self.buffers.snapshot.get(values).unwrap_or(&[]);
        let compression = self.config.compression;
        let len = match kind {
            Kind::Update { .. } if self.config.is_compressed() => {
                let payload = compression.payload_len(values.len());
                wire::seal_with(header, payload, buf, Sealing::from(&self.secret), |out| {
                    // Cannot fail: the snapshot is finite (checked when the round
                    // started) and `out` has the payload's length.
                    let _ = compress::encode(compression, values, out);
                })?
            }
            _ => wire::seal(header, values, buf, Sealing::from(&self.secret))?,
        };
        self.send_seq = self.send_seq.wrapping_add(1);
        let p = &mut self.peers[i];
        p.control.sent(&mut p.timers, now, self.config.heartbeat_interval);
        self.stats.frames_sent += 1;
        self.stats.bytes_sent += len as u64;
        Ok(Transmit { to, len })
    }

    fn handle_decoded(&mut self, now: Instant, h: Header, payload: &[u8]) -> Result<(), FrameError> {
        if core::mem::discriminant(&h.integrity) != core::mem::discriminant(&self.config.integrity()) {
            return Err(FrameError::Integrity);
        }
        if h.cluster != self.config.cluster {
            return Err(FrameError::WrongCluster(h.cluster));
        }
        if h.to != self.config.id {
            return Err(FrameError::Misaddressed(h.to));
        }
        let i = self
            .peers
            .iter()
            .position(|p| p.spec.id == h.from)
            .ok_or(FrameError::UnknownPeer(h.from))?;
        match self.peers[i].incarnation {
            // A frame of the peer's previous life, still in flight: nothing to do with
            // the peer as it is now.
            Some(known) if h.incarnation < known => {
                self.stats.stale += 1;
                return Ok(());
            }
            Some(known) if h.incarnation > known => self.peer_restarted(i, h.incarnation),
            // It left for good in this life: a frame it sent before its Leave and
            // delivered after it must not bring it back (only a new incarnation does).
            Some(_) if self.peers[i].left => {
                self.stats.stale += 1;
                return Ok(());
            }
            Some(_) => {}
            None => self.peers[i].incarnation = Some(h.incarnation),
        }
        // Authenticated (the tag verified): a number seen before is a replay.
        if let Some(seq) = h.integrity.seq() {
            if self.peers[i].replay.accept(seq).is_err() {
                return Err(FrameError::Replay(h.from));
            }
        }
        if self.left {
            // Silent after leaving: a peer's Leave is noted, anything else means the
            // peer did not hear ours, so it gets it again.
            if h.kind == Kind::Leave {
                self.peer_left(i);
            } else {
                self.peers[i].control.leave = true;
            }
            return Ok(());
        }
        if let Kind::Hello {
            model_len,
            chunk_len,
            encoding,
            reply,
        } = h.kind
        {
            self.handle_hello(i, (model_len, chunk_len, encoding), reply)?;
        } else if self.peers[i].incompatible {
            return Err(FrameError::Incompatible(h.from));
        }
        let p = &mut self.peers[i];
        p.timers.set(Timer::PeerDown, now + self.config.peer_timeout);
        if !p.up || p.left {
            p.up = true;
            // (A restart, above, is what brings a peer that left back.)
            p.left = false;
            self.push_event(Event::PeerUp(h.from));
            self.resume_sending(i);
        }
        // What the frame says of the rounds the peer started: an update or NOTIFY is of
        // a round it started, a heartbeat or barrier counts the rounds it started.
        match h.kind {
            Kind::Update { .. } | Kind::Notify { .. } => self.peer_started(i, h.round.saturating_add(1)),
            Kind::Heartbeat | Kind::Barrier => self.peer_started(i, h.round),
            _ => {}
        }
        let p = &mut self.peers[i];
        match h.kind {
            Kind::Hello { .. } | Kind::Heartbeat | Kind::Barrier => Ok(()),
            Kind::Update {
                chunk,
                chunks,
                weight,
                encoding,
            } => self.handle_update(i, h.round, chunk, chunks, weight, encoding, payload),
            Kind::Notify { chunks } => self.handle_notify(i, h.round, chunks),
            Kind::Ack => {
                match p.out.on_ack(h.round) {
                    AckOutcome::Stale => self.stats.stale += 1,
                    // An edge skipped this round because it was busy (asynchronous
                    // modes) gets the round's update now.
                    AckOutcome::Acked => self.resume_sending(i),
                    AckOutcome::Progress => {}
                }
                Ok(())
            }
            Kind::Missing { base, mask } => {
                if p.out.on_missing(h.round, base, mask, self.chunks, now) == AckOutcome::Stale {
                    self.stats.stale += 1;
                }
                Ok(())
            }
            Kind::Leave => {
                self.peer_left(i);
                Ok(())
            }
        }
    }

    /// Peer `i` sent a Leave: it is neither waited for nor sent to until it speaks again.
    fn peer_left(&mut self, i: usize) {
        let p = &mut self.peers[i];
        if p.left {
            return;
        }
        let was_up = p.up;
        p.left = true;
        p.up = false;
        p.choco.excluded = true;
        p.out.abandon();
        // Not delivered: if it comes back between rounds, it gets the update again.
        p.sent_round = None;
        if was_up {
            self.stats.peers_down += 1;
            let id = p.spec.id;
            self.push_event(Event::PeerDown(id));
        }
    }

    /// Peer `i` announced it started `rounds` rounds. Once it started a round past the
    /// one of our update in flight to it, it finished that round: it consumed our update
    /// (or passed it over) and acknowledged it, so an ACK still missing was lost (or is
    /// deferred to its next turn). The edge asks again at once rather than when its
    /// timer, backed off while the peer was busy with the round, fires.
    fn peer_started(&mut self, i: usize, rounds: u32) {
        let p = &mut self.peers[i];
        if rounds <= p.rounds_started {
            return;
        }
        p.rounds_started = rounds;
        if p.out.round.saturating_add(1) < rounds && p.out.on_receiver_progress() {
            self.stats.notifies_resent += 1;
        }
    }

    /// A peer's Hello: its model length, chunk length and encoding must be ours.
    fn handle_hello(&mut self, i: usize, theirs: (u32, u32, Encoding), reply: bool) -> Result<(), FrameError> {
        let ours = (
            self.layout.model_len as u32,
            self.config.chunk_len() as u32,
            self.config.compression.encoding(),
        );
        let p = &mut self.peers[i];
        let id = p.spec.id;
        if theirs != ours {
            let first = !p.incompatible;
            p.incompatible = true;
            if first {
                self.push_event(Event::PeerIncompatible(id));
            }
            return Err(FrameError::Incompatible(id));
        }
        p.incompatible = false;
        p.control.hello_heard = true;
        p.control.hello_reply |= !reply;
        Ok(())
    }

    /// The peer restarted (a frame of a newer incarnation): it lost its state, so what
    /// this node consumed from it, owed it or had in flight to it is forgotten, and its
    /// rounds (which start again) are accepted. Chunks of an update of its old life
    /// already folded are mixed first (see `supersede`).
    fn peer_restarted(&mut self, i: usize, incarnation: u32) {
        let chunks = self.chunks;
        let p = &mut self.peers[i];
        let id = p.spec.id;
        p.incarnation = Some(incarnation);
        // A new life counts its frames from 0 again.
        p.replay.reset();
        // ...and starts its public copy from zero: ours of it is lost for this epoch.
        p.choco.excluded = true;
        let partial = p.inn.incoming.filter(|inc| inc.received > 0 && !inc.finished(chunks));
        p.inn = InEdge::default();
        if let Some(inc) = partial {
            p.inn.incoming = Some(flow::Incoming {
                superseded: true,
                ..inc
            });
        }
        p.rounds_started = 0;
        p.sent_round = None;
        p.out.abandon();
        self.push_event(Event::PeerRestarted(id));
        self.resume_sending(i);
    }

    #[allow(clippy::too_many_arguments)]
    fn handle_update(
        &mut self,
        i: usize,
        round: u32,
        chunk: u32,
        chunks: u32,
        weight: f32,
        encoding: Encoding,
        payload: &[u8],
    ) -> Result<(), FrameError> {
        let id = self.peers[i].spec.id;
        let violation = |v| Err(FrameError::Violation(id, v));
        if !self.receives_from(i, round) {
            return violation(Violation::NotInNeighbour);
        }
        if self.is_early(round) {
            return Ok(());
        }
        if self.is_late(round) && self.peers[i].inn.place(round) == Place::Newer {
            self.stats.late += 1;
            return Ok(());
        }
        if encoding != self.config.compression.encoding() {
            return violation(Violation::Encoding);
        }
        if chunks != self.chunks {
            return violation(Violation::ChunkCount);
        }
        if chunk >= chunks {
            return violation(Violation::ChunkIndex);
        }
        let range = self.chunk_range(chunk);
        if self.config.is_compressed() {
            if compress::check(encoding, payload, range.len()).is_err() {
                return violation(Violation::ChunkLength);
            }
        } else if F32Le::new(payload).is_none_or(|v| v.len() != range.len()) {
            return violation(Violation::ChunkLength);
        }
        let max_weight = if self.is_push_sum() {
            mixing::MAX_PUSH_SUM_WEIGHT
        } else {
            1.0
        };
        if !(weight.is_finite() && weight > 0.0 && weight <= max_weight) {
            return violation(Violation::Weight);
        }
        let inn = &mut self.peers[i].inn;
        match inn.place(round) {
            Place::Consumed => {
                self.stats.duplicates += 1;
                return Ok(());
            }
            Place::Stale => {
                self.stats.stale += 1;
                return Ok(());
            }
            Place::Newer if inn.incoming.is_some_and(|inc| inc.received > 0) => {
                // The sender abandoned an update we partly folded: wait for the mix.
                Self::supersede(inn, &mut self.stats);
                return Ok(());
            }
            Place::Newer => {
                if inn.incoming.is_some() {
                    self.stats.updates_abandoned += 1;
                }
                inn.begin(round, weight);
                self.bitmap(i).fill(0);
            }
            Place::Current => {}
        }
        let Some(inc) = self.peers[i].inn.incoming else {
            return Ok(());
        };
        if inc.rejected {
            self.stats.duplicates += 1;
            return Ok(());
        }
        if bits::get(self.bitmap(i), chunk) {
            self.stats.duplicates += 1;
            return Ok(());
        }
        let c = chunk as usize;
        // Compressed mode: a neighbour's weight enters a chunk's in-weight with its first
        // update of the epoch, and stays.
        let share = self.peers[i].choco;
        let compressed = self.choco.is_some();
        let adds_weight = !compressed || (!share.member && !share.excluded);
        let changed = |w: f32| weight.to_bits() != w.to_bits();
        let reason =
            if (inc.received > 0 && changed(inc.weight)) || (compressed && share.member && changed(share.weight)) {
                Some(Violation::WeightChanged)
            } else if adds_weight
                && !self.is_push_sum()
                && self.buffers.chunk_weights[c] + weight > 1.0 + mixing::WEIGHT_SLACK
            {
                Some(Violation::WeightOverflow)
            } else if let Some(choco) = &self.choco {
                let joins = adds_weight && !share.excluded;
                let acc = &mut *self.buffers.accumulator;
                choco
                    .fold(acc, range, encoding, payload, weight, share.excluded, joins)
                    .err()
            } else {
                let Some(values) = F32Le::new(payload) else {
                    return violation(Violation::ChunkLength);
                };
                let x = &self.buffers.snapshot[range.clone()];
                let first = self.buffers.chunk_weights[c] == 0.0;
                let acc = &mut self.buffers.accumulator[range];
                match mixing::fold(acc, x, weight, values.raw(), first, self.config.clip) {
                    Ok(clipped) => {
                        self.stats.chunks_clipped += u64::from(clipped);
                        None
                    }
                    Err(v) => Some(v),
                }
            };
        if let Some(reason) = reason {
            return self.reject(i, round, reason);
        }
        if adds_weight {
            self.buffers.chunk_weights[c] += weight;
        }
        bits::set(self.bitmap(i), chunk);
        self.stats.chunks_folded += 1;
        if let Some(inc) = self.peers[i].inn.incoming.as_mut() {
            if inc.received == 0 {
                inc.weight = weight;
            }
            inc.received += 1;
        }
        Ok(())
    }

    /// Compressed mode: the neighbours whose public copies are in `t` as a round starts
    /// (see [`Sharer`]).
    fn sharers(&self) -> Vec<Sharer, P> {
        let round = self.round;
        let sharer = |(i, p): (usize, &Peer)| match p.inn.incoming {
            _ if p.choco.member => Some(Sharer {
                peer: i,
                weight: p.choco.weight,
                all_chunks: true,
            }),
            Some(inc) if !p.choco.excluded && inc.round == round && inc.received > 0 => Some(Sharer {
                peer: i,
                weight: inc.weight,
                all_chunks: false,
            }),
            _ => None,
        };
        self.peers.iter().enumerate().filter_map(sharer).collect()
    }

    /// Compressed mode on a time-varying graph: the weight of a union edge.
    fn union_weight(&self) -> Option<f32> {
        self.choco.as_ref().and_then(Choco::union_weight)
    }

    /// A peer came back (or restarted) during a round that sends to it: send it this
    /// round's update after all, or it would wait for one that never comes.
    /// Between rounds the snapshot still holds the last round's replica, so a peer
    /// that missed that round's update (it was down when the round started) gets it
    /// too: it may be waiting for exactly that update.
    fn resume_sending(&mut self, i: usize) {
        let round = match self.snapshot_round {
            Some(r) if self.started => r,
            // Between rounds, only the round just finished (not one skipped over).
            Some(r) if r.wrapping_add(1) == self.round => r,
            _ => return,
        };
        if self.send_weight(i, round).is_none() {
            return;
        }
        let p = &mut self.peers[i];
        if p.live() && p.out.is_idle() && p.sent_round != Some(round) {
            p.out.begin(round);
            p.sent_round = Some(round);
            self.sending = Some(round);
        }
    }

    /// Marks a partly folded update as abandoned by its sender (counted once).
    fn supersede(inn: &mut InEdge, stats: &mut Stats) {
        if let Some(inc) = inn.incoming.as_mut() {
            if !inc.superseded {
                inc.superseded = true;
                stats.updates_abandoned += 1;
            }
        }
    }

    fn reject(&mut self, i: usize, round: u32, reason: Violation) -> Result<(), FrameError> {
        let id = self.peers[i].spec.id;
        // Compressed mode: the rest of this update is not folded, so its sender's public
        // copy and ours of it part until the next epoch.
        self.peers[i].choco.excluded = true;
        if let Some(inc) = self.peers[i].inn.incoming.as_mut() {
            inc.rejected = true;
        }
        self.stats.updates_rejected += 1;
        self.push_event(Event::UpdateRejected {
            peer: id,
            round,
            reason,
        });
        Err(FrameError::Violation(id, reason))
    }

    fn handle_notify(&mut self, i: usize, round: u32, chunks: u32) -> Result<(), FrameError> {
        let id = self.peers[i].spec.id;
        if !self.receives_from(i, round) {
            return Err(FrameError::Violation(id, Violation::NotInNeighbour));
        }
        if self.is_early(round) {
            self.peers[i].inn.early_notify = Some(round);
            return Ok(());
        }
        if chunks != self.chunks {
            return Err(FrameError::Violation(id, Violation::ChunkCount));
        }
        let late = self.is_late(round);
        let p = &mut self.peers[i];
        let place = p.inn.place(round);
        if late && place == Place::Newer {
            // Passed without it: acknowledge and drop, so the sender moves on.
            if p.inn.incoming.is_some_and(|inc| inc.round <= round) {
                p.inn.incoming = None;
            }
            p.inn.consumed = Some(p.inn.consumed.map_or(round, |c| c.max(round)));
            p.inn.ack_due = Some(round);
            self.stats.late += 1;
            return Ok(());
        }
        match place {
            Place::Consumed => {
                // Our ACK was lost: repeat it. While the ACK is deferred, say that
                // everything arrived. (A round below the last consumed one was passed
                // over: acknowledging it lets the sender move on, whatever it was.)
                if p.inn.deferred_ack.is_some_and(|(r, _)| r == round) {
                    p.inn.missing_due = Some(round);
                } else {
                    p.inn.ack_due = Some(round);
                }
                self.stats.duplicates += 1;
            }
            Place::Stale => self.stats.stale += 1,
            Place::Newer if p.inn.incoming.is_some_and(|inc| inc.received > 0) => {
                // The partly folded update waits for the next mix; the newer one is
                // dropped but acknowledged, so its sender is not held up (it may be
                // what this node waits for to be able to mix at all).
                Self::supersede(&mut p.inn, &mut self.stats);
                p.inn.ack_due = Some(round);
            }
            Place::Newer => {
                if p.inn.incoming.is_some() {
                    self.stats.updates_abandoned += 1;
                }
                p.inn.begin(round, 0.0).notified = true;
                p.inn.missing_due = Some(round);
                self.bitmap(i).fill(0);
            }
            Place::Current => {
                if let Some(inc) = p.inn.incoming.as_mut() {
                    inc.notified = true;
                }
                p.inn.missing_due = Some(round);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! Transitions that need the node's inside. Fixture: this node ("b", id 1) and its
    //! only neighbour "a" (id 0), weight 1/2; frames of at most 512 bytes, so a 300-value
    //! model travels as 3 chunks (116 + 116 + 68 values). Frames from "a" are built by
    //! hand, in any incarnation.

    use super::*;
    use crate::time::Duration;
    use crate::wire::Integrity;

    const MODEL: usize = 300;
    const CHUNKS: u32 = 3;
    const A: NodeId = NodeId(0);
    const B: NodeId = NodeId(1);
    const T0: Instant = Instant::from_millis(1_000);

    struct Mem {
        snapshot: [f32; MODEL],
        acc: [f32; MODEL],
        weights: [f32; CHUNKS as usize],
        bits: [u32; 1],
    }

    impl Mem {
        fn new() -> Self {
            Mem {
                snapshot: [0.0; MODEL],
                acc: [0.0; MODEL],
                weights: [0.0; CHUNKS as usize],
                bits: [0; 1],
            }
        }

        fn node(&mut self, wait: Wait, staleness: Option<u32>) -> Node<'_, 2> {
            let config = Config {
                max_frame: 512,
                wait,
                staleness,
                ..Config::new(9, B, MODEL)
            };
            let buffers = Buffers {
                snapshot: &mut self.snapshot,
                accumulator: &mut self.acc,
                chunk_weights: &mut self.weights,
                chunk_bits: &mut self.bits,
            };
            Node::new(config, &[PeerSpec::both(A, 0.5)], buffers, T0).unwrap()
        }
    }

    /// Hands `node` a frame from "a" in its life `incarnation`.
    fn from_a<const P: usize>(node: &mut Node<'_, P>, now: Instant, incarnation: u32, round: u32, kind: Kind) {
        from_peer(node, now, A, incarnation, round, kind);
    }

    /// Hands `node` a frame from `from` in its life `incarnation`.
    fn from_peer<const P: usize>(
        node: &mut Node<'_, P>,
        now: Instant,
        from: NodeId,
        incarnation: u32,
        round: u32,
        kind: Kind,
    ) {
        let values = [1.0f32; 116];
        let values = match kind {
            Kind::Update { chunk: 2, .. } => &values[..68],
            Kind::Update { .. } => &values[..],
            _ => &values[..0],
        };
        let header = Header {
            version: wire::VERSION,
            integrity: Integrity::Crc32,
            cluster: 9,
            from,
            incarnation,
            to: B,
            round,
            kind,
            payload_len: 0,
        };
        let mut buf = [0u8; 512];
        let len = wire::encode(header, values, &mut buf).unwrap();
        node.handle_frame(now, &buf[..len]).unwrap();
    }

    fn update(chunk: u32) -> Kind {
        Kind::Update {
            chunk,
            chunks: CHUNKS,
            weight: 0.5,
            encoding: Encoding::F32Le,
        }
    }

    const HELLO: Kind = Kind::Hello {
        model_len: MODEL as u32,
        chunk_len: 116,
        encoding: Encoding::F32Le,
        reply: true,
    };
    const NOTIFY: Kind = Kind::Notify { chunks: CHUNKS };

    /// The frames `node` sends now: (kind, round).
    fn sent<const P: usize>(node: &mut Node<'_, P>, now: Instant) -> Vec<(Kind, u32), 16> {
        let mut out = Vec::new();
        let mut buf = [0u8; 512];
        while let Some(t) = node.poll_transmit(now, &mut buf).unwrap() {
            let (frame, _) = wire::decode(&buf[..t.len]).unwrap();
            out.push((frame.header.kind, frame.header.round)).unwrap();
        }
        out
    }

    /// Regression (simulator seeds 4300 and 7501, `Wait::Barrier` with a crash): "a"
    /// crashed after "b" had folded part of its round-1 update, and came back counting
    /// from round 0. Its round-0 update is for a round "b" passed: "b" must acknowledge
    /// it, or "a" never starts round 1 and the barrier of "b"'s round 1, which waits for
    /// "a" to reach it, never opens. Before the fix the partial update of the old life
    /// made round 0 look stale: ignored, no ACK, a deadlock.
    #[test]
    fn restarted_peer_is_acknowledged_past_a_superseded_partial_update() {
        let mut mem = Mem::new();
        let mut b = mem.node(Wait::Barrier, None);
        let mut params = [0.0f32; MODEL];
        // Round 0 with "a" in its first life.
        from_a(&mut b, T0, 0, 0, HELLO);
        b.start_round(T0, &params).unwrap();
        for c in 0..CHUNKS {
            from_a(&mut b, T0, 0, 0, update(c));
        }
        from_a(&mut b, T0, 0, 0, NOTIFY);
        b.finish_round(T0, &mut params).unwrap();
        from_a(&mut b, T0, 0, 0, Kind::Ack);
        sent(&mut b, T0);
        // Round 1: one chunk of "a"'s update arrives, then "a" crashes.
        b.start_round(T0, &params).unwrap();
        from_a(&mut b, T0, 0, 1, update(0));
        sent(&mut b, T0);
        assert!(!b.is_ready());

        // "a" is back, in its second life, and sends its round-0 update.
        let folded = b.stats().chunks_folded;
        let t1 = T0 + Duration::from_millis(500);
        from_a(&mut b, t1, 1, 0, HELLO);
        for c in 0..CHUNKS {
            from_a(&mut b, t1, 1, 0, update(c));
        }
        from_a(&mut b, t1, 1, 0, NOTIFY);
        let out = sent(&mut b, t1);
        assert!(
            out.contains(&(Kind::Ack, 0)),
            "round 0 of the new life acknowledged: {out:?}"
        );
        assert_eq!(b.stats().chunks_folded, folded, "passed over, not mixed");
        assert!(!b.is_ready(), "the barrier waits for \"a\" to reach round 1");

        // Acknowledged, "a" starts round 1: the barrier opens. What arrived of the old
        // life's update is mixed; the new one is acknowledged and dropped.
        for c in 0..CHUNKS {
            from_a(&mut b, t1, 1, 1, update(c));
        }
        from_a(&mut b, t1, 1, 1, NOTIFY);
        assert!(b.is_ready());
        let done = b.finish_round(t1, &mut params).unwrap();
        assert_eq!(done.round, 1);
        assert!(sent(&mut b, t1).contains(&(Kind::Ack, 1)));
        assert_eq!(b.round(), 2);
    }

    /// Bounded staleness (`s` = 2, waiting for at least one update): "b" restarted and
    /// is far behind "a", which the bound holds back. "b" moves up to
    /// `s` rounds behind "a" instead of redoing the rounds one by one, does not wait for
    /// an update "a" cannot send before "b" moves, and tells "a" each round it starts.
    #[test]
    fn staleness_a_node_far_behind_catches_up_and_does_not_wait_for_who_waits_for_it() {
        let mut mem = Mem::new();
        let mut b = mem.node(Wait::AtLeast(1), Some(2));
        let mut params = [0.0f32; MODEL];
        from_a(&mut b, T0, 0, 0, HELLO);
        // "a" started round 20 (21 rounds): "b", between rounds, moves to round 19.
        from_a(&mut b, T0, 0, 21, Kind::Heartbeat);
        assert_eq!(b.round(), 19);
        assert_eq!(b.stats().rounds_skipped, 18);
        b.start_round(T0, &params).unwrap();
        assert!(sent(&mut b, T0).contains(&(NOTIFY, 19)));
        // "a" may start round 21 now (19 + 2), and "b" waits for its update...
        assert!(!b.is_ready());
        // ...until "a" started round 21: it can start no other before "b" moves, so
        // "b" does not wait for it.
        from_a(&mut b, T0, 0, 22, Kind::Heartbeat);
        assert!(b.is_ready());
        b.finish_round(T0, &mut params).unwrap();
        sent(&mut b, T0);
        // Its update to "a" is delivered, not consumed yet: "b" starts round 20
        // without sending "a" a new one, and says so with a heartbeat.
        from_a(&mut b, T0, 0, 19, Kind::Missing { base: 0, mask: 0 });
        b.start_round(T0, &params).unwrap();
        assert_eq!(sent(&mut b, T0).as_slice(), &[(Kind::Heartbeat, 21)]);
    }

    /// `Wait::None` on a time-varying graph (one-peer exponential, 4 nodes: "b" hears
    /// "a" in even rounds): "b" finishes each round as it starts it, so "a"'s update of
    /// round 0 comes after "b" passed round 0. It is mixed at the next finish, not
    /// dropped as late (which dropped every update: the mode never mixed anything).
    #[test]
    fn wait_none_on_a_time_varying_graph_mixes_what_arrives_late() {
        use crate::topology::{Family, TopologySpec};
        let mut scratch = [0.0f64; 12];
        let topology = Topology::new(TopologySpec::new(Family::OnePeerExponential, 4), &mut scratch).unwrap();
        let (mut snapshot, mut acc) = ([0.0f32; MODEL], [0.0f32; MODEL]);
        let (mut weights, mut bits) = ([0.0f32; CHUNKS as usize], [0u32; 3]);
        let buffers = Buffers {
            snapshot: &mut snapshot,
            accumulator: &mut acc,
            chunk_weights: &mut weights,
            chunk_bits: &mut bits,
        };
        let config = Config {
            max_frame: 512,
            wait: Wait::None,
            ..Config::new(9, B, MODEL)
        };
        let mut b = Node::<4>::with_topology(config, &topology, buffers, T0).unwrap();
        let mut params = [0.0f32; MODEL];
        b.start_round(T0, &params).unwrap();
        assert!(b.is_ready(), "waits for nothing");
        b.finish_round(T0, &mut params).unwrap();
        sent(&mut b, T0);
        // Node 2, which "b" sends to in round 0, has the whole update.
        from_peer(&mut b, T0, NodeId(2), 0, 0, Kind::Missing { base: 0, mask: 0 });
        // "a"'s round-0 update (every value 1.0, weight 1/2) arrives in round 1.
        for c in 0..CHUNKS {
            from_a(&mut b, T0, 0, 0, update(c));
        }
        from_a(&mut b, T0, 0, 0, NOTIFY);
        assert_eq!(b.stats().chunks_folded, u64::from(CHUNKS));
        b.start_round(T0, &params).unwrap();
        let done = b.finish_round(T0, &mut params).unwrap();
        assert_eq!(done.updates, 1);
        assert!(params.iter().all(|&x| x == 0.5), "halfway to \"a\"");
        assert!(sent(&mut b, T0).contains(&(Kind::Ack, 0)));
    }

    /// A receiver that is busy with its round answers NOTIFYs with "nothing missing",
    /// and the sender's timer backs off (up to `retransmit_max`). Once the receiver
    /// started a later round it has consumed the update and ACKed it; if that ACK was
    /// lost, the sender asks again as soon as it hears of the later round, not when its
    /// backed-off timer fires.
    #[test]
    fn lost_ack_is_asked_for_again_once_the_receiver_moved_on() {
        let mut mem = Mem::new();
        let mut b = mem.node(Wait::All, None);
        let params = [2.0f32; MODEL];
        from_a(&mut b, T0, 0, 0, HELLO);
        b.start_round(T0, &params).unwrap();
        let out = sent(&mut b, T0);
        assert_eq!(out.iter().filter(|f| f.0 == NOTIFY).count(), 1);
        // "a" is busy for a second: every NOTIFY of "b" is answered with nothing missing,
        // and the timer doubles each time.
        let (mut now, mut last) = (T0, T0);
        let mut gaps = [Duration::ZERO; 6];
        for gap in gaps.iter_mut() {
            // Heartbeats go out between the NOTIFYs.
            loop {
                now = b.poll_timeout().unwrap();
                b.handle_timeout(now);
                if sent(&mut b, now).contains(&(NOTIFY, 0)) {
                    break;
                }
            }
            *gap = now - last;
            last = now;
            from_a(&mut b, now, 0, 0, Kind::Missing { base: 0, mask: 0 });
        }
        assert!(gaps.windows(2).all(|w| w[1] > w[0]), "backs off: {gaps:?}");
        let backed_off = b.peers[0].out.deadline().unwrap() - now;
        assert!(backed_off >= Duration::from_millis(500), "{backed_off}");

        // "a" finished its round 0 (its ACK is lost) and starts round 1: its barrier or
        // heartbeat says it started 2 rounds. "b" asks again at once.
        let t1 = now + Duration::from_millis(3);
        from_a(&mut b, t1, 0, 2, Kind::Heartbeat);
        assert_eq!(sent(&mut b, t1).as_slice(), &[(NOTIFY, 0)]);
        let retry = b.peers[0].out.deadline().unwrap();
        assert!(
            retry < t1 + Duration::from_millis(100),
            "the timeout restarts from the round trip"
        );
        from_a(&mut b, t1, 0, 0, Kind::Ack);
        assert!(b.peer(A).unwrap().send_idle);

        // A peer still in the update's round says nothing new: no extra NOTIFY.
        let mut mem = Mem::new();
        let mut b = mem.node(Wait::All, None);
        from_a(&mut b, T0, 0, 0, HELLO);
        b.start_round(T0, &params).unwrap();
        sent(&mut b, T0);
        from_a(&mut b, T0, 0, 1, Kind::Heartbeat);
        assert!(sent(&mut b, T0).is_empty());
    }
}

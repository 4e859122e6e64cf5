//! One engine on one set of sockets: the event loop that moves frames between mio
//! sockets and an `asap-core` [`Reducer`] (an ASAP [`Node`](asap_core::Node) or the ring
//! [`AllReduce`](asap_core::AllReduce) baseline), and arms one timer at the
//! engine's deadline.
//!
//! The runtime only translates: it never decides anything the core decides. What moves
//! the bytes is a [`Link`]: datagrams ([`crate::udp::UdpLink`], the default) or
//! length-prefixed frames on TCP streams ([`crate::tcp::TcpLink`]). Peers are addressed
//! by node id (index into the address list); a frame's sender is known by the id it
//! carries.
//!
//! The engine's events (a peer down or back, a round ready, ...) reach the application
//! through [`Runtime::poll_event`]: the loop moves them out of the engine after every
//! frame and every turn into a queue of [`EVENT_QUEUE`] events, so none is lost while
//! the application is busy in [`Runtime::run_round`]. Refused frames are counted and
//! logged through the `log` facade at most once per [`crate::diag::LOG_INTERVAL`].

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant as WallClock};

use asap_core::{Event, Instant, NodeId, Reducer, RoundError, Transmit};
use mio::event::Event as Readiness;
use mio::{Events, Poll, Registry};

use crate::diag::Refusals;
use crate::pacer::Pacer;
use crate::tcp::TcpLink;
use crate::udp::UdpLink;

/// Peer-table capacity of a server node.
pub const MAX_PEERS: usize = 64;

/// Events the runtime keeps for the application ([`Runtime::poll_event`]). An
/// application that drains them after every round never comes near it (a round yields
/// a few, plus one per peer that goes down or comes back); one that never drains loses
/// the newest, counted in [`SocketStats::events_dropped`].
pub const EVENT_QUEUE: usize = 4096;

/// Counters of the socket side (the engine keeps its own in `Reducer::stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketStats {
    /// Frames handed to the network.
    pub sent: u64,
    /// Frames received.
    pub received: u64,
    /// Frames the link had to drop (a send error, a full queue to a dead peer); the
    /// protocol retransmits what matters.
    pub send_errors: u64,
    /// Frames the engine refused.
    pub refused: u64,
    /// Connections lost (TCP) and re-established.
    pub reconnects: u64,
    /// Engine events dropped because the application left [`EVENT_QUEUE`] of them
    /// undrained.
    pub events_dropped: u64,
}

/// Why a round could not be run.
#[derive(Debug)]
pub enum RuntimeError {
    /// The socket failed.
    Io(io::Error),
    /// The node refused the application's call.
    Round(RoundError),
    /// The round did not finish in time.
    Timeout,
}

impl std::fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RuntimeError::Io(e) => write!(f, "socket: {e}"),
            RuntimeError::Round(e) => write!(f, "round: {e}"),
            RuntimeError::Timeout => f.write_str("round did not finish in time"),
        }
    }
}

impl std::error::Error for RuntimeError {}

impl From<io::Error> for RuntimeError {
    fn from(e: io::Error) -> Self {
        RuntimeError::Io(e)
    }
}

/// Socket buffer size the links ask for: a whole update of a large model arrives as a
/// burst, and the default (~200 KiB) drops most of it. The kernel caps the request at
/// `net.core.rmem_max` / `wmem_max`.
pub const SOCKET_BUFFER: usize = 4 << 20;

/// Most frames handed to a link at once (Linux takes 64 segments in one GSO send).
pub const MAX_SEGMENTS: usize = 64;

/// How much a frame the engine accepted proves about who sent it, and so whether its
/// source address may replace the sender's known one (see [`crate::udp`]'s roaming
/// rule).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Authenticity {
    /// The cluster has no key: anyone can forge or replay a frame, from any address.
    Unkeyed,
    /// Its tag verified under the cluster key and it advanced the sender's replay
    /// window: only a key holder can have sent it, and nobody sent it before.
    Fresh,
    /// Its tag verified but it advanced no replay window (a frame of the sender's
    /// previous incarnation, still in flight or replayed): it proves nothing about
    /// where the sender is now.
    Stale,
}

/// A frame the engine accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The sender, by the node id its frame carries.
    pub from: NodeId,
    /// What the frame proves.
    pub authenticity: Authenticity,
}

/// What a frame received by a link is handed to, with its source address: the engine,
/// which says who sent it and how surely (`None`: refused).
pub type Deliver<'a> = dyn FnMut(&mut [u8], SocketAddr) -> Option<Accepted> + 'a;

/// How frames travel: the socket side of a [`Runtime`].
pub trait Link {
    /// Registers the link's sockets with the event loop.
    fn register(&mut self, registry: &Registry) -> io::Result<()>;
    /// Sends (or queues) frames to node `to`: one, or a batch back to back, each
    /// `segment_size` bytes but the last (`Transmit` of `poll_transmit_batch`), and
    /// counts them in `stats.sent` (or `send_errors`). `Ok(false)`: dropped, as the
    /// network may drop frames; `Err` only for failures of the machine, not of the peer.
    fn send(
        &mut self,
        registry: &Registry,
        to: usize,
        frames: &[u8],
        segment_size: usize,
        stats: &mut SocketStats,
    ) -> io::Result<bool>;
    /// Most frames of up to `max_frame` bytes one [`send`](Self::send) takes.
    fn max_segments(&self, max_frame: usize) -> usize;
    /// Handles one readiness event, handing every complete frame to `deliver`.
    fn ready(
        &mut self,
        registry: &Registry,
        event: &Readiness,
        deliver: &mut Deliver<'_>,
        stats: &mut SocketStats,
    ) -> io::Result<()>;
    /// The receive buffer the kernel granted (see [`SOCKET_BUFFER`]).
    fn recv_buffer_size(&self) -> io::Result<usize>;
    /// Asks the kernel for a receive buffer of `bytes` (it grants at most
    /// `net.core.rmem_max` on Linux); returns what it granted. Streams keep theirs.
    fn request_recv_buffer(&mut self, bytes: usize) -> io::Result<usize> {
        let _ = bytes;
        self.recv_buffer_size()
    }
    /// Datagrams the kernel dropped at this link's socket because its receive buffer was
    /// full, where the system tells (`None` elsewhere, and for streams).
    fn kernel_drops(&self) -> Option<u64> {
        None
    }
}

/// An engine driven over a link.
pub struct Runtime<R, L> {
    node: R,
    link: L,
    poll: Poll,
    events: Events,
    tx: Vec<u8>,
    epoch: WallClock,
    stats: SocketStats,
    /// The engine's events, until the application takes them.
    queue: EventQueue,
    refusals: Refusals,
    /// Holds sends to a rate (`set_pacing`); `None`: as fast as the socket takes them.
    pacer: Option<Pacer>,
    /// A batch in `tx` the pacer has not let go yet, and when it will.
    paced: Option<(Transmit, WallClock)>,
}

/// The application's side of the engine's events: bounded, the newest dropped (and
/// counted) when full, like the engine's own queue.
#[derive(Debug, Default)]
struct EventQueue {
    events: VecDeque<Event>,
    dropped: u64,
}

impl EventQueue {
    /// Moves every event the engine has into the queue.
    fn collect(&mut self, node: &mut impl Reducer) {
        while let Some(event) = node.poll_event() {
            if self.events.len() < EVENT_QUEUE {
                self.events.push_back(event);
            } else {
                self.dropped += 1;
            }
        }
    }
}

/// An engine over UDP.
pub type UdpRuntime<R> = Runtime<R, UdpLink>;

/// An engine over TCP.
pub type TcpRuntime<R> = Runtime<R, TcpLink>;

impl<R: Reducer> Runtime<R, UdpLink> {
    /// Drives `node` over `socket` (already bound). `peers[i]` is node `i`'s address.
    pub fn new(node: R, socket: std::net::UdpSocket, peers: Vec<SocketAddr>) -> io::Result<Self> {
        Runtime::with_link(node, UdpLink::new(socket, peers)?)
    }
}

impl<R: Reducer> Runtime<R, TcpLink> {
    /// Drives `node` over TCP: `listener` (already bound) accepts the peers'
    /// connections; `peers[i]` is where node `i` listens.
    pub fn tcp(node: R, listener: std::net::TcpListener, peers: Vec<SocketAddr>) -> io::Result<Self> {
        Runtime::with_link(node, TcpLink::new(listener, peers)?)
    }
}

impl<R: Reducer, L: Link> Runtime<R, L> {
    /// Drives `node` over `link`.
    pub fn with_link(node: R, mut link: L) -> io::Result<Self> {
        let poll = Poll::new()?;
        link.register(poll.registry())?;
        let max_frame = node.config().max_frame;
        Ok(Runtime {
            node,
            link,
            poll,
            events: Events::with_capacity(256),
            tx: vec![0; max_frame * MAX_SEGMENTS],
            epoch: WallClock::now(),
            stats: SocketStats::default(),
            queue: EventQueue::default(),
            refusals: Refusals::default(),
            pacer: None,
            paced: None,
        })
    }

    /// The engine.
    pub fn node(&self) -> &R {
        &self.node
    }

    /// The engine, to call what [`Reducer`] does not cover (e.g. `Node::leave`).
    pub fn node_mut(&mut self) -> &mut R {
        &mut self.node
    }

    /// The receive buffer the kernel granted (see [`SOCKET_BUFFER`]).
    pub fn recv_buffer_size(&self) -> io::Result<usize> {
        self.link.recv_buffer_size()
    }

    /// Asks for a receive buffer of `bytes` (what a round's burst needs, when that is more
    /// than [`SOCKET_BUFFER`]); returns what the kernel granted.
    pub fn request_recv_buffer(&mut self, bytes: usize) -> io::Result<usize> {
        self.link.request_recv_buffer(bytes)
    }

    /// Holds what this node sends to `bytes_per_second` (bursts of one batch), or lets it
    /// go as fast as the socket takes it (`None`, the default). See [`crate::pacer`].
    pub fn set_pacing(&mut self, bytes_per_second: Option<u64>) {
        let burst = self.tx.len();
        self.pacer = bytes_per_second.map(|rate| Pacer::new(rate, burst, WallClock::now()));
    }

    /// Datagrams the kernel dropped because the receive buffer was full (Linux), the loss
    /// a larger buffer (`net.core.rmem_max`) would have avoided.
    pub fn kernel_drops(&self) -> Option<u64> {
        self.link.kernel_drops()
    }

    /// The link, to inspect (e.g. [`UdpLink::peer_addr`]).
    pub fn link(&self) -> &L {
        &self.link
    }

    /// Socket counters.
    pub fn stats(&self) -> SocketStats {
        SocketStats {
            events_dropped: self.queue.dropped,
            ..self.stats
        }
    }

    /// The next event of the engine (a peer went down or came back, restarted or
    /// speaks another layout, a round is ready, an update was rejected), oldest first;
    /// `None` when there is none. Events wait here while the application is in
    /// [`run_round`](Self::run_round) or [`serve`](Self::serve); drain them after each
    /// call (each is edge-triggered: see [`asap_core::Event`]).
    pub fn poll_event(&mut self) -> Option<Event> {
        self.queue.collect(&mut self.node);
        self.queue.events.pop_front()
    }

    fn now(&self) -> Instant {
        Instant::from_micros(self.epoch.elapsed().as_micros() as u64)
    }

    /// Runs one round: waits until the engine may start it, starts it from `params`,
    /// waits for its wait policy, and writes the reduced parameters into `params`.
    pub fn run_round(&mut self, params: &mut [f32], limit: Duration) -> Result<(), RuntimeError> {
        let give_up = WallClock::now() + limit;
        loop {
            let advance = self.node.advance_round(self.now(), params, true);
            self.queue.collect(&mut self.node);
            if advance.map_err(RuntimeError::Round)?.finished.is_some() {
                return Ok(());
            }
            if WallClock::now() >= give_up {
                return Err(RuntimeError::Timeout);
            }
            self.turn(give_up)?;
        }
    }

    /// Joins a running cluster (an engine configured with `join`): runs rounds, each
    /// within `limit`, until the engine holds the model its in-neighbours sent, which
    /// it writes into `params`. Returns the rounds it took (0 for an engine that holds
    /// a model already).
    pub fn join(&mut self, params: &mut [f32], limit: Duration) -> Result<u32, RuntimeError> {
        let mut rounds = 0;
        while !self.node.has_model() {
            self.run_round(params, limit)?;
            rounds += 1;
        }
        Ok(rounds)
    }

    /// Ends the engine's part in the cluster: keeps serving peers (answering
    /// retransmission requests, acknowledging) until the engine owes them nothing
    /// ([`Reducer::is_drained`]: its last update delivered) or `linger` passed, then
    /// says goodbye (an ASAP node sends every peer a Leave and falls silent).
    pub fn finish(&mut self, linger: Duration) -> Result<(), RuntimeError> {
        let until = WallClock::now() + linger;
        while !self.node.is_drained() && WallClock::now() < until {
            self.turn(until)?;
        }
        let now = self.now();
        self.node.leave(now);
        self.queue.collect(&mut self.node);
        // The goodbye goes at once, whatever the pace.
        self.pacer = None;
        self.flush()?;
        // Give queued (TCP) frames a moment to leave.
        let until = WallClock::now() + Duration::from_millis(50);
        while WallClock::now() < until {
            self.poll_once(until)?;
        }
        Ok(())
    }

    /// Serves peers for `span` without starting or finishing a round: what the event
    /// loop does while the application computes (sending, acknowledging, resending).
    pub fn serve(&mut self, span: Duration) -> Result<(), RuntimeError> {
        let until = WallClock::now() + span;
        while WallClock::now() < until {
            self.turn(until)?;
        }
        Ok(())
    }

    /// One turn of the loop: send what the node has, wait for a frame or its deadline
    /// (never past `give_up`), feed the node.
    fn turn(&mut self, give_up: WallClock) -> Result<(), RuntimeError> {
        self.flush()?;
        self.queue.collect(&mut self.node);
        self.refusals.flush(WallClock::now());
        let now = self.now();
        let wait_until = match self.node.poll_timeout() {
            Some(at) => {
                let wait = Duration::from_micros(at.total_micros().saturating_sub(now.total_micros()));
                (WallClock::now() + wait).min(give_up)
            }
            None => (WallClock::now() + Duration::from_millis(100)).min(give_up),
        };
        // A batch the pacer holds goes out when it lets it.
        let wait_until = self.paced.map_or(wait_until, |(_, at)| wait_until.min(at));
        self.poll_once(wait_until)?;
        let now = self.now();
        if self.node.poll_timeout().is_some_and(|at| at <= now) {
            self.node.handle_timeout(now);
            self.queue.collect(&mut self.node);
        }
        Ok(())
    }

    /// Waits for readiness (at most until `until`) and handles it.
    fn poll_once(&mut self, until: WallClock) -> Result<(), RuntimeError> {
        let wait = until.saturating_duration_since(WallClock::now());
        match self.poll.poll(&mut self.events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let Runtime {
            node,
            link,
            poll,
            events,
            epoch,
            stats,
            queue,
            refusals,
            ..
        } = self;
        let mut refused = 0;
        let keyed = node.config().key.is_some();
        let mut deliver = |bytes: &mut [u8], from: SocketAddr| {
            let now = Instant::from_micros(epoch.elapsed().as_micros() as u64);
            let result = node.handle_frame_mut(now, bytes);
            // One frame yields a few events; taking them at once keeps a burst of
            // frames from overflowing the engine's small queue.
            queue.collect(&mut *node);
            match result {
                // The engine says whether the frame proved its sender and was new
                // (`asap_core::Accepted::fresh`: the tag verified and the frame advanced
                // the sender's replay window).
                Ok(accepted) => Some(Accepted {
                    from: accepted.from,
                    authenticity: match (keyed, accepted.fresh) {
                        (false, _) => Authenticity::Unkeyed,
                        (true, true) => Authenticity::Fresh,
                        (true, false) => Authenticity::Stale,
                    },
                }),
                Err(e) => {
                    refused += 1;
                    refusals.refused(WallClock::now(), &e, from);
                    None
                }
            }
        };
        for event in events.iter() {
            link.ready(poll.registry(), event, &mut deliver, stats)?;
        }
        stats.refused += refused;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), RuntimeError> {
        let now = self.now();
        let max_frame = self.node.config().max_frame;
        let max_segments = self.link.max_segments(max_frame).clamp(1, MAX_SEGMENTS);
        loop {
            let t = match self.paced.take() {
                Some((t, _)) => t,
                None => match self
                    .node
                    .poll_transmit_batch(now, &mut self.tx, max_segments)
                    .expect("tx buffer holds max_frame")
                {
                    Some(t) => t,
                    None => return Ok(()),
                },
            };
            if let Some(pacer) = &mut self.pacer {
                if let Err(at) = pacer.admit(WallClock::now(), t.len) {
                    // It waits in `tx`; the loop wakes for it (`turn`).
                    self.paced = Some((t, at));
                    return Ok(());
                }
            }
            let to = usize::from(t.to.0);
            let frames = &self.tx[..t.len];
            // The link counts what it sent and dropped.
            self.link
                .send(self.poll.registry(), to, frames, t.segment_size, &mut self.stats)?;
        }
    }
}

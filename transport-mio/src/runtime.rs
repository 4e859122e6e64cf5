//! One engine on one UDP socket: the event loop that moves frames between a mio socket
//! and an `asap-core` [`Reducer`] (an ASAP [`Node`](asap_core::Node) or the ring
//! [`AllReduce`](asap_core::allreduce::AllReduce) baseline), and arms one timer at the
//! engine's deadline.
//!
//! The runtime only translates: it never decides anything the core decides. Peers are
//! addressed by node id (index into the address list); a frame's sender is known by the
//! id it carries, and its source address is learned from it (NATs rewrite ports).

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant as WallClock};

use asap_core::{Instant, NodeId, Reducer, RoundError};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};

/// Peer-table capacity of a server node.
pub const MAX_PEERS: usize = 64;

const SOCKET: Token = Token(0);

/// Counters of the socket side (the node keeps its own in `Node::stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketStats {
    /// Datagrams sent.
    pub sent: u64,
    /// Datagrams received.
    pub received: u64,
    /// Sends that failed (the frame is dropped: the protocol retransmits).
    pub send_errors: u64,
    /// Datagrams the node refused.
    pub refused: u64,
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

/// Socket buffer size the runtime asks for: a whole update of a large model arrives as
/// a burst, and the default (~200 KiB) drops most of it. The kernel caps the request
/// at `net.core.rmem_max` / `wmem_max`.
pub const SOCKET_BUFFER: usize = 4 << 20;

/// An engine driven over a UDP socket.
pub struct UdpRuntime<R> {
    node: R,
    socket: UdpSocket,
    poll: Poll,
    events: Events,
    peers: Vec<SocketAddr>,
    tx: Vec<u8>,
    rx: Vec<u8>,
    epoch: WallClock,
    stats: SocketStats,
}

impl<R: Reducer> UdpRuntime<R> {
    /// Drives `node` over `socket` (already bound). `peers[i]` is node `i`'s address.
    pub fn new(node: R, socket: std::net::UdpSocket, peers: Vec<SocketAddr>) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        let socket = socket2::Socket::from(socket);
        // Best effort: a smaller buffer only costs retransmissions.
        let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
        let socket = std::net::UdpSocket::from(socket);
        let mut socket = UdpSocket::from_std(socket);
        let poll = Poll::new()?;
        poll.registry().register(&mut socket, SOCKET, Interest::READABLE)?;
        let max_frame = node.config().max_frame;
        Ok(UdpRuntime {
            node,
            socket,
            poll,
            events: Events::with_capacity(64),
            peers,
            tx: vec![0; max_frame],
            rx: vec![0; asap_core::wire::MAX_FRAME_LEN],
            epoch: WallClock::now(),
            stats: SocketStats::default(),
        })
    }

    /// The engine.
    pub fn node(&self) -> &R {
        &self.node
    }

    /// The receive buffer the kernel granted (see [`SOCKET_BUFFER`]).
    pub fn recv_buffer_size(&self) -> io::Result<usize> {
        socket2::SockRef::from(&self.socket).recv_buffer_size()
    }

    /// Socket counters.
    pub fn stats(&self) -> SocketStats {
        self.stats
    }

    fn now(&self) -> Instant {
        Instant::from_micros(self.epoch.elapsed().as_micros() as u64)
    }

    /// Runs one round: waits until the engine may start it, starts it from `params`,
    /// waits for its wait policy, and writes the reduced parameters into `params`.
    pub fn run_round(&mut self, params: &mut [f32], limit: Duration) -> Result<(), RuntimeError> {
        let give_up = WallClock::now() + limit;
        loop {
            let now = self.now();
            if !self.node.is_started() && self.node.can_start() {
                self.node.start(now, params).map_err(RuntimeError::Round)?;
            }
            if self.node.is_ready() {
                return self.node.finish(now, params).map_err(RuntimeError::Round);
            }
            if WallClock::now() >= give_up {
                return Err(RuntimeError::Timeout);
            }
            self.turn(give_up)?;
        }
    }

    /// Keeps serving peers (answering retransmission requests, acknowledging) for
    /// `linger`, then says goodbye (an ASAP node sends every peer a Leave).
    pub fn finish(&mut self, linger: Duration) -> Result<(), RuntimeError> {
        self.serve(linger)?;
        self.node.leave();
        self.flush()?;
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

    /// One turn of the loop: send what the node has, wait for a datagram or its
    /// deadline (never past `give_up`), feed the node.
    fn turn(&mut self, give_up: WallClock) -> Result<(), RuntimeError> {
        self.flush()?;
        while self.node.poll_event().is_some() {}
        let now = self.now();
        let wait = match self.node.poll_timeout() {
            Some(at) => Duration::from_micros(at.total_micros().saturating_sub(now.total_micros())),
            None => Duration::from_millis(100),
        };
        let wait = wait.min(give_up.saturating_duration_since(WallClock::now()));
        self.poll.poll(&mut self.events, Some(wait))?;
        self.receive()?;
        let now = self.now();
        if self.node.poll_timeout().is_some_and(|at| at <= now) {
            self.node.handle_timeout(now);
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), RuntimeError> {
        let now = self.now();
        loop {
            let Some(t) = self
                .node
                .poll_transmit(now, &mut self.tx)
                .expect("tx buffer holds max_frame")
            else {
                return Ok(());
            };
            let Some(addr) = self.peers.get(usize::from(t.to.0)) else {
                continue;
            };
            match self.socket.send_to(&self.tx[..t.len], *addr) {
                Ok(_) => self.stats.sent += 1,
                // A full socket buffer or an ICMP error from a dead peer: the frame is
                // lost like any other; the protocol's timers resend what matters.
                Err(_) => self.stats.send_errors += 1,
            }
        }
    }

    fn receive(&mut self) -> Result<(), RuntimeError> {
        loop {
            match self.socket.recv_from(&mut self.rx) {
                Ok((len, from_addr)) => {
                    self.stats.received += 1;
                    let now = self.now();
                    match self.node.handle_frame(now, &self.rx[..len]) {
                        Ok(NodeId(id)) => {
                            // Learn where the peer really is (a NAT may have moved it).
                            if let Some(addr) = self.peers.get_mut(usize::from(id)) {
                                *addr = from_addr;
                            }
                        }
                        Err(_) => self.stats.refused += 1,
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                // ICMP port unreachable from a peer that is gone, and the like.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// The seeded initial replica of `rank` (values uniform in [-1, 1)): what `asap node`
/// averages, so a test can compute the exact mean.
pub fn initial_vector(seed: u64, rank: u32, len: usize) -> Vec<f32> {
    let mut state = seed ^ (u64::from(rank) << 32) ^ 0x5eed;
    (0..len)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

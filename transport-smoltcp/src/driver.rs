//! The bare-metal driver: one smoltcp UDP socket, one engine.

use asap_core::{Advance, BufferTooSmall, Instant, Reducer, RoundError};
use smoltcp::iface::{Interface, SocketHandle, SocketSet};
use smoltcp::phy::Device;
use smoltcp::socket::udp;
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::IpEndpoint;

/// Why a driver could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriverError {
    /// A frame buffer (transmit, or receive: [`Driver::with_rx`]) is smaller than the
    /// engine's `max_frame`.
    TxBuffer(BufferTooSmall),
    /// The peer table has fewer entries than the engine has node ids to reach.
    PeerTable {
        /// Entries given.
        got: usize,
    },
}

impl core::fmt::Display for DriverError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DriverError::TxBuffer(e) => write!(f, "frame buffer: {} bytes needed", e.needed),
            DriverError::PeerTable { got } => write!(f, "peer table has {got} entries"),
        }
    }
}

/// Counters of the socket side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DriverStats {
    /// Frames handed to the socket.
    pub sent: u64,
    /// Frames received.
    pub received: u64,
    /// Frames the engine refused.
    pub refused: u64,
    /// Frames for node ids outside the peer table, or that smoltcp would never send.
    pub dropped: u64,
    /// Times the socket's transmit buffer was full (the frame waited for the next poll).
    pub tx_full: u64,
}

/// Where a round stands after [`Driver::step`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// No round could start yet, or the started one waits for its neighbours.
    Waiting,
    /// A round started from the parameters.
    Started,
    /// The round finished: the parameters hold the reduced replica. Do the local step,
    /// then call `step` again to start the next round.
    Finished,
}

/// One engine (an ASAP `Node` or the all-reduce baseline) on one smoltcp UDP socket.
pub struct Driver<'a, R> {
    engine: R,
    socket: SocketHandle,
    peers: &'a mut [IpEndpoint],
    tx: &'a mut [u8],
    /// A frame in `tx` the socket had no room for: `(length, peer)`.
    pending: Option<(usize, usize)>,
    /// Where received frames are copied to be decrypted in place (smoltcp lends them
    /// read-only); only an encrypting engine needs it ([`Driver::with_rx`]).
    rx: Option<&'a mut [u8]>,
    stats: DriverStats,
}

/// Checks what a driver borrows: frame buffers of `max_frame` bytes, a peer table that
/// reaches this node's own id.
pub(crate) fn check_lent(config: &asap_core::Config, peers: usize, frame_buffers: &[usize]) -> Result<(), DriverError> {
    let needed = config.max_frame;
    if frame_buffers.iter().any(|&len| len < needed) {
        return Err(DriverError::TxBuffer(BufferTooSmall { needed }));
    }
    if peers <= usize::from(config.id.0) {
        return Err(DriverError::PeerTable { got: peers });
    }
    Ok(())
}

fn core_time(t: SmolInstant) -> Instant {
    Instant::from_micros(u64::try_from(t.total_micros()).unwrap_or(0))
}

fn smol_time(t: Instant) -> SmolInstant {
    SmolInstant::from_micros(i64::try_from(t.total_micros()).unwrap_or(i64::MAX))
}

impl<'a, R: Reducer> Driver<'a, R> {
    /// Drives `engine` over the bound UDP socket `socket`. `peers[i]` is node `i`'s
    /// endpoint (learnt again from every frame it sends, as NATs move ports); `tx` holds
    /// one frame (`engine.config().max_frame` bytes).
    pub fn new(
        engine: R,
        socket: SocketHandle,
        peers: &'a mut [IpEndpoint],
        tx: &'a mut [u8],
    ) -> Result<Self, DriverError> {
        check_lent(engine.config(), peers.len(), &[tx.len()])?;
        Ok(Driver {
            engine,
            socket,
            peers,
            tx,
            pending: None,
            rx: None,
            stats: DriverStats::default(),
        })
    }

    /// Lends a receive buffer of `engine.config().max_frame` bytes, into which every
    /// received frame is copied so the engine can decrypt it in place. An engine
    /// configured to `encrypt` needs it: without one, it refuses every frame (counted
    /// as authentication failures). Others do not (it costs a copy per frame).
    pub fn with_rx(mut self, rx: &'a mut [u8]) -> Result<Self, DriverError> {
        check_lent(self.engine.config(), self.peers.len(), &[rx.len()])?;
        self.rx = Some(rx);
        Ok(self)
    }

    /// The engine.
    pub fn engine(&self) -> &R {
        &self.engine
    }

    /// The engine, for what [`Reducer`] does not cover (e.g. `Node::leave`).
    pub fn engine_mut(&mut self) -> &mut R {
        &mut self.engine
    }

    /// Socket counters.
    pub fn stats(&self) -> DriverStats {
        self.stats
    }

    /// One pass of the main loop: lets smoltcp process the device, feeds received
    /// frames and due timers to the engine, queues what the engine sends, lets smoltcp
    /// transmit it. Returns when to call again at the latest (`None`: on the next
    /// packet only).
    pub fn poll<D: Device + ?Sized>(
        &mut self,
        now: SmolInstant,
        iface: &mut Interface,
        device: &mut D,
        sockets: &mut SocketSet<'_>,
    ) -> Option<SmolInstant> {
        iface.poll(now, device, sockets);
        let t = core_time(now);
        let socket = sockets.get_mut::<udp::Socket>(self.socket);
        while let Ok((bytes, meta)) = socket.recv() {
            self.stats.received += 1;
            let handled = match self.rx.as_deref_mut().and_then(|rx| rx.get_mut(..bytes.len())) {
                Some(rx) => {
                    rx.copy_from_slice(bytes);
                    self.engine.handle_frame_mut(t, rx)
                }
                None => self.engine.handle_frame(t, bytes),
            };
            match handled {
                Ok(asap_core::Accepted { from: id, .. }) => {
                    if let Some(peer) = self.peers.get_mut(usize::from(id.0)) {
                        *peer = meta.endpoint;
                    }
                }
                Err(_) => self.stats.refused += 1,
            }
        }
        if self.engine.poll_timeout().is_some_and(|at| at <= t) {
            self.engine.handle_timeout(t);
        }
        self.transmit(t, socket);
        iface.poll(now, device, sockets);
        let net = iface.poll_at(now, sockets);
        let engine = self.engine.poll_timeout().map(smol_time);
        match (net, engine) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Moves frames from the engine to the socket until either has none or no room.
    fn transmit(&mut self, t: Instant, socket: &mut udp::Socket<'_>) {
        loop {
            let (len, to) = match self.pending.take() {
                Some(p) => p,
                None => match self.engine.poll_transmit(t, self.tx) {
                    Ok(Some(frame)) => (frame.len, usize::from(frame.to.0)),
                    // `new` checked the buffer; nothing else fails.
                    Ok(None) | Err(_) => return,
                },
            };
            let Some(&endpoint) = self.peers.get(to) else {
                self.stats.dropped += 1;
                continue;
            };
            match socket.send_slice(&self.tx[..len], endpoint) {
                Ok(()) => self.stats.sent += 1,
                Err(udp::SendError::BufferFull) => {
                    self.stats.tx_full += 1;
                    if socket.payload_send_capacity() < len {
                        // It will never fit: lost, like a frame on the wire.
                        self.stats.dropped += 1;
                        continue;
                    }
                    self.pending = Some((len, to));
                    return;
                }
                Err(_) => self.stats.dropped += 1,
            }
        }
    }

    /// Advances the application's round: starts one from `params` when the engine can,
    /// finishes it (writing the reduced replica into `params`) when it is ready.
    pub fn step(&mut self, now: SmolInstant, params: &mut [f32]) -> Result<Step, RoundError> {
        let advance = self.engine.advance_round(core_time(now), params, true)?;
        Ok(match advance {
            Advance { finished: Some(_), .. } => Step::Finished,
            Advance { started: Some(_), .. } => Step::Started,
            _ => Step::Waiting,
        })
    }
}

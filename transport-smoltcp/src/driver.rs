//! The bare-metal driver: one smoltcp UDP socket, one engine.

use asap_core::{Accepted, Advance, BufferTooSmall, Event, Instant, NodeId, Reducer, RoundError};
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
    /// Times a peer's endpoint moved (see [the roaming rule](roam)).
    pub moves: u64,
}

/// How much a frame the engine accepted proves about where its sender is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Authenticity {
    /// The cluster has no key: anyone can forge or replay a frame, from anywhere.
    Unkeyed,
    /// Its tag verified and it advanced the sender's replay window.
    Fresh,
    /// Its tag verified but it advanced no window (the sender's previous incarnation).
    Stale,
}

/// What a frame the engine accepted proves about where its sender is (see [`roam`]).
pub(crate) fn authenticity<R: Reducer>(engine: &R, accepted: Accepted) -> Authenticity {
    match (engine.config().key.is_some(), accepted.fresh) {
        (false, _) => Authenticity::Unkeyed,
        (true, true) => Authenticity::Fresh,
        (true, false) => Authenticity::Stale,
    }
}

/// Whether frames can be sent to `endpoint`: an unspecified address or port 0 in the
/// peer table means "not known yet".
fn is_usable(endpoint: IpEndpoint) -> bool {
    !endpoint.addr.is_unspecified() && endpoint.port != 0
}

/// The roaming rule: where to send to a peer known at `known` after the engine accepted
/// a frame of it from `from` (`Some`: move there). A peer is known by the node id its
/// frames carry; its endpoint moves only on proof that the peer itself is at the new
/// one (WireGuard's rule):
///
/// * with a cluster key, to the source of a frame that authenticated and advanced the
///   sender's replay window. A copy of a real frame, sent from anywhere, is refused as
///   a replay or is of a previous incarnation: it moves nothing, so whoever copies
///   frames cannot steer this board's traffic away from its peers;
/// * without a key, never: anyone can send anything from anywhere, so the configured
///   endpoint is the one to trust (behind QEMU's user networking, configure the host's
///   forwarded port, as `targets/*/run.sh` do);
/// * an endpoint not known yet (unspecified, or port 0) is learnt from the first
///   accepted frame (with a key, the first fresh one), then kept like a configured one.
pub(crate) fn roam(known: IpEndpoint, from: IpEndpoint, authenticity: Authenticity) -> Option<IpEndpoint> {
    let moves = match authenticity {
        Authenticity::Fresh => true,
        Authenticity::Stale => false,
        Authenticity::Unkeyed => !is_usable(known),
    };
    (moves && from != known).then_some(from)
}

/// Applies [`roam`] to `peers` for a frame of `id` from `from`.
pub(crate) fn learn(
    peers: &mut [IpEndpoint],
    id: NodeId,
    from: IpEndpoint,
    authenticity: Authenticity,
    stats: &mut DriverStats,
) {
    if let Some(peer) = peers.get_mut(usize::from(id.0)) {
        if let Some(to) = roam(*peer, from, authenticity) {
            *peer = to;
            stats.moves += 1;
        }
    }
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
    /// endpoint (moved only by the [roaming rule](roam): with a cluster key, by the
    /// peer's fresh authenticated frames; without, never, unless unspecified); `tx`
    /// holds one frame (`engine.config().max_frame` bytes).
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

    /// Where frames to node `id` go now.
    pub fn peer_endpoint(&self, id: NodeId) -> Option<IpEndpoint> {
        self.peers.get(usize::from(id.0)).copied()
    }

    /// The engine's next event (a peer down or back, restarted or incompatible, a round
    /// ready, an update rejected), oldest first. Drain it until `None` after every
    /// [`poll`](Self::poll) and [`step`](Self::step): the engine keeps only
    /// `asap_core::EVENT_CAPACITY` events and counts the ones it drops in
    /// `Stats::events_dropped`. One `poll` takes at most the frames the socket's
    /// receive buffer held (a few events each), so a loop that drains every pass loses
    /// none unless that buffer holds several dozen frames.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.engine.poll_event()
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
            let rx = self.rx.as_deref_mut().and_then(|rx| rx.get_mut(..bytes.len()));
            let handled = match rx {
                Some(rx) => {
                    rx.copy_from_slice(bytes);
                    self.engine.handle_frame_mut(t, rx)
                }
                None => self.engine.handle_frame(t, bytes),
            };
            match handled {
                Ok(accepted) => {
                    let authenticity = authenticity(&self.engine, accepted);
                    learn(self.peers, accepted.from, meta.endpoint, authenticity, &mut self.stats);
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

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::{IpAddress, Ipv4Address};

    fn at(port: u16) -> IpEndpoint {
        IpEndpoint::new(IpAddress::Ipv4(Ipv4Address::new(10, 0, 0, 2)), port)
    }

    #[test]
    fn only_fresh_authenticated_frames_move_a_known_endpoint() {
        assert_eq!(roam(at(7000), at(9999), Authenticity::Fresh), Some(at(9999)));
        assert_eq!(roam(at(7000), at(9999), Authenticity::Stale), None);
        assert_eq!(roam(at(7000), at(9999), Authenticity::Unkeyed), None);
        assert_eq!(roam(at(7000), at(7000), Authenticity::Fresh), None);
    }

    #[test]
    fn an_unknown_endpoint_is_learnt_once() {
        let unspecified = IpEndpoint::new(IpAddress::Ipv4(Ipv4Address::UNSPECIFIED), 7000);
        for unknown in [unspecified, at(0)] {
            assert_eq!(roam(unknown, at(9999), Authenticity::Unkeyed), Some(at(9999)));
            assert_eq!(roam(unknown, at(9999), Authenticity::Fresh), Some(at(9999)));
            assert_eq!(roam(unknown, at(9999), Authenticity::Stale), None);
        }
        assert_eq!(roam(at(9999), at(9998), Authenticity::Unkeyed), None);
    }
}

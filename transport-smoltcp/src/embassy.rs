//! The async driver (feature `embassy`): the same loop as [`crate::Driver`], as an
//! `async` API over an `embassy-net` UDP socket with `embassy-time` timers, for boards
//! that run the embassy executor.
//!
//! Time comes from `embassy_time::Instant::now()` (ticks since boot), so create the
//! engine at boot time or pass it `Instant::ZERO` and build it before the first round.

use asap_core::{Event, Instant, NodeId, Reducer, RoundError};
use embassy_futures::select::{select, Either};
use embassy_net::udp::UdpSocket;
use embassy_net::IpEndpoint;
use embassy_time::{Duration, Instant as EmbassyInstant, Timer};

use crate::driver::{authenticity, check_lent, learn, DriverError, DriverStats};

/// Longest sleep without a deadline (the engine has no timer armed).
const IDLE: Duration = Duration::from_millis(100);

fn core_now() -> Instant {
    Instant::from_micros(EmbassyInstant::now().as_micros())
}

/// One engine on one embassy-net UDP socket.
pub struct AsyncDriver<'a, R> {
    engine: R,
    socket: UdpSocket<'a>,
    peers: &'a mut [IpEndpoint],
    tx: &'a mut [u8],
    rx: &'a mut [u8],
    stats: DriverStats,
}

impl<'a, R: Reducer> AsyncDriver<'a, R> {
    /// Drives `engine` over `socket` (bound). `peers[i]` is node `i`'s endpoint (moved
    /// only by the roaming rule, as for [`crate::Driver::new`]); `tx`
    /// and `rx` hold one frame each (`engine.config().max_frame` bytes; `rx` as large as
    /// the largest frame a peer may send).
    pub fn new(
        engine: R,
        socket: UdpSocket<'a>,
        peers: &'a mut [IpEndpoint],
        tx: &'a mut [u8],
        rx: &'a mut [u8],
    ) -> Result<Self, DriverError> {
        check_lent(engine.config(), peers.len(), &[tx.len(), rx.len()])?;
        Ok(AsyncDriver {
            engine,
            socket,
            peers,
            tx,
            rx,
            stats: DriverStats::default(),
        })
    }

    /// The engine.
    pub fn engine(&self) -> &R {
        &self.engine
    }

    /// The engine, for what [`Reducer`] does not cover.
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

    /// The engine's next event, oldest first. Drain it until `None` after every
    /// [`run_round`](Self::run_round) and [`serve_until`](Self::serve_until): events
    /// wait in the engine meanwhile, which keeps `asap_core::EVENT_CAPACITY` of
    /// them (a round yields two or three, plus one per peer going down or coming
    /// back) and counts the ones it drops in `Stats::events_dropped`.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.engine.poll_event()
    }

    /// Runs one round: waits until the engine may start it, starts it from `params`,
    /// serves the network until its wait policy is met, and writes the reduced replica
    /// into `params`.
    pub async fn run_round(&mut self, params: &mut [f32]) -> Result<(), RoundError> {
        loop {
            if self.engine.advance_round(core_now(), params, true)?.finished.is_some() {
                return Ok(());
            }
            self.turn(None).await;
        }
    }

    /// Serves the network (acknowledging, resending) until `until`: call it while the
    /// application has nothing else to do, and after the last round.
    pub async fn serve_until(&mut self, until: EmbassyInstant) {
        while EmbassyInstant::now() < until {
            self.turn(Some(until)).await;
        }
    }

    /// Sends what the engine has, then waits for a datagram or the next deadline.
    async fn turn(&mut self, until: Option<EmbassyInstant>) {
        let now = core_now();
        while let Ok(Some(frame)) = self.engine.poll_transmit(now, self.tx) {
            let Some(&endpoint) = self.peers.get(usize::from(frame.to.0)) else {
                self.stats.dropped += 1;
                continue;
            };
            // Waits for room in the socket's buffer rather than dropping.
            match self.socket.send_to(&self.tx[..frame.len], endpoint).await {
                Ok(()) => self.stats.sent += 1,
                Err(_) => self.stats.dropped += 1,
            }
        }
        let deadline = self
            .engine
            .poll_timeout()
            .map(|at| EmbassyInstant::from_micros(at.total_micros()))
            .unwrap_or_else(|| EmbassyInstant::now() + IDLE);
        let deadline = until.map_or(deadline, |u| deadline.min(u));
        match select(self.socket.recv_from(self.rx), Timer::at(deadline)).await {
            Either::First(Ok((len, meta))) => {
                self.stats.received += 1;
                let frame = &mut self.rx[..len];
                match self.engine.handle_frame_mut(core_now(), frame) {
                    Ok(accepted) => {
                        let authenticity = authenticity(&self.engine, accepted);
                        learn(self.peers, accepted.from, meta.endpoint, authenticity, &mut self.stats);
                    }
                    Err(_) => self.stats.refused += 1,
                }
            }
            // A datagram larger than `rx`: dropped, as the wire would truncate it.
            Either::First(Err(_)) => self.stats.dropped += 1,
            Either::Second(()) => {}
        }
        let now = core_now();
        if self.engine.poll_timeout().is_some_and(|at| at <= now) {
            self.engine.handle_timeout(now);
        }
    }
}

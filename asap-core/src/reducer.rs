//! What a transport drives: the one interface shared by ASAP's [`Node`] and the ring
//! [`AllReduce`] baseline, so a runtime (a mio event loop, smoltcp on a board, the
//! simulator) is written once and runs either engine on the same wire.
//!
//! The methods are the sans-IO families of `quinn-proto` and `smoltcp`: `handle_*` feeds
//! input in, `poll_*` takes output out, time is always an argument. The round calls
//! bracket the application's step: `start_round` hands the engine the parameters after
//! a local step, `finish_round` writes the reduced parameters back.
//! [`advance_round`](Reducer::advance_round) does both when they are due: it is how
//! every runtime of this workspace drives rounds.

use crate::allreduce::AllReduce;
use crate::config::Config;
use crate::error::{FrameError, RoundError};
use crate::node::Node;
use crate::output::{Accepted, Event, Finished, Stats, Transmit};
use crate::time::Instant;
use crate::wire::BufferTooSmall;

/// What [`Reducer::advance_round`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[must_use = "a finished round wrote new parameters: the application may take its next step"]
pub struct Advance {
    /// The round it started, if it started one.
    pub started: Option<u32>,
    /// The round it finished (the parameters now hold the reduced replica), if any.
    pub finished: Option<Finished>,
}

/// A sans-IO reduce engine.
pub trait Reducer {
    /// The engine's configuration (frame size, model length, identity).
    fn config(&self) -> &Config;
    /// Handles one received datagram; returns the sender on success, and whether the
    /// frame proved it ([`Accepted::fresh`]: transports move a peer's address only on
    /// such frames). Cannot decrypt: an encrypting engine needs
    /// [`handle_frame_mut`](Self::handle_frame_mut).
    fn handle_frame(&mut self, now: Instant, bytes: &[u8]) -> Result<Accepted, FrameError>;
    /// Handles one received datagram the engine may overwrite (encrypted frames are
    /// decrypted in place): what transports owning their receive buffer call.
    fn handle_frame_mut(&mut self, now: Instant, bytes: &mut [u8]) -> Result<Accepted, FrameError>;
    /// Handles timers that are due at `now`.
    fn handle_timeout(&mut self, now: Instant);
    /// The next deadline: call [`handle_timeout`](Self::handle_timeout) then.
    fn poll_timeout(&self) -> Option<Instant>;
    /// Writes the next frame to send into `buf` (at least `config().max_frame` bytes).
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Result<Option<Transmit>, BufferTooSmall>;
    /// Writes the next frames for one peer into `buf`: up to `max_segments` back to back,
    /// each [`Transmit::segment_size`] bytes but the last, for one system call (GSO).
    fn poll_transmit_batch(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        max_segments: usize,
    ) -> Result<Option<Transmit>, BufferTooSmall>;
    /// The next thing the application may want to know (a peer went down, a round is
    /// ready); drain it every turn so none is dropped.
    fn poll_event(&mut self) -> Option<Event>;
    /// Whether [`start_round`](Self::start_round) would succeed now (apart from the
    /// parameters themselves), and if not, why.
    fn can_start_round(&self) -> Result<(), RoundError>;
    /// Whether a round is running.
    fn is_started(&self) -> bool;
    /// Whether the running round may [`finish_round`](Self::finish_round).
    fn is_ready(&self) -> bool;
    /// Starts a round from the parameters after the local step.
    fn start_round(&mut self, now: Instant, params: &[f32]) -> Result<(), RoundError>;
    /// Ends the round, writing the reduced parameters into `params`.
    fn finish_round(&mut self, now: Instant, params: &mut [f32]) -> Result<Finished, RoundError>;
    /// Whether the engine owes its peers nothing more after its last round: none
    /// running, its last update delivered, no acknowledgement owed. Serve the network
    /// until it is, then [`leave`](Self::leave).
    fn is_drained(&self) -> bool;
    /// Leaves the cluster for good: what is queued to send tells the peers to stop
    /// waiting (send it before closing the socket); from then on the engine stays
    /// silent but for repeating that to a peer that did not hear it.
    fn leave(&mut self, now: Instant);
    /// Counters.
    fn stats(&self) -> &Stats;
    /// Whether the engine holds a model to train: `false` only while an ASAP node that
    /// joins a running cluster (`Config::join`) waits for its in-neighbours' model. Run
    /// rounds without training until it holds.
    fn has_model(&self) -> bool {
        true
    }

    /// Moves the application's round along: finishes the running round if it is ready
    /// (writing the reduced replica into `params`), or, when none is running, `start`
    /// is `true` (the application has a new local step in `params`) and the engine may
    /// start one, starts it — and finishes it at once if it is already ready (its
    /// updates came while the application computed, or it waits for nothing).
    ///
    /// Call it every turn of the run loop; whatever it returns, nothing is lost by
    /// calling it again. Errors are the application's (wrong length, non-finite
    /// parameters), never the network's.
    fn advance_round(&mut self, now: Instant, params: &mut [f32], start: bool) -> Result<Advance, RoundError> {
        let mut advance = Advance::default();
        if !self.is_started() {
            if !start || self.can_start_round().is_err() {
                return Ok(advance);
            }
            self.start_round(now, params)?;
            advance.started = Some(self.round());
        }
        if self.is_ready() {
            advance.finished = Some(self.finish_round(now, params)?);
        }
        Ok(advance)
    }

    /// The current round: the one running, or the next to start.
    fn round(&self) -> u32;
}

impl<const P: usize> Reducer for Node<'_, P> {
    fn config(&self) -> &Config {
        Node::config(self)
    }
    fn handle_frame(&mut self, now: Instant, bytes: &[u8]) -> Result<Accepted, FrameError> {
        Node::handle_frame(self, now, bytes)
    }
    fn handle_frame_mut(&mut self, now: Instant, bytes: &mut [u8]) -> Result<Accepted, FrameError> {
        Node::handle_frame_mut(self, now, bytes)
    }
    fn handle_timeout(&mut self, now: Instant) {
        Node::handle_timeout(self, now);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        Node::poll_timeout(self)
    }
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Result<Option<Transmit>, BufferTooSmall> {
        Node::poll_transmit(self, now, buf)
    }
    fn poll_transmit_batch(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        max_segments: usize,
    ) -> Result<Option<Transmit>, BufferTooSmall> {
        Node::poll_transmit_batch(self, now, buf, max_segments)
    }
    fn poll_event(&mut self) -> Option<Event> {
        Node::poll_event(self)
    }
    fn can_start_round(&self) -> Result<(), RoundError> {
        Node::can_start_round(self)
    }
    fn is_started(&self) -> bool {
        Node::is_started(self)
    }
    fn is_ready(&self) -> bool {
        Node::is_ready(self)
    }
    fn start_round(&mut self, now: Instant, params: &[f32]) -> Result<(), RoundError> {
        Node::start_round(self, now, params)
    }
    fn finish_round(&mut self, now: Instant, params: &mut [f32]) -> Result<Finished, RoundError> {
        Node::finish_round(self, now, params)
    }
    fn is_drained(&self) -> bool {
        Node::is_drained(self)
    }
    fn leave(&mut self, now: Instant) {
        Node::leave(self, now);
    }
    fn stats(&self) -> &Stats {
        Node::stats(self)
    }
    fn has_model(&self) -> bool {
        Node::has_model(self)
    }
    fn round(&self) -> u32 {
        Node::round(self)
    }
}

impl Reducer for AllReduce<'_> {
    fn config(&self) -> &Config {
        AllReduce::config(self)
    }
    fn handle_frame(&mut self, now: Instant, bytes: &[u8]) -> Result<Accepted, FrameError> {
        AllReduce::handle_frame(self, now, bytes)
    }
    fn handle_frame_mut(&mut self, now: Instant, bytes: &mut [u8]) -> Result<Accepted, FrameError> {
        AllReduce::handle_frame_mut(self, now, bytes)
    }
    fn handle_timeout(&mut self, now: Instant) {
        AllReduce::handle_timeout(self, now);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        AllReduce::poll_timeout(self)
    }
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Result<Option<Transmit>, BufferTooSmall> {
        AllReduce::poll_transmit(self, now, buf)
    }
    fn poll_transmit_batch(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        max_segments: usize,
    ) -> Result<Option<Transmit>, BufferTooSmall> {
        AllReduce::poll_transmit_batch(self, now, buf, max_segments)
    }
    fn poll_event(&mut self) -> Option<Event> {
        // The ring has no events: it has no peers to lose, only a step to wait for.
        None
    }
    fn can_start_round(&self) -> Result<(), RoundError> {
        AllReduce::can_start_round(self)
    }
    fn is_started(&self) -> bool {
        AllReduce::is_started(self)
    }
    fn is_ready(&self) -> bool {
        AllReduce::is_ready(self)
    }
    fn start_round(&mut self, now: Instant, params: &[f32]) -> Result<(), RoundError> {
        AllReduce::start_round(self, now, params)
    }
    fn finish_round(&mut self, now: Instant, params: &mut [f32]) -> Result<Finished, RoundError> {
        AllReduce::finish_round(self, now, params)
    }
    fn is_drained(&self) -> bool {
        AllReduce::is_drained(self)
    }
    fn leave(&mut self, _now: Instant) {
        // A ring cannot lose a member: nothing to announce, the neighbours time out.
    }
    fn stats(&self) -> &Stats {
        AllReduce::stats(self)
    }
    fn round(&self) -> u32 {
        AllReduce::round(self)
    }
}

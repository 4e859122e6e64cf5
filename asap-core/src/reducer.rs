//! What a transport drives: the one interface shared by ASAP's [`Node`] and the ring
//! [`AllReduce`] baseline, so a runtime (a mio event loop, smoltcp on a board, the
//! simulator) is written once and runs either engine on the same wire.
//!
//! The methods are the sans-IO families of `quinn-proto` and `smoltcp`: `handle_*` feeds
//! input in, `poll_*` takes output out, time is always an argument. The round calls
//! bracket the application's step: `start` hands the engine the parameters after a
//! local step, `finish` writes the reduced parameters back.

use crate::allreduce::AllReduce;
use crate::error::{FrameError, RoundError};
use crate::node::{Event, Node, Stats, Transmit};
use crate::time::Instant;
use crate::wire::{BufferTooSmall, NodeId};
use crate::Config;

/// A sans-IO reduce engine.
pub trait Reducer {
    /// The engine's configuration (frame size, model length, identity).
    fn config(&self) -> &Config;
    /// Handles one received datagram; returns the sender on success. Cannot decrypt:
    /// an encrypting engine needs [`handle_frame_mut`](Self::handle_frame_mut).
    fn handle_frame(&mut self, now: Instant, bytes: &[u8]) -> Result<NodeId, FrameError>;
    /// Handles one received datagram the engine may overwrite (encrypted frames are
    /// decrypted in place): what transports owning their receive buffer call.
    fn handle_frame_mut(&mut self, now: Instant, bytes: &mut [u8]) -> Result<NodeId, FrameError>;
    /// Handles timers that are due at `now`.
    fn handle_timeout(&mut self, now: Instant);
    /// The next deadline: call [`handle_timeout`](Self::handle_timeout) then.
    fn poll_timeout(&self) -> Option<Instant>;
    /// Writes the next frame to send into `buf` (at least `config().max_frame` bytes).
    fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Result<Option<Transmit>, BufferTooSmall>;
    /// Whether [`start`](Self::start) would succeed now.
    fn can_start(&self) -> bool;
    /// Whether a round is running.
    fn is_started(&self) -> bool;
    /// Whether the running round may [`finish`](Self::finish).
    fn is_ready(&self) -> bool;
    /// Starts a round from the parameters after the local step.
    fn start(&mut self, now: Instant, params: &[f32]) -> Result<(), RoundError>;
    /// Ends the round, writing the reduced parameters into `params`.
    fn finish(&mut self, now: Instant, params: &mut [f32]) -> Result<(), RoundError>;
    /// The next thing the application may want to know (a peer went down, a round is
    /// ready); drain it every turn so none is dropped.
    fn poll_event(&mut self) -> Option<Event>;
    /// Counters.
    fn stats(&self) -> &Stats;
    /// Leaves the cluster: what is queued to send tells the peers to stop waiting.
    fn leave(&mut self);
}

impl<const P: usize> Reducer for Node<'_, P> {
    fn config(&self) -> &Config {
        Node::config(self)
    }
    fn handle_frame(&mut self, now: Instant, bytes: &[u8]) -> Result<NodeId, FrameError> {
        Node::handle_frame(self, now, bytes)
    }
    fn handle_frame_mut(&mut self, now: Instant, bytes: &mut [u8]) -> Result<NodeId, FrameError> {
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
    fn can_start(&self) -> bool {
        self.can_start_round().is_ok()
    }
    fn is_started(&self) -> bool {
        Node::is_started(self)
    }
    fn is_ready(&self) -> bool {
        Node::is_ready(self)
    }
    fn start(&mut self, now: Instant, params: &[f32]) -> Result<(), RoundError> {
        self.start_round(now, params)
    }
    fn finish(&mut self, now: Instant, params: &mut [f32]) -> Result<(), RoundError> {
        self.finish_round(now, params).map(|_| ())
    }
    fn poll_event(&mut self) -> Option<Event> {
        Node::poll_event(self)
    }
    fn stats(&self) -> &Stats {
        Node::stats(self)
    }
    fn leave(&mut self) {
        Node::leave(self);
    }
}

impl Reducer for AllReduce<'_> {
    fn config(&self) -> &Config {
        AllReduce::config(self)
    }
    fn handle_frame(&mut self, now: Instant, bytes: &[u8]) -> Result<NodeId, FrameError> {
        AllReduce::handle_frame(self, now, bytes)
    }
    fn handle_frame_mut(&mut self, now: Instant, bytes: &mut [u8]) -> Result<NodeId, FrameError> {
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
    fn can_start(&self) -> bool {
        AllReduce::can_start(self)
    }
    fn is_started(&self) -> bool {
        AllReduce::is_started(self)
    }
    fn is_ready(&self) -> bool {
        self.is_done()
    }
    fn start(&mut self, now: Instant, params: &[f32]) -> Result<(), RoundError> {
        AllReduce::start(self, now, params)
    }
    fn finish(&mut self, _now: Instant, params: &mut [f32]) -> Result<(), RoundError> {
        AllReduce::finish(self, params)
    }
    fn poll_event(&mut self) -> Option<Event> {
        // The ring has no events: it has no peers to lose, only a step to wait for.
        None
    }
    fn stats(&self) -> &Stats {
        AllReduce::stats(self)
    }
    fn leave(&mut self) {
        // A ring cannot lose a member: nothing to announce, the neighbours time out.
    }
}

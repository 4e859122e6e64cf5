//! What one peer is owed besides update data — the link-level control frames (Leave,
//! Hello, Barrier, Heartbeat) — and the peer's timers in one array indexed by
//! [`Timer`], as quinn-proto keeps a connection's.

use crate::time::{Duration, Instant};

/// A per-peer timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    /// Declare the peer down: armed `peer_timeout` after its last frame.
    PeerDown,
    /// Send it a heartbeat: armed `heartbeat_interval` after the last frame sent to it.
    Heartbeat,
    /// Repeat the Hello until the peer's arrives.
    Hello,
}

impl Timer {
    const COUNT: usize = 3;
}

/// The deadlines of one peer's timers (`None`: not armed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Timers([Option<Instant>; Timer::COUNT]);

impl Timers {
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        self.0[timer as usize] = Some(at);
    }

    pub(crate) fn get(&self, timer: Timer) -> Option<Instant> {
        self.0[timer as usize]
    }

    /// Whether `timer` is armed and due at `now`.
    pub(crate) fn is_due(&self, timer: Timer, now: Instant) -> bool {
        self.get(timer).is_some_and(|at| at <= now)
    }
}

/// The link-level control frames owed to one peer. Answers to its updates (ACK,
/// Missing) are the receiver's ([`super::InEdge`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Control {
    /// This node is leaving: say so.
    pub(crate) leave: bool,
    /// Our Hello (a handshake request) is due.
    pub(crate) hello: bool,
    /// A reply to the peer's Hello is due.
    pub(crate) hello_reply: bool,
    /// The peer's Hello arrived: ours need not be repeated.
    pub(crate) hello_heard: bool,
    /// A Barrier (the rounds this node started) is due.
    pub(crate) barrier: bool,
    /// A Heartbeat is due (nothing sent for a while, or the peer must learn at once that
    /// this node moved).
    pub(crate) heartbeat: bool,
}

/// The progress frame owed: a Barrier says what a Heartbeat would, and more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owed {
    Barrier,
    Heartbeat,
}

impl Control {
    /// A new peer: our Hello is due at once.
    pub(crate) fn new() -> Self {
        Control {
            hello: true,
            ..Control::default()
        }
    }

    /// Whether a Leave is owed (the most urgent frame of all); it no longer is.
    pub(crate) fn take_leave(&mut self) -> bool {
        core::mem::take(&mut self.leave)
    }

    /// The Hello owed, if any (`Some(reply)`), which comes before any answer to
    /// updates; it no longer is. Our own Hello answers the peer's too.
    pub(crate) fn take_hello(&mut self) -> Option<bool> {
        let owed = (self.hello || self.hello_reply).then_some(!self.hello);
        self.hello = false;
        self.hello_reply = false;
        owed
    }

    /// The Barrier or Heartbeat owed (one frame says what either would), which come
    /// after the answers to updates; it is no longer owed.
    pub(crate) fn take_progress(&mut self) -> Option<Owed> {
        let owed = match (self.barrier, self.heartbeat) {
            (true, _) => Owed::Barrier,
            (false, true) => Owed::Heartbeat,
            (false, false) => return None,
        };
        self.barrier = false;
        self.heartbeat = false;
        Some(owed)
    }

    /// A frame went out to the peer at `now`: no heartbeat is needed before
    /// `now + interval`.
    pub(crate) fn sent(&mut self, timers: &mut Timers, now: Instant, interval: Duration) {
        self.heartbeat = false;
        timers.set(Timer::Heartbeat, now + interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_owed_frame_is_taken_once() {
        let mut c = Control::new();
        c.leave = true;
        c.hello_reply = true;
        c.barrier = true;
        c.heartbeat = true;
        assert!(c.take_leave());
        assert!(!c.take_leave());
        assert_eq!(c.take_hello(), Some(false), "our Hello answers theirs too");
        assert_eq!(c.take_hello(), None);
        assert_eq!(
            c.take_progress(),
            Some(Owed::Barrier),
            "a Barrier says what a heartbeat would"
        );
        assert_eq!(c.take_progress(), None);
        c.hello_reply = true;
        assert_eq!(c.take_hello(), Some(true));
        c.heartbeat = true;
        assert_eq!(c.take_progress(), Some(Owed::Heartbeat));
    }

    #[test]
    fn timers_are_due_once_armed_and_reached() {
        let mut t = Timers::default();
        let at = Instant::from_millis(5);
        assert!(!t.is_due(Timer::Hello, at));
        t.set(Timer::Hello, at);
        assert!(!t.is_due(Timer::Hello, Instant::from_millis(4)));
        assert!(t.is_due(Timer::Hello, at));
        assert!(!t.is_due(Timer::PeerDown, at), "each timer on its own");
        let mut c = Control::new();
        c.heartbeat = true;
        c.sent(&mut t, at, Duration::from_millis(100));
        assert!(!c.heartbeat);
        assert_eq!(t.get(Timer::Heartbeat), Some(Instant::from_millis(105)));
    }
}

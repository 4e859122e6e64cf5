//! NOTIFY-ACK: the per-edge sender and receiver machines.
//!
//! Sender ([`OutEdge`]), one per out-neighbour:
//!
//! ```text
//!            begin(r)               all chunks sent          on_ack(r)
//!   Idle ─────────────▶ Sending ───────────────────▶ AwaitAck ─────────▶ Idle
//!                                   (emit NOTIFY,       │  ▲
//!                                    arm timer)         │  │ Missing(r, mask): resend
//!                                                       │  │ the masked chunks, then
//!                                                       ▼  │ NOTIFY again; timer
//!                                                    (retransmit NOTIFY, back off)
//! ```
//!
//! At most one update per edge is ever in flight: a new one begins only from `Idle`,
//! i.e. after the receiver's ACK (or after the peer was declared down).
//!
//! Receiver ([`InEdge`]), one per in-neighbour: remembers the last round it consumed and
//! the update being received (round, weight, chunks seen in a bitmap). Chunks are folded
//! into the node's single accumulator as they arrive; the update is ACKed when the node
//! mixes it in (`finish_round`), never before, so a sender's next update can never land
//! on top of one that was not consumed.

use crate::time::{Duration, Instant};

/// Sender state of one edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SendState {
    /// Nothing in flight; a new update may begin.
    Idle,
    /// Sending chunk `next` and the ones after it, then NOTIFY.
    Sending { next: u32 },
    /// NOTIFY sent; waiting for the ACK.
    AwaitAck,
}

/// What the sender wants to put on the wire next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Emit {
    Chunk(u32),
    Notify,
}

/// Sender side of one edge.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OutEdge {
    pub(crate) state: SendState,
    /// Round of the update in flight (meaningless while `Idle`).
    pub(crate) round: u32,
    /// Chunks the receiver reported missing: bit `i` is chunk `resend_base + i`.
    resend_base: u32,
    resend_mask: u64,
    /// The NOTIFY must be (re)sent.
    notify_due: bool,
    retransmit_at: Option<Instant>,
    rto: Duration,
}

/// What an ACK or Missing frame did to the sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AckOutcome {
    /// The in-flight update was acknowledged: the edge is idle again.
    Acked,
    /// The frame refers to no update in flight (late duplicate): ignored.
    Stale,
    /// The receiver reported its progress.
    Progress,
}

impl OutEdge {
    pub(crate) const fn new(rto: Duration) -> Self {
        OutEdge {
            state: SendState::Idle,
            round: 0,
            resend_base: 0,
            resend_mask: 0,
            notify_due: false,
            retransmit_at: None,
            rto,
        }
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.state == SendState::Idle
    }

    /// Starts sending the update of `round`. Only legal from `Idle`.
    pub(crate) fn begin(&mut self, round: u32, rto: Duration) {
        debug_assert!(self.is_idle());
        *self = OutEdge {
            state: SendState::Sending { next: 0 },
            round,
            ..OutEdge::new(rto)
        };
    }

    /// Gives up on the update in flight (the receiver was declared down).
    pub(crate) fn abandon(&mut self, rto: Duration) {
        *self = OutEdge::new(rto);
    }

    /// The next frame to send, if any. `retransmission` tells whether it repeats one.
    pub(crate) fn next(&mut self, chunks: u32, now: Instant) -> Option<(Emit, bool)> {
        match self.state {
            SendState::Idle => None,
            SendState::Sending { next } if next < chunks => {
                self.state = SendState::Sending { next: next + 1 };
                Some((Emit::Chunk(next), false))
            }
            SendState::Sending { .. } => {
                self.state = SendState::AwaitAck;
                self.arm(now);
                Some((Emit::Notify, false))
            }
            SendState::AwaitAck if self.resend_mask != 0 => {
                let bit = self.resend_mask.trailing_zeros();
                self.resend_mask &= self.resend_mask - 1;
                if self.resend_mask == 0 {
                    self.notify_due = true;
                }
                Some((Emit::Chunk(self.resend_base + bit), true))
            }
            SendState::AwaitAck if self.notify_due => {
                self.notify_due = false;
                self.arm(now);
                Some((Emit::Notify, true))
            }
            SendState::AwaitAck => None,
        }
    }

    fn arm(&mut self, now: Instant) {
        self.retransmit_at = Some(now + self.rto);
    }

    /// The receiver consumed `round`.
    pub(crate) fn on_ack(&mut self, round: u32, rto: Duration) -> AckOutcome {
        if self.state != SendState::Idle && round == self.round {
            self.abandon(rto);
            AckOutcome::Acked
        } else {
            AckOutcome::Stale
        }
    }

    /// The receiver has `round` in progress and misses the chunks in `mask` from `base`.
    /// Chunks past `chunks` are ignored. The receiver answered, so the path works: the
    /// backoff restarts from `rto` (a lost ACK later costs one short timeout, not the cap).
    pub(crate) fn on_missing(&mut self, round: u32, base: u32, mask: u64, chunks: u32, rto: Duration) -> AckOutcome {
        if self.state != SendState::AwaitAck || round != self.round {
            return AckOutcome::Stale;
        }
        self.rto = rto;
        let valid = match chunks.saturating_sub(base) {
            0 => 0,
            n if n >= 64 => u64::MAX,
            n => (1u64 << n) - 1,
        };
        self.resend_base = base;
        self.resend_mask = mask & valid;
        AckOutcome::Progress
    }

    /// Deadline of the retransmission timer.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match self.state {
            SendState::AwaitAck if !self.notify_due && self.resend_mask == 0 => self.retransmit_at,
            _ => None,
        }
    }

    /// Fires the retransmission timer if it expired: NOTIFY again, back off.
    pub(crate) fn on_timeout(&mut self, now: Instant, cap: Duration) -> bool {
        match self.deadline() {
            Some(at) if at <= now => {
                self.notify_due = true;
                self.retransmit_at = None;
                self.rto = self.rto.doubled_up_to(cap);
                true
            }
            _ => false,
        }
    }
}

/// The update an in-edge is receiving.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Incoming {
    pub(crate) round: u32,
    /// Weight of the first chunk; every chunk must carry the same.
    pub(crate) weight: f32,
    /// Chunks folded so far.
    pub(crate) received: u32,
    /// A chunk broke a rule: the rest of the update is dropped.
    pub(crate) rejected: bool,
    /// The sender's NOTIFY arrived.
    pub(crate) notified: bool,
}

impl Incoming {
    /// Arrived in full, or rejected and announced complete: nothing more will come.
    pub(crate) fn finished(&self, chunks: u32) -> bool {
        self.received == chunks || (self.rejected && self.notified)
    }
}

/// Receiver side of one edge.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct InEdge {
    /// The last round consumed (and ACKed).
    pub(crate) consumed: Option<u32>,
    /// The update being received.
    pub(crate) incoming: Option<Incoming>,
}

/// Where a frame for `round` stands relative to an in-edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Place {
    /// Already consumed (a duplicate or a retransmission after a lost ACK).
    Consumed,
    /// Older than the update in progress: a delayed frame.
    Stale,
    /// The update in progress.
    Current,
    /// A newer update: the one in progress (if any) was abandoned by its sender.
    Newer,
}

impl InEdge {
    pub(crate) fn place(&self, round: u32) -> Place {
        if self.consumed.is_some_and(|c| round <= c) {
            return Place::Consumed;
        }
        match self.incoming {
            Some(inc) if round < inc.round => Place::Stale,
            Some(inc) if round == inc.round => Place::Current,
            _ => Place::Newer,
        }
    }

    /// Begins receiving `round`; the caller clears the chunk bitmap.
    pub(crate) fn begin(&mut self, round: u32, weight: f32) -> &mut Incoming {
        self.incoming.insert(Incoming {
            round,
            weight,
            received: 0,
            rejected: false,
            notified: false,
        })
    }
}

/// Chunk bitmaps live in one caller-provided slice, `words_per_peer` words each.
pub(crate) mod bits {
    pub(crate) fn get(words: &[u32], i: u32) -> bool {
        words.get((i / 32) as usize).is_some_and(|w| w & (1 << (i % 32)) != 0)
    }

    pub(crate) fn set(words: &mut [u32], i: u32) {
        if let Some(w) = words.get_mut((i / 32) as usize) {
            *w |= 1 << (i % 32);
        }
    }

    /// The first missing chunk below `chunks` and a mask of the missing ones from it.
    pub(crate) fn missing(words: &[u32], chunks: u32) -> (u32, u64) {
        let Some(base) = (0..chunks).find(|&i| !get(words, i)) else {
            return (0, 0);
        };
        let mask = (0..64u32)
            .take_while(|k| base + k < chunks)
            .filter(|&k| !get(words, base + k))
            .fold(0u64, |m, k| m | 1 << k);
        (base, mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RTO: Duration = Duration::from_millis(10);
    const CAP: Duration = Duration::from_millis(40);
    const T0: Instant = Instant::from_millis(1_000);

    /// Fixture: an edge that sent all 3 chunks of round 7 and its NOTIFY at `T0`.
    fn awaiting_ack() -> OutEdge {
        let mut e = OutEdge::new(RTO);
        e.begin(7, RTO);
        for _ in 0..4 {
            e.next(3, T0);
        }
        assert_eq!(e.state, SendState::AwaitAck);
        e
    }

    #[test]
    fn sends_chunks_in_order_then_notify_then_nothing() {
        let mut e = OutEdge::new(RTO);
        assert_eq!(e.next(3, T0), None, "idle edge sends nothing");
        e.begin(7, RTO);
        assert_eq!(e.next(3, T0), Some((Emit::Chunk(0), false)));
        assert_eq!(e.next(3, T0), Some((Emit::Chunk(1), false)));
        assert_eq!(e.next(3, T0), Some((Emit::Chunk(2), false)));
        assert_eq!(e.next(3, T0), Some((Emit::Notify, false)));
        assert_eq!(e.next(3, T0), None, "nothing new before the ACK");
        assert_eq!(e.deadline(), Some(T0 + RTO));
    }

    #[test]
    fn ack_for_the_round_in_flight_frees_the_edge() {
        let mut e = awaiting_ack();
        assert_eq!(e.on_ack(6, RTO), AckOutcome::Stale);
        assert!(!e.is_idle());
        assert_eq!(e.on_ack(7, RTO), AckOutcome::Acked);
        assert!(e.is_idle());
        assert_eq!(e.on_ack(7, RTO), AckOutcome::Stale, "duplicate ACK");
        assert_eq!(e.deadline(), None);
    }

    #[test]
    fn timeout_retransmits_notify_with_backoff() {
        let mut e = awaiting_ack();
        assert!(!e.on_timeout(T0 + Duration::from_millis(9), CAP));
        assert!(e.on_timeout(T0 + RTO, CAP));
        assert_eq!(e.deadline(), None, "timer disarmed until the NOTIFY goes out");
        let t1 = T0 + RTO;
        assert_eq!(e.next(3, t1), Some((Emit::Notify, true)));
        assert_eq!(e.deadline(), Some(t1 + Duration::from_millis(20)));
        assert!(e.on_timeout(t1 + Duration::from_millis(20), CAP));
        let t2 = t1 + Duration::from_millis(20);
        e.next(3, t2);
        assert_eq!(e.deadline(), Some(t2 + CAP));
        assert!(e.on_timeout(t2 + CAP, CAP));
        e.next(3, t2 + CAP);
        assert_eq!(e.deadline(), Some(t2 + CAP + CAP), "backoff capped");
    }

    #[test]
    fn missing_chunks_are_resent_then_notify() {
        let mut e = awaiting_ack();
        assert_eq!(e.on_missing(6, 0, 0b1, 3, RTO), AckOutcome::Stale);
        // Bits past the last chunk (bit 5 = chunk 6) are ignored.
        assert_eq!(e.on_missing(7, 1, 0b10_0011, 3, RTO), AckOutcome::Progress);
        assert_eq!(e.next(3, T0), Some((Emit::Chunk(1), true)));
        assert_eq!(e.next(3, T0), Some((Emit::Chunk(2), true)));
        assert_eq!(e.next(3, T0), Some((Emit::Notify, true)));
        assert_eq!(e.next(3, T0), None);
    }

    #[test]
    fn missing_with_empty_mask_only_waits() {
        let mut e = awaiting_ack();
        assert_eq!(e.on_missing(7, 0, 0, 3, RTO), AckOutcome::Progress);
        assert_eq!(e.next(3, T0), None);
        assert_eq!(e.deadline(), Some(T0 + RTO), "keeps polling with NOTIFY on the timer");
    }

    #[test]
    fn abandon_returns_to_idle() {
        let mut e = awaiting_ack();
        e.abandon(RTO);
        assert!(e.is_idle());
        assert_eq!(e.deadline(), None);
    }

    #[test]
    fn receiver_places_rounds() {
        let mut r = InEdge::default();
        assert_eq!(r.place(0), Place::Newer);
        r.begin(4, 0.5);
        assert_eq!(r.place(3), Place::Stale);
        assert_eq!(r.place(4), Place::Current);
        assert_eq!(r.place(5), Place::Newer);
        r.consumed = Some(4);
        r.incoming = None;
        assert_eq!(r.place(4), Place::Consumed);
        assert_eq!(r.place(2), Place::Consumed);
        assert_eq!(r.place(5), Place::Newer);
    }

    #[test]
    fn bitmap_reports_missing_window() {
        let mut w = [0u32; 3];
        assert_eq!(bits::missing(&w, 70), (0, u64::MAX));
        for i in 0..70 {
            if i != 33 && i != 69 {
                bits::set(&mut w, i);
            }
        }
        assert_eq!(bits::missing(&w, 70), (33, 1 | 1 << 36));
        bits::set(&mut w, 33);
        bits::set(&mut w, 69);
        assert_eq!(bits::missing(&w, 70), (0, 0));
        assert!(!bits::get(&w, 1_000), "out of range reads as absent");
        bits::set(&mut w, 1_000);
    }
}

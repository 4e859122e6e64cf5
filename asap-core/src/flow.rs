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

use crate::config::Config;
use crate::time::{Duration, Instant};

mod link;

pub(crate) use link::{Control, Owed, Timer, Timers};

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

/// Bounds of the retransmission timeout, from the node's configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RtoBounds {
    /// Before the first round-trip sample.
    pub(crate) initial: Duration,
    pub(crate) min: Duration,
    pub(crate) max: Duration,
}

impl RtoBounds {
    /// The bounds a configuration sets.
    pub(crate) fn of(config: &Config) -> Self {
        RtoBounds {
            initial: config.retransmit_initial,
            min: config.retransmit_min,
            max: config.retransmit_max,
        }
    }
}

/// Round-trip estimate of one edge (RFC 6298: smoothed RTT and variation, in µs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Rtt {
    srtt: u64,
    rttvar: u64,
    sampled: bool,
}

impl Rtt {
    pub(crate) fn sample(&mut self, r: Duration) {
        let r = r.total_micros();
        if self.sampled {
            self.rttvar = (3 * self.rttvar + self.srtt.abs_diff(r)) / 4;
            self.srtt = (7 * self.srtt + r) / 8;
        } else {
            *self = Rtt {
                srtt: r,
                rttvar: r / 2,
                sampled: true,
            };
        }
    }

    /// The smoothed round-trip time, once measured.
    pub(crate) fn smoothed(&self) -> Option<Duration> {
        self.sampled.then_some(Duration::from_micros(self.srtt))
    }

    /// The timeout to use: `srtt + 4·rttvar` within the bounds.
    pub(crate) fn rto(&self, bounds: RtoBounds) -> Duration {
        if !self.sampled {
            return bounds.initial;
        }
        let rto = Duration::from_micros(self.srtt.saturating_add(self.rttvar.saturating_mul(4)));
        rto.max(bounds.min).min(bounds.max)
    }
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
    /// The receiver reported every chunk of the update in flight: the snapshot is no
    /// longer needed for it, only the ACK is awaited.
    delivered: bool,
    retransmit_at: Option<Instant>,
    /// Current timeout, backed off from `rtt.rto()` by doubling.
    rto: Duration,
    /// When the one unanswered NOTIFY went out; `None` when none is, or when several
    /// are (their answers could not be told apart: Karn's rule).
    probe: Option<Instant>,
    unanswered: u8,
    rtt: Rtt,
    bounds: RtoBounds,
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
    pub(crate) const fn new(bounds: RtoBounds) -> Self {
        OutEdge {
            state: SendState::Idle,
            round: 0,
            resend_base: 0,
            resend_mask: 0,
            notify_due: false,
            delivered: false,
            retransmit_at: None,
            rto: bounds.initial,
            probe: None,
            unanswered: 0,
            rtt: Rtt {
                srtt: 0,
                rttvar: 0,
                sampled: false,
            },
            bounds,
        }
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.state == SendState::Idle
    }

    /// Nothing in flight needs the sender's snapshot any more (idle, or every chunk
    /// arrived and only the ACK is awaited).
    pub(crate) fn releases_snapshot(&self) -> bool {
        self.is_idle() || self.delivered
    }

    /// The round-trip estimate.
    pub(crate) fn rtt(&self) -> Rtt {
        self.rtt
    }

    /// Starts sending the update of `round`. Only legal from `Idle`.
    pub(crate) fn begin(&mut self, round: u32) {
        debug_assert!(self.is_idle());
        self.abandon();
        self.state = SendState::Sending { next: 0 };
        self.round = round;
    }

    /// Gives up on the update in flight (acknowledged, or the receiver is down). The
    /// round-trip estimate survives.
    pub(crate) fn abandon(&mut self) {
        *self = OutEdge {
            rtt: self.rtt,
            ..OutEdge::new(self.bounds)
        };
        self.rto = self.rtt.rto(self.bounds);
    }

    /// The next frame to send, if any, and whether it repeats one.
    pub(crate) fn next(&mut self, chunks: u32, now: Instant) -> Option<(Emit, bool)> {
        match self.state {
            SendState::Idle => None,
            SendState::Sending { next } if next < chunks => {
                self.state = SendState::Sending { next: next + 1 };
                Some((Emit::Chunk(next), false))
            }
            SendState::Sending { .. } => {
                self.state = SendState::AwaitAck;
                self.notify(now);
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
                self.notify(now);
                Some((Emit::Notify, true))
            }
            SendState::AwaitAck => None,
        }
    }

    fn notify(&mut self, now: Instant) {
        self.retransmit_at = Some(now + self.rto);
        self.probe = (self.unanswered == 0).then_some(now);
        self.unanswered = self.unanswered.saturating_add(1);
    }

    /// The receiver consumed `round`. (An ACK comes when the receiver finishes its round,
    /// not at once, so it is no round-trip sample.)
    pub(crate) fn on_ack(&mut self, round: u32) -> AckOutcome {
        if self.state != SendState::Idle && round == self.round {
            self.abandon();
            AckOutcome::Acked
        } else {
            AckOutcome::Stale
        }
    }

    /// The receiver has `round` in progress and misses the chunks in `mask` from `base`
    /// (chunks past `chunks` are ignored). It answers a NOTIFY at once, so the answer to
    /// a single NOTIFY times the round trip. When chunks are missing the path works and
    /// the backoff restarts; when none are, the receiver is only busy, and the backoff
    /// goes on growing so a slow receiver is not polled at the round-trip rate.
    pub(crate) fn on_missing(&mut self, round: u32, base: u32, mask: u64, chunks: u32, now: Instant) -> AckOutcome {
        if self.state != SendState::AwaitAck || round != self.round {
            return AckOutcome::Stale;
        }
        if let (Some(sent), 1) = (self.probe, self.unanswered) {
            self.rtt.sample(now - sent);
        }
        self.probe = None;
        self.unanswered = 0;
        let valid = match chunks.saturating_sub(base) {
            0 => 0,
            n if n >= 64 => u64::MAX,
            n => (1u64 << n) - 1,
        };
        self.resend_base = base;
        self.resend_mask = mask & valid;
        self.delivered = self.resend_mask == 0;
        if self.resend_mask != 0 {
            self.rto = self.rtt.rto(self.bounds);
        }
        AckOutcome::Progress
    }

    /// The receiver moved on past the update's round, which it finishes by ACKing the
    /// update, yet no ACK came: it was lost. The timer may have backed off far (to
    /// `max`) while the receiver answered that it was busy; that wait is over, so the
    /// NOTIFY is repeated now and the timeout starts again from the round trip. Returns
    /// whether a NOTIFY was scheduled (not when one is due already, or chunks are).
    pub(crate) fn on_receiver_progress(&mut self) -> bool {
        if self.state != SendState::AwaitAck || self.notify_due || self.resend_mask != 0 {
            return false;
        }
        self.notify_due = true;
        self.retransmit_at = None;
        self.rto = self.rtt.rto(self.bounds);
        true
    }

    /// Deadline of the retransmission timer.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match self.state {
            SendState::AwaitAck if !self.notify_due && self.resend_mask == 0 => self.retransmit_at,
            _ => None,
        }
    }

    /// Fires the retransmission timer if it expired: NOTIFY again, back off.
    pub(crate) fn on_timeout(&mut self, now: Instant) -> bool {
        match self.deadline() {
            Some(at) if at <= now => {
                self.notify_due = true;
                self.retransmit_at = None;
                self.rto = self.rto.doubled_up_to(self.bounds.max);
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
    /// The sender moved on (a newer round, or it restarted) after some chunks were
    /// already folded: they are mixed at the next finish, and only then is the newer
    /// update accepted (folding both would count the sender twice).
    pub(crate) superseded: bool,
}

impl Incoming {
    /// Arrived in full, or rejected and announced complete: nothing more will come.
    pub(crate) fn finished(&self, chunks: u32) -> bool {
        self.received == chunks || (self.rejected && self.notified)
    }
}

/// Receiver side of one edge: the update being received, and the answers owed to its
/// sender (ACK, progress report), which a node sends in that order of urgency.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct InEdge {
    /// The last round consumed (and ACKed).
    pub(crate) consumed: Option<u32>,
    /// The update being received.
    pub(crate) incoming: Option<Incoming>,
    /// An ACK owed for this round (consumed, or passed over).
    pub(crate) ack_due: Option<u32>,
    /// An update consumed whose ACK waits for the round before this peer's next turn to
    /// send to us (time-varying graphs): `(round consumed, ACK at the finish of)`.
    pub(crate) deferred_ack: Option<(u32, u32)>,
    /// A NOTIFY that came before this node reached its round, answered when it does.
    pub(crate) early_notify: Option<u32>,
    /// A progress report (Missing) owed for this round.
    pub(crate) missing_due: Option<u32>,
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
            // A superseded update (its sender moved on, or restarted and counts rounds
            // anew) says nothing about which rounds are old.
            Some(inc) if inc.superseded => Place::Newer,
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
            superseded: false,
        })
    }

    /// Nothing is owed to the sender: no ACK and no progress report waiting.
    pub(crate) fn owes_nothing(&self) -> bool {
        self.ack_due.is_none() && self.missing_due.is_none()
    }

    /// The update of `update` (complete) was mixed in at the finish of `current`. It is
    /// acknowledged, unless the sender's next turn to send (`next_turn`, on
    /// time-varying graphs) is not the next round: acknowledging now would let its next
    /// update land in a round it does not belong to, so the ACK waits for the round
    /// before that turn. The ACK (or the deferral) answers any progress request.
    pub(crate) fn consume(&mut self, update: u32, current: u32, next_turn: Option<u32>) {
        self.consumed = Some(update);
        self.incoming = None;
        match next_turn {
            Some(turn) if turn > current.wrapping_add(1) => self.deferred_ack = Some((update, turn - 1)),
            _ => self.ack_due = Some(update),
        }
        self.missing_due = self.missing_due.filter(|&r| r != update);
    }

    /// The node moved to `round` (the next one, or further when catching up). When it
    /// `drops_late` (exact rounds, no push-sum), an update of a round now passed is
    /// acknowledged and dropped (returns `true`: it came late); an ACK deferred to a
    /// round now passed is due; an early NOTIFY of this round is answered, one of a
    /// passed round acknowledged — or under push-sum asked for in full (its chunks were
    /// dropped as early, and its sender gave their mass up: they are mixed late).
    pub(crate) fn advance(&mut self, round: u32, drops_late: bool) -> bool {
        let mut late = false;
        if drops_late {
            if let Some(inc) = self.incoming.filter(|inc| inc.round < round) {
                self.consumed = Some(self.consumed.map_or(inc.round, |c| c.max(inc.round)));
                self.incoming = None;
                self.ack_due = Some(inc.round);
                late = true;
            }
        }
        if let Some((acked, _)) = self.deferred_ack.filter(|&(_, at)| at < round) {
            self.ack_due = Some(acked);
            self.deferred_ack = None;
        }
        match self.early_notify {
            Some(r) if r == round => {
                self.early_notify = None;
                self.missing_due = Some(round);
            }
            Some(r) if r < round && !drops_late => {
                self.early_notify = None;
                self.missing_due = Some(r);
            }
            Some(r) if r < round => {
                self.early_notify = None;
                self.consumed = Some(self.consumed.map_or(r, |c| c.max(r)));
                self.ack_due = Some(r);
            }
            _ => {}
        }
        late
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

    pub(crate) fn clear(words: &mut [u32], i: u32) {
        if let Some(w) = words.get_mut((i / 32) as usize) {
            *w &= !(1 << (i % 32));
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
    const BOUNDS: RtoBounds = RtoBounds {
        initial: RTO,
        min: Duration::from_millis(1),
        max: CAP,
    };
    const T0: Instant = Instant::from_millis(1_000);

    /// Fixture: an edge that sent all 3 chunks of round 7 and its NOTIFY at `T0`.
    fn awaiting_ack() -> OutEdge {
        let mut e = OutEdge::new(BOUNDS);
        e.begin(7);
        for _ in 0..4 {
            e.next(3, T0);
        }
        assert_eq!(e.state, SendState::AwaitAck);
        e
    }

    #[test]
    fn sends_chunks_in_order_then_notify_then_nothing() {
        let mut e = OutEdge::new(BOUNDS);
        assert_eq!(e.next(3, T0), None, "idle edge sends nothing");
        e.begin(7);
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
        assert_eq!(e.on_ack(6), AckOutcome::Stale);
        assert!(!e.is_idle());
        assert_eq!(e.on_ack(7), AckOutcome::Acked);
        assert!(e.is_idle());
        assert_eq!(e.on_ack(7), AckOutcome::Stale, "duplicate ACK");
        assert_eq!(e.deadline(), None);
    }

    #[test]
    fn timeout_retransmits_notify_with_backoff() {
        let mut e = awaiting_ack();
        assert!(!e.on_timeout(T0 + Duration::from_millis(9)));
        assert!(e.on_timeout(T0 + RTO));
        assert_eq!(e.deadline(), None, "timer disarmed until the NOTIFY goes out");
        let t1 = T0 + RTO;
        assert_eq!(e.next(3, t1), Some((Emit::Notify, true)));
        assert_eq!(e.deadline(), Some(t1 + Duration::from_millis(20)));
        assert!(e.on_timeout(t1 + Duration::from_millis(20)));
        let t2 = t1 + Duration::from_millis(20);
        e.next(3, t2);
        assert_eq!(e.deadline(), Some(t2 + CAP));
        assert!(e.on_timeout(t2 + CAP));
        e.next(3, t2 + CAP);
        assert_eq!(e.deadline(), Some(t2 + CAP + CAP), "backoff capped");
    }

    #[test]
    fn missing_chunks_are_resent_then_notify() {
        let mut e = awaiting_ack();
        assert_eq!(e.on_missing(6, 0, 0b1, 3, T0), AckOutcome::Stale);
        // Bits past the last chunk (bit 5 = chunk 6) are ignored.
        assert_eq!(e.on_missing(7, 1, 0b10_0011, 3, T0), AckOutcome::Progress);
        assert_eq!(e.next(3, T0), Some((Emit::Chunk(1), true)));
        assert_eq!(e.next(3, T0), Some((Emit::Chunk(2), true)));
        assert_eq!(e.next(3, T0), Some((Emit::Notify, true)));
        assert_eq!(e.next(3, T0), None);
    }

    #[test]
    fn missing_with_empty_mask_only_waits() {
        let mut e = awaiting_ack();
        assert!(!e.releases_snapshot());
        assert_eq!(e.on_missing(7, 0, 0, 3, T0), AckOutcome::Progress);
        assert!(e.releases_snapshot(), "every chunk arrived");
        assert_eq!(e.next(3, T0), None);
        assert_eq!(e.deadline(), Some(T0 + RTO), "keeps polling with NOTIFY on the timer");
    }

    #[test]
    fn abandon_returns_to_idle() {
        let mut e = awaiting_ack();
        e.abandon();
        assert!(e.is_idle());
        assert_eq!(e.deadline(), None);
    }

    #[test]
    fn answer_to_a_single_notify_times_the_round_trip() {
        let mut e = awaiting_ack();
        let answer = T0 + Duration::from_millis(2);
        e.on_missing(7, 0, 0b1, 3, answer);
        // First sample r = 2 ms: srtt 2 ms, rttvar 1 ms, RTO 2 + 4·1 = 6 ms, used at once
        // because a chunk is missing.
        assert_eq!(e.rtt().rto(BOUNDS), Duration::from_millis(6));
        assert_eq!(e.next(3, answer), Some((Emit::Chunk(0), true)));
        assert_eq!(e.next(3, answer), Some((Emit::Notify, true)));
        assert_eq!(e.deadline(), Some(answer + Duration::from_millis(6)));
        // Two NOTIFYs out (a timeout): the answer could be to either, so no sample.
        assert!(e.on_timeout(answer + Duration::from_millis(6)));
        let t = answer + Duration::from_millis(6);
        e.next(3, t);
        e.on_missing(7, 0, 0, 3, t + Duration::from_millis(30));
        assert_eq!(e.rtt().rto(BOUNDS), Duration::from_millis(6));
        // Nothing missing: the receiver is busy, the backoff keeps growing.
        assert_eq!(e.deadline(), Some(t + Duration::from_millis(12)));
        // The estimate survives the ACK and sets the next update's timeout.
        e.on_ack(7);
        e.begin(8);
        for _ in 0..4 {
            e.next(3, t);
        }
        assert_eq!(e.deadline(), Some(t + Duration::from_millis(6)));
    }

    #[test]
    fn receiver_progress_repeats_notify_at_once_from_the_round_trip() {
        let mut e = OutEdge::new(BOUNDS);
        assert!(!e.on_receiver_progress(), "idle: nothing to ask for");
        e.begin(7);
        assert!(!e.on_receiver_progress(), "still sending");
        let mut e = awaiting_ack();
        // The receiver is busy: the timer backs off to its cap.
        let mut t = T0;
        for _ in 0..3 {
            t = e.deadline().unwrap();
            assert!(e.on_timeout(t));
            assert_eq!(e.next(3, t), Some((Emit::Notify, true)));
        }
        assert_eq!(e.deadline(), Some(t + CAP));
        // It moved on: NOTIFY now, and the timeout is the round trip's again.
        assert!(e.on_receiver_progress());
        assert_eq!(e.deadline(), None, "due now");
        assert!(!e.on_receiver_progress(), "already due");
        assert_eq!(e.next(3, t), Some((Emit::Notify, true)));
        assert_eq!(e.deadline(), Some(t + RTO));
        // Chunks to resend come first; their NOTIFY follows anyway.
        e.on_missing(7, 0, 0b1, 3, t);
        assert!(!e.on_receiver_progress());
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
        // A partial update its sender abandoned (it restarted, say) orders nothing: a
        // restarted sender's round 0 is new, not stale.
        r.consumed = None;
        r.begin(4, 0.5).superseded = true;
        assert_eq!(r.place(0), Place::Newer);
        assert_eq!(r.place(4), Place::Newer);
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

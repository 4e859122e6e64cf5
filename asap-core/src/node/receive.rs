//! Frames in: what a decoded frame from a peer does to the per-edge machines, the
//! mixing layer and the peer's standing (up, left, restarted, incompatible).

use super::Node;
use crate::compress;
use crate::error::{FrameError, Violation};
use crate::flow::{self, bits, AckOutcome, InEdge, Place, Timer};
use crate::mixing;
use crate::output::{Accepted, Event, Stats};
use crate::time::Instant;
use crate::wire::{self, DecodeError, Encoding, F32Le, Header, Kind};

impl<const P: usize> Node<'_, P> {
    pub(super) fn receive(
        &mut self,
        now: Instant,
        decoded: Result<(wire::Frame<'_>, usize), DecodeError>,
        len: usize,
    ) -> Result<Accepted, FrameError> {
        let (frame, _) = decoded.inspect_err(|e| self.stats.count_undecodable(e))?;
        let result = self.handle_decoded(now, frame.header, frame.payload);
        match result {
            Ok(_) => {
                self.stats.frames_received += 1;
                self.stats.bytes_received += len as u64;
            }
            Err(FrameError::Violation(..)) => {}
            Err(FrameError::Replay(_)) => self.stats.replays += 1,
            Err(_) => self.stats.frames_refused += 1,
        }
        self.check_progress(now);
        result.map(|fresh| Accepted {
            from: frame.header.from,
            fresh,
        })
    }

    /// A decoded frame: checks it is for this node from a peer (of this incarnation, not
    /// a replay), then handles it. `Ok(true)`: it proved its sender and was new (see
    /// [`Accepted::fresh`]).
    pub(super) fn handle_decoded(&mut self, now: Instant, h: Header, payload: &[u8]) -> Result<bool, FrameError> {
        if !h.integrity.protects_as(self.config.integrity()) {
            return Err(FrameError::Integrity);
        }
        if h.cluster != self.config.cluster {
            return Err(FrameError::WrongCluster(h.cluster));
        }
        if h.to != self.config.id {
            return Err(FrameError::Misaddressed(h.to));
        }
        let i = self
            .peers
            .iter()
            .position(|p| p.spec.id == h.from)
            .ok_or(FrameError::UnknownPeer(h.from))?;
        match self.peers[i].incarnation {
            // A frame of the peer's previous life, still in flight: nothing to do with
            // the peer as it is now.
            Some(known) if h.incarnation < known => {
                self.stats.stale += 1;
                return Ok(false);
            }
            Some(known) if h.incarnation > known => self.peer_restarted(i, h.incarnation),
            Some(_) => {}
            None => self.peers[i].incarnation = Some(h.incarnation),
        }
        // Authenticated (the tag verified): a number seen before is a replay.
        let fresh = match h.integrity.seq() {
            Some(seq) if self.peers[i].replay.accept(seq).is_err() => return Err(FrameError::Replay(h.from)),
            Some(_) => true,
            None => false,
        };
        if self.peers[i].left {
            // It left for good in this life: a frame it sent before its Leave and
            // delivered after it must not bring it back (only a new incarnation does).
            self.stats.stale += 1;
            return Ok(fresh);
        }
        self.handle_from_peer(now, i, h, payload).map(|()| fresh)
    }

    /// A frame of peer `i`, as it is now.
    fn handle_from_peer(&mut self, now: Instant, i: usize, h: Header, payload: &[u8]) -> Result<(), FrameError> {
        if self.left {
            // Silent after leaving: a peer's Leave is noted, anything else means the
            // peer did not hear ours, so it gets it again.
            if h.kind == Kind::Leave {
                self.peer_left(i);
            } else {
                self.peers[i].control.leave = true;
            }
            return Ok(());
        }
        if let Kind::Hello {
            model_len,
            chunk_len,
            encoding,
            reply,
        } = h.kind
        {
            self.handle_hello(i, (model_len, chunk_len, encoding), reply)?;
        } else if self.peers[i].incompatible {
            return Err(FrameError::Incompatible(h.from));
        }
        let p = &mut self.peers[i];
        p.timers.set(Timer::PeerDown, now + self.config.peer_timeout);
        if !p.up || p.left || !p.heard {
            p.up = true;
            p.heard = true;
            // (A restart, above, is what brings a peer that left back.)
            p.left = false;
            self.push_event(Event::PeerUp(h.from));
            self.resume_sending(i, true);
        }
        // What the frame says of the rounds the peer started: an update or NOTIFY is of
        // a round it started, a heartbeat or barrier counts the rounds it started.
        match h.kind {
            Kind::Update { .. } | Kind::Notify { .. } => self.peer_started(i, h.round.saturating_add(1)),
            Kind::Heartbeat | Kind::Barrier => self.peer_started(i, h.round),
            _ => {}
        }
        let p = &mut self.peers[i];
        match h.kind {
            Kind::Hello { .. } | Kind::Heartbeat | Kind::Barrier => Ok(()),
            Kind::Update {
                chunk,
                chunks,
                weight,
                encoding,
            } => self.handle_update(i, h.round, chunk, chunks, weight, encoding, payload),
            Kind::Notify { chunks } => self.handle_notify(i, h.round, chunks),
            Kind::Ack => {
                match p.out.on_ack(h.round) {
                    AckOutcome::Stale => self.stats.stale += 1,
                    // An edge skipped this round because it was busy (asynchronous
                    // modes) gets the round's update now.
                    AckOutcome::Acked => self.resume_sending(i, false),
                    AckOutcome::Progress => {}
                }
                Ok(())
            }
            Kind::Missing { base, mask } => {
                if p.out.on_missing(h.round, base, mask, self.chunks, now) == AckOutcome::Stale {
                    self.stats.stale += 1;
                }
                Ok(())
            }
            Kind::Leave => {
                self.peer_left(i);
                Ok(())
            }
        }
    }

    /// Peer `i` sent a Leave: it is neither waited for nor sent to until it speaks again.
    pub(super) fn peer_left(&mut self, i: usize) {
        let p = &mut self.peers[i];
        if p.left {
            return;
        }
        let was_up = p.up;
        p.left = true;
        p.up = false;
        p.choco.excluded = true;
        p.out.abandon();
        // Not delivered: if it comes back between rounds, it gets the update again.
        p.sent_round = None;
        if was_up {
            self.stats.peers_down += 1;
            let id = p.spec.id;
            self.push_event(Event::PeerDown(id));
        }
    }

    /// Peer `i` announced it started `rounds` rounds. Once it started a round past the
    /// one of our update in flight to it, it finished that round: it consumed our update
    /// (or passed it over) and acknowledged it, so an ACK still missing was lost (or is
    /// deferred to its next turn). The edge asks again at once rather than when its
    /// timer, backed off while the peer was busy with the round, fires.
    pub(super) fn peer_started(&mut self, i: usize, rounds: u32) {
        let p = &mut self.peers[i];
        if rounds <= p.rounds_started {
            return;
        }
        p.rounds_started = rounds;
        if p.out.round.saturating_add(1) < rounds && p.out.on_receiver_progress() {
            self.stats.notifies_resent += 1;
        }
    }

    /// A peer's Hello: its model length, chunk length and encoding must be ours.
    pub(super) fn handle_hello(
        &mut self,
        i: usize,
        theirs: (u32, u32, Encoding),
        reply: bool,
    ) -> Result<(), FrameError> {
        let ours = (
            self.layout.model_len as u32,
            self.config.chunk_len() as u32,
            self.config.compression.encoding(),
        );
        let p = &mut self.peers[i];
        let id = p.spec.id;
        if theirs != ours {
            let first = !p.incompatible;
            p.incompatible = true;
            if first {
                self.push_event(Event::PeerIncompatible(id));
            }
            return Err(FrameError::Incompatible(id));
        }
        p.incompatible = false;
        p.control.hello_heard = true;
        p.control.hello_reply |= !reply;
        Ok(())
    }

    /// The peer restarted (a frame of a newer incarnation): it lost its state, so what
    /// this node consumed from it, owed it or had in flight to it is forgotten, and its
    /// rounds (which start again) are accepted. Chunks of an update of its old life
    /// already folded are mixed first (see `supersede`).
    pub(super) fn peer_restarted(&mut self, i: usize, incarnation: u32) {
        let chunks = self.chunks;
        let p = &mut self.peers[i];
        let id = p.spec.id;
        p.incarnation = Some(incarnation);
        // A new life counts its frames from 0 again.
        p.replay.reset();
        // ...and starts its public copy from zero: ours of it is lost for this epoch.
        p.choco.excluded = true;
        let partial = p.inn.incoming.filter(|inc| inc.received > 0 && !inc.finished(chunks));
        p.inn = InEdge::default();
        if let Some(inc) = partial {
            p.inn.incoming = Some(flow::Incoming {
                superseded: true,
                ..inc
            });
        }
        p.rounds_started = 0;
        p.sent_round = None;
        p.out.abandon();
        self.push_event(Event::PeerRestarted(id));
        self.resume_sending(i, true);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn handle_update(
        &mut self,
        i: usize,
        round: u32,
        chunk: u32,
        chunks: u32,
        weight: f32,
        encoding: Encoding,
        payload: &[u8],
    ) -> Result<(), FrameError> {
        let id = self.peers[i].spec.id;
        let violation = |v| Err(FrameError::Violation(id, v));
        if !self.receives_from(i, round) {
            return violation(Violation::NotInNeighbour);
        }
        if self.is_early(round) {
            return Ok(());
        }
        if self.is_late(round) && self.peers[i].inn.place(round) == Place::Newer {
            self.stats.late += 1;
            return Ok(());
        }
        if encoding != self.config.compression.encoding() {
            return violation(Violation::Encoding);
        }
        if chunks != self.chunks {
            return violation(Violation::ChunkCount);
        }
        if chunk >= chunks {
            return violation(Violation::ChunkIndex);
        }
        let range = self.chunk_range(chunk);
        if self.config.is_compressed() {
            if compress::check(encoding, payload, range.len()).is_err() {
                return violation(Violation::ChunkLength);
            }
        } else if F32Le::new(payload).is_none_or(|v| v.len() != range.len()) {
            return violation(Violation::ChunkLength);
        }
        // Push-sum: a weight is a share of the sender's mass, which may be more than 1,
        // or (a node that long received nothing) as small as 0.
        let push_sum = self.is_push_sum();
        let (min_weight, max_weight) = if push_sum {
            (0.0, mixing::MAX_PUSH_SUM_WEIGHT)
        } else {
            (f32::MIN_POSITIVE, 1.0)
        };
        if !(weight.is_finite() && weight >= min_weight && weight <= max_weight) {
            return violation(Violation::Weight);
        }
        let inn = &mut self.peers[i].inn;
        match inn.place(round) {
            Place::Consumed => {
                self.stats.duplicates += 1;
                return Ok(());
            }
            Place::Stale => {
                self.stats.stale += 1;
                return Ok(());
            }
            Place::Newer if !push_sum && inn.incoming.is_some_and(|inc| inc.received > 0) => {
                // The sender abandoned an update we partly folded: wait for the mix.
                // (Under push-sum both are folded: each is a share its sender gave
                // up, and the chunks folded stay in the accumulator for the next mix.)
                Self::supersede(inn, &mut self.stats);
                return Ok(());
            }
            Place::Newer => {
                if inn.incoming.is_some() {
                    self.stats.updates_abandoned += 1;
                }
                inn.begin(round, weight);
                self.bitmap(i).fill(0);
            }
            Place::Current => {}
        }
        let Some(inc) = self.peers[i].inn.incoming else {
            return Ok(());
        };
        if inc.rejected {
            self.stats.duplicates += 1;
            return Ok(());
        }
        if bits::get(self.bitmap(i), chunk) {
            self.stats.duplicates += 1;
            return Ok(());
        }
        let c = chunk as usize;
        // Compressed mode: a neighbour's weight enters a chunk's in-weight with its first
        // update of the epoch, and stays.
        let share = self.peers[i].choco;
        let compressed = self.choco.is_some();
        let adds_weight = !compressed || (!share.member && !share.excluded);
        let changed = |w: f32| weight.to_bits() != w.to_bits();
        let reason =
            // Push-sum weights differ chunk by chunk: each chunk carries its own mass.
            if (inc.received > 0 && !push_sum && changed(inc.weight))
                || (compressed && share.member && changed(share.weight))
            {
                Some(Violation::WeightChanged)
            } else if adds_weight
                && !push_sum
                && self.buffers.chunk_weights[c] + weight > 1.0 + mixing::WEIGHT_SLACK
            {
                Some(Violation::WeightOverflow)
            } else if let Some(choco) = &self.choco {
                let joins = adds_weight && !share.excluded;
                let acc = &mut *self.buffers.accumulator;
                choco
                    .fold(acc, range, encoding, payload, weight, share.excluded, joins)
                    .err()
            } else {
                let Some(values) = F32Le::new(payload) else {
                    return violation(Violation::ChunkLength);
                };
                let x = &self.buffers.snapshot[range.clone()];
                let first = self.buffers.chunk_weights[c] == 0.0;
                let acc = &mut self.buffers.accumulator[range];
                match mixing::fold(acc, x, weight, values.raw(), first, self.config.clip) {
                    Ok(clipped) => {
                        self.stats.chunks_clipped += u64::from(clipped);
                        None
                    }
                    Err(v) => Some(v),
                }
            };
        if let Some(reason) = reason {
            return self.reject(i, round, reason);
        }
        if adds_weight {
            self.buffers.chunk_weights[c] += weight;
        }
        bits::set(self.bitmap(i), chunk);
        self.stats.chunks_folded += 1;
        if let Some(inc) = self.peers[i].inn.incoming.as_mut() {
            if inc.received == 0 {
                inc.weight = weight;
            }
            inc.received += 1;
        }
        // Push-sum in exact rounds keeps an update of a round this node passed (its
        // sender gave that share up). Once whole it is in the accumulator, mixed at the
        // next finish like the round's own: acknowledged now, so its sender, which is
        // behind and may be what this node waits for, is not held up by it.
        // A massless update (sent between rounds, or by a member still joining) has
        // nothing to mix: acknowledged once whole too, or its sender would wait on this
        // node's next finish, which may wait on the sender (a joiner's for the model).
        let (chunks, keeps_late) = (self.chunks, self.exact_rounds());
        let round = self.round;
        let p = &mut self.peers[i];
        let early_ack = |inc: &flow::Incoming| {
            inc.finished(chunks) && ((keeps_late && inc.round < round) || (push_sum && inc.weight == 0.0))
        };
        if let Some(inc) = p.inn.incoming.filter(early_ack) {
            p.inn.consume(inc.round, self.round, None);
        }
        Ok(())
    }

    /// A peer came back (or restarted) during a round that sends to it: send it this
    /// round's update after all, or it would wait for one that never comes.
    /// Between rounds the snapshot still holds the last round's replica, so a peer
    /// that missed that round's update (it was down when the round started) gets it
    /// too: it may be waiting for exactly that update.
    ///
    /// Push-sum: an edge that was busy as the round started had its share set aside
    /// (`Peer::reserved`); it sends that now. Any other share is given up as it is
    /// sent: during the round, from the share the round keeps. Between rounds the
    /// round's mix counted it as kept, so the update goes without mass (`weightless`):
    /// a peer that came back (or, with elastic membership, was first heard from) may be
    /// waiting for it, having heard of this node before this node heard of it.
    pub(super) fn resume_sending(&mut self, i: usize, came_back: bool) {
        let reserved = self.peers[i].reserved.is_some();
        let push_sum_between = !self.started && self.is_push_sum() && !reserved;
        let round = match self.snapshot_round {
            Some(r) if self.started => r,
            // Between rounds, only the round just finished (not one skipped over).
            Some(r) if r.wrapping_add(1) == self.round && (came_back || !push_sum_between) => r,
            _ => return,
        };
        let Some(share) = self.send_weight(i, round) else {
            return;
        };
        let p = &mut self.peers[i];
        if p.live() && p.out.is_idle() && p.sent_round != Some(round) {
            p.out.begin(round);
            p.sent_round = Some(round);
            p.weightless = false;
            self.sending = Some(round);
            if p.reserved.take().is_some() {
                // Set aside when the round started.
            } else if self.started {
                self.kept_share = (self.kept_share - share).max(0.0);
            } else if push_sum_between {
                p.weightless = true;
            }
        }
    }

    /// Marks a partly folded update as abandoned by its sender (counted once).
    pub(super) fn supersede(inn: &mut InEdge, stats: &mut Stats) {
        if let Some(inc) = inn.incoming.as_mut() {
            if !inc.superseded {
                inc.superseded = true;
                stats.updates_abandoned += 1;
            }
        }
    }

    pub(super) fn reject(&mut self, i: usize, round: u32, reason: Violation) -> Result<(), FrameError> {
        let id = self.peers[i].spec.id;
        // Compressed mode: the rest of this update is not folded, so its sender's public
        // copy and ours of it part until the next epoch.
        self.peers[i].choco.excluded = true;
        if let Some(inc) = self.peers[i].inn.incoming.as_mut() {
            inc.rejected = true;
        }
        self.stats.updates_rejected += 1;
        self.push_event(Event::UpdateRejected {
            peer: id,
            round,
            reason,
        });
        Err(FrameError::Violation(id, reason))
    }

    pub(super) fn handle_notify(&mut self, i: usize, round: u32, chunks: u32) -> Result<(), FrameError> {
        let id = self.peers[i].spec.id;
        if !self.receives_from(i, round) {
            return Err(FrameError::Violation(id, Violation::NotInNeighbour));
        }
        if self.is_early(round) {
            self.peers[i].inn.early_notify = Some(round);
            return Ok(());
        }
        if chunks != self.chunks {
            return Err(FrameError::Violation(id, Violation::ChunkCount));
        }
        let late = self.is_late(round);
        let push_sum = self.is_push_sum();
        let p = &mut self.peers[i];
        let place = p.inn.place(round);
        if late && place == Place::Newer {
            // Passed without it: acknowledge and drop, so the sender moves on.
            if p.inn.incoming.is_some_and(|inc| inc.round <= round) {
                p.inn.incoming = None;
            }
            p.inn.consumed = Some(p.inn.consumed.map_or(round, |c| c.max(round)));
            p.inn.ack_due = Some(round);
            self.stats.late += 1;
            return Ok(());
        }
        match place {
            Place::Consumed => {
                // Our ACK was lost: repeat it. While the ACK is deferred, say that
                // everything arrived. (A round below the last consumed one was passed
                // over: acknowledging it lets the sender move on, whatever it was.)
                if p.inn.deferred_ack.is_some_and(|(r, _)| r == round) {
                    p.inn.missing_due = Some(round);
                } else {
                    p.inn.ack_due = Some(round);
                }
                self.stats.duplicates += 1;
            }
            Place::Stale => self.stats.stale += 1,
            Place::Newer if !push_sum && p.inn.incoming.is_some_and(|inc| inc.received > 0) => {
                // The partly folded update waits for the next mix; the newer one is
                // dropped but acknowledged, so its sender is not held up (it may be
                // what this node waits for to be able to mix at all). Under push-sum
                // the newer one is received too (an acknowledgement would say its
                // share was mixed): the older one's chunks stay in the accumulator.
                Self::supersede(&mut p.inn, &mut self.stats);
                p.inn.ack_due = Some(round);
            }
            Place::Newer => {
                if p.inn.incoming.is_some() {
                    self.stats.updates_abandoned += 1;
                }
                p.inn.begin(round, 0.0).notified = true;
                p.inn.missing_due = Some(round);
                self.bitmap(i).fill(0);
            }
            Place::Current => {
                if let Some(inc) = p.inn.incoming.as_mut() {
                    inc.notified = true;
                }
                p.inn.missing_due = Some(round);
            }
        }
        Ok(())
    }
}

//! The rules of a node's rounds: which neighbours a round sends to and waits for, when
//! updates belong to their round, how a node that fell behind catches up, and the
//! edge-triggered progress events.

use heapless::Vec;

use super::{Node, Peer};
use crate::config::Wait;
use crate::mixing::choco::{Choco, Membership, Sharer};
use crate::output::Event;
use crate::time::Instant;
use crate::topology::Topology;

impl<const P: usize> Node<'_, P> {
    /// Under a staleness bound `s`, the round `s` rounds behind this node's furthest
    /// live out-neighbour (0 without a bound). Above this node's round by more than one,
    /// that out-neighbour went ahead without being held back by this node (which
    /// restarted, or was cut off and given up on): this node catches up to it rather than
    /// hold it back while it redoes those rounds, and finishes a started round at once.
    pub(super) fn stale_catch_up(&self) -> u32 {
        let Some(s) = self.config.staleness else {
            return 0;
        };
        let ahead = self.peers.iter().filter(|p| p.live() && p.spec.send_weight.is_some());
        ahead.map(|p| p.rounds_started.saturating_sub(s)).max().unwrap_or(0)
    }

    /// Whether peer `p`, an out-neighbour, is as far ahead of this node's started
    /// round as the staleness bound lets it be: it started round `round + s` (or a later
    /// one, before it heard of this node's restart, say), so it starts no other before
    /// this node moves on.
    pub(super) fn holds_back(&self, p: &Peer) -> bool {
        self.config.staleness.is_some_and(|s| {
            p.spec.send_weight.is_some() && u64::from(p.rounds_started) > u64::from(self.round) + u64::from(s)
        })
    }

    /// The weight this node gives peer `i` in `round`, if it sends to it then.
    pub(super) fn send_weight(&self, i: usize, round: u32) -> Option<f32> {
        let p = &self.peers[i];
        match &self.schedule {
            Some(t) => {
                let w = t.edge_weight(u32::from(self.config.id.0), u32::from(p.spec.id.0), round);
                (w > 0.0).then_some(w as f32)
            }
            None => p.spec.send_weight,
        }
    }

    /// Whether peer `i` sends its update to this node in `round`.
    pub(super) fn receives_from(&self, i: usize, round: u32) -> bool {
        let p = &self.peers[i];
        match &self.schedule {
            Some(t) => t.edge_weight(u32::from(p.spec.id.0), u32::from(self.config.id.0), round) > 0.0,
            None => p.spec.receive,
        }
    }

    /// Whether this node runs push-sum: its topology is directed and irregular, or its
    /// rounds are not exact. An asynchronous round mixes whatever arrived, so a sender
    /// and its receiver need not mix in the same round, and plain averaging would move
    /// the mean each time (the receiver takes a share of the sender's value, the sender
    /// gives nothing up). With a mass beside each chunk, a share sent is a share given:
    /// the mass-weighted average stays exact, however stale the update and whenever it
    /// is mixed. (The compressed mode needs exact rounds on a static graph.)
    /// Elastic membership runs it on any graph: a share meant for a member not there
    /// stays with its sender.
    pub(super) fn is_push_sum(&self) -> bool {
        self.choco.is_none()
            && (self.config.elastic
                || self.schedule.as_ref().is_some_and(Topology::needs_push_sum)
                || !self.exact_rounds())
    }

    /// Whether updates belong to the round they are tagged with: when waiting for every
    /// in-neighbour (rounds must stay aligned, or after a partition nodes that skipped
    /// each other could wait on each other in a cycle) and on time-varying graphs while
    /// waiting for some (an update mixed in another round breaks exactness). `Wait::None`
    /// mixes whatever arrived, whatever its round: it finishes a round as it starts it,
    /// before this round's update can be there, so holding updates to their rounds would
    /// drop every one as late and never mix anything.
    pub(super) fn exact_rounds(&self) -> bool {
        match self.config.wait {
            Wait::All | Wait::Barrier => true,
            Wait::AtLeast(_) => self.schedule.as_ref().is_some_and(Topology::is_time_varying),
            Wait::None => false,
        }
    }

    /// An in-neighbour of this round that already started a later one, without its
    /// update for this round here, passed us: this node fell behind (a partition, a
    /// restart) and catches up to it, so rounds line up again.
    ///
    /// Under a staleness bound `s`, in every mode, a node between rounds also moves up
    /// to `s` rounds behind its furthest out-neighbour. One further ahead was not held
    /// back by this node (it restarted, or was cut off and given up on), and is held
    /// back now: it should not wait for this node to redo those rounds.
    pub(super) fn note_progress(&mut self) {
        let (round, chunks) = (self.round, self.chunks);
        if self.exact_rounds() {
            for i in 0..self.peers.len() {
                let p = &self.peers[i];
                let here = p
                    .inn
                    .incoming
                    .is_some_and(|inc| inc.round == round && inc.finished(chunks));
                if p.live() && !here && p.rounds_started > round.saturating_add(1) && self.receives_from(i, round) {
                    self.catch_up = self.catch_up.max(p.rounds_started - 1);
                }
            }
        }
        let target = self.stale_catch_up();
        if !self.started && target > self.round {
            self.advance_to(target);
        }
        // Between rounds, move at once: what this node owes for the rounds it skips
        // (deferred ACKs) may be what others wait for.
        if !self.started && self.catch_up > self.round {
            self.advance_to(self.catch_up);
        }
    }

    /// The round `start_round` would start: the current one, or the one to catch up to.
    pub(super) fn next_round(&self) -> u32 {
        if self.exact_rounds() && self.catch_up > self.round {
            self.catch_up
        } else {
            self.round
        }
    }

    /// An update for a round this node has not reached: it is dropped (the sender repeats
    /// it when asked) and tells the node how far ahead its in-neighbours are. (A sender
    /// may run ahead on an edge's first use, or after a partition or a restart.)
    pub(super) fn is_early(&mut self, round: u32) -> bool {
        let early = self.exact_rounds() && round > self.round;
        if early {
            // On a time-varying graph a sender may be up to a period ahead on an edge's
            // first use; only further ahead means this node fell behind.
            let period = self.schedule.as_ref().map_or(1, Topology::period);
            if round - self.round >= period {
                self.catch_up = self.catch_up.max(round);
            }
            self.stats.early += 1;
        }
        early
    }

    /// An update for a round this node has passed (its sender was behind): never mixed,
    /// but acknowledged so the sender can move on (and catch up). Not under push-sum:
    /// its sender gave that share up, so dropping it would lose mass (an elastic member
    /// that started late, or a node cut off for a while). It is folded instead,
    /// acknowledged once whole, and mixed at the next finish with the round's own.
    pub(super) fn is_late(&self, round: u32) -> bool {
        self.drops_late() && round < self.round
    }

    /// Whether updates of rounds this node passed are dropped (see [`is_late`]).
    fn drops_late(&self) -> bool {
        self.exact_rounds() && !self.is_push_sum()
    }

    /// Moves to `round` (the next one, or further when catching up): updates of rounds
    /// now passed are acknowledged and dropped (not under push-sum: they are mixed when
    /// they are whole); early NOTIFYs of this round are answered.
    pub(super) fn advance_to(&mut self, round: u32) {
        if round > self.round.saturating_add(1) {
            self.stats.rounds_skipped += u64::from(round.wrapping_sub(self.round).wrapping_sub(1));
        }
        let skipped = round > self.round.saturating_add(1);
        self.round = round;
        if skipped {
            // Out-neighbours of the rounds skipped wait for updates that will not come;
            // a heartbeat (it counts the rounds started) tells them now rather than at
            // the next heartbeat interval.
            for p in self.peers.iter_mut().filter(|p| p.spec.send_weight.is_some()) {
                p.control.heartbeat = true;
            }
        }
        if let Some(choco) = &mut self.choco {
            if choco.enter(round, self.buffers.accumulator, self.buffers.chunk_weights) {
                self.peers.iter_mut().for_each(|p| p.choco = Membership::default());
            }
            if skipped && choco.union_weight().is_some() {
                // Compressed on a time-varying graph: the skipped rounds' deliveries are
                // lost to this period's sums; nobody counts until the next epoch.
                self.peers.iter_mut().for_each(|p| p.choco.excluded = true);
            }
        }
        let (drops_late, chunks) = (self.drops_late(), self.chunks);
        let keeps_late = self.exact_rounds() && !drops_late;
        for p in self.peers.iter_mut() {
            if p.inn.advance(round, drops_late) {
                self.stats.late += 1;
            }
            // Push-sum in exact rounds: an update of a passed round that is here in full
            // is in the accumulator, mixed at the next finish: acknowledged now (see
            // `is_late`).
            if let Some(inc) = p
                .inn
                .incoming
                .filter(|inc| keeps_late && inc.finished(chunks) && inc.round < round)
            {
                p.inn.consume(inc.round, round, None);
            }
        }
    }

    /// The first round after `round` in which peer `i` sends to this node, within one
    /// period (`None` for explicit neighbour lists: every round).
    pub(super) fn next_turn(&self, i: usize, round: u32) -> Option<u32> {
        let t = self.schedule.as_ref()?;
        (1..=t.period())
            .map(|k| round.wrapping_add(k))
            .find(|&r| self.receives_from(i, r))
    }

    /// Emits the edge-triggered progress events.
    pub(super) fn check_progress(&mut self, _now: Instant) {
        self.note_progress();
        if self.started && !self.ready_reported && self.is_ready() {
            self.ready_reported = true;
            self.push_event(Event::RoundReady { round: self.round });
        }
        if let Some(round) = self.sending {
            if self.peers.iter().all(|p| !p.live() || p.out.releases_snapshot()) {
                self.sending = None;
                self.push_event(Event::SendComplete { round });
            }
        }
    }

    /// Compressed mode: the neighbours whose public copies are in `t` as a round starts
    /// (see [`Sharer`]).
    pub(super) fn sharers(&self) -> Vec<Sharer, P> {
        let round = self.round;
        let sharer = |(i, p): (usize, &Peer)| match p.inn.incoming {
            _ if p.choco.member => Some(Sharer {
                peer: i,
                weight: p.choco.weight,
                all_chunks: true,
            }),
            Some(inc) if !p.choco.excluded && inc.round == round && inc.received > 0 => Some(Sharer {
                peer: i,
                weight: inc.weight,
                all_chunks: false,
            }),
            _ => None,
        };
        self.peers.iter().enumerate().filter_map(sharer).collect()
    }

    /// Compressed mode on a time-varying graph: the weight of a union edge.
    pub(super) fn union_weight(&self) -> Option<f32> {
        self.choco.as_ref().and_then(Choco::union_weight)
    }

    /// Whether the started round's wait policy is met by what arrived.
    pub(super) fn wait_satisfied(&self) -> bool {
        let chunks = self.chunks;
        if self.exact_rounds() && self.catch_up > self.round {
            // In-neighbours are ahead: finish with what arrived and catch up.
            return true;
        }
        if self.stale_catch_up() > self.round.saturating_add(1) {
            // Far behind an out-neighbour that was not held back: likewise.
            return true;
        }
        // Joining: a round waits for the model too, every chunk of it from some
        // in-neighbour (a joining neighbour's update weighs nothing), whatever else its
        // policy waits for — if an in-neighbour of this round is there to send it (on
        // a time-varying graph another round's may be).
        // (One held back by a staleness bound on this node sends nothing before it moves.)
        // (Evaluated only while joining: `is_ready` is called on every event.)
        let senders = || {
            (0..self.peers.len())
                .filter(|&i| self.receives_from(i, self.round))
                .map(|i| &self.peers[i])
                .any(|p| p.counts() && !self.holds_back(p))
        };
        if !self.joined && !self.buffers.chunk_weights.iter().all(|&w| w > 0.0) && senders() {
            return false;
        }
        // In exact-round modes an update belongs to one round; otherwise the next update
        // of each in-neighbour is the one to wait for.
        let exact = self.exact_rounds().then_some(self.round);
        let arrived = |p: &Peer| {
            p.inn.incoming.is_some_and(|inc| inc.finished(chunks) && exact.is_none_or(|r| inc.round == r))
                // (Or consumed already: a massless one is acknowledged as it completes.)
                || exact.is_some_and(|r| p.inn.consumed.is_some_and(|c| c >= r))
                // An in-neighbour that already started a later round will never send
                // this one's update: it was delivered (then it is here) or abandoned
                // while we were down for it. Waiting for it could wait forever.
                || exact.is_some_and(|r| p.rounds_started > r.saturating_add(1))
                // An update its sender gave up on is mixed as far as it arrived; the
                // sender's next one is taken after this finish.
                || p.inn.incoming.is_some_and(|inc| inc.superseded)
                // Bounded staleness: an out-neighbour `s` rounds ahead of this round
                // cannot start another before this node does (it is behind: restarted,
                // or a straggler). Waiting for its next update would wait for ourselves.
                || self.holds_back(p)
        };
        // (An elastic peer not heard from yet is expected for a moment at the start.)
        let mut waiting = (0..self.peers.len())
            .filter(|&i| self.receives_from(i, self.round))
            .map(|i| &self.peers[i])
            .filter(|p| p.counts());
        match self.config.wait {
            Wait::All => waiting.all(arrived),
            Wait::AtLeast(k) => {
                let (live, done) = waiting.fold((0u16, 0u16), |(l, d), p| (l + 1, d + u16::from(arrived(p))));
                done >= k.min(live)
            }
            Wait::None => true,
            Wait::Barrier => {
                waiting.all(arrived) && self.peers.iter().all(|p| !p.live() || p.rounds_started > self.round)
            }
        }
    }
}

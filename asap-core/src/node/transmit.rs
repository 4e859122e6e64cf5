//! Frames out: the control frame owed to a peer, by urgency, and the encoding of every
//! frame into the caller's buffer.

use super::Node;
use crate::batch::{self, DataFrames};
use crate::config::Config;
use crate::flow::{bits, Emit, Owed};
use crate::mixing;
use crate::output::Transmit;
use crate::time::Instant;
use crate::wire::{self, BufferTooSmall, Header, Kind, NodeId, Sealing};

impl<const P: usize> Node<'_, P> {
    /// The most urgent control frame owed to peer `i`, with its round.
    pub(super) fn take_control(&mut self, i: usize) -> Option<(Kind, u32)> {
        let started_rounds = self.round.saturating_add(u32::from(self.started));
        let (model_len, chunk_len) = (self.layout.model_len as u32, self.config.chunk_len() as u32);
        let encoding = self.config.compression.encoding();
        let chunks = self.chunks;
        let p = &mut self.peers[i];
        if p.control.take_leave() {
            return Some((Kind::Leave, self.round));
        }
        if p.left || self.left {
            return None;
        }
        if let Some(reply) = p.control.take_hello() {
            let hello = Kind::Hello {
                model_len,
                chunk_len,
                encoding,
                reply,
            };
            return Some((hello, self.round));
        }
        if let Some(round) = p.inn.ack_due.take() {
            return Some((Kind::Ack, round));
        }
        if let Some(round) = p.inn.missing_due.take() {
            let consumed = p.inn.consumed.is_some_and(|c| c >= round);
            let (base, mask) = match p.inn.incoming {
                _ if consumed => (0, 0),
                Some(inc) if inc.round == round && inc.finished(chunks) => (0, 0),
                Some(inc) if inc.round == round => bits::missing(self.bitmap(i), chunks),
                // Nothing of that round yet (an early NOTIFY answered now): all missing.
                _ => bits::missing(&[], chunks),
            };
            return Some((Kind::Missing { base, mask }, round));
        }
        let kind = match p.control.take_progress()? {
            Owed::Barrier => Kind::Barrier,
            Owed::Heartbeat => Kind::Heartbeat,
        };
        Some((kind, started_rounds))
    }

    pub(super) fn header_for(config: &Config, to: NodeId, round: u32, kind: Kind) -> Header {
        Header {
            version: wire::VERSION,
            integrity: config.integrity(),
            cluster: config.cluster,
            from: config.id,
            incarnation: config.incarnation,
            to,
            round,
            kind,
            payload_len: 0,
        }
    }

    /// Encodes a frame to peer `i` carrying `values` of the snapshot (empty for control).
    pub(super) fn emit(
        &mut self,
        now: Instant,
        i: usize,
        kind: Kind,
        round: u32,
        values: core::ops::Range<usize>,
        buf: &mut [u8],
    ) -> Result<Transmit, BufferTooSmall> {
        let to = self.peers[i].spec.id;
        let mut header = Self::header_for(&self.config, to, round, kind);
        header.integrity = header.integrity.with_seq(self.send_seq);
        // Peers without a link key are skipped before any frame is made for them.
        let sealing = self.sealing(i).unwrap_or(Sealing::Crc);
        let values = self.buffers.snapshot.get(values).unwrap_or(&[]);
        let len = match (kind, self.choco) {
            (Kind::Update { .. }, Some(choco)) => {
                let payload = self.config.compression.payload_len(values.len());
                wire::seal_with(header, payload, buf, sealing, |out| {
                    choco.write_payload(values, out);
                })?
            }
            _ => wire::seal(header, values, buf, sealing)?,
        };
        self.send_seq = self.send_seq.wrapping_add(1);
        let p = &mut self.peers[i];
        p.control.sent(&mut p.timers, now, self.config.heartbeat_interval);
        self.stats.frames_sent += 1;
        self.stats.bytes_sent += len as u64;
        Ok(Transmit::one(to, len))
    }

    /// The next frames of update data (chunks, or a NOTIFY), one edge after the other: up
    /// to `max_segments` for one peer (see [`Node::poll_transmit_batch`]).
    pub(super) fn next_update_batch(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        max_segments: usize,
    ) -> Result<Option<Transmit>, BufferTooSmall> {
        let n = self.peers.len();
        for k in 0..n {
            let i = (self.cursor + k) % n;
            if !self.peers[i].live() {
                continue;
            }
            let Some((first, payload)) = self.update_frame(now, i, buf)? else {
                continue;
            };
            self.cursor = (i + 1) % n;
            let max_frame = self.config.max_frame;
            let mut more = PeerFrames { node: self, i };
            return batch::extend(&mut more, now, first, payload, buf, max_frame, max_segments).map(Some);
        }
        Ok(None)
    }

    /// Payload bytes of chunk `c`'s frame.
    fn chunk_payload(&self, c: u32) -> usize {
        self.config.compression.payload_len(self.chunk_range(c).len())
    }

    /// Peer `i`'s next frame of update data, if it has one, with the payload bytes it
    /// carries (0 for a NOTIFY).
    fn update_frame(
        &mut self,
        now: Instant,
        i: usize,
        buf: &mut [u8],
    ) -> Result<Option<(Transmit, usize)>, BufferTooSmall> {
        let Some((what, again)) = self.peers[i].out.next(self.chunks, now) else {
            return Ok(None);
        };
        let round = self.peers[i].out.round;
        match what {
            Emit::Chunk(c) => {
                if again {
                    self.stats.chunks_resent += 1;
                } else {
                    self.stats.chunks_sent += 1;
                }
                let share = self.send_weight(i, round).unwrap_or(0.0);
                // Push-sum: the share of the mass travels as the weight. Compressed
                // on a time-varying graph: the edge's weight in the period's union.
                let weight = if self.peers[i].weightless {
                    0.0
                } else if self.is_push_sum() {
                    mixing::carried(self.buffers.chunk_mass, c as usize, share)
                } else if let Some(w) = self.union_weight() {
                    w
                } else {
                    share
                };
                let kind = Kind::Update {
                    chunk: c,
                    chunks: self.chunks,
                    weight,
                    encoding: self.config.compression.encoding(),
                };
                let range = self.chunk_range(c);
                let payload = self.chunk_payload(c);
                self.emit(now, i, kind, round, range, buf).map(|t| Some((t, payload)))
            }
            Emit::Notify => {
                if again {
                    self.stats.notifies_resent += 1;
                }
                let kind = Kind::Notify { chunks: self.chunks };
                self.emit(now, i, kind, round, 0..0, buf).map(|t| Some((t, 0)))
            }
        }
    }
}

/// Peer `i`'s update frames, as a batch takes them.
struct PeerFrames<'n, 'a, const P: usize> {
    node: &'n mut Node<'a, P>,
    i: usize,
}

impl<const P: usize> DataFrames for PeerFrames<'_, '_, P> {
    fn peek_payload(&self, now: Instant) -> Option<usize> {
        let mut ahead = self.node.peers[self.i].out;
        match ahead.next(self.node.chunks, now)?.0 {
            Emit::Chunk(c) => Some(self.node.chunk_payload(c)),
            Emit::Notify => Some(0),
        }
    }

    fn next_frame(&mut self, now: Instant, buf: &mut [u8]) -> Result<Option<Transmit>, BufferTooSmall> {
        Ok(self.node.update_frame(now, self.i, buf)?.map(|(t, _)| t))
    }
}

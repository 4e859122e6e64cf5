//! The baseline: a synchronous ring all-reduce (reduce-scatter, then all-gather) over the
//! same frames and the same per-edge reliability as ASAP, so every comparison of the two
//! is made on the same wire.
//!
//! With `n` nodes on a ring the model is cut into `n` segments. In step `s` of the
//! reduce-scatter node `i` sends its partial sum of segment `i - s` to node `i + 1` and
//! adds what node `i - 1` sends into segment `i - s - 1`; after `n - 1` steps it holds
//! the full sum of segment `i + 1`. The all-gather then passes the finished segments
//! round the ring in `n - 1` more steps. Each node sends `2(n-1)/n` models a round — the
//! bandwidth-optimal all-reduce — and every step waits for the slowest link: the
//! barrier ASAP removes.
//!
//! Each step is one update on the edge to the right neighbour (NOTIFY-ACK, chunk
//! retransmission, backoff: `flow::OutEdge`), tagged with the step's global number
//! `round · 2(n-1) + step`. A received step is applied to the working vector chunk by
//! chunk as it arrives and acknowledged once complete.

use crate::auth::Secret;
use crate::batch::{self, DataFrames};
use crate::config::{Config, Layout};
use crate::error::{ConfigError, FrameError, RoundError, Violation};
use crate::flow::{bits, AckOutcome, Emit, OutEdge, RtoBounds};
use crate::output::{Accepted, Finished, Stats, Transmit};
use crate::reduce;
use crate::time::Instant;
use crate::wire::{self, BufferTooSmall, DecodeError, Encoding, F32Le, Header, Kind, NodeId, Sealing};

/// Memory an all-reduce node borrows: the vector being reduced and one segment's chunk
/// bitmap.
#[derive(Debug)]
pub struct AllReduceBuffers<'a> {
    /// `model_len` values: the node's contribution, then the sum.
    pub work: &'a mut [f32],
    /// `AllReduce::bitmap_words(&config, world)` words.
    pub chunk_bits: &'a mut [u32],
}

/// One member of a ring all-reduce, sans-IO like [`crate::Node`]: feed it frames and
/// time, send what `poll_transmit` writes, call `start_round` with the parameters and
/// `finish_round` once `is_ready` (or let [`Reducer::advance_round`] do both).
///
/// [`Reducer::advance_round`]: crate::Reducer::advance_round
#[derive(Debug)]
pub struct AllReduce<'a> {
    config: Config,
    layout: Layout,
    world: u32,
    me: u32,
    buffers: AllReduceBuffers<'a>,
    out: OutEdge,
    /// Rounds started.
    round: u32,
    started: bool,
    /// The step this node sends next (`0..2(n-1)`); `steps` when all are sent.
    send_step: u32,
    /// The step it is receiving (`0..2(n-1)`); `steps` when all arrived.
    recv_step: u32,
    /// Chunks of `recv_step` applied.
    received: u32,
    /// The left neighbour announced `recv_step` complete (NOTIFY seen).
    ack_due: Option<u32>,
    missing_due: Option<u32>,
    /// A NOTIFY for the first step of a round this node had not started: its left
    /// neighbour started sooner and its chunks were dropped. Answered (all missing) as
    /// soon as the round starts, not a retransmission timeout later.
    early_notify: Option<u32>,
    stats: Stats,
    /// The configuration's key, and the cipher derived from it when encrypting.
    secret: Secret,
    /// Sequence number of the next authenticated frame.
    send_seq: u64,
    /// Authenticated frames seen from the left and the right neighbour.
    replay: [crate::auth::ReplayWindow; 2],
}

impl<'a> AllReduce<'a> {
    /// Bitmap words the buffers need: one bit per chunk of the largest segment.
    pub fn bitmap_words(config: &Config, world: u32) -> usize {
        let seg = config.model_len.div_ceil(world.max(1) as usize);
        seg.div_ceil(config.chunk_len()).div_ceil(32).max(1)
    }

    /// A ring member `config.id` of `world` nodes (ids `0..world`).
    pub fn new(config: Config, world: u32, buffers: AllReduceBuffers<'a>) -> Result<Self, ConfigError> {
        if config.identities {
            return Err(ConfigError::IdentitiesUnsupported);
        }
        if config.elastic {
            return Err(ConfigError::ElasticUnsupported);
        }
        let layout = config.layout(0)?;
        if config.is_compressed() {
            // The baseline sends f32 only.
            return Err(ConfigError::Compression);
        }
        let me = u32::from(config.id.0);
        if world < 2 || me >= world {
            return Err(ConfigError::NotInTopology);
        }
        if buffers.work.len() != config.model_len {
            return Err(ConfigError::Buffer {
                which: "work",
                needed: config.model_len,
                got: buffers.work.len(),
            });
        }
        let words = Self::bitmap_words(&config, world);
        if buffers.chunk_bits.len() != words {
            return Err(ConfigError::Buffer {
                which: "chunk_bits",
                needed: words,
                got: buffers.chunk_bits.len(),
            });
        }
        let steps = 2 * (world - 1);
        Ok(AllReduce {
            out: OutEdge::new(RtoBounds::of(&config)),
            config,
            layout,
            world,
            me,
            buffers,
            round: 0,
            started: false,
            send_step: steps,
            recv_step: steps,
            received: 0,
            ack_due: None,
            missing_due: None,
            early_notify: None,
            stats: Stats::default(),
            secret: config.secret()?,
            send_seq: 0,
            replay: Default::default(),
        })
    }

    fn steps(&self) -> u32 {
        2 * (self.world - 1)
    }

    fn right(&self) -> NodeId {
        NodeId(((self.me + 1) % self.world) as u16)
    }

    fn left(&self) -> NodeId {
        NodeId(self.left_index() as u16)
    }

    fn left_index(&self) -> u32 {
        (self.me + self.world - 1) % self.world
    }

    /// The global tag of `step` of this round.
    fn tag(&self, step: u32) -> u32 {
        self.round.wrapping_mul(self.steps()).wrapping_add(step)
    }

    /// Segment `k`'s values.
    fn segment(&self, k: u32) -> core::ops::Range<usize> {
        let (len, n) = (self.config.model_len, self.world as usize);
        let k = k as usize % n;
        (k * len / n)..((k + 1) * len / n)
    }

    /// The segment node `node` sends in `step`.
    fn sent_segment(&self, node: u32, step: u32) -> u32 {
        let n = self.world;
        if step < n - 1 {
            (node + n - step % n) % n
        } else {
            (node + 1 + n - (step - (n - 1)) % n) % n
        }
    }

    fn chunks_of(&self, seg: u32) -> u32 {
        self.segment(seg).len().div_ceil(self.config.chunk_len()) as u32
    }

    /// Whether [`start_round`](Self::start_round) would succeed now (apart from the
    /// parameters themselves): no round running, the last step acknowledged.
    pub fn can_start_round(&self) -> Result<(), RoundError> {
        if self.started {
            Err(RoundError::AlreadyStarted)
        } else if !self.out.is_idle() {
            Err(RoundError::SendWindowClosed)
        } else {
            Ok(())
        }
    }

    /// Rounds finished: the round running, or the next to start.
    pub fn round(&self) -> u32 {
        self.round
    }

    /// Whether a round is running.
    pub fn is_started(&self) -> bool {
        self.started
    }

    /// Whether the round's sum is complete here
    /// ([`finish_round`](Self::finish_round) will succeed).
    pub fn is_ready(&self) -> bool {
        self.started && self.recv_step == self.steps() && self.send_step == self.steps()
    }

    /// Starts a round with this node's contribution `params`.
    pub fn start_round(&mut self, _now: Instant, params: &[f32]) -> Result<(), RoundError> {
        self.can_start_round()?;
        self.layout.check_params_len(params)?;
        self.take_params(params)?;
        self.started = true;
        self.send_step = 0;
        self.recv_step = 0;
        self.out.begin(self.tag(0));
        let chunks = self.chunks_of(self.sent_segment(self.left_index(), 0));
        let notified = self.early_notify.take().is_some_and(|tag| self.recv_tag() == Some(tag));
        if chunks > 0 && self.received == chunks {
            self.complete_recv_step();
        } else if notified {
            self.missing_due = self.recv_tag();
        }
        Ok(())
    }

    /// Copies `params` into the work buffer, but for the chunks of the first step that
    /// came before the round started (its left neighbour started sooner): they hold the
    /// neighbour's addend alone, and get `params` added, exactly the sum the fold would
    /// have made (f32 addition commutes). A sum that overflows is dropped, as the fold
    /// would have refused it: the chunk is asked for again.
    ///
    /// Refuses non-finite parameters, checked as they are copied: the early chunks are
    /// checked first and left as they were; the rest of the work buffer, which no one
    /// reads between rounds (nothing is in flight when a round may start), may hold
    /// part of the copy.
    fn take_params(&mut self, params: &[f32]) -> Result<(), RoundError> {
        let range = self.segment(self.sent_segment(self.left_index(), 0));
        let chunk_len = self.config.chunk_len();
        let (work, bits) = (&mut *self.buffers.work, &mut *self.buffers.chunk_bits);
        let finite = reduce::all_finite(&params[range.clone()])
            && reduce::copy_finite(&mut work[..range.start], &params[..range.start])
            && reduce::copy_finite(&mut work[range.end..], &params[range.end..]);
        if !finite {
            return Err(RoundError::NonFiniteParams);
        }
        let early = work[range.clone()]
            .chunks_mut(chunk_len)
            .zip(params[range].chunks(chunk_len));
        for (c, (w, p)) in early.enumerate() {
            let c = c as u32;
            if bits::get(bits, c) && reduce::fold(w, 1.0, p).is_ok() {
                continue;
            }
            if bits::get(bits, c) {
                bits::clear(bits, c);
                self.received -= 1;
            }
            w.copy_from_slice(p);
        }
        Ok(())
    }

    /// Ends the round: `params` becomes the average of every node's contribution.
    pub fn finish_round(&mut self, _now: Instant, params: &mut [f32]) -> Result<Finished, RoundError> {
        if !self.is_ready() {
            return Err(if self.started {
                RoundError::NotReady
            } else {
                RoundError::NotStarted
            });
        }
        if params.len() != self.config.model_len {
            return Err(RoundError::ParamsLength {
                expected: self.config.model_len,
                got: params.len(),
            });
        }
        let scale = 1.0 / self.world as f32;
        for (p, w) in params.iter_mut().zip(self.buffers.work.iter()) {
            *p = w * scale;
        }
        self.started = false;
        let round = self.round;
        self.round = self.round.wrapping_add(1);
        self.stats.rounds += 1;
        Ok(Finished {
            round,
            updates: self.world as usize - 1,
        })
    }

    /// Whether this member owes its neighbours nothing more: no round running and its
    /// last step acknowledged. A ring cannot lose a member, so there is no Leave to
    /// send: after the last round, serve until drained, then stop.
    pub fn is_drained(&self) -> bool {
        !self.started && self.out.is_idle() && self.ack_due.is_none() && self.missing_due.is_none()
    }

    /// Handles one received frame (only the left neighbour's updates and the right
    /// neighbour's ACKs matter). An encrypting ring needs
    /// [`handle_frame_mut`](Self::handle_frame_mut), as for `Node`.
    pub fn handle_frame(&mut self, now: Instant, bytes: &[u8]) -> Result<Accepted, FrameError> {
        let decoded = wire::decode_sealed(bytes, Sealing::from(&self.secret));
        self.receive(now, decoded, bytes.len())
    }

    /// [`handle_frame`](Self::handle_frame) on bytes it may overwrite: encrypted frames
    /// are decrypted in place.
    pub fn handle_frame_mut(&mut self, now: Instant, bytes: &mut [u8]) -> Result<Accepted, FrameError> {
        let len = bytes.len();
        let decoded = wire::open(bytes, Sealing::from(&self.secret));
        self.receive(now, decoded, len)
    }

    fn receive(
        &mut self,
        now: Instant,
        decoded: Result<(wire::Frame<'_>, usize), DecodeError>,
        len: usize,
    ) -> Result<Accepted, FrameError> {
        let (frame, _) = decoded.inspect_err(|e| self.stats.count_undecodable(e))?;
        let h = frame.header;
        if h.cluster != self.config.cluster {
            return Err(FrameError::WrongCluster(h.cluster));
        }
        if h.to != self.config.id {
            return Err(FrameError::Misaddressed(h.to));
        }
        if h.from != self.left() && h.from != self.right() {
            self.stats.frames_refused += 1;
            return Err(FrameError::UnknownPeer(h.from));
        }
        let fresh = match h.integrity.seq() {
            Some(seq) => {
                // The tag verified; a number seen before is a replay. (A ring of two has
                // the same node on both sides: one window.)
                let side = usize::from(h.from != self.left());
                if self.replay[side].accept(seq).is_err() {
                    self.stats.replays += 1;
                    return Err(FrameError::Replay(h.from));
                }
                true
            }
            None => false,
        };
        if h.from == self.right() {
            match h.kind {
                Kind::Ack if self.out.on_ack(h.round) == AckOutcome::Acked => self.advance_send(now),
                Kind::Missing { base, mask } => {
                    let chunks = self.chunks_of(self.sent_segment(self.me, self.send_step.min(self.steps() - 1)));
                    self.out.on_missing(h.round, base, mask, chunks, now);
                }
                _ => {}
            }
        }
        if h.from == self.left() {
            match h.kind {
                Kind::Update {
                    chunk,
                    weight: _,
                    encoding: Encoding::F32Le,
                    ..
                } => self.handle_chunk(h.round, chunk, frame.payload)?,
                Kind::Notify { .. } => self.handle_notify(h.round),
                _ => {}
            }
        }
        self.stats.frames_received += 1;
        self.stats.bytes_received += len as u64;
        Ok(Accepted { from: h.from, fresh })
    }

    fn recv_tag(&self) -> Option<u32> {
        (self.started && self.recv_step < self.steps()).then(|| self.tag(self.recv_step))
    }

    fn handle_chunk(&mut self, tag: u32, chunk: u32, payload: &[u8]) -> Result<(), FrameError> {
        // Between rounds the work buffer is free: the first step of the next round is
        // taken early (its left neighbour started sooner), not dropped and sent again.
        let early = !self.started && tag == self.tag(0);
        if self.recv_tag() != Some(tag) && !early {
            // A duplicate of a finished step, or a later step of a round not started.
            return Ok(());
        }
        let step = if early { 0 } else { self.recv_step };
        let seg = self.sent_segment(self.left_index(), step);
        let range = self.segment(seg);
        let chunk_len = self.config.chunk_len();
        let start = range.start + chunk as usize * chunk_len;
        let end = (start + chunk_len).min(range.end);
        let left = self.left();
        let violation = |v| FrameError::Violation(left, v);
        let values = F32Le::new(payload)
            .filter(|v| start < end && v.len() == end - start)
            .ok_or(violation(Violation::ChunkLength))?;
        if bits::get(self.buffers.chunk_bits, chunk) {
            return Ok(());
        }
        let target = &mut self.buffers.work[start..end];
        // Early chunks are stored alone; `start_round` adds this node's values.
        let applied = if step < self.world - 1 && !early {
            reduce::fold_le(target, 1.0, values.raw())
        } else {
            reduce::init_le(target, 1.0, values.raw())
        };
        applied.map_err(|_| violation(Violation::NonFinite))?;
        bits::set(self.buffers.chunk_bits, chunk);
        self.received += 1;
        if !early && self.received == self.chunks_of(seg) {
            self.complete_recv_step();
        }
        Ok(())
    }

    fn handle_notify(&mut self, tag: u32) {
        // Everything tagged below this arrived (and was acknowledged once).
        let first_missing = if self.started {
            self.tag(self.recv_step)
        } else {
            self.tag(0)
        };
        if self.recv_tag() == Some(tag) {
            let seg = self.sent_segment(self.left_index(), self.recv_step);
            if self.chunks_of(seg) == 0 {
                // An empty segment (a model smaller than the ring): the NOTIFY is all.
                self.complete_recv_step();
            } else {
                self.missing_due = Some(tag);
            }
        } else if tag < first_missing {
            // Our ACK was lost.
            self.ack_due = Some(tag);
        } else if !self.started {
            // A step of a round this node has not started: answered once it starts.
            self.early_notify = Some(tag);
        }
    }

    fn complete_recv_step(&mut self) {
        self.ack_due = Some(self.tag(self.recv_step));
        self.missing_due = None;
        self.recv_step += 1;
        self.received = 0;
        self.buffers.chunk_bits.fill(0);
        self.advance_send(Instant::ZERO);
    }

    /// Begins the next send step once the previous one was acknowledged and, in the
    /// reduce-scatter, the segment it sends has received its addend.
    fn advance_send(&mut self, _now: Instant) {
        if !self.started || !self.out.is_idle() || self.send_step >= self.steps() {
            return;
        }
        let next = self.send_step + 1;
        if next == self.steps() {
            self.send_step = next;
            return;
        }
        // Step `next` sends what arrived in step `next - 1`.
        if self.recv_step >= next {
            self.send_step = next;
            self.out.begin(self.tag(next));
        }
    }

    /// Handles timers (retransmission).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.out.deadline().is_some_and(|at| at <= now) {
            self.stats.retransmit_timeouts += 1;
        }
        self.out.on_timeout(now);
    }

    /// Counters (the subset of [`Stats`] a ring member keeps).
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The next deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.out.deadline()
    }

    /// Writes the next frame to send into `buf` (which must hold `max_frame` bytes).
    /// Call until it returns `Ok(None)`.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Result<Option<Transmit>, BufferTooSmall> {
        self.poll_transmit_batch(now, buf, 1)
    }

    /// As [`poll_transmit`](Self::poll_transmit), but a segment's frames come as a batch
    /// of up to `max_segments` back to back (see [`Node::poll_transmit_batch`]).
    ///
    /// [`Node::poll_transmit_batch`]: crate::Node::poll_transmit_batch
    pub fn poll_transmit_batch(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        max_segments: usize,
    ) -> Result<Option<Transmit>, BufferTooSmall> {
        if buf.len() < self.config.max_frame {
            return Err(BufferTooSmall {
                needed: self.config.max_frame,
            });
        }
        self.advance_send(now);
        if let Some(tag) = self.ack_due.take() {
            return self.emit(self.left(), tag, Kind::Ack, 0..0, buf).map(Some);
        }
        if let Some(tag) = self.missing_due.take() {
            let chunks = self.chunks_of(self.sent_segment(self.left_index(), self.recv_step));
            let (base, mask) = bits::missing(self.buffers.chunk_bits, chunks);
            return self
                .emit(self.left(), tag, Kind::Missing { base, mask }, 0..0, buf)
                .map(Some);
        }
        let Some(payload) = self.peek_payload(now) else {
            return Ok(None);
        };
        let Some(first) = self.next_frame(now, buf)? else {
            return Ok(None);
        };
        let max_frame = self.config.max_frame;
        batch::extend(self, now, first, payload, buf, max_frame, max_segments.max(1)).map(Some)
    }

    /// Chunks of the segment being sent, while a send step runs.
    fn sending_chunks(&self) -> Option<u32> {
        (self.started && self.send_step < self.steps())
            .then(|| self.chunks_of(self.sent_segment(self.me, self.send_step)))
    }

    /// The chunk `c` of the segment being sent: its values in the work buffer.
    fn chunk_values(&self, c: u32) -> core::ops::Range<usize> {
        let range = self.segment(self.sent_segment(self.me, self.send_step));
        let chunk_len = self.config.chunk_len();
        let start = range.start + c as usize * chunk_len;
        start..(start + chunk_len).min(range.end)
    }

    fn emit(
        &mut self,
        to: NodeId,
        round: u32,
        kind: Kind,
        values: core::ops::Range<usize>,
        buf: &mut [u8],
    ) -> Result<Transmit, BufferTooSmall> {
        let integrity = self.config.integrity().with_seq(self.send_seq);
        let header = Header {
            version: wire::VERSION,
            integrity,
            cluster: self.config.cluster,
            from: self.config.id,
            incarnation: self.config.incarnation,
            to,
            round,
            kind,
            payload_len: 0,
        };
        let values = self.buffers.work.get(values).unwrap_or(&[]);
        let len = wire::seal(header, values, buf, Sealing::from(&self.secret))?;
        self.send_seq = self.send_seq.wrapping_add(1);
        self.stats.frames_sent += 1;
        self.stats.bytes_sent += len as u64;
        Ok(Transmit::one(to, len))
    }
}

impl DataFrames for AllReduce<'_> {
    fn peek_payload(&self, now: Instant) -> Option<usize> {
        let chunks = self.sending_chunks()?;
        let mut ahead = self.out;
        match ahead.next(chunks, now)?.0 {
            Emit::Chunk(c) => Some(self.chunk_values(c).len() * 4),
            Emit::Notify => Some(0),
        }
    }

    fn next_frame(&mut self, now: Instant, buf: &mut [u8]) -> Result<Option<Transmit>, BufferTooSmall> {
        let Some(chunks) = self.sending_chunks() else {
            return Ok(None);
        };
        let Some((what, again)) = self.out.next(chunks, now) else {
            return Ok(None);
        };
        match (what, again) {
            (Emit::Chunk(_), false) => self.stats.chunks_sent += 1,
            (Emit::Chunk(_), true) => self.stats.chunks_resent += 1,
            (Emit::Notify, true) => self.stats.notifies_resent += 1,
            (Emit::Notify, false) => {}
        }
        let tag = self.tag(self.send_step);
        let kind = match what {
            Emit::Chunk(c) => Kind::Update {
                chunk: c,
                chunks,
                weight: 1.0,
                encoding: Encoding::F32Le,
            },
            Emit::Notify => Kind::Notify { chunks },
        };
        let values = match what {
            Emit::Chunk(c) => self.chunk_values(c),
            Emit::Notify => 0..0,
        };
        self.emit(self.right(), tag, kind, values, buf).map(Some)
    }
}

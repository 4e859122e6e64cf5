//! Frames on TCP streams, for networks that drop bursts of datagrams or forbid UDP.
//!
//! Each node connects once to every peer it sends to and accepts the connections of
//! the peers that send to it, so a stream carries one direction. Frames travel as a
//! 4-byte little-endian length and the frame's bytes.
//!
//! What the core handed over is not lost to the socket's moods: a short write keeps the
//! rest of the frame queued for the next `WRITABLE`; `WouldBlock` queues; a connection
//! that fails (refused, reset, closed) is dropped with at most the one frame it was in
//! the middle of, and reconnected at the next send (at most every
//! [`RECONNECT_INTERVAL`]), carrying the whole frames still queued. A queue to a peer
//! that stays unreachable is capped at [`QUEUE_LIMIT`] bytes; frames beyond it are
//! dropped, which the protocol's retransmission repairs once the peer is back.
//! Incoming streams announcing an impossible length are closed.
//!
//! Addresses never move: frames go to where each peer listens, as configured, and an
//! accepted stream is not tied to a peer (its frames carry their sender's id), so no
//! frame, forged or replayed, can redirect this node's traffic.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use asap_core::MAX_FRAME_LEN;
use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use crate::runtime::{Deliver, Link, SocketStats, SOCKET_BUFFER};

/// Bytes queued to one peer before frames are dropped.
pub const QUEUE_LIMIT: usize = 16 << 20;

/// Queued frames handed to one `writev` (a batch from the engine is up to 64).
const WRITE_BATCH: usize = 64;

/// Shortest time between two connection attempts to one peer.
pub const RECONNECT_INTERVAL: Duration = Duration::from_millis(50);

const LISTENER: Token = Token(0);

/// A connection this node writes to.
#[derive(Default)]
struct Outgoing {
    stream: Option<TcpStream>,
    /// The connect completed (the first `WRITABLE` without an error).
    connected: bool,
    /// Frames, each with its length prefix; `head_sent` bytes of the first are written.
    queue: VecDeque<Vec<u8>>,
    head_sent: usize,
    queued_bytes: usize,
    last_attempt: Option<Instant>,
}

/// A connection a peer writes to.
struct Incoming {
    stream: TcpStream,
    /// Where the stream comes from (for logs; TCP learns no addresses).
    from: SocketAddr,
    buf: Vec<u8>,
}

/// A listener, one outgoing stream per peer, the accepted streams.
pub struct TcpLink {
    listener: TcpListener,
    peers: Vec<SocketAddr>,
    out: Vec<Outgoing>,
    incoming: Vec<Option<Incoming>>,
}

impl TcpLink {
    /// A link accepting on `listener` (bound); `peers[i]` is where node `i` listens.
    pub fn new(listener: std::net::TcpListener, peers: Vec<SocketAddr>) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        let out = peers.iter().map(|_| Outgoing::default()).collect();
        Ok(TcpLink {
            listener: TcpListener::from_std(listener),
            peers,
            out,
            incoming: Vec::new(),
        })
    }

    fn out_token(&self, peer: usize) -> Token {
        Token(1 + peer)
    }

    fn in_token(&self, slot: usize) -> Token {
        Token(1 + self.peers.len() + slot)
    }

    fn connect(&mut self, registry: &Registry, peer: usize) -> io::Result<()> {
        let token = self.out_token(peer);
        let o = &mut self.out[peer];
        let now = Instant::now();
        if o.last_attempt
            .is_some_and(|t| now.duration_since(t) < RECONNECT_INTERVAL)
        {
            return Ok(());
        }
        o.last_attempt = Some(now);
        // A failed connect (no route, ...) is a peer we cannot reach yet.
        let Ok(mut stream) = TcpStream::connect(self.peers[peer]) else {
            return Ok(());
        };
        let _ = stream.set_nodelay(true);
        let _ = socket2::SockRef::from(&stream).set_send_buffer_size(SOCKET_BUFFER);
        registry.register(&mut stream, token, Interest::WRITABLE | Interest::READABLE)?;
        o.stream = Some(stream);
        o.connected = false;
        Ok(())
    }

    /// Queues one frame (a segment of a batch: its zero padding travels with it, and
    /// the receiving engine ignores it) to peer `to`, connecting first if need be.
    /// `false`: dropped (no such peer, or its queue is full).
    fn queue_frame(&mut self, registry: &Registry, to: usize, frame: &[u8]) -> io::Result<bool> {
        if to >= self.peers.len() || frame.len() > MAX_FRAME_LEN {
            return Ok(false);
        }
        if self.out[to].queued_bytes + frame.len() + 4 > QUEUE_LIMIT {
            return Ok(false);
        }
        if self.out[to].stream.is_none() {
            self.connect(registry, to)?;
        }
        let mut framed = Vec::with_capacity(frame.len() + 4);
        framed.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        framed.extend_from_slice(frame);
        let o = &mut self.out[to];
        o.queued_bytes += framed.len();
        o.queue.push_back(framed);
        Ok(true)
    }

    /// Drops peer `peer`'s connection, and the frame it was in the middle of.
    fn disconnect(&mut self, registry: &Registry, peer: usize, stats: &mut SocketStats) {
        let o = &mut self.out[peer];
        if let Some(mut stream) = o.stream.take() {
            let _ = registry.deregister(&mut stream);
            stats.reconnects += 1;
        }
        o.connected = false;
        if o.head_sent > 0 {
            if let Some(frame) = o.queue.pop_front() {
                o.queued_bytes -= frame.len();
                stats.send_errors += 1;
            }
            o.head_sent = 0;
        }
    }

    /// Writes what is queued to `peer` until the socket would block.
    fn write_queue(&mut self, registry: &Registry, peer: usize, stats: &mut SocketStats) {
        let o = &mut self.out[peer];
        let Some(stream) = o.stream.as_mut().filter(|_| o.connected) else {
            return;
        };
        while !o.queue.is_empty() {
            // Up to WRITE_BATCH queued frames in one writev, the first from where the
            // last write stopped.
            let mut slices = [IoSlice::new(&[]); WRITE_BATCH];
            let count = o.queue.len().min(WRITE_BATCH);
            for (k, (slice, frame)) in slices.iter_mut().zip(&o.queue).enumerate() {
                *slice = IoSlice::new(if k == 0 { &frame[o.head_sent..] } else { frame });
            }
            match stream.write_vectored(&slices[..count]) {
                Ok(0) => return self.disconnect(registry, peer, stats),
                Ok(mut written) => {
                    while let Some(front) = o.queue.front().filter(|_| written > 0) {
                        let rest = front.len() - o.head_sent;
                        if written < rest {
                            o.head_sent += written;
                            break;
                        }
                        written -= rest;
                        o.queued_bytes -= front.len();
                        o.queue.pop_front();
                        o.head_sent = 0;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.disconnect(registry, peer, stats),
            }
        }
    }

    fn accept(&mut self, registry: &Registry) -> io::Result<()> {
        loop {
            match self.listener.accept() {
                Ok((mut stream, from)) => {
                    let _ = socket2::SockRef::from(&stream).set_recv_buffer_size(SOCKET_BUFFER);
                    let slot = match self.incoming.iter().position(Option::is_none) {
                        Some(free) => free,
                        None => {
                            self.incoming.push(None);
                            self.incoming.len() - 1
                        }
                    };
                    registry.register(&mut stream, self.in_token(slot), Interest::READABLE)?;
                    self.incoming[slot] = Some(Incoming {
                        stream,
                        from,
                        buf: Vec::with_capacity(MAX_FRAME_LEN + 4),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A connection that died before we took it, or no descriptors left
                // (the peer retries): nothing this node can do now.
                Err(_) => return Ok(()),
            }
        }
    }

    /// Reads what an accepted stream has and hands over its complete frames.
    fn read_incoming(&mut self, registry: &Registry, slot: usize, deliver: &mut Deliver<'_>, stats: &mut SocketStats) {
        let Some(Some(conn)) = self.incoming.get_mut(slot) else {
            return;
        };
        let mut chunk = [0u8; 16 * 1024];
        let open = loop {
            match conn.stream.read(&mut chunk) {
                Ok(0) => break false,
                Ok(n) => {
                    conn.buf.extend_from_slice(&chunk[..n]);
                    match take_frames(&mut conn.buf, conn.from, deliver, stats) {
                        Ok(()) => {}
                        Err(()) => break false,
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break false,
            }
        };
        if !open {
            if let Some(mut conn) = self.incoming[slot].take() {
                let _ = registry.deregister(&mut conn.stream);
            }
        }
    }
}

/// Hands every complete frame at the front of `buf` to `deliver` and removes it.
/// `Err`: the stream announced a frame no peer can send (the stream is garbage).
fn take_frames(
    buf: &mut Vec<u8>,
    from: SocketAddr,
    deliver: &mut Deliver<'_>,
    stats: &mut SocketStats,
) -> Result<(), ()> {
    let mut at = 0;
    while let Some(prefix) = buf.get(at..at + 4) {
        let len = u32::from_le_bytes(prefix.try_into().expect("4 bytes")) as usize;
        if !(1..=MAX_FRAME_LEN).contains(&len) {
            return Err(());
        }
        let Some(frame) = buf.get_mut(at + 4..at + 4 + len) else {
            break;
        };
        stats.received += 1;
        deliver(frame, from);
        at += 4 + len;
    }
    buf.drain(..at);
    Ok(())
}

impl Link for TcpLink {
    fn register(&mut self, registry: &Registry) -> io::Result<()> {
        registry.register(&mut self.listener, LISTENER, Interest::READABLE)
    }

    fn send(
        &mut self,
        registry: &Registry,
        to: usize,
        frames: &[u8],
        segment_size: usize,
        stats: &mut SocketStats,
    ) -> io::Result<bool> {
        let mut queued = false;
        for frame in frames.chunks(segment_size.max(1)) {
            if self.queue_frame(registry, to, frame)? {
                stats.sent += 1;
                queued = true;
            } else {
                stats.send_errors += 1;
            }
        }
        if queued {
            self.write_queue(registry, to, stats);
        }
        Ok(queued)
    }

    /// A stream carries any frame size: batches are only a way to hand frames over.
    fn max_segments(&self, _: usize) -> usize {
        crate::runtime::MAX_SEGMENTS
    }

    fn ready(
        &mut self,
        registry: &Registry,
        event: &Event,
        deliver: &mut Deliver<'_>,
        stats: &mut SocketStats,
    ) -> io::Result<()> {
        let Token(t) = event.token();
        let peers = self.peers.len();
        if t == 0 {
            return self.accept(registry);
        }
        if t <= peers {
            let peer = t - 1;
            let o = &mut self.out[peer];
            let Some(stream) = o.stream.as_mut() else {
                return Ok(());
            };
            if event.is_error() || event.is_read_closed() || event.is_write_closed() {
                self.disconnect(registry, peer, stats);
                return Ok(());
            }
            if event.is_writable() && !o.connected {
                // The connect finished: with an error (refused) or without.
                match stream.take_error() {
                    Ok(None) if stream.peer_addr().is_ok() => o.connected = true,
                    _ => {
                        self.disconnect(registry, peer, stats);
                        return Ok(());
                    }
                }
            }
            if event.is_readable() {
                // Nothing is sent this way; drain so a closing peer is noticed.
                let mut sink = [0u8; 256];
                loop {
                    match stream.read(&mut sink) {
                        Ok(0) => {
                            self.disconnect(registry, peer, stats);
                            return Ok(());
                        }
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
            }
            self.write_queue(registry, peer, stats);
            return Ok(());
        }
        self.read_incoming(registry, t - 1 - peers, deliver, stats);
        Ok(())
    }

    fn recv_buffer_size(&self) -> io::Result<usize> {
        socket2::SockRef::from(&self.listener).recv_buffer_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use asap_core::MIN_FRAME_LEN;

    const FROM: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9);

    #[test]
    fn frames_are_cut_from_a_stream_at_any_boundary() {
        let frames: Vec<Vec<u8>> = (1..=3u8).map(|i| vec![i; MIN_FRAME_LEN + usize::from(i)]).collect();
        let stream: Vec<u8> = frames
            .iter()
            .flat_map(|f| (f.len() as u32).to_le_bytes().into_iter().chain(f.iter().copied()))
            .collect();
        for cut in [1, 3, 4, 5, 600, stream.len() - 1] {
            let mut got: Vec<Vec<u8>> = Vec::new();
            let mut deliver = |f: &mut [u8], _| {
                got.push(f.to_vec());
                None
            };
            let (mut buf, mut stats) = (stream[..cut].to_vec(), SocketStats::default());
            take_frames(&mut buf, FROM, &mut deliver, &mut stats).unwrap();
            buf.extend_from_slice(&stream[cut..]);
            take_frames(&mut buf, FROM, &mut deliver, &mut stats).unwrap();
            assert!(buf.is_empty());
            assert_eq!(got, frames, "cut at {cut}");
            assert_eq!(stats.received, 3);
        }
    }

    #[test]
    fn an_impossible_length_closes_the_stream() {
        let mut deliver = |_: &mut [u8], _| None;
        let mut stats = SocketStats::default();
        for len in [0u32, MAX_FRAME_LEN as u32 + 1, u32::MAX] {
            let mut buf = len.to_le_bytes().to_vec();
            assert_eq!(take_frames(&mut buf, FROM, &mut deliver, &mut stats), Err(()));
        }
    }
}

//! Frames as UDP datagrams, one socket for every peer: the default link. A lost, full
//! or refused send is a lost frame, which the protocol's timers recover.
//!
//! # Batches
//!
//! A round moves thousands of datagrams a peer at the 1,400 bytes a real network
//! needs, and one system call a datagram each way is what bounds it. The socket goes
//! through `quinn-udp`: a batch from `poll_transmit_batch` (one peer's frames back to
//! back) leaves in one `sendmsg` with `UDP_SEGMENT` (GSO), and `recvmmsg` with
//! `UDP_GRO` brings many datagrams in one call, coalesced into one buffer at a stride.
//! Where the kernel or the device refuses GSO, quinn-udp turns it off and the batch is
//! sent datagram by datagram; [`UdpLink::set_offload`] turns it off by hand.
//!
//! # Where a peer is: the roaming rule
//!
//! A peer is known by the node id its frames carry, not by their source address (NATs
//! and QEMU's user networking rewrite ports), yet frames to it go to one address. That
//! address changes only on proof that the peer itself is at the new one (WireGuard's
//! rule, [`roam`]):
//!
//! * with a cluster key, to the source of a frame that authenticated and advanced the
//!   sender's replay window ([`Authenticity::Fresh`]). A replay of a real frame, from
//!   anywhere, is refused by the window, or is of a previous incarnation
//!   ([`Authenticity::Stale`]): it moves nothing, so an attacker who copies frames
//!   cannot steer a node's traffic away from its peers. Only one who can stop a
//!   frame and send it first from elsewhere can; the peer's next frame moves the
//!   address back;
//! * without a key, never: anyone can send any frame from anywhere, so a configured
//!   address is the only one to trust. A peer behind a NAT then needs its
//!   forwarded address configured (QEMU boards: the `hostfwd` port, as
//!   `targets/*/run.sh` do);
//! * a peer with no usable configured address (unspecified IP or port 0: "somewhere
//!   behind a NAT") takes the source of its first accepted frame, then keeps it like a
//!   configured one (with a key, only a fresh frame's). Without a key that first
//!   frame could be an attacker's; every run today configures every address.
//!
//! Every move is logged (at most one line per [`crate::diag::LOG_INTERVAL`]).

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::time::Instant as WallClock;

use mio::event::Event;
use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};
use quinn_udp::{RecvMeta, Transmit, UdpSocketState, BATCH_SIZE};

use crate::diag::Throttle;
use crate::runtime::{Accepted, Authenticity, Deliver, Link, SocketStats, SOCKET_BUFFER};

const SOCKET: Token = Token(0);

/// Most bytes one GSO send takes: the batch travels as one UDP datagram inside the
/// kernel until the device cuts it, so it is bounded as one is (65,535 less the IPv4 and
/// UDP headers); a larger one is refused with `EMSGSIZE`.
const MAX_GSO_BYTES: usize = 65_507;

/// Bytes of one receive buffer: a coalesced (GRO) run of datagrams is at most 64 KiB,
/// as is one datagram.
const RX_SLOT: usize = 1 << 16;

/// One bound UDP socket and every peer's address.
pub struct UdpLink {
    socket: UdpSocket,
    state: UdpSocketState,
    /// Batches go to the kernel whole (GSO), when it takes them.
    offload: bool,
    peers: Vec<SocketAddr>,
    /// `BATCH_SIZE` receive buffers of `RX_SLOT` bytes, for one `recvmmsg`.
    rx: Vec<u8>,
    meta: [RecvMeta; BATCH_SIZE],
    moves: Throttle,
}

/// The `drops` counter Linux keeps for `socket` (in `/proc/net/udp` and `udp6`, found by
/// the socket's inode): datagrams that found its receive buffer full.
#[cfg(target_os = "linux")]
fn socket_drops(socket: &UdpSocket) -> Option<u64> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let inode = std::fs::metadata(format!("/proc/self/fd/{}", socket.as_raw_fd()))
        .ok()?
        .ino();
    ["/proc/net/udp", "/proc/net/udp6"].iter().find_map(|table| {
        let text = std::fs::read_to_string(table).ok()?;
        text.lines().skip(1).find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st queues tr retrnsmt uid timeout inode ref pointer drops
            (fields.get(9)?.parse::<u64>().ok()? == inode).then(|| fields.get(12)?.parse().ok())?
        })
    })
}

#[cfg(not(target_os = "linux"))]
fn socket_drops(_: &UdpSocket) -> Option<u64> {
    None
}

/// Whether `addr` can be sent to: a configured `0.0.0.0:0` (or any unspecified IP, or
/// port 0) means "not known yet".
pub fn is_usable(addr: SocketAddr) -> bool {
    !addr.ip().is_unspecified() && addr.port() != 0
}

/// The roaming rule (see the [module docs](self)): where to send to a peer known at
/// `known` after it sent a frame the engine accepted from `from`. `Some(from)`: move
/// there; `None`: stay.
pub fn roam(known: SocketAddr, from: SocketAddr, authenticity: Authenticity) -> Option<SocketAddr> {
    let moves = match authenticity {
        Authenticity::Fresh => true,
        Authenticity::Stale => false,
        Authenticity::Unkeyed => !is_usable(known),
    };
    (moves && from != known).then_some(from)
}

impl UdpLink {
    /// A link over `socket` (bound); `peers[i]` is node `i`'s address.
    pub fn new(socket: std::net::UdpSocket, peers: Vec<SocketAddr>) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        let socket = socket2::Socket::from(socket);
        // Best effort: a smaller buffer only costs retransmissions.
        let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
        let socket = UdpSocket::from_std(socket.into());
        // Turns on GRO where the kernel has it, and learns how many segments GSO takes.
        let state = UdpSocketState::new((&socket).into())?;
        Ok(UdpLink {
            socket,
            state,
            offload: true,
            peers,
            rx: vec![0; BATCH_SIZE * RX_SLOT],
            meta: [RecvMeta::default(); BATCH_SIZE],
            moves: Throttle::default(),
        })
    }

    /// Whether batches go to the kernel whole (GSO, the default where the kernel takes
    /// it) or datagram by datagram (`false`: what a kernel without GSO gets).
    pub fn set_offload(&mut self, offload: bool) {
        self.offload = offload;
    }

    /// Sends one datagram, or a batch of them at `segment_size`; `false`: dropped.
    fn send_one(&self, to: SocketAddr, contents: &[u8], segment_size: usize) -> bool {
        let transmit = Transmit {
            destination: to,
            ecn: None,
            contents,
            segment_size: (contents.len() > segment_size).then_some(segment_size),
            src_ip: None,
        };
        // A full socket buffer or an ICMP error from a dead peer: the frames are lost
        // like any other.
        self.state.try_send((&self.socket).into(), &transmit).is_ok()
    }

    /// Where frames to node `id` go now.
    pub fn peer_addr(&self, id: usize) -> Option<SocketAddr> {
        self.peers.get(id).copied()
    }
}

impl Link for UdpLink {
    fn register(&mut self, registry: &Registry) -> io::Result<()> {
        registry.register(&mut self.socket, SOCKET, Interest::READABLE)
    }

    fn send(
        &mut self,
        _: &Registry,
        to: usize,
        frames: &[u8],
        segment_size: usize,
        stats: &mut SocketStats,
    ) -> io::Result<bool> {
        let Some(&addr) = self.peers.get(to) else {
            return Ok(false);
        };
        let segment_size = segment_size.clamp(1, frames.len().max(1));
        let segments = frames.len().div_ceil(segment_size) as u64;
        let gso = frames.len() > segment_size && frames.len() <= MAX_GSO_BYTES && self.state.max_gso_segments() > 1;
        if gso && self.offload && self.send_one(addr, frames, segment_size) {
            stats.sent += segments;
            return Ok(true);
        }
        // No GSO (or it just failed, and quinn-udp turned it off): one datagram each.
        let mut sent = false;
        for frame in frames.chunks(segment_size) {
            if self.send_one(addr, frame, segment_size) {
                stats.sent += 1;
                sent = true;
            } else {
                stats.send_errors += 1;
            }
        }
        Ok(sent)
    }

    fn max_segments(&self, max_frame: usize) -> usize {
        match self.offload {
            true => self
                .state
                .max_gso_segments()
                .min(MAX_GSO_BYTES / max_frame.max(1))
                .max(1),
            false => 1,
        }
    }

    fn ready(&mut self, _: &Registry, _: &Event, deliver: &mut Deliver<'_>, stats: &mut SocketStats) -> io::Result<()> {
        loop {
            let mut slots = self.rx.chunks_mut(RX_SLOT);
            let mut bufs: [IoSliceMut<'_>; BATCH_SIZE] =
                std::array::from_fn(|_| IoSliceMut::new(slots.next().expect("BATCH_SIZE slots")));
            let received = match self.state.recv((&self.socket).into(), &mut bufs, &mut self.meta) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                // ICMP port unreachable from a peer that is gone, and the like.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            for (meta, buf) in self.meta.iter().zip(bufs.iter_mut()).take(received) {
                let from = meta.addr;
                // A coalesced buffer holds datagrams of `stride` bytes, the last shorter.
                for datagram in buf[..meta.len].chunks_mut(meta.stride.max(1)) {
                    stats.received += 1;
                    let Some(Accepted { from: id, authenticity }) = deliver(datagram, from) else {
                        continue;
                    };
                    let Some(addr) = self.peers.get_mut(usize::from(id.0)) else {
                        continue;
                    };
                    if let Some(to) = roam(*addr, from, authenticity) {
                        if let Some(left_out) = self.moves.admit(WallClock::now()) {
                            log::info!("{id} moved from {addr} to {to} ({left_out} other moves not logged)");
                        }
                        *addr = to;
                    }
                }
            }
        }
    }

    fn recv_buffer_size(&self) -> io::Result<usize> {
        socket2::SockRef::from(&self.socket).recv_buffer_size()
    }

    fn request_recv_buffer(&mut self, bytes: usize) -> io::Result<usize> {
        let socket = socket2::SockRef::from(&self.socket);
        socket.set_recv_buffer_size(bytes)?;
        socket.recv_buffer_size()
    }

    fn kernel_drops(&self) -> Option<u64> {
        socket_drops(&self.socket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_fresh_authenticated_frames_move_a_known_address() {
        let known: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let other: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert_eq!(roam(known, other, Authenticity::Fresh), Some(other));
        assert_eq!(roam(known, other, Authenticity::Stale), None);
        assert_eq!(roam(known, other, Authenticity::Unkeyed), None);
        assert_eq!(roam(known, known, Authenticity::Fresh), None, "no move to where it is");
    }

    #[test]
    fn an_unknown_address_is_learnt_once_without_a_key() {
        let other: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        for unknown in ["0.0.0.0:0", "0.0.0.0:4000", "127.0.0.1:0", "[::]:0"] {
            let unknown: SocketAddr = unknown.parse().unwrap();
            assert!(!is_usable(unknown));
            assert_eq!(roam(unknown, other, Authenticity::Unkeyed), Some(other), "{unknown}");
            assert_eq!(roam(unknown, other, Authenticity::Fresh), Some(other));
            // A keyed cluster learns from nothing but fresh frames.
            assert_eq!(roam(unknown, other, Authenticity::Stale), None);
        }
        // Learnt, it is usable: the next unkeyed frame moves it no further.
        assert_eq!(
            roam(other, "127.0.0.1:6000".parse().unwrap(), Authenticity::Unkeyed),
            None
        );
    }
}

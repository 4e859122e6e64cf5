//! Frames as UDP datagrams, one socket for every peer: the default link. A lost, full
//! or refused send is a lost frame, which the protocol's timers recover.

use std::io;
use std::net::SocketAddr;

use mio::event::Event;
use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};

use crate::runtime::{Deliver, Link, SocketStats, SOCKET_BUFFER};

const SOCKET: Token = Token(0);

/// One bound UDP socket and every peer's address.
pub struct UdpLink {
    socket: UdpSocket,
    peers: Vec<SocketAddr>,
    rx: Vec<u8>,
}

impl UdpLink {
    /// A link over `socket` (bound); `peers[i]` is node `i`'s address.
    pub fn new(socket: std::net::UdpSocket, peers: Vec<SocketAddr>) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        let socket = socket2::Socket::from(socket);
        // Best effort: a smaller buffer only costs retransmissions.
        let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
        Ok(UdpLink {
            socket: UdpSocket::from_std(socket.into()),
            peers,
            rx: vec![0; asap_core::wire::MAX_FRAME_LEN],
        })
    }
}

impl Link for UdpLink {
    fn register(&mut self, registry: &Registry) -> io::Result<()> {
        registry.register(&mut self.socket, SOCKET, Interest::READABLE)
    }

    fn send(&mut self, _: &Registry, to: usize, frame: &[u8], _: &mut SocketStats) -> io::Result<bool> {
        let Some(addr) = self.peers.get(to) else {
            return Ok(false);
        };
        // A full socket buffer or an ICMP error from a dead peer: the frame is lost
        // like any other.
        Ok(self.socket.send_to(frame, *addr).is_ok())
    }

    fn ready(&mut self, _: &Registry, _: &Event, deliver: &mut Deliver<'_>, stats: &mut SocketStats) -> io::Result<()> {
        loop {
            match self.socket.recv_from(&mut self.rx) {
                Ok((len, from)) => {
                    stats.received += 1;
                    if let Some(id) = deliver(&mut self.rx[..len]) {
                        // Learn where the peer really is (a NAT may have moved it).
                        if let Some(addr) = self.peers.get_mut(usize::from(id.0)) {
                            *addr = from;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                // ICMP port unreachable from a peer that is gone, and the like.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn recv_buffer_size(&self) -> io::Result<usize> {
        socket2::SockRef::from(&self.socket).recv_buffer_size()
    }
}

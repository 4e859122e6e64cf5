//! A batch of datagrams (one peer's frames back to back, `poll_transmit_batch`) crosses
//! the kernel whole: with segmentation offload (one `sendmsg` with `UDP_SEGMENT`, read
//! back with `UDP_GRO`) and without (one datagram each, what a kernel without GSO gets).
//! Each datagram arrives as its own frame, byte for byte, the last shorter one included.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use asap_core::NodeId;
use mio::{Events, Poll};
use transport_mio::runtime::{Accepted, Authenticity, Link, SocketStats};
use transport_mio::udp::UdpLink;

const SEGMENT: usize = 1_400;
const SEGMENTS: usize = 20;

/// A link on loopback whose only peer (node 0) is at `peer`.
fn link(peer: SocketAddr) -> (UdpLink, SocketAddr) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    (UdpLink::new(socket, vec![peer]).unwrap(), addr)
}

/// Sends `SEGMENTS - 1` datagrams of `SEGMENT` bytes and a shorter last one as one batch
/// from one link to another, and returns what the receiver got, datagram by datagram.
fn round_trip(offload: bool) -> (Vec<Vec<u8>>, Vec<u8>, usize) {
    let (mut rx, rx_addr) = link("127.0.0.1:9".parse().unwrap());
    let (mut tx, _) = link(rx_addr);
    tx.set_offload(offload);
    let max_segments = tx.max_segments(SEGMENT);
    let mut poll = Poll::new().unwrap();
    rx.register(poll.registry()).unwrap();
    let len = (SEGMENTS - 1) * SEGMENT + 333;
    let batch: Vec<u8> = (0..len).map(|i| (i % 251) as u8 ^ (i / SEGMENT) as u8).collect();
    let mut stats = SocketStats::default();
    assert!(tx.send(poll.registry(), 0, &batch, SEGMENT, &mut stats).unwrap());
    assert_eq!(stats.sent, SEGMENTS as u64, "{stats:?}");
    let mut got = Vec::new();
    let mut events = Events::with_capacity(8);
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < SEGMENTS && Instant::now() < deadline {
        poll.poll(&mut events, Some(Duration::from_millis(100))).unwrap();
        for event in events.iter() {
            let mut deliver = |datagram: &mut [u8], _: SocketAddr| {
                got.push(datagram.to_vec());
                Some(Accepted {
                    from: NodeId(0),
                    authenticity: Authenticity::Unkeyed,
                })
            };
            rx.ready(poll.registry(), event, &mut deliver, &mut SocketStats::default())
                .unwrap();
        }
    }
    (got, batch, max_segments)
}

#[test]
fn a_batch_arrives_datagram_by_datagram_with_offload_and_without() {
    for offload in [true, false] {
        let (got, batch, max_segments) = round_trip(offload);
        if !offload {
            assert_eq!(max_segments, 1, "offload off: one datagram a send");
        } else if max_segments == 1 {
            eprintln!("this kernel takes no GSO: only the datagram-by-datagram path ran");
        }
        let sent: Vec<&[u8]> = batch.chunks(SEGMENT).collect();
        assert_eq!(got.len(), sent.len(), "offload {offload}: datagrams received");
        for (k, (g, s)) in got.iter().zip(&sent).enumerate() {
            assert!(g.as_slice() == *s, "offload {offload}: datagram {k} differs");
        }
    }
}

/// A receiver that does not read while a peer sends more than its buffer holds loses
/// datagrams in the kernel, and the link says how many (Linux's per-socket counter).
#[cfg(target_os = "linux")]
#[test]
fn datagrams_the_kernel_dropped_for_a_full_buffer_are_counted() {
    let (rx, rx_addr) = link("127.0.0.1:9".parse().unwrap());
    assert_eq!(rx.kernel_drops(), Some(0));
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let datagram = [7u8; SEGMENT];
    // Far more than the 4 MiB buffer holds (each datagram costs more than its bytes).
    let sent = 20_000;
    for _ in 0..sent {
        let _ = sender.send_to(&datagram, rx_addr);
    }
    let drops = rx.kernel_drops().expect("Linux counts drops");
    assert!(drops > 0 && drops < sent, "{drops} of {sent} dropped");
}

//! The mio runtime in one process: several engines on loopback sockets, one thread each.
//!
//! * The roaming rule: copies of every real frame, replayed (and mutated) from a
//!   foreign socket, move no address, with a cluster key or without, and the cluster
//!   still reaches the exact mean; a peer that really sits at another port is found
//!   there by its authenticated frames (keyed), or learnt once when no usable address
//!   was configured (unkeyed).
//! * Events reach the application: a peer that leaves is seen going down.

use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::time::Duration;

use asap_core::topology::{Family, Topology, TopologySpec};
use asap_core::Key;
use asap_core::{Buffers, Config, Event, Node, NodeId};
use mio::event::Event as Readiness;
use mio::Registry;
use transport_mio::runtime::{Deliver, Link, Runtime, SocketStats, MAX_PEERS};
use transport_mio::udp::UdpLink;

const SEED: u64 = 0x5eed;
const MODEL: usize = 300;
const LIMIT: Duration = Duration::from_secs(20);

/// A UDP link that hands a copy of every frame it sent to `capture`, with where it went:
/// what an eavesdropper on the path records.
struct Tap {
    inner: UdpLink,
    capture: mpsc::Sender<(SocketAddr, Vec<u8>)>,
}

impl Link for Tap {
    fn register(&mut self, registry: &Registry) -> std::io::Result<()> {
        self.inner.register(registry)
    }

    fn send(
        &mut self,
        registry: &Registry,
        to: usize,
        frames: &[u8],
        segment_size: usize,
        stats: &mut SocketStats,
    ) -> std::io::Result<bool> {
        let addr = self.inner.peer_addr(to);
        let sent = self.inner.send(registry, to, frames, segment_size, stats)?;
        // Captured after the real frames left: on loopback the copies arrive second.
        if let (true, Some(addr)) = (sent, addr) {
            for frame in frames.chunks(segment_size) {
                let _ = self.capture.send((addr, frame.to_vec()));
            }
        }
        Ok(sent)
    }

    fn max_segments(&self, max_frame: usize) -> usize {
        self.inner.max_segments(max_frame)
    }

    fn ready(
        &mut self,
        registry: &Registry,
        event: &Readiness,
        deliver: &mut Deliver<'_>,
        stats: &mut SocketStats,
    ) -> std::io::Result<()> {
        self.inner.ready(registry, event, deliver, stats)
    }

    fn recv_buffer_size(&self) -> std::io::Result<usize> {
        self.inner.recv_buffer_size()
    }
}

/// Node `id` of `world` on the complete graph, averaging its seeded replica.
fn node(id: usize, world: usize, key: Option<Key>) -> Node<'static, MAX_PEERS> {
    node_of_incarnation(id, world, key, 1)
}

fn node_of_incarnation(id: usize, world: usize, key: Option<Key>, incarnation: u32) -> Node<'static, MAX_PEERS> {
    let topology = Topology::new(
        TopologySpec::new(Family::Complete, world as u32),
        &mut vec![0.0; 3 * world],
    )
    .unwrap();
    let config = Config {
        key,
        incarnation,
        ..Config::new(0xa5a9, NodeId(id as u16), MODEL)
    };
    let layout = config.layout(topology.peers_of(id as u32).count()).unwrap();
    let buffers = Buffers {
        snapshot: Vec::leak(vec![0.0; layout.model_len]),
        accumulator: Vec::leak(vec![0.0; layout.accumulator]),
        chunk_weights: Vec::leak(vec![0.0; layout.chunks]),
        chunk_mass: Vec::leak(vec![0.0; layout.chunk_mass]),
        chunk_bits: Vec::leak(vec![0; layout.bitmap_words]),
    };
    Node::with_topology(config, &topology, buffers, asap_core::Instant::ZERO).unwrap()
}

fn bind() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").unwrap()
}

/// What one node ended with.
#[derive(Debug)]
struct Outcome {
    /// Where it sent to each peer at the end.
    addresses: Vec<SocketAddr>,
    max_error: f64,
    socket: SocketStats,
    replays: u64,
    /// Frames the engine sent and accepted.
    frames_sent: u64,
    frames_received: u64,
    /// Events taken after each round (peers that finished first and left may show up
    /// in the last one).
    events: Vec<Event>,
}

/// Runs `world` nodes for `rounds` rounds (node `i` stops after `rounds_of(i)`), each
/// with `peers[i]` as its address table; every sent frame goes to `capture`.
fn run_cluster(
    sockets: Vec<UdpSocket>,
    peers: Vec<Vec<SocketAddr>>,
    key: Option<Key>,
    rounds_of: impl Fn(usize) -> u32 + Sync,
    capture: mpsc::Sender<(SocketAddr, Vec<u8>)>,
) -> Vec<Outcome> {
    let world = sockets.len();
    std::thread::scope(|s| {
        let handles: Vec<_> = sockets
            .into_iter()
            .zip(peers)
            .enumerate()
            .map(|(i, (socket, peers))| {
                let capture = capture.clone();
                let rounds = rounds_of(i);
                s.spawn(move || {
                    let link = Tap {
                        inner: UdpLink::new(socket, peers).unwrap(),
                        capture,
                    };
                    let mut runtime = Runtime::with_link(node(i, world, key), link).unwrap();
                    let mut params = asap_fed::seeded::vector(SEED, i as u32, MODEL);
                    let mut events = Vec::new();
                    for round in 0..rounds {
                        runtime
                            .run_round(&mut params, LIMIT)
                            .unwrap_or_else(|e| panic!("node {i} round {round}: {e}"));
                        events.extend(std::iter::from_fn(|| runtime.poll_event()));
                    }
                    // Lingers until its last update is delivered: a node that gave up
                    // sooner (300 ms did, on a loaded 2-core CI machine) would leave
                    // while a peer still waits for its update, and that peer would see
                    // it go down during its last round.
                    runtime.finish(LIMIT).unwrap();
                    Outcome {
                        addresses: (0..world).map(|j| runtime.link().inner.peer_addr(j).unwrap()).collect(),
                        max_error: asap_fed::seeded::max_error_to_mean(&params, SEED, world as u32),
                        socket: runtime.stats(),
                        replays: asap_core::Reducer::stats(runtime.node()).replays,
                        frames_sent: asap_core::Reducer::stats(runtime.node()).frames_sent,
                        frames_received: asap_core::Reducer::stats(runtime.node()).frames_received,
                        events,
                    }
                })
            })
            .collect();
        drop(capture);
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Replays every captured frame from a socket of its own, once as it was and once with
/// one payload byte flipped; returns how many of each it sent.
fn replay_from_a_foreign_port(
    capture: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
) -> (SocketAddr, std::thread::JoinHandle<u64>) {
    let foreign = bind();
    let at = foreign.local_addr().unwrap();
    let attacker = std::thread::spawn(move || {
        let mut sent = 0;
        for (to, mut frame) in capture {
            let _ = foreign.send_to(&frame, to);
            let middle = frame.len() / 2;
            frame[middle] ^= 0x10;
            let _ = foreign.send_to(&frame, to);
            sent += 1;
        }
        sent
    });
    (at, attacker)
}

fn replays_move_no_address(key: Option<Key>) {
    const WORLD: usize = 4;
    const ROUNDS: u32 = 30;
    let sockets: Vec<UdpSocket> = (0..WORLD).map(|_| bind()).collect();
    let addrs: Vec<SocketAddr> = sockets.iter().map(|s| s.local_addr().unwrap()).collect();
    let (capture, captured) = mpsc::channel();
    let (foreign, attacker) = replay_from_a_foreign_port(captured);
    let outcomes = run_cluster(sockets, vec![addrs.clone(); WORLD], key, |_| ROUNDS, capture);
    let replayed = attacker.join().unwrap();
    assert!(replayed > 100, "only {replayed} frames replayed");
    for (i, o) in outcomes.iter().enumerate() {
        assert_eq!(
            o.addresses, addrs,
            "node {i}'s peers moved (the replays came from {foreign})"
        );
        assert!(o.max_error < 1e-5, "node {i}: max error {:e}", o.max_error);
        // Every mutated copy fails its checksum or tag, and is counted.
        assert!(o.socket.refused > 0, "node {i}: {:?}", o.socket);
        // Replays take no peer down. A peer that finished first leaves once its last
        // update is delivered (every chunk here, the ACK still due), which can be
        // before this node's last round is ready (it may still wait for a slower
        // peer); but no peer can finish its last round before this node started it,
        // after its last-but-one round was ready.
        let ready_before_last = o
            .events
            .iter()
            .position(|e| *e == Event::RoundReady { round: ROUNDS - 2 });
        let during = &o.events[..ready_before_last.expect("the last-but-one round was ready")];
        assert!(
            !during.iter().any(|e| matches!(e, Event::PeerDown(_))),
            "node {i} lost a peer during the rounds: {:?}",
            o.events
        );
        if key.is_some() {
            assert!(o.replays > 0, "node {i}: no replay refused");
        }
    }
    // A keyed engine accepts no copy: the frames accepted are at most the genuine ones
    // sent (copies that reach a node after it finished are not counted anywhere).
    if key.is_some() {
        let sent: u64 = outcomes.iter().map(|o| o.frames_sent).sum();
        let accepted: u64 = outcomes.iter().map(|o| o.frames_received).sum();
        assert!(
            accepted <= sent,
            "{accepted} frames accepted of {sent} genuine ones sent"
        );
    }
}

#[test]
fn unkeyed_replays_from_a_foreign_port_move_no_address_and_the_cluster_converges() {
    replays_move_no_address(None);
}

#[test]
fn keyed_replays_from_a_foreign_port_are_refused_and_move_no_address() {
    replays_move_no_address(Some(Key::new([0x42; 32])));
}

/// Node 1 sits at a port node 0 was not told (`configured`): returns where node 0
/// sends to node 1 at the end, and node 1's real address.
fn moved_peer(key: Option<Key>, configured: Option<SocketAddr>) -> (SocketAddr, SocketAddr) {
    let sockets = vec![bind(), bind()];
    let real: Vec<SocketAddr> = sockets.iter().map(|s| s.local_addr().unwrap()).collect();
    // Where node 1 was before it moved: a socket nobody reads.
    let old = bind();
    let told = configured.unwrap_or(old.local_addr().unwrap());
    let peers = vec![vec![real[0], told], real.clone()];
    let (capture, _captured) = mpsc::channel();
    let outcomes = run_cluster(sockets, peers, key, |_| 10, capture);
    for o in &outcomes {
        assert!(o.max_error < 1e-5, "max error {:e}", o.max_error);
    }
    (outcomes[0].addresses[1], real[1])
}

#[test]
fn a_keyed_peer_that_really_moved_is_followed_by_its_authenticated_frames() {
    let (now, real) = moved_peer(Some(Key::new([0x17; 32])), None);
    assert_eq!(now, real);
}

#[test]
fn an_unkeyed_peer_with_no_usable_configured_address_is_learnt_from_its_first_frame() {
    let (now, real) = moved_peer(None, Some("0.0.0.0:0".parse().unwrap()));
    assert_eq!(now, real);
}

/// Frames node 1 of 2 sends first (its Hellos), in its incarnation `incarnation`.
fn first_frames(key: Option<Key>, incarnation: u32) -> Vec<Vec<u8>> {
    let mut n = node_of_incarnation(1, 2, key, incarnation);
    let mut buf = vec![0; n.config().max_frame];
    let mut frames = Vec::new();
    let mut now = asap_core::Instant::ZERO;
    while frames.len() < 3 {
        match n.poll_transmit(now, &mut buf).unwrap() {
            Some(t) => frames.push(buf[..t.len].to_vec()),
            None => {
                now = n.poll_timeout().expect("a Hello retry is armed");
                n.handle_timeout(now);
            }
        }
    }
    frames
}

#[test]
fn keyed_replays_of_a_previous_incarnation_move_no_address() {
    let key = Some(Key::new([0x99; 32]));
    let (s0, s1, foreign) = (bind(), bind(), bind());
    let (a0, a1) = (s0.local_addr().unwrap(), s1.local_addr().unwrap());
    let mut runtime = Runtime::new(node(0, 2, key), s0, vec![a0, a1]).unwrap();
    let (old, new) = (first_frames(key, 1), first_frames(key, 2));
    let mut deliver = |from: &UdpSocket, frames: &[Vec<u8>]| {
        frames.iter().for_each(|f| drop(from.send_to(f, a0)));
        // The datagrams are queued on loopback already: one short serve takes them.
        runtime.serve(Duration::from_millis(50)).unwrap();
        (runtime.node().stats().frames_received, runtime.node().stats().stale)
    };
    // Node 1 speaks from where it is configured, restarts, and speaks again.
    assert_eq!(deliver(&s1, &old), (3, 0));
    assert_eq!(deliver(&s1, &new), (6, 0));
    // Its previous life's frames, replayed from elsewhere: authentic, accepted as stale
    // (no replay window covers them), and they prove nothing about where node 1 is.
    assert_eq!(deliver(&foreign, &old), (9, 3));
    assert_eq!(runtime.link().peer_addr(1), Some(a1));
    assert!(std::iter::from_fn(|| runtime.poll_event()).any(|e| e == Event::PeerRestarted(NodeId(1))));
}

#[test]
fn the_application_sees_a_peer_that_leaves_go_down() {
    const WORLD: usize = 3;
    let sockets: Vec<UdpSocket> = (0..WORLD).map(|_| bind()).collect();
    let addrs: Vec<SocketAddr> = sockets.iter().map(|s| s.local_addr().unwrap()).collect();
    let (capture, _captured) = mpsc::channel();
    // Node 2 leaves after 3 rounds; the others go on to 8.
    let outcomes = run_cluster(
        sockets,
        vec![addrs; WORLD],
        None,
        |i| if i == 2 { 3 } else { 8 },
        capture,
    );
    for (i, o) in outcomes.iter().enumerate().take(2) {
        let down = o.events.iter().position(|e| *e == Event::PeerDown(NodeId(2)));
        assert!(down.is_some(), "node {i} never saw node 2 go down: {:?}", o.events);
        let ready = o
            .events
            .iter()
            .filter(|e| matches!(e, Event::RoundReady { .. }))
            .count();
        assert_eq!(ready, 8, "node {i}: {:?}", o.events);
        assert_eq!(o.socket.events_dropped, 0);
    }
}

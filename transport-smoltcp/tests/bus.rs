//! Several smoltcp interfaces wired through an in-memory IP "bus" with seeded loss, each
//! with an ASAP node on a smoltcp UDP socket, run rounds to the exact mean — the whole
//! driver on the host, on a virtual clock. An eavesdropper on the bus replays every
//! frame from a foreign port (the roaming rule), and the application sees the events.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use asap_core::topology::{Family, Topology, TopologySpec};
use asap_core::Key;
use asap_core::{Buffers, Config, Event, Node, NodeId};
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet, SocketStorage};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::udp;
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint, Ipv4Address};
use transport_smoltcp::{Driver, Step};

const PORT: u16 = 7000;
const MTU: usize = 1500;

/// Packets in flight to each interface, and a seeded coin for loss.
struct Bus {
    queues: Vec<VecDeque<Vec<u8>>>,
    rng: u64,
    loss_per_mille: u64,
    delivered: u64,
    lost: u64,
    /// Every delivered packet the boards sent, for an eavesdropper (when `Some`).
    capture: Option<Vec<Vec<u8>>>,
}

impl Bus {
    fn coin(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) % 1000
    }

    /// Routes an IPv4 packet by its destination's last octet (10.0.0.k is interface k-1).
    fn carry(&mut self, packet: Vec<u8>) {
        let k = usize::from(packet[19]).wrapping_sub(1);
        if k < self.queues.len() && self.coin() >= self.loss_per_mille {
            // Sent from a board's port (not the eavesdropper's): record it.
            if let Some(capture) = self.capture.as_mut().filter(|_| packet[20..22] == PORT.to_be_bytes()) {
                capture.push(packet.clone());
            }
            self.queues[k].push_back(packet);
            self.delivered += 1;
        } else {
            self.lost += 1;
        }
    }
}

struct Port {
    bus: Rc<RefCell<Bus>>,
    me: usize,
}

struct Rx(Vec<u8>);
struct Tx(Rc<RefCell<Bus>>);

impl RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for Tx {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut packet = vec![0; len];
        let r = f(&mut packet);
        self.0.borrow_mut().carry(packet);
        r
    }
}

impl Device for Port {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx;

    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx)> {
        let packet = self.bus.borrow_mut().queues[self.me].pop_front()?;
        Some((Rx(packet), Tx(self.bus.clone())))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx> {
        Some(Tx(self.bus.clone()))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = MTU;
        caps
    }
}

fn address(i: usize) -> Ipv4Address {
    Ipv4Address::new(10, 0, 0, i as u8 + 1)
}

struct Board {
    iface: Interface,
    port: Port,
    sockets: SocketSet<'static>,
    driver: Driver<'static, Node<'static, 8>>,
    params: Vec<f32>,
    rounds: u32,
    /// The driver's events, drained after every pass.
    events: Vec<Event>,
    /// It left the cluster and is switched off.
    off: bool,
}

fn endpoint(i: usize, port: u16) -> IpEndpoint {
    IpEndpoint::new(IpAddress::Ipv4(address(i)), port)
}

fn bus(n: usize, rng: u64, loss_per_mille: u64) -> Rc<RefCell<Bus>> {
    Rc::new(RefCell::new(Bus {
        queues: vec![VecDeque::new(); n],
        rng,
        loss_per_mille,
        delivered: 0,
        lost: 0,
        capture: None,
    }))
}

/// `n` boards on one bus, each averaging a seeded replica with its neighbours; with
/// `encrypt`, under a cluster key with encrypted payloads (and a receive buffer each).
fn boards(n: usize, model: usize, family: Family, bus: &Rc<RefCell<Bus>>, encrypt: bool) -> Vec<Board> {
    boards_with(n, model, family, bus, encrypt, &|_, k| endpoint(k, PORT))
}

/// [`boards`] where board `i`'s peer table holds `table(i, k)` for board `k`.
fn boards_with(
    n: usize,
    model: usize,
    family: Family,
    bus: &Rc<RefCell<Bus>>,
    encrypt: bool,
    table: &dyn Fn(usize, usize) -> IpEndpoint,
) -> Vec<Board> {
    let topology = Topology::new(TopologySpec::new(family, n as u32), &mut vec![0.0; 3 * n]).unwrap();
    (0..n)
        .map(|i| {
            let mut port = Port {
                bus: bus.clone(),
                me: i,
            };
            let mut iface = Interface::new(IfaceConfig::new(HardwareAddress::Ip), &mut port, Instant::ZERO);
            iface.update_ip_addrs(|a| a.push(IpCidr::new(IpAddress::Ipv4(address(i)), 24)).unwrap());
            let storage: &'static mut [SocketStorage<'static>] = Box::leak(Box::new([SocketStorage::EMPTY; 1]));
            let mut sockets = SocketSet::new(storage);
            let buffer = |frames: usize| {
                udp::PacketBuffer::new(
                    Vec::leak(vec![udp::PacketMetadata::EMPTY; frames]),
                    Vec::leak(vec![0u8; frames * MTU]),
                )
            };
            // Room for every frame of a tick even when each arrives three times (the
            // eavesdropper's copies): a genuine frame dropped for want of room would
            // let its copy arrive first, and a first copy is, to anyone, the frame.
            let mut socket = udp::Socket::new(buffer(64), buffer(16));
            socket.bind(PORT).unwrap();
            let handle: SocketHandle = sockets.add(socket);
            let config = Config {
                key: encrypt.then(|| Key::new([0x3c; 32])),
                encrypt,
                incarnation: 1,
                ..Config::new(0xa5a9, NodeId(i as u16), model)
            };
            let layout = config.layout(topology.peers_of(i as u32).count()).unwrap();
            let buffers = Buffers {
                snapshot: Vec::leak(vec![0.0; layout.model_len]),
                accumulator: Vec::leak(vec![0.0; layout.accumulator]),
                chunk_weights: Vec::leak(vec![0.0; layout.chunks]),
                chunk_mass: Vec::leak(vec![0.0; layout.chunk_mass]),
                chunk_bits: Vec::leak(vec![0; layout.bitmap_words]),
            };
            let node = Node::with_topology(config, &topology, buffers, asap_core::Instant::ZERO).unwrap();
            let peers = Vec::leak((0..n).map(|k| table(i, k)).collect());
            let tx = Vec::leak(vec![0u8; config.max_frame]);
            let mut driver = Driver::new(node, handle, peers, tx).unwrap();
            if encrypt {
                driver = driver.with_rx(Vec::leak(vec![0u8; config.max_frame])).unwrap();
            }
            let params = (0..model)
                .map(|k| ((i * 7919 + k * 104_729) % 1000) as f32 / 500.0 - 1.0)
                .collect();
            Board {
                iface,
                port,
                sockets,
                driver,
                params,
                rounds: 0,
                events: Vec::new(),
                off: false,
            }
        })
        .collect()
}

/// Runs every board `rounds` rounds on a 100 µs virtual tick; returns the ticks taken.
fn run(boards: &mut [Board], rounds: u32) -> u64 {
    run_with(boards, &|_| rounds, false, &mut |_, _| {})
}

/// Runs board `i` for `rounds_of(i)` rounds (then, with `leave`, it leaves and goes on
/// serving), calling `between(now, boards)` after every tick; returns the ticks taken.
fn run_with(
    boards: &mut [Board],
    rounds_of: &dyn Fn(usize) -> u32,
    leave: bool,
    between: &mut dyn FnMut(Instant, &[Board]),
) -> u64 {
    for tick in 0..2_000_000u64 {
        let now = Instant::from_micros(tick as i64 * 100);
        for (i, b) in boards.iter_mut().enumerate().filter(|(_, b)| !b.off) {
            b.driver.poll(now, &mut b.iface, &mut b.port, &mut b.sockets);
            if b.rounds < rounds_of(i) && b.driver.step(now, &mut b.params).unwrap() == Step::Finished {
                b.rounds += 1;
                if leave && b.rounds == rounds_of(i) {
                    // Says goodbye (one more poll sends it), then is switched off.
                    b.driver
                        .engine_mut()
                        .leave(asap_core::Instant::from_micros(now.total_micros() as u64));
                    b.driver.poll(now, &mut b.iface, &mut b.port, &mut b.sockets);
                    b.off = true;
                }
            }
            b.events.extend(std::iter::from_fn(|| b.driver.poll_event()));
        }
        between(now, boards);
        if boards.iter().enumerate().all(|(i, b)| b.rounds == rounds_of(i)) {
            return tick;
        }
    }
    panic!(
        "rounds did not finish: {:?}",
        boards.iter().map(|b| b.rounds).collect::<Vec<_>>()
    );
}

fn max_error(boards: &[Board], mean: &[f64]) -> f64 {
    boards
        .iter()
        .flat_map(|b| b.params.iter().zip(mean).map(|(x, m)| (f64::from(*x) - m).abs()))
        .fold(0.0, f64::max)
}

fn mean(boards: &[Board]) -> Vec<f64> {
    let n = boards.len() as f64;
    (0..boards[0].params.len())
        .map(|k| boards.iter().map(|b| f64::from(b.params[k])).sum::<f64>() / n)
        .collect()
}

#[test]
fn four_boards_on_a_lossy_bus_reach_the_exact_mean() {
    let bus = bus(4, 0x5eed, 100);
    let mut boards = boards(4, 1_000, Family::Exponential, &bus, false);
    let target = mean(&boards);
    run(&mut boards, 40);
    let err = max_error(&boards, &target);
    assert!(err <= 1e-5, "max error {err:e}");
    let lost = bus.borrow().lost;
    assert!(lost > 10, "the bus lost only {lost} packets");
    let resent: u64 = boards.iter().map(|b| b.driver.engine().stats().chunks_resent).sum();
    assert!(resent > 0);
}

#[test]
fn eight_boards_one_peer_exponential_exact_after_log_n_rounds() {
    let bus = bus(8, 7, 30);
    let mut boards = boards(8, 4_096, Family::OnePeerExponential, &bus, false);
    let target = mean(&boards);
    run(&mut boards, 3);
    let err = max_error(&boards, &target);
    assert!(err <= 1e-5, "max error {err:e}");
    for b in &boards {
        assert_eq!(b.driver.engine().stats().rounds, 3);
        assert_eq!(b.driver.stats().refused, 0);
    }
}

#[test]
fn four_encrypting_boards_on_a_lossy_bus_reach_the_exact_mean() {
    let bus = bus(4, 0xc1f3, 100);
    let mut boards = boards(4, 1_000, Family::Exponential, &bus, true);
    let target = mean(&boards);
    run(&mut boards, 40);
    let err = max_error(&boards, &target);
    assert!(err <= 1e-5, "max error {err:e}");
    assert!(bus.borrow().lost > 10);
    for b in &boards {
        let s = b.driver.engine().stats();
        assert_eq!((s.auth_failures, s.decode_errors), (0, 0), "{s:?}");
        assert!(s.frames_received > 100);
    }
}

/// An eavesdropper with board 1's address and a port of its own (9999): it sends each
/// frame it is given to where the frame went, as it was and with one byte flipped.
struct Eavesdropper {
    iface: Interface,
    port: Port,
    sockets: SocketSet<'static>,
    socket: SocketHandle,
    replayed: u64,
}

impl Eavesdropper {
    const PORT: u16 = 9999;

    fn new(bus: &Rc<RefCell<Bus>>) -> Self {
        // Its own queue (nothing is sent to it) at the end of the bus.
        let me = {
            let mut bus = bus.borrow_mut();
            bus.queues.push(VecDeque::new());
            bus.queues.len() - 1
        };
        let mut port = Port { bus: bus.clone(), me };
        let mut iface = Interface::new(IfaceConfig::new(HardwareAddress::Ip), &mut port, Instant::ZERO);
        iface.update_ip_addrs(|a| a.push(IpCidr::new(IpAddress::Ipv4(address(1)), 24)).unwrap());
        let storage: &'static mut [SocketStorage<'static>] = Box::leak(Box::new([SocketStorage::EMPTY; 1]));
        let mut sockets = SocketSet::new(storage);
        let buffer = |frames: usize| {
            udp::PacketBuffer::new(
                Vec::leak(vec![udp::PacketMetadata::EMPTY; frames]),
                Vec::leak(vec![0u8; frames * MTU]),
            )
        };
        let mut socket = udp::Socket::new(buffer(1), buffer(256));
        socket.bind(Self::PORT).unwrap();
        let socket = sockets.add(socket);
        Eavesdropper {
            iface,
            port,
            sockets,
            socket,
            replayed: 0,
        }
    }

    /// Replays the IPv4/UDP `packets` (20-byte IP header, 8-byte UDP header).
    fn replay(&mut self, now: Instant, packets: Vec<Vec<u8>>) {
        let socket = self.sockets.get_mut::<udp::Socket>(self.socket);
        for packet in packets {
            let to = IpEndpoint::new(
                IpAddress::Ipv4(Ipv4Address::new(packet[16], packet[17], packet[18], packet[19])),
                PORT,
            );
            let mut frame = packet[28..].to_vec();
            socket.send_slice(&frame, to).unwrap();
            let middle = frame.len() / 2;
            frame[middle] ^= 0x10;
            socket.send_slice(&frame, to).unwrap();
            self.replayed += 1;
        }
        self.iface.poll(now, &mut self.port, &mut self.sockets);
    }
}

/// Four boards (keyed and encrypting, or not) on a bus where every delivered frame is
/// replayed from a foreign port right after the real one arrived.
fn replays_move_no_endpoint(encrypt: bool) {
    let bus = bus(4, 0x7e91, 50);
    let mut boards = boards(4, 1_000, Family::Exponential, &bus, encrypt);
    let mut eve = Eavesdropper::new(&bus);
    bus.borrow_mut().capture = Some(Vec::new());
    let target = mean(&boards);
    run_with(&mut boards, &|_| 30, false, &mut |now, _| {
        let packets = std::mem::take(bus.borrow_mut().capture.as_mut().unwrap());
        eve.replay(now, packets);
    });
    assert!(eve.replayed > 500, "only {} frames replayed", eve.replayed);
    let err = max_error(&boards, &target);
    assert!(err <= 1e-5, "max error {err:e}");
    for (i, b) in boards.iter().enumerate() {
        for k in 0..4 {
            assert_eq!(
                b.driver.peer_endpoint(NodeId(k as u16)),
                Some(endpoint(k, PORT)),
                "board {i}, peer {k}"
            );
        }
        assert_eq!(b.driver.stats().moves, 0);
        // Every mutated copy, and with a key every exact one, is refused.
        let s = b.driver.engine().stats();
        assert!(b.driver.stats().refused > 0, "board {i}: {:?}", b.driver.stats());
        if encrypt {
            assert!(s.replays > 0 && s.auth_failures > 0, "board {i}: {s:?}");
        }
        assert!(
            !b.events.iter().any(|e| matches!(e, Event::PeerDown(_))),
            "board {i}: {:?}",
            b.events
        );
    }
}

#[test]
fn unkeyed_replays_from_a_foreign_port_move_no_endpoint() {
    replays_move_no_endpoint(false);
}

#[test]
fn keyed_replays_from_a_foreign_port_are_refused_and_move_no_endpoint() {
    replays_move_no_endpoint(true);
}

/// Board 1 listens on `PORT`; board 0 was told `told` for it. Returns where board 0
/// sends to board 1 in the end.
fn moved_board(encrypt: bool, told: IpEndpoint) -> (IpEndpoint, u64) {
    let bus = bus(2, 0x40f, 0);
    let mut boards = boards_with(2, 500, Family::Complete, &bus, encrypt, &|i, k| {
        if (i, k) == (0, 1) {
            told
        } else {
            endpoint(k, PORT)
        }
    });
    let target = mean(&boards);
    run(&mut boards, 5);
    assert!(max_error(&boards, &target) <= 1e-5);
    let d = &boards[0].driver;
    (d.peer_endpoint(NodeId(1)).unwrap(), d.stats().moves)
}

#[test]
fn a_keyed_board_that_really_moved_is_followed_by_its_authenticated_frames() {
    assert_eq!(moved_board(true, endpoint(1, 7001)), (endpoint(1, PORT), 1));
}

#[test]
fn an_unkeyed_board_with_no_configured_endpoint_is_learnt_from_its_first_frame() {
    let unknown = IpEndpoint::new(IpAddress::Ipv4(Ipv4Address::UNSPECIFIED), 0);
    assert_eq!(moved_board(false, unknown), (endpoint(1, PORT), 1));
}

#[test]
fn the_application_sees_a_board_that_leaves_go_down() {
    let bus = bus(3, 0xe7, 20);
    let mut boards = boards(3, 500, Family::Complete, &bus, false);
    // Board 2 leaves after 3 rounds; the others go on to 8.
    run_with(&mut boards, &|i| if i == 2 { 3 } else { 8 }, true, &mut |_, _| {});
    for (i, b) in boards.iter().enumerate().take(2) {
        assert!(
            b.events.contains(&Event::PeerDown(NodeId(2))),
            "board {i}: {:?}",
            b.events
        );
        let ready = b
            .events
            .iter()
            .filter(|e| matches!(e, Event::RoundReady { .. }))
            .count();
        assert_eq!(ready, 8, "board {i}: {:?}", b.events);
        assert_eq!(b.driver.engine().stats().events_dropped, 0);
    }
}

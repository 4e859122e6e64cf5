//! Several smoltcp interfaces wired through an in-memory IP "bus" with seeded loss, each
//! with an ASAP node on a smoltcp UDP socket, run rounds to the exact mean — the whole
//! driver on the host, on a virtual clock.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use asap_core::auth::Key;
use asap_core::topology::{Family, Topology, TopologySpec};
use asap_core::{Buffers, Config, Node, NodeId};
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
}

/// `n` boards on one bus, each averaging a seeded replica with its neighbours; with
/// `encrypt`, under a cluster key with encrypted payloads (and a receive buffer each).
fn boards(n: usize, model: usize, family: Family, bus: &Rc<RefCell<Bus>>, encrypt: bool) -> Vec<Board> {
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
            let mut socket = udp::Socket::new(buffer(16), buffer(16));
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
                chunk_bits: Vec::leak(vec![0; layout.bitmap_words]),
            };
            let node = Node::with_topology(config, &topology, buffers, asap_core::Instant::ZERO).unwrap();
            let peers = Vec::leak(
                (0..n)
                    .map(|k| IpEndpoint::new(IpAddress::Ipv4(address(k)), PORT))
                    .collect(),
            );
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
            }
        })
        .collect()
}

/// Runs every board `rounds` rounds on a 100 µs virtual tick; returns the ticks taken.
fn run(boards: &mut [Board], rounds: u32) -> u64 {
    for tick in 0..2_000_000u64 {
        let now = Instant::from_micros(tick as i64 * 100);
        for b in boards.iter_mut() {
            b.driver.poll(now, &mut b.iface, &mut b.port, &mut b.sockets);
            if b.rounds < rounds && b.driver.step(now, &mut b.params).unwrap() == Step::Finished {
                b.rounds += 1;
            }
        }
        if boards.iter().all(|b| b.rounds == rounds) {
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
    let bus = Rc::new(RefCell::new(Bus {
        queues: vec![VecDeque::new(); 4],
        rng: 0x5eed,
        loss_per_mille: 100,
        delivered: 0,
        lost: 0,
    }));
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
    let bus = Rc::new(RefCell::new(Bus {
        queues: vec![VecDeque::new(); 8],
        rng: 7,
        loss_per_mille: 30,
        delivered: 0,
        lost: 0,
    }));
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
    let bus = Rc::new(RefCell::new(Bus {
        queues: vec![VecDeque::new(); 4],
        rng: 0xc1f3,
        loss_per_mille: 100,
        delivered: 0,
        lost: 0,
    }));
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

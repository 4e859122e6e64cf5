//! ASAP on an emulated Cortex-M4F board (QEMU `mps2-an386`): four nodes, each an
//! `asap-core` Node driven by `transport-smoltcp` on its own smoltcp interface, joined
//! by an in-firmware IP "bus" that drops 5% of packets (seeded). They run stochastic-
//! reduce rounds on the exponential graph, and the firmware checks every replica against
//! the exact average of the starting replicas, prints the result through semihosting
//! and exits with the verdict (0: within 1e-5).
//!
//! Time is virtual (a 100 µs tick per pass), so the run is the same on every host.
#![no_std]
#![no_main]

use core::cell::RefCell;

use asap_core::topology::{Family, Topology, TopologySpec};
use asap_core::{Buffers, Config, Node, NodeId};
use cortex_m::singleton;
use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use heapless::Deque;
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketSet, SocketStorage};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::udp;
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint, Ipv4Address};
use transport_smoltcp::{Driver, Step};

const NODES: usize = 4;
const MODEL: usize = 1_024;
const ROUNDS: u32 = 30;
const MTU: usize = 1_500;
/// Packets the bus holds for one interface.
const QUEUE: usize = 8;
/// Frames each socket buffers each way.
const SOCKET_FRAMES: usize = 4;
const PORT: u16 = 7000;
/// Nodes in a peer table (the exponential graph on 4 nodes has 3 neighbours).
const PEERS: usize = 4;

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    hprintln!("panic: {}", info);
    debug::exit(debug::EXIT_FAILURE);
    loop {}
}

struct Packet {
    len: usize,
    data: [u8; MTU],
}

/// Packets in flight to each interface.
struct Bus {
    queues: [Deque<Packet, QUEUE>; NODES],
    rng: u32,
    lost: u32,
}

impl Bus {
    /// Routes an IPv4 packet by its destination's last octet (10.0.0.k is node k-1);
    /// drops 5% of them, and what a full queue cannot hold.
    fn carry(&mut self, data: &[u8]) {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 17;
        self.rng ^= self.rng << 5;
        let k = usize::from(data[19]).wrapping_sub(1);
        let mut packet = Packet { len: data.len(), data: [0; MTU] };
        packet.data[..data.len()].copy_from_slice(data);
        let delivered = k < NODES && self.rng % 100 >= 5 && self.queues[k].push_back(packet).is_ok();
        if !delivered {
            self.lost += 1;
        }
    }
}

struct Port<'b> {
    bus: &'b RefCell<Bus>,
    me: usize,
}

struct Rx(Packet);
struct Tx<'b>(&'b RefCell<Bus>);

impl RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0.data[..self.0.len])
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = [0u8; MTU];
        let r = f(&mut buf[..len]);
        self.0.borrow_mut().carry(&buf[..len]);
        r
    }
}

impl<'b> Device for Port<'b> {
    type RxToken<'a>
        = Rx
    where
        Self: 'a;
    type TxToken<'a>
        = Tx<'b>
    where
        Self: 'a;

    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx<'b>)> {
        let packet = self.bus.borrow_mut().queues[self.me].pop_front()?;
        Some((Rx(packet), Tx(self.bus)))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'b>> {
        Some(Tx(self.bus))
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

/// The starting replica of node `i`: values in [-1, 1).
fn initial(i: usize, k: usize) -> f32 {
    ((i * 7919 + k * 104_729) % 1000) as f32 / 500.0 - 1.0
}

/// Everything one node owns.
struct Board<'b> {
    iface: Interface,
    port: Port<'b>,
    sockets: SocketSet<'static>,
    driver: Driver<'static, Node<'static, PEERS>>,
    params: &'static mut [f32],
    rounds: u32,
}

const CONFIG: Config = Config::new(0xa5a9, NodeId(0), MODEL);
const CHUNKS: usize = MODEL.div_ceil(CONFIG.chunk_len());
const BITMAP_WORDS: usize = CHUNKS.div_ceil(32) * PEERS;

#[entry]
fn main() -> ! {
    let bus: &'static RefCell<Bus> = singleton!(: RefCell<Bus> = RefCell::new(Bus {
        queues: [const { Deque::new() }; NODES],
        rng: 0x5eed,
        lost: 0,
    }))
    .unwrap();
    let params = singleton!(: [[f32; MODEL]; NODES] = [[0.0; MODEL]; NODES]).unwrap();
    let snapshots = singleton!(: [[f32; MODEL]; NODES] = [[0.0; MODEL]; NODES]).unwrap();
    let accumulators = singleton!(: [[f32; MODEL]; NODES] = [[0.0; MODEL]; NODES]).unwrap();
    let weights = singleton!(: [[f32; CHUNKS]; NODES] = [[0.0; CHUNKS]; NODES]).unwrap();
    let masses = singleton!(: [[f32; 2 * CHUNKS]; NODES] = [[0.0; 2 * CHUNKS]; NODES]).unwrap();
    let bits = singleton!(: [[u32; BITMAP_WORDS]; NODES] = [[0; BITMAP_WORDS]; NODES]).unwrap();
    let storage = singleton!(: [[SocketStorage<'static>; 1]; NODES] = [const { [SocketStorage::EMPTY] }; NODES]).unwrap();
    let metas = singleton!(: [[udp::PacketMetadata; 2 * SOCKET_FRAMES]; NODES] =
        [[udp::PacketMetadata::EMPTY; 2 * SOCKET_FRAMES]; NODES])
    .unwrap();
    let payloads = singleton!(: [[u8; 2 * SOCKET_FRAMES * MTU]; NODES] = [[0; 2 * SOCKET_FRAMES * MTU]; NODES]).unwrap();
    let endpoints = singleton!(: [[IpEndpoint; NODES]; NODES] =
        [[IpEndpoint::new(IpAddress::Ipv4(Ipv4Address::new(0, 0, 0, 0)), PORT); NODES]; NODES])
    .unwrap();
    let txs = singleton!(: [[u8; MTU]; NODES] = [[0; MTU]; NODES]).unwrap();

    const SPEC: TopologySpec = TopologySpec::new(Family::Exponential, NODES as u32);
    let mut scratch = [0.0f64; SPEC.scratch_len()];
    let Ok(topology) = Topology::new(SPEC, &mut scratch) else {
        panic!("topology")
    };

    let mut boards: heapless::Vec<Board<'static>, NODES> = heapless::Vec::new();
    let parts = params
        .iter_mut()
        .zip(snapshots.iter_mut())
        .zip(accumulators.iter_mut())
        .zip(weights.iter_mut().zip(masses.iter_mut()))
        .zip(bits.iter_mut())
        .zip(storage.iter_mut())
        .zip(metas.iter_mut())
        .zip(payloads.iter_mut())
        .zip(endpoints.iter_mut())
        .zip(txs.iter_mut());
    for (i, (((((((((p, snapshot), accumulator), (w, m)), b), store), meta), payload), peers), tx)) in parts.enumerate() {
        let mut port = Port { bus, me: i };
        let mut iface = Interface::new(IfaceConfig::new(HardwareAddress::Ip), &mut port, Instant::ZERO);
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::Ipv4(address(i)), 24));
        });
        let mut sockets = SocketSet::new(&mut store[..]);
        let (rx_meta, tx_meta) = meta.split_at_mut(SOCKET_FRAMES);
        let (rx_data, tx_data) = payload.split_at_mut(SOCKET_FRAMES * MTU);
        let mut socket = udp::Socket::new(
            udp::PacketBuffer::new(rx_meta, rx_data),
            udp::PacketBuffer::new(tx_meta, tx_data),
        );
        socket.bind(PORT).unwrap();
        let handle = sockets.add(socket);
        let config = Config {
            id: NodeId(i as u16),
            ..CONFIG
        };
        let buffers = Buffers {
            snapshot,
            accumulator,
            chunk_weights: w,
            chunk_mass: m,
            chunk_bits: &mut b[..CHUNKS.div_ceil(32) * topology.peers_of(i as u32).count()],
        };
        let node = Node::with_topology(config, &topology, buffers, asap_core::Instant::ZERO).unwrap();
        for (k, e) in peers.iter_mut().enumerate() {
            *e = IpEndpoint::new(IpAddress::Ipv4(address(k)), PORT);
        }
        for (k, v) in p.iter_mut().enumerate() {
            *v = initial(i, k);
        }
        let driver = Driver::new(node, handle, peers, tx).unwrap();
        let board = Board {
            iface,
            port,
            sockets,
            driver,
            params: p,
            rounds: 0,
        };
        if boards.push(board).is_err() {
            panic!("board table full");
        }
    }

    let mut tick = 0i64;
    while boards.iter().any(|b| b.rounds < ROUNDS) {
        let now = Instant::from_micros(tick * 100);
        for b in boards.iter_mut() {
            b.driver.poll(now, &mut b.iface, &mut b.port, &mut b.sockets);
            if b.rounds < ROUNDS && b.driver.step(now, b.params).unwrap() == Step::Finished {
                b.rounds += 1;
            }
        }
        tick += 1;
        if tick > 10_000_000 {
            panic!("rounds did not finish");
        }
    }

    let mut max_error = 0.0f64;
    for k in 0..MODEL {
        let mean = (0..NODES).map(|i| f64::from(initial(i, k))).sum::<f64>() / NODES as f64;
        for b in boards.iter() {
            max_error = max_error.max((f64::from(b.params[k]) - mean).abs());
        }
    }
    let resent: u64 = boards.iter().map(|b| b.driver.engine().stats().chunks_resent).sum();
    let ok = max_error <= 1e-5;
    hprintln!(
        "asap on Cortex-M4F: {} nodes x {} values, {} rounds in {} ms (virtual), {} packets lost, {} chunks resent, max error {:e}: {}",
        NODES,
        MODEL,
        ROUNDS,
        tick / 10,
        bus.borrow().lost,
        resent,
        max_error,
        if ok { "PASS" } else { "FAIL" }
    );
    debug::exit(if ok { debug::EXIT_SUCCESS } else { debug::EXIT_FAILURE });
    loop {}
}

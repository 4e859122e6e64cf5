//! The embassy driver on the host: embassy-net stacks over an in-memory driver with
//! seeded loss, embassy-time's mock clock advanced by the test, and a hand-rolled
//! executor that polls every task each tick — deterministic, no threads, no sleeps.
#![cfg(feature = "embassy")]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use asap_core::topology::{Family, Topology, TopologySpec};
use asap_core::{Buffers, Config, Event, Node, NodeId};
use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_net::{IpAddress, IpEndpoint, Ipv4Address, Ipv4Cidr, StackResources, StaticConfigV4};
use embassy_net_driver::{Capabilities, HardwareAddress, LinkState};
use embassy_time::{Duration, Instant, MockDriver};
use transport_smoltcp::AsyncDriver;

const PORT: u16 = 7000;
const MTU: usize = 1500;
const NODES: usize = 4;
const MODEL: usize = 1_000;
const ROUNDS: u32 = 30;

struct Bus {
    queues: Vec<VecDeque<Vec<u8>>>,
    rng: u64,
    lost: u64,
}

impl Bus {
    fn carry(&mut self, packet: Vec<u8>) {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let coin = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) % 100;
        let k = usize::from(packet[19]).wrapping_sub(1);
        if k < self.queues.len() && coin >= 5 {
            self.queues[k].push_back(packet);
        } else {
            self.lost += 1;
        }
    }
}

struct Port(Rc<RefCell<Bus>>, usize);
struct Rx(Vec<u8>);
struct Tx(Rc<RefCell<Bus>>);

impl embassy_net_driver::RxToken for Rx {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(mut self, f: F) -> R {
        f(&mut self.0)
    }
}

impl embassy_net_driver::TxToken for Tx {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut packet = vec![0; len];
        let r = f(&mut packet);
        self.0.borrow_mut().carry(packet);
        r
    }
}

impl embassy_net_driver::Driver for Port {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx;

    fn receive(&mut self, _: &mut Context) -> Option<(Rx, Tx)> {
        let packet = self.0.borrow_mut().queues[self.1].pop_front()?;
        Some((Rx(packet), Tx(self.0.clone())))
    }

    fn transmit(&mut self, _: &mut Context) -> Option<Tx> {
        Some(Tx(self.0.clone()))
    }

    fn link_state(&mut self, _: &mut Context) -> LinkState {
        LinkState::Up
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.max_transmission_unit = MTU;
        caps
    }

    fn hardware_address(&self) -> HardwareAddress {
        HardwareAddress::Ip
    }
}

fn address(i: usize) -> Ipv4Address {
    Ipv4Address::new(10, 0, 0, i as u8 + 1)
}

fn leak<T>(v: Vec<T>) -> &'static mut [T] {
    Vec::leak(v)
}

type Task = Pin<Box<dyn Future<Output = ()>>>;

#[test]
fn embassy_stacks_on_a_lossy_bus_reach_the_exact_mean() {
    let bus = Rc::new(RefCell::new(Bus {
        queues: vec![VecDeque::new(); NODES],
        rng: 0x5eed,
        lost: 0,
    }));
    let topology = Topology::new(
        TopologySpec::new(Family::Exponential, NODES as u32),
        &mut [0.0; 3 * NODES],
    )
    .unwrap();
    let initial: Vec<Vec<f32>> = (0..NODES)
        .map(|i| {
            (0..MODEL)
                .map(|k| ((i * 7919 + k * 104_729) % 1000) as f32 / 500.0 - 1.0)
                .collect()
        })
        .collect();
    let mean: Vec<f64> = (0..MODEL)
        .map(|k| initial.iter().map(|v| f64::from(v[k])).sum::<f64>() / NODES as f64)
        .collect();
    let results: Rc<RefCell<Vec<Option<Vec<f32>>>>> = Rc::new(RefCell::new(vec![None; NODES]));
    let mut runners: Vec<Task> = Vec::new();
    let mut workers: Vec<Task> = Vec::new();
    for (i, start_params) in initial.iter().enumerate() {
        let config = embassy_net::Config::ipv4_static(StaticConfigV4 {
            address: Ipv4Cidr::new(address(i), 24),
            gateway: None,
            dns_servers: Default::default(),
        });
        let resources = Box::leak(Box::new(StackResources::<2>::new()));
        let (stack, mut runner) = embassy_net::new(Port(bus.clone(), i), config, resources, i as u64);
        runners.push(Box::pin(async move { runner.run().await }));
        let mut socket = UdpSocket::new(
            stack,
            leak(vec![PacketMetadata::EMPTY; 16]),
            leak(vec![0; 16 * MTU]),
            leak(vec![PacketMetadata::EMPTY; 16]),
            leak(vec![0; 16 * MTU]),
        );
        socket.bind(PORT).unwrap();
        let node_config = Config::new(0xa5a9, NodeId(i as u16), MODEL);
        let layout = node_config.layout(topology.peers_of(i as u32).count()).unwrap();
        let buffers = Buffers {
            snapshot: leak(vec![0.0; layout.model_len]),
            accumulator: leak(vec![0.0; layout.accumulator]),
            chunk_weights: leak(vec![0.0; layout.chunks]),
            chunk_mass: leak(vec![0.0; layout.chunk_mass]),
            chunk_bits: leak(vec![0; layout.bitmap_words]),
        };
        let start = asap_core::Instant::from_micros(Instant::now().as_micros());
        let node = Node::<8>::with_topology(node_config, &topology, buffers, start).unwrap();
        let peers = leak(
            (0..NODES)
                .map(|k| IpEndpoint::new(IpAddress::Ipv4(address(k)), PORT))
                .collect(),
        );
        let mut driver = AsyncDriver::new(node, socket, peers, leak(vec![0; MTU]), leak(vec![0; MTU])).unwrap();
        let mut params = start_params.clone();
        let results = results.clone();
        workers.push(Box::pin(async move {
            let mut ready = Vec::new();
            for _ in 0..ROUNDS {
                driver.run_round(&mut params).await.unwrap();
                // The application takes the engine's events after every round.
                while let Some(event) = driver.poll_event() {
                    if let Event::RoundReady { round } = event {
                        ready.push(round);
                    }
                }
            }
            assert_eq!(driver.engine().stats().rounds, u64::from(ROUNDS));
            assert_eq!(
                ready,
                (0..ROUNDS).collect::<Vec<_>>(),
                "node {i}: one RoundReady a round"
            );
            assert_eq!(driver.engine().stats().events_dropped, 0);
            results.borrow_mut()[i] = Some(params);
            // Keep answering the others' last retransmissions.
            driver.serve_until(Instant::now() + Duration::from_millis(300)).await;
        }));
    }
    // The executor: poll everything, then move the mock clock one tick.
    let mut cx = Context::from_waker(Waker::noop());
    let mut done = vec![false; NODES];
    for _tick in 0..2_000_000u32 {
        for r in &mut runners {
            let _ = r.as_mut().poll(&mut cx);
        }
        for (w, d) in workers.iter_mut().zip(&mut done) {
            if !*d && w.as_mut().poll(&mut cx) == Poll::Ready(()) {
                *d = true;
            }
        }
        if done.iter().all(|d| *d) {
            break;
        }
        MockDriver::get().advance(Duration::from_micros(100));
    }
    assert!(done.iter().all(|d| *d), "workers did not finish: {done:?}");
    for (i, r) in results.borrow().iter().enumerate() {
        let params = r.as_ref().expect("a result");
        let err = params
            .iter()
            .zip(&mean)
            .map(|(x, m)| (f64::from(*x) - m).abs())
            .fold(0.0, f64::max);
        assert!(err <= 1e-5, "node {i}: max error {err:e}");
    }
    assert!(bus.borrow().lost > 0, "the bus lost nothing");
}

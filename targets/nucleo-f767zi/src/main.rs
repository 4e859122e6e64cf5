//! One ASAP worker on an STM32 Nucleo-144 F767ZI (Cortex-M7, 100 Mbit/s Ethernet through
//! its LAN8742 PHY), written with embassy: embassy-stm32's Ethernet, embassy-net, and
//! `transport-smoltcp`'s `AsyncDriver`. It joins a cluster of `asap node` processes on
//! a server as rank [`RANK`] and averages a seeded 4,096-value replica with them, like
//! `asap node --workload average`.
//!
//! Edit the constants below for your network (README.md says how), build with
//! `cargo build --release`, flash with `probe-rs run --chip STM32F767ZITx` (or copy the
//! binary to the board's ST-LINK drive). The green LED (LD1) lights when the board's
//! replica is within 1e-5 of the exact mean after the last round; the red one (LD3)
//! lights on a failure.
#![no_std]
#![no_main]

use asap_core::seeded::{max_error_to_mean, Replica};
use asap_core::topology::{Family, Topology, TopologySpec};
use asap_core::{Buffers, Config, Node, NodeId};
use embassy_executor::Spawner;
use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_net::{IpAddress, IpEndpoint, Ipv4Address, Ipv4Cidr, StackResources, StaticConfigV4};
use embassy_stm32::eth::{Ethernet, GenericPhy, PacketQueue, Sma};
use embassy_stm32::gpio::{Level, Output, Speed};
use embassy_stm32::peripherals::{ETH, ETH_SMA};
use embassy_stm32::rng::Rng;
use embassy_stm32::time::Hertz;
use embassy_stm32::{bind_interrupts, eth, peripherals, rng};
use embassy_time::{Duration, Instant, Timer};
use panic_halt as _;
use static_cell::{ConstStaticCell, StaticCell};
use transport_smoltcp::AsyncDriver;

/// This board's rank, and the cluster's size.
const RANK: u32 = 0;
const WORLD: usize = 4;
/// This board's address on the LAN.
const ADDRESS: Ipv4Address = Ipv4Address::new(192, 168, 1, 50);
const PREFIX: u8 = 24;
const GATEWAY: Ipv4Address = Ipv4Address::new(192, 168, 1, 1);
/// Where rank r listens: the board's address for its own rank, `SERVER:SERVER_BASE_PORT+r`
/// for the others (e.g. `asap node --host 0.0.0.0 --peers ...` on the server).
const SERVER: Ipv4Address = Ipv4Address::new(192, 168, 1, 10);
const SERVER_BASE_PORT: u16 = 47_200;
const PORT: u16 = 47_200;
const MAC: [u8; 6] = [0x02, 0x00, 0x00, 0xa5, 0xa9, 0x00];

const MODEL: usize = 4_096;
const ROUNDS: u32 = 30;
const SEED: u64 = 1;
const CONFIG: Config = Config::new(0xa5a9, NodeId(RANK as u16), MODEL);
const CHUNKS: usize = MODEL.div_ceil(CONFIG.chunk_len());
const PEERS: usize = WORLD - 1;
const BITMAP_WORDS: usize = CHUNKS.div_ceil(32) * PEERS;
const FRAME: usize = CONFIG.max_frame;
const RX_FRAMES: usize = 4;
const TX_FRAMES: usize = 2;

bind_interrupts!(struct Irqs {
    ETH => eth::InterruptHandler;
    RNG => rng::InterruptHandler<peripherals::RNG>;
});

type Device = Ethernet<'static, ETH, GenericPhy<Sma<'static, ETH_SMA>>>;

// Static memory, taken once, never passed through the stack.
static PARAMS: ConstStaticCell<[f32; MODEL]> = ConstStaticCell::new([0.0; MODEL]);
static SNAPSHOT: ConstStaticCell<[f32; MODEL]> = ConstStaticCell::new([0.0; MODEL]);
static ACCUMULATOR: ConstStaticCell<[f32; MODEL]> = ConstStaticCell::new([0.0; MODEL]);
static CHUNK_WEIGHTS: ConstStaticCell<[f32; CHUNKS]> = ConstStaticCell::new([0.0; CHUNKS]);
static CHUNK_BITS: ConstStaticCell<[u32; BITMAP_WORDS]> = ConstStaticCell::new([0; BITMAP_WORDS]);
static RX_META: ConstStaticCell<[PacketMetadata; RX_FRAMES]> = ConstStaticCell::new([PacketMetadata::EMPTY; RX_FRAMES]);
static RX_DATA: ConstStaticCell<[u8; RX_FRAMES * FRAME]> = ConstStaticCell::new([0; RX_FRAMES * FRAME]);
static TX_META: ConstStaticCell<[PacketMetadata; TX_FRAMES]> = ConstStaticCell::new([PacketMetadata::EMPTY; TX_FRAMES]);
static TX_DATA: ConstStaticCell<[u8; TX_FRAMES * FRAME]> = ConstStaticCell::new([0; TX_FRAMES * FRAME]);
static TX: ConstStaticCell<[u8; FRAME]> = ConstStaticCell::new([0; FRAME]);
static RX: ConstStaticCell<[u8; FRAME]> = ConstStaticCell::new([0; FRAME]);
static PEER_TABLE: ConstStaticCell<[IpEndpoint; WORLD]> =
    ConstStaticCell::new([IpEndpoint::new(IpAddress::Ipv4(SERVER), SERVER_BASE_PORT); WORLD]);
static PACKETS: ConstStaticCell<PacketQueue<4, 4>> = ConstStaticCell::new(PacketQueue::new());
static RESOURCES: StaticCell<StackResources<2>> = StaticCell::new();

#[embassy_executor::task]
async fn net_task(mut runner: embassy_net::Runner<'static, Device>) -> ! {
    runner.run().await
}

#[embassy_executor::main]
async fn main(spawner: Spawner) -> ! {
    let mut config = embassy_stm32::Config::default();
    {
        use embassy_stm32::rcc::*;
        // 8 MHz from the ST-LINK, PLL to 216 MHz: Ethernet needs HCLK >= 25 MHz.
        config.rcc.hse = Some(Hse {
            freq: Hertz(8_000_000),
            mode: HseMode::Bypass,
        });
        config.rcc.pll_src = PllSource::HSE;
        config.rcc.pll = Some(Pll {
            prediv: PllPreDiv::DIV4,
            mul: PllMul::MUL216,
            divp: Some(PllPDiv::DIV2),
            divq: None,
            divr: None,
        });
        config.rcc.ahb_pre = AHBPrescaler::DIV1;
        config.rcc.apb1_pre = APBPrescaler::DIV4;
        config.rcc.apb2_pre = APBPrescaler::DIV2;
        config.rcc.sys = Sysclk::PLL1_P;
    }
    let p = embassy_stm32::init(config);
    let mut green = Output::new(p.PB0, Level::Low, Speed::Low);
    let mut red = Output::new(p.PB14, Level::Low, Speed::Low);

    let mut rng = Rng::new(p.RNG, Irqs);
    let mut seed = [0u8; 8];
    rng.fill_bytes(&mut seed);

    // Nucleo-144 RMII pins.
    let device = Ethernet::new(
        PACKETS.take(),
        p.ETH,
        Irqs,
        p.PA1,
        p.PA7,
        p.PC4,
        p.PC5,
        p.PG13,
        p.PB13,
        p.PG11,
        MAC,
        p.ETH_SMA,
        p.PA2,
        p.PC1,
    );
    let net_config = embassy_net::Config::ipv4_static(StaticConfigV4 {
        address: Ipv4Cidr::new(ADDRESS, PREFIX),
        gateway: Some(GATEWAY),
        dns_servers: Default::default(),
    });
    let (stack, runner) = embassy_net::new(device, net_config, RESOURCES.init(StackResources::new()), u64::from_le_bytes(seed));
    spawner.spawn(net_task(runner).unwrap());
    stack.wait_config_up().await;

    let mut socket = UdpSocket::new(stack, RX_META.take(), RX_DATA.take(), TX_META.take(), TX_DATA.take());
    if socket.bind(PORT).is_err() {
        fail(&mut red).await;
    }
    let peers = PEER_TABLE.take();
    for (r, p) in peers.iter_mut().enumerate() {
        *p = if r as u32 == RANK {
            IpEndpoint::new(IpAddress::Ipv4(ADDRESS), PORT)
        } else {
            IpEndpoint::new(IpAddress::Ipv4(SERVER), SERVER_BASE_PORT + r as u16)
        };
    }

    let mut scratch = [0.0f64; 3 * WORLD];
    let Ok(topology) = Topology::new(TopologySpec::new(Family::Exponential, WORLD as u32), &mut scratch) else {
        fail(&mut red).await
    };
    let buffers = Buffers {
        snapshot: SNAPSHOT.take(),
        accumulator: ACCUMULATOR.take(),
        chunk_weights: CHUNK_WEIGHTS.take(),
        chunk_bits: CHUNK_BITS.take(),
    };
    let now = asap_core::Instant::from_micros(Instant::now().as_micros());
    let Ok(node) = Node::<WORLD>::with_topology(CONFIG, &topology, buffers, now) else {
        fail(&mut red).await
    };
    let params = PARAMS.take();
    for (p, v) in params.iter_mut().zip(Replica::new(SEED, RANK)) {
        *p = v;
    }
    let Ok(mut driver) = AsyncDriver::new(node, socket, peers, TX.take(), RX.take()) else {
        fail(&mut red).await
    };
    for _ in 0..ROUNDS {
        if driver.run_round(params).await.is_err() {
            fail(&mut red).await;
        }
    }
    // Keep answering the others' last retransmissions.
    driver.serve_until(Instant::now() + Duration::from_secs(1)).await;
    if max_error_to_mean(params, SEED, WORLD as u32) <= 1e-5 {
        green.set_high();
    } else {
        red.set_high();
    }
    loop {
        Timer::after_secs(1).await;
    }
}

async fn fail(red: &mut Output<'static>) -> ! {
    loop {
        red.toggle();
        Timer::after_millis(200).await;
    }
}

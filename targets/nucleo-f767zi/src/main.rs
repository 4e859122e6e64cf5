//! One member of a federated-training cluster on an STM32 Nucleo-144 F767ZI (Cortex-M7 at
//! 216 MHz, 100 Mbit/s Ethernet through its LAN8742 PHY), written with embassy:
//! embassy-stm32's Ethernet, embassy-net, and `transport-smoltcp`'s `AsyncDriver`. It is
//! the same member as the emulated boards (the board crate's `fed`, `asap_board`,
//! ../board): it trains its own seeded shard of `asap_fed`'s problem with local SGD steps
//! before each training round (`asap_fed::Plan`), averages with the cluster at the end,
//! evaluates the shared model on the held-out set and passes when every round ran and its
//! accuracy is within 1% of the centralised reference (computed by build.rs).
//!
//! The cluster (rank, members' addresses, cluster id, seed, model size, plan) and the
//! board's own network are fixed at build time by the `ASAP_FED_*` variables
//! (../board/build.rs, and build.rs here; targets/README.md says how to build and flash
//! it beside three `asap node --workload federated` servers).
//!
//! It starts its node once a member's first frame arrived (boot it, then start the
//! servers). It takes a new incarnation at every boot from a **boot counter in flash** (the last
//! sector, [`BootCounter`]), so a board reset mid-run rejoins as a new life and catches
//! up. It prints what the QEMU boards print (progress, its model in hex, its counters, its
//! report) on USART3, which the Nucleo's ST-LINK forwards as a USB serial port (115,200
//! baud), and lights the green LED (LD1) when it passed, the red one (LD3) otherwise
//! (blinking: it could not start).
#![no_std]
#![no_main]

/// The board's own network: its address is its entry of the cluster's members; prefix,
/// gateway and MAC address come from build.rs (`ASAP_FED_PREFIX`, `ASAP_FED_GATEWAY`,
/// `ASAP_FED_MAC`), the last two with defaults that depend on the cluster.
mod net {
    use asap_board::cluster::{PEERS, RANK};

    mod set {
        include!(concat!(env!("OUT_DIR"), "/net.rs"));
    }

    /// This board's address: its own entry of the members' addresses.
    pub const ADDRESS: [u8; 4] = PEERS[RANK as usize].0;
    /// Its network prefix length.
    pub const PREFIX: u8 = set::PREFIX;
    /// Its default gateway: its address with last octet 1 unless set.
    pub const GATEWAY: [u8; 4] = match set::GATEWAY {
        Some(gateway) => gateway,
        None => [ADDRESS[0], ADDRESS[1], ADDRESS[2], 1],
    };
    /// Its Ethernet address: locally administered, `02:00:00:a5:a9:RANK`, unless set.
    pub const MAC: [u8; 6] = match set::MAC {
        Some(mac) => mac,
        None => [0x02, 0x00, 0x00, 0xa5, 0xa9, RANK as u8],
    };
}

use core::fmt::Write;

use asap_board::{cluster, fed};
use embassy_executor::Spawner;
use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_net::{Ipv4Address, Ipv4Cidr, StackResources, StaticConfigV4};
use embassy_stm32::eth::{Ethernet, GenericPhy, PacketQueue, Sma};
use embassy_stm32::flash::{Blocking, Flash, WRITE_SIZE};
use embassy_stm32::gpio::{Level, Output, Speed};
use embassy_stm32::mode::Blocking as BlockingMode;
use embassy_stm32::peripherals::{ETH, ETH_SMA};
use embassy_stm32::rng::Rng;
use embassy_stm32::time::Hertz;
use embassy_stm32::usart::{self, UartTx};
use embassy_stm32::{bind_interrupts, eth, peripherals, rng};
use embassy_time::{Duration, Instant, Timer};
use panic_halt as _;
use static_cell::{ConstStaticCell, StaticCell};
use transport_smoltcp::AsyncDriver;

use fed::{Training, FRAME, LINGER};

/// UDP payloads each socket buffer holds, each way (frames keep arriving while the board
/// takes its local steps).
const RX_FRAMES: usize = 16;
const TX_FRAMES: usize = 4;
/// Give up when the run takes longer.
const DEADLINE: Duration = Duration::from_secs(600);

bind_interrupts!(struct Irqs {
    ETH => eth::InterruptHandler;
    RNG => rng::InterruptHandler<peripherals::RNG>;
});

type Device = Ethernet<'static, ETH, GenericPhy<Sma<'static, ETH_SMA>>>;

// Static memory, taken once, never passed through the stack (the node's: `asap_board::fed`).
static RX_META: ConstStaticCell<[PacketMetadata; RX_FRAMES]> = ConstStaticCell::new([PacketMetadata::EMPTY; RX_FRAMES]);
static RX_DATA: ConstStaticCell<[u8; RX_FRAMES * FRAME]> = ConstStaticCell::new([0; RX_FRAMES * FRAME]);
static TX_META: ConstStaticCell<[PacketMetadata; TX_FRAMES]> = ConstStaticCell::new([PacketMetadata::EMPTY; TX_FRAMES]);
static TX_DATA: ConstStaticCell<[u8; TX_FRAMES * FRAME]> = ConstStaticCell::new([0; TX_FRAMES * FRAME]);
static RX: ConstStaticCell<[u8; FRAME]> = ConstStaticCell::new([0; FRAME]);
static PACKETS: ConstStaticCell<PacketQueue<4, 4>> = ConstStaticCell::new(PacketQueue::new());
static RESOURCES: StaticCell<StackResources<2>> = StaticCell::new();

/// Monotonic time in `fed`'s (smoltcp's) type.
fn now() -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros(Instant::now().as_micros() as i64)
}

/// Text to the ST-LINK's virtual serial port.
struct Serial(UartTx<'static, BlockingMode>);

impl Write for Serial {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for line in s.split_inclusive('\n') {
            let (text, newline) = match line.strip_suffix('\n') {
                Some(text) => (text, true),
                None => (line, false),
            };
            self.0.blocking_write(text.as_bytes()).map_err(|_| core::fmt::Error)?;
            if newline {
                self.0.blocking_write(b"\r\n").map_err(|_| core::fmt::Error)?;
            }
        }
        Ok(())
    }
}

/// A boot counter in the last flash sector (sector 11 in single-bank mode: 256 KiB at
/// 0x081C0000, outside the program: memory.x), one record of `WRITE_SIZE` bytes per boot,
/// each holding its count in its first four bytes: the count is the last programmed
/// record's, plus one. When the sector is full it is erased and the new count written at
/// its start (16,384 boots per erase with the F7's 16-byte `WRITE_SIZE`; a sector survives 10,000
/// erases). A power cut between that erase and that write, or a chip erase
/// (`probe-rs ... --chip-erase`), starts the count again at 1: peers that still remember
/// a larger incarnation of this board would refuse it until they restart. Not yet run
/// on a board (TODO: check on hardware).
struct BootCounter;

impl BootCounter {
    const OFFSET: u32 = 0x1C_0000;
    const SIZE: u32 = 0x4_0000;
    const RECORD: u32 = WRITE_SIZE as u32;

    /// Counts this boot; returns its number (1 for the first).
    fn next(flash: &mut Flash<'_, Blocking>) -> Result<u32, embassy_stm32::flash::Error> {
        let mut last = 0u32;
        let mut free = None;
        let mut record = [0u8; WRITE_SIZE];
        for slot in 0..Self::SIZE / Self::RECORD {
            flash.blocking_read(Self::OFFSET + slot * Self::RECORD, &mut record)?;
            if record.iter().all(|&b| b == 0xff) {
                free = Some(slot);
                break;
            }
            last = u32::from_le_bytes([record[0], record[1], record[2], record[3]]);
        }
        let count = last.wrapping_add(1).max(1);
        let slot = match free {
            Some(slot) => slot,
            None => {
                flash.blocking_erase(Self::OFFSET, Self::OFFSET + Self::SIZE)?;
                0
            }
        };
        record.fill(0);
        record[..4].copy_from_slice(&count.to_le_bytes());
        flash.blocking_write(Self::OFFSET + slot * Self::RECORD, &record)?;
        Ok(count)
    }
}

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
    // USART3 TX on PD8: the ST-LINK's virtual COM port.
    let Ok(uart) = UartTx::new_blocking(p.USART3, p.PD8, usart::Config::default()) else {
        fail(&mut red).await
    };
    let mut out = Serial(uart);

    let Ok(incarnation) = BootCounter::next(&mut Flash::new_blocking(p.FLASH)) else {
        let _ = writeln!(out, "boot counter: flash error");
        fail(&mut red).await
    };

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
        net::MAC,
        p.ETH_SMA,
        p.PA2,
        p.PC1,
    );
    let [a, b, c, d] = net::ADDRESS;
    let [g, h, i, j] = net::GATEWAY;
    let net_config = embassy_net::Config::ipv4_static(StaticConfigV4 {
        address: Ipv4Cidr::new(Ipv4Address::new(a, b, c, d), net::PREFIX),
        gateway: Some(Ipv4Address::new(g, h, i, j)),
        dns_servers: Default::default(),
    });
    let (stack, runner) = embassy_net::new(
        device,
        net_config,
        RESOURCES.init(StackResources::new()),
        u64::from_le_bytes(seed),
    );
    spawner.spawn(net_task(runner).unwrap());
    stack.wait_config_up().await;

    let mut socket = UdpSocket::new(stack, RX_META.take(), RX_DATA.take(), TX_META.take(), TX_DATA.take());
    if socket.bind(fed::own_port()).is_err() {
        let _ = writeln!(out, "cannot bind port {}", fed::own_port());
        fail(&mut red).await;
    }
    // Start once a member spoke (the servers send heartbeats from their start): a node
    // declares a peer that stays silent for 2 s down, and a board reset by hand and
    // brought up by its PHY's link may take longer than that before the servers run.
    // (Servers that started long before it went on without it: it catches up.)
    let _ = writeln!(
        out,
        "board rank {}: waiting for a member's first frame on port {}",
        cluster::RANK,
        fed::own_port()
    );
    socket.wait_recv_ready().await;
    let Some(node) = fed::node(incarnation, now(), &mut out) else {
        fail(&mut red).await
    };
    let Ok(mut driver) = AsyncDriver::new(node, socket, fed::peers(), fed::tx(), RX.take()) else {
        let _ = writeln!(out, "driver: bad buffers");
        fail(&mut red).await
    };
    let params = fed::params();
    let deadline = Instant::now() + DEADLINE;
    let mut training = Training::new(params, now);
    while !training.done() {
        match embassy_time::with_deadline(deadline, driver.run_round(params)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = writeln!(out, "round {}: {:?}", driver.engine().round() + 1, e);
                break;
            }
            Err(_) => {
                let _ = writeln!(
                    out,
                    "round {}: gave up after {} s",
                    driver.engine().round() + 1,
                    DEADLINE.as_secs()
                );
                break;
            }
        }
        let engine = driver.engine();
        let (round, skipped) = (engine.round(), engine.stats().rounds_skipped);
        training.finished_round(params, round, skipped, &mut out);
    }
    // Keep answering the others' last retransmissions.
    driver
        .serve_until(Instant::now() + Duration::from_micros(LINGER.total_micros()))
        .await;
    let finished = now() - LINGER;
    let stats = *driver.engine().stats();
    if training.report(params, incarnation, &stats, driver.stats(), finished, &mut out) {
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

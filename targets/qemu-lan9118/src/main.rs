//! One ASAP node on an emulated Cortex-M4F board with 64 KiB of RAM, in a cluster with
//! `asap node` processes on the host: QEMU's `mps2-an386`, its LAN9118 Ethernet on
//! `-nic user` (slirp: the host's 127.0.0.1 is 10.0.2.2 here), smoltcp and
//! `transport-smoltcp`, a 4,096-value model, the exponential graph on four nodes.
//!
//! The board is rank 0 at 10.0.2.15:7000 (the host forwards 127.0.0.1:47200 to it);
//! ranks 1–3 listen on the host at 127.0.0.1:47201–47203. Every node starts from the
//! seeded replica `asap node` uses (`asap_fed::seeded::Replica::new(1, rank)`), so the
//! firmware knows the exact mean and checks its own replica against it after 30 rounds.
//! It prints the result and the stack it never touched (a painted-stack high-water
//! mark: the proof that node, network stack and stack fit the 64 KiB), and exits
//! through semihosting: 0 when its replica is within 1e-5 of the mean.
//!
//! With the `keyed` feature every frame carries a keyed BLAKE3 tag under the test key
//! in `test.key` (build.rs bakes it in; the host processes get `--key-file test.key`).
//! A real board would keep its key in provisioned flash or OTP, never in its image.
//! With the `join` feature the board joins the three hosts' running cluster (all of it
//! elastic): its first rounds fetch their model, and the 30 rounds count from there;
//! the mean it checks against is then the hosts' (ranks 1–3).
//! The board takes a new incarnation at every boot (the host's clock through
//! semihosting SYS_TIME; a real board: a boot counter in flash): with a key, peers would
//! otherwise refuse a restarted board's frames as replays of its previous life.
#![no_std]
#![no_main]

mod key {
    include!(concat!(env!("OUT_DIR"), "/key.rs"));
}

use core::sync::atomic::{AtomicU32, Ordering};

use asap_board::lan9118;
use asap_fed::seeded::{max_error_to_mean_of, Replica};
use asap_core::topology::{Family, Topology, TopologySpec};
use asap_core::{Buffers, Config, Node, NodeId};
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::{entry, exception};
use cortex_m_semihosting::{debug, hprintln, nr};
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketSet, SocketStorage};
use smoltcp::socket::udp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, IpEndpoint, Ipv4Address};
use static_cell::ConstStaticCell;
use transport_smoltcp::{Driver, Step};

const WORLD: usize = 4;
const MODEL: usize = 4_096;
const ROUNDS: u32 = 30;
const SEED: u64 = 1;
const PORT: u16 = 7000;
/// Host port of rank r: HOST_BASE_PORT + r.
const HOST_BASE_PORT: u16 = 47_200;
/// UDP payloads each socket buffer holds, each way.
const RX_FRAMES: usize = 2;
const TX_FRAMES: usize = 1;
/// QEMU's `-nic user` default for the LAN9118.
const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
/// The mps2-an386 system clock.
const CPU_HZ: u32 = 25_000_000;

const CONFIG: Config = Config {
    key: match key::KEY {
        Some(bytes) => Some(asap_core::Key::new(bytes)),
        None => None,
    },
    elastic: cfg!(feature = "join"),
    join: cfg!(feature = "join"),
    ..Config::new(0xa5a9, NodeId(0), MODEL)
};
/// The members whose starting replicas make the mean the cluster converges to: all of
/// them, or the hosts alone when the board joins their cluster.
const FOUNDERS: core::ops::Range<u32> = if cfg!(feature = "join") { 1..WORLD as u32 } else { 0..WORLD as u32 };
const CHUNKS: usize = MODEL.div_ceil(CONFIG.chunk_len());
const PEERS: usize = WORLD - 1;
const BITMAP_WORDS: usize = CHUNKS.div_ceil(32) * PEERS;
const FRAME: usize = CONFIG.max_frame;

static MILLIS: AtomicU32 = AtomicU32::new(0);

// Static memory, taken once. `ConstStaticCell` holds its value in place, so nothing
// large ever passes through the (small) stack.
static STORAGE: ConstStaticCell<[SocketStorage<'static>; 1]> = ConstStaticCell::new([SocketStorage::EMPTY]);
static RX_META: ConstStaticCell<[udp::PacketMetadata; RX_FRAMES]> =
    ConstStaticCell::new([udp::PacketMetadata::EMPTY; RX_FRAMES]);
static RX_DATA: ConstStaticCell<[u8; RX_FRAMES * FRAME]> = ConstStaticCell::new([0; RX_FRAMES * FRAME]);
static TX_META: ConstStaticCell<[udp::PacketMetadata; TX_FRAMES]> =
    ConstStaticCell::new([udp::PacketMetadata::EMPTY; TX_FRAMES]);
static TX_DATA: ConstStaticCell<[u8; TX_FRAMES * FRAME]> = ConstStaticCell::new([0; TX_FRAMES * FRAME]);
static PARAMS: ConstStaticCell<[f32; MODEL]> = ConstStaticCell::new([0.0; MODEL]);
static SNAPSHOT: ConstStaticCell<[f32; MODEL]> = ConstStaticCell::new([0.0; MODEL]);
static ACCUMULATOR: ConstStaticCell<[f32; MODEL]> = ConstStaticCell::new([0.0; MODEL]);
static CHUNK_WEIGHTS: ConstStaticCell<[f32; CHUNKS]> = ConstStaticCell::new([0.0; CHUNKS]);
static CHUNK_MASS: ConstStaticCell<[f32; 2 * CHUNKS]> = ConstStaticCell::new([0.0; 2 * CHUNKS]);
static CHUNK_BITS: ConstStaticCell<[u32; BITMAP_WORDS]> = ConstStaticCell::new([0; BITMAP_WORDS]);
static PEERS_TABLE: ConstStaticCell<[IpEndpoint; WORLD]> =
    ConstStaticCell::new([IpEndpoint::new(IpAddress::v4(10, 0, 2, 15), PORT); WORLD]);
static TX: ConstStaticCell<[u8; FRAME]> = ConstStaticCell::new([0; FRAME]);
static DEVICE: ConstStaticCell<lan9118::Lan9118> = ConstStaticCell::new(lan9118::Lan9118::new(MAC));

#[exception]
fn SysTick() {
    MILLIS.fetch_add(1, Ordering::Relaxed);
}

fn now() -> Instant {
    Instant::from_millis(i64::from(MILLIS.load(Ordering::Relaxed)))
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    hprintln!("panic: {}", info);
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}

/// The host's clock, whole seconds since 1970 (semihosting SYS_TIME).
fn host_seconds() -> u32 {
    // SAFETY: SYS_TIME takes no argument block and only returns a value.
    unsafe { cortex_m_semihosting::syscall1(nr::TIME, 0) as u32 }
}

/// An incarnation no earlier boot had: the second this one started in, counted from
/// 2025-01-01, after waiting for that second to pass (at most a second).
fn fresh_incarnation() -> u32 {
    const EPOCH_2025: u32 = 1_735_689_600;
    let mine = host_seconds();
    while host_seconds() == mine {}
    mine.saturating_sub(EPOCH_2025).max(1)
}

const PAINT: u32 = 0xA5A5_5A5A;

extern "C" {
    /// End of .bss/.data: the lowest address the stack may grow to (cortex-m-rt).
    static mut __sheap: u32;
}

/// Fills the free stack (from the end of static data to a little below the current
/// stack pointer) with a pattern, so `stack_headroom` can tell how deep it ever went.
fn paint_stack() {
    let bottom = core::ptr::addr_of_mut!(__sheap) as usize;
    let top = cortex_m::register::msp::read() as usize - 256;
    let mut p = bottom;
    while p < top {
        // SAFETY: [bottom, top) is unused RAM between static data and the live stack.
        unsafe { core::ptr::write_volatile(p as *mut u32, PAINT) };
        p += 4;
    }
}

/// Bytes of stack never used since `paint_stack`.
fn stack_headroom() -> usize {
    let bottom = core::ptr::addr_of_mut!(__sheap) as usize;
    let mut p = bottom;
    // SAFETY: reads RAM between static data and the stack, which `paint_stack` wrote.
    while unsafe { core::ptr::read_volatile(p as *const u32) } == PAINT {
        p += 4;
    }
    p - bottom
}

#[entry]
fn main() -> ! {
    paint_stack();
    let mut core = cortex_m::Peripherals::take().unwrap();
    core.SYST.set_clock_source(SystClkSource::Core);
    core.SYST.set_reload(CPU_HZ / 1000 - 1);
    core.SYST.clear_current();
    core.SYST.enable_interrupt();
    core.SYST.enable_counter();

    let device = DEVICE.take();
    if let Err(lan9118::InitError::NotFound(test, id)) = device.init() {
        panic!("no LAN9118: BYTE_TEST {:#x}, ID_REV {:#x}", test, id);
    }
    let mut iface = Interface::new(
        IfaceConfig::new(HardwareAddress::Ethernet(EthernetAddress(device.mac()))),
        device,
        now(),
    );
    iface.update_ip_addrs(|a| {
        let _ = a.push(IpCidr::new(IpAddress::v4(10, 0, 2, 15), 24));
    });
    let _ = iface.routes_mut().add_default_ipv4_route(Ipv4Address::new(10, 0, 2, 2));

    let storage = STORAGE.take();
    let rx_meta = RX_META.take();
    let rx_data = RX_DATA.take();
    let tx_meta = TX_META.take();
    let tx_data = TX_DATA.take();
    let mut sockets = SocketSet::new(&mut storage[..]);
    let mut socket = udp::Socket::new(
        udp::PacketBuffer::new(&mut rx_meta[..], &mut rx_data[..]),
        udp::PacketBuffer::new(&mut tx_meta[..], &mut tx_data[..]),
    );
    socket.bind(PORT).unwrap();
    let handle = sockets.add(socket);

    let params = PARAMS.take();
    let snapshot = SNAPSHOT.take();
    let accumulator = ACCUMULATOR.take();
    let chunk_weights = CHUNK_WEIGHTS.take();
    let chunk_mass = CHUNK_MASS.take();
    let chunk_bits = CHUNK_BITS.take();
    let peers = PEERS_TABLE.take();
    for (r, p) in peers.iter_mut().enumerate().skip(1) {
        *p = IpEndpoint::new(IpAddress::v4(10, 0, 2, 2), HOST_BASE_PORT + r as u16);
    }
    let tx = TX.take();

    const SPEC: TopologySpec = TopologySpec::new(Family::Exponential, WORLD as u32);
    let mut scratch = [0.0f64; SPEC.scratch_len()];
    let topology = match Topology::new(SPEC, &mut scratch) {
        Ok(t) => t,
        Err(_) => panic!("topology"),
    };
    let buffers = Buffers {
        snapshot,
        accumulator,
        chunk_weights,
        chunk_mass,
        chunk_bits,
    };
    let incarnation = fresh_incarnation();
    let integrity = if key::KEY.is_some() {
        "keyed BLAKE3 tags"
    } else {
        "CRC-32"
    };
    hprintln!("board: incarnation {}, {}", incarnation, integrity);
    let start = asap_core::Instant::from_micros(now().total_micros() as u64);
    let config = Config { incarnation, ..CONFIG };
    let node = Node::<WORLD>::with_topology(config, &topology, buffers, start).unwrap();
    let started = now();
    for (p, v) in params.iter_mut().zip(Replica::new(SEED, 0)) {
        *p = v;
    }
    let mut driver = Driver::new(node, handle, peers, tx).unwrap();

    let mut rounds = 0u32;
    let mut linger_until = None;
    loop {
        let t = now();
        driver.poll(t, &mut iface, device, &mut sockets);
        // A joining board's rounds count once it holds the cluster's model.
        if rounds < ROUNDS && driver.step(t, params).unwrap() == Step::Finished && driver.engine().has_model() {
            rounds += 1;
            if rounds == ROUNDS {
                // Keep answering the host nodes' last retransmissions a while.
                linger_until = Some(t + smoltcp::time::Duration::from_millis(1_000));
            }
        }
        if linger_until.is_some_and(|end| t >= end) {
            break;
        }
        if t.total_millis() > 120_000 {
            hprintln!("stuck at round {}", rounds);
            debug::exit(debug::EXIT_FAILURE);
        }
    }

    let max_error = max_error_to_mean_of(params, SEED, FOUNDERS);
    let stats = driver.engine().stats();
    let ok = max_error <= 1e-5;
    hprintln!(
        "board ({}): {} rounds of {} values in {} ms, {} frames sent, {} received, {} chunks resent, \
         {} peers down, {} auth failures, {} replays, stack headroom {} B of 64 KiB RAM, max error {}e-9: {}",
        integrity,
        stats.rounds,
        MODEL,
        (now() - started).total_millis(),
        stats.frames_sent,
        stats.frames_received,
        stats.chunks_resent,
        stats.peers_down,
        stats.auth_failures,
        stats.replays,
        stack_headroom(),
        // In units of 1e-9, as an integer: float formatting takes a kilobyte of stack.
        (max_error * 1e9) as u64,
        if ok { "PASS" } else { "FAIL" }
    );
    // The report's formatting (floats included) ran on the stack too.
    hprintln!("board: stack headroom after the report {} B", stack_headroom());
    debug::exit(if ok { debug::EXIT_SUCCESS } else { debug::EXIT_FAILURE });
    loop {
        cortex_m::asm::wfi();
    }
}

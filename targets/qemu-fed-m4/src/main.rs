//! One member of a federated-training cluster on an emulated Cortex-M4F board: QEMU's
//! `mps2-an386`, its LAN9118 Ethernet on `-nic user` (slirp: the host's 127.0.0.1 is
//! 10.0.2.2 here), smoltcp and `transport-smoltcp`, beside `asap node --workload
//! federated` processes on the host. What it does is the board crate's (`asap_board`,
//! ../board): `member::run`, the LAN9118 driver; this file brings the board up (SysTick
//! clock, LAN9118), takes a new incarnation from the host's clock through semihosting
//! (SYS_TIME, `fed::fresh_incarnation`: a restarted board is a new life to its peers)
//! and exits through semihosting: 0 when the member passed (every round ran, held-out
//! accuracy within 1% of the centralised reference).
//!
//! Rank, members' addresses, cluster id, seed, model size and plan come from the board
//! crate's build.rs (environment variables, listed there and in targets/README.md).
#![no_std]
#![no_main]
// A size probe (src/probe.rs) leaves the part it replaces unused.
#![cfg_attr(
    any(feature = "probe-no-core", feature = "probe-no-nic", feature = "probe-no-smoltcp"),
    allow(dead_code, unused_imports)
)]

#[cfg(any(feature = "probe-no-core", feature = "probe-no-nic", feature = "probe-no-smoltcp"))]
mod probe;

use core::sync::atomic::{AtomicU32, Ordering};

use asap_board::{fed, lan9118, member};
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::{entry, exception};
use cortex_m_semihosting::{debug, hio, hprintln, nr};
use smoltcp::time::Instant;
use static_cell::ConstStaticCell;

/// QEMU's `-nic user` default for the LAN9118.
const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
/// The mps2-an386 system clock.
const CPU_HZ: u32 = 25_000_000;

static MILLIS: AtomicU32 = AtomicU32::new(0);
#[cfg(not(feature = "probe-no-nic"))]
static DEVICE: ConstStaticCell<lan9118::Lan9118> = ConstStaticCell::new(lan9118::Lan9118::new(MAC));
#[cfg(feature = "probe-no-nic")]
static DEVICE: ConstStaticCell<probe::StubDevice> = ConstStaticCell::new(probe::StubDevice::new());

#[exception]
fn SysTick() {
    MILLIS.fetch_add(1, Ordering::Relaxed);
}

fn now() -> Instant {
    Instant::from_millis(i64::from(MILLIS.load(Ordering::Relaxed)))
}

/// The host's clock, whole seconds since 1970 (semihosting SYS_TIME).
fn host_seconds() -> u32 {
    // SAFETY: SYS_TIME takes no argument block and only returns a value.
    unsafe { cortex_m_semihosting::syscall1(nr::TIME, 0) as u32 }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    hprintln!("panic: {}", info);
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}

#[entry]
fn main() -> ! {
    let mut core = cortex_m::Peripherals::take().unwrap();
    core.SYST.set_clock_source(SystClkSource::Core);
    core.SYST.set_reload(CPU_HZ / 1000 - 1);
    core.SYST.clear_current();
    core.SYST.enable_interrupt();
    core.SYST.enable_counter();

    let device = DEVICE.take();
    #[cfg(not(feature = "probe-no-nic"))]
    if let Err(lan9118::InitError::NotFound(test, id)) = device.init() {
        panic!("no LAN9118: BYTE_TEST {:#x}, ID_REV {:#x}", test, id);
    }
    let Ok(mut out) = hio::hstdout() else {
        debug::exit(debug::EXIT_FAILURE);
        loop {
            cortex_m::asm::wfi();
        }
    };
    #[cfg(not(feature = "probe-no-nic"))]
    let mac = device.mac();
    #[cfg(feature = "probe-no-nic")]
    let mac = MAC;
    let incarnation = fed::fresh_incarnation(host_seconds);
    #[cfg(not(any(feature = "probe-no-core", feature = "probe-no-smoltcp")))]
    let ok = member::run(device, mac, now, incarnation, &mut out);
    #[cfg(all(feature = "probe-no-core", not(feature = "probe-no-smoltcp")))]
    let ok = member::run_with(device, mac, now, incarnation, &mut out, |_, _| {
        Some(probe::StubEngine::new(asap_core::Config::new(
            asap_board::cluster::CLUSTER,
            asap_core::NodeId(0),
            2,
        )))
    });
    #[cfg(feature = "probe-no-smoltcp")]
    let ok = probe::run_raw(device, mac, now, incarnation, &mut out);
    debug::exit(if ok { debug::EXIT_SUCCESS } else { debug::EXIT_FAILURE });
    loop {
        cortex_m::asm::wfi();
    }
}

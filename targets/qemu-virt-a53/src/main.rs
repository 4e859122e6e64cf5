//! One member of a federated-training cluster on an emulated Cortex-A53: QEMU's aarch64
//! `virt` machine, a virtio-net device (virtio-mmio) on `-netdev user` (slirp: the
//! host's 127.0.0.1 is 10.0.2.2 here), smoltcp and `transport-smoltcp`, beside
//! `asap node --workload federated` processes and other boards. What it does is the
//! board crate's `member::run` (`asap_board`, ../board), as on qemu-fed-m4; this file
//! brings the machine up at EL1 with the MMU off (own `_start`: stack, FP/SIMD on, .bss
//! zeroed), reads time from the generic timer, prints on the PL011 UART, takes a new
//! incarnation from the host's clock through semihosting (SYS_TIME), and exits through
//! semihosting: 0 when the member passed (every round ran, held-out accuracy within 1%
//! of the centralised reference).
//!
//! Rank, members' addresses, cluster id, seed, model size and plan come from the board
//! crate's build.rs (environment variables, listed in ../board/build.rs).
#![no_std]
#![no_main]

mod virtio_net;

use core::arch::{asm, global_asm};
use core::fmt::Write;

use asap_board::{fed, member};
use smoltcp::time::Instant;
use static_cell::ConstStaticCell;

// Entry at EL1 with the MMU off: set the stack, allow FP/SIMD (CPACR_EL1.FPEN = 0b11)
// before any Rust code can use them, zero .bss, call `main`.
global_asm!(
    ".section .text.boot, \"ax\"",
    ".global _start",
    "_start:",
    "    ldr x0, =__stack_top",
    "    mov sp, x0",
    "    mrs x0, cpacr_el1",
    "    orr x0, x0, #(3 << 20)",
    "    msr cpacr_el1, x0",
    "    isb",
    "    ldr x0, =__bss_start",
    "    ldr x1, =__bss_end",
    "0:  cmp x0, x1",
    "    b.hs 1f",
    "    str xzr, [x0], #8",
    "    b 0b",
    "1:  bl main",
    "2:  wfe",
    "    b 2b",
);

/// The PL011 UART of the virt machine (QEMU needs no set-up).
struct Uart;

const UART_DR: usize = 0x0900_0000;
const UART_FR: usize = 0x0900_0018;

impl Write for Uart {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            // SAFETY: the PL011's flag and data registers on this machine.
            unsafe {
                while core::ptr::read_volatile(UART_FR as *const u32) & (1 << 5) != 0 {}
                core::ptr::write_volatile(UART_DR as *mut u32, u32::from(b));
            }
        }
        Ok(())
    }
}

/// Ends the emulation through semihosting (SYS_EXIT, ADP_Stopped_ApplicationExit) with
/// exit status `code`.
fn exit(code: u64) -> ! {
    let block: [u64; 2] = [0x20026, code];
    // SAFETY: the semihosting call reads the two-word block and does not return.
    unsafe {
        asm!("hlt #0xf000", in("w0") 0x18u32, in("x1") block.as_ptr(), options(nostack));
    }
    loop {
        // SAFETY: waits for an event; nothing else.
        unsafe { asm!("wfe") };
    }
}

/// The host's clock, whole seconds since 1970 (semihosting SYS_TIME).
fn host_seconds() -> u32 {
    let seconds: u64;
    // SAFETY: SYS_TIME takes no argument block and only returns a value in x0.
    unsafe {
        asm!("hlt #0xf000", inout("x0") 0x11u64 => seconds, in("x1") 0u64, options(nostack));
    }
    seconds as u32
}

/// Monotonic time from the generic timer.
fn now() -> Instant {
    let (count, freq): (u64, u64);
    // SAFETY: reading the virtual counter and its frequency has no side effects.
    unsafe {
        asm!("isb", "mrs {}, cntvct_el0", out(reg) count, options(nomem, nostack));
        asm!("mrs {}, cntfrq_el0", out(reg) freq, options(nomem, nostack));
    }
    Instant::from_micros((u128::from(count) * 1_000_000 / u128::from(freq.max(1))) as i64)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let _ = writeln!(Uart, "panic: {}", info);
    exit(1)
}

static RX_BUFFERS: ConstStaticCell<virtio_net::RxBuffers> = ConstStaticCell::new([[0; 1_536]; 16]);

#[no_mangle]
extern "C" fn main() -> ! {
    let mut out = Uart;
    let Some(mut device) = virtio_net::VirtioNet::find(RX_BUFFERS.take()) else {
        let _ = writeln!(out, "no virtio-net device (add -device virtio-net-device,netdev=...)");
        exit(1)
    };
    let mac = device.mac();
    let incarnation = fed::fresh_incarnation(host_seconds);
    let ok = member::run(&mut device, mac, now, incarnation, &mut out);
    if device.errors > 0 {
        let _ = writeln!(out, "virtio-net: {} frames not received or sent", device.errors);
    }
    exit(if ok { 0 } else { 1 })
}

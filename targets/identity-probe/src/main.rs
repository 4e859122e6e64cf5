//! Identity probe: what per-node identities (#22) cost a Cortex-M4F board. Two members'
//! static secrets derive their pair's link key from each other's public keys; the probe
//! checks both ends agree and that a third member cannot derive it, and counts the
//! instructions each step takes with SysTick under QEMU's `-icount shift=0` (one
//! instruction a virtual nanosecond, SysTick at 25 MHz: 40 instructions a tick). It
//! also paints the stack and reports the deepest use. Exit 0 through semihosting when
//! the keys check out.
#![no_std]
#![no_main]

use asap_core::NodeSecret;
use cortex_m::peripheral::{syst::SystClkSource, SYST};
use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use panic_halt as _;

/// Instructions a SysTick tick (25 MHz SysTick, 1 GHz virtual instruction clock).
const INSTRUCTIONS_PER_TICK: u32 = 40;

/// Ticks `f` takes (it must take fewer than 2^24 ticks: 670M instructions).
fn ticks<T>(f: impl FnOnce() -> T) -> (T, u32) {
    let start = SYST::get_current();
    let out = f();
    let end = SYST::get_current();
    // SysTick counts down and wraps at the reload value.
    (out, start.wrapping_sub(end) & 0x00ff_ffff)
}

/// Paints `words` of free stack below the current frame (and 256 bytes of slack) with
/// a pattern; returns the lowest painted word.
fn paint_stack(words: usize) -> *const u32 {
    let marker = 0u32;
    let here = core::ptr::addr_of!(marker) as usize;
    let bottom = (here - 4 * words - 256) & !3;
    for a in (bottom..here - 256).step_by(4) {
        // SAFETY: below the live frames, above .bss (checked by the caller's budget).
        unsafe { core::ptr::write_volatile(a as *mut u32, 0xa5a5_a5a5) };
    }
    bottom as *const u32
}

/// Bytes of painted stack that were written.
fn stack_used(bottom: *const u32, words: usize) -> usize {
    let untouched = (0..words)
        // SAFETY: the painted range.
        .take_while(|&k| unsafe { core::ptr::read_volatile(bottom.add(k)) } == 0xa5a5_a5a5)
        .count();
    4 * (words - untouched)
}

#[entry]
fn main() -> ! {
    let mut core = cortex_m::Peripherals::take().unwrap();
    core.SYST.set_clock_source(SystClkSource::Core);
    core.SYST.set_reload(0x00ff_ffff);
    core.SYST.clear_current();
    core.SYST.enable_counter();

    const WORDS: usize = 4096; // 16 KiB painted
    let bottom = paint_stack(WORDS);
    let ok = probe();
    let stack = stack_used(bottom, WORDS);
    hprintln!("stack_bytes {}", stack);
    if ok {
        hprintln!("PASS");
        debug::exit(debug::EXIT_SUCCESS);
    } else {
        hprintln!("FAIL");
        debug::exit(debug::EXIT_FAILURE);
    }
    loop {}
}

#[cfg(not(feature = "baseline"))]
#[inline(never)]
fn probe() -> bool {
    let (a, b, c) = (NodeSecret::new([1; 32]), NodeSecret::new([2; 32]), NodeSecret::new([3; 32]));
    // Calibration: cortex-m 0.7.10's `delay(n)` turns n + 1 times through `subs; bne`,
    // 2 (n + 1) instructions: this must print about 2,000,000.
    let ((), t_delay) = ticks(|| cortex_m::asm::delay(1_000_000));
    hprintln!("calibration_2M_instructions {}", t_delay * INSTRUCTIONS_PER_TICK);
    let (pa, t_public) = ticks(|| a.public_key());
    let (pb, pc) = (b.public_key(), c.public_key());
    let (ab, t_link) = ticks(|| a.link_key(7, 0, &pa, 1, &pb));
    let ba = b.link_key(7, 1, &pb, 0, &pa);
    let forged = c.link_key(7, 1, &pb, 0, &pa);
    let _ = pc;
    hprintln!(
        "public_key_instructions {} link_key_instructions {}",
        t_public * INSTRUCTIONS_PER_TICK,
        t_link * INSTRUCTIONS_PER_TICK
    );
    matches!((ab, ba, forged), (Ok(ab), Ok(ba), Ok(f)) if ab == ba && f != ab)
}

#[cfg(feature = "baseline")]
#[inline(never)]
fn probe() -> bool {
    true
}

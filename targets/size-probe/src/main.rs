//! Size probe: a firmware that monomorphises `asap_core::Node<'_, 4>` and calls its whole
//! API from a realistic run loop, so `llvm-size` on the ELF measures asap-core's flash
//! cost on a Cortex-M4F. With `--features baseline` the same volatile I/O loop runs
//! without asap-core (it only copies bytes), which measures the runtime's share.
//!
//! It only has to link: the "devices" below are plain RAM cells read and written with
//! volatile accesses so the optimiser can neither predict the inputs nor drop outputs.
#![no_std]
#![no_main]

use core::cell::UnsafeCell;
use core::ptr::{read_volatile, write_volatile};

use cortex_m::singleton;
use cortex_m_rt::entry;
use panic_halt as _;

/// Model values.
const MODEL: usize = 4_096;
/// Largest frame, bytes.
const FRAME: usize = 1_400;

/// Memory a DMA engine or a peripheral would write behind the compiler's back.
#[repr(transparent)]
struct Volatile<T>(UnsafeCell<T>);

// SAFETY: single core, and every access is a volatile read or write of plain data.
unsafe impl<T> Sync for Volatile<T> {}

impl<T: Copy> Volatile<T> {
    const fn new(value: T) -> Self {
        Volatile(UnsafeCell::new(value))
    }
    fn read(&self) -> T {
        // SAFETY: the pointer is valid and aligned; T is Copy.
        unsafe { read_volatile(self.0.get()) }
    }
    fn write(&self, value: T) {
        // SAFETY: as above; nothing holds a reference into the cell.
        unsafe { write_volatile(self.0.get(), value) }
    }
}

/// Received frame (DMA target) and its length; 0 means "nothing received".
static RX_BUF: Volatile<[u8; FRAME]> = Volatile::new([0; FRAME]);
static RX_LEN: Volatile<u32> = Volatile::new(0);
/// Frame to send (DMA source), its destination and its length; writing TX_LEN sends.
static TX_BUF: Volatile<[u8; FRAME]> = Volatile::new([0; FRAME]);
static TX_TO: Volatile<u16> = Volatile::new(0);
static TX_LEN: Volatile<u32> = Volatile::new(0);
/// Free-running microsecond counter.
static CLOCK_US: Volatile<u64> = Volatile::new(0);
/// A "gradient" input for the local step.
static GRAD: Volatile<f32> = Volatile::new(0.0);
/// Diagnostics sink (a debugger or a status register would read it).
static DIAG: Volatile<u64> = Volatile::new(0);

fn micros() -> u64 {
    CLOCK_US.read()
}

fn rx_byte(i: usize) -> u8 {
    // SAFETY: i < FRAME (callers bound it); volatile read of one byte of the DMA buffer.
    unsafe { read_volatile((RX_BUF.0.get() as *const u8).add(i)) }
}

fn tx_byte(i: usize, b: u8) {
    // SAFETY: i < FRAME (callers bound it); volatile write of one byte of the DMA buffer.
    unsafe { write_volatile((TX_BUF.0.get() as *mut u8).add(i), b) }
}

/// Copies the pending received frame (if any) into `buf`; returns its length.
fn recv(buf: &mut [u8; FRAME]) -> Option<usize> {
    let len = RX_LEN.read() as usize;
    if len == 0 || len > FRAME {
        return None;
    }
    for (i, b) in buf[..len].iter_mut().enumerate() {
        *b = rx_byte(i);
    }
    RX_LEN.write(0);
    Some(len)
}

/// Hands `frame` to the "MAC".
fn send(to: u16, frame: &[u8]) {
    for (i, &b) in frame.iter().enumerate().take(FRAME) {
        tx_byte(i, b);
    }
    TX_TO.write(to);
    TX_LEN.write(frame.len() as u32);
}

/// The application's local training step.
fn local_step(params: &mut [f32]) {
    let g = GRAD.read();
    for p in params.iter_mut() {
        *p -= 0.01 * g * *p;
    }
}

#[cfg(not(feature = "baseline"))]
mod with_core {
    use super::*;
    use asap_core::{Buffers, Config, Event, Instant, Node, NodeId, PeerSpec, Reducer, Wait};

    /// Board configuration read at boot (DIP switches / flash), so that the optimiser
    /// cannot specialise the node on a constant config.
    static BOARD_ID: Volatile<u16> = Volatile::new(0);
    static BOOT_COUNT: Volatile<u32> = Volatile::new(0);
    static WAIT_SEL: Volatile<u8> = Volatile::new(0);
    /// Error codes, for a debugger.
    static STATUS: Volatile<u32> = Volatile::new(0);

    fn halt(code: u32) -> ! {
        STATUS.write(code);
        loop {
            cortex_m::asm::wfi();
        }
    }

    /// The config as far as it is known at compile time (it fixes the buffer sizes).
    const BASE: Config = {
        let mut c = Config::new(1, NodeId(0), MODEL);
        c.max_frame = FRAME;
        c
    };
    const CHUNKS: usize = MODEL.div_ceil(BASE.chunk_len());
    const PEERS: usize = 2;
    const BITMAP_WORDS: usize = CHUNKS.div_ceil(32) * PEERS;

    fn now() -> Instant {
        Instant::from_micros(micros())
    }

    pub(crate) fn run() -> ! {
        let params = singleton!(: [f32; MODEL] = [0.0; MODEL]).unwrap();
        let snapshot = singleton!(: [f32; MODEL] = [0.0; MODEL]).unwrap();
        let accumulator = singleton!(: [f32; MODEL] = [0.0; MODEL]).unwrap();
        let chunk_weights = singleton!(: [f32; CHUNKS] = [0.0; CHUNKS]).unwrap();
        let chunk_mass = singleton!(: [f32; 2 * CHUNKS] = [0.0; 2 * CHUNKS]).unwrap();
        let chunk_bits = singleton!(: [u32; BITMAP_WORDS] = [0; BITMAP_WORDS]).unwrap();
        let mut rx = [0u8; FRAME];
        let mut tx = [0u8; FRAME];

        let mut config = BASE;
        config.id = NodeId(BOARD_ID.read());
        config.incarnation = BOOT_COUNT.read();
        config.wait = match WAIT_SEL.read() {
            0 => Wait::All,
            1 => Wait::AtLeast(1),
            2 => Wait::None,
            _ => Wait::Barrier,
        };
        config.staleness = Some(4);
        let peers = [
            PeerSpec::both(NodeId(1), 1.0 / 3.0),
            PeerSpec::both(NodeId(2), 1.0 / 3.0),
        ];
        let Ok(layout) = config.layout(peers.len()) else {
            halt(1)
        };
        DIAG.write(layout.bytes() as u64);
        let buffers = Buffers {
            snapshot,
            accumulator,
            chunk_weights,
            chunk_mass,
            chunk_bits,
        };
        let Ok(mut node) = Node::<4>::new(config, &peers, buffers, now()) else {
            halt(2)
        };
        DIAG.write(u64::from(node.id().0) | (node.layout().chunks as u64) << 16);
        DIAG.write(node.config().max_frame as u64);

        let mut stepped = false;
        loop {
            // Application: rounds (a local step waits in `params` for the next start).
            if !stepped && !node.is_started() && node.can_start_round().is_ok() {
                local_step(params);
                stepped = node.record_local_step();
            }
            match node.advance_round(now(), params, stepped) {
                Ok(advance) => {
                    stepped &= advance.started.is_none();
                    if let Some(f) = advance.finished {
                        DIAG.write(u64::from(f.round) << 32 | f.updates as u64);
                    }
                }
                Err(_) => STATUS.write(3),
            }

            // Outputs.
            loop {
                match node.poll_transmit(now(), &mut tx) {
                    Ok(Some(t)) => send(t.to.0, &tx[..t.len]),
                    Ok(None) => break,
                    Err(_) => {
                        STATUS.write(5);
                        break;
                    }
                }
            }
            while let Some(event) = node.poll_event() {
                let code = match event {
                    Event::RoundReady { round } => u64::from(round),
                    Event::SendComplete { round } => 1 << 32 | u64::from(round),
                    Event::PeerDown(p) => 2 << 32 | u64::from(p.0),
                    Event::PeerUp(p) => 3 << 32 | u64::from(p.0),
                    Event::PeerRestarted(p) => 4 << 32 | u64::from(p.0),
                    Event::PeerIncompatible(p) => 5 << 32 | u64::from(p.0),
                    Event::UpdateRejected { peer, round, .. } => 6 << 48 | u64::from(peer.0) << 32 | u64::from(round),
                    _ => 7 << 32,
                };
                DIAG.write(code);
            }
            let deadline = node.poll_timeout();

            // Inputs.
            match recv(&mut rx) {
                Some(len) => {
                    let frame = &rx[..len];
                    if node.accepts(frame) {
                        match node.handle_frame(now(), frame) {
                            Ok(accepted) => DIAG.write(u64::from(accepted.from.0)),
                            Err(_) => STATUS.write(6),
                        }
                    }
                }
                None => {
                    if deadline.is_some_and(|d| now() >= d) {
                        node.handle_timeout(now());
                    }
                }
            }

            // Diagnostics.
            let s = node.stats();
            DIAG.write(s.frames_sent ^ s.frames_received ^ s.rounds ^ s.decode_errors);
            if let Some(p) = node.peer(NodeId(1)) {
                DIAG.write(u64::from(p.rounds_started) | u64::from(p.up) << 32 | u64::from(p.send_idle) << 33);
            }
            DIAG.write(u64::from(node.round()));
        }
    }
}

#[cfg(feature = "baseline")]
mod baseline {
    use super::*;

    /// The same I/O loop with no protocol: echo every received frame, run the local step.
    pub(crate) fn run() -> ! {
        let params = singleton!(: [f32; MODEL] = [0.0; MODEL]).unwrap();
        let mut rx = [0u8; FRAME];
        let mut round = 0u32;
        loop {
            if micros() & 1 == 0 {
                local_step(params);
                round = round.wrapping_add(1);
            }
            if let Some(len) = recv(&mut rx) {
                send(u16::from(rx[0]), &rx[..len]);
            }
            DIAG.write(micros() ^ u64::from(round));
        }
    }
}

#[entry]
fn main() -> ! {
    #[cfg(not(feature = "baseline"))]
    with_core::run();
    #[cfg(feature = "baseline")]
    baseline::run();
}

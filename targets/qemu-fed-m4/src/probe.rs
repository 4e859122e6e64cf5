//! Stand-ins for measuring what each part of this firmware costs in flash and static RAM
//! (`size-split.sh`): LTO inlines the drivers into `main`, so symbol sizes cannot tell
//! their shares; instead each `probe-*` feature builds the firmware with one part
//! replaced by a stand-in, and the part's share is the full firmware's size minus that
//! variant's. The stand-ins read and write volatile memory, so the code around them
//! (what the part is given, what it returns) is kept as in the real firmware. These
//! variants are for `llvm-size` only: they do not run.
//!
//! - `probe-no-core`: [`StubEngine`] instead of asap-core's `Node` (the `Reducer` the
//!   driver runs, through `member::run_with`): no node, no topology, no frame codec; the
//!   node's buffers go too.
//! - `probe-no-nic`: [`StubDevice`] instead of the LAN9118 driver (a `phy::Device` over
//!   volatile buffers).
//! - `probe-no-smoltcp`: [`run_raw`] instead of `member::run`: the node's frames go
//!   straight to the LAN9118's frame buffers (its `phy::Device` tokens), without smoltcp's
//!   interface, IP, ARP and UDP, its socket buffers, or transport-smoltcp's driver.
#![allow(dead_code)]

#[cfg(feature = "probe-no-core")]
pub use stub_engine::StubEngine;

#[cfg(feature = "probe-no-core")]
mod stub_engine {
    use asap_core::{
        Accepted, BufferTooSmall, Config, Event, Finished, FrameError, Instant, NodeId, Reducer, RoundError, Stats, Transmit,
    };
    use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};

    static mut FLAGS: u32 = 0;
    // SAFETY: every field of Stats is an integer counter: zeroed is its default.
    static mut STATS: Stats = unsafe { core::mem::zeroed() };

    fn flag(bit: u32) -> bool {
        // SAFETY: a plain read of a static nobody else writes.
        unsafe { read_volatile(addr_of!(FLAGS)) & (1 << bit) != 0 }
    }

    /// A `Reducer` that does nothing but read and write volatile memory.
    pub struct StubEngine {
        config: Config,
    }

    impl StubEngine {
        pub fn new(config: Config) -> Self {
            StubEngine { config }
        }
        pub fn round(&self) -> u32 {
            // SAFETY: as `flag`.
            unsafe { read_volatile(addr_of!(FLAGS)) >> 8 }
        }
        pub fn stats(&self) -> &Stats {
            // SAFETY: no one writes it while this reference lives (the firmware is
            // single-threaded and the variant never runs).
            unsafe { &*addr_of!(STATS) }
        }
    }

    impl Reducer for StubEngine {
        fn config(&self) -> &Config {
            &self.config
        }
        fn handle_frame(&mut self, now: Instant, bytes: &[u8]) -> Result<Accepted, FrameError> {
            let mut sum = now.total_micros() as u32;
            for &b in bytes {
                sum = sum.wrapping_add(u32::from(b));
            }
            // SAFETY: as `flag`.
            unsafe { write_volatile(addr_of_mut!(FLAGS), sum) };
            if flag(0) {
                Ok(Accepted {
                    from: NodeId(sum as u16),
                    fresh: flag(7),
                })
            } else {
                Err(FrameError::WrongCluster(sum))
            }
        }
        fn handle_frame_mut(&mut self, now: Instant, bytes: &mut [u8]) -> Result<Accepted, FrameError> {
            self.handle_frame(now, bytes)
        }
        fn handle_timeout(&mut self, now: Instant) {
            // SAFETY: as `flag`.
            unsafe { write_volatile(addr_of_mut!(FLAGS), now.total_micros() as u32) };
        }
        fn poll_timeout(&self) -> Option<Instant> {
            flag(1).then(|| Instant::from_micros(u64::from(self.round())))
        }
        fn poll_transmit(&mut self, _: Instant, buf: &mut [u8]) -> Result<Option<Transmit>, BufferTooSmall> {
            if !flag(2) {
                return Ok(None);
            }
            let len = (self.round() as usize).min(buf.len());
            for (i, b) in buf[..len].iter_mut().enumerate() {
                *b = i as u8 ^ self.round() as u8;
            }
            Ok(Some(Transmit {
                to: NodeId(self.round() as u16),
                len,
            }))
        }
        fn can_start_round(&self) -> Result<(), RoundError> {
            if flag(3) {
                Ok(())
            } else {
                Err(RoundError::NotReady)
            }
        }
        fn is_started(&self) -> bool {
            flag(4)
        }
        fn is_ready(&self) -> bool {
            flag(5)
        }
        fn start_round(&mut self, _: Instant, params: &[f32]) -> Result<(), RoundError> {
            // SAFETY: as `flag`.
            unsafe {
                write_volatile(
                    addr_of_mut!(FLAGS),
                    params[self.round() as usize % params.len()].to_bits(),
                )
            };
            Ok(())
        }
        fn finish_round(&mut self, _: Instant, params: &mut [f32]) -> Result<Finished, RoundError> {
            let n = params.len();
            params[self.round() as usize % n] = f32::from_bits(self.round());
            Ok(Finished {
                round: self.round(),
                updates: 1,
            })
        }
        fn is_drained(&self) -> bool {
            flag(6)
        }
        fn round(&self) -> u32 {
            StubEngine::round(self)
        }
        fn poll_event(&mut self) -> Option<Event> {
            None
        }
        fn stats(&self) -> &Stats {
            StubEngine::stats(self)
        }
        fn leave(&mut self, _: Instant) {}
    }
}

#[cfg(feature = "probe-no-nic")]
pub use stub_device::StubDevice;

#[cfg(feature = "probe-no-nic")]
mod stub_device {
    use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};
    use smoltcp::phy::{self, DeviceCapabilities, Medium};
    use smoltcp::time::Instant;

    const MTU: usize = 1514;
    static mut WIRE: [u8; 4] = [0; 4];

    fn wire(i: usize) -> u8 {
        // SAFETY: a plain read of a static nobody else writes.
        unsafe { read_volatile(addr_of!(WIRE[i % 4])) }
    }

    /// A `phy::Device` over volatile memory, in place of the LAN9118.
    pub struct StubDevice {
        rx: [u8; MTU],
        tx: [u8; MTU],
    }

    impl StubDevice {
        pub const fn new() -> Self {
            StubDevice {
                rx: [0; MTU],
                tx: [0; MTU],
            }
        }
    }

    pub struct RxToken<'a>(&'a mut [u8; MTU], usize);
    pub struct TxToken<'a>(&'a mut [u8; MTU]);

    impl phy::RxToken for RxToken<'_> {
        fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
            for (i, b) in self.0[..self.1].iter_mut().enumerate() {
                *b = wire(i);
            }
            f(&self.0[..self.1])
        }
    }

    impl phy::TxToken for TxToken<'_> {
        fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
            let len = len.min(MTU);
            let r = f(&mut self.0[..len]);
            for &b in &self.0[..len] {
                // SAFETY: as `wire`.
                unsafe { write_volatile(addr_of_mut!(WIRE[0]), b) };
            }
            r
        }
    }

    impl phy::Device for StubDevice {
        type RxToken<'a> = RxToken<'a>;
        type TxToken<'a> = TxToken<'a>;

        fn receive(&mut self, _: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
            let len = usize::from(wire(0)) * 6;
            (len > 0).then_some((RxToken(&mut self.rx, len), TxToken(&mut self.tx)))
        }

        fn transmit(&mut self, _: Instant) -> Option<TxToken<'_>> {
            Some(TxToken(&mut self.tx))
        }

        fn capabilities(&self) -> DeviceCapabilities {
            let mut caps = DeviceCapabilities::default();
            caps.medium = Medium::Ethernet;
            caps.max_transmission_unit = MTU;
            caps
        }
    }
}

#[cfg(feature = "probe-no-smoltcp")]
pub use raw::run_raw;

#[cfg(feature = "probe-no-smoltcp")]
mod raw {
    use core::fmt::Write;

    use asap_core::Reducer;
    use smoltcp::phy::{Device, RxToken, TxToken};
    use smoltcp::time::Instant;
    use transport_smoltcp::DriverStats;

    use asap_board::fed::{self, Training, LINGER};

    /// `member::run` without smoltcp: the node's frames are the Ethernet frames.
    pub fn run_raw<D: Device>(
        device: &mut D,
        _mac: [u8; 6],
        clock: fn() -> Instant,
        incarnation: u32,
        out: &mut dyn Write,
    ) -> bool {
        let Some(mut node) = fed::node(incarnation, clock(), out) else {
            return false;
        };
        let tx = fed::tx();
        let mut socket = DriverStats::default();
        let params = fed::params();
        let mut training = Training::new(params, clock);
        let mut linger_until = None;
        let core = |t: Instant| asap_core::Instant::from_micros(t.total_micros() as u64);
        loop {
            let t = clock();
            let now = core(t);
            if let Some((rx, _)) = device.receive(t) {
                socket.received += 1;
                let mut frame = [0u8; 1514];
                let len = rx.consume(|bytes| {
                    let len = bytes.len().min(frame.len());
                    frame[..len].copy_from_slice(&bytes[..len]);
                    len
                });
                if node.handle_frame_mut(now, &mut frame[..len]).is_err() {
                    socket.refused += 1;
                }
            }
            while let Ok(Some(frame)) = node.poll_transmit(now, tx) {
                if let Some(token) = device.transmit(t) {
                    token.consume(frame.len, |bytes| bytes.copy_from_slice(&tx[..frame.len]));
                    socket.sent += 1;
                }
            }
            if node.poll_timeout().is_some_and(|at| at <= now) {
                node.handle_timeout(now);
            }
            if !training.done() {
                let Ok(advance) = node.advance_round(now, params, true) else {
                    break;
                };
                if advance.finished.is_some() {
                    let (round, skipped) = (node.round(), node.stats().rounds_skipped);
                    training.finished_round(params, round, skipped, out);
                    if training.done() {
                        linger_until = Some(clock() + LINGER);
                    }
                }
            }
            if linger_until.is_some_and(|end| t >= end) {
                break;
            }
        }
        let finished = clock() - LINGER;
        let stats = *node.stats();
        training.report(params, incarnation, &stats, socket, finished, out)
    }
}

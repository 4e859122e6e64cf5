//! A polled smoltcp `phy::Device` over virtio-drivers' raw virtio-net device on QEMU's
//! virt machine (virtio-mmio), with the MMU off: physical addresses are virtual ones, and
//! DMA memory comes from a static arena that is never freed.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use virtio_drivers::device::net::VirtIONetRaw;
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::transport::{DeviceType, Transport};
use virtio_drivers::{BufferDirection, Hal, PhysAddr};

/// The virt machine's 32 virtio-mmio slots.
const MMIO_BASE: usize = 0x0a00_0000;
const MMIO_SLOT: usize = 0x200;
const MMIO_SLOTS: usize = 32;
/// Descriptors per queue (and receive buffers posted).
const QUEUE: usize = 16;
/// A receive buffer: the virtio-net header and a full Ethernet frame.
const BUF: usize = 1_536;
/// Largest Ethernet frame handled (without FCS).
pub const MTU: usize = 1_514;
const PAGE: usize = 4_096;
const ARENA_PAGES: usize = 16;

#[repr(C, align(4096))]
struct Arena([u8; ARENA_PAGES * PAGE]);

static mut ARENA: Arena = Arena([0; ARENA_PAGES * PAGE]);
static ARENA_USED: AtomicUsize = AtomicUsize::new(0);

/// Identity-mapped DMA from a static arena.
pub struct DmaHal;

// SAFETY: with the MMU off every address is physical; the arena's pages are handed out
// once each, zeroed, page-aligned, and never reused.
unsafe impl Hal for DmaHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let first = ARENA_USED.fetch_add(pages, Ordering::Relaxed);
        assert!(first + pages <= ARENA_PAGES, "DMA arena exhausted");
        // SAFETY: pages [first, first + pages) of the arena belong to this caller alone.
        let ptr = unsafe { core::ptr::addr_of_mut!(ARENA.0).cast::<u8>().add(first * PAGE) };
        (ptr as PhysAddr, NonNull::new(ptr).expect("arena is not null"))
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, _vaddr: NonNull<u8>, _pages: usize) -> i32 {
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as usize as *mut u8).expect("MMIO address is not null")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.as_ptr().cast::<u8>() as usize as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

/// Receive buffers the device writes into (static: their addresses are DMA addresses).
pub type RxBuffers = [[u8; BUF]; QUEUE];

/// The network device, its posted receive buffers, and one frame buffer each way.
pub struct VirtioNet {
    raw: VirtIONetRaw<DmaHal, MmioTransport<'static>, QUEUE>,
    buffers: &'static mut RxBuffers,
    tokens: [Option<u16>; QUEUE],
    rx: [u8; MTU],
    tx: [u8; MTU],
    /// Frames that could not be received or sent.
    pub errors: u32,
}

impl VirtioNet {
    /// Finds the first virtio-net device among the virt machine's MMIO slots, brings it
    /// up and posts every receive buffer. `None` when there is none (no `-device
    /// virtio-net-device`).
    pub fn find(buffers: &'static mut RxBuffers) -> Option<Self> {
        for slot in 0..MMIO_SLOTS {
            let header = NonNull::new((MMIO_BASE + slot * MMIO_SLOT) as *mut VirtIOHeader)?;
            // SAFETY: each slot is a virtio-mmio register window of MMIO_SLOT bytes on this
            // machine, used by nothing else.
            let Ok(transport) = (unsafe { MmioTransport::new(header, MMIO_SLOT) }) else {
                continue;
            };
            if transport.device_type() != DeviceType::Network {
                continue;
            }
            let raw = VirtIONetRaw::new(transport).ok()?;
            let mut net = VirtioNet {
                raw,
                buffers,
                tokens: [None; QUEUE],
                rx: [0; MTU],
                tx: [0; MTU],
                errors: 0,
            };
            for i in 0..QUEUE {
                net.post(i);
            }
            return Some(net);
        }
        None
    }

    /// The device's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.raw.mac_address()
    }

    /// Hands receive buffer `i` to the device.
    fn post(&mut self, i: usize) {
        // SAFETY: buffer i is static and stays untouched until the device returns it
        // (`receive_complete` with the token noted here).
        self.tokens[i] = unsafe { self.raw.receive_begin(&mut self.buffers[i]) }.ok();
        if self.tokens[i].is_none() {
            self.errors += 1;
        }
    }

    /// Copies the next received frame into `rx`; its length.
    fn receive_frame(&mut self) -> Option<usize> {
        let token = self.raw.poll_receive()?;
        let Some(i) = self.tokens.iter().position(|t| *t == Some(token)) else {
            self.errors += 1;
            return None;
        };
        self.tokens[i] = None;
        // SAFETY: the token is buffer i's, which the device has now returned.
        let got = unsafe { self.raw.receive_complete(token, &mut self.buffers[i]) };
        let len = match got {
            Ok((header, len)) if len <= MTU => {
                self.rx[..len].copy_from_slice(&self.buffers[i][header..header + len]);
                Some(len)
            }
            _ => {
                self.errors += 1;
                None
            }
        };
        self.post(i);
        len
    }
}

/// One received frame.
pub struct RxToken<'a>(&'a [u8]);

/// Permission to send one frame.
pub struct TxToken<'a> {
    raw: &'a mut VirtIONetRaw<DmaHal, MmioTransport<'static>, QUEUE>,
    frame: &'a mut [u8; MTU],
    errors: &'a mut u32,
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let len = len.min(MTU);
        let r = f(&mut self.frame[..len]);
        // Adds the virtio-net header, notifies the device and waits until it took the frame.
        if self.raw.send(&self.frame[..len]).is_err() {
            *self.errors += 1;
        }
        r
    }
}

impl phy::Device for VirtioNet {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        let len = self.receive_frame()?;
        let VirtioNet {
            raw, rx, tx, errors, ..
        } = self;
        Some((RxToken(&rx[..len]), TxToken { raw, frame: tx, errors }))
    }

    fn transmit(&mut self, _: Instant) -> Option<TxToken<'_>> {
        Some(TxToken {
            raw: &mut self.raw,
            frame: &mut self.tx,
            errors: &mut self.errors,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MTU;
        caps
    }
}

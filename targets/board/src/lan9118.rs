//! A polled smoltcp `phy::Device` for the SMSC LAN9118 Ethernet controller as QEMU's
//! `mps2-an386` emulates it (memory-mapped at 0x4020_0000, 32-bit accesses). Register
//! offsets and bits follow the LAN9118 datasheet; the QEMU model (hw/net/lan9118.c)
//! needs no PHY set-up, ignores TX end alignment (keep it 0), and must not be asked to
//! fast-forward a frame (RX_DP_CTRL): a frame is dropped by reading its words.
//!
//! The small methods smoltcp and the firmware call (`phy::Device`'s, `new`, `mac`) are
//! `#[inline]`: small wrappers across a crate boundary. Without it the firmwares grew
//! when this file moved here from qemu-lan9118 (qemu-lan9118 by 56 B); with it they
//! shrank (by ~150 B). The register loops stay out of line.

use core::ptr::{read_volatile, write_volatile};

use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

const BASE: usize = 0x4020_0000;
const RX_DATA_FIFO: usize = 0x00;
const TX_DATA_FIFO: usize = 0x20;
const RX_STATUS_FIFO: usize = 0x40;
const TX_STATUS_FIFO: usize = 0x48;
const ID_REV: usize = 0x50;
const INT_STS: usize = 0x58;
const INT_EN: usize = 0x5C;
const BYTE_TEST: usize = 0x64;
const RX_CFG: usize = 0x6C;
const TX_CFG: usize = 0x70;
const HW_CFG: usize = 0x74;
const RX_FIFO_INF: usize = 0x7C;
const TX_FIFO_INF: usize = 0x80;
const PMT_CTRL: usize = 0x84;
const MAC_CSR_CMD: usize = 0xA4;
const MAC_CSR_DATA: usize = 0xA8;

const MAC_CR: u32 = 1;
const ADDRH: u32 = 2;
const ADDRL: u32 = 3;

/// Largest Ethernet frame handled (without FCS).
pub const MTU: usize = 1514;

fn read(offset: usize) -> u32 {
    // SAFETY: BASE + offset is a LAN9118 register on this machine; 32-bit aligned.
    unsafe { read_volatile((BASE + offset) as *const u32) }
}

fn write(offset: usize, value: u32) {
    // SAFETY: as in `read`.
    unsafe { write_volatile((BASE + offset) as *mut u32, value) }
}

fn mac_csr_write(index: u32, value: u32) {
    write(MAC_CSR_DATA, value);
    write(MAC_CSR_CMD, 0x8000_0000 | index);
    while read(MAC_CSR_CMD) & 0x8000_0000 != 0 {}
}

/// Why the controller could not be brought up.
#[derive(Debug)]
pub enum InitError {
    /// BYTE_TEST or ID_REV do not read as a LAN9118 (wrong machine or bus).
    NotFound(u32, u32),
}

/// The controller, and one frame buffer each way (kept here, in static memory, rather
/// than on a 64 KiB board's small stack).
pub struct Lan9118 {
    mac: [u8; 6],
    /// Frames dropped (too large, or an error in the receive status).
    pub dropped: u32,
    rx: [u8; MTU],
    tx: [u8; MTU],
}

impl Lan9118 {
    /// A controller not yet brought up (see [`init`](Self::init)).
    #[inline]
    pub const fn new(mac: [u8; 6]) -> Self {
        Lan9118 {
            mac,
            dropped: 0,
            rx: [0; MTU],
            tx: [0; MTU],
        }
    }

    /// Resets the controller, sets the MAC address, enables transmit and receive.
    pub fn init(&mut self) -> Result<(), InitError> {
        let mac = self.mac;
        let (test, id) = (read(BYTE_TEST), read(ID_REV));
        if test != 0x8765_4321 || id >> 16 != 0x0118 {
            return Err(InitError::NotFound(test, id));
        }
        write(HW_CFG, 1); // soft reset
        while read(HW_CFG) & 1 != 0 {}
        while read(PMT_CTRL) & 1 == 0 {}
        write(INT_EN, 0);
        write(INT_STS, 0xFFFF_FFFF);
        write(RX_CFG, 0);
        // TX on; let the TX status FIFO overrun (nobody reads it).
        write(TX_CFG, 0x2 | 0x4);
        mac_csr_write(ADDRL, u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]));
        mac_csr_write(ADDRH, u32::from(mac[4]) | u32::from(mac[5]) << 8);
        // Full duplex, transmit and receive enabled, promiscuous off.
        mac_csr_write(MAC_CR, 1 << 20 | 1 << 3 | 1 << 2);
        Ok(())
    }

    /// The MAC address.
    #[inline]
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Pops the next received frame into `buf`; its length (FCS removed).
    fn receive_into(buf: &mut [u8; MTU], dropped: &mut u32) -> Option<usize> {
        while (read(RX_FIFO_INF) >> 16) & 0xFF != 0 {
            let status = read(RX_STATUS_FIFO);
            let len = ((status >> 16) & 0x3FFF) as usize;
            let words = len.div_ceil(4);
            let good = status & (1 << 15) == 0 && (4..=MTU + 4).contains(&len);
            for w in 0..words {
                let word = read(RX_DATA_FIFO).to_le_bytes();
                if good {
                    for (i, b) in word.iter().enumerate() {
                        if let Some(slot) = buf.get_mut(w * 4 + i) {
                            *slot = *b;
                        }
                    }
                }
            }
            if good {
                return Some(len - 4);
            }
            *dropped += 1;
        }
        None
    }

    fn transmit(frame: &[u8]) {
        let n = frame.len() as u32;
        // Wait for room: the data rounded to words and the two command words.
        while (read(TX_FIFO_INF) & 0xFFFF) < (n.div_ceil(4) * 4 + 8) {}
        write(TX_DATA_FIFO, 1 << 13 | 1 << 12 | n); // command A: first and last segment
        write(TX_DATA_FIFO, n << 16 | n); // command B: tag, length
        for chunk in frame.chunks(4) {
            let mut word = [0u8; 4];
            word[..chunk.len()].copy_from_slice(chunk);
            write(TX_DATA_FIFO, u32::from_le_bytes(word));
        }
        // Drop any status the controller recorded.
        while (read(TX_FIFO_INF) >> 16) & 0xFF != 0 {
            let _ = read(TX_STATUS_FIFO);
        }
    }
}

/// One received frame, in the controller's receive buffer.
pub struct RxToken<'a>(&'a [u8]);

/// Permission to send one frame, built in the controller's transmit buffer.
pub struct TxToken<'a>(&'a mut [u8; MTU]);

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let len = len.min(MTU);
        let r = f(&mut self.0[..len]);
        Lan9118::transmit(&self.0[..len]);
        r
    }
}

impl phy::Device for Lan9118 {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    #[inline]
    fn receive(&mut self, _: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        let len = Lan9118::receive_into(&mut self.rx, &mut self.dropped)?;
        Some((RxToken(&self.rx[..len]), TxToken(&mut self.tx)))
    }

    #[inline]
    fn transmit(&mut self, _: Instant) -> Option<TxToken<'_>> {
        Some(TxToken(&mut self.tx))
    }

    #[inline]
    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MTU;
        caps
    }
}

//! What the board firmwares under `targets/` share, so that each firmware is only its
//! board's bring-up (clock, NIC, text output, exit) around one of these parts:
//!
//! - [`lan9118`] (feature `lan9118`): the LAN9118 Ethernet controller of QEMU's
//!   `mps2-an386`: qemu-lan9118 and qemu-fed-m4.
//!
//! Features keep each firmware's dependencies its own.
#![no_std]
#![warn(missing_docs)]

#[cfg(feature = "lan9118")]
pub mod lan9118;

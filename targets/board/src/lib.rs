//! What the board firmwares under `targets/` share, so that each firmware is only its
//! board's bring-up (clock, NIC, text output, exit) around one of these parts:
//!
//! - [`fed`] and [`cluster`] (feature `fed`): the federated member whatever its network
//!   loop — the node's static memory and set-up, the training plan around the rounds,
//!   the incarnation and the report — for the cluster fixed at build time by the
//!   `ASAP_FED_*` variables (build.rs). Used by qemu-fed-m4, qemu-virt-a53 and
//!   nucleo-f767zi (its own async loop over embassy-net).
//! - [`member`] (feature `member`): that member's polled smoltcp loop over any
//!   `phy::Device`: qemu-fed-m4 (LAN9118) and qemu-virt-a53 (virtio-net).
//! - [`lan9118`] (feature `lan9118`): the LAN9118 Ethernet controller of QEMU's
//!   `mps2-an386`: qemu-lan9118 and qemu-fed-m4.
//!
//! Features keep each firmware's dependencies its own: the LAN9118 driver needs only
//! smoltcp, the member needs asap-core, asap-fed and transport-smoltcp. The firmware
//! chooses asap-core's features (e.g. `small-flash`) in its own manifest; Cargo unifies
//! them with this crate's.
#![no_std]
#![warn(missing_docs)]

#[cfg(feature = "fed")]
pub mod fed;
#[cfg(feature = "lan9118")]
pub mod lan9118;
#[cfg(feature = "member")]
pub mod member;

/// The cluster this board joins, fixed at build time (build.rs, from the `ASAP_FED_*`
/// variables): its rank, every member's address, cluster id, seed, model size, plan,
/// and the centralised reference's held-out accuracy.
#[cfg(feature = "fed")]
pub mod cluster {
    include!(concat!(env!("OUT_DIR"), "/cluster.rs"));
}

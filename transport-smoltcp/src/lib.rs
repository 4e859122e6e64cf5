//! Drives `asap-core` over smoltcp on edge devices, speaking the exact frames the
//! servers' transport (`transport-mio`) speaks, so boards and servers share a cluster.
//!
//! `#![no_std]`, no allocation: the application owns the smoltcp `Interface`, `SocketSet`
//! and the UDP socket's buffers, the engine's buffers, the peer table and the transmit
//! buffer, and lends them to a [`Driver`]. Time is an argument, as in smoltcp and the
//! core: the board's main loop calls [`Driver::poll`] and sleeps until the deadline it
//! returns (or until the network interrupt). smoltcp and the engine share that clock,
//! so count it from the engine's creation (`Node::new(.., now)`): a node created at
//! `Instant::ZERO` and then polled with wall-clock time since 1970 would find every
//! peer silent for decades and declare it down.
//!
//! ```text
//! loop {
//!     let next = driver.poll(now(), &mut iface, &mut device, &mut sockets);
//!     if let Step::Finished = driver.step(now(), &mut params)? {
//!         local_sgd_step(&mut params);
//!     }
//!     while let Some(event) = driver.poll_event() {
//!         report(event); // a peer down or back, ...: drain every pass
//!     }
//!     wait_for_interrupt_or(next);
//! }
//! ```
//!
//! A peer's endpoint in the table moves only on a frame that authenticated under the
//! cluster key and advanced the peer's replay window (WireGuard's roaming rule); without
//! a key, configured endpoints never move. See the README.
//!
//! RAM for a model of `m` f32 values with `c` chunks and `p` peers (ASAP node, one
//! socket): engine buffers `4·(2m + c) + 4·p·⌈c/32⌉` bytes (see `asap_core::Layout::bytes`),
//! one transmit buffer of `max_frame` bytes, the socket's receive and transmit payload
//! buffers (a few frames each), and the peer table (`p` endpoints). The application's
//! own replica (`4m` bytes) comes on top. See the crate README for figures.
#![no_std]
#![forbid(unsafe_code)]
#![warn(clippy::std_instead_of_core, clippy::alloc_instead_of_core)]

mod driver;
#[cfg(feature = "embassy")]
mod embassy;

pub use driver::{Driver, DriverError, DriverStats, Step};
#[cfg(feature = "embassy")]
pub use embassy::AsyncDriver;

//! Drives `asap-core` over smoltcp on edge devices. Filled by the transport-smoltcp issue (#6).
#![no_std]
#![forbid(unsafe_code)]
#![warn(clippy::std_instead_of_core, clippy::alloc_instead_of_core)]

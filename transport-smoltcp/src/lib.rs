//! Drives `asap-core` over smoltcp on edge devices. Filled by the transport-smoltcp issue (#6).
#![no_std]

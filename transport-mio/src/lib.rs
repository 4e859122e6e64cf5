//! Drives `asap-core` over mio sockets on servers, and the `asap` command's building
//! blocks: the UDP runtime ([`runtime`]) and the topology report behind
//! `asap topology` ([`report`]).

pub mod report;
pub mod runtime;

//! Drives `asap-core` over mio sockets on servers, and the `asap` command's building
//! blocks: the UDP runtime ([`runtime`]), one worker process ([`worker`]) and its
//! training workload ([`train`]), and the topology report behind `asap topology`
//! ([`report`]).

pub mod demo;
pub mod plot;
pub mod report;
pub mod runtime;
pub mod train;
pub mod worker;

//! Drives `asap-core` over mio sockets on servers, and the `asap` command's building
//! blocks: the event loop ([`runtime`]) over UDP ([`udp`]) or TCP ([`tcp`]), one worker process ([`worker`]) and its
//! training workload ([`train`]), and the topology report behind `asap topology`
//! ([`report`]).

pub mod config_file;
pub mod demo;
pub mod diag;
pub mod plot;
pub mod report;
pub mod runtime;
pub mod tcp;
pub mod train;
pub mod udp;
pub mod worker;

//! Drives `asap-core` over mio sockets on servers: one event loop ([`runtime`]) that moves
//! frames between an engine (an ASAP `Node` or the ring `AllReduce`) and its peers over
//! UDP ([`udp`], batched) or TCP ([`tcp`]), with diagnostics through the `log` facade that
//! an attacker cannot turn into a flood ([`diag`]). [`member`] puts an engine on a thread
//! of its own for applications with their own training loop (the Python package), and
//! [`launch`] reads rank, world and peers the way launchers (torchrun, Slurm, Open MPI)
//! give them.
//!
//! A library only: what runs on top of it (the `asap` command, its workers, training and
//! reports) lives in `asap-cli`, so an application that embeds the loop does not pull in
//! a command-line parser, a plotting library or progress bars.

pub mod diag;
pub mod launch;
pub mod member;
pub mod pacer;
pub mod runtime;
pub mod tcp;
pub mod udp;

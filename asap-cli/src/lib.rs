//! The `asap` command's building blocks, over `transport-mio`'s event loop: one worker
//! process ([`worker`]) and its training workload ([`train`]), the demo that runs
//! several of them and compares ASAP with a ring all-reduce ([`demo`], [`plot`]), the
//! topology report behind `asap topology` ([`report`]) and the config file that sets
//! any flag ([`config_file`]).
//!
//! A library beside the binary so the integration tests and benches can reuse its types
//! (a worker's JSON summary, the demo's run records).

pub mod config_file;
pub mod demo;
pub mod plot;
pub mod report;
pub mod train;
pub mod worker;

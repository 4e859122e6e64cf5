//! The `asap` command's building blocks, over `transport-mio`'s event loop: one worker
//! process ([`worker`]) training on `asap-fed`'s workloads, the demo that runs
//! several of them and compares ASAP with a ring all-reduce ([`demo`], [`plot`]; over
//! rate-limited links in network namespaces: [`netns`]), the
//! topology report behind `asap topology` ([`report`]) with its cost model ([`cost`]),
//! and the config file that sets any flag ([`config_file`]).
//!
//! A library beside the binary so its parts are tested on their own and reused: the
//! workspace's cost-model check (`tests/tests/cost.rs`) runs [`cost`] against the
//! simulator.

pub mod config_file;
pub mod cost;
pub mod demo;
pub mod netns;
pub mod plot;
pub mod report;
pub mod worker;

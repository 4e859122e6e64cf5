#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]
#![warn(clippy::std_instead_of_core, clippy::alloc_instead_of_core)]

pub mod allreduce;
pub mod auth;
pub mod compress;
pub mod config;
pub mod cost;
pub mod error;
mod flow;
mod mixing;
pub mod node;
pub mod output;
pub mod reduce;
pub mod reducer;
pub mod seeded;
pub mod time;
pub mod topology;
pub mod wire;

pub use config::{Buffers, Clip, Config, Layout, PeerSpec, UnknownWait, Wait};
pub use error::{ConfigError, FrameError, RoundError, Violation};
pub use node::Node;
pub use output::{Accepted, Event, Finished, PeerStatus, Stats, Transmit};
pub use reducer::{Advance, Reducer};
pub use time::{Duration, Instant};
pub use topology::{Family, Topology, TopologyError, TopologySpec};
pub use wire::{BufferTooSmall, DecodeError, NodeId};

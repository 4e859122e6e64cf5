#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]
#![warn(clippy::std_instead_of_core, clippy::alloc_instead_of_core)]

// The layers, bottom up (docs/architecture.md): nothing below names what is above it.
mod allreduce;
mod batch;
mod config;
mod error;
mod flow;
mod mixing;
mod node;
mod output;
mod reducer;
mod time;
pub mod topology;

/// Declares a module that is public only with the `internals` feature: the wire format,
/// kernels and codecs that tests, fuzz targets and benches reach into, with no promise of
/// stability. Without the feature it is private, and what a runtime needs of it is
/// re-exported below.
macro_rules! internal {
    ($($(#[$attr:meta])* $name:ident;)*) => {$(
        $(#[$attr])*
        #[cfg(feature = "internals")]
        pub mod $name;
        $(#[$attr])*
        #[cfg(not(feature = "internals"))]
        #[allow(unreachable_pub, dead_code, unused_imports)]
        mod $name;
    )*};
}

internal! {
    /// Keys, tags, the replay window and the cipher.
    auth;
    /// Payload codecs of the compressed mode.
    compress;
    /// Fold and mix kernels.
    reduce;
    /// Frames: header, payload encodings, integrity trailer.
    wire;
}

pub use allreduce::{AllReduce, AllReduceBuffers};
pub use auth::{CipherSuite, Key, KeyError, KEY_LEN};
#[cfg(feature = "identity")]
pub use auth::{LinkKeyError, NodeSecret, PublicKey};
pub use compress::Compression;
pub use config::{Buffers, Clip, Config, Layout, PeerSpec, UnknownWait, Wait};
pub use error::{ConfigError, FrameError, RoundError, Violation};
pub use node::{Node, PublicCopies};
pub use output::{Accepted, Event, Finished, PeerStatus, Stats, Transmit, EVENT_CAPACITY};
pub use reducer::{Advance, Reducer};
pub use time::{Duration, Instant};
pub use topology::{Family, Topology, TopologyError, TopologySpec};
pub use wire::{BufferTooSmall, DecodeError, NodeId, MAX_FRAME_LEN, MIN_FRAME_LEN};

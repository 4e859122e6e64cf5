//! Fuzz target bodies for `asap-core`.
//!
//! Every target is a plain `run(&[u8])` here; the binaries under `fuzz_targets/` are
//! one-liners around it. Structured targets decode their bytes with `arbitrary` (the
//! same decoding `fuzz_target!(|x: T| ..)` does), so `cargo test` in this crate can
//! replay the committed corpus on stable, without libFuzzer.
//!
//! | target        | what it drives                                                       |
//! |---------------|----------------------------------------------------------------------|
//! | `decode`      | `wire::peek` / `wire::decode` on raw bytes; re-encoding round-trips  |
//! | `keyed`       | keyed and encrypted decoding, re-sealing, a node refusing forgeries and replays |
//! | `node_frames` | one node fed raw and well-formed frames, timers and app commands     |
//! | `topology`    | `Topology::new` and its neighbour and weight queries                 |
//! | `reduce`      | the fold / init / mix kernels on arbitrary bit patterns              |
//! | `pair`        | two nodes over a lossy, duplicating, reordering channel, then a clean one |
//! | `codec`       | the compressed payload encodings: check / fold / decode, re-encoding  |

pub mod codec;
pub mod common;
pub mod decode;
pub mod keyed;
pub mod node_frames;
pub mod pair;
pub mod reduce;
pub mod topology;

/// `true` when built with the `avoid-known-bugs` feature: the targets then steer around
/// the asap-core bugs listed in `fuzz/README.md`.
pub const AVOID_KNOWN_BUGS: bool = cfg!(feature = "avoid-known-bugs");

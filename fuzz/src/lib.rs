//! The checks behind the cargo-fuzz targets in `fuzz_targets/`, one module per target.
//!
//! Each `check(data)` panics when the engine disagrees with an independent reference (rmpv for
//! MessagePack, a naive matcher for topics, a `BTreeMap` for the store, a `VecDeque` for a
//! mailbox). The fuzz targets call them with libFuzzer's inputs; `tests/regressions.rs` replays
//! the seed corpora and every input a fuzzer ever found (`regressions/<target>/`) through the
//! same checks, so `cargo test` keeps them fixed.

pub mod mailbox_model;
pub mod msgpack_value;
pub mod store_model;
pub mod topics;

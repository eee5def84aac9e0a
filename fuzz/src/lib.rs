//! FleetD's fuzzing harness. It runs on stable Rust so CI can run it on every change for a
//! bounded time: byte-level mutation of seeds (built in, plus `fuzz/corpus/<target>/`), every
//! input run under `catch_unwind` with its allocations measured. A crash, a panic, an input
//! that allocates beyond the bound or takes too long is written to `fuzz/crashes/` and fails
//! the run; fixed ones move to `fuzz/regressions/<target>/`, which `cargo test` replays.
//!
//! Targets ([`targets::all`]): the CBOR decoding of every wire type, the signed envelope, the
//! manifest parser (YAML and JSON), the deployment request and strategy parser, CI requests,
//! the archive extractor, the image reference parser, the topic parser and the MQTT URL
//! parser.

pub mod alloc;
pub mod mutate;
pub mod runner;
pub mod targets;

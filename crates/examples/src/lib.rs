//! The example and adversarial capability components, built from `capabilities/` for
//! wasm32-wasip2 by this crate's build script and embedded as bytes.
//!
//! - [`ORDERS`]: exercises every port (the `runplane up` demo).
//! - [`HELLO`]: minimal `wasi:http`, for benchmarks.
//! - [`SPIN_LOOP`], [`MEMORY_BOMB`], [`DEEP_RECURSION`], [`HUGE_OUTPUT`]: must fail alone.
//! - [`LEAK_SECRET`]: tries to log a secret; the host must redact it.
//! - [`IMPORTS_SOCKETS`], [`IMPORTS_FILESYSTEM`], [`IMPORTS_UNKNOWN`]: must be refused.

include!(concat!(env!("OUT_DIR"), "/components.rs"));

//! The example and adversarial capability components, built from `capabilities/` for
//! wasm32-wasip2 by this crate's build script and embedded as bytes.
//!
//! - [`ORDERS`]: exercises every port (the `runplane up` demo).
//! - [`HELLO`]: minimal `wasi:http`, for benchmarks.
//! - [`FLAKY`], [`TRAPPER`]: faulty next versions of `hello` for the rollout tests: one
//!   answers one request in four with a 500, the other traps on every request.
//! - [`CPU_BURN`]: `?iters=N` rounds of integer mixing, the CPU-heavy side of the noisy-neighbour benchmark.
//! - [`SPIN_LOOP`], [`MEMORY_BOMB`], [`DEEP_RECURSION`], [`HUGE_OUTPUT`]: must fail alone.
//! - [`LEAK_SECRET`]: tries to log a secret; the host must redact it.
//! - [`PORT_FLOOD`]: calls a port in an endless loop; the per-invocation port-call limit must stop it.
//! - [`DISK_FILLER`]: writes 64 KiB records until the tenant's disk quota stops it.
//! - [`NETWORK_HOG`]: GETs `?url=` `?n=` times through `wasi:http`; egress limits must hold.
//! - [`IMPORTS_SOCKETS`], [`IMPORTS_FILESYSTEM`], [`IMPORTS_UNKNOWN`]: must be refused.

include!(concat!(env!("OUT_DIR"), "/components.rs"));

//! The example and adversarial capability components, built from `capabilities/` for
//! wasm32-wasip2 by this crate's build script and embedded as bytes.
//!
//! - [`ORDERS`]: exercises every port (the `runplane up` demo).
//! - [`HELLO`]: minimal `wasi:http`, for benchmarks.
//! - [`FLAKY`], [`TRAPPER`]: faulty next versions of `hello` for the rollout tests: one
//!   answers one request in four with a 500, the other traps on every request.
//! - [`WORKER`]: a task for the jobs tests: echo, a poison failure, a trap, a long spin,
//!   and one that passes on its n-th attempt (counting in the key-value port).
//! - [`CPU_BURN`]: `?iters=N` rounds of integer mixing, the CPU-heavy side of the noisy-neighbour benchmark.
//! - [`SPIN_LOOP`], [`MEMORY_BOMB`], [`DEEP_RECURSION`], [`HUGE_OUTPUT`]: must fail alone.
//! - [`LEAK_SECRET`]: tries to log a secret; the host must redact it.
//! - [`PORT_FLOOD`]: calls a port in an endless loop; the per-invocation port-call limit must stop it.
//! - [`DISK_FILLER`]: writes 64 KiB records until the tenant's disk quota stops it.
//! - [`NETWORK_HOG`]: GETs `?url=` `?n=` times through `wasi:http`; egress limits must hold.
//! - [`IMPORTS_SOCKETS`], [`IMPORTS_FILESYSTEM`], [`IMPORTS_UNKNOWN`]: must be refused.

include!(concat!(env!("OUT_DIR"), "/components.rs"));

/// `component` with a custom section named `runplane-tag` holding `tag` appended: the
/// same code under another digest, a "new version" for rollout tests and benches.
///
/// ```
/// let v2 = runplane_examples::tagged(runplane_examples::HELLO, "v2");
/// assert!(v2.starts_with(runplane_examples::HELLO) && v2.len() > runplane_examples::HELLO.len());
/// ```
pub fn tagged(component: &[u8], tag: &str) -> Vec<u8> {
    fn leb128(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"runplane-tag";
    let mut payload = Vec::new();
    leb128(name.len(), &mut payload);
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    let mut out = component.to_vec();
    // Section id 0: a custom section, ignored by every engine.
    out.push(0);
    leb128(payload.len(), &mut out);
    out.extend(payload);
    out
}

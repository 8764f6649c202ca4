//! The capability's view of time and chance (spec §6.2): both derive from the
//! execution context, so a replay sees exactly what the original run saw.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

/// Each read of a virtual clock advances it by this much, so successive reads differ
/// (as real clocks' do) but deterministically.
const TICK_NANOS: u64 = 1_000;

/// Wall clock starting at the instant the request was accepted.
pub(crate) struct VirtualWallClock {
    start: Duration,
    reads: AtomicU64,
}

impl VirtualWallClock {
    pub(crate) fn new(accepted_at_unix_nanos: u128) -> Self {
        let secs = (accepted_at_unix_nanos / 1_000_000_000) as u64;
        let nanos = (accepted_at_unix_nanos % 1_000_000_000) as u32;
        VirtualWallClock { start: Duration::new(secs, nanos), reads: AtomicU64::new(0) }
    }
}

impl HostWallClock for VirtualWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(TICK_NANOS)
    }
    fn now(&self) -> Duration {
        let n = self.reads.fetch_add(1, Ordering::Relaxed);
        self.start + Duration::from_nanos(n * TICK_NANOS)
    }
}

/// Monotonic clock starting at zero for every invocation.
pub(crate) struct VirtualMonotonicClock {
    reads: AtomicU64,
}

impl VirtualMonotonicClock {
    pub(crate) fn new() -> Self {
        VirtualMonotonicClock { reads: AtomicU64::new(0) }
    }
}

impl HostMonotonicClock for VirtualMonotonicClock {
    fn resolution(&self) -> u64 {
        TICK_NANOS
    }
    fn now(&self) -> u64 {
        self.reads.fetch_add(1, Ordering::Relaxed) * TICK_NANOS
    }
}

/// The three random sources WASI offers, all derived from the execution seed with
/// ChaCha20 (portable: the same seed gives the same stream on every platform).
pub(crate) fn seeded_rngs(seed: u64) -> (ChaCha20Rng, ChaCha20Rng, u128) {
    let secure = ChaCha20Rng::seed_from_u64(seed);
    let insecure = ChaCha20Rng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
    let insecure_seed = (u128::from(seed) << 64) | u128::from(seed.rotate_left(32));
    (secure, insecure, insecure_seed)
}

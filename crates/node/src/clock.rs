//! The node's clock, injectable so tests can fix time.

use std::time::{SystemTime, UNIX_EPOCH};

/// Where the node reads "now" at the boundary. Nothing below the boundary reads time
/// any other way.
pub trait Clock: Send + Sync {
    /// Nanoseconds since the Unix epoch.
    fn now_unix_nanos(&self) -> u128;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix_nanos(&self) -> u128 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
    }
}

//! Leases for once-per-instance work: one holder at a time, with a fencing epoch that
//! only grows. Pure rules; [`crate::ControlStore`] runs them against the store.
//!
//! The store keeps `(holder, epoch, expires_ms)` in its own clock. A node renews while
//! the lease is unexpired; anyone may take an expired lease, which bumps the epoch. The
//! holder acts only until `sent + ttl - margin` in its own monotonic clock, where `sent`
//! is when it sent the request that (re)acquired the lease: the store stamped the
//! expiry after that moment, so the holder stops before anyone else can take over, and
//! two holders never act in the same instant as long as the clocks run at similar
//! rates (the margin absorbs `MAX_DRIFT` of rate difference).

use std::time::{Duration, Instant};

/// The part of a TTL the holder gives up to allow for clock-rate differences.
pub const MAX_DRIFT: f64 = 0.1;

/// A lease this node holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    pub epoch: u64,
    /// The holder acts only before this instant.
    pub act_until: Instant,
}

impl Held {
    /// The lease as (re)acquired by a request sent at `sent` for `ttl`.
    pub fn new(epoch: u64, sent: Instant, ttl: Duration) -> Held {
        Held { epoch, act_until: sent + ttl.mul_f64(1.0 - MAX_DRIFT) }
    }

    /// Whether the holder may still act at `now`.
    pub fn may_act(&self, now: Instant) -> bool {
        now < self.act_until
    }
}

/// How often a holder renews: three times per TTL, so one lost round trip is not a
/// lost lease.
pub fn renew_every(ttl: Duration) -> Duration {
    ttl / 3
}

/// What the store says after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// This node holds the lease at `epoch` (renewed, or newly acquired).
    Holding { epoch: u64, acquired: bool },
    /// Someone else holds it until its expiry.
    HeldBy { holder: String, epoch: u64 },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_stops_acting_before_the_store_would_let_another_take_over() {
        let sent = Instant::now();
        let ttl = Duration::from_secs(10);
        let h = Held::new(3, sent, ttl);
        assert!(h.may_act(sent + Duration::from_secs(8)));
        assert!(!h.may_act(sent + Duration::from_secs(9)), "9 s is past ttl minus the drift margin");
        assert!(!h.may_act(sent + ttl));
    }

    #[test]
    fn renewal_comes_three_times_per_ttl() {
        assert_eq!(renew_every(Duration::from_secs(9)), Duration::from_secs(3));
    }
}

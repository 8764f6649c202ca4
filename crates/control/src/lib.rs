//! Runplane's control store and what makes several nodes one instance: the store of
//! every piece of control-plane state (tenants, keys, capabilities and their bytes,
//! deployments, quotas, contracts, configuration revisions, and the documents of flags,
//! domains, environments, releases, pauses and revocations) in one of three homes
//! ([`Home`]); the change feed nodes follow to keep their in-memory caches current
//! ([`feed`]); leases with fencing epochs for once-per-instance work ([`lease`]); and
//! the membership table ([`ClusterNode`]).
//!
//! Architecture invariant: this crate knows SQL and nothing of HTTP, the host or the
//! node's caches. Its pure parts ([`feed`], [`lease`]) take time as a parameter and
//! reach no I/O; [`ControlStore`] is the only place that talks to a database.

mod error;
pub mod feed;
pub mod lease;
mod store;
mod types;

pub use error::{ControlError, Result};
pub use store::{AttemptEnd, CHANNEL, Claim, ControlStore, Dialect, EndedBy, Hint, Hints, Home, JobMove, LeaseEpoch, Running, SCHEMA, StoredAttempt, StoredJob, translate};
pub use types::{CapabilityVersion, ClusterNode, ConfigVersionRow, Deployment, Mode, StoredRollout, Tenant};

#[cfg(test)]
mod tests {
    /// The pure modules name no I/O, no runtime and no wall clock: time comes in as a
    /// parameter (`Instant`s the caller read).
    #[test]
    fn the_pure_modules_reach_no_io() {
        for (name, source) in [("feed.rs", include_str!("feed.rs")), ("lease.rs", include_str!("lease.rs"))] {
            for word in ["sqlx", "tokio", "std::fs", "std::net", "SystemTime", "Instant::now"] {
                let code: String = source.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
                let code = code.split("#[cfg(test)]").next().unwrap_or("");
                assert!(!code.contains(word), "{name} must stay pure but mentions {word}");
            }
        }
    }
}

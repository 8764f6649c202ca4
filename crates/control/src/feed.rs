//! The change feed, followed: which cached state a node reloads, in revision order, and
//! whether it may still call itself current. Pure: the store reads the rows, the node
//! reloads its caches, and time comes in as a parameter.
//!
//! Every mutation of control state bumps the store's one revision and records a
//! [`Change`] in the same transaction, under a lock on the revision row; so revisions
//! commit in order and a follower that has applied every change up to the head it read
//! holds state at least as new as that head.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// The families of cached state a change can touch; a follower reloads a whole family
/// (control tables are small), so applying a change twice is harmless.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    Tenants,
    Keys,
    Capabilities,
    Deployments,
    Quotas,
    Contracts,
    Config,
    /// Flags, domains, environments, releases, pauses, revoked tokens.
    Documents,
    Settings,
    /// Progressive delivery: rollouts' states.
    Rollouts,
}

impl Family {
    pub const ALL: [Family; 10] = [
        Family::Tenants,
        Family::Keys,
        Family::Capabilities,
        Family::Deployments,
        Family::Quotas,
        Family::Contracts,
        Family::Config,
        Family::Documents,
        Family::Settings,
        Family::Rollouts,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Family::Tenants => "tenants",
            Family::Keys => "keys",
            Family::Capabilities => "capabilities",
            Family::Deployments => "deployments",
            Family::Quotas => "quotas",
            Family::Contracts => "contracts",
            Family::Config => "config",
            Family::Documents => "documents",
            Family::Settings => "settings",
            Family::Rollouts => "rollouts",
        }
    }

    pub fn parse(s: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.as_str() == s)
    }
}

/// One recorded change: its revision and what it touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub revision: u64,
    pub family: String,
    pub id: String,
}

/// Most changes applied family by family; a longer backlog is a full resync.
pub const MAX_BACKLOG: u64 = 1000;

/// What a follower does after reading the head and the changes after its watermark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing changed: the follower is current as of the read.
    Current,
    /// Reload these families; then the follower is current through `through`.
    Apply { reload: BTreeSet<Family>, through: u64 },
    /// Reload everything, then take `head` as the watermark: the changes between are
    /// gone (pruned), too many, not contiguous, of a family this version does not
    /// know, or the store went back in time (restored from a backup).
    Resync { head: u64, why: String },
}

/// A follower's position in the feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Follower {
    watermark: u64,
}

impl Follower {
    /// A follower that has loaded everything as of `head`.
    pub fn at(head: u64) -> Follower {
        Follower { watermark: head }
    }

    pub fn watermark(&self) -> u64 {
        self.watermark
    }

    /// The step for `changes` (every change with `watermark < revision <= head`, in
    /// revision order, at most [`MAX_BACKLOG`] of them, as the store returned them).
    pub fn plan(&self, head: u64, changes: &[Change]) -> Step {
        let w = self.watermark;
        if head < w {
            return Step::Resync { head, why: format!("the store's revision went back from {w} to {head} (restored from a backup?)") };
        }
        if head == w {
            return Step::Current;
        }
        if head - w > MAX_BACKLOG {
            return Step::Resync { head, why: format!("{} changes behind", head - w) };
        }
        let mut reload = BTreeSet::new();
        let mut expected = w + 1;
        for c in changes {
            if c.revision != expected {
                return Step::Resync { head, why: format!("revision {expected} is missing from the feed (pruned)") };
            }
            match Family::parse(&c.family) {
                Some(f) => reload.insert(f),
                None => return Step::Resync { head, why: format!("revision {} touched {:?}, which this version does not know", c.revision, c.family) },
            };
            expected += 1;
        }
        if expected != head + 1 {
            return Step::Resync { head, why: format!("revision {expected} is missing from the feed (pruned)") };
        }
        Step::Apply { reload, through: head }
    }

    /// Records that everything through `revision` is applied.
    pub fn advance(&mut self, revision: u64) {
        self.watermark = self.watermark.max(revision);
    }

    /// Records a full resync as of `head` (which may be lower after a restore).
    pub fn reset(&mut self, head: u64) {
        self.watermark = head;
    }
}

/// Whether a node may act on its cached control state: only while it confirmed it was
/// current (a successful read of the feed) within `max_staleness`.
pub fn staleness(confirmed_at: Option<Instant>, now: Instant, max_staleness: Duration) -> Result<(), Duration> {
    match confirmed_at {
        Some(at) if now.saturating_duration_since(at) <= max_staleness => Ok(()),
        Some(at) => Err(now.saturating_duration_since(at)),
        None => Err(max_staleness),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(revision: u64, family: &str) -> Change {
        Change { revision, family: family.into(), id: "x".into() }
    }

    #[test]
    fn contiguous_changes_reload_their_families_once() {
        let f = Follower::at(4);
        let step = f.plan(7, &[change(5, "tenants"), change(6, "keys"), change(7, "tenants")]);
        assert_eq!(step, Step::Apply { reload: [Family::Tenants, Family::Keys].into(), through: 7 });
    }

    #[test]
    fn nothing_after_the_watermark_is_current() {
        assert_eq!(Follower::at(9).plan(9, &[]), Step::Current);
    }

    #[test]
    fn a_gap_an_unknown_family_a_long_backlog_or_a_restored_store_resync() {
        let f = Follower::at(4);
        assert!(matches!(f.plan(6, &[change(6, "tenants")]), Step::Resync { head: 6, .. }));
        assert!(matches!(f.plan(6, &[change(5, "tenants")]), Step::Resync { head: 6, .. }), "revision 6 missing");
        assert!(matches!(f.plan(5, &[change(5, "workflows")]), Step::Resync { .. }));
        assert!(matches!(f.plan(4 + MAX_BACKLOG + 1, &[]), Step::Resync { .. }));
        assert!(matches!(f.plan(2, &[]), Step::Resync { head: 2, .. }));
    }

    #[test]
    fn advancing_never_moves_back_but_a_reset_may() {
        let mut f = Follower::at(10);
        f.advance(8);
        assert_eq!(f.watermark(), 10);
        f.reset(3);
        assert_eq!(f.watermark(), 3);
    }

    #[test]
    fn a_node_is_stale_once_its_last_confirmation_is_older_than_the_bound() {
        let t0 = Instant::now();
        let max = Duration::from_secs(30);
        assert_eq!(staleness(Some(t0), t0 + Duration::from_secs(30), max), Ok(()));
        assert_eq!(staleness(Some(t0), t0 + Duration::from_secs(31), max), Err(Duration::from_secs(31)));
        assert!(staleness(None, t0, max).is_err(), "never confirmed is stale");
    }

    #[test]
    fn family_names_round_trip() {
        for f in Family::ALL {
            assert_eq!(Family::parse(f.as_str()), Some(f));
        }
    }
}

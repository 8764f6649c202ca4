//! Per-tenant execution quotas (spec §5.2): what a tenant may use, the defaults of each
//! tier, and the windowed budgets the rate-like fields are charged against.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Error;

/// What one tenant may use. `max_cpu_seconds` and `max_network_kb` are budgets per
/// `window_seconds`; the others are levels that hold at every moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecutionQuota {
    /// Guest CPU time per window, measured deterministically in fuel
    /// ([`FUEL_PER_CPU_SECOND`] fuel = one second).
    pub max_cpu_seconds: u64,
    /// Linear memory one invocation may grow to.
    pub max_memory_mb: u64,
    /// Bytes the tenant's records, key-value state, events and blobs may hold.
    pub max_disk_mb: u64,
    /// Outbound HTTP bytes (requests and responses) per window.
    pub max_network_kb: u64,
    /// Invocations of the tenant running at once; more wait in its queue.
    pub max_concurrent_tasks: u32,
    /// The window of the rate-like fields, in seconds.
    pub window_seconds: u64,
}

/// Fuel that counts as one second of CPU: a nominal rate, of the order of the wasm
/// instructions one modern core executes per second (not measured per machine), so CPU
/// quotas are deterministic and the same on every node.
pub const FUEL_PER_CPU_SECOND: u64 = 1_000_000_000;

/// A tenant's tier (spec §7.3, S2-VII): sets default quotas and the scheduling weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Free,
    Pro,
    Enterprise,
    Custom,
}

impl Tier {
    pub fn parse(s: &str) -> Result<Tier, Error> {
        match s {
            "free" => Ok(Tier::Free),
            "pro" => Ok(Tier::Pro),
            "enterprise" => Ok(Tier::Enterprise),
            "custom" => Ok(Tier::Custom),
            other => Err(Error::Invalid(format!("tier {other:?} is not one of free, pro, enterprise, custom"))),
        }
    }

    /// The name `parse` reads.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Free => "free",
            Tier::Pro => "pro",
            Tier::Enterprise => "enterprise",
            Tier::Custom => "custom",
        }
    }

    /// The share of the node a backlogged tenant of this tier receives, relative to
    /// other backlogged tenants.
    pub fn weight(self) -> u32 {
        match self {
            Tier::Free => 1,
            Tier::Pro => 4,
            Tier::Enterprise | Tier::Custom => 8,
        }
    }

    /// The quota a tenant of this tier has until an administrator sets its own.
    pub fn default_quota(self) -> ExecutionQuota {
        let (cpu, mem, disk, net, conc) = match self {
            Tier::Free => (600, 64, 512, 512 * 1024, 8),
            Tier::Pro => (3_600, 128, 10 * 1024, 4 * 1024 * 1024, 32),
            Tier::Enterprise | Tier::Custom => (36_000, 256, 100 * 1024, 40 * 1024 * 1024, 128),
        };
        ExecutionQuota {
            max_cpu_seconds: cpu,
            max_memory_mb: mem,
            max_disk_mb: disk,
            max_network_kb: net,
            max_concurrent_tasks: conc,
            window_seconds: 3_600,
        }
    }
}

impl ExecutionQuota {
    /// Refuses a quota that could never admit anything or could overflow.
    pub fn validate(&self) -> Result<(), Error> {
        let mut problems = Vec::new();
        if self.max_concurrent_tasks == 0 {
            problems.push("max_concurrent_tasks must be at least 1");
        }
        if self.window_seconds == 0 {
            problems.push("window_seconds must be at least 1");
        }
        if self.max_memory_mb == 0 {
            problems.push("max_memory_mb must be at least 1");
        }
        if self.max_cpu_seconds > u64::MAX / FUEL_PER_CPU_SECOND {
            problems.push("max_cpu_seconds is too large");
        }
        if self.max_disk_mb > u64::MAX >> 20 || self.max_network_kb > u64::MAX >> 10 || self.max_memory_mb > 1 << 20 {
            problems.push("a size is too large");
        }
        if problems.is_empty() { Ok(()) } else { Err(Error::Invalid(format!("invalid quota: {}", problems.join("; ")))) }
    }

    pub fn cpu_fuel(&self) -> u64 {
        self.max_cpu_seconds * FUEL_PER_CPU_SECOND
    }

    pub fn memory_bytes(&self) -> u64 {
        self.max_memory_mb << 20
    }

    pub fn disk_bytes(&self) -> u64 {
        self.max_disk_mb << 20
    }

    pub fn network_bytes(&self) -> u64 {
        self.max_network_kb << 10
    }
}

/// The resource a quota violation is about; decides its status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    Cpu,
    Memory,
    Disk,
    Network,
    Concurrency,
}

impl Resource {
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
            Resource::Disk => "disk",
            Resource::Network => "network",
            Resource::Concurrency => "concurrency",
        }
    }
}

/// A budget that concurrent invocations draw from without a lock. It also counts what
/// was drawn here, apart from what other nodes used ([`Budget::charge_elsewhere`]), so a
/// node can report its own use of an instance-wide window.
#[derive(Debug)]
pub struct Budget {
    left: AtomicU64,
    drawn: AtomicU64,
}

impl Budget {
    pub fn new(amount: u64) -> Self {
        Budget { left: AtomicU64::new(amount), drawn: AtomicU64::new(0) }
    }

    /// What was drawn from this budget here (takes minus give-backs).
    pub fn drawn(&self) -> u64 {
        self.drawn.load(Ordering::Acquire)
    }

    /// Removes what other nodes used from what is left (down to nothing), without
    /// counting it as drawn here.
    pub fn charge_elsewhere(&self, amount: u64) {
        let _ = self.left.fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| Some(left.saturating_sub(amount)));
    }

    pub fn left(&self) -> u64 {
        self.left.load(Ordering::Relaxed)
    }

    /// Takes `amount` if that much is left; otherwise takes nothing.
    pub fn try_take(&self, amount: u64) -> bool {
        let taken = self.left.fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| left.checked_sub(amount)).is_ok();
        if taken {
            self.drawn.fetch_add(amount, Ordering::AcqRel);
        }
        taken
    }

    /// Takes `amount`, or all that is left; returns what was taken.
    pub fn take_up_to(&self, amount: u64) -> u64 {
        let taken = match self.left.fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| Some(left.saturating_sub(amount))) {
            Ok(before) | Err(before) => before.min(amount),
        };
        self.drawn.fetch_add(taken, Ordering::AcqRel);
        taken
    }

    /// Gives back what was reserved and not used.
    pub fn give_back(&self, amount: u64) {
        self.left.fetch_add(amount, Ordering::AcqRel);
        let _ = self.drawn.fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| Some(d.saturating_sub(amount)));
    }
}

/// A budget that refills at the start of each window. Time comes in as a parameter
/// (seconds since an epoch the caller chooses), so the rule is tested without a clock.
#[derive(Debug)]
pub struct WindowedBudget {
    /// The start of the current window and its budget; replaced, not mutated, when a
    /// window ends, so invocations holding the old one cannot draw from the new one.
    current: std::sync::Mutex<(u64, std::sync::Arc<Budget>)>,
}

impl WindowedBudget {
    pub fn new(now_secs: u64, window_secs: u64, amount: u64) -> Self {
        let start = window_start(now_secs, window_secs);
        WindowedBudget { current: std::sync::Mutex::new((start, std::sync::Arc::new(Budget::new(amount)))) }
    }

    /// The budget of the window containing `now_secs`, refilled to `amount` if a new
    /// window began; with the second at which this window ends.
    pub fn at(&self, now_secs: u64, window_secs: u64, amount: u64) -> (std::sync::Arc<Budget>, u64) {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let start = window_start(now_secs, window_secs);
        if start != cur.0 {
            *cur = (start, std::sync::Arc::new(Budget::new(amount)));
        }
        (cur.1.clone(), start + window_secs.max(1))
    }
}

impl WindowedBudget {
    /// The current window's start and budget, without asking the time (the window moves
    /// on at the next [`WindowedBudget::at`]).
    pub fn current(&self) -> (u64, std::sync::Arc<Budget>) {
        let cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        (cur.0, cur.1.clone())
    }

    /// Applies a changed amount (or window) at once: what was used in the current window
    /// stays used, so raising a quota adds the difference and lowering it can leave
    /// nothing for the rest of the window.
    pub fn resize(&self, now_secs: u64, old_window_secs: u64, old_amount: u64, window_secs: u64, amount: u64) {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let used = if cur.0 == window_start(now_secs, old_window_secs) { old_amount.saturating_sub(cur.1.left()) } else { 0 };
        *cur = (window_start(now_secs, window_secs), std::sync::Arc::new(Budget::new(amount.saturating_sub(used))));
    }
}

/// Windows are aligned to multiples of their length, so every node agrees on them.
fn window_start(now_secs: u64, window_secs: u64) -> u64 {
    let w = window_secs.max(1);
    now_secs - now_secs % w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_have_valid_defaults_and_rising_weights() {
        for t in [Tier::Free, Tier::Pro, Tier::Enterprise, Tier::Custom] {
            t.default_quota().validate().unwrap();
        }
        assert!(Tier::Free.weight() < Tier::Pro.weight());
        assert!(Tier::Pro.weight() < Tier::Enterprise.weight());
    }

    #[test]
    fn a_budget_counts_what_was_drawn_here_apart_from_what_others_used() {
        let b = Budget::new(100);
        assert!(b.try_take(30));
        b.give_back(10);
        assert_eq!(b.take_up_to(20), 20);
        b.charge_elsewhere(50);
        assert_eq!((b.drawn(), b.left()), (40, 10));
        b.charge_elsewhere(50);
        assert_eq!((b.drawn(), b.left()), (40, 0), "others' use empties the budget but is not drawn here");
    }

    #[test]
    fn a_budget_never_goes_below_zero() {
        let b = Budget::new(10);
        assert!(b.try_take(7));
        assert!(!b.try_take(7));
        assert_eq!(b.take_up_to(7), 3);
        assert_eq!(b.left(), 0);
        b.give_back(2);
        assert_eq!(b.left(), 2);
    }

    #[test]
    fn windows_refill_at_aligned_boundaries() {
        let w = WindowedBudget::new(3_600, 3_600, 100);
        let (b, ends) = w.at(3_601, 3_600, 100);
        assert_eq!(ends, 7_200);
        assert!(b.try_take(100));
        let (same, _) = w.at(7_199, 3_600, 100);
        assert_eq!(same.left(), 0);
        let (fresh, ends) = w.at(7_200, 3_600, 100);
        assert_eq!((fresh.left(), ends), (100, 10_800));
        assert_eq!(b.left(), 0, "the old window's budget is not refilled");
        // A changed quota counts what this window already used.
        let (b, _) = w.at(7_300, 3_600, 100);
        assert!(b.try_take(30));
        w.resize(7_300, 3_600, 100, 3_600, 50);
        assert_eq!(w.at(7_300, 3_600, 50).0.left(), 20);
        w.resize(7_300, 3_600, 50, 3_600, 10);
        assert_eq!(w.at(7_300, 3_600, 10).0.left(), 0);
    }

    #[test]
    fn invalid_quotas_are_refused_with_each_reason() {
        let mut q = Tier::Free.default_quota();
        q.max_concurrent_tasks = 0;
        q.window_seconds = 0;
        let e = q.validate().unwrap_err().to_string();
        assert!(e.contains("max_concurrent_tasks") && e.contains("window_seconds"), "{e}");
    }
}

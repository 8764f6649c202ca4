//! The tenant-fair scheduler (spec §5.3): weighted fair queuing between tenants under a
//! global concurrency cap, each tenant bounded by its own concurrency quota and queue.
//!
//! Two faces over one algorithm ([`crate::fair`]):
//! - [`TenantScheduler::admit`] is the online gate every invocation passes;
//! - [`TenantScheduler::schedule`] plans a given task set offline — which task starts
//!   when, on a virtual clock measured in task cost — and [`schedule_hash`] hashes that
//!   plan, so the same task set gives the same schedule and hash everywhere.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

use serde::{Deserialize, Serialize};

use crate::fair::{FairQueue, FlowLimits};
use crate::gate::{FairGate, Pass};
use crate::{Error, PROTOCOL_VERSION};

/// One unit of work to schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Unique within its tenant.
    pub task_id: String,
    /// Relative cost (e.g. expected CPU milliseconds); at least 1.
    #[serde(default = "one")]
    pub cost: u64,
}

fn one() -> u64 {
    1
}

/// A tenant's share of the scheduler: its weight (from its tier) and its bounds
/// (from its quota).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    pub weight: u32,
    pub max_concurrent: u32,
    pub max_queued: usize,
}

impl Share {
    fn limits(self) -> FlowLimits {
        FlowLimits { weight: self.weight.max(1), max_running: self.max_concurrent.max(1), max_queued: self.max_queued }
    }
}

/// One tenant's task set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantTasks {
    pub tenant: String,
    pub share: Share,
    pub tasks: Vec<Task>,
}

/// One slot of a plan: the `position`-th task to start, at `starts_at` on the virtual
/// clock (the sum of costs run before it on its worker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledTask {
    pub position: u64,
    pub tenant: String,
    pub task_id: String,
    pub cost: u64,
    pub starts_at: u64,
}

/// A plan and what it was planned for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub protocol_version: String,
    pub capacity: u32,
    pub tasks: Vec<ScheduledTask>,
}

/// SHA-256 (lowercase hex) of the canonical JSON of the schedule.
pub fn schedule_hash(schedule: &Schedule) -> Result<String, Error> {
    runplane_cjson::hash_serialize(schedule).map_err(|e| Error::Invalid(format!("schedule cannot be hashed: {e}")))
}

/// Why an invocation was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tenant {tenant} already has {queued} invocations waiting (the limit); retry after {retry_after_secs} s or raise its max_concurrent_tasks")]
pub struct Rejected {
    pub tenant: String,
    pub queued: usize,
    pub retry_after_secs: u64,
}

/// Admission of invocations: at most `capacity` running on the node, each tenant at most
/// its `max_concurrent`, waiting tenants let in by weighted fair queuing.
#[derive(Clone)]
pub struct TenantScheduler {
    gate: FairGate,
    capacity: u32,
}

impl TenantScheduler {
    pub fn new(capacity: u32) -> Self {
        TenantScheduler { gate: FairGate::new(capacity as usize), capacity: capacity.max(1) }
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Invocations running and waiting now (for metrics and autoscalers).
    pub fn running(&self) -> usize {
        self.gate.running()
    }

    pub fn queued(&self) -> usize {
        self.gate.queued()
    }

    pub fn queued_in(&self, tenant: &str) -> usize {
        self.gate.queued_in(tenant)
    }

    pub fn running_in(&self, tenant: &str) -> u32 {
        self.gate.running_in(tenant)
    }

    /// Waits for the tenant's turn; the returned pass is the right to run one
    /// invocation until dropped. A full queue answers at once.
    pub async fn admit(&self, tenant: &str, share: Share) -> Result<Pass, Rejected> {
        self.gate.enter(tenant, share.limits(), 1).await.map_err(|full| Rejected {
            tenant: tenant.to_owned(),
            queued: full.capacity,
            retry_after_secs: 1,
        })
    }

    /// Plans one tenant's task set (the seed's `schedule(tenant_id, tasks)`).
    pub fn schedule(&self, tenant: &str, share: Share, tasks: &[Task]) -> Result<Schedule, Error> {
        self.schedule_all(&[TenantTasks { tenant: tenant.to_owned(), share, tasks: tasks.to_vec() }])
    }

    /// Plans the task sets of several tenants together, as the online gate would run
    /// them if all arrived at once: every task's start on a virtual clock, under this
    /// scheduler's capacity. The order of `sets` and of the tasks in each does not
    /// matter (tasks are taken by tenant, then task id); queue bounds do not apply to a
    /// plan, concurrency bounds do.
    pub fn schedule_all(&self, sets: &[TenantTasks]) -> Result<Schedule, Error> {
        let mut sets: Vec<&TenantTasks> = sets.iter().collect();
        sets.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        if let Some(w) = sets.windows(2).find(|w| w[0].tenant == w[1].tenant) {
            return Err(Error::Invalid(format!("tenant {} appears twice; give one task set per tenant", w[0].tenant)));
        }
        let mut queue = FairQueue::new();
        for set in &sets {
            if set.tenant.is_empty() {
                return Err(Error::Invalid("a task set has an empty tenant id".into()));
            }
            let mut ids = BTreeSet::new();
            let mut tasks: Vec<&Task> = set.tasks.iter().collect();
            tasks.sort_by(|a, b| a.task_id.cmp(&b.task_id));
            let limits = FlowLimits { max_queued: usize::MAX, ..set.share.limits() };
            for t in tasks {
                if !ids.insert(&t.task_id) {
                    return Err(Error::Invalid(format!("task id {} appears twice for tenant {}", t.task_id, set.tenant)));
                }
                let cost = t.cost.max(1);
                queue
                    .push(&set.tenant, limits, cost, (t.task_id.clone(), cost))
                    .map_err(|_| Error::Invalid("a plan's queue is unbounded".into()))?;
            }
        }

        // Discrete-event run: `capacity` workers; a task occupies one for `cost` ticks.
        let mut out = Vec::new();
        let mut now = 0u64;
        let mut running: BinaryHeap<Reverse<(u64, u64, String)>> = BinaryHeap::new();
        let mut seq = 0u64;
        loop {
            while running.len() < self.capacity as usize {
                let Some(next) = queue.pop() else { break };
                let (task_id, cost) = next.item;
                out.push(ScheduledTask { position: out.len() as u64, tenant: next.flow.clone(), task_id, cost, starts_at: now });
                running.push(Reverse((now.saturating_add(cost), seq, next.flow)));
                seq += 1;
            }
            let Some(Reverse((end, _, flow))) = running.pop() else { break };
            now = end;
            queue.done(&flow);
        }
        Ok(Schedule { protocol_version: PROTOCOL_VERSION.into(), capacity: self.capacity, tasks: out })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(weight: u32) -> Share {
        Share { weight, max_concurrent: 1000, max_queued: 10 }
    }

    fn tasks(n: usize) -> Vec<Task> {
        (0..n).map(|i| Task { task_id: format!("t{i:04}"), cost: 1 }).collect()
    }

    #[test]
    fn concurrency_bounds_hold_in_a_plan() {
        let s = TenantScheduler::new(4);
        let plan = s.schedule("a", Share { weight: 1, max_concurrent: 2, max_queued: 0 }, &tasks(6)).unwrap();
        let starts: Vec<u64> = plan.tasks.iter().map(|t| t.starts_at).collect();
        assert_eq!(starts, [0, 0, 1, 1, 2, 2]);
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let s = TenantScheduler::new(1);
        let t = vec![Task { task_id: "x".into(), cost: 1 }, Task { task_id: "x".into(), cost: 2 }];
        assert!(s.schedule("a", share(1), &t).unwrap_err().to_string().contains("twice"));
    }
}

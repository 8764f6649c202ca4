//! Attempts (S3 RO2): a run is a chain of [`JobAttemptRecord`]s, append-only. A retry
//! is a new attempt; every attempt keeps its own status and error.
//!
//! An attempt is recorded `running` with a lease before its task starts, and the lease
//! is renewed while it runs ([`LEASE_MS`], renewed every [`RENEW_MS`]). An attempt
//! whose lease has expired (its node died) is `abandoned` — error code `abandoned`,
//! retryable — and the retry policy decides what follows, as for any failure.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::retry::{AfterFailure, RetryPolicy, jitter_seed};

/// How long a running attempt's lease lasts without renewal.
pub const LEASE_MS: i64 = 10_000;
/// How often the node running an attempt renews its lease.
pub const RENEW_MS: i64 = 3_000;

/// Where a job or an attempt is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting for its time, a retry's delay or a concurrency slot.
    Queued,
    Running,
    Passed,
    Failed,
    /// Its node stopped while it ran (the lease expired).
    Abandoned,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Passed => "passed",
            JobStatus::Failed => "failed",
            JobStatus::Abandoned => "abandoned",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// Whether a job in this status is done (no attempt will follow).
    pub fn is_final(self) -> bool {
        matches!(self, JobStatus::Passed | JobStatus::Failed | JobStatus::Cancelled)
    }
}

impl std::str::FromStr for JobStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "queued" => JobStatus::Queued,
            "running" => JobStatus::Running,
            "passed" => JobStatus::Passed,
            "failed" => JobStatus::Failed,
            "abandoned" => JobStatus::Abandoned,
            "cancelled" => JobStatus::Cancelled,
            other => return Err(format!("{other:?} is not a job status (queued, running, passed, failed, abandoned, cancelled)")),
        })
    }
}

/// One attempt of a job (S3 RO2's fields, named as there, and the attempt's number
/// and message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JobAttemptRecord {
    pub job_id: String,
    pub attempt_id: String,
    pub status: JobStatus,
    /// RFC 3339, UTC.
    pub created_at_utc: String,
    pub updated_at_utc: String,
    /// Ids to correlate the attempt with (`run_id`, `schedule_id`, `nominal_time_utc`,
    /// `invocation_id`, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub correlation_ids: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// Whether another attempt may follow this one's failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
    /// 1 for the first attempt.
    pub attempt_number: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
}

/// What a finished attempt means for its job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conclusion {
    /// The job passed.
    Passed,
    /// The attempt failed and is retryable: the next one is queued not before `at_ms`.
    Retry { at_ms: i64 },
    /// The job failed; why.
    Failed { reason: String },
}

/// Concludes attempt `attempt` of `job_id`, ended at `now_ms` with `result` (`Err`: the
/// error code).
pub fn conclude(policy: &RetryPolicy, job_id: &str, attempt: u32, result: Result<(), &str>, now_ms: i64) -> Conclusion {
    match result {
        Ok(()) => Conclusion::Passed,
        Err(code) => match policy.after_failure(attempt, code, jitter_seed(job_id, attempt)) {
            AfterFailure::Retry { delay_ms } => Conclusion::Retry { at_ms: now_ms + delay_ms as i64 },
            AfterFailure::GiveUp { reason } => Conclusion::Failed { reason },
        },
    }
}

/// Concurrency limits on starting an attempt: per job, per tenant and per named pool.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Concurrency {
    /// Attempts of this job running at once (schedules: of every run of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<u32>,
    /// A named pool whose limit the operator sets; the job takes one of its slots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

/// Slots already held, as the store counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    pub job: u32,
    pub tenant: u32,
    pub pool: u32,
}

/// Whether one more attempt may start: `Err` names the full limit.
pub fn may_start(limits: &Concurrency, tenant_limit: Option<u32>, pool_limit: Option<u32>, held: Held) -> Result<(), String> {
    if let Some(l) = limits.job
        && held.job >= l
    {
        return Err(format!("the job's concurrency limit {l} is reached"));
    }
    if let Some(l) = tenant_limit
        && held.tenant >= l
    {
        return Err(format!("the tenant's job concurrency limit {l} is reached"));
    }
    if let (Some(l), Some(pool)) = (pool_limit, &limits.pool)
        && held.pool >= l
    {
        return Err(format!("pool {pool}'s limit {l} is reached"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poison_job_gets_exactly_maximum_attempts_with_the_policys_delays() {
        let policy = RetryPolicy { maximum_attempts: 4, initial_interval_ms: 1000, backoff_coefficient: 2.0, jitter: 0.0, ..RetryPolicy::default() };
        let mut now = 0;
        let mut starts = vec![now];
        let mut attempt = 1;
        loop {
            match conclude(&policy, "j1", attempt, Err("capability_trapped"), now + 10) {
                Conclusion::Retry { at_ms } => {
                    now = at_ms;
                    starts.push(now);
                    attempt += 1;
                }
                Conclusion::Failed { reason } => {
                    assert!(reason.contains("maximum_attempts 4"), "{reason}");
                    break;
                }
                Conclusion::Passed => unreachable!(),
            }
        }
        assert_eq!(starts, vec![0, 1010, 3020, 7030], "4 attempts, 1 s, 2 s and 4 s after each failure");
    }

    #[test]
    fn slots_are_limited_per_job_tenant_and_pool() {
        let c = Concurrency { job: Some(1), pool: Some("gpu".into()) };
        assert!(may_start(&c, None, None, Held::default()).is_ok());
        assert!(may_start(&c, None, None, Held { job: 1, ..Held::default() }).is_err());
        assert!(may_start(&Concurrency::default(), Some(2), None, Held { tenant: 2, ..Held::default() }).is_err());
        let e = may_start(&c, None, Some(3), Held { pool: 3, ..Held::default() }).expect_err("pool full");
        assert!(e.contains("gpu"), "{e}");
        assert!("abandoned".parse::<JobStatus>().is_ok() && "lost".parse::<JobStatus>().is_err());
    }
}

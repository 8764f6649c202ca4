//! Jobs and their attempts in the control store (spec §9).
//!
//! A job row says where the job stands (`queued` with the earliest time of its next
//! attempt, `running`, or final); its attempts are rows of their own, appended and
//! never rewritten once final. Every step that moves a job is one transaction guarded
//! by what it expects (the job's status and attempt count; the attempt's status and
//! holder), so a claim, a finish and an abandonment never overwrite each other. A
//! running attempt is its concurrency slot: counting running attempts is counting held
//! slots, and a slot goes with its attempt (finished, cancelled or abandoned when its
//! lease expires), never leaked and never doubled across a restart.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::ControlStore;
use crate::error::Result;

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredJob {
    pub job_id: String,
    pub tenant_id: String,
    pub route: String,
    pub idempotency_key: String,
    /// `queued`, `running`, `passed`, `failed` or `cancelled`.
    pub status: String,
    /// Attempts started so far.
    pub attempts: u32,
    /// The next attempt starts no earlier (ms since the epoch).
    pub not_before_ms: i64,
    /// The named concurrency pool it takes a slot of.
    pub pool: Option<String>,
    /// What was submitted, as JSON (the node's to read).
    pub spec: String,
    /// The passing attempt's output.
    pub output: Option<String>,
    /// Why it failed or was cancelled.
    pub reason: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// One attempt as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAttempt {
    pub job_id: String,
    pub attempt_number: u32,
    pub attempt_id: String,
    pub tenant_id: String,
    pub pool: Option<String>,
    /// `running`, `passed`, `failed`, `abandoned` or `cancelled`.
    pub status: String,
    pub created_at: String,
    pub updated_at: String,
    /// JSON object.
    pub correlation_ids: String,
    pub error_code: Option<String>,
    pub retryable: Option<bool>,
    pub error_message: Option<String>,
    /// The node running it.
    pub holder: Option<String>,
    pub lease_expires_ms: i64,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptEnd {
    pub status: String,
    pub error_code: Option<String>,
    pub retryable: Option<bool>,
    pub error_message: Option<String>,
    pub at: String,
}

/// Where its job goes next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobMove {
    pub status: String,
    pub not_before_ms: i64,
    pub output: Option<String>,
    pub reason: Option<String>,
    pub at: String,
}

/// Who may end an attempt: the node holding it, or the controller once its lease
/// expired before `now_ms`.
#[derive(Debug, Clone, Copy)]
pub enum EndedBy<'a> {
    Holder(&'a str),
    ExpiredBefore(i64),
}

/// The running attempts held in each dimension of a slot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Running {
    pub tenant: u32,
    pub pool: u32,
}

// Macros, not constants, so statements are one `concat!`ed literal each.
macro_rules! job_columns {
    () => {
        "job_id, tenant_id, route, idempotency_key, status, attempts, not_before_ms, pool, spec, output, reason, created_at, updated_at"
    };
}
macro_rules! attempt_columns {
    () => {
        "job_id, attempt_number, attempt_id, tenant_id, pool, status, created_at, updated_at, correlation_ids, error_code, retryable, error_message, holder, lease_expires_ms"
    };
}

fn job_row(r: &AnyRow) -> Result<StoredJob> {
    Ok(StoredJob {
        job_id: r.try_get(0)?,
        tenant_id: r.try_get(1)?,
        route: r.try_get(2)?,
        idempotency_key: r.try_get(3)?,
        status: r.try_get(4)?,
        attempts: r.try_get::<i64, _>(5)?.max(0) as u32,
        not_before_ms: r.try_get(6)?,
        pool: r.try_get(7)?,
        spec: r.try_get(8)?,
        output: r.try_get(9)?,
        reason: r.try_get(10)?,
        created_at: r.try_get(11)?,
        updated_at: r.try_get(12)?,
    })
}

fn attempt_row(r: &AnyRow) -> Result<StoredAttempt> {
    Ok(StoredAttempt {
        job_id: r.try_get(0)?,
        attempt_number: r.try_get::<i64, _>(1)?.max(0) as u32,
        attempt_id: r.try_get(2)?,
        tenant_id: r.try_get(3)?,
        pool: r.try_get(4)?,
        status: r.try_get(5)?,
        created_at: r.try_get(6)?,
        updated_at: r.try_get(7)?,
        correlation_ids: r.try_get(8)?,
        error_code: r.try_get(9)?,
        retryable: r.try_get::<Option<i64>, _>(10)?.map(|v| v != 0),
        error_message: r.try_get(11)?,
        holder: r.try_get(12)?,
        lease_expires_ms: r.try_get(13)?,
    })
}

impl ControlStore {
    /// Stores a new job; `Err(existing)`: the tenant already has one under this
    /// idempotency key (the same run, which the caller answers with).
    pub async fn insert_job(&self, j: &StoredJob) -> Result<std::result::Result<(), StoredJob>> {
        let done = sqlx::query(self.pick(
            "INSERT INTO jobs (job_id, tenant_id, route, idempotency_key, status, attempts, not_before_ms, pool, spec, output, reason, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT DO NOTHING",
            "INSERT IGNORE INTO jobs (job_id, tenant_id, route, idempotency_key, status, attempts, not_before_ms, pool, spec, output, reason, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        ))
        .bind(&j.job_id)
        .bind(&j.tenant_id)
        .bind(&j.route)
        .bind(&j.idempotency_key)
        .bind(&j.status)
        .bind(i64::from(j.attempts))
        .bind(j.not_before_ms)
        .bind(&j.pool)
        .bind(&j.spec)
        .bind(&j.output)
        .bind(&j.reason)
        .bind(&j.created_at)
        .bind(&j.updated_at)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(Ok(()));
        }
        let existing = sqlx::query(self.sql(concat!("SELECT ", job_columns!(), " FROM jobs WHERE tenant_id = $1 AND idempotency_key = $2")))
            .bind(&j.tenant_id)
            .bind(&j.idempotency_key)
            .fetch_optional(&self.pool)
            .await?;
        match existing {
            Some(row) => Ok(Err(job_row(&row)?)),
            // A job id taken twice (ids are UUID v7: not by chance).
            None => Err(super::corrupt(format!("job {} exists already under another key", j.job_id))),
        }
    }

    pub async fn job(&self, job_id: &str) -> Result<Option<StoredJob>> {
        let row = sqlx::query(self.sql(concat!("SELECT ", job_columns!(), " FROM jobs WHERE job_id = $1"))).bind(job_id).fetch_optional(&self.pool).await?;
        row.as_ref().map(job_row).transpose()
    }

    /// A tenant's jobs (or every tenant's), newest first, at most `limit`.
    pub async fn jobs(&self, tenant: Option<&str>, limit: u32) -> Result<Vec<StoredJob>> {
        let rows = match tenant {
            Some(t) => {
                sqlx::query(self.sql(concat!("SELECT ", job_columns!(), " FROM jobs WHERE tenant_id = $1 ORDER BY job_id DESC LIMIT $2")))
                    .bind(t)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
            }
            None => sqlx::query(self.sql(concat!("SELECT ", job_columns!(), " FROM jobs ORDER BY job_id DESC LIMIT $1"))).bind(i64::from(limit)).fetch_all(&self.pool).await?,
        };
        rows.iter().map(job_row).collect()
    }

    /// A job's attempts, first first.
    pub async fn attempts(&self, job_id: &str) -> Result<Vec<StoredAttempt>> {
        let rows = sqlx::query(self.sql(concat!("SELECT ", attempt_columns!(), " FROM job_attempts WHERE job_id = $1 ORDER BY attempt_number")))
            .bind(job_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(attempt_row).collect()
    }

    /// Whether any job is queued or running (the controller reads no clock without).
    pub async fn has_open_jobs(&self) -> Result<bool> {
        let row = sqlx::query(self.sql("SELECT job_id FROM jobs WHERE status IN ('queued', 'running') LIMIT 1")).fetch_optional(&self.pool).await?;
        Ok(row.is_some())
    }

    /// Queued jobs whose next attempt is due at `now_ms`, earliest first.
    pub async fn due_jobs(&self, now_ms: i64, limit: u32) -> Result<Vec<StoredJob>> {
        let rows = sqlx::query(self.sql(concat!("SELECT ", job_columns!(), " FROM jobs WHERE status = 'queued' AND not_before_ms <= $1 ORDER BY not_before_ms, job_id LIMIT $2")))
            .bind(now_ms)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(job_row).collect()
    }

    /// The slots held now: running attempts of `tenant`, and of `pool`.
    pub async fn running(&self, tenant: &str, pool: Option<&str>) -> Result<Running> {
        let count = |n: i64| n.max(0) as u32;
        let tenant_n: i64 = sqlx::query_scalar(self.sql("SELECT COUNT(*) FROM job_attempts WHERE status = 'running' AND tenant_id = $1")).bind(tenant).fetch_one(&self.pool).await?;
        let pool_n: i64 = match pool {
            Some(p) => sqlx::query_scalar(self.sql("SELECT COUNT(*) FROM job_attempts WHERE status = 'running' AND pool = $1")).bind(p).fetch_one(&self.pool).await?,
            None => 0,
        };
        Ok(Running { tenant: count(tenant_n), pool: count(pool_n) })
    }

    /// Starts `attempt` of a job still `queued` after `expected_attempts` attempts: the
    /// job becomes `running` and the attempt is recorded with its lease, together.
    /// `false`: the job moved meanwhile (cancelled, or claimed already).
    pub async fn claim_attempt(&self, expected_attempts: u32, attempt: &StoredAttempt) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let moved = sqlx::query(self.sql("UPDATE jobs SET status = 'running', attempts = $1, updated_at = $2 WHERE job_id = $3 AND status = 'queued' AND attempts = $4"))
            .bind(i64::from(attempt.attempt_number))
            .bind(&attempt.created_at)
            .bind(&attempt.job_id)
            .bind(i64::from(expected_attempts))
            .execute(&mut *tx)
            .await?;
        if moved.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(self.sql(concat!("INSERT INTO job_attempts (", attempt_columns!(), ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)")))
            .bind(&attempt.job_id)
            .bind(i64::from(attempt.attempt_number))
            .bind(&attempt.attempt_id)
            .bind(&attempt.tenant_id)
            .bind(&attempt.pool)
            .bind(&attempt.status)
            .bind(&attempt.created_at)
            .bind(&attempt.updated_at)
            .bind(&attempt.correlation_ids)
            .bind(&attempt.error_code)
            .bind(attempt.retryable.map(i64::from))
            .bind(&attempt.error_message)
            .bind(&attempt.holder)
            .bind(attempt.lease_expires_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Extends the lease of a running attempt its holder still holds.
    pub async fn renew_attempt(&self, job_id: &str, attempt_number: u32, holder: &str, expires_ms: i64) -> Result<bool> {
        let done = sqlx::query(self.sql("UPDATE job_attempts SET lease_expires_ms = $1 WHERE job_id = $2 AND attempt_number = $3 AND status = 'running' AND holder = $4"))
            .bind(expires_ms)
            .bind(job_id)
            .bind(i64::from(attempt_number))
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends a running attempt and moves its job, together. `false`: the attempt was not
    /// running (or not by `by`'s rule) any more, and nothing changed.
    pub async fn end_attempt(&self, job_id: &str, attempt_number: u32, by: EndedBy<'_>, end: &AttemptEnd, next: &JobMove) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        macro_rules! end_running {
            ($guard:literal) => {
                concat!("UPDATE job_attempts SET status = $1, error_code = $2, retryable = $3, error_message = $4, updated_at = $5 WHERE job_id = $6 AND attempt_number = $7 AND status = 'running' AND ", $guard)
            };
        }
        let sql = match by {
            EndedBy::Holder(_) => self.sql(end_running!("holder = $8")),
            EndedBy::ExpiredBefore(_) => self.sql(end_running!("lease_expires_ms < $8")),
        };
        let q = sqlx::query(sql)
            .bind(&end.status)
            .bind(&end.error_code)
            .bind(end.retryable.map(i64::from))
            .bind(&end.error_message)
            .bind(&end.at)
            .bind(job_id)
            .bind(i64::from(attempt_number));
        let q = match by {
            EndedBy::Holder(h) => q.bind(h),
            EndedBy::ExpiredBefore(now) => q.bind(now),
        };
        if q.execute(&mut *tx).await?.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(self.sql("UPDATE jobs SET status = $1, not_before_ms = $2, output = $3, reason = $4, updated_at = $5 WHERE job_id = $6 AND status = 'running' AND attempts = $7"))
            .bind(&next.status)
            .bind(next.not_before_ms)
            .bind(&next.output)
            .bind(&next.reason)
            .bind(&next.at)
            .bind(job_id)
            .bind(i64::from(attempt_number))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Running attempts whose lease expired before `now_ms` (their node stopped).
    pub async fn expired_attempts(&self, now_ms: i64, limit: u32) -> Result<Vec<StoredAttempt>> {
        let rows = sqlx::query(self.sql(concat!("SELECT ", attempt_columns!(), " FROM job_attempts WHERE status = 'running' AND lease_expires_ms < $1 ORDER BY lease_expires_ms LIMIT $2")))
            .bind(now_ms)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(attempt_row).collect()
    }

    /// Cancels a job that is not final, and its running attempt (whose slot is free at
    /// once; what its task still does is not recorded). `false`: it was final already.
    pub async fn cancel_job(&self, job_id: &str, reason: &str, at: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let moved = sqlx::query(self.sql("UPDATE jobs SET status = 'cancelled', reason = $1, updated_at = $2 WHERE job_id = $3 AND status IN ('queued', 'running')"))
            .bind(reason)
            .bind(at)
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
        if moved.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(self.sql("UPDATE job_attempts SET status = 'cancelled', error_code = 'cancelled', retryable = 0, error_message = $1, updated_at = $2 WHERE job_id = $3 AND status = 'running'"))
            .bind(reason)
            .bind(at)
            .bind(job_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Cancels every job of a tenant that is not final (the tenant is being removed).
    pub async fn cancel_tenant_jobs(&self, tenant: &str, reason: &str, at: &str) -> Result<u64> {
        let ids: Vec<String> = sqlx::query_scalar(self.sql("SELECT job_id FROM jobs WHERE tenant_id = $1 AND status IN ('queued', 'running')")).bind(tenant).fetch_all(&self.pool).await?;
        let mut n = 0;
        for id in ids {
            n += u64::from(self.cancel_job(&id, reason, at).await?);
        }
        Ok(n)
    }
}

//! Audit logs on PostgreSQL, shared by every node of an instance. A batch is one round
//! trip: the node plans it from the heads it last wrote (read once per log, then
//! cached), and one call of the `audit_append` function (migration 0004) locks those
//! heads in log order, checks they have not moved, writes entries, nodes, journals
//! and heads, and commits. Another node's batch on the same log waits for the lock;
//! finding the head moved, it fails with nothing written, and that node reads the
//! head again and plans anew, so indexes stay dense and the tree never forks.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};

use super::{AuditError, EntryRow, JournalCodec, JournalRow, JournalUsage, LogBackend, LogId, NewEntry, NewJournal, Pending, Plan, StaleJournal, frontier_of, hash_of, plan, writer};
use crate::merkle::Hash;
use crate::tree::{Frontier, Node, Stored};


/// The schema of the audit tables.
const SCHEMA: &str = "runplane_audit";

/// How often a batch is planned anew when another node moved one of its heads first.
const STALE_RETRIES: usize = 16;

/// The SQLSTATE `audit_append` fails with when a head moved after the batch was planned.
const STALE_HEAD: &str = "RPA01";

pub struct PostgresLog {
    pool: PgPool,
    /// The heads this node last wrote or read, by log: a batch is planned from them
    /// and `audit_append` checks they are still current (another node may append).
    heads: std::sync::Mutex<HashMap<String, Frontier>>,
}

fn entry_row(r: &PgRow) -> Result<EntryRow, AuditError> {
    Ok(EntryRow { index: r.get::<i64, _>(0) as u64, event_hash: r.get(1), leaf: hash_of(r.get::<&[u8], _>(2))?, json: r.get(3) })
}

/// A connection error without the URL (sqlx errors can carry it).
fn pg_unavailable(e: sqlx::Error) -> AuditError {
    match e {
        sqlx::Error::Database(d) => AuditError::Unavailable(format!("PostgreSQL: {}", d.message())),
        sqlx::Error::PoolTimedOut => AuditError::Unavailable("PostgreSQL did not answer in time".into()),
        other => AuditError::Unavailable(format!("PostgreSQL: {}", other.to_string().split(" (").next().unwrap_or("connection failed"))),
    }
}

impl PostgresLog {
    /// Connects and migrates. The logs live in their own schema, `runplane_audit` (with
    /// their own migration history), beside whatever else the database holds — such as
    /// the tenants' stores, whose runtime role has no rights on it.
    pub async fn connect(options: PgConnectOptions, timeout: Duration) -> Result<Self, AuditError> {
        let options = options.options([("statement_timeout", format!("{}", timeout.as_millis().max(1000))), ("search_path", SCHEMA.to_owned())]);
        // No ping before each use (sqlx's default): it doubled a batch's round trips. A
        // connection the server dropped fails one batch (reported as not recorded,
        // fail closed) and is replaced.
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(timeout)
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(pg_unavailable)?;
        // The schema is created under the migrations' advisory lock: nodes starting
        // together on a fresh database would otherwise race on CREATE SCHEMA.
        let mut migrator = sqlx::migrate!("./migrations/postgres");
        migrator.create_schema(SCHEMA);
        migrator.run(&pool).await.map_err(|e| AuditError::Unavailable(format!("migrating the PostgreSQL audit store: {e}")))?;
        Ok(PostgresLog { pool, heads: Default::default() })
    }
}

impl PostgresLog {
    /// The heads of `logs` as this node last wrote or read them; the ones it has not
    /// seen yet are read (a new log has no row: empty).
    async fn current_heads(&self, logs: &[&str]) -> Result<HashMap<LogId, Frontier>, AuditError> {
        let mut heads = HashMap::with_capacity(logs.len());
        let mut unseen = Vec::new();
        {
            let cached = self.heads.lock().unwrap_or_else(|p| p.into_inner());
            for log in logs {
                match cached.get(*log) {
                    Some(f) => {
                        heads.insert(LogId((*log).to_owned()), f.clone());
                    }
                    None => unseen.push(*log),
                }
            }
        }
        if unseen.is_empty() {
            return Ok(heads);
        }
        let rows = sqlx::query("SELECT log, size, frontier FROM audit_heads WHERE log = ANY($1)").bind(&unseen).fetch_all(&self.pool).await.map_err(pg_unavailable)?;
        for r in &rows {
            let log: &str = r.get(0);
            heads.insert(LogId(log.to_owned()), frontier_of(log, r.get(1), r.get::<&[u8], _>(2))?);
        }
        for log in unseen {
            heads.entry(LogId(log.to_owned())).or_default();
        }
        Ok(heads)
    }

    /// Writes a planned batch in one call of `audit_append` (migration 0004): one round
    /// trip, its own transaction, durable when it returns (`synchronous_commit`).
    async fn append(&self, batch: &[NewEntry], before: &HashMap<LogId, Frontier>, plan: &Plan) -> Result<(), sqlx::Error> {
        let head_logs: Vec<&str> = plan.heads.iter().map(|(l, _)| l.as_str()).collect();
        let old_sizes: Vec<i64> = plan.heads.iter().map(|(l, _)| before.get(l).map_or(0, |f| f.size() as i64)).collect();
        let new_sizes: Vec<i64> = plan.heads.iter().map(|(_, f)| f.size() as i64).collect();
        let frontiers: Vec<Vec<u8>> = plan.heads.iter().map(|(_, f)| f.to_bytes()).collect();

        let e_logs: Vec<&str> = batch.iter().map(|e| e.log.as_str()).collect();
        let e_idx: Vec<i64> = plan.indexes.iter().map(|&i| i as i64).collect();
        let e_hashes: Vec<&str> = batch.iter().map(|e| e.event_hash.as_str()).collect();
        let e_leaves: Vec<&[u8]> = batch.iter().map(|e| &e.leaf[..]).collect();
        let e_events: Vec<&str> = batch.iter().map(|e| e.json.as_str()).collect();

        let n_logs: Vec<&str> = plan.nodes.iter().map(|(l, _, _)| l.as_str()).collect();
        let n_levels: Vec<i32> = plan.nodes.iter().map(|(_, n, _)| n.level as i32).collect();
        let n_idx: Vec<i64> = plan.nodes.iter().map(|(_, n, _)| n.index as i64).collect();
        let n_hashes: Vec<&[u8]> = plan.nodes.iter().map(|(_, _, h)| &h[..]).collect();

        let journals: Vec<(&NewJournal, &str, i64)> =
            batch.iter().zip(&e_idx).filter_map(|(e, &index)| e.journal.as_ref().map(|j| (j, e.log.as_str(), index))).collect();
        let j_ids: Vec<&str> = journals.iter().map(|(j, _, _)| j.invocation_id.as_str()).collect();
        let j_logs: Vec<&str> = journals.iter().map(|(_, l, _)| *l).collect();
        let j_idx: Vec<i64> = journals.iter().map(|(_, _, i)| *i).collect();
        let j_at: Vec<i64> = journals.iter().map(|(j, _, _)| j.recorded_at as i64).collect();
        let j_codecs: Vec<i16> = journals.iter().map(|(j, _, _)| j.codec as i16).collect();
        let j_bodies: Vec<&[u8]> = journals.iter().map(|(j, _, _)| j.body.as_slice()).collect();

        sqlx::query("SELECT audit_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)")
            .bind(&head_logs)
            .bind(&old_sizes)
            .bind(&new_sizes)
            .bind(&frontiers)
            .bind(&e_logs)
            .bind(&e_idx)
            .bind(&e_hashes)
            .bind(&e_leaves)
            .bind(&e_events)
            .bind(&n_logs)
            .bind(&n_levels)
            .bind(&n_idx)
            .bind(&n_hashes)
            .bind(&j_ids)
            .bind(&j_logs)
            .bind(&j_idx)
            .bind(&j_at)
            .bind(&j_codecs)
            .bind(&j_bodies)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// Whether `audit_append` refused the batch because a head moved (SQLSTATE RPA01), so
/// nothing was written and the batch may be planned again.
fn is_stale(e: &sqlx::Error) -> bool {
    // A deadlock or serialisation failure also rolled everything back: plan anew.
    matches!(e, sqlx::Error::Database(d) if matches!(d.code().as_deref(), Some(STALE_HEAD | "40P01" | "40001")))
}

#[async_trait::async_trait]
impl LogBackend for PostgresLog {
    async fn commit(&self, batch: &[NewEntry]) -> Result<Vec<u64>, AuditError> {
        let mut logs: Vec<&str> = batch.iter().map(|e| e.log.as_str()).collect();
        logs.sort_unstable();
        logs.dedup();
        for _ in 0..STALE_RETRIES {
            let heads = self.current_heads(&logs).await?;
            let plan = plan(heads.clone(), batch);
            match self.append(batch, &heads, &plan).await {
                Ok(()) => {
                    let mut cached = self.heads.lock().unwrap_or_else(|p| p.into_inner());
                    cached.extend(plan.heads.into_iter().map(|(log, f)| (log.0, f)));
                    return Ok(plan.indexes);
                }
                Err(e) => {
                    // Whether it moved (another node) or the outcome is unknown (a
                    // lost connection), these heads are read again before the next batch.
                    let mut cached = self.heads.lock().unwrap_or_else(|p| p.into_inner());
                    for log in &logs {
                        cached.remove(*log);
                    }
                    drop(cached);
                    if !is_stale(&e) {
                        return Err(pg_unavailable(e));
                    }
                }
            }
        }
        Err(AuditError::Unavailable(format!(
            "another node moved the heads of this batch's logs {STALE_RETRIES} times in a row while it was planned; retry the action"
        )))
    }

    async fn heads(&self) -> Result<Vec<(LogId, Frontier)>, AuditError> {
        let rows = sqlx::query("SELECT log, size, frontier FROM audit_heads WHERE size > 0 ORDER BY log").fetch_all(&self.pool).await.map_err(pg_unavailable)?;
        rows.iter()
            .filter_map(|r| LogId::parse(r.get::<&str, _>(0)).map(|l| (l, r)))
            .map(|(l, r)| Ok((l.clone(), frontier_of(l.as_str(), r.get(1), r.get::<&[u8], _>(2))?)))
            .collect()
    }

    async fn head(&self, log: &LogId) -> Result<Option<Frontier>, AuditError> {
        let row = sqlx::query("SELECT size, frontier FROM audit_heads WHERE log = $1 AND size > 0").bind(log.as_str()).fetch_optional(&self.pool).await.map_err(pg_unavailable)?;
        row.map(|r| frontier_of(log.as_str(), r.get(0), r.get::<&[u8], _>(1))).transpose()
    }

    async fn entries(&self, log: &LogId, from: u64, limit: u32) -> Result<Vec<EntryRow>, AuditError> {
        let rows = sqlx::query("SELECT idx, event_hash, leaf_hash, event FROM audit_entries WHERE log = $1 AND idx >= $2 ORDER BY idx LIMIT $3")
            .bind(log.as_str())
            .bind(from as i64)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(pg_unavailable)?;
        rows.iter().map(entry_row).collect()
    }

    async fn stored(&self, log: &LogId, ranges: &[(u32, u64, u64)]) -> Result<Stored, AuditError> {
        let mut out = Stored::new();
        for &(level, first, end) in ranges {
            let rows = if level == 0 {
                sqlx::query("SELECT idx, leaf_hash FROM audit_entries WHERE log = $1 AND idx >= $2 AND idx < $3")
                    .bind(log.as_str())
                    .bind(first as i64)
                    .bind(end as i64)
                    .fetch_all(&self.pool)
                    .await
            } else {
                sqlx::query("SELECT idx, hash FROM audit_nodes WHERE log = $1 AND level = $2 AND idx >= $3 AND idx < $4")
                    .bind(log.as_str())
                    .bind(level as i32)
                    .bind(first as i64)
                    .bind(end as i64)
                    .fetch_all(&self.pool)
                    .await
            }
            .map_err(pg_unavailable)?;
            for r in rows {
                out.insert(Node { level, index: r.get::<i64, _>(0) as u64 }, hash_of(r.get::<&[u8], _>(1))?);
            }
        }
        Ok(out)
    }

    async fn interior(&self, log: &LogId) -> Result<Stored, AuditError> {
        let rows = sqlx::query("SELECT level, idx, hash FROM audit_nodes WHERE log = $1").bind(log.as_str()).fetch_all(&self.pool).await.map_err(pg_unavailable)?;
        rows.iter().map(|r| Ok((Node { level: r.get::<i32, _>(0) as u32, index: r.get::<i64, _>(1) as u64 }, hash_of(r.get::<&[u8], _>(2))?))).collect()
    }

    async fn checkpoints(&self, log: &LogId) -> Result<Vec<(u64, Hash, String)>, AuditError> {
        let rows = sqlx::query("SELECT size, root, note FROM audit_checkpoints WHERE log = $1 ORDER BY size").bind(log.as_str()).fetch_all(&self.pool).await.map_err(pg_unavailable)?;
        rows.iter().map(|r| Ok((r.get::<i64, _>(0) as u64, hash_of(r.get::<&[u8], _>(1))?, r.get(2)))).collect()
    }

    fn start_writer(self: std::sync::Arc<Self>, rx: tokio::sync::mpsc::Receiver<Pending>) -> Result<(), AuditError> {
        // A server round trip is slower than the appends arriving: batches fill by themselves.
        tokio::spawn(writer(self, rx));
        Ok(())
    }

    async fn journal(&self, invocation_id: &str) -> Result<Option<JournalRow>, AuditError> {
        let row = sqlx::query("SELECT log, idx, codec, body, archive FROM audit_journal_rows WHERE invocation_id = $1")
            .bind(invocation_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(pg_unavailable)?;
        let Some(r) = row else { return Ok(None) };
        let Some(log) = LogId::parse(r.get::<&str, _>(0)) else { return Ok(None) };
        Ok(Some(JournalRow { log, index: r.get::<i64, _>(1) as u64, codec: JournalCodec::from_stored(i64::from(r.get::<i16, _>(2)))?, body: r.get(3), archive: r.get(4) }))
    }

    async fn stale_journals(&self, log: &LogId, recorded_before: u64, limit: u32) -> Result<Vec<StaleJournal>, AuditError> {
        let rows = sqlx::query(
            "SELECT invocation_id, idx, recorded_at, codec, body FROM audit_journal_rows WHERE log = $1 AND body IS NOT NULL AND recorded_at < $2 ORDER BY recorded_at LIMIT $3",
        )
        .bind(log.as_str())
        .bind(recorded_before as i64)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(pg_unavailable)?;
        rows.iter()
            .map(|r| {
                Ok(StaleJournal {
                    invocation_id: r.get(0),
                    index: r.get::<i64, _>(1) as u64,
                    recorded_at: r.get::<i64, _>(2) as u64,
                    codec: JournalCodec::from_stored(i64::from(r.get::<i16, _>(3)))?,
                    body: r.get(4),
                })
            })
            .collect()
    }

    async fn mark_archived(&self, log: &LogId, digest: &str, invocation_ids: &[String], bytes: u64, now: u64) -> Result<(), AuditError> {
        let mut tx = self.pool.begin().await.map_err(pg_unavailable)?;
        sqlx::query("INSERT INTO audit_journal_archives (digest, log, journals, bytes, archived_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (digest) DO NOTHING")
            .bind(digest)
            .bind(log.as_str())
            .bind(invocation_ids.len() as i64)
            .bind(bytes as i64)
            .bind(now as i64)
            .execute(&mut *tx)
            .await
            .map_err(pg_unavailable)?;
        sqlx::query("UPDATE audit_journal_rows SET body = NULL, archive = $2 WHERE invocation_id = ANY($1) AND body IS NOT NULL")
            .bind(invocation_ids)
            .bind(digest)
            .execute(&mut *tx)
            .await
            .map_err(pg_unavailable)?;
        tx.commit().await.map_err(pg_unavailable)
    }

    async fn journal_usage(&self) -> Result<JournalUsage, AuditError> {
        let r = sqlx::query(
            "SELECT COUNT(body), COALESCE(SUM(octet_length(body)), 0)::BIGINT, COUNT(*) - COUNT(body),
                    (SELECT COALESCE(SUM(bytes), 0)::BIGINT FROM audit_journal_archives) FROM audit_journal_rows",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(pg_unavailable)?;
        Ok(JournalUsage { hot: r.get::<i64, _>(0) as u64, hot_bytes: r.get::<i64, _>(1) as u64, archived: r.get::<i64, _>(2) as u64, archived_bytes: r.get::<i64, _>(3) as u64 })
    }

    async fn save_checkpoint(&self, log: &LogId, size: u64, root: &Hash, note: &str) -> Result<(), AuditError> {
        sqlx::query("INSERT INTO audit_checkpoints (log, size, root, note) VALUES ($1, $2, $3, $4) ON CONFLICT (log, size) DO NOTHING")
            .bind(log.as_str())
            .bind(size as i64)
            .bind(&root[..])
            .bind(note)
            .execute(&self.pool)
            .await
            .map_err(pg_unavailable)?;
        Ok(())
    }
}

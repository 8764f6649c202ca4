//! Audit logs on PostgreSQL, shared by every node of an instance. A batch first makes
//! sure its logs have a head row, then locks those rows (`FOR UPDATE`, in log order
//! so two nodes never deadlock); another node's batch on the same log waits, so
//! indexes stay dense and the tree never forks.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};

use super::{AuditError, EntryRow, JournalCodec, JournalRow, JournalUsage, LogBackend, LogId, NewEntry, Pending, StaleJournal, frontier_of, hash_of, plan, writer};
use crate::merkle::Hash;
use crate::tree::{Frontier, Node, Stored};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The schema of the audit tables.
const SCHEMA: &str = "runplane_audit";

/// Rows per INSERT statement (5 parameters each, under PostgreSQL's 65,535).
const ROWS_PER_INSERT: usize = 6000;

pub struct PostgresLog {
    pool: PgPool,
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
        let pool = PgPoolOptions::new().max_connections(4).acquire_timeout(timeout).connect_with(options).await.map_err(pg_unavailable)?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))).execute(&pool).await.map_err(pg_unavailable)?;
        MIGRATOR.run(&pool).await.map_err(|e| AuditError::Unavailable(format!("migrating the PostgreSQL audit store: {e}")))?;
        Ok(PostgresLog { pool })
    }
}

#[async_trait::async_trait]
impl LogBackend for PostgresLog {
    async fn commit(&self, batch: &[NewEntry]) -> Result<Vec<u64>, AuditError> {
        let mut logs: Vec<&str> = batch.iter().map(|e| e.log.as_str()).collect();
        logs.sort_unstable();
        logs.dedup();
        let mut tx = self.pool.begin().await.map_err(pg_unavailable)?;
        sqlx::query("INSERT INTO audit_heads (log, size, frontier) SELECT l, 0, ''::bytea FROM UNNEST($1::text[]) AS l ORDER BY l ON CONFLICT (log) DO NOTHING")
            .bind(&logs)
            .execute(&mut *tx)
            .await
            .map_err(pg_unavailable)?;
        let rows = sqlx::query("SELECT log, size, frontier FROM audit_heads WHERE log = ANY($1) ORDER BY log FOR UPDATE")
            .bind(&logs)
            .fetch_all(&mut *tx)
            .await
            .map_err(pg_unavailable)?;
        let mut heads = HashMap::new();
        for r in &rows {
            let log: &str = r.get(0);
            heads.insert(LogId(log.to_owned()), frontier_of(log, r.get(1), r.get::<&[u8], _>(2))?);
        }
        let plan = plan(heads, batch);

        let rows: Vec<(&NewEntry, u64)> = batch.iter().zip(plan.indexes.iter().copied()).collect();
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let mut insert = sqlx::QueryBuilder::<sqlx::Postgres>::new("INSERT INTO audit_entries (log, idx, event_hash, leaf_hash, event) ");
            insert.push_values(chunk, |mut row, (e, index)| {
                row.push_bind(e.log.as_str()).push_bind(*index as i64).push_bind(&e.event_hash).push_bind(&e.leaf[..]).push_bind(&e.json);
            });
            insert.build().execute(&mut *tx).await.map_err(pg_unavailable)?;
        }
        for chunk in plan.nodes.chunks(ROWS_PER_INSERT) {
            let mut insert = sqlx::QueryBuilder::<sqlx::Postgres>::new("INSERT INTO audit_nodes (log, level, idx, hash) ");
            insert.push_values(chunk, |mut row, (log, node, hash)| {
                row.push_bind(log.as_str()).push_bind(node.level as i32).push_bind(node.index as i64).push_bind(&hash[..]);
            });
            insert.build().execute(&mut *tx).await.map_err(pg_unavailable)?;
        }
        let journals: Vec<(&super::NewJournal, &str, u64)> = rows.iter().filter_map(|(e, index)| e.journal.as_ref().map(|j| (j, e.log.as_str(), *index))).collect();
        for chunk in journals.chunks(ROWS_PER_INSERT / 2) {
            let mut insert = sqlx::QueryBuilder::<sqlx::Postgres>::new("INSERT INTO audit_journal_rows (invocation_id, log, idx, recorded_at, codec, body) ");
            insert.push_values(chunk, |mut row, (j, log, index)| {
                row.push_bind(&j.invocation_id).push_bind(*log).push_bind(*index as i64).push_bind(j.recorded_at as i64).push_bind(j.codec as i16).push_bind(&j.body);
            });
            insert.build().execute(&mut *tx).await.map_err(pg_unavailable)?;
        }
        for (log, f) in &plan.heads {
            sqlx::query("UPDATE audit_heads SET size = $2, frontier = $3 WHERE log = $1")
                .bind(log.as_str())
                .bind(f.size() as i64)
                .bind(f.to_bytes())
                .execute(&mut *tx)
                .await
                .map_err(pg_unavailable)?;
        }
        // Durable when it returns (synchronous_commit).
        tx.commit().await.map_err(pg_unavailable)?;
        Ok(plan.indexes)
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

    fn start_writer(self: std::sync::Arc<Self>, rx: tokio::sync::mpsc::Receiver<Pending>, _coming: std::sync::Arc<std::sync::atomic::AtomicUsize>) -> Result<(), AuditError> {
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

//! Audit logs in a SQLite file under the data dir (the embedded default).
//! `BEGIN IMMEDIATE` takes SQLite's write lock, which serialises batches the way the
//! head lock does on PostgreSQL. Commits run with `synchronous=FULL`: in WAL mode SQLite
//! then syncs the WAL (commit frame included) before the commit returns, so a batch is
//! durable when [`LogBackend::commit`] answers. (An earlier layout committed with
//! `NORMAL` and had a second task `fdatasync` the WAL to overlap the sync with the next
//! commit; each batch then crossed two more threads, and the append bench did 58,000
//! events/s at 64 writers against 75,000 now.)

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous};

use super::{AuditError, EntryRow, LogBackend, LogId, NewEntry, frontier_of, hash_of, plan, unavailable};
use crate::merkle::{self, Hash};
use crate::tree::{Frontier, Node, Stored};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Rows per INSERT statement (5 parameters each, under SQLite's parameter limit).
const ROWS_PER_INSERT: usize = 6000;

pub struct SqliteLog {
    pool: SqlitePool,
    /// Every log's head, as last committed by this process (the only writer of the
    /// file); `None` after a failed commit, to be re-read.
    heads: std::sync::Mutex<Option<HashMap<LogId, Frontier>>>,
}

fn entry_row(r: &SqliteRow) -> Result<EntryRow, AuditError> {
    Ok(EntryRow { index: r.get::<i64, _>(0) as u64, event_hash: r.get(1), leaf: hash_of(r.get::<&[u8], _>(2))?, json: r.get(3) })
}

impl SqliteLog {
    pub async fn open(path: &Path) -> Result<Self, AuditError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(unavailable)?;
        }
        let options = SqliteConnectOptions::from_str("sqlite:")
            .map_err(unavailable)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Every commit durable before it returns (see the module docs).
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        // No ping before each acquire: a local file does not go away, and the ping is a
        // round trip to SQLite's thread per batch.
        let pool = SqlitePoolOptions::new().max_connections(4).test_before_acquire(false).connect_with(options).await.map_err(unavailable)?;
        MIGRATOR.run(&pool).await.map_err(unavailable)?;
        let log = SqliteLog { pool, heads: std::sync::Mutex::new(None) };
        log.import_legacy().await?;
        Ok(log)
    }

    /// Moves events written before the Merkle layout (table `audit_events_legacy`)
    /// into it, once, keeping their order and indexes.
    async fn import_legacy(&self) -> Result<(), AuditError> {
        let imported: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_entries").fetch_one(&self.pool).await.map_err(unavailable)?;
        if imported > 0 {
            return Ok(());
        }
        let rows = sqlx::query("SELECT log, event FROM audit_events_legacy ORDER BY log, idx").fetch_all(&self.pool).await.map_err(unavailable)?;
        if rows.is_empty() {
            return Ok(());
        }
        let batch: Vec<NewEntry> = rows
            .iter()
            .filter_map(|r| {
                let log = LogId::parse(r.get::<&str, _>(0))?;
                let json: String = r.get(1);
                Some(NewEntry { log, event_hash: runplane_cjson::sha256_hex(json.as_bytes()), leaf: merkle::leaf_hash(json.as_bytes()), json, journal: None })
            })
            .collect();
        tracing::info!(events = batch.len(), "moving audit events into the verifiable-log layout");
        self.commit(&batch).await.map(drop)
    }

    /// The heads of the batch's logs (only those: a batch should not copy every
    /// tenant's head), read from the file when not cached.
    async fn cached_heads(&self, batch: &[NewEntry]) -> Result<HashMap<LogId, Frontier>, AuditError> {
        let cached = self.heads.lock().unwrap_or_else(|p| p.into_inner()).is_some();
        if !cached {
            let all: HashMap<LogId, Frontier> = self.heads().await?.into_iter().collect();
            *self.heads.lock().unwrap_or_else(|p| p.into_inner()) = Some(all);
        }
        let guard = self.heads.lock().unwrap_or_else(|p| p.into_inner());
        let all = guard.as_ref().ok_or_else(|| AuditError::Unavailable("the audit heads could not be read".into()))?;
        Ok(batch.iter().filter_map(|e| all.get(&e.log).map(|f| (e.log.clone(), f.clone()))).collect())
    }
}

#[async_trait::async_trait]
impl LogBackend for SqliteLog {
    async fn commit(&self, batch: &[NewEntry]) -> Result<Vec<u64>, AuditError> {
        let heads = self.cached_heads(batch).await?;
        let plan = plan(heads, batch);

        // The whole batch is one script — BEGIN IMMEDIATE, multi-row inserts, the heads,
        // COMMIT — so it costs one round trip to SQLite's thread, not one per statement.
        // Anonymous parameters number on across the statements.
        let mut script = sqlx::QueryBuilder::<sqlx::Sqlite>::new("BEGIN IMMEDIATE; ");
        let rows: Vec<(&NewEntry, u64)> = batch.iter().zip(plan.indexes.iter().copied()).collect();
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            script.push("INSERT INTO audit_entries (log, idx, event_hash, leaf_hash, event) ");
            script.push_values(chunk, |mut row, (e, index)| {
                row.push_bind(e.log.as_str()).push_bind(*index as i64).push_bind(&e.event_hash).push_bind(&e.leaf[..]).push_bind(&e.json);
            });
            script.push("; ");
        }
        for chunk in plan.nodes.chunks(ROWS_PER_INSERT) {
            script.push("INSERT INTO audit_nodes (log, level, idx, hash) ");
            script.push_values(chunk, |mut row, (log, node, hash)| {
                row.push_bind(log.as_str()).push_bind(node.level as i64).push_bind(node.index as i64).push_bind(&hash[..]);
            });
            script.push("; ");
        }
        let journals: Vec<(&str, &str, &str, u64)> = rows
            .iter()
            .filter_map(|(e, index)| e.journal.as_ref().map(|(id, j)| (id.as_str(), e.log.as_str(), j.as_str(), *index)))
            .collect();
        for chunk in journals.chunks(ROWS_PER_INSERT) {
            script.push("INSERT INTO audit_journals (invocation_id, log, idx, journal) ");
            script.push_values(chunk, |mut row, (id, log, journal, index)| {
                row.push_bind(*id).push_bind(*log).push_bind(*index as i64).push_bind(*journal);
            });
            script.push("; ");
        }
        script.push("INSERT INTO audit_heads (log, size, frontier) ");
        script.push_values(&plan.heads, |mut row, (log, f)| {
            row.push_bind(log.as_str()).push_bind(f.size() as i64).push_bind(f.to_bytes());
        });
        script.push(" ON CONFLICT (log) DO UPDATE SET size = excluded.size, frontier = excluded.frontier; COMMIT;");

        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        match script.build().execute(&mut *conn).await {
            Ok(_) => {
                let mut cache = self.heads.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(cache) = cache.as_mut() {
                    cache.extend(plan.heads);
                }
                Ok(plan.indexes)
            }
            Err(e) => {
                // Nothing of the batch stays; the cached heads are re-read next time.
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                *self.heads.lock().unwrap_or_else(|p| p.into_inner()) = None;
                Err(unavailable(e))
            }
        }
    }

    async fn heads(&self) -> Result<Vec<(LogId, Frontier)>, AuditError> {
        let rows = sqlx::query("SELECT log, size, frontier FROM audit_heads ORDER BY log").fetch_all(&self.pool).await.map_err(unavailable)?;
        rows.iter()
            .filter_map(|r| LogId::parse(r.get::<&str, _>(0)).map(|l| (l, r)))
            .map(|(l, r)| Ok((l.clone(), frontier_of(l.as_str(), r.get(1), r.get::<&[u8], _>(2))?)))
            .collect()
    }

    async fn head(&self, log: &LogId) -> Result<Option<Frontier>, AuditError> {
        let row = sqlx::query("SELECT size, frontier FROM audit_heads WHERE log = ?1").bind(log.as_str()).fetch_optional(&self.pool).await.map_err(unavailable)?;
        row.map(|r| frontier_of(log.as_str(), r.get(0), r.get::<&[u8], _>(1))).transpose()
    }

    async fn entries(&self, log: &LogId, from: u64, limit: u32) -> Result<Vec<EntryRow>, AuditError> {
        let rows = sqlx::query("SELECT idx, event_hash, leaf_hash, event FROM audit_entries WHERE log = ?1 AND idx >= ?2 ORDER BY idx LIMIT ?3")
            .bind(log.as_str())
            .bind(from as i64)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter().map(entry_row).collect()
    }

    async fn stored(&self, log: &LogId, ranges: &[(u32, u64, u64)]) -> Result<Stored, AuditError> {
        let mut out = Stored::new();
        for &(level, first, end) in ranges {
            let rows = if level == 0 {
                sqlx::query("SELECT idx, leaf_hash FROM audit_entries WHERE log = ?1 AND idx >= ?2 AND idx < ?3")
                    .bind(log.as_str())
                    .bind(first as i64)
                    .bind(end as i64)
                    .fetch_all(&self.pool)
                    .await
            } else {
                sqlx::query("SELECT idx, hash FROM audit_nodes WHERE log = ?1 AND level = ?2 AND idx >= ?3 AND idx < ?4")
                    .bind(log.as_str())
                    .bind(level as i64)
                    .bind(first as i64)
                    .bind(end as i64)
                    .fetch_all(&self.pool)
                    .await
            }
            .map_err(unavailable)?;
            for r in rows {
                out.insert(Node { level, index: r.get::<i64, _>(0) as u64 }, hash_of(r.get::<&[u8], _>(1))?);
            }
        }
        Ok(out)
    }

    async fn interior(&self, log: &LogId) -> Result<Stored, AuditError> {
        let rows = sqlx::query("SELECT level, idx, hash FROM audit_nodes WHERE log = ?1").bind(log.as_str()).fetch_all(&self.pool).await.map_err(unavailable)?;
        rows.iter().map(|r| Ok((Node { level: r.get::<i64, _>(0) as u32, index: r.get::<i64, _>(1) as u64 }, hash_of(r.get::<&[u8], _>(2))?))).collect()
    }

    async fn checkpoints(&self, log: &LogId) -> Result<Vec<(u64, Hash, String)>, AuditError> {
        let rows = sqlx::query("SELECT size, root, note FROM audit_checkpoints WHERE log = ?1 ORDER BY size").bind(log.as_str()).fetch_all(&self.pool).await.map_err(unavailable)?;
        rows.iter().map(|r| Ok((r.get::<i64, _>(0) as u64, hash_of(r.get::<&[u8], _>(1))?, r.get(2)))).collect()
    }

    async fn journal(&self, invocation_id: &str) -> Result<Option<(LogId, u64, String)>, AuditError> {
        let row = sqlx::query("SELECT log, idx, journal FROM audit_journals WHERE invocation_id = ?1")
            .bind(invocation_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(row.and_then(|r| Some((LogId::parse(r.get::<&str, _>(0))?, r.get::<i64, _>(1) as u64, r.get(2)))))
    }

    async fn save_checkpoint(&self, log: &LogId, size: u64, root: &Hash, note: &str) -> Result<(), AuditError> {
        sqlx::query("INSERT INTO audit_checkpoints (log, size, root, note) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (log, size) DO NOTHING")
            .bind(log.as_str())
            .bind(size as i64)
            .bind(&root[..])
            .bind(note)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

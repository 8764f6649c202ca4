//! Audit logs on MySQL / MariaDB, in a database of their own (`<database>_audit`, with
//! its own migration history), shared by every node of an instance. As on PostgreSQL,
//! a batch makes sure its logs have a head row, then locks those rows (`FOR UPDATE`,
//! in log order), so another node's batch on the same log waits.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::{ConnectOptions as _, Connection as _, Row};

use super::{AuditError, EntryRow, JournalCodec, JournalRow, JournalUsage, LogBackend, LogId, NewEntry, Pending, StaleJournal, frontier_of, hash_of, plan, writer};
use crate::merkle::Hash;
use crate::tree::{Frontier, Node, Stored};


/// Rows per INSERT statement (5 parameters each, under MySQL's 65,535).
const ROWS_PER_INSERT: usize = 6000;

pub struct MySqlLog {
    pool: MySqlPool,
}

fn log_of(r: &MySqlRow, i: usize) -> String {
    String::from_utf8_lossy(r.get::<&[u8], _>(i)).into_owned()
}

fn entry_row(r: &MySqlRow) -> Result<EntryRow, AuditError> {
    Ok(EntryRow { index: r.get::<i64, _>(0) as u64, event_hash: r.get(1), leaf: hash_of(r.get::<&[u8], _>(2))?, json: r.get(3) })
}

/// An error without the URL (sqlx errors can carry it).
fn my_unavailable(e: sqlx::Error) -> AuditError {
    match e {
        sqlx::Error::Database(d) => AuditError::Unavailable(format!("MySQL: {}", d.message())),
        sqlx::Error::PoolTimedOut => AuditError::Unavailable("MySQL did not answer in time".into()),
        other => AuditError::Unavailable(format!("MySQL: {}", other.to_string().split(" (").next().unwrap_or("connection failed"))),
    }
}

impl MySqlLog {
    /// Creates the audit database `database` if missing (through `server`), migrates it
    /// and connects.
    pub async fn connect(server: MySqlConnectOptions, database: &str, timeout: Duration) -> Result<Self, AuditError> {
        if database.is_empty() || !database.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
            return Err(AuditError::Invalid(format!("audit database name {database:?} must be a-z, 0-9 and '_'")));
        }
        let mut conn = tokio::time::timeout(timeout, server.clone().disable_statement_logging().connect())
            .await
            .map_err(|_| AuditError::Unavailable("MySQL did not answer in time".into()))?
            .map_err(my_unavailable)?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE IF NOT EXISTS `{database}`"))).execute(&mut conn).await.map_err(my_unavailable)?;
        let _ = conn.close().await;
        let pool = MySqlPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(timeout)
            .connect_with(server.database(database))
            .await
            .map_err(my_unavailable)?;
        // sqlx locks MySQL migrations with GET_LOCK(name, -1), which MariaDB answers at
        // once with 0, so nodes starting together would migrate at once: take the lock
        // here, checked, and run the migrations on the connection holding it.
        let mut conn = pool.acquire().await.map_err(my_unavailable)?;
        let locked: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK('runplane_audit_migrations', ?)")
            .bind(timeout.as_secs().max(1) as i64 * 6)
            .fetch_one(&mut *conn)
            .await
            .map_err(my_unavailable)?;
        if locked != Some(1) {
            return Err(AuditError::Unavailable("another node held the audit store's migration lock for too long; start this node again".into()));
        }
        let mut migrator = sqlx::migrate!("./migrations/mysql");
        migrator.set_locking(false);
        let ran = migrator.run(&mut *conn).await;
        let _ = sqlx::query("SELECT RELEASE_LOCK('runplane_audit_migrations')").execute(&mut *conn).await;
        ran.map_err(|e| AuditError::Unavailable(format!("migrating the MySQL audit store: {e}")))?;
        drop(conn);
        Ok(MySqlLog { pool })
    }
}

#[async_trait::async_trait]
impl LogBackend for MySqlLog {
    async fn commit(&self, batch: &[NewEntry]) -> Result<Vec<u64>, AuditError> {
        // Two nodes creating or locking heads at once can deadlock in InnoDB, which then
        // rolls one batch back and asks for a retry: do so.
        let mut attempt = 0;
        loop {
            match self.commit_once(batch).await {
                Err(sqlx::Error::Database(d)) if d.code().as_deref() == Some("40001") && attempt < 8 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(2 << attempt.min(6))).await;
                }
                Err(e) => return Err(my_unavailable(e)),
                Ok(result) => return result,
            }
        }
    }

    async fn heads(&self) -> Result<Vec<(LogId, Frontier)>, AuditError> {
        let rows = sqlx::query("SELECT log, size, frontier FROM audit_heads WHERE size > 0 ORDER BY log").fetch_all(&self.pool).await.map_err(my_unavailable)?;
        rows.iter()
            .filter_map(|r| LogId::parse(&log_of(r, 0)).map(|l| (l, r)))
            .map(|(l, r)| Ok((l.clone(), frontier_of(l.as_str(), r.get(1), r.get::<&[u8], _>(2))?)))
            .collect()
    }

    async fn head(&self, log: &LogId) -> Result<Option<Frontier>, AuditError> {
        let row = sqlx::query("SELECT size, frontier FROM audit_heads WHERE log = ? AND size > 0")
            .bind(log.as_str().as_bytes())
            .fetch_optional(&self.pool)
            .await
            .map_err(my_unavailable)?;
        row.map(|r| frontier_of(log.as_str(), r.get(0), r.get::<&[u8], _>(1))).transpose()
    }

    async fn entries(&self, log: &LogId, from: u64, limit: u32) -> Result<Vec<EntryRow>, AuditError> {
        let rows = sqlx::query("SELECT idx, event_hash, leaf_hash, event FROM audit_entries WHERE log = ? AND idx >= ? ORDER BY idx LIMIT ?")
            .bind(log.as_str().as_bytes())
            .bind(from as i64)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(my_unavailable)?;
        rows.iter().map(entry_row).collect()
    }

    async fn stored(&self, log: &LogId, ranges: &[(u32, u64, u64)]) -> Result<Stored, AuditError> {
        let mut out = Stored::new();
        for &(level, first, end) in ranges {
            let rows = if level == 0 {
                sqlx::query("SELECT idx, leaf_hash FROM audit_entries WHERE log = ? AND idx >= ? AND idx < ?")
                    .bind(log.as_str().as_bytes())
                    .bind(first as i64)
                    .bind(end as i64)
                    .fetch_all(&self.pool)
                    .await
            } else {
                sqlx::query("SELECT idx, hash FROM audit_nodes WHERE log = ? AND level = ? AND idx >= ? AND idx < ?")
                    .bind(log.as_str().as_bytes())
                    .bind(level as i32)
                    .bind(first as i64)
                    .bind(end as i64)
                    .fetch_all(&self.pool)
                    .await
            }
            .map_err(my_unavailable)?;
            for r in rows {
                out.insert(Node { level, index: r.get::<i64, _>(0) as u64 }, hash_of(r.get::<&[u8], _>(1))?);
            }
        }
        Ok(out)
    }

    async fn interior(&self, log: &LogId) -> Result<Stored, AuditError> {
        let rows = sqlx::query("SELECT level, idx, hash FROM audit_nodes WHERE log = ?").bind(log.as_str().as_bytes()).fetch_all(&self.pool).await.map_err(my_unavailable)?;
        rows.iter().map(|r| Ok((Node { level: r.get::<i32, _>(0) as u32, index: r.get::<i64, _>(1) as u64 }, hash_of(r.get::<&[u8], _>(2))?))).collect()
    }

    async fn checkpoints(&self, log: &LogId) -> Result<Vec<(u64, Hash, String)>, AuditError> {
        let rows = sqlx::query("SELECT size, root, note FROM audit_checkpoints WHERE log = ? ORDER BY size")
            .bind(log.as_str().as_bytes())
            .fetch_all(&self.pool)
            .await
            .map_err(my_unavailable)?;
        rows.iter().map(|r| Ok((r.get::<i64, _>(0) as u64, hash_of(r.get::<&[u8], _>(1))?, r.get(2)))).collect()
    }

    fn start_writer(self: std::sync::Arc<Self>, rx: tokio::sync::mpsc::Receiver<Pending>) -> Result<(), AuditError> {
        // A server round trip is slower than the appends arriving: batches fill by themselves.
        tokio::spawn(writer(self, rx));
        Ok(())
    }

    async fn journal(&self, invocation_id: &str) -> Result<Option<JournalRow>, AuditError> {
        let row = sqlx::query("SELECT log, idx, codec, body, archive FROM audit_journal_rows WHERE invocation_id = ?")
            .bind(invocation_id.as_bytes())
            .fetch_optional(&self.pool)
            .await
            .map_err(my_unavailable)?;
        let Some(r) = row else { return Ok(None) };
        let Some(log) = LogId::parse(&log_of(&r, 0)) else { return Ok(None) };
        Ok(Some(JournalRow { log, index: r.get::<i64, _>(1) as u64, codec: JournalCodec::from_stored(i64::from(r.get::<i16, _>(2)))?, body: r.get(3), archive: r.get(4) }))
    }

    async fn stale_journals(&self, log: &LogId, recorded_before: u64, limit: u32) -> Result<Vec<StaleJournal>, AuditError> {
        let rows = sqlx::query(
            "SELECT invocation_id, idx, recorded_at, codec, body FROM audit_journal_rows WHERE hot = 1 AND log = ? AND recorded_at < ? ORDER BY recorded_at LIMIT ?",
        )
        .bind(log.as_str().as_bytes())
        .bind(recorded_before as i64)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(my_unavailable)?;
        rows.iter()
            .map(|r| {
                Ok(StaleJournal {
                    invocation_id: log_of(r, 0),
                    index: r.get::<i64, _>(1) as u64,
                    recorded_at: r.get::<i64, _>(2) as u64,
                    codec: JournalCodec::from_stored(i64::from(r.get::<i16, _>(3)))?,
                    body: r.get(4),
                })
            })
            .collect()
    }

    async fn mark_archived(&self, log: &LogId, digest: &str, invocation_ids: &[String], bytes: u64, now: u64) -> Result<(), AuditError> {
        let mut tx = self.pool.begin().await.map_err(my_unavailable)?;
        sqlx::query("INSERT IGNORE INTO audit_journal_archives (digest, log, journals, bytes, archived_at) VALUES (?, ?, ?, ?, ?)")
            .bind(digest)
            .bind(log.as_str().as_bytes())
            .bind(invocation_ids.len() as i64)
            .bind(bytes as i64)
            .bind(now as i64)
            .execute(&mut *tx)
            .await
            .map_err(my_unavailable)?;
        for chunk in invocation_ids.chunks(ROWS_PER_INSERT) {
            let mut update = sqlx::QueryBuilder::<sqlx::MySql>::new("UPDATE audit_journal_rows SET body = NULL, archive = ");
            update.push_bind(digest).push(" WHERE body IS NOT NULL AND invocation_id IN (");
            let mut list = update.separated(", ");
            for id in chunk {
                list.push_bind(id.as_bytes());
            }
            update.push(")");
            update.build().execute(&mut *tx).await.map_err(my_unavailable)?;
        }
        tx.commit().await.map_err(my_unavailable)
    }

    async fn journal_usage(&self) -> Result<JournalUsage, AuditError> {
        let r = sqlx::query(
            "SELECT CAST(COUNT(body) AS SIGNED), CAST(COALESCE(SUM(LENGTH(body)), 0) AS SIGNED), CAST(COUNT(*) - COUNT(body) AS SIGNED),
                    (SELECT CAST(COALESCE(SUM(bytes), 0) AS SIGNED) FROM audit_journal_archives) FROM audit_journal_rows",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(my_unavailable)?;
        Ok(JournalUsage { hot: r.get::<i64, _>(0) as u64, hot_bytes: r.get::<i64, _>(1) as u64, archived: r.get::<i64, _>(2) as u64, archived_bytes: r.get::<i64, _>(3) as u64 })
    }

    async fn save_checkpoint(&self, log: &LogId, size: u64, root: &Hash, note: &str) -> Result<(), AuditError> {
        sqlx::query("INSERT IGNORE INTO audit_checkpoints (log, size, root, note) VALUES (?, ?, ?, ?)")
            .bind(log.as_str().as_bytes())
            .bind(size as i64)
            .bind(&root[..])
            .bind(note)
            .execute(&self.pool)
            .await
            .map_err(my_unavailable)?;
        Ok(())
    }
}

impl MySqlLog {
    /// One attempt at a batch: `Err` is a database error (maybe a deadlock to retry).
    async fn commit_once(&self, batch: &[NewEntry]) -> Result<Result<Vec<u64>, AuditError>, sqlx::Error> {
        let mut logs: Vec<&str> = batch.iter().map(|e| e.log.as_str()).collect();
        logs.sort_unstable();
        logs.dedup();
        let mut tx = self.pool.begin().await?;
        let mut ensure = sqlx::QueryBuilder::<sqlx::MySql>::new("INSERT IGNORE INTO audit_heads (log, size, frontier) ");
        ensure.push_values(&logs, |mut row, log| {
            row.push_bind(log.as_bytes()).push("0").push("''");
        });
        ensure.build().execute(&mut *tx).await?;
        let mut lock = sqlx::QueryBuilder::<sqlx::MySql>::new("SELECT log, size, frontier FROM audit_heads WHERE log IN (");
        let mut list = lock.separated(", ");
        for log in &logs {
            list.push_bind(log.as_bytes());
        }
        lock.push(") ORDER BY log FOR UPDATE");
        let rows = lock.build().fetch_all(&mut *tx).await?;
        let mut heads = HashMap::new();
        for r in &rows {
            let log = log_of(r, 0);
            let f = match frontier_of(&log, r.get(1), r.get::<&[u8], _>(2)) {
                Ok(f) => f,
                Err(e) => return Ok(Err(e)),
            };
            heads.insert(LogId(log), f);
        }
        let plan = plan(heads, batch);

        let rows: Vec<(&NewEntry, u64)> = batch.iter().zip(plan.indexes.iter().copied()).collect();
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let mut insert = sqlx::QueryBuilder::<sqlx::MySql>::new("INSERT INTO audit_entries (log, idx, event_hash, leaf_hash, event) ");
            insert.push_values(chunk, |mut row, (e, index)| {
                row.push_bind(e.log.as_str().as_bytes()).push_bind(*index as i64).push_bind(&e.event_hash).push_bind(&e.leaf[..]).push_bind(&e.json);
            });
            insert.build().execute(&mut *tx).await?;
        }
        for chunk in plan.nodes.chunks(ROWS_PER_INSERT) {
            let mut insert = sqlx::QueryBuilder::<sqlx::MySql>::new("INSERT INTO audit_nodes (log, level, idx, hash) ");
            insert.push_values(chunk, |mut row, (log, node, hash)| {
                row.push_bind(log.as_str().as_bytes()).push_bind(node.level as i32).push_bind(node.index as i64).push_bind(&hash[..]);
            });
            insert.build().execute(&mut *tx).await?;
        }
        let journals: Vec<(&super::NewJournal, &str, u64)> = rows.iter().filter_map(|(e, index)| e.journal.as_ref().map(|j| (j, e.log.as_str(), *index))).collect();
        for chunk in journals.chunks(ROWS_PER_INSERT / 2) {
            let mut insert = sqlx::QueryBuilder::<sqlx::MySql>::new("INSERT INTO audit_journal_rows (invocation_id, log, idx, recorded_at, codec, body) ");
            insert.push_values(chunk, |mut row, (j, log, index)| {
                row.push_bind(j.invocation_id.as_bytes())
                    .push_bind(log.as_bytes())
                    .push_bind(*index as i64)
                    .push_bind(j.recorded_at as i64)
                    .push_bind(j.codec as i16)
                    .push_bind(&j.body);
            });
            insert.build().execute(&mut *tx).await?;
        }
        for (log, f) in &plan.heads {
            sqlx::query("UPDATE audit_heads SET size = ?, frontier = ? WHERE log = ?")
                .bind(f.size() as i64)
                .bind(f.to_bytes())
                .bind(log.as_str().as_bytes())
                .execute(&mut *tx)
                .await
                ?;
        }
        // Durable when it returns (innodb_flush_log_at_trx_commit=1).
        tx.commit().await?;
        Ok(Ok(plan.indexes))
    }
}

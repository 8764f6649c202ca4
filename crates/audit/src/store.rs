//! The append-only, group-committed store of audit events (SQLite under the data dir).

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::Row;
use tokio::sync::{mpsc, oneshot};

use crate::AuditEvent;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Most events one group commit writes.
const MAX_BATCH: usize = 4096;
/// Rows per INSERT statement (4 parameters each, under SQLite's parameter limit).
const ROWS_PER_INSERT: usize = 200;

/// Which log an event belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct LogId(String);

impl LogId {
    /// The log of a tenant's invocations and tenant-scoped actions.
    pub fn tenant(tenant: &str) -> Self {
        LogId(format!("tenant:{tenant}"))
    }
    /// The log of instance admin actions.
    pub fn admin() -> Self {
        LogId("admin".into())
    }
    /// Parses `admin` or `tenant:<id>`.
    pub fn parse(s: &str) -> Option<Self> {
        if s == "admin" {
            return Some(LogId::admin());
        }
        let t = s.strip_prefix("tenant:")?;
        runplane_ports::TenantId::new(t).ok().map(|t| LogId::tenant(t.as_str()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where an appended event landed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Receipt {
    pub log: LogId,
    pub index: u64,
    /// Lowercase hex SHA-256 of the event's canonical JSON.
    pub event_hash: String,
}

/// An event as stored, with its position.
#[derive(Debug, Clone, Serialize)]
pub struct StoredEvent {
    pub log: LogId,
    pub index: u64,
    pub event_hash: String,
    pub event: serde_json::Value,
}

/// Why the audit store failed. Callers must treat this as "the action was not
/// recorded" (fail closed).
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    #[error("audit store unavailable: {0}")]
    Unavailable(String),
    #[error("audit event could not be canonicalised: {0}")]
    Canonical(String),
    #[error("audit log {log} is corrupt at index {index}: {problem}")]
    Corrupt { log: String, index: u64, problem: String },
}

fn unavailable(e: impl std::fmt::Display) -> AuditError {
    AuditError::Unavailable(e.to_string())
}

struct Pending {
    log: LogId,
    hash: String,
    json: String,
    reply: oneshot::Sender<Result<Receipt, AuditError>>,
}

/// Handle to the audit store; cheap to clone.
#[derive(Clone)]
pub struct AuditStore {
    pool: SqlitePool,
    tx: mpsc::Sender<Pending>,
}

impl AuditStore {
    /// Opens (creating) the store at `path` and starts its group-commit writer.
    pub async fn open(path: &Path) -> Result<Self, AuditError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(unavailable)?;
        }
        let options = SqliteConnectOptions::from_str("sqlite:")
            .map_err(unavailable)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a committed group is on disk before any of its callers hear back.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await.map_err(unavailable)?;
        MIGRATOR.run(&pool).await.map_err(unavailable)?;

        let heads: HashMap<LogId, u64> = sqlx::query("SELECT log, MAX(idx) + 1 FROM audit_events GROUP BY log")
            .fetch_all(&pool)
            .await
            .map_err(unavailable)?
            .into_iter()
            .filter_map(|r| LogId::parse(r.get::<String, _>(0).as_str()).map(|l| (l, r.get::<i64, _>(1) as u64)))
            .collect();
        let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
        tokio::spawn(writer(pool.clone(), heads, rx));
        Ok(AuditStore { pool, tx })
    }

    /// Appends `event` to `log`; returns once it is durable.
    pub async fn append(&self, log: LogId, event: &AuditEvent) -> Result<Receipt, AuditError> {
        let json = event.canonical().map_err(|e| AuditError::Canonical(e.to_string()))?;
        let hash = runplane_cjson::sha256_hex(json.as_bytes());
        let (reply, wait) = oneshot::channel();
        self.tx
            .send(Pending { log, hash, json, reply })
            .await
            .map_err(|_| AuditError::Unavailable("the audit writer has stopped".into()))?;
        wait.await.map_err(|_| AuditError::Unavailable("the audit writer has stopped".into()))?
    }

    /// Events of `log` from index `from`, at most `limit`.
    pub async fn read(&self, log: &LogId, from: u64, limit: u32) -> Result<Vec<StoredEvent>, AuditError> {
        let rows = sqlx::query("SELECT idx, event_hash, event FROM audit_events WHERE log = ?1 AND idx >= ?2 ORDER BY idx LIMIT ?3")
            .bind(log.as_str())
            .bind(from as i64)
            .bind(i64::from(limit.clamp(1, 1000)))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.into_iter()
            .map(|r| {
                let index = r.get::<i64, _>(0) as u64;
                let text: String = r.get(2);
                let event = serde_json::from_str(&text).map_err(|e| AuditError::Corrupt {
                    log: log.as_str().into(),
                    index,
                    problem: e.to_string(),
                })?;
                Ok(StoredEvent { log: log.clone(), index, event_hash: r.get(1), event })
            })
            .collect()
    }

    /// The logs that exist and their sizes.
    pub async fn logs(&self) -> Result<Vec<(LogId, u64)>, AuditError> {
        let rows = sqlx::query("SELECT log, COUNT(*) FROM audit_events GROUP BY log ORDER BY log")
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(rows
            .into_iter()
            .filter_map(|r| LogId::parse(r.get::<String, _>(0).as_str()).map(|l| (l, r.get::<i64, _>(1) as u64)))
            .collect())
    }

    /// Recomputes every stored hash of `log` and checks indexes are dense.
    pub async fn verify(&self, log: &LogId) -> Result<u64, AuditError> {
        let rows = sqlx::query("SELECT idx, event_hash, event FROM audit_events WHERE log = ?1 ORDER BY idx")
            .bind(log.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        for (expected, r) in rows.iter().enumerate() {
            let index = r.get::<i64, _>(0) as u64;
            let corrupt = |problem: String| AuditError::Corrupt { log: log.as_str().into(), index, problem };
            if index != expected as u64 {
                return Err(corrupt(format!("expected index {expected}")));
            }
            let text: String = r.get(2);
            let hash = runplane_cjson::sha256_hex(text.as_bytes());
            if hash != r.get::<String, _>(1) {
                return Err(corrupt(format!("stored hash {} but the event hashes to {hash}", r.get::<String, _>(1))));
            }
        }
        Ok(rows.len() as u64)
    }
}

/// The single writer: takes everything queued, writes it in one transaction, then
/// answers every caller. Batches grow with load, so throughput rises with concurrency.
async fn writer(pool: SqlitePool, mut heads: HashMap<LogId, u64>, mut rx: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let mut next = heads.clone();
        let mut receipts = Vec::with_capacity(batch.len());
        for p in &batch {
            let head = next.entry(p.log.clone()).or_insert(0);
            receipts.push(Receipt { log: p.log.clone(), index: *head, event_hash: p.hash.clone() });
            *head += 1;
        }
        match write_batch(&pool, &batch, &receipts).await {
            Ok(()) => {
                heads = next;
                for (p, r) in batch.drain(..).zip(receipts) {
                    let _ = p.reply.send(Ok(r));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, events = batch.len(), "audit group commit failed; the actions are reported as failed");
                for p in batch.drain(..) {
                    let _ = p.reply.send(Err(unavailable(&e)));
                }
            }
        }
    }
}

async fn write_batch(pool: &SqlitePool, batch: &[Pending], receipts: &[Receipt]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    // Multi-row inserts: one statement per ROWS_PER_INSERT events, not one per event.
    let rows: Vec<(&Pending, &Receipt)> = batch.iter().zip(receipts).collect();
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let mut insert = sqlx::QueryBuilder::<sqlx::Sqlite>::new("INSERT INTO audit_events (log, idx, event_hash, event) ");
        insert.push_values(chunk, |mut row, (p, r)| {
            row.push_bind(r.log.as_str()).push_bind(r.index as i64).push_bind(&p.hash).push_bind(&p.json);
        });
        insert.build().execute(&mut *tx).await?;
    }
    tx.commit().await
}

//! Audit logs in a SQLite file under the data dir (the embedded default).
//!
//! **Writes** go through one thread that owns one connection ([`Writer`]): it takes
//! every queued append straight from the store's channel, commits them as one
//! `BEGIN IMMEDIATE … COMMIT` with cached prepared statements, and answers the callers;
//! whatever queued meanwhile is the next batch, so a batch is exactly what arrived
//! while the previous fsync was in flight. Commits run with `synchronous=FULL`: in WAL
//! mode SQLite syncs the WAL (commit frame included) before the commit returns, so a
//! batch is durable when its callers are answered. No async hop sits between the
//! channel and the file (an earlier layout went through sqlx's worker thread, one more
//! wake-up per batch each way).
//!
//! **Checkpoints** (copying the WAL back into the file) never run on the commit path:
//! the writer's connection has automatic checkpoints off, and a second thread
//! ([`checkpointer`]) runs passive checkpoints beside the writer. When the WAL passes
//! [`WAL_RESTART_PAGES`] it catches up with more passive passes, then takes the
//! writer's lock between two batches and restarts the WAL from its beginning, which
//! bounds the WAL file; the writer waits on that lock (woken the moment it is free),
//! never in SQLite's busy handler, whose sleeps grow to 100 ms.
//!
//! **Events** are stored packed (zstd against a built-in dictionary, [`packed`]): about a
//! third of their canonical JSON, which is what they unpack to on every read.
//!
//! **Reads** (entries, proofs, journals, checkpoints) use a small sqlx pool: WAL readers
//! never wait for the writer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{TransactionBehavior, params};
use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use tokio::sync::mpsc;

use super::packed::{self, EventCodec};
use super::{
    AuditError, EntryRow, JournalCodec, JournalRow, LogBackend, LogId, NewEntry, Pending, StaleJournal, frontier_of, hash_of, plan, run_blocking_writer,
    unavailable,
};
use crate::merkle::{self, Hash};
use crate::tree::{Frontier, Node, Stored};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// WAL pages after which the checkpointer restarts the WAL from its beginning (briefly
/// holding the writer back); below it, checkpoints are passive. 16,384 pages of 4 KiB
/// is 64 MiB.
const WAL_RESTART_PAGES: i64 = 16_384;
/// How often the checkpointer looks at the WAL.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);
/// Before a restart, passive passes continue (at most [`CATCH_UP_PASSES`]) while more
/// than this many WAL pages are left uncopied, so the writer is held back only for what
/// was appended during the last pass.
const CATCH_UP_PAGES: i64 = 1_024;
const CATCH_UP_PASSES: usize = 4;

pub struct SqliteLog {
    pool: SqlitePool,
    /// The writer's state; the writer thread holds the lock for one batch at a time.
    writer: Arc<Mutex<Writer>>,
    path: PathBuf,
}

/// The one connection that writes, with every log's head as it last committed them
/// (this process is the file's only writer).
struct Writer {
    conn: rusqlite::Connection,
    /// `None` after a failed commit: re-read before the next.
    heads: Option<HashMap<LogId, Frontier>>,
}

/// An entry from `SELECT idx, event_hash, leaf_hash, event, codec`.
fn entry_row(r: &SqliteRow) -> Result<EntryRow, AuditError> {
    let json = EventCodec::from_stored(r.get(4))?.unpack(r.get(3))?;
    Ok(EntryRow { index: r.get::<i64, _>(0) as u64, event_hash: r.get(1), leaf: hash_of(r.get::<&[u8], _>(2))?, json })
}

/// Opens a connection to the file with the pragmas every connection here uses.
fn connect(path: &Path) -> Result<rusqlite::Connection, AuditError> {
    let conn = rusqlite::Connection::open(path).map_err(unavailable)?;
    conn.busy_handler(Some(wait_briefly)).map_err(unavailable)?;
    conn.pragma_update(None, "journal_mode", "wal").map_err(unavailable)?;
    conn.pragma_update(None, "synchronous", "full").map_err(unavailable)?;
    Ok(conn)
}

/// SQLite's busy handler for this file's connections: retries every 100 µs, 100,000
/// times (ten seconds of sleeps, a little more with their overshoot). SQLite's own
/// sleeps back off to 100 ms, far longer than the lock a checkpoint or another
/// connection holds here.
fn wait_briefly(attempt: i32) -> bool {
    const EVERY: Duration = Duration::from_micros(100);
    const ATTEMPTS: i32 = 100_000;
    if attempt >= ATTEMPTS {
        return false;
    }
    std::thread::sleep(EVERY);
    true
}

impl Writer {
    fn open(path: &Path) -> Result<Self, AuditError> {
        let conn = connect(path)?;
        // Checkpoints are the checkpointer's (see the module docs).
        conn.pragma_update(None, "wal_autocheckpoint", 0).map_err(unavailable)?;
        // The pages a batch touches stay cached between batches.
        conn.pragma_update(None, "cache_size", -16_384).map_err(unavailable)?;
        let mut writer = Writer { conn, heads: None };
        writer.import_legacy()?;
        Ok(writer)
    }

    fn load_heads(&mut self) -> Result<&mut HashMap<LogId, Frontier>, AuditError> {
        if self.heads.is_none() {
            let mut heads = HashMap::new();
            let mut stmt = self.conn.prepare_cached("SELECT log, size, frontier FROM audit_heads").map_err(unavailable)?;
            let mut rows = stmt.query([]).map_err(unavailable)?;
            while let Some(r) = rows.next().map_err(unavailable)? {
                let log: String = r.get(0).map_err(unavailable)?;
                let (size, bytes): (i64, Vec<u8>) = (r.get(1).map_err(unavailable)?, r.get(2).map_err(unavailable)?);
                if let Some(id) = LogId::parse(&log) {
                    heads.insert(id, frontier_of(&log, size, &bytes)?);
                }
            }
            self.heads = Some(heads);
        }
        self.heads.as_mut().ok_or_else(|| AuditError::Unavailable("the audit heads could not be read".into()))
    }

    /// Writes `batch` in one durable transaction; the indexes it got, in batch order.
    fn commit(&mut self, batch: &[NewEntry]) -> Result<Vec<u64>, AuditError> {
        let result = self.commit_inner(batch);
        if result.is_err() {
            // Nothing of the batch stays (the transaction rolled back); re-read the heads.
            self.heads = None;
        }
        result
    }

    fn commit_inner(&mut self, batch: &[NewEntry]) -> Result<Vec<u64>, AuditError> {
        let all = self.load_heads()?;
        let heads = batch.iter().filter_map(|e| all.get(&e.log).map(|f| (e.log.clone(), f.clone()))).collect();
        let plan = plan(heads, batch);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(unavailable)?;
        {
            let mut entry = tx
                .prepare_cached("INSERT INTO audit_entries (log, idx, event_hash, leaf_hash, event, codec) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
                .map_err(unavailable)?;
            let mut journal = tx
                .prepare_cached("INSERT INTO audit_journal_rows (invocation_id, log, idx, recorded_at, codec, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
                .map_err(unavailable)?;
            for (e, index) in batch.iter().zip(&plan.indexes) {
                let packed_here;
                let packed = match &e.packed {
                    Some(p) => p,
                    None => {
                        packed_here = packed::pack(&e.json)?;
                        &packed_here
                    }
                };
                entry.execute(params![e.log.as_str(), *index as i64, e.event_hash, &e.leaf[..], packed, EventCodec::ZstdV1 as i64]).map_err(unavailable)?;
                if let Some(j) = &e.journal {
                    journal.execute(params![j.invocation_id, e.log.as_str(), *index as i64, j.recorded_at as i64, j.codec as i64, j.body]).map_err(unavailable)?;
                }
            }
            let mut node = tx.prepare_cached("INSERT INTO audit_nodes (log, level, idx, hash) VALUES (?1, ?2, ?3, ?4)").map_err(unavailable)?;
            for (log, n, hash) in &plan.nodes {
                node.execute(params![log.as_str(), n.level as i64, n.index as i64, &hash[..]]).map_err(unavailable)?;
            }
            let mut head = tx
                .prepare_cached(
                    "INSERT INTO audit_heads (log, size, frontier) VALUES (?1, ?2, ?3) ON CONFLICT (log) DO UPDATE SET size = excluded.size, frontier = excluded.frontier",
                )
                .map_err(unavailable)?;
            for (log, f) in &plan.heads {
                head.execute(params![log.as_str(), f.size() as i64, f.to_bytes()]).map_err(unavailable)?;
            }
        }
        tx.commit().map_err(unavailable)?;
        if let Some(all) = self.heads.as_mut() {
            all.extend(plan.heads);
        }
        Ok(plan.indexes)
    }

    /// Moves events written before the Merkle layout (table `audit_events_legacy`)
    /// into it, once, keeping their order and indexes.
    fn import_legacy(&mut self) -> Result<(), AuditError> {
        let imported: i64 = self.conn.query_row("SELECT COUNT(*) FROM audit_entries", [], |r| r.get(0)).map_err(unavailable)?;
        if imported > 0 {
            return Ok(());
        }
        let legacy: Vec<(String, String)> = {
            let mut stmt = self.conn.prepare("SELECT log, event FROM audit_events_legacy ORDER BY log, idx").map_err(unavailable)?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(unavailable)?.collect::<Result<_, _>>().map_err(unavailable)?
        };
        if legacy.is_empty() {
            return Ok(());
        }
        let batch: Vec<NewEntry> = legacy
            .into_iter()
            .filter_map(|(log, json)| {
                let log = LogId::parse(&log)?;
                Some(NewEntry { log, event_hash: runplane_cjson::sha256_hex(json.as_bytes()), leaf: merkle::leaf_hash(json.as_bytes()), json, packed: None, journal: None })
            })
            .collect();
        tracing::info!(events = batch.len(), "moving audit events into the verifiable-log layout");
        self.commit(&batch).map(drop)
    }
}

/// Copies the WAL back into the file beside the writer until `stop` closes, then once
/// more. Passive checkpoints never block the writer, but under constant load they never
/// finish either (the writer appends while they copy), and SQLite can only start the
/// WAL from its beginning once every frame is copied. So past [`WAL_RESTART_PAGES`]
/// the checkpointer catches up with passive passes and then holds `writer` (between
/// two batches) for a restarting checkpoint, which copies the short rest and makes the
/// next batch write the WAL from its start: the WAL file stays bounded.
fn checkpointer(path: PathBuf, writer: Arc<Mutex<Writer>>, stop: std::sync::mpsc::Receiver<()>) {
    let conn = match connect(&path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "the audit checkpointer cannot open the store; the WAL will grow until restart");
            return;
        }
    };
    // Holding the writer, a restart waits for readers still on older WAL frames for at
    // most 50 ms; past that it gives up (copying what it could) and the next round
    // tries again.
    if let Err(e) = conn.busy_handler(Some(|attempt| attempt < 500 && wait_briefly(attempt))) {
        tracing::warn!(error = %e, "the audit checkpointer could not set its busy handler");
    }
    // (log frames, frames copied), or `None` after an error (logged).
    let checkpoint = |mode: &str| -> Option<(i64, i64)> {
        let sql = format!("PRAGMA wal_checkpoint({mode})");
        match conn.query_row(&sql, [], |r| Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))) {
            Ok(pages) => Some(pages),
            Err(e) => {
                tracing::warn!(error = %e, mode, "audit WAL checkpoint failed; retrying later");
                None
            }
        }
    };
    loop {
        let stopped = !matches!(stop.recv_timeout(CHECKPOINT_EVERY), Err(std::sync::mpsc::RecvTimeoutError::Timeout));
        let Some((wal, mut copied)) = checkpoint("PASSIVE").or(stopped.then_some((0, 0))) else { continue };
        if wal < WAL_RESTART_PAGES && !stopped {
            continue;
        }
        for _ in 0..CATCH_UP_PASSES {
            match checkpoint("PASSIVE") {
                Some((wal, done)) if wal - done > CATCH_UP_PAGES => copied = done,
                _ => break,
            }
        }
        let held = std::time::Instant::now();
        let guard = writer.lock().unwrap_or_else(|p| p.into_inner());
        checkpoint(if stopped { "TRUNCATE" } else { "RESTART" });
        drop(guard);
        tracing::debug!(wal_pages = wal, copied_before = copied, writer_held_us = held.elapsed().as_micros() as u64, "audit WAL restarted");
        if stopped {
            return;
        }
    }
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
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        // No ping before each acquire: a local file does not go away.
        let pool = SqlitePoolOptions::new().max_connections(4).test_before_acquire(false).connect_with(options).await.map_err(unavailable)?;
        MIGRATOR.run(&pool).await.map_err(unavailable)?;
        let file = path.to_path_buf();
        let writer = tokio::task::spawn_blocking(move || Writer::open(&file)).await.map_err(unavailable)??;
        Ok(SqliteLog { pool, writer: Arc::new(Mutex::new(writer)), path: path.to_path_buf() })
    }
}

#[async_trait::async_trait]
impl LogBackend for SqliteLog {
    async fn commit(&self, batch: &[NewEntry]) -> Result<Vec<u64>, AuditError> {
        let writer = self.writer.clone();
        let batch: Vec<NewEntry> = batch.to_vec();
        tokio::task::spawn_blocking(move || writer.lock().unwrap_or_else(|p| p.into_inner()).commit(&batch)).await.map_err(unavailable)?
    }

    fn start_writer(self: Arc<Self>, rx: mpsc::Receiver<Pending>) -> Result<(), AuditError> {
        let (stop, stopped) = std::sync::mpsc::channel();
        let path = self.path.clone();
        let writer = self.writer.clone();
        let held = self.writer.clone();
        std::thread::Builder::new().name("runplane-audit-ckpt".into()).spawn(move || checkpointer(path, held, stopped)).map_err(unavailable)?;
        std::thread::Builder::new()
            .name("runplane-audit-writer".into())
            .spawn(move || {
                run_blocking_writer(rx, |batch| writer.lock().unwrap_or_else(|p| p.into_inner()).commit(batch));
                drop(stop);
            })
            .map_err(unavailable)?;
        Ok(())
    }

    fn packs_events(&self) -> bool {
        true
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
        let rows = sqlx::query("SELECT idx, event_hash, leaf_hash, event, codec FROM audit_entries WHERE log = ?1 AND idx >= ?2 ORDER BY idx LIMIT ?3")
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

    async fn journal(&self, invocation_id: &str) -> Result<Option<JournalRow>, AuditError> {
        let row = sqlx::query("SELECT log, idx, codec, body, archive FROM audit_journal_rows WHERE invocation_id = ?1")
            .bind(invocation_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        let Some(r) = row else { return Ok(None) };
        let Some(log) = LogId::parse(r.get::<&str, _>(0)) else { return Ok(None) };
        Ok(Some(JournalRow {
            log,
            index: r.get::<i64, _>(1) as u64,
            codec: JournalCodec::from_stored(r.get(2))?,
            body: r.get(3),
            archive: r.get(4),
        }))
    }

    async fn stale_journals(&self, log: &LogId, recorded_before: u64, limit: u32) -> Result<Vec<StaleJournal>, AuditError> {
        let rows = sqlx::query(
            "SELECT invocation_id, idx, recorded_at, codec, body FROM audit_journal_rows INDEXED BY audit_journal_rows_hot
             WHERE log = ?1 AND body IS NOT NULL AND recorded_at < ?2 ORDER BY recorded_at LIMIT ?3",
        )
        .bind(log.as_str())
        .bind(recorded_before as i64)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok(StaleJournal {
                    invocation_id: r.get(0),
                    index: r.get::<i64, _>(1) as u64,
                    recorded_at: r.get::<i64, _>(2) as u64,
                    codec: JournalCodec::from_stored(r.get(3))?,
                    body: r.get(4),
                })
            })
            .collect()
    }

    async fn mark_archived(&self, log: &LogId, digest: &str, invocation_ids: &[String], bytes: u64, now: u64) -> Result<(), AuditError> {
        let writer = self.writer.clone();
        let (log, digest, ids) = (log.clone(), digest.to_owned(), invocation_ids.to_vec());
        tokio::task::spawn_blocking(move || {
            let mut w = writer.lock().unwrap_or_else(|p| p.into_inner());
            let tx = w.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(unavailable)?;
            tx.execute(
                "INSERT INTO audit_journal_archives (digest, log, journals, bytes, archived_at) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (digest) DO NOTHING",
                params![digest, log.as_str(), ids.len() as i64, bytes as i64, now as i64],
            )
            .map_err(unavailable)?;
            {
                let mut drop_body = tx
                    .prepare_cached("UPDATE audit_journal_rows SET body = NULL, archive = ?2 WHERE invocation_id = ?1 AND body IS NOT NULL")
                    .map_err(unavailable)?;
                for id in &ids {
                    drop_body.execute(params![id, digest]).map_err(unavailable)?;
                }
            }
            tx.commit().map_err(unavailable)
        })
        .await
        .map_err(unavailable)?
    }

    async fn journal_usage(&self) -> Result<super::JournalUsage, AuditError> {
        let row = sqlx::query(
            "SELECT COUNT(body), COALESCE(SUM(LENGTH(body)), 0), COUNT(*) - COUNT(body),
                    (SELECT COALESCE(SUM(bytes), 0) FROM audit_journal_archives) FROM audit_journal_rows",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(super::JournalUsage {
            hot: row.get::<i64, _>(0) as u64,
            hot_bytes: row.get::<i64, _>(1) as u64,
            archived: row.get::<i64, _>(2) as u64,
            archived_bytes: row.get::<i64, _>(3) as u64,
        })
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

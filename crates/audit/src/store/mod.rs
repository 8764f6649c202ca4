//! The verifiable, append-only, group-committed store of audit logs.
//!
//! One writer task per node takes every queued append, and one backend transaction
//! locks the heads of the logs involved, assigns dense indexes, writes the entries,
//! the stored subtree hashes ([`crate::tree`]) and the new heads, and commits
//! durably; only then are the callers answered. Appends that queue meanwhile form
//! the next batch (group commit). Several nodes may share a PostgreSQL store: the
//! head lock serialises their batches, so a log never forks.
//!
//! Backends (`sqlite`, `postgres`, `mysql`) only move rows; planning a batch,
//! assembling proofs, checking a log and archiving journals are here, once.
//!
//! **Journals** (what an invocation observed, for replay) are written with their
//! entry, compressed ([`JournalCodec`]). Past their retention window they move to an
//! archive on a blob backend ([`AuditStore::archive_journals`]): segments of one log's
//! journals, named by their SHA-256, after which the hot store keeps only which
//! segment holds each. The entries, their hashes and checkpoints never move, so a log
//! verifies the same before and after; a journal read back from an archive is checked
//! against the digest its event carries in the leaf (`details.journal_digest`).

mod mysql;
mod postgres;
mod sqlite;

mod archive;
mod packed;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::checkpoint::{Checkpoint, NoteSigner, NoteVerifier};
use crate::merkle::{self, Hash};
use crate::tree::{self, Frontier, Node, Stored};
use crate::AuditEvent;

pub use mysql::MySqlLog;
pub use postgres::PostgresLog;
pub use sqlite::SqliteLog;
pub use archive::{ARCHIVE_CONTAINER, ArchiveReport, JournalCodec, JournalUsage};
pub(crate) use archive::{JournalRow, NewJournal, StaleJournal};

/// Most events one group commit writes.
const MAX_BATCH: usize = 4096;
/// Entries read per query while checking a log.
const VERIFY_PAGE: u32 = 2000;

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

impl std::fmt::Display for LogId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
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
    /// Lowercase hex RFC 9162 leaf hash, `SHA-256(0x00 ‖ canonical JSON)`.
    pub leaf_hash: String,
    pub event: serde_json::Value,
}

/// A signed checkpoint of a log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignedCheckpoint {
    pub log: LogId,
    pub size: u64,
    /// Lowercase hex root hash.
    pub root: String,
    /// The C2SP signed note (checkpoint body, blank line, signature line).
    pub note: String,
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
    #[error("audit log {log} failed its integrity check and is not extended: {problem}; restore it from a backup or an export and restart")]
    Refused { log: String, problem: String },
    #[error("{0}")]
    Invalid(String),
    #[error("audit log {0} does not exist")]
    NoSuchLog(String),
}

pub(crate) fn unavailable(e: impl std::fmt::Display) -> AuditError {
    AuditError::Unavailable(e.to_string())
}

/// One event waiting for a group commit, hashed by its caller.
#[derive(Clone)]
pub(crate) struct NewEntry {
    pub log: LogId,
    pub event_hash: String,
    pub leaf: Hash,
    pub json: String,
    /// `json` packed ([`packed::pack`]) for a backend that [`LogBackend::packs_events`].
    pub packed: Option<Vec<u8>>,
    /// The invocation's journal, written with the entry, for replay.
    pub journal: Option<NewJournal>,
}

/// An entry as a backend returns it.
pub(crate) struct EntryRow {
    pub index: u64,
    pub event_hash: String,
    pub leaf: Hash,
    pub json: String,
}

/// A stored 32-byte hash, or why the row is unusable.
pub(crate) fn hash_of(bytes: &[u8]) -> Result<Hash, AuditError> {
    bytes.try_into().map_err(|_| AuditError::Unavailable(format!("a stored hash has {} bytes, not 32", bytes.len())))
}

/// A stored head (size and concatenated right-edge hashes).
pub(crate) fn frontier_of(log: &str, size: i64, bytes: &[u8]) -> Result<Frontier, AuditError> {
    Frontier::from_bytes(size as u64, bytes)
        .ok_or_else(|| AuditError::Corrupt { log: log.into(), index: size as u64, problem: "the stored head has the wrong number of hashes for its size".into() })
}

/// What one batch writes, computed from the locked heads.
pub(crate) struct Plan {
    /// The index of each batch entry, in batch order.
    pub indexes: Vec<u64>,
    pub nodes: Vec<(LogId, Node, Hash)>,
    pub heads: Vec<(LogId, Frontier)>,
}

/// Assigns indexes after the current heads and extends each log's tree.
pub(crate) fn plan(mut heads: HashMap<LogId, Frontier>, batch: &[NewEntry]) -> Plan {
    let mut indexes = Vec::with_capacity(batch.len());
    let mut nodes = Vec::new();
    for e in batch {
        let f = heads.entry(e.log.clone()).or_default();
        indexes.push(f.size());
        f.push(e.leaf, |n, h| nodes.push((e.log.clone(), n, h)));
    }
    let mut heads: Vec<_> = heads.into_iter().collect();
    heads.sort_by(|a, b| a.0.cmp(&b.0));
    Plan { indexes, nodes, heads }
}

/// The rows a backend keeps. Implementations only move rows; every rule is above.
#[async_trait::async_trait]
pub(crate) trait LogBackend: Send + Sync + 'static {
    /// In one transaction: lock the heads of the batch's logs, [`plan`], write the
    /// entries, nodes, journals and heads, commit. Returns each entry's index once the
    /// commit is durable (on disk, or on the server's disk).
    async fn commit(&self, batch: &[NewEntry]) -> Result<Vec<u64>, AuditError>;
    /// Whether this backend stores events packed ([`packed`]): appends then pack
    /// them on the caller's thread, not on the single writer's.
    fn packs_events(&self) -> bool {
        false
    }
    /// Starts the single writer that takes appends from `rx` and group-commits them:
    /// [`writer`] on a task for a network database, a thread of its own where the
    /// backend owns a file.
    fn start_writer(self: Arc<Self>, rx: mpsc::Receiver<Pending>) -> Result<(), AuditError>;
    /// Every log's head.
    async fn heads(&self) -> Result<Vec<(LogId, Frontier)>, AuditError>;
    async fn head(&self, log: &LogId) -> Result<Option<Frontier>, AuditError>;
    async fn entries(&self, log: &LogId, from: u64, limit: u32) -> Result<Vec<EntryRow>, AuditError>;
    /// The stored nodes in `(level, first, end)` ranges; level 0 are leaf hashes.
    async fn stored(&self, log: &LogId, ranges: &[(u32, u64, u64)]) -> Result<Stored, AuditError>;
    /// Every stored interior node of `log`.
    async fn interior(&self, log: &LogId) -> Result<Stored, AuditError>;
    /// Signed checkpoints of `log`, smallest size first: `(size, root, note)`.
    async fn checkpoints(&self, log: &LogId) -> Result<Vec<(u64, Hash, String)>, AuditError>;
    /// The journal row of an invocation: where its entry is, and its body or archive.
    async fn journal(&self, invocation_id: &str) -> Result<Option<JournalRow>, AuditError>;
    /// Journals of `log` still in the hot store recorded before `recorded_before`
    /// (unix seconds), oldest first, at most `limit`.
    async fn stale_journals(&self, log: &LogId, recorded_before: u64, limit: u32) -> Result<Vec<StaleJournal>, AuditError>;
    /// In one transaction: records archive segment `digest` of `log` (`bytes` long,
    /// holding `invocation_ids`) and drops those journals' bodies from the hot store.
    async fn mark_archived(&self, log: &LogId, digest: &str, invocation_ids: &[String], bytes: u64, now: u64) -> Result<(), AuditError>;
    /// How many journals are hot and archived, and their bytes (a full count: at open).
    async fn journal_usage(&self) -> Result<JournalUsage, AuditError>;
    /// Keeps a checkpoint (a second one of the same size is ignored: it is the same).
    async fn save_checkpoint(&self, log: &LogId, size: u64, root: &Hash, note: &str) -> Result<(), AuditError>;
}

/// An append waiting for the writer, with where to send its receipt.
pub(crate) struct Pending {
    entry: NewEntry,
    reply: oneshot::Sender<Result<Receipt, AuditError>>,
}

/// Handle to the audit store; cheap to clone.
#[derive(Clone)]
pub struct AuditStore {
    backend: Arc<dyn LogBackend>,
    tx: mpsc::Sender<Pending>,
    signer: Arc<NoteSigner>,
    /// Logs that failed their integrity check, with why; never extended.
    refused: Arc<RwLock<BTreeMap<LogId, String>>>,
    /// Journals hot and archived, kept current by appends and archiving.
    usage: Arc<Mutex<JournalUsage>>,
}

impl AuditStore {
    /// Opens (creating) the SQLite store at `path`.
    pub async fn open(path: &std::path::Path, signer: NoteSigner) -> Result<Self, AuditError> {
        let backend = SqliteLog::open(path).await?;
        Self::with_backend(Arc::new(backend), signer).await
    }

    /// Opens the store on PostgreSQL (the connection of a role that may create tables).
    pub async fn open_postgres(options: sqlx::postgres::PgConnectOptions, signer: NoteSigner, timeout: std::time::Duration) -> Result<Self, AuditError> {
        let backend = PostgresLog::connect(options, timeout).await?;
        Self::with_backend(Arc::new(backend), signer).await
    }

    /// Opens the store on MySQL / MariaDB, in its own database `database` (created if
    /// missing through `server`, a connection that may create databases).
    pub async fn open_mysql(server: sqlx::mysql::MySqlConnectOptions, database: &str, signer: NoteSigner, timeout: std::time::Duration) -> Result<Self, AuditError> {
        let backend = MySqlLog::connect(server, database, timeout).await?;
        Self::with_backend(Arc::new(backend), signer).await
    }

    async fn with_backend(backend: Arc<dyn LogBackend>, signer: NoteSigner) -> Result<Self, AuditError> {
        let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
        backend.clone().start_writer(rx)?;
        let usage = backend.journal_usage().await?;
        let store = AuditStore { backend, tx, signer: Arc::new(signer), refused: Default::default(), usage: Arc::new(Mutex::new(usage)) };
        store.check_all().await?;
        Ok(store)
    }

    /// Checks every log (the start-up check) and refuses to extend any that fails.
    /// Returns the logs that failed, with why.
    pub async fn check_all(&self) -> Result<Vec<(LogId, AuditError)>, AuditError> {
        let mut failed = Vec::new();
        for (log, _) in self.backend.heads().await? {
            match self.check(&log).await {
                Ok(_) => {}
                Err(e @ AuditError::Corrupt { .. }) => {
                    tracing::error!(%log, error = %e, "audit log failed its integrity check; it will not be extended");
                    self.refused.write().unwrap_or_else(|p| p.into_inner()).insert(log.clone(), e.to_string());
                    failed.push((log, e));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(failed)
    }

    /// The logs that failed their integrity check, with why.
    pub fn refused(&self) -> BTreeMap<LogId, String> {
        self.refused.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether `log` may be extended: an error naming why not if it failed its
    /// integrity check. Callers check before acting, so nothing unaudited happens.
    pub fn writable(&self, log: &LogId) -> Result<(), AuditError> {
        self.refuse_if_corrupt(log)
    }

    fn refuse_if_corrupt(&self, log: &LogId) -> Result<(), AuditError> {
        match self.refused.read().unwrap_or_else(|p| p.into_inner()).get(log) {
            Some(problem) => Err(AuditError::Refused { log: log.to_string(), problem: problem.clone() }),
            None => Ok(()),
        }
    }

    /// The public key checkpoints are signed with, as a note verifier key string.
    pub fn verifier(&self) -> NoteVerifier {
        self.signer.verifier()
    }

    /// The checkpoint origin of `log`: `<key name>/<log>`.
    pub fn origin(&self, log: &LogId) -> String {
        format!("{}/{}", self.signer.name(), log)
    }

    /// Appends `event` to `log`; returns once it is durable.
    pub async fn append(&self, log: LogId, event: &AuditEvent) -> Result<Receipt, AuditError> {
        self.append_entry(log, event, None).await
    }

    /// Appends an invocation's `event` and its journal (canonical JSON, whose digest
    /// the event should carry) in the same durable transaction. `recorded_at` (unix
    /// seconds, the caller's clock) starts the journal's retention window.
    pub async fn append_with_journal(&self, log: LogId, event: &AuditEvent, invocation_id: &str, journal: &str, recorded_at: u64) -> Result<Receipt, AuditError> {
        let journal = NewJournal::compress(invocation_id, journal, recorded_at)?;
        let bytes = journal.body.len() as u64;
        let receipt = self.append_entry(log, event, Some(journal)).await?;
        self.usage.lock().unwrap_or_else(|p| p.into_inner()).add_hot(1, bytes);
        Ok(receipt)
    }

    async fn append_entry(&self, log: LogId, event: &AuditEvent, journal: Option<NewJournal>) -> Result<Receipt, AuditError> {
        self.refuse_if_corrupt(&log)?;
        let json = event.canonical().map_err(|e| AuditError::Canonical(e.to_string()))?;
        let packed = if self.backend.packs_events() { Some(packed::pack(&json)?) } else { None };
        let entry = NewEntry { event_hash: runplane_cjson::sha256_hex(json.as_bytes()), leaf: merkle::leaf_hash(json.as_bytes()), json, packed, log, journal };
        let (reply, wait) = oneshot::channel();
        let stopped = || AuditError::Unavailable("the audit writer has stopped".into());
        self.tx.send(Pending { entry, reply }).await.map_err(|_| stopped())?;
        wait.await.map_err(|_| stopped())?
    }

    /// Journals hot and archived, with their bytes.
    pub fn journal_usage(&self) -> JournalUsage {
        *self.usage.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Events of `log` from index `from`, at most `limit` (≤ 1000).
    pub async fn read(&self, log: &LogId, from: u64, limit: u32) -> Result<Vec<StoredEvent>, AuditError> {
        if past_any_index(from) {
            return Ok(Vec::new());
        }
        let rows = self.backend.entries(log, from, limit.clamp(1, 1000)).await?;
        rows.into_iter()
            .map(|r| {
                let event = serde_json::from_str(&r.json)
                    .map_err(|e| AuditError::Corrupt { log: log.to_string(), index: r.index, problem: format!("stored event is not JSON: {e}") })?;
                Ok(StoredEvent { log: log.clone(), index: r.index, event_hash: r.event_hash, leaf_hash: hex::encode(r.leaf), event })
            })
            .collect()
    }

    /// Entries of `log` from `from` as stored: `(index, canonical JSON, leaf hash hex)`;
    /// the JSON is the exact leaf bytes, for export and offline verification.
    pub async fn read_raw(&self, log: &LogId, from: u64, limit: u32) -> Result<Vec<(u64, String, String)>, AuditError> {
        if past_any_index(from) {
            return Ok(Vec::new());
        }
        Ok(self.backend.entries(log, from, limit.clamp(1, 1000)).await?.into_iter().map(|r| (r.index, r.json, hex::encode(r.leaf))).collect())
    }

    /// The logs that exist and their sizes.
    pub async fn logs(&self) -> Result<Vec<(LogId, u64)>, AuditError> {
        let mut logs: Vec<_> = self.backend.heads().await?.into_iter().map(|(l, f)| (l, f.size())).collect();
        logs.sort();
        Ok(logs)
    }

    async fn head(&self, log: &LogId) -> Result<Frontier, AuditError> {
        self.backend.head(log).await?.ok_or_else(|| AuditError::NoSuchLog(log.to_string()))
    }

    /// The log's current size and root (unsigned; see [`AuditStore::checkpoint`]).
    pub async fn tree_head(&self, log: &LogId) -> Result<(u64, Hash), AuditError> {
        let f = self.head(log).await?;
        Ok((f.size(), f.root()))
    }

    async fn span_roots(&self, log: &LogId, spans: &[tree::Span]) -> Result<Vec<Hash>, AuditError> {
        let stored = self.backend.stored(log, &tree::stored_ranges(spans)).await?;
        spans
            .iter()
            .map(|s| {
                tree::span_root(*s, &stored)
                    .map_err(|m| AuditError::Corrupt { log: log.to_string(), index: m.0.index << m.0.level, problem: m.to_string() })
            })
            .collect()
    }

    /// The inclusion proof of entry `index` in the tree of `size` entries.
    pub async fn inclusion_proof(&self, log: &LogId, index: u64, size: u64) -> Result<Vec<Hash>, AuditError> {
        let have = self.head(log).await?.size();
        if size > have {
            return Err(AuditError::Invalid(format!("log {log} has {have} entries; ask for a proof at a size of at most {have}")));
        }
        let spans = tree::inclusion_spans(index, size)
            .ok_or_else(|| AuditError::Invalid(format!("index {index} is not below size {size}; the last entry of a tree of {size} is {}", size.saturating_sub(1))))?;
        self.span_roots(log, &spans).await
    }

    /// The consistency proof from the tree of `first` entries to the tree of `second`.
    pub async fn consistency_proof(&self, log: &LogId, first: u64, second: u64) -> Result<Vec<Hash>, AuditError> {
        let have = self.head(log).await?.size();
        if second > have {
            return Err(AuditError::Invalid(format!("log {log} has {have} entries; ask for a proof to a size of at most {have}")));
        }
        let spans = consistency_spans(first, second)?;
        self.span_roots(log, &spans).await
    }

    /// The root of the first `size` entries (for checking an old checkpoint).
    pub async fn root_at(&self, log: &LogId, size: u64) -> Result<Hash, AuditError> {
        let have = self.head(log).await?.size();
        if size > have {
            return Err(AuditError::Invalid(format!("log {log} has {have} entries, fewer than {size}")));
        }
        Ok(self.span_roots(log, &[(0, size)]).await?.pop().unwrap_or_else(merkle::empty_root))
    }

    /// Signs a checkpoint of `log` at its current size, unless the latest signed one
    /// is already at that size, and returns the latest. Before signing, the new tree
    /// is proven consistent with the latest signed checkpoint, so this store never
    /// signs two inconsistent checkpoints.
    pub async fn checkpoint(&self, log: &LogId) -> Result<SignedCheckpoint, AuditError> {
        self.refuse_if_corrupt(log)?;
        // The latest checkpoint first, then the head: heads only grow, so the head read
        // second is at least as large even while other nodes append and sign.
        let latest = self.backend.checkpoints(log).await?.pop();
        let head = self.head(log).await?;
        let (size, root) = (head.size(), head.root());
        let corrupt = |problem: String| AuditError::Corrupt { log: log.to_string(), index: size, problem };
        if let Some((last_size, last_root, note)) = latest {
            if last_size > size {
                return Err(corrupt(format!("a checkpoint of size {last_size} was signed but the log has only {size} entries")));
            }
            if last_size == size {
                if last_root != root {
                    return Err(corrupt(format!("the checkpoint of size {size} has root {} but the log's root is {}", hex::encode(last_root), hex::encode(root))));
                }
                return Ok(SignedCheckpoint { log: log.clone(), size, root: hex::encode(root), note });
            }
            let proof = self.consistency_proof(log, last_size, size).await?;
            merkle::verify_consistency(last_size, size, &proof, &last_root, &root)
                .map_err(|e| corrupt(format!("the tree is not consistent with the checkpoint of size {last_size}: {e}")))?;
        }
        let body = Checkpoint { origin: self.origin(log), size, root }.body();
        let note = self.signer.sign(&body).map_err(|e| AuditError::Unavailable(e.to_string()))?;
        self.backend.save_checkpoint(log, size, &root, &note).await?;
        Ok(SignedCheckpoint { log: log.clone(), size, root: hex::encode(root), note })
    }

    /// Every signed checkpoint of `log`, smallest first.
    pub async fn checkpoints(&self, log: &LogId) -> Result<Vec<SignedCheckpoint>, AuditError> {
        Ok(self
            .backend
            .checkpoints(log)
            .await?
            .into_iter()
            .map(|(size, root, note)| SignedCheckpoint { log: log.clone(), size, root: hex::encode(root), note })
            .collect())
    }

    /// Checks `log` end to end: dense indexes, every event against its stored hashes,
    /// every stored subtree hash, the head, and every signed checkpoint (root and
    /// signature). Returns the log's size, or where it first differs.
    pub async fn check(&self, log: &LogId) -> Result<u64, AuditError> {
        let corrupt = |index: u64, problem: String| AuditError::Corrupt { log: log.to_string(), index, problem };
        // Checkpoints, then the head, then only what the head covers: other nodes may
        // append meanwhile (heads only grow), and that is not corruption.
        let checkpoints = self.backend.checkpoints(log).await?;
        let head = self.head(log).await?;
        let covered = |n: &Node| (n.index + 1) << n.level <= head.size();
        let interior: Stored = self.backend.interior(log).await?.into_iter().filter(|(n, _)| covered(n)).collect();
        let verifier = self.signer.verifier();
        let mut pending = checkpoints.iter().peekable();
        let mut frontier = Frontier::default();
        let mut interior_seen = 0usize;
        let mut check_checkpoints = |frontier: &Frontier| -> Result<(), AuditError> {
            while let Some((size, root, note)) = pending.next_if(|c| c.0 == frontier.size()) {
                let cp = Checkpoint::open(note, &verifier).map_err(|e| corrupt(*size, format!("the checkpoint of size {size} does not verify: {e}")))?;
                if cp.size != *size || cp.root != *root || cp.origin != self.origin(log) {
                    return Err(corrupt(*size, format!("the signed checkpoint of size {size} does not match its stored size, root or origin")));
                }
                if frontier.root() != *root {
                    return Err(corrupt(
                        *size,
                        format!("the signed checkpoint of size {size} has root {} but the entries give {}", hex::encode(root), hex::encode(frontier.root())),
                    ));
                }
            }
            Ok(())
        };
        check_checkpoints(&frontier)?;
        while frontier.size() < head.size() {
            let want = (head.size() - frontier.size()).min(u64::from(VERIFY_PAGE)) as u32;
            let page = self.backend.entries(log, frontier.size(), want).await?;
            if page.is_empty() {
                break;
            }
            for row in page {
                let index = frontier.size();
                if row.index != index {
                    return Err(corrupt(index, format!("entry {index} is missing (the next stored entry is {})", row.index)));
                }
                let leaf = merkle::leaf_hash(row.json.as_bytes());
                if leaf != row.leaf {
                    return Err(corrupt(index, format!("the stored leaf hash is {} but the event hashes to {}", hex::encode(row.leaf), hex::encode(leaf))));
                }
                let event_hash = runplane_cjson::sha256_hex(row.json.as_bytes());
                if event_hash != row.event_hash {
                    return Err(corrupt(index, format!("the stored event hash is {} but the event hashes to {event_hash}", row.event_hash)));
                }
                let mut bad_node = None;
                frontier.push(leaf, |n, h| {
                    interior_seen += 1;
                    if bad_node.is_none() && interior.get(&n) != Some(&h) {
                        bad_node = Some((n, interior.get(&n).map(hex::encode)));
                    }
                });
                if let Some((n, found)) = bad_node {
                    let found = found.unwrap_or_else(|| "nothing".into());
                    return Err(corrupt(index, format!("the stored hash of level {} index {} is {found}, not the hash of its entries", n.level, n.index)));
                }
                check_checkpoints(&frontier)?;
            }
        }
        let size = frontier.size();
        if interior.len() != interior_seen {
            return Err(corrupt(size, format!("{} stored subtree hashes do not belong to any entry", interior.len() - interior_seen)));
        }
        if head != frontier {
            return Err(corrupt(size, format!("the head records {} entries with root {}, but the entries give {size} with root {}", head.size(), hex::encode(head.root()), hex::encode(frontier.root()))));
        }
        if let Some((cp_size, _, _)) = pending.next() {
            return Err(corrupt(size, format!("a checkpoint of size {cp_size} was signed but only {size} entries are stored: entries were removed")));
        }
        Ok(size)
    }
}

/// The consistency spans from `first` to `second`, or why the sizes are wrong.
fn consistency_spans(first: u64, second: u64) -> Result<Vec<tree::Span>, AuditError> {
    tree::consistency_spans(first, second).ok_or_else(|| AuditError::Invalid(format!("size {first} is larger than size {second}; give the older (smaller) size first")))
}

/// The single writer on a task: takes everything queued, commits it as one durable
/// batch, and answers its callers. Batches grow with load (everything that queued
/// while the previous batch committed), so throughput rises with concurrency.
pub(crate) async fn writer(backend: Arc<dyn LogBackend>, mut rx: mpsc::Receiver<Pending>) {
    let mut pending = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut pending, MAX_BATCH).await > 0 {
        let (entries, replies): (Vec<NewEntry>, Vec<_>) = pending.drain(..).map(|p| (p.entry, p.reply)).unzip();
        let result = backend.commit(&entries).await;
        answer(entries, replies, result);
    }
}

/// The single writer on a thread of its own, for a backend whose commit blocks: the
/// same batching as [`writer`], with no task between the channel and the commit. A
/// batch is what queued while the previous one committed; it never waits for more.
/// (Holding a batch up to 500 µs for appends announced by running invocations was
/// tried: under load the writer is the serial stage, and the wait cut `http-bench`
/// from ~8,500 to ~6,000 req/s while a lone request never gained from it.)
pub(crate) fn run_blocking_writer(mut rx: mpsc::Receiver<Pending>, mut commit: impl FnMut(&[NewEntry]) -> Result<Vec<u64>, AuditError>) {
    let mut pending = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        pending.push(first);
        while pending.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => pending.push(p),
                Err(_) => break,
            }
        }
        let (entries, replies): (Vec<NewEntry>, Vec<_>) = pending.drain(..).map(|p| (p.entry, p.reply)).unzip();
        let result = commit(&entries);
        answer(entries, replies, result);
    }
}

/// Sends each caller of a batch its receipt, or the batch's error.
fn answer(entries: Vec<NewEntry>, replies: Vec<oneshot::Sender<Result<Receipt, AuditError>>>, result: Result<Vec<u64>, AuditError>) {
    match result {
        Ok(indexes) => {
            for ((e, reply), index) in entries.into_iter().zip(replies).zip(indexes) {
                let _ = reply.send(Ok(Receipt { log: e.log, index, event_hash: e.event_hash }));
            }
        }
        Err(err) => {
            tracing::error!(error = %err, events = entries.len(), "audit group commit failed; the actions are reported as failed");
            for reply in replies {
                let _ = reply.send(Err(err.clone()));
            }
        }
    }
}

/// Indexes are stored as signed 64-bit SQL integers: no log has an entry past
/// `i64::MAX`, and such a `from` must not reach a backend (it would wrap).
fn past_any_index(from: u64) -> bool {
    i64::try_from(from).is_err()
}

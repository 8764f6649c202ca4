//! Journals in the hot store and in the archive: how a journal is encoded, and how
//! journals past their retention window move to segments on a blob backend.
//!
//! A **segment** holds journals of one log, as zstd-compressed JSON
//! ([`Segment`]), and is stored under its own SHA-256 (`journals/<hex>.json.zst` in
//! container [`ARCHIVE_CONTAINER`] of the log's tenant), so it can be neither replaced
//! nor edited unnoticed; each journal in it is checked again, on the way back, against
//! the digest its event carries in the Merkle leaf.

use runplane_ports::{BlobStore, TenantId};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::{AuditError, AuditStore, LogId, unavailable};

/// The blob container (in each tenant's space on the archive backend) of archived journals.
pub const ARCHIVE_CONTAINER: &str = "runplane-audit-journals";
/// zstd level for journals and segments: fast, and most of what higher levels give on JSON.
const ZSTD_LEVEL: i32 = 3;
/// Journals shorter than this are stored as they are: zstd saves them little and
/// costs more than the bytes.
const COMPRESS_FROM: usize = 512;
/// Journals read per archiving query; a segment holds at most this many.
const ARCHIVE_PAGE: u32 = 5000;

/// How a journal body is stored in the hot store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalCodec {
    /// The canonical JSON as it is (journals written before compression).
    Plain = 0,
    /// The canonical JSON, zstd-compressed.
    Zstd = 1,
}

impl JournalCodec {
    pub(crate) fn from_stored(n: i64) -> Result<Self, AuditError> {
        match n {
            0 => Ok(JournalCodec::Plain),
            1 => Ok(JournalCodec::Zstd),
            other => Err(AuditError::Unavailable(format!("a journal is stored with codec {other}, which this version does not know; run a newer Runplane"))),
        }
    }

    fn decode(self, body: &[u8]) -> Result<String, AuditError> {
        let bytes = match self {
            JournalCodec::Plain => body.to_vec(),
            JournalCodec::Zstd => zstd::bulk::decompress(body, MAX_JOURNAL_BYTES).map_err(|e| AuditError::Unavailable(format!("a stored journal does not decompress: {e}")))?,
        };
        String::from_utf8(bytes).map_err(|_| AuditError::Unavailable("a stored journal is not UTF-8".into()))
    }
}

/// The largest journal (decompressed) this store reads back: far above any request
/// body and response the node accepts.
const MAX_JOURNAL_BYTES: usize = 1 << 30;

/// A journal on its way into the hot store.
#[derive(Clone)]
pub(crate) struct NewJournal {
    pub invocation_id: String,
    pub recorded_at: u64,
    pub codec: JournalCodec,
    pub body: Vec<u8>,
}

impl NewJournal {
    pub(crate) fn compress(invocation_id: &str, json: &str, recorded_at: u64) -> Result<Self, AuditError> {
        if json.len() < COMPRESS_FROM {
            return Ok(NewJournal { invocation_id: invocation_id.to_owned(), recorded_at, codec: JournalCodec::Plain, body: json.as_bytes().to_vec() });
        }
        // One compression context per thread, reused: making one per journal (about a
        // megabyte to set up) cost more than compressing.
        thread_local! {
            static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> = const { std::cell::RefCell::new(None) };
        }
        let failed = |e: std::io::Error| AuditError::Unavailable(format!("the journal could not be compressed: {e}"));
        let body = COMPRESSOR.with(|c| {
            let mut c = c.borrow_mut();
            if c.is_none() {
                *c = Some(zstd::bulk::Compressor::new(ZSTD_LEVEL).map_err(failed)?);
            }
            match c.as_mut() {
                Some(c) => c.compress(json.as_bytes()).map_err(failed),
                None => Err(AuditError::Unavailable("the journal compressor is missing".into())),
            }
        })?;
        Ok(NewJournal { invocation_id: invocation_id.to_owned(), recorded_at, codec: JournalCodec::Zstd, body })
    }
}

/// A journal row as a backend returns it.
pub(crate) struct JournalRow {
    pub log: LogId,
    pub index: u64,
    pub codec: JournalCodec,
    /// `None` once archived.
    pub body: Option<Vec<u8>>,
    /// The segment holding it, once archived.
    pub archive: Option<String>,
}

/// A hot journal past (some) retention window, as a backend returns it.
pub(crate) struct StaleJournal {
    pub invocation_id: String,
    pub index: u64,
    pub recorded_at: u64,
    pub codec: JournalCodec,
    pub body: Vec<u8>,
}

/// How many journals the hot store and the archive hold, and their bytes (hot: as
/// stored, compressed; archived: the segments' sizes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct JournalUsage {
    pub hot: u64,
    pub hot_bytes: u64,
    pub archived: u64,
    pub archived_bytes: u64,
}

impl JournalUsage {
    pub(crate) fn add_hot(&mut self, journals: u64, bytes: u64) {
        self.hot += journals;
        self.hot_bytes += bytes;
    }

    fn archive(&mut self, journals: u64, hot_bytes: u64, segment_bytes: u64) {
        self.hot = self.hot.saturating_sub(journals);
        self.hot_bytes = self.hot_bytes.saturating_sub(hot_bytes);
        self.archived += journals;
        self.archived_bytes += segment_bytes;
    }
}

/// What one archiving pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ArchiveReport {
    /// Journals moved to the archive.
    pub journals: u64,
    /// Segments written (digests).
    pub segments: Vec<String>,
    /// Hot-store bytes the moved journals held.
    pub freed_bytes: u64,
}

/// An archive segment: journals of one log, in index order.
#[derive(Serialize, Deserialize)]
struct Segment {
    protocol_version: String,
    log: String,
    journals: Vec<SegmentJournal>,
}

#[derive(Serialize, Deserialize)]
struct SegmentJournal {
    invocation_id: String,
    index: u64,
    recorded_at: u64,
    /// The journal's canonical JSON, exactly as its digest was taken.
    journal: String,
}

fn segment_name(digest: &str) -> String {
    format!("journals/{digest}.json.zst")
}

/// The tenant whose space holds `log`'s archive (only tenant logs have journals).
fn archive_tenant(log: &LogId) -> Result<TenantId, AuditError> {
    log.as_str()
        .strip_prefix("tenant:")
        .and_then(|t| TenantId::new(t).ok())
        .ok_or_else(|| AuditError::Invalid(format!("log {log} has no journals to archive; only tenant logs do")))
}

impl AuditStore {
    /// The journal of an invocation, with the log and index of its entry: from the hot
    /// store, or from its archive segment on `archive` (checked against the segment's
    /// name; the caller checks the journal against its event's digest).
    pub async fn journal(&self, invocation_id: &str, archive: Option<&dyn BlobStore>) -> Result<Option<(LogId, u64, String)>, AuditError> {
        let Some(row) = self.backend.journal(invocation_id).await? else { return Ok(None) };
        if let Some(body) = &row.body {
            return Ok(Some((row.log, row.index, row.codec.decode(body)?)));
        }
        let digest = row.archive.ok_or_else(|| AuditError::Unavailable(format!("the journal of invocation {invocation_id} has neither a body nor an archive")))?;
        let archive = archive.ok_or_else(|| {
            AuditError::Unavailable(format!(
                "the journal of invocation {invocation_id} was archived to segment {digest}, but no archive store is bound; set [audit] archive to the blob backend that holds it"
            ))
        })?;
        let tenant = archive_tenant(&row.log)?;
        let bytes = archive
            .get(&tenant, ARCHIVE_CONTAINER, &segment_name(&digest), None)
            .await
            .map_err(|e| AuditError::Unavailable(format!("archive segment {digest} of {} could not be read: {e}", row.log)))?
            .ok_or_else(|| {
                AuditError::Unavailable(format!("archive segment {digest} of {} is missing from the archive store; restore it from a backup of that store", row.log))
            })?;
        let found = hex::encode(Sha256::digest(&bytes));
        if found != digest {
            return Err(AuditError::Corrupt { log: row.log.to_string(), index: row.index, problem: format!("archive segment {digest} hashes to {found}: it was altered") });
        }
        let json = zstd::bulk::decompress(&bytes, MAX_JOURNAL_BYTES.saturating_mul(4)).map_err(|e| AuditError::Unavailable(format!("archive segment {digest} does not decompress: {e}")))?;
        let segment: Segment = serde_json::from_slice(&json).map_err(|e| AuditError::Unavailable(format!("archive segment {digest} is unreadable: {e}")))?;
        let journal = segment
            .journals
            .into_iter()
            .find(|j| j.invocation_id == invocation_id && j.index == row.index)
            .ok_or_else(|| AuditError::Unavailable(format!("archive segment {digest} does not hold the journal of invocation {invocation_id}")))?;
        Ok(Some((row.log, row.index, journal.journal)))
    }

    /// Moves journals past their retention window to `archive`: each log's stale
    /// journals become one segment (per [`ARCHIVE_PAGE`]), written and read back
    /// before the hot store lets go of them. `window(log)` is the log's retention in
    /// seconds (`None`: keep its journals hot). Safe to interrupt at any point: a
    /// segment written but not recorded is written again next time (same content,
    /// same name).
    pub async fn archive_journals(&self, archive: &dyn BlobStore, now: u64, window: impl Fn(&LogId) -> Option<u64>) -> Result<ArchiveReport, AuditError> {
        let mut report = ArchiveReport::default();
        for (log, _) in self.backend.heads().await? {
            let Some(window) = window(&log) else { continue };
            if archive_tenant(&log).is_err() {
                continue;
            }
            loop {
                let stale = self.backend.stale_journals(&log, now.saturating_sub(window), ARCHIVE_PAGE).await?;
                let more = stale.len() == ARCHIVE_PAGE as usize;
                if stale.is_empty() {
                    break;
                }
                self.archive_segment(archive, &log, stale, now, &mut report).await?;
                if !more {
                    break;
                }
            }
        }
        Ok(report)
    }

    async fn archive_segment(&self, archive: &dyn BlobStore, log: &LogId, mut journals: Vec<StaleJournal>, now: u64, report: &mut ArchiveReport) -> Result<(), AuditError> {
        journals.sort_by_key(|j| j.index);
        let hot_bytes: u64 = journals.iter().map(|j| j.body.len() as u64).sum();
        let ids: Vec<String> = journals.iter().map(|j| j.invocation_id.clone()).collect();
        let segment = Segment {
            protocol_version: runplane_ports::PROTOCOL_VERSION.into(),
            log: log.to_string(),
            journals: journals
                .into_iter()
                .map(|j| Ok(SegmentJournal { invocation_id: j.invocation_id, index: j.index, recorded_at: j.recorded_at, journal: j.codec.decode(&j.body)? }))
                .collect::<Result<_, AuditError>>()?,
        };
        let json = serde_json::to_vec(&segment).map_err(unavailable)?;
        let bytes = zstd::bulk::compress(&json, ZSTD_LEVEL).map_err(|e| AuditError::Unavailable(format!("an archive segment could not be compressed: {e}")))?;
        let digest = hex::encode(Sha256::digest(&bytes));
        let tenant = archive_tenant(log)?;
        let name = segment_name(&digest);
        let size = bytes.len() as u64;
        archive
            .put(&tenant, ARCHIVE_CONTAINER, &name, bytes, Some("application/zstd"))
            .await
            .map_err(|e| AuditError::Unavailable(format!("archive segment {digest} of {log} could not be written: {e}")))?;
        // Read it back before the hot copies go: the archive must hold what it said.
        let stored = archive
            .metadata(&tenant, ARCHIVE_CONTAINER, &name)
            .await
            .map_err(|e| AuditError::Unavailable(format!("archive segment {digest} of {log} could not be checked: {e}")))?;
        if stored.as_ref().map(|m| m.digest.as_str()) != Some(digest.as_str()) {
            return Err(AuditError::Unavailable(format!("archive segment {digest} of {log} was not stored intact; the journals stay in the hot store")));
        }
        self.backend.mark_archived(log, &digest, &ids, size, now).await?;
        self.usage.lock().unwrap_or_else(|p| p.into_inner()).archive(ids.len() as u64, hot_bytes, size);
        tracing::info!(%log, journals = ids.len(), segment = %digest, bytes = size, "archived journals past their retention window");
        report.journals += ids.len() as u64;
        report.freed_bytes += hot_bytes;
        report.segments.push(digest);
        Ok(())
    }
}

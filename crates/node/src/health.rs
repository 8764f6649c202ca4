//! What `/healthz` says about the data directory's storage: the free space of the
//! filesystem it is on (`statvfs`) and whether a small write there succeeds.
//!
//! [`classify`] is the rule, a plain function over the numbers; [`probe`] is the I/O.
//! Only a failed write makes the node fail its health check: low space is a warning
//! (`degraded`, still 200) an operator should act on before writes start failing.

use std::path::Path;

use serde::Serialize;
use utoipa::ToSchema;

/// Storage is `low` when less than this share of the filesystem is available…
pub const LOW_FREE_PERCENT: u64 = 5;
/// …or less than this many bytes, whichever is larger.
pub const LOW_FREE_BYTES: u64 = 256 << 20;

/// How much the probe writes: one page, so a filesystem with no free block refuses it.
const PROBE_BYTES: usize = 4096;

/// The node's overall health, as `/healthz` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Every check passes (HTTP 200).
    Ok,
    /// Every check passes, but storage is low: act before writes fail (HTTP 200).
    Degraded,
    /// A check fails: a store does not answer, or the data directory cannot be written
    /// (HTTP 503).
    Failing,
}

impl NodeStatus {
    /// The node's status from its dependency checks and its storage.
    pub fn of(checks_pass: bool, storage: StorageStatus) -> Self {
        match (checks_pass && storage.writable(), storage) {
            (false, _) => NodeStatus::Failing,
            (true, StorageStatus::Low) => NodeStatus::Degraded,
            (true, _) => NodeStatus::Ok,
        }
    }
}

/// The state of the data directory's storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StorageStatus {
    /// Writes succeed and space is above the threshold.
    Ok,
    /// Writes succeed but available space is under `low_below_bytes`: free some.
    Low,
    /// A write failed for lack of space (or quota), or no byte is available.
    Full,
    /// A write failed for another reason (read-only filesystem, permissions).
    Unwritable,
}

impl StorageStatus {
    /// Whether the node can still write its state (`ok` and `low`).
    pub fn writable(self) -> bool {
        matches!(self, StorageStatus::Ok | StorageStatus::Low)
    }
}

/// The `storage` object of `/healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct StorageHealth {
    /// `ok`, `low`, `full` or `unwritable`.
    pub status: StorageStatus,
    /// Bytes an unprivileged process may still write on the data directory's filesystem
    /// (`f_bavail`); absent where the platform cannot tell.
    pub available_bytes: Option<u64>,
    /// The filesystem's size; absent where the platform cannot tell.
    pub total_bytes: Option<u64>,
    /// Under this many available bytes the status is `low` (5 % of the filesystem, at
    /// least 256 MiB).
    pub low_below_bytes: Option<u64>,
    /// Why the probe write failed, when it did (the operating system's words; the data
    /// directory's path is not shown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Space on a filesystem, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    pub available: u64,
    pub total: u64,
}

/// The threshold under which `total` bytes of filesystem count as low on space.
pub fn low_below(total: u64) -> u64 {
    (total / 100 * LOW_FREE_PERCENT).max(LOW_FREE_BYTES)
}

/// The storage's state from what was measured: `space` (if known) and the result of
/// the probe write.
pub fn classify(space: Option<Space>, write: &std::io::Result<()>) -> StorageHealth {
    let status = match write {
        Err(e) if matches!(e.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded) => StorageStatus::Full,
        Err(_) => StorageStatus::Unwritable,
        Ok(()) => match space {
            Some(s) if s.available == 0 => StorageStatus::Full,
            Some(s) if s.available < low_below(s.total) => StorageStatus::Low,
            _ => StorageStatus::Ok,
        },
    };
    StorageHealth {
        status,
        available_bytes: space.map(|s| s.available),
        total_bytes: space.map(|s| s.total),
        low_below_bytes: space.map(|s| low_below(s.total)),
        error: write.as_ref().err().map(|e| e.kind().to_string()),
    }
}

/// Measures the storage of `data_dir`: its filesystem's space, and a write of one page
/// to a fresh file there (removed again). Blocking: call it off the async runtime.
pub fn probe(data_dir: &Path) -> StorageHealth {
    use std::sync::atomic::{AtomicU64, Ordering};
    // A name of its own per probe, so concurrent health checks never share a file.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let file = data_dir.join(format!(".healthz-probe-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
    let write = write_probe(&file);
    // Remove whatever the attempt left, even a partial file.
    let _ = std::fs::remove_file(&file);
    classify(space(data_dir), &write)
}

/// Writes one page to `path` (created or truncated). No fsync: the filesystem refuses
/// the write itself when it has no block left to give.
pub fn write_probe(path: &Path) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(path)?;
    f.write_all(&[0u8; PROBE_BYTES])?;
    f.flush()
}

/// The space of the filesystem holding `dir`, where the platform can tell.
#[cfg(unix)]
// The fields are u64 on Linux but narrower C types on other Unixes.
#[allow(clippy::useless_conversion)]
pub fn space(dir: &Path) -> Option<Space> {
    let s = rustix::fs::statvfs(dir).ok()?;
    let block = u64::from(s.f_frsize);
    Some(Space { available: u64::from(s.f_bavail).saturating_mul(block), total: u64::from(s.f_blocks).saturating_mul(block) })
}

/// The space of the filesystem holding `dir`, where the platform can tell.
#[cfg(not(unix))]
pub fn space(_dir: &Path) -> Option<Space> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn space_under_five_percent_or_256_mib_is_low_and_none_is_full() {
        let ok = Ok(());
        let at = |available, total| classify(Some(Space { available, total }), &ok).status;
        assert_eq!(at(50 * GIB, 100 * GIB), StorageStatus::Ok);
        assert_eq!(at(5 * GIB, 100 * GIB), StorageStatus::Ok, "exactly 5 % is not yet low");
        assert_eq!(at(5 * GIB - 1, 100 * GIB), StorageStatus::Low);
        // A small filesystem: the 256 MiB floor decides.
        assert_eq!(at(300 << 20, GIB), StorageStatus::Ok);
        assert_eq!(at(200 << 20, GIB), StorageStatus::Low);
        assert_eq!(at(0, 100 * GIB), StorageStatus::Full);
        let h = classify(Some(Space { available: GIB, total: 100 * GIB }), &ok);
        assert_eq!((h.available_bytes, h.total_bytes, h.low_below_bytes), (Some(GIB), Some(100 * GIB), Some(5 * GIB)));
        assert_eq!(classify(None, &ok).status, StorageStatus::Ok, "unknown space: the write decides");
    }

    #[test]
    fn a_failed_write_is_full_or_unwritable_whatever_the_space() {
        let plenty = Some(Space { available: 50 * GIB, total: 100 * GIB });
        let enospc = Err(std::io::Error::from_raw_os_error(28));
        let h = classify(plenty, &enospc);
        assert_eq!(h.status, StorageStatus::Full);
        assert!(!h.status.writable());
        assert_eq!(h.error.as_deref(), Some("no storage space"));
        let readonly = Err(std::io::Error::from_raw_os_error(30 /* EROFS */));
        assert_eq!(classify(plenty, &readonly).status, StorageStatus::Unwritable);
    }

    #[test]
    fn low_storage_degrades_the_node_and_unwritable_storage_fails_it() {
        assert_eq!(NodeStatus::of(true, StorageStatus::Ok), NodeStatus::Ok);
        assert_eq!(NodeStatus::of(true, StorageStatus::Low), NodeStatus::Degraded);
        assert_eq!(NodeStatus::of(true, StorageStatus::Full), NodeStatus::Failing);
        assert_eq!(NodeStatus::of(true, StorageStatus::Unwritable), NodeStatus::Failing);
        assert_eq!(NodeStatus::of(false, StorageStatus::Ok), NodeStatus::Failing);
        assert_eq!(NodeStatus::of(false, StorageStatus::Low), NodeStatus::Failing);
    }

    /// `/dev/full` answers every write with a real `ENOSPC` from the kernel.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_probe_sees_a_real_enospc() {
        let write = write_probe(Path::new("/dev/full"));
        let e = write.as_ref().expect_err("/dev/full refuses writes");
        assert_eq!(e.raw_os_error(), Some(28), "{e}");
        assert_eq!(classify(None, &write).status, StorageStatus::Full);
    }

    #[test]
    fn a_probe_of_a_real_directory_measures_its_filesystem_and_leaves_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let h = probe(dir.path());
        assert!(h.status.writable(), "{h:?}");
        if cfg!(unix) {
            let (available, total) = (h.available_bytes.expect("available"), h.total_bytes.expect("total"));
            assert!(total > 0 && available <= total, "{h:?}");
        }
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 0, "the probe file is removed");
        // A data directory that is not there cannot be written.
        let gone = dir.path().join("missing");
        assert_eq!(probe(&gone).status, StorageStatus::Unwritable);
    }
}

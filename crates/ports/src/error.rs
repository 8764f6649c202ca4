use std::fmt;

/// Why a port call failed. Mirrors `runplane:ports/types.port-error` in the WIT
/// ([`PortError::StorageFull`] reaches a capability as `unavailable`, with its own
/// neutral reason: the WIT variant is part of every capability's interface).
///
/// What a capability and its caller see is the kind of failure and a neutral reason,
/// the same whichever adapter served the call. A backend's own words (driver and
/// operating-system messages, paths, hosts, SQL states) are infrastructure details:
/// adapters hand them to [`PortError::unavailable`] or [`PortError::storage_full`],
/// which write them to the node's log and keep only the neutral reason. Messages never
/// contain connection strings, credentials or secret values, in the error or the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum PortError {
    /// The named thing does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// An expected revision, version or value did not match.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The tenant's quota for this resource is used up.
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    /// The backend is unreachable or failed; retrying later may succeed. The text is
    /// neutral: [`UNAVAILABLE`], or a reason naming only what the capability itself
    /// named or configured (the port timeout, a topic's full backlog).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The backend's storage (a disk, a database volume) is full: writes fail until
    /// space is freed. Not the tenant's quota (that is [`PortError::QuotaExceeded`]).
    #[error("storage full: {0}")]
    StorageFull(String),
    /// The arguments were refused.
    #[error("invalid: {0}")]
    Invalid(String),
}

/// The result of a port call.
pub type PortResult<T> = Result<T, PortError>;

/// What a capability is told when a backend failed: the detail is in the node's log.
pub const UNAVAILABLE: &str = "the backend is unavailable; retry later";

/// What a capability is told when a backend's storage is full.
pub const STORAGE_FULL: &str = "the backend's storage is full; retry later";

/// The `tracing` target of the log lines that carry a backend's failure detail.
pub const LOG_TARGET: &str = "runplane::ports";

impl PortError {
    /// A stable short code, as used in audit events and metrics labels.
    pub fn code(&self) -> &'static str {
        match self {
            PortError::NotFound(_) => "not_found",
            PortError::Conflict(_) => "conflict",
            PortError::QuotaExceeded(_) => "quota_exceeded",
            PortError::Unavailable(_) => "unavailable",
            PortError::StorageFull(_) => "storage_full",
            PortError::Invalid(_) => "invalid",
        }
    }

    /// The backend failed. `detail` (what failed, in the backend's words) is logged at
    /// WARN with `backend` under [`LOG_TARGET`]; the error keeps only [`UNAVAILABLE`].
    ///
    /// ```
    /// let e = runplane_ports::PortError::unavailable("blob store", "Unable to open /data/x: Permission denied");
    /// assert_eq!(e.to_string(), "unavailable: the backend is unavailable; retry later");
    /// ```
    pub fn unavailable(backend: &str, detail: impl fmt::Display) -> Self {
        tracing::warn!(target: LOG_TARGET, backend, detail = %detail, "a port backend failed; the capability was told it is unavailable");
        PortError::Unavailable(UNAVAILABLE.to_owned())
    }

    /// The backend's storage is full. `detail` is logged at ERROR (an operator must
    /// free space) with `backend` under [`LOG_TARGET`]; the error keeps only
    /// [`STORAGE_FULL`].
    pub fn storage_full(backend: &str, detail: impl fmt::Display) -> Self {
        tracing::error!(target: LOG_TARGET, backend, detail = %detail, "a port backend's storage is full; free space on it");
        PortError::StorageFull(STORAGE_FULL.to_owned())
    }
}

/// Whether `error`, or an error it was caused by, is the operating system saying a
/// filesystem is full (`ENOSPC`) or a disk quota is used up (`EDQUOT`): the test an
/// adapter applies before choosing [`PortError::storage_full`].
pub fn is_storage_full(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(io.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
        {
            return true;
        }
        next = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Collects what is logged, formatted, while `f` runs.
    fn logged(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = sink.0.lock().expect("log sink").clone();
        String::from_utf8(bytes).expect("UTF-8 log")
    }

    const DETAIL: &str = "Generic LocalFileSystem error: Unable to copy data to file: No space left on device (os error 28)";

    #[test]
    fn the_capability_sees_a_neutral_reason_and_the_log_gets_the_detail() {
        let mut errors = Vec::new();
        let log = logged(|| {
            errors.push(PortError::unavailable("blob store", DETAIL));
            errors.push(PortError::storage_full("blob store", DETAIL));
        });
        for e in &errors {
            let visible = format!("{e} {e:?} {}", serde_json::to_string(e).expect("JSON"));
            for leak in ["blob store", "LocalFileSystem", "os error", "No space left"] {
                assert!(!visible.contains(leak), "{leak:?} reached the capability: {visible}");
            }
        }
        assert_eq!(errors[0], PortError::Unavailable(UNAVAILABLE.into()));
        assert_eq!(errors[1], PortError::StorageFull(STORAGE_FULL.into()));
        assert_eq!(errors[1].code(), "storage_full");
        assert_eq!(log.matches(DETAIL).count(), 2, "each detail is logged once: {log}");
        assert!(log.contains("backend=\"blob store\"") || log.contains("backend=blob store"), "{log}");
        assert!(log.contains("WARN") && log.contains("ERROR"), "{log}");
    }

    #[test]
    fn enospc_and_edquot_anywhere_in_the_chain_are_storage_full() {
        #[derive(Debug, thiserror::Error)]
        #[error("Unable to copy data to file: {source}")]
        struct Wrapper {
            source: std::io::Error,
        }
        for errno in [28 /* ENOSPC */, 122 /* EDQUOT */] {
            let io = std::io::Error::from_raw_os_error(errno);
            assert!(is_storage_full(&io), "errno {errno}");
            assert!(is_storage_full(&Wrapper { source: std::io::Error::from_raw_os_error(errno) }), "wrapped errno {errno}");
        }
        assert!(!is_storage_full(&std::io::Error::from_raw_os_error(13 /* EACCES */)));
        assert!(!is_storage_full(&Wrapper { source: std::io::Error::other("no space left on device") }), "words are not a kind");
    }
}

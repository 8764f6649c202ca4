use std::fmt;

/// Why a port call failed. Mirrors `runplane:ports/types.port-error` in the WIT.
///
/// Adapters map their technology's errors into these; messages never contain
/// connection strings, credentials or secret values.
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
    /// The backend is unreachable or failed; retrying later may succeed.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The arguments were refused.
    #[error("invalid: {0}")]
    Invalid(String),
}

/// The result of a port call.
pub type PortResult<T> = Result<T, PortError>;

impl PortError {
    /// A stable short code, as used in audit events and metrics labels.
    pub fn code(&self) -> &'static str {
        match self {
            PortError::NotFound(_) => "not_found",
            PortError::Conflict(_) => "conflict",
            PortError::QuotaExceeded(_) => "quota_exceeded",
            PortError::Unavailable(_) => "unavailable",
            PortError::Invalid(_) => "invalid",
        }
    }

    /// Shorthand for an [`PortError::Unavailable`] naming the backend and what failed.
    pub fn unavailable(backend: &str, what: impl fmt::Display) -> Self {
        PortError::Unavailable(format!("{backend}: {what}"))
    }
}

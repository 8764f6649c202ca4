/// What the control store can fail with. Every variant is the store's problem, not the
/// caller's: the node answers 503 for them.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ControlError {
    /// The store did not answer, or refused the statement.
    #[error("control store: {0}")]
    Unavailable(String),
    /// A stored value cannot be read back.
    #[error("control store corruption: {0}")]
    Corrupt(String),
    /// A fenced write carried an epoch that is no longer the lease's.
    #[error("lease {name}: this node's epoch {stale} is no longer the holder's; the write was refused")]
    StaleEpoch { name: String, stale: u64 },
}

impl From<sqlx::Error> for ControlError {
    fn from(e: sqlx::Error) -> Self {
        ControlError::Unavailable(e.to_string())
    }
}

pub type Result<T, E = ControlError> = std::result::Result<T, E>;

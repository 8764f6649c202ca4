//! Envelope encryption of tenant secrets (spec §7.2).
//!
//! - [`keyring`]: the key-encryption keys (KEKs), from a key file or an environment
//!   variable; the last one is current, older ones stay for reading.
//! - [`envelope`]: sealing and opening one secret version — a fresh data key per
//!   version, AES-256-GCM with the tenant, name and version as associated data, the data
//!   key wrapped by the current KEK. Pure functions over bytes.
//! - [`store`]: [`EnvelopeSecrets`], the `SecretStore` port over any
//!   `SealedSecretStore`, which re-wraps lazily after a KEK rotation.
//!
//! Architecture invariant: plaintexts and key material never appear in an error
//! message, a `Debug` output or a stored byte; the only way out for a value is
//! `SecretValue::expose` in the capability that asked for it.

pub mod envelope;
pub mod keyring;
pub mod store;

pub use envelope::{Opened, SecretContext, open, rewrap, seal};
pub use keyring::{KeyRing, SharedKeyRing};
pub use store::EnvelopeSecrets;

/// What can go wrong sealing or opening a secret. Messages name the secret and the
/// key, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretsError {
    /// The key ring text or file is unusable.
    #[error("the key-encryption key ring is unusable: {0}")]
    KeyRing(String),
    /// A version was sealed under a KEK the ring no longer holds.
    #[error("secret {name} version {version} is sealed under key-encryption key {kek:?}, which the key ring does not hold; restore that key to the key file (keys are only ever added, never removed)")]
    UnknownKek { name: String, version: u64, kek: String },
    /// Authentication failed: the bytes were altered, or moved from another tenant,
    /// name or version, or wrapped under a different key with the same id.
    #[error("secret {name} version {version} does not open: its stored bytes were altered or belong to another tenant, name or version; put the secret again")]
    Tampered { name: String, version: u64 },
    /// The stored bytes are not an envelope this version of Runplane writes.
    #[error("secret {name} version {version} is not in the envelope format ({why}); put the secret again")]
    Format { name: String, version: u64, why: String },
    /// The operating system's random source failed.
    #[error("the operating system's random source failed: {0}")]
    Random(String),
}

impl From<SecretsError> for runplane_ports::PortError {
    fn from(e: SecretsError) -> Self {
        // Key ids and stored formats are the operator's business: logged, not shown.
        runplane_ports::PortError::unavailable("secrets", e)
    }
}

/// `n` random bytes from the operating system.
pub(crate) fn random<const N: usize>() -> Result<zeroize::Zeroizing<[u8; N]>, SecretsError> {
    let mut bytes = zeroize::Zeroizing::new([0u8; N]);
    getrandom::fill(bytes.as_mut()).map_err(|e| SecretsError::Random(e.to_string()))?;
    Ok(bytes)
}

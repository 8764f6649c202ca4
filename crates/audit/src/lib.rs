//! Audit events and their append-only store.
//!
//! Every invocation and every admin action becomes an [`AuditEvent`], hashed over its
//! canonical JSON, and appended to its log: `tenant:<id>` for a tenant's invocations,
//! `admin` for the instance's admin actions. Appends are group-committed: concurrent
//! callers share one durable transaction, and an append returns only once its event
//! is on disk.
//!
//! Architecture invariant: an event never holds a secret value, a credential or a
//! connection string; callers put digests of requests and responses in it, not bodies.
//! The Merkle tree, checkpoints and proofs build on the `(log, index, event)` rows
//! kept here.

pub mod bundle;
pub mod checkpoint;
mod event;
pub mod merkle;
mod store;
mod time;
pub mod tree;

pub use checkpoint::{Checkpoint, NoteError, NoteSigner, NoteVerifier};
pub use event::{AuditEvent, Outcome, Usage};
pub use store::{ARCHIVE_CONTAINER, ArchiveReport, AuditError, AuditStore, JournalCodec, JournalUsage, LogId, Receipt, SignedCheckpoint, StoredEvent};
pub use time::rfc3339_utc;

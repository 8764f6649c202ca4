//! The journal archiver: the one background loop that moves invocation journals past
//! their tenant's retention window (`[audit] journal_retention_hours`, per tier
//! `[audit.journal_retention_hours_by_tier]`) from the hot audit store to the archive
//! backend (`[audit] archive`). Entries, hashes and checkpoints stay where they are, so
//! every log verifies the same afterwards; replay reads an archived journal back.
//!
//! On several nodes sharing one store only the leader's loop archives
//! ([`crate::cluster`]); and should two passes overlap across a change of leader, a
//! segment is named by its content and a journal's body is dropped only once, so the
//! same segment is written twice at worst.

use std::sync::Arc;

use runplane_audit::{ArchiveReport, LogId};

use crate::error::ApiError;
use crate::node::Node;

/// One archiving pass now: each tenant's journals older than its tier's window.
pub(crate) async fn archive_once(node: &Node) -> Result<ArchiveReport, ApiError> {
    let Some(archive) = node.journal_archive.clone() else { return Ok(ArchiveReport::default()) };
    let retention = &node.config.journal_retention;
    let window = |log: &LogId| -> Option<u64> {
        let tenant = log.as_str().strip_prefix("tenant:")?;
        // A tenant that no longer exists keeps the default window.
        let tier = node.tenant(tenant).map(|t| crate::quotas::tier_of(&t).as_str()).unwrap_or("free");
        Some(retention.window_secs(tier))
    };
    Ok(node.audit.archive_journals(archive.as_ref(), node.now_secs(), window).await?)
}

/// Starts the archiver loop (once, at node start).
pub(crate) fn spawn(node: Arc<Node>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // The first pass comes one period after start, not at start: a pass reads the
        // node's clock, which on a seeded node (deterministic execution, replay tests)
        // must be read by requests alone while the node comes up; journals past their
        // window (hours) can wait one period (minutes) more.
        let period = node.config.journal_retention.archive_every;
        let mut every = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if node.leader_epoch().is_none() {
                continue;
            }
            match archive_once(&node).await {
                Ok(r) if r.journals > 0 => tracing::info!(journals = r.journals, segments = r.segments.len(), freed_bytes = r.freed_bytes, "journal archiving pass"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e.message, "journal archiving failed; the journals stay in the hot store and the next pass retries"),
            }
        }
    })
}

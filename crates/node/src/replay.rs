//! Deterministic replay (spec §6.3): re-execute a journaled invocation with the same
//! component digest, execution context and request, serving every port call from its
//! journal, and compare the response bytes and the audit leaf with what was recorded.
//!
//! What an HTTP invocation journals ([`JournalRecord`]) is written in the same durable
//! transaction as its audit entry, and the entry's event carries the journal's digest
//! (`details.journal_digest`), so a journal cannot be edited without the log noticing.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use runplane_audit::{AuditEvent, LogId, Outcome, Usage};
use runplane_host::{AllowList, Divergence, HttpResponse, Invocation, InvocationReport, InvokeError, Journal, Observation};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, invoke_error};
use crate::node::Node;

/// Everything needed to re-execute an HTTP invocation besides the component and the
/// execution context (which the audit event holds).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct JournalRecord {
    pub route: String,
    pub method: String,
    /// The URI the capability saw.
    pub uri: String,
    /// The headers the capability saw (credentials already stripped).
    pub headers: Vec<(String, String)>,
    /// The request body, base64.
    pub body: String,
    pub allow_hosts: Vec<String>,
    pub observations: Vec<Observation>,
}

impl JournalRecord {
    /// Canonical JSON of the record and its `sha256:` digest.
    pub(crate) fn encode(&self) -> Result<(String, String), ApiError> {
        let json = runplane_cjson::from_serialize(self).map_err(|e| ApiError::unavailable(format!("the invocation journal cannot be encoded: {e}")))?;
        let digest = format!("sha256:{}", runplane_cjson::sha256_hex(json.as_bytes()));
        Ok((json, digest))
    }

    pub(crate) fn request(&self) -> Result<http::Request<Bytes>, ApiError> {
        let body = B64.decode(&self.body).map_err(|_| ApiError::unavailable("the journaled request body is not base64"))?;
        let mut builder = http::Request::builder().method(self.method.as_str()).uri(self.uri.as_str());
        for (k, v) in &self.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        builder.body(Bytes::from(body)).map_err(|e| ApiError::unavailable(format!("the journaled request cannot be rebuilt: {e}")))
    }
}

/// Fills in what an invocation's outcome decides in its audit event: status, response
/// digest and usage. The live path and replay use this one function, so a replay
/// compares like with like.
pub(crate) fn complete_event(event: &mut AuditEvent, outcome: &Result<HttpResponse, InvokeError>, report: &InvocationReport, request_bytes: u64) {
    event.usage = Some(Usage {
        fuel: report.fuel_consumed,
        memory_peak_bytes: report.memory_peak_bytes as u64,
        port_calls: report.port_calls,
        request_bytes,
        response_bytes: outcome.as_ref().map(|r| r.body.len() as u64).unwrap_or(0),
    });
    match outcome {
        Ok(resp) => {
            event.outcome = Outcome::ok(Some(resp.status));
            event.response_digest = Some(format!("sha256:{}", runplane_cjson::sha256_hex(&resp.body)));
        }
        Err(e) => {
            event.outcome = Outcome::error(e.code(), Some(invoke_error(e).status.as_u16()));
            event.response_digest = None;
        }
    }
}

/// The result of replaying one invocation.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayReport {
    pub invocation_id: String,
    /// `tenant:<id>`.
    pub log: String,
    pub index: u64,
    /// Response bytes and audit leaf both identical.
    pub identical: bool,
    pub response_identical: bool,
    /// Lowercase hex SHA-256 of the stored event's canonical JSON.
    pub event_hash: String,
    /// The same for the event the replay produced (absent when it diverged).
    pub replayed_event_hash: Option<String>,
    /// The first port call that differed, when the capability did not repeat itself.
    #[schema(value_type = Option<Object>)]
    pub divergence: Option<Divergence>,
    /// Top-level event fields that differ (e.g. `usage`, `outcome`).
    pub differing_fields: Vec<String>,
}

/// Replays invocation `invocation_id` (see the module docs).
pub(crate) async fn replay(node: &Arc<Node>, invocation_id: &str) -> Result<ReplayReport, ApiError> {
    let (log, index, journal) = node.audit.journal(invocation_id).await?.ok_or_else(|| {
        ApiError::not_found(format!("no journal for invocation {invocation_id}; HTTP invocations are journaled (see x-runplane-invocation-id on their responses)"))
    })?;
    let stored = node.audit.read(&log, index, 1).await?.pop().ok_or_else(|| ApiError::unavailable(format!("entry {index} of {log} is missing")))?;
    let event: AuditEvent = serde_json::from_value(stored.event.clone())
        .map_err(|e| ApiError::unavailable(format!("entry {index} of {log} is not an audit event: {e}")))?;
    let recorded_digest = event.details.get("journal_digest").and_then(|d| d.as_str()).unwrap_or_default().to_owned();
    let actual_digest = format!("sha256:{}", runplane_cjson::sha256_hex(journal.as_bytes()));
    if recorded_digest != actual_digest {
        return Err(ApiError::unavailable(format!(
            "the journal of invocation {invocation_id} hashes to {actual_digest} but its audit entry ({log} #{index}) recorded {recorded_digest}: the journal was altered"
        )));
    }
    let record: JournalRecord = serde_json::from_str(&journal).map_err(|e| ApiError::unavailable(format!("the journal of {invocation_id} is unreadable: {e}")))?;
    let context = event.context.clone().ok_or_else(|| ApiError::unavailable(format!("entry {index} of {log} has no execution context")))?;
    let digest = event.capability_digest.clone().ok_or_else(|| ApiError::unavailable(format!("entry {index} of {log} names no capability digest")))?;
    let tenant = node
        .tenant(context.tenant.as_str())
        .ok_or_else(|| ApiError::not_found(format!("tenant {} no longer exists; its invocations cannot be replayed", context.tenant)))?;

    let bytes = node.control.component(&digest).await?;
    let capability = node.host.load(&context.capability, &digest, &bytes).await?;
    // Secrets are journaled by digest only: the replay reads them again (and checks).
    let ports = node.bindings.ports(&tenant.id, tenant.mode).await?;
    let request = record.request()?;
    let request_bytes = request.body().len() as u64;
    let journal = Journal::replay(record.observations);
    let invocation = Invocation { context: Arc::new(context), ports, allow: AllowList::new(record.allow_hosts), journal: journal.clone() };
    let (outcome, report) = node.host.handle_http(&capability, invocation, request).await;

    let mut out = ReplayReport {
        invocation_id: invocation_id.to_owned(),
        log: log.to_string(),
        index,
        identical: false,
        response_identical: false,
        event_hash: stored.event_hash.clone(),
        replayed_event_hash: None,
        divergence: None,
        differing_fields: Vec::new(),
    };
    if let Err(d) = journal.finish_replay() {
        out.divergence = Some(d);
        return Ok(out);
    }
    let mut replayed = event.clone();
    complete_event(&mut replayed, &outcome, &report, request_bytes);
    out.response_identical = replayed.response_digest == event.response_digest && replayed.outcome == event.outcome;
    let replayed_json = serde_json::to_value(&replayed).unwrap_or_default();
    if let (Some(a), Some(b)) = (stored.event.as_object(), replayed_json.as_object()) {
        out.differing_fields = a.keys().filter(|k| a.get(*k) != b.get(*k)).cloned().collect();
    }
    let hash = replayed.canonical().map(|c| runplane_cjson::sha256_hex(c.as_bytes())).map_err(|e| ApiError::unavailable(e.to_string()))?;
    out.identical = out.response_identical && hash == stored.event_hash;
    out.replayed_event_hash = Some(hash);
    Ok(out)
}

/// The result of replaying a whole log: its root recomputed from the stored events.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogReplayReport {
    pub log: String,
    pub size: u64,
    /// The root recomputed from the events (lowercase hex), when they could be read.
    pub recomputed_root: Option<String>,
    /// The root the store recorded.
    pub stored_root: String,
    pub identical: bool,
    /// Where and why they differ.
    pub problem: Option<String>,
}

/// Recomputes `log`'s root from its stored events and compares it with the stored one.
pub(crate) async fn replay_log(node: &Node, log: &LogId) -> Result<LogReplayReport, ApiError> {
    let (size, stored_root) = node.audit.tree_head(log).await?;
    let stored_root = hex::encode(stored_root);
    Ok(match node.audit.check(log).await {
        Ok(_) => LogReplayReport { log: log.to_string(), size, recomputed_root: Some(stored_root.clone()), stored_root, identical: true, problem: None },
        Err(runplane_audit::AuditError::Corrupt { problem, index, .. }) => LogReplayReport {
            log: log.to_string(),
            size,
            recomputed_root: None,
            stored_root,
            identical: false,
            problem: Some(format!("at index {index}: {problem}")),
        },
        Err(e) => return Err(e.into()),
    })
}

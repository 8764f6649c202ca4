//! Deterministic replay (spec §6.3): re-execute a journaled invocation (an HTTP request
//! or a message delivery) with the same component digest, execution context and input,
//! serving every port call from its journal, and compare the response bytes and the
//! audit leaf with what was recorded.
//!
//! What an invocation journals ([`JournalRecord`]) is written in the same durable
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

/// Everything needed to re-execute an invocation besides the component and the
/// execution context (which the audit event holds).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct JournalRecord {
    pub route: String,
    pub input: Input,
    pub allow_hosts: Vec<String>,
    pub observations: Vec<Observation>,
}

/// What the invocation was handed.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Input {
    /// An HTTP request, as the capability saw it (credentials already stripped).
    Http { method: String, uri: String, headers: Vec<(String, String)>, body: String },
    /// A message delivered to the handler export (payload base64).
    Message { topic: String, payload: String, headers: Vec<(String, String)> },
    /// A job attempt's task input (canonical JSON).
    Task { input: String },
}

impl Input {
    pub(crate) fn base64(bytes: &[u8]) -> String {
        B64.encode(bytes)
    }
}

impl JournalRecord {
    /// Canonical JSON of the record and its `sha256:` digest.
    pub(crate) fn encode(&self) -> Result<(String, String), ApiError> {
        let json = runplane_cjson::from_serialize(self).map_err(|e| ApiError::unavailable(format!("the invocation journal cannot be encoded: {e}")))?;
        let digest = format!("sha256:{}", runplane_cjson::sha256_hex(json.as_bytes()));
        Ok((json, digest))
    }

}

fn unbase64(what: &str, text: &str) -> Result<Vec<u8>, ApiError> {
    B64.decode(text).map_err(|_| ApiError::unavailable(format!("the journaled {what} is not base64")))
}

/// Fills in what a message delivery's outcome decides in its audit event. Shared by
/// the live path (`subscriptions.rs`) and replay.
pub(crate) fn complete_message_event(event: &mut AuditEvent, outcome: &Result<Result<(), String>, InvokeError>, report: &InvocationReport, payload_bytes: u64) {
    event.usage = Some(Usage {
        fuel: report.fuel_consumed,
        memory_peak_bytes: report.memory_peak_bytes as u64,
        port_calls: report.port_calls,
        request_bytes: payload_bytes,
        response_bytes: 0,
        network_bytes: report.network_bytes,
    });
    event.outcome = match outcome {
        Ok(Ok(())) => Outcome::ok(None),
        Ok(Err(_)) => Outcome::error("handler_error", None),
        Err(e) => Outcome::error(e.code(), None),
    };
}

/// Fills in what a task's outcome decides in a job attempt's audit event (live and
/// replayed alike).
pub(crate) fn complete_task_event(event: &mut AuditEvent, outcome: &Result<Result<String, String>, InvokeError>, report: &InvocationReport, input_bytes: u64) {
    event.usage = Some(Usage {
        fuel: report.fuel_consumed,
        memory_peak_bytes: report.memory_peak_bytes as u64,
        port_calls: report.port_calls,
        request_bytes: input_bytes,
        response_bytes: match outcome {
            Ok(Ok(out)) => out.len() as u64,
            _ => 0,
        },
        network_bytes: report.network_bytes,
    });
    match outcome {
        Ok(Ok(out)) => {
            event.outcome = Outcome::ok(None);
            event.response_digest = Some(format!("sha256:{}", runplane_cjson::sha256_hex(out.as_bytes())));
        }
        Ok(Err(message)) => event.outcome = Outcome::error(&runplane_jobs::retry::task_failure(message).0, None),
        Err(e) => event.outcome = Outcome::error(e.code(), None),
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
        network_bytes: report.network_bytes,
    });
    match outcome {
        Ok(resp) => {
            event.outcome = Outcome::ok(Some(resp.status));
            event.response_digest = Some(format!("sha256:{}", runplane_cjson::sha256_hex(&resp.body)));
        }
        Err(e) => {
            event.outcome = Outcome::error(e.code(), Some(invoke_error(e).status.as_u16()));
            event.response_digest = None;
            if let InvokeError::QuotaExceeded(v) = e {
                event.details.insert("quota".into(), serde_json::json!({ "resource": v.resource.as_str(), "message": v.message }));
            }
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
    let (log, index, journal) = node.audit.journal(invocation_id, node.journal_archive.as_deref()).await?.ok_or_else(|| {
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
    let journal = Journal::replay(record.observations);
    // The tenant's memory cap and weight as now; fuel and network are not drawn from its
    // windows (a replay runs on the operator's behalf and calls nothing outside).
    let tier = crate::quotas::tier_of(&tenant);
    let quota = node.quotas.tenant(&tenant.id, tier, node.now_secs()).quota();
    let limits = runplane_host::Limits { memory_bytes: usize::try_from(quota.memory_bytes()).ok(), fuel: None, network: None, weight: tier.weight() };
    let invocation = Invocation { context: Arc::new(context), ports, allow: AllowList::new(record.allow_hosts), journal: journal.clone(), limits };
    let mut replayed = event.clone();
    match record.input {
        Input::Http { method, uri, headers, body } => {
            let body = unbase64("request body", &body)?;
            let mut builder = http::Request::builder().method(method.as_str()).uri(uri.as_str());
            for (k, v) in &headers {
                builder = builder.header(k.as_str(), v.as_str());
            }
            let request_bytes = body.len() as u64;
            let request = builder.body(Bytes::from(body)).map_err(|e| ApiError::unavailable(format!("the journaled request cannot be rebuilt: {e}")))?;
            let (outcome, report) = node.host.handle_http(&capability, invocation, request).await;
            complete_event(&mut replayed, &outcome, &report, request_bytes);
        }
        Input::Message { topic, payload, headers } => {
            let payload = unbase64("message payload", &payload)?;
            let payload_bytes = payload.len() as u64;
            let (outcome, report) = node.host.deliver_message(&capability, invocation, topic, payload, headers).await;
            complete_message_event(&mut replayed, &outcome, &report, payload_bytes);
        }
        Input::Task { input } => {
            let input_bytes = input.len() as u64;
            let (outcome, report) = node.host.run_task(&capability, invocation, input).await;
            complete_task_event(&mut replayed, &outcome, &report, input_bytes);
        }
    }

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

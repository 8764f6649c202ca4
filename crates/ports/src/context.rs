use serde::{Deserialize, Serialize};

use crate::TenantId;

/// What an invocation is, as fixed at the boundary before the capability runs
/// (spec §6.2). Everything the sandbox shows the capability that could vary between
/// runs — its clock and its random numbers — derives from these values, so the same
/// context and inputs give the same outputs on any node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionContext {
    pub protocol_version: String,
    /// Unique id of this invocation.
    pub invocation_id: String,
    /// The caller's session, when it named one (`x-runplane-session`), else the invocation id.
    pub session_id: String,
    /// Who acted: the credential's id (an API key id), never the secret itself.
    pub agent_id: String,
    /// W3C trace id (32 lowercase hex), taken from `traceparent` when valid.
    pub trace_id: String,
    /// Seeds the capability's random numbers.
    pub execution_seed: u64,
    pub tenant: TenantId,
    /// Which node ran it: `None` from every node today. The audit leaf records what
    /// happened, not where, so the same workload gives the same leaves through one
    /// node or many (scaling never changes results, S0-IX); where is operational data,
    /// in that node's logs and traces under the event's `trace_id`. Events written
    /// before nodes shared a control store carry their node's `[node] id` here, and
    /// keep it, so that they still replay to the same hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// `name@version` of the capability.
    pub capability: String,
    /// SHA-256 of the component bytes.
    pub capability_digest: String,
    /// Nanoseconds since the Unix epoch when the request was accepted: the capability's clock starts here.
    pub accepted_at_unix_nanos: u128,
}

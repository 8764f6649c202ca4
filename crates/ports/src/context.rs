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
    /// The node that ran it (from configuration, never the host name).
    pub node_id: String,
    /// `name@version` of the capability.
    pub capability: String,
    /// SHA-256 of the component bytes.
    pub capability_digest: String,
    /// Nanoseconds since the Unix epoch when the request was accepted: the capability's clock starts here.
    pub accepted_at_unix_nanos: u128,
}

//! Control-plane decisions as values and pure functions (spec §7.3, §7.4):
//!
//! - [`flags`]: feature flags (S0-XIII-A), per instance and per tenant, percentage
//!   rollouts by murmur3, variants;
//! - [`domains`]: the domain registry, tier limits, activation and entitlement;
//! - [`tokens`]: Biscuit capability tokens, roles and the operation catalogue,
//!   attenuation, revocation ids, a caching verifier.
//!
//! Architecture invariant: no I/O and no clock. Time arrives as a parameter; the node
//! persists and audits.

pub mod domains;
pub mod flags;
pub mod tokens;

/// What this crate refuses. Messages name the thing, the problem and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("{0}")]
    Invalid(String),
    #[error("domain {domain} is not registered; register it with PUT /v1/domains/{domain}")]
    UnknownDomain { domain: String },
    #[error("the {tier} tier allows {limit} active domains and the tenant has {limit}; upgrade the tier or deactivate a domain first")]
    DomainLimit { tier: String, limit: usize },
    #[error("domain {domain} depends on {dependency}, which is not active for the tenant; activate {dependency} first")]
    InactiveDependency { domain: String, dependency: String },
    #[error("domain {domain} cannot be deactivated while {dependent}, which depends on it, is active; deactivate {dependent} first")]
    DependentActive { domain: String, dependent: String },
    #[error("the tenant is not entitled to capability {capability}: it belongs to domain(s) {domains:?}, none of them active; activate one of them")]
    NotEntitled { capability: String, domains: Vec<String> },
    /// The token is malformed, signed by another key, or its blocks were tampered with.
    #[error("the token is not valid: {0}")]
    InvalidToken(String),
    #[error("the token has been revoked")]
    Revoked,
    #[error("the token expired")]
    Expired,
    /// A valid token asked for more than its role (or its attenuation) allows.
    #[error("the {role} role{scope} does not allow {operation}{hint}")]
    Forbidden { operation: String, role: String, scope: String, hint: String },
}

//! Control-plane decisions as values and pure functions (spec §7.3, §7.4):
//!
//! - [`flags`]: feature flags in the structure of seed S0-XIII-A, per instance and per
//!   tenant, percentage rollouts by murmur3 (as Unleash and flagd do), variants;
//! - [`domains`]: the domain registry (`CapabilityDomain`), tier limits (Free 3, Pro 10,
//!   Enterprise and Custom unlimited), activation and entitlement checks;
//! - [`tokens`]: Biscuit capability tokens, roles and the operation catalogue, offline
//!   attenuation, revocation ids, and a verifier with exact-input caches.
//!
//! Architecture invariant: no I/O and no clock. Time arrives as a parameter
//! (`now_unix_secs`), keys arrive as bytes; the node persists state and audits
//! decisions.

#![warn(missing_docs)]

pub mod domains;
pub mod flags;
pub mod tokens;

/// What this crate refuses. Messages name the thing, the problem and the fix.
///
/// The node maps the token variants to HTTP: [`InvalidToken`](PolicyError::InvalidToken),
/// [`Revoked`](PolicyError::Revoked) and [`Expired`](PolicyError::Expired) to 401,
/// [`Forbidden`](PolicyError::Forbidden) to 403.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A flag, domain, grant or restriction that is malformed; the message says which
    /// field and what is allowed.
    #[error("{0}")]
    Invalid(String),
    /// An activation named a domain nobody registered.
    #[error("domain {domain} is not registered; register it with PUT /v1/domains/{domain} first")]
    UnknownDomain {
        /// The id asked for.
        domain: String,
    },
    /// The tenant's tier allows no more active domains.
    #[error("the {tier} tier allows {limit} active domains and the tenant already has {limit}; upgrade the tier or deactivate a domain")]
    DomainLimit {
        /// The tenant's tier (`free`, `pro`).
        tier: String,
        /// How many domains that tier may have active.
        limit: usize,
    },
    /// A domain's dependency is not active for the tenant.
    #[error("domain {domain} depends on {dependency}, which is not active for the tenant; activate {dependency} first")]
    InactiveDependency {
        /// The domain being activated.
        domain: String,
        /// The dependency that is not active.
        dependency: String,
    },
    /// Another active domain depends on the one being deactivated.
    #[error("domain {domain} cannot be deactivated while {dependent}, which depends on it, is active; deactivate {dependent} first")]
    DependentActive {
        /// The domain being deactivated.
        domain: String,
        /// The active domain that depends on it.
        dependent: String,
    },
    /// The capability belongs to domains, none of them active for the tenant.
    #[error("the tenant is not entitled to capability {capability}: it belongs to {}, none of them active for the tenant; activate {}", list_domains(.domains), one_of(.domains))]
    NotEntitled {
        /// The capability asked for.
        capability: String,
        /// The domains that contain it (activating any one entitles the tenant).
        domains: Vec<String>,
    },
    /// The token is malformed, signed by another key, or its blocks were tampered with.
    #[error("the capability token is not valid ({0}); use a token minted by this instance, unmodified except by attenuation")]
    InvalidToken(String),
    /// One of the token's revocation ids has been revoked.
    #[error("the capability token has been revoked; ask its issuer for a new one")]
    Revoked,
    /// The token's expiry (set at minting or by an attenuation) has passed.
    #[error("the capability token has expired; ask its issuer for a new one")]
    Expired,
    /// A valid token asked for more than its role, its tenant or its attenuations allow.
    #[error("the {role} role{scope} does not allow {operation}{hint}")]
    Forbidden {
        /// The operation asked for.
        operation: String,
        /// The token's role.
        role: String,
        /// ` of tenant <id>` for a tenant-scoped token, else empty.
        scope: String,
        /// The rest of the sentence: on which tenant, and what would allow it.
        hint: String,
    },
}

fn list_domains(domains: &[String]) -> String {
    match domains {
        [one] => format!("domain {one}"),
        many => format!("domains {}", many.join(", ")),
    }
}

fn one_of(domains: &[String]) -> String {
    match domains {
        [one] => one.clone(),
        many => format!("one of {}", many.join(", ")),
    }
}

//! Entitlements: the domain registry (seed S4-5) and the tier limits (S2-VII).

use std::collections::{BTreeMap, BTreeSet};

use runplane_tenancy::Tier;
use serde::{Deserialize, Serialize};

use crate::PolicyError;

/// A named bundle of capabilities sold and activated together (e.g. `com`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CapabilityDomain {
    pub domain_id: String,
    pub domain_name: String,
    /// Capability names (every version), e.g. `orders`.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Domain ids that must be active before this one.
    #[serde(default)]
    pub dependencies: Vec<String>,
}

/// How many domains a tier may have active: Free 3, Pro 10, Enterprise and Custom
/// unlimited (`None`).
pub fn domain_limit(tier: Tier) -> Option<usize> {
    match tier {
        Tier::Free => Some(3),
        Tier::Pro => Some(10),
        Tier::Enterprise | Tier::Custom => None,
    }
}

fn ident_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Every registered domain by id.
#[derive(Debug, Clone, Default)]
pub struct DomainRegistry {
    domains: BTreeMap<String, CapabilityDomain>,
}

impl DomainRegistry {
    /// Registers or replaces a domain. Its dependencies must be registered and must not
    /// lead back to it.
    pub fn register(&mut self, d: CapabilityDomain) -> Result<(), PolicyError> {
        if !ident_ok(&d.domain_id) {
            return Err(PolicyError::Invalid(format!("domain id {:?} must be 1-64 characters of a-z, 0-9, '-' and '_'", d.domain_id)));
        }
        if d.domain_name.is_empty() || d.domain_name.len() > 128 {
            return Err(PolicyError::Invalid(format!("domain {}: domain_name must be 1-128 characters", d.domain_id)));
        }
        for c in &d.capabilities {
            if !ident_ok(c) {
                return Err(PolicyError::Invalid(format!("domain {}: capability name {c:?} must be 1-64 characters of a-z, 0-9 and '-'", d.domain_id)));
            }
        }
        for dep in &d.dependencies {
            if dep == &d.domain_id {
                return Err(PolicyError::Invalid(format!("domain {} cannot depend on itself", d.domain_id)));
            }
            if !self.domains.contains_key(dep) {
                return Err(PolicyError::Invalid(format!("domain {} depends on {dep}, which is not registered; register {dep} first", d.domain_id)));
            }
        }
        // A cycle through the new edges: walk from each dependency and look for d.
        let mut stack: Vec<&str> = d.dependencies.iter().map(String::as_str).collect();
        let mut seen = BTreeSet::new();
        while let Some(id) = stack.pop() {
            if id == d.domain_id {
                return Err(PolicyError::Invalid(format!("domain {}'s dependencies lead back to it (a cycle)", d.domain_id)));
            }
            if seen.insert(id.to_owned())
                && let Some(next) = self.domains.get(id)
            {
                stack.extend(next.dependencies.iter().map(String::as_str));
            }
        }
        self.domains.insert(d.domain_id.clone(), d);
        Ok(())
    }

    pub fn get(&self, id: &str) -> Option<&CapabilityDomain> {
        self.domains.get(id)
    }

    pub fn list(&self) -> Vec<&CapabilityDomain> {
        self.domains.values().collect()
    }

    /// The ids of the domains that contain `capability`.
    pub fn domains_of(&self, capability: &str) -> Vec<String> {
        self.domains.values().filter(|d| d.capabilities.iter().any(|c| c == capability)).map(|d| d.domain_id.clone()).collect()
    }

    /// `S4-5 check_capability`: a capability in no domain is generally available; one in
    /// domains is allowed when any of them is active.
    pub fn check_capability(&self, active: &BTreeSet<String>, capability: &str) -> Result<(), PolicyError> {
        let mut owners = self.domains.values().filter(|d| d.capabilities.iter().any(|c| c == capability)).peekable();
        if owners.peek().is_none() {
            return Ok(());
        }
        let mut domains = Vec::new();
        for d in owners {
            if active.contains(&d.domain_id) {
                return Ok(());
            }
            domains.push(d.domain_id.clone());
        }
        Err(PolicyError::NotEntitled { capability: capability.to_owned(), domains })
    }

    /// Whether `domain` may be activated for a tenant of `tier` with `active` domains.
    pub fn check_activation(&self, tier: Tier, active: &BTreeSet<String>, domain: &str) -> Result<(), PolicyError> {
        let d = self.domains.get(domain).ok_or_else(|| PolicyError::UnknownDomain { domain: domain.to_owned() })?;
        if active.contains(domain) {
            return Ok(());
        }
        if let Some(limit) = domain_limit(tier)
            && active.len() >= limit
        {
            return Err(PolicyError::DomainLimit { tier: format!("{tier:?}").to_lowercase(), limit });
        }
        for dep in &d.dependencies {
            if !active.contains(dep) {
                return Err(PolicyError::InactiveDependency { domain: domain.to_owned(), dependency: dep.clone() });
            }
        }
        Ok(())
    }

    /// Whether `domain` may be deactivated: no other active domain depends on it.
    pub fn check_deactivation(&self, active: &BTreeSet<String>, domain: &str) -> Result<(), PolicyError> {
        for other in active {
            if let Some(d) = self.domains.get(other)
                && d.dependencies.iter().any(|dep| dep == domain)
            {
                return Err(PolicyError::DependentActive { domain: domain.to_owned(), dependent: other.clone() });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(id: &str, caps: &[&str], deps: &[&str]) -> CapabilityDomain {
        CapabilityDomain {
            domain_id: id.into(),
            domain_name: id.to_uppercase(),
            capabilities: caps.iter().map(|s| s.to_string()).collect(),
            dependencies: deps.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn registry(n: usize) -> DomainRegistry {
        let mut r = DomainRegistry::default();
        for i in 0..n {
            r.register(d(&format!("d{i}"), &[], &[])).expect("register");
        }
        r
    }

    #[test]
    fn tier_limits_are_3_10_and_unlimited() {
        let r = registry(12);
        for (tier, limit) in [(Tier::Free, Some(3)), (Tier::Pro, Some(10)), (Tier::Enterprise, None), (Tier::Custom, None)] {
            let mut active = BTreeSet::new();
            for i in 0..12 {
                let id = format!("d{i}");
                match (r.check_activation(tier, &active, &id), limit) {
                    (Ok(()), Some(l)) if i < l => {
                        active.insert(id);
                    }
                    (Ok(()), None) => {
                        active.insert(id);
                    }
                    (Err(PolicyError::DomainLimit { limit: got, .. }), Some(l)) if i >= l => assert_eq!(got, l),
                    (other, _) => panic!("{tier:?} domain #{i}: {other:?}"),
                }
            }
            assert_eq!(active.len(), limit.unwrap_or(12));
        }
    }

    #[test]
    fn dependencies_cycles_and_entitlement() {
        let mut r = DomainRegistry::default();
        r.register(d("com", &["orders"], &[])).expect("com");
        r.register(d("ana", &["reports", "orders"], &["com"])).expect("ana");
        assert!(r.register(d("x", &[], &["missing"])).is_err());
        assert!(r.register(d("self", &[], &["self"])).is_err());
        // Re-registering com to depend on ana would close a cycle.
        assert!(matches!(r.register(d("com", &["orders"], &["ana"])), Err(PolicyError::Invalid(m)) if m.contains("cycle")));
        let none = BTreeSet::new();
        assert!(matches!(r.check_activation(Tier::Free, &none, "ana"), Err(PolicyError::InactiveDependency { dependency, .. }) if dependency == "com"));
        assert!(matches!(r.check_activation(Tier::Free, &none, "nope"), Err(PolicyError::UnknownDomain { .. })));
        let com: BTreeSet<String> = ["com".to_string()].into();
        r.check_activation(Tier::Free, &com, "ana").expect("com is active");
        let both: BTreeSet<String> = ["com".to_string(), "ana".to_string()].into();
        assert!(matches!(r.check_deactivation(&both, "com"), Err(PolicyError::DependentActive { dependent, .. }) if dependent == "ana"));
        r.check_deactivation(&both, "ana").expect("nothing depends on ana");

        assert!(r.check_capability(&none, "hello").is_ok(), "in no domain: generally available");
        assert!(matches!(r.check_capability(&none, "orders"), Err(PolicyError::NotEntitled { domains, .. }) if domains == ["ana", "com"]));
        assert!(r.check_capability(&com, "orders").is_ok(), "any owning domain entitles");
        assert!(r.check_capability(&com, "reports").is_err());
    }
}

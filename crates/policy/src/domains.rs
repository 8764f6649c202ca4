//! Entitlements: the domain registry (seed S4-5) and the tier limits (S2-VII).
//!
//! A domain is a bundle of capabilities sold and activated together. Entitlement
//! checks sit in the runtime, never in capabilities: the node asks
//! [`DomainRegistry::check_capability`] before an invocation and answers 403 on a
//! refusal.

use std::collections::{BTreeMap, BTreeSet};

use runplane_tenancy::Tier;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::PolicyError;

/// A named bundle of capabilities sold and activated together (e.g. `com`, commerce).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CapabilityDomain {
    /// 1-64 characters of a-z, 0-9, `-` and `_`.
    pub domain_id: String,
    /// A display name, 1-128 characters.
    pub domain_name: String,
    /// Capability names (every version of each), e.g. `orders`.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Ids of registered domains that must be active before this one.
    #[serde(default)]
    pub dependencies: Vec<String>,
}

/// How many domains a tenant of `tier` may have active: Free 3, Pro 10, Enterprise and
/// Custom unlimited (`None`).
pub fn domain_limit(tier: Tier) -> Option<usize> {
    match tier {
        Tier::Free => Some(3),
        Tier::Pro => Some(10),
        Tier::Enterprise | Tier::Custom => None,
    }
}

/// A tier as users write it (`runplane_tenancy::Tier` has no `as_str`; this matches its
/// serde names).
fn ident_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Every registered domain, by id.
///
/// The registry keeps its dependency graph acyclic and closed (every dependency is
/// registered), so activation checks never loop and never meet an unknown id.
#[derive(Debug, Clone, Default)]
pub struct DomainRegistry {
    domains: BTreeMap<String, CapabilityDomain>,
}

impl DomainRegistry {
    /// Registers a domain, or replaces the one with the same id. Refuses a malformed
    /// id or name, a dependency that is not registered, a domain depending on itself,
    /// and a dependency that would close a cycle.
    pub fn register(&mut self, d: CapabilityDomain) -> Result<(), PolicyError> {
        let id = &d.domain_id;
        if !ident_ok(id) {
            return Err(PolicyError::Invalid(format!("domain id {id:?} is not valid; use 1-64 characters of a-z, 0-9, '-' and '_'")));
        }
        if d.domain_name.trim().is_empty() || d.domain_name.chars().count() > 128 || d.domain_name.chars().any(char::is_control) {
            return Err(PolicyError::Invalid(format!("domain {id}: domain_name must be 1-128 printable characters")));
        }
        for c in &d.capabilities {
            if !ident_ok(c) {
                return Err(PolicyError::Invalid(format!("domain {id}: capability name {c:?} is not valid; use 1-64 characters of a-z, 0-9, '-' and '_'")));
            }
        }
        for dep in &d.dependencies {
            if dep == id {
                return Err(PolicyError::Invalid(format!("domain {id} cannot depend on itself; remove {id} from its dependencies")));
            }
            if !self.domains.contains_key(dep) {
                return Err(PolicyError::Invalid(format!("domain {id} depends on {dep}, which is not registered; register {dep} first")));
            }
        }
        // The graph was acyclic before, so a new cycle must pass through `d`: walk the
        // registered graph from its dependencies and look for it.
        let mut stack: Vec<&str> = d.dependencies.iter().map(String::as_str).collect();
        let mut seen = BTreeSet::new();
        while let Some(next) = stack.pop() {
            if next == id {
                return Err(PolicyError::Invalid(format!(
                    "domain {id}'s dependencies lead back to {id} (a cycle); remove the dependency that depends on {id}"
                )));
            }
            if seen.insert(next)
                && let Some(n) = self.domains.get(next)
            {
                stack.extend(n.dependencies.iter().map(String::as_str));
            }
        }
        self.domains.insert(d.domain_id.clone(), d);
        Ok(())
    }

    /// The domain with this id.
    pub fn get(&self, id: &str) -> Option<&CapabilityDomain> {
        self.domains.get(id)
    }

    /// Every domain, by id.
    pub fn list(&self) -> Vec<&CapabilityDomain> {
        self.domains.values().collect()
    }

    /// The ids of the domains that contain `capability`, sorted.
    pub fn domains_of(&self, capability: &str) -> Vec<String> {
        self.domains.values().filter(|d| d.capabilities.iter().any(|c| c == capability)).map(|d| d.domain_id.clone()).collect()
    }

    /// S4-5 `check_capability`: whether a tenant with the `active` domains may use
    /// `capability`. A capability in no domain is generally available; one in domains
    /// is allowed when any of them is active; otherwise
    /// [`PolicyError::NotEntitled`] names the domains to activate.
    pub fn check_capability(&self, active: &BTreeSet<String>, capability: &str) -> Result<(), PolicyError> {
        let owners = self.domains_of(capability);
        if owners.is_empty() || owners.iter().any(|d| active.contains(d)) {
            return Ok(());
        }
        Err(PolicyError::NotEntitled { capability: capability.to_owned(), domains: owners })
    }

    /// Whether `domain` may be activated for a tenant of `tier` that has the `active`
    /// domains: it must be registered, within the tier's limit, and its dependencies
    /// active. Activating an already active domain is a no-op and passes.
    pub fn check_activation(&self, tier: Tier, active: &BTreeSet<String>, domain: &str) -> Result<(), PolicyError> {
        let d = self.domains.get(domain).ok_or_else(|| PolicyError::UnknownDomain { domain: domain.to_owned() })?;
        if active.contains(domain) {
            return Ok(());
        }
        if let Some(limit) = domain_limit(tier)
            && active.len() >= limit
        {
            return Err(PolicyError::DomainLimit { tier: tier.as_str().to_owned(), limit });
        }
        match d.dependencies.iter().find(|dep| !active.contains(*dep)) {
            Some(dep) => Err(PolicyError::InactiveDependency { domain: domain.to_owned(), dependency: dep.clone() }),
            None => Ok(()),
        }
    }

    /// Whether `domain` may be deactivated: no other active domain depends on it.
    pub fn check_deactivation(&self, active: &BTreeSet<String>, domain: &str) -> Result<(), PolicyError> {
        let dependent = active
            .iter()
            .filter(|other| other.as_str() != domain)
            .find(|other| self.domains.get(other.as_str()).is_some_and(|d| d.dependencies.iter().any(|dep| dep == domain)));
        match dependent {
            Some(other) => Err(PolicyError::DependentActive { domain: domain.to_owned(), dependent: other.clone() }),
            None => Ok(()),
        }
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

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn tier_limits_are_3_10_and_unlimited() {
        let r = registry(40);
        for (tier, limit) in [(Tier::Free, Some(3)), (Tier::Pro, Some(10)), (Tier::Enterprise, None), (Tier::Custom, None)] {
            assert_eq!(domain_limit(tier), limit);
            let mut active = BTreeSet::new();
            for i in 0..40 {
                let id = format!("d{i}");
                match (r.check_activation(tier, &active, &id), limit) {
                    (Ok(()), Some(l)) if i < l => {
                        active.insert(id);
                    }
                    (Ok(()), None) => {
                        active.insert(id);
                    }
                    (Err(e @ PolicyError::DomainLimit { .. }), Some(l)) if i >= l => {
                        let m = e.to_string();
                        assert!(m.contains(&format!("{l} active domains")) && m.contains("upgrade the tier or deactivate a domain"), "{m}");
                        // An active domain can still be "activated" again (a no-op).
                        let first = active.iter().next().expect("some active").clone();
                        r.check_activation(tier, &active, &first).expect("already active");
                    }
                    (other, _) => panic!("{tier:?} domain #{i}: {other:?}"),
                }
            }
            assert_eq!(active.len(), limit.unwrap_or(40));
        }
        let free = r.check_activation(Tier::Free, &set(&["d0", "d1", "d2"]), "d3").expect_err("4th");
        assert!(free.to_string().starts_with("the free tier allows 3"), "{free}");
    }

    #[test]
    fn registration_validates_ids_dependencies_and_cycles() {
        let mut r = DomainRegistry::default();
        r.register(d("com", &["orders"], &[])).expect("com");
        r.register(d("ana", &["reports", "orders"], &["com"])).expect("ana");
        r.register(d("crm", &[], &["ana"])).expect("crm");
        let refused = |r: &mut DomainRegistry, dom| r.register(dom).expect_err("refused").to_string();
        assert!(refused(&mut r, d("x", &[], &["missing"])).contains("register missing first"));
        assert!(refused(&mut r, d("self", &[], &["self"])).contains("itself"));
        assert!(refused(&mut r, d("Bad Id", &[], &[])).contains("domain id"));
        assert!(refused(&mut r, d("ok", &["Orders!"], &[])).contains("capability name"));
        // Re-registering com to depend on crm would close com → crm → ana → com.
        assert!(refused(&mut r, d("com", &["orders"], &["crm"])).contains("cycle"));
        assert_eq!(r.get("com").expect("com").dependencies, Vec::<String>::new(), "a refused registration changes nothing");
        // Re-registering replaces.
        r.register(d("com", &["orders", "carts"], &[])).expect("replace");
        assert_eq!(r.domains_of("carts"), ["com"]);
        assert_eq!(r.list().len(), 3);
    }

    #[test]
    fn activation_needs_active_dependencies_and_deactivation_respects_dependents() {
        let mut r = DomainRegistry::default();
        r.register(d("com", &["orders"], &[])).expect("com");
        r.register(d("ana", &["reports"], &["com"])).expect("ana");
        let e = r.check_activation(Tier::Free, &set(&[]), "ana").expect_err("inactive dependency");
        assert_eq!(e, PolicyError::InactiveDependency { domain: "ana".into(), dependency: "com".into() });
        assert!(e.to_string().contains("activate com first"), "{e}");
        assert!(matches!(r.check_activation(Tier::Free, &set(&[]), "nope"), Err(PolicyError::UnknownDomain { .. })));
        r.check_activation(Tier::Free, &set(&["com"]), "ana").expect("com is active");
        let e = r.check_deactivation(&set(&["com", "ana"]), "com").expect_err("ana depends on com");
        assert!(e.to_string().contains("deactivate ana first"), "{e}");
        r.check_deactivation(&set(&["com", "ana"]), "ana").expect("nothing depends on ana");
        r.check_deactivation(&set(&["com"]), "com").expect("ana is not active");
    }

    #[test]
    fn capabilities_need_any_owning_domain_active() {
        let mut r = DomainRegistry::default();
        r.register(d("com", &["orders"], &[])).expect("com");
        r.register(d("ana", &["reports", "orders"], &["com"])).expect("ana");
        assert!(r.check_capability(&set(&[]), "hello").is_ok(), "in no domain: generally available");
        let e = r.check_capability(&set(&[]), "orders").expect_err("not entitled");
        assert_eq!(e, PolicyError::NotEntitled { capability: "orders".into(), domains: vec!["ana".into(), "com".into()] });
        assert!(e.to_string().contains("activate one of ana, com"), "{e}");
        assert!(r.check_capability(&set(&["com"]), "orders").is_ok(), "any owning domain entitles");
        assert!(r.check_capability(&set(&["ana"]), "orders").is_ok());
        let e = r.check_capability(&set(&["com"]), "reports").expect_err("only ana has reports");
        assert!(e.to_string().ends_with("activate ana"), "{e}");
    }

    #[test]
    fn domains_round_trip_through_json() {
        let json = serde_json::json!({"domain_id": "com", "domain_name": "Commerce", "capabilities": ["orders"]});
        let dom: CapabilityDomain = serde_json::from_value(json).expect("dependencies default to none");
        assert!(dom.dependencies.is_empty());
        assert!(serde_json::from_value::<CapabilityDomain>(serde_json::json!({"domain_id": "c", "domain_name": "C", "price": 1})).is_err());
    }
}

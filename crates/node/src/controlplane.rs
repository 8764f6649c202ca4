//! The node's control-plane state (spec §7.3, §7.5, §7.6): feature flags, the domain
//! registry and each tenant's active domains, environments and their releases, paused
//! deployments. Decisions are `runplane_policy`'s pure functions; this module keeps the
//! values in memory (one read lock per request) and persists every change to the
//! control store before it takes effect in memory, so a restart sees the same state.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::RwLock;

use runplane_policy::domains::{CapabilityDomain, DomainRegistry};
use runplane_policy::flags::{FeatureFlag, FlagContext, FlagSet};
use runplane_tenancy::Tier;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::control::ControlStore;
use crate::error::ApiError;

const FLAG: &str = "flag";
const DOMAIN: &str = "domain";
const TENANT_DOMAIN: &str = "tenant_domain";
const ENVIRONMENT: &str = "environment";
const RELEASE: &str = "release";
const PAUSED: &str = "paused";
const REVOKED: &str = "revoked_token";

/// An environment (spec §7.6): its bindings, policies and region labels.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    pub name: String,
    /// Port → backend name, as in `[bindings]`.
    #[serde(default)]
    pub bindings: BTreeMap<String, String>,
    /// Region labels of the nodes serving it.
    #[serde(default)]
    pub regions: Vec<String>,
    #[serde(default)]
    pub policies: EnvironmentPolicies,
    /// The environment versions are promoted from (e.g. `stage` for `prod`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotes_from: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentPolicies {
    /// Deploying on a node of this environment needs the version to have been promoted
    /// into it first.
    #[serde(default)]
    pub require_promotion: bool,
}

/// A capability version released into an environment.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Release {
    pub environment: String,
    pub capability: String,
    pub version: String,
    pub digest: String,
    /// Where it was promoted from (`None` for a first release by deploy).
    pub promoted_from: Option<String>,
    pub at: String,
    pub actor: String,
}

/// In-memory control-plane state, persisted through the control store.
pub struct ControlPlane {
    store: ControlStore,
    instance_id: String,
    pub(crate) flags: RwLock<FlagSet>,
    pub(crate) domains: RwLock<DomainRegistry>,
    pub(crate) tenant_domains: RwLock<BTreeMap<String, BTreeSet<String>>>,
    pub(crate) environments: RwLock<BTreeMap<String, Environment>>,
    pub(crate) releases: RwLock<BTreeMap<String, Release>>,
    pub(crate) paused: RwLock<HashSet<String>>,
    pub(crate) revoked: RwLock<HashSet<String>>,
}

fn corrupt(kind: &str, id: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::unavailable(format!("control store: the {kind} document {id} is unreadable ({e}); restore the control store from a backup"))
}

fn read<T: for<'de> Deserialize<'de>>(kind: &str, id: &str, body: &str) -> Result<T, ApiError> {
    serde_json::from_str(body).map_err(|e| corrupt(kind, id, e))
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

fn rd<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn release_id(environment: &str, capability: &str, version: &str) -> String {
    format!("{environment}/{capability}@{version}")
}

/// Every control-plane document, as read from the store.
struct Documents {
    flags: FlagSet,
    domains: DomainRegistry,
    tenant_domains: BTreeMap<String, BTreeSet<String>>,
    environments: BTreeMap<String, Environment>,
    releases: BTreeMap<String, Release>,
    paused: HashSet<String>,
    revoked: HashSet<String>,
}

impl Documents {
    async fn read(store: &ControlStore) -> Result<Documents, ApiError> {
        let mut flags = FlagSet::default();
        for (id, body) in store.documents(FLAG).await? {
            let flag: FeatureFlag = read(FLAG, &id, &body)?;
            match id.split_once('/') {
                Some(("instance", _)) => flags.set_instance(flag),
                Some((tenant, _)) => flags.set_tenant(tenant, flag),
                None => return Err(corrupt(FLAG, &id, "no scope")),
            }
        }
        let mut domains = DomainRegistry::default();
        // Registration checks dependencies, so register in an order where each
        // dependency comes first (the stored set was valid when it was written).
        let mut pending: Vec<CapabilityDomain> =
            store.documents(DOMAIN).await?.into_iter().map(|(id, body)| read(DOMAIN, &id, &body)).collect::<Result<_, _>>()?;
        while !pending.is_empty() {
            let before = pending.len();
            pending.retain(|d| domains.register(d.clone()).is_err());
            if pending.len() == before {
                return Err(corrupt(DOMAIN, &pending[0].domain_id, "its dependencies are not registered"));
            }
        }
        let mut tenant_domains: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (id, _) in store.documents(TENANT_DOMAIN).await? {
            let (tenant, domain) = id.split_once('/').ok_or_else(|| corrupt(TENANT_DOMAIN, &id, "not tenant/domain"))?;
            tenant_domains.entry(tenant.to_owned()).or_default().insert(domain.to_owned());
        }
        let environments =
            store.documents(ENVIRONMENT).await?.into_iter().map(|(id, body)| Ok((id.clone(), read(ENVIRONMENT, &id, &body)?))).collect::<Result<_, ApiError>>()?;
        let releases =
            store.documents(RELEASE).await?.into_iter().map(|(id, body)| Ok((id.clone(), read(RELEASE, &id, &body)?))).collect::<Result<_, ApiError>>()?;
        let paused = store.documents(PAUSED).await?.into_iter().map(|(id, _)| id).collect();
        let revoked = store.documents(REVOKED).await?.into_iter().map(|(id, _)| id).collect();
        Ok(Documents { flags, domains, tenant_domains, environments, releases, paused, revoked })
    }
}

impl ControlPlane {
    /// Loads every document from the control store.
    pub async fn load(store: ControlStore, instance_id: String) -> Result<Self, ApiError> {
        let d = Documents::read(&store).await?;
        Ok(ControlPlane {
            store,
            instance_id,
            flags: RwLock::new(d.flags),
            domains: RwLock::new(d.domains),
            tenant_domains: RwLock::new(d.tenant_domains),
            environments: RwLock::new(d.environments),
            releases: RwLock::new(d.releases),
            paused: RwLock::new(d.paused),
            revoked: RwLock::new(d.revoked),
        })
    }

    /// Replaces the in-memory state with what the store holds now (another node
    /// changed a document).
    pub async fn reload(&self) -> Result<(), ApiError> {
        let d = Documents::read(&self.store).await?;
        *write(&self.flags) = d.flags;
        *write(&self.domains) = d.domains;
        *write(&self.tenant_domains) = d.tenant_domains;
        *write(&self.environments) = d.environments;
        *write(&self.releases) = d.releases;
        *write(&self.paused) = d.paused;
        *write(&self.revoked) = d.revoked;
        Ok(())
    }

    /// The instance id flags are stamped with.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    // ---- flags ----

    /// Creates or replaces a flag, instance-wide (`tenant: None`) or for one tenant.
    pub async fn set_flag(&self, tenant: Option<&str>, flag: FeatureFlag, at: &str) -> Result<Option<FeatureFlag>, ApiError> {
        flag.validate().map_err(|e| ApiError::bad_request("invalid_flag", e.to_string()))?;
        let id = format!("{}/{}", tenant.unwrap_or("instance"), flag.feature_id);
        let body = serde_json::to_string(&flag).map_err(|e| ApiError::bad_request("invalid_flag", e.to_string()))?;
        self.store.put_document(FLAG, &id, &body, at).await?;
        let mut flags = write(&self.flags);
        let before = self.flag(&flags, tenant, &flag.feature_id);
        match tenant {
            None => flags.set_instance(flag),
            Some(t) => flags.set_tenant(t, flag),
        }
        Ok(before)
    }

    fn flag(&self, flags: &FlagSet, tenant: Option<&str>, feature: &str) -> Option<FeatureFlag> {
        match tenant {
            None => flags.instance_flags().into_iter().find(|f| f.feature_id == feature).cloned(),
            Some(t) => flags.tenant_flags(t).into_iter().find(|f| f.feature_id == feature).cloned(),
        }
    }

    /// Removes a flag; returns what it was.
    pub async fn delete_flag(&self, tenant: Option<&str>, feature: &str) -> Result<Option<FeatureFlag>, ApiError> {
        let id = format!("{}/{}", tenant.unwrap_or("instance"), feature);
        self.store.delete_document(FLAG, &id).await?;
        let mut flags = write(&self.flags);
        let before = self.flag(&flags, tenant, feature);
        match tenant {
            None => flags.remove_instance(feature),
            Some(t) => flags.remove_tenant(t, feature),
        };
        Ok(before)
    }

    /// Instance flags, or one tenant's own flags.
    pub fn list_flags(&self, tenant: Option<&str>) -> Vec<FeatureFlag> {
        let flags = rd(&self.flags);
        match tenant {
            None => flags.instance_flags().into_iter().cloned().collect(),
            Some(t) => flags.tenant_flags(t).into_iter().cloned().collect(),
        }
    }

    /// Whether `feature` is on for `tenant` now (the tenant id is the rollout subject).
    pub fn flag_enabled(&self, feature: &str, tenant: &str, tier: Tier, now_secs: u64) -> runplane_policy::flags::Evaluation {
        rd(&self.flags).evaluate(feature, &FlagContext { tenant, tier, subject: tenant, now_unix_secs: now_secs })
    }

    // ---- domains ----

    pub async fn register_domain(&self, domain: CapabilityDomain, at: &str) -> Result<Option<CapabilityDomain>, ApiError> {
        let before = rd(&self.domains).get(&domain.domain_id).cloned();
        // Validate against a copy first, so nothing is persisted that the registry refuses.
        let mut next = rd(&self.domains).clone();
        next.register(domain.clone()).map_err(|e| ApiError::bad_request("invalid_domain", e.to_string()))?;
        let body = serde_json::to_string(&domain).map_err(|e| ApiError::bad_request("invalid_domain", e.to_string()))?;
        self.store.put_document(DOMAIN, &domain.domain_id, &body, at).await?;
        *write(&self.domains) = next;
        Ok(before)
    }

    pub fn list_domains(&self) -> Vec<CapabilityDomain> {
        rd(&self.domains).list().into_iter().cloned().collect()
    }

    pub fn active_domains(&self, tenant: &str) -> BTreeSet<String> {
        rd(&self.tenant_domains).get(tenant).cloned().unwrap_or_default()
    }

    /// Every domain active for at least one tenant, with how many tenants it is active for.
    pub fn domains_in_use(&self) -> BTreeMap<String, usize> {
        let mut used = BTreeMap::new();
        for domain in rd(&self.tenant_domains).values().flatten() {
            *used.entry(domain.clone()).or_insert(0) += 1;
        }
        used
    }

    /// Activates a domain for a tenant: the tier's limit and the dependencies are checked.
    pub async fn activate_domain(&self, tenant: &str, tier: Tier, domain: &str, at: &str) -> Result<BTreeSet<String>, ApiError> {
        let active = self.active_domains(tenant);
        rd(&self.domains).check_activation(tier, &active, domain).map_err(policy_refusal)?;
        self.store.put_document(TENANT_DOMAIN, &format!("{tenant}/{domain}"), "{}", at).await?;
        write(&self.tenant_domains).entry(tenant.to_owned()).or_default().insert(domain.to_owned());
        Ok(active)
    }

    /// Deactivates a domain (refused while an active domain depends on it); takes effect
    /// on the next request.
    pub async fn deactivate_domain(&self, tenant: &str, domain: &str) -> Result<BTreeSet<String>, ApiError> {
        let active = self.active_domains(tenant);
        if !active.contains(domain) {
            return Err(ApiError::not_found(format!("domain {domain} is not active for tenant {tenant}")));
        }
        rd(&self.domains).check_deactivation(&active, domain).map_err(policy_refusal)?;
        self.store.delete_document(TENANT_DOMAIN, &format!("{tenant}/{domain}")).await?;
        if let Some(set) = write(&self.tenant_domains).get_mut(tenant) {
            set.remove(domain);
        }
        Ok(active)
    }

    /// Whether the tenant is entitled to the capability (spec §7.3): 403 if not.
    pub fn check_entitled(&self, tenant: &str, capability: &str) -> Result<(), ApiError> {
        let domains = rd(&self.domains);
        let active = rd(&self.tenant_domains);
        let empty = BTreeSet::new();
        domains.check_capability(active.get(tenant).unwrap_or(&empty), capability).map_err(|e| ApiError::forbidden_code("not_entitled", e.to_string()))
    }

    // ---- environments and releases ----

    pub async fn set_environment(&self, env: Environment, at: &str) -> Result<Option<Environment>, ApiError> {
        let body = serde_json::to_string(&env).map_err(|e| ApiError::bad_request("invalid_environment", e.to_string()))?;
        self.store.put_document(ENVIRONMENT, &env.name, &body, at).await?;
        Ok(write(&self.environments).insert(env.name.clone(), env))
    }

    pub fn environment(&self, name: &str) -> Option<Environment> {
        rd(&self.environments).get(name).cloned()
    }

    pub fn list_environments(&self) -> Vec<Environment> {
        rd(&self.environments).values().cloned().collect()
    }

    pub fn release(&self, environment: &str, capability: &str, version: &str) -> Option<Release> {
        rd(&self.releases).get(&release_id(environment, capability, version)).cloned()
    }

    pub fn releases(&self, environment: &str) -> Vec<Release> {
        rd(&self.releases).values().filter(|r| r.environment == environment).cloned().collect()
    }

    pub async fn record_release(&self, release: Release, at: &str) -> Result<(), ApiError> {
        let id = release_id(&release.environment, &release.capability, &release.version);
        let body = serde_json::to_string(&release).map_err(|e| ApiError::unavailable(e.to_string()))?;
        self.store.put_document(RELEASE, &id, &body, at).await?;
        write(&self.releases).insert(id, release);
        Ok(())
    }

    // ---- operator actions ----

    pub fn is_paused(&self, route: &str) -> bool {
        rd(&self.paused).contains(route)
    }

    /// Pauses or resumes a route; returns whether it was paused before.
    pub async fn set_paused(&self, route: &str, paused: bool, at: &str) -> Result<bool, ApiError> {
        if paused {
            self.store.put_document(PAUSED, route, "{}", at).await?;
            Ok(!write(&self.paused).insert(route.to_owned()))
        } else {
            self.store.delete_document(PAUSED, route).await?;
            Ok(write(&self.paused).remove(route))
        }
    }

    // ---- token revocation ----

    pub fn is_revoked(&self, revocation_id: &str) -> bool {
        rd(&self.revoked).contains(revocation_id)
    }

    pub async fn revoke(&self, revocation_id: &str, at: &str) -> Result<bool, ApiError> {
        self.store.put_document(REVOKED, revocation_id, "{}", at).await?;
        Ok(write(&self.revoked).insert(revocation_id.to_owned()))
    }

    pub fn revoked(&self) -> Vec<String> {
        let mut ids: Vec<String> = rd(&self.revoked).iter().cloned().collect();
        ids.sort();
        ids
    }
}

/// A refused activation or deactivation: 403 for a tier limit, 409 for dependencies,
/// 404 for an unknown domain.
fn policy_refusal(e: runplane_policy::PolicyError) -> ApiError {
    use runplane_policy::PolicyError as P;
    match &e {
        P::UnknownDomain { .. } => ApiError::not_found(e.to_string()),
        P::DomainLimit { .. } => ApiError::forbidden_code("domain_limit", e.to_string()),
        _ => ApiError::conflict(e.to_string()),
    }
}

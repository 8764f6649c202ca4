//! Credentials at the boundary (spec §5.1): the tenant comes from the credential,
//! never from a header or path the caller chooses.

use std::collections::HashMap;
use std::sync::RwLock;

use axum::http::HeaderMap;
use base64::Engine as _;
use crate::entropy::Entropy;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use runplane_policy::PolicyError;
use runplane_policy::tokens::{Principal, Request as PolicyRequest, Role, TokenAuthority, TokenVerifier};

/// Who a valid tenant key belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOwner {
    pub tenant: String,
    pub key_id: String,
}

/// In-memory index of tenant API keys by hash, loaded from the control store and
/// updated on every change, so authentication costs one hash and one map lookup.
#[derive(Default)]
pub struct KeyIndex {
    by_hash: RwLock<HashMap<String, KeyOwner>>,
}

impl KeyIndex {
    pub fn replace_all(&self, keys: impl IntoIterator<Item = (String, String, String)>) {
        let map = keys.into_iter().map(|(hash, key_id, tenant)| (hash, KeyOwner { tenant, key_id })).collect();
        *self.by_hash.write().unwrap_or_else(|p| p.into_inner()) = map;
    }

    pub fn insert(&self, hash: String, owner: KeyOwner) {
        self.by_hash.write().unwrap_or_else(|p| p.into_inner()).insert(hash, owner);
    }

    pub fn remove_key(&self, key_id: &str) {
        self.by_hash.write().unwrap_or_else(|p| p.into_inner()).retain(|_, o| o.key_id != key_id);
    }

    pub fn remove_tenant(&self, tenant: &str) {
        self.by_hash.write().unwrap_or_else(|p| p.into_inner()).retain(|_, o| o.tenant != tenant);
    }

    pub fn lookup(&self, key: &str) -> Option<KeyOwner> {
        self.by_hash.read().unwrap_or_else(|p| p.into_inner()).get(&hash_secret(key)).cloned()
    }
}

/// Lowercase hex SHA-256 of a credential, as stored.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A new random credential with a recognisable prefix (`rpk_` tenant key, `rpa_` admin token).
pub fn new_secret(entropy: &Entropy, prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    entropy.fill(&mut bytes);
    format!("{prefix}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// A short public id.
pub fn new_id(entropy: &Entropy, prefix: &str) -> String {
    let mut bytes = [0u8; 8];
    entropy.fill(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// The bearer token of a request, if it has a well-formed one.
pub fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("this endpoint needs a credential; send Authorization: Bearer <token>"))?;
    value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::unauthorized("the Authorization header must be 'Bearer <token>'"))
}

/// Compares two equal-length hex digests without an early exit.
pub fn digests_equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Who is acting, as every admin event names it.
#[derive(Debug, Clone)]
pub struct Actor {
    /// `admin` (the root admin token), `tenant:<id>/<key id>` (an API key), or
    /// `token:<token id>/<subject>` (a capability token).
    pub name: String,
    pub role: Role,
    /// The tenant a tenant-scoped credential belongs to.
    pub tenant: Option<String>,
    /// The capability token's id (its first revocation id), if it was one.
    pub token_id: Option<String>,
}

/// Why a request was not let through: 401 (no valid credential; not audited — there is
/// no one to name) or 403 (a valid credential beyond its rights; audited).
pub enum Refusal {
    Unauthenticated(ApiError),
    Forbidden(Actor, ApiError),
}

/// The instance's capability-token keys: the signing authority and the verifier with
/// its caches.
pub struct Tokens {
    pub authority: TokenAuthority,
    pub verifier: TokenVerifier,
}

impl Tokens {
    /// Reads the token signing key (`<data_dir>/token.key`, 32 bytes as hex), creating
    /// it at first start (mode 0600).
    pub fn load(path: &std::path::Path, entropy: &Entropy) -> anyhow::Result<Tokens> {
        let seed: [u8; 32] = match std::fs::read_to_string(path) {
            Ok(text) => hex::decode(text.trim()).ok().and_then(|b| b.try_into().ok()).ok_or_else(|| {
                anyhow::anyhow!("the token key {} is not 64 hex characters; restore it from a backup (a new key invalidates every token)", path.display())
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut seed = [0u8; 32];
                entropy.fill(&mut seed);
                crate::node::write_private(path, hex::encode(seed).as_bytes())
                    .map_err(|e| anyhow::anyhow!("cannot write the token key {}: {e}", path.display()))?;
                seed
            }
            Err(e) => return Err(anyhow::anyhow!("cannot read the token key {}: {e}", path.display())),
        };
        let authority = TokenAuthority::from_seed(&seed).map_err(|e| anyhow::anyhow!("the token key {} is unusable: {e}", path.display()))?;
        let verifier = TokenVerifier::new(authority.public_key());
        Ok(Tokens { authority, verifier })
    }
}


impl crate::node::Node {
    /// Authenticates a request's credential and authorizes `operation` on `tenant`
    /// (spec §7.4). Three kinds of credential:
    /// - a capability token (Biscuit), checked against the role catalogue of
    ///   `runplane_policy` and any attenuation its holder added;
    /// - the instance's root admin token (`rpa_…`): the instance-admin role, for
    ///   bootstrapping and break-glass use — mint role tokens for everyday work;
    /// - a tenant API key (`rpk_…`): the `tenant` role of its tenant.
    pub(crate) fn authorize(&self, headers: &HeaderMap, operation: &str, tenant: Option<&str>) -> Result<Actor, Refusal> {
        let token = bearer(headers).map_err(Refusal::Unauthenticated)?;
        // The root admin token and API keys are recognised by their hash (one SHA-256
        // and a map read); anything else must be a capability token.
        let actor = if digests_equal(&hash_secret(token), &self.admin_token_hash) {
            Actor { name: "admin".into(), role: Role::InstanceAdmin, tenant: None, token_id: None }
        } else if let Some(owner) = self.keys.lookup(token) {
            Actor { name: format!("tenant:{}/{}", owner.tenant, owner.key_id), role: Role::Tenant, tenant: Some(owner.tenant), token_id: None }
        } else {
            let now = self.now_secs();
            return match self.tokens.verifier.authorize(token, &PolicyRequest { operation, tenant, route: None }, now, &|id| self.controlplane.is_revoked(id)) {
                Ok(p) => Ok(actor_of(&p)),
                Err(e @ PolicyError::Forbidden { .. }) => {
                    let who = self
                        .tokens
                        .verifier
                        .identify(token)
                        .map(|p| actor_of(&p))
                        .unwrap_or(Actor { name: "token:unknown".into(), role: Role::Tenant, tenant: None, token_id: None });
                    Err(Refusal::Forbidden(who, forbidden(operation, tenant, e.to_string())))
                }
                Err(e) => Err(Refusal::Unauthenticated(ApiError::unauthorized(format!(
                    "the credential is not the admin token, a tenant API key or a valid capability token ({e}); check it or ask an instance admin for a new one"
                )))),
            };
        };
        if runplane_policy::tokens::role_allows(actor.role, operation, actor.tenant.as_deref(), tenant) {
            Ok(actor)
        } else {
            let why = format!("the {} role may not perform {operation}", actor.role.as_str());
            Err(Refusal::Forbidden(actor, forbidden(operation, tenant, why)))
        }
    }

    /// The tenant a tenant-traffic credential (API key or tenant token) acts for, with
    /// `operation` (`invoke`, `contract.execute`) authorized on `route`.
    pub(crate) fn tenant_credential(&self, token: &str, operation: &str, route: Option<&str>) -> Result<KeyOwner, ApiError> {
        if let Some(owner) = self.keys.lookup(token) {
            return Ok(owner);
        }
        // The tenant comes from the token itself; authorization then checks the role
        // and every attenuation against that tenant and route.
        let identity = self
            .tokens
            .verifier
            .identify(token)
            .map_err(|_| ApiError::unauthorized("the credential is neither a valid API key nor a valid capability token; ask your administrator for a tenant key"))?;
        let tenant = identity
            .tenant
            .clone()
            .ok_or_else(|| ApiError::forbidden(format!("tenant traffic needs a tenant token; a {} token acts on the admin API only", identity.role.as_str())))?;
        let p = self
            .tokens
            .verifier
            .authorize(token, &PolicyRequest { operation, tenant: Some(&tenant), route }, self.now_secs(), &|id| self.controlplane.is_revoked(id))
            .map_err(|e| match e {
                PolicyError::Forbidden { .. } => ApiError::forbidden(format!("the capability token does not allow {operation} here: {e}")),
                e => ApiError::unauthorized(format!("the capability token was refused: {e}")),
            })?;
        Ok(KeyOwner { tenant, key_id: format!("token:{}", p.token_id) })
    }
}

fn actor_of(p: &Principal) -> Actor {
    Actor { name: format!("token:{}/{}", p.token_id, p.subject), role: p.role, tenant: p.tenant.clone(), token_id: Some(p.token_id.clone()) }
}


fn forbidden(operation: &str, tenant: Option<&str>, why: String) -> ApiError {
    let on = tenant.map(|t| format!(" on tenant {t}")).unwrap_or_default();
    ApiError::forbidden(format!("{operation}{on} is not allowed for this credential: {why}; ask an instance admin for a token with a role that allows it"))
}

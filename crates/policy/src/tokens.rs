//! Capability tokens and roles (spec §7.4) on Biscuit.
//!
//! A token's authority block says who it is for — `role("deployer")`,
//! `tenant_scope("acme")` for the tenant roles, `subject("alice")`, `expires(<unix
//! secs>)` — and nothing about rights: what a role may do is the [`OPERATIONS`]
//! catalogue, turned into the verifier's allow policies. A holder narrows a token
//! offline with [`attenuate`], which appends a block of checks only; Biscuit's
//! semantics make a later block unable to add facts the policies trust, so no
//! attenuation can widen a token. Revocation is by any of a token's revocation ids.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use biscuit_auth::builder::{Term, date, fact, string};
use biscuit_auth::{Algorithm, AuthorizerBuilder, Biscuit, BlockBuilder, KeyPair, PrivateKey, PublicKey};
use sha2::{Digest, Sha256};

use crate::PolicyError;

/// The roles of spec §7.4, plus `tenant` for tenant traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    InstanceAdmin,
    Deployer,
    Auditor,
    Operator,
    TenantAdmin,
    Tenant,
}

impl Role {
    pub const ALL: [Role; 6] = [Role::InstanceAdmin, Role::Deployer, Role::Auditor, Role::Operator, Role::TenantAdmin, Role::Tenant];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::InstanceAdmin => "instance-admin",
            Role::Deployer => "deployer",
            Role::Auditor => "auditor",
            Role::Operator => "operator",
            Role::TenantAdmin => "tenant-admin",
            Role::Tenant => "tenant",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Tenant-scoped roles act only on their own tenant.
    pub fn is_tenant_scoped(self) -> bool {
        matches!(self, Role::TenantAdmin | Role::Tenant)
    }
}

use Role::{Auditor as AU, Deployer as DE, InstanceAdmin as IA, Operator as OP, Tenant as TE, TenantAdmin as TA};

/// Every operation and the roles that may perform it. Instance-wide roles act on any
/// tenant; tenant-scoped roles only on their own.
pub const OPERATIONS: &[(&str, &[Role])] = &[
    ("tenant.create", &[IA]),
    ("tenant.list", &[IA, AU, OP]),
    ("tenant.read", &[IA, AU, OP, TA]),
    ("tenant.delete", &[IA]),
    ("tenant.suspend", &[IA, OP]),
    ("tenant.resume", &[IA, OP]),
    ("tenant.provision", &[IA]),
    ("tenant.drain", &[IA, OP]),
    ("key.create", &[IA, TA]),
    ("quota.read", &[IA, AU, TA]),
    ("quota.set", &[IA]),
    ("secret.list", &[IA, AU, TA]),
    ("secret.put", &[IA, TA]),
    ("secret.rotate_kek", &[IA]),
    ("capability.push", &[IA, DE]),
    ("capability.list", &[IA, DE, AU]),
    ("deploy", &[IA, DE]),
    ("deployment.list", &[IA, DE, AU, OP]),
    ("undeploy", &[IA, DE]),
    ("deployment.pause", &[IA, OP]),
    ("deployment.resume", &[IA, OP]),
    ("promote", &[IA, DE]),
    ("environment.set", &[IA]),
    ("environment.list", &[IA, DE, AU]),
    ("config.set", &[IA, TA]),
    ("config.read", &[IA, DE, AU]),
    ("config.rollback", &[IA, TA]),
    ("flag.set", &[IA, TA]),
    ("flag.list", &[IA, AU, TA]),
    ("flag.delete", &[IA, TA]),
    ("domain.register", &[IA]),
    ("domain.list", &[IA, AU, TA]),
    ("domain.activate", &[IA, TA]),
    ("domain.deactivate", &[IA, TA]),
    ("contract.register", &[IA, DE]),
    ("contract.read", &[IA, DE]),
    ("scheduler.plan", &[IA]),
    ("audit.read", &[IA, AU, OP]),
    ("replay", &[IA, OP]),
    ("token.mint", &[IA, TA]),
    ("token.revoke", &[IA]),
    ("token.list", &[IA, AU]),
    ("invoke", &[TA, TE]),
    ("contract.execute", &[TA, TE]),
];

/// The catalogue's answer for a credential without a token (the root admin token, a
/// tenant API key): `role` may perform `operation` on `target` when the catalogue lists
/// it and, for a tenant-scoped role, `target` is its own tenant.
pub fn role_allows(role: Role, operation: &str, own_tenant: Option<&str>, target: Option<&str>) -> bool {
    let listed = OPERATIONS.iter().any(|(op, roles)| *op == operation && roles.contains(&role));
    listed && (!role.is_tenant_scoped() || (own_tenant.is_some() && own_tenant == target))
}

/// The roles that may perform `operation` (for error messages).
pub fn roles_for(operation: &str) -> Vec<&'static str> {
    OPERATIONS.iter().find(|(op, _)| *op == operation).map(|(_, roles)| roles.iter().map(|r| r.as_str()).collect()).unwrap_or_default()
}

/// What a token is minted for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub role: Role,
    /// Required for the tenant-scoped roles, refused for the others.
    pub tenant: Option<String>,
    pub subject: String,
    pub expires_unix_secs: Option<u64>,
}

/// The facts of a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub role: Role,
    pub tenant: Option<String>,
    pub subject: String,
    /// Hex of the authority block's revocation id: the token's stable name.
    pub token_id: String,
    pub revocation_ids: Vec<String>,
    pub expires_unix_secs: Option<u64>,
}

/// Whether `granter` may mint `grant`: an instance admin anything; a tenant admin only
/// tenant-admin or tenant tokens of its own tenant; nobody else.
pub fn may_grant(granter: &Principal, grant: &Grant) -> bool {
    match granter.role {
        Role::InstanceAdmin => true,
        Role::TenantAdmin => grant.role.is_tenant_scoped() && grant.tenant.is_some() && grant.tenant == granter.tenant,
        _ => false,
    }
}

fn invalid(e: impl std::fmt::Display) -> PolicyError {
    PolicyError::InvalidToken(e.to_string())
}

fn unix(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn name_ok(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && !s.chars().any(|c| c.is_control() || c == '"' || c == '\\')
}

/// The instance's token signing key.
pub struct TokenAuthority {
    keys: KeyPair,
}

impl TokenAuthority {
    /// From a 32-byte Ed25519 seed (the node keeps it in a 0600 file).
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self, PolicyError> {
        let private = PrivateKey::from_bytes(seed, Algorithm::Ed25519).map_err(invalid)?;
        Ok(TokenAuthority { keys: KeyPair::from(&private) })
    }

    pub fn public_key(&self) -> PublicKey {
        self.keys.public()
    }

    /// Signs a new token (base64url).
    pub fn mint(&self, grant: &Grant) -> Result<String, PolicyError> {
        if grant.role.is_tenant_scoped() != grant.tenant.is_some() {
            return Err(PolicyError::Invalid(format!("a {} token {} a tenant", grant.role.as_str(), if grant.role.is_tenant_scoped() { "needs" } else { "cannot have" })));
        }
        if !name_ok(&grant.subject, 128) || grant.tenant.as_deref().is_some_and(|t| !name_ok(t, 64)) {
            return Err(PolicyError::Invalid("the subject and tenant must be printable, without quotes".into()));
        }
        let mut b = Biscuit::builder()
            .fact(fact("role", &[string(grant.role.as_str())]))
            .and_then(|b| b.fact(fact("subject", &[string(&grant.subject)])))
            .map_err(invalid)?;
        if let Some(t) = &grant.tenant {
            b = b.fact(fact("tenant_scope", &[string(t)])).map_err(invalid)?;
        }
        if let Some(exp) = grant.expires_unix_secs {
            let params = HashMap::from([("exp".to_owned(), date(&unix(exp))), ("secs".to_owned(), Term::Integer(exp as i64))]);
            b = b.code_with_params("expires({secs}); check if time($t), $t <= {exp};", params, HashMap::new()).map_err(invalid)?;
        }
        b.build(&self.keys).map_err(invalid)?.to_base64().map_err(invalid)
    }
}

/// How a holder narrows a token: every present field adds a check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restriction {
    /// Only these operations.
    pub operations: Option<Vec<String>>,
    /// Only on this tenant.
    pub tenant: Option<String>,
    /// Only these routes (tenant traffic).
    pub routes: Option<Vec<String>>,
    /// Not after this instant.
    pub expires_unix_secs: Option<u64>,
}

fn term_set(items: &[String]) -> Term {
    Term::Set(items.iter().map(|s| string(s)).collect::<BTreeSet<Term>>())
}

/// Appends a block of checks to a token; no key is needed and no right can be added.
pub fn attenuate(token: &str, r: &Restriction) -> Result<String, PolicyError> {
    let unverified = biscuit_auth::UnverifiedBiscuit::from_base64(token).map_err(invalid)?;
    let mut block = BlockBuilder::new();
    let mut params = HashMap::new();
    let mut code = String::new();
    if let Some(ops) = &r.operations {
        for op in ops {
            if !OPERATIONS.iter().any(|(o, _)| o == op) {
                return Err(PolicyError::Invalid(format!("{op:?} is not an operation; see the catalogue in runplane_policy::tokens::OPERATIONS")));
            }
        }
        params.insert("ops".to_owned(), term_set(ops));
        code.push_str("check if operation($op), {ops}.contains($op);\n");
    }
    if let Some(t) = &r.tenant {
        params.insert("tenant".to_owned(), string(t));
        code.push_str("check if tenant({tenant});\n");
    }
    if let Some(routes) = &r.routes {
        params.insert("routes".to_owned(), term_set(routes));
        code.push_str("check if route($r), {routes}.contains($r);\n");
    }
    if let Some(exp) = r.expires_unix_secs {
        params.insert("exp".to_owned(), date(&unix(exp)));
        code.push_str("check if time($t), $t <= {exp};\n");
    }
    if code.is_empty() {
        return Err(PolicyError::Invalid("an attenuation needs at least one restriction".into()));
    }
    block = block.code_with_params(&code, params, HashMap::new()).map_err(invalid)?;
    unverified.append(block).map_err(invalid)?.to_base64().map_err(invalid)
}

/// The revocation ids (hex) of a token's blocks, after checking its signatures.
pub fn revocation_ids(token: &str, root: &PublicKey) -> Result<Vec<String>, PolicyError> {
    let b = Biscuit::from_base64(token, *root).map_err(invalid)?;
    Ok(b.revocation_identifiers().iter().map(hex::encode).collect())
}

/// What a request asks for.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub operation: &'a str,
    /// The tenant acted on, if any.
    pub tenant: Option<&'a str>,
    /// The route invoked, for tenant traffic.
    pub route: Option<&'a str>,
}

/// A verified token and what its authority block says.
struct Verified {
    biscuit: Biscuit,
    principal: Principal,
}

const CACHE_LIMIT: usize = 10_000;

type DecisionKey = ([u8; 32], String, Option<String>, Option<String>, u64);

/// Verifies tokens and authorizes requests.
///
/// Two caches make repeated requests cheap, and both are sound because they are keyed
/// by everything their result depends on: verified tokens by the SHA-256 of the token
/// string (signature checks depend on the bytes and the root key only), decisions by
/// (token, operation, tenant, route, second) — the exact facts the authorizer gets.
/// Revocation is checked on every call, before any cache. Each cache is cleared when
/// it reaches 10,000 entries.
pub struct TokenVerifier {
    root: PublicKey,
    policies: AuthorizerBuilder,
    tokens: Mutex<HashMap<[u8; 32], Arc<Verified>>>,
    decisions: Mutex<HashMap<DecisionKey, Result<(), PolicyError>>>,
}

/// The allow policies built from the catalogue.
fn policy_code() -> String {
    let mut code = String::new();
    for role in Role::ALL {
        let ops: Vec<String> = OPERATIONS.iter().filter(|(_, roles)| roles.contains(&role)).map(|(op, _)| format!("{op:?}")).collect();
        let ops = ops.join(", ");
        if role.is_tenant_scoped() {
            code.push_str(&format!("allow if role(\"{}\"), tenant_scope($t), tenant($t), operation($op), [{ops}].contains($op);\n", role.as_str()));
        } else {
            code.push_str(&format!("allow if role(\"{}\"), operation($op), [{ops}].contains($op);\n", role.as_str()));
        }
    }
    code.push_str("deny if true;\n");
    code
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl TokenVerifier {
    pub fn new(root: PublicKey) -> Self {
        // The catalogue is a constant, so its policies always parse.
        // Datalog's default time limit (1 ms) is too tight for a loaded debug build;
        // these policies are tiny, so a generous limit costs nothing.
        let limits = biscuit_auth::AuthorizerLimits { max_time: Duration::from_millis(200), ..Default::default() };
        let policies = AuthorizerBuilder::new().code(policy_code()).expect("the catalogue's policies parse").set_limits(limits);
        TokenVerifier { root, policies, tokens: Mutex::new(HashMap::new()), decisions: Mutex::new(HashMap::new()) }
    }

    fn verified(&self, token: &str) -> Result<Arc<Verified>, PolicyError> {
        let key = hash(token);
        if let Some(v) = self.tokens.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(v.clone());
        }
        let biscuit = Biscuit::from_base64(token, self.root).map_err(invalid)?;
        let principal = read_principal(&biscuit)?;
        let v = Arc::new(Verified { biscuit, principal });
        let mut cache = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(key, v.clone());
        Ok(v)
    }

    /// Who a token is for (signatures checked; no authorization, no revocation check).
    pub fn identify(&self, token: &str) -> Result<Principal, PolicyError> {
        Ok(self.verified(token)?.principal.clone())
    }

    /// Verifies `token` and authorizes `req` at `now_unix_secs`.
    pub fn authorize(&self, token: &str, req: &Request<'_>, now_unix_secs: u64, revoked: &dyn Fn(&str) -> bool) -> Result<Principal, PolicyError> {
        let v = self.verified(token)?;
        if v.principal.revocation_ids.iter().any(|id| revoked(id)) {
            return Err(PolicyError::Revoked);
        }
        if v.principal.expires_unix_secs.is_some_and(|e| now_unix_secs > e) {
            return Err(PolicyError::Expired);
        }
        let key: DecisionKey = (hash(token), req.operation.to_owned(), req.tenant.map(str::to_owned), req.route.map(str::to_owned), now_unix_secs);
        if let Some(d) = self.decisions.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return d.clone().map(|()| v.principal.clone());
        }
        let decision = self.decide(&v, req, now_unix_secs);
        let mut cache = self.decisions.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(key, decision.clone());
        decision.map(|()| v.principal.clone())
    }

    fn decide(&self, v: &Verified, req: &Request<'_>, now: u64) -> Result<(), PolicyError> {
        let mut b = self.policies.clone().fact(fact("operation", &[string(req.operation)])).map_err(invalid)?;
        if let Some(t) = req.tenant {
            b = b.fact(fact("tenant", &[string(t)])).map_err(invalid)?;
        }
        if let Some(r) = req.route {
            b = b.fact(fact("route", &[string(r)])).map_err(invalid)?;
        }
        b = b.fact(fact("time", &[date(&unix(now))])).map_err(invalid)?;
        let mut authorizer = b.build(&v.biscuit).map_err(invalid)?;
        match authorizer.authorize() {
            Ok(_) => Ok(()),
            Err(biscuit_auth::error::Token::FailedLogic(_)) => Err(forbidden(&v.principal, req)),
            Err(e) => Err(invalid(e)),
        }
    }
}

fn forbidden(p: &Principal, req: &Request<'_>) -> PolicyError {
    let scope = p.tenant.as_ref().map(|t| format!(" of tenant {t}")).unwrap_or_default();
    let on = req.tenant.map(|t| format!(" on tenant {t}")).unwrap_or_default();
    let allowed = role_allows(p.role, req.operation, p.tenant.as_deref(), req.tenant);
    let hint = if allowed {
        format!("{on} with this token: an attenuation added by its holder forbids it")
    } else {
        format!("{on}; roles that may: {}", roles_for(req.operation).join(", "))
    };
    PolicyError::Forbidden { operation: req.operation.to_owned(), role: p.role.as_str().to_owned(), scope, hint }
}

/// Reads the authority block's facts (only the authority block: facts added by later
/// blocks are not trusted for identity).
fn read_principal(b: &Biscuit) -> Result<Principal, PolicyError> {
    let limits = biscuit_auth::AuthorizerLimits { max_time: Duration::from_millis(200), ..Default::default() };
    let mut a = AuthorizerBuilder::new().set_limits(limits).build(b).map_err(invalid)?;
    let one = |a: &mut biscuit_auth::Authorizer, rule: &str| -> Result<Option<String>, PolicyError> {
        let rows: Vec<(String,)> = a.query(rule).map_err(invalid)?;
        Ok(rows.into_iter().next().map(|(s,)| s))
    };
    let role = one(&mut a, "data($r) <- role($r)")?.and_then(|r| Role::parse(&r)).ok_or_else(|| invalid("the token names no known role"))?;
    let subject = one(&mut a, "data($s) <- subject($s)")?.unwrap_or_default();
    let tenant = one(&mut a, "data($t) <- tenant_scope($t)")?;
    let expires: Vec<(i64,)> = a.query("data($e) <- expires($e)").map_err(invalid)?;
    let revocation_ids: Vec<String> = b.revocation_identifiers().iter().map(hex::encode).collect();
    Ok(Principal {
        role,
        tenant,
        subject,
        token_id: revocation_ids.first().cloned().unwrap_or_default(),
        revocation_ids,
        expires_unix_secs: expires.first().map(|(e,)| *e as u64),
    })
}

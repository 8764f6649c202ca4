//! Capability tokens and roles (spec §7.4) on Biscuit.
//!
//! A token's authority block says who it is for — `role("deployer")`,
//! `tenant_scope("acme")` for the tenant-scoped roles, `subject("alice")`, and
//! `expires(<unix secs>)` with a time check when it expires — and nothing about
//! rights. What a role may do is the [`OPERATIONS`] catalogue, which the verifier turns
//! into its allow policies once; so a token never carries rights of its own beyond its
//! role, and changing the catalogue changes every token at once.
//!
//! A holder narrows a token offline with [`attenuate`], which appends a block of checks
//! only. Biscuit's policies trust facts from the authority block and the authorizer
//! alone, so a later block can add conditions but never a fact that satisfies a
//! policy: no attenuation can widen a token, and a block cannot be removed without
//! breaking the signature chain. Revocation is by any of a token's revocation ids
//! (one per block), so revoking the original also revokes every attenuated copy; and
//! revoking a copy by its own id (its last block's, [`revocation`]) refuses that copy
//! and what was narrowed from it, never the token it was narrowed from.
//!
//! ```
//! use runplane_policy::tokens::{Grant, Request, Restriction, Role, TokenAuthority, TokenVerifier, attenuate};
//! let authority = TokenAuthority::from_seed(&[7; 32]).unwrap();
//! let token = authority
//!     .mint(&Grant { role: Role::Auditor, tenant: None, subject: "ann".into(), expires_unix_secs: None })
//!     .unwrap();
//! let verifier = TokenVerifier::new(authority.public_key());
//! let ask = |op| Request { operation: op, tenant: None, route: None };
//! assert!(verifier.authorize(&token, &ask("audit.read"), 0, &|_| false).is_ok());
//! assert!(verifier.authorize(&token, &ask("tenant.create"), 0, &|_| false).is_err());
//! let narrower = attenuate(&token, &Restriction { operations: Some(vec!["tenant.list".into()]), ..Default::default() }).unwrap();
//! assert!(verifier.authorize(&narrower, &ask("audit.read"), 0, &|_| false).is_err());
//! ```

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use biscuit_auth::builder::{Term, fact, string};
use biscuit_auth::error::{FailedCheck, Logic, Token as TokenError};
use biscuit_auth::{Algorithm, AuthorizerBuilder, AuthorizerLimits, Biscuit, BlockBuilder, KeyPair, PrivateKey, PublicKey, UnverifiedBiscuit};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::PolicyError;

/// The roles of spec §7.4, plus `tenant` for tenant traffic (invoking the tenant's own
/// apps). Serialized kebab-case, as [`Role::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Everything instance-wide; not tenant traffic (that needs a tenant token).
    InstanceAdmin,
    /// Pushes capabilities, deploys, promotes, registers contracts.
    Deployer,
    /// Reads: audit logs, tenants, deployments, configuration, flags, domains, tokens.
    Auditor,
    /// Pauses, resumes, drains, replays; reads what that needs.
    Operator,
    /// Administers one tenant: its keys, secrets, config, flags, domains, tokens.
    TenantAdmin,
    /// Tenant traffic: invokes the tenant's apps and contracts.
    Tenant,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 6] = [Role::InstanceAdmin, Role::Deployer, Role::Auditor, Role::Operator, Role::TenantAdmin, Role::Tenant];

    /// The role's name: `instance-admin`, `deployer`, `auditor`, `operator`,
    /// `tenant-admin`, `tenant`.
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

    /// The role named `s` (as [`Role::as_str`] writes it), if any.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Tenant-scoped roles act only on their own tenant, and never on instance-wide
    /// operations without a target tenant.
    pub fn is_tenant_scoped(self) -> bool {
        matches!(self, Role::TenantAdmin | Role::Tenant)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

use Role::{Auditor as AU, Deployer as DE, InstanceAdmin as IA, Operator as OP, Tenant as TE, TenantAdmin as TA};

/// Every operation and the roles that may perform it. Instance-wide roles act on any
/// tenant; tenant-scoped roles only on their own. The node names its routes' operations
/// from this list; the verifier's policies are built from it.
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
    ("key.delete", &[IA, TA]),
    ("quota.read", &[IA, AU, TA]),
    ("quota.set", &[IA]),
    // Names and versions only: secret values are never listed (spec §7.2).
    ("secret.list", &[IA, AU, TA]),
    ("secret.put", &[IA, TA]),
    ("secret.rotate_kek", &[IA]),
    ("capability.push", &[IA, DE]),
    ("capability.list", &[IA, DE, AU]),
    ("deploy", &[IA, DE]),
    ("deployment.list", &[IA, DE, AU, OP]),
    ("undeploy", &[IA, DE]),
    // Progressive delivery (spec §8): operators may stop a rollout, not start one.
    // Jobs (spec §9): a tenant submits, reads and cancels its own.
    ("job.submit", &[IA, OP, TA, TE]),
    ("job.read", &[IA, AU, OP, TA, TE]),
    ("job.cancel", &[IA, OP, TA, TE]),
    ("rollout.start", &[IA, DE]),
    ("rollout.read", &[IA, DE, AU, OP]),
    ("rollout.promote", &[IA, DE]),
    ("rollout.abort", &[IA, DE, OP]),
    ("rollout.retry", &[IA, DE]),
    ("rollout.pause", &[IA, DE, OP]),
    ("rollout.resume", &[IA, DE, OP]),
    ("deployment.undo", &[IA, DE, OP]),
    ("deployment.pause", &[IA, OP]),
    ("deployment.resume", &[IA, OP]),
    ("promote", &[IA, DE]),
    ("environment.set", &[IA]),
    ("environment.list", &[IA, DE, AU]),
    ("config.set", &[IA, TA]),
    ("config.read", &[IA, DE, AU, TA]),
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
    ("ca.read", &[IA, AU, OP]),
    ("ca.manage", &[IA]),
    ("ca.issue", &[IA]),
    ("ca.revoke", &[IA]),
    ("tls.reload", &[IA, OP]),
    // The instance metadata interface (S0-XIII): what a federation server reads.
    ("instance.metadata", &[IA, AU, OP]),
    ("cluster.read", &[IA, AU, OP]),
    ("cluster.drain", &[IA, OP]),
    ("audit.read", &[IA, AU, OP]),
    ("replay", &[IA, OP]),
    // A tenant admin mints only for its own tenant: see `may_grant`.
    ("token.mint", &[IA, TA]),
    ("token.revoke", &[IA]),
    ("token.list", &[IA, AU]),
    // Tenant traffic needs a token of the tenant, so even an instance admin cannot
    // act as a tenant's caller.
    ("invoke", &[TA, TE]),
    ("contract.execute", &[TA, TE]),
];

/// The catalogue's answer without a token (the node's root admin token, a tenant API
/// key): `role` may perform `operation` on `target` when the catalogue lists it and,
/// for a tenant-scoped role, `target` is its own tenant.
pub fn role_allows(role: Role, operation: &str, own_tenant: Option<&str>, target: Option<&str>) -> bool {
    let listed = OPERATIONS.iter().any(|(op, roles)| *op == operation && roles.contains(&role));
    listed && (!role.is_tenant_scoped() || (own_tenant.is_some() && own_tenant == target))
}

/// The names of the roles that may perform `operation` (empty for an unknown one).
pub fn roles_for(operation: &str) -> Vec<&'static str> {
    OPERATIONS.iter().find(|(op, _)| *op == operation).map(|(_, roles)| roles.iter().map(|r| r.as_str()).collect()).unwrap_or_default()
}

/// The operations `role` may perform, in catalogue order.
pub fn operations_of(role: Role) -> Vec<&'static str> {
    OPERATIONS.iter().filter(|(_, roles)| roles.contains(&role)).map(|(op, _)| *op).collect()
}

/// What a token is minted for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// The role.
    pub role: Role,
    /// The tenant: required for the tenant-scoped roles, refused for the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Who holds it (a person, a service); named in every admin event it causes.
    pub subject: String,
    /// The last second it is valid, as seconds since the Unix epoch; absent = until
    /// revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_unix_secs: Option<u64>,
}

/// Who a verified token is for: its authority block's facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Principal {
    /// The token's role.
    pub role: Role,
    /// The tenant of a tenant-scoped token.
    pub tenant: Option<String>,
    /// Who holds it.
    pub subject: String,
    /// Hex of the authority block's revocation id: the token's stable name, shared by
    /// every attenuated copy.
    pub token_id: String,
    /// Hex revocation ids of every block, authority first; revoking any one refuses
    /// this token (and, for the authority's, every copy).
    pub revocation_ids: Vec<String>,
    /// The expiry set at minting, if any (attenuations may add earlier ones).
    pub expires_unix_secs: Option<u64>,
}

/// Whether `granter` may mint `grant`: an instance admin anything; a tenant admin only
/// tenant-admin or tenant tokens of its own tenant; nobody else. The node checks this
/// besides `token.mint`, so holding `token.mint` is not a way to escalate.
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

/// A Biscuit date. Built from seconds directly, so no `SystemTime` is involved and no
/// value can overflow it.
fn date(secs: u64) -> Term {
    Term::Date(secs)
}

fn name_ok(s: &str, max: usize) -> bool {
    !s.is_empty() && s.chars().count() <= max && !s.chars().any(|c| c.is_control() || c == '"' || c == '\\')
}

/// Datalog's default time limit (1 ms) is too tight for a loaded debug build; these
/// programs are tiny, so a generous limit costs nothing and only guards runaway input.
fn limits() -> AuthorizerLimits {
    AuthorizerLimits { max_time: Duration::from_millis(200), ..Default::default() }
}

/// The instance's token signing key.
pub struct TokenAuthority {
    keys: KeyPair,
}

impl TokenAuthority {
    /// From a 32-byte Ed25519 seed (the node reads or creates its key file; this crate
    /// does no I/O).
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self, PolicyError> {
        let private = PrivateKey::from_bytes(seed, Algorithm::Ed25519)
            .map_err(|e| PolicyError::Invalid(format!("the token signing key is not a usable Ed25519 seed ({e}); restore the key file from a backup")))?;
        Ok(TokenAuthority { keys: KeyPair::from(&private) })
    }

    /// The public key verifiers need ([`TokenVerifier::new`]).
    pub fn public_key(&self) -> PublicKey {
        self.keys.public()
    }

    /// Signs a new token for `grant`, as base64url.
    pub fn mint(&self, grant: &Grant) -> Result<String, PolicyError> {
        let role = grant.role.as_str();
        match (grant.role.is_tenant_scoped(), &grant.tenant) {
            (true, None) => return Err(PolicyError::Invalid(format!("a {role} token acts for one tenant; name the tenant"))),
            (false, Some(t)) => {
                return Err(PolicyError::Invalid(format!("a {role} token is instance-wide and cannot name a tenant ({t}); drop the tenant or use tenant-admin")));
            }
            _ => {}
        }
        if !name_ok(&grant.subject, 128) {
            return Err(PolicyError::Invalid(format!("the subject {:?} must be 1-128 printable characters without quotes or backslashes", grant.subject)));
        }
        if let Some(t) = grant.tenant.as_deref().filter(|t| !name_ok(t, 64)) {
            return Err(PolicyError::Invalid(format!("the tenant {t:?} must be 1-64 printable characters without quotes or backslashes")));
        }
        let mint_err = |e: TokenError| PolicyError::Invalid(format!("the token cannot be built ({e})"));
        let mut b = Biscuit::builder()
            .fact(fact("role", &[string(role)]))
            .and_then(|b| b.fact(fact("subject", &[string(&grant.subject)])))
            .map_err(mint_err)?;
        if let Some(t) = &grant.tenant {
            b = b.fact(fact("tenant_scope", &[string(t)])).map_err(mint_err)?;
        }
        if let Some(exp) = grant.expires_unix_secs {
            // `expires` is for reading back (Principal); the check is what enforces it.
            let secs = i64::try_from(exp).map_err(|_| PolicyError::Invalid(format!("expires_unix_secs {exp} is too large; use a time before year 292 billion")))?;
            let params = HashMap::from([("exp".to_owned(), date(exp)), ("secs".to_owned(), Term::Integer(secs))]);
            b = b.code_with_params("expires({secs}); check if time($t), $t <= {exp};", params, HashMap::new()).map_err(mint_err)?;
        }
        b.build(&self.keys).map_err(mint_err)?.to_base64().map_err(mint_err)
    }
}

/// How a holder narrows a token: every present field adds a check, and all checks must
/// pass. An absent field leaves that dimension as the token had it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Restriction {
    /// Only these operations (names from [`OPERATIONS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operations: Option<Vec<String>>,
    /// Only on this tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Only these routes (tenant traffic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<String>>,
    /// Not after this second (Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_unix_secs: Option<u64>,
}

fn term_set(items: &[String]) -> Term {
    Term::Set(items.iter().map(|s| string(s)).collect::<BTreeSet<Term>>())
}

/// Appends a block of checks to `token` (base64url) and returns the narrowed token.
/// Needs no key: it works offline, for any holder. The block holds checks only, so it
/// cannot add a right; the original's revocation ids still apply.
pub fn attenuate(token: &str, r: &Restriction) -> Result<String, PolicyError> {
    let unverified = UnverifiedBiscuit::from_base64(token).map_err(invalid)?;
    let mut params = HashMap::new();
    let mut code = String::new();
    if let Some(ops) = &r.operations {
        if let Some(op) = ops.iter().find(|op| !OPERATIONS.iter().any(|(o, _)| o == op)) {
            let known: Vec<&str> = OPERATIONS.iter().map(|(o, _)| *o).collect();
            return Err(PolicyError::Invalid(format!("{op:?} is not an operation; use names from the catalogue: {}", known.join(", "))));
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
        params.insert("exp".to_owned(), date(exp));
        code.push_str("check if time($t), $t <= {exp};\n");
    }
    if code.is_empty() {
        return Err(PolicyError::Invalid("an attenuation needs at least one restriction: operations, tenant, routes or expires_unix_secs".into()));
    }
    let block = BlockBuilder::new().code_with_params(&code, params, HashMap::new()).map_err(invalid)?;
    unverified.append(block).map_err(invalid)?.to_base64().map_err(invalid)
}

/// The revocation ids (hex) of a token's blocks, authority first, after checking its
/// signatures against `root`.
pub fn revocation_ids(token: &str, root: &PublicKey) -> Result<Vec<String>, PolicyError> {
    let b = Biscuit::from_base64(token, *root).map_err(invalid)?;
    Ok(b.revocation_identifiers().iter().map(hex::encode).collect())
}

/// What to record to revoke a token ([`revocation`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The ids to mark revoked: a token carrying any of them is refused.
    pub revoke: Vec<String>,
    /// The token's other ids, left alone: those of the tokens it was narrowed from,
    /// authority first. Empty for a token never attenuated, or for a whole chain.
    pub keep: Vec<String>,
}

/// The revocation ids that revoke `token` (its signatures checked against `root`).
///
/// A token's own id is its last block's. Every token narrowed from it carries that id
/// too, and the tokens it was narrowed from do not, so revoking it refuses the token
/// and its descendants only. With `chain`, every block's id is revoked: the tokens it
/// was narrowed from as well, and everything narrowed from any of them.
pub fn revocation(token: &str, root: &PublicKey, chain: bool) -> Result<Revocation, PolicyError> {
    let mut ids = revocation_ids(token, root)?;
    if chain {
        return Ok(Revocation { revoke: ids, keep: Vec::new() });
    }
    let own = ids.pop().ok_or_else(|| invalid("it has no blocks"))?;
    Ok(Revocation { revoke: vec![own], keep: ids })
}

/// What a request asks for: the authorizer's facts `operation`, `tenant`, `route`.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// An operation from [`OPERATIONS`].
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
    /// The earliest "not after" of the token's expiry checks (minted or attenuated).
    not_after: Option<u64>,
    /// Whether a block reads the `time` predicate other than in those expiry checks.
    /// If not, every decision up to `not_after` is the same at every second (the
    /// catalogue's policies never read the time), so decisions are cached without it.
    reads_time: bool,
}

/// What a token does with the time, read from its blocks' printed source: the bounds
/// of its `check if time($t), $t <= <date>;` statements (the form [`TokenAuthority::mint`]
/// and [`attenuate`] write), and whether anything else mentions `time(`.
///
/// Sound by construction: every real reading of the time prints as `time(`, so it is
/// either an exactly recognised expiry check or sets `reads_time`. A string literal
/// that imitates an expiry line can only add an earlier bound (a stricter answer).
fn time_use(sources: &[String]) -> (Option<u64>, bool) {
    const PREFIX: &str = "check if time($t), $t <= ";
    let mut not_after: Option<u64> = None;
    let mut reads_time = false;
    for line in sources.iter().flat_map(|s| s.lines()) {
        let bound = line.strip_prefix(PREFIX).and_then(|rest| rest.strip_suffix(';')).and_then(crate::flags::parse_rfc3339);
        match bound {
            Some(d) => not_after = Some(not_after.map_or(d, |n| n.min(d))),
            None => reads_time |= line.contains("time("),
        }
    }
    (not_after, reads_time)
}

/// Entries per cache; a full cache is cleared (cheap, and a rebuild is only a
/// verification per live token).
const CACHE_LIMIT: usize = 10_000;

type TokenHash = [u8; 32];
type DecisionKey = (TokenHash, String, Option<String>, Option<String>, u64);

/// Verifies tokens and authorizes requests.
///
/// Two bounded caches (≤ 10,000 entries each, cleared when full) make repeated
/// requests cheap. Both are sound because each is keyed by everything its result
/// depends on:
///
/// - verified tokens, by the SHA-256 of the token string: parsing and signature
///   verification are a pure function of the bytes and the root key, and the root key
///   is fixed for the verifier's life;
/// - decisions, by (token hash, operation, tenant, route, `now_unix_secs`): exactly the
///   facts the authorizer receives, evaluated against fixed policies. The second is
///   left out of the key (as `u64::MAX`) when the token reads the time only in expiry
///   checks (`$t <= date`), which [`TokenVerifier::authorize`] applies before the
///   cache: up to the earliest expiry those checks all pass, so the decision is the
///   same at every second.
///
/// Revocation is the one input that changes independently, so it is checked on every
/// call, before any cached decision is used; expiry is checked before the cache too.
pub struct TokenVerifier {
    root: PublicKey,
    policies: AuthorizerBuilder,
    tokens: Mutex<HashMap<TokenHash, Arc<Verified>>>,
    decisions: Mutex<HashMap<DecisionKey, Result<(), PolicyError>>>,
}

/// The allow policies built from the catalogue: one per role. Tenant-scoped roles need
/// the request's tenant to equal the token's, so a request without a tenant never
/// passes for them.
fn policy_code() -> String {
    let mut code = String::new();
    for role in Role::ALL {
        let ops: Vec<String> = operations_of(role).iter().map(|op| format!("{op:?}")).collect();
        let ops = ops.join(", ");
        let scope = if role.is_tenant_scoped() { "tenant_scope($t), tenant($t), " } else { "" };
        code.push_str(&format!("allow if role(\"{}\"), {scope}operation($op), [{ops}].contains($op);\n", role.as_str()));
    }
    code.push_str("deny if true;\n");
    code
}

fn hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// Inserts into a bounded cache, clearing it when full.
fn remember<K: std::hash::Hash + Eq, V>(cache: &Mutex<HashMap<K, V>>, key: K, value: V) {
    let mut cache = cache.lock().unwrap_or_else(PoisonError::into_inner);
    if cache.len() >= CACHE_LIMIT {
        cache.clear();
    }
    cache.insert(key, value);
}

impl TokenVerifier {
    /// A verifier for tokens signed by `root` (the authority's public key).
    pub fn new(root: PublicKey) -> Self {
        // The catalogue is a constant whose operation names are plain strings, so its
        // policies always parse; a failure here is a bug in this file.
        let policies = AuthorizerBuilder::new().code(policy_code()).expect("the catalogue's policies parse").set_limits(limits());
        TokenVerifier { root, policies, tokens: Mutex::new(HashMap::new()), decisions: Mutex::new(HashMap::new()) }
    }

    fn verified(&self, key: &TokenHash, token: &str) -> Result<Arc<Verified>, PolicyError> {
        if let Some(v) = self.tokens.lock().unwrap_or_else(PoisonError::into_inner).get(key) {
            return Ok(v.clone());
        }
        let biscuit = Biscuit::from_base64(token, self.root).map_err(invalid)?;
        let principal = read_principal(&biscuit)?;
        let sources = (0..biscuit.block_count()).map(|i| biscuit.print_block_source(i)).collect::<Result<Vec<_>, _>>().map_err(invalid)?;
        let (not_after, reads_time) = time_use(&sources);
        let v = Arc::new(Verified { biscuit, principal, not_after, reads_time });
        remember(&self.tokens, *key, v.clone());
        Ok(v)
    }

    /// Who a token is for (signatures checked; no authorization, no revocation or
    /// expiry check).
    pub fn identify(&self, token: &str) -> Result<Principal, PolicyError> {
        Ok(self.verified(&hash(token), token)?.principal.clone())
    }

    /// Verifies `token` and authorizes `req` at `now_unix_secs`. `revoked` answers
    /// whether a revocation id (hex) is revoked; every id of the token is asked, on
    /// every call.
    ///
    /// Errors: [`PolicyError::InvalidToken`], [`PolicyError::Revoked`] and
    /// [`PolicyError::Expired`] (the caller is not authenticated), or
    /// [`PolicyError::Forbidden`] (authenticated, not allowed).
    pub fn authorize(&self, token: &str, req: &Request<'_>, now_unix_secs: u64, revoked: &dyn Fn(&str) -> bool) -> Result<Principal, PolicyError> {
        let token_hash = hash(token);
        let v = self.verified(&token_hash, token)?;
        if v.principal.revocation_ids.iter().any(|id| revoked(id)) {
            return Err(PolicyError::Revoked);
        }
        // The minted expiry and every attenuated one, before any cache.
        if v.principal.expires_unix_secs.into_iter().chain(v.not_after).any(|e| now_unix_secs > e) {
            return Err(PolicyError::Expired);
        }
        let second = if v.reads_time { now_unix_secs } else { u64::MAX };
        let key: DecisionKey = (token_hash, req.operation.to_owned(), req.tenant.map(str::to_owned), req.route.map(str::to_owned), second);
        let cached = self.decisions.lock().unwrap_or_else(PoisonError::into_inner).get(&key).cloned();
        let decision = match cached {
            Some(d) => d,
            None => {
                let d = self.decide(&v, req, now_unix_secs);
                // Only answers of the logic are pure; an engine error may be a run-time
                // limit hit on a loaded machine, which the next call should retry.
                if !matches!(d, Err(PolicyError::InvalidToken(_))) {
                    remember(&self.decisions, key, d.clone());
                }
                d
            }
        };
        decision.map(|()| v.principal.clone())
    }

    fn decide(&self, v: &Verified, req: &Request<'_>, now: u64) -> Result<(), PolicyError> {
        match self.run(v, req, now) {
            Ok(()) => Ok(()),
            Err(TokenError::FailedLogic(logic)) => {
                // A failed time check (an attenuation's expiry) is an expired token, not
                // a missing right: confirm by asking again at the epoch, where every
                // "not after" check passes.
                if mentions_time(&logic) && self.run(v, req, 0).is_ok() {
                    Err(PolicyError::Expired)
                } else {
                    Err(forbidden(&v.principal, req))
                }
            }
            Err(e) => Err(invalid(e)),
        }
    }

    fn run(&self, v: &Verified, req: &Request<'_>, now: u64) -> Result<(), TokenError> {
        let mut b = self.policies.clone().fact(fact("operation", &[string(req.operation)]))?;
        if let Some(t) = req.tenant {
            b = b.fact(fact("tenant", &[string(t)]))?;
        }
        if let Some(r) = req.route {
            b = b.fact(fact("route", &[string(r)]))?;
        }
        b = b.fact(fact("time", &[date(now)]))?;
        b.build(&v.biscuit)?.authorize().map(|_| ())
    }
}

fn mentions_time(logic: &Logic) -> bool {
    let (Logic::Unauthorized { checks, .. } | Logic::NoMatchingPolicy { checks }) = logic else { return false };
    checks.iter().any(|c| match c {
        FailedCheck::Block(b) => b.rule.contains("time("),
        FailedCheck::Authorizer(a) => a.rule.contains("time("),
    })
}

/// The refusal of a valid token, saying what would have allowed it.
fn forbidden(p: &Principal, req: &Request<'_>) -> PolicyError {
    let scope = p.tenant.as_ref().map(|t| format!(" of tenant {t}")).unwrap_or_default();
    let on = req.tenant.map(|t| format!(" on tenant {t}")).unwrap_or_default();
    let listed = roles_for(req.operation);
    let hint = if role_allows(p.role, req.operation, p.tenant.as_deref(), req.tenant) {
        format!("{on} with this token: an attenuation added by its holder forbids it; use a token without that restriction")
    } else if listed.is_empty() {
        format!(": {:?} is not an operation of the catalogue", req.operation)
    } else if listed.contains(&p.role.as_str()) {
        // Listed for the role, so the tenant is what failed.
        match req.tenant {
            Some(_) => format!("{on}: a {} token acts only on its own tenant; use a token of that tenant", p.role),
            None => format!(" instance-wide: a {} token acts only on its own tenant; use one of: {}", p.role, instance_roles(&listed)),
        }
    } else {
        format!("{on}; roles that allow it: {}", listed.join(", "))
    };
    PolicyError::Forbidden { operation: req.operation.to_owned(), role: p.role.as_str().to_owned(), scope, hint }
}

fn instance_roles(listed: &[&'static str]) -> String {
    let roles: Vec<&str> = listed.iter().copied().filter(|r| Role::parse(r).is_some_and(|r| !r.is_tenant_scoped())).collect();
    if roles.is_empty() { "no instance-wide role has it".into() } else { roles.join(", ") }
}

/// Reads the authority block's facts. `query` trusts the authority block and the
/// authorizer only, so facts a later block adds (a forged `role`) are never read.
fn read_principal(b: &Biscuit) -> Result<Principal, PolicyError> {
    let mut a = AuthorizerBuilder::new().set_limits(limits()).build(b).map_err(invalid)?;
    let mut one = |rule: &str| -> Result<Vec<String>, PolicyError> {
        let rows: Vec<(String,)> = a.query(rule).map_err(invalid)?;
        Ok(rows.into_iter().map(|(s,)| s).collect())
    };
    let single = |mut v: Vec<String>, what: &str| -> Result<Option<String>, PolicyError> {
        if v.len() > 1 {
            return Err(invalid(format!("its authority block names {} {what}s", v.len())));
        }
        Ok(v.pop())
    };
    let role = single(one("data($r) <- role($r)")?, "role")?;
    let role = role.as_deref().and_then(Role::parse).ok_or_else(|| invalid(format!("it names no known role ({})", role.as_deref().unwrap_or("none"))))?;
    let subject = single(one("data($s) <- subject($s)")?, "subject")?.unwrap_or_default();
    let tenant = single(one("data($t) <- tenant_scope($t)")?, "tenant")?;
    if role.is_tenant_scoped() != tenant.is_some() {
        return Err(invalid(format!("a {role} token {} a tenant", if role.is_tenant_scoped() { "without" } else { "with" })));
    }
    let expires: Vec<(i64,)> = a.query("data($e) <- expires($e)").map_err(invalid)?;
    let revocation_ids: Vec<String> = b.revocation_identifiers().iter().map(hex::encode).collect();
    Ok(Principal {
        role,
        tenant,
        subject,
        token_id: revocation_ids.first().cloned().unwrap_or_default(),
        revocation_ids,
        expires_unix_secs: expires.iter().map(|(e,)| u64::try_from(*e).unwrap_or(0)).min(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_and_print() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
            assert_eq!(serde_json::to_value(r).expect("json"), serde_json::json!(r.as_str()));
        }
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn the_catalogue_matches_the_brief() {
        let ops: BTreeSet<&str> = OPERATIONS.iter().map(|(o, _)| *o).collect();
        assert_eq!(ops.len(), OPERATIONS.len(), "each operation once");
        assert_eq!(ops.len(), 64);
        let tenant_traffic = ["invoke", "contract.execute"];
        let admin = operations_of(Role::InstanceAdmin);
        assert_eq!(admin.len(), 62);
        assert!(tenant_traffic.iter().all(|op| !admin.contains(op)));
        let sorted = |role| operations_of(role).into_iter().collect::<BTreeSet<_>>();
        let set = |ops: &[&'static str]| ops.iter().copied().collect::<BTreeSet<_>>();
        assert_eq!(
            sorted(Role::Deployer),
            set(&[
                "capability.push", "capability.list", "deploy", "deployment.list", "undeploy", "promote", "environment.list", "contract.register", "contract.read", "config.read",
                "rollout.start", "rollout.read", "rollout.promote", "rollout.abort", "rollout.retry", "rollout.pause", "rollout.resume", "deployment.undo",
            ])
        );
        assert_eq!(
            sorted(Role::Auditor),
            set(&[
                "audit.read", "tenant.list", "tenant.read", "deployment.list", "capability.list", "environment.list", "config.read", "flag.list", "domain.list",
                "token.list", "quota.read", "secret.list", "cluster.read", "ca.read", "instance.metadata", "rollout.read", "job.read",
            ])
        );
        assert_eq!(
            sorted(Role::Operator),
            set(&[
                "tenant.suspend", "tenant.resume", "tenant.drain", "deployment.pause", "deployment.resume", "replay", "audit.read", "tenant.list", "tenant.read", "deployment.list",
                "cluster.read", "cluster.drain", "ca.read", "tls.reload", "instance.metadata", "rollout.read", "rollout.abort", "rollout.pause", "rollout.resume",
                "deployment.undo", "job.submit", "job.read", "job.cancel",
            ])
        );
        assert_eq!(
            sorted(Role::TenantAdmin),
            set(&[
                "tenant.read", "key.create", "key.delete", "secret.list", "secret.put", "config.read", "config.set", "config.rollback", "flag.list", "flag.set", "flag.delete", "domain.list",
                "domain.activate", "domain.deactivate", "quota.read", "invoke", "contract.execute", "token.mint", "job.submit", "job.read", "job.cancel",
            ])
        );
        assert_eq!(sorted(Role::Tenant), set(&["invoke", "contract.execute", "job.submit", "job.read", "job.cancel"]));
    }

    #[test]
    fn expiry_checks_are_recognised_and_anything_else_reading_time_is_not() {
        let src = |s: &str| vec![s.to_owned()];
        assert_eq!(time_use(&src("role(\"tenant\");\n")), (None, false));
        let minted = "role(\"tenant\");\nexpires(1795428000);\ncheck if time($t), $t <= 2026-11-23T10:00:00Z;\n";
        let attenuated = "check if route($r), {\"a\"}.contains($r);\ncheck if time($t), $t <= 2026-11-23T10:00:10Z;\n";
        assert_eq!(time_use(&[minted.to_owned(), attenuated.to_owned()]), (Some(1_795_428_000), false), "the earliest bound");
        for general in ["check if time($t), $t >= 2026-11-23T10:00:00Z;\n", "late($t) <- time($t), $t > 2026-11-23T10:00:00Z;\n", "check if time($t), $t <= 2026-11-23T10:00:00Z, true;\n"] {
            assert!(time_use(&src(general)).1, "{general}");
        }
        // The real tokens print in the recognised form.
        let auth = TokenAuthority::from_seed(&[3; 32]).expect("key");
        let token = auth.mint(&Grant { role: Role::Tenant, tenant: Some("a".into()), subject: "s".into(), expires_unix_secs: Some(1_795_428_000) }).expect("mint");
        let token = attenuate(&token, &Restriction { expires_unix_secs: Some(1_795_427_000), ..Default::default() }).expect("attenuate");
        let b = Biscuit::from_base64(&token, auth.public_key()).expect("verify");
        let sources: Vec<String> = (0..b.block_count()).map(|i| b.print_block_source(i).expect("source")).collect();
        assert_eq!(time_use(&sources), (Some(1_795_427_000), false), "{sources:?}");
    }

    #[test]
    fn policies_cover_every_role() {
        let code = policy_code();
        for r in Role::ALL {
            assert!(code.contains(&format!("role(\"{}\")", r.as_str())), "{code}");
        }
        assert!(code.trim_end().ends_with("deny if true;"));
    }
}

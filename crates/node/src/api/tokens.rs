//! Capability tokens on the admin API (spec §7.4): minting, exchanging a tenant API key
//! for a tenant token, revocation. Attenuation needs no endpoint: a holder narrows a
//! token offline (`runplane token attenuate`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use runplane_audit::{LogId, Outcome};
use runplane_policy::tokens::{Grant, Role};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::admin::known_tenant;
use crate::api::gate::annotate;
use crate::api::params::Path;
use crate::api::{JsonBody, versioned};
use crate::auth::bearer;
use crate::error::ApiError;
use crate::node::Node;

/// At most a year; tokens without an expiry are for automation that rotates them.
pub(crate) const MAX_TTL_SECS: u64 = 366 * 24 * 3600;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MintToken {
    /// `instance-admin`, `deployer`, `auditor`, `operator` (instance-wide) or
    /// `tenant-admin`, `tenant` (only under `/v1/tenants/{id}/tokens`).
    pub role: String,
    /// Who the token is for (recorded in every event it causes), e.g. `alice@example.com`.
    pub subject: String,
    /// Lifetime in seconds (default: no expiry; at most a year).
    pub ttl_secs: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct MintedToken {
    /// The Biscuit token (base64url). Shown once; attenuate it offline to narrow it.
    pub token: String,
    pub role: String,
    pub tenant: Option<String>,
    pub subject: String,
    /// Revocation ids of its blocks (revoke any of them to revoke the token).
    pub revocation_ids: Vec<String>,
    pub expires_unix_secs: Option<u64>,
}

fn check_subject(subject: &str) -> Result<(), ApiError> {
    if subject.is_empty() || subject.chars().count() > 128 || subject.chars().any(|c| c.is_control() || c == '"' || c == '\\') {
        return Err(ApiError::bad_request("invalid_subject", "subject must be 1-128 printable characters without quotes or backslashes"));
    }
    Ok(())
}

fn mint(node: &Node, role: Role, tenant: Option<String>, req: &MintToken) -> Result<Response, ApiError> {
    check_subject(&req.subject)?;
    let expires = match req.ttl_secs {
        Some(ttl) if ttl == 0 || ttl > MAX_TTL_SECS => {
            return Err(ApiError::bad_request("invalid_ttl", format!("ttl_secs must be between 1 and {MAX_TTL_SECS}")));
        }
        Some(ttl) => Some(node.now_secs() + ttl),
        None => None,
    };
    let grant = Grant { role, tenant: tenant.clone(), subject: req.subject.clone(), expires_unix_secs: expires };
    let token = node.tokens.authority.mint(&grant).map_err(|e| ApiError::unavailable(e.to_string()))?;
    let revocation_ids = runplane_policy::tokens::revocation_ids(&token, &node.tokens.authority.public_key()).unwrap_or_default();
    let minted = MintedToken { token, role: role.as_str().into(), tenant, subject: req.subject.clone(), revocation_ids, expires_unix_secs: expires };
    let after = serde_json::json!({ "role": minted.role, "tenant": minted.tenant, "subject": minted.subject,
        "token_id": minted.revocation_ids.first(), "expires_unix_secs": minted.expires_unix_secs });
    annotate(|r| {
        r.targets.insert(0, format!("token:{}", minted.revocation_ids.first().map(String::as_str).unwrap_or("?")));
        r.details.insert("after".into(), after);
    });
    Ok((axum::http::StatusCode::CREATED, versioned(minted)).into_response())
}

fn parse_role(role: &str) -> Result<Role, ApiError> {
    Role::parse(role).ok_or_else(|| {
        ApiError::bad_request("invalid_role", format!("role {role:?} is not one of instance-admin, deployer, auditor, operator, tenant-admin, tenant"))
    })
}

/// Mint an instance-wide token (instance-admin only).
#[utoipa::path(post, path = "/v1/tokens", request_body = MintToken, security(("admin_token" = [])),
    responses((status = 201, body = MintedToken), (status = 400, body = crate::error::ErrorResponse), (status = 403, body = crate::error::ErrorResponse)))]
pub async fn mint_token(State(node): State<Arc<Node>>, JsonBody(req): JsonBody<MintToken>) -> Result<Response, ApiError> {
    let role = parse_role(&req.role)?;
    if matches!(role, Role::TenantAdmin | Role::Tenant) {
        return Err(ApiError::bad_request("invalid_role", format!("a {} token belongs to a tenant; mint it with POST /v1/tenants/{{id}}/tokens", role.as_str())));
    }
    mint(&node, role, None, &req)
}

/// Mint a token for one tenant (`tenant-admin` or `tenant`). A tenant admin may mint
/// these for its own tenant; nothing else.
#[utoipa::path(post, path = "/v1/tenants/{id}/tokens", request_body = MintToken, security(("admin_token" = [])),
    responses((status = 201, body = MintedToken), (status = 400, body = crate::error::ErrorResponse), (status = 403, body = crate::error::ErrorResponse)))]
pub async fn mint_tenant_token(State(node): State<Arc<Node>>, Path(id): Path<String>, JsonBody(req): JsonBody<MintToken>) -> Result<Response, ApiError> {
    known_tenant(&node, &id)?;
    let role = parse_role(&req.role)?;
    if !matches!(role, Role::TenantAdmin | Role::Tenant) {
        return Err(ApiError::forbidden(format!(
            "a tenant token can only have the tenant-admin or tenant role, not {}; instance-wide roles are minted with POST /v1/tokens by an instance admin",
            role.as_str()
        )));
    }
    mint(&node, role, Some(id), &req)
}

#[derive(Serialize, ToSchema)]
pub struct ExchangedToken {
    /// A `tenant` token for the key's tenant (base64url Biscuit).
    pub token: String,
    pub tenant: String,
    pub expires_unix_secs: u64,
}

/// Exchange a tenant API key (`Authorization: Bearer rpk_…`) for a short-lived tenant
/// token (one hour). Audited as an admin event.
#[utoipa::path(post, path = "/v1/tokens/exchange", security(("tenant_key" = [])),
    responses((status = 201, body = ExchangedToken), (status = 401, description = "the credential is not a tenant API key", body = crate::error::ErrorResponse),
        (status = 503, description = "the admin log cannot be written: no token is issued", body = crate::error::ErrorResponse)))]
pub async fn exchange(State(node): State<Arc<Node>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let key = bearer(&headers)?;
    let owner = node.keys.lookup(key).ok_or_else(|| ApiError::unauthorized("the API key is not valid; ask your administrator for a tenant key"))?;
    let expires = node.now_secs() + 3600;
    let grant = Grant { role: Role::Tenant, tenant: Some(owner.tenant.clone()), subject: owner.key_id.clone(), expires_unix_secs: Some(expires) };
    let token = node.tokens.authority.mint(&grant).map_err(|e| ApiError::unavailable(e.to_string()))?;
    let token_id = runplane_policy::tokens::revocation_ids(&token, &node.tokens.authority.public_key()).unwrap_or_default().into_iter().next();
    let actor = format!("tenant:{}/{}", owner.tenant, owner.key_id);
    let mut ev = node.event(&actor, Some(&owner.tenant), "token.exchange", &format!("token:{}", token_id.as_deref().unwrap_or("?")), Outcome::ok(Some(201)));
    ev.details.insert("targets".into(), serde_json::json!([format!("token:{}", token_id.as_deref().unwrap_or("?"))]));
    ev.details.insert("after".into(), serde_json::json!({ "role": "tenant", "tenant": owner.tenant, "expires_unix_secs": expires }));
    node.append(LogId::admin(), ev).await?;
    Ok((axum::http::StatusCode::CREATED, versioned(ExchangedToken { token, tenant: owner.tenant, expires_unix_secs: expires })).into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Revoke {
    /// A revocation id (hex) of any block of a token: every token carrying it is refused.
    pub revocation_id: Option<String>,
    /// Or the token itself: its own revocation id (its last block's) is revoked, which
    /// refuses it and every token narrowed from it, but not the token it was narrowed from.
    pub token: Option<String>,
    /// With `token`: revoke every revocation id it carries instead, refusing the tokens
    /// it was narrowed from too, and everything narrowed from any of them.
    #[serde(default)]
    pub chain: bool,
    pub reason: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Revoked {
    pub revoked: Vec<String>,
}

/// What a revocation did.
#[derive(Serialize, ToSchema)]
pub struct Revocation {
    /// The revocation ids revoked: tokens carrying any of them are refused from their next use.
    pub revoked: Vec<String>,
    /// The token's other revocation ids, not revoked: those of the tokens it was narrowed
    /// from, which stay valid. Empty for a token never attenuated, a chain or a bare id.
    pub not_revoked: Vec<String>,
    /// What is refused from now on, in words.
    pub effect: String,
}

/// Revoke a token: refused on its very next use, on this node at once.
#[utoipa::path(post, path = "/v1/tokens/revoke", request_body = Revoke, security(("admin_token" = [])),
    responses((status = 200, body = Revocation), (status = 400, body = crate::error::ErrorResponse)))]
pub async fn revoke(State(node): State<Arc<Node>>, JsonBody(req): JsonBody<Revoke>) -> Result<Response, ApiError> {
    let (ids, not_revoked, effect) = match (req.revocation_id, req.token) {
        (Some(_), None) if req.chain => {
            return Err(ApiError::bad_request("invalid_request", "chain needs the token itself: a revocation id names one block; send the token instead"));
        }
        (Some(id), None) => {
            if id.is_empty() || id.len() > 256 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ApiError::bad_request("invalid_revocation_id", "a revocation id is hex"));
            }
            let id = id.to_ascii_lowercase();
            let effect = format!("every token carrying revocation id {id}");
            (vec![id], Vec::new(), effect)
        }
        (None, Some(token)) => {
            let r = runplane_policy::tokens::revocation(&token, &node.tokens.authority.public_key(), req.chain)
                .map_err(|e| ApiError::bad_request("invalid_token", format!("the token cannot be read: {e}")))?;
            let effect = match (req.chain, r.keep.len()) {
                (true, _) if r.revoke.len() > 1 => format!(
                    "the whole chain: the token, the {} token(s) it was narrowed from, and every token narrowed from any of them",
                    r.revoke.len() - 1
                ),
                (_, 0) => "the token and every token narrowed from it".to_owned(),
                (_, n) => format!("the token (an attenuated copy) and every token narrowed from it; the {n} token(s) it was narrowed from stay valid"),
            };
            (r.revoke, r.keep, effect)
        }
        _ => return Err(ApiError::bad_request("invalid_request", "send exactly one of revocation_id or token")),
    };
    let at = runplane_audit::rfc3339_utc(node.now());
    for id in &ids {
        node.controlplane.revoke(id, &at).await?;
    }
    let (list, reason) = (ids.clone(), req.reason);
    annotate(|r| {
        r.targets = list.iter().map(|i| format!("token:{i}")).collect();
        r.details.insert("after".into(), serde_json::json!({ "revoked": list, "chain": req.chain }));
        if let Some(reason) = reason {
            r.details.insert("reason".into(), reason.into());
        }
    });
    Ok(versioned(Revocation { revoked: ids, not_revoked, effect }).into_response())
}

/// Every revoked token id.
#[utoipa::path(get, path = "/v1/tokens/revoked", security(("admin_token" = [])), responses((status = 200, body = Revoked)))]
pub async fn list_revoked(State(node): State<Arc<Node>>) -> Result<Response, ApiError> {
    Ok(versioned(Revoked { revoked: node.controlplane.revoked() }).into_response())
}

//! The instance certificate authority (`/v1/ca…`, `runplane ca …`, see [`crate::ca`])
//! and the listener's certificate reload (`/v1/tls/reload`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::JsonBody;
use crate::api::params::Path;
use crate::ca::{AuthorityView, CaView, IssuedCertificate, Kind};
use crate::error::ApiError;
use crate::node::Node;

/// Records a CA change in the admin event and brings this node's files up to date (the
/// others follow through the change feed).
async fn changed(node: &Node, target: &str, details: serde_json::Value) {
    let target = target.to_owned();
    crate::api::gate::annotate(|r| {
        r.targets.insert(0, target);
        if let serde_json::Value::Object(d) = details {
            r.details.extend(d);
        }
    });
    crate::ca::refresh(node).await;
}

/// Create the instance CA (`runplane ca init`); 409 if it exists.
#[utoipa::path(post, path = "/v1/ca", security(("admin_token" = [])), responses((status = 201, body = AuthorityView), (status = 409, body = crate::error::ErrorResponse)))]
pub async fn init(State(node): State<Arc<Node>>) -> Result<Response, ApiError> {
    let a = crate::ca::init(&node).await?;
    changed(&node, &format!("ca/{}", a.generation), serde_json::json!({"generation": a.generation})).await;
    Ok((StatusCode::CREATED, crate::api::versioned(a)).into_response())
}

/// The authorities, and the bundle clients should trust.
#[utoipa::path(get, path = "/v1/ca", security(("admin_token" = [])), responses((status = 200, body = CaView)))]
pub async fn show(State(node): State<Arc<Node>>) -> Result<Response, ApiError> {
    Ok(crate::api::versioned(crate::ca::show(&node).await?).into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    /// How long the authorities before the new one stay trusted, in seconds (default
    /// one day): time for clients to take the new bundle and for certificates to be
    /// renewed.
    #[schema(maximum = 7776000)]
    pub overlap_secs: Option<u64>,
}

/// Replace the instance CA (`runplane ca rotate`): a new authority signs from now on,
/// the old ones stay trusted for the overlap; nodes renew their certificates at once.
#[utoipa::path(post, path = "/v1/ca/rotate", security(("admin_token" = [])), request_body = RotateRequest, responses((status = 201, body = AuthorityView), (status = 409, body = crate::error::ErrorResponse)))]
pub async fn rotate(State(node): State<Arc<Node>>, JsonBody(req): JsonBody<RotateRequest>) -> Result<Response, ApiError> {
    let overlap = req.overlap_secs.unwrap_or(86_400);
    if overlap > crate::ca::MAX_LIFETIME_SECS {
        return Err(ApiError::bad_request("invalid_overlap", format!("overlap_secs must be at most {}", crate::ca::MAX_LIFETIME_SECS)));
    }
    let a = crate::ca::rotate(&node, overlap).await?;
    changed(&node, &format!("ca/{}", a.generation), serde_json::json!({"generation": a.generation, "overlap_secs": overlap})).await;
    Ok((StatusCode::CREATED, crate::api::versioned(a)).into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueRequest {
    /// `client` (mutual TLS) or `node`.
    pub kind: Kind,
    /// The certificate's common name: who it identifies.
    #[schema(min_length = 1, max_length = 128)]
    pub subject: String,
    /// DNS names or IP addresses it is for (a node's; usually none for a client).
    #[serde(default)]
    pub names: Vec<String>,
    /// Lifetime in seconds (default 7 days, at most 90).
    #[schema(minimum = 1, maximum = 7776000)]
    pub lifetime_secs: Option<u64>,
    /// A PEM certificate signing request: the key stays with whoever made it.
    pub csr_pem: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Issued {
    pub certificate: IssuedCertificate,
    pub certificate_pem: String,
    /// The bundle to trust beside it.
    pub trust_bundle_pem: String,
}

/// Issue a certificate for a CSR (`runplane ca issue`, which makes the key locally).
#[utoipa::path(post, path = "/v1/ca/certificates", security(("admin_token" = [])), request_body = IssueRequest, responses((status = 201, body = Issued), (status = 409, body = crate::error::ErrorResponse)))]
pub async fn issue(State(node): State<Arc<Node>>, JsonBody(req): JsonBody<IssueRequest>) -> Result<Response, ApiError> {
    if req.subject.is_empty() || req.subject.len() > 128 || req.subject.chars().any(char::is_control) {
        return Err(ApiError::bad_request("invalid_subject", "subject must be 1-128 characters without control characters"));
    }
    if req.names.len() > 32 || req.names.iter().any(|n| n.is_empty() || n.len() > 253) {
        return Err(ApiError::bad_request("invalid_name", "names: at most 32, each 1-253 characters"));
    }
    let lifetime = req.lifetime_secs.unwrap_or(crate::ca::DEFAULT_CLIENT_LIFETIME_SECS);
    if !(1..=crate::ca::MAX_LIFETIME_SECS).contains(&lifetime) {
        return Err(ApiError::bad_request("invalid_lifetime", format!("lifetime_secs must be between 1 and {}", crate::ca::MAX_LIFETIME_SECS)));
    }
    let (certificate, certificate_pem) = crate::ca::issue(&node, req.kind, &req.subject, &req.names, lifetime, &req.csr_pem).await?;
    let trust_bundle_pem = crate::ca::show(&node).await?.trust_bundle_pem;
    changed(&node, &format!("ca/certificate/{}", certificate.serial), serde_json::json!({"serial": certificate.serial, "subject": certificate.subject, "kind": certificate.kind})).await;
    Ok((StatusCode::CREATED, crate::api::versioned(Issued { certificate, certificate_pem, trust_bundle_pem })).into_response())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedList {
    pub items: Vec<IssuedCertificate>,
}

/// Every certificate the instance CA issued, with its revocation.
#[utoipa::path(get, path = "/v1/ca/certificates", security(("admin_token" = [])), responses((status = 200, body = IssuedList)))]
pub async fn list(State(node): State<Arc<Node>>) -> Result<Response, ApiError> {
    Ok(crate::api::versioned(IssuedList { items: crate::ca::issued(&node).await? }).into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    #[schema(max_length = 512)]
    pub reason: Option<String>,
}

/// Revoke a certificate (`runplane ca revoke SERIAL`): every node refuses it from its
/// next handshake on.
#[utoipa::path(post, path = "/v1/ca/certificates/{serial}/revoke", security(("admin_token" = [])), request_body = RevokeRequest, responses((status = 200, body = IssuedCertificate), (status = 404, body = crate::error::ErrorResponse)))]
pub async fn revoke(State(node): State<Arc<Node>>, Path(serial): Path<String>, JsonBody(req): JsonBody<RevokeRequest>) -> Result<Response, ApiError> {
    if req.reason.as_ref().is_some_and(|r| r.len() > 512) {
        return Err(ApiError::bad_request("invalid_reason", "reason must be at most 512 characters"));
    }
    let cert = crate::ca::revoke(&node, &serial, req.reason).await?;
    changed(&node, &format!("ca/certificate/{serial}"), serde_json::json!({"serial": serial, "subject": cert.subject})).await;
    Ok(crate::api::versioned(cert).into_response())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TlsReloaded {
    /// What serves from the next handshake on; absent when the node serves plain HTTP.
    pub serving: Option<crate::tls::ServingCertificate>,
}

/// Read the listener's certificate files again (as SIGHUP does): a good pair serves
/// from the next handshake on; established connections keep theirs. 409 when the files
/// do not hold a usable pair (the previous one keeps serving).
#[utoipa::path(post, path = "/v1/tls/reload", security(("admin_token" = [])), responses((status = 200, body = TlsReloaded), (status = 409, body = crate::error::ErrorResponse)))]
pub async fn reload_tls(State(node): State<Arc<Node>>) -> Result<Response, ApiError> {
    let serving = node.reload_tls().map_err(|e| ApiError::conflict(format!("{e}; the previous certificate keeps serving")))?;
    if let Some(s) = &serving {
        let sha = s.sha256.clone();
        crate::api::gate::annotate(|r| {
            r.details.insert("sha256".into(), sha.into());
        });
    }
    Ok(crate::api::versioned(TlsReloaded { serving }).into_response())
}

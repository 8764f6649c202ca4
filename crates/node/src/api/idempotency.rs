//! Idempotency keys on creating calls (spec §12): a client that sends `Idempotency-Key`
//! with a create and retries it — against the same node or another of the instance —
//! gets the first answer again instead of a second tenant, key, token or deployment.
//!
//! The key is claimed in the control store before the handler runs, scoped to the
//! actor and the operation; the answer of a successful create is kept (sealed under the
//! instance's key-encryption key: it may carry a new API key or token) for 24 hours and
//! repeated with `Idempotent-Replayed: true`. The same key with a different request is
//! a 422; a key still being answered is a 409; a failed create gives its key back.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use runplane_control::Claim;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::node::Node;

/// The operations whose requests may carry a key.
pub(crate) const CREATING: &[&str] = &["tenant.create", "key.create", "capability.push", "deploy", "token.mint", "contract.register"];
/// How long an answer is kept for retries.
pub(crate) const KEPT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// Answers larger than this are not kept (creates answer a few hundred bytes).
const MAX_KEPT_ANSWER: usize = 1 << 20;

/// A claimed key, to finish once the handler has answered.
pub(crate) struct Claimed {
    scope: String,
    key: String,
}

/// What to do with the request.
pub(crate) enum Begin {
    /// Run the handler (with the claim to finish, if the request carried a key).
    Proceed(Request, Option<Claimed>),
    /// Answered before: this is the answer.
    Answered(Response),
}

fn context<'a>(name: &'a str) -> runplane_secrets::SecretContext<'a> {
    runplane_secrets::SecretContext { tenant: "instance", name, version: 0 }
}

/// Claims the request's `Idempotency-Key`, or finds its earlier answer.
pub(crate) async fn begin(node: &Node, operation: &str, actor: &str, req: Request) -> Result<Begin, ApiError> {
    let Some(value) = req.headers().get("idempotency-key") else { return Ok(Begin::Proceed(req, None)) };
    if !CREATING.contains(&operation) {
        return Ok(Begin::Proceed(req, None));
    }
    let key = value
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| ApiError::bad_request("invalid_idempotency_key", "Idempotency-Key must be 1-255 visible ASCII characters; send a UUID"))?
        .to_owned();
    let (parts, body) = req.into_parts();
    let limit = node.config.max_body_bytes;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| ApiError::too_large(limit))?;
    let mut h = Sha256::new();
    h.update(parts.method.as_str().as_bytes());
    h.update(b"\n");
    h.update(parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("").as_bytes());
    h.update(b"\n");
    h.update(&bytes);
    let fingerprint = hex::encode(h.finalize());
    let scope = format!("{actor}|{operation}");
    match node.control.claim_idempotency(&scope, &key, &fingerprint).await? {
        Claim::Claimed => Ok(Begin::Proceed(Request::from_parts(parts, Body::from(bytes)), Some(Claimed { scope, key }))),
        Claim::InProgress => Err(ApiError::conflict("a request with this Idempotency-Key is still being answered; retry it in a moment")),
        Claim::OtherRequest => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was already used for a different request; send each new request with a new key",
        )),
        Claim::Done { status, response } => {
            let name = format!("idempotency/{scope}/{key}");
            let sealed = hex::decode(&response).map_err(|_| ApiError::unavailable("a kept answer cannot be read back; retry without the Idempotency-Key"))?;
            let ring = node.keyring.read().unwrap_or_else(|p| p.into_inner()).clone();
            let opened = runplane_secrets::open(&ring, &context(&name), &sealed)
                .map_err(|e| ApiError::unavailable(format!("a kept answer cannot be opened ({e}); retry without the Idempotency-Key")))?;
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            let mut resp = (status, opened.plaintext.to_vec()).into_response();
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            resp.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
            Ok(Begin::Answered(resp))
        }
    }
}

/// Keeps a successful answer for retries; gives the key back otherwise.
pub(crate) async fn finish(node: &Node, claimed: Claimed, response: Response) -> Response {
    if !response.status().is_success() {
        if let Err(e) = node.control.release_idempotency(&claimed.scope, &claimed.key).await {
            tracing::warn!(error = %e, "could not release an idempotency key; a retry gets 409 for a minute");
        }
        return response;
    }
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_KEPT_ANSWER).await else {
        return ApiError::unavailable("the answer could not be kept for retries").into_response();
    };
    let name = format!("idempotency/{}/{}", claimed.scope, claimed.key);
    let ring = node.keyring.read().unwrap_or_else(|p| p.into_inner()).clone();
    let kept = match runplane_secrets::seal(&ring, &context(&name), &bytes) {
        Ok(sealed) => node.control.complete_idempotency(&claimed.scope, &claimed.key, parts.status.as_u16(), &hex::encode(sealed)).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = kept {
        tracing::warn!(error = %e, "could not keep a create's answer for retries");
    }
    Response::from_parts(parts, Body::from(bytes))
}

//! Credentials at the boundary (spec §5.1): the tenant comes from the credential,
//! never from a header or path the caller chooses.

use std::collections::HashMap;
use std::sync::RwLock;

use axum::http::HeaderMap;
use base64::Engine as _;
use crate::entropy::Entropy;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

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

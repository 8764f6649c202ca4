//! Path and query parameters: extractors whose rejections are
//! [`ApiError`]s (JSON, like every other error), and the pagination every list shares.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine as _;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Query parameters; a query string that does not parse is a 400 `invalid_query`.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(e) => Err(ApiError::bad_request(
                "invalid_query",
                format!("{}; this operation's parameters are in /v1/openapi.json", e.body_text()),
            )),
        }
    }
}

/// Path parameters; a path that does not decode (e.g. percent-encoded bytes that are not
/// UTF-8) is a 400 `invalid_path`.
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(e) => Err(ApiError::bad_request("invalid_path", format!("{}; path segments are percent-encoded UTF-8", e.body_text()))),
        }
    }
}

/// The most items one page holds.
pub const MAX_PAGE: u32 = 1000;

/// A page size: `limit` if it is 1-[`MAX_PAGE`], 100 when absent. Out of range is a
/// 400 rather than a silent clamp, so a client that asked for more learns it got less.
pub fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit {
        None => Ok(100),
        Some(l) if (1..=MAX_PAGE).contains(&l) => Ok(l),
        Some(l) => Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit {l} is out of range: a page holds 1-{MAX_PAGE} items; ask for at most {MAX_PAGE} and follow next_cursor for the rest"),
        )),
    }
}

/// `?cursor=…&limit=…` on list endpoints.
#[derive(serde::Deserialize, utoipa::IntoParams)]
pub struct PageParams {
    /// Opaque: the `next_cursor` of the previous page (unpadded base64url).
    #[param(pattern = r"^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2,3})?$")]
    pub cursor: Option<String>,
    /// 1-1000, default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// Cursors are unpadded base64url of the last key of a page. Decoding ignores trailing
/// bits, so every string of the documented pattern is a cursor (keys compare as bytes).
const CURSOR: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    base64::engine::GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone),
);

/// One page of `items` (already sorted by `key`), after the cursor; a limit out of range
/// or a cursor this node could not have issued is a 400.
pub fn paginate<T>(items: Vec<T>, key: impl Fn(&T) -> String, params: &PageParams) -> Result<(Vec<T>, Option<String>), ApiError> {
    let limit = page_limit(params.limit)? as usize;
    let after = match params.cursor.as_deref() {
        None => None,
        Some(c) => Some(CURSOR.decode(c).map_err(|_| {
            ApiError::bad_request("invalid_cursor", format!("cursor {c:?} is not one this node issued; pass the next_cursor of the previous page, or none for the first"))
        })?),
    };
    let mut page: Vec<T> = items.into_iter().filter(|i| after.as_ref().is_none_or(|a| key(i).as_bytes() > a.as_slice())).collect();
    let more = page.len() > limit;
    page.truncate(limit);
    let next = if more { page.last().map(|i| CURSOR.encode(key(i))) } else { None };
    Ok((page, next))
}

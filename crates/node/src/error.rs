//! The one place errors become HTTP: `ErrorResponse { error: { code, message, details? }, protocol_version }`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// The error body of every failed API call.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorResponse {
    pub error: ErrorBody,
    /// Always `"1.0"`.
    pub protocol_version: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `not_found`, `invalid_json`, `forbidden_imports`.
    pub code: String,
    /// One sentence: what went wrong and what to do.
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub details: Option<serde_json::Value>,
}

/// An error on its way to becoming an [`ErrorResponse`].
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub details: Option<serde_json::Value>,
    /// Extra response headers (e.g. `Retry-After`).
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError { status, code: code.into(), message: message.into(), details: None, headers: Vec::new() }
    }
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }
    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    /// 403 with a specific code (`not_entitled`, `flag_disabled`, `domain_limit`).
    pub fn forbidden_code(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }
    /// A fault of the node itself (a bug to report), 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message);
        e.headers.push(("retry-after", "1".into()));
        e
    }
    /// 413 for a body over `node.max_body_bytes`.
    pub fn too_large(limit: usize) -> Self {
        Self::too_large_for(limit, MAX_BODY_SETTING)
    }
    /// 413 for a body over `limit` bytes; `limit_name` says which limit and what to do.
    pub fn too_large_for(limit: usize, limit_name: &str) -> Self {
        Self::body_too_large(format!("the request body is larger than the limit of {limit} bytes ({limit_name})"))
    }
    /// 413 `body_too_large`. The connection closes after it: the unread rest of the body
    /// cannot be skipped otherwise.
    pub fn body_too_large(message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", message);
        e.headers.push(("connection", "close".into()));
        e
    }
}

/// What the 413 of an ordinary body names.
pub const MAX_BODY_SETTING: &str = "node.max_body_bytes: send less, or raise it in the node's configuration";

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorResponse {
            error: ErrorBody { code: self.code, message: self.message, details: self.details },
            protocol_version: runplane_ports::PROTOCOL_VERSION,
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        for (k, v) in self.headers {
            if let Ok(v) = axum::http::HeaderValue::from_str(&v) {
                resp.headers_mut().insert(k, v);
            }
        }
        resp
    }
}

impl From<runplane_host::HostError> for ApiError {
    fn from(e: runplane_host::HostError) -> Self {
        use runplane_host::HostError as H;
        match &e {
            H::NotAComponent { .. } => ApiError::bad_request("not_a_component", e.to_string()),
            H::ForbiddenImports { offending, allowed, .. } => ApiError::bad_request("forbidden_imports", e.to_string())
                .with_details(serde_json::json!({ "offending_imports": offending, "allowed_imports": allowed })),
            H::NoEntryPoint { .. } => ApiError::bad_request("no_entry_point", e.to_string()),
            H::Engine(_) | H::Cache { .. } => ApiError::unavailable(e.to_string()),
        }
    }
}

impl From<runplane_audit::AuditError> for ApiError {
    fn from(e: runplane_audit::AuditError) -> Self {
        use runplane_audit::AuditError as A;
        match e {
            A::Invalid(m) => ApiError::bad_request("invalid_audit_request", m),
            A::NoSuchLog(_) => ApiError::not_found(e.to_string()),
            A::Unavailable(_) | A::Canonical(_) | A::Corrupt { .. } | A::Refused { .. } => {
                ApiError::unavailable(format!("{e}; the action was not performed because it could not be audited"))
            }
        }
    }
}

impl From<runplane_control::ControlError> for ApiError {
    fn from(e: runplane_control::ControlError) -> Self {
        use runplane_control::ControlError as C;
        match e {
            C::Corrupt(_) => ApiError::unavailable(format!("{e}; restore the control store from a backup")),
            C::Unavailable(_) | C::StaleEpoch { .. } => ApiError::unavailable(e.to_string()),
        }
    }
}

impl From<runplane_ports::PortError> for ApiError {
    fn from(e: runplane_ports::PortError) -> Self {
        use runplane_ports::PortError as P;
        match e {
            P::NotFound(m) => ApiError::not_found(m),
            P::Conflict(m) => ApiError::conflict(m),
            P::QuotaExceeded(m) => ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "quota_exceeded", m),
            P::Unavailable(m) => ApiError::unavailable(m),
            P::StorageFull(m) => {
                let mut e = ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "storage_full", m);
                e.headers.push(("retry-after", "30".into()));
                e
            }
            P::Invalid(m) => ApiError::bad_request("invalid", m),
        }
    }
}

/// Maps a failed invocation to the status the caller sees.
pub fn invoke_error(e: &runplane_host::InvokeError) -> ApiError {
    use runplane_host::InvokeError as I;
    let status = match e {
        I::Deadline { .. } => StatusCode::GATEWAY_TIMEOUT,
        I::OutOfFuel { .. } | I::MemoryLimit { .. } | I::TooManyPortCalls { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        I::ResponseTooLarge { .. } => StatusCode::BAD_GATEWAY,
        I::MissingExport { .. } => StatusCode::NOT_IMPLEMENTED,
        I::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
        I::Trap(_) | I::Failed(_) => StatusCode::BAD_GATEWAY,
        I::NonDeterministic(_) => StatusCode::CONFLICT,
        I::QuotaExceeded(v) => match v.resource {
            runplane_tenancy::Resource::Disk => StatusCode::INSUFFICIENT_STORAGE,
            runplane_tenancy::Resource::Memory => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::TOO_MANY_REQUESTS,
        },
    };
    let mut err = ApiError::new(status, e.code(), e.to_string());
    if status == StatusCode::SERVICE_UNAVAILABLE {
        err.headers.push(("retry-after", "1".into()));
    }
    err
}

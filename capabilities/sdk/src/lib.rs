//! Helpers for writing Runplane capabilities.
//!
//! A capability crate generates its bindings with `wit_bindgen::generate!` for one of
//! the worlds in `wit/ports.wit` (so the ports it imports are checked at compile
//! time), implements [`HttpHandler`], and lets [`http_glue!`] connect it to
//! `wasi:http/incoming-handler`:
//!
//! ```ignore
//! wit_bindgen::generate!({ path: "../../wit", world: "runplane:ports/http-capability", generate_all });
//!
//! struct Hello;
//! impl runplane_sdk::HttpHandler for Hello {
//!     fn handle(_req: runplane_sdk::Request) -> runplane_sdk::Response {
//!         runplane_sdk::Response::text(200, "hello, world\n")
//!     }
//! }
//! runplane_sdk::http_glue!(Hello);
//! export!(Hello);
//! ```

/// A fully read incoming request. `path` excludes the route prefix the node strips.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Raw query string without `?`.
    pub query: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// Splits `path_with_query` into path and query.
    pub fn new(method: String, path_with_query: String, headers: Vec<(String, String)>, body: Vec<u8>) -> Self {
        let (path, query) = match path_with_query.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (path_with_query, None),
        };
        Request { method, path, query, headers, body }
    }

    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The value of query parameter `name` (no percent-decoding beyond `%XX` of ASCII).
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.as_deref()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then(|| percent_decode(v))
        })
    }

    /// Path segments, empty ones dropped: `/orders/1` → `["orders", "1"]`.
    pub fn segments(&self) -> Vec<String> {
        self.path.split('/').filter(|s| !s.is_empty()).map(percent_decode).collect()
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| format!("the body is not valid JSON: {e}"))
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            // Bytes, not `&s[..]`: a multi-byte character after '%' must not panic.
            if let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A response to send.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// A JSON response (keys in the order serde_json keeps them: sorted).
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Response {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_json::to_vec(value).unwrap_or_default(),
        }
    }

    /// `{"error": message}` with `status`.
    pub fn error(status: u16, message: impl Into<String>) -> Self {
        Self::json(status, &serde_json::json!({ "error": message.into() }))
    }

    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Response { status, headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())], body: body.into().into_bytes() }
    }

    pub fn empty(status: u16) -> Self {
        Response { status, headers: Vec::new(), body: Vec::new() }
    }
}

/// What an HTTP capability implements.
pub trait HttpHandler {
    fn handle(request: Request) -> Response;
}

/// Formats seconds and nanoseconds since the Unix epoch as RFC 3339 UTC.
pub fn rfc3339(seconds: u64, nanos: u32) -> String {
    let days = (seconds / 86_400) as i64;
    let rem = seconds % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z", rem / 3600, (rem % 3600) / 60, rem % 60, nanos / 1000)
}

/// Implements `wasi:http/incoming-handler` for `$ty` (which implements [`HttpHandler`]).
/// Must be invoked in the crate root after `wit_bindgen::generate!`.
#[macro_export]
macro_rules! http_glue {
    ($ty:ty) => {
        impl exports::wasi::http::incoming_handler::Guest for $ty {
            fn handle(request: wasi::http::types::IncomingRequest, response_out: wasi::http::types::ResponseOutparam) {
                use wasi::http::types as t;
                let method = match request.method() {
                    t::Method::Get => "GET".to_string(),
                    t::Method::Head => "HEAD".to_string(),
                    t::Method::Post => "POST".to_string(),
                    t::Method::Put => "PUT".to_string(),
                    t::Method::Delete => "DELETE".to_string(),
                    t::Method::Connect => "CONNECT".to_string(),
                    t::Method::Options => "OPTIONS".to_string(),
                    t::Method::Trace => "TRACE".to_string(),
                    t::Method::Patch => "PATCH".to_string(),
                    t::Method::Other(s) => s,
                };
                let path = request.path_with_query().unwrap_or_else(|| "/".to_string());
                let headers = request
                    .headers()
                    .entries()
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                    .collect();
                let mut body = Vec::new();
                if let Ok(incoming) = request.consume() {
                    if let Ok(stream) = incoming.stream() {
                        while let Ok(chunk) = stream.blocking_read(64 * 1024) {
                            body.extend_from_slice(&chunk);
                        }
                    }
                    let _ = t::IncomingBody::finish(incoming);
                }
                let req = $crate::Request::new(method, path, headers, body);
                let resp = <$ty as $crate::HttpHandler>::handle(req);

                let fields = t::Fields::new();
                for (k, v) in &resp.headers {
                    let _ = fields.append(k, v.as_bytes());
                }
                let outgoing = t::OutgoingResponse::new(fields);
                let _ = outgoing.set_status_code(resp.status);
                let out_body = match outgoing.body() {
                    Ok(b) => b,
                    Err(()) => return,
                };
                t::ResponseOutparam::set(response_out, Ok(outgoing));
                if let Ok(stream) = out_body.write() {
                    for chunk in resp.body.chunks(4096) {
                        if stream.blocking_write_and_flush(chunk).is_err() {
                            break;
                        }
                    }
                }
                let _ = t::OutgoingBody::finish(out_body, None);
            }
        }
    };
}

//! Outbound HTTP (`wasi:http/outgoing-handler`): only to hosts on the deployment's
//! allow-list.

use std::sync::Arc;

use wasmtime_wasi_http::{WasiHttpHooks, p2::body::HyperOutgoingBody};

/// Hosts a deployment may call. Entries are `host`, `host:port` or `*.domain`.
#[derive(Debug, Clone, Default)]
pub struct AllowList(Arc<[String]>);

impl AllowList {
    pub fn new(entries: impl IntoIterator<Item = String>) -> Self {
        AllowList(entries.into_iter().map(|e| e.to_ascii_lowercase()).collect())
    }

    /// Whether a request to `host` (and `port`) may leave the node.
    pub fn permits(&self, host: &str, port: Option<u16>) -> bool {
        let host = host.to_ascii_lowercase();
        self.0.iter().any(|entry| {
            if let Some(domain) = entry.strip_prefix("*.") {
                return host.ends_with(&format!(".{domain}"));
            }
            match entry.rsplit_once(':') {
                Some((h, p)) if p.parse::<u16>().is_ok() => {
                    h == host && Some(p.parse::<u16>().unwrap_or(0)) == port
                }
                _ => *entry == host,
            }
        })
    }

    pub fn entries(&self) -> &[String] {
        &self.0
    }
}

/// The hooks wasmtime-wasi-http calls for each outgoing request.
pub(crate) struct OutboundHooks {
    pub(crate) allow: AllowList,
    /// Responses are journaled (and served from the journal on replay).
    pub(crate) journal: crate::Journal,
    /// Largest response body buffered for the journal.
    pub(crate) max_body_bytes: usize,
    /// The tenant's network budget for this window (`None`: not metered).
    pub(crate) network: Option<Arc<runplane_tenancy::Budget>>,
    pub(crate) meter: crate::limits::Meter,
    /// Bytes this invocation sent and received, for its report.
    pub(crate) bytes: Arc<std::sync::atomic::AtomicU64>,
}

/// Bytes of a request or response head as it crosses the wire, near enough: the start
/// line and each header line.
fn head_bytes<'a>(start_line: usize, headers: impl Iterator<Item = (&'a http::HeaderName, &'a http::HeaderValue)>) -> u64 {
    (start_line + 2 + headers.map(|(k, v)| k.as_str().len() + v.len() + 4).sum::<usize>()) as u64
}

/// Draws `bytes` from the budget; past it, notes the violation on the meter.
fn charge(network: &Option<Arc<runplane_tenancy::Budget>>, meter: &crate::limits::Meter, counted: &std::sync::atomic::AtomicU64, bytes: u64) -> bool {
    counted.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    let Some(budget) = network else { return true };
    if budget.try_take(bytes) {
        return true;
    }
    budget.take_up_to(bytes);
    meter.violate(
        runplane_tenancy::Resource::Network,
        "the tenant's outbound network quota (max_network_kb) for this window is used up; wait for the next window or ask for a larger quota".into(),
    );
    false
}

/// An outbound response as journaled: what the capability received.
#[derive(serde::Serialize, serde::Deserialize)]
struct JournaledResponse {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

/// Sends `request` and buffers the whole response, so it can be journaled.
async fn send_buffered(
    request: http::Request<HyperOutgoingBody>,
    options: Option<wasmtime_wasi_http::RequestOptions>,
    max_body_bytes: usize,
) -> Result<JournaledResponse, String> {
    use http_body_util::BodyExt;
    let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await.map_err(|e| e.to_string())?;
    // The connection is driven by `io` while the body is read.
    let io = tokio::spawn(io);
    let (parts, body) = res.into_parts();
    let body = http_body_util::Limited::new(body, max_body_bytes).collect().await.map_err(|e| format!("response body: {e}"))?.to_bytes();
    io.abort();
    Ok(JournaledResponse {
        status: parts.status.as_u16(),
        headers: parts.headers.iter().map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec())).collect(),
        body: body.to_vec(),
    })
}

fn into_response(r: JournaledResponse) -> Result<http::Response<HyperOutgoingBody>, wasmtime_wasi_http::Error> {
    use http_body_util::BodyExt;
    let mut builder = http::Response::builder().status(r.status);
    for (k, v) in r.headers {
        builder = builder.header(k, v);
    }
    let body = http_body_util::Full::new(bytes::Bytes::from(r.body)).map_err(|never: std::convert::Infallible| match never {}).boxed_unsync();
    builder.body(body).map_err(|e| wasmtime_wasi_http::Error::InternalError(Some(e.to_string())))
}

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<HyperOutgoingBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (http::Response<HyperOutgoingBody>, Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        _ = fut;
        let uri = request.uri();
        let host = uri.host().unwrap_or_default().to_owned();
        let port = uri.port_u16();
        let permitted = self.allow.permits(&host, port);
        let (journal, max) = (self.journal.clone(), self.max_body_bytes);
        let (network, meter, counted) = (self.network.clone(), self.meter.clone(), self.bytes.clone());
        Box::new(async move {
            if !permitted {
                tracing::warn!(%host, "outbound request refused: host not on the deployment's allow-list");
                return Err(wasmtime_wasi_http::Error::HttpRequestDenied);
            }
            use hyper::body::Body as _;
            let body_len = request.body().size_hint().upper().unwrap_or_else(|| request.body().size_hint().lower());
            let sent = head_bytes(request.method().as_str().len() + request.uri().to_string().len() + 10, request.headers().iter()) + body_len;
            if !charge(&network, &meter, &counted, sent) {
                return Err(wasmtime_wasi_http::Error::HttpRequestDenied);
            }
            let args = (request.method().as_str().to_owned(), request.uri().to_string());
            let journaled = journal
                .observe("http.send", &args, send_buffered(request, options, max))
                .await
                .map_err(|e| wasmtime_wasi_http::Error::InternalError(Some(e.to_string())))?;
            let journaled = journaled.map_err(|e| wasmtime_wasi_http::Error::InternalError(Some(e)))?;
            let received = head_bytes(16, std::iter::empty()) + journaled.headers.iter().map(|(k, v)| (k.len() + v.len() + 4) as u64).sum::<u64>() + journaled.body.len() as u64;
            if !charge(&network, &meter, &counted, received) {
                return Err(wasmtime_wasi_http::Error::HttpRequestDenied);
            }
            let response = into_response(journaled)?;
            let io: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send> = Box::new(async { Ok(()) });
            Ok((response, io))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_matches_hosts_ports_and_wildcards() {
        let a = AllowList::new(["api.example.com".into(), "127.0.0.1:8080".into(), "*.hooks.io".into()]);
        assert!(a.permits("api.example.com", None));
        assert!(a.permits("API.example.com", Some(443)));
        assert!(a.permits("127.0.0.1", Some(8080)));
        assert!(!a.permits("127.0.0.1", Some(8081)));
        assert!(a.permits("x.hooks.io", None));
        assert!(!a.permits("hooks.io", None));
        assert!(!a.permits("evilhooks.io", None));
        assert!(!a.permits("api.example.com.evil.net", None));
    }
}

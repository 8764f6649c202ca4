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
        Box::new(async move {
            if !permitted {
                tracing::warn!(%host, "outbound request refused: host not on the deployment's allow-list");
                return Err(wasmtime_wasi_http::Error::HttpRequestDenied);
            }
            use http_body_util::BodyExt;
            let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((res.map(BodyExt::boxed_unsync), Box::new(io) as Box<dyn Future<Output = _> + Send>))
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

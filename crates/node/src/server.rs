//! The node's HTTP/1.1 server: hyper's connection over the node's listener, with the
//! connection hygiene of `[http]` (spec §11; issue 18 item 6) and a graceful shutdown
//! for [`drain`](crate::drain).
//!
//! | limit | default | what happens past it |
//! |---|---|---|
//! | `[http] header_read_timeout_ms` | 10000 | a request's head (start line and headers) not complete this long after its first byte: the connection closes (slowloris) |
//! | `[http] idle_timeout_ms` | 75000 | a keep-alive connection with no request started this long: it closes (keep your load balancer's idle timeout below it) |
//! | `[http] max_header_bytes` | 32768 | `431 Request Header Fields Too Large`, and the connection closes |
//! | headers per request | 100 (hyper's) | `431` |
//! | `[http] max_connections_per_source` | 256 | a further connection from that address is closed at once |
//! | TLS handshake | 10 s | the connection closes |
//!
//! The two timeouts are kept by the connection itself ([`crate::listener`]), not by
//! hyper, whose one header timer also runs while a keep-alive connection is idle.

use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;

use crate::listener::LingeringListener;

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// Everything but the instance metadata interface (one listener).
    All,
    /// Tenant traffic (`/apps/…`, `/v1/tokens/exchange`) and the probes: the admin API
    /// is on a listener of its own.
    Tenant,
    /// The admin API, `/metrics` and the probes (`[node] admin_listen`).
    Admin,
    /// The instance metadata interface (`/v1/instance/…`, `[node] metadata_listen`):
    /// TLS 1.3 and mutual TLS only, so it is served nowhere else.
    Metadata,
}

impl Surface {
    /// Whether `path` is served here.
    pub fn serves(self, path: &str) -> bool {
        let probe = matches!(path, "/healthz" | "/livez" | "/readyz");
        let tenant = path.starts_with("/apps/") || path == "/v1/tokens/exchange";
        let metadata = path.starts_with("/v1/instance/");
        match self {
            Surface::All => !metadata,
            Surface::Tenant => probe || tenant,
            Surface::Admin => probe || !(tenant || metadata),
            Surface::Metadata => metadata,
        }
    }
}

/// `[http]`: the bounds every connection lives within.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_connections_per_source: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            max_header_bytes: 32 << 10,
            max_connections_per_source: 256,
        }
    }
}

/// Open connections per source address.
#[derive(Default)]
pub(crate) struct PerSource(Mutex<std::collections::HashMap<IpAddr, usize>>);

impl PerSource {
    /// Counts a connection from `ip` unless it already has `max`; the guard uncounts it.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<SourceGuard> {
        let mut open = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(SourceGuard { table: self.clone(), ip })
    }
}

/// One counted connection; dropping it uncounts it.
pub(crate) struct SourceGuard {
    table: Arc<PerSource>,
    ip: IpAddr,
}

impl Drop for SourceGuard {
    fn drop(&mut self) {
        let mut open = self.table.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Serves `app` on `listener` until `stopped` resolves, then stops accepting, lets every
/// connection finish its request in flight (idle keep-alive connections close at once)
/// and returns once all have closed.
pub async fn serve(mut listener: LingeringListener, app: Router, limits: &HttpLimits, surface: Surface, stopped: impl Future<Output = ()>) {
    let mut http = hyper::server::conn::http1::Builder::new();
    // hyper's header timer is off: the connection keeps both timeouts (module docs).
    http.header_read_timeout(None).max_header_size(limits.max_header_bytes);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut stopped = std::pin::pin!(stopped);
    loop {
        let (io, peer) = tokio::select! {
            io = listener.accept() => io,
            _ = &mut stopped => break,
        };
        // Handlers see the peer as axum's `ConnectInfo` (the per-source limits) and its
        // client certificate as a `PeerCertificate` (the admin log).
        let router = app.clone();
        let certificate = io.peer();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            req.extensions_mut().insert(certificate.clone());
            req.extensions_mut().insert(surface);
            // A Router is always ready: `call` needs no `poll_ready` first.
            tower_service::Service::call(&mut router.clone(), req)
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(io), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

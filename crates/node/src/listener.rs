//! The node's TCP listener: a limit on connections per source address, optional TLS,
//! the header and idle timeouts, and a lingering close.
//!
//! With TLS the handshake runs in the connection's own task, on its first read or
//! write (never in the accept loop, where one slow client would hold up every other),
//! and must finish within [`HANDSHAKE_TIMEOUT`](crate::tls::HANDSHAKE_TIMEOUT).
//!
//! **Timeouts.** A connection is in one of three phases, seen from its bytes alone:
//! *head* (from accept, or from the first byte after a response, until the blank line
//! ending the request's headers: at most `header_read_timeout`), *busy* (the request
//! is being handled or its body read: no timer here, the invocation deadline bounds it)
//! and *idle* (from the first byte of a response until the next request starts: at most
//! `idle_timeout`). Past its bound, the next read fails and hyper closes the connection.
//! So a client dribbling its headers a byte a second (slowloris) is cut off after
//! `header_read_timeout`, while keep-alive connections may idle far longer.
//!
//! A client that writes a whole request body before reading (Python's `urllib`, most
//! SDKs) is still writing when the node refuses the body (413) and closes. Closing a
//! socket with unread input makes the kernel send a reset, and the client sees
//! `Broken pipe` instead of the answer. So a closed connection first sends its FIN (the
//! client can read everything written so far), then keeps reading and discarding what
//! the client still sends, for a bounded time and amount, before the socket is closed:
//! nginx's lingering close.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

use crate::server::{HttpLimits, PerSource, SourceGuard};

/// Longest a closed connection keeps draining input.
const LINGER_TIME: Duration = Duration::from_secs(30);
/// Longest it waits for the next input while draining (nginx's `lingering_timeout`).
const LINGER_TIMEOUT: Duration = Duration::from_secs(5);
/// Most input a closed connection reads and discards.
const LINGER_BYTES: u64 = 256 << 20;

/// The node's listener (see the module docs).
pub struct LingeringListener {
    inner: TcpListener,
    tls: Option<Arc<crate::tls::Certificates>>,
    limits: HttpLimits,
    per_source: Arc<PerSource>,
}

impl LingeringListener {
    pub fn new(inner: TcpListener, tls: Option<Arc<crate::tls::Certificates>>, limits: HttpLimits) -> Self {
        Self { inner, tls, limits, per_source: Arc::default() }
    }

    /// The next connection within its source's limit, and its peer.
    pub async fn accept(&mut self) -> (Connection, std::net::SocketAddr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let Some(guard) = self.per_source.admit(addr.ip(), self.limits.max_connections_per_source) else {
                        tracing::debug!(source = %addr.ip(), limit = self.limits.max_connections_per_source, "refused a connection: its source has [http] max_connections_per_source open");
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let tcp = LingeringStream { inner: Some(stream) };
                    let peer = crate::tls::PeerCertificate::default();
                    let stream = match &self.tls {
                        None => Stream::Plain(tcp),
                        Some(certs) => Stream::Handshaking {
                            accept: certs.acceptor().accept(tcp),
                            deadline: Box::pin(tokio::time::sleep(crate::tls::HANDSHAKE_TIMEOUT)),
                            peer: peer.clone(),
                        },
                    };
                    let connection = Connection {
                        stream,
                        peer,
                        phase: Phase::Head,
                        matched: 0,
                        deadline: Box::pin(tokio::time::sleep(self.limits.header_read_timeout)),
                        header_timeout: self.limits.header_read_timeout,
                        idle_timeout: self.limits.idle_timeout,
                        _counted: guard,
                    };
                    return (connection, addr);
                }
                // Too many open files and the like: the listener itself is fine; wait and go on.
                Err(e) => {
                    tracing::warn!(error = %e, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Where a connection is between requests (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Head,
    Busy,
    Idle,
}

/// One accepted connection.
pub struct Connection {
    stream: Stream,
    /// The client certificate, once a TLS handshake verified one.
    peer: crate::tls::PeerCertificate,
    phase: Phase,
    /// How much of the `\r\n\r\n` ending a request head the last bytes matched.
    matched: u8,
    deadline: Pin<Box<Sleep>>,
    header_timeout: Duration,
    idle_timeout: Duration,
    _counted: SourceGuard,
}

impl Connection {
    /// The client certificate of this connection (filled in by its handshake).
    pub fn peer(&self) -> crate::tls::PeerCertificate {
        self.peer.clone()
    }

    /// Follows the phase through bytes read.
    fn saw_read(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.phase == Phase::Idle {
            self.phase = Phase::Head;
            self.matched = 0;
            self.deadline.as_mut().reset(Instant::now() + self.header_timeout);
        }
        if self.phase != Phase::Head {
            return;
        }
        for &b in bytes {
            self.matched = match (self.matched, b) {
                (0 | 2, b'\r') => self.matched + 1,
                (1 | 3, b'\n') => self.matched + 1,
                (_, b'\r') => 1,
                _ => 0,
            };
            if self.matched == 4 {
                self.phase = Phase::Busy;
                return;
            }
        }
    }

    /// A response is being written: idle from here until the next request starts. The
    /// timer is polled at once so that it wakes this task (hyper may not read again
    /// before then).
    fn saw_write(&mut self, cx: &mut Context<'_>) {
        self.phase = Phase::Idle;
        self.deadline.as_mut().reset(Instant::now() + self.idle_timeout);
        let _ = self.deadline.as_mut().poll(cx);
    }
}

impl AsyncRead for Connection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.saw_read(&buf.filled()[before..]);
                if this.phase == Phase::Head {
                    // Registers the (possibly just reset) header timer with this task.
                    let _ = this.deadline.as_mut().poll(cx);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if this.phase != Phase::Busy && this.deadline.as_mut().poll(cx).is_ready() => {
                let what = if this.phase == Phase::Head { "the request's headers did not arrive within [http] header_read_timeout_ms" } else { "the connection was idle for [http] idle_timeout_ms" };
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)))
            }
            other => other,
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.stream).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.saw_write(cx);
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.saw_write(cx);
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The bytes of a connection: plain, or TLS (handshaking, then established).
enum Stream {
    Plain(LingeringStream),
    Handshaking { accept: tokio_rustls::Accept<LingeringStream>, deadline: Pin<Box<Sleep>>, peer: crate::tls::PeerCertificate },
    Tls(Box<tokio_rustls::server::TlsStream<LingeringStream>>),
    /// The handshake failed; every further read or write says so.
    Failed,
}

impl Stream {
    /// Drives a pending handshake: `Ready(Ok)` once the stream is plain or established.
    fn handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Stream::Handshaking { accept, deadline, peer } = self else {
            return Poll::Ready(if matches!(self, Stream::Failed) { Err(io::ErrorKind::NotConnected.into()) } else { Ok(()) });
        };
        match Pin::new(accept).poll(cx) {
            Poll::Ready(Ok(stream)) => {
                if let Some(leaf) = stream.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                    peer.set(leaf);
                }
                *self = Stream::Tls(Box::new(stream));
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                *self = Stream::Failed;
                Poll::Ready(Err(e))
            }
            Poll::Pending => match deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    *self = Stream::Failed;
                    Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the TLS handshake took too long")))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
            _ => false,
        }
    }
}

/// Runs an I/O call on the stream once any handshake is done.
macro_rules! forward {
    ($self:ident, $cx:ident, $io:ident => $call:expr) => {{
        let this = $self.get_mut();
        match this.handshake($cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
        match this {
            Stream::Plain(s) => {
                let $io = Pin::new(s);
                $call
            }
            Stream::Tls(s) => {
                let $io = Pin::new(s.as_mut());
                $call
            }
            Stream::Handshaking { .. } | Stream::Failed => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }};
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        forward!(self, cx, io => io.poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        forward!(self, cx, io => io.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        forward!(self, cx, io => io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        forward!(self, cx, io => io.poll_shutdown(cx))
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        forward!(self, cx, io => io.poll_write_vectored(cx, bufs))
    }
}

/// A connection that drains its input when dropped (see the module docs).
pub struct LingeringStream {
    /// Always `Some` until dropped.
    inner: Option<TcpStream>,
}

impl LingeringStream {
    fn stream(&mut self) -> &mut TcpStream {
        self.inner.as_mut().expect("a LingeringStream holds its stream until dropped")
    }
}

impl AsyncRead for LingeringStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.stream()).poll_read(cx, buf)
    }
}

impl AsyncWrite for LingeringStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(self.stream()).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.stream()).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.stream()).poll_shutdown(cx)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(self.stream()).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|s| s.is_write_vectored())
    }
}

impl Drop for LingeringStream {
    fn drop(&mut self) {
        let Some(stream) = self.inner.take() else { return };
        // Outside a runtime (never the case for a served connection) it simply closes.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(linger(stream));
        }
    }
}

/// Sends FIN, then reads and discards until the client closes too, goes quiet, or the
/// time or byte bound is reached.
async fn linger(mut stream: TcpStream) {
    let _ = stream.shutdown().await;
    let drain = async {
        let mut buf = vec![0u8; 64 << 10];
        let mut total = 0u64;
        while total < LINGER_BYTES {
            match tokio::time::timeout(LINGER_TIMEOUT, stream.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => total += n as u64,
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}

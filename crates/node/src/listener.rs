//! The node's TCP listener, with a lingering close.
//!
//! A client that writes a whole request body before reading (Python's `urllib`, most
//! SDKs) is still writing when the node refuses the body (413) and closes. Closing a
//! socket with unread input makes the kernel send a reset, and the client sees
//! `Broken pipe` instead of the answer. So a closed connection first sends its FIN (the
//! client can read everything written so far), then keeps reading and discarding what
//! the client still sends, for a bounded time and amount, before the socket is closed:
//! nginx's lingering close.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Longest a closed connection keeps draining input.
const LINGER_TIME: Duration = Duration::from_secs(30);
/// Longest it waits for the next input while draining (nginx's `lingering_timeout`).
const LINGER_TIMEOUT: Duration = Duration::from_secs(5);
/// Most input a closed connection reads and discards.
const LINGER_BYTES: u64 = 256 << 20;

/// A [`TcpListener`] whose connections close with a lingering close.
pub struct LingeringListener {
    inner: TcpListener,
}

impl LingeringListener {
    pub fn new(inner: TcpListener) -> Self {
        Self { inner }
    }
}

impl axum::serve::Listener for LingeringListener {
    type Io = LingeringStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => return (LingeringStream { inner: Some(stream) }, addr),
                // Too many open files and the like: the listener itself is fine; wait and go on.
                Err(e) => {
                    tracing::warn!(error = %e, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
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

//! The sandbox's own accept loop, and the per-connection kill switch behind the reset faults.
//!
//! `axum::serve` hides the socket, but a reset fault must end one particular connection with a
//! TCP RST and without a byte of response. So each accepted stream is wrapped in
//! [`AbortableStream`] and served by hyper-util's auto (HTTP/1.1 + h2c) builder; the request
//! gets a [`ConnectionHandle`] extension the pipeline can pull. Once pulled, the stream
//! refuses all further I/O and, when dropped, sets `SO_LINGER` to zero so the kernel sends RST
//! rather than FIN.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tower::ServiceExt as _;

use crate::shared::{Shared, lock};

/// Lets request-handling code abort the connection its request arrived on.
#[derive(Clone, Debug)]
pub(crate) struct ConnectionHandle {
    signal: Arc<AbortSignal>,
}

#[derive(Debug, Default)]
struct AbortSignal {
    requested: AtomicBool,
    notify: Notify,
}

impl ConnectionHandle {
    /// Aborts the connection with a reset. Whatever response is produced afterwards is never
    /// written, because the stream refuses writes from now on.
    pub(crate) fn abort(&self) {
        self.signal.requested.store(true, Ordering::SeqCst);
        // `notify_one` stores a permit, so the connection task sees it even if it is not
        // waiting at this very moment.
        self.signal.notify.notify_one();
    }
}

/// The peer's address, inserted into every request for the per-IP rate limiter.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PeerAddr(pub(crate) SocketAddr);

/// Accepts connections until the task is aborted; aborting also drops (and so closes) every
/// open connection, because their tasks live in this task's `JoinSet`.
pub(crate) async fn accept_loop(listener: TcpListener, router: Router, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    lock(&shared.journal).stats.connections_accepted += 1;
                    connections.spawn(serve_connection(stream, peer, router.clone()));
                }
                Err(error) => {
                    // Usually descriptor exhaustion; pausing beats spinning on the same error.
                    tracing::warn!(%error, "sandbox cryptlex failed to accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, router: Router) {
    // Small JSON answers should not wait for Nagle's algorithm; tests measure latency.
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "could not set TCP_NODELAY on a sandbox connection");
    }
    let handle = ConnectionHandle {
        signal: Arc::new(AbortSignal::default()),
    };
    let stream = AbortableStream {
        inner: stream,
        signal: Arc::clone(&handle.signal),
    };
    let service_handle = handle.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(service_handle.clone());
        request.extensions_mut().insert(PeerAddr(peer));
        let router = router.clone();
        async move {
            Ok::<_, Infallible>(
                router
                    .oneshot(request)
                    .await
                    .unwrap_or_else(|never| match never {}),
            )
        }
    });

    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        result = connection => {
            if let Err(error) = result {
                tracing::debug!(%error, "sandbox connection ended with an error");
            }
        }
        // Dropping the connection drops the stream, which resets it (see `AbortableStream`).
        () = handle.signal.notify.notified() => {}
    }
}

/// A TCP stream that can be turned into a reset from outside.
#[derive(Debug)]
struct AbortableStream {
    inner: TcpStream,
    signal: Arc<AbortSignal>,
}

impl AbortableStream {
    fn aborted(&self) -> bool {
        self.signal.requested.load(Ordering::SeqCst)
    }
}

fn reset_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionReset,
        "connection aborted by a sandbox fault",
    )
}

impl Drop for AbortableStream {
    fn drop(&mut self) {
        if self.aborted() {
            // A zero linger makes close() send RST and discard anything still queued.
            if let Err(error) = self.inner.set_zero_linger() {
                tracing::debug!(%error, "could not set SO_LINGER 0 for a sandbox reset");
            }
        }
    }
}

impl AsyncRead for AbortableStream {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.aborted() {
            return Poll::Ready(Err(reset_error()));
        }
        Pin::new(&mut self.get_mut().inner).poll_read(context, buffer)
    }
}

impl AsyncWrite for AbortableStream {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.aborted() {
            return Poll::Ready(Err(reset_error()));
        }
        Pin::new(&mut self.get_mut().inner).poll_write(context, buffer)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.aborted() {
            return Poll::Ready(Err(reset_error()));
        }
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(context, buffers)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.aborted() {
            return Poll::Ready(Err(reset_error()));
        }
        Pin::new(&mut self.get_mut().inner).poll_flush(context)
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.aborted() {
            // No FIN either: the reset happens on drop.
            return Poll::Ready(Err(reset_error()));
        }
        Pin::new(&mut self.get_mut().inner).poll_shutdown(context)
    }
}

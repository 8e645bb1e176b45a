//! Accepting the gRPC listeners' TCP connections, with a cap per client
//! address and an idle timeout.
//!
//! - [`accept`] yields each accepted connection as a [`TrackedConnection`],
//!   unless its address (IPv6: its /64) already holds
//!   `max_connections_per_address` connections, in which case the connection
//!   is closed at once. The place is given back when the connection closes.
//! - A connection with no call in progress for `idle_timeout` is closed. The
//!   server learns of calls from [`ConnectionActivityLayer`] in the listener's
//!   stack, which finds the connection by its addresses in a
//!   [`ConnectionTable`]: tonic gives a call only the connection's
//!   `TcpConnectInfo` (which `Request::remote_addr()` and `peer_certs()`
//!   need as it is), so there is nowhere else to carry a handle.
//!
//! The closing is a plain end of stream seen by hyper, and it happens only
//! when nothing is waiting to be read, so a call that is arriving is never
//! cut; HTTP/2 keep-alive pings (which bring bytes but no call) do not keep a
//! connection open.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use http_body::Body;
use http_body_util::BodyExt as _;
use prost::bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};

use crate::tls::{AddressPermit, PerAddressLimit};

/// How long to wait before accepting again after `accept` failed (usually
/// out of file descriptors), instead of spinning.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Bounds on one listener's connections.
#[derive(Debug, Clone, Copy)]
pub(super) struct ConnectionLimits {
    /// Connections open at once from one client address (IPv6: one /64).
    pub(super) max_per_address: usize,
    /// How long a connection may stay open with no call in progress.
    pub(super) idle_timeout: Duration,
}

/// Accepts connections on `listener` within `limits`, registering each in
/// `table`, and yields them with their peer address.
pub(super) fn accept(
    listener: TcpListener,
    limits: ConnectionLimits,
    table: ConnectionTable,
) -> impl Stream<Item = (TrackedConnection, SocketAddr)> + Send + 'static {
    let per_address = PerAddressLimit::new(limits.max_per_address);
    futures::stream::unfold(
        (listener, per_address, table),
        move |(listener, per_address, table)| async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "accepting a connection failed");
                        tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                        continue;
                    }
                };
                let Some(permit) = per_address.try_acquire(peer.ip()) else {
                    tracing::debug!(%peer, "too many connections from one address; connection closed");
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let connection =
                    TrackedConnection::new(stream, permit, &table, limits.idle_timeout);
                return Some(((connection, peer), (listener, per_address, table)));
            }
        },
    )
}

// === impl ConnectionTable ===

/// The open connections of one listener, by their local and peer
/// addresses. Cloning is shallow.
#[derive(Debug, Clone, Default)]
pub(super) struct ConnectionTable {
    connections: Arc<Mutex<ConnectionMap>>,
}

/// The open connections' activity. Looked up on every call, so hashed with
/// foldhash (seeded per process) rather than SipHash: a key is a pair of
/// addresses of an accepted connection, which a client picks only in part.
type ConnectionMap = HashMap<ConnectionKey, Arc<Activity>, foldhash::fast::RandomState>;

/// A TCP connection's addresses: unique among the open connections.
type ConnectionKey = (Option<SocketAddr>, Option<SocketAddr>);

impl ConnectionTable {
    fn insert(&self, key: ConnectionKey, activity: Arc<Activity>) {
        self.lock().insert(key, activity);
    }

    fn remove(&self, key: &ConnectionKey) {
        self.lock().remove(key);
    }

    /// The activity of the connection a request arrived on, if it is known.
    fn find(&self, extensions: &http::Extensions) -> Option<Arc<Activity>> {
        let info = extensions.get::<TcpConnectInfo>().or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .map(TlsConnectInfo::get_ref)
        })?;
        self.lock()
            .get(&(info.local_addr(), info.remote_addr()))
            .cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ConnectionMap> {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

// === impl Activity ===

/// What the idle timeout needs to know of a connection: its calls in
/// progress and when the last one ended.
#[derive(Debug)]
struct Activity {
    calls: AtomicUsize,
    idle_since: Mutex<Instant>,
}

impl Activity {
    fn new() -> Self {
        Self {
            calls: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        }
    }

    /// Counts a call until the returned guard is dropped.
    fn begin_call(self: &Arc<Self>) -> CallInProgress {
        self.calls.fetch_add(1, Ordering::SeqCst);
        CallInProgress {
            activity: Arc::clone(self),
        }
    }

    /// When the connection will have been idle for `timeout`; `None` while a
    /// call is in progress.
    fn idle_deadline(&self, timeout: Duration) -> Option<Instant> {
        if self.calls.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let idle_since = *self
            .idle_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Some(idle_since + timeout)
    }
}

/// One call in progress on a connection; its end restarts the idle clock.
#[derive(Debug)]
struct CallInProgress {
    activity: Arc<Activity>,
}

impl Drop for CallInProgress {
    fn drop(&mut self) {
        // The clock first, so a check between the two lines sees either a
        // call in progress or a fresh clock, never an old one and no call.
        *self
            .activity
            .idle_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
        self.activity.calls.fetch_sub(1, Ordering::SeqCst);
    }
}

// === impl TrackedConnection ===

/// An accepted TCP connection holding its address's place, closed by the
/// idle timeout.
#[derive(Debug)]
pub(super) struct TrackedConnection {
    stream: TcpStream,
    activity: Arc<Activity>,
    idle_timeout: Duration,
    idle_check: Pin<Box<Sleep>>,
    /// Set once the idle timeout closed the connection: reads end from then on.
    closed: bool,
    key: ConnectionKey,
    table: ConnectionTable,
    /// Held for as long as the connection is open.
    _address: AddressPermit,
}

impl TrackedConnection {
    fn new(
        stream: TcpStream,
        address: AddressPermit,
        table: &ConnectionTable,
        idle_timeout: Duration,
    ) -> Self {
        let key = (stream.local_addr().ok(), stream.peer_addr().ok());
        let activity = Arc::new(Activity::new());
        table.insert(key, Arc::clone(&activity));
        Self {
            stream,
            activity,
            idle_timeout,
            idle_check: Box::pin(tokio::time::sleep(idle_timeout)),
            closed: false,
            key,
            table: table.clone(),
            _address: address,
        }
    }

    /// Whether the idle timeout has passed; if not, arms the timer for the
    /// next check (registering the waker with `cx`).
    fn idle_timed_out(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.idle_check.as_mut().poll(cx).is_pending() {
                return false;
            }
            let now = Instant::now();
            let next_check = match self.activity.idle_deadline(self.idle_timeout) {
                Some(deadline) if deadline <= now => return true,
                Some(deadline) => deadline,
                // A call in progress: look again a whole timeout later (its
                // end restarts the clock anyway).
                None => now + self.idle_timeout,
            };
            self.idle_check.as_mut().reset(next_check);
        }
    }
}

impl Drop for TrackedConnection {
    fn drop(&mut self) {
        self.table.remove(&self.key);
    }
}

impl AsyncRead for TrackedConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.closed {
            return Poll::Ready(Ok(()));
        }
        // Whatever has arrived is read first: a call that is arriving is
        // never cut by the idle timeout.
        if let ready @ Poll::Ready(_) = Pin::new(&mut self.stream).poll_read(cx, buf) {
            return ready;
        }
        if self.idle_timed_out(cx) {
            tracing::debug!(peer = ?self.key.1, "idle connection closed");
            self.closed = true;
            // An empty read: the end of the stream, which closes the connection.
            return Poll::Ready(Ok(()));
        }
        Poll::Pending
    }
}

impl AsyncWrite for TrackedConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The same connection info as a bare `TcpStream`, so tonic's
/// `remote_addr()` and (under TLS) `peer_certs()` keep working.
impl Connected for TrackedConnection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

// === impl ConnectionActivityLayer ===

/// Tells the idle timeout which connections have calls in progress: a call
/// counts from its arrival until its response body is done.
#[derive(Debug, Clone)]
pub(super) struct ConnectionActivityLayer {
    table: ConnectionTable,
}

impl ConnectionActivityLayer {
    pub(super) fn new(table: ConnectionTable) -> Self {
        Self { table }
    }
}

impl<S> tower::Layer<S> for ConnectionActivityLayer {
    type Service = ConnectionActivity<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConnectionActivity {
            inner,
            table: self.table.clone(),
        }
    }
}

/// The service built by [`ConnectionActivityLayer`].
#[derive(Debug, Clone)]
pub(super) struct ConnectionActivity<S> {
    inner: S,
    table: ConnectionTable,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for ConnectionActivity<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = ActivityFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let call = self
            .table
            .find(request.extensions())
            .map(|activity| activity.begin_call());
        ActivityFuture {
            response: self.inner.call(request),
            call,
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of a counted call: it hands the count to the answer's body.
    pub(super) struct ActivityFuture<F> {
        #[pin]
        response: F,
        call: Option<CallInProgress>,
    }
}

impl<F, ResBody, E> Future for ActivityFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Output = Result<http::Response<tonic::body::Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.response.poll(cx))?;
        // The body owns the call's guard (in its frame mapper, which changes
        // nothing), so the call counts until the body is done; an error
        // answer ends the count here.
        let call = this.call.take();
        Poll::Ready(Ok(response.map(|body| {
            tonic::body::Body::new(body.map_frame(move |frame| {
                let _counted = &call;
                frame
            }))
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_without_calls_and_from_the_end_of_the_last() {
        let timeout = Duration::from_secs(10);
        let activity = Arc::new(Activity::new());
        let opened = Instant::now();
        assert_eq!(activity.idle_deadline(timeout), Some(opened + timeout));

        tokio::time::advance(Duration::from_secs(3)).await;
        let call = activity.begin_call();
        assert_eq!(activity.idle_deadline(timeout), None);

        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(
            activity.idle_deadline(timeout),
            None,
            "a long call is not idleness"
        );
        drop(call);
        assert_eq!(
            activity.idle_deadline(timeout),
            Some(opened + Duration::from_secs(33) + timeout)
        );
    }
}

//! Load shedding: a bound on calls in progress per listener.
//!
//! A call that finds every slot taken is answered at once with UNAVAILABLE
//! (reason `OVERLOADED`, with a short `RetryInfo`) instead of queueing, so an
//! overload shows up as fast, retryable errors rather than growing latency
//! and memory. tower's `LoadShed` would do the shedding, but its error
//! becomes a generic status without our `ErrorInfo`; this layer answers in
//! the same shape as every other error.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tokio::sync::Semaphore;

/// Limits calls in progress to `max` and sheds the rest.
#[derive(Debug, Clone)]
pub(super) struct OverloadLayer {
    slots: Arc<Semaphore>,
}

impl OverloadLayer {
    /// Allows `max` calls in progress at once.
    pub(super) fn new(max: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max)),
        }
    }
}

impl<S> tower::Layer<S> for OverloadLayer {
    type Service = Overload<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Overload {
            inner,
            slots: Arc::clone(&self.slots),
        }
    }
}

/// The service built by [`OverloadLayer`].
#[derive(Debug, Clone)]
pub(super) struct Overload<S> {
    inner: S,
    slots: Arc<Semaphore>,
}

impl<S, ReqBody> tower::Service<http::Request<ReqBody>> for Overload<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        // CORS preflights cost nothing and must not be shed.
        if request.method() == http::Method::OPTIONS {
            return Box::pin(self.inner.call(request));
        }
        let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() else {
            tracing::warn!(path = %request.uri().path(), "overloaded: call shed");
            let status = super::status::overloaded();
            return Box::pin(async move { Ok(status.into_http()) });
        };
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await;
            drop(permit);
            response
        })
    }
}

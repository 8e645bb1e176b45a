//! Load shedding: a bound on calls in progress per listener, taken only once
//! a call's request message has arrived.
//!
//! A call that finds every slot taken is answered at once with UNAVAILABLE
//! (reason `OVERLOADED`, with a short `RetryInfo`) instead of queueing, so an
//! overload shows up as fast, retryable errors rather than growing latency
//! and memory. tower's `LoadShed` would do the shedding, but its error
//! becomes a generic status without our `ErrorInfo`; this layer answers in
//! the same shape as every other error.
//!
//! Only the listener's API services are shed (their calls are unary and cost
//! upstream work); health checks must answer whatever the load, or
//! Kubernetes restarts a busy pod, and reflection costs nothing.
//!
//! The slot is taken when the request body is complete, not when the
//! headers arrive: otherwise a client that sends headers and never finishes
//! the body holds a slot forever, and a few connections full of such streams
//! starve everyone. The body must arrive within `body_timeout` and be no
//! larger than `max_body_bytes`, or the call is refused
//! (`REQUEST_BODY_TIMEOUT`, `REQUEST_TOO_LARGE`) without ever holding a slot.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use http_body_util::BodyExt as _;
use tokio::sync::Semaphore;
use tonic::Status;

use super::status::Refusal;

/// gRPC's length prefix before each message: a flag byte and four of length.
const GRPC_FRAME_HEADER_BYTES: usize = 5;

/// Limits the calls in progress of the listed services to `max`, sheds the
/// rest, and reads each call's body before it may take a slot.
#[derive(Debug, Clone)]
pub(super) struct OverloadLayer {
    slots: Arc<Semaphore>,
    policy: Arc<Policy>,
}

#[derive(Debug)]
struct Policy {
    /// `/package.Service/` of each service whose calls are shed.
    shed_paths: Vec<String>,
    body_timeout: Duration,
    max_body_bytes: usize,
}

impl OverloadLayer {
    /// Allows `max` calls of `services` in progress at once; each call's
    /// request message (at most `max_message_bytes`) must arrive within
    /// `body_timeout`.
    pub(super) fn new(
        max: usize,
        services: &[&str],
        body_timeout: Duration,
        max_message_bytes: usize,
    ) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max)),
            policy: Arc::new(Policy {
                shed_paths: services
                    .iter()
                    .map(|service| format!("/{service}/"))
                    .collect(),
                body_timeout,
                max_body_bytes: max_message_bytes.saturating_add(GRPC_FRAME_HEADER_BYTES),
            }),
        }
    }
}

impl<S> tower::Layer<S> for OverloadLayer {
    type Service = Overload<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Overload {
            inner,
            slots: Arc::clone(&self.slots),
            policy: Arc::clone(&self.policy),
        }
    }
}

/// The service built by [`OverloadLayer`].
#[derive(Debug, Clone)]
pub(super) struct Overload<S> {
    inner: S,
    slots: Arc<Semaphore>,
    policy: Arc<Policy>,
}

type Request = http::Request<tonic::body::Body>;
type Response = http::Response<tonic::body::Body>;

impl<S> tower::Service<Request> for Overload<S>
where
    S: tower::Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // Whatever the method: tonic routes by path alone, so a GET or a PUT
        // to an API path is a call like any other. (CORS preflights never
        // get here: the CORS layer answers them.)
        let path = request.uri().path();
        let shed = self
            .policy
            .shed_paths
            .iter()
            .any(|prefix| path.starts_with(prefix.as_str()));
        if !shed {
            return Box::pin(self.inner.call(request));
        }
        // The clone that was made ready serves this call (tower's usual
        // swap, since the call happens after an await).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let slots = Arc::clone(&self.slots);
        let policy = Arc::clone(&self.policy);
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let body = match read_body(body, &policy).await {
                Ok(body) => body,
                Err(status) => return Ok(status.into_http()),
            };
            let Ok(permit) = slots.try_acquire_owned() else {
                return Ok(Status::from(Refusal::Overloaded).into_http());
            };
            let response = inner.call(http::Request::from_parts(parts, body)).await;
            drop(permit);
            response
        })
    }
}

/// Reads the whole request body within the policy's time and size, and
/// returns it as a body to decode from memory.
async fn read_body(
    mut body: tonic::body::Body,
    policy: &Policy,
) -> Result<tonic::body::Body, Status> {
    let read_all = async {
        let mut frames = Vec::new();
        let mut bytes = 0_usize;
        while let Some(frame) = body.frame().await {
            // A body error is already a status: the client's reset, or a
            // gRPC-Web decoding failure (answered as malformed further out).
            let frame = frame?;
            if let Some(data) = frame.data_ref() {
                bytes = bytes.saturating_add(data.len());
                if bytes > policy.max_body_bytes {
                    return Err(Status::from(Refusal::RequestTooLarge));
                }
            }
            frames.push(Ok::<_, Status>(frame));
        }
        Ok(frames)
    };
    let frames = tokio::time::timeout(policy.body_timeout, read_all)
        .await
        .map_err(|_| Status::from(Refusal::RequestBodyTimeout))??;
    Ok(tonic::body::Body::new(http_body_util::StreamBody::new(
        futures::stream::iter(frames),
    )))
}

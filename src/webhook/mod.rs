//! Cryptlex's webhooks, turned into cache invalidations.
//!
//! Cryptlex POSTs `{event, data, triggeredAt}` to the registered URL, signed
//! in `Webhook-Signature`. A delivery that verifies and is new becomes a
//! [`Change`](crate::licensing::changes::Change), applied with
//! `Licensing::apply_change(.., Origin::Here)`, which also relays it to the
//! other replicas. The answer is a plain HTTP status, chosen for Cryptlex's
//! retry rule (4xx: failed for good; 5xx: retried):
//!
//! | answer | when |
//! |---|---|
//! | 200 | applied; or a replay, an event the caches do not hold, or a delivery triggered before the replay window (acknowledged, nothing to do) |
//! | 400 | signed, but not a payload Cryptlex sends (logged at WARN with the event name only) |
//! | 401 | `Webhook-Signature` missing or wrong |
//! | 404 | no secret configured: the endpoint is off |
//! | 405 | not a POST |
//! | 413 | the body is larger than `webhook.max_body_bytes` |
//! | 503 | too many deliveries in progress, or the body did not arrive within the body timeout (`limits.request_body_timeout`): both may succeed later, so Cryptlex should retry |
//!
//! Every delivery is bounded: a small number in progress at once (taken
//! before the body is read, so memory stays at that many bodies), the body
//! size, and the time the body may take. A bad signature costs one HMAC over
//! the bounded body and nothing else. Bodies are never logged: they hold
//! emails and license keys.
//!
//! This module knows HTTP (the `http` types) but not tonic; `grpc::server`
//! routes the path here ahead of the gRPC layers.
//!
//! - `signature`: the HMAC check.
//! - `replay`: the window of deliveries already applied.
//! - `events`: payload parsing and the mapping of events to changes.

mod events;
mod replay;
mod signature;

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode, header};
use http_body::Body;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Bytes;
use secrecy::SecretString;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::licensing::Licensing;
use crate::licensing::changes::Origin;
use crate::metrics;
use replay::{ReplayWindow, Seen};

/// Deliveries handled at once. Cryptlex sends one event at a time per
/// webhook; a handful in parallel covers bursts, and the bound keeps what a
/// flood of junk can hold to this many bodies.
const MAX_CONCURRENT_DELIVERIES: usize = 16;

/// How far in the future `triggeredAt` may be (clock skew between Cryptlex
/// and us) before the delivery is ignored as implausible.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// How to serve the webhook endpoint.
#[derive(Clone)]
pub struct WebhookOptions {
    /// The path on the public listener, e.g. `/webhooks/cryptlex`.
    pub path: String,
    /// The webhook's secret; `None` turns the endpoint off (404).
    pub secret: Option<SecretString>,
    /// How long an applied delivery is remembered, and how old one may be.
    pub replay_window: Duration,
    pub max_body_bytes: usize,
    /// How long the body may take to arrive.
    pub body_timeout: Duration,
}

impl std::fmt::Debug for WebhookOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookOptions")
            .field("path", &self.path)
            .field("enabled", &self.secret.is_some())
            .field("replay_window", &self.replay_window)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("body_timeout", &self.body_timeout)
            .finish()
    }
}

/// The webhook endpoint: cheap to clone, shared by every connection.
#[derive(Clone, Debug)]
pub struct Webhook {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    licensing: Licensing,
    options: WebhookOptions,
    replays: ReplayWindow,
    slots: Semaphore,
}

/// What became of one delivery: the metric's `outcome` label and the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Applied,
    Replayed,
    UnknownEvent,
    TooOld,
    BadSignature,
    Malformed,
    TooLarge,
    BodyTimeout,
    Overloaded,
    WrongMethod,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Replayed => "replayed",
            Self::UnknownEvent => "unknown_event",
            Self::TooOld => "too_old",
            Self::BadSignature => "bad_signature",
            Self::Malformed => "malformed",
            Self::TooLarge => "too_large",
            Self::BodyTimeout => "body_timeout",
            Self::Overloaded => "overloaded",
            Self::WrongMethod => "wrong_method",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Self::Applied | Self::Replayed | Self::UnknownEvent | Self::TooOld => StatusCode::OK,
            Self::BadSignature => StatusCode::UNAUTHORIZED,
            Self::Malformed => StatusCode::BAD_REQUEST,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            // Not 408: Cryptlex gives up on any 4xx, and a slow network
            // may well deliver the same body in time on the next attempt.
            Self::BodyTimeout | Self::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Self::WrongMethod => StatusCode::METHOD_NOT_ALLOWED,
        }
    }
}

/// The answer's body type.
pub type ResponseBody = Full<Bytes>;

impl Webhook {
    /// Serves deliveries into `licensing`'s caches.
    pub fn new(licensing: Licensing, options: WebhookOptions) -> Self {
        let replays = ReplayWindow::new(options.replay_window, replay::DEFAULT_CAPACITY);
        Self {
            inner: Arc::new(Inner {
                licensing,
                options,
                replays,
                slots: Semaphore::new(MAX_CONCURRENT_DELIVERIES),
            }),
        }
    }

    /// The path this endpoint answers on.
    pub fn path(&self) -> &str {
        &self.inner.options.path
    }

    /// Answers one request to the webhook path.
    pub async fn handle<B>(&self, request: http::Request<B>) -> http::Response<ResponseBody>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let inner = &self.inner;
        let Some(secret) = &inner.options.secret else {
            return answer(StatusCode::NOT_FOUND);
        };
        let outcome = inner.deliver(secret, request).await;
        metrics::record_webhook(outcome.label());
        let mut response = answer(outcome.status());
        match outcome {
            Outcome::WrongMethod => {
                response
                    .headers_mut()
                    .insert(header::ALLOW, http::HeaderValue::from_static("POST"));
            }
            Outcome::Overloaded | Outcome::BodyTimeout => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, http::HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

impl Inner {
    async fn deliver<B>(&self, secret: &SecretString, request: http::Request<B>) -> Outcome
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if request.method() != Method::POST {
            return Outcome::WrongMethod;
        }
        // Before the body is read, so a flood holds at most this many.
        let Ok(_slot) = self.slots.try_acquire() else {
            return Outcome::Overloaded;
        };
        let (parts, body) = request.into_parts();
        if declared_length(&parts.headers)
            .is_some_and(|length| length > self.options.max_body_bytes)
        {
            return Outcome::TooLarge;
        }
        let body =
            match read_body(body, self.options.max_body_bytes, self.options.body_timeout).await {
                Ok(body) => body,
                Err(outcome) => return outcome,
            };
        let signature = parts
            .headers
            .get(signature::SIGNATURE_HEADER)
            .map(http::HeaderValue::as_bytes);
        if let Err(reason) = signature::verify(secret, &body, signature) {
            tracing::debug!(?reason, "webhook delivery refused: bad signature");
            return Outcome::BadSignature;
        }
        self.apply(&body)
    }

    /// Applies a signed body, unless it is malformed, too old, a replay or
    /// of an event the caches do not hold.
    fn apply(&self, body: &[u8]) -> Outcome {
        let delivery = match events::parse(body) {
            Ok(delivery) => delivery,
            Err(reason) => {
                tracing::warn!(%reason, "signed webhook delivery is malformed");
                return Outcome::Malformed;
            }
        };
        let event = delivery.event.as_str();
        let age = chrono::Utc::now().signed_duration_since(delivery.triggered_at);
        let too_old = age
            .to_std()
            .is_ok_and(|age| age > self.options.replay_window);
        let in_future = (-age).to_std().is_ok_and(|ahead| ahead > MAX_CLOCK_SKEW);
        if too_old || in_future {
            tracing::info!(
                event,
                age_seconds = age.num_seconds(),
                "webhook delivery ignored: triggered outside the replay window"
            );
            return Outcome::TooOld;
        }
        let change = match delivery.change() {
            Ok(Some(change)) => change,
            Ok(None) => {
                tracing::debug!(event, "webhook event ignored: nothing cached depends on it");
                return Outcome::UnknownEvent;
            }
            Err(reason) => {
                tracing::warn!(event, %reason, "signed webhook delivery is malformed");
                return Outcome::Malformed;
            }
        };
        let key = replay::delivery_key(event, &delivery.triggered_at_text, body);
        if self.replays.check_and_record(key, Instant::now()) == Seen::Again {
            tracing::info!(event, "webhook delivery already applied; acknowledged");
            return Outcome::Replayed;
        }
        tracing::info!(event, ?change, "webhook delivery applied");
        self.licensing.apply_change(&change, Origin::Here);
        Outcome::Applied
    }
}

/// Reads the whole body, at most `max_bytes`, within `timeout`.
async fn read_body<B>(body: B, max_bytes: usize, timeout: Duration) -> Result<Bytes, Outcome>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limited = Limited::new(body, max_bytes);
    match tokio::time::timeout(timeout, limited.collect()).await {
        Err(_) => Err(Outcome::BodyTimeout),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => Err(Outcome::TooLarge),
        // The client reset the stream or broke the framing.
        Ok(Err(_)) => Err(Outcome::Malformed),
    }
}

/// The `Content-Length` the client declared, if any and readable.
fn declared_length(headers: &http::HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// A plain-text answer with `status` and its reason phrase (static: an
/// answer allocates nothing but its headers).
fn answer(status: StatusCode) -> http::Response<ResponseBody> {
    let text = status.canonical_reason().unwrap_or("");
    let mut response = http::Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body::Frame;
    use http_body_util::StreamBody;

    use super::*;

    type Frames = futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>;

    fn chunks(sizes: &[usize]) -> StreamBody<Frames> {
        let frames: Vec<_> = sizes
            .iter()
            .map(|size| Ok(Frame::data(Bytes::from(vec![b'x'; *size]))))
            .collect();
        StreamBody::new(futures::stream::iter(frames))
    }

    #[tokio::test]
    async fn a_body_within_the_limit_is_read_whole() {
        let body = read_body(chunks(&[100, 100, 56]), 256, Duration::from_secs(1)).await;
        assert_eq!(body.map(|body| body.len()), Ok(256));
    }

    #[tokio::test]
    async fn a_streamed_body_past_the_limit_is_too_large_without_a_declared_length() {
        let body = read_body(chunks(&[200, 200]), 256, Duration::from_secs(1)).await;
        assert_eq!(body, Err(Outcome::TooLarge));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_never_ends_times_out() {
        let never = StreamBody::new(futures::stream::pending::<Result<Frame<Bytes>, Infallible>>());
        let body = read_body(never, 256, Duration::from_secs(5)).await;
        assert_eq!(body, Err(Outcome::BodyTimeout));
    }

    #[test]
    fn cryptlex_retries_only_what_may_succeed_later() {
        // 2xx: done; 4xx: Cryptlex gives up, right for what a retry cannot
        // fix; 5xx: retried, right for a shed delivery.
        for (outcome, status) in [
            (Outcome::Applied, 200),
            (Outcome::Replayed, 200),
            (Outcome::UnknownEvent, 200),
            (Outcome::TooOld, 200),
            (Outcome::BadSignature, 401),
            (Outcome::Malformed, 400),
            (Outcome::TooLarge, 413),
            (Outcome::BodyTimeout, 503),
            (Outcome::WrongMethod, 405),
            (Outcome::Overloaded, 503),
        ] {
            assert_eq!(outcome.status().as_u16(), status, "{outcome:?}");
        }
    }
}

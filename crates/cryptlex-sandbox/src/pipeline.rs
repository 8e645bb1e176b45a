//! The per-request front door every `/v3` request passes: identify the caller, record the
//! request, apply the rate limit, apply any fault, run the handler, stamp the rate-limit headers.
//!
//! The order mirrors Cryptlex's stack: its IP rate limiter sits in front of everything, so a
//! refused request never reaches a fault rule or a handler. Control endpoints (`/__sandbox/`)
//! skip all of it, so tests can inspect the sandbox without disturbing what they measure.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use http::header::{CONTENT_LENGTH, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::{BodyExt as _, Limited};

use crate::faults::{CannedResponse, PlannedFault};
use crate::journal::{AuthKind, ReceivedRequest};
use crate::rate_limit::{Quota, Verdict};
use crate::server::{ConnectionHandle, PeerAddr};
use crate::shared::{CONTROL_PREFIX, Shared, lock};
use crate::tokens::Grant;
use crate::wire::{ApiError, timestamp};

/// The largest request body read: axum's default body limit, which the handlers' extractors
/// would apply anyway.
const MAX_REQUEST_BODY_BYTES: usize = 2 * 1024 * 1024;

/// Who sent a request, as the handlers see it; inserted by [`front_door`].
#[derive(Clone, Debug)]
pub(crate) enum Caller {
    Anonymous,
    /// A token was sent but is unknown, expired, revoked or not a bearer token at all.
    Rejected,
    User {
        user_id: String,
        token: String,
    },
    Pat {
        owner_id: String,
        scopes: Vec<String>,
        token: String,
    },
}

impl Caller {
    /// Returns the caller for `/v3/me*` and logout, which any valid token may use.
    pub(crate) fn any_token(&self) -> Result<(&str, &str), ApiError> {
        match self {
            Caller::Anonymous | Caller::Rejected => Err(ApiError::unauthorized()),
            Caller::User { user_id, token } => Ok((user_id, token)),
            Caller::Pat {
                owner_id, token, ..
            } => Ok((owner_id, token)),
        }
    }

    /// Admits only a personal access token holding `scope`. A user token gets 403, not 401:
    /// it is valid, it just can never do admin work (confirmed on Cryptlex's forum).
    pub(crate) fn require_scope(&self, scope: &str) -> Result<(), ApiError> {
        match self {
            Caller::Anonymous | Caller::Rejected => Err(ApiError::unauthorized()),
            Caller::User { .. } => Err(ApiError::forbidden()),
            Caller::Pat { scopes, .. } if scopes.iter().any(|held| held == scope) => Ok(()),
            Caller::Pat { .. } => Err(ApiError::forbidden()),
        }
    }
}

/// The middleware wrapped around the whole router.
pub(crate) async fn front_door(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    if request.uri().path().starts_with(CONTROL_PREFIX) {
        return next.run(request).await;
    }
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let connection = request.extensions().get::<ConnectionHandle>().cloned();
    let client_ip = request
        .extensions()
        .get::<PeerAddr>()
        .map(|peer| peer.0.ip())
        .unwrap_or(std::net::Ipv6Addr::LOCALHOST.into());

    let bearer = bearer_token(request.headers());
    let (caller, auth) = identify(&shared, bearer.as_deref());
    // The body is read here, once, so the journal can keep it for contract checks; the
    // handler gets the same bytes back.
    let (parts, body) = request.into_parts();
    let body = Limited::new(body, MAX_REQUEST_BODY_BYTES)
        .collect()
        .await
        .map(|collected| collected.to_bytes());
    let mut request = Request::from_parts(
        parts,
        Body::from(body.as_ref().map(Bytes::clone).unwrap_or_default()),
    );
    let sequence = shared.record(ReceivedRequest {
        sequence: 0,
        received_at: Utc::now(),
        method: method.to_string(),
        path: path.clone(),
        query: request.uri().query().map(str::to_owned),
        request_id: request
            .headers()
            .get("x-request-id")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned),
        auth,
        bearer_token: bearer,
        status: None,
        fault: None,
        body: body
            .as_ref()
            .map(|bytes| bytes.to_vec())
            .unwrap_or_default(),
        response_body: Vec::new(),
    });
    request.extensions_mut().insert(caller);
    if body.is_err() {
        // Axum's own extractors answer 413 past the same limit; an aborted upload lands here too.
        let response = ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "The request body is too large.",
        )
        .into_response();
        shared.finish(sequence, Some(response.status()), None, false);
        return recorded(&shared, sequence, response).await;
    }

    let verdict = lock(&shared.limiter).check(client_ip, Instant::now(), Utc::now());
    let quota = match verdict {
        Verdict::Unlimited => None,
        Verdict::Allowed(quota) => Some(quota),
        Verdict::Refused {
            quota,
            retry_after_seconds,
            message,
        } => {
            let mut response =
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, message).into_response();
            stamp_quota(response.headers_mut(), &quota);
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(retry_after_seconds));
            shared.finish(sequence, Some(StatusCode::TOO_MANY_REQUESTS), None, true);
            return recorded(&shared, sequence, response).await;
        }
    };

    let fault = lock(&shared.faults).take(&method, &path);
    let Some((fault_kind, planned)) = fault else {
        let mut response = next.run(request).await;
        if let Some(quota) = &quota {
            stamp_quota(response.headers_mut(), quota);
        }
        shared.finish(sequence, Some(response.status()), None, false);
        return recorded(&shared, sequence, response).await;
    };

    match planned {
        PlannedFault::Delay(delay) => {
            tokio::time::sleep(delay).await;
            let mut response = next.run(request).await;
            if let Some(quota) = &quota {
                stamp_quota(response.headers_mut(), quota);
            }
            shared.finish(sequence, Some(response.status()), Some(fault_kind), false);
            recorded(&shared, sequence, response).await
        }
        PlannedFault::Respond(canned) => {
            shared.finish(sequence, Some(canned.status), Some(fault_kind), false);
            recorded(&shared, sequence, canned_response(canned)).await
        }
        PlannedFault::ResetBeforeResponse => {
            abort(&shared, connection.as_ref());
            shared.finish(sequence, None, Some(fault_kind), false);
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
        PlannedFault::ResetAfterProcessing => {
            let response = next.run(request).await;
            // Drain the body too, so any work a streaming handler does really happens.
            let status = response.status();
            let _ = recorded(&shared, sequence, response).await;
            abort(&shared, connection.as_ref());
            shared.finish(sequence, Some(status), Some(fault_kind), false);
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
        PlannedFault::DelayAfterProcessing(delay) => {
            let response = next.run(request).await;
            // Drain the body first, as for a reset: the work is done before the wait begins.
            let (mut parts, body) = buffered(response).await;
            // Recorded now, so a test waiting on the request log sees the work as done.
            lock(&shared.journal).respond(sequence, &body);
            shared.finish(sequence, Some(parts.status), Some(fault_kind), false);
            tokio::time::sleep(delay).await;
            if let Some(quota) = &quota {
                stamp_quota(&mut parts.headers, quota);
            }
            Response::from_parts(parts, Body::from(body))
        }
        PlannedFault::RespondAfterProcessing(canned) => {
            // The work happens (body drained, as for a reset); the journal then records what
            // was sent, the canned answer, like any `Respond`.
            let _ = buffered(next.run(request).await).await;
            shared.finish(sequence, Some(canned.status), Some(fault_kind), false);
            recorded(&shared, sequence, canned_response(canned)).await
        }
        PlannedFault::TruncateBody => {
            let mut response = next.run(request).await;
            if let Some(quota) = &quota {
                stamp_quota(response.headers_mut(), quota);
            }
            shared.finish(sequence, Some(response.status()), Some(fault_kind), false);
            truncate(recorded(&shared, sequence, response).await).await
        }
    }
}

/// Records the body of `response` for request `sequence` and returns the response unchanged.
/// Every sandbox answer is a small buffered JSON body, so collecting it costs nothing.
async fn recorded(shared: &Shared, sequence: u64, response: Response) -> Response {
    let (parts, body) = buffered(response).await;
    lock(&shared.journal).respond(sequence, &body);
    Response::from_parts(parts, Body::from(body))
}

/// Splits `response` into its head and its whole body.
async fn buffered(response: Response) -> (http::response::Parts, Bytes) {
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .unwrap_or_default();
    (parts, body)
}

fn abort(shared: &Shared, connection: Option<&ConnectionHandle>) {
    match connection {
        Some(connection) => {
            connection.abort();
            lock(&shared.journal).stats.connections_reset += 1;
        }
        // Only a request served outside the sandbox's accept loop lacks the handle.
        None => tracing::warn!("reset fault requested without a connection to reset"),
    }
}

/// Splits `Authorization: Bearer <token>`; a header in any other form is kept whole, so the
/// request is recorded as carrying an invalid token rather than none.
fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(http::header::AUTHORIZATION)?;
    let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
    match text.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
            Some(token.trim().to_owned())
        }
        _ => Some(text),
    }
}

fn identify(shared: &Shared, bearer: Option<&str>) -> (Caller, AuthKind) {
    let Some(token) = bearer else {
        return (Caller::Anonymous, AuthKind::None);
    };
    let grant = lock(&shared.tokens).resolve(token, Utc::now());
    match grant {
        Err(_) => (Caller::Rejected, AuthKind::Invalid),
        Ok(Grant::User { user_id }) => {
            let email = lock(&shared.domain)
                .user(&user_id)
                .map(|user| user.email.clone())
                .unwrap_or_default();
            let auth = AuthKind::User {
                user_id: user_id.clone(),
                email,
            };
            let caller = Caller::User {
                user_id,
                token: token.to_owned(),
            };
            (caller, auth)
        }
        Ok(Grant::Pat { owner_id, scopes }) => {
            let caller = Caller::Pat {
                owner_id,
                scopes,
                token: token.to_owned(),
            };
            (caller, AuthKind::Pat)
        }
    }
}

fn stamp_quota(headers: &mut HeaderMap, quota: &Quota) {
    let values = [
        ("x-rate-limit-limit", quota.limit.clone()),
        ("x-rate-limit-remaining", quota.remaining.to_string()),
        ("x-rate-limit-reset", timestamp(quota.reset)),
    ];
    for (name, value) in values {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
}

fn canned_response(canned: CannedResponse) -> Response {
    let mut response = Response::new(Body::from(canned.body));
    *response.status_mut() = canned.status;
    *response.headers_mut() = canned.headers;
    response
}

/// Sends the response's head with its full `Content-Length` but only half the body, then ends
/// the connection.
async fn truncate(response: Response) -> Response {
    let (mut parts, full) = buffered(response).await;
    let sent = full.slice(..full.len() / 2);
    // At least one byte short, even for an empty body.
    let declared = full.len().max(sent.len() + 1);
    parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(declared));

    let chunks = futures::stream::unfold(TruncatedBody::Data(sent), |step| async move {
        match step {
            TruncatedBody::Data(sent) => {
                Some((Ok(http_body::Frame::data(sent)), TruncatedBody::Fail))
            }
            TruncatedBody::Fail => {
                // Give hyper a moment to flush the partial body before the error makes it
                // drop the connection, or the client might see no body bytes at all.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                let error = std::io::Error::other("body truncated by a sandbox fault");
                Some((Err(error), TruncatedBody::Done))
            }
            TruncatedBody::Done => None,
        }
    });
    Response::from_parts(parts, Body::new(http_body_util::StreamBody::new(chunks)))
}

/// The steps of a truncated body: the partial bytes, then an error that ends the connection.
enum TruncatedBody {
    Data(Bytes),
    Fail,
    Done,
}

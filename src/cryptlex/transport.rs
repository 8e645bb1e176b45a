//! Sending one described request to Cryptlex: the circuit breaker and the
//! rate budget first, then the HTTP exchange within the caller's deadline,
//! then the answer: rate-limit headers observed, the body size capped, and a
//! non-success status turned into a classified [`CryptlexError`]. Retries of
//! safe calls happen here too, as `retry` allows.
//!
//! A 4xx is believed to be Cryptlex's only when it looks like Cryptlex's: a
//! JSON `{"message": ...}` body, or (for a 401) a bearer-token challenge.
//! Anything else came from something in between and is
//! [`Rejection::Unrecognized`], a transient fault rather than a refusal. Of an
//! error body only documented [`ErrorCode`]s are kept for callers; the
//! message is for logs.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode, header};
use serde::Serialize;
use serde::de::DeserializeOwned;
use url::Url;

use super::retry::Retry;
use super::{
    Client, CryptlexError, ErrorCode, Priority, RateLimitStatus, Rejection, observe, wire,
};
use crate::domain::RequestContext;

/// Largest response body accepted. Cryptlex's largest answers here are pages
/// of at most 100 licenses, far below this.
const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// One upstream call's description: what to send, at which budget priority,
/// and whether it may be repeated.
#[derive(Debug)]
pub(super) struct Request<'a> {
    method: Method,
    /// Path segments after `/v3`; each is percent-encoded on its own.
    path: &'a [&'a str],
    query: &'a [(&'a str, &'a str)],
    bearer: Option<&'a str>,
    /// The JSON body, already serialized.
    body: Option<Vec<u8>>,
    priority: Priority,
    retry: Retry,
}

impl<'a> Request<'a> {
    /// A read: safe to retry after transient faults.
    pub(super) fn get(path: &'a [&'a str], priority: Priority) -> Self {
        Self::new(Method::GET, path, priority, Retry::Safe)
    }

    /// A `POST`, retried only as `retry` allows.
    pub(super) fn post(path: &'a [&'a str], priority: Priority, retry: Retry) -> Self {
        Self::new(Method::POST, path, priority, retry)
    }

    /// A `PATCH`, retried only as `retry` allows.
    pub(super) fn patch(path: &'a [&'a str], priority: Priority, retry: Retry) -> Self {
        Self::new(Method::PATCH, path, priority, retry)
    }

    fn new(method: Method, path: &'a [&'a str], priority: Priority, retry: Retry) -> Self {
        Self {
            method,
            path,
            query: &[],
            bearer: None,
            body: None,
            priority,
            retry,
        }
    }

    /// Sends `token` as `Authorization: Bearer`.
    pub(super) fn bearer(mut self, token: &'a str) -> Self {
        self.bearer = Some(token);
        self
    }

    /// Adds query parameters (escaped when the URL is built).
    pub(super) fn query(mut self, query: &'a [(&'a str, &'a str)]) -> Self {
        self.query = query;
        self
    }

    /// Sends `body` as JSON.
    pub(super) fn json(mut self, body: &impl Serialize) -> Self {
        self.body = Some(
            serde_json::to_vec(body)
                .expect("request bodies are structs of strings and lists, which always serialize"),
        );
        self
    }
}

/// A successful answer: status, body bytes, and what Cryptlex said about its
/// rate limit.
pub(super) struct Answer {
    status: u16,
    body: Vec<u8>,
    pub(super) rate_limit: RateLimitStatus,
}

impl Client {
    /// Sends `request` within the rate budget and the circuit breaker,
    /// retrying what is safe to retry, and returns the body of a 2xx answer.
    pub(super) async fn call(
        &self,
        ctx: &RequestContext,
        request: Request<'_>,
    ) -> Result<Answer, CryptlexError> {
        self.retry_budget.deposit();
        let mut retries = 0;
        loop {
            let error = match self.attempt(ctx, &request).await {
                Ok(answer) => return Ok(answer),
                Err(error) => error,
            };
            let Some(delay) = request.retry.delay(&error, retries, self.max_retries) else {
                return Err(error);
            };
            // Retry only if the wait leaves time for the call itself.
            if delay + Duration::from_millis(50) >= ctx.remaining() || !self.retry_budget.withdraw()
            {
                return Err(error);
            }
            retries += 1;
            tracing::debug!(%error, retries, delay_ms = delay.as_millis() as u64, "retrying cryptlex call");
            tokio::time::sleep(delay).await;
        }
    }

    /// One attempt: breaker, budget, then the request itself.
    async fn attempt(
        &self,
        ctx: &RequestContext,
        call: &Request<'_>,
    ) -> Result<Answer, CryptlexError> {
        let endpoint = observe::endpoint(&call.method, call.path);
        // Every call must be a listed operation: the contract test holds the
        // list against the project's OpenAPI subset of Cryptlex's API.
        debug_assert_ne!(
            endpoint, "other",
            "{} {:?} is not in cryptlex::OPERATIONS",
            call.method, call.path
        );
        let started = tokio::time::Instant::now();
        // Calls refused here never reach Cryptlex; they are still counted
        // (as throttled or short-circuited) so operators see them. A probe's
        // admission dropped unsettled (budget refused, caller gone) hands the
        // breaker back.
        // A user's read is shared fairly by session; a background refresh
        // of one (stale-while-revalidate) spends only budget nobody needs.
        let priority = match (call.priority, ctx.read_share) {
            (Priority::Read, Some(share)) if share.background => Priority::Background,
            (priority, _) => priority,
        };
        let share = ctx.read_share.filter(|_| call.priority == Priority::Read);
        let admitted = match self.breaker.admit() {
            Err(retry_after) => Err(CryptlexError::CircuitOpen { retry_after }),
            Ok(admission) => self
                .budget
                .acquire(priority, ctx.deadline, share)
                .await
                .map(|()| admission)
                .map_err(|exhausted| CryptlexError::BudgetExhausted {
                    retry_after: exhausted.retry_after,
                    priority,
                }),
        };
        let mut admission = match admitted {
            Ok(admission) => admission,
            Err(refused) => {
                observe::record(endpoint, &Err(&refused), started.elapsed());
                return Err(refused);
            }
        };
        let started = tokio::time::Instant::now();
        admission.sending();
        let result = self.send_once(ctx, call).await;
        let observed = result.as_ref().map(|answer| answer.status);
        observe::record(endpoint, &observed, started.elapsed());
        match &result {
            Ok(_) => admission.record_success(),
            Err(error) if error.is_upstream_fault() => admission.record_failure(),
            // 4xx answers and our own deadline say nothing about Cryptlex's health.
            Err(_) => admission.record_success(),
        }
        if let Err(CryptlexError::RateLimited { retry_after }) = &result {
            // Whoever else shares our IP spent the budget: everyone waits.
            self.budget
                .pause(retry_after.unwrap_or(Duration::from_secs(1)));
            tracing::warn!(retry_after_ms = ?retry_after.map(|wait| wait.as_millis() as u64), "cryptlex answered 429");
        }
        result
    }

    /// Sends one request and returns the body of a 2xx answer.
    async fn send_once(
        &self,
        ctx: &RequestContext,
        call: &Request<'_>,
    ) -> Result<Answer, CryptlexError> {
        let url = self.url(call.path, call.query);
        let remaining = ctx.remaining();
        if remaining.is_zero() {
            return Err(CryptlexError::DeadlineExceeded { maybe_sent: false });
        }
        // Whichever ends first bounds the request; remember which, so a
        // timeout can be reported as the caller's deadline or as ours.
        let deadline_binds = remaining < self.request_timeout;
        let timeout = remaining.min(self.request_timeout);

        let mut request = self
            .http
            .request(call.method.clone(), url)
            .timeout(timeout)
            .header(header::ACCEPT, "application/json")
            .header("x-request-id", &ctx.request_id);
        let mut trace_context = http::HeaderMap::new();
        crate::telemetry::inject_trace_context(&mut trace_context);
        if !trace_context.is_empty() {
            request = request.headers(trace_context);
        }
        if let Some(token) = call.bearer {
            request = request.bearer_auth(token);
        }
        if let Some(body) = &call.body {
            request = request
                .header(header::CONTENT_TYPE, "application/json")
                .body(body.clone());
        }

        let timed_out = |maybe_sent| {
            if deadline_binds {
                CryptlexError::DeadlineExceeded { maybe_sent }
            } else {
                CryptlexError::Timeout { maybe_sent }
            }
        };
        let mut response = match request.send().await {
            Ok(response) => response,
            // URLs carry emails in query strings: strip them from errors.
            Err(error) if error.is_connect() => {
                return Err(CryptlexError::Connect(error.without_url()));
            }
            Err(error) if error.is_timeout() => return Err(timed_out(true)),
            Err(error) => return Err(CryptlexError::Transport(error.without_url())),
        };

        let status = response.status();
        let headers = response.headers();
        self.budget
            .observe_headers(rate_limit_remaining(headers), rate_limit_reset(headers));
        let rate_limit = RateLimitStatus {
            period: headers
                .get("x-rate-limit-limit")
                .and_then(|value| value.to_str().ok())
                .map(|value| truncate(value.trim(), 32)),
            remaining: rate_limit_remaining(headers),
            resets_in: rate_limit_reset(headers),
        };
        let retry_after = retry_after(headers);
        let error_headers = ErrorHeaders::of(headers);
        if response
            .content_length()
            .is_some_and(|length| length > MAX_BODY_BYTES as u64)
        {
            return Err(CryptlexError::TooLarge {
                limit: MAX_BODY_BYTES,
            });
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_BODY_BYTES {
                        return Err(CryptlexError::TooLarge {
                            limit: MAX_BODY_BYTES,
                        });
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(error) if error.is_timeout() => return Err(timed_out(true)),
                Err(error) => return Err(CryptlexError::Transport(error.without_url())),
            }
        }

        if status.is_success() {
            return Ok(Answer {
                status: status.as_u16(),
                body,
                rate_limit,
            });
        }
        Err(error_for_answer(status, retry_after, error_headers, &body))
    }

    fn url(&self, path: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.base_url.clone();
        {
            // `Url::path_segments_mut` percent-encodes each segment, so an id
            // can never add a path component or a query.
            let mut segments = url.path_segments_mut().expect(
                "configuration accepts only http(s) base URLs with a host, which can always be a base",
            );
            segments.pop_if_empty().push("v3");
            segments.extend(path);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }
}

/// What the headers of a non-success answer say about who wrote it.
#[derive(Debug, Clone, Copy, Default)]
struct ErrorHeaders {
    /// `Content-Type` is JSON (`application/json` or `application/*+json`),
    /// as Cryptlex's error bodies are.
    json: bool,
    /// `WWW-Authenticate: Bearer ...`: the challenge ASP.NET Core's JWT
    /// handler (Cryptlex's stack) sends with a 401, with an empty body unless
    /// the application writes one. Only the API that checks our bearer tokens
    /// challenges for one.
    bearer_challenge: bool,
}

impl ErrorHeaders {
    fn of(headers: &header::HeaderMap) -> Self {
        let value = |name| {
            headers
                .get(name)
                .and_then(|value: &header::HeaderValue| value.to_str().ok())
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        };
        let content_type = value(header::CONTENT_TYPE);
        let media_type = content_type.split(';').next().unwrap_or_default().trim();
        let json = media_type == "application/json"
            || (media_type.starts_with("application/") && media_type.ends_with("+json"));
        let challenge = value(header::WWW_AUTHENTICATE);
        Self {
            json,
            bearer_challenge: challenge == "bearer" || challenge.starts_with("bearer "),
        }
    }
}

/// Maps a non-success answer to an error. A 4xx that does not look like
/// Cryptlex's (see [`ErrorHeaders`] and `wire::ErrorDto`) is
/// [`Rejection::Unrecognized`], whatever its status: an HTML 404 from a proxy
/// must not reject an issuance for good, nor an HTML 401 tell a user to sign
/// in again.
fn error_for_answer(
    status: StatusCode,
    retry_after: Option<Duration>,
    headers: ErrorHeaders,
    body: &[u8],
) -> CryptlexError {
    let refusal = status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS;
    let cryptlex_body = headers.json && error_body(body).is_some();
    let cryptlex_challenge = status == StatusCode::UNAUTHORIZED && headers.bearer_challenge;
    if refusal && !cryptlex_body && !cryptlex_challenge {
        return CryptlexError::Rejected {
            status: status.as_u16(),
            kind: Rejection::Unrecognized,
            code: None,
            message: None,
        };
    }
    error_for(status, retry_after, body)
}

/// Maps a non-success answer known to be Cryptlex's to an error, keeping its
/// message for logs and its code only when it is a documented one.
fn error_for(status: StatusCode, retry_after: Option<Duration>, body: &[u8]) -> CryptlexError {
    let code = status.as_u16();
    if status == StatusCode::TOO_MANY_REQUESTS {
        return CryptlexError::RateLimited { retry_after };
    }
    if status.is_server_error() {
        return CryptlexError::ServerError {
            status: code,
            retry_after,
        };
    }
    if status.is_redirection() {
        return CryptlexError::Redirected { status: code };
    }
    let (message, error_code) = match error_body(body) {
        Some((message, error_code)) => (Some(message), error_code),
        None => (None, None),
    };
    let error_code = error_code.as_deref().and_then(ErrorCode::parse);
    CryptlexError::Rejected {
        status: code,
        kind: Rejection::classify(code, error_code),
        code: error_code,
        message: message.map(|message| truncate(&message, 200)),
    }
}

/// Cryptlex's error body (`HttpErrorResponseDto`): its required `message`
/// and its optional `code`, or `None` when `body` is not one.
fn error_body(body: &[u8]) -> Option<(String, Option<String>)> {
    let error = serde_json::from_slice::<wire::ErrorDto>(body).ok()?;
    Some((error.message?, error.code))
}

pub(super) fn decode<T: DeserializeOwned>(answer: &Answer) -> Result<T, CryptlexError> {
    decode_body(&answer.body)
}

/// Decodes a body as [`decode`] does; the fuzz targets call it with any bytes.
pub(super) fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, CryptlexError> {
    serde_json::from_slice(body).map_err(|error| CryptlexError::Malformed {
        // serde's message names the field and position, never the content.
        detail: error.to_string(),
    })
}

/// Reads `X-Rate-Limit-Remaining`.
fn rate_limit_remaining(headers: &header::HeaderMap) -> Option<u32> {
    headers
        .get("x-rate-limit-remaining")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Reads `X-Rate-Limit-Reset` (a UTC date-time) as time from now.
fn rate_limit_reset(headers: &header::HeaderMap) -> Option<Duration> {
    let value = headers.get("x-rate-limit-reset")?.to_str().ok()?.trim();
    let at = DateTime::parse_from_rfc3339(value)
        .or_else(|_| DateTime::parse_from_rfc2822(value))
        .ok()?;
    (at.with_timezone(&Utc) - Utc::now()).to_std().ok()
}

/// Reads `Retry-After` as seconds or as an HTTP date.
fn retry_after(headers: &header::HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = DateTime::parse_from_rfc2822(value).ok()?;
    let wait = date.with_timezone(&Utc) - Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(max_chars)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cryptlex::{Account, BreakerOptions, BudgetOptions, ClientOptions};

    #[test]
    fn retry_after_is_read_as_seconds_or_as_an_http_date() {
        let mut headers = header::HeaderMap::new();
        headers.insert(header::RETRY_AFTER, "7".parse().expect("header"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));

        let later = Utc::now() + chrono::Duration::seconds(30);
        let date = later.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        headers.insert(header::RETRY_AFTER, date.parse().expect("header"));
        let wait = retry_after(&headers).expect("a date parses");
        assert!(wait > Duration::from_secs(25) && wait <= Duration::from_secs(30));

        headers.insert(header::RETRY_AFTER, "soon".parse().expect("header"));
        assert_eq!(retry_after(&headers), None);
    }

    /// A client with default budget and breaker, pointed at a port nothing
    /// answers on.
    fn unreachable_client() -> Client {
        // Building a client needs a crypto provider (see `main`).
        let _ = rustls::crypto::ring::default_provider().install_default();
        Client::new(ClientOptions {
            base_url: Url::parse("http://127.0.0.1:1/").expect("url"),
            account: Account::Alias("a".to_owned()),
            request_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            budget: BudgetOptions::default(),
            breaker: BreakerOptions::default(),
            max_retries: 0,
        })
        .expect("client builds")
    }

    #[test]
    fn path_segments_and_query_values_are_escaped() {
        let client = unreachable_client();
        let url = client.url(
            &["users", "../admin?x=1"],
            &[("email[eq]", "a+b@c.d&limit=100")],
        );
        assert_eq!(url.path(), "/v3/users/..%2Fadmin%3Fx=1");
        assert_eq!(url.query(), Some("email%5Beq%5D=a%2Bb%40c.d%26limit%3D100"));
    }

    #[tokio::test]
    async fn a_background_read_is_budgeted_as_background_and_refused_at_once() {
        let client = unreachable_client();
        let far = tokio::time::Instant::now() + Duration::from_secs(30);
        // 26 of the reads' 35 slots used: fewer than the 10 a background
        // refresh needs are free, while a user's read still fits.
        for _ in 0..26 {
            client
                .budget
                .acquire(Priority::Read, far, None)
                .await
                .expect("slot");
        }
        let share = crate::domain::ReadShare {
            session: 7,
            vouched: true,
            background: true,
        };
        let ctx = RequestContext::new("r", Duration::from_secs(5)).with_read_share(share);
        let started = tokio::time::Instant::now();
        let refused = client
            .call(&ctx, Request::get(&["me"], Priority::Read))
            .await
            .err();

        assert!(started.elapsed() < Duration::from_millis(50));
        assert!(
            matches!(
                refused,
                Some(CryptlexError::BudgetExhausted {
                    priority: Priority::Background,
                    ..
                })
            ),
            "{refused:?}"
        );
        assert_eq!(client.budget().remaining, 50 - 26, "nothing was spent");
    }

    #[test]
    fn rejections_are_classified_by_status_and_code() {
        let kind = |status, body: &str| match error_for(
            StatusCode::from_u16(status).expect("status"),
            None,
            body.as_bytes(),
        ) {
            CryptlexError::Rejected { kind, .. } => Some(kind),
            _ => None,
        };
        assert_eq!(kind(409, "{}"), Some(Rejection::Conflict));
        assert_eq!(
            kind(400, r#"{"message":"taken","code":"DUPLICATE_FIELD_VALUE"}"#),
            Some(Rejection::Conflict)
        );
        assert_eq!(kind(400, r#"{"message":"bad"}"#), Some(Rejection::Invalid));
        assert_eq!(kind(401, ""), Some(Rejection::Unauthenticated));
        assert_eq!(kind(403, ""), Some(Rejection::Forbidden));
        assert_eq!(kind(404, ""), Some(Rejection::NotFound));
        assert_eq!(kind(418, ""), Some(Rejection::Other));
        assert_eq!(kind(503, ""), None);
    }

    /// Classifies an answer with these headers, as `send_once` does.
    fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> CryptlexError {
        let mut map = header::HeaderMap::new();
        for (name, value) in headers {
            map.insert(
                header::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                value.parse().expect("value"),
            );
        }
        error_for_answer(
            StatusCode::from_u16(status).expect("status"),
            None,
            ErrorHeaders::of(&map),
            body.as_bytes(),
        )
    }

    fn rejection(error: &CryptlexError) -> Option<Rejection> {
        match error {
            CryptlexError::Rejected { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    const JSON: (&str, &str) = ("content-type", "application/json; charset=utf-8");

    #[test]
    fn client_errors_that_are_not_cryptlex_error_bodies_are_unrecognized() {
        let html = ("content-type", "text/html");
        let page = "<html><body><h1>404 Not Found</h1>nginx</body></html>";
        for (status, headers, body) in [
            (404, vec![html], page),
            (400, vec![html], page),
            (409, vec![("content-type", "text/plain")], "Conflict"),
            (422, vec![], ""),
            (404, vec![JSON], ""),
            (404, vec![JSON], "{}"),
            (404, vec![JSON], r#"{"error":"not found"}"#),
            (404, vec![JSON], r#"{"message":404}"#),
            // Cryptlex's shape, but not declared as JSON.
            (404, vec![html], r#"{"message":"User not found!"}"#),
            // A 401 that is neither Cryptlex's body nor a bearer challenge.
            (401, vec![html], "<html>401 Authorization Required</html>"),
            (401, vec![("www-authenticate", "Basic realm=\"proxy\"")], ""),
        ] {
            let error = answer(status, &headers, body);
            assert_eq!(
                rejection(&error),
                Some(Rejection::Unrecognized),
                "{status} {headers:?} {body:?}"
            );
            assert!(error.is_upstream_fault(), "the way to cryptlex is broken");
        }
    }

    #[test]
    fn cryptlex_error_bodies_and_bearer_challenges_are_believed() {
        let forum = r#"{"message":"Invalid access token or required permissions are missing!"}"#;
        assert_eq!(
            rejection(&answer(401, &[JSON], forum)),
            Some(Rejection::Unauthenticated)
        );
        assert_eq!(
            rejection(&answer(
                401,
                &[("www-authenticate", "Bearer error=\"invalid_token\"")],
                ""
            )),
            Some(Rejection::Unauthenticated)
        );
        assert_eq!(
            rejection(&answer(
                404,
                &[("content-type", "application/problem+json")],
                r#"{"message":"License not found!","code":null}"#
            )),
            Some(Rejection::NotFound)
        );
        let taken =
            r#"{"message":"Email address is already taken!","code":"DUPLICATE_FIELD_VALUE"}"#;
        assert_eq!(
            rejection(&answer(400, &[JSON], taken)),
            Some(Rejection::Conflict)
        );
        // Statuses that are transient anyway keep their meaning with any body.
        let html = [("content-type", "text/html")];
        assert!(matches!(
            answer(429, &html, "<html>slow down</html>"),
            CryptlexError::RateLimited { .. }
        ));
        assert!(matches!(
            answer(502, &html, "<html>bad gateway</html>"),
            CryptlexError::ServerError { status: 502, .. }
        ));
    }

    #[test]
    fn only_documented_error_codes_are_kept_and_the_message_is_for_logs() {
        let code_of = |body: &str| match answer(400, &[JSON], body) {
            CryptlexError::Rejected { code, message, .. } => (code, message),
            other => panic!("not a rejection: {other:?}"),
        };
        assert_eq!(
            code_of(r#"{"message":"Product does not exist!","code":"INVALID_PRODUCT_ID"}"#),
            (
                Some(ErrorCode::InvalidProductId),
                Some("Product does not exist!".to_owned())
            )
        );
        let (code, _) = code_of(r#"{"message":"x","code":"<script>alert(1)</script>"}"#);
        assert_eq!(code, None);
        let (code, message) = code_of(r#"{"message":"x","code":"INVALID_USER_ID"}"#);
        assert_eq!((code, message.as_deref()), (None, Some("x")));
    }
}

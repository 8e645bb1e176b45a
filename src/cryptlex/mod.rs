//! The only module that speaks HTTP to Cryptlex.
//!
//! One pooled `reqwest` client per process (keep-alive, HTTP/2 when offered),
//! typed calls for the endpoints the gateway uses, and Cryptlex's JSON kept
//! private in [`wire`]. Every call is bounded by both a per-request timeout and
//! the caller's deadline, forwards the caller's `x-request-id`, escapes path
//! segments and query values, refuses redirects and caps response bodies.
//!
//! It does not decide what an upstream failure means for the caller (that is
//! [`crate::licensing`]'s job), and it never retries: whether a call may be
//! repeated depends on what it does.

mod breaker;
pub mod budget;
mod error;
mod observe;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode, header};
use serde::Serialize;
use serde::de::DeserializeOwned;
use url::Url;

pub use breaker::{BreakerOptions, BreakerState};
pub use budget::{BudgetOptions, BudgetSnapshot, Priority};
pub use error::CryptlexError;

use breaker::Breaker;
use budget::Budget;

use crate::domain::{
    AdminToken, CryptlexId, Email, IssuedLicense, Password, PersonName, RefreshToken,
    RequestContext, Session, UserLicense, UserProfile, UserToken,
};

/// Largest response body accepted. Cryptlex's largest answers here are pages
/// of at most 100 licenses, far below this.
const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// The Cryptlex account users sign in to. Cryptlex's login needs exactly one
/// of these; forgetting it is the `accountId` trap from the forum thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Account {
    /// The account's UUID (`accountId`).
    Id(String),
    /// The account's alias (`accountAlias`).
    Alias(String),
}

/// How to reach Cryptlex.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `https://api.cryptlex.com`, `https://api.eu.cryptlex.com`, or the
    /// sandbox's address.
    pub base_url: Url,
    pub account: Account,
    /// Upper bound for one request, whatever the caller's deadline.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// This replica's share of Cryptlex's rate limit.
    pub budget: BudgetOptions,
    pub breaker: BreakerOptions,
    /// Most retries of one safe call (reads, login) after a transient fault.
    pub max_retries: u32,
}

/// A new end user for `POST /v3/users`.
#[derive(Debug)]
pub struct NewUser<'a> {
    pub email: &'a Email,
    pub password: &'a Password,
    pub first_name: &'a PersonName,
    pub last_name: Option<&'a PersonName>,
}

/// A license to create with `POST /v3/licenses`.
#[derive(Debug)]
pub struct NewLicense<'a> {
    pub product_id: &'a CryptlexId,
    pub user_id: &'a CryptlexId,
    pub license_template_id: Option<&'a CryptlexId>,
    /// Administrator-only metadata entries (caller's plus the gateway's own).
    pub metadata: Vec<(&'a str, &'a str)>,
    /// Metadata keys to leave out of the returned license.
    pub hidden_keys: &'a [&'a str],
}

/// A Cryptlex user found by the administrator's lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRef {
    pub id: CryptlexId,
    pub email: String,
}

/// The Cryptlex API client. Cloning is cheap and shares the connection
/// pool, the rate budget, the circuit breaker and the retry budget.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base_url: Url,
    account: Account,
    request_timeout: Duration,
    max_retries: u32,
    budget: Budget,
    breaker: Arc<Breaker>,
    retry_budget: Arc<RetryBudget>,
}

/// Whether a call may be sent again after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Creates: never. An unknown outcome is reconciled by the ledger.
    Never,
    /// Only when Cryptlex certainly did not act on it: no connection was
    /// made, or it answered 429. For calls with side effects such as token
    /// rotation (refresh) and logout.
    IfNotProcessed,
    /// Reads and login: also after 502/503/504 and broken connections.
    Safe,
}

/// One upstream call's description.
struct Call<'a, B> {
    method: Method,
    path: &'a [&'a str],
    query: &'a [(&'a str, &'a str)],
    bearer: Option<&'a str>,
    body: Option<&'a B>,
    priority: Priority,
    retry: Retry,
}

/// Caps retries at a fraction of calls, so retries cannot multiply load on a
/// struggling Cryptlex (the idea of tower's retry budget, in a few lines):
/// each first attempt deposits a fifth of a token, each retry spends one.
#[derive(Debug)]
struct RetryBudget {
    tokens: std::sync::Mutex<f64>,
}

impl RetryBudget {
    const DEPOSIT: f64 = 0.2;
    const MAX_TOKENS: f64 = 20.0;

    fn new() -> Self {
        // Start with a few tokens so a quiet gateway can still retry.
        Self {
            tokens: std::sync::Mutex::new(5.0),
        }
    }

    fn deposit(&self) {
        let mut tokens = self
            .tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *tokens = (*tokens + Self::DEPOSIT).min(Self::MAX_TOKENS);
    }

    fn withdraw(&self) -> bool {
        let mut tokens = self
            .tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A successful answer: status and body bytes.
struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl Client {
    /// Builds the client and its connection pool.
    ///
    /// Needs a rustls crypto provider installed first (see `main`).
    pub fn new(options: ClientOptions) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            // A redirect from the API is a fault; following it could hand a
            // bearer token to another host.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(options.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(32)
            .tcp_nodelay(true)
            .user_agent(concat!("licensing-gateway/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            base_url: options.base_url,
            account: options.account,
            request_timeout: options.request_timeout,
            max_retries: options.max_retries,
            budget: Budget::new(options.budget),
            breaker: Arc::new(Breaker::new(options.breaker)),
            retry_budget: Arc::new(RetryBudget::new()),
        })
    }

    /// The rate budget's current state.
    pub fn budget(&self) -> BudgetSnapshot {
        self.budget.snapshot()
    }

    /// The circuit breaker's current state.
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// The base URL requests go to.
    pub fn base_url(&self) -> &Url {
        &self.base_url
    }

    // === user calls (no token, or the user's own token) ===

    /// Signs a user in (`POST /v3/accounts/login`) with the configured account.
    pub async fn login(
        &self,
        ctx: &RequestContext,
        email: &Email,
        password: &Password,
    ) -> Result<Session, CryptlexError> {
        let (account_id, account_alias) = match &self.account {
            Account::Id(id) => (Some(id.as_str()), None),
            Account::Alias(alias) => (None, Some(alias.as_str())),
        };
        let body = wire::LoginBody {
            account_id,
            account_alias,
            email: email.as_str(),
            password: password.expose_secret(),
        };
        let answer = self
            .call(
                ctx,
                (Priority::SignIn, Retry::Safe),
                Method::POST,
                &["accounts", "login"],
                &[],
                None,
                Some(&body),
            )
            .await?;
        decode::<wire::AccessTokenDto>(&answer).map(session_from)
    }

    /// Exchanges a refresh token (`POST /v3/accounts/login-refresh-token`).
    pub async fn refresh(
        &self,
        ctx: &RequestContext,
        refresh_token: &RefreshToken,
    ) -> Result<Session, CryptlexError> {
        let body = wire::RefreshBody {
            refresh_token: refresh_token.expose_secret(),
        };
        let answer = self
            .call(
                ctx,
                (Priority::SignIn, Retry::IfNotProcessed),
                Method::POST,
                &["accounts", "login-refresh-token"],
                &[],
                None,
                Some(&body),
            )
            .await?;
        decode::<wire::AccessTokenDto>(&answer).map(session_from)
    }

    /// Revokes the user's access token (`POST /v3/accounts/logout`).
    pub async fn logout(
        &self,
        ctx: &RequestContext,
        token: &UserToken,
    ) -> Result<(), CryptlexError> {
        self.call::<()>(
            ctx,
            (Priority::SignIn, Retry::IfNotProcessed),
            Method::POST,
            &["accounts", "logout"],
            &[],
            Some(token.expose_secret()),
            None,
        )
        .await?;
        Ok(())
    }

    /// Returns the token owner's profile (`GET /v3/me`).
    pub async fn me(
        &self,
        ctx: &RequestContext,
        token: &UserToken,
    ) -> Result<UserProfile, CryptlexError> {
        let answer = self
            .call::<()>(
                ctx,
                (Priority::Read, Retry::Safe),
                Method::GET,
                &["me"],
                &[],
                Some(token.expose_secret()),
                None,
            )
            .await?;
        decode::<wire::ProfileDto>(&answer).map(UserProfile::from)
    }

    /// Returns one page of the token owner's licenses (`GET /v3/me/licenses`).
    pub async fn my_licenses(
        &self,
        ctx: &RequestContext,
        token: &UserToken,
        page: u32,
        limit: u32,
        product_id: Option<&CryptlexId>,
    ) -> Result<Vec<UserLicense>, CryptlexError> {
        let page = page.to_string();
        let limit = limit.to_string();
        let mut query = vec![("page", page.as_str()), ("limit", limit.as_str())];
        if let Some(product_id) = product_id {
            query.push(("productId[eq]", product_id.as_str()));
        }
        let answer = self
            .call::<()>(
                ctx,
                (Priority::Read, Retry::Safe),
                Method::GET,
                &["me", "licenses"],
                &query,
                Some(token.expose_secret()),
                None,
            )
            .await?;
        let licenses: Vec<wire::UserLicenseDto> = decode(&answer)?;
        Ok(licenses.into_iter().map(UserLicense::from).collect())
    }

    // === administrator calls (the PAT) ===

    /// Creates an end user (`POST /v3/users`) with role `user`.
    pub async fn create_user(
        &self,
        ctx: &RequestContext,
        pat: &AdminToken,
        user: &NewUser<'_>,
    ) -> Result<UserRef, CryptlexError> {
        let body = wire::NewUserBody {
            email: user.email.as_str(),
            first_name: user.first_name.as_str(),
            last_name: user.last_name.map(PersonName::as_str),
            password: user.password.expose_secret(),
            // Sign-up never creates anything but an end user.
            role: "user",
        };
        let answer = self
            .call(
                ctx,
                (Priority::SignIn, Retry::Never),
                Method::POST,
                &["users"],
                &[],
                Some(pat.expose_secret()),
                Some(&body),
            )
            .await?;
        decode::<wire::UserDto>(&answer).map(user_ref)
    }

    /// Finds a user by exact email (`GET /v3/users?email[eq]=`).
    pub async fn find_user_by_email(
        &self,
        ctx: &RequestContext,
        pat: &AdminToken,
        email: &Email,
    ) -> Result<Option<UserRef>, CryptlexError> {
        let answer = self
            .call::<()>(
                ctx,
                (Priority::Issuance, Retry::Safe),
                Method::GET,
                &["users"],
                &[("email[eq]", email.as_str()), ("page", "1"), ("limit", "2")],
                Some(pat.expose_secret()),
                None,
            )
            .await?;
        let users: Vec<wire::UserDto> = decode(&answer)?;
        Ok(users
            .into_iter()
            .find(|user| user.email.eq_ignore_ascii_case(email.as_str()))
            .map(user_ref))
    }

    /// Returns the user with `id` (`GET /v3/users/{id}`), or `None` on 404.
    pub async fn get_user(
        &self,
        ctx: &RequestContext,
        pat: &AdminToken,
        id: &CryptlexId,
    ) -> Result<Option<UserRef>, CryptlexError> {
        let result = self
            .call::<()>(
                ctx,
                (Priority::Issuance, Retry::Safe),
                Method::GET,
                &["users", id.as_str()],
                &[],
                Some(pat.expose_secret()),
                None,
            )
            .await;
        match result {
            Ok(answer) => decode::<wire::UserDto>(&answer).map(user_ref).map(Some),
            Err(CryptlexError::Status { status: 404, .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Creates a license (`POST /v3/licenses`).
    ///
    /// Not idempotent upstream: callers must have recorded the attempt first
    /// and must reconcile (never retry) when [`CryptlexError::outcome_unknown`].
    pub async fn create_license(
        &self,
        ctx: &RequestContext,
        pat: &AdminToken,
        license: &NewLicense<'_>,
    ) -> Result<IssuedLicense, CryptlexError> {
        let body = wire::NewLicenseBody {
            product_id: license.product_id.as_str(),
            user_id: license.user_id.as_str(),
            license_template_id: license.license_template_id.map(CryptlexId::as_str),
            metadata: license
                .metadata
                .iter()
                .map(|(key, value)| wire::NewMetadataBody {
                    key,
                    value,
                    view_permissions: Vec::new(),
                })
                .collect(),
        };
        let answer = self
            .call(
                ctx,
                (Priority::Issuance, Retry::Never),
                Method::POST,
                &["licenses"],
                &[],
                Some(pat.expose_secret()),
                Some(&body),
            )
            .await?;
        decode::<wire::LicenseDto>(&answer).map(|dto| dto.into_issued(license.hidden_keys))
    }

    /// Finds licenses carrying metadata `key` = `value`
    /// (`GET /v3/licenses?metadata.key[eq]=&metadata.value[eq]=`), oldest first.
    pub async fn find_licenses_by_metadata(
        &self,
        ctx: &RequestContext,
        pat: &AdminToken,
        key: &str,
        value: &str,
        hidden_keys: &[&str],
    ) -> Result<Vec<IssuedLicense>, CryptlexError> {
        let answer = self
            .call::<()>(
                ctx,
                (Priority::Issuance, Retry::Safe),
                Method::GET,
                &["licenses"],
                &[
                    ("metadata.key[eq]", key),
                    ("metadata.value[eq]", value),
                    ("page", "1"),
                    ("limit", "10"),
                ],
                Some(pat.expose_secret()),
                None,
            )
            .await?;
        let licenses: Vec<wire::LicenseDto> = decode(&answer)?;
        Ok(licenses
            .into_iter()
            .map(|dto| dto.into_issued(hidden_keys))
            .collect())
    }

    // === plumbing ===

    /// Sends a request within the rate budget and the circuit breaker,
    /// retrying what is safe to retry, and returns the body of a 2xx answer.
    #[allow(clippy::too_many_arguments)]
    async fn call<B: Serialize>(
        &self,
        ctx: &RequestContext,
        (priority, retry): (Priority, Retry),
        method: Method,
        path: &[&str],
        query: &[(&str, &str)],
        bearer: Option<&str>,
        body: Option<&B>,
    ) -> Result<Answer, CryptlexError> {
        let call = Call {
            method,
            path,
            query,
            bearer,
            body,
            priority,
            retry,
        };
        self.retry_budget.deposit();
        let mut retries = 0;
        loop {
            let error = match self.attempt(ctx, &call).await {
                Ok(answer) => return Ok(answer),
                Err(error) => error,
            };
            let Some(delay) = self.retry_delay(&call, &error, retries) else {
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

    /// How long to wait before retrying after `error`, or `None` when the
    /// call must not be retried.
    fn retry_delay<B>(
        &self,
        call: &Call<'_, B>,
        error: &CryptlexError,
        retries: u32,
    ) -> Option<Duration> {
        if retries >= self.max_retries {
            return None;
        }
        let retryable = match (call.retry, error) {
            (Retry::Never, _) => false,
            (_, CryptlexError::Connect(_) | CryptlexError::RateLimited { .. }) => true,
            (Retry::Safe, CryptlexError::Transport(_)) => true,
            (Retry::Safe, CryptlexError::ServerError { status, .. }) => {
                matches!(status, 502..=504)
            }
            _ => false,
        };
        if !retryable {
            return None;
        }
        // Exponential backoff with full jitter: 100 ms, 200 ms, 400 ms caps.
        let cap = Duration::from_millis(100u64 << retries.min(4));
        let jittered = cap.mul_f64(rand::random::<f64>().max(0.1));
        Some(match error {
            CryptlexError::RateLimited {
                retry_after: Some(wait),
            } => (*wait).max(jittered),
            _ => jittered,
        })
    }

    /// One attempt: breaker, budget, then the request itself.
    async fn attempt<B: Serialize>(
        &self,
        ctx: &RequestContext,
        call: &Call<'_, B>,
    ) -> Result<Answer, CryptlexError> {
        let endpoint = observe::endpoint(&call.method, call.path);
        let started = tokio::time::Instant::now();
        // Calls refused here never reach Cryptlex; they are still counted
        // (as throttled or short-circuited) so operators see them. A probe's
        // admission dropped unsettled (budget refused, caller gone) hands the
        // breaker back.
        let admitted = match self.breaker.admit() {
            Err(retry_after) => Err(CryptlexError::CircuitOpen { retry_after }),
            Ok(admission) => self
                .budget
                .acquire(call.priority, ctx.deadline)
                .await
                .map(|()| admission)
                .map_err(|exhausted| CryptlexError::BudgetExhausted {
                    retry_after: exhausted.retry_after,
                    priority: call.priority,
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
    async fn send_once<B: Serialize>(
        &self,
        ctx: &RequestContext,
        call: &Call<'_, B>,
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
        if let Some(body) = call.body {
            request = request.json(body);
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
        let retry_after = retry_after(headers);
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
            });
        }
        Err(error_for(status, retry_after, &body))
    }

    fn url(&self, path: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.base_url.clone();
        {
            // `Url::path_segments_mut` percent-encodes each segment, so an id
            // can never add a path component or a query.
            let Ok(mut segments) = url.path_segments_mut() else {
                unreachable!("base_url is validated as an http(s) URL at start-up")
            };
            segments.pop_if_empty().push("v3");
            segments.extend(path);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }
}

/// Maps a non-success answer to an error, keeping Cryptlex's message for logs.
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
    let parsed = serde_json::from_slice::<wire::ErrorDto>(body).ok();
    let (message, error_code) = parsed
        .map(|error| (error.message, error.code))
        .unwrap_or_default();
    CryptlexError::Status {
        status: code,
        code: error_code.map(|code| truncate(&code, 64)),
        message: message.map(|message| truncate(&message, 200)),
    }
}

fn decode<T: DeserializeOwned>(answer: &Answer) -> Result<T, CryptlexError> {
    serde_json::from_slice(&answer.body).map_err(|error| CryptlexError::Malformed {
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

fn user_ref(dto: wire::UserDto) -> UserRef {
    UserRef {
        id: CryptlexId::from_upstream(dto.id),
        email: dto.email,
    }
}

fn session_from(dto: wire::AccessTokenDto) -> Session {
    let expires_at = jwt_expiry(&dto.access_token);
    Session {
        access_token: UserToken::from_upstream(dto.access_token),
        refresh_token: dto.refresh_token.map(RefreshToken::from_upstream),
        expires_at,
    }
}

/// Reads the `exp` claim of a JWT without verifying it. Display only: the
/// gateway never makes an authorization decision on unverified claims.
fn jwt_expiry(token: &str) -> Option<DateTime<Utc>> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_i64()?;
    DateTime::from_timestamp(exp, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn jwt_expiry_reads_exp_and_tolerates_opaque_tokens() {
        let claims =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"exp":1900000000}"#);
        let token = format!("eyJhbGciOiJIUzI1NiJ9.{claims}.sig");
        assert_eq!(
            jwt_expiry(&token).map(|at| at.timestamp()),
            Some(1_900_000_000)
        );
        assert_eq!(jwt_expiry("opaque-token"), None);
        assert_eq!(jwt_expiry("a.%%%.c"), None);
    }

    #[test]
    fn path_segments_and_query_values_are_escaped() {
        // Building a client needs a crypto provider (see `main`).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = Client::new(ClientOptions {
            base_url: Url::parse("http://127.0.0.1:1/").expect("url"),
            account: Account::Alias("a".to_owned()),
            request_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            budget: BudgetOptions::default(),
            breaker: BreakerOptions::default(),
            max_retries: 0,
        })
        .expect("client builds");
        let url = client.url(
            &["users", "../admin?x=1"],
            &[("email[eq]", "a+b@c.d&limit=100")],
        );
        assert_eq!(url.path(), "/v3/users/..%2Fadmin%3Fx=1");
        assert_eq!(url.query(), Some("email%5Beq%5D=a%2Bb%40c.d%26limit%3D100"));
    }
}

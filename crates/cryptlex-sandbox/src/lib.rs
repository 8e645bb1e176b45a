//! A faithful, in-process stand-in for the Cryptlex Web API v3, plus a development PKI.
//!
//! [`SandboxCryptlex::start`] serves real HTTP on a loopback port with the endpoints the gateway
//! needs (login/refresh/logout, `/v3/me*`, `/v3/users*`, `/v3/licenses*`), Cryptlex's JSON
//! shapes and error bodies, its per-IP rate limit, and a seeded account (see [`seed`]). It is
//! for demos and tests: nothing is persisted, and behaviour the public sources leave open is
//! chosen in comments marked "inference".
//!
//! Tests drive it through [`Controls`] (also served as JSON under `/__sandbox/`): read what it
//! received, inspect its state, mint tokens, switch the rate limit, and inject faults (delays,
//! canned responses, connection resets before or after the work, truncated bodies).
//!
//! # Layout
//! - `mod.rs`: the public entry points, options, seed constants and the shared state.
//! - `controls.rs`: the test-control handle and its HTTP form.
//! - `pipeline.rs`: the middleware every API request passes (record, limit, fault).
//! - `routes.rs`: the `/v3` handlers and request validation.
//! - `state.rs`: users, licenses and the seed; `tokens.rs`: tokens.
//! - `wire.rs`: Cryptlex's JSON shapes; `faults.rs`: fault rules; `rate_limit.rs`: the limiter.
//! - `server.rs`: the accept loop with a per-connection reset switch.
//! - `pki.rs`: development certificates for the gateway's TLS listeners.

mod controls;
mod faults;
mod pipeline;
pub mod pki;
mod rate_limit;
mod routes;
mod server;
mod state;
mod tokens;
mod wire;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use http::StatusCode;
use secrecy::SecretString;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use controls::Controls;
pub use faults::{FaultAction, FaultId, FaultKind, FaultRule, InvalidFaultRule};
pub use rate_limit::RateLimit;
pub use state::{LicenseRecord, MetadataRecord, UserRecord};
pub use wire::timestamp;

use faults::FaultTable;
use rate_limit::RateLimiter;
use state::Domain;
use tokens::TokenTable;

/// Paths under this prefix are the test controls: never rate-limited, faulted or recorded.
pub const CONTROL_PREFIX: &str = "/__sandbox/";

/// The fixed data every sandbox starts with. Ids are constants so tests and demo configs can
/// name them; only tokens (and so [`SandboxCryptlex::admin_pat`]) change per start.
pub mod seed {
    /// The account alias login accepts (`accountAlias`).
    pub const ACCOUNT_ALIAS: &str = "sandbox";
    /// The account id login accepts (`accountId`).
    pub const ACCOUNT_ID: &str = "3f1c2b8e-6d4a-4c1e-9b7a-2e5d8f0a1c34";
    pub const PRODUCT_ID: &str = "8a6f4e2d-1b3c-4d5e-8f70-9a1b2c3d4e5f";
    pub const PRODUCT_NAME: &str = "Demo Desktop App";
    /// Accepted by `POST /v3/licenses`; any other non-empty template id is accepted as well.
    pub const LICENSE_TEMPLATE_ID: &str = "c2d4e6f8-0a1b-4c3d-9e5f-7a8b9c0d1e2f";

    pub const DEMO_USER_ID: &str = "5b7e9c1d-3f2a-4b6c-8d0e-1a2b3c4d5e6f";
    pub const DEMO_EMAIL: &str = "demo@example.com";
    pub const DEMO_PASSWORD: &str = "demo-password";
    /// The demo user's two licenses, oldest first.
    pub const DEMO_LICENSE_IDS: [&str; 2] = [
        "9e0b2f4a-6c5d-4e9f-b031-4d5e6f708192",
        "a01c3a5b-7d6e-4fa0-8142-5e6f708192a3",
    ];

    pub const OTHER_USER_ID: &str = "6c8f0d2e-4a3b-4c7d-9e1f-2b3c4d5e6f70";
    pub const OTHER_EMAIL: &str = "other@example.com";
    pub const OTHER_PASSWORD: &str = "other-password";
    pub const OTHER_LICENSE_ID: &str = "b12d4b6c-8e7f-4ab1-9253-6f708192a3b4";

    /// The admin (role `admin`) who owns the seeded PAT. It has no password: it cannot log in.
    pub const ADMIN_USER_ID: &str = "7d9a1e3f-5b4c-4d8e-af20-3c4d5e6f7081";
    pub const ADMIN_EMAIL: &str = "admin@example.com";

    /// The scopes of [`SandboxCryptlex::admin_pat`](super::SandboxCryptlex::admin_pat).
    pub const ALL_SCOPES: &[&str] = &[
        "account:read",
        "account:write",
        "activation:read",
        "license:read",
        "license:write",
        "licenseTemplate:read",
        "licenseTemplate:write",
        "product:read",
        "product:write",
        "user:read",
        "user:write",
        "webhook:read",
        "webhook:write",
        "personalAccessToken:write",
    ];
}

/// How a sandbox behaves.
#[derive(Clone, Debug)]
pub struct SandboxOptions {
    /// `None` switches rate limiting off. Changeable at run time with
    /// [`Controls::set_rate_limit`].
    pub rate_limit: Option<RateLimit>,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    /// The oldest requests are forgotten past this many, so a long demo does not grow forever.
    pub max_recorded_requests: usize,
}

impl Default for SandboxOptions {
    /// Cryptlex's 50-per-5-s limit on, 15-minute access tokens, 30-day refresh tokens.
    fn default() -> Self {
        SandboxOptions {
            rate_limit: Some(RateLimit::cryptlex_default()),
            access_token_ttl: Duration::from_secs(15 * 60),
            refresh_token_ttl: Duration::from_secs(30 * 24 * 60 * 60),
            max_recorded_requests: 10_000,
        }
    }
}

/// A running sandbox. Dropping it (or [`shutdown`](Self::shutdown)) stops the server and
/// closes every open connection.
#[derive(Debug)]
pub struct SandboxCryptlex {
    local_addr: SocketAddr,
    controls: Controls,
    admin_pat: SecretString,
    server: Option<JoinHandle<()>>,
}

impl SandboxCryptlex {
    /// Binds `addr` (port 0 picks a free port) and starts serving.
    pub async fn start(addr: SocketAddr, options: SandboxOptions) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(&options));
        let controls = Controls::new(Arc::clone(&shared));
        let admin_pat = controls.create_pat(seed::ALL_SCOPES);
        let router = routes::router(Arc::clone(&shared));
        let server = tokio::spawn(server::accept_loop(listener, router, shared));
        tracing::info!(%local_addr, "sandbox cryptlex listening");
        Ok(SandboxCryptlex {
            local_addr,
            controls,
            admin_pat,
            server: Some(server),
        })
    }

    /// Returns the address the server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Returns the base URL to configure clients with, e.g. `http://127.0.0.1:41234`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// Returns a handle to inspect and steer the sandbox; cloning it is cheap.
    pub fn controls(&self) -> Controls {
        self.controls.clone()
    }

    /// Returns the seeded admin's personal access token, holding [`seed::ALL_SCOPES`].
    pub fn admin_pat(&self) -> SecretString {
        self.admin_pat.clone()
    }

    /// Stops the server and waits until its port is closed.
    pub async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            // The only possible error is the cancellation just requested.
            let _ = server.await;
        }
    }
}

impl Drop for SandboxCryptlex {
    fn drop(&mut self) {
        if let Some(server) = &self.server {
            server.abort();
        }
    }
}

/// How a recorded request authenticated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum AuthKind {
    /// No `Authorization` header.
    None,
    /// A valid personal access token.
    Pat,
    /// A valid user access token.
    User { user_id: String, email: String },
    /// A header that is not a currently valid token: unknown, expired, revoked or malformed.
    Invalid,
}

/// One request the sandbox received (control requests excluded).
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceivedRequest {
    /// Arrival order, counting from 1 over the sandbox's life (not reset by clearing).
    pub sequence: u64,
    pub received_at: DateTime<Utc>,
    pub method: String,
    pub path: String,
    /// The raw query string, without the `?`.
    pub query: Option<String>,
    /// The `x-request-id` header.
    pub request_id: Option<String>,
    pub auth: AuthKind,
    /// The raw bearer token (or the whole `Authorization` value if it is not `Bearer ...`).
    /// Test infrastructure only: `Debug` redacts it, and it must never be logged.
    pub bearer_token: Option<String>,
    /// The status the sandbox produced; `None` while in flight or when a reset fault struck
    /// before the handler ran. After `ResetAfterProcessing` it is the status the client never saw.
    pub status: Option<u16>,
    /// The fault applied to this request, if any.
    pub fault: Option<FaultKind>,
}

impl std::fmt::Debug for ReceivedRequest {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ReceivedRequest")
            .field("sequence", &self.sequence)
            .field("received_at", &self.received_at)
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("request_id", &self.request_id)
            .field("auth", &self.auth)
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .field("status", &self.status)
            .field("fault", &self.fault)
            .finish()
    }
}

/// Counters over the sandbox's life (control requests excluded).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// TCP connections accepted, control connections included: a client that reuses its
    /// connections keeps this small however many requests it sends.
    pub connections_accepted: u64,
    pub requests: u64,
    /// Every 429 sent, whether by the rate limiter or by a `Respond` fault.
    pub responses_429: u64,
    /// 429s sent by the rate limiter alone.
    pub rate_limited: u64,
    pub faults_applied: u64,
    pub connections_reset: u64,
    pub logins: u64,
    pub licenses_created: u64,
    pub users_created: u64,
}

/// State shared by the server and every [`Controls`] handle.
///
/// Each part has its own std `Mutex` because no critical section awaits and each is short;
/// code never holds two of them at once, so there is no lock order to get wrong.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) domain: Mutex<Domain>,
    pub(crate) tokens: Mutex<TokenTable>,
    pub(crate) journal: Mutex<Journal>,
    pub(crate) faults: Mutex<FaultTable>,
    pub(crate) limiter: Mutex<RateLimiter>,
}

/// The request log and the counters.
#[derive(Debug)]
pub(crate) struct Journal {
    requests: VecDeque<ReceivedRequest>,
    capacity: usize,
    next_sequence: u64,
    pub(crate) stats: Stats,
}

impl Shared {
    fn new(options: &SandboxOptions) -> Self {
        let ttl = |duration: Duration| TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX);
        Shared {
            domain: Mutex::new(Domain::seeded(Utc::now())),
            tokens: Mutex::new(TokenTable::new(
                ttl(options.access_token_ttl),
                ttl(options.refresh_token_ttl),
            )),
            journal: Mutex::new(Journal {
                requests: VecDeque::new(),
                capacity: options.max_recorded_requests.max(1),
                next_sequence: 0,
                stats: Stats::default(),
            }),
            faults: Mutex::new(FaultTable::default()),
            limiter: Mutex::new(RateLimiter::new(options.rate_limit)),
        }
    }

    /// Records an arriving request and returns its sequence number.
    pub(crate) fn record(&self, mut request: ReceivedRequest) -> u64 {
        let mut journal = lock(&self.journal);
        journal.next_sequence += 1;
        request.sequence = journal.next_sequence;
        journal.stats.requests += 1;
        if journal.requests.len() >= journal.capacity {
            journal.requests.pop_front();
        }
        journal.requests.push_back(request);
        journal.next_sequence
    }

    /// Completes a recorded request with its outcome and updates the counters.
    pub(crate) fn finish(
        &self,
        sequence: u64,
        status: Option<StatusCode>,
        fault: Option<FaultKind>,
        rate_limited: bool,
    ) {
        let mut journal = lock(&self.journal);
        // A response lost to a reset was never sent, so it does not count as a 429 sent.
        let delivered = fault != Some(FaultKind::ResetAfterProcessing);
        if delivered && status == Some(StatusCode::TOO_MANY_REQUESTS) {
            journal.stats.responses_429 += 1;
        }
        if rate_limited {
            journal.stats.rate_limited += 1;
        }
        if fault.is_some() {
            journal.stats.faults_applied += 1;
        }
        if let Some(entry) = journal
            .requests
            .iter_mut()
            .rev()
            .find(|entry| entry.sequence == sequence)
        {
            entry.status = status.map(|status| status.as_u16());
            entry.fault = fault;
        }
    }
}

/// Locks a mutex, shrugging off poisoning: every critical section leaves the data consistent
/// at each step, so a panic elsewhere (a failing test thread) must not wedge the sandbox.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

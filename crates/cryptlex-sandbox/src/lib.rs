//! A faithful, in-process stand-in for the Cryptlex Web API v3, plus a development PKI.
//!
//! [`SandboxCryptlex::start`] serves real HTTP on a loopback port with the endpoints the gateway
//! needs (login/refresh/logout, `/v3/me*`, `/v3/users*`, `/v3/licenses*`, and the read-only
//! `/v3/products/{id}` and `/v3/accounts/{id}` that `check-upstream` asks), listed in
//! [`API_OPERATIONS`], with Cryptlex's JSON shapes and error bodies, its per-IP rate limit,
//! per-endpoint PAT scopes, and a seeded account (see [`seed`]). The customer-portal
//! operations (two-factor sign-in and enrolment with real TOTP codes ([`totp`]), profile and
//! password changes, password reset by mail or by token, feature entitlements, machines and
//! their deactivation, releases) are in [`portal`], whose table is the one place that says
//! what the sandbox answers where Cryptlex's document is silent. It is for demos and tests:
//! nothing is persisted, and behaviour the public sources leave open is chosen in comments
//! marked "inference".
//!
//! Tests drive it through [`Controls`] (also served as JSON under `/__sandbox/`): read what it
//! received and answered (bodies included, for contract checks), inspect its state, mint
//! tokens (PATs with chosen scopes), switch the rate limit, inject faults (delays, canned
//! responses, connection resets before or after the work, truncated bodies), read the
//! password-reset mails it "sent" ([`Controls::mails`], `GET /__sandbox/mails`), list the
//! machines ([`Controls::activations`], `GET /__sandbox/activations`), and read a user's
//! current two-factor code ([`Controls::current_totp`], `GET /__sandbox/totp?email=`).
//!
//! It also sends Cryptlex's webhooks (the names are in [`events`]):
//! register one with [`Controls::add_webhook`] or Cryptlex's own `POST /v3/webhooks`, and
//! every change made through the API or the controls is POSTed to it, signed, with Cryptlex's
//! retry rules; [`Controls::update_license`] changes a license as the dashboard would.
//!
//! # Layout
//! - `lib.rs`: the public entry points and options, and the re-exports.
//! - `seed.rs`: the fixed account, users, licenses and scopes every sandbox starts with.
//! - `shared.rs`: the state the server and the controls share, and its lock helper.
//! - `journal.rs`: the recorded requests and the counters.
//! - `controls.rs`: the test-control handle and its HTTP form.
//! - `pipeline.rs`: the middleware every API request passes (record, limit, fault).
//! - `routes.rs`: the `/v3` handlers and request validation.
//! - `portal.rs` (+ `portal/`): the customer-portal handlers, records and shapes, and the
//!   table of decided answers.
//! - `totp.rs`: RFC 6238 codes for two-factor sign-in.
//! - `state.rs`: users, licenses and their metadata, seeded from `seed.rs`.
//! - `lifecycle.rs`: renewing a license and setting its expiry, and what the sandbox decided
//!   where Cryptlex's document is silent about them.
//! - `tokens.rs`: tokens.
//! - `wire.rs`: Cryptlex's JSON shapes.
//! - `faults.rs`: fault rules.
//! - `rate_limit.rs`: the limiter.
//! - `webhooks.rs`: the webhook registry, the events, and the delivery task.
//! - `server.rs`: the accept loop with a per-connection reset switch.
//! - `pki.rs`: development certificates for the gateway's TLS listeners.
//! - `tests.rs`: black-box tests over real HTTP.

mod controls;
mod faults;
mod journal;
mod lifecycle;
mod pipeline;
pub mod pki;
pub mod portal;
mod rate_limit;
mod routes;
pub mod seed;
mod server;
mod shared;
mod state;
mod tokens;
pub mod totp;
mod webhooks;
mod wire;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use controls::Controls;
pub use faults::{FaultAction, FaultId, FaultKind, FaultRule, InvalidFaultRule};
pub use journal::{AuthKind, ReceivedRequest, Stats};
pub use portal::{ActivationRecord, GeoLocationRecord, PasswordResetMail};
pub use rate_limit::RateLimit;
pub use routes::API_OPERATIONS;
pub use state::{LicenseChange, LicenseRecord, MetadataRecord, UserRecord};
pub use webhooks::{
    DeliveryStatus, InvalidWebhook, MAX_RECORDED_DELIVERIES, MAX_WEBHOOK_EVENTS, MAX_WEBHOOKS,
    WebhookDelivery, events,
};

use shared::Shared;

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
    /// The wait before each retry of a webhook delivery that got a 5xx or no answer; a
    /// delivery gets at most `webhook_retry_delays.len() + 1` attempts.
    pub webhook_retry_delays: Vec<Duration>,
    /// The longest one delivery attempt may take, connecting and reading the answer included.
    pub webhook_timeout: Duration,
    /// The most deliveries queued or under way at once; past it a delivery fails at once.
    pub webhook_queue_capacity: usize,
}

impl Default for SandboxOptions {
    /// Cryptlex's 50-per-5-s limit on, 15-minute access tokens, 30-day refresh tokens;
    /// webhook deliveries get 4 attempts (retries after 200 ms, 1 s and 5 s), 5 s each, and
    /// at most 1024 wait at once. Cryptlex does not document its own schedule; this one is
    /// short so a demo sees a recovered receiver catch up within seconds.
    fn default() -> Self {
        SandboxOptions {
            rate_limit: Some(RateLimit::cryptlex_default()),
            access_token_ttl: Duration::from_secs(15 * 60),
            refresh_token_ttl: Duration::from_secs(30 * 24 * 60 * 60),
            max_recorded_requests: 10_000,
            webhook_retry_delays: vec![
                Duration::from_millis(200),
                Duration::from_secs(1),
                Duration::from_secs(5),
            ],
            webhook_timeout: Duration::from_secs(5),
            webhook_queue_capacity: 1024,
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
    deliveries: Option<JoinHandle<()>>,
}

impl SandboxCryptlex {
    /// Binds `addr` (port 0 picks a free port) and starts serving.
    pub async fn start(addr: SocketAddr, options: SandboxOptions) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let (shared, queue) = Shared::new(
            options.rate_limit,
            options.access_token_ttl,
            options.refresh_token_ttl,
            options.max_recorded_requests,
            options.webhook_queue_capacity,
        );
        let shared = Arc::new(shared);
        let controls = Controls::new(Arc::clone(&shared));
        let admin_pat = controls.create_pat(seed::ALL_SCOPES);
        let deliveries = tokio::spawn(webhooks::run(
            Arc::clone(&shared),
            queue,
            webhooks::DeliveryPolicy {
                retry_delays: options.webhook_retry_delays,
                attempt_timeout: options.webhook_timeout,
            },
        ));
        let router = routes::router(Arc::clone(&shared));
        let server = tokio::spawn(server::accept_loop(listener, router, shared));
        tracing::info!(%local_addr, "sandbox cryptlex listening");
        Ok(SandboxCryptlex {
            local_addr,
            controls,
            admin_pat,
            server: Some(server),
            deliveries: Some(deliveries),
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

    /// Stops the server and the webhook deliveries, and waits until its port is closed.
    /// Deliveries not yet made are abandoned (their log entries stay pending or retrying).
    pub async fn shutdown(mut self) {
        for task in [self.server.take(), self.deliveries.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
            // The only possible error is the cancellation just requested.
            let _ = task.await;
        }
    }
}

impl Drop for SandboxCryptlex {
    fn drop(&mut self) {
        for task in [&self.server, &self.deliveries].into_iter().flatten() {
            task.abort();
        }
    }
}

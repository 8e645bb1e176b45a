//! A faithful, in-process stand-in for the Cryptlex Web API v3, plus a development PKI.
//!
//! [`SandboxCryptlex::start`] serves real HTTP on a loopback port with the endpoints the gateway
//! needs (login/refresh/logout, `/v3/me*`, `/v3/users*`, `/v3/licenses*`, and the read-only
//! `/v3/products/{id}` and `/v3/accounts/{id}` that `check-upstream` asks), listed in
//! [`API_OPERATIONS`], with Cryptlex's JSON shapes and error bodies, its per-IP rate limit,
//! per-endpoint PAT scopes, and a seeded account (see [`seed`]). It is
//! for demos and tests: nothing is persisted, and behaviour the public sources leave open is
//! chosen in comments marked "inference".
//!
//! Tests drive it through [`Controls`] (also served as JSON under `/__sandbox/`): read what it
//! received and answered (bodies included, for contract checks), inspect its state, mint
//! tokens (PATs with chosen scopes), switch the rate limit, and inject faults (delays, canned
//! responses, connection resets before or after the work, truncated bodies).
//!
//! # Layout
//! - `lib.rs`: the public entry points and options, and the re-exports.
//! - `seed.rs`: the fixed account, users, licenses and scopes every sandbox starts with.
//! - `shared.rs`: the state the server and the controls share, and its lock helper.
//! - `journal.rs`: the recorded requests and the counters.
//! - `controls.rs`: the test-control handle and its HTTP form.
//! - `pipeline.rs`: the middleware every API request passes (record, limit, fault).
//! - `routes.rs`: the `/v3` handlers and request validation.
//! - `state.rs`: users, licenses and their metadata, seeded from `seed.rs`.
//! - `tokens.rs`: tokens.
//! - `wire.rs`: Cryptlex's JSON shapes.
//! - `faults.rs`: fault rules.
//! - `rate_limit.rs`: the limiter.
//! - `server.rs`: the accept loop with a per-connection reset switch.
//! - `pki.rs`: development certificates for the gateway's TLS listeners.
//! - `tests.rs`: black-box tests over real HTTP.

mod controls;
mod faults;
mod journal;
mod pipeline;
pub mod pki;
mod rate_limit;
mod routes;
pub mod seed;
mod server;
mod shared;
mod state;
mod tokens;
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
pub use rate_limit::RateLimit;
pub use routes::API_OPERATIONS;
pub use state::{LicenseRecord, MetadataRecord, UserRecord};

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
        let shared = Arc::new(Shared::new(
            options.rate_limit,
            options.access_token_ttl,
            options.refresh_token_ttl,
            options.max_recorded_requests,
        ));
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

//! The only module that speaks HTTP to Cryptlex.
//!
//! One pooled `reqwest` client per process (keep-alive, HTTP/2 when offered),
//! typed calls for the endpoints the gateway uses, and Cryptlex's JSON kept
//! private in `wire`. Every call is bounded by both a per-request timeout and
//! the caller's deadline, spends a slot of the shared rate budget, passes the
//! circuit breaker, forwards the caller's `x-request-id`, escapes path
//! segments and query values, refuses redirects and caps response bodies.
//! Calls that are safe to repeat are retried after transient faults, within a
//! retry budget; creates never are (see `retry`).
//!
//! It does not decide what an upstream failure means for the caller (that is
//! [`crate::licensing`]'s job); it only classifies what Cryptlex said
//! ([`Rejection`]).
//!
//! - `endpoints`: one method per Cryptlex endpoint the gateway calls;
//!   `account_endpoints` the account calls' (two-factor, profile, password,
//!   password reset); `portal_endpoints` those of the customer portal (one
//!   license, activations, releases); `lifecycle_endpoints` the payment
//!   lifecycle's (renew, expiry, license updates); `audit_endpoints` the
//!   read-only calls of `ledger audit`.
//! - `transport`: sending one described request: admission, the HTTP
//!   exchange, headers, decoding and error classification.
//! - `retry`: which calls may be repeated, back-off, the retry budget.
//! - `budget`, `breaker`: the rate budget and the circuit breaker.
//! - `wire`, `wire_account`, `wire_portal`: Cryptlex's JSON shapes;
//!   `observe`: upstream metrics.

mod account_endpoints;
mod audit_endpoints;
mod breaker;
pub(crate) mod budget;
mod endpoints;
mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod lifecycle_endpoints;
mod observe;
mod portal_endpoints;
mod retry;
pub mod shared_window;
mod transport;
mod wire;
mod wire_account;
mod wire_portal;

use std::sync::Arc;
use std::time::Duration;

use url::Url;

pub use breaker::{BreakerOptions, BreakerState};
pub use budget::{BudgetMode, BudgetOptions, BudgetSnapshot, Priority};
pub use endpoints::{AccountInfo, PatClaims, Product};
pub use error::{CryptlexError, ErrorCode, Rejection};
pub use lifecycle_endpoints::{AdminLicense, LicenseChange, MetadataEntry};
pub use observe::OPERATIONS;
pub use shared_window::{Admit, SharedWindow, SharedWindowUnavailable};

use breaker::Breaker;
use budget::Budget;
use retry::RetryBudget;

use crate::domain::{CryptlexId, Email, IssuedLicense, Password, PersonName};

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
    /// How many machines it may be activated on; `None` leaves the product's default.
    pub allowed_activations: Option<i32>,
    /// Administrator-only metadata entries (caller's plus the gateway's own).
    pub metadata: Vec<(&'a str, &'a str)>,
    /// Metadata keys to leave out of the returned license.
    pub hidden_keys: &'a [&'a str],
}

/// The licenses a metadata search found, oldest first.
#[derive(Debug, Clone)]
pub struct MetadataMatches {
    pub licenses: Vec<IssuedLicense>,
    /// False when the search stopped at its page bound and more licenses may match.
    pub complete: bool,
}

/// What Cryptlex's `X-Rate-Limit-*` headers said on one answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimitStatus {
    /// `X-Rate-Limit-Limit`: the window, e.g. `5s`.
    pub period: Option<String>,
    /// `X-Rate-Limit-Remaining`: requests left in the window.
    pub remaining: Option<u32>,
    /// `X-Rate-Limit-Reset`, as time from the answer.
    pub resets_in: Option<Duration>,
}

/// A Cryptlex user account, as the administrator's lookups return it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptlexUser {
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

    /// The same client, counting its calls in `window` together with every
    /// other replica's (see [`SharedWindow`]). Call before the first request.
    #[must_use]
    pub fn with_shared_window(mut self, window: Arc<dyn SharedWindow>) -> Self {
        self.budget = self.budget.with_shared(window);
        self
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
}

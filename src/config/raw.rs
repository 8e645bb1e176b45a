//! The settings as written in the TOML file and the environment, before
//! validation: serde shapes with a default for every field, so an empty file
//! is a valid starting point. Nothing here checks values; see `validate`.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::cryptlex::{BreakerOptions, BudgetOptions};
use crate::licensing::throttle::ThrottleOptions;
use crate::telemetry::LogFormat;

/// The settings as written in the file and environment, before validation.
/// Every field has a default, so an empty file is a valid starting point.
/// Keys no field takes are collected in `unknown_keys` (see `load`), so that
/// validation reports them with every other problem instead of stopping at
/// the first.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RawSettings {
    /// Keys of the file or environment that name no setting (typos), as
    /// dotted paths such as `cryptlex.account_alais`.
    #[serde(skip)]
    pub unknown_keys: Vec<String>,
    pub public: RawPublic,
    pub internal: RawInternal,
    pub cryptlex: RawCryptlex,
    pub issuance: RawIssuance,
    pub sign_up: RawSignUp,
    pub ledger: RawLedger,
    pub cache: RawCache,
    pub limits: RawLimits,
    pub log: RawLog,
    pub admin: RawAdmin,
    pub tls: RawTls,
    pub otlp: RawOtlp,
    pub webhook: RawWebhook,
}

/// `[admin]`: the operations HTTP listener (`/metrics`, `/healthz`, `/readyz`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RawAdmin {
    pub enabled: bool,
    /// Loopback by default: metrics are not for the internet. Containers set
    /// `0.0.0.0:9090` so Prometheus can scrape the pod.
    pub addr: String,
}

/// `[tls]`: certificate reloading for both listeners.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RawTls {
    /// How often certificate files are checked for changes; `0s` turns
    /// polling off (SIGHUP still reloads).
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
}

/// `[otlp]`: OpenTelemetry trace export (needs the `otlp` cargo feature).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RawOtlp {
    pub enabled: bool,
    /// The OTLP/HTTP traces endpoint, e.g. `http://otel-collector:4318/v1/traces`.
    pub endpoint: String,
    pub service_name: String,
}

/// `[webhook]`: the endpoint on the public listener that receives Cryptlex's
/// webhooks. Without a secret it is off (answers 404).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RawWebhook {
    /// The secret ("token") the webhook was registered with in Cryptlex;
    /// prefer `secret_file` or `LICENSING_GATEWAY__WEBHOOK__SECRET`.
    pub secret: Option<SecretString>,
    pub secret_file: Option<PathBuf>,
    /// The path Cryptlex POSTs to, on the public listener.
    pub path: String,
    /// How long a delivery is remembered, so a redelivery is not applied
    /// twice; deliveries triggered longer ago than this are ignored.
    #[serde(with = "humantime_serde")]
    pub replay_window: Duration,
    /// Largest delivery body accepted (Cryptlex sends one DTO).
    pub max_body_bytes: usize,
}

impl Default for RawWebhook {
    fn default() -> Self {
        Self {
            secret: None,
            secret_file: None,
            path: "/webhooks/cryptlex".into(),
            replay_window: Duration::from_secs(10 * 60),
            max_body_bytes: 256 * 1024,
        }
    }
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            enabled: true,
            addr: "127.0.0.1:9090".into(),
        }
    }
}

impl Default for RawTls {
    fn default() -> Self {
        Self {
            reload_interval: Duration::from_secs(5),
        }
    }
}

impl Default for RawOtlp {
    fn default() -> Self {
        Self {
            enabled: false,
            endpoint: "http://127.0.0.1:4318/v1/traces".into(),
            service_name: "licensing-gateway".into(),
        }
    }
}

/// `[public]`: the user-facing listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RawPublic {
    pub addr: String,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub cors_allowed_origins: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub default_deadline: Duration,
    #[serde(with = "humantime_serde")]
    pub max_deadline: Duration,
}

/// `[internal]`: the mutual-TLS listener for the payment service.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RawInternal {
    pub enabled: bool,
    pub addr: String,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub client_ca_file: Option<PathBuf>,
    pub allowed_clients: Vec<RawAllowedClient>,
}

/// One `[[internal.allowed_clients]]` entry.
#[derive(Debug, Clone, Deserialize)]
pub struct RawAllowedClient {
    /// The client certificate's SAN: a URI (e.g. a SPIFFE id) or a DNS name.
    pub identity: String,
    /// Products this client may issue; empty means any.
    #[serde(default)]
    pub products: Vec<String>,
    /// The operations it may call, by RPC name (`IssueLicense`,
    /// `CreatePasswordResetToken`); absent means `["IssueLicense"]`.
    #[serde(default)]
    pub operations: Option<Vec<String>>,
}

/// `[cryptlex]`: the upstream API.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RawCryptlex {
    pub base_url: String,
    pub account_id: Option<String>,
    pub account_alias: Option<String>,
    /// The PAT itself; prefer `pat_file` or the environment.
    pub pat: Option<SecretString>,
    pub pat_file: Option<PathBuf>,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Most retries of one safe call (reads, login).
    pub max_retries: u32,
    pub budget: RawBudget,
    pub breaker: RawBreaker,
}

/// `[cryptlex.budget]`: this replica's share of Cryptlex's rate limit.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RawBudget {
    /// Calls per window for this replica (Cryptlex allows 50 per 5 s per
    /// source IP: divide it among replicas that share an egress IP).
    pub max_requests: u32,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    pub reserved_for_issuance: u32,
    pub reserved_for_sign_in: u32,
    #[serde(with = "humantime_serde")]
    pub max_read_wait: Duration,
    /// Calls per window this replica may start while the budget shared with
    /// other replicas (PostgreSQL ledger) cannot be reached. Unset: 25,
    /// within what `max_requests` and the reserves allow.
    pub fallback_share: Option<u32>,
    /// Most reads one session starts per window.
    pub per_session_reads: u32,
    /// Most reads all unvouched sessions together start per window.
    pub unvouched_reads: u32,
    /// Slots of the reads' share that must be free for a background refresh.
    /// Unset: 10, within the reads' share.
    pub background_headroom: Option<u32>,
}

/// `[cryptlex.breaker]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RawBreaker {
    pub failure_threshold: u32,
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
}

/// `[cache]`: the per-token read cache, kept fresh by changes (writes
/// through the gateway, webhooks, other replicas) rather than by a short TTL.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RawCache {
    /// How long a profile or license page is answered from memory as is; 0
    /// disables reuse (identical concurrent reads are still coalesced).
    /// `ttl`, the key's old name, is still accepted.
    #[serde(with = "humantime_serde", alias = "ttl")]
    pub fresh_for: Duration,
    /// How long past that an answer is still served at once while one
    /// background refresh runs; older answers are fetched again first.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    pub max_entries: usize,
    /// The cache's estimated size in bytes, at most.
    pub max_bytes: usize,
    /// Serve the last known license page, marked stale, when Cryptlex is
    /// unavailable.
    pub serve_stale: bool,
    #[serde(with = "humantime_serde")]
    pub stale_for: Duration,
}

/// `[limits]`: the front door.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RawLimits {
    /// Calls in progress at once per listener; more are shed at once.
    pub max_concurrent_requests: usize,
    /// Failed logins for one email before its back-off starts (counted apart
    /// for each network it signed in from, and for all others together).
    pub login_failures_per_email: u32,
    /// How long failures are remembered after the last one.
    #[serde(with = "humantime_serde")]
    pub login_email_window: Duration,
    /// The first wait past the allowance; it doubles with each failure.
    #[serde(with = "humantime_serde")]
    pub login_backoff_base: Duration,
    /// The longest wait between two login attempts for one email.
    #[serde(with = "humantime_serde")]
    pub login_backoff_max: Duration,
    /// How long a network an email signed in from keeps its own back-off.
    #[serde(with = "humantime_serde")]
    pub login_known_address_ttl: Duration,
    /// Networks remembered per email.
    pub login_known_addresses_per_email: usize,
    /// Emails the sign-in throttle tracks at once (its memory bound).
    pub max_tracked_emails: usize,
    /// Login and sign-up attempts per client network (IPv4 address, IPv6
    /// /64) per window.
    pub login_attempts_per_address: u32,
    #[serde(with = "humantime_serde")]
    pub login_address_window: Duration,
    /// Client networks the sign-in throttle tracks at once.
    pub max_tracked_addresses: usize,
    /// `RequestPasswordReset` calls per email address per
    /// `password_reset_email_window` (each may send a mail).
    pub password_reset_requests_per_email: u32,
    #[serde(with = "humantime_serde")]
    pub password_reset_email_window: Duration,
    /// `RequestPasswordReset` calls per client network per
    /// `password_reset_address_window`.
    pub password_reset_requests_per_address: u32,
    #[serde(with = "humantime_serde")]
    pub password_reset_address_window: Duration,
    /// Upstream calls the user calls of one client network may start per
    /// `upstream_address_window` (cache misses, refreshes, sign-outs); 0 off.
    pub upstream_calls_per_address: u32,
    #[serde(with = "humantime_serde")]
    pub upstream_address_window: Duration,
    /// How long in-flight calls may finish after a shutdown signal.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// A header carrying the real client address when the gateway sits
    /// behind proxies (e.g. `x-forwarded-for`). Only set it when every path
    /// to the public listener goes through them. Empty: the TCP peer address.
    pub client_address_header: Option<String>,
    /// Proxies of ours that append to `client_address_header`: the client
    /// is that many entries from the right; entries further left are the
    /// caller's own and never read.
    pub trusted_proxy_hops: u8,
    /// How long a call's request message may take to arrive completely; a
    /// call takes its slot only after that.
    #[serde(with = "humantime_serde")]
    pub request_body_timeout: Duration,
    /// The longest any call may run (above `public.max_deadline`).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Largest request message accepted.
    pub max_request_message_bytes: usize,
    /// Largest request header block (metadata) accepted.
    pub max_header_list_bytes: u32,
    /// Concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// Connections open at once from one client address (IPv6: one /64).
    pub max_connections_per_address: usize,
    /// How long a connection may stay open with no call in progress.
    #[serde(with = "humantime_serde")]
    pub idle_connection_timeout: Duration,
    /// How often an HTTP/2 connection that sent nothing is pinged.
    #[serde(with = "humantime_serde")]
    pub http2_keepalive_interval: Duration,
    /// How long a ping may go unanswered before the connection is closed.
    #[serde(with = "humantime_serde")]
    pub http2_keepalive_timeout: Duration,
    /// How long a new TLS connection may take to send its ClientHello.
    #[serde(with = "humantime_serde")]
    pub tls_client_hello_timeout: Duration,
    /// How long a whole TLS handshake may take.
    #[serde(with = "humantime_serde")]
    pub tls_handshake_timeout: Duration,
    /// TLS handshakes in progress at once per listener.
    pub max_concurrent_tls_handshakes: usize,
    /// TLS handshakes in progress at once from one client address.
    pub max_tls_handshakes_per_address: usize,
}

// The budget's and breaker's defaults live with them, in `cryptlex`.
impl Default for RawBudget {
    fn default() -> Self {
        let defaults = BudgetOptions::default();
        Self {
            max_requests: defaults.max_requests,
            window: defaults.window,
            reserved_for_issuance: defaults.reserved_for_issuance,
            reserved_for_sign_in: defaults.reserved_for_sign_in,
            max_read_wait: defaults.max_read_wait,
            fallback_share: None,
            per_session_reads: defaults.per_session_reads,
            unvouched_reads: defaults.unvouched_reads,
            background_headroom: None,
        }
    }
}

impl Default for RawBreaker {
    fn default() -> Self {
        let defaults = BreakerOptions::default();
        Self {
            failure_threshold: defaults.failure_threshold,
            cooldown: defaults.cooldown,
        }
    }
}

impl Default for RawCache {
    fn default() -> Self {
        Self {
            fresh_for: Duration::from_secs(2 * 60),
            max_age: Duration::from_secs(10 * 60),
            max_entries: 20_000,
            max_bytes: 64 * 1024 * 1024,
            serve_stale: false,
            stale_for: Duration::from_secs(600),
        }
    }
}

// The throttle's defaults live with it, in `licensing::throttle`.
impl Default for RawLimits {
    fn default() -> Self {
        let throttle = ThrottleOptions::default();
        Self {
            max_concurrent_requests: 512,
            login_failures_per_email: throttle.failures_per_email,
            login_email_window: throttle.email_window,
            login_backoff_base: throttle.backoff_base,
            login_backoff_max: throttle.backoff_max,
            login_known_address_ttl: throttle.known_address_ttl,
            login_known_addresses_per_email: throttle.known_addresses_per_email,
            max_tracked_emails: throttle.max_tracked_emails,
            login_attempts_per_address: throttle.attempts_per_address,
            login_address_window: throttle.address_window,
            max_tracked_addresses: throttle.max_tracked_addresses,
            password_reset_requests_per_email: throttle.reset_requests_per_email,
            password_reset_email_window: throttle.reset_email_window,
            password_reset_requests_per_address: throttle.reset_requests_per_address,
            password_reset_address_window: throttle.reset_address_window,
            upstream_calls_per_address: throttle.upstream_calls_per_address,
            upstream_address_window: throttle.upstream_address_window,
            drain_timeout: Duration::from_secs(20),
            client_address_header: None,
            trusted_proxy_hops: 1,
            request_body_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(40),
            max_request_message_bytes: 64 * 1024,
            max_header_list_bytes: 16 * 1024,
            max_concurrent_streams: 256,
            max_connections_per_address: 128,
            idle_connection_timeout: Duration::from_secs(5 * 60),
            http2_keepalive_interval: Duration::from_secs(30),
            http2_keepalive_timeout: Duration::from_secs(10),
            tls_client_hello_timeout: Duration::from_secs(3),
            tls_handshake_timeout: Duration::from_secs(10),
            max_concurrent_tls_handshakes: 512,
            max_tls_handshakes_per_address: 32,
        }
    }
}

/// `[issuance]`: `IssueLicense` behaviour.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RawIssuance {
    pub default_product_id: Option<String>,
    pub request_id_metadata_key: String,
    /// How long an attempt owns its request id before another may take over. Must outlast
    /// the longest attempt (`public.max_deadline` + `cryptlex.request_timeout` + a margin),
    /// and is renewed while a create is in flight.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    #[serde(with = "humantime_serde")]
    pub wait_for_in_flight: Duration,
    /// After a create whose outcome is unknown (timeout, lost reply, 5xx), how long the
    /// request id stays held before a retry may reconcile: time for Cryptlex to finish a
    /// create it is still working on and for its metadata search to show the license.
    #[serde(with = "humantime_serde")]
    pub settle_after_unknown_outcome: Duration,
    /// Products for which an `IssueLicense` quantity of N makes one license with N allowed
    /// activations; for every other product it makes N licenses.
    pub quantity_as_activations: Vec<String>,
}

/// `[sign_up]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RawSignUp {
    pub enabled: bool,
}

/// `[ledger]`: the durable issuance ledger.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RawLedger {
    pub url: String,
    pub schema: Option<String>,
    pub max_connections: u32,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RawLog {
    /// A `tracing` filter, e.g. `info` or `licensing_gateway=debug,info`.
    pub level: String,
    pub format: LogFormat,
}

impl Default for RawPublic {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:50051".into(),
            tls_cert_file: None,
            tls_key_file: None,
            cors_allowed_origins: Vec::new(),
            default_deadline: Duration::from_secs(10),
            max_deadline: Duration::from_secs(30),
        }
    }
}

impl Default for RawInternal {
    fn default() -> Self {
        Self {
            enabled: true,
            addr: "127.0.0.1:50052".into(),
            tls_cert_file: None,
            tls_key_file: None,
            client_ca_file: None,
            allowed_clients: Vec::new(),
        }
    }
}

impl Default for RawCryptlex {
    fn default() -> Self {
        Self {
            base_url: "https://api.cryptlex.com".into(),
            account_id: None,
            account_alias: None,
            pat: None,
            pat_file: None,
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            max_retries: 2,
            budget: RawBudget::default(),
            breaker: RawBreaker::default(),
        }
    }
}

impl Default for RawIssuance {
    fn default() -> Self {
        Self {
            default_product_id: None,
            request_id_metadata_key: "licensing_gateway_request_id".into(),
            // Above the longest attempt with the default deadlines (30 s + 10 s + 2 s).
            lease: Duration::from_secs(60),
            wait_for_in_flight: Duration::from_secs(2),
            settle_after_unknown_outcome: Duration::from_secs(5),
            quantity_as_activations: Vec::new(),
        }
    }
}

impl Default for RawSignUp {
    fn default() -> Self {
        Self { enabled: true }
    }
}

impl Default for RawLedger {
    fn default() -> Self {
        Self {
            url: "sqlite://licensing-gateway.db".into(),
            schema: None,
            max_connections: 8,
        }
    }
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

//! The gateway's settings: one typed tree, loaded once from a TOML file and
//! `LICENSING_GATEWAY__...` environment variables, and validated before
//! anything binds.
//!
//! Loading takes the environment as a map (the process environment in
//! `main`, a literal map in tests), so tests never touch global state.
//! Validation reports every problem at once, each naming the key to fix.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use crate::cryptlex::Account;
use crate::domain::{AdminToken, CryptlexId};

/// Prefix of environment overrides: `LICENSING_GATEWAY__CRYPTLEX__ACCOUNT_ALIAS`
/// sets `cryptlex.account_alias`.
pub const ENV_PREFIX: &str = "LICENSING_GATEWAY";

/// The settings as written in the file and environment, before validation.
/// Every field has a default, so an empty file is a valid starting point.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSettings {
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
}

/// `[admin]`: the operations HTTP listener (`/metrics`, `/healthz`, `/readyz`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    pub enabled: bool,
    /// Loopback by default: metrics are not for the internet. Containers set
    /// `0.0.0.0:9090` so Prometheus can scrape the pod.
    pub addr: String,
}

/// `[tls]`: certificate reloading for both listeners.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTls {
    /// How often certificate files are checked for changes; `0s` turns
    /// polling off (SIGHUP still reloads).
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
}

/// `[otlp]`: OpenTelemetry trace export (needs the `otlp` cargo feature).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawOtlp {
    pub enabled: bool,
    /// The OTLP/HTTP traces endpoint, e.g. `http://otel-collector:4318/v1/traces`.
    pub endpoint: String,
    pub service_name: String,
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
#[serde(deny_unknown_fields, default)]
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
#[serde(deny_unknown_fields, default)]
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
#[serde(deny_unknown_fields)]
pub struct RawAllowedClient {
    /// The client certificate's SAN: a URI (e.g. a SPIFFE id) or a DNS name.
    pub identity: String,
    /// Products this client may issue; empty means any.
    #[serde(default)]
    pub products: Vec<String>,
}

/// `[cryptlex]`: the upstream API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
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
#[serde(deny_unknown_fields, default)]
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
}

/// `[cryptlex.breaker]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawBreaker {
    pub failure_threshold: u32,
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
}

/// `[cache]`: the short per-token read cache.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCache {
    /// How long a profile or license page is reused; 0 disables caching
    /// (identical concurrent reads are still coalesced).
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    pub max_entries: usize,
    /// Serve the last known license page, marked stale, when Cryptlex is
    /// unavailable.
    pub serve_stale: bool,
    #[serde(with = "humantime_serde")]
    pub stale_for: Duration,
}

/// `[limits]`: the front door.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
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
}

/// The most proxies `limits.trusted_proxy_hops` may count.
const MAX_TRUSTED_PROXY_HOPS: u8 = 10;
/// The most networks `limits.login_known_addresses_per_email` may keep.
const MAX_KNOWN_ADDRESSES_PER_EMAIL: usize = 16;

// The budget's and breaker's defaults live with them, in `cryptlex`.
impl Default for RawBudget {
    fn default() -> Self {
        let defaults = crate::cryptlex::BudgetOptions::default();
        Self {
            max_requests: defaults.max_requests,
            window: defaults.window,
            reserved_for_issuance: defaults.reserved_for_issuance,
            reserved_for_sign_in: defaults.reserved_for_sign_in,
            max_read_wait: defaults.max_read_wait,
        }
    }
}

impl Default for RawBreaker {
    fn default() -> Self {
        let defaults = crate::cryptlex::BreakerOptions::default();
        Self {
            failure_threshold: defaults.failure_threshold,
            cooldown: defaults.cooldown,
        }
    }
}

impl Default for RawCache {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(3),
            max_entries: 10_000,
            serve_stale: false,
            stale_for: Duration::from_secs(600),
        }
    }
}

// The throttle's defaults live with it, in `licensing::throttle`.
impl Default for RawLimits {
    fn default() -> Self {
        let throttle = crate::licensing::throttle::ThrottleOptions::default();
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
            drain_timeout: Duration::from_secs(20),
            client_address_header: None,
            trusted_proxy_hops: 1,
        }
    }
}

/// `[issuance]`: `IssueLicense` behaviour.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawIssuance {
    pub default_product_id: Option<String>,
    pub request_id_metadata_key: String,
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    #[serde(with = "humantime_serde")]
    pub wait_for_in_flight: Duration,
}

/// `[sign_up]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSignUp {
    pub enabled: bool,
}

/// `[ledger]`: the durable issuance ledger.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLedger {
    pub url: String,
    pub schema: Option<String>,
    pub max_connections: u32,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    /// A `tracing` filter, e.g. `info` or `licensing_gateway=debug,info`.
    pub level: String,
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable, for a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
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
            lease: Duration::from_secs(30),
            wait_for_in_flight: Duration::from_secs(2),
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

/// Everything wrong with a configuration, one line per problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration:")?;
        for problem in &self.problems {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn one(problem: impl Into<String>) -> Self {
        Self {
            problems: vec![problem.into()],
        }
    }
}

impl RawSettings {
    /// Reads `file` (if given) and overlays `LICENSING_GATEWAY__*` entries of
    /// `env`. List values in the environment are comma-separated.
    pub fn load(file: Option<&Path>, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(file) = file {
            if !file.is_file() {
                return Err(ConfigError::one(format!(
                    "configuration file {} does not exist or is not a file",
                    file.display()
                )));
            }
            builder = builder.add_source(config::File::from(file).format(config::FileFormat::Toml));
        }
        let environment = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .list_separator(",")
            .with_list_parse_key("public.cors_allowed_origins")
            .source(Some(
                env.iter()
                    .filter(|(key, _)| key.starts_with(ENV_PREFIX))
                    .map(|(key, value)| (key.clone(), value.clone()))
                    .collect(),
            ));
        builder
            .add_source(environment)
            .build()
            .and_then(config::Config::try_deserialize)
            .map_err(|error| ConfigError::one(error.to_string()))
    }

    /// Checks every setting and returns the typed tree, or every problem.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let mut problems = Vec::new();

        let public_addr = parse_addr(&mut problems, "public.addr", &self.public.addr);
        let public_tls = match (&self.public.tls_cert_file, &self.public.tls_key_file) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => {
                problems.push(
                    "public.tls_cert_file and public.tls_key_file must be set together".into(),
                );
                None
            }
        };
        let mut cors_allowed_origins = Vec::new();
        for origin in &self.public.cors_allowed_origins {
            match Url::parse(origin) {
                Ok(url)
                    if matches!(url.scheme(), "http" | "https")
                        && url.path() == "/"
                        && !origin.ends_with('/') =>
                {
                    cors_allowed_origins.push(origin.clone());
                }
                _ => problems.push(format!(
                    "public.cors_allowed_origins: {origin:?} is not an origin like https://www.example.com (scheme, host and optional port, no path)"
                )),
            }
        }
        if self.public.default_deadline.is_zero()
            || self.public.default_deadline > self.public.max_deadline
        {
            problems.push(
                "public.default_deadline must be above zero and at most public.max_deadline".into(),
            );
        }

        let internal = if self.internal.enabled {
            let addr = parse_addr(&mut problems, "internal.addr", &self.internal.addr);
            let mut require = |key: &str, value: &Option<PathBuf>| {
                if value.is_none() {
                    problems.push(format!(
                        "internal.{key} is required when the internal listener is enabled (or set internal.enabled = false)"
                    ));
                }
                value.clone().unwrap_or_default()
            };
            let cert = require("tls_cert_file", &self.internal.tls_cert_file);
            let key = require("tls_key_file", &self.internal.tls_key_file);
            let client_ca = require("client_ca_file", &self.internal.client_ca_file);
            if self.internal.allowed_clients.is_empty() {
                problems.push(
                    "internal.allowed_clients is empty: no client could ever call IssueLicense"
                        .into(),
                );
            }
            let mut allowed_clients = Vec::new();
            for (index, client) in self.internal.allowed_clients.iter().enumerate() {
                let identity = client.identity.trim();
                if identity.is_empty() {
                    problems.push(format!(
                        "internal.allowed_clients[{index}].identity is empty"
                    ));
                    continue;
                }
                let mut products = Vec::new();
                for product in &client.products {
                    match CryptlexId::parse("product", product) {
                        Ok(id) => products.push(id),
                        Err(_) => problems.push(format!(
                            "internal.allowed_clients[{index}].products: {product:?} is not a Cryptlex id"
                        )),
                    }
                }
                allowed_clients.push(AllowedClient {
                    identity: identity.to_owned(),
                    products,
                });
            }
            addr.map(|addr| InternalSettings {
                addr,
                tls: TlsFiles { cert, key },
                client_ca,
                allowed_clients,
            })
        } else {
            None
        };

        let base_url = match Url::parse(&self.cryptlex.base_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => url,
            _ => {
                problems.push(format!(
                    "cryptlex.base_url: {:?} is not an http(s) URL such as https://api.cryptlex.com",
                    self.cryptlex.base_url
                ));
                Url::parse("https://api.cryptlex.com").expect("a valid literal URL")
            }
        };
        let non_empty = |value: &Option<String>| {
            value
                .as_deref()
                .map(str::trim)
                .filter(|value| !value.is_empty())
                .map(str::to_owned)
        };
        let account = match (
            non_empty(&self.cryptlex.account_id),
            non_empty(&self.cryptlex.account_alias),
        ) {
            (Some(id), None) => Account::Id(id),
            (None, Some(alias)) => Account::Alias(alias),
            (None, None) => {
                problems.push(
                    "cryptlex: set exactly one of account_id or account_alias (Cryptlex's login fails with \"Authentication Failed\" without one)".into(),
                );
                Account::Alias(String::new())
            }
            (Some(_), Some(_)) => {
                problems.push(
                    "cryptlex: account_id and account_alias are both set; set exactly one".into(),
                );
                Account::Alias(String::new())
            }
        };
        let admin_token = match (&self.cryptlex.pat, &self.cryptlex.pat_file) {
            (Some(_), Some(_)) => {
                problems.push("cryptlex: pat and pat_file are both set; set one".into());
                None
            }
            (Some(pat), None) if pat.expose_secret().trim().is_empty() => {
                problems.push("cryptlex.pat is empty".into());
                None
            }
            (Some(pat), None) => Some(AdminToken::new(SecretString::from(
                pat.expose_secret().trim().to_owned(),
            ))),
            (None, Some(path)) => match std::fs::read_to_string(path) {
                Ok(contents) if !contents.trim().is_empty() => Some(AdminToken::new(
                    SecretString::from(contents.trim().to_owned()),
                )),
                Ok(_) => {
                    problems.push(format!("cryptlex.pat_file {} is empty", path.display()));
                    None
                }
                Err(error) => {
                    problems.push(format!(
                        "cryptlex.pat_file {} cannot be read: {error}",
                        path.display()
                    ));
                    None
                }
            },
            (None, None) => None,
        };
        if admin_token.is_none() && (self.sign_up.enabled || internal.is_some()) {
            problems.push(
                "cryptlex: a personal access token (pat_file, or LICENSING_GATEWAY__CRYPTLEX__PAT) is required for sign-up and the internal listener; or set sign_up.enabled = false and internal.enabled = false".into(),
            );
        }
        for (key, value) in [
            ("cryptlex.request_timeout", self.cryptlex.request_timeout),
            ("cryptlex.connect_timeout", self.cryptlex.connect_timeout),
            ("issuance.lease", self.issuance.lease),
        ] {
            if value.is_zero() {
                problems.push(format!("{key} must be above zero"));
            }
        }

        let budget = &self.cryptlex.budget;
        if budget.max_requests == 0 || budget.window.is_zero() {
            problems.push(
                "cryptlex.budget.max_requests and cryptlex.budget.window must be above zero".into(),
            );
        } else if budget.reserved_for_issuance + budget.reserved_for_sign_in >= budget.max_requests
        {
            problems.push(format!(
                "cryptlex.budget: reserved_for_issuance + reserved_for_sign_in ({}) must be below max_requests ({}), or reads could never reach Cryptlex",
                budget.reserved_for_issuance + budget.reserved_for_sign_in,
                budget.max_requests
            ));
        }
        if self.cryptlex.breaker.failure_threshold == 0 {
            problems.push("cryptlex.breaker.failure_threshold must be above zero".into());
        }
        if self.cache.max_entries == 0 {
            problems.push("cache.max_entries must be above zero".into());
        }
        if let Some(header) = &self.limits.client_address_header
            && http::HeaderName::from_bytes(header.trim().as_bytes()).is_err()
        {
            problems.push(format!(
                "limits.client_address_header: {header:?} is not a valid header name"
            ));
        }
        if self.limits.max_concurrent_requests == 0 {
            problems.push("limits.max_concurrent_requests must be above zero".into());
        }
        let limits = &self.limits;
        if !(1..=MAX_TRUSTED_PROXY_HOPS).contains(&limits.trusted_proxy_hops) {
            problems.push(format!(
                "limits.trusted_proxy_hops must be 1 to {MAX_TRUSTED_PROXY_HOPS} (the proxies in front of the gateway that append to limits.client_address_header), not {}",
                limits.trusted_proxy_hops
            ));
        }
        if limits.login_backoff_base.is_zero()
            || limits.login_backoff_max < limits.login_backoff_base
        {
            problems.push(
                "limits.login_backoff_base must be above zero and at most limits.login_backoff_max"
                    .into(),
            );
        }
        if limits.login_known_addresses_per_email > MAX_KNOWN_ADDRESSES_PER_EMAIL {
            problems.push(format!(
                "limits.login_known_addresses_per_email must be at most {MAX_KNOWN_ADDRESSES_PER_EMAIL}"
            ));
        }
        if limits.max_tracked_emails == 0 || limits.max_tracked_addresses == 0 {
            problems.push(
                "limits.max_tracked_emails and limits.max_tracked_addresses must be above zero"
                    .into(),
            );
        }

        let default_product_id = match non_empty(&self.issuance.default_product_id) {
            Some(id) => match CryptlexId::parse("product", &id) {
                Ok(id) => Some(id),
                Err(_) => {
                    problems.push(format!(
                        "issuance.default_product_id: {id:?} is not a Cryptlex id"
                    ));
                    None
                }
            },
            None => None,
        };
        let metadata_key = self.issuance.request_id_metadata_key.trim().to_owned();
        if metadata_key.is_empty() || metadata_key.len() > 64 {
            problems.push("issuance.request_id_metadata_key must be 1 to 64 characters".into());
        }

        let ledger_url = self.ledger.url.trim().to_owned();
        if !(ledger_url.starts_with("sqlite:")
            || ledger_url.starts_with("postgres://")
            || ledger_url.starts_with("postgresql://"))
        {
            problems.push(format!(
                "ledger.url must start with sqlite:, postgres:// or postgresql:// (got {:?})",
                redact_url_password(&ledger_url)
            ));
        }
        if self.ledger.max_connections == 0 {
            problems.push("ledger.max_connections must be above zero".into());
        }
        if let Err(error) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            problems.push(format!(
                "log.level {:?} is not a valid filter: {error}",
                self.log.level
            ));
        }

        let admin_addr = if self.admin.enabled {
            parse_addr(&mut problems, "admin.addr", &self.admin.addr)
        } else {
            None
        };
        let otlp = if self.otlp.enabled {
            if !cfg!(feature = "otlp") {
                problems.push(
                    "otlp.enabled = true, but this build has no OTLP support (build with --features otlp)".into(),
                );
            }
            match Url::parse(&self.otlp.endpoint) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {
                    Some(OtlpSettings {
                        endpoint: url,
                        service_name: self.otlp.service_name.clone(),
                    })
                }
                _ => {
                    problems.push(format!(
                        "otlp.endpoint: {:?} is not an http(s) URL such as http://otel-collector:4318/v1/traces",
                        self.otlp.endpoint
                    ));
                    None
                }
            }
        } else {
            None
        };

        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }
        Ok(Settings {
            public: PublicSettings {
                addr: public_addr.expect("checked above"),
                tls: public_tls,
                cors_allowed_origins,
                default_deadline: self.public.default_deadline,
                max_deadline: self.public.max_deadline,
            },
            internal,
            cryptlex: CryptlexSettings {
                base_url,
                account,
                admin_token,
                request_timeout: self.cryptlex.request_timeout,
                connect_timeout: self.cryptlex.connect_timeout,
                max_retries: self.cryptlex.max_retries,
                budget: crate::cryptlex::BudgetOptions {
                    max_requests: budget.max_requests,
                    window: budget.window,
                    reserved_for_issuance: budget.reserved_for_issuance,
                    reserved_for_sign_in: budget.reserved_for_sign_in,
                    max_read_wait: budget.max_read_wait,
                    ..crate::cryptlex::BudgetOptions::default()
                },
                breaker: crate::cryptlex::BreakerOptions {
                    failure_threshold: self.cryptlex.breaker.failure_threshold,
                    cooldown: self.cryptlex.breaker.cooldown,
                },
            },
            cache: self.cache.clone(),
            limits: self.limits.clone(),
            issuance: IssuanceSettings {
                default_product_id,
                request_id_metadata_key: metadata_key,
                lease: self.issuance.lease,
                wait_for_in_flight: self.issuance.wait_for_in_flight,
            },
            sign_up_enabled: self.sign_up.enabled,
            ledger: LedgerSettings {
                url: ledger_url,
                schema: self.ledger.schema.clone(),
                max_connections: self.ledger.max_connections,
            },
            log: self.log.clone(),
            admin_addr,
            tls_reload_interval: self.tls.reload_interval,
            otlp,
        })
    }
}

fn parse_addr(problems: &mut Vec<String>, key: &str, value: &str) -> Option<SocketAddr> {
    match value.parse() {
        Ok(addr) => Some(addr),
        Err(_) => {
            problems.push(format!(
                "{key}: {value:?} is not a socket address such as 127.0.0.1:50051"
            ));
            None
        }
    }
}

/// Hides the password of a database URL in messages.
pub fn redact_url_password(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("REDACTED"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// A certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub public: PublicSettings,
    /// `None` when the internal listener is disabled.
    pub internal: Option<InternalSettings>,
    pub cryptlex: CryptlexSettings,
    pub issuance: IssuanceSettings,
    pub sign_up_enabled: bool,
    pub ledger: LedgerSettings,
    pub cache: RawCache,
    pub limits: RawLimits,
    pub log: RawLog,
    /// The admin listener's address; `None` when it is disabled.
    pub admin_addr: Option<SocketAddr>,
    /// How often TLS files are polled for changes (zero: SIGHUP only).
    pub tls_reload_interval: Duration,
    /// OTLP trace export; `None` when off.
    pub otlp: Option<OtlpSettings>,
}

/// Validated `[otlp]`.
#[derive(Debug, Clone)]
pub struct OtlpSettings {
    pub endpoint: Url,
    pub service_name: String,
}

/// Validated `[public]`.
#[derive(Debug, Clone)]
pub struct PublicSettings {
    pub addr: SocketAddr,
    pub tls: Option<TlsFiles>,
    pub cors_allowed_origins: Vec<String>,
    pub default_deadline: Duration,
    pub max_deadline: Duration,
}

/// Validated `[internal]`.
#[derive(Debug, Clone)]
pub struct InternalSettings {
    pub addr: SocketAddr,
    pub tls: TlsFiles,
    pub client_ca: PathBuf,
    pub allowed_clients: Vec<AllowedClient>,
}

/// A client allowed on the internal listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedClient {
    pub identity: String,
    /// Empty means any product.
    pub products: Vec<CryptlexId>,
}

/// Validated `[cryptlex]`.
#[derive(Debug, Clone)]
pub struct CryptlexSettings {
    pub base_url: Url,
    pub account: Account,
    pub admin_token: Option<AdminToken>,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    pub max_retries: u32,
    pub budget: crate::cryptlex::BudgetOptions,
    pub breaker: crate::cryptlex::BreakerOptions,
}

/// Validated `[issuance]`.
#[derive(Debug, Clone)]
pub struct IssuanceSettings {
    pub default_product_id: Option<CryptlexId>,
    pub request_id_metadata_key: String,
    pub lease: Duration,
    pub wait_for_in_flight: Duration,
}

/// Validated `[ledger]`.
#[derive(Debug, Clone)]
pub struct LedgerSettings {
    pub url: String,
    pub schema: Option<String>,
    pub max_connections: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    fn minimal_env() -> HashMap<String, String> {
        env(&[
            ("LICENSING_GATEWAY__CRYPTLEX__ACCOUNT_ALIAS", "acme"),
            ("LICENSING_GATEWAY__INTERNAL__ENABLED", "false"),
            ("LICENSING_GATEWAY__SIGN_UP__ENABLED", "false"),
        ])
    }

    #[test]
    fn defaults_plus_an_account_are_a_valid_public_only_configuration() {
        let settings = RawSettings::load(None, &minimal_env())
            .expect("loads")
            .validate()
            .expect("valid");
        assert_eq!(
            settings.public.addr,
            "127.0.0.1:50051".parse().expect("addr")
        );
        assert_eq!(settings.cryptlex.account, Account::Alias("acme".into()));
        assert!(settings.internal.is_none());
    }

    #[test]
    fn a_missing_account_is_reported_with_the_keys_to_set() {
        let mut environment = minimal_env();
        environment.remove("LICENSING_GATEWAY__CRYPTLEX__ACCOUNT_ALIAS");
        let error = RawSettings::load(None, &environment)
            .expect("loads")
            .validate()
            .expect_err("no account");
        assert!(
            error
                .problems
                .iter()
                .any(|problem| problem.contains("account_id or account_alias")),
            "{error}"
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let environment = env(&[
            ("LICENSING_GATEWAY__PUBLIC__ADDR", "nowhere"),
            ("LICENSING_GATEWAY__CRYPTLEX__BASE_URL", "ftp://x"),
            (
                "LICENSING_GATEWAY__PUBLIC__CORS_ALLOWED_ORIGINS",
                "https://ok.example,not an origin",
            ),
        ]);
        let error = RawSettings::load(None, &environment)
            .expect("loads")
            .validate()
            .expect_err("invalid");
        let text = error.to_string();
        for expected in [
            "public.addr",
            "cryptlex.base_url",
            "not an origin",
            "account_id or account_alias",
            "internal.tls_cert_file",
            "personal access token",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in {text}");
        }
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("gateway.toml");
        std::fs::write(&file, "[cryptlex]\naccount_alais = \"typo\"\n").expect("write");
        let error = RawSettings::load(Some(&file), &HashMap::new()).expect_err("typo");
        assert!(error.to_string().contains("account_alais"), "{error}");
    }

    #[test]
    fn the_pat_is_read_from_a_file_and_never_shown_in_debug_output() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pat_file = dir.path().join("pat");
        std::fs::write(&pat_file, "pat-secret-value\n").expect("write");
        let mut environment = minimal_env();
        environment.insert(
            "LICENSING_GATEWAY__CRYPTLEX__PAT_FILE".into(),
            pat_file.display().to_string(),
        );
        let settings = RawSettings::load(None, &environment)
            .expect("loads")
            .validate()
            .expect("valid");
        let pat = settings.cryptlex.admin_token.as_ref().expect("pat read");
        assert_eq!(pat.expose_secret(), "pat-secret-value");
        assert!(!format!("{settings:?}").contains("pat-secret-value"));
    }
}

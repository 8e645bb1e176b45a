//! Validation: one function per configuration section, each turning its raw
//! shape into typed settings and recording every problem it finds, naming the
//! key to fix. Nothing here reads files or the environment: the PAT file's
//! contents arrive already read (see [`super::RawSettings::validate`]), so
//! every rule can be tested with literal values.
//!
//! Besides problems (which stop start-up) there are [`warnings`]: settings
//! that are allowed because a deployment can have a good reason for them,
//! but that an operator should look at. check-config prints them and `serve`
//! logs them at start-up.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::raw::{
    RawAdmin, RawCache, RawCryptlex, RawInternal, RawIssuance, RawLedger, RawLimits, RawLog,
    RawOtlp, RawPublic, RawSettings, RawWebhook,
};
use super::settings::{
    CryptlexSettings, InternalSettings, IssuanceSettings, LedgerSettings, PublicSettings, Settings,
    TlsFiles, WebhookSettings,
};
use super::{ConfigError, redact_url_password};
use crate::cryptlex::{Account, BreakerOptions, BudgetOptions};
use crate::domain::{AdminToken, AllowList, AllowedClient, ClientIdentity, CryptlexId, Operation};
use crate::telemetry::OtlpSettings;

/// What reading `cryptlex.pat_file` gave, when it is set.
pub(super) type PatFileContents = Result<String, std::io::Error>;

/// The problems found so far; every section adds to the same list so the
/// operator sees all of them at once.
type Problems = Vec<String>;

/// Validates every section of `raw`. `pat_file` and `webhook_secret_file`
/// are what reading `cryptlex.pat_file` and `webhook.secret_file` returned,
/// or `None` when they are not set.
pub(super) fn settings(
    raw: &RawSettings,
    pat_file: Option<PatFileContents>,
    webhook_secret_file: Option<PatFileContents>,
) -> Result<Settings, ConfigError> {
    let mut problems = Problems::new();
    for key in &raw.unknown_keys {
        problems.push(format!(
            "{key} is not a setting (a typo? README.md, Configuration, lists every key)"
        ));
    }
    let public = public(&mut problems, &raw.public);
    let internal = internal(&mut problems, &raw.internal);
    let cryptlex = cryptlex(&mut problems, &raw.cryptlex, pat_file);
    if cryptlex.admin_token.is_none() && (raw.sign_up.enabled || internal.is_some()) {
        problems.push(
            "cryptlex: a personal access token (pat_file, or LICENSING_GATEWAY__CRYPTLEX__PAT) is required for sign-up and the internal listener; or set sign_up.enabled = false and internal.enabled = false".into(),
        );
    }
    let issuance = issuance(&mut problems, &raw.issuance, longest_attempt(raw));
    cache(&mut problems, &raw.cache);
    limits(&mut problems, &raw.limits, raw.public.max_deadline);
    let ledger = ledger(&mut problems, &raw.ledger);
    log(&mut problems, &raw.log);
    let admin_addr = admin(&mut problems, &raw.admin);
    let otlp = otlp(&mut problems, &raw.otlp);
    let webhook = webhook(&mut problems, &raw.webhook, webhook_secret_file);

    let Some(public) = public else {
        // `public` only fails with a recorded problem.
        return Err(ConfigError { problems });
    };
    if !problems.is_empty() {
        return Err(ConfigError { problems });
    }
    Ok(Settings {
        public,
        internal,
        cryptlex,
        issuance,
        sign_up_enabled: raw.sign_up.enabled,
        ledger,
        cache: raw.cache.clone(),
        limits: raw.limits.clone(),
        log: raw.log.clone(),
        admin_addr,
        tls_reload_interval: raw.tls.reload_interval,
        otlp,
        webhook,
    })
}

/// `[public]`: the address, optional TLS, CORS origins and deadlines.
fn public(problems: &mut Problems, raw: &RawPublic) -> Option<PublicSettings> {
    let addr = parse_addr(problems, "public.addr", &raw.addr);
    let tls = match (&raw.tls_cert_file, &raw.tls_key_file) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => {
            problems
                .push("public.tls_cert_file and public.tls_key_file must be set together".into());
            None
        }
    };
    let mut cors_allowed_origins = Vec::new();
    for origin in &raw.cors_allowed_origins {
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
    if raw.default_deadline.is_zero() || raw.default_deadline > raw.max_deadline {
        problems.push(
            "public.default_deadline must be above zero and at most public.max_deadline".into(),
        );
    }
    Some(PublicSettings {
        addr: addr?,
        tls,
        cors_allowed_origins,
        default_deadline: raw.default_deadline,
        max_deadline: raw.max_deadline,
    })
}

/// `[internal]`: the mutual-TLS listener, its files and its allow-list.
/// `None` when it is disabled (or its address is unusable, a recorded problem).
fn internal(problems: &mut Problems, raw: &RawInternal) -> Option<InternalSettings> {
    if !raw.enabled {
        return None;
    }
    let addr = parse_addr(problems, "internal.addr", &raw.addr);
    let mut require = |key: &str, value: &Option<PathBuf>| {
        if value.is_none() {
            problems.push(format!(
                "internal.{key} is required when the internal listener is enabled (or set internal.enabled = false)"
            ));
        }
        value.clone().unwrap_or_default()
    };
    let cert = require("tls_cert_file", &raw.tls_cert_file);
    let key = require("tls_key_file", &raw.tls_key_file);
    let client_ca = require("client_ca_file", &raw.client_ca_file);
    if raw.allowed_clients.is_empty() {
        problems.push(
            "internal.allowed_clients is empty: no client could ever call IssueLicense".into(),
        );
    }
    let mut allowed_clients = Vec::new();
    for (index, client) in raw.allowed_clients.iter().enumerate() {
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
        let operations = allowed_operations(problems, index, client.operations.as_deref());
        allowed_clients.push(AllowedClient {
            identity: ClientIdentity::parse_entry(identity),
            products,
            operations,
        });
    }
    Some(InternalSettings {
        addr: addr?,
        tls: TlsFiles { cert, key },
        client_ca,
        allowed_clients: AllowList::new(allowed_clients),
    })
}

/// The operations of `internal.allowed_clients[index]`: what it names
/// (each an RPC of the internal listener), or [`Operation::DEFAULT`] when it
/// names none.
fn allowed_operations(
    problems: &mut Problems,
    index: usize,
    names: Option<&[String]>,
) -> Vec<Operation> {
    let Some(names) = names else {
        return Operation::DEFAULT.to_vec();
    };
    if names.is_empty() {
        problems.push(format!(
            "internal.allowed_clients[{index}].operations is empty: this client could call nothing (name its operations, or remove the entry)"
        ));
    }
    let mut operations = Vec::new();
    for name in names {
        match Operation::parse(name.trim()) {
            Some(operation) if !operations.contains(&operation) => operations.push(operation),
            Some(_) => {}
            None => {
                let known: Vec<&str> = Operation::ALL.iter().map(|op| op.as_str()).collect();
                problems.push(format!(
                    "internal.allowed_clients[{index}].operations: {name:?} is not an operation of the internal listener ({})",
                    known.join(", ")
                ));
            }
        }
    }
    operations
}

/// `[cryptlex]`: the base URL, the account, the PAT, timeouts, and the
/// budget and breaker subsections.
fn cryptlex(
    problems: &mut Problems,
    raw: &RawCryptlex,
    pat_file: Option<PatFileContents>,
) -> CryptlexSettings {
    let base_url = match Url::parse(&raw.base_url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => url,
        _ => {
            problems.push(format!(
                "cryptlex.base_url: {:?} is not an http(s) URL such as https://api.cryptlex.com",
                raw.base_url
            ));
            Url::parse("https://api.cryptlex.com").expect("a valid literal URL")
        }
    };
    if base_url.scheme() == "http" && !base_url.host_str().is_some_and(is_loopback_host) {
        problems.push(format!(
            "cryptlex.base_url: http://{} is plain http to another machine: the personal access token and users' passwords would cross the network unencrypted; use https (plain http is allowed only to a loopback address, such as the sandbox on 127.0.0.1)",
            base_url.host_str().unwrap_or_default()
        ));
    }
    let account = match (non_empty(&raw.account_id), non_empty(&raw.account_alias)) {
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
    let admin_token = admin_token(problems, raw, pat_file);
    for (key, value) in [
        ("cryptlex.request_timeout", raw.request_timeout),
        ("cryptlex.connect_timeout", raw.connect_timeout),
    ] {
        if value.is_zero() {
            problems.push(format!("{key} must be above zero"));
        }
    }
    let budget = &raw.budget;
    let defaults = BudgetOptions::default();
    let reserves = budget.reserved_for_issuance + budget.reserved_for_sign_in;
    let mut fallback_share = defaults.fallback_share;
    let mut background_headroom = defaults.background_headroom;
    if budget.max_requests == 0 || budget.window.is_zero() {
        problems.push(
            "cryptlex.budget.max_requests and cryptlex.budget.window must be above zero".into(),
        );
    } else if reserves >= budget.max_requests {
        problems.push(format!(
            "cryptlex.budget: reserved_for_issuance + reserved_for_sign_in ({}) must be below max_requests ({}), or reads could never reach Cryptlex",
            reserves, budget.max_requests
        ));
    } else {
        let reads_share = budget.max_requests - reserves;
        // Unset, the defaults shrink to fit a smaller configured limit.
        fallback_share = budget.fallback_share.unwrap_or_else(|| {
            defaults
                .fallback_share
                .clamp(reserves + 1, budget.max_requests)
        });
        background_headroom = budget
            .background_headroom
            .unwrap_or_else(|| defaults.background_headroom.min(reads_share - 1));
        if fallback_share <= reserves || fallback_share > budget.max_requests {
            problems.push(format!(
                "cryptlex.budget.fallback_share ({fallback_share}) must be above reserved_for_issuance + reserved_for_sign_in ({reserves}), or reads could never start while the shared budget is unreachable, and at most max_requests ({})",
                budget.max_requests
            ));
        }
        if background_headroom >= reads_share {
            problems.push(format!(
                "cryptlex.budget.background_headroom ({background_headroom}) must be below the reads' share (max_requests - reserved_for_issuance - reserved_for_sign_in = {reads_share}), or background refreshes could never start"
            ));
        }
    }
    for (key, value) in [
        (
            "cryptlex.budget.per_session_reads",
            budget.per_session_reads,
        ),
        ("cryptlex.budget.unvouched_reads", budget.unvouched_reads),
    ] {
        if value == 0 {
            problems.push(format!("{key} must be above zero"));
        }
    }
    if raw.breaker.failure_threshold == 0 {
        problems.push("cryptlex.breaker.failure_threshold must be above zero".into());
    }
    CryptlexSettings {
        base_url,
        account,
        admin_token,
        request_timeout: raw.request_timeout,
        connect_timeout: raw.connect_timeout,
        max_retries: raw.max_retries,
        budget: BudgetOptions {
            max_requests: budget.max_requests,
            window: budget.window,
            reserved_for_issuance: budget.reserved_for_issuance,
            reserved_for_sign_in: budget.reserved_for_sign_in,
            max_read_wait: budget.max_read_wait,
            fallback_share,
            per_session_reads: budget.per_session_reads,
            unvouched_reads: budget.unvouched_reads,
            background_headroom,
            ..BudgetOptions::default()
        },
        breaker: BreakerOptions {
            failure_threshold: raw.breaker.failure_threshold,
            cooldown: raw.breaker.cooldown,
        },
    }
}

/// The PAT, from `cryptlex.pat` or the already-read `cryptlex.pat_file`.
fn admin_token(
    problems: &mut Problems,
    raw: &RawCryptlex,
    pat_file: Option<PatFileContents>,
) -> Option<AdminToken> {
    secret_inline_or_in_file(
        problems,
        ("cryptlex", "pat"),
        raw.pat.as_ref(),
        raw.pat_file.as_deref(),
        pat_file,
        "",
    )
    .map(AdminToken::new)
}

/// What an issuance attempt may take beyond the caller's deadline and one upstream request:
/// the ledger writes around it (claiming, settling) and scheduling on a busy host. The lease
/// keeper renews the lease on top, so this only has to cover ordinary delays.
const LEASE_MARGIN: Duration = Duration::from_secs(2);

/// The longest an issuance attempt can own its record, when the internal listener (the only
/// place licenses are issued) is enabled: every upstream call ends by the caller's deadline
/// (at most `public.max_deadline`), and one request may run `cryptlex.request_timeout`.
fn longest_attempt(raw: &RawSettings) -> Option<AttemptBound> {
    raw.internal.enabled.then_some(AttemptBound {
        max_deadline: raw.public.max_deadline,
        request_timeout: raw.cryptlex.request_timeout,
    })
}

/// The settings an issuance attempt's length follows from.
#[derive(Debug, Clone, Copy)]
struct AttemptBound {
    max_deadline: Duration,
    request_timeout: Duration,
}

impl AttemptBound {
    fn total(self) -> Duration {
        self.max_deadline + self.request_timeout + LEASE_MARGIN
    }
}

/// `[issuance]`: the default product, the request-id metadata key, the lease and the
/// settling period. `longest_attempt` is `None` when this gateway does not issue.
fn issuance(
    problems: &mut Problems,
    raw: &RawIssuance,
    longest_attempt: Option<AttemptBound>,
) -> IssuanceSettings {
    if raw.lease.is_zero() {
        problems.push("issuance.lease must be above zero".into());
    } else if let Some(bound) = longest_attempt
        && raw.lease <= bound.total()
    {
        // A lease that runs out mid-attempt lets a retry take the request id over, find no
        // license yet, and create a second one.
        problems.push(format!(
            "issuance.lease ({}) must be longer than the longest issuance attempt: public.max_deadline ({}) + cryptlex.request_timeout ({}) + {} = {}; raise issuance.lease or lower the others",
            humantime::format_duration(raw.lease),
            humantime::format_duration(bound.max_deadline),
            humantime::format_duration(bound.request_timeout),
            humantime::format_duration(LEASE_MARGIN),
            humantime::format_duration(bound.total()),
        ));
    }
    let default_product_id = match non_empty(&raw.default_product_id) {
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
    let metadata_key = raw.request_id_metadata_key.trim().to_owned();
    if metadata_key.is_empty() || metadata_key.len() > 64 {
        problems.push("issuance.request_id_metadata_key must be 1 to 64 characters".into());
    }
    let mut quantity_as_activations = Vec::new();
    for product in &raw.quantity_as_activations {
        match CryptlexId::parse("product", product) {
            Ok(id) => quantity_as_activations.push(id),
            Err(_) => problems.push(format!(
                "issuance.quantity_as_activations: {product:?} is not a Cryptlex id"
            )),
        }
    }
    IssuanceSettings {
        default_product_id,
        request_id_metadata_key: metadata_key,
        lease: raw.lease,
        wait_for_in_flight: raw.wait_for_in_flight,
        settle_after_unknown_outcome: raw.settle_after_unknown_outcome,
        quantity_as_activations,
    }
}

/// `[cache]`.
fn cache(problems: &mut Problems, raw: &RawCache) {
    if raw.max_entries == 0 {
        problems.push("cache.max_entries must be above zero".into());
    }
    // Below one entry's overhead nothing could ever be kept.
    if raw.max_bytes < 4096 {
        problems.push("cache.max_bytes must be at least 4096".into());
    }
    if raw.max_age < raw.fresh_for {
        problems.push(format!(
            "cache.max_age ({}) must be at least cache.fresh_for ({})",
            humantime::format_duration(raw.max_age),
            humantime::format_duration(raw.fresh_for)
        ));
    }
}

/// `[limits]`: the front door. `max_deadline` is `public.max_deadline`,
/// which the request timeout must exceed so that it never cuts a call that
/// is within its deadline.
fn limits(problems: &mut Problems, raw: &RawLimits, max_deadline: Duration) {
    if let Some(header) = &raw.client_address_header
        && http::HeaderName::from_bytes(header.trim().as_bytes()).is_err()
    {
        problems.push(format!(
            "limits.client_address_header: {header:?} is not a valid header name"
        ));
    }
    for (key, is_zero) in [
        ("max_concurrent_requests", raw.max_concurrent_requests == 0),
        ("request_body_timeout", raw.request_body_timeout.is_zero()),
        (
            "max_request_message_bytes",
            raw.max_request_message_bytes == 0,
        ),
        ("max_header_list_bytes", raw.max_header_list_bytes == 0),
        ("max_concurrent_streams", raw.max_concurrent_streams == 0),
        (
            "max_connections_per_address",
            raw.max_connections_per_address == 0,
        ),
        (
            "idle_connection_timeout",
            raw.idle_connection_timeout.is_zero(),
        ),
        (
            "tls_client_hello_timeout",
            raw.tls_client_hello_timeout.is_zero(),
        ),
        (
            "max_concurrent_tls_handshakes",
            raw.max_concurrent_tls_handshakes == 0,
        ),
        (
            "max_tls_handshakes_per_address",
            raw.max_tls_handshakes_per_address == 0,
        ),
        (
            "password_reset_requests_per_email",
            raw.password_reset_requests_per_email == 0,
        ),
        (
            "password_reset_email_window",
            raw.password_reset_email_window.is_zero(),
        ),
        (
            "password_reset_requests_per_address",
            raw.password_reset_requests_per_address == 0,
        ),
        (
            "password_reset_address_window",
            raw.password_reset_address_window.is_zero(),
        ),
    ] {
        if is_zero {
            problems.push(format!("limits.{key} must be above zero"));
        }
    }
    if raw.request_timeout <= max_deadline {
        problems.push(format!(
            "limits.request_timeout ({}) must be above public.max_deadline ({}), or it would cut calls within their deadline",
            humantime::format_duration(raw.request_timeout),
            humantime::format_duration(max_deadline)
        ));
    }
    if raw.request_body_timeout > raw.request_timeout {
        problems.push("limits.request_body_timeout must be at most limits.request_timeout".into());
    }
    if raw.tls_client_hello_timeout > raw.tls_handshake_timeout {
        problems.push(
            "limits.tls_client_hello_timeout must be at most limits.tls_handshake_timeout".into(),
        );
    }
    if !(1..=MAX_TRUSTED_PROXY_HOPS).contains(&raw.trusted_proxy_hops) {
        problems.push(format!(
            "limits.trusted_proxy_hops must be 1 to {MAX_TRUSTED_PROXY_HOPS} (the proxies in front of the gateway that append to limits.client_address_header), not {}",
            raw.trusted_proxy_hops
        ));
    }
    if raw.login_backoff_base.is_zero() || raw.login_backoff_max < raw.login_backoff_base {
        problems.push(
            "limits.login_backoff_base must be above zero and at most limits.login_backoff_max"
                .into(),
        );
    }
    if raw.login_known_addresses_per_email > MAX_KNOWN_ADDRESSES_PER_EMAIL {
        problems.push(format!(
            "limits.login_known_addresses_per_email must be at most {MAX_KNOWN_ADDRESSES_PER_EMAIL}"
        ));
    }
    if raw.upstream_calls_per_address > 0 && raw.upstream_address_window.is_zero() {
        problems.push(
            "limits.upstream_address_window must be above zero when limits.upstream_calls_per_address is set".into(),
        );
    }
    if raw.max_tracked_emails == 0 || raw.max_tracked_addresses == 0 {
        problems.push(
            "limits.max_tracked_emails and limits.max_tracked_addresses must be above zero".into(),
        );
    }
}

/// The most proxies `limits.trusted_proxy_hops` may count.
const MAX_TRUSTED_PROXY_HOPS: u8 = 10;
/// The most networks `limits.login_known_addresses_per_email` may keep.
const MAX_KNOWN_ADDRESSES_PER_EMAIL: usize = 16;

/// `[ledger]`: a SQLite or PostgreSQL URL.
fn ledger(problems: &mut Problems, raw: &RawLedger) -> LedgerSettings {
    let url = raw.url.trim().to_owned();
    if !(url.starts_with("sqlite:")
        || url.starts_with("postgres://")
        || url.starts_with("postgresql://"))
    {
        problems.push(format!(
            "ledger.url must start with sqlite:, postgres:// or postgresql:// (got {:?})",
            redact_url_password(&url)
        ));
    }
    if sqlite_without_a_file(&url) {
        problems.push(
            "ledger.url names an in-memory SQLite database (:memory:, mode=memory, or no file name), which forgets every request when the process stops: a payment retried after a restart would get a second license; name a file (sqlite://path/to/ledger.db) or use PostgreSQL".into(),
        );
    }
    if raw.max_connections == 0 {
        problems.push("ledger.max_connections must be above zero".into());
    }
    LedgerSettings {
        url,
        schema: raw.schema.clone(),
        max_connections: raw.max_connections,
    }
}

/// Whether a SQLite URL names no durable file, read as sqlx reads it:
/// `:memory:`, `mode=memory`, or an empty name (a temporary database that
/// SQLite deletes when it is closed).
fn sqlite_without_a_file(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("sqlite:") else {
        return false;
    };
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let (database, params) = rest.split_once('?').unwrap_or((rest, ""));
    database.is_empty()
        || database.contains(":memory:")
        || url::form_urlencoded::parse(params.as_bytes())
            .any(|(key, value)| key == "mode" && value == "memory")
}

/// `[log]`: the level must be a valid `tracing` filter.
fn log(problems: &mut Problems, raw: &RawLog) {
    if let Err(error) = tracing_subscriber::EnvFilter::try_new(&raw.level) {
        problems.push(format!(
            "log.level {:?} is not a valid filter: {error}",
            raw.level
        ));
    }
}

/// `[admin]`: the metrics and probes listener's address, when enabled.
fn admin(problems: &mut Problems, raw: &RawAdmin) -> Option<SocketAddr> {
    if raw.enabled {
        parse_addr(problems, "admin.addr", &raw.addr)
    } else {
        None
    }
}

/// `[otlp]`: trace export, which needs the `otlp` cargo feature.
fn otlp(problems: &mut Problems, raw: &RawOtlp) -> Option<OtlpSettings> {
    if !raw.enabled {
        return None;
    }
    if !cfg!(feature = "otlp") {
        problems.push(
            "otlp.enabled = true, but this build has no OTLP support (build with --features otlp)"
                .into(),
        );
    }
    match Url::parse(&raw.endpoint) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {
            Some(OtlpSettings {
                endpoint: url,
                service_name: raw.service_name.clone(),
            })
        }
        _ => {
            problems.push(format!(
                "otlp.endpoint: {:?} is not an http(s) URL such as http://otel-collector:4318/v1/traces",
                raw.endpoint
            ));
            None
        }
    }
}

/// The largest `webhook.max_body_bytes`: a delivery is one DTO, a few KiB;
/// the bound keeps a signed-or-not body's memory small.
const MAX_WEBHOOK_BODY_BYTES: usize = 16 * 1024 * 1024;
/// The longest `webhook.replay_window`: Cryptlex retries within minutes, and
/// a longer window only lets older deliveries through.
const MAX_WEBHOOK_REPLAY_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// `[webhook]`: the path, the secret (from `secret` or the already-read
/// `secret_file`), the replay window and the body bound.
fn webhook(
    problems: &mut Problems,
    raw: &RawWebhook,
    secret_file: Option<PatFileContents>,
) -> WebhookSettings {
    let path = raw.path.trim().to_owned();
    // A gRPC path is `/package.Service/Method`; ours must not shadow one.
    let is_grpc_like = path
        .trim_start_matches('/')
        .split('/')
        .next()
        .is_some_and(|first| first.contains('.'));
    let is_plain_path = path.starts_with('/')
        && path.len() > 1
        && path.len() <= 256
        && !path.contains(['?', '#'])
        && path.parse::<http::uri::PathAndQuery>().is_ok();
    if !is_plain_path || is_grpc_like {
        problems.push(format!(
            "webhook.path {path:?} must be an absolute path such as /webhooks/cryptlex (no query, no dot in its first segment, which gRPC services use)"
        ));
    }
    if raw.replay_window.is_zero() || raw.replay_window > MAX_WEBHOOK_REPLAY_WINDOW {
        problems.push("webhook.replay_window must be above zero and at most 24h".into());
    }
    if raw.max_body_bytes == 0 || raw.max_body_bytes > MAX_WEBHOOK_BODY_BYTES {
        problems.push(format!(
            "webhook.max_body_bytes must be above zero and at most {MAX_WEBHOOK_BODY_BYTES}"
        ));
    }
    let secret = secret_inline_or_in_file(
        problems,
        ("webhook", "secret"),
        raw.secret.as_ref(),
        raw.secret_file.as_deref(),
        secret_file,
        " (unset it to turn the endpoint off)",
    );
    WebhookSettings {
        path,
        secret,
        replay_window: raw.replay_window,
        max_body_bytes: raw.max_body_bytes,
    }
}

/// A secret set inline (`section.name`) or in a file (`section.name_file`,
/// already read into `contents`), trimmed; `None` with a problem when both
/// are set, it is empty (`empty_hint` says what to do instead) or the file
/// could not be read, and `None` when neither is set. Messages never show
/// the secret.
fn secret_inline_or_in_file(
    problems: &mut Problems,
    (section, name): (&str, &str),
    inline: Option<&SecretString>,
    file: Option<&std::path::Path>,
    contents: Option<PatFileContents>,
    empty_hint: &str,
) -> Option<SecretString> {
    let trimmed = |secret: &str| SecretString::from(secret.trim().to_owned());
    match (inline, file, contents) {
        (Some(_), Some(_), _) => {
            problems.push(format!(
                "{section}: {name} and {name}_file are both set; set one"
            ));
            None
        }
        (Some(secret), None, _) if secret.expose_secret().trim().is_empty() => {
            problems.push(format!("{section}.{name} is empty{empty_hint}"));
            None
        }
        (Some(secret), None, _) => Some(trimmed(secret.expose_secret())),
        (None, Some(path), Some(Ok(contents))) if contents.trim().is_empty() => {
            problems.push(format!("{section}.{name}_file {} is empty", path.display()));
            None
        }
        (None, Some(_), Some(Ok(contents))) => Some(trimmed(&contents)),
        (None, Some(path), Some(Err(error))) => {
            problems.push(format!(
                "{section}.{name}_file {} cannot be read: {error}",
                path.display()
            ));
            None
        }
        (None, Some(path), None) => {
            problems.push(format!(
                "{section}.{name}_file {} was not read",
                path.display()
            ));
            None
        }
        (None, None, _) => None,
    }
}

/// Returns the warning for a `webhook.secret_file` that others can read
/// (whoever reads it can forge deliveries that empty the caches), judged as
/// [`warnings`] judges the PAT file.
pub(super) fn webhook_warnings(
    raw: &RawSettings,
    secret_file: Option<PatFileAccess>,
) -> Vec<String> {
    let (Some(path), Some(access)) = (&raw.webhook.secret_file, secret_file) else {
        return Vec::new();
    };
    let readers = if access.mode & 0o004 != 0 {
        Some("every user of this machine")
    } else if access.mode & 0o040 != 0 && !access.group_is_ours {
        Some("a group the gateway does not run as")
    } else {
        None
    };
    readers
        .map(|readers| {
            format!(
                "webhook.secret_file {} can be read by {readers} (mode {:04o}), and whoever holds the secret can send webhooks the gateway trusts: make it readable by the gateway only (chmod 600, or defaultMode 0400 on a Kubernetes Secret volume)",
                path.display(),
                access.mode
            )
        })
        .into_iter()
        .collect()
}

/// Who can read `cryptlex.pat_file`, from its Unix permissions (read by the
/// caller: this module does no I/O).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PatFileAccess {
    /// The permission bits (`0o777` at most).
    pub(super) mode: u32,
    /// Whether the file's group is the group the gateway runs as.
    pub(super) group_is_ours: bool,
}

/// Returns what `raw` allows but an operator should look at, one line each:
/// an admin listener reachable from other machines, a PAT file others can
/// read, a PostgreSQL ledger whose server is not verified. These are
/// warnings, not problems: each can be right for a deployment (a pod's admin
/// port behind a NetworkPolicy; a PAT file whose mode the platform sets, as
/// Docker's secrets at 0444), and refusing to start would not make it safer.
pub(super) fn warnings(raw: &RawSettings, pat_file: Option<PatFileAccess>) -> Vec<String> {
    let mut warnings = Vec::new();
    if raw.admin.enabled
        && let Ok(addr) = raw.admin.addr.parse::<SocketAddr>()
        && !addr.ip().is_loopback()
    {
        warnings.push(format!(
            "admin.addr {addr} is reachable from other machines, and /metrics, /healthz and /readyz answer anyone without credentials: bind 127.0.0.1, or let only the monitoring system reach the port (a NetworkPolicy, a firewall)"
        ));
    }
    if let (Some(path), Some(access)) = (&raw.cryptlex.pat_file, pat_file) {
        // The group bit alone is accepted when the group is the gateway's
        // own: that is how Kubernetes hands a non-root container its Secret
        // files (the pod's fsGroup, at least 0440).
        let readers = if access.mode & 0o004 != 0 {
            Some("every user of this machine")
        } else if access.mode & 0o040 != 0 && !access.group_is_ours {
            Some("a group the gateway does not run as")
        } else {
            None
        };
        if let Some(readers) = readers {
            warnings.push(format!(
                "cryptlex.pat_file {} can be read by {readers} (mode {:04o}), and the PAT can create licenses and users in the Cryptlex account: make it readable by the gateway only (chmod 600, or defaultMode 0400 on a Kubernetes Secret volume)",
                path.display(),
                access.mode
            ));
        }
    }
    if let Some(mode) = unverified_postgres_tls(raw.ledger.url.trim()) {
        warnings.push(format!(
            "ledger.url: sslmode={mode} does not check the database server's certificate and host name, so whoever sits on the path can pose as the ledger: use sslmode=verify-full, with sslrootcert=/path/to/ca.crt when the server's CA is not a public one"
        ));
    }
    warnings
}

/// The `sslmode` of a PostgreSQL URL to another machine when it is weaker
/// than `verify-full`, or `None` (not PostgreSQL, loopback or a Unix socket,
/// or verified).
fn unverified_postgres_tls(url: &str) -> Option<String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return None;
    }
    let parsed = Url::parse(url).ok()?;
    let param = |names: &[&str]| {
        parsed
            .query_pairs()
            .find(|(key, _)| names.contains(&key.as_ref()))
            .map(|(_, value)| value.into_owned())
    };
    // sqlx lets `host=` override the URL's host; a path is a Unix socket.
    let host = param(&["host"]).or_else(|| parsed.host_str().map(str::to_owned))?;
    if host.starts_with('/') || is_loopback_host(&host) {
        return None;
    }
    match param(&["sslmode", "ssl-mode"]) {
        Some(mode) if mode.eq_ignore_ascii_case("verify-full") => None,
        Some(mode) => Some(mode),
        // sqlx's default (unless PGSSLMODE says otherwise).
        None => Some("prefer".to_owned()),
    }
}

/// Whether `host` (as a URL spells it) is this machine: `localhost` or a
/// loopback address.
fn is_loopback_host(host: &str) -> bool {
    let unbracketed = host
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(host);
    unbracketed.eq_ignore_ascii_case("localhost")
        || unbracketed
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn parse_addr(problems: &mut Problems, key: &str, value: &str) -> Option<SocketAddr> {
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

/// The trimmed value, or `None` when unset or blank.
fn non_empty(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid public-only configuration, changed by `change`.
    fn raw_with(change: impl FnOnce(&mut RawSettings)) -> RawSettings {
        let mut raw = RawSettings::default();
        raw.cryptlex.account_alias = Some("acme".into());
        raw.internal.enabled = false;
        raw.sign_up.enabled = false;
        change(&mut raw);
        raw
    }

    /// Asserts that `lines` is one line mentioning `expected`.
    #[track_caller]
    fn assert_one(lines: &[String], expected: &str, case: &str) {
        assert!(
            lines.len() == 1 && lines[0].contains(expected),
            "{case}: {lines:?}"
        );
    }

    fn problems(raw: &RawSettings) -> Vec<String> {
        settings(raw, None, None)
            .err()
            .map(|error| error.problems)
            .unwrap_or_default()
    }

    #[test]
    fn plain_http_to_a_remote_cryptlex_is_refused_and_loopback_http_is_allowed() {
        for remote in [
            "http://api.cryptlex.com",
            "http://10.0.0.7:8080/",
            "http://localhost.example.com",
        ] {
            let raw = raw_with(|raw| raw.cryptlex.base_url = remote.into());
            assert_one(&problems(&raw), "plain http to another machine", remote);
        }
        for local in [
            "http://127.0.0.1:8089",
            "http://127.1.2.3",
            "http://localhost:8089/",
            "http://[::1]:8089",
            "https://api.cryptlex.com",
            "https://api.eu.cryptlex.com",
        ] {
            let raw = raw_with(|raw| raw.cryptlex.base_url = local.into());
            assert_eq!(problems(&raw), Vec::<String>::new(), "{local}");
        }
    }

    #[test]
    fn budget_shares_are_checked_and_unset_ones_fit_a_smaller_limit() {
        let fits = |raw: &RawSettings| settings(raw, None, None).expect("valid").cryptlex.budget;
        let defaults = fits(&raw_with(|_| {}));
        assert_eq!(
            (
                defaults.fallback_share,
                defaults.per_session_reads,
                defaults.unvouched_reads,
                defaults.background_headroom
            ),
            (25, 12, 10, 10)
        );
        // 20 calls, 15 reserved: unset shares shrink to what is left.
        let small = fits(&raw_with(|raw| raw.cryptlex.budget.max_requests = 20));
        assert_eq!((small.fallback_share, small.background_headroom), (20, 4));

        for (case, change, expected) in [
            (
                "fallback above the limit",
                (|raw: &mut RawSettings| raw.cryptlex.budget.fallback_share = Some(51))
                    as fn(&mut RawSettings),
                "fallback_share (51)",
            ),
            (
                "fallback within the reserves",
                |raw| raw.cryptlex.budget.fallback_share = Some(15),
                "fallback_share (15)",
            ),
            (
                "headroom the size of the reads' share",
                |raw| raw.cryptlex.budget.background_headroom = Some(35),
                "background_headroom (35)",
            ),
            (
                "no reads per session",
                |raw| raw.cryptlex.budget.per_session_reads = 0,
                "per_session_reads",
            ),
            (
                "no unvouched reads",
                |raw| raw.cryptlex.budget.unvouched_reads = 0,
                "unvouched_reads",
            ),
        ] {
            assert_one(&problems(&raw_with(change)), expected, case);
        }
    }

    #[test]
    fn an_in_memory_sqlite_ledger_is_refused() {
        for memory in [
            "sqlite::memory:",
            "sqlite://:memory:",
            "sqlite://?mode=memory",
            "sqlite://ledger.db?mode=memory&cache=shared",
            "sqlite://",
            "sqlite:",
        ] {
            let raw = raw_with(|raw| raw.ledger.url = memory.into());
            assert_one(&problems(&raw), "in-memory SQLite", memory);
        }
        for file in [
            "sqlite://licensing-gateway.db",
            "sqlite:///var/lib/gateway/ledger.db?mode=rwc",
            "postgres://gateway@db:5432/ledger?sslmode=verify-full",
        ] {
            let raw = raw_with(|raw| raw.ledger.url = file.into());
            assert_eq!(problems(&raw), Vec::<String>::new(), "{file}");
        }
    }

    #[test]
    fn an_admin_listener_off_loopback_is_a_warning() {
        for open in ["0.0.0.0:9090", "[::]:9090", "10.0.0.7:9090"] {
            let raw = raw_with(|raw| raw.admin.addr = open.into());
            assert_one(&warnings(&raw, None), "admin.addr", open);
        }
        let local = raw_with(|raw| raw.admin.addr = "127.0.0.1:9090".into());
        assert_eq!(warnings(&local, None), Vec::<String>::new());
        let off = raw_with(|raw| {
            raw.admin.addr = "0.0.0.0:9090".into();
            raw.admin.enabled = false;
        });
        assert_eq!(warnings(&off, None), Vec::<String>::new());
    }

    #[test]
    fn a_pat_file_others_can_read_is_a_warning_naming_who() {
        let raw = raw_with(|raw| raw.cryptlex.pat_file = Some("/etc/gateway/pat".into()));
        let warn = |mode, group_is_ours| {
            warnings(
                &raw,
                Some(PatFileAccess {
                    mode,
                    group_is_ours,
                }),
            )
        };
        assert_one(
            &warn(0o644, true),
            "every user of this machine (mode 0644)",
            "o+r",
        );
        assert_one(
            &warn(0o640, false),
            "a group the gateway does not run as (mode 0640)",
            "g+r",
        );
        for private in [(0o600, false), (0o400, false), (0o440, true), (0o640, true)] {
            assert_eq!(
                warn(private.0, private.1),
                Vec::<String>::new(),
                "{private:?}"
            );
        }
    }

    #[test]
    fn a_postgres_ledger_that_does_not_verify_its_server_is_a_warning() {
        for (url, mode) in [
            (
                "postgres://gateway@db.internal:5432/ledger?sslmode=require",
                "require",
            ),
            (
                "postgres://gateway@db.internal/ledger?sslmode=verify-ca",
                "verify-ca",
            ),
            ("postgresql://gateway@db.internal/ledger", "prefer"),
            (
                "postgres://gateway@127.0.0.1/ledger?host=db.internal",
                "prefer",
            ),
        ] {
            let raw = raw_with(|raw| raw.ledger.url = url.into());
            let found = warnings(&raw, None);
            assert_one(&found, &format!("sslmode={mode} "), url);
            assert!(found[0].contains("verify-full") && found[0].contains("sslrootcert"));
        }
        for fine in [
            "postgres://gateway@db.internal/ledger?sslmode=verify-full&sslrootcert=/etc/ca.crt",
            "postgres://postgres@127.0.0.1:5432/test",
            "postgres://postgres@localhost/test?sslmode=disable",
            "postgres://gateway@/ledger?host=/run/postgresql",
            "sqlite://ledger.db",
        ] {
            let raw = raw_with(|raw| raw.ledger.url = fine.into());
            assert_eq!(warnings(&raw, None), Vec::<String>::new(), "{fine}");
        }
    }

    #[test]
    fn the_webhook_is_off_without_a_secret_and_on_with_one_trimmed() {
        let off = settings(&raw_with(|_| {}), None, None).expect("valid");
        assert!(off.webhook.secret.is_none());
        assert_eq!(off.webhook.path, "/webhooks/cryptlex");
        assert_eq!(off.webhook.replay_window, Duration::from_secs(600));
        assert_eq!(off.webhook.max_body_bytes, 256 * 1024);

        let raw = raw_with(|raw| raw.webhook.secret = Some(" whsec-value \n".into()));
        let on = settings(&raw, None, None).expect("valid");
        assert_eq!(
            on.webhook
                .secret
                .as_ref()
                .map(|s| s.expose_secret().to_owned()),
            Some("whsec-value".to_owned())
        );
        assert!(!format!("{on:?}").contains("whsec-value"));

        let raw = raw_with(|raw| raw.webhook.secret_file = Some("/run/secrets/webhook".into()));
        let from_file = settings(&raw, None, Some(Ok("file-secret\n".into()))).expect("valid");
        assert_eq!(
            from_file
                .webhook
                .secret
                .as_ref()
                .map(|s| s.expose_secret().to_owned()),
            Some("file-secret".to_owned())
        );
    }

    #[test]
    fn a_webhook_secret_set_twice_empty_or_unreadable_is_refused_without_showing_it() {
        let both = raw_with(|raw| {
            raw.webhook.secret = Some("inline-secret".into());
            raw.webhook.secret_file = Some("/run/secrets/webhook".into());
        });
        let found = settings(&both, None, Some(Ok("file-secret".into())))
            .expect_err("both set")
            .problems;
        assert_one(&found, "both set", "both");
        assert!(!found[0].contains("inline-secret") && !found[0].contains("file-secret"));

        let empty = raw_with(|raw| raw.webhook.secret = Some("  ".into()));
        assert_one(&problems(&empty), "webhook.secret is empty", "empty");

        let file = raw_with(|raw| raw.webhook.secret_file = Some("/nope".into()));
        let unreadable = settings(
            &file,
            None,
            Some(Err(std::io::Error::from(std::io::ErrorKind::NotFound))),
        )
        .expect_err("unreadable")
        .problems;
        assert_one(&unreadable, "cannot be read", "unreadable");
        let blank = settings(&file, None, Some(Ok("\n".into())))
            .expect_err("blank")
            .problems;
        assert_one(&blank, "is empty", "blank file");
    }

    #[test]
    fn webhook_paths_bodies_and_windows_out_of_bounds_are_refused() {
        for path in [
            "webhooks",
            "/",
            "/licensing.v1.UserService/Login",
            "/a?b=1",
            "",
        ] {
            let raw = raw_with(|raw| raw.webhook.path = path.into());
            assert_one(&problems(&raw), "webhook.path", path);
        }
        let raw = raw_with(|raw| raw.webhook.path = "/hooks/cryptlex-1".into());
        assert_eq!(problems(&raw), Vec::<String>::new());
        let raw = raw_with(|raw| raw.webhook.max_body_bytes = 0);
        assert_one(&problems(&raw), "webhook.max_body_bytes", "zero body");
        let raw = raw_with(|raw| raw.webhook.replay_window = Duration::ZERO);
        assert_one(&problems(&raw), "webhook.replay_window", "zero window");
        let raw = raw_with(|raw| raw.webhook.replay_window = Duration::from_secs(2 * 86_400));
        assert_one(&problems(&raw), "webhook.replay_window", "long window");
    }

    #[test]
    fn a_webhook_secret_file_others_can_read_is_a_warning() {
        let raw = raw_with(|raw| raw.webhook.secret_file = Some("/run/secrets/webhook".into()));
        let open = PatFileAccess {
            mode: 0o644,
            group_is_ours: false,
        };
        assert_one(
            &webhook_warnings(&raw, Some(open)),
            "webhook.secret_file",
            "0644",
        );
        let group = PatFileAccess {
            mode: 0o440,
            group_is_ours: true,
        };
        assert_eq!(webhook_warnings(&raw, Some(group)), Vec::<String>::new());
        let private = PatFileAccess {
            mode: 0o600,
            group_is_ours: false,
        };
        assert_eq!(webhook_warnings(&raw, Some(private)), Vec::<String>::new());
    }

    #[test]
    fn the_cache_keeps_answers_no_longer_fresh_than_its_maximum_age_and_within_a_usable_size() {
        let raw = raw_with(|raw| {
            raw.cache.fresh_for = Duration::from_secs(600);
            raw.cache.max_age = Duration::from_secs(60);
        });
        assert_one(&problems(&raw), "cache.max_age", "max_age below fresh_for");
        let raw = raw_with(|raw| raw.cache.max_bytes = 100);
        assert_one(&problems(&raw), "cache.max_bytes", "max_bytes too small");
        let raw = raw_with(|raw| raw.cache.fresh_for = Duration::ZERO);
        assert!(problems(&raw).is_empty(), "reuse may be turned off");
    }

    #[test]
    fn the_old_cache_ttl_key_still_sets_fresh_for() {
        let cache: RawCache = serde_json::from_str(r#"{"ttl": "45s"}"#).expect("parses");
        assert_eq!(cache.fresh_for, Duration::from_secs(45));
        assert_eq!(cache.max_age, Duration::from_secs(600), "the default");
        let cache: RawCache = serde_json::from_str(r#"{"fresh_for": "1s"}"#).expect("parses");
        assert_eq!(cache.fresh_for, Duration::from_secs(1));
    }
}

//! Validation: one function per configuration section, each turning its raw
//! shape into typed settings and recording every problem it finds, naming the
//! key to fix. Nothing here reads files or the environment: the PAT file's
//! contents arrive already read (see [`super::RawSettings::validate`]), so
//! every rule can be tested with literal values.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::raw::{
    RawAdmin, RawCache, RawCryptlex, RawInternal, RawIssuance, RawLedger, RawLimits, RawLog,
    RawOtlp, RawPublic, RawSettings,
};
use super::settings::{
    CryptlexSettings, InternalSettings, IssuanceSettings, LedgerSettings, PublicSettings, Settings,
    TlsFiles,
};
use super::{ConfigError, redact_url_password};
use crate::cryptlex::{Account, BreakerOptions, BudgetOptions};
use crate::domain::{AdminToken, AllowList, AllowedClient, ClientIdentity, CryptlexId};
use crate::telemetry::OtlpSettings;

/// What reading `cryptlex.pat_file` gave, when it is set.
pub(super) type PatFileContents = Result<String, std::io::Error>;

/// The problems found so far; every section adds to the same list so the
/// operator sees all of them at once.
type Problems = Vec<String>;

/// Validates every section of `raw`. `pat_file` is what reading
/// `cryptlex.pat_file` returned, or `None` when it is not set.
pub(super) fn settings(
    raw: &RawSettings,
    pat_file: Option<PatFileContents>,
) -> Result<Settings, ConfigError> {
    let mut problems = Problems::new();
    let public = public(&mut problems, &raw.public);
    let internal = internal(&mut problems, &raw.internal);
    let cryptlex = cryptlex(&mut problems, &raw.cryptlex, pat_file);
    if cryptlex.admin_token.is_none() && (raw.sign_up.enabled || internal.is_some()) {
        problems.push(
            "cryptlex: a personal access token (pat_file, or LICENSING_GATEWAY__CRYPTLEX__PAT) is required for sign-up and the internal listener; or set sign_up.enabled = false and internal.enabled = false".into(),
        );
    }
    let issuance = issuance(&mut problems, &raw.issuance);
    cache(&mut problems, &raw.cache);
    limits(&mut problems, &raw.limits, raw.public.max_deadline);
    let ledger = ledger(&mut problems, &raw.ledger);
    log(&mut problems, &raw.log);
    let admin_addr = admin(&mut problems, &raw.admin);
    let otlp = otlp(&mut problems, &raw.otlp);

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
        allowed_clients.push(AllowedClient {
            identity: ClientIdentity::parse_entry(identity),
            products,
        });
    }
    Some(InternalSettings {
        addr: addr?,
        tls: TlsFiles { cert, key },
        client_ca,
        allowed_clients: AllowList::new(allowed_clients),
    })
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
    if budget.max_requests == 0 || budget.window.is_zero() {
        problems.push(
            "cryptlex.budget.max_requests and cryptlex.budget.window must be above zero".into(),
        );
    } else if budget.reserved_for_issuance + budget.reserved_for_sign_in >= budget.max_requests {
        problems.push(format!(
            "cryptlex.budget: reserved_for_issuance + reserved_for_sign_in ({}) must be below max_requests ({}), or reads could never reach Cryptlex",
            budget.reserved_for_issuance + budget.reserved_for_sign_in,
            budget.max_requests
        ));
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
    let trimmed = |secret: &str| AdminToken::new(SecretString::from(secret.trim().to_owned()));
    match (&raw.pat, &raw.pat_file, pat_file) {
        (Some(_), Some(_), _) => {
            problems.push("cryptlex: pat and pat_file are both set; set one".into());
            None
        }
        (Some(pat), None, _) if pat.expose_secret().trim().is_empty() => {
            problems.push("cryptlex.pat is empty".into());
            None
        }
        (Some(pat), None, _) => Some(trimmed(pat.expose_secret())),
        (None, Some(path), Some(Ok(contents))) if contents.trim().is_empty() => {
            problems.push(format!("cryptlex.pat_file {} is empty", path.display()));
            None
        }
        (None, Some(_), Some(Ok(contents))) => Some(trimmed(&contents)),
        (None, Some(path), Some(Err(error))) => {
            problems.push(format!(
                "cryptlex.pat_file {} cannot be read: {error}",
                path.display()
            ));
            None
        }
        (None, Some(path), None) => {
            problems.push(format!("cryptlex.pat_file {} was not read", path.display()));
            None
        }
        (None, None, _) => None,
    }
}

/// `[issuance]`: the default product, the request-id metadata key, the lease.
fn issuance(problems: &mut Problems, raw: &RawIssuance) -> IssuanceSettings {
    if raw.lease.is_zero() {
        problems.push("issuance.lease must be above zero".into());
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
    IssuanceSettings {
        default_product_id,
        request_id_metadata_key: metadata_key,
        lease: raw.lease,
        wait_for_in_flight: raw.wait_for_in_flight,
    }
}

/// `[cache]`.
fn cache(problems: &mut Problems, raw: &RawCache) {
    if raw.max_entries == 0 {
        problems.push("cache.max_entries must be above zero".into());
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
}

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
    if raw.max_connections == 0 {
        problems.push("ledger.max_connections must be above zero".into());
    }
    LedgerSettings {
        url,
        schema: raw.schema.clone(),
        max_connections: raw.max_connections,
    }
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

//! The validated settings: the typed tree the rest of the gateway reads.
//! Built only by [`super::RawSettings::validate`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use super::raw::{RawCache, RawLimits, RawLog};
use crate::cryptlex::{Account, BreakerOptions, BudgetOptions};
use crate::domain::{AdminToken, AllowList, CryptlexId};
use crate::telemetry::OtlpSettings;

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
    pub webhook: WebhookSettings,
}

/// Validated `[webhook]`.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// The path on the public listener (always routed, so that it answers
    /// 404 rather than a gRPC error while the endpoint is off).
    pub path: String,
    /// `None`: the endpoint is off.
    pub secret: Option<SecretString>,
    pub replay_window: Duration,
    pub max_body_bytes: usize,
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
    /// Who may call the internal listener, and for which products.
    pub allowed_clients: AllowList,
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
    pub budget: BudgetOptions,
    pub breaker: BreakerOptions,
}

/// Validated `[issuance]`.
#[derive(Debug, Clone)]
pub struct IssuanceSettings {
    pub default_product_id: Option<CryptlexId>,
    pub request_id_metadata_key: String,
    pub lease: Duration,
    pub wait_for_in_flight: Duration,
    pub settle_after_unknown_outcome: Duration,
    /// Products whose `IssueLicense` quantity becomes allowed activations of one license.
    pub quantity_as_activations: Vec<CryptlexId>,
}

/// Validated `[ledger]`.
#[derive(Debug, Clone)]
pub struct LedgerSettings {
    pub url: String,
    pub schema: Option<String>,
    pub max_connections: u32,
}

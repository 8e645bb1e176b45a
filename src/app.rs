//! Start-up: builds everything from [`Settings`], binds the listeners (port 0
//! works, for tests) and serves until told to stop.
//!
//! Three listeners: public (gRPC + gRPC-Web, TLS optional), internal (mutual
//! TLS) and admin (HTTP: metrics and probes). TLS certificates are reloaded
//! while serving (see [`crate::grpc::reload`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use http::HeaderValue;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

use crate::admin::{self, AdminState, Readiness};
use crate::config::Settings;
use crate::cryptlex::{self, ClientOptions};
use crate::grpc::ledger_health;
use crate::grpc::reload::{self, ReloadableTls, tls_incoming};
use crate::grpc::server::{Introspection, PublicOptions, serve_internal, serve_public};
use crate::grpc::{ClientAddressPolicy, Deadlines, IssuanceApi, UserApi, pb};
use crate::ledger::{Ledger, LedgerOptions};
use crate::licensing::read_cache::CacheOptions;
use crate::licensing::throttle::ThrottleOptions;
use crate::licensing::{IssuanceOptions, Licensing, LicensingOptions};
use crate::metrics;

/// A health-check service name that stays SERVING until the process exits
/// (unlike `""` and the API services, which turn NOT_SERVING while
/// draining), for Kubernetes liveness probes.
pub const LIVENESS_SERVICE: &str = "liveness";

/// ALPN of the public listener with TLS: HTTP/2 for gRPC, HTTP/1.1 for
/// gRPC-Web from fetch-only clients (tonic's own TLS server offers only
/// `h2`, which refuses clients that offer only `http/1.1`).
const PUBLIC_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];
/// ALPN of the internal listener: gRPC only.
const INTERNAL_ALPN: &[&[u8]] = &[b"h2"];

type UserServer = pb::user_service_server::UserServiceServer<UserApi>;
type IssuanceServer = pb::issuance_service_server::IssuanceServiceServer<IssuanceApi>;

/// A built, bound gateway, ready to serve.
#[derive(Debug)]
pub struct Application {
    public: PublicListener,
    internal: Option<InternalListener>,
    admin: Option<AdminListener>,
    readiness: Readiness,
    tls_reload_interval: Duration,
    max_concurrent_requests: usize,
    drain_timeout: Duration,
    licensing: Licensing,
}

#[derive(Debug)]
struct PublicListener {
    listener: TcpListener,
    addr: SocketAddr,
    options: PublicOptions,
    /// Server TLS; `None` serves plaintext h2c (behind an ingress).
    tls: Option<Arc<ReloadableTls>>,
    introspection: Introspection,
    api: UserApi,
}

#[derive(Debug)]
struct InternalListener {
    listener: TcpListener,
    addr: SocketAddr,
    tls: Arc<ReloadableTls>,
    introspection: Introspection,
    api: IssuanceApi,
}

#[derive(Debug)]
struct AdminListener {
    listener: TcpListener,
    addr: SocketAddr,
    state: AdminState,
}

impl Application {
    /// Builds the gateway from validated settings and binds its listeners.
    ///
    /// Fails, naming the culprit, on unreadable or mismatched TLS files, an
    /// unreachable ledger database, or an address already in use.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        // Before anything records (the TLS loaders set expiry gauges).
        let prometheus = settings.admin_addr.map(|_| metrics::install());
        let readiness = Readiness::default();
        let licensing = build_licensing(&settings).await?;
        let deadlines = Deadlines {
            default: settings.public.default_deadline,
            max: settings.public.max_deadline,
        };
        let reserved_metadata_keys: Vec<String> = issuance_options(&settings)
            .reserved_keys()
            .iter()
            .map(|key| (*key).to_owned())
            .collect();

        let public_tls = match &settings.public.tls {
            Some(files) => Some(Arc::new(
                ReloadableTls::load("public", files, None, PUBLIC_ALPN).context("public TLS")?,
            )),
            None => None,
        };
        let cors_allowed_origins = settings
            .public
            .cors_allowed_origins
            .iter()
            .map(|origin| HeaderValue::from_str(origin))
            .collect::<Result<Vec<_>, _>>()
            .context("public.cors_allowed_origins")?;
        let listener = TcpListener::bind(settings.public.addr)
            .await
            .with_context(|| format!("binding the public listener on {}", settings.public.addr))?;
        let introspection = Introspection::new();
        introspection.health.set_serving::<UserServer>().await;
        introspection
            .health
            .set_service_status(LIVENESS_SERVICE, tonic_health::ServingStatus::Serving)
            .await;
        let public = PublicListener {
            addr: listener.local_addr()?,
            listener,
            options: PublicOptions {
                cors_allowed_origins,
                max_concurrent_requests: settings.limits.max_concurrent_requests,
            },
            tls: public_tls,
            introspection,
            api: UserApi::new(
                licensing.clone(),
                deadlines,
                ClientAddressPolicy::new(
                    settings.limits.client_address_header.as_deref(),
                    settings.limits.trusted_proxy_hops,
                ),
            ),
        };

        let internal = match &settings.internal {
            Some(internal) => {
                let tls = ReloadableTls::load(
                    "internal",
                    &internal.tls,
                    Some(&internal.client_ca),
                    INTERNAL_ALPN,
                )
                .context("internal listener TLS")?;
                let listener = TcpListener::bind(internal.addr).await.with_context(|| {
                    format!("binding the internal listener on {}", internal.addr)
                })?;
                let introspection = Introspection::new();
                introspection.health.set_serving::<IssuanceServer>().await;
                introspection
                    .health
                    .set_service_status(LIVENESS_SERVICE, tonic_health::ServingStatus::Serving)
                    .await;
                Some(InternalListener {
                    addr: listener.local_addr()?,
                    listener,
                    tls: Arc::new(tls),
                    introspection,
                    api: IssuanceApi::new(
                        licensing.clone(),
                        deadlines,
                        internal.allowed_clients.clone(),
                        reserved_metadata_keys,
                    ),
                })
            }
            None => None,
        };

        let admin = match (settings.admin_addr, prometheus) {
            (Some(addr), Some(prometheus)) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the admin listener on {addr}"))?;
                Some(AdminListener {
                    addr: listener.local_addr()?,
                    listener,
                    state: AdminState {
                        metrics: prometheus,
                        readiness: readiness.clone(),
                        ledger: licensing.ledger().cloned(),
                        licensing: Some(licensing.clone()),
                    },
                })
            }
            _ => None,
        };
        Ok(Self {
            public,
            internal,
            admin,
            readiness,
            tls_reload_interval: settings.tls_reload_interval,
            max_concurrent_requests: settings.limits.max_concurrent_requests,
            drain_timeout: settings.limits.drain_timeout,
            licensing,
        })
    }

    /// The use cases (for inspection: cache and budget state).
    pub fn licensing(&self) -> &Licensing {
        &self.licensing
    }

    /// The address the public listener is bound to.
    pub fn public_addr(&self) -> SocketAddr {
        self.public.addr
    }

    /// The address the internal listener is bound to, when enabled.
    pub fn internal_addr(&self) -> Option<SocketAddr> {
        self.internal.as_ref().map(|internal| internal.addr)
    }

    /// The address the admin (metrics and probes) listener is bound to, when
    /// enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|admin| admin.addr)
    }

    /// Serves until `shutdown` resolves, then reports NOT_SERVING (gRPC
    /// health) and 503 (`/readyz`), stops accepting, and lets calls in
    /// progress finish for at most the drain timeout. The admin listener
    /// stays up until the gRPC listeners have drained, so probes see it.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let readiness = self.readiness.clone();
        let public_health = self.public.introspection.health.clone();
        let internal_health = self
            .internal
            .as_ref()
            .map(|internal| internal.introspection.health.clone());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut receiver: tokio::sync::watch::Receiver<bool>| async move {
            let _ = receiver.wait_for(|stopped| *stopped).await;
        };

        // Certificates are reloaded until shutdown.
        let reloadable: Vec<Arc<ReloadableTls>> = self
            .public
            .tls
            .iter()
            .chain(self.internal.as_ref().map(|internal| &internal.tls))
            .cloned()
            .collect();
        tokio::spawn(reload::watch(
            reloadable,
            self.tls_reload_interval,
            stopped(stop_rx.clone()),
        ));

        // IssuanceService's health follows the ledger until shutdown, when
        // the watcher stops before the drain sets NOT_SERVING for good.
        let ledger_watch = match (&internal_health, self.licensing.ledger()) {
            (Some(health), Some(ledger)) => {
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                let task = tokio::spawn(ledger_health::watch(
                    ledger.clone(),
                    health.clone(),
                    ledger_health::CHECK_INTERVAL,
                    async move {
                        let _ = stopped.await;
                    },
                ));
                Some((stop, task))
            }
            _ => None,
        };

        let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        let admin_server = self.admin.map(|admin| {
            tokio::spawn(admin::serve(admin.listener, admin.state, async move {
                let _ = admin_stopped.await;
            }))
        });

        let public = self.public;
        let public_stop = stop_rx.clone();
        let public_server = tokio::spawn(async move {
            let service = public.api.into_server();
            let result = match public.tls {
                Some(tls) => {
                    serve_public(
                        tls_incoming(public.listener, tls),
                        service,
                        &public.introspection,
                        public.options,
                        stopped(public_stop),
                    )
                    .await
                }
                None => {
                    serve_public(
                        TcpIncoming::from(public.listener).with_nodelay(Some(true)),
                        service,
                        &public.introspection,
                        public.options,
                        stopped(public_stop),
                    )
                    .await
                }
            };
            result.context("serving the public listener")
        });
        let max_concurrent_requests = self.max_concurrent_requests;
        let internal_server = self.internal.map(|internal| {
            let internal_stop = stop_rx.clone();
            tokio::spawn(async move {
                serve_internal(
                    tls_incoming(internal.listener, internal.tls),
                    internal.api.into_server(),
                    &internal.introspection,
                    max_concurrent_requests,
                    stopped(internal_stop),
                )
                .await
                .context("serving the internal listener")
            })
        });
        let servers = async {
            let public_result = public_server.await.context("public listener task")?;
            let internal_result = match internal_server {
                Some(task) => task.await.context("internal listener task")?,
                None => Ok(()),
            };
            public_result.and(internal_result)
        };
        tokio::pin!(servers);
        self.readiness.set_serving();

        let grpc_result = tokio::select! {
            // A listener failed on its own (not after a stop).
            result = &mut servers => result,
            () = shutdown => {
                // Tell load balancers first, then stop accepting; tonic then
                // waits for the calls in progress, bounded by the drain timeout.
                readiness.set_draining();
                if let Some((stop, task)) = ledger_watch {
                    let _ = stop.send(());
                    let _ = task.await;
                }
                public_health.set_not_serving::<UserServer>().await;
                public_health
                    .set_service_status("", tonic_health::ServingStatus::NotServing)
                    .await;
                if let Some(health) = internal_health {
                    health.set_not_serving::<IssuanceServer>().await;
                    health
                        .set_service_status("", tonic_health::ServingStatus::NotServing)
                        .await;
                }
                let _ = stop_tx.send(true);
                match tokio::time::timeout(self.drain_timeout, &mut servers).await {
                    Ok(result) => result,
                    Err(_) => {
                        tracing::warn!(
                            drain_timeout_ms = self.drain_timeout.as_millis() as u64,
                            "drain timeout reached; abandoning calls still in progress"
                        );
                        Ok(())
                    }
                }
            }
        };

        let _ = admin_stop.send(());
        if let Some(admin_server) = admin_server {
            admin_server
                .await
                .context("the admin listener task")?
                .context("serving the admin listener")?;
        }
        grpc_result
    }
}

/// Builds the use cases (Cryptlex client, and the ledger when this gateway
/// issues licenses) from settings. Also used by operator commands.
pub async fn build_licensing(settings: &Settings) -> anyhow::Result<Licensing> {
    let cryptlex = cryptlex::Client::new(ClientOptions {
        base_url: settings.cryptlex.base_url.clone(),
        account: settings.cryptlex.account.clone(),
        request_timeout: settings.cryptlex.request_timeout,
        connect_timeout: settings.cryptlex.connect_timeout,
        budget: settings.cryptlex.budget,
        breaker: settings.cryptlex.breaker,
        max_retries: settings.cryptlex.max_retries,
    })
    .context("building the cryptlex http client")?;
    // The ledger is only needed where licenses are issued.
    let ledger = match &settings.internal {
        Some(_) => Some(
            Ledger::connect(&LedgerOptions {
                url: settings.ledger.url.clone(),
                schema: settings.ledger.schema.clone(),
                max_connections: settings.ledger.max_connections,
            })
            .await
            .context("opening the issuance ledger")?,
        ),
        None => None,
    };
    Ok(Licensing::new(
        cryptlex,
        LicensingOptions {
            sign_up_enabled: settings.sign_up_enabled,
            admin_token: settings.cryptlex.admin_token.clone(),
            issuance: settings
                .internal
                .as_ref()
                .map(|_| issuance_options(settings)),
            cache: CacheOptions {
                ttl: settings.cache.ttl,
                max_entries: settings.cache.max_entries,
                serve_stale: settings.cache.serve_stale,
                stale_for: settings.cache.stale_for,
            },
            throttle: ThrottleOptions {
                failures_per_email: settings.limits.login_failures_per_email,
                email_window: settings.limits.login_email_window,
                backoff_base: settings.limits.login_backoff_base,
                backoff_max: settings.limits.login_backoff_max,
                known_address_ttl: settings.limits.login_known_address_ttl,
                known_addresses_per_email: settings.limits.login_known_addresses_per_email,
                max_tracked_emails: settings.limits.max_tracked_emails,
                attempts_per_address: settings.limits.login_attempts_per_address,
                address_window: settings.limits.login_address_window,
                max_tracked_addresses: settings.limits.max_tracked_addresses,
            },
        },
        ledger,
    ))
}

fn issuance_options(settings: &Settings) -> IssuanceOptions {
    IssuanceOptions {
        default_product_id: settings.issuance.default_product_id.clone(),
        request_id_metadata_key: settings.issuance.request_id_metadata_key.clone(),
        lease: settings.issuance.lease,
        wait_for_in_flight: settings.issuance.wait_for_in_flight,
    }
}

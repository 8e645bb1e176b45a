//! The composition root: builds the use cases from [`Settings`], binds the
//! listeners (port 0 works, for tests) and serves until told to stop, then
//! drains.
//!
//! Three listeners: public (gRPC + gRPC-Web, TLS optional), internal (mutual
//! TLS) and admin (HTTP: metrics and probes). This module knows no tonic: the
//! gRPC side of a listener is a [`GrpcListener`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use http::HeaderValue;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{self, AdminState, Readiness};
use crate::config::Settings;
use crate::coordination::Coordination;
use crate::cryptlex::{self, ClientOptions};
use crate::grpc::{
    AccountApi, ClientAddressPolicy, Deadlines, GrpcListener, IssuanceApi, PublicOptions,
    ServeError, ServerLimits, ServingHealth, UserApi,
};
use crate::ledger::{Ledger, LedgerOptions};
use crate::licensing::read_cache::CacheOptions;
use crate::licensing::throttle::ThrottleOptions;
use crate::licensing::{IssuanceOptions, Licensing, LicensingOptions};
use crate::metrics;
use crate::tls::{self, HandshakeLimits, ReloadableTls};
use crate::webhook::{Webhook, WebhookOptions};

/// ALPN of the public listener with TLS: HTTP/2 for gRPC, HTTP/1.1 for
/// gRPC-Web from fetch-only clients (tonic's own TLS server offers only
/// `h2`, which refuses clients that offer only `http/1.1`).
const PUBLIC_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];
/// ALPN of the internal listener: gRPC only.
const INTERNAL_ALPN: &[&[u8]] = &[b"h2"];

/// A built, bound gateway, ready to serve.
#[derive(Debug)]
pub struct Application {
    public: GrpcListener,
    internal: Option<GrpcListener>,
    admin: Option<AdminListener>,
    readiness: Readiness,
    tls_reload_interval: Duration,
    drain_timeout: Duration,
    licensing: Licensing,
    /// What replicas share, when the ledger is PostgreSQL.
    coordination: Option<Coordination>,
}

#[derive(Debug)]
struct AdminListener {
    listener: TcpListener,
    addr: SocketAddr,
    state: AdminState,
}

/// The tasks that run beside the listeners until shutdown.
struct BackgroundTasks {
    /// Tells every task to stop.
    stop: watch::Sender<bool>,
    tls_reload: JoinHandle<()>,
    ledger_health: Option<JoinHandle<()>>,
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
        let (licensing, coordination) = build_replica(&settings).await?;
        let deadlines = Deadlines {
            default: settings.public.default_deadline,
            max: settings.public.max_deadline,
        };

        let public = bind_public(&settings, &licensing, deadlines).await?;
        let internal = bind_internal(&settings, &licensing, deadlines).await?;
        let admin = match (settings.admin_addr, prometheus) {
            (Some(addr), Some(prometheus)) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the admin listener on {addr} (change it with --admin-addr or admin.addr)"))?;
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
            drain_timeout: settings.limits.drain_timeout,
            licensing,
            coordination,
        })
    }

    /// The use cases (for inspection: cache and budget state).
    pub fn licensing(&self) -> &Licensing {
        &self.licensing
    }

    /// The address the public listener is bound to.
    pub fn public_addr(&self) -> SocketAddr {
        self.public.local_addr()
    }

    /// The address the internal listener is bound to, when enabled.
    pub fn internal_addr(&self) -> Option<SocketAddr> {
        self.internal.as_ref().map(GrpcListener::local_addr)
    }

    /// The address the admin (metrics and probes) listener is bound to, when
    /// enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|admin| admin.addr)
    }

    /// Serves until `shutdown` resolves, then drains: reports NOT_SERVING
    /// (gRPC health) and 503 (`/readyz`), stops accepting, and lets calls in
    /// progress finish for at most the drain timeout.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            public,
            internal,
            admin,
            readiness,
            tls_reload_interval,
            drain_timeout,
            licensing,
            coordination,
        } = self;
        let health: Vec<ServingHealth> = std::iter::once(&public)
            .chain(internal.as_ref())
            .map(GrpcListener::health)
            .collect();

        // 1. The background tasks first, so certificates are reloaded and the
        //    issuance service's health follows its ledger from the first call.
        let background = BackgroundTasks::start(
            &public,
            internal.as_ref(),
            licensing.ledger(),
            tls_reload_interval,
        );
        // The relay too, so other replicas' changes apply from the first
        // call; it stops only after the drain, since calls that finish
        // during it can still change something the others cache.
        let relay = coordination
            .as_ref()
            .map(|coordination| RelayTask::start(coordination, &licensing));

        // 2. The admin listener before the gRPC ones, and it stops after they
        //    have drained: probes and metrics must answer through the drain.
        let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        let admin_server = admin.map(|admin| {
            tokio::spawn(admin::serve(admin.listener, admin.state, async move {
                let _ = admin_stopped.await;
            }))
        });

        // 3. The gRPC listeners; only then is the gateway ready.
        let (stop_listeners, listeners_stopped) = watch::channel(false);
        let mut servers = Listeners::serve(public, internal, &listeners_stopped);
        readiness.set_serving();

        // 4. Serve until asked to stop, or until a listener fails on its own.
        let grpc_result = tokio::select! {
            result = servers.finished() => result,
            () = shutdown => {
                // 5. Drain: tell load balancers first, then stop accepting and
                //    give the calls in progress the drain timeout to finish.
                readiness.set_draining();
                background.stop().await;
                for listener in &health {
                    listener.set_draining().await;
                }
                let _ = stop_listeners.send(true);
                match tokio::time::timeout(drain_timeout, servers.finished()).await {
                    Ok(result) => result,
                    Err(_) => {
                        tracing::warn!(
                            drain_timeout_ms = drain_timeout.as_millis() as u64,
                            "drain timeout reached; abandoning calls still in progress"
                        );
                        Ok(())
                    }
                }
            }
        };

        // 6. The relay, then the admin listener.
        if let Some(relay) = relay {
            relay.stop().await;
        }
        if let Some(coordination) = &coordination {
            coordination.close().await;
        }
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

impl BackgroundTasks {
    /// Starts certificate reloading for both listeners and, where licenses
    /// are issued, the ledger's health watch.
    fn start(
        public: &GrpcListener,
        internal: Option<&GrpcListener>,
        ledger: Option<&Ledger>,
        tls_reload_interval: Duration,
    ) -> Self {
        let (stop, stopped) = watch::channel(false);
        let reloadable: Vec<Arc<ReloadableTls>> = std::iter::once(public)
            .chain(internal)
            .filter_map(|listener| listener.tls().cloned())
            .collect();
        let tls_reload = tokio::spawn(tls::watch(
            reloadable,
            tls_reload_interval,
            until_true(stopped.clone()),
        ));
        let ledger_health = match (internal, ledger) {
            (Some(internal), Some(ledger)) => Some(tokio::spawn(
                internal
                    .health()
                    .follow_ledger(ledger.clone(), until_true(stopped)),
            )),
            _ => None,
        };
        Self {
            stop,
            tls_reload,
            ledger_health,
        }
    }

    /// Stops the tasks and waits for the ledger watch, so it cannot set the
    /// issuance service SERVING again after the drain set it NOT_SERVING.
    async fn stop(self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.ledger_health {
            let _ = task.await;
        }
        // Certificate reloading holds nothing the drain needs; let it end.
        drop(self.tls_reload);
    }
}

/// The relay of cache invalidations between replicas, on a task of its own.
struct RelayTask {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RelayTask {
    /// Relays this replica's changes out and the others' in.
    fn start(coordination: &Coordination, licensing: &Licensing) -> Self {
        let (stop, stopped) = watch::channel(false);
        let relay = coordination.relay(Arc::new(licensing.clone()));
        let changes = licensing.subscribe_changes();
        // Subscribed first, so every change a write then waits for is one
        // the relay reads.
        licensing.attach_relay();
        let task = tokio::spawn(relay.run(changes, until_true(stopped)));
        Self { stop, task }
    }

    /// Stops the relay and waits until its connections are dropped.
    async fn stop(self) {
        let _ = self.stop.send(true);
        // It only fails if it panicked, and then it holds nothing either.
        let _ = self.task.await;
    }
}

/// The running gRPC listeners.
struct Listeners {
    public: Option<JoinHandle<Result<(), ServeError>>>,
    internal: Option<JoinHandle<Result<(), ServeError>>>,
}

impl Listeners {
    /// Serves each listener on a task of its own until `stopped` turns true.
    fn serve(
        public: GrpcListener,
        internal: Option<GrpcListener>,
        stopped: &watch::Receiver<bool>,
    ) -> Self {
        let spawn =
            |listener: GrpcListener| tokio::spawn(listener.serve(until_true(stopped.clone())));
        Self {
            public: Some(spawn(public)),
            internal: internal.map(spawn),
        }
    }

    /// Waits until every listener has stopped; the first failure wins.
    /// Can be called again after a timeout: finished listeners are not
    /// awaited twice.
    async fn finished(&mut self) -> anyhow::Result<()> {
        let mut result = Ok(());
        for (name, task) in [
            ("public", &mut self.public),
            ("internal", &mut self.internal),
        ] {
            let Some(handle) = task.as_mut() else {
                continue;
            };
            let outcome = handle
                .await
                .with_context(|| format!("the {name} listener task"))
                .and_then(|served| served.map_err(anyhow::Error::from));
            *task = None;
            if result.is_ok() {
                result = outcome;
            }
        }
        result
    }
}

/// Resolves once `receiver` holds `true` (or its sender is gone).
async fn until_true(mut receiver: watch::Receiver<bool>) {
    let _ = receiver.wait_for(|stopped| *stopped).await;
}

/// Binds the public listener, with TLS when configured.
async fn bind_public(
    settings: &Settings,
    licensing: &Licensing,
    deadlines: Deadlines,
) -> anyhow::Result<GrpcListener> {
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
        .with_context(|| {
            format!(
                "binding the public listener on {} (change it with --public-addr or public.addr)",
                settings.public.addr
            )
        })?;
    let user_api = UserApi::new(
        licensing.clone(),
        deadlines,
        ClientAddressPolicy::new(
            settings.limits.client_address_header.as_deref(),
            settings.limits.trusted_proxy_hops,
        ),
    );
    let webhook = Webhook::new(
        licensing.clone(),
        WebhookOptions {
            path: settings.webhook.path.clone(),
            secret: settings.webhook.secret.clone(),
            replay_window: settings.webhook.replay_window,
            max_body_bytes: settings.webhook.max_body_bytes,
            body_timeout: settings.limits.request_body_timeout,
        },
    );
    let options = PublicOptions {
        cors_allowed_origins,
        limits: server_limits(settings),
        webhook,
    };
    Ok(GrpcListener::public(listener, public_tls, user_api, options).await?)
}

/// Binds the internal (mutual TLS) listener, when enabled.
async fn bind_internal(
    settings: &Settings,
    licensing: &Licensing,
    deadlines: Deadlines,
) -> anyhow::Result<Option<GrpcListener>> {
    let Some(internal) = &settings.internal else {
        return Ok(None);
    };
    let tls = ReloadableTls::load(
        "internal",
        &internal.tls,
        Some(&internal.client_ca),
        INTERNAL_ALPN,
    )
    .context("internal listener TLS")?;
    let listener = TcpListener::bind(internal.addr).await.with_context(|| {
        format!(
            "binding the internal listener on {} (change it with --internal-addr or internal.addr)",
            internal.addr
        )
    })?;
    let api = IssuanceApi::new(licensing.clone(), deadlines);
    let account = AccountApi::new(licensing.clone(), deadlines);
    let limits = server_limits(settings);
    Ok(Some(
        GrpcListener::internal(listener, Arc::new(tls), api, account, limits).await?,
    ))
}

/// Builds the Cryptlex client (its pool, rate budget and breaker) from
/// settings. Also used by `check-upstream`, so its calls are budgeted alike.
pub fn cryptlex_client(settings: &Settings) -> anyhow::Result<cryptlex::Client> {
    cryptlex::Client::new(ClientOptions {
        base_url: settings.cryptlex.base_url.clone(),
        account: settings.cryptlex.account.clone(),
        request_timeout: settings.cryptlex.request_timeout,
        connect_timeout: settings.cryptlex.connect_timeout,
        budget: settings.cryptlex.budget,
        breaker: settings.cryptlex.breaker,
        max_retries: settings.cryptlex.max_retries,
    })
    .context("building the cryptlex http client")
}

/// Builds the use cases (Cryptlex client, and the ledger when this gateway
/// issues licenses) from settings. Also used by operator commands, which
/// take no part in what replicas share.
pub async fn build_licensing(settings: &Settings) -> anyhow::Result<Licensing> {
    // The ledger is only needed where licenses are issued.
    let ledger = match &settings.internal {
        Some(_) => Some(connect_ledger(settings).await?),
        None => None,
    };
    Ok(licensing_over(settings, cryptlex_client(settings)?, ledger))
}

/// Builds the use cases of a serving replica: with a PostgreSQL ledger,
/// also what it shares with the other replicas there, and its Cryptlex
/// client counts its calls in the shared window.
async fn build_replica(settings: &Settings) -> anyhow::Result<(Licensing, Option<Coordination>)> {
    let issues = settings.internal.is_some();
    // A replica that does not issue still opens a PostgreSQL ledger: it
    // migrates the shared window's table and names the database to share.
    let ledger = if issues || ledger_is_postgres(&settings.ledger.url) {
        Some(connect_ledger(settings).await?)
    } else {
        None
    };
    let coordination = ledger
        .as_ref()
        .and_then(Ledger::postgres_pool)
        .map(|pool| Coordination::from_ledger_pool(pool, settings.ledger.schema.as_deref()));
    let mut cryptlex = cryptlex_client(settings)?;
    if let Some(coordination) = &coordination {
        cryptlex = cryptlex.with_shared_window(coordination.window());
        tracing::info!(
            channel = coordination.channel(),
            replica = coordination.replica(),
            "sharing the upstream budget and cache invalidations through the ledger's postgres"
        );
    }
    let ledger = ledger.filter(|_| issues);
    Ok((licensing_over(settings, cryptlex, ledger), coordination))
}

/// Whether the ledger URL names PostgreSQL (the schemes `Ledger::connect`
/// accepts for it).
fn ledger_is_postgres(url: &str) -> bool {
    url.split_once(':').is_some_and(|(scheme, _)| {
        scheme.eq_ignore_ascii_case("postgres") || scheme.eq_ignore_ascii_case("postgresql")
    })
}

async fn connect_ledger(settings: &Settings) -> anyhow::Result<Ledger> {
    Ledger::connect(&LedgerOptions {
        url: settings.ledger.url.clone(),
        schema: settings.ledger.schema.clone(),
        max_connections: settings.ledger.max_connections,
    })
    .await
    .context("opening the issuance ledger")
}

/// The use cases over `cryptlex` and, where licenses are issued, `ledger`.
fn licensing_over(
    settings: &Settings,
    cryptlex: cryptlex::Client,
    ledger: Option<Ledger>,
) -> Licensing {
    Licensing::new(
        cryptlex,
        LicensingOptions {
            sign_up_enabled: settings.sign_up_enabled,
            admin_token: settings.cryptlex.admin_token.clone(),
            issuance: settings
                .internal
                .as_ref()
                .map(|_| issuance_options(settings)),
            cache: CacheOptions {
                fresh_for: settings.cache.fresh_for,
                max_age: settings.cache.max_age,
                max_entries: settings.cache.max_entries,
                max_bytes: settings.cache.max_bytes,
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
                reset_requests_per_email: settings.limits.password_reset_requests_per_email,
                reset_email_window: settings.limits.password_reset_email_window,
                reset_requests_per_address: settings.limits.password_reset_requests_per_address,
                reset_address_window: settings.limits.password_reset_address_window,
                upstream_calls_per_address: settings.limits.upstream_calls_per_address,
                upstream_address_window: settings.limits.upstream_address_window,
            },
        },
        ledger,
    )
}

/// The bounds on connections and calls both gRPC listeners apply.
fn server_limits(settings: &Settings) -> ServerLimits {
    let limits = &settings.limits;
    ServerLimits {
        max_concurrent_requests: limits.max_concurrent_requests,
        request_body_timeout: limits.request_body_timeout,
        request_timeout: limits.request_timeout,
        max_request_message_bytes: limits.max_request_message_bytes,
        max_header_list_bytes: limits.max_header_list_bytes,
        max_concurrent_streams: limits.max_concurrent_streams,
        max_connections_per_address: limits.max_connections_per_address,
        idle_connection_timeout: limits.idle_connection_timeout,
        http2_keepalive_interval: limits.http2_keepalive_interval,
        http2_keepalive_timeout: limits.http2_keepalive_timeout,
        handshakes: HandshakeLimits {
            client_hello_timeout: limits.tls_client_hello_timeout,
            handshake_timeout: limits.tls_handshake_timeout,
            max_concurrent: limits.max_concurrent_tls_handshakes,
            max_per_address: limits.max_tls_handshakes_per_address,
        },
    }
}

fn issuance_options(settings: &Settings) -> IssuanceOptions {
    IssuanceOptions {
        default_product_id: settings.issuance.default_product_id.clone(),
        request_id_metadata_key: settings.issuance.request_id_metadata_key.clone(),
        lease: settings.issuance.lease,
        wait_for_in_flight: settings.issuance.wait_for_in_flight,
        settle_after_unknown_outcome: settings.issuance.settle_after_unknown_outcome,
        quantity_as_activations: settings.issuance.quantity_as_activations.clone(),
        allow_list: settings
            .internal
            .as_ref()
            .map(|internal| internal.allowed_clients.clone())
            .unwrap_or_default(),
    }
}

//! Start-up: builds everything from [`Settings`], binds the listeners (port 0
//! works, for tests) and serves until told to stop.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Context as _;
use http::HeaderValue;
use tokio::net::TcpListener;
use tonic::transport::ServerTlsConfig;

use crate::config::Settings;
use crate::cryptlex::{self, ClientOptions};
use crate::grpc::server::{Introspection, PublicOptions, serve_internal, serve_public};
use crate::grpc::{Deadlines, IssuanceApi, UserApi, pb, tls};
use crate::ledger::{Ledger, LedgerOptions};
use crate::licensing::read_cache::CacheOptions;
use crate::licensing::throttle::ThrottleOptions;
use crate::licensing::{IssuanceOptions, Licensing, LicensingOptions};

type UserServer = pb::user_service_server::UserServiceServer<UserApi>;
type IssuanceServer = pb::issuance_service_server::IssuanceServiceServer<IssuanceApi>;

/// A built, bound gateway, ready to serve.
#[derive(Debug)]
pub struct Application {
    public: PublicListener,
    internal: Option<InternalListener>,
    max_concurrent_requests: usize,
    drain_timeout: std::time::Duration,
    licensing: Licensing,
}

#[derive(Debug)]
struct PublicListener {
    listener: TcpListener,
    addr: SocketAddr,
    options: PublicOptions,
    introspection: Introspection,
    api: UserApi,
}

#[derive(Debug)]
struct InternalListener {
    listener: TcpListener,
    addr: SocketAddr,
    tls: ServerTlsConfig,
    introspection: Introspection,
    api: IssuanceApi,
}

impl Application {
    /// Builds the gateway from validated settings and binds its listeners.
    ///
    /// Fails, naming the culprit, on unreadable or mismatched TLS files, an
    /// unreachable ledger database, or an address already in use.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let licensing = build_licensing(&settings).await?;
        let licensing_handle = licensing.clone();
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
            Some(files) => Some(
                ServerTlsConfig::new()
                    .identity(tls::load_identity(&files.cert, &files.key).context("public TLS")?),
            ),
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
        let public = PublicListener {
            addr: listener.local_addr()?,
            listener,
            options: PublicOptions {
                cors_allowed_origins,
                tls: public_tls,
                max_concurrent_requests: settings.limits.max_concurrent_requests,
            },
            introspection,
            api: UserApi::new(
                licensing.clone(),
                deadlines,
                settings.limits.client_address_header.clone(),
            ),
        };

        let internal = match &settings.internal {
            Some(internal) => {
                let identity = tls::load_identity(&internal.tls.cert, &internal.tls.key)
                    .context("internal listener TLS")?;
                let client_ca = tls::load_client_ca(&internal.client_ca)
                    .context("internal listener client CA")?;
                let listener = TcpListener::bind(internal.addr).await.with_context(|| {
                    format!("binding the internal listener on {}", internal.addr)
                })?;
                let introspection = Introspection::new();
                introspection.health.set_serving::<IssuanceServer>().await;
                Some(InternalListener {
                    addr: listener.local_addr()?,
                    listener,
                    tls: tls::mutual_tls(identity, client_ca),
                    introspection,
                    api: IssuanceApi::new(
                        licensing,
                        deadlines,
                        internal.allowed_clients.clone(),
                        reserved_metadata_keys,
                    ),
                })
            }
            None => None,
        };
        Ok(Self {
            public,
            internal,
            max_concurrent_requests: settings.limits.max_concurrent_requests,
            drain_timeout: settings.limits.drain_timeout,
            licensing: licensing_handle,
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

    /// Serves until `shutdown` resolves, then reports NOT_SERVING, stops
    /// accepting, and lets calls in progress finish for at most the drain
    /// timeout before returning.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let public_health = self.public.introspection.health.clone();
        let internal_health = self
            .internal
            .as_ref()
            .map(|internal| internal.introspection.health.clone());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut receiver: tokio::sync::watch::Receiver<bool>| async move {
            let _ = receiver.wait_for(|stopped| *stopped).await;
        };

        let public = self.public;
        let public_server = tokio::spawn(async move {
            serve_public(
                public.listener,
                public.api.into_server(),
                &public.introspection,
                public.options,
                stopped(stop_rx.clone()),
            )
            .await
            .context("serving the public listener")
        });
        let internal_server = self.internal.map(|internal| {
            let max_concurrent_requests = self.max_concurrent_requests;
            let stop_rx = stop_tx.subscribe();
            tokio::spawn(async move {
                serve_internal(
                    internal.listener,
                    internal.api.into_server(),
                    &internal.introspection,
                    internal.tls,
                    max_concurrent_requests,
                    stopped(stop_rx),
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

        tokio::select! {
            // A listener failed on its own (not after a stop).
            result = &mut servers => return result,
            () = shutdown => {}
        }
        // Tell load balancers first, then stop accepting; tonic then waits
        // for the calls in progress, which we bound by the drain timeout.
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
                attempts_per_address: settings.limits.login_attempts_per_address,
                address_window: settings.limits.login_address_window,
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

//! A bound gRPC listener, ready to serve: the public one (`UserService`,
//! gRPC-Web, CORS) or the internal one (`IssuanceService` and
//! `AccountService`, mutual TLS), each with its own health and reflection. The composition root (`app`) builds
//! these without knowing tonic.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::StreamExt as _;
use tokio::net::TcpListener;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use super::connection::{self, ConnectionTable};
use super::server::{
    INTERNAL_SERVICES, InternalServices, Introspection, PUBLIC_SERVICES, PublicOptions,
    ServerLimits, serve_internal, serve_public,
};
use super::{AccountApi, IssuanceApi, UserApi, ledger_health};
use crate::ledger::Ledger;
use crate::tls::{ReloadableTls, tls_incoming};

/// A health-check service name that stays SERVING until the process exits
/// (unlike `""` and the API services, which turn NOT_SERVING while
/// draining), for Kubernetes liveness probes.
pub const LIVENESS_SERVICE: &str = "liveness";

/// A listener failed while serving.
#[derive(Debug, thiserror::Error)]
#[error("serving the {listener} listener failed")]
pub struct ServeError {
    listener: &'static str,
    #[source]
    source: tonic::transport::Error,
}

#[derive(Debug)]
enum Service {
    Public {
        api: UserApi,
        options: PublicOptions,
    },
    Internal {
        services: InternalServices,
        limits: ServerLimits,
    },
}

impl Service {
    fn limits(&self) -> ServerLimits {
        match self {
            Self::Public { options, .. } => options.limits,
            Self::Internal { limits, .. } => *limits,
        }
    }
}

/// One bound gRPC listener and what it serves.
#[derive(Debug)]
pub struct GrpcListener {
    listener: TcpListener,
    addr: SocketAddr,
    /// Server TLS; `None` serves plaintext h2c (the public listener behind an
    /// ingress). The internal listener always has it, with client certificates.
    tls: Option<Arc<ReloadableTls>>,
    introspection: Introspection,
    service: Service,
}

impl GrpcListener {
    /// The public listener: `UserService` over gRPC and gRPC-Web.
    pub async fn public(
        listener: TcpListener,
        tls: Option<Arc<ReloadableTls>>,
        api: UserApi,
        options: PublicOptions,
    ) -> std::io::Result<Self> {
        Self::new(
            listener,
            tls,
            PUBLIC_SERVICES,
            Service::Public { api, options },
        )
        .await
    }

    /// The internal listener: `IssuanceService` and `AccountService` over
    /// mutual TLS.
    pub async fn internal(
        listener: TcpListener,
        tls: Arc<ReloadableTls>,
        issuance: IssuanceApi,
        account: AccountApi,
        limits: ServerLimits,
    ) -> std::io::Result<Self> {
        let service = Service::Internal {
            services: InternalServices { issuance, account },
            limits,
        };
        Self::new(listener, Some(tls), INTERNAL_SERVICES, service).await
    }

    async fn new(
        listener: TcpListener,
        tls: Option<Arc<ReloadableTls>>,
        service_names: &'static [&'static str],
        service: Service,
    ) -> std::io::Result<Self> {
        let introspection = Introspection::new(service_names);
        let health = &introspection.health;
        for service_name in service_names {
            health
                .set_service_status(*service_name, ServingStatus::Serving)
                .await;
        }
        health
            .set_service_status(LIVENESS_SERVICE, ServingStatus::Serving)
            .await;
        Ok(Self {
            addr: listener.local_addr()?,
            listener,
            tls,
            introspection,
            service,
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The listener's TLS, when it has one (for the reload watcher).
    pub fn tls(&self) -> Option<&Arc<ReloadableTls>> {
        self.tls.as_ref()
    }

    /// A handle on the listener's health answers.
    pub fn health(&self) -> ServingHealth {
        ServingHealth {
            reporter: self.introspection.health.clone(),
            service_names: self.introspection.service_names,
        }
    }

    /// Serves until `shutdown` resolves, then stops accepting and waits for
    /// the calls in progress.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServeError> {
        let Self {
            listener,
            tls,
            introspection,
            service,
            ..
        } = self;
        // Every connection is accepted within the per-address cap and
        // registered for the idle timeout, with or without TLS.
        let limits = service.limits();
        let table = ConnectionTable::default();
        let accepted = connection::accept(listener, limits.connections(), table.clone());
        let (name, result) = match (service, tls) {
            (Service::Public { api, options }, Some(tls)) => (
                "public",
                serve_public(
                    tls_incoming(accepted, tls, limits.handshakes),
                    table,
                    api.into_server(),
                    &introspection,
                    options,
                    shutdown,
                )
                .await,
            ),
            (Service::Public { api, options }, None) => (
                "public",
                serve_public(
                    accepted.map(|(connection, _)| Ok::<_, std::io::Error>(connection)),
                    table,
                    api.into_server(),
                    &introspection,
                    options,
                    shutdown,
                )
                .await,
            ),
            (Service::Internal { services, limits }, tls) => {
                let tls = tls.expect("the internal listener is only built with TLS");
                (
                    "internal",
                    serve_internal(
                        tls_incoming(accepted, tls, limits.handshakes),
                        table,
                        services,
                        &introspection,
                        limits,
                        shutdown,
                    )
                    .await,
                )
            }
        };
        result.map_err(|source| ServeError {
            listener: name,
            source,
        })
    }
}

/// What one listener's gRPC health checks answer.
#[derive(Debug, Clone)]
pub struct ServingHealth {
    reporter: HealthReporter,
    /// The listener's API services; the first follows the ledger.
    service_names: &'static [&'static str],
}

impl ServingHealth {
    /// Turns the API services and the overall status (`""`) NOT_SERVING, so
    /// load balancers stop sending new calls; `liveness` stays SERVING.
    pub async fn set_draining(&self) {
        for service_name in self.service_names {
            self.reporter
                .set_service_status(*service_name, ServingStatus::NotServing)
                .await;
        }
        self.reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
    }

    /// Makes the health of the listener's first API service (issuance, on
    /// the internal listener) follow `ledger` (checked every few seconds)
    /// until `stop` resolves. The others do not need the ledger.
    pub fn follow_ledger(
        &self,
        ledger: Ledger,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = ()> + Send + 'static {
        ledger_health::watch(
            ledger,
            self.reporter.clone(),
            self.service_names.first().copied().unwrap_or_default(),
            ledger_health::CHECK_INTERVAL,
            stop,
        )
    }
}

//! A bound gRPC listener, ready to serve: the public one (`UserService`,
//! gRPC-Web, CORS) or the internal one (`IssuanceService`, mutual TLS), each
//! with its own health and reflection. The composition root (`app`) builds
//! these without knowing tonic.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::StreamExt as _;
use tokio::net::TcpListener;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use super::connection::{self, ConnectionTable};
use super::server::{Introspection, PublicOptions, ServerLimits, serve_internal, serve_public};
use super::{IssuanceApi, UserApi, ledger_health, pb};
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
        api: IssuanceApi,
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
        let service_name = pb::user_service_server::SERVICE_NAME;
        Self::new(
            listener,
            tls,
            service_name,
            Service::Public { api, options },
        )
        .await
    }

    /// The internal listener: `IssuanceService` over mutual TLS.
    pub async fn internal(
        listener: TcpListener,
        tls: Arc<ReloadableTls>,
        api: IssuanceApi,
        limits: ServerLimits,
    ) -> std::io::Result<Self> {
        let service_name = pb::issuance_service_server::SERVICE_NAME;
        let service = Service::Internal { api, limits };
        Self::new(listener, Some(tls), service_name, service).await
    }

    async fn new(
        listener: TcpListener,
        tls: Option<Arc<ReloadableTls>>,
        service_name: &'static str,
        service: Service,
    ) -> std::io::Result<Self> {
        let introspection = Introspection::new(service_name);
        let health = &introspection.health;
        health
            .set_service_status(service_name, ServingStatus::Serving)
            .await;
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
            service_name: self.introspection.service_name,
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
            (Service::Internal { api, limits }, tls) => {
                let tls = tls.expect("the internal listener is only built with TLS");
                (
                    "internal",
                    serve_internal(
                        tls_incoming(accepted, tls, limits.handshakes),
                        table,
                        api,
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
    service_name: &'static str,
}

impl ServingHealth {
    /// Turns the API service and the overall status (`""`) NOT_SERVING, so
    /// load balancers stop sending new calls; `liveness` stays SERVING.
    pub async fn set_draining(&self) {
        self.reporter
            .set_service_status(self.service_name, ServingStatus::NotServing)
            .await;
        self.reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
    }

    /// Makes the API service's health follow `ledger` (checked every few
    /// seconds) until `stop` resolves.
    pub fn follow_ledger(
        &self,
        ledger: Ledger,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = ()> + Send + 'static {
        ledger_health::watch(
            ledger,
            self.reporter.clone(),
            self.service_name,
            ledger_health::CHECK_INTERVAL,
            stop,
        )
    }
}

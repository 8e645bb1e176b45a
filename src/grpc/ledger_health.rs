//! `licensing.v1.IssuanceService`'s gRPC health follows the issuance ledger.
//!
//! `IssueLicense` cannot promise exactly-once without its ledger, so while the
//! ledger does not answer, the payment service's health checks (and any
//! client-side load balancing on them) see NOT_SERVING for the issuance
//! service, and SERVING again once it answers. The user service and the
//! `liveness` name are not affected: sign-in and reads need no ledger.

use std::future::Future;
use std::time::Duration;

use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::ledger::Ledger;

/// How often the ledger is checked.
pub(super) const CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// How long one check may take before the ledger counts as unreachable.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Checks the ledger every `interval` and sets the issuance service's health
/// on each change, until `stop` resolves. Starts from SERVING: start-up only
/// succeeds with a reachable ledger.
pub(super) async fn watch(
    ledger: Ledger,
    health: HealthReporter,
    service_name: &'static str,
    interval: Duration,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut reachable = true;
    loop {
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(interval) => {}
        }
        let now = match tokio::time::timeout(CHECK_TIMEOUT, ledger.ping()).await {
            Ok(Ok(())) => true,
            Ok(Err(error)) => {
                if reachable {
                    tracing::warn!(%error, "the issuance ledger is unreachable: IssuanceService is NOT_SERVING");
                }
                false
            }
            Err(_) => {
                if reachable {
                    tracing::warn!(
                        timeout_ms = CHECK_TIMEOUT.as_millis() as u64,
                        "the issuance ledger did not answer in time: IssuanceService is NOT_SERVING"
                    );
                }
                false
            }
        };
        if now != reachable {
            reachable = now;
            let status = if reachable {
                tracing::info!("the issuance ledger answers again: IssuanceService is SERVING");
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            health.set_service_status(service_name, status).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    use tonic::Request;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_server::Health;
    use tonic_health::server::HealthService;

    use super::*;
    use crate::grpc::pb::issuance_service_server::SERVICE_NAME;
    use crate::ledger::LedgerOptions;

    async fn status(service: &HealthService) -> i32 {
        service
            .check(Request::new(HealthCheckRequest {
                service: SERVICE_NAME.into(),
            }))
            .await
            .expect("the service is registered")
            .into_inner()
            .status
    }

    async fn watched(ledger: Ledger) -> (HealthService, tokio::sync::oneshot::Sender<()>) {
        let health = HealthReporter::new();
        health
            .set_service_status(SERVICE_NAME, ServingStatus::Serving)
            .await;
        let service = HealthService::from_health_reporter(health.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(watch(
            ledger,
            health,
            SERVICE_NAME,
            Duration::from_millis(20),
            async move {
                let _ = stopped.await;
            },
        ));
        (service, stop)
    }

    #[tokio::test]
    async fn an_unreachable_ledger_turns_the_issuance_service_not_serving() {
        // A port nothing listens on: every check fails fast.
        let ledger = Ledger::connect_lazy_for_tests("postgres://nobody@127.0.0.1:1/nothing");
        let (service, _stop) = watched(ledger).await;
        wait_for(&service, ServingStatus::NotServing).await;
    }

    async fn wait_for(service: &HealthService, wanted: ServingStatus) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while status(service).await != wanted as i32 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "not {wanted:?} within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A TCP forwarder to PostgreSQL whose link can be cut and restored.
    struct Link {
        addr: std::net::SocketAddr,
        open: Arc<AtomicBool>,
        connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    }

    impl Link {
        async fn to(upstream: &'static str) -> Self {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let link = Link {
                addr: listener.local_addr().expect("addr"),
                open: Arc::new(AtomicBool::new(true)),
                connections: Arc::default(),
            };
            let (open, connections) = (Arc::clone(&link.open), Arc::clone(&link.connections));
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !open.load(Ordering::SeqCst) {
                        continue; // dropped: the connection is refused
                    }
                    let task = tokio::spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    connections.lock().expect("lock").push(task.abort_handle());
                }
            });
            link
        }

        fn cut(&self) {
            self.open.store(false, Ordering::SeqCst);
            for connection in self.connections.lock().expect("lock").drain(..) {
                connection.abort();
            }
        }

        fn restore(&self) {
            self.open.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn the_issuance_service_follows_the_ledger_down_and_back_up() {
        let link = Link::to("127.0.0.1:5432").await;
        let ledger =
            Ledger::connect_lazy_for_tests(&format!("postgres://postgres@{}/test", link.addr));
        ledger
            .ping()
            .await
            .expect("PostgreSQL answers through the link");
        let (service, _stop) = watched(ledger).await;

        link.cut();
        wait_for(&service, ServingStatus::NotServing).await;
        link.restore();
        wait_for(&service, ServingStatus::Serving).await;
    }

    #[tokio::test]
    async fn a_reachable_ledger_keeps_it_serving() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
        let ledger = Ledger::connect(&LedgerOptions::new(url))
            .await
            .expect("ledger");
        let (service, stop) = watched(ledger).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(status(&service).await, ServingStatus::Serving as i32);
        let _ = stop.send(());
    }
}

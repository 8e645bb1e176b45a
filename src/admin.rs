//! The admin HTTP listener: `/metrics` (Prometheus text), `/healthz` (the
//! process is alive) and `/readyz` (it should receive traffic).
//!
//! It is plain HTTP on its own port (loopback by default), separate from the
//! gRPC listeners so scraping and probing never compete with callers for
//! concurrency limits, and so the port can be kept away from the internet.
//! It serves nothing a caller could use and accepts no input.
//!
//! Readiness means: the gRPC listeners are bound and serving, the gateway is
//! not draining for shutdown, and the issuance ledger (when this gateway
//! issues) answers a trivial query within [`PROBE_TIMEOUT`].

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::ledger::Ledger;
use crate::metrics;

/// How long a readiness check or a ledger refresh may wait for the database.
/// Kubernetes' default probe timeout is 1 s; a slower answer means "not
/// ready" anyway.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_millis(900);

/// Whether the gateway should receive traffic. Cloning is shallow: every
/// clone reads and sets the same flags.
#[derive(Debug, Clone, Default)]
pub(crate) struct Readiness {
    shared: Arc<ReadinessFlags>,
}

#[derive(Debug, Default)]
struct ReadinessFlags {
    serving: AtomicBool,
    draining: AtomicBool,
}

impl Readiness {
    /// Records that the listeners are serving.
    pub(crate) fn set_serving(&self) {
        self.shared.serving.store(true, Ordering::SeqCst);
    }

    /// Records that shutdown began: from now on `/readyz` answers 503.
    pub(crate) fn set_draining(&self) {
        self.shared.draining.store(true, Ordering::SeqCst);
    }

    fn state(&self) -> (bool, bool) {
        (
            self.shared.serving.load(Ordering::SeqCst),
            self.shared.draining.load(Ordering::SeqCst),
        )
    }
}

/// What the admin endpoints read.
#[derive(Debug, Clone)]
pub(crate) struct AdminState {
    pub metrics: PrometheusHandle,
    pub readiness: Readiness,
    /// The issuance ledger, checked by `/readyz` and counted on scrape.
    pub ledger: Option<Ledger>,
    /// The use cases, whose upstream budget, breaker and caches are read on
    /// scrape.
    pub licensing: Option<crate::licensing::Licensing>,
}

/// The admin routes, for [`serve`] and for tests without a socket.
pub(crate) fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Serves the admin routes on `listener` until `shutdown` resolves.
pub(crate) async fn serve(
    listener: TcpListener,
    state: AdminState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AdminState>) -> Response {
    let (serving, draining) = state.readiness.state();
    if draining {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    if !serving {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response();
    }
    if let Some(ledger) = &state.ledger {
        match tokio::time::timeout(PROBE_TIMEOUT, ledger.ping()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "readiness: the issuance ledger is unreachable");
                return (StatusCode::SERVICE_UNAVAILABLE, "ledger unreachable\n").into_response();
            }
            Err(_) => {
                tracing::warn!("readiness: the issuance ledger did not answer in time");
                return (StatusCode::SERVICE_UNAVAILABLE, "ledger timed out\n").into_response();
            }
        }
    }
    (StatusCode::OK, "ready\n").into_response()
}

/// One scrape at a time per process: the recorder is process-wide, so two
/// scrapes interleaving (two gateways in one process, as in tests) could
/// render one gateway's scrape-time gauges with the other's values. A tokio
/// lock, since the ledger count awaits while it is held; scrapes are rare.
static SCRAPE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn render_metrics(State(state): State<AdminState>) -> Response {
    let body = {
        let _scrape = SCRAPE.lock().await;
        if let Some(ledger) = &state.ledger {
            refresh_ledger_gauges(ledger).await;
        }
        if let Some(licensing) = &state.licensing {
            record_upstream_state(licensing);
        }
        metrics::render(&state.metrics)
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// Counts ledger records by state. On failure the gauges keep their last
/// values and `licensing_gateway_ledger_up` drops to 0.
async fn refresh_ledger_gauges(ledger: &Ledger) {
    match tokio::time::timeout(PROBE_TIMEOUT, ledger.count_by_state()).await {
        Ok(Ok(counts)) => {
            for (state, count) in counts {
                ::metrics::gauge!(metrics::LEDGER_RECORDS, "state" => state.as_str())
                    .set(count as f64);
            }
            ::metrics::gauge!(metrics::LEDGER_UP).set(1.0);
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, "counting ledger records failed");
            ::metrics::gauge!(metrics::LEDGER_UP).set(0.0);
        }
        Err(_) => {
            tracing::warn!("counting ledger records timed out");
            ::metrics::gauge!(metrics::LEDGER_UP).set(0.0);
        }
    }
}

/// Publishes the upstream budget, breaker and read-cache state (read on
/// scrape: they live in the use cases, not in the recorder).
fn record_upstream_state(licensing: &crate::licensing::Licensing) {
    let client = licensing.cryptlex_client();
    let budget = client.budget();
    ::metrics::gauge!(metrics::BUDGET_REMAINING).set(f64::from(budget.remaining));
    ::metrics::gauge!(metrics::BUDGET_WAITERS).set(budget.waiters as f64);
    for (priority, waiters) in budget.waiters_by_priority.iter() {
        ::metrics::gauge!(metrics::BUDGET_WAITERS_BY_PRIORITY, "priority" => priority.as_str())
            .set(*waiters as f64);
    }
    let breaker = match client.breaker_state() {
        crate::cryptlex::BreakerState::Closed => 0.0,
        crate::cryptlex::BreakerState::HalfOpen => 1.0,
        crate::cryptlex::BreakerState::Open => 2.0,
    };
    ::metrics::gauge!(metrics::BREAKER_STATE).set(breaker);
    for (cache, stats) in licensing.cache_stats() {
        for (result, value) in [
            ("hit", stats.hits),
            ("coalesced", stats.coalesced),
            ("miss", stats.misses),
            ("stale", stats.stale_served),
        ] {
            ::metrics::counter!(metrics::CACHE_REQUESTS_TOTAL, "cache" => cache, "result" => result)
                .absolute(value);
        }
        ::metrics::counter!(metrics::CACHE_BACKGROUND_REFRESHES_TOTAL, "cache" => cache)
            .absolute(stats.revalidated_in_background);
        ::metrics::counter!(metrics::CACHE_INVALIDATED_TOTAL, "cache" => cache)
            .absolute(stats.invalidated);
        ::metrics::counter!(metrics::CACHE_EVICTED_TOTAL, "cache" => cache).absolute(stats.evicted);
        ::metrics::gauge!(metrics::CACHE_ENTRIES, "cache" => cache).set(stats.entries as f64);
        ::metrics::gauge!(metrics::CACHE_BYTES, "cache" => cache).set(stats.bytes as f64);
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    use super::*;

    async fn get_status(state: AdminState, path: &str) -> (StatusCode, String) {
        let response = router(state)
            .oneshot(
                axum::http::Request::get(path)
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("infallible");
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn state() -> AdminState {
        AdminState {
            metrics: metrics::install(),
            readiness: Readiness::default(),
            ledger: None,
            licensing: None,
        }
    }

    #[tokio::test]
    async fn readiness_follows_start_up_and_drain_while_health_stays_ok() {
        let state = state();
        assert_eq!(
            get_status(state.clone(), "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        state.readiness.set_serving();
        assert_eq!(get_status(state.clone(), "/readyz").await.0, StatusCode::OK);
        state.readiness.set_draining();
        let (status, body) = get_status(state.clone(), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, "draining\n");
        assert_eq!(get_status(state, "/healthz").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn an_unreachable_ledger_makes_the_gateway_unready() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // A port nothing listens on: the pool fails to connect quickly.
        let ledger =
            crate::ledger::Ledger::connect_lazy_for_tests("postgres://nobody@127.0.0.1:1/nothing");
        let state = AdminState {
            ledger: Some(ledger),
            ..state()
        };
        state.readiness.set_serving();
        let (status, body) = get_status(state, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.starts_with("ledger"), "{body}");
    }

    #[tokio::test]
    async fn metrics_are_served_as_prometheus_text() {
        let (status, body) = get_status(state(), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("licensing_gateway_build_info"), "{body}");
    }
}

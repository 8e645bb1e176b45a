//! The gateway's metrics: names, labels, and the process-wide Prometheus
//! recorder the admin listener renders.
//!
//! Code records through the [`metrics`](::metrics) facade (`counter!`,
//! `gauge!`, `histogram!`) using the name constants below; nothing else in
//! the crate knows about Prometheus. The recorder is installed once per
//! process ([`install`]), so several gateways in one test process share it;
//! without it (the `ledger` and `check-config` commands) recording is a no-op.
//!
//! # Naming convention
//!
//! - Every name is `licensing_gateway_<subsystem>_<what>[_<unit>]`, with the
//!   subsystem one of `rpc`, `upstream`, `ledger`, `tls`, `cache`, `budget`,
//!   `webhook`.
//! - Counters end in `_total`. Durations are histograms in seconds and end
//!   in `_duration_seconds`. Timestamps are gauges in unix seconds and end in
//!   `_timestamp_seconds`.
//! - Label values come from small fixed sets: gRPC code names, endpoint
//!   *route templates* (`GET /v3/users/{id}`), states, listener names. Never
//!   an id, an email, a token, a request id or anything a caller chooses;
//!   unknown values collapse into `unknown` or `other`.
//! - Add a new metric as a `pub const` here with a doc comment giving its
//!   type and labels, and list it in `docs/operating.md`.
//!
//! This module is a leaf: it imports nothing of the gateway. State that lives
//! in the use cases (budget, breaker, cache counters) is read at scrape time
//! by the admin listener, which knows both.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Gauge: upstream calls this replica may still start in the current budget
/// window (issuance's view; reads see fewer). Calls refused for the budget
/// are counted in [`UPSTREAM_REQUESTS_TOTAL`] with `outcome="budget_exhausted"`.
pub(crate) const BUDGET_REMAINING: &str = "licensing_gateway_budget_remaining";
/// Gauge: calls waiting for a budget slot.
pub(crate) const BUDGET_WAITERS: &str = "licensing_gateway_budget_waiters";
/// Gauge `{priority="session"|"read"|"sign_in"|"issuance"}`: the same, per priority
/// (each priority has its own bounded number of waiting places).
pub(crate) const BUDGET_WAITERS_BY_PRIORITY: &str = "licensing_gateway_budget_waiters_by_priority";
/// Gauge: the circuit breaker, 0 closed, 1 half-open, 2 open.
pub(crate) const BREAKER_STATE: &str = "licensing_gateway_upstream_breaker_state";
/// Counter `{cache="profile"|"licenses"|"license"|"activations"|"releases",
/// result="hit"|"coalesced"|"miss"|"stale"}`:
/// reads answered by the read cache, by joining an identical call in flight,
/// or upstream.
pub(crate) const CACHE_REQUESTS_TOTAL: &str = "licensing_gateway_cache_requests_total";
/// Counter `{cache}`: background refreshes started for answers past
/// `cache.fresh_for` (served from memory meanwhile).
pub(crate) const CACHE_BACKGROUND_REFRESHES_TOTAL: &str =
    "licensing_gateway_cache_background_refreshes_total";
/// Counter `{cache}`: entries dropped because something changed (a write
/// through the gateway, a webhook, another replica).
pub(crate) const CACHE_INVALIDATED_TOTAL: &str = "licensing_gateway_cache_invalidated_total";
/// Counter `{cache}`: entries dropped for the entry or byte bound, or for age.
pub(crate) const CACHE_EVICTED_TOTAL: &str = "licensing_gateway_cache_evicted_total";
/// Gauge `{cache}`: entries held.
pub(crate) const CACHE_ENTRIES: &str = "licensing_gateway_cache_entries";
/// Gauge `{cache}`: estimated bytes held (bounded by `cache.max_bytes` for
/// all kinds together).
pub(crate) const CACHE_BYTES: &str = "licensing_gateway_cache_bytes";

/// Counter `{listener, service, method, code}`: RPCs finished.
pub(crate) const RPC_REQUESTS_TOTAL: &str = "licensing_gateway_rpc_requests_total";
/// Histogram `{listener, service, method, code}`: from request headers to the
/// end of the response (trailers), in seconds.
pub(crate) const RPC_DURATION_SECONDS: &str = "licensing_gateway_rpc_duration_seconds";
/// Counter `{endpoint, status, outcome}`: requests sent to Cryptlex.
pub(crate) const UPSTREAM_REQUESTS_TOTAL: &str = "licensing_gateway_upstream_requests_total";
/// Histogram `{endpoint, outcome}`: Cryptlex request latency in seconds.
pub(crate) const UPSTREAM_DURATION_SECONDS: &str = "licensing_gateway_upstream_duration_seconds";
/// Gauge `{state}`: issuance ledger records by state, refreshed on scrape.
pub(crate) const LEDGER_RECORDS: &str = "licensing_gateway_ledger_records";
/// Gauge: 1 when the last ledger query on scrape succeeded, 0 otherwise.
pub(crate) const LEDGER_UP: &str = "licensing_gateway_ledger_up";
/// Gauge `{listener, certificate}`: the `notAfter` of the served certificate
/// (`certificate="server"`, earliest in the chain) and of the trusted client
/// CA bundle (`certificate="client_ca"`, earliest in the bundle), unix seconds.
pub(crate) const TLS_CERTIFICATE_EXPIRY: &str =
    "licensing_gateway_tls_certificate_expiry_timestamp_seconds";
/// Counter `{listener, result="success"|"failure"}`: certificate reloads.
pub(crate) const TLS_RELOADS_TOTAL: &str = "licensing_gateway_tls_reloads_total";
/// Counter `{listener}`: TLS handshakes that failed or timed out.
pub(crate) const TLS_HANDSHAKE_FAILURES_TOTAL: &str =
    "licensing_gateway_tls_handshake_failures_total";
/// Counter `{outcome}`: deliveries to the Cryptlex webhook endpoint, by what
/// became of them: `applied`, `replayed` (seen within the replay window),
/// `unknown_event`, `too_old` (triggered before the replay window, or in the
/// future), `bad_signature`, `malformed`, `too_large`, `body_timeout`,
/// `overloaded`, `wrong_method`. Not counted in the RPC metrics.
pub(crate) const WEBHOOK_DELIVERIES_TOTAL: &str = "licensing_gateway_webhook_deliveries_total";
/// Gauge `{version}`: always 1; carries the build's version.
pub(crate) const BUILD_INFO: &str = "licensing_gateway_build_info";

/// Histogram buckets for RPC and upstream latencies: 2.5 ms to 30 s, which
/// spans a cached answer to the longest allowed deadline.
const LATENCY_BUCKETS: &[f64] = &[
    0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once) and returns a handle
/// to render it.
///
/// If another recorder is already installed (an embedding program's), ours
/// still renders but receives nothing; that is logged, not fatal.
pub(crate) fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_duration_seconds".to_owned()),
                    LATENCY_BUCKETS,
                )
                .expect("the bucket list is a non-empty literal");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if ::metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics stays empty");
            }
            spawn_upkeep(handle.clone());
            ::metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            handle
        })
        .clone()
}

/// How often histogram observations are folded into their buckets when
/// nobody scrapes `/metrics`.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Folds histogram observations into their buckets every [`UPKEEP_EVERY`].
///
/// The recorder keeps every observation in memory until upkeep runs, and
/// upkeep otherwise runs only at a scrape: a gateway whose `/metrics` nobody
/// scrapes grew by about 26 MiB per million calls in the soak
/// (`loadgen --soak`). A plain thread, so it needs no runtime and outlives
/// none it belongs to.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                handle.run_upkeep();
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "could not start the metrics upkeep thread; memory grows until /metrics is scraped");
    }
}

/// Renders the Prometheus text exposition, after housekeeping (which also
/// runs every few seconds on its own, see [`spawn_upkeep`]).
pub(crate) fn render(handle: &PrometheusHandle) -> String {
    handle.run_upkeep();
    handle.render()
}

/// Records one finished upstream (Cryptlex) call.
///
/// `endpoint` is a route template, `status` the HTTP status when an answer
/// arrived, `outcome` one of a fixed set (see [`UPSTREAM_REQUESTS_TOTAL`]).
pub(crate) fn record_upstream(
    endpoint: &'static str,
    status: Option<u16>,
    outcome: &'static str,
    elapsed: Duration,
) {
    let status = status.map_or_else(|| "none".to_owned(), |status| status.to_string());
    ::metrics::counter!(
        UPSTREAM_REQUESTS_TOTAL,
        "endpoint" => endpoint,
        "status" => status,
        "outcome" => outcome
    )
    .increment(1);
    ::metrics::histogram!(
        UPSTREAM_DURATION_SECONDS,
        "endpoint" => endpoint,
        "outcome" => outcome
    )
    .record(elapsed.as_secs_f64());
}

/// Sets the expiry gauge of one certificate (unix seconds).
pub(crate) fn set_certificate_expiry(
    listener: &'static str,
    certificate: &'static str,
    not_after: i64,
) {
    ::metrics::gauge!(
        TLS_CERTIFICATE_EXPIRY,
        "listener" => listener,
        "certificate" => certificate
    )
    .set(not_after as f64);
}

/// Counts one webhook delivery by `outcome` (see [`WEBHOOK_DELIVERIES_TOTAL`]).
pub(crate) fn record_webhook(outcome: &'static str) {
    ::metrics::counter!(WEBHOOK_DELIVERIES_TOTAL, "outcome" => outcome).increment(1);
}

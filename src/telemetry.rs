//! Logging set-up: human-readable lines locally, JSON in production, and
//! optionally OpenTelemetry traces over OTLP (cargo feature `otlp`).
//!
//! Spans come from the gRPC layer (one `rpc` span per call, carrying the
//! method and `request_id`), so every line logged while serving a call names
//! the call: text lines prefix it (`rpc{method=.. request_id=..}:`), and JSON
//! lines carry the whole span stack in `spans` (outermost first) as well as
//! the innermost span in `span`, so `spans[0].request_id` is always there even
//! when a use case opened its own span. Secrets never reach here: they are
//! secret types with redacted `Debug`, `authorization` is marked sensitive
//! before the trace layer, and errors are logged without upstream bodies or
//! URLs.

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Layered, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use serde::Deserialize;
use url::Url;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable, for a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Where to export traces (`[otlp]` in the configuration, once validated).
#[derive(Debug, Clone)]
pub struct OtlpSettings {
    /// The OTLP/HTTP traces endpoint, e.g. `http://otel-collector:4318/v1/traces`.
    pub endpoint: Url,
    pub service_name: String,
}

/// What the output layers sit on: the registry behind one global filter.
type Filtered = Layered<EnvFilter, Registry>;
type BoxedLayer = Box<dyn Layer<Filtered> + Send + Sync>;

/// Flushes exported traces when dropped; keep it until the process exits.
#[derive(Debug, Default)]
#[must_use = "dropping the guard stops trace export"]
pub struct TelemetryGuard {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("flushing traces failed: {error}");
        }
    }
}

/// Installs the global subscriber writing to `writer`, plus OTLP export when
/// `otlp` is set (and the `otlp` feature is built; validation refuses it
/// otherwise).
///
/// `RUST_LOG`, when set, wins over the configured level, so an operator can
/// turn up verbosity without editing the configuration. `ansi` colours the
/// text format; callers pass whether `writer` is a terminal, so logs written
/// to a file or a pipe carry no escape codes.
pub fn init<W>(
    level: &str,
    format: LogFormat,
    rust_log: Option<&str>,
    writer: W,
    ansi: bool,
    otlp: Option<&OtlpSettings>,
) -> TelemetryGuard
where
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    let filter = rust_log
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .or_else(|| EnvFilter::try_new(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let base = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_target(true);
    let log_layer: BoxedLayer = match format {
        LogFormat::Json => base
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .boxed(),
        LogFormat::Text => base.with_ansi(ansi).boxed(),
    };
    #[cfg_attr(not(feature = "otlp"), allow(unused_mut))]
    let mut layers = vec![log_layer];
    #[cfg_attr(not(feature = "otlp"), allow(unused_mut))]
    let mut guard = TelemetryGuard::default();

    #[cfg(feature = "otlp")]
    if let Some(otlp) = otlp {
        match otlp_layer(otlp) {
            Ok((layer, provider)) => {
                opentelemetry::global::set_text_map_propagator(
                    opentelemetry_sdk::propagation::TraceContextPropagator::new(),
                );
                layers.push(layer);
                guard.provider = Some(provider);
            }
            Err(error) => eprintln!("otlp trace export disabled: {error}"),
        }
    }
    #[cfg(not(feature = "otlp"))]
    let _ = otlp;

    // One global filter, not per-layer filters: a per-layer filter carries
    // its verdict from `enabled` to `on_event` in thread-local state, which
    // `log` records (sqlx's query logger asks `log_enabled!` after every
    // query) leave stale, and events were then silently dropped: with the
    // PostgreSQL ledger, a process could lose every line after its first
    // queries (tokio-rs/tracing#2519).
    //
    // A second initialisation (tests) keeps the first subscriber.
    let _ = Registry::default().with(filter).with(layers).try_init();
    guard
}

/// Continues the caller's W3C trace (`traceparent`, `tracestate` in
/// `headers`) in `span`, so the gateway's spans join the website's trace.
/// Without the `otlp` feature, or when no trace is exported, this does nothing.
pub fn continue_remote_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    #[cfg(feature = "otlp")]
    {
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        if headers.contains_key("traceparent") {
            let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
                propagator.extract(&opentelemetry_http::HeaderExtractor(headers))
            });
            // Fails only when no OpenTelemetry layer is installed.
            let _ = span.set_parent(parent);
        }
    }
    #[cfg(not(feature = "otlp"))]
    let _ = (span, headers);
}

/// Adds the current span's W3C trace context to an upstream request's
/// `headers`, so Cryptlex calls appear in the same trace. Without the `otlp`
/// feature, or when no trace is exported, this adds nothing.
pub fn inject_trace_context(headers: &mut http::HeaderMap) {
    #[cfg(feature = "otlp")]
    {
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let context = tracing::Span::current().context();
        opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut opentelemetry_http::HeaderInjector(headers));
        });
    }
    #[cfg(not(feature = "otlp"))]
    let _ = headers;
}

/// Builds the OTLP/HTTP span exporter and the tracing layer feeding it.
#[cfg(feature = "otlp")]
fn otlp_layer(
    settings: &OtlpSettings,
) -> Result<(BoxedLayer, opentelemetry_sdk::trace::SdkTracerProvider), String> {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};

    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(settings.endpoint.as_str())
        .with_timeout(std::time::Duration::from_secs(5))
        .with_headers(std::collections::HashMap::new())
        .build()
        .map_err(|error| error.to_string())?;
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(settings.service_name.clone())
                .build(),
        )
        .build();
    let tracer = provider.tracer("licensing-gateway");
    let layer = tracing_opentelemetry::layer().with_tracer(tracer).boxed();
    Ok((layer, provider))
}

#[cfg(all(test, feature = "otlp"))]
mod tests {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    #[test]
    fn a_callers_trace_is_continued_and_carried_upstream() {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = Registry::default()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let mut incoming = http::HeaderMap::new();
            incoming.insert(
                "traceparent",
                http::HeaderValue::from_static(
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ),
            );
            let span = tracing::info_span!("rpc");
            continue_remote_trace(&span, &incoming);
            let _entered = span.enter();

            let mut outgoing = http::HeaderMap::new();
            inject_trace_context(&mut outgoing);
            let traceparent = outgoing
                .get("traceparent")
                .and_then(|value| value.to_str().ok())
                .expect("a traceparent for Cryptlex");
            assert!(
                traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
                "the caller's trace id: {traceparent}"
            );
            assert!(
                !traceparent.contains("00f067aa0ba902b7"),
                "the gateway's own span id, not the caller's: {traceparent}"
            );
        });
    }

    #[test]
    fn nothing_is_sent_upstream_outside_a_trace() {
        let mut outgoing = http::HeaderMap::new();
        inject_trace_context(&mut outgoing);
        assert!(outgoing.get("traceparent").is_none());
    }
}

//! Logging set-up: human-readable lines locally, JSON in production.
//!
//! Spans come from the gRPC layer (one per RPC, carrying the request id), so
//! every line logged while serving a call names the call. Secrets never reach
//! here: they are secret types with redacted `Debug`, `authorization` is
//! marked sensitive before the trace layer, and errors are logged without
//! upstream bodies or URLs.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;

/// Installs the global subscriber writing to `writer`.
///
/// `RUST_LOG`, when set, wins over the configured level, so an operator can
/// turn up verbosity without editing the configuration.
pub fn init<W>(level: &str, format: LogFormat, rust_log: Option<&str>, writer: W)
where
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    let filter = rust_log
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .or_else(|| EnvFilter::try_new(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(true);
    let result = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    // A second initialisation (tests) keeps the first subscriber.
    drop(result);
}

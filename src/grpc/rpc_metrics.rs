//! A tower layer counting RPCs by service, method and gRPC code, with their
//! latency (see [`crate::metrics`] for the names).
//!
//! It sits *inside* the gRPC-Web translation, where every call (gRPC or
//! gRPC-Web) looks like native gRPC: the status is either in the response
//! headers (a trailers-only answer, which is how tonic sends most errors) or
//! in the trailers at the end of the body. The measurement therefore ends when
//! the trailers are produced, not when the headers are; a body dropped before
//! its trailers counts as `CANCELLED` (the client went away).
//!
//! Service and method labels are only taken from paths the listener really
//! serves (read from the compiled descriptor sets); anything else is
//! `unknown`, so a scanner cannot mint label values.
//!
//! That bounded set is also why each series' handles are looked up once and
//! kept ([`SeriesTable`]): registering by labels on every call (what
//! `counter!(name, &labels)` does) hashes and compares the four labels in the
//! recorder's registry, about 5,000 instructions a call, a twentieth of a
//! cached read (BENCHMARKS.md, instructions).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use metrics::{Counter, Histogram};
use prost::Message as _;
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::metrics::{RPC_DURATION_SECONDS, RPC_REQUESTS_TOTAL};

/// Reflection methods, which come from tonic-reflection's own descriptors.
const REFLECTION_PATHS: &[&str] = &[
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// Adds RPC metrics to a listener's stack.
#[derive(Debug, Clone)]
pub(super) struct RpcMetricsLayer {
    series: &'static SeriesTable,
}

impl RpcMetricsLayer {
    /// Labels every RPC with `listener` (`public` or `internal`).
    pub(super) fn new(listener: &'static str) -> Self {
        Self {
            series: SeriesTable::of(listener),
        }
    }
}

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics {
            inner,
            series: self.series,
        }
    }
}

/// The service built by [`RpcMetricsLayer`].
#[derive(Debug, Clone)]
pub(super) struct RpcMetrics<S> {
    inner: S,
    series: &'static SeriesTable,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for RpcMetrics<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = MeteredFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let observation = Observation {
            method: self.series.method(request.uri().path()),
            started: Instant::now(),
        };
        MeteredFuture {
            response: self.inner.call(request),
            observation: Some(observation),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of a call being measured: it hands the measurement to the
    /// body, or records it at once for a trailers-only answer or an error.
    pub(super) struct MeteredFuture<F> {
        #[pin]
        response: F,
        observation: Option<Observation>,
    }
}

impl<F, ResBody, E> Future for MeteredFuture<F>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
{
    type Output = Result<http::Response<MeteredBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.response.poll(cx));
        let Some(mut observation) = this.observation.take() else {
            // Polled again after it completed: a caller's bug, not a call.
            panic!("MeteredFuture polled after completion");
        };
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                observation.finish(tonic::Code::Unknown);
                return Poll::Ready(Err(error));
            }
        };
        // A trailers-only answer carries the status in its headers.
        let pending = match grpc_code(response.headers()) {
            Some(code) => {
                observation.finish(code);
                None
            }
            None => Some(observation),
        };
        Poll::Ready(Ok(response.map(|inner| MeteredBody { inner, pending })))
    }
}

/// Records a call that a layer outside this one answered on its own with
/// `code` (a Connect request the translation refused), as if it had passed.
pub(super) fn record_unserved(
    listener: &'static str,
    path: &str,
    code: tonic::Code,
    started: Instant,
) {
    Observation {
        method: SeriesTable::of(listener).method(path),
        started,
    }
    .finish(code);
}

/// One RPC being measured.
#[derive(Debug)]
struct Observation {
    method: &'static MethodSeries,
    started: Instant,
}

impl Observation {
    fn finish(&mut self, code: tonic::Code) {
        let series = self.method.series(code);
        series.requests.increment(1);
        series.duration.record(self.started.elapsed().as_secs_f64());
    }
}

/// The series of one listener: each served method's, and `unknown`'s.
#[derive(Debug)]
struct SeriesTable {
    /// Looked up on every call; foldhash, as the keys are fixed.
    methods: HashMap<&'static str, MethodSeries, foldhash::fast::RandomState>,
    unknown: MethodSeries,
}

impl SeriesTable {
    /// The table of `listener`, built on first use and kept for the process.
    fn of(listener: &'static str) -> &'static SeriesTable {
        static PUBLIC: OnceLock<SeriesTable> = OnceLock::new();
        static INTERNAL: OnceLock<SeriesTable> = OnceLock::new();
        match listener {
            "public" => PUBLIC.get_or_init(|| Self::new(listener)),
            "internal" => INTERNAL.get_or_init(|| Self::new(listener)),
            other => unreachable!("no listener is called {other:?}"),
        }
    }

    fn new(listener: &'static str) -> Self {
        let methods = known_paths()
            .iter()
            .map(|&path| {
                let (service, method) = service_and_method(path);
                (path, MethodSeries::new(listener, service, method))
            })
            .collect();
        Self {
            methods,
            unknown: MethodSeries::new(listener, "unknown", "unknown"),
        }
    }

    /// The series of the method at `path` (`unknown` if not served).
    fn method(&self, path: &str) -> &MethodSeries {
        self.methods.get(path).unwrap_or(&self.unknown)
    }
}

/// One method's series, one per gRPC code, each registered with the recorder
/// when first used (so `/metrics` lists only codes that happened).
#[derive(Debug)]
struct MethodSeries {
    listener: &'static str,
    service: &'static str,
    method: &'static str,
    by_code: [OnceLock<Series>; CODES],
}

/// The number of gRPC codes (`OK` = 0 to `UNAUTHENTICATED` = 16).
const CODES: usize = 17;

/// The handles of one (listener, service, method, code) series.
#[derive(Debug)]
struct Series {
    requests: Counter,
    duration: Histogram,
}

impl MethodSeries {
    fn new(listener: &'static str, service: &'static str, method: &'static str) -> Self {
        Self {
            listener,
            service,
            method,
            by_code: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    fn series(&self, code: tonic::Code) -> &Series {
        // `tonic::Code` has exactly the 17 codes, numbered from 0.
        let index = (code as usize).min(CODES - 1);
        self.by_code[index].get_or_init(|| {
            let labels = [
                ("listener", self.listener),
                ("service", self.service),
                ("method", self.method),
                ("code", code_name(code as i32)),
            ];
            Series {
                requests: ::metrics::counter!(RPC_REQUESTS_TOTAL, &labels),
                duration: ::metrics::histogram!(RPC_DURATION_SECONDS, &labels),
            }
        })
    }
}

/// A response body that records the RPC when its trailers pass by.
#[derive(Debug)]
pub(super) struct MeteredBody<B> {
    inner: B,
    /// `None` once recorded.
    pending: Option<Observation>,
}

impl<B> MeteredBody<B> {
    fn finish(&mut self, code: tonic::Code) {
        if let Some(mut observation) = self.pending.take() {
            observation.finish(code);
        }
    }
}

impl<B> Body for MeteredBody<B>
where
    B: Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    let code = grpc_code(trailers).unwrap_or(tonic::Code::Unknown);
                    self.finish(code);
                }
            }
            Poll::Ready(Some(Err(_))) => self.finish(tonic::Code::Internal),
            // The body ended without trailers: not a valid gRPC answer.
            Poll::Ready(None) => self.finish(tonic::Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for MeteredBody<B> {
    fn drop(&mut self) {
        // Dropped before the trailers: the client cancelled or disconnected.
        self.finish(tonic::Code::Cancelled);
    }
}

/// The `grpc-status` in `headers`, if present (an unknown number is
/// `UNKNOWN`).
fn grpc_code(headers: &http::HeaderMap) -> Option<tonic::Code> {
    const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
    let value = headers.get(GRPC_STATUS)?;
    let code: i32 = value.to_str().ok()?.trim().parse().ok()?;
    Some(tonic::Code::from_i32(code))
}

/// gRPC status codes as their canonical upper-case names (as grpc-go and
/// grpc-ecosystem/go-grpc-prometheus label them, so dashboards carry over).
fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

/// `("licensing.v1.UserService", "Login")` for `/licensing.v1.UserService/Login`.
fn service_and_method(path: &'static str) -> (&'static str, &'static str) {
    path.trim_start_matches('/')
        .split_once('/')
        .expect("known paths are /service/method")
}

/// Every `/package.Service/Method` this gateway can serve, from the compiled
/// descriptor sets (leaked once: they live as long as the process).
fn known_paths() -> &'static HashSet<&'static str> {
    static KNOWN: OnceLock<HashSet<&'static str>> = OnceLock::new();
    KNOWN.get_or_init(|| {
        let mut known: HashSet<&'static str> = REFLECTION_PATHS.iter().copied().collect();
        for encoded in [
            super::pb::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ] {
            let Ok(set) = prost_types::FileDescriptorSet::decode(encoded) else {
                continue;
            };
            for file in set.file {
                let package = file.package.unwrap_or_default();
                for service in file.service {
                    let service_name = service.name.unwrap_or_default();
                    for method in service.method {
                        let path = format!(
                            "/{package}.{service_name}/{}",
                            method.name.unwrap_or_default()
                        );
                        known.insert(Box::leak(path.into_boxed_str()));
                    }
                }
            }
        }
        known
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_paths_get_their_service_and_method_and_others_are_unknown() {
        let labels = |path| {
            let series = SeriesTable::of("public").method(path);
            (series.service, series.method)
        };
        assert_eq!(
            labels("/licensing.v1.UserService/Login"),
            ("licensing.v1.UserService", "Login")
        );
        assert_eq!(
            labels("/grpc.health.v1.Health/Check"),
            ("grpc.health.v1.Health", "Check")
        );
        assert_eq!(
            labels("/licensing.v1.UserService/NoSuchMethod"),
            ("unknown", "unknown")
        );
        assert_eq!(labels("/wp-admin/login.php"), ("unknown", "unknown"));
        assert_eq!(SeriesTable::of("internal").method("/").method, "unknown");
    }

    #[test]
    fn status_codes_are_named_canonically() {
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-status", "16".parse().expect("value"));
        assert_eq!(grpc_code(&headers), Some(tonic::Code::Unauthenticated));
        assert_eq!(
            code_name(tonic::Code::Unauthenticated as i32),
            "UNAUTHENTICATED"
        );
        headers.insert("grpc-status", "99".parse().expect("value"));
        assert_eq!(grpc_code(&headers), Some(tonic::Code::Unknown));
        headers.insert("grpc-status", "x".parse().expect("value"));
        assert_eq!(grpc_code(&headers), None);
    }
}

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

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
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
    listener: &'static str,
}

impl RpcMetricsLayer {
    /// Labels every RPC with `listener` (`public` or `internal`).
    pub(super) fn new(listener: &'static str) -> Self {
        Self { listener }
    }
}

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics {
            inner,
            listener: self.listener,
        }
    }
}

/// The service built by [`RpcMetricsLayer`].
#[derive(Debug, Clone)]
pub(super) struct RpcMetrics<S> {
    inner: S,
    listener: &'static str,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for RpcMetrics<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let (service, method) = rpc_labels(request.uri().path());
        let mut observation = Observation {
            listener: self.listener,
            service,
            method,
            started: Instant::now(),
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = match response.await {
                Ok(response) => response,
                Err(error) => {
                    observation.finish("UNKNOWN");
                    return Err(error);
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
            Ok(response.map(|inner| MeteredBody { inner, pending }))
        })
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
    let (service, method) = rpc_labels(path);
    Observation {
        listener,
        service,
        method,
        started,
    }
    .finish(code_name(code as i32));
}

/// One RPC being measured.
#[derive(Debug)]
struct Observation {
    listener: &'static str,
    service: &'static str,
    method: &'static str,
    started: Instant,
}

impl Observation {
    fn finish(&mut self, code: &'static str) {
        let labels = [
            ("listener", self.listener),
            ("service", self.service),
            ("method", self.method),
            ("code", code),
        ];
        ::metrics::counter!(RPC_REQUESTS_TOTAL, &labels).increment(1);
        ::metrics::histogram!(RPC_DURATION_SECONDS, &labels)
            .record(self.started.elapsed().as_secs_f64());
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
    fn finish(&mut self, code: &'static str) {
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
                    let code = grpc_code(trailers).unwrap_or("UNKNOWN");
                    self.finish(code);
                }
            }
            Poll::Ready(Some(Err(_))) => self.finish("INTERNAL"),
            // The body ended without trailers: not a valid gRPC answer.
            Poll::Ready(None) => self.finish("UNKNOWN"),
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
        self.finish("CANCELLED");
    }
}

/// The canonical name of the `grpc-status` in `headers`, if present.
fn grpc_code(headers: &http::HeaderMap) -> Option<&'static str> {
    let value = headers.get("grpc-status")?;
    let code: i32 = value.to_str().ok()?.trim().parse().ok()?;
    Some(code_name(code))
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

/// `("licensing.v1.UserService", "Login")` for a served path, or
/// `("unknown", "unknown")`.
fn rpc_labels(path: &str) -> (&'static str, &'static str) {
    let known = known_paths();
    match known.get(path) {
        Some(path) => {
            let (service, method) = path
                .trim_start_matches('/')
                .split_once('/')
                .expect("known paths are /service/method");
            (service, method)
        }
        None => ("unknown", "unknown"),
    }
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
        assert_eq!(
            rpc_labels("/licensing.v1.UserService/Login"),
            ("licensing.v1.UserService", "Login")
        );
        assert_eq!(
            rpc_labels("/grpc.health.v1.Health/Check"),
            ("grpc.health.v1.Health", "Check")
        );
        assert_eq!(
            rpc_labels("/licensing.v1.UserService/NoSuchMethod"),
            ("unknown", "unknown")
        );
        assert_eq!(rpc_labels("/wp-admin/login.php"), ("unknown", "unknown"));
    }

    #[test]
    fn status_codes_are_named_canonically() {
        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-status", "16".parse().expect("value"));
        assert_eq!(grpc_code(&headers), Some("UNAUTHENTICATED"));
        headers.insert("grpc-status", "x".parse().expect("value"));
        assert_eq!(grpc_code(&headers), None);
    }
}

//! The listeners' tower stacks and service sets.
//!
//! The public listener serves `UserService` over gRPC and gRPC-Web (HTTP/1.1
//! and HTTP/2) with CORS, plus health and reflection. The internal listener
//! (mutual TLS) serves `IssuanceService`, health and reflection, and nothing
//! else. Both stacks are built here and read top-down: the first layer is the
//! outermost.

use std::future::Future;
use std::time::Duration;

use futures::Stream;
use http::header::{AUTHORIZATION, COOKIE, HeaderName};
use http::{HeaderValue, Method};
use tokio::io::{AsyncRead, AsyncWrite};
use tonic::service::Routes;
use tonic::transport::Server;
use tonic::transport::server::Connected;
use tower::ServiceBuilder;
use tower_http::classify::{GrpcCode, GrpcErrorsAsFailures};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::{
    DefaultOnBodyChunk, DefaultOnEos, DefaultOnFailure, DefaultOnRequest, DefaultOnResponse,
    TraceLayer,
};

use super::pb;
use super::rpc_metrics::RpcMetricsLayer;

/// Largest request message accepted. Every request in the contract is a few
/// hundred bytes; the default 4 MiB would only serve abuse.
pub const MAX_REQUEST_MESSAGE_BYTES: usize = 64 * 1024;

/// Concurrent HTTP/2 streams per connection; bounds what one client can keep
/// in flight on one connection.
const MAX_CONCURRENT_STREAMS: u32 = 256;

/// Largest request header block (metadata) accepted. A bearer token and the
/// usual gRPC headers need a few KiB; the rest would only serve abuse.
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// Health checking and reflection for one listener.
#[derive(Debug)]
pub(super) struct Introspection {
    pub(super) health: tonic_health::server::HealthReporter,
    /// The API service this listener serves (`licensing.v1.UserService` or
    /// `licensing.v1.IssuanceService`).
    pub(super) service_name: &'static str,
    health_service:
        tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>,
}

impl Introspection {
    /// Creates a health service whose overall status starts as SERVING.
    pub(super) fn new(service_name: &'static str) -> Self {
        let health = tonic_health::server::HealthReporter::new();
        let health_service =
            tonic_health::server::HealthService::from_health_reporter(health.clone());
        Self {
            health,
            service_name,
            health_service: tonic_health::pb::health_server::HealthServer::new(health_service),
        }
    }

    /// Adds health and reflection (v1 and v1alpha, which older tools such as
    /// grpcurl 1.8 and Python grpcio-reflection still use) to `routes`,
    /// describing only `services`.
    fn add_to(&self, routes: &mut tonic::service::RoutesBuilder, services: &[&str]) {
        routes.add_service(self.health_service.clone());
        let configure = || {
            let mut builder = tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .with_service_name("grpc.health.v1.Health");
            for service in services {
                builder = builder.with_service_name(*service);
            }
            builder
        };
        match (configure().build_v1(), configure().build_v1alpha()) {
            (Ok(v1), Ok(v1alpha)) => {
                routes.add_service(v1);
                routes.add_service(v1alpha);
            }
            (Err(error), _) | (_, Err(error)) => {
                // The descriptor sets are compiled in; failing here is a build bug.
                tracing::error!(%error, "server reflection unavailable");
            }
        }
    }
}

/// Settings of the public listener's HTTP behaviour.
#[derive(Debug, Clone)]
pub struct PublicOptions {
    /// Browser origins allowed to call over gRPC-Web (exact matches).
    pub cors_allowed_origins: Vec<HeaderValue>,
    /// Calls in progress at once; more are shed.
    pub max_concurrent_requests: usize,
}

/// Serves the public listener on the connections of `incoming` (plain TCP,
/// or TLS streams from `tls::tls_incoming`) until `shutdown`
/// resolves.
pub(super) async fn serve_public<IO, IE>(
    incoming: impl Stream<Item = Result<IO, IE>>,
    user_service: pb::user_service_server::UserServiceServer<super::UserApi>,
    introspection: &Introspection,
    options: PublicOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error>
where
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let user_service = user_service.max_decoding_message_size(MAX_REQUEST_MESSAGE_BYTES);
    let mut routes = Routes::builder();
    routes.add_service(user_service);
    introspection.add_to(&mut routes, &[pb::user_service_server::SERVICE_NAME]);

    let stack = ServiceBuilder::new()
        // Mark credentials sensitive before anything can log headers.
        .layer(SetSensitiveRequestHeadersLayer::new([
            AUTHORIZATION,
            COOKIE,
        ]))
        // Give every call an id (keeping the caller's), so the trace span,
        // the upstream request and the response all carry it.
        .layer(SetRequestIdLayer::new(X_REQUEST_ID, MakeRequestUuid))
        .layer(trace_layer())
        .layer(PropagateRequestIdLayer::new(X_REQUEST_ID))
        // CORS outside gRPC-Web, so preflights are answered before the
        // gRPC-Web translation and errors stay readable by browsers.
        .layer(cors(options.cors_allowed_origins))
        .layer(tonic_web::GrpcWebLayer::new())
        // Inside gRPC-Web, where every call looks like native gRPC and its
        // status is in headers or trailers; outside the shedding, so shed
        // calls are counted too.
        .layer(RpcMetricsLayer::new("public"))
        .layer(super::overload::OverloadLayer::new(
            options.max_concurrent_requests,
        ))
        .into_inner();
    server_builder()
        // gRPC-Web arrives as HTTP/1.1 from fetch-only runtimes; without
        // this, HTTP/1.1 requests (and CORS preflights) get an HTTP/2
        // SETTINGS frame back and fail as a malformed response.
        .accept_http1(true)
        .layer(stack)
        .add_routes(routes.routes())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// The HTTP/2 limits both listeners share: bounded streams per connection
/// and header size, and keep-alive pings that clear dead connections.
fn server_builder() -> Server {
    Server::builder()
        .tcp_nodelay(true)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
}

/// Serves the internal listener on the mutual-TLS connections of `incoming`
/// (from `tls::tls_incoming`) until `shutdown` resolves.
///
/// Only `IssuanceService`, health and reflection: the browser-facing layers
/// (gRPC-Web, CORS, HTTP/1.1) have no business here.
pub(super) async fn serve_internal<IO, IE>(
    incoming: impl Stream<Item = Result<IO, IE>>,
    issuance_service: pb::issuance_service_server::IssuanceServiceServer<super::IssuanceApi>,
    introspection: &Introspection,
    max_concurrent_requests: usize,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error>
where
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let issuance_service = issuance_service.max_decoding_message_size(MAX_REQUEST_MESSAGE_BYTES);
    let mut routes = Routes::builder();
    routes.add_service(issuance_service);
    introspection.add_to(&mut routes, &[pb::issuance_service_server::SERVICE_NAME]);
    let stack = ServiceBuilder::new()
        .layer(SetSensitiveRequestHeadersLayer::new([
            AUTHORIZATION,
            COOKIE,
        ]))
        .layer(SetRequestIdLayer::new(X_REQUEST_ID, MakeRequestUuid))
        .layer(trace_layer())
        .layer(PropagateRequestIdLayer::new(X_REQUEST_ID))
        .layer(RpcMetricsLayer::new("internal"))
        .layer(super::overload::OverloadLayer::new(max_concurrent_requests))
        .into_inner();
    server_builder()
        .layer(stack)
        .add_routes(routes.routes())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

type MakeRpcSpan = fn(&http::Request<tonic::body::Body>) -> tracing::Span;
type RpcTraceLayer = TraceLayer<
    tower_http::classify::SharedClassifier<GrpcErrorsAsFailures>,
    MakeRpcSpan,
    DefaultOnRequest,
    DefaultOnResponse,
    DefaultOnBodyChunk,
    DefaultOnEos,
    DefaultOnFailure,
>;

/// One span per RPC, carrying the method and request id (never headers).
///
/// Only statuses that say the gateway or its upstream failed are logged as a
/// failed response, at WARN: a wrong password or a bad argument is the caller's
/// business (`grpc::status` logs those at INFO with their reason), and a flood
/// of them must not read as an outage.
fn trace_layer() -> RpcTraceLayer {
    let classifier = [
        GrpcCode::Cancelled,
        GrpcCode::InvalidArgument,
        GrpcCode::NotFound,
        GrpcCode::AlreadyExists,
        GrpcCode::PermissionDenied,
        GrpcCode::FailedPrecondition,
        GrpcCode::Aborted,
        GrpcCode::OutOfRange,
        GrpcCode::Unauthenticated,
    ]
    .into_iter()
    .fold(
        GrpcErrorsAsFailures::new(),
        GrpcErrorsAsFailures::with_success,
    );
    TraceLayer::new(tower_http::classify::SharedClassifier::new(classifier))
        .make_span_with(rpc_span as MakeRpcSpan)
        .on_failure(DefaultOnFailure::new().level(tracing::Level::WARN))
}

fn rpc_span(request: &http::Request<tonic::body::Body>) -> tracing::Span {
    let request_id = request
        .headers()
        .get(X_REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|id| super::context::is_acceptable_request_id(id))
        .unwrap_or("-");
    let span = tracing::info_span!("rpc", method = %request.uri().path(), request_id = %request_id);
    crate::telemetry::continue_remote_trace(&span, request.headers());
    span
}

/// CORS for gRPC-Web from the configured origins. Exposes the gRPC status
/// headers, without which browsers cannot read errors (tonic-web adds no CORS of its own).
fn cors(allowed_origins: Vec<HeaderValue>) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(allowed_origins))
        .allow_methods([Method::POST, Method::OPTIONS])
        .allow_headers([
            AUTHORIZATION,
            http::header::CONTENT_TYPE,
            HeaderName::from_static("x-grpc-web"),
            HeaderName::from_static("x-user-agent"),
            HeaderName::from_static("grpc-timeout"),
            X_REQUEST_ID,
            HeaderName::from_static("traceparent"),
            HeaderName::from_static("tracestate"),
        ])
        .expose_headers([
            HeaderName::from_static("grpc-status"),
            HeaderName::from_static("grpc-message"),
            HeaderName::from_static("grpc-status-details-bin"),
            X_REQUEST_ID,
        ])
        .max_age(Duration::from_secs(24 * 60 * 60))
}

//! The listeners' tower stacks and service sets.
//!
//! The public listener serves `UserService` over gRPC and gRPC-Web (HTTP/1.1
//! and HTTP/2) with CORS, plus health and reflection. The internal listener
//! (mutual TLS) serves `IssuanceService`, health and reflection, and nothing
//! else. Both stacks are built here and read top-down: the first layer is the
//! outermost.

use std::future::Future;
use std::time::Duration;

use http::header::{AUTHORIZATION, COOKIE, HeaderName};
use http::{HeaderValue, Method};
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Server, ServerTlsConfig};
use tower::ServiceBuilder;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;

use super::pb;

/// Largest request message accepted. Every request in the contract is a few
/// hundred bytes; the default 4 MiB would only serve abuse.
pub const MAX_REQUEST_MESSAGE_BYTES: usize = 64 * 1024;

/// Concurrent HTTP/2 streams per connection; bounds what one client can keep
/// in flight on one connection.
const MAX_CONCURRENT_STREAMS: u32 = 256;

/// Health checking and reflection for one listener.
#[derive(Debug)]
pub struct Introspection {
    pub health: tonic_health::server::HealthReporter,
    health_service:
        tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>,
}

impl Introspection {
    /// Creates a health service whose overall status starts as SERVING.
    pub fn new() -> Self {
        let health = tonic_health::server::HealthReporter::new();
        let health_service =
            tonic_health::server::HealthService::from_health_reporter(health.clone());
        Self {
            health,
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

impl Default for Introspection {
    fn default() -> Self {
        Self::new()
    }
}

/// Settings of the public listener's HTTP behaviour.
#[derive(Debug, Clone)]
pub struct PublicOptions {
    /// Browser origins allowed to call over gRPC-Web (exact matches).
    pub cors_allowed_origins: Vec<HeaderValue>,
    /// Server TLS; `None` serves plaintext h2c (behind an ingress).
    pub tls: Option<ServerTlsConfig>,
}

/// Serves the public listener until `shutdown` resolves.
pub async fn serve_public(
    listener: TcpListener,
    user_service: pb::user_service_server::UserServiceServer<super::UserApi>,
    introspection: &Introspection,
    options: PublicOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let user_service = user_service.max_decoding_message_size(MAX_REQUEST_MESSAGE_BYTES);
    let mut routes = Routes::builder();
    routes.add_service(user_service);
    introspection.add_to(&mut routes, &["licensing.v1.UserService"]);

    let mut builder = Server::builder();
    if let Some(tls) = options.tls {
        builder = builder.tls_config(tls)?;
    }
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
        .into_inner();
    builder
        // gRPC-Web arrives as HTTP/1.1 from fetch-only runtimes (toolchain G3).
        .accept_http1(true)
        .tcp_nodelay(true)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .layer(stack)
        .add_routes(routes.routes())
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await
}

/// Serves the internal (mutual-TLS) listener until `shutdown` resolves.
///
/// Only `IssuanceService`, health and reflection: the browser-facing layers
/// (gRPC-Web, CORS, HTTP/1.1) have no business here.
pub async fn serve_internal(
    listener: TcpListener,
    issuance_service: pb::issuance_service_server::IssuanceServiceServer<super::IssuanceApi>,
    introspection: &Introspection,
    tls: ServerTlsConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let issuance_service = issuance_service.max_decoding_message_size(MAX_REQUEST_MESSAGE_BYTES);
    let mut routes = Routes::builder();
    routes.add_service(issuance_service);
    introspection.add_to(&mut routes, &["licensing.v1.IssuanceService"]);
    let stack = ServiceBuilder::new()
        .layer(SetSensitiveRequestHeadersLayer::new([
            AUTHORIZATION,
            COOKIE,
        ]))
        .layer(SetRequestIdLayer::new(X_REQUEST_ID, MakeRequestUuid))
        .layer(trace_layer())
        .layer(PropagateRequestIdLayer::new(X_REQUEST_ID))
        .into_inner();
    Server::builder()
        .tls_config(tls)?
        .tcp_nodelay(true)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .layer(stack)
        .add_routes(routes.routes())
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await
}

/// Accepted connections with `TCP_NODELAY` set. The builder's `tcp_nodelay`
/// only applies when tonic binds the socket itself, not to a stream of our
/// own; without it, responses that span more than one segment (a page of
/// licenses) wait about 40 ms for the peer's delayed ACK.
fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

type MakeRpcSpan = fn(&http::Request<tonic::body::Body>) -> tracing::Span;
type RpcTraceLayer = TraceLayer<
    tower_http::classify::SharedClassifier<tower_http::classify::GrpcErrorsAsFailures>,
    MakeRpcSpan,
>;

/// One span per RPC, carrying the method and request id (never headers).
fn trace_layer() -> RpcTraceLayer {
    TraceLayer::new_for_grpc().make_span_with(rpc_span as MakeRpcSpan)
}

fn rpc_span(request: &http::Request<tonic::body::Body>) -> tracing::Span {
    let request_id = request
        .headers()
        .get(X_REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .filter(|id| super::context::is_acceptable_request_id(id))
        .unwrap_or("-");
    tracing::info_span!("rpc", method = %request.uri().path(), request_id = %request_id)
}

/// CORS for gRPC-Web from the configured origins. Exposes the gRPC status
/// headers, without which browsers cannot read errors (toolchain G6).
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
        ])
        .expose_headers([
            HeaderName::from_static("grpc-status"),
            HeaderName::from_static("grpc-message"),
            HeaderName::from_static("grpc-status-details-bin"),
            X_REQUEST_ID,
        ])
        .max_age(Duration::from_secs(24 * 60 * 60))
}

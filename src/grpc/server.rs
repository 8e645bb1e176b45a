//! The listeners' tower stacks and service sets.
//!
//! The public listener serves `UserService` over gRPC, gRPC-Web and Connect
//! (HTTP/1.1 and HTTP/2) with CORS, plus health and reflection, and Cryptlex's
//! webhook endpoint (plain HTTP, see [`PublicRouteLayer`]). The internal listener
//! (mutual TLS) serves `IssuanceService` and `AccountService`, health and
//! reflection, and nothing else. Both stacks are built here and read top-down: the first layer is the
//! outermost.
//!
//! Every bound a hostile client could otherwise exhaust is set here or in
//! the layers named below, from [`ServerLimits`] (`[limits]` in the
//! configuration; the README's "Limits and abuse" lists them all).

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use futures::future::BoxFuture;
use http::header::{AUTHORIZATION, COOKIE, HeaderName};
use http::{HeaderValue, Method};
use prost::Message as _;
use prost_types::{FileDescriptorProto, FileDescriptorSet};
use tokio::io::{AsyncRead, AsyncWrite};
use tonic::service::Routes;
use tonic::transport::Server;
use tonic::transport::server::Connected;
use tower::layer::util::{Identity, Stack};
use tower::timeout::TimeoutLayer;
use tower::util::{MapRequestLayer, MapResponseLayer, MapResultLayer};
use tower::{ServiceBuilder, ServiceExt as _};
use tower_http::classify::{GrpcCode, GrpcErrorsAsFailures};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::{
    DefaultOnBodyChunk, DefaultOnEos, DefaultOnFailure, DefaultOnRequest, DefaultOnResponse,
    TraceLayer,
};

use super::client_gate::ClientGateLayer;
use super::connect::ConnectLayer;
use super::connection::{ConnectionActivityLayer, ConnectionLimits, ConnectionTable};
use super::context::{MakeUnindexedRequestId, REQUEST_ID_HEADER, drop_unacceptable_request_id};
use super::malformed::answer_decode_failures;
use super::overload::OverloadLayer;
use super::pb;
use super::request_timeout::answer_elapsed;
use super::rpc_metrics::RpcMetricsLayer;
use crate::tls::HandshakeLimits;
use crate::webhook::Webhook;

/// The bounds both listeners apply to their connections and calls.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Calls of the API service in progress at once; more are shed. A call
    /// takes its slot only once its request message has arrived.
    pub max_concurrent_requests: usize,
    /// How long a call's request message may take to arrive completely.
    pub request_body_timeout: Duration,
    /// The longest any call may run, whatever its deadline.
    pub request_timeout: Duration,
    /// Largest request message accepted. Every request in the contract is a
    /// few hundred bytes; tonic's default 4 MiB would only serve abuse.
    pub max_request_message_bytes: usize,
    /// Largest request header block (metadata) accepted. A bearer token and
    /// the usual gRPC headers need a few KiB.
    pub max_header_list_bytes: u32,
    /// Concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// Connections open at once from one client address (IPv6: one /64);
    /// with the streams per connection, what one source can keep in flight.
    pub max_connections_per_address: usize,
    /// How long a connection may stay open with no call in progress.
    pub idle_connection_timeout: Duration,
    /// How often an HTTP/2 connection that sent nothing is pinged.
    pub http2_keepalive_interval: Duration,
    /// How long a ping's answer may take before the connection is dropped
    /// as dead.
    pub http2_keepalive_timeout: Duration,
    /// The TLS handshakes' bounds (listeners with TLS).
    pub handshakes: HandshakeLimits,
}

impl ServerLimits {
    pub(super) fn connections(&self) -> ConnectionLimits {
        ConnectionLimits {
            max_per_address: self.max_connections_per_address,
            idle_timeout: self.idle_connection_timeout,
        }
    }
}

/// Health checking and reflection for one listener.
#[derive(Debug)]
pub(super) struct Introspection {
    pub(super) health: tonic_health::server::HealthReporter,
    /// The API services this listener serves (`licensing.v1.UserService`, or
    /// `licensing.v1.IssuanceService` and `licensing.v1.AccountService`).
    /// The first is the one whose health follows the ledger.
    pub(super) service_names: &'static [&'static str],
    health_service:
        tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>,
}

impl Introspection {
    /// Creates a health service whose overall status starts as SERVING.
    pub(super) fn new(service_names: &'static [&'static str]) -> Self {
        let health = tonic_health::server::HealthReporter::new();
        let health_service =
            tonic_health::server::HealthService::from_health_reporter(health.clone());
        Self {
            health,
            service_names,
            health_service: tonic_health::pb::health_server::HealthServer::new(health_service),
        }
    }

    /// Adds health and reflection (v1 and v1alpha, which older tools such as
    /// grpcurl 1.8 and Python grpcio-reflection still use) to `routes`,
    /// describing only this listener's services and health: the reflection
    /// answers hold the files this listener serves and nothing else, so the
    /// public listener never describes the internal API.
    fn add_to(&self, routes: &mut tonic::service::RoutesBuilder) {
        routes.add_service(self.health_service.clone());
        let files = match descriptors_for(self.service_names) {
            Ok(files) => files,
            Err(error) => {
                // The descriptor set is compiled in; failing here is a build bug.
                tracing::error!(%error, "server reflection unavailable");
                return;
            }
        };
        let configure = || {
            let builder = tonic_reflection::server::Builder::configure()
                .register_file_descriptor_set(files.clone())
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .with_service_name("grpc.health.v1.Health");
            self.service_names.iter().fold(builder, |builder, service| {
                builder.with_service_name(*service)
            })
        };
        match (configure().build_v1(), configure().build_v1alpha()) {
            (Ok(v1), Ok(v1alpha)) => {
                routes.add_service(v1);
                routes.add_service(v1alpha);
            }
            (Err(error), _) | (_, Err(error)) => {
                tracing::error!(%error, "server reflection unavailable");
            }
        }
    }
}

/// The contract's files that `services` (`package.Service`) need: the files
/// declaring them and, transitively, the files they import.
fn descriptors_for(services: &[&str]) -> Result<FileDescriptorSet, prost::DecodeError> {
    let all = FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET)?;
    let declares = |file: &FileDescriptorProto| {
        file.service.iter().any(|declared| {
            let name = format!("{}.{}", file.package(), declared.name());
            services.contains(&name.as_str())
        })
    };
    let mut needed: Vec<String> = all
        .file
        .iter()
        .filter(|file| declares(file))
        .map(|file| file.name().to_owned())
        .collect();
    let mut index = 0;
    while let Some(name) = needed.get(index).cloned() {
        index += 1;
        let Some(file) = all.file.iter().find(|file| file.name() == name) else {
            continue;
        };
        for dependency in &file.dependency {
            if !needed.contains(dependency) {
                needed.push(dependency.clone());
            }
        }
    }
    Ok(FileDescriptorSet {
        file: all
            .file
            .into_iter()
            .filter(|file| needed.iter().any(|name| name == file.name()))
            .collect(),
    })
}

/// Settings of the public listener's HTTP behaviour.
#[derive(Debug, Clone)]
pub struct PublicOptions {
    /// Browser origins allowed to call over gRPC-Web (exact matches).
    pub cors_allowed_origins: Vec<HeaderValue>,
    pub limits: ServerLimits,
    /// Cryptlex's webhook endpoint, served on its path (404 while it has no
    /// secret).
    pub webhook: Webhook,
}

/// Serves the public listener on the connections of `incoming` (plain TCP,
/// or TLS streams from `tls::tls_incoming`), all registered in
/// `connections`, until `shutdown` resolves.
pub(super) async fn serve_public<IO, IE>(
    incoming: impl Stream<Item = Result<IO, IE>>,
    connections: ConnectionTable,
    user_service: pb::user_service_server::UserServiceServer<super::UserApi>,
    introspection: &Introspection,
    options: PublicOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error>
where
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limits = options.limits;
    let user_service = user_service.max_decoding_message_size(limits.max_request_message_bytes);
    let mut routes = Routes::builder();
    routes.add_service(user_service);
    introspection.add_to(&mut routes);

    // Inside every protocol's translation: every call here looks like
    // native gRPC, its status in headers or trailers. The RPC metrics sit
    // outside the layers that answer on their own, so those answers are
    // counted too.
    let grpc = ServiceBuilder::new()
        .layer(RpcMetricsLayer::new("public"))
        .layer(inner_layers(&limits, introspection.service_names));
    let web = ServiceBuilder::new()
        // CORS outside both translations, so preflights are answered
        // before them and errors stay readable by browsers.
        .layer(cors(options.cors_allowed_origins))
        // Connect and gRPC-Web both become native gRPC here. Connect's own
        // refusals (a body that is not JSON of the method, an unknown
        // compression) are counted in the RPC metrics by the Connect layer.
        .layer(ConnectLayer::new(
            &CONNECT_SERVICES,
            "public",
            limits.max_request_message_bytes,
            limits.request_body_timeout,
        ))
        .layer(tonic_web::GrpcWebLayer::new())
        .layer(grpc.clone());
    let stack = front_layers(connections)
        // The webhook path leaves the stack here, before anything that
        // speaks gRPC: tonic-web answers any HTTP/1.1 request that is not
        // gRPC-Web with 400, the timeout and overload layers answer with
        // gRPC statuses (an HTTP 200 that Cryptlex would take for success),
        // and the RPC metrics would count it as a call. It keeps the
        // connection bookkeeping, request id and trace span above, and
        // brings its own bounds (body size and time, a few deliveries at
        // once, none of the gRPC calls' slots). Native gRPC skips the
        // browser protocols' layers, which would only pass it through.
        .layer(PublicRouteLayer {
            webhook: options.webhook,
            grpc,
            web,
        })
        .into_inner();
    server_builder(&limits)
        // gRPC-Web arrives as HTTP/1.1 from fetch-only runtimes; without
        // this, HTTP/1.1 requests (and CORS preflights) get an HTTP/2
        // SETTINGS frame back and fail as a malformed response.
        .accept_http1(true)
        .layer(stack)
        .add_routes(routes.routes())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// Sends each request of the public listener to one of three stacks over
/// the same routes: the webhook path to [`Webhook`], native gRPC straight to
/// the `grpc` layers, and everything else (gRPC-Web, Connect, preflights,
/// HTTP/1.1, any request from a browser) through the `web` layers, which
/// hold CORS and the translations before the same `grpc` layers. All three
/// answer with one body type.
///
/// The split is what keeps the browser protocols off the cost of the plain
/// gRPC path: each of those layers looks at every request, clones its
/// configuration per call and adds `vary` headers, only to pass native gRPC
/// through unchanged (BENCHMARKS.md, instructions).
#[derive(Debug, Clone)]
pub(super) struct PublicRouteLayer<G, W> {
    webhook: Webhook,
    grpc: G,
    web: W,
}

impl<S, G, W> tower::Layer<S> for PublicRouteLayer<G, W>
where
    S: Clone,
    G: tower::Layer<S>,
    W: tower::Layer<S>,
{
    type Service = PublicRoute<G::Service, W::Service>;

    fn layer(&self, routes: S) -> Self::Service {
        PublicRoute {
            webhook: self.webhook.clone(),
            grpc: self.grpc.layer(routes.clone()),
            web: Arc::new(self.web.layer(routes)),
        }
    }
}

/// The service built by [`PublicRouteLayer`].
///
/// The server clones its whole stack for every request; the `web` layers
/// (CORS's lists among them) are cloned only for the requests they serve.
#[derive(Debug, Clone)]
pub(super) struct PublicRoute<G, W> {
    webhook: Webhook,
    grpc: G,
    web: Arc<W>,
}

impl<G, W, GBody, WBody, E> tower::Service<http::Request<tonic::body::Body>> for PublicRoute<G, W>
where
    G: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<GBody>,
            Error = E,
        >,
    G::Future: Send + 'static,
    W: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<WBody>,
            Error = E,
        > + Clone
        + Send
        + Sync
        + 'static,
    W::Future: Send + 'static,
    GBody: http_body::Body<Data = prost::bytes::Bytes> + Send + 'static,
    GBody::Error: Into<BoxError>,
    WBody: http_body::Body<Data = prost::bytes::Bytes> + Send + 'static,
    WBody::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = E;
    type Future = RouteFuture<G::Future, E>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The `web` clone is made ready in its own call.
        self.grpc.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        // The exact path only: `/webhooks/cryptlex/x` is nobody's, and goes
        // on to the gRPC routes, which know no such path.
        if request.uri().path() == self.webhook.path() {
            let webhook = self.webhook.clone();
            return RouteFuture::Other {
                call: Box::pin(async move {
                    Ok(webhook.handle(request).await.map(tonic::body::Body::new))
                }),
            };
        }
        if is_native_grpc(&request) {
            return RouteFuture::Grpc {
                call: self.grpc.call(request),
            };
        }
        let web = W::clone(&self.web);
        RouteFuture::Other {
            call: Box::pin(async move {
                web.oneshot(request)
                    .await
                    .map(|response| response.map(tonic::body::Body::new))
            }),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of a [`PublicRoute`] call: native gRPC's unboxed, as it is
    /// most of the traffic; the webhook's and the browser protocols' boxed.
    #[project = RouteFutureProjection]
    pub(super) enum RouteFuture<F, E> {
        Grpc {
            #[pin]
            call: F,
        },
        Other {
            call: BoxFuture<'static, Result<Response, E>>,
        },
    }
}

impl<F, ResBody, E> Future for RouteFuture<F, E>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
    ResBody: http_body::Body<Data = prost::bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Output = Result<Response, E>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            RouteFutureProjection::Grpc { call } => call
                .poll(cx)
                .map_ok(|response| response.map(tonic::body::Body::new)),
            RouteFutureProjection::Other { call } => call.as_mut().poll(cx),
        }
    }
}

/// Whether `request` is a call every browser layer would pass through
/// untouched: an HTTP/2 POST in a gRPC content type (not gRPC-Web's), with no
/// `origin` (a browser's request needs CORS headers on its answer).
fn is_native_grpc(request: &http::Request<tonic::body::Body>) -> bool {
    let headers = request.headers();
    request.version() == http::Version::HTTP_2
        && request.method() == Method::POST
        && !headers.contains_key(http::header::ORIGIN)
        && headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|value| is_grpc_content_type(value.as_bytes()))
}

/// `application/grpc`, `application/grpc+proto`, `application/grpc;...`,
/// in any case; not `application/grpc-web...`.
fn is_grpc_content_type(value: &[u8]) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    value.len() >= GRPC.len()
        && value[..GRPC.len()].eq_ignore_ascii_case(GRPC)
        && matches!(value.get(GRPC.len()), None | Some(b'+' | b';'))
}

/// What [`front_layers`] builds.
type FrontLayers = Stack<
    PropagateRequestIdLayer,
    Stack<
        RpcTraceLayer,
        Stack<
            SetRequestIdLayer<MakeUnindexedRequestId>,
            Stack<
                MapRequestLayer<DropRequestId>,
                Stack<SetSensitiveRequestHeadersLayer, Stack<ConnectionActivityLayer, Identity>>,
            >,
        >,
    >,
>;

type DropRequestId = fn(http::Request<tonic::body::Body>) -> http::Request<tonic::body::Body>;

/// The outer layers both listeners share, outermost first.
fn front_layers(connections: ConnectionTable) -> ServiceBuilder<FrontLayers> {
    ServiceBuilder::new()
        // Outermost, so every call (gRPC-Web and preflights too) keeps its
        // connection from being closed as idle until its answer is sent.
        .layer(ConnectionActivityLayer::new(connections))
        // Mark credentials sensitive before anything can log headers.
        .layer(SetSensitiveRequestHeadersLayer::new([
            AUTHORIZATION,
            COOKIE,
        ]))
        // Give every call an id (keeping the caller's if it is acceptable),
        // so the trace span, the upstream request and the response all carry
        // the same one.
        .layer(MapRequestLayer::new(
            drop_unacceptable_request_id as DropRequestId,
        ))
        .layer(SetRequestIdLayer::new(
            REQUEST_ID_HEADER,
            MakeUnindexedRequestId,
        ))
        .layer(trace_layer())
        .layer(PropagateRequestIdLayer::new(REQUEST_ID_HEADER))
}

/// What [`inner_layers`] builds.
type InnerLayers = Stack<
    OverloadLayer,
    Stack<
        TimeoutLayer,
        Stack<MapResultLayer<AnswerElapsed>, Stack<MapResponseLayer<AnswerMalformed>, Identity>>,
    >,
>;

type AnswerMalformed = fn(Response) -> Response;
type AnswerElapsed = fn(Result<Response, BoxError>) -> Result<Response, BoxError>;
type Response = http::Response<tonic::body::Body>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The inner layers both listeners share, in front of the routes, outermost
/// first: each answers a call on its own when it must. `services` are the
/// API services whose calls take a slot.
fn inner_layers(limits: &ServerLimits, services: &[&str]) -> InnerLayers {
    ServiceBuilder::new()
        // Garbage instead of protobuf is the caller's mistake, not ours.
        .layer(MapResponseLayer::new(
            answer_decode_failures as AnswerMalformed,
        ))
        // The backstop for every call, with our own status.
        .layer(MapResultLayer::new(answer_elapsed as AnswerElapsed))
        .layer(TimeoutLayer::new(limits.request_timeout))
        // Innermost: only calls whose message has arrived take a slot.
        .layer(OverloadLayer::new(
            limits.max_concurrent_requests,
            services,
            limits.request_body_timeout,
            limits.max_request_message_bytes,
        ))
        .into_inner()
}

/// The HTTP/2 limits both listeners share: bounded streams per connection
/// and header size, and keep-alive pings that clear dead connections.
fn server_builder(limits: &ServerLimits) -> Server {
    Server::builder()
        .tcp_nodelay(true)
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_max_header_list_size(limits.max_header_list_bytes)
        .http2_keepalive_interval(Some(limits.http2_keepalive_interval))
        .http2_keepalive_timeout(Some(limits.http2_keepalive_timeout))
}

/// Serves the internal listener on the mutual-TLS connections of `incoming`
/// (from `tls::tls_incoming`), all registered in `connections`, until
/// `shutdown` resolves.
///
/// Only `IssuanceService`, `AccountService`, health and reflection: the
/// browser-facing layers (gRPC-Web, CORS, HTTP/1.1) have no business here.
pub(super) async fn serve_internal<IO, IE>(
    incoming: impl Stream<Item = Result<IO, IE>>,
    connections: ConnectionTable,
    services: InternalServices,
    introspection: &Introspection,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error>
where
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let InternalServices { issuance, account } = services;
    // The allow-list is the same for every operation; each RPC then checks
    // that the caller's entry names it.
    let gate = ClientGateLayer::new(issuance.clone());
    let issuance_service = issuance
        .into_server()
        .max_decoding_message_size(limits.max_request_message_bytes);
    let account_service = account
        .into_server()
        .max_decoding_message_size(limits.max_request_message_bytes);
    let mut routes = Routes::builder();
    routes.add_service(issuance_service);
    routes.add_service(account_service);
    introspection.add_to(&mut routes);
    let stack = front_layers(connections)
        .layer(RpcMetricsLayer::new("internal"))
        // Before anything of the call is read: a certificate the CA signed
        // but the allow-list does not name gets nothing else.
        .layer(gate)
        .layer(inner_layers(&limits, introspection.service_names))
        .into_inner();
    server_builder(&limits)
        .layer(stack)
        .add_routes(routes.routes())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// The internal listener's API services.
#[derive(Debug, Clone)]
pub(super) struct InternalServices {
    pub(super) issuance: super::IssuanceApi,
    pub(super) account: super::AccountApi,
}

/// The public listener's API services, for health and reflection.
pub(super) const PUBLIC_SERVICES: &[&str] = &[pb::user_service_server::SERVICE_NAME];

/// The services the public listener serves over Connect too: its API and
/// health (so `curl` can check it).
const CONNECT_SERVICES: [&str; 2] = [
    pb::user_service_server::SERVICE_NAME,
    tonic_health::pb::health_server::SERVICE_NAME,
];

/// The internal listener's API services; issuance first, as its health
/// follows the ledger.
pub(super) const INTERNAL_SERVICES: &[&str] = &[
    pb::issuance_service_server::SERVICE_NAME,
    pb::account_service_server::SERVICE_NAME,
];

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
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|id| super::context::is_acceptable_request_id(id))
        .unwrap_or("-");
    let span = tracing::info_span!("rpc", method = %request.uri().path(), request_id = %request_id);
    crate::telemetry::continue_remote_trace(&span, request.headers());
    span
}

/// CORS for gRPC-Web and Connect from the configured origins. Allows
/// Connect's GET and headers, and exposes the gRPC status headers, without
/// which browsers cannot read gRPC-Web errors (tonic-web adds no CORS of its
/// own; Connect's errors are in the body).
fn cors(allowed_origins: Vec<HeaderValue>) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(allowed_origins))
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            AUTHORIZATION,
            http::header::CONTENT_TYPE,
            HeaderName::from_static("x-grpc-web"),
            HeaderName::from_static("x-user-agent"),
            HeaderName::from_static("grpc-timeout"),
            HeaderName::from_static("connect-protocol-version"),
            HeaderName::from_static("connect-timeout-ms"),
            REQUEST_ID_HEADER,
            HeaderName::from_static("traceparent"),
            HeaderName::from_static("tracestate"),
        ])
        .expose_headers([
            HeaderName::from_static("grpc-status"),
            HeaderName::from_static("grpc-message"),
            HeaderName::from_static("grpc-status-details-bin"),
            http::header::RETRY_AFTER,
            REQUEST_ID_HEADER,
        ])
        .max_age(Duration::from_secs(24 * 60 * 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_names(services: &[&str]) -> Vec<String> {
        descriptors_for(services)
            .expect("the compiled descriptor set decodes")
            .file
            .into_iter()
            .map(|file| file.name().to_owned())
            .collect()
    }

    #[test]
    fn only_native_grpc_content_types_skip_the_browser_layers() {
        for native in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC;charset=utf-8",
        ] {
            assert!(is_grpc_content_type(native.as_bytes()), "{native}");
        }
        for other in [
            "application/grpc-web",
            "application/grpc-web+proto",
            "application/grpc-web-text",
            "application/grpcx",
            "application/json",
            "application/connect+proto",
            "application/grp",
            "",
        ] {
            assert!(!is_grpc_content_type(other.as_bytes()), "{other}");
        }
    }

    #[test]
    fn each_listener_describes_its_own_service_and_what_it_imports_only() {
        let public = file_names(PUBLIC_SERVICES);
        assert!(
            public.contains(&"licensing/v1/user_service.proto".to_owned()),
            "{public:?}"
        );
        assert!(
            public.contains(&"licensing/v1/types.proto".to_owned()),
            "{public:?}"
        );
        assert!(
            !public
                .iter()
                .any(|name| name.contains("issuance") || name.contains("account")),
            "{public:?}"
        );

        let internal = file_names(INTERNAL_SERVICES);
        assert!(internal.contains(&"licensing/v1/issuance_service.proto".to_owned()));
        assert!(internal.contains(&"licensing/v1/account_service.proto".to_owned()));
        assert!(internal.contains(&"licensing/v1/types.proto".to_owned()));
        assert!(
            !internal.iter().any(|name| name.contains("user_service")),
            "{internal:?}"
        );
    }
}

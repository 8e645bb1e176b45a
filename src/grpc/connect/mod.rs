//! The Connect protocol's unary calls (connectrpc.com/docs/protocol) on the
//! public listener, beside gRPC and gRPC-Web, as one translation point like
//! tonic-web's: a Connect request becomes the native gRPC request of the
//! same method, goes through the same stack (RPC metrics, the request
//! timeout, load shedding, the decode-failure answers, the adapters and the
//! status table), and its gRPC answer becomes the Connect answer.
//!
//! - `POST /package.Service/Method` with `application/json` (the protobuf
//!   JSON mapping, see [`schema`]) or `application/proto`, optionally gzip
//!   (`Content-Encoding`); `Accept-Encoding: gzip` gets larger answers
//!   gzipped.
//! - `GET` with `?encoding=json|proto&message=...` (`base64=1`,
//!   `compression=gzip`) for the methods marked `NO_SIDE_EFFECTS`; the rest
//!   answer 405.
//! - `connect-protocol-version` (`connect=v1` on GET) is checked when sent
//!   but not required, so a plain `curl` works; `connect-timeout-ms` becomes
//!   the call's `grpc-timeout`, hence its deadline.
//! - Errors are the protocol's JSON error body with the HTTP status its
//!   table gives the code, and the same `google.rpc` details as over gRPC
//!   ([`error`]). Trailers become `trailer-` headers.
//! - Every answer is `Cache-Control: private, no-store`: they are per user.
//!
//! Streaming calls (`application/connect+proto`: reflection and health's
//! `Watch`, for tools such as `buf curl`) are translated by [`stream`].
//!
//! Anything else (gRPC, gRPC-Web, CORS preflights) passes through
//! untouched. Requests are bounded as the gRPC ones are: the body as sent,
//! and after decompression, at most `limits.max_request_message_bytes`, and
//! it must arrive within `limits.request_body_timeout`, or the call is
//! refused (`REQUEST_TOO_LARGE`, `REQUEST_BODY_TIMEOUT`) before it takes a
//! call slot.

mod error;
mod schema;
mod stream;
mod web_json;

use std::io::{Read as _, Write as _};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use futures::future::BoxFuture;
use http::header::{
    ACCEPT_ENCODING, ALLOW, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE,
    HeaderName, HeaderValue, TE, TRAILER, TRANSFER_ENCODING, VARY,
};
use http::{Method, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use prost::bytes::{BufMut as _, Bytes, BytesMut};
use tokio::time::Instant;
use tonic::Code;

use self::schema::Schema;
use super::status::Refusal;

type Body = tonic::body::Body;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// For the `connect_json` fuzz target: reads `json` as the request of the
/// `selector`-th public method (by path order) and, when accepted, checks
/// that the protobuf it became reads back as JSON that gives the same
/// message again. `Err` holds a refusal's description, which must not
/// quote the request (the target checks that).
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_json_round_trip(selector: u8, json: &[u8]) -> Result<(), String> {
    use std::sync::OnceLock;
    static SCHEMA: OnceLock<(Schema, Vec<String>)> = OnceLock::new();
    let (schema, paths) = SCHEMA.get_or_init(|| {
        let schema = Schema::new(&[super::pb::user_service_server::SERVICE_NAME])
            .expect("the compiled descriptor set loads");
        let mut paths: Vec<String> = schema.paths().map(str::to_owned).collect();
        paths.sort();
        (schema, paths)
    });
    let path = &paths[usize::from(selector) % paths.len()];
    let method = schema.method(path).expect("a listed path");
    let proto =
        Schema::json_to_proto(&method.input, json).map_err(|refusal| refusal.description)?;
    // Requests are never written as JSON by the gateway; a value that
    // reads but does not write (a Timestamp at the edge of its range) has
    // nothing to check.
    let Ok(again) = Schema::proto_to_json(&method.input, &proto) else {
        return Ok(());
    };
    let proto_again =
        Schema::json_to_proto(&method.input, &again).expect("the gateway's own JSON reads back");
    let first = prost_reflect::DynamicMessage::decode(method.input.clone(), proto.as_slice());
    let second =
        prost_reflect::DynamicMessage::decode(method.input.clone(), proto_again.as_slice());
    assert_eq!(
        first.ok(),
        second.ok(),
        "the JSON round trip changed the message"
    );
    Ok(())
}

/// The largest gRPC answer the translation reads (ours are a few KiB; this
/// only stops a runaway).
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;
/// Answers at least this large are gzipped for a caller that accepts it.
const GZIP_MIN_BYTES: usize = 1024;
/// `connect-timeout-ms` has at most 10 digits.
const MAX_TIMEOUT_DIGITS: usize = 10;

const PROTOCOL_VERSION: HeaderName = HeaderName::from_static("connect-protocol-version");
const TIMEOUT_MS: HeaderName = HeaderName::from_static("connect-timeout-ms");

/// Adds the Connect protocol to a listener's stack, for the methods of the
/// listed services.
#[derive(Debug, Clone)]
pub(super) struct ConnectLayer {
    /// `None` if the compiled descriptors would not load (a build bug,
    /// logged): everything then passes through.
    shared: Option<Arc<Shared>>,
}

#[derive(Debug)]
struct Shared {
    schema: Schema,
    max_message_bytes: usize,
    body_timeout: Duration,
    listener: &'static str,
}

impl ConnectLayer {
    /// Connect for `services` (`package.Service`) on `listener` (its metrics
    /// label), with the listener's request bounds.
    pub(super) fn new(
        services: &[&str],
        listener: &'static str,
        max_message_bytes: usize,
        body_timeout: Duration,
    ) -> Self {
        let shared = match Schema::new(services) {
            Ok(schema) => Some(Arc::new(Shared {
                schema,
                max_message_bytes,
                body_timeout,
                listener,
            })),
            Err(error) => {
                tracing::error!(%error, "the Connect protocol is unavailable");
                None
            }
        };
        Self { shared }
    }
}

impl<S> tower::Layer<S> for ConnectLayer {
    type Service = Connect<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Connect {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service built by [`ConnectLayer`].
#[derive(Debug, Clone)]
pub(super) struct Connect<S> {
    inner: S,
    shared: Option<Arc<Shared>>,
}

impl<S, ResBody> tower::Service<http::Request<Body>> for Connect<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let connect = self
            .shared
            .as_ref()
            .and_then(|shared| Some((shared.clone(), classify(&request)?)))
            .filter(|(shared, call)| {
                !matches!(call, Call::Unsupported)
                    || shared.schema.method(request.uri().path()).is_some()
            });
        let Some((shared, call)) = connect else {
            let call = self.inner.call(request);
            return Box::pin(async move { call.await.map(|response| response.map(Body::new)) });
        };
        // The service that was made ready serves this call; a clone takes
        // its place for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        if let Call::Stream = call {
            return Box::pin(async move {
                let started = Instant::now();
                let path = request.uri().path().to_owned();
                match stream::grpc_request(request) {
                    Ok(grpc) => {
                        let response = inner.call(grpc).await?;
                        Ok(stream::answer(shared, Ok(response)))
                    }
                    Err(status) => {
                        super::rpc_metrics::record_unserved(
                            shared.listener,
                            &path,
                            status.code(),
                            started,
                        );
                        Ok(stream::answer::<Body>(shared, Err(status)))
                    }
                }
            });
        }
        if let Call::GrpcWebJson = call {
            return Box::pin(web_json::serve(shared, inner, request));
        }
        if let Call::Unsupported = call {
            super::rpc_metrics::record_unserved(
                shared.listener,
                request.uri().path(),
                Code::Unimplemented,
                Instant::now(),
            );
            let refused = Refused::from(Refusal::UnsupportedEncoding.with_message(
                "unsupported content type: send content-type application/json (or application/proto, \
                 application/grpc, application/grpc-web+proto)",
            ))
            .with_http(StatusCode::UNSUPPORTED_MEDIA_TYPE)
            .with_header(
                HeaderName::from_static("accept-post"),
                HeaderValue::from_static("application/json, application/proto"),
            );
            let answer = error_answer(&shared, &refused);
            return Box::pin(async move { Ok(answer) });
        }
        Box::pin(unary(shared, inner, request, call))
    }
}

/// The message encoding of a Connect call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Json,
    Proto,
}

impl Encoding {
    fn content_type(self) -> HeaderValue {
        match self {
            Self::Json => HeaderValue::from_static("application/json"),
            Self::Proto => HeaderValue::from_static("application/proto"),
        }
    }
}

/// How a Connect call arrived.
#[derive(Debug, Clone, Copy)]
enum Call {
    /// Unary, POST.
    Post(Encoding),
    /// Unary, GET.
    Get,
    /// Streaming (binary).
    Stream,
    /// gRPC-Web in JSON mode, which tonic-web does not speak ([`web_json`]).
    GrpcWebJson,
    /// A POST in no content type of gRPC, gRPC-Web or Connect (a plain
    /// `curl -d`, `text/plain`, `application/connect+json`): 415 for the
    /// listener's methods, anything else passes on.
    Unsupported,
}

/// Whether `request` is a Connect unary call: a POST with a Connect content
/// type, or a GET with the protocol's `encoding` parameter.
fn classify(request: &http::Request<Body>) -> Option<Call> {
    match *request.method() {
        Method::POST => {
            let Some(content_type) = request
                .headers()
                .get(CONTENT_TYPE)
                .map(|value| value.to_str().unwrap_or_default())
            else {
                return Some(Call::Unsupported);
            };
            let mime = content_type.split(';').next().unwrap_or_default().trim();
            if mime.eq_ignore_ascii_case("application/json") {
                Some(Call::Post(Encoding::Json))
            } else if mime.eq_ignore_ascii_case("application/proto") {
                Some(Call::Post(Encoding::Proto))
            } else if mime.eq_ignore_ascii_case("application/connect+proto") {
                Some(Call::Stream)
            } else if mime.eq_ignore_ascii_case("application/grpc-web+json") {
                Some(Call::GrpcWebJson)
            } else if mime.len() >= 16 && mime[..16].eq_ignore_ascii_case("application/grpc") {
                // gRPC and gRPC-Web (`application/grpc-web+proto`, ...).
                None
            } else {
                Some(Call::Unsupported)
            }
        }
        Method::GET => {
            let query = request.uri().query()?;
            url::form_urlencoded::parse(query.as_bytes())
                .any(|(name, _)| name == "encoding")
                .then_some(Call::Get)
        }
        _ => None,
    }
}

/// A call the translation answers itself, before any service sees it.
struct Refused {
    status: tonic::Status,
    /// Instead of the code's HTTP status (405 for a GET of a method with
    /// side effects, 404 for an unknown method, 415 for an unknown charset).
    http: Option<StatusCode>,
    headers: http::HeaderMap,
}

impl From<tonic::Status> for Refused {
    fn from(status: tonic::Status) -> Self {
        Self {
            status,
            http: None,
            headers: http::HeaderMap::new(),
        }
    }
}

impl Refused {
    fn with_http(mut self, http: StatusCode) -> Self {
        self.http = Some(http);
        self
    }

    fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }
}

/// Serves one Connect unary call through `inner`.
async fn unary<S, ResBody>(
    shared: Arc<Shared>,
    mut inner: S,
    request: http::Request<Body>,
    call: Call,
) -> Result<http::Response<Body>, S::Error>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<ResBody>>,
    ResBody: http_body::Body<Data = Bytes>,
    ResBody::Error: Into<BoxError>,
{
    let started = Instant::now();
    let path = request.uri().path().to_owned();
    let gzip_answer = accepts_gzip(request.headers());
    let (grpc_request, method, encoding) = match translate_request(&shared, request, call).await {
        Ok(translated) => translated,
        Err(refused) => {
            super::rpc_metrics::record_unserved(
                shared.listener,
                &path,
                refused.status.code(),
                started,
            );
            return Ok(error_answer(&shared, &refused));
        }
    };
    let response = inner.call(grpc_request).await?;
    Ok(translate_answer(&shared, response, &method, encoding, gzip_answer).await)
}

/// The gRPC request for a Connect call, with the method and the encoding
/// the answer must use.
async fn translate_request(
    shared: &Shared,
    request: http::Request<Body>,
    call: Call,
) -> Result<(http::Request<Body>, schema::Method, Encoding), Refused> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let Some(method) = shared.schema.method(path).cloned() else {
        return Err(Refused::from(tonic::Status::unimplemented(format!(
            "this listener has no method {path}"
        )))
        .with_http(StatusCode::NOT_FOUND));
    };
    if !method.unary {
        return Err(tonic::Status::unimplemented(format!(
            "{path} streams; call it with application/connect+proto, gRPC or gRPC-Web"
        ))
        .into());
    }
    let timeout = connect_timeout(&parts.headers)?;
    let (encoding, message) = match call {
        // Served by `stream` or refused in `call`, never here.
        Call::Stream | Call::Unsupported | Call::GrpcWebJson => {
            return Err(tonic::Status::unimplemented("a streaming call").into());
        }
        Call::Post(encoding) => {
            check_protocol_version(parts.headers.get(PROTOCOL_VERSION), "1")?;
            check_charset(&parts.headers)?;
            let body = read_body(shared, &parts.headers, body).await?;
            let message = decompress(shared, content_encoding(&parts.headers), body)?;
            (encoding, message)
        }
        Call::Get => {
            if !method.no_side_effects {
                return Err(Refused::from(Refusal::MethodNotAllowed.with_message(format!(
                    "{path} changes state, so it takes POST; only calls without side effects take GET"
                )))
                .with_http(StatusCode::METHOD_NOT_ALLOWED)
                .with_header(ALLOW, HeaderValue::from_static("POST")));
            }
            get_message(shared, parts.uri.query().unwrap_or_default())?
        }
    };
    let proto = match encoding {
        Encoding::Proto => message,
        Encoding::Json => Schema::json_to_proto(&method.input, &message)
            .map(Bytes::from)
            .map_err(|refusal| Refusal::MalformedRequest.with_message(refusal.description))?,
    };
    Ok((grpc_request(parts, &proto, timeout), method, encoding))
}

/// The native gRPC request carrying `proto`: same path, authority,
/// extensions (the connection's address and TLS identity) and headers
/// (`authorization`, the request id, trace context), with gRPC's content
/// type, framing and `grpc-timeout` instead of Connect's.
fn grpc_request(
    mut parts: http::request::Parts,
    proto: &[u8],
    timeout: Option<HeaderValue>,
) -> http::Request<Body> {
    parts.method = Method::POST;
    parts.version = http::Version::HTTP_2;
    let mut uri = http::uri::Parts::from(parts.uri);
    uri.path_and_query = uri
        .path_and_query
        .and_then(|path_and_query| path_and_query.path().parse().ok());
    parts.uri = http::Uri::from_parts(uri).unwrap_or_default();
    grpc_headers(
        &mut parts.headers,
        &[
            CONTENT_LENGTH,
            CONTENT_ENCODING,
            ACCEPT_ENCODING,
            TRANSFER_ENCODING,
        ],
        timeout,
    );
    let mut frame = BytesMut::with_capacity(5 + proto.len());
    frame.put_u8(0);
    frame.put_u32(u32::try_from(proto.len()).unwrap_or(u32::MAX));
    frame.put_slice(proto);
    http::Request::from_parts(parts, Body::new(Full::new(frame.freeze())))
}

/// Turns a Connect request's headers into a gRPC request's: Connect's own
/// and `also` removed (as are a caller's own gRPC framing headers, which
/// would only confuse tonic), gRPC's content type and `te`, and the
/// deadline as `grpc-timeout`.
fn grpc_headers(headers: &mut http::HeaderMap, also: &[HeaderName], timeout: Option<HeaderValue>) {
    for name in [CONTENT_TYPE, PROTOCOL_VERSION, TIMEOUT_MS]
        .iter()
        .chain(also)
    {
        headers.remove(name);
    }
    for name in ["grpc-timeout", "grpc-encoding", "grpc-accept-encoding"] {
        headers.remove(name);
    }
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(TE, HeaderValue::from_static("trailers"));
    if let Some(timeout) = timeout {
        headers.insert("grpc-timeout", timeout);
    }
}

/// `connect-timeout-ms` as a `grpc-timeout` value (milliseconds, or whole
/// seconds beyond gRPC's eight digits); `None` when absent.
fn connect_timeout(headers: &http::HeaderMap) -> Result<Option<HeaderValue>, Refused> {
    let Some(value) = headers.get(TIMEOUT_MS) else {
        return Ok(None);
    };
    let refused = || {
        Refused::from(Refusal::MalformedRequest.with_message(
            "connect-timeout-ms must be a positive number of milliseconds (at most 10 digits)",
        ))
    };
    let text = value.to_str().map_err(|_| refused())?;
    if text.is_empty()
        || text.len() > MAX_TIMEOUT_DIGITS
        || !text.bytes().all(|byte| byte.is_ascii_digit())
    {
        return Err(refused());
    }
    let millis: u64 = text.parse().map_err(|_| refused())?;
    let grpc = if millis <= 99_999_999 {
        format!("{millis}m")
    } else {
        format!("{}S", (millis / 1000).min(99_999_999))
    };
    Ok(HeaderValue::from_str(&grpc).ok())
}

/// Refuses a protocol version other than `expected` (absent is accepted).
fn check_protocol_version(value: Option<&HeaderValue>, expected: &str) -> Result<(), Refused> {
    match value {
        None => Ok(()),
        Some(value) if value.as_bytes() == expected.as_bytes() => Ok(()),
        Some(_) => Err(Refusal::MalformedRequest
            .with_message(
                "this server speaks Connect protocol version 1 (connect-protocol-version: 1, or connect=v1 on GET)",
            )
            .into()),
    }
}

/// Refuses a JSON body in a charset other than UTF-8 (the only one the
/// protobuf JSON mapping has) with 415.
fn check_charset(headers: &http::HeaderMap) -> Result<(), Refused> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let charset = content_type.split(';').skip(1).find_map(|parameter| {
        let (name, value) = parameter.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| value.trim().trim_matches('"'))
    });
    match charset {
        None => Ok(()),
        Some(charset) if charset.eq_ignore_ascii_case("utf-8") => Ok(()),
        Some(_) => Err(Refused::from(
            Refusal::UnsupportedEncoding.with_message("request bodies must be UTF-8"),
        )
        .with_http(StatusCode::UNSUPPORTED_MEDIA_TYPE)),
    }
}

fn content_encoding(headers: &http::HeaderMap) -> &str {
    headers
        .get(CONTENT_ENCODING)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("identity")
}

/// The request body, at most the listener's message size, arriving within
/// its body timeout.
async fn read_body(
    shared: &Shared,
    headers: &http::HeaderMap,
    body: Body,
) -> Result<Bytes, Refused> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > shared.max_message_bytes as u64) {
        return Err(tonic::Status::from(Refusal::RequestTooLarge).into());
    }
    let limited = Limited::new(body, shared.max_message_bytes);
    match tokio::time::timeout(shared.body_timeout, limited.collect()).await {
        Err(_) => Err(tonic::Status::from(Refusal::RequestBodyTimeout).into()),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
            Err(tonic::Status::from(Refusal::RequestTooLarge).into())
        }
        Ok(Err(_)) => Err(Refusal::MalformedRequest
            .with_message("the request body could not be read")
            .into()),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// `body` decompressed by `encoding` (`identity` or `gzip`), at most the
/// listener's message size.
fn decompress(shared: &Shared, encoding: &str, body: Bytes) -> Result<Bytes, Refused> {
    if encoding.eq_ignore_ascii_case("identity") {
        return Ok(body);
    }
    if !encoding.eq_ignore_ascii_case("gzip") {
        return Err(Refused::from(
            Refusal::UnsupportedEncoding
                .with_message("unsupported compression; this server accepts gzip and identity"),
        )
        .with_header(ACCEPT_ENCODING, HeaderValue::from_static("gzip")));
    }
    let limit = shared.max_message_bytes;
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    let read = flate2::read::GzDecoder::new(body.as_ref())
        .take(limit as u64 + 1)
        .read_to_end(&mut out);
    match read {
        Err(_) => Err(Refusal::MalformedRequest
            .with_message("the request body is not valid gzip")
            .into()),
        Ok(length) if length > limit => Err(tonic::Status::from(Refusal::RequestTooLarge).into()),
        Ok(_) => Ok(Bytes::from(out)),
    }
}

/// The encoding and message of a GET call's query.
fn get_message(shared: &Shared, query: &str) -> Result<(Encoding, Bytes), Refused> {
    let mut encoding = None;
    let mut message = None;
    let mut base64 = false;
    let mut compression = None;
    let mut version = None;
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match name.as_ref() {
            "encoding" => encoding = Some(value.into_owned()),
            "message" => message = Some(value.into_owned()),
            "base64" => base64 = value == "1",
            "compression" => compression = Some(value.into_owned()),
            "connect" => version = Some(value.into_owned()),
            _ => {}
        }
    }
    check_protocol_version(
        version
            .as_deref()
            .and_then(|version| HeaderValue::from_str(version).ok())
            .as_ref(),
        "v1",
    )?;
    let encoding = match encoding.as_deref() {
        Some("json") => Encoding::Json,
        Some("proto") => Encoding::Proto,
        _ => {
            return Err(Refusal::UnsupportedEncoding
                .with_message("encoding must be json or proto")
                .into());
        }
    };
    let message = message.unwrap_or_default();
    if message.len() > shared.max_message_bytes.saturating_mul(2) {
        return Err(tonic::Status::from(Refusal::RequestTooLarge).into());
    }
    let bytes = if base64 {
        URL_SAFE_ANY_PADDING
            .decode(message.as_bytes())
            .map_err(|_| Refusal::MalformedRequest.with_message("message is not URL-safe base64"))?
    } else {
        message.into_bytes()
    };
    if bytes.len() > shared.max_message_bytes {
        return Err(tonic::Status::from(Refusal::RequestTooLarge).into());
    }
    let bytes = decompress(
        shared,
        compression.as_deref().unwrap_or("identity"),
        Bytes::from(bytes),
    )?;
    Ok((encoding, bytes))
}

/// URL-safe base64, padded or not, as Connect's GET allows.
const URL_SAFE_ANY_PADDING: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// Whether `Accept-Encoding` lists gzip (without `q=0`).
fn accepts_gzip(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or_default().trim();
            let refused = parts.any(|parameter| {
                let parameter = parameter.trim();
                parameter == "q=0" || parameter.starts_with("q=0.0") || parameter == "q=0."
            });
            coding.eq_ignore_ascii_case("gzip") && !refused
        })
}

/// The Connect answer for the gRPC answer `response`.
async fn translate_answer<B>(
    shared: &Shared,
    response: http::Response<B>,
    method: &schema::Method,
    encoding: Encoding,
    gzip_answer: bool,
) -> http::Response<Body>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let (parts, body) = response.into_parts();
    let (data, trailers) = match Limited::new(body, MAX_ANSWER_BYTES).collect().await {
        Ok(collected) => {
            let trailers = collected.trailers().cloned();
            (collected.to_bytes(), trailers)
        }
        Err(error) => {
            tracing::warn!(%error, "a gRPC answer could not be read for Connect");
            let status = tonic::Status::internal("the answer could not be read");
            return error_answer(shared, &Refused::from(status));
        }
    };
    let status = tonic::Status::from_header_map(&parts.headers)
        .or_else(|| trailers.as_ref().and_then(tonic::Status::from_header_map))
        .unwrap_or_else(|| tonic::Status::unknown("the call ended without a status"));
    let mut headers = metadata_headers(&parts.headers, trailers.as_ref());
    if status.code() != Code::Ok {
        let mut refused = Refused::from(status);
        refused.headers.extend(headers);
        return error_answer(shared, &refused);
    }
    let message = match grpc_message(&data) {
        Some(message) => message,
        None => {
            tracing::warn!("a gRPC answer had no single uncompressed message for Connect");
            let status = tonic::Status::internal("the answer was malformed");
            return error_answer(shared, &Refused::from(status));
        }
    };
    let body = match encoding {
        Encoding::Proto => message,
        Encoding::Json => match Schema::proto_to_json(&method.output, &message) {
            Ok(json) => Bytes::from(json),
            Err(error) => {
                tracing::warn!(%error, "a gRPC answer could not be written as JSON");
                let status = tonic::Status::internal("the answer could not be written as JSON");
                return error_answer(shared, &Refused::from(status));
            }
        },
    };
    headers.insert(CONTENT_TYPE, encoding.content_type());
    let body = if gzip_answer && body.len() >= GZIP_MIN_BYTES {
        match gzip(&body) {
            Some(compressed) => {
                headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                compressed
            }
            None => body,
        }
    } else {
        body
    };
    answer(StatusCode::OK, headers, body)
}

/// The message of a gRPC answer body: one uncompressed length-prefixed
/// frame.
fn grpc_message(data: &Bytes) -> Option<Bytes> {
    let header = data.get(..5)?;
    let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if header[0] != 0 || data.len() != 5 + length {
        return None;
    }
    Some(data.slice(5..))
}

/// The answer's own headers and trailers as Connect unary headers: gRPC's
/// framing headers dropped, trailers prefixed with `trailer-`.
fn metadata_headers(
    headers: &http::HeaderMap,
    trailers: Option<&http::HeaderMap>,
) -> http::HeaderMap {
    let framing = |name: &HeaderName| {
        name.as_str().starts_with("grpc-")
            || [CONTENT_TYPE, CONTENT_LENGTH, TE, TRAILER, CONTENT_ENCODING].contains(name)
    };
    let mut out = http::HeaderMap::new();
    for (name, value) in headers.iter().filter(|(name, _)| !framing(name)) {
        out.append(name.clone(), value.clone());
    }
    for (name, value) in trailers
        .into_iter()
        .flat_map(http::HeaderMap::iter)
        .filter(|(name, _)| !framing(name))
    {
        if let Ok(prefixed) = HeaderName::try_from(format!("trailer-{name}")) {
            out.append(prefixed, value.clone());
        }
    }
    out
}

/// `body` gzipped (a fast level: the answers are small and the saving is
/// in bytes on the wire, not in the last per cent).
fn gzip(body: &[u8]) -> Option<Bytes> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 2),
        flate2::Compression::fast(),
    );
    encoder.write_all(body).ok()?;
    encoder.finish().ok().map(Bytes::from)
}

/// The Connect error answer for `refused`.
fn error_answer(shared: &Shared, refused: &Refused) -> http::Response<Body> {
    let (code_status, mut headers, body) = error::render(&refused.status, &shared.schema);
    for (name, value) in &refused.headers {
        headers.append(name.clone(), value.clone());
    }
    answer(
        refused.http.unwrap_or(code_status),
        headers,
        Bytes::from(body),
    )
}

fn answer(status: StatusCode, mut headers: http::HeaderMap, body: Bytes) -> http::Response<Body> {
    // Every answer belongs to one user's token.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    headers.append(VARY, HeaderValue::from_static("accept-encoding"));
    let mut response = http::Response::new(Body::new(Full::new(body)));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

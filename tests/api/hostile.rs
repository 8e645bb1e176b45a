//! Hostile traffic: clients that open streams and never finish them, idle
//! sockets, floods of connections from one address, garbage instead of
//! protobuf, reflection probes and forged request ids. Each test runs the
//! attack against a real gateway on loopback and checks that a legitimate
//! client (Login, GetProfile, health) is still served within its deadline.
//!
//! The attackers connect from 127.0.0.2 and the legitimate clients from
//! 127.0.0.1 (Linux routes all of 127.0.0.0/8 to loopback), so the
//! per-address limits tell them apart as they would tell two hosts apart.
//! Every attack is bounded in size and time and ends with its test.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cryptlex_sandbox::pki::DevPki;
use cryptlex_sandbox::{FaultAction, FaultRule, seed};
use licensing_gateway::grpc::pb::issue_license_request::User;
use licensing_gateway::grpc::pb::user_service_client::UserServiceClient;
use licensing_gateway::grpc::pb::{GetProfileRequest, IssueLicenseRequest, LoginRequest};
use prost::bytes::Bytes;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::helpers::{TestApp, TestOptions, spawn_app, spawn_app_with};
use crate::support::client::{assert_status, mtls_channel, reason, with_token};

/// Where the attackers connect from.
const ATTACKER: &str = "127.0.0.2:0";

/// How long a legitimate call may take while the gateway is under attack.
const LEGITIMATE_DEADLINE: Duration = Duration::from_secs(3);

/// Starts a gateway with `settings` (`LICENSING_GATEWAY__*` pairs) on top
/// of the test defaults.
async fn spawn_with(settings: &[(&str, &str)]) -> TestApp {
    spawn_app_with(TestOptions {
        env: settings
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect(),
        ..TestOptions::default()
    })
    .await
}

// === the attackers ===

/// A TCP connection to `addr` from the attackers' address.
async fn attacker_socket(addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("a socket");
    socket
        .bind(ATTACKER.parse().expect("an address"))
        .expect("127.0.0.2 is on loopback");
    socket.connect(addr).await.expect("the listener accepts")
}

/// Holds `count` TCP connections from the attackers' address that never
/// send a byte.
async fn idle_sockets(addr: SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count {
        sockets.push(attacker_socket(addr).await);
    }
    sockets
}

/// An HTTP/2 connection over `io`; its connection task ends with the test.
async fn h2_over<IO>(io: IO) -> h2::client::SendRequest<Bytes>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, connection) = h2::client::Builder::new()
        .handshake(io)
        .await
        .expect("http/2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    send
}

/// A gRPC call's request head, for a raw HTTP/2 client.
fn grpc_request(path: &str) -> http::Request<()> {
    grpc_request_with(http::Method::POST, path)
}

/// A request head like a gRPC call's, with any method (tonic routes by
/// path alone).
fn grpc_request_with(method: http::Method, path: &str) -> http::Request<()> {
    http::Request::builder()
        .method(method)
        .uri(format!("http://localhost{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("a valid request")
}

/// A call whose request body never ends: its response and its still-open
/// request stream (dropping the stream would reset it).
type UnfinishedCall = (h2::client::ResponseFuture, h2::SendStream<Bytes>);

/// Opens `count` calls to `path` that send their headers and the first byte
/// of a message, and then nothing.
async fn unfinished_calls(
    send: h2::client::SendRequest<Bytes>,
    path: &str,
    count: usize,
) -> Vec<UnfinishedCall> {
    let mut calls = Vec::with_capacity(count);
    let mut send = send;
    for _ in 0..count {
        send = send.ready().await.expect("room for another stream");
        let (response, mut body) = send
            .send_request(grpc_request(path), false)
            .expect("the stream opens");
        body.send_data(Bytes::from_static(&[0]), false)
            .expect("the first byte is sent");
        calls.push((response, body));
    }
    calls
}

/// The gRPC status of a raw HTTP/2 answer: from its headers
/// (trailers-only) or its trailers.
async fn status_of(response: h2::client::ResponseFuture) -> Status {
    let response = response.await.expect("an answer");
    if let Some(status) = Status::from_header_map(response.headers()) {
        return status;
    }
    let mut body = response.into_body();
    while body.data().await.is_some() {}
    let trailers = body
        .trailers()
        .await
        .expect("trailers")
        .expect("a gRPC answer has trailers");
    Status::from_header_map(&trailers).expect("a grpc-status")
}

/// A rustls client configuration trusting `ca_pem`, presenting the given
/// certificate and key files (if any), offering `h2`.
fn tls_client_config(
    ca_pem: &str,
    client: Option<(&std::path::Path, &std::path::Path)>,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("ca"))
        .expect("ca added");
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots);
    let mut config = match client {
        Some((cert, key)) => {
            let certs = CertificateDer::pem_file_iter(cert)
                .expect("client cert")
                .collect::<Result<Vec<_>, _>>()
                .expect("client cert parses");
            let key = PrivateKeyDer::from_pem_file(key).expect("client key");
            builder
                .with_client_auth_cert(certs, key)
                .expect("client auth")
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// An HTTP/2 connection over mutual TLS to the internal listener from the
/// attackers' address, as the CA-signed "intruder" the allow-list omits.
async fn h2_as_intruder(app: &TestApp) -> h2::client::SendRequest<Bytes> {
    let files = app.sandbox.pki.files();
    let config = tls_client_config(
        app.sandbox.pki.ca_cert_pem(),
        Some((&files.intruder_cert, &files.intruder_key)),
    );
    let tcp = attacker_socket(app.internal_addr.expect("internal listener")).await;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("a CA-signed certificate completes the handshake");
    h2_over(tls).await
}

// === the legitimate clients ===

/// Logs in as the demo user before any attack starts.
async fn demo_token(app: &TestApp) -> String {
    app.demo_token().await
}

/// Checks that Login, GetProfile and the health checks (overall,
/// `liveness` and the API service) all succeed within their deadline.
async fn legitimate_calls_succeed(channel: Channel, token: &str) {
    let mut users = UserServiceClient::new(channel.clone());
    let login = LoginRequest {
        email: seed::DEMO_EMAIL.into(),
        password: seed::DEMO_PASSWORD.into(),
        ..Default::default()
    };
    timeout(LEGITIMATE_DEADLINE, users.login(login))
        .await
        .expect("Login answers within its deadline")
        .expect("Login succeeds");
    timeout(
        LEGITIMATE_DEADLINE,
        users.get_profile(with_token(GetProfileRequest {}, token)),
    )
    .await
    .expect("GetProfile answers within its deadline")
    .expect("GetProfile succeeds");
    health_is_serving(channel, &["", "liveness", "licensing.v1.UserService"]).await;
}

async fn health_is_serving(channel: Channel, services: &[&str]) {
    let mut health = HealthClient::new(channel);
    for service in services {
        let answer = timeout(
            LEGITIMATE_DEADLINE,
            health.check(HealthCheckRequest {
                service: (*service).to_owned(),
            }),
        )
        .await
        .unwrap_or_else(|_| panic!("health of {service:?} answers within its deadline"))
        .unwrap_or_else(|status| panic!("health of {service:?}: {status:?}"));
        assert_eq!(
            answer.into_inner().status,
            ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
}

async fn public_channel(app: &TestApp) -> Channel {
    timeout(LEGITIMATE_DEADLINE, app.public_channel())
        .await
        .expect("the public listener accepts within the deadline")
}

/// The payment service issues a license within its deadline.
async fn payment_service_issues(app: &TestApp, request_id: &str) {
    let issued = timeout(LEGITIMATE_DEADLINE, async {
        app.payment_client()
            .await
            .issue_license(IssueLicenseRequest {
                request_id: request_id.into(),
                user: Some(User::UserEmail(seed::DEMO_EMAIL.into())),
                ..Default::default()
            })
            .await
    })
    .await
    .expect("the payment service is served within its deadline");
    issued.expect("IssueLicense succeeds");
}

// === 1. call slots held by bodies that never end ===

#[tokio::test]
async fn unfinished_http2_bodies_hold_no_call_slots_and_health_still_answers() {
    // Arrange: two connections with 256 streams each, all 512 call slots'
    // worth, sending headers and never finishing the body.
    let app = spawn_app().await;
    let token = demo_token(&app).await;
    let mut attack = Vec::new();
    for _ in 0..2 {
        let send = h2_over(attacker_socket(app.public_addr).await).await;
        attack.extend(unfinished_calls(send, "/licensing.v1.UserService/Login", 256).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Act and assert: during the attack.
    legitimate_calls_succeed(public_channel(&app).await, &token).await;
    drop(attack);
}

#[tokio::test]
async fn an_unfinished_request_body_is_answered_once_the_body_timeout_passes() {
    let app = spawn_with(&[("LICENSING_GATEWAY__LIMITS__REQUEST_BODY_TIMEOUT", "1s")]).await;
    let send = h2_over(attacker_socket(app.public_addr).await).await;
    let mut calls = unfinished_calls(send, "/licensing.v1.UserService/GetProfile", 4).await;
    let (response, _body) = calls.pop().expect("a call");

    let status = timeout(Duration::from_secs(3), status_of(response))
        .await
        .expect("answered soon after the body timeout");

    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(reason(&status), "REQUEST_BODY_TIMEOUT");
}

#[tokio::test]
async fn a_call_with_another_method_than_post_gets_no_way_around_the_call_slots() {
    // One slot; a PUT to an API path whose body never ends must neither
    // bypass the body timeout nor take the slot.
    let app = spawn_with(&[
        ("LICENSING_GATEWAY__LIMITS__REQUEST_BODY_TIMEOUT", "1s"),
        ("LICENSING_GATEWAY__LIMITS__MAX_CONCURRENT_REQUESTS", "1"),
    ])
    .await;
    let token = demo_token(&app).await;
    let send = h2_over(attacker_socket(app.public_addr).await).await;
    let mut send = send.ready().await.expect("ready");
    let request = grpc_request_with(http::Method::PUT, "/licensing.v1.UserService/GetProfile");
    let (response, _body) = send.send_request(request, false).expect("the stream opens");

    legitimate_calls_succeed(public_channel(&app).await, &token).await;
    let status = timeout(Duration::from_secs(3), status_of(response))
        .await
        .expect("answered soon after the body timeout");
    assert_eq!(reason(&status), "REQUEST_BODY_TIMEOUT", "{status:?}");
}

#[tokio::test]
async fn unfinished_http1_bodies_hold_no_call_slots() {
    // Arrange: 512 gRPC-Web calls over HTTP/1.1 that promise 100 bytes of
    // body and send 4.
    let app = spawn_app().await;
    let token = demo_token(&app).await;
    let head = "POST /licensing.v1.UserService/Login HTTP/1.1\r\nhost: localhost\r\n\
                content-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\n\
                content-length: 100\r\n\r\n\x00\x00\x00\x00";
    let mut attack = Vec::new();
    for _ in 0..512 {
        let mut socket = attacker_socket(app.public_addr).await;
        // Connections over the per-address cap are closed; writing to them
        // may fail, which is the point.
        let _ = socket.write_all(head.as_bytes()).await;
        attack.push(socket);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    legitimate_calls_succeed(public_channel(&app).await, &token).await;
    drop(attack);
}

#[tokio::test]
async fn a_certificate_that_is_not_allow_listed_cannot_hold_issuance_call_slots() {
    // Arrange: 512 IssueLicense calls that never finish their body, from a
    // certificate the CA signed but the allow-list does not name.
    let app = spawn_app().await;
    let mut attack = Vec::new();
    for _ in 0..2 {
        let send = h2_as_intruder(&app).await;
        attack.extend(
            unfinished_calls(send, "/licensing.v1.IssuanceService/IssueLicense", 256).await,
        );
    }

    // Assert: refused before anything of the call is read...
    let (response, _body) = attack.pop().expect("a call");
    let status = timeout(Duration::from_secs(2), status_of(response))
        .await
        .expect("refused at once, without waiting for the body");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(reason(&status), "CLIENT_NOT_ALLOWED");
    // ...and the payment service is served meanwhile.
    payment_service_issues(&app, "hostile-allow-list-1").await;
    drop(attack);
}

#[tokio::test]
async fn health_checks_are_never_shed_while_api_calls_are() {
    // Arrange: one call slot, held by a GetProfile that Cryptlex answers slowly.
    let app = spawn_with(&[("LICENSING_GATEWAY__LIMITS__MAX_CONCURRENT_REQUESTS", "1")]).await;
    let token = demo_token(&app).await;
    app.cryptlex()
        .add_fault(
            FaultRule::once(FaultAction::Delay(Duration::from_secs(2))).path_prefix("/v3/me"),
        )
        .expect("fault rule");
    let channel = public_channel(&app).await;
    let slow = {
        let mut users = UserServiceClient::new(channel.clone());
        let request = with_token(GetProfileRequest {}, &token);
        tokio::spawn(async move { users.get_profile(request).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Act and assert: API calls are shed, health is not.
    let shed = UserServiceClient::new(channel.clone())
        .get_profile(with_token(GetProfileRequest {}, &token))
        .await;
    assert_status(shed, Code::Unavailable, "OVERLOADED");
    health_is_serving(channel, &["", "liveness", "licensing.v1.UserService"]).await;
    slow.await
        .expect("the slow call's task")
        .expect("the slot holder itself succeeds");
}

#[tokio::test]
async fn connections_over_the_per_address_cap_are_closed_at_once() {
    let app = spawn_with(&[(
        "LICENSING_GATEWAY__LIMITS__MAX_CONNECTIONS_PER_ADDRESS",
        "4",
    )])
    .await;
    let token = demo_token(&app).await;
    let mut held = idle_sockets(app.public_addr, 4).await;
    let mut over = idle_sockets(app.public_addr, 2).await;

    for socket in &mut over {
        let mut byte = [0_u8; 1];
        let read = timeout(Duration::from_secs(2), socket.read(&mut byte))
            .await
            .expect("closed at once, not left waiting");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    for socket in &mut held {
        let mut byte = [0_u8; 1];
        let read = timeout(Duration::from_millis(300), socket.read(&mut byte)).await;
        assert!(
            read.is_err(),
            "a connection within the cap stays open: {read:?}"
        );
    }
    legitimate_calls_succeed(public_channel(&app).await, &token).await;
}

#[tokio::test]
async fn idle_connections_are_closed_and_connections_with_a_call_in_progress_are_not() {
    let app = spawn_with(&[("LICENSING_GATEWAY__LIMITS__IDLE_CONNECTION_TIMEOUT", "1s")]).await;
    // An HTTP/2 connection that never makes a call.
    let (idle, idle_connection) = h2::client::handshake(attacker_socket(app.public_addr).await)
        .await
        .expect("http/2 handshake");
    // One that keeps a health Watch open (a call in progress).
    let busy = h2_over(attacker_socket(app.public_addr).await).await;
    let mut busy = busy.ready().await.expect("ready");
    let (watch, mut watch_body) = busy
        .send_request(grpc_request("/grpc.health.v1.Health/Watch"), false)
        .expect("the watch opens");
    watch_body
        .send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .expect("an empty HealthCheckRequest");
    let watch = watch.await.expect("the watch is answered");
    assert_eq!(watch.status(), http::StatusCode::OK);

    // The idle one is closed after the timeout...
    let closed = timeout(Duration::from_secs(4), idle_connection).await;
    assert!(
        closed.is_ok(),
        "the idle connection was closed by the server"
    );
    drop(idle);
    // ...the busy one still serves calls.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let busy = busy
        .ready()
        .await
        .expect("the busy connection is still open");
    let mut busy = busy;
    let (check, mut check_body) = busy
        .send_request(grpc_request("/grpc.health.v1.Health/Check"), false)
        .expect("a check on the busy connection");
    check_body
        .send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .expect("an empty HealthCheckRequest");
    let status = status_of(check).await;
    assert_eq!(status.code(), Code::Ok, "{status:?}");
    drop(watch);
}

// === 11. idle sockets holding every TLS handshake place ===

#[tokio::test]
async fn idle_sockets_cannot_hold_the_internal_listeners_handshake_places() {
    let app = spawn_app().await;
    let internal = app.internal_addr.expect("internal listener");
    let attack = idle_sockets(internal, 512).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    payment_service_issues(&app, "hostile-handshake-1").await;
    drop(attack);
}

#[tokio::test]
async fn idle_sockets_cannot_hold_the_public_tls_listeners_handshake_places() {
    // Arrange: the public listener with TLS, from a PKI of its own.
    let pki_dir = tempfile::tempdir().expect("temp dir");
    let pki = DevPki::generate(pki_dir.path()).expect("a development PKI");
    let files = pki.files();
    let app = spawn_with(&[
        (
            "LICENSING_GATEWAY__PUBLIC__TLS_CERT_FILE",
            files.server_cert.to_str().expect("utf-8 path"),
        ),
        (
            "LICENSING_GATEWAY__PUBLIC__TLS_KEY_FILE",
            files.server_key.to_str().expect("utf-8 path"),
        ),
    ])
    .await;
    let attack = idle_sockets(app.public_addr, 512).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Act and assert: a TLS client still logs in within its deadline.
    let channel = timeout(
        LEGITIMATE_DEADLINE,
        mtls_channel(app.public_addr.port(), pki.ca_cert_pem(), None),
    )
    .await
    .expect("the handshake completes within the deadline")
    .expect("a TLS channel");
    let token = timeout(
        LEGITIMATE_DEADLINE,
        UserServiceClient::new(channel.clone()).login(LoginRequest {
            email: seed::DEMO_EMAIL.into(),
            password: seed::DEMO_PASSWORD.into(),
            ..Default::default()
        }),
    )
    .await
    .expect("Login answers within its deadline")
    .expect("Login succeeds")
    .into_inner()
    .session
    .expect("a session")
    .access_token;
    legitimate_calls_succeed(channel, &token).await;
    drop(attack);
}

#[tokio::test]
async fn a_silent_tls_client_is_disconnected_after_the_client_hello_timeout() {
    let app = spawn_with(&[(
        "LICENSING_GATEWAY__LIMITS__TLS_CLIENT_HELLO_TIMEOUT",
        "500ms",
    )])
    .await;
    let mut silent = attacker_socket(app.internal_addr.expect("internal listener")).await;
    let mut byte = [0_u8; 1];
    let read = timeout(Duration::from_secs(3), silent.read(&mut byte))
        .await
        .expect("disconnected long before the 10 s handshake timeout");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

// === 14. garbage instead of protobuf ===

/// Sends one gRPC call with `body` as its whole request body.
async fn raw_call(addr: SocketAddr, path: &str, body: impl Into<Bytes>) -> Status {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let send = h2_over(tcp).await;
    let mut send = send.ready().await.expect("ready");
    let (response, mut stream) = send
        .send_request(grpc_request(path), false)
        .expect("the stream opens");
    stream
        .send_data(body.into(), true)
        .expect("the body is sent");
    timeout(LEGITIMATE_DEADLINE, status_of(response))
        .await
        .expect("answered")
}

#[tokio::test]
async fn malformed_protobuf_and_framing_are_invalid_arguments_not_internal_errors() {
    let app = spawn_app().await;
    // A frame of four bytes that are no LoginRequest (a bad varint), and a
    // frame that promises nine bytes and ends after one.
    let cases: [(&str, &'static [u8]); 3] = [
        (
            "/licensing.v1.UserService/Login",
            &[0, 0, 0, 0, 4, 0x0a, 0xff, 0xff, 0xff],
        ),
        ("/licensing.v1.UserService/Login", &[0, 0, 0, 0, 9, 0x0a]),
        ("/grpc.health.v1.Health/Check", &[0, 0, 0, 0, 2, 0x0a, 0xff]),
    ];
    for (path, body) in cases {
        let status = raw_call(app.public_addr, path, Bytes::from_static(body)).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{path}: {status:?}");
        assert_eq!(reason(&status), "MALFORMED_REQUEST", "{path}");
    }
}

#[tokio::test]
async fn a_request_message_over_the_size_limit_is_refused_before_it_is_decoded() {
    let app = spawn_app().await;
    let length: u32 = 70 * 1024;
    let mut body = vec![0_u8];
    body.extend_from_slice(&length.to_be_bytes());
    body.resize(5 + length as usize, b'x');

    let status = raw_call(app.public_addr, "/licensing.v1.UserService/Login", body).await;

    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason(&status), "REQUEST_TOO_LARGE");
}

#[tokio::test]
async fn bad_grpc_web_base64_is_an_invalid_argument_not_an_internal_error() {
    let app = spawn_app().await;
    crate::support::client::install_crypto_provider();
    let client = reqwest::Client::builder()
        .http1_only()
        .build()
        .expect("client");

    let response = client
        .post(format!(
            "http://{}/licensing.v1.UserService/Login",
            app.public_addr
        ))
        .header("content-type", "application/grpc-web-text")
        .header("x-grpc-web", "1")
        .body("!!!!not base64!!!!")
        .send()
        .await
        .expect("an answer");
    let status = Status::from_header_map(response.headers()).expect("a trailers-only answer");

    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(reason(&status), "MALFORMED_REQUEST");
}

// === 17. reflection and request ids ===

/// What reflection answers to `request` on `channel` (tonic-reflection
/// answers an unknown name by ending the stream with `NOT_FOUND`).
async fn reflect(channel: Channel, request: MessageRequest) -> Result<MessageResponse, Status> {
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner()
        .message()
        .await
        .map(|answer| {
            answer
                .expect("one answer")
                .message_response
                .expect("an answer")
        })
}

fn is_found(answer: &Result<MessageResponse, Status>) -> bool {
    match answer {
        Ok(answer) => matches!(answer, MessageResponse::FileDescriptorResponse(_)),
        Err(status) => {
            assert_eq!(status.code(), Code::NotFound, "{status:?}");
            false
        }
    }
}

#[tokio::test]
async fn reflection_describes_only_what_each_listener_serves() {
    let app = spawn_app().await;
    let public = app.public_channel().await;
    let files = app.sandbox.pki.files();
    let cert = std::fs::read_to_string(&files.payment_service_cert).expect("cert");
    let key = std::fs::read_to_string(&files.payment_service_key).expect("key");
    let internal = app
        .internal_channel(Some((&cert, &key)))
        .await
        .expect("mTLS connect");
    let symbol = |name: &str| MessageRequest::FileContainingSymbol(name.to_owned());
    let file = |name: &str| MessageRequest::FileByFilename(name.to_owned());

    assert!(is_found(
        &reflect(public.clone(), symbol("licensing.v1.UserService")).await
    ));
    assert!(!is_found(
        &reflect(public.clone(), symbol("licensing.v1.IssuanceService")).await
    ));
    assert!(!is_found(
        &reflect(public.clone(), symbol("licensing.v1.IssueLicenseRequest")).await
    ));
    assert!(!is_found(
        &reflect(public, file("licensing/v1/issuance_service.proto")).await
    ));
    assert!(is_found(
        &reflect(internal.clone(), symbol("licensing.v1.IssuanceService")).await
    ));
    assert!(!is_found(
        &reflect(internal, symbol("licensing.v1.UserService")).await
    ));
}

#[tokio::test]
async fn an_unacceptable_request_id_is_replaced_and_the_replacement_is_what_the_caller_sees() {
    let app = spawn_app().await;
    let mut client = app.user_client().await;
    for rejected in ["two words".to_owned(), "x".repeat(200)] {
        let mut login = tonic::Request::new(LoginRequest {
            email: seed::DEMO_EMAIL.into(),
            password: seed::DEMO_PASSWORD.into(),
            ..Default::default()
        });
        login
            .metadata_mut()
            .insert("x-request-id", rejected.parse().expect("metadata"));
        app.cryptlex().clear_requests();

        let response = client.login(login).await.expect("login");

        let echoed = response
            .metadata()
            .get("x-request-id")
            .and_then(|value| value.to_str().ok())
            .expect("a request id")
            .to_owned();
        assert_ne!(echoed, rejected);
        assert!(uuid::Uuid::parse_str(&echoed).is_ok(), "{echoed}");
        let upstream: Vec<_> = app
            .cryptlex()
            .requests()
            .into_iter()
            .filter_map(|received| received.request_id)
            .collect();
        assert_eq!(upstream, [echoed], "Cryptlex got the id the caller sees");
    }
}

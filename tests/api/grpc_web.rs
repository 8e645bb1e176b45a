//! gRPC-Web over HTTP/1.1, as a `fetch`-only runtime or a browser speaks it,
//! with CORS.

use cryptlex_sandbox::seed;
use licensing_gateway::grpc::pb::{
    GetProfileRequest, GetProfileResponse, LoginRequest, LoginResponse,
};
use prost::Message;

use crate::helpers::spawn_app;

const ORIGIN: &str = "http://localhost:3000";

fn frame(message: &impl Message) -> Vec<u8> {
    let payload = message.encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&u32::try_from(payload.len()).expect("small").to_be_bytes());
    body.extend_from_slice(&payload);
    body
}

/// Splits a gRPC-Web response body into its message and trailer frames.
fn unframe(body: &[u8]) -> (Vec<Vec<u8>>, String) {
    let mut messages = Vec::new();
    let mut trailers = String::new();
    let mut rest = body;
    while rest.len() >= 5 {
        let flags = rest[0];
        let length = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let payload = &rest[5..5 + length];
        if flags & 0x80 != 0 {
            trailers.push_str(&String::from_utf8_lossy(payload));
        } else {
            messages.push(payload.to_vec());
        }
        rest = &rest[5 + length..];
    }
    (messages, trailers)
}

fn http1_client() -> reqwest::Client {
    crate::support::client::install_crypto_provider();
    reqwest::Client::builder()
        .http1_only()
        .build()
        .expect("client")
}

#[tokio::test]
async fn login_and_get_profile_work_over_grpc_web_on_http_1_1() {
    let app = spawn_app().await;
    let client = http1_client();
    let base = format!("http://{}", app.public_addr);

    let response = client
        .post(format!("{base}/licensing.v1.UserService/Login"))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("origin", ORIGIN)
        .body(frame(&LoginRequest {
            email: seed::DEMO_EMAIL.into(),
            password: seed::DEMO_PASSWORD.into(),
            ..Default::default()
        }))
        .send()
        .await
        .expect("login over gRPC-Web");
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        ORIGIN,
        "CORS allows the configured origin"
    );
    let body = response.bytes().await.expect("body");
    let (messages, trailers) = unframe(&body);
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    let login = LoginResponse::decode(messages[0].as_slice()).expect("LoginResponse");
    let token = login.session.expect("session").access_token;

    let response = client
        .post(format!("{base}/licensing.v1.UserService/GetProfile"))
        .header("content-type", "application/grpc-web+proto")
        .header("authorization", format!("Bearer {token}"))
        .body(frame(&GetProfileRequest {}))
        .send()
        .await
        .expect("profile");
    let body = response.bytes().await.expect("body");
    let (messages, _) = unframe(&body);
    let profile = GetProfileResponse::decode(messages[0].as_slice())
        .expect("GetProfileResponse")
        .profile
        .expect("profile");
    assert_eq!(profile.email, seed::DEMO_EMAIL);
}

#[tokio::test]
async fn an_error_status_is_readable_through_cors() {
    let app = spawn_app().await;
    let client = http1_client();
    let response = client
        .post(format!(
            "http://{}/licensing.v1.UserService/GetProfile",
            app.public_addr
        ))
        .header("content-type", "application/grpc-web+proto")
        .header("origin", ORIGIN)
        .body(frame(&GetProfileRequest {}))
        .send()
        .await
        .expect("call");
    let headers = response.headers().clone();
    assert_eq!(headers["grpc-status"], "16", "UNAUTHENTICATED");
    assert!(headers.contains_key("grpc-status-details-bin"));
    let exposed = headers["access-control-expose-headers"]
        .to_str()
        .expect("ascii")
        .to_ascii_lowercase();
    for header in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        assert!(exposed.contains(header), "{header} exposed: {exposed}");
    }
}

#[tokio::test]
async fn preflight_allows_configured_origins_only() {
    let app = spawn_app().await;
    let client = http1_client();
    let url = format!("http://{}/licensing.v1.UserService/Login", app.public_addr);
    let preflight = |origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, &url)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type,x-grpc-web,authorization",
            )
            .send()
    };
    let allowed = preflight(ORIGIN).await.expect("preflight");
    assert!(allowed.status().is_success());
    assert_eq!(allowed.headers()["access-control-allow-origin"], ORIGIN);
    let denied = preflight("https://evil.example").await.expect("preflight");
    assert!(!denied.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn grpc_web_calls_are_counted_with_their_code_from_the_trailer_frame() {
    // Arrange (the recorder is shared by every test in the process: compare
    // counts before and after)
    let app = spawn_app().await;
    let labels = "service=\"licensing.v1.UserService\",method=\"GetProfile\",code=\"OK\"";
    let count = |text: &str| {
        text.lines()
            .filter(|line| line.starts_with("licensing_gateway_rpc_requests_total{"))
            .filter(|line| line.contains("listener=\"public\"") && line.contains(labels))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let token = app.demo_token().await;
    let (_, before) = app.admin_get("/metrics").await;

    // Act: a successful call, whose status travels in the body's trailer frame
    let response = http1_client()
        .post(format!(
            "http://{}/licensing.v1.UserService/GetProfile",
            app.public_addr
        ))
        .header("content-type", "application/grpc-web+proto")
        .header("authorization", format!("Bearer {token}"))
        .body(frame(&GetProfileRequest {}))
        .send()
        .await
        .expect("profile");
    let (_, trailers) = unframe(&response.bytes().await.expect("body"));
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    let (_, after) = app.admin_get("/metrics").await;

    // Assert
    assert!(count(&after) >= count(&before) + 1.0, "{after}");
}

/// Native gRPC skips the browser layers (the gateway's fast path), unless a
/// browser sent it: a request with an `origin` still gets its CORS answer.
#[tokio::test]
async fn native_grpc_gets_cors_only_when_a_browser_origin_asks() {
    let app = spawn_app().await;
    crate::support::client::install_crypto_provider();
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let url = format!("http://{}/grpc.health.v1.Health/Check", app.public_addr);
    let check = |origin: Option<&'static str>| {
        let mut request = client
            .post(&url)
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(vec![0u8; 5]);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send()
    };

    for origin in [None, Some(ORIGIN)] {
        let response = check(origin).await.expect("health check");
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        assert_eq!(response.status(), 200);
        let headers = response.headers().clone();
        assert_eq!(headers["content-type"], "application/grpc");
        assert!(headers.contains_key("x-request-id"), "{headers:?}");
        match origin {
            None => assert!(
                !headers.contains_key("access-control-allow-origin")
                    && !headers.contains_key("vary"),
                "no CORS for a client that is no browser: {headers:?}"
            ),
            Some(origin) => assert_eq!(headers["access-control-allow-origin"], origin),
        }
        let body = response.bytes().await.expect("body");
        // One uncompressed message: SERVING (1) in field 1.
        assert_eq!(&body[..], &[0, 0, 0, 0, 2, 8, 1], "{origin:?}");
    }
}

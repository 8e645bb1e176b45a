//! The Connect protocol (connectrpc.com/docs/protocol) on the public
//! listener, spoken by hand with `reqwest` over HTTP/1.1 and HTTP/2: JSON and
//! binary, GET for calls without side effects, compression, timeouts,
//! refusals, CORS; and the error contract: the same failure says the same
//! thing over gRPC, gRPC-Web, Connect JSON and Connect binary.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::time::Duration;

use base64::Engine as _;
use cryptlex_sandbox::{FaultAction, FaultRule, seed};
use licensing_gateway::grpc::pb::user_service_client::UserServiceClient;
use licensing_gateway::grpc::pb::{
    DeactivateMachineRequest, GetLicenseRequest, GetProfileRequest, GetProfileResponse,
    ListMyLicensesRequest, ListMyLicensesResponse, LoginRequest, LoginResponse, SignUpRequest,
};
use prost::Message;
use serde_json::{Value, json};
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt as _;

use crate::helpers::{TestApp, TestOptions, spawn_app, spawn_app_with};
use crate::support::client::with_token;

const ORIGIN: &str = "http://localhost:3000";
const SERVICE: &str = "licensing.v1.UserService";
/// A password that must never be echoed back in an error message.
const FAKE_PASSWORD: &str = "Hunter2-never-echo-7f3a";

fn client(http2: bool) -> reqwest::Client {
    crate::support::client::install_crypto_provider();
    let builder = reqwest::Client::builder();
    let builder = if http2 {
        builder.http2_prior_knowledge()
    } else {
        builder.http1_only()
    };
    builder.build().expect("client")
}

fn url(app: &TestApp, method: &str) -> String {
    format!("http://{}/{SERVICE}/{method}", app.public_addr)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip")
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("gunzip");
    out
}

/// A Connect unary POST with a JSON body; returns status, headers and the
/// (decompressed) body.
async fn post_json(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: &Value,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    post(
        client,
        url,
        "application/json",
        token,
        body.to_string().into_bytes(),
    )
    .await
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    content_type: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut request = client
        .post(url)
        .header("content-type", content_type)
        .header("connect-protocol-version", "1")
        .body(body);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    read(request.send().await.expect("connect call")).await
}

async fn read(response: reqwest::Response) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("body").to_vec();
    let body = if headers
        .get("content-encoding")
        .is_some_and(|value| value == "gzip")
    {
        gunzip(&body)
    } else {
        body
    };
    (status, headers, body)
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|error| panic!("{error}: {}", String::from_utf8_lossy(body)))
}

async fn json_login(app: &TestApp, client: &reqwest::Client) -> String {
    let (status, _, body) = post_json(
        client,
        &url(app, "Login"),
        None,
        &json!({ "email": seed::DEMO_EMAIL, "password": seed::DEMO_PASSWORD }),
    )
    .await;
    let body = json_of(&body);
    assert_eq!(status, 200, "{body}");
    body["session"]["accessToken"]
        .as_str()
        .expect("accessToken")
        .to_owned()
}

/// `ErrorInfo.reason` of a Connect error body.
fn connect_reason(body: &Value) -> String {
    body["details"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|detail| detail["type"] == "google.rpc.ErrorInfo")
        .map(|detail| {
            detail["debug"]["reason"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .unwrap_or_else(|| panic!("no ErrorInfo in {body}"))
}

fn demo_ids() -> Vec<String> {
    let mut ids: Vec<String> = seed::DEMO_LICENSE_IDS
        .iter()
        .map(|id| (*id).to_owned())
        .collect();
    ids.sort();
    ids
}

// === Calls that work ===

#[tokio::test]
async fn login_profile_and_license_paging_work_over_connect_json_and_binary_on_http_1_1_and_2() {
    let app = spawn_app_with(TestOptions::default().many_users_on_one_address()).await;
    for http2 in [false, true] {
        let client = client(http2);
        let token = json_login(&app, &client).await;

        // JSON: the profile, in the protobuf JSON mapping (camelCase, RFC 3339).
        let (status, headers, body) =
            post_json(&client, &url(&app, "GetProfile"), Some(&token), &json!({})).await;
        assert_eq!(status, 200);
        assert_eq!(headers["content-type"], "application/json");
        let profile = json_of(&body);
        assert_eq!(profile["profile"]["email"], seed::DEMO_EMAIL, "{profile}");
        assert_eq!(profile["profile"]["id"], seed::DEMO_USER_ID, "{profile}");
        let created = profile["profile"]["createdAt"].as_str().expect("createdAt");
        assert!(
            chrono::DateTime::parse_from_rfc3339(created).is_ok(),
            "{created}"
        );

        // JSON paging, one license a page.
        let mut ids = Vec::new();
        let mut page_token = String::new();
        for _ in 0..5 {
            let (status, _, body) = post_json(
                &client,
                &url(&app, "ListMyLicenses"),
                Some(&token),
                &json!({ "pageSize": 1, "pageToken": page_token }),
            )
            .await;
            let page = json_of(&body);
            assert_eq!(status, 200, "{page}");
            let licenses = page["licenses"].as_array().cloned().unwrap_or_default();
            assert!(licenses.len() <= 1, "{page}");
            ids.extend(
                licenses
                    .iter()
                    .map(|license| license["id"].as_str().expect("id").to_owned()),
            );
            page_token = page["nextPageToken"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if page_token.is_empty() {
                break;
            }
        }
        assert!(page_token.is_empty(), "paging ends");
        ids.sort();
        assert_eq!(ids, demo_ids());

        // Binary: Login, GetProfile and paging with application/proto.
        let (status, headers, body) = post(
            &client,
            &url(&app, "Login"),
            "application/proto",
            None,
            LoginRequest {
                email: seed::DEMO_EMAIL.into(),
                password: seed::DEMO_PASSWORD.into(),
                ..Default::default()
            }
            .encode_to_vec(),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(headers["content-type"], "application/proto");
        let session = LoginResponse::decode(body.as_slice())
            .expect("LoginResponse")
            .session
            .expect("session");
        let token = session.access_token;
        let (status, _, body) = post(
            &client,
            &url(&app, "GetProfile"),
            "application/proto",
            Some(&token),
            GetProfileRequest {}.encode_to_vec(),
        )
        .await;
        assert_eq!(status, 200);
        let profile = GetProfileResponse::decode(body.as_slice())
            .expect("GetProfileResponse")
            .profile
            .expect("profile");
        assert_eq!(profile.email, seed::DEMO_EMAIL);
        let mut ids = Vec::new();
        let mut page_token = String::new();
        for _ in 0..5 {
            let (status, _, body) = post(
                &client,
                &url(&app, "ListMyLicenses"),
                "application/proto",
                Some(&token),
                ListMyLicensesRequest {
                    page_size: 1,
                    page_token: page_token.clone(),
                    ..Default::default()
                }
                .encode_to_vec(),
            )
            .await;
            assert_eq!(status, 200);
            let page = ListMyLicensesResponse::decode(body.as_slice()).expect("page");
            assert!(page.licenses.len() <= 1);
            ids.extend(page.licenses.into_iter().map(|license| license.id));
            page_token = page.next_page_token;
            if page_token.is_empty() {
                break;
            }
        }
        assert!(page_token.is_empty(), "paging ends");
        ids.sort();
        assert_eq!(ids, demo_ids());
    }
}

#[tokio::test]
async fn get_profile_and_list_my_licenses_answer_get_with_json_and_base64_proto() {
    let app = spawn_app().await;
    for http2 in [false, true] {
        let client = client(http2);
        let token = json_login(&app, &client).await;
        let get = |query: String| {
            client
                .get(format!("{}?{query}", url(&app, "GetProfile")))
                .header("authorization", format!("Bearer {token}"))
                .send()
        };

        let (status, headers, body) = read(
            get("connect=v1&encoding=json&message=%7B%7D".into())
                .await
                .expect("GET"),
        )
        .await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["cache-control"], "private, no-store");
        assert_eq!(json_of(&body)["profile"]["email"], seed::DEMO_EMAIL);

        let (status, headers, body) = read(
            get("connect=v1&encoding=proto&base64=1&message=".into())
                .await
                .expect("GET"),
        )
        .await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(headers["content-type"], "application/proto");
        let profile = GetProfileResponse::decode(body.as_slice())
            .expect("GetProfileResponse")
            .profile
            .expect("profile");
        assert_eq!(profile.email, seed::DEMO_EMAIL);

        // A non-empty proto message, URL-safe base64 without padding.
        let message = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
            ListMyLicensesRequest {
                page_size: 1,
                ..Default::default()
            }
            .encode_to_vec(),
        );
        let response = client
            .get(format!(
                "{}?encoding=proto&base64=1&message={message}",
                url(&app, "ListMyLicenses")
            ))
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await
            .expect("GET");
        let (status, _, body) = read(response).await;
        assert_eq!(status, 200);
        let page = ListMyLicensesResponse::decode(body.as_slice()).expect("page");
        assert_eq!(page.licenses.len(), 1);
        assert!(!page.next_page_token.is_empty());
    }
}

#[tokio::test]
async fn a_gzipped_request_is_read_and_a_large_answer_is_gzipped_for_a_caller_that_accepts_it() {
    let app = spawn_app().await;
    let client = client(false);

    // A gzipped request body.
    let login = json!({ "email": seed::DEMO_EMAIL, "password": seed::DEMO_PASSWORD });
    let response = client
        .post(url(&app, "Login"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gzip(login.to_string().as_bytes()))
        .send()
        .await
        .expect("login");
    let (status, _, body) = read(response).await;
    let body = json_of(&body);
    assert_eq!(status, 200, "{body}");
    let token = body["session"]["accessToken"].as_str().expect("token");

    // The same large answer (every release, with download links) with and
    // without Accept-Encoding: gzip.
    let list = |accept: &'static str| {
        client
            .post(url(&app, "ListReleases"))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {token}"))
            .header("accept-encoding", accept)
            .body(r#"{"pageSize":50}"#)
            .send()
    };
    let plain = list("identity").await.expect("list");
    assert!(plain.headers().get("content-encoding").is_none());
    let plain = plain.bytes().await.expect("body").to_vec();
    assert!(
        plain.len() >= 1024,
        "a large enough answer to be gzipped: {} bytes",
        plain.len()
    );
    let zipped = list("gzip").await.expect("list");
    assert_eq!(zipped.headers()["content-encoding"], "gzip");
    let zipped = zipped.bytes().await.expect("body").to_vec();
    assert!(zipped.len() < plain.len());
    assert_eq!(json_of(&gunzip(&zipped)), json_of(&plain));

    // An unknown compression is refused.
    let response = client
        .post(url(&app, "Login"))
        .header("content-type", "application/json")
        .header("content-encoding", "br")
        .body(login.to_string())
        .send()
        .await
        .expect("login");
    let (status, headers, body) = read(response).await;
    let body = json_of(&body);
    assert_eq!(body["code"], "unimplemented", "{body}");
    assert_eq!(status, 501, "{body}");
    assert_eq!(connect_reason(&body), "UNSUPPORTED_ENCODING");
    let accepted = headers["accept-encoding"].to_str().expect("ascii");
    assert!(
        accepted.contains("gzip"),
        "names what it accepts: {accepted}"
    );

    // A GET whose message is gzipped (compression=gzip), base64 as it must be.
    let message =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(gzip(br#"{"pageSize":1}"#));
    let response = client
        .get(format!(
            "{}?connect=v1&encoding=json&compression=gzip&base64=1&message={message}",
            url(&app, "ListMyLicenses")
        ))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .expect("GET");
    let (status, _, body) = read(response).await;
    let body = json_of(&body);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["licenses"].as_array().map(Vec::len), Some(1), "{body}");
}

#[tokio::test]
async fn connect_timeout_ms_becomes_the_calls_deadline() {
    let app = spawn_app().await;
    let client = client(false);
    let token = json_login(&app, &client).await;
    app.cryptlex()
        .add_fault(
            FaultRule::always(FaultAction::Delay(Duration::from_millis(1_500)))
                .path_prefix("/v3/me"),
        )
        .expect("fault");

    let started = std::time::Instant::now();
    let response = client
        .post(url(&app, "ListMyLicenses"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .header("connect-timeout-ms", "50")
        .body(r#"{"pageSize":7}"#)
        .send()
        .await
        .expect("call");
    let (status, headers, body) = read(response).await;
    let body = json_of(&body);
    assert_eq!(body["code"], "deadline_exceeded", "{body}");
    assert_eq!(status, 504, "{body}");
    assert_eq!(headers["cache-control"], "private, no-store");
    assert!(
        started.elapsed() < Duration::from_millis(1_400),
        "answered at the deadline, not after the upstream delay: {:?}",
        started.elapsed()
    );

    // A timeout that is not a number is refused.
    let response = client
        .post(url(&app, "GetProfile"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .header("connect-timeout-ms", "soon")
        .body("{}")
        .send()
        .await
        .expect("call");
    let (status, _, body) = read(response).await;
    let body = json_of(&body);
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_argument")),
        "{body}"
    );
}

// === Refusals ===

#[tokio::test]
async fn connect_refuses_what_the_protocol_says_to_refuse() {
    let app = spawn_app().await;
    let client = client(false);

    // A protocol version other than 1, on POST and on GET.
    let response = client
        .post(url(&app, "Login"))
        .header("content-type", "application/json")
        .header("connect-protocol-version", "2")
        .body(r#"{"email":"demo@example.com","password":"demo-password"}"#)
        .send()
        .await
        .expect("call");
    let (status, _, body) = read(response).await;
    let body = json_of(&body);
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_argument")),
        "{body}"
    );
    let response = client
        .get(format!(
            "{}?connect=v2&encoding=json&message=%7B%7D",
            url(&app, "GetProfile")
        ))
        .send()
        .await
        .expect("call");
    let (status, _, body) = read(response).await;
    let body = json_of(&body);
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_argument")),
        "{body}"
    );

    // GET for a call with side effects: 405, Allow: POST.
    let response = client
        .get(format!(
            "{}?encoding=json&message=%7B%7D",
            url(&app, "Login")
        ))
        .send()
        .await
        .expect("call");
    let (status, headers, body) = read(response).await;
    assert_eq!(status, 405, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers["allow"], "POST");
    assert_eq!(connect_reason(&json_of(&body)), "METHOD_NOT_ALLOWED");

    // An unknown method: 404.
    let (status, _, body) = post_json(&client, &url(&app, "NoSuchMethod"), None, &json!({})).await;
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json_of(&body)["code"], "unimplemented");

    // Bad JSON: 400 MALFORMED_REQUEST, and the message never quotes the request.
    for malformed in [
        format!(r#"{{"email":"demo@example.com","password":"{FAKE_PASSWORD}""#),
        format!(r#"{{"email":"demo@example.com","password":{FAKE_PASSWORD}}}"#),
        format!(r#"{{"email":"demo@example.com","password":["{FAKE_PASSWORD}"]}}"#),
        format!(r#"{{"email":"demo@example.com","passwrd":"{FAKE_PASSWORD}"}}"#),
    ] {
        let (status, headers, body) = post(
            &client,
            &url(&app, "Login"),
            "application/json",
            None,
            malformed.clone().into_bytes(),
        )
        .await;
        let text = String::from_utf8_lossy(&body).into_owned();
        let body = json_of(&body);
        assert_eq!(status, 400, "{malformed}: {body}");
        assert_eq!(body["code"], "invalid_argument", "{malformed}: {body}");
        assert_eq!(connect_reason(&body), "MALFORMED_REQUEST", "{malformed}");
        assert!(!text.contains(FAKE_PASSWORD), "{malformed}: {text}");
        assert!(!text.contains("Hunter2"), "{malformed}: {text}");
        assert_eq!(headers["cache-control"], "private, no-store");
    }

    // Bytes that are not a protobuf message of the method: 400 MALFORMED_REQUEST.
    let (status, _, body) = post(
        &client,
        &url(&app, "Login"),
        "application/proto",
        None,
        vec![0x0a, 0xff, 0xff, 0xff, 0xff],
    )
    .await;
    let body = json_of(&body);
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_argument")),
        "{body}"
    );
    assert_eq!(connect_reason(&body), "MALFORMED_REQUEST");

    // A body over the message limit: 429 REQUEST_TOO_LARGE.
    let huge = json!({ "email": seed::DEMO_EMAIL, "password": "p".repeat(100 * 1024) });
    let (status, _, body) = post_json(&client, &url(&app, "Login"), None, &huge).await;
    let body = json_of(&body);
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["code"], "resource_exhausted");
    assert_eq!(connect_reason(&body), "REQUEST_TOO_LARGE");
    // The same, gzipped small on the wire.
    let response = client
        .post(url(&app, "Login"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gzip(huge.to_string().as_bytes()))
        .send()
        .await
        .expect("call");
    let (status, _, body) = read(response).await;
    let body = json_of(&body);
    assert_eq!(status, 429, "{body}");
    assert_eq!(connect_reason(&body), "REQUEST_TOO_LARGE");
    assert!(
        app.cryptlex().requests().is_empty(),
        "no refusal reached Cryptlex"
    );
}

/// `curl -d '{...}'` without `-H content-type` sends
/// `application/x-www-form-urlencoded`: neither gRPC, gRPC-Web nor Connect.
/// Such a POST is 415 Unsupported Media Type (as connect-go answers), on
/// HTTP/1.1 and on HTTP/2, not an empty 400 or an HTTP 200 with gRPC
/// headers a curl user cannot read.
#[tokio::test]
async fn a_post_with_neither_a_grpc_nor_a_connect_content_type_is_415() {
    let app = spawn_app().await;
    for http2 in [false, true] {
        for content_type in ["application/x-www-form-urlencoded", "text/plain"] {
            let response = client(http2)
                .post(url(&app, "Login"))
                .header("content-type", content_type)
                .body(r#"{"email":"demo@example.com","password":"demo-password"}"#)
                .send()
                .await
                .expect("call");
            let version = response.version();
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            assert_eq!(
                status,
                415,
                "{content_type} over {version:?}: {headers:?} {:?}",
                response.text().await
            );
        }
    }
    assert!(app.cryptlex().requests().is_empty());
}

#[tokio::test]
async fn cors_preflights_allow_connect_post_and_get_from_a_configured_origin() {
    let app = spawn_app().await;
    let client = client(false);
    for (method, rpc) in [("POST", "Login"), ("GET", "GetProfile")] {
        let response = client
            .request(reqwest::Method::OPTIONS, url(&app, rpc))
            .header("origin", ORIGIN)
            .header("access-control-request-method", method)
            .header(
                "access-control-request-headers",
                "content-type,connect-protocol-version,connect-timeout-ms,authorization",
            )
            .send()
            .await
            .expect("preflight");
        assert!(response.status().is_success(), "{method}");
        let headers = response.headers();
        assert_eq!(headers["access-control-allow-origin"], ORIGIN);
        let methods = headers["access-control-allow-methods"]
            .to_str()
            .expect("ascii")
            .to_ascii_uppercase();
        assert!(methods.contains(method), "{methods}");
        let allowed = headers["access-control-allow-headers"]
            .to_str()
            .expect("ascii")
            .to_ascii_lowercase();
        for header in [
            "connect-protocol-version",
            "connect-timeout-ms",
            "content-type",
            "authorization",
        ] {
            assert!(allowed.contains(header), "{header}: {allowed}");
        }
    }

    // The answer itself carries CORS and Cache-Control, error or not.
    let response = client
        .post(url(&app, "GetProfile"))
        .header("origin", ORIGIN)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("call");
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["access-control-allow-origin"], ORIGIN);
    assert_eq!(response.headers()["cache-control"], "private, no-store");
}

// === The error contract: four protocols, one answer ===

/// What a failed call says, whichever protocol carried it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Failure {
    code: Code,
    message: String,
    /// `ErrorInfo` reason, domain and metadata.
    error_info: Option<(String, String, BTreeMap<String, String>)>,
    /// `BadRequest` field violations (field, description).
    violations: Vec<(String, String)>,
    retry_info: bool,
}

impl Failure {
    fn from_status(status: &tonic::Status) -> Self {
        let details = status.get_error_details();
        Self {
            code: status.code(),
            message: status.message().to_owned(),
            error_info: details.error_info().map(|info| {
                (
                    info.reason.clone(),
                    info.domain.clone(),
                    info.metadata.clone().into_iter().collect(),
                )
            }),
            violations: details
                .bad_request()
                .map(|bad| {
                    bad.field_violations
                        .iter()
                        .map(|v| (v.field.clone(), v.description.clone()))
                        .collect()
                })
                .unwrap_or_default(),
            retry_info: details.retry_info().is_some(),
        }
    }

    /// A Connect error body: `code`, `message`, and `details` whose `value`
    /// (base64 protobuf) is what clients decode.
    fn from_connect(body: &Value) -> Self {
        let code = connect_code(body["code"].as_str().expect("code"));
        let mut failure = Self {
            code,
            message: body["message"].as_str().unwrap_or_default().to_owned(),
            error_info: None,
            violations: Vec::new(),
            retry_info: false,
        };
        for detail in body["details"].as_array().into_iter().flatten() {
            let value = detail["value"].as_str().expect("value");
            let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(value.trim_end_matches('='))
                .expect("value is base64");
            match detail["type"].as_str().expect("type") {
                "google.rpc.ErrorInfo" => {
                    let info =
                        tonic_types::pb::ErrorInfo::decode(bytes.as_slice()).expect("ErrorInfo");
                    assert_eq!(
                        detail["debug"]["reason"],
                        info.reason.as_str(),
                        "debug agrees"
                    );
                    failure.error_info = Some((
                        info.reason,
                        info.domain,
                        info.metadata.into_iter().collect(),
                    ));
                }
                "google.rpc.BadRequest" => {
                    let bad =
                        tonic_types::pb::BadRequest::decode(bytes.as_slice()).expect("BadRequest");
                    failure.violations = bad
                        .field_violations
                        .into_iter()
                        .map(|v| (v.field, v.description))
                        .collect();
                }
                "google.rpc.RetryInfo" => {
                    tonic_types::pb::RetryInfo::decode(bytes.as_slice()).expect("RetryInfo");
                    failure.retry_info = true;
                }
                other => panic!("unexpected detail type {other}: {body}"),
            }
        }
        failure
    }
}

fn connect_code(name: &str) -> Code {
    match name {
        "canceled" => Code::Cancelled,
        "unknown" => Code::Unknown,
        "invalid_argument" => Code::InvalidArgument,
        "deadline_exceeded" => Code::DeadlineExceeded,
        "not_found" => Code::NotFound,
        "already_exists" => Code::AlreadyExists,
        "permission_denied" => Code::PermissionDenied,
        "resource_exhausted" => Code::ResourceExhausted,
        "failed_precondition" => Code::FailedPrecondition,
        "aborted" => Code::Aborted,
        "out_of_range" => Code::OutOfRange,
        "unimplemented" => Code::Unimplemented,
        "internal" => Code::Internal,
        "unavailable" => Code::Unavailable,
        "data_loss" => Code::DataLoss,
        "unauthenticated" => Code::Unauthenticated,
        other => panic!("not a Connect code: {other}"),
    }
}

/// The HTTP status connectrpc.com/docs/protocol prescribes for `code`.
fn connect_http_status(code: Code) -> u16 {
    match code {
        Code::Cancelled => 499,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
        Code::DeadlineExceeded => 504,
        Code::NotFound => 404,
        Code::AlreadyExists | Code::Aborted => 409,
        Code::PermissionDenied => 403,
        Code::ResourceExhausted => 429,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::Unauthenticated => 401,
        _ => 500,
    }
}

/// A call of the table, the same message on every protocol.
#[derive(Debug, Clone)]
enum Call {
    Login(LoginRequest),
    GetProfile,
    ListMyLicenses(ListMyLicensesRequest),
    GetLicense(GetLicenseRequest),
    DeactivateMachine(DeactivateMachineRequest),
    SignUp(SignUpRequest),
}

impl Call {
    fn method(&self) -> &'static str {
        match self {
            Self::Login(_) => "Login",
            Self::GetProfile => "GetProfile",
            Self::ListMyLicenses(_) => "ListMyLicenses",
            Self::GetLicense(_) => "GetLicense",
            Self::DeactivateMachine(_) => "DeactivateMachine",
            Self::SignUp(_) => "SignUp",
        }
    }

    fn proto(&self) -> Vec<u8> {
        match self {
            Self::Login(m) => m.encode_to_vec(),
            Self::GetProfile => GetProfileRequest {}.encode_to_vec(),
            Self::ListMyLicenses(m) => m.encode_to_vec(),
            Self::GetLicense(m) => m.encode_to_vec(),
            Self::DeactivateMachine(m) => m.encode_to_vec(),
            Self::SignUp(m) => m.encode_to_vec(),
        }
    }

    /// The message in the protobuf JSON mapping, written by hand (as a
    /// caller without generated code would).
    fn json(&self) -> Value {
        match self {
            Self::Login(m) => json!({ "email": m.email, "password": m.password }),
            Self::GetProfile => json!({}),
            Self::ListMyLicenses(m) => {
                json!({ "pageSize": m.page_size, "pageToken": m.page_token })
            }
            Self::GetLicense(m) => json!({ "licenseId": m.license_id }),
            Self::DeactivateMachine(m) => json!({ "activationId": m.activation_id }),
            Self::SignUp(m) => json!({
                "email": m.email, "password": m.password,
                "firstName": m.first_name, "lastName": m.last_name,
            }),
        }
    }

    async fn grpc(
        &self,
        client: &mut UserServiceClient<Channel>,
        token: Option<&str>,
    ) -> tonic::Status {
        fn request<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
            match token {
                Some(token) => with_token(message, token),
                None => tonic::Request::new(message),
            }
        }
        let result = match self.clone() {
            Self::Login(m) => client.login(request(m, token)).await.map(drop),
            Self::GetProfile => client
                .get_profile(request(GetProfileRequest {}, token))
                .await
                .map(drop),
            Self::ListMyLicenses(m) => client.list_my_licenses(request(m, token)).await.map(drop),
            Self::GetLicense(m) => client.get_license(request(m, token)).await.map(drop),
            Self::DeactivateMachine(m) => {
                client.deactivate_machine(request(m, token)).await.map(drop)
            }
            Self::SignUp(m) => client.sign_up(request(m, token)).await.map(drop),
        };
        result.expect_err("the call fails over gRPC")
    }
}

/// The credentials a case calls with.
#[derive(Debug, Clone, Copy)]
enum Auth {
    None,
    Demo,
    Garbage,
}

/// Something to do before the four calls.
#[derive(Debug, Clone, Copy)]
enum Prepare {
    Nothing,
    /// One wrong-password sign-in of a stranger, to spend the address's
    /// sign-in allowance.
    SpendSignInAllowance,
}

struct Case {
    name: &'static str,
    env: &'static [(&'static str, &'static str)],
    prepare: Prepare,
    auth: Auth,
    call: Call,
    code: Code,
    reason: &'static str,
    violations: bool,
    retry_info: bool,
}

fn login(email: &str, password: &str) -> Call {
    Call::Login(LoginRequest {
        email: email.into(),
        password: password.into(),
        ..Default::default()
    })
}

fn cases() -> Vec<Case> {
    let case = |name, auth, call, code, reason| Case {
        name,
        env: &[],
        prepare: Prepare::Nothing,
        auth,
        call,
        code,
        reason,
        violations: false,
        retry_info: false,
    };
    vec![
        case(
            "wrong password",
            Auth::None,
            login(seed::DEMO_EMAIL, FAKE_PASSWORD),
            Code::Unauthenticated,
            "INVALID_CREDENTIALS",
        ),
        case(
            "no token",
            Auth::None,
            Call::GetProfile,
            Code::Unauthenticated,
            "TOKEN_MISSING",
        ),
        case(
            "garbage token",
            Auth::Garbage,
            Call::ListMyLicenses(ListMyLicensesRequest {
                page_size: 1,
                ..Default::default()
            }),
            Code::Unauthenticated,
            "TOKEN_INVALID",
        ),
        Case {
            violations: true,
            ..case(
                "not an email",
                Auth::None,
                login("not-an-email", FAKE_PASSWORD),
                Code::InvalidArgument,
                "INVALID_ARGUMENT",
            )
        },
        Case {
            violations: true,
            ..case(
                "page size out of range",
                Auth::Demo,
                Call::ListMyLicenses(ListMyLicensesRequest {
                    page_size: -1,
                    ..Default::default()
                }),
                Code::InvalidArgument,
                "INVALID_ARGUMENT",
            )
        },
        case(
            "another user's license",
            Auth::Demo,
            Call::GetLicense(GetLicenseRequest {
                license_id: seed::OTHER_LICENSE_ID.into(),
            }),
            Code::NotFound,
            "NOT_FOUND",
        ),
        case(
            "deactivations used up",
            Auth::Demo,
            Call::DeactivateMachine(DeactivateMachineRequest {
                activation_id: seed::LIMITED_ACTIVATION_ID.into(),
            }),
            Code::FailedPrecondition,
            "DEACTIVATION_LIMIT_REACHED",
        ),
        case(
            "email taken",
            Auth::None,
            Call::SignUp(SignUpRequest {
                email: seed::DEMO_EMAIL.into(),
                password: "a-new-good-password".into(),
                first_name: "Demo".into(),
                last_name: "Again".into(),
            }),
            Code::AlreadyExists,
            "EMAIL_TAKEN",
        ),
        case(
            "request too large",
            Auth::None,
            login(seed::DEMO_EMAIL, &"p".repeat(100 * 1024)),
            Code::ResourceExhausted,
            "REQUEST_TOO_LARGE",
        ),
        Case {
            env: &[("LICENSING_GATEWAY__LIMITS__LOGIN_ATTEMPTS_PER_ADDRESS", "1")],
            prepare: Prepare::SpendSignInAllowance,
            retry_info: true,
            ..case(
                "sign-in throttled",
                Auth::None,
                login(seed::DEMO_EMAIL, seed::DEMO_PASSWORD),
                Code::ResourceExhausted,
                "TOO_MANY_ATTEMPTS",
            )
        },
    ]
}

fn grpc_web_frame(message: &[u8]) -> Vec<u8> {
    let mut body = vec![0u8];
    body.extend_from_slice(&u32::try_from(message.len()).expect("small").to_be_bytes());
    body.extend_from_slice(message);
    body
}

/// The status of a gRPC-Web answer: in its headers (trailers-only) or in the
/// body's trailer frame.
fn grpc_web_status(headers: &reqwest::header::HeaderMap, body: &[u8]) -> tonic::Status {
    let mut map = http::HeaderMap::new();
    for (name, value) in headers {
        if name.as_str().starts_with("grpc-") {
            map.append(name.clone(), value.clone());
        }
    }
    let mut rest = body;
    while rest.len() >= 5 {
        let length = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        if rest[0] & 0x80 != 0 {
            for line in String::from_utf8_lossy(&rest[5..5 + length]).split("\r\n") {
                if let Some((name, value)) = line.split_once(':') {
                    map.append(
                        http::HeaderName::from_bytes(name.trim().as_bytes()).expect("name"),
                        http::HeaderValue::from_str(value.trim()).expect("value"),
                    );
                }
            }
        }
        rest = &rest[5 + length..];
    }
    tonic::Status::from_header_map(&map).expect("a gRPC-Web status")
}

#[tokio::test]
async fn every_error_says_the_same_over_grpc_grpc_web_binary_and_json_connect_json_and_connect_binary()
 {
    for case in cases() {
        let name = case.name;
        // A fresh app per case: each has its own throttles and budgets.
        let app = spawn_app_with(TestOptions {
            env: case
                .env
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
            ..TestOptions::default()
        })
        .await;
        let token = match case.auth {
            Auth::None => None,
            Auth::Demo => Some(app.demo_token().await),
            Auth::Garbage => Some("garbage.not-a.token".to_owned()),
        };
        let token = token.as_deref();
        if let Prepare::SpendSignInAllowance = case.prepare {
            let mut client = app.user_client().await;
            let _ = client
                .login(LoginRequest {
                    email: "stranger@example.com".into(),
                    password: "wrong-password".into(),
                    ..Default::default()
                })
                .await;
        }
        let http = client(false);
        let mut said: Vec<(&str, Failure)> = Vec::new();

        // gRPC, with tonic's generated client.
        let mut grpc = app.user_client().await;
        said.push((
            "gRPC",
            Failure::from_status(&case.call.grpc(&mut grpc, token).await),
        ));

        // gRPC-Web, binary, on HTTP/1.1.
        let mut request = http
            .post(url(&app, case.call.method()))
            .header("content-type", "application/grpc-web+proto")
            .header("x-grpc-web", "1")
            .body(grpc_web_frame(&case.call.proto()));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = request.send().await.expect("gRPC-Web call");
        assert_eq!(
            response.status(),
            200,
            "{name}: gRPC-Web errors are HTTP 200"
        );
        let headers = response.headers().clone();
        let body = response.bytes().await.expect("body");
        said.push((
            "gRPC-Web",
            Failure::from_status(&grpc_web_status(&headers, &body)),
        ));

        // gRPC-Web in JSON mode (translated by the gateway: tonic-web is binary only).
        let mut request = http
            .post(url(&app, case.call.method()))
            .header("content-type", "application/grpc-web+json")
            .header("x-grpc-web", "1")
            .body(grpc_web_frame(case.call.json().to_string().as_bytes()));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = request.send().await.expect("gRPC-Web JSON call");
        assert_eq!(
            response.status(),
            200,
            "{name}: gRPC-Web JSON errors are HTTP 200"
        );
        assert_eq!(
            response.headers()["content-type"],
            "application/grpc-web+json",
            "{name}"
        );
        let headers = response.headers().clone();
        let body = response.bytes().await.expect("body");
        said.push((
            "gRPC-Web JSON",
            Failure::from_status(&grpc_web_status(&headers, &body)),
        ));

        // Connect, JSON and binary.
        for (protocol, content_type, body) in [
            (
                "Connect JSON",
                "application/json",
                case.call.json().to_string().into_bytes(),
            ),
            ("Connect binary", "application/proto", case.call.proto()),
        ] {
            let (status, headers, body) = post(
                &http,
                &url(&app, case.call.method()),
                content_type,
                token,
                body,
            )
            .await;
            assert_eq!(
                headers["content-type"], "application/json",
                "{name}: {protocol}"
            );
            let body = json_of(&body);
            let failure = Failure::from_connect(&body);
            assert_eq!(
                status,
                connect_http_status(failure.code),
                "{name}: {protocol}'s HTTP status for {:?}: {body}",
                failure.code
            );
            assert_eq!(
                headers.contains_key("retry-after"),
                failure.retry_info,
                "{name}: {protocol}: Retry-After iff RetryInfo"
            );
            said.push((protocol, failure));
        }

        let (_, grpc) = &said[0];
        assert_eq!(grpc.code, case.code, "{name}: {grpc:?}");
        let (reason, domain, _) = grpc
            .error_info
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: ErrorInfo"));
        assert_eq!(reason, case.reason, "{name}");
        assert_eq!(domain, "licensing-gateway", "{name}");
        assert_eq!(
            !grpc.violations.is_empty(),
            case.violations,
            "{name}: {grpc:?}"
        );
        assert_eq!(grpc.retry_info, case.retry_info, "{name}: {grpc:?}");
        assert!(!grpc.message.contains(FAKE_PASSWORD), "{name}: {grpc:?}");
        for (protocol, failure) in &said[1..] {
            assert_eq!(failure, grpc, "{name}: {protocol} says what gRPC says");
        }
        drop(app);
    }
}

/// The data frames of a gRPC-Web answer, each as JSON.
fn grpc_web_json_messages(body: &[u8]) -> Vec<Value> {
    let mut messages = Vec::new();
    let mut rest = body;
    while rest.len() >= 5 {
        let length = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        if rest[0] == 0 {
            messages.push(json_of(&rest[5..5 + length]));
        }
        rest = &rest[5 + length..];
    }
    messages
}

#[tokio::test]
async fn grpc_web_in_json_mode_answers_json_frames_and_the_status_in_its_trailers() {
    let app = spawn_app().await;
    let token = app.demo_token().await;
    for http2 in [false, true] {
        let http = client(http2);
        let call = |method: &str, json: &str| {
            http.post(url(&app, method))
                .header("content-type", "application/grpc-web+json")
                .header("x-grpc-web", "1")
                .header("authorization", format!("Bearer {token}"))
                .body(grpc_web_frame(json.as_bytes()))
                .send()
        };
        let response = call("GetProfile", "{}").await.expect("GetProfile");
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers()["content-type"],
            "application/grpc-web+json"
        );
        let headers = response.headers().clone();
        let body = response.bytes().await.expect("body");
        assert_eq!(grpc_web_status(&headers, &body).code(), Code::Ok);
        let messages = grpc_web_json_messages(&body);
        assert_eq!(messages.len(), 1, "one message: {messages:?}");
        assert_eq!(messages[0]["profile"]["email"], seed::DEMO_EMAIL);

        let response = call("ListMyLicenses", r#"{"pageSize":1}"#)
            .await
            .expect("ListMyLicenses");
        let headers = response.headers().clone();
        let body = response.bytes().await.expect("body");
        assert_eq!(grpc_web_status(&headers, &body).code(), Code::Ok);
        let messages = grpc_web_json_messages(&body);
        assert_eq!(messages[0]["licenses"].as_array().map(Vec::len), Some(1));
        assert!(messages[0]["nextPageToken"].is_string(), "{messages:?}");

        // JSON the method's request does not fit: INVALID_ARGUMENT, the
        // request not quoted, and nothing reached the service.
        let response = call(
            "GetProfile",
            &format!(r#"{{"password":"{FAKE_PASSWORD}"}}"#),
        )
        .await
        .expect("bad JSON");
        let headers = response.headers().clone();
        let body = response.bytes().await.expect("body");
        let status = grpc_web_status(&headers, &body);
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(!status.message().contains(FAKE_PASSWORD), "{status:?}");
        assert!(grpc_web_json_messages(&body).is_empty());
    }
}

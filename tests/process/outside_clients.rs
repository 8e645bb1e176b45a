//! The running binary, driven from outside by clients nobody here wrote:
//! `buf curl` (npm `@bufbuild/buf`) over gRPC, over gRPC-Web on real HTTP/1.1
//! and over mutual TLS, and Python `grpcio` (health, reflection, mTLS).
//!
//! Each test starts `licensing-gateway sandbox` on port 0 and reads the ports
//! from its banner. The clients come from `scripts/install-test-clients`
//! (`LGW_BUF`, `LGW_PYTHON`; `scripts/test` sets both). Without them the
//! tests print SKIPPED, unless `CI` is set, where they fail.

use std::collections::BTreeSet;
use std::process::Command;

use cryptlex_sandbox::seed;
use serde_json::Value;
use tonic::Code;

use crate::outside_tools::{self, Buf};
use crate::sandbox_process::SandboxProcess;

fn login_body(password: &str) -> String {
    serde_json::json!({ "email": seed::DEMO_EMAIL, "password": password }).to_string()
}

fn bearer(token: &str) -> String {
    format!("authorization: Bearer {token}")
}

fn string(value: &Value) -> String {
    value
        .as_str()
        .unwrap_or_else(|| panic!("expected a string, got {value}"))
        .to_owned()
}

/// Pages through ListMyLicenses one license at a time until `nextPageToken`
/// is empty; returns the license ids of the non-empty pages. (Cryptlex sends
/// no total, so after a full last page the gateway offers one more page,
/// which comes back empty: allowed by AIP-158.)
fn list_all_pages(buf: &Buf, protocol_args: &[&str], url: &str, token: &str) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut page_token = String::new();
    let mut calls = 0;
    loop {
        calls += 1;
        assert!(calls <= 10, "pagination does not end: {pages:?}");
        let body = serde_json::json!({ "pageSize": 1, "pageToken": page_token }).to_string();
        let header = bearer(token);
        let mut args = protocol_args.to_vec();
        args.extend(["-H", &header, "-d", &body]);
        let method = format!("{url}/licensing.v1.UserService/ListMyLicenses");
        args.push(&method);
        let response = buf.curl(&args).ok_json();
        let ids: Vec<String> = response["licenses"]
            .as_array()
            .map(|licenses| licenses.iter().map(|l| string(&l["id"])).collect())
            .unwrap_or_default();
        if ids.is_empty() {
            assert!(
                response["nextPageToken"]
                    .as_str()
                    .unwrap_or_default()
                    .is_empty(),
                "an empty page must be the last: {response}"
            );
        } else {
            pages.push(ids);
        }
        page_token = response["nextPageToken"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if page_token.is_empty() {
            return pages;
        }
    }
}

fn demo_license_ids() -> BTreeSet<String> {
    seed::DEMO_LICENSE_IDS
        .iter()
        .map(|id| (*id).to_owned())
        .collect()
}

#[tokio::test]
async fn buf_curl_finds_the_public_services_by_reflection_and_calls_them_over_grpc() {
    let Some(buf) = outside_tools::buf(
        "buf_curl_finds_the_public_services_by_reflection_and_calls_them_over_grpc",
    ) else {
        return;
    };
    let gateway = SandboxProcess::start(&[]).await;
    let url = gateway.public_url();
    let grpc = ["--protocol", "grpc"];
    let call = |args: &[&str], method: &str| {
        let target = format!("{url}/{method}");
        let mut all = grpc.to_vec();
        all.extend_from_slice(args);
        all.push(&target);
        buf.curl(&all)
    };

    // Reflection lists the public services, and not the internal one.
    let listed = buf.curl(&["--protocol", "grpc", "--list-services", &url]);
    assert_eq!(listed.code, 0, "{listed:#?}");
    let services: BTreeSet<&str> = listed.stdout.lines().map(str::trim).collect();
    assert!(services.contains("licensing.v1.UserService"), "{listed:#?}");
    assert!(services.contains("grpc.health.v1.Health"), "{listed:#?}");
    assert!(
        !services.contains("licensing.v1.IssuanceService"),
        "{listed:#?}"
    );

    // Health: overall and per service.
    for service in ["", "licensing.v1.UserService"] {
        let body = serde_json::json!({ "service": service }).to_string();
        let health = call(&["-d", &body], "grpc.health.v1.Health/Check").ok_json();
        assert_eq!(health["status"], "SERVING", "service {service:?}");
    }

    // Login, then the profile with the token.
    let session = call(
        &["-d", &login_body(seed::DEMO_PASSWORD)],
        "licensing.v1.UserService/Login",
    )
    .ok_json()["session"]
        .clone();
    let token = string(&session["accessToken"]);
    assert!(!string(&session["refreshToken"]).is_empty());
    let profile = call(
        &["-H", &bearer(&token)],
        "licensing.v1.UserService/GetProfile",
    )
    .ok_json();
    assert_eq!(profile["profile"]["email"], seed::DEMO_EMAIL, "{profile}");
    assert_eq!(profile["profile"]["id"], seed::DEMO_USER_ID, "{profile}");

    // Both licenses, one per page, to the end.
    let pages = list_all_pages(&buf, &grpc, &url, &token);
    assert_eq!(pages.len(), 2, "two pages of one: {pages:?}");
    assert!(pages.iter().all(|page| page.len() == 1), "{pages:?}");
    let ids: BTreeSet<String> = pages.into_iter().flatten().collect();
    assert_eq!(ids, demo_license_ids());

    // Wrong password, missing token, garbage token: UNAUTHENTICATED.
    call(
        &["-d", &login_body("not-the-password")],
        "licensing.v1.UserService/Login",
    )
    .assert_rpc_error(Code::Unauthenticated, "unauthenticated");
    call(&[], "licensing.v1.UserService/GetProfile")
        .assert_rpc_error(Code::Unauthenticated, "unauthenticated");
    call(
        &["-H", &bearer("garbage.not-a.token")],
        "licensing.v1.UserService/GetProfile",
    )
    .assert_rpc_error(Code::Unauthenticated, "unauthenticated");
    call(
        &["-H", &bearer("garbage"), "-d", r#"{"pageSize":1}"#],
        "licensing.v1.UserService/ListMyLicenses",
    )
    .assert_rpc_error(Code::Unauthenticated, "unauthenticated");
}

#[tokio::test]
async fn buf_curl_calls_the_user_service_over_grpc_web_on_http_1_1() {
    let Some(buf) = outside_tools::buf("buf_curl_calls_the_user_service_over_grpc_web_on_http_1_1")
    else {
        return;
    };
    let gateway = SandboxProcess::start(&[]).await;
    // No reflection (it needs HTTP/2): the schema is the gateway's own
    // descriptor set, the one it serves through reflection.
    let schema = gateway.dir().join("licensing.binpb");
    std::fs::write(&schema, licensing_gateway::grpc::pb::FILE_DESCRIPTOR_SET).expect("schema");
    let schema = schema.display().to_string();
    let url = gateway.public_url();
    let web = [
        "--protocol",
        "grpcweb",
        "--schema",
        &schema,
        "--reflect=false",
        "-v",
    ];
    let call = |args: &[&str], method: &str| {
        let target = format!("{url}/licensing.v1.UserService/{method}");
        let mut all = web.to_vec();
        all.extend_from_slice(args);
        all.push(&target);
        let outcome = buf.curl(&all);
        assert!(
            outcome.stderr.contains("< (#1) HTTP/1.1 200 OK"),
            "gRPC-Web over HTTP/1.1 expected: {outcome:#?}"
        );
        outcome
    };

    let login = call(&["-d", &login_body(seed::DEMO_PASSWORD)], "Login").ok_json();
    let token = string(&login["session"]["accessToken"]);

    let listed = call(
        &["-H", &bearer(&token), "-d", r#"{"pageSize":100}"#],
        "ListMyLicenses",
    )
    .ok_json();
    let ids: BTreeSet<String> = listed["licenses"]
        .as_array()
        .expect("licenses")
        .iter()
        .map(|license| string(&license["id"]))
        .collect();
    assert_eq!(ids, demo_license_ids(), "{listed}");
    assert_eq!(listed["nextPageToken"].as_str().unwrap_or_default(), "");

    // Paging works the same over gRPC-Web.
    let pages = list_all_pages(&buf, &web, &url, &token);
    assert_eq!(pages.len(), 2, "{pages:?}");

    // Errors travel in headers a browser may read (CORS exposes them).
    let denied = call(
        &[
            "-H",
            "origin: http://localhost:3000",
            "-H",
            &bearer("garbage"),
            "-d",
            "{}",
        ],
        "GetProfile",
    );
    denied.assert_rpc_error(Code::Unauthenticated, "unauthenticated");
    let expose = denied
        .stderr
        .lines()
        .find(|line| line.contains("Access-Control-Expose-Headers"))
        .unwrap_or_else(|| panic!("no Access-Control-Expose-Headers: {denied:#?}"));
    for header in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        assert!(expose.contains(header), "{expose}");
    }
    call(&["-d", &login_body("wrong-password")], "Login")
        .assert_rpc_error(Code::Unauthenticated, "unauthenticated");
}

#[tokio::test]
async fn buf_curl_issues_a_license_over_mutual_tls() {
    let Some(buf) = outside_tools::buf("buf_curl_issues_a_license_over_mutual_tls") else {
        return;
    };
    let gateway = SandboxProcess::start(&[]).await;
    let dir = gateway.dir();
    let file = |name: &str| dir.join(name).display().to_string();
    let target = format!(
        "{}/licensing.v1.IssuanceService/IssueLicense",
        gateway.internal_url()
    );
    let body = serde_json::json!({ "requestId": "buf-payment-1", "userEmail": seed::DEMO_EMAIL })
        .to_string();
    let issue_as = |client: &str| {
        buf.curl(&[
            "--protocol",
            "grpc",
            "--cacert",
            &file("ca.pem"),
            "--cert",
            &file(&format!("{client}.pem")),
            "--key",
            &file(&format!("{client}.key")),
            "-d",
            &body,
            &target,
        ])
    };

    let issued = issue_as("payment-service").ok_json();
    let license = &issued["license"];
    assert_eq!(license["userId"], seed::DEMO_USER_ID, "{issued}");
    assert_eq!(license["productId"], seed::PRODUCT_ID, "{issued}");
    assert!(!string(&license["key"]).is_empty(), "{issued}");
    assert_ne!(issued["replayed"], true, "{issued}");

    // A retry with the same request id replays the same license.
    let replayed = issue_as("payment-service").ok_json();
    assert_eq!(replayed["replayed"], true, "{replayed}");
    assert_eq!(replayed["license"]["id"], license["id"]);

    // Same CA, not on the allow-list.
    issue_as("intruder").assert_rpc_error(Code::PermissionDenied, "permission_denied");

    // No client certificate: the handshake fails (buf exits non-zero). With
    // a schema instead of reflection, buf shows the real TLS error.
    let schema = dir.join("licensing.binpb");
    std::fs::write(&schema, licensing_gateway::grpc::pb::FILE_DESCRIPTOR_SET).expect("schema");
    let anonymous = buf.curl(&[
        "--protocol",
        "grpc",
        "--cacert",
        &file("ca.pem"),
        "--schema",
        &schema.display().to_string(),
        "-d",
        &body,
        &target,
    ]);
    assert_ne!(anonymous.code, 0, "{anonymous:#?}");

    // The user sees it (the website flow end to end).
    let url = gateway.public_url();
    let login = buf
        .curl(&[
            "--protocol",
            "grpc",
            "-d",
            &login_body(seed::DEMO_PASSWORD),
            &format!("{url}/licensing.v1.UserService/Login"),
        ])
        .ok_json();
    let token = string(&login["session"]["accessToken"]);
    let ids: BTreeSet<String> = list_all_pages(&buf, &["--protocol", "grpc"], &url, &token)
        .into_iter()
        .flatten()
        .collect();
    assert!(ids.contains(&string(&license["id"])), "{ids:?}");
    assert_eq!(ids.len(), 3, "{ids:?}");
}

#[tokio::test]
async fn python_grpcio_checks_health_lists_services_and_issues_a_license_over_mutual_tls() {
    let Some(python) = outside_tools::python(
        "python_grpcio_checks_health_lists_services_and_issues_a_license_over_mutual_tls",
    ) else {
        return;
    };
    let gateway = SandboxProcess::start(&[]).await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/health_and_reflection.py"
    );
    let outcome = outside_tools::run(
        Command::new(&python)
            .arg(script)
            .args(["--public", &gateway.public.to_string()])
            .args(["--internal", &gateway.internal.to_string()])
            .arg("--pki-dir")
            .arg(gateway.dir())
            .args(["--request-id", "python-payment-1"])
            .env("PYTHONDONTWRITEBYTECODE", "1"),
    );
    assert_eq!(outcome.code, 0, "{outcome:#?}");
    for expected in [
        "ok health '' SERVING",
        "ok health 'licensing.v1.UserService' SERVING",
        "ok health 'no.such.Service' NOT_FOUND",
        "ok issue-license ",
        "ok intruder PERMISSION_DENIED",
        "ALL OK",
    ] {
        assert!(
            outcome
                .stdout
                .lines()
                .any(|line| line.starts_with(expected)),
            "missing {expected:?}: {outcome:#?}"
        );
    }
    let services = outcome
        .stdout
        .lines()
        .find_map(|line| line.strip_prefix("ok services "))
        .unwrap_or_else(|| panic!("no services line: {outcome:#?}"));
    let services: BTreeSet<&str> = services.split_whitespace().collect();
    assert!(
        services.contains("licensing.v1.UserService"),
        "{services:?}"
    );
    assert!(services.contains("grpc.health.v1.Health"), "{services:?}");
}

/// The customer-portal calls from `buf curl` over gRPC-Web on HTTP/1.1 (what
/// a fetch-only website backend uses): a license in detail, its machines, a
/// deactivation, the releases, two-factor enrolment; and a reset token minted
/// over mutual TLS by the website mailer's identity.
#[tokio::test]
async fn buf_curl_drives_the_portal_calls_over_grpc_web_and_mints_a_reset_token_over_mtls() {
    let Some(buf) = outside_tools::buf(
        "buf_curl_drives_the_portal_calls_over_grpc_web_and_mints_a_reset_token_over_mtls",
    ) else {
        return;
    };
    let gateway = SandboxProcess::start(&[]).await;
    let schema = gateway.dir().join("licensing.binpb");
    std::fs::write(&schema, licensing_gateway::grpc::pb::FILE_DESCRIPTOR_SET).expect("schema");
    let schema = schema.display().to_string();
    let url = gateway.public_url();
    let call = |args: &[&str], method: &str| {
        let target = format!("{url}/licensing.v1.UserService/{method}");
        let mut all = vec![
            "--protocol",
            "grpcweb",
            "--schema",
            &schema,
            "--reflect=false",
        ];
        all.extend_from_slice(args);
        all.push(&target);
        buf.curl(&all)
    };

    let login = call(&["-d", &login_body(seed::DEMO_PASSWORD)], "Login").ok_json();
    let token = string(&login["session"]["accessToken"]);
    let auth = bearer(&token);
    let license_id = seed::DEMO_LICENSE_IDS[0];

    let detail = call(
        &[
            "-H",
            &auth,
            "-d",
            &format!(r#"{{"licenseId":"{license_id}"}}"#),
        ],
        "GetLicense",
    )
    .ok_json();
    assert_eq!(detail["license"]["id"], license_id, "{detail}");
    assert_eq!(
        detail["license"]["status"], "LICENSE_STATUS_ACTIVE",
        "{detail}"
    );
    assert!(
        !detail["featureEntitlements"]
            .as_array()
            .map(Vec::is_empty)
            .unwrap_or(true),
        "{detail}"
    );
    call(
        &[
            "-H",
            &auth,
            "-d",
            &format!(r#"{{"licenseId":"{}"}}"#, seed::OTHER_LICENSE_ID),
        ],
        "GetLicense",
    )
    .assert_rpc_error(Code::NotFound, "not_found");

    let machines = call(
        &[
            "-H",
            &auth,
            "-d",
            &format!(r#"{{"licenseId":"{license_id}"}}"#),
        ],
        "ListActivations",
    )
    .ok_json();
    let ids: Vec<String> = machines["activations"]
        .as_array()
        .expect("activations")
        .iter()
        .map(|activation| string(&activation["id"]))
        .collect();
    let machine = seed::DEMO_ACTIVATION_IDS
        .iter()
        .find(|id| ids.iter().any(|listed| listed == *id))
        .unwrap_or_else(|| panic!("no seeded activation listed: {machines}"));

    call(
        &[
            "-H",
            &auth,
            "-d",
            &format!(r#"{{"activationId":"{}"}}"#, seed::OTHER_ACTIVATION_ID),
        ],
        "DeactivateMachine",
    )
    .assert_rpc_error(Code::NotFound, "not_found");
    call(
        &[
            "-H",
            &auth,
            "-d",
            &format!(r#"{{"activationId":"{}"}}"#, seed::LIMITED_ACTIVATION_ID),
        ],
        "DeactivateMachine",
    )
    .assert_rpc_error(Code::FailedPrecondition, "failed_precondition");
    let freed = call(
        &[
            "-H",
            &auth,
            "-d",
            &format!(r#"{{"activationId":"{machine}"}}"#),
        ],
        "DeactivateMachine",
    )
    .ok_json();
    assert_eq!(freed["licenseId"], license_id, "{freed}");

    let releases = call(&["-H", &auth, "-d", "{}"], "ListReleases").ok_json();
    let listed = releases["releases"].as_array().expect("releases");
    assert!(!listed.is_empty(), "{releases}");
    for release in listed {
        assert!(
            !release["files"].as_array().expect("files").is_empty(),
            "{release}"
        );
        for file in release["files"].as_array().expect("files") {
            assert!(
                string(&file["url"]).starts_with("http"),
                "a download link: {file}"
            );
        }
    }

    let started = call(&["-H", &auth, "-d", "{}"], "StartTwoFactorEnrollment").ok_json();
    assert!(
        string(&started["otpauthUrl"]).starts_with("otpauth://totp/"),
        "{started}"
    );
    assert!(!string(&started["secret"]).is_empty(), "{started}");

    // The website mailer's identity mints a reset token; the payment
    // service's identity may not.
    let dir = gateway.dir().display().to_string();
    let mint = |client: &str| {
        let cert = format!("{dir}/{client}.pem");
        let key = format!("{dir}/{client}.key");
        let ca = format!("{dir}/ca.pem");
        let target = format!(
            "{}/licensing.v1.AccountService/CreatePasswordResetToken",
            gateway.internal_url()
        );
        buf.curl(&[
            "--protocol",
            "grpc",
            "--schema",
            &schema,
            "--reflect=false",
            "--cacert",
            &ca,
            "--cert",
            &cert,
            "--key",
            &key,
            "-d",
            &format!(r#"{{"email":"{}"}}"#, seed::DEMO_EMAIL),
            &target,
        ])
    };
    let minted = mint("website-mailer").ok_json();
    assert_eq!(minted["userId"], seed::DEMO_USER_ID, "{minted}");
    assert!(!string(&minted["token"]).is_empty());
    mint("payment-service").assert_rpc_error(Code::PermissionDenied, "permission_denied");
}

#[tokio::test]
async fn python_grpcio_drives_every_portal_call_without_generated_code() {
    let Some(python) =
        outside_tools::python("python_grpcio_drives_every_portal_call_without_generated_code")
    else {
        return;
    };
    let gateway = SandboxProcess::start(&[]).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/portal.py");
    let outcome = outside_tools::run(
        Command::new(&python)
            .arg(script)
            .args(["--public", &gateway.public.to_string()])
            .args(["--internal", &gateway.internal.to_string()])
            .arg("--pki-dir")
            .arg(gateway.dir())
            .args(["--license", seed::DEMO_LICENSE_IDS[0]])
            .args(["--other-license", seed::OTHER_LICENSE_ID])
            .args(["--activation", seed::DEMO_ACTIVATION_IDS[0]])
            .args(["--limited-activation", seed::LIMITED_ACTIVATION_ID])
            .args(["--other-activation", seed::OTHER_ACTIVATION_ID])
            .env("PYTHONDONTWRITEBYTECODE", "1"),
    );
    assert_eq!(outcome.code, 0, "{outcome:#?}");
    for expected in [
        "ok sign-up ",
        "ok update-profile ",
        "ok change-password",
        "ok two-factor enabled ",
        "ok login two-factor: required, code, recovery code once",
        "ok two-factor disabled",
        "ok request-password-reset same answer for known and unknown",
        "ok reset-password with a minted token, once",
        "ok get-license LICENSE_STATUS_ACTIVE ",
        "ok another user's license is NOT_FOUND",
        "ok list-activations ",
        "ok deactivate-machine ",
        "ok list-releases ",
        "ALL OK",
    ] {
        assert!(
            outcome
                .stdout
                .lines()
                .any(|line| line.starts_with(expected)),
            "missing {expected:?}: {outcome:#?}"
        );
    }
}

// === The Connect protocol, with clients nobody here wrote ===

/// `/usr/bin/curl` (or `LGW_CURL`).
fn curl_tool(test: &str) -> Option<std::path::PathBuf> {
    outside_tools::tool("LGW_CURL", "/usr/bin/curl", test)
}

/// What `curl -sS -i` printed: the final status, the headers (lower-case
/// names) and the body.
#[derive(Debug)]
struct CurlAnswer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl CurlAnswer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:#?}"))
    }
}

fn curl(curl: &std::path::Path, args: &[&str]) -> CurlAnswer {
    let outcome = outside_tools::run(
        Command::new(curl)
            .args(["-sS", "-i", "--max-time", "20"])
            .args(args),
    );
    assert_eq!(outcome.code, 0, "{outcome:#?}");
    let (head, body) = outcome
        .stdout
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header block: {outcome:#?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {outcome:#?}"));
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    CurlAnswer {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// The `debug` form of a Connect error's detail of `type_name`.
fn connect_detail<'a>(error: &'a Value, type_name: &str) -> &'a Value {
    error["details"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|detail| detail["type"] == type_name)
        .map(|detail| &detail["debug"])
        .unwrap_or_else(|| panic!("no {type_name} in {error}"))
}

#[tokio::test]
async fn curl_speaks_connect_json_in_and_out_with_error_bodies_and_status_codes() {
    let test = "curl_speaks_connect_json_in_and_out_with_error_bodies_and_status_codes";
    let Some(curl_path) = curl_tool(test) else {
        return;
    };
    let gateway = SandboxProcess::start(&[]).await;
    let url = gateway.public_url();
    let post = |method: &str, extra: &[&str], body: &str| {
        let target = format!("{url}/licensing.v1.UserService/{method}");
        let mut args = vec!["-H", "content-type: application/json"];
        args.extend_from_slice(extra);
        args.extend(["--data-binary", body, &target]);
        curl(&curl_path, &args)
    };

    // Login: JSON in, JSON out, nothing but a content type.
    let login = post("Login", &[], &login_body(seed::DEMO_PASSWORD));
    assert_eq!(login.status, 200, "{login:#?}");
    assert_eq!(login.header("content-type"), Some("application/json"));
    assert_eq!(login.header("cache-control"), Some("private, no-store"));
    let token = string(&login.json()["session"]["accessToken"]);

    // GetProfile by POST, then by GET (a URL a person can paste).
    let auth = bearer(&token);
    let profile = post("GetProfile", &["-H", &auth], "{}");
    assert_eq!(profile.status, 200, "{profile:#?}");
    let profile = profile.json();
    assert_eq!(profile["profile"]["email"], seed::DEMO_EMAIL, "{profile}");
    let got = curl(
        &curl_path,
        &[
            "-H",
            &auth,
            &format!(
                "{url}/licensing.v1.UserService/GetProfile?connect=v1&encoding=json&message=%7B%7D"
            ),
        ],
    );
    assert_eq!(got.status, 200, "{got:#?}");
    assert_eq!(got.header("cache-control"), Some("private, no-store"));
    assert_eq!(got.json(), profile);

    // Errors: the protocol's HTTP status and JSON body with details.
    let wrong = post("Login", &[], &login_body("not-the-password"));
    assert_eq!(wrong.status, 401, "{wrong:#?}");
    let error = wrong.json();
    assert_eq!(error["code"], "unauthenticated", "{error}");
    assert_eq!(error["message"], "invalid email or password", "{error}");
    let info = connect_detail(&error, "google.rpc.ErrorInfo");
    assert_eq!(info["reason"], "INVALID_CREDENTIALS", "{error}");
    assert_eq!(info["domain"], "licensing-gateway", "{error}");

    let invalid = post("ListMyLicenses", &["-H", &auth], r#"{"pageSize":-1}"#);
    assert_eq!(invalid.status, 400, "{invalid:#?}");
    let error = invalid.json();
    assert_eq!(error["code"], "invalid_argument", "{error}");
    let violations = &connect_detail(&error, "google.rpc.BadRequest")["fieldViolations"];
    assert!(
        violations
            .as_array()
            .is_some_and(|all| all.iter().any(|v| v["field"] == "page_size")),
        "{error}"
    );

    let not_allowed = curl(
        &curl_path,
        &[&format!(
            "{url}/licensing.v1.UserService/Login?encoding=json&message=%7B%7D"
        )],
    );
    assert_eq!(not_allowed.status, 405, "{not_allowed:#?}");
    assert_eq!(not_allowed.header("allow"), Some("POST"));
}

/// The gateway's descriptor set in its directory, for `buf curl --schema`.
fn write_schema(gateway: &SandboxProcess) -> String {
    let schema = gateway.dir().join("licensing.binpb");
    std::fs::write(&schema, licensing_gateway::grpc::pb::FILE_DESCRIPTOR_SET).expect("schema");
    schema.display().to_string()
}

#[tokio::test]
async fn buf_curl_speaks_connect_on_http_1_1_with_the_schema_file() {
    let Some(buf) = outside_tools::buf("buf_curl_speaks_connect_on_http_1_1_with_the_schema_file")
    else {
        return;
    };
    let gateway = SandboxProcess::start(&[]).await;
    let schema = write_schema(&gateway);
    let url = gateway.public_url();
    let connect = [
        "--protocol",
        "connect",
        "--schema",
        &schema,
        "--reflect=false",
        "-v",
    ];
    let call = |args: &[&str], method: &str| {
        let target = format!("{url}/licensing.v1.UserService/{method}");
        let mut all = connect.to_vec();
        all.extend_from_slice(args);
        all.push(&target);
        let outcome = buf.curl(&all);
        assert!(
            outcome.stderr.contains("< (#1) HTTP/1.1 "),
            "Connect over HTTP/1.1 expected: {outcome:#?}"
        );
        outcome
    };

    let login = call(&["-d", &login_body(seed::DEMO_PASSWORD)], "Login").ok_json();
    let token = string(&login["session"]["accessToken"]);
    let profile = call(&["-H", &bearer(&token)], "GetProfile").ok_json();
    assert_eq!(profile["profile"]["email"], seed::DEMO_EMAIL, "{profile}");
    let pages = list_all_pages(&buf, &connect, &url, &token);
    assert_eq!(pages.len(), 2, "{pages:?}");

    let error = call(&["-d", &login_body("wrong-password")], "Login")
        .assert_rpc_error(Code::Unauthenticated, "unauthenticated");
    assert_eq!(error["message"], "invalid email or password", "{error}");
    let denied = call(&["-H", &bearer("garbage")], "GetProfile");
    denied.assert_rpc_error(Code::Unauthenticated, "unauthenticated");
    assert!(
        denied.stderr.contains("< (#1) HTTP/1.1 401"),
        "Connect's HTTP status for unauthenticated: {denied:#?}"
    );
}

// Reflection is a streaming RPC: over Connect it needs the Connect streaming
// protocol (`application/connect+proto`).
#[tokio::test]
async fn buf_curl_speaks_connect_on_http_2_with_reflection() {
    let Some(buf) = outside_tools::buf("buf_curl_speaks_connect_on_http_2_with_reflection") else {
        return;
    };
    let gateway = SandboxProcess::start(&[]).await;
    let url = gateway.public_url();
    // No --protocol: buf curl's default is Connect, reflection included.
    let call = |args: &[&str], method: &str| {
        let target = format!("{url}/licensing.v1.UserService/{method}");
        let mut all = vec!["--http2-prior-knowledge"];
        all.extend_from_slice(args);
        all.push(&target);
        buf.curl(&all)
    };

    let listed = buf.curl(&["--http2-prior-knowledge", "--list-services", &url]);
    assert_eq!(listed.code, 0, "{listed:#?}");
    assert!(
        listed
            .stdout
            .lines()
            .any(|line| line.trim() == "licensing.v1.UserService"),
        "{listed:#?}"
    );
    let login = call(&["-d", &login_body(seed::DEMO_PASSWORD)], "Login").ok_json();
    let token = string(&login["session"]["accessToken"]);
    let profile = call(&["-H", &bearer(&token)], "GetProfile").ok_json();
    assert_eq!(profile["profile"]["email"], seed::DEMO_EMAIL, "{profile}");
    call(&["-d", &login_body("wrong-password")], "Login")
        .assert_rpc_error(Code::Unauthenticated, "unauthenticated");
}

#[tokio::test]
async fn python_requests_uses_the_gateway_over_connect_json_as_a_website_backend_would() {
    let test = "python_requests_uses_the_gateway_over_connect_json_as_a_website_backend_would";
    let Some(python) = outside_tools::python(test) else {
        return;
    };
    let gateway = SandboxProcess::start(&[]).await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/connect_requests.py"
    );
    let outcome = outside_tools::run(
        Command::new(&python)
            .arg(script)
            .args(["--public", &gateway.public.to_string()])
            .args(["--email", seed::DEMO_EMAIL])
            .args(["--password", seed::DEMO_PASSWORD])
            .args(["--licenses", &seed::DEMO_LICENSE_IDS.join(",")])
            .args(["--other-license", seed::OTHER_LICENSE_ID])
            .env("PYTHONDONTWRITEBYTECODE", "1"),
    );
    assert_eq!(outcome.code, 0, "{outcome:#?}");
    for expected in [
        "ok login",
        "ok profile demo@example.com (POST and GET)",
        "ok licenses 2 in ",
        "ok wrong password 401 INVALID_CREDENTIALS",
        "ok invalid argument 400 fields ",
        "ok another user's license 404 NOT_FOUND",
        "ALL OK",
    ] {
        assert!(
            outcome
                .stdout
                .lines()
                .any(|line| line.starts_with(expected)),
            "missing {expected:?}: {outcome:#?}"
        );
    }
}

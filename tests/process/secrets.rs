//! No secret ever reaches the logs, even at `RUST_LOG=trace`.
//!
//! Starts the real binary (`licensing-gateway sandbox`), captures everything
//! it prints on stdout and stderr, drives every flow that handles a secret
//! with distinctive values, stops it, and then searches the output for the
//! passwords, every access and refresh token handed out, the garbage tokens
//! sent, the PAT and the private keys of the sandbox's PKI. Runs once with
//! text logs and once with JSON logs.

use std::path::Path;
use std::time::Duration;

use cryptlex_sandbox::seed;
use licensing_gateway::grpc::pb::issuance_service_client::IssuanceServiceClient;
use licensing_gateway::grpc::pb::user_service_client::UserServiceClient;
use licensing_gateway::grpc::pb::{
    GetProfileRequest, IssueLicenseRequest, ListMyLicensesRequest, LoginRequest, LogoutRequest,
    RefreshSessionRequest, Session, SignUpRequest, issue_license_request,
};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::sandbox_process::SandboxProcess;
use crate::support::client::{install_crypto_provider, with_token};

const SIGN_UP_PASSWORD: &str = "Sup3r-Secret-Pa55word-XYZ";
const WRONG_PASSWORD: &str = "Wr0ng-Guess-Pa55word-QJK";
/// Garbage shaped like a JWT (JSON header and claims, no `exp`), so it
/// passes the gateway's shape check and travels as far as a real token would.
const GARBAGE_JWT: &str = "eyJnYXJiYWdlIjoiR2FyYjRnZSJ9.eyJnYXJiYWdlIjoiR2FyYjRnZS1QYXlsb2FkLVZ3OSJ9.G4rbageSignatureZq7XkA";
const GARBAGE_OPAQUE: &str = "Garbage-Opaque-Token-7d3f9a1c5e";

/// Everything secret that went in or came out during the flows.
#[derive(Debug, Default)]
struct Secrets(Vec<(String, String)>);

impl Secrets {
    fn add(&mut self, what: impl Into<String>, value: impl Into<String>) {
        let value = value.into();
        assert!(!value.is_empty(), "an empty secret proves nothing");
        self.0.push((what.into(), value));
    }

    /// A token, and for JWT-shaped tokens also their signature alone (a
    /// leaked signature is a leaked token).
    fn add_token(&mut self, what: &str, token: &str) {
        self.add(what, token);
        let parts: Vec<&str> = token.split('.').collect();
        if let [_, _, signature] = parts.as_slice()
            && signature.len() >= 16
        {
            self.add(format!("{what} (signature)"), *signature);
        }
    }

    fn add_session(&mut self, what: &str, session: &Session) {
        self.add_token(&format!("{what} access token"), &session.access_token);
        self.add_token(&format!("{what} refresh token"), &session.refresh_token);
    }

    /// The PAT and the base64 body lines of every private key in `dir`.
    fn add_sandbox_files(&mut self, dir: &Path) {
        let pat = std::fs::read_to_string(dir.join("cryptlex-pat")).expect("the PAT file");
        self.add_token("the Cryptlex PAT", pat.trim());
        let mut keys = 0;
        for entry in std::fs::read_dir(dir).expect("sandbox dir") {
            let path = entry.expect("entry").path();
            if path.extension().is_none_or(|ext| ext != "key") {
                continue;
            }
            keys += 1;
            let pem = std::fs::read_to_string(&path).expect("key file");
            for line in pem.lines().filter(|line| !line.starts_with("-----")) {
                if line.trim().len() >= 16 {
                    self.add(format!("private key {}", path.display()), line.trim());
                }
            }
        }
        assert!(
            keys >= 4,
            "expected the sandbox's CA, server and client keys"
        );
    }
}

async fn user_client(gateway: &SandboxProcess) -> UserServiceClient<Channel> {
    let channel = Channel::from_shared(gateway.public_url())
        .expect("uri")
        .timeout(Duration::from_secs(20))
        .connect()
        .await
        .expect("public listener");
    UserServiceClient::new(channel)
}

async fn payment_client(gateway: &SandboxProcess) -> IssuanceServiceClient<Channel> {
    install_crypto_provider();
    let read = |name: &str| std::fs::read_to_string(gateway.dir().join(name)).expect(name);
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.pem")))
        .identity(Identity::from_pem(
            read("payment-service.pem"),
            read("payment-service.key"),
        ))
        .domain_name("localhost");
    let channel = Channel::from_shared(gateway.internal_url())
        .expect("uri")
        .timeout(Duration::from_secs(20))
        .tls_config(tls)
        .expect("tls config")
        .connect()
        .await
        .expect("internal listener");
    IssuanceServiceClient::new(channel)
}

/// Runs every flow that handles a secret; returns what must not be logged.
async fn drive_flows(gateway: &SandboxProcess, email: &str) -> Secrets {
    let mut secrets = Secrets::default();
    secrets.add("the sign-up password", SIGN_UP_PASSWORD);
    secrets.add("the wrong password", WRONG_PASSWORD);
    secrets.add_token("the garbage JWT", GARBAGE_JWT);
    secrets.add("the garbage opaque token", GARBAGE_OPAQUE);
    secrets.add_sandbox_files(gateway.dir());
    let mut users = user_client(gateway).await;

    let signed_up = users
        .sign_up(SignUpRequest {
            email: email.into(),
            password: SIGN_UP_PASSWORD.into(),
            first_name: "Secret".into(),
            last_name: "Keeper".into(),
        })
        .await
        .expect("sign-up")
        .into_inner();
    secrets.add_session("sign-up", signed_up.session.as_ref().expect("session"));

    let login = users
        .login(LoginRequest {
            email: email.into(),
            password: SIGN_UP_PASSWORD.into(),
            ..Default::default()
        })
        .await
        .expect("login")
        .into_inner()
        .session
        .expect("session");
    secrets.add_session("login", &login);

    let refreshed = users
        .refresh_session(RefreshSessionRequest {
            refresh_token: login.refresh_token.clone(),
        })
        .await
        .expect("refresh")
        .into_inner()
        .session
        .expect("session");
    secrets.add_session("refreshed", &refreshed);

    let profile = users
        .get_profile(with_token(GetProfileRequest {}, &refreshed.access_token))
        .await
        .expect("profile")
        .into_inner()
        .profile
        .expect("profile");
    assert_eq!(profile.email, email);

    let issued = payment_client(gateway)
        .await
        .issue_license(IssueLicenseRequest {
            request_id: format!("secrets-{}", uuid::Uuid::new_v4()),
            user: Some(issue_license_request::User::UserEmail(email.into())),
            ..Default::default()
        })
        .await
        .expect("IssueLicense over mTLS")
        .into_inner();
    assert!(issued.license.is_some());

    let listed = users
        .list_my_licenses(with_token(
            ListMyLicensesRequest {
                page_size: 10,
                ..Default::default()
            },
            &refreshed.access_token,
        ))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.licenses.len(), 1, "the license just issued");

    // The demo user too (its password is public: it is in the banner).
    let demo = users
        .login(LoginRequest {
            email: seed::DEMO_EMAIL.into(),
            password: seed::DEMO_PASSWORD.into(),
            ..Default::default()
        })
        .await
        .expect("demo login")
        .into_inner()
        .session
        .expect("session");
    secrets.add_session("demo login", &demo);
    users
        .list_my_licenses(with_token(
            ListMyLicensesRequest::default(),
            &demo.access_token,
        ))
        .await
        .expect("demo list");

    // Failures carry secrets too.
    let wrong = users
        .login(LoginRequest {
            email: email.into(),
            password: WRONG_PASSWORD.into(),
            ..Default::default()
        })
        .await
        .expect_err("wrong password");
    assert_eq!(wrong.code(), Code::Unauthenticated, "{wrong:?}");
    for garbage in [GARBAGE_JWT, GARBAGE_OPAQUE] {
        let refused = users
            .get_profile(with_token(GetProfileRequest {}, garbage))
            .await
            .expect_err("garbage token");
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
        let refused = users
            .refresh_session(RefreshSessionRequest {
                refresh_token: garbage.into(),
            })
            .await
            .expect_err("garbage refresh token");
        assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    }
    // The consumed refresh token, replayed.
    let replayed = users
        .refresh_session(RefreshSessionRequest {
            refresh_token: login.refresh_token.clone(),
        })
        .await
        .expect_err("a used refresh token");
    assert_eq!(replayed.code(), Code::Unauthenticated, "{replayed:?}");

    users
        .logout(with_token(LogoutRequest {}, &refreshed.access_token))
        .await
        .expect("logout");
    secrets
}

/// Starts the binary with `env`, drives the flows, stops it and checks its
/// whole output.
async fn assert_no_secret_is_logged(env: &[(&str, &str)], email: &str) -> String {
    let gateway = SandboxProcess::start(env).await;
    let secrets = drive_flows(&gateway, email).await;
    let output = gateway.stop();
    assert!(
        output.contains("TRACE"),
        "the test is only meaningful at trace level; output:\n{output}"
    );
    assert!(
        output.contains("licensing.v1.UserService/Login")
            || output.contains("licensing.v1.UserService\\/Login"),
        "the flows should show up in the log; output:\n{output}"
    );
    let leaks: Vec<String> = secrets
        .0
        .iter()
        .filter(|(_, value)| output.contains(value.as_str()))
        .map(|(what, value)| {
            let line = output
                .lines()
                .find(|line| line.contains(value.as_str()))
                .unwrap_or_default();
            format!("{what} appears in:\n    {line}")
        })
        .collect();
    assert!(
        leaks.is_empty(),
        "secrets leaked into the output ({} bytes captured):\n{}",
        output.len(),
        leaks.join("\n")
    );
    output
}

#[tokio::test]
async fn no_secret_reaches_trace_level_text_logs() {
    assert_no_secret_is_logged(&[("RUST_LOG", "trace")], "secret-text@example.com").await;
}

#[tokio::test]
async fn no_secret_reaches_trace_level_json_logs() {
    let output = assert_no_secret_is_logged(
        &[
            ("RUST_LOG", "trace"),
            ("LICENSING_GATEWAY__LOG__FORMAT", "json"),
        ],
        "secret-json@example.com",
    )
    .await;
    assert!(
        output
            .lines()
            .any(|line| line.starts_with("{\"timestamp\"")),
        "JSON log lines expected"
    );
}

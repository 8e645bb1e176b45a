//! The admin listener, metrics, request ids and logs, seen from outside.

use cryptlex_sandbox::{FaultAction, FaultRule, seed};
use licensing_gateway::grpc::pb::issue_license_request::User;
use licensing_gateway::grpc::pb::{GetProfileRequest, IssueLicenseRequest, LoginRequest};
use tonic::{Code, Request};

use crate::helpers::{TestOptions, captured_logs, spawn_app, spawn_app_with};
use crate::support::client::{reason, with_token};

/// The value of the first sample of `name` whose labels include every one
/// of `labels` (`key="value"` strings).
fn sample(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.starts_with(&format!("{name}{{")) || line.starts_with(&format!("{name} "))
        })
        .find(|line| labels.iter().all(|label| line.contains(label)))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

#[tokio::test]
async fn a_callers_request_id_comes_back_reaches_cryptlex_and_marks_every_log_line_of_the_call() {
    // Arrange
    let logs = captured_logs();
    let app = spawn_app().await;
    let token = app.demo_token().await;
    let request_id = format!("it-{}", uuid::Uuid::new_v4());

    // Act
    let mut request = with_token(GetProfileRequest::default(), &token);
    request
        .metadata_mut()
        .insert("x-request-id", request_id.parse().expect("metadata"));
    let response = app
        .user_client()
        .await
        .get_profile(request)
        .await
        .expect("profile");

    // Assert: returned in the response metadata
    assert_eq!(
        response
            .metadata()
            .get("x-request-id")
            .and_then(|value| value.to_str().ok()),
        Some(request_id.as_str())
    );
    // forwarded to Cryptlex
    let forwarded: Vec<_> = app
        .cryptlex()
        .requests()
        .into_iter()
        .filter(|received| received.request_id.as_deref() == Some(request_id.as_str()))
        .collect();
    assert_eq!(forwarded.len(), 1, "one upstream call carries the id");
    assert_eq!(forwarded[0].path, "/v3/me");
    // and in the span of every log line of the call
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .iter()
        .filter(|line| line.contains(&request_id))
        .map(|line| serde_json::from_str(line).expect("every log line is JSON"))
        .collect();
    assert!(
        lines.len() >= 2,
        "the call logs at least its start and end: {lines:?}"
    );
    for line in &lines {
        let outer = &line["spans"][0];
        assert_eq!(outer["name"], "rpc", "{line}");
        assert_eq!(outer["request_id"], request_id.as_str(), "{line}");
        assert_eq!(outer["method"], "/licensing.v1.UserService/GetProfile");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_request_id_is_generated_when_the_caller_sends_none() {
    let app = spawn_app().await;
    let response = app
        .user_client()
        .await
        .login(LoginRequest {
            email: seed::DEMO_EMAIL.into(),
            password: seed::DEMO_PASSWORD.into(),
            ..Default::default()
        })
        .await
        .expect("login");
    let generated = response
        .metadata()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .expect("a generated request id")
        .to_owned();
    assert!(uuid::Uuid::parse_str(&generated).is_ok(), "{generated}");
    assert!(
        app.cryptlex()
            .requests()
            .iter()
            .any(|received| received.request_id.as_deref() == Some(generated.as_str()))
    );
    app.stop().await;
}

#[tokio::test]
async fn metrics_show_the_rpcs_just_made_and_the_upstream_calls_they_caused() {
    // Arrange
    let app = spawn_app().await;
    let (_, before) = app.admin_get("/metrics").await;
    let login_ok = [
        "listener=\"public\"",
        "service=\"licensing.v1.UserService\"",
        "method=\"Login\"",
        "code=\"OK\"",
    ];
    let unauthenticated = [
        "service=\"licensing.v1.UserService\"",
        "method=\"GetProfile\"",
        "code=\"UNAUTHENTICATED\"",
    ];
    let upstream_login = [
        "endpoint=\"POST /v3/accounts/login\"",
        "status=\"200\"",
        "outcome=\"success\"",
    ];
    let count = |text: &str, name: &str, labels: &[&str]| sample(text, name, labels).unwrap_or(0.0);

    // Act: a successful login and a call without a token
    let _ = app.demo_token().await;
    let _ = app
        .user_client()
        .await
        .get_profile(Request::new(GetProfileRequest::default()))
        .await
        .expect_err("no token");
    let (status, after) = app.admin_get("/metrics").await;

    // Assert (other tests share the process-wide recorder: compare deltas)
    assert_eq!(status, 200);
    let rpcs = "licensing_gateway_rpc_requests_total";
    assert!(count(&after, rpcs, &login_ok) >= count(&before, rpcs, &login_ok) + 1.0);
    assert!(count(&after, rpcs, &unauthenticated) >= count(&before, rpcs, &unauthenticated) + 1.0);
    let upstream = "licensing_gateway_upstream_requests_total";
    assert!(
        count(&after, upstream, &upstream_login) >= count(&before, upstream, &upstream_login) + 1.0
    );
    assert!(
        sample(
            &after,
            "licensing_gateway_rpc_duration_seconds_bucket",
            &["method=\"Login\"", "le=\"+Inf\""]
        )
        .is_some(),
        "latency histograms have buckets"
    );
    assert!(
        sample(
            &after,
            "licensing_gateway_upstream_duration_seconds_count",
            &["endpoint=\"POST /v3/accounts/login\""]
        )
        .is_some()
    );
    app.stop().await;
}

#[tokio::test]
async fn metrics_show_ledger_records_by_state_and_certificate_expiry() {
    let app = spawn_app().await;
    app.payment_client()
        .await
        .issue_license(IssueLicenseRequest {
            request_id: "metrics-1".into(),
            user: Some(User::UserEmail(seed::DEMO_EMAIL.into())),
            ..Default::default()
        })
        .await
        .expect("issued");
    let (_, metrics) = app.admin_get("/metrics").await;

    let issued = sample(
        &metrics,
        "licensing_gateway_ledger_records",
        &["state=\"issued\""],
    );
    assert!(issued.is_some_and(|count| count >= 1.0), "{metrics}");
    assert_eq!(
        sample(&metrics, "licensing_gateway_ledger_up", &[]),
        Some(1.0)
    );
    assert!(
        sample(
            &metrics,
            "licensing_gateway_rpc_requests_total",
            &[
                "listener=\"internal\"",
                "method=\"IssueLicense\"",
                "code=\"OK\""
            ]
        )
        .is_some()
    );
    let now = chrono::Utc::now().timestamp() as f64;
    for certificate in ["certificate=\"server\"", "certificate=\"client_ca\""] {
        let expiry = sample(
            &metrics,
            "licensing_gateway_tls_certificate_expiry_timestamp_seconds",
            &["listener=\"internal\"", certificate],
        )
        .unwrap_or_else(|| panic!("no expiry for {certificate}: {metrics}"));
        assert!(expiry > now, "{certificate} expires in the future");
    }
    app.stop().await;
}

#[tokio::test]
async fn health_and_readiness_answer_on_the_admin_listener() {
    let app = spawn_app().await;
    assert_eq!(app.admin_get("/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(app.admin_get("/readyz").await, (200, "ready\n".to_owned()));
    assert_eq!(app.admin_get("/nothing").await.0, 404);
    app.stop().await;
}

#[tokio::test]
async fn no_secret_reaches_metrics_or_logs() {
    // Arrange
    let logs = captured_logs();
    let app = spawn_app().await;
    let request_id = format!("secrets-{}", uuid::Uuid::new_v4());

    // Act: a login (password), a profile call (token), an issuance (PAT)
    let mut login = Request::new(LoginRequest {
        email: seed::DEMO_EMAIL.into(),
        password: seed::DEMO_PASSWORD.into(),
        ..Default::default()
    });
    login
        .metadata_mut()
        .insert("x-request-id", request_id.parse().expect("metadata"));
    let session = app
        .user_client()
        .await
        .login(login)
        .await
        .expect("login")
        .into_inner()
        .session
        .expect("session");
    let _ = app
        .user_client()
        .await
        .get_profile(with_token(
            GetProfileRequest::default(),
            &session.access_token,
        ))
        .await
        .expect("profile");
    app.payment_client()
        .await
        .issue_license(IssueLicenseRequest {
            request_id: "secrets-1".into(),
            user: Some(User::UserEmail(seed::DEMO_EMAIL.into())),
            ..Default::default()
        })
        .await
        .expect("issued");
    let (_, metrics) = app.admin_get("/metrics").await;

    // Assert
    let pat = std::fs::read_to_string(app.sandbox_dir().join("cryptlex-pat")).expect("pat");
    let secrets = [
        seed::DEMO_PASSWORD,
        session.access_token.as_str(),
        session.refresh_token.as_str(),
        pat.trim(),
    ];
    let log_text = logs.lines().join("\n");
    assert!(log_text.contains(&request_id), "the login was logged");
    for secret in secrets.into_iter().filter(|secret| !secret.is_empty()) {
        assert!(!metrics.contains(secret), "a secret in /metrics");
        assert!(!log_text.contains(secret), "a secret in the logs");
    }
    assert!(
        !metrics.contains(seed::DEMO_EMAIL),
        "an email in a metric label"
    );
    app.stop().await;
}

#[tokio::test]
async fn log_levels_match_who_is_at_fault_callers_mistakes_shed_reads_and_upstream_failures() {
    // Arrange: one gateway as deployed, and one whose reads may use 2 calls per 5 s
    // (17 minus the reserves of 10 and 5) with no cache.
    let logs = captured_logs();
    let app = spawn_app().await;
    let tight = spawn_app_with(TestOptions {
        env: vec![
            (
                "LICENSING_GATEWAY__CRYPTLEX__BUDGET__MAX_REQUESTS".into(),
                "17".into(),
            ),
            ("LICENSING_GATEWAY__CACHE__TTL".into(), "0s".into()),
        ],
        ..TestOptions::default()
    })
    .await;
    fn with_id<T>(mut request: Request<T>, id: &str) -> Request<T> {
        request
            .metadata_mut()
            .insert("x-request-id", id.parse().expect("metadata"));
        request
    }
    let run = uuid::Uuid::new_v4().simple().to_string();
    let id = |name: &str| format!("{name}-{run}");

    // Act: a wrong password (the caller's mistake) ...
    let mut client = app.user_client().await;
    let wrong = client
        .login(with_id(
            Request::new(LoginRequest {
                email: seed::DEMO_EMAIL.into(),
                password: "not-the-password".into(),
                ..Default::default()
            }),
            &id("wrong-password"),
        ))
        .await
        .expect_err("a wrong password is refused");
    // ... Cryptlex failing (every attempt, retries included) ...
    let token = app.demo_token().await;
    let fault = app
        .cryptlex()
        .add_fault(
            FaultRule::always(FaultAction::json(
                503,
                &serde_json::json!({"message": "Service Unavailable"}),
            ))
            .method(http::Method::GET)
            .path_prefix("/v3/me"),
        )
        .expect("fault");
    let failed = client
        .get_profile(with_id(
            with_token(GetProfileRequest::default(), &token),
            &id("upstream-503"),
        ))
        .await
        .expect_err("the 503 reaches the caller as UNAVAILABLE");
    app.cryptlex().remove_fault(fault);
    // ... and reads beyond the budget, which the gateway sheds itself.
    let token = tight.demo_token().await;
    let mut client = tight.user_client().await;
    let mut shed = None;
    for attempt in 0..5 {
        let request_id = id(&format!("read-{attempt}"));
        let result = client
            .get_profile(with_id(
                with_token(GetProfileRequest::default(), &token),
                &request_id,
            ))
            .await;
        if let Err(status) = result {
            shed = Some((request_id, status));
            break;
        }
    }
    let (shed_id, shed_status) = shed.expect("a read beyond the budget is shed");

    // Assert
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert_eq!(failed.code(), Code::Unavailable);
    assert_eq!(reason(&shed_status), "UPSTREAM_BUDGET_EXHAUSTED");
    let by_level = |request_id: &str, level: &str| -> Vec<String> {
        logs.lines()
            .iter()
            .filter(|line| line.contains(request_id))
            .filter_map(|line| {
                let json: serde_json::Value = serde_json::from_str(line).expect("JSON line");
                (json["level"] == level).then(|| json["message"].as_str().unwrap_or("").to_owned())
            })
            .collect()
    };

    let wrong_id = id("wrong-password");
    assert!(
        by_level(&wrong_id, "INFO").contains(&"login refused: invalid credentials".to_owned()),
        "{:?}",
        logs.lines()
    );
    assert_eq!(
        (by_level(&wrong_id, "WARN"), by_level(&wrong_id, "ERROR")),
        (vec![], vec![]),
        "a wrong password is not a gateway failure"
    );
    assert!(
        by_level(&id("upstream-503"), "ERROR").contains(&"cryptlex unavailable".to_owned()),
        "an upstream failure is an error"
    );
    assert!(
        by_level(&shed_id, "WARN").contains(&"read shed before reaching cryptlex".to_owned()),
        "a shed read is a warning"
    );
    assert_eq!(
        by_level(&shed_id, "ERROR"),
        Vec::<String>::new(),
        "shedding is the gateway working as designed, not an error"
    );
    tight.stop().await;
    app.stop().await;
}

#[test]
fn no_event_is_lost_after_a_log_crate_level_check() {
    // sqlx's query logger asks `log_enabled!` after every query; with a
    // per-layer filter that left stale state behind and the next event was
    // dropped (every line after the ledger's first queries, on PostgreSQL).
    let logs = captured_logs();
    let marker = uuid::Uuid::new_v4().simple().to_string();
    for i in 0..3 {
        let _ = log::log_enabled!(target: "sqlx::query", log::Level::Debug);
        tracing::info!(target: "licensing_gateway::probe", "probe {marker} {i}");
    }
    let seen = logs
        .lines()
        .iter()
        .filter(|line| line.contains(&marker))
        .count();
    assert_eq!(seen, 3, "every probe line was logged");
}

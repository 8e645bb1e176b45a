//! Upstream stewardship and resilience: the fault matrix, the rate budget,
//! coalescing and caching, retries, the circuit breaker, brute-force
//! protection and graceful shutdown.

use std::time::{Duration, Instant};

use cryptlex_sandbox::{FaultAction, FaultRule, RateLimit, seed};
use licensing_gateway::grpc::pb::issue_license_request::User;
use licensing_gateway::grpc::pb::{
    GetProfileRequest, IssueLicenseRequest, ListMyLicensesRequest, LoginRequest,
};
use reqwest::Method;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;

use crate::helpers::{TestApp, TestOptions, spawn_app_with};
use crate::support::client::{reason, with_token};

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect()
}

/// A gateway whose cache and breaker stay out of the way of the matrix.
async fn matrix_app() -> TestApp {
    spawn_app_with(TestOptions {
        env: env(&[
            ("LICENSING_GATEWAY__CACHE__TTL", "0s"),
            (
                "LICENSING_GATEWAY__CRYPTLEX__BREAKER__FAILURE_THRESHOLD",
                "1000",
            ),
        ]),
        ..TestOptions::default()
    })
    .await
}

async fn assert_healthy(app: &TestApp, token: &str) {
    let mut health = HealthClient::new(app.public_channel().await);
    let status = health
        .check(HealthCheckRequest::default())
        .await
        .expect("health answers")
        .into_inner()
        .status();
    assert_eq!(status, ServingStatus::Serving);
    app.user_client()
        .await
        .get_profile(with_token(GetProfileRequest {}, token))
        .await
        .expect("a normal call works after the fault");
}

struct Case {
    name: &'static str,
    action: FaultAction,
    timeout: Duration,
    expected: Code,
    reasons: &'static [&'static str],
    retry_info: bool,
}

fn case(
    name: &'static str,
    action: FaultAction,
    expected: Code,
    reasons: &'static [&'static str],
) -> Case {
    Case {
        name,
        action,
        timeout: Duration::from_secs(5),
        expected,
        reasons,
        retry_info: expected == Code::Unavailable,
    }
}

const UNAVAILABLE: &[&str] = &["UPSTREAM_UNAVAILABLE"];
const BAD_RESPONSE: &[&str] = &["UPSTREAM_BAD_RESPONSE", "UPSTREAM_UNAVAILABLE"];

fn fault_matrix() -> Vec<Case> {
    let http_date = (chrono::Utc::now() + chrono::Duration::seconds(2))
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    let mut cases = Vec::new();
    for status in [500u16, 502, 503, 504] {
        cases.push(case(
            "5xx with a JSON body",
            FaultAction::json(status, &serde_json::json!({"message": "Internal error"})),
            Code::Unavailable,
            UNAVAILABLE,
        ));
        cases.push(case(
            "5xx with an HTML body",
            FaultAction::body(status, "text/html", "<html><body>Bad gateway</body></html>"),
            Code::Unavailable,
            UNAVAILABLE,
        ));
        cases.push(case(
            "5xx with an empty body",
            FaultAction::empty(status),
            Code::Unavailable,
            UNAVAILABLE,
        ));
    }
    let limited =
        serde_json::json!({"message": "API calls quota exceeded! maximum admitted 50 per 5s."});
    cases.push(case(
        "429 with Retry-After in seconds",
        FaultAction::json(429, &limited).with_header("Retry-After", "2"),
        Code::Unavailable,
        &["UPSTREAM_RATE_LIMITED", "UPSTREAM_BUDGET_EXHAUSTED"],
    ));
    cases.push(case(
        "429 with Retry-After as a date",
        FaultAction::json(429, &limited).with_header("Retry-After", &http_date),
        Code::Unavailable,
        &["UPSTREAM_RATE_LIMITED", "UPSTREAM_BUDGET_EXHAUSTED"],
    ));
    cases.push(case(
        "429 without Retry-After",
        FaultAction::json(429, &limited),
        Code::Unavailable,
        &["UPSTREAM_RATE_LIMITED", "UPSTREAM_BUDGET_EXHAUSTED"],
    ));
    cases.push(case(
        "connection reset before the request is answered",
        FaultAction::ResetBeforeResponse,
        Code::Unavailable,
        UNAVAILABLE,
    ));
    cases.push(case(
        "connection reset after the request was processed",
        FaultAction::ResetAfterProcessing,
        Code::Unavailable,
        UNAVAILABLE,
    ));
    cases.push(case(
        "truncated body",
        FaultAction::TruncateBody,
        Code::Unavailable,
        BAD_RESPONSE,
    ));
    cases.push(case(
        "malformed JSON",
        FaultAction::body(200, "application/json", "{\"id\": \"x\", "),
        Code::Unavailable,
        BAD_RESPONSE,
    ));
    cases.push(case(
        "oversized JSON",
        FaultAction::body(
            200,
            "application/json",
            format!("{{\"id\": \"{}\"}}", "x".repeat(3 * 1024 * 1024)),
        ),
        Code::Unavailable,
        BAD_RESPONSE,
    ));
    cases.push(case(
        "non-UTF-8 JSON",
        FaultAction::body(200, "application/json", vec![b'{', 0xff, 0xfe, b'}']),
        Code::Unavailable,
        BAD_RESPONSE,
    ));
    cases.push(case(
        "200 carrying an error body",
        FaultAction::json(200, &serde_json::json!({"message": "Invalid access token or required permissions are missing!"})),
        Code::Unavailable,
        BAD_RESPONSE,
    ));
    cases.push(case(
        "redirect to another host",
        FaultAction::empty(302).with_header("Location", "http://evil.example/v3/me"),
        Code::Unavailable,
        BAD_RESPONSE,
    ));
    cases.push(Case {
        name: "slow beyond the deadline",
        action: FaultAction::Delay(Duration::from_secs(3)),
        timeout: Duration::from_millis(500),
        expected: Code::DeadlineExceeded,
        reasons: &["DEADLINE_EXCEEDED"],
        retry_info: false,
    });
    cases
}

#[tokio::test]
async fn every_upstream_fault_gets_its_exact_code_and_the_service_recovers() {
    for case in fault_matrix() {
        let app = matrix_app().await;
        let token = app.demo_token().await;
        app.cryptlex()
            .add_fault(FaultRule::always(case.action.clone()).path_prefix("/v3/me"))
            .expect("fault rule");
        let mut request = with_token(GetProfileRequest {}, &token);
        request.set_timeout(case.timeout);
        let started = Instant::now();
        let result = app.user_client().await.get_profile(request).await;
        let status = result.expect_err(case.name);
        assert_eq!(status.code(), case.expected, "{}: {status:?}", case.name);
        assert!(
            case.reasons.contains(&reason(&status).as_str()),
            "{}: reason {} not in {:?}",
            case.name,
            reason(&status),
            case.reasons
        );
        assert_eq!(
            status.get_details_retry_info().is_some(),
            case.retry_info,
            "{}: RetryInfo",
            case.name
        );
        assert!(
            !status.message().contains("html"),
            "{}: no upstream body leaks",
            case.name
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{}: answered in time",
            case.name
        );
        app.cryptlex().clear_faults();
        if case.name.starts_with("429") {
            // The gateway pauses after a 429, as Cryptlex asked.
            tokio::time::sleep(Duration::from_millis(2100)).await;
        }
        assert_healthy(&app, &token).await;
    }
}

#[tokio::test]
async fn a_response_just_under_the_deadline_succeeds() {
    let app = matrix_app().await;
    let token = app.demo_token().await;
    app.cryptlex()
        .add_fault(
            FaultRule::once(FaultAction::Delay(Duration::from_millis(300))).path_prefix("/v3/me"),
        )
        .expect("fault");
    let mut request = with_token(GetProfileRequest {}, &token);
    request.set_timeout(Duration::from_millis(1500));
    app.user_client()
        .await
        .get_profile(request)
        .await
        .expect("answered before the deadline");
}

#[tokio::test]
async fn reads_are_retried_after_a_transient_fault_but_license_creation_never_is() {
    let app = matrix_app().await;
    let token = app.demo_token().await;
    let cryptlex = app.cryptlex();
    cryptlex
        .add_fault(FaultRule::once(FaultAction::empty(503)).path_prefix("/v3/me"))
        .expect("fault");
    cryptlex.clear_requests();
    app.user_client()
        .await
        .get_profile(with_token(GetProfileRequest {}, &token))
        .await
        .expect("succeeds on retry");
    assert_eq!(cryptlex.requests().len(), 2, "one failure, one retry");

    cryptlex
        .add_fault(
            FaultRule::once(FaultAction::empty(503))
                .method(Method::POST)
                .path_prefix("/v3/licenses"),
        )
        .expect("fault");
    cryptlex.clear_requests();
    let result = app
        .payment_client()
        .await
        .issue_license(IssueLicenseRequest {
            request_id: "retry-check".into(),
            user: Some(User::UserEmail(seed::DEMO_EMAIL.into())),
            ..Default::default()
        })
        .await;
    assert_eq!(result.expect_err("not retried").code(), Code::Unavailable);
    let posts = cryptlex
        .requests()
        .into_iter()
        .filter(|request| request.method == "POST" && request.path == "/v3/licenses")
        .count();
    assert_eq!(posts, 1, "a license creation is never repeated blindly");
}

/// A gateway without a read cache whose breaker opens after
/// `failure_threshold` faults and cools down for 1 s.
async fn breaker_app(failure_threshold: &str) -> TestApp {
    spawn_app_with(TestOptions {
        env: env(&[
            ("LICENSING_GATEWAY__CACHE__TTL", "0s"),
            (
                "LICENSING_GATEWAY__CRYPTLEX__BREAKER__FAILURE_THRESHOLD",
                failure_threshold,
            ),
            ("LICENSING_GATEWAY__CRYPTLEX__BREAKER__COOLDOWN", "1s"),
        ]),
        ..TestOptions::default()
    })
    .await
}

#[tokio::test]
async fn the_circuit_breaker_fails_fast_and_recovers_on_its_own() {
    let app = breaker_app("3").await;
    let token = app.demo_token().await;
    let cryptlex = app.cryptlex();
    cryptlex
        .add_fault(FaultRule::always(FaultAction::empty(503)).path_prefix("/v3/me"))
        .expect("fault");
    let mut client = app.user_client().await;
    for _ in 0..3 {
        let _ = client
            .get_profile(with_token(GetProfileRequest {}, &token))
            .await;
    }
    cryptlex.clear_requests();
    let started = Instant::now();
    let status = client
        .get_profile(with_token(GetProfileRequest {}, &token))
        .await
        .expect_err("open");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(reason(&status), "UPSTREAM_CIRCUIT_OPEN");
    assert!(status.get_details_retry_info().is_some());
    assert!(started.elapsed() < Duration::from_millis(200), "fails fast");
    assert!(cryptlex.requests().is_empty(), "nothing sent while open");

    cryptlex.clear_faults();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    client
        .get_profile(with_token(GetProfileRequest {}, &token))
        .await
        .expect("the probe succeeds and closes the breaker");
    client
        .get_profile(with_token(GetProfileRequest {}, &token))
        .await
        .expect("closed again");
}

#[tokio::test]
async fn a_probe_whose_client_goes_away_does_not_keep_the_breaker_open() {
    let app = breaker_app("1").await;
    let token = app.demo_token().await;
    let cryptlex = app.cryptlex();
    let mut client = app.user_client().await;
    // One fault (a 500 is not retried) opens the breaker.
    cryptlex
        .add_fault(FaultRule::once(FaultAction::empty(500)).path_prefix("/v3/me"))
        .expect("fault");
    let _ = client
        .get_profile(with_token(GetProfileRequest {}, &token))
        .await
        .expect_err("the fault");
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // The probe hangs upstream and its client gives up: the call is dropped
    // without an outcome.
    cryptlex
        .add_fault(
            FaultRule::once(FaultAction::Delay(Duration::from_secs(3))).path_prefix("/v3/me"),
        )
        .expect("fault");
    cryptlex.clear_requests();
    let probe = tokio::time::timeout(
        Duration::from_millis(300),
        client.get_profile(with_token(GetProfileRequest {}, &token)),
    )
    .await;
    assert!(probe.is_err(), "the client went away before the answer");
    assert_eq!(cryptlex.requests().len(), 1, "the probe was sent");

    tokio::time::sleep(Duration::from_millis(1100)).await;
    client
        .get_profile(with_token(GetProfileRequest {}, &token))
        .await
        .expect("the next call after the cooldown probes and succeeds");
    client
        .get_profile(with_token(GetProfileRequest {}, &token))
        .await
        .expect("closed again");
}

#[tokio::test]
async fn identical_concurrent_reads_cause_one_upstream_call() {
    let app = spawn_app_with(TestOptions {
        env: env(&[("LICENSING_GATEWAY__CACHE__TTL", "0s")]),
        ..TestOptions::default()
    })
    .await;
    let token = app.demo_token().await;
    let cryptlex = app.cryptlex();
    cryptlex
        .add_fault(
            FaultRule::once(FaultAction::Delay(Duration::from_millis(300))).path_prefix("/v3/me"),
        )
        .expect("fault");
    cryptlex.clear_requests();
    let client = app.user_client().await;
    let mut calls = Vec::new();
    for _ in 0..20 {
        let mut client = client.clone();
        let token = token.clone();
        calls.push(tokio::spawn(async move {
            client
                .get_profile(with_token(GetProfileRequest {}, &token))
                .await
                .map(|response| response.into_inner().profile.expect("profile").id)
        }));
    }
    for call in calls {
        assert_eq!(
            call.await.expect("task").expect("profile"),
            seed::DEMO_USER_ID
        );
    }
    assert_eq!(
        cryptlex.requests().len(),
        1,
        "twenty reads, one upstream call"
    );
}

#[tokio::test]
async fn repeated_reads_are_cached_briefly_and_issuance_invalidates_license_pages() {
    let app = spawn_app_with(TestOptions::default()).await;
    let token = app.demo_token().await;
    let cryptlex = app.cryptlex();
    let mut client = app.user_client().await;
    cryptlex.clear_requests();
    for _ in 0..3 {
        client
            .list_my_licenses(with_token(ListMyLicensesRequest::default(), &token))
            .await
            .expect("page");
    }
    assert_eq!(cryptlex.requests().len(), 1, "served from the cache");

    let issued = app
        .payment_client()
        .await
        .issue_license(IssueLicenseRequest {
            request_id: "cache-invalidation".into(),
            user: Some(User::UserEmail(seed::DEMO_EMAIL.into())),
            ..Default::default()
        })
        .await
        .expect("issued")
        .into_inner()
        .license
        .expect("license");
    let page = client
        .list_my_licenses(with_token(ListMyLicensesRequest::default(), &token))
        .await
        .expect("page")
        .into_inner();
    assert!(
        page.licenses.iter().any(|license| license.id == issued.id),
        "the new license shows at once"
    );
}

#[tokio::test]
async fn the_last_known_license_page_is_served_stale_only_when_enabled() {
    let app = spawn_app_with(TestOptions {
        env: env(&[
            ("LICENSING_GATEWAY__CACHE__TTL", "0s"),
            ("LICENSING_GATEWAY__CACHE__SERVE_STALE", "true"),
        ]),
        ..TestOptions::default()
    })
    .await;
    let token = app.demo_token().await;
    let mut client = app.user_client().await;
    let fresh = client
        .list_my_licenses(with_token(ListMyLicensesRequest::default(), &token))
        .await
        .expect("page")
        .into_inner();
    assert!(!fresh.stale);
    app.cryptlex()
        .add_fault(FaultRule::always(FaultAction::empty(503)).path_prefix("/v3/me"))
        .expect("fault");
    let stale = client
        .list_my_licenses(with_token(ListMyLicensesRequest::default(), &token))
        .await
        .expect("stale page")
        .into_inner();
    assert!(stale.stale);
    assert_eq!(stale.licenses, fresh.licenses);
}

#[tokio::test]
async fn under_load_above_the_budget_cryptlex_never_sends_a_429_and_paid_orders_go_through() {
    let app = spawn_app_with(
        TestOptions {
            rate_limit: Some(RateLimit::cryptlex_default()),
            ..TestOptions::default()
        }
        .many_users_on_one_address(),
    )
    .await;
    let cryptlex = app.cryptlex();
    // Twenty distinct sessions (distinct tokens, so the cache cannot help).
    let mut tokens = Vec::new();
    for _ in 0..20 {
        tokens.push(app.demo_token().await);
    }
    let client = app.user_client().await;
    let payment = app.payment_client().await;
    let upstream_before = cryptlex.stats().requests;

    let load_started = Instant::now();
    let mut reads = Vec::new();
    // Offered load: 20 sessions x 12 reads over about 6 s, far above 50 per 5 s.
    for round in 0..12 {
        for (index, token) in tokens.iter().enumerate() {
            let mut client = client.clone();
            let token = token.clone();
            let page_size = 1 + ((round + index) % 3) as i32;
            reads.push(tokio::spawn(async move {
                let started = Instant::now();
                let result = client
                    .list_my_licenses(with_token(
                        ListMyLicensesRequest {
                            page_size,
                            ..Default::default()
                        },
                        &token,
                    ))
                    .await;
                (result.map(|_| ()), started.elapsed())
            }));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut orders = Vec::new();
    for order in 0..5 {
        let mut payment = payment.clone();
        orders.push(tokio::spawn(async move {
            payment
                .issue_license(IssueLicenseRequest {
                    request_id: format!("load-order-{order}"),
                    user: Some(User::UserEmail(seed::DEMO_EMAIL.into())),
                    ..Default::default()
                })
                .await
        }));
    }

    let (mut served, mut shed) = (0, 0);
    for read in reads {
        let (result, elapsed) = read.await.expect("task");
        match result {
            Ok(()) => served += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(
                    status.get_details_retry_info().is_some(),
                    "RetryInfo says when to come back"
                );
                assert!(
                    elapsed < Duration::from_millis(1500),
                    "shed quickly: {elapsed:?}"
                );
                shed += 1;
            }
        }
    }
    for order in orders {
        order
            .await
            .expect("task")
            .expect("every paid order is issued during the load");
    }
    let stats = cryptlex.stats();
    let upstream_calls = stats.requests - upstream_before;
    println!(
        "budget test: offered {} reads + 5 orders in {:?}; served {served}, shed {shed}; upstream calls {upstream_calls}; 429s {}",
        served + shed,
        load_started.elapsed(),
        stats.responses_429
    );
    assert_eq!(stats.responses_429, 0, "the gateway never caused a 429");
    assert!(shed > 0, "the offered load really exceeded the budget");
}

#[tokio::test]
async fn login_brute_force_is_throttled_and_then_recovers() {
    let app = spawn_app_with(TestOptions {
        env: env(&[
            ("LICENSING_GATEWAY__LIMITS__LOGIN_FAILURES_PER_EMAIL", "3"),
            ("LICENSING_GATEWAY__LIMITS__LOGIN_EMAIL_WINDOW", "1s"),
            (
                "LICENSING_GATEWAY__LIMITS__LOGIN_ATTEMPTS_PER_ADDRESS",
                "1000",
            ),
        ]),
        ..TestOptions::default()
    })
    .await;
    let mut client = app.user_client().await;
    let login = |email: &str, password: &str| LoginRequest {
        email: email.into(),
        password: password.into(),
        ..Default::default()
    };
    for email in [seed::DEMO_EMAIL, "nobody@example.com"] {
        for _ in 0..3 {
            let status = client
                .login(login(email, "wrong-password"))
                .await
                .expect_err("wrong password");
            assert_eq!(status.code(), Code::Unauthenticated);
        }
    }
    app.cryptlex().clear_requests();
    let mut throttled = Vec::new();
    for email in [seed::DEMO_EMAIL, "nobody@example.com"] {
        let status = client
            .login(login(email, seed::DEMO_PASSWORD))
            .await
            .expect_err("throttled");
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(reason(&status), "TOO_MANY_ATTEMPTS");
        assert!(status.get_details_retry_info().is_some());
        throttled.push(status.message().to_owned());
    }
    assert_eq!(
        throttled[0], throttled[1],
        "same answer whether or not the account exists"
    );
    assert!(
        app.cryptlex().requests().is_empty(),
        "throttled before any upstream call"
    );

    tokio::time::sleep(Duration::from_millis(1100)).await;
    client
        .login(login(seed::DEMO_EMAIL, seed::DEMO_PASSWORD))
        .await
        .expect("recovered");
}

#[tokio::test]
async fn many_attempts_from_one_address_are_throttled() {
    let app = spawn_app_with(TestOptions {
        env: env(&[
            ("LICENSING_GATEWAY__LIMITS__LOGIN_ATTEMPTS_PER_ADDRESS", "4"),
            ("LICENSING_GATEWAY__LIMITS__LOGIN_ADDRESS_WINDOW", "10s"),
        ]),
        ..TestOptions::default()
    })
    .await;
    let mut client = app.user_client().await;
    for index in 0..4 {
        let _ = client
            .login(LoginRequest {
                email: format!("user{index}@example.com"),
                password: "some-password".into(),
                ..Default::default()
            })
            .await;
    }
    let status = client
        .login(LoginRequest {
            email: seed::DEMO_EMAIL.into(),
            password: seed::DEMO_PASSWORD.into(),
            ..Default::default()
        })
        .await
        .expect_err("address throttled");
    assert_eq!(status.code(), Code::ResourceExhausted);
}

#[tokio::test]
async fn shutdown_lets_a_call_in_progress_finish_within_the_drain_time() {
    let app = spawn_app_with(TestOptions::default()).await;
    let token = app.demo_token().await;
    app.cryptlex()
        .add_fault(
            FaultRule::once(FaultAction::Delay(Duration::from_millis(800))).path_prefix("/v3/me"),
        )
        .expect("fault");
    let mut client = app.user_client().await;
    let in_flight = tokio::spawn(async move {
        client
            .get_profile(with_token(GetProfileRequest {}, &token))
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopping = Instant::now();
    app.stop().await;
    let response = in_flight.await.expect("task");
    response.expect("the call in progress completed during the drain");
    assert!(
        stopping.elapsed() >= Duration::from_millis(400),
        "waited for it"
    );
}

#[tokio::test]
async fn the_drain_is_bounded() {
    let app = spawn_app_with(TestOptions {
        env: env(&[("LICENSING_GATEWAY__LIMITS__DRAIN_TIMEOUT", "500ms")]),
        ..TestOptions::default()
    })
    .await;
    let token = app.demo_token().await;
    app.cryptlex()
        .add_fault(
            FaultRule::once(FaultAction::Delay(Duration::from_secs(5))).path_prefix("/v3/me"),
        )
        .expect("fault");
    let mut client = app.user_client().await;
    let _in_flight = tokio::spawn(async move {
        client
            .get_profile(with_token(GetProfileRequest {}, &token))
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopping = Instant::now();
    app.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(2),
        "{:?}",
        stopping.elapsed()
    );
}

//! Admission under a read flood, against the sandbox enforcing Cryptlex's
//! 50 calls per 5 s: reads the budget cannot start are refused at once with
//! `RetryInfo`, paid orders keep their reserve, and Cryptlex never answers
//! 429.
//!
//! Fair shares between sessions (a flood of made-up sessions cannot take the
//! reads of known users) depend on the read cache marking each user read with
//! its `ReadShare`; the budget's side is tested in `cryptlex::budget`.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cryptlex_sandbox::{RateLimit, seed};
use licensing_gateway::grpc::pb::issue_license_request::User;
use licensing_gateway::grpc::pb::{GetProfileRequest, IssueLicenseRequest};
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{TestOptions, spawn_app_with};
use crate::support::client::{reason, with_token};

/// A well-shaped, unexpired JWT signed by nobody, different on every call:
/// it can only be told from a real token by asking Cryptlex.
fn forged_token() -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = serde_json::json!({
        "sub": uuid::Uuid::new_v4().to_string(),
        "exp": chrono::Utc::now().timestamp() + 3600,
    });
    let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signature = URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes());
    format!("{header}.{claims}.{signature}")
}

#[tokio::test]
async fn a_read_flood_is_refused_at_once_with_retry_info_and_paid_orders_go_through() {
    // Arrange
    let app = spawn_app_with(
        TestOptions {
            rate_limit: Some(RateLimit::cryptlex_default()),
            ..TestOptions::default()
        }
        .many_users_on_one_address(),
    )
    .await;
    let client = app.user_client().await;
    let payment = app.payment_client().await;
    let upstream_before = app.cryptlex().stats().requests;

    // Act: 150 distinct sessions read at once, three times the whole budget.
    let flood = (0..150).map(|_| {
        let mut client = client.clone();
        let token = forged_token();
        tokio::spawn(async move {
            let started = Instant::now();
            let answer = client
                .get_profile(with_token(GetProfileRequest {}, &token))
                .await;
            (answer.map(|_| ()), started.elapsed())
        })
    });
    let flood: Vec<_> = flood.collect();
    let mut order = payment.clone();
    let issued = order
        .issue_license(IssueLicenseRequest {
            request_id: "admission-order-1".into(),
            user: Some(User::UserEmail(seed::DEMO_EMAIL.into())),
            ..Default::default()
        })
        .await;

    // Assert
    let (mut asked_cryptlex, mut refused) = (0, Vec::new());
    for call in flood {
        let (answer, elapsed) = call.await.expect("task");
        let status = answer.expect_err("no forged token is a session");
        match status.code() {
            // Cryptlex said no: it cost a call.
            Code::Unauthenticated => asked_cryptlex += 1,
            Code::Unavailable => {
                assert_eq!(reason(&status), "UPSTREAM_BUDGET_EXHAUSTED", "{status:?}");
                let retry = status
                    .get_details_retry_info()
                    .and_then(|info| info.retry_delay)
                    .expect("RetryInfo says when to come back");
                assert!(retry > Duration::ZERO && retry <= Duration::from_secs(6));
                refused.push(elapsed);
            }
            other => panic!("unexpected {other:?}: {status:?}"),
        }
    }
    issued.expect("the paid order is issued from the issuance reserve");
    assert!(
        asked_cryptlex <= 35,
        "reads stay within their share of the window: {asked_cryptlex}"
    );
    assert!(refused.len() >= 100, "{} refused", refused.len());

    // Once the window is spent, a read is refused without waiting for a slot
    // it would not get: in far less than the 500 ms a read may wait.
    let mut client = client.clone();
    for _ in 0..20 {
        let started = Instant::now();
        let status = client
            .get_profile(with_token(GetProfileRequest {}, &forged_token()))
            .await
            .expect_err("refused");
        let elapsed = started.elapsed();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(
            elapsed < Duration::from_millis(100),
            "refused at once: {elapsed:?}"
        );
    }
    let stats = app.cryptlex().stats();
    assert_eq!(stats.responses_429, 0, "the gateway never caused a 429");
    assert!(stats.requests - upstream_before <= 50);
}

#[tokio::test]
async fn a_flood_of_made_up_sessions_gets_only_their_share_and_a_signed_in_user_is_still_served() {
    // Arrange: Cryptlex's real limit; a user signed in through the gateway
    // (so its token is vouched for) has nothing cached yet.
    let app = spawn_app_with(
        TestOptions {
            rate_limit: Some(RateLimit::cryptlex_default()),
            ..TestOptions::default()
        }
        .many_users_on_one_address(),
    )
    .await;
    let client = app.user_client().await;
    let user = app.demo_token().await;
    let upstream_before = app.cryptlex().stats().requests;

    // Act: 100 made-up sessions read at once, twice what the reads may spend
    // in a window, then the signed-in user opens a page.
    let flood: Vec<_> = (0..100)
        .map(|_| {
            let mut client = client.clone();
            let token = forged_token();
            tokio::spawn(async move {
                client
                    .get_profile(with_token(GetProfileRequest {}, &token))
                    .await
                    .map(|_| ())
            })
        })
        .collect();
    let mut asked_cryptlex = 0;
    for call in flood {
        let status = call
            .await
            .expect("task")
            .expect_err("no made-up token works");
        match status.code() {
            Code::Unauthenticated => asked_cryptlex += 1,
            Code::Unavailable => {
                assert_eq!(reason(&status), "UPSTREAM_BUDGET_EXHAUSTED", "{status:?}");
            }
            other => panic!("unexpected {other:?}: {status:?}"),
        }
    }
    let mut reader = client.clone();
    let profile = reader
        .get_profile(with_token(GetProfileRequest {}, &user))
        .await;
    let licenses = reader
        .list_my_licenses(with_token(
            licensing_gateway::grpc::pb::ListMyLicensesRequest::default(),
            &user,
        ))
        .await;

    // Assert: the made-up sessions together spent only the unvouched share
    // (`cryptlex.budget.unvouched_reads`, 10), so the user's first page view
    // found budget left.
    assert!(
        asked_cryptlex <= 10,
        "made-up sessions reached Cryptlex {asked_cryptlex} times"
    );
    profile.expect("the signed-in user's profile");
    licenses.expect("the signed-in user's licenses");
    let stats = app.cryptlex().stats();
    assert_eq!(stats.responses_429, 0);
    assert!(stats.requests - upstream_before <= 50);
}

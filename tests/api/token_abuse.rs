//! Hostile traffic with tokens: junk must be refused without spending the
//! upstream budget that every user shares, and a flood of it must leave real
//! users able to sign in and read their profile.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cryptlex_sandbox::seed;
use licensing_gateway::grpc::pb::user_service_client::UserServiceClient;
use licensing_gateway::grpc::pb::{
    GetProfileRequest, ListMyLicensesRequest, LogoutRequest, RefreshSessionRequest,
};
use tonic::Code;
use tonic::transport::Channel;

use crate::helpers::{TestApp, TestOptions, spawn_app, spawn_app_with};
use crate::support::client::{assert_status, reason, with_token};

/// A JWT with an HS256 header, `claims`, and a random signature: the shape
/// Cryptlex issues, signed by nobody.
fn forged_jwt(claims: &serde_json::Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signature = URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes());
    format!("{header}.{claims}.{signature}")
}

/// A forged JWT that expires an hour from now, different on every call.
fn forged_live_jwt() -> String {
    forged_jwt(&serde_json::json!({
        "sub": uuid::Uuid::new_v4().to_string(),
        "exp": chrono::Utc::now().timestamp() + 3600,
    }))
}

/// 64 random hex digits: what the sandbox's refresh tokens look like.
fn random_hex() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Asserts that both reads with `token` are refused as an invalid token.
async fn assert_reads_refused(client: &mut UserServiceClient<Channel>, token: &str) {
    let profile = client
        .get_profile(with_token(GetProfileRequest {}, token))
        .await;
    assert_status(profile, Code::Unauthenticated, "TOKEN_INVALID");
    let licenses = client
        .list_my_licenses(with_token(ListMyLicensesRequest::default(), token))
        .await;
    assert_status(licenses, Code::Unauthenticated, "TOKEN_INVALID");
}

/// The recorded upstream requests that carried `token` as their bearer.
fn upstream_calls_with(app: &TestApp, token: &str) -> usize {
    app.cryptlex()
        .requests()
        .iter()
        .filter(|request| request.bearer_token.as_deref() == Some(token))
        .count()
}

fn upstream_calls_to(app: &TestApp, path: &str) -> usize {
    app.cryptlex()
        .requests()
        .iter()
        .filter(|request| request.path == path)
        .count()
}

#[tokio::test]
async fn tokens_that_cannot_be_cryptlex_tokens_are_refused_without_an_upstream_call() {
    let app = spawn_app().await;
    let mut client = app.user_client().await;
    let an_hour_ago = chrono::Utc::now().timestamp() - 3600;
    let junk = [
        "abc.def".to_owned(),
        "garbage.token.value".to_owned(),
        random_hex(),
        "a.b.c.d".to_owned(),
        // A JSON array is no JWT payload.
        format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256"}"#),
            URL_SAFE_NO_PAD.encode(b"[1]")
        ),
        // No signature.
        format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256"}"#),
            URL_SAFE_NO_PAD.encode(br#"{"sub":"x"}"#)
        ),
        forged_jwt(&serde_json::json!({"sub": "someone", "exp": an_hour_ago})),
    ];

    for token in &junk {
        assert_reads_refused(&mut client, token).await;
        let logout = client.logout(with_token(LogoutRequest {}, token)).await;
        assert_status(logout, Code::Unauthenticated, "TOKEN_INVALID");
    }

    assert!(
        app.cryptlex().requests().is_empty(),
        "no junk token reached Cryptlex"
    );
}

#[tokio::test]
async fn a_token_cryptlex_refused_is_refused_again_without_asking_it() {
    let app = spawn_app().await;
    let mut client = app.user_client().await;
    let forged = forged_live_jwt();

    for _ in 0..10 {
        assert_reads_refused(&mut client, &forged).await;
    }
    let logout = client.logout(with_token(LogoutRequest {}, &forged)).await;
    assert_status(logout, Code::Unauthenticated, "TOKEN_INVALID");

    assert_eq!(
        upstream_calls_with(&app, &forged),
        1,
        "only the first use reached Cryptlex"
    );
    // The refusal belongs to that token alone.
    let token = app.demo_token().await;
    client
        .get_profile(with_token(GetProfileRequest {}, &token))
        .await
        .expect("another token is answered as usual");
}

#[tokio::test]
async fn a_refresh_token_cryptlex_refused_is_refused_again_without_asking_it() {
    let app = spawn_app().await;
    let mut client = app.user_client().await;
    let junk = random_hex();

    for _ in 0..5 {
        let refreshed = client
            .refresh_session(RefreshSessionRequest {
                refresh_token: junk.clone(),
            })
            .await;
        assert_status(refreshed, Code::Unauthenticated, "TOKEN_INVALID");
    }

    assert_eq!(
        upstream_calls_to(&app, "/v3/accounts/login-refresh-token"),
        1,
        "only the first use reached Cryptlex"
    );
    let session = app.login(seed::DEMO_EMAIL, seed::DEMO_PASSWORD).await;
    client
        .refresh_session(RefreshSessionRequest {
            refresh_token: session.refresh_token,
        })
        .await
        .expect("a real refresh token is exchanged as usual");
}

#[tokio::test]
async fn a_flood_of_junk_bearer_tokens_leaves_the_budget_to_real_users() {
    // Two hundred clients, each on a connection of its own, all on 127.0.0.1.
    let app = spawn_app_with(TestOptions::default().many_users_on_one_address()).await;
    let token = app.demo_token().await;
    app.cryptlex().clear_requests();

    // The incident: random bearer tokens, far more than the reads' share of
    // one budget window.
    let flood = (0..200).map(|index| {
        let app = &app;
        async move {
            let junk = if index % 2 == 0 {
                random_hex()
            } else {
                format!("{}.{}", random_hex(), random_hex())
            };
            app.user_client()
                .await
                .get_profile(with_token(GetProfileRequest {}, &junk))
                .await
        }
    });
    for answer in futures::future::join_all(flood).await {
        assert_status(answer, Code::Unauthenticated, "TOKEN_INVALID");
    }

    assert!(
        app.cryptlex().requests().is_empty(),
        "no junk token reached Cryptlex"
    );
    app.user_client()
        .await
        .get_profile(with_token(GetProfileRequest {}, &token))
        .await
        .expect("the real user's profile is served");
}

#[tokio::test]
async fn a_flood_of_junk_refreshes_and_logouts_cannot_starve_login() {
    // The budget alone must hold here: the per-network allowance, which would
    // stop a flood from one network first, is off.
    let app = spawn_app_with(TestOptions::default().many_users_on_one_address()).await;

    // Junk shaped like the real thing, so no shape rule can refuse it: the
    // sandbox's refresh tokens are 64 hex digits, and access tokens JWTs.
    let flood = (0..300).map(|index| {
        let app = &app;
        async move {
            let mut client = app.user_client().await;
            if index % 2 == 0 {
                client
                    .refresh_session(RefreshSessionRequest {
                        refresh_token: random_hex(),
                    })
                    .await
                    .map(|_| ())
            } else {
                client
                    .logout(with_token(LogoutRequest {}, &forged_live_jwt()))
                    .await
                    .map(|_| ())
            }
        }
    });
    for answer in futures::future::join_all(flood).await {
        let status = answer.expect_err("junk is refused");
        let reason = reason(&status);
        assert!(
            ["TOKEN_INVALID", "UPSTREAM_BUDGET_EXHAUSTED"].contains(&reason.as_str()),
            "{status:?}"
        );
    }

    let started = std::time::Instant::now();
    let session = app.login(seed::DEMO_EMAIL, seed::DEMO_PASSWORD).await;
    app.user_client()
        .await
        .get_profile(with_token(GetProfileRequest {}, &session.access_token))
        .await
        .expect("the real user's profile is served");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "login did not wait behind the junk: {:?}",
        started.elapsed()
    );
    let junk_upstream = upstream_calls_to(&app, "/v3/accounts/login-refresh-token")
        + upstream_calls_to(&app, "/v3/accounts/logout");
    assert!(
        junk_upstream <= 10,
        "refresh and logout kept to their share of the budget: {junk_upstream}"
    );
}

#[tokio::test]
async fn a_flood_from_one_network_is_stopped_by_its_allowance_while_another_network_is_served() {
    // Arrange: behind a proxy (one trusted hop) that reports each caller's
    // address; the attacker's forged, well-shaped tokens each cost a call.
    let app = spawn_app_with(TestOptions {
        env: vec![(
            "LICENSING_GATEWAY__LIMITS__CLIENT_ADDRESS_HEADER".into(),
            "x-forwarded-for".into(),
        )],
        ..TestOptions::default()
    })
    .await;
    let cryptlex = app.cryptlex();
    let from = |address: &str, token: &str| {
        let mut request = with_token(GetProfileRequest {}, token);
        request
            .metadata_mut()
            .insert("x-forwarded-for", address.parse().expect("header value"));
        request
    };
    let mut client = app.user_client().await;
    let before = cryptlex.stats().requests;

    // Act: 60 forged tokens from one network, then the real user from another.
    let mut throttled = 0;
    for _ in 0..60 {
        let forged = forged_live_jwt();
        if let Err(status) = client.get_profile(from("203.0.113.7", &forged)).await
            && reason(&status) == "TOO_MANY_REQUESTS"
        {
            throttled += 1;
        }
    }
    let spent = cryptlex.stats().requests - before;
    let token = app.demo_token().await;
    let real = client.get_profile(from("198.51.100.20", &token)).await;

    // Assert: the flood got at most one window's allowance upstream.
    assert!(
        spent <= 15,
        "{spent} upstream calls for one network's flood"
    );
    assert!(throttled >= 40, "only {throttled} calls throttled");
    assert!(real.is_ok(), "{real:?}");
}

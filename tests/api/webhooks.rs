//! Cryptlex's webhooks on the public listener, sent as Cryptlex would:
//! bodies signed here with the configured secret (not by the sandbox), over
//! plain HTTP/1.1 (and HTTP/2), and their effect on the read cache seen in
//! the sandbox's request journal.

use std::time::Duration;

use base64::Engine as _;
use cryptlex_sandbox::seed;
use hmac::{KeyInit as _, Mac as _};
use licensing_gateway::grpc::pb::{GetProfileRequest, ListMyLicensesRequest};

use crate::helpers::{TestApp, TestOptions, captured_logs, spawn_app_with};
use crate::support::client::{install_crypto_provider, with_token};

const SECRET: &str = "whsec-test-7c1f0a9e2b4d";
const PATH: &str = "/webhooks/cryptlex";

/// A gateway with the webhook on (and a read cache long enough that only
/// an invalidation sends a read upstream again), plus `extra` settings.
async fn app_with_webhook(extra: &[(&str, &str)]) -> TestApp {
    let mut env = vec![
        (
            "LICENSING_GATEWAY__WEBHOOK__SECRET".to_owned(),
            SECRET.to_owned(),
        ),
        ("LICENSING_GATEWAY__CACHE__TTL".to_owned(), "10m".to_owned()),
    ];
    env.extend(
        extra
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned())),
    );
    spawn_app_with(TestOptions {
        env,
        ..TestOptions::default()
    })
    .await
}

/// Base64 of HMAC-SHA256 of `body` keyed with `secret`, as Cryptlex signs.
fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// `triggeredAt` for `offset` from now (negative: in the past).
fn triggered_at(offset: chrono::TimeDelta) -> String {
    (chrono::Utc::now() + offset).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn now() -> String {
    triggered_at(chrono::TimeDelta::zero())
}

/// A `license.updated` delivery as Cryptlex sends it: the `LicenseDto`,
/// with its user as an object (key and email included, which must never be
/// logged).
fn license_updated(license_id: &str, user_id: &str, triggered_at: &str) -> String {
    serde_json::json!({
        "event": "license.updated",
        "triggeredAt": triggered_at,
        "data": {
            "id": license_id,
            "key": "LOGMARK-KEY-5E2A9C",
            "revoked": true,
            "suspended": false,
            "productId": seed::PRODUCT_ID,
            "userId": user_id,
            "user": {"id": user_id, "email": "logmark-user@example.com"},
            "metadata": [],
        },
    })
    .to_string()
}

/// An HTTP/1.1-only client (Cryptlex's deliveries are plain HTTPS POSTs).
fn http1() -> reqwest::Client {
    install_crypto_provider();
    reqwest::Client::builder()
        .http1_only()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// POSTs `body` to the webhook path with `signature` (if any); returns the
/// status.
async fn deliver_with(
    client: &reqwest::Client,
    app: &TestApp,
    body: &str,
    signature: Option<String>,
) -> u16 {
    let mut request = client
        .post(format!("http://{}{PATH}", app.public_addr))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(signature) = signature {
        request = request.header("Webhook-Signature", signature);
    }
    request
        .send()
        .await
        .expect("the webhook answers")
        .status()
        .as_u16()
}

/// POSTs `body` signed with the right secret over HTTP/1.1.
async fn deliver(app: &TestApp, body: &str) -> u16 {
    deliver_with(&http1(), app, body, Some(sign(SECRET, body.as_bytes()))).await
}

/// Requests the sandbox received for the license list so far.
fn license_list_reads(app: &TestApp) -> usize {
    app.cryptlex()
        .requests()
        .iter()
        .filter(|request| request.path == "/v3/me/licenses")
        .count()
}

/// Reads `token`'s license list and returns how many upstream reads it took.
async fn upstream_reads_for_list(app: &TestApp, token: &str) -> usize {
    let before = license_list_reads(app);
    app.user_client()
        .await
        .list_my_licenses(with_token(ListMyLicensesRequest::default(), token))
        .await
        .expect("the list answers");
    license_list_reads(app) - before
}

/// The counter of webhook deliveries with `outcome` (process-wide, shared
/// by every test in this binary, so tests compare before and after).
async fn deliveries(app: &TestApp, outcome: &str) -> f64 {
    let (_, metrics) = app.admin_get("/metrics").await;
    let label = format!("outcome=\"{outcome}\"");
    metrics
        .lines()
        .filter(|line| line.starts_with("licensing_gateway_webhook_deliveries_total{"))
        .find(|line| line.contains(&label))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

/// The demo user's token with its license list cached.
async fn demo_with_cached_list(app: &TestApp) -> String {
    let token = app.demo_token().await;
    assert_eq!(upstream_reads_for_list(app, &token).await, 1);
    assert_eq!(upstream_reads_for_list(app, &token).await, 0, "cached");
    token
}

#[tokio::test]
async fn a_signed_license_update_sends_that_users_next_license_list_upstream() {
    let app = app_with_webhook(&[]).await;
    let token = demo_with_cached_list(&app).await;

    let body = license_updated(seed::DEMO_LICENSE_IDS[0], seed::DEMO_USER_ID, &now());
    assert_eq!(deliver(&app, &body).await, 200);

    assert_eq!(
        upstream_reads_for_list(&app, &token).await,
        1,
        "invalidated"
    );
    assert_eq!(
        upstream_reads_for_list(&app, &token).await,
        0,
        "cached again"
    );
}

#[tokio::test]
async fn a_license_update_leaves_another_users_cached_license_list_alone() {
    let app = app_with_webhook(&[]).await;
    let demo = demo_with_cached_list(&app).await;
    let other = app
        .login(seed::OTHER_EMAIL, seed::OTHER_PASSWORD)
        .await
        .access_token;
    assert_eq!(upstream_reads_for_list(&app, &other).await, 1);

    let body = license_updated(seed::OTHER_LICENSE_ID, seed::OTHER_USER_ID, &now());
    assert_eq!(deliver(&app, &body).await, 200);

    assert_eq!(
        upstream_reads_for_list(&app, &other).await,
        1,
        "theirs refreshed"
    );
    assert_eq!(
        upstream_reads_for_list(&app, &demo).await,
        0,
        "ours untouched"
    );
}

#[tokio::test]
async fn the_webhook_is_also_served_over_http2() {
    let app = app_with_webhook(&[]).await;
    let token = demo_with_cached_list(&app).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");

    let body = license_updated(seed::DEMO_LICENSE_IDS[1], seed::DEMO_USER_ID, &now());
    let status = deliver_with(&h2, &app, &body, Some(sign(SECRET, body.as_bytes()))).await;

    assert_eq!(status, 200);
    assert_eq!(upstream_reads_for_list(&app, &token).await, 1);
}

#[tokio::test]
async fn a_wrong_or_missing_signature_is_refused_with_401_and_changes_nothing() {
    let app = app_with_webhook(&[]).await;
    let token = demo_with_cached_list(&app).await;
    let body = license_updated(seed::DEMO_LICENSE_IDS[0], seed::DEMO_USER_ID, &now());
    let client = http1();

    let wrong_secret = sign("another-secret", body.as_bytes());
    let tampered = sign(SECRET, body.replace("true", "false").as_bytes());
    for signature in [
        Some(wrong_secret),
        Some(tampered),
        Some("not base64 at all".to_owned()),
        None,
    ] {
        let status = deliver_with(&client, &app, &body, signature.clone()).await;
        assert_eq!(status, 401, "{signature:?}");
    }

    assert_eq!(
        upstream_reads_for_list(&app, &token).await,
        0,
        "still cached"
    );
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413() {
    let app = app_with_webhook(&[("LICENSING_GATEWAY__WEBHOOK__MAX_BODY_BYTES", "1024")]).await;
    let padding = "x".repeat(2048);
    let body = serde_json::json!({
        "event": "license.updated",
        "triggeredAt": now(),
        "data": {"id": seed::DEMO_LICENSE_IDS[0], "notes": padding},
    })
    .to_string();

    assert_eq!(deliver(&app, &body).await, 413);
}

#[tokio::test]
async fn a_signed_body_that_is_no_cryptlex_payload_is_refused_with_400() {
    let app = app_with_webhook(&[]).await;
    let token = demo_with_cached_list(&app).await;
    let no_id = serde_json::json!({
        "event": "license.updated",
        "triggeredAt": now(),
        "data": {"key": "K"},
    })
    .to_string();

    for body in ["not json", "{}", r#"{"event":"license.updated"}"#, &no_id] {
        assert_eq!(deliver(&app, body).await, 400, "{body}");
    }
    assert_eq!(
        upstream_reads_for_list(&app, &token).await,
        0,
        "still cached"
    );
}

#[tokio::test]
async fn an_event_the_caches_do_not_hold_is_acknowledged_and_counted() {
    let app = app_with_webhook(&[]).await;
    let token = demo_with_cached_list(&app).await;
    let before = deliveries(&app, "unknown_event").await;
    let body = serde_json::json!({
        "event": "product.updated",
        "triggeredAt": now(),
        "data": {"id": seed::PRODUCT_ID, "name": "Demo"},
    })
    .to_string();

    assert_eq!(deliver(&app, &body).await, 200);

    assert!(deliveries(&app, "unknown_event").await >= before + 1.0);
    assert_eq!(
        upstream_reads_for_list(&app, &token).await,
        0,
        "still cached"
    );
}

#[tokio::test]
async fn a_replayed_delivery_is_acknowledged_but_applied_only_once() {
    let app = app_with_webhook(&[]).await;
    let token = demo_with_cached_list(&app).await;
    let body = license_updated(seed::DEMO_LICENSE_IDS[0], seed::DEMO_USER_ID, &now());
    assert_eq!(deliver(&app, &body).await, 200);
    assert_eq!(upstream_reads_for_list(&app, &token).await, 1, "applied");
    let replays_before = deliveries(&app, "replayed").await;

    assert_eq!(deliver(&app, &body).await, 200);

    assert_eq!(
        upstream_reads_for_list(&app, &token).await,
        0,
        "not applied again"
    );
    assert!(deliveries(&app, "replayed").await >= replays_before + 1.0);
    // The same change triggered at another moment is another delivery.
    let later = license_updated(
        seed::DEMO_LICENSE_IDS[0],
        seed::DEMO_USER_ID,
        &triggered_at(chrono::TimeDelta::seconds(1)),
    );
    assert_eq!(deliver(&app, &later).await, 200);
    assert_eq!(upstream_reads_for_list(&app, &token).await, 1);
}

#[tokio::test]
async fn a_delivery_triggered_before_the_window_or_far_ahead_is_acknowledged_and_ignored() {
    let app = app_with_webhook(&[]).await;
    let token = demo_with_cached_list(&app).await;
    let before = deliveries(&app, "too_old").await;

    for offset in [
        chrono::TimeDelta::minutes(-11),
        chrono::TimeDelta::minutes(5),
    ] {
        let body = license_updated(
            seed::DEMO_LICENSE_IDS[0],
            seed::DEMO_USER_ID,
            &triggered_at(offset),
        );
        assert_eq!(deliver(&app, &body).await, 200, "{offset}");
    }

    assert!(deliveries(&app, "too_old").await >= before + 2.0);
    assert_eq!(
        upstream_reads_for_list(&app, &token).await,
        0,
        "still cached"
    );
}

#[tokio::test]
async fn only_post_is_allowed() {
    let app = app_with_webhook(&[]).await;
    let url = format!("http://{}{PATH}", app.public_addr);
    let client = http1();

    for method in [
        reqwest::Method::GET,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ] {
        let response = client
            .request(method.clone(), &url)
            .send()
            .await
            .expect("answers");
        assert_eq!(response.status().as_u16(), 405, "{method}");
        assert_eq!(
            response
                .headers()
                .get("allow")
                .and_then(|v| v.to_str().ok()),
            Some("POST")
        );
    }
}

#[tokio::test]
async fn without_a_secret_the_endpoint_is_off_and_answers_404() {
    let app = spawn_app_with(TestOptions::default()).await;
    let body = license_updated(seed::DEMO_LICENSE_IDS[0], seed::DEMO_USER_ID, &now());
    let client = http1();

    let signed = deliver_with(&client, &app, &body, Some(sign(SECRET, body.as_bytes()))).await;
    let get = client
        .get(format!("http://{}{PATH}", app.public_addr))
        .send()
        .await
        .expect("answers");

    assert_eq!(signed, 404);
    assert_eq!(get.status().as_u16(), 404);
}

#[tokio::test]
async fn junk_on_the_webhook_path_does_not_keep_grpc_callers_waiting() {
    let app = app_with_webhook(&[]).await;
    let token = app.demo_token().await;
    let client = http1();
    let junk = "j".repeat(200 * 1024);
    let flood: Vec<_> = (0..64)
        .map(|n| {
            let client = client.clone();
            let url = format!("http://{}{PATH}", app.public_addr);
            let body = junk.clone();
            tokio::spawn(async move {
                client
                    .post(url)
                    .header("Webhook-Signature", format!("junk{n}"))
                    .body(body)
                    .send()
                    .await
                    .map(|response| response.status().as_u16())
            })
        })
        .collect();

    let profile = app
        .user_client()
        .await
        .get_profile(with_token(GetProfileRequest::default(), &token))
        .await;

    assert!(profile.is_ok(), "{profile:?}");
    for answer in flood {
        // Refused for the signature, or shed while others were in progress
        // (Cryptlex would retry a 503; a shed upload may also see its
        // connection closed before it finished sending); never accepted.
        match answer.await.expect("task") {
            Ok(status) => assert!(matches!(status, 401 | 503), "{status}"),
            Err(error) => assert!(!error.is_status(), "{error}"),
        }
    }
}

#[tokio::test]
async fn neither_the_secret_nor_the_body_reaches_the_logs() {
    let logs = captured_logs();
    let app = app_with_webhook(&[]).await;
    let body = license_updated(seed::DEMO_LICENSE_IDS[0], seed::DEMO_USER_ID, &now());
    assert_eq!(deliver(&app, &body).await, 200);
    assert_eq!(deliver(&app, "not json").await, 400);
    assert_eq!(
        deliver_with(&http1(), &app, &body, Some(sign("wrong", body.as_bytes()))).await,
        401
    );

    let lines = logs.lines();
    assert!(
        lines
            .iter()
            .any(|line| line.contains("webhook delivery applied")),
        "the capture sees the webhook's lines"
    );
    for forbidden in [SECRET, "LOGMARK-KEY-5E2A9C", "logmark-user@example.com"] {
        assert!(
            !lines.iter().any(|line| line.contains(forbidden)),
            "{forbidden} was logged"
        );
    }
}

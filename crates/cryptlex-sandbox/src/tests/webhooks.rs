//! The webhooks: a tiny receiver in each test checks what arrives, signature included.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::HeaderMap;
use tokio::net::TcpListener;

use super::*;

const SECRET: &str = "whsec-test-0123456789";

/// One POST the receiver got, with whether its signature checked out.
#[derive(Clone, Debug)]
struct Received {
    body: Value,
    raw: Bytes,
    signature: String,
    signed_correctly: bool,
    content_type: String,
}

#[derive(Default)]
struct ReceiverState {
    received: Vec<Received>,
    /// Statuses to answer, first first; 200 once empty.
    answers: VecDeque<u16>,
    delay: Duration,
}

/// A webhook endpoint on a loopback port that verifies each delivery's signature.
struct Receiver {
    url: String,
    state: Arc<Mutex<ReceiverState>>,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Receiver {
        Self::start_answering(&[], Duration::ZERO).await
    }

    async fn start_answering(answers: &[u16], delay: Duration) -> Receiver {
        let state = Arc::new(Mutex::new(ReceiverState {
            received: Vec::new(),
            answers: answers.iter().copied().collect(),
            delay,
        }));
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(Arc::clone(&state));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver { url, state, server }
    }

    fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    fn events(&self) -> Vec<String> {
        self.received()
            .iter()
            .map(|received| received.body["event"].as_str().unwrap().to_owned())
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn receive(
    State(state): State<Arc<Mutex<ReceiverState>>>,
    headers: HeaderMap,
    raw: Bytes,
) -> StatusCode {
    let signature = headers
        .get("webhook-signature")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    // Verified the way a receiver should: decode, then a constant-time HMAC comparison.
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    let signed_correctly = BASE64
        .decode(&signature)
        .is_ok_and(|tag| ring::hmac::verify(&key, &raw, &tag).is_ok());
    let (answer, delay) = {
        let mut state = state.lock().unwrap();
        state.received.push(Received {
            body: serde_json::from_slice(&raw).unwrap_or(Value::Null),
            raw: raw.clone(),
            signature,
            signed_correctly,
            content_type: headers
                .get("content-type")
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
        });
        (state.answers.pop_front().unwrap_or(200), state.delay)
    };
    tokio::time::sleep(delay).await;
    StatusCode::from_u16(answer).unwrap()
}

/// Options with quick retries, so the retry tests take milliseconds.
fn quick_retries() -> SandboxOptions {
    SandboxOptions {
        rate_limit: None,
        webhook_retry_delays: vec![Duration::from_millis(20); 3],
        webhook_timeout: Duration::from_secs(2),
        ..SandboxOptions::default()
    }
}

/// Waits (up to 10 s) until `done` holds for the delivery log.
async fn wait_for_deliveries(
    controls: &Controls,
    done: impl Fn(&[WebhookDelivery]) -> bool,
) -> Vec<WebhookDelivery> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let deliveries = controls.webhook_deliveries();
        if done(&deliveries) {
            return deliveries;
        }
        assert!(
            Instant::now() < deadline,
            "deliveries never settled: {deliveries:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn all_finished(deliveries: &[WebhookDelivery]) -> bool {
    deliveries.iter().all(|delivery| {
        matches!(
            delivery.status,
            DeliveryStatus::Succeeded | DeliveryStatus::Failed
        )
    })
}

impl TestSandbox {
    async fn send_json(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> reqwest::Response {
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.unwrap()
    }
}

// === the events and what they carry ===

#[tokio::test]
async fn created_updated_and_deleted_licenses_arrive_in_order_signed_with_the_api_dto() {
    // Arrange: a webhook for every event, registered through the HTTP control
    let app = start_with(quick_retries()).await;
    let receiver = Receiver::start().await;
    let registered = app
        .post(
            "/__sandbox/webhooks",
            None,
            &json!({"url": receiver.url, "secret": SECRET, "events": []}),
        )
        .await;
    assert_eq!(registered.status(), StatusCode::CREATED);
    let webhook_id = json_of(registered).await["id"].as_str().unwrap().to_owned();
    let pat = app.pat();

    // Act: create, update and delete one license through the API
    let created = json_of(app.create_license(&license_request("sub_hooks")).await).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let patched = app
        .send_json(
            Method::PATCH,
            &format!("/v3/licenses/{id}"),
            Some(&pat),
            Some(&json!({"suspended": true, "notes": "paused"})),
        )
        .await;
    assert_eq!(patched.status(), StatusCode::OK);
    let patched = json_of(patched).await;
    let deleted = app
        .send_json(
            Method::DELETE,
            &format!("/v3/licenses/{id}"),
            Some(&pat),
            None,
        )
        .await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let deliveries = wait_for_deliveries(&app.controls(), |deliveries| {
        deliveries.len() == 3 && all_finished(deliveries)
    })
    .await;

    // Assert: in order, each carrying exactly what the API returned, correctly signed
    assert_eq!(
        receiver.events(),
        [
            events::LICENSE_CREATED,
            events::LICENSE_UPDATED,
            events::LICENSE_DELETED
        ]
    );
    let received = receiver.received();
    assert_eq!(received[0].body["data"], created);
    assert_eq!(received[1].body["data"], patched);
    assert_eq!(patched["suspended"], true);
    assert_eq!(patched["notes"], "paused");
    assert_eq!(received[2].body["data"], patched, "deleted as it last was");
    for delivery in &received {
        assert!(delivery.signed_correctly, "{delivery:?}");
        assert_eq!(delivery.content_type, "application/json");
        let triggered_at = delivery.body["triggeredAt"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(triggered_at).is_ok());
        assert!(triggered_at.ends_with('Z'));
        let keys: Vec<&String> = delivery.body.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 3, "{keys:?}");
    }
    for delivery in &deliveries {
        assert_eq!(delivery.webhook_id, webhook_id);
        assert_eq!(delivery.url, receiver.url);
        assert_eq!(delivery.status, DeliveryStatus::Succeeded);
        assert_eq!(delivery.attempts, 1);
        assert_eq!(delivery.last_status_code, Some(200));
    }
    // Deliveries are not API requests: only the three calls above were journaled.
    assert_eq!(app.controls().requests().len(), 3);
}

#[tokio::test]
async fn user_creation_and_login_fire_their_events_with_the_user_dto() {
    // Arrange
    let app = start_with(quick_retries()).await;
    let receiver = Receiver::start().await;
    app.controls().add_webhook(&receiver.url, SECRET, &[]);
    let body =
        json!({"email": "hooked@example.com", "firstName": "Hooked", "password": "long-enough"});

    // Act
    let created = json_of(app.post("/v3/users", Some(&app.pat()), &body).await).await;
    app.demo_tokens().await;
    wait_for_deliveries(&app.controls(), |deliveries| {
        deliveries.len() == 2 && all_finished(deliveries)
    })
    .await;

    // Assert
    let received = receiver.received();
    assert_eq!(
        receiver.events(),
        [events::USER_CREATED, events::ACCOUNT_LOGGED_IN]
    );
    assert_eq!(received[0].body["data"], created);
    let login = &received[1].body["data"];
    assert_eq!(login["id"], seed::DEMO_USER_ID);
    assert_eq!(login["email"], seed::DEMO_EMAIL);
    assert!(login["lastLoginAt"].is_string());
    assert!(received.iter().all(|received| received.signed_correctly));
}

#[tokio::test]
async fn unsubscribed_and_disabled_webhooks_get_nothing() {
    // Arrange: one webhook for license updates only, one for everything, one disabled
    let app = start_with(quick_retries()).await;
    let updates_only = Receiver::start().await;
    let everything = Receiver::start().await;
    let disabled = Receiver::start().await;
    app.controls()
        .add_webhook(&updates_only.url, SECRET, &[events::LICENSE_UPDATED]);
    app.controls().add_webhook(&everything.url, SECRET, &[]);
    let response = app
        .post(
            "/v3/webhooks",
            Some(&app.pat()),
            &json!({"name": "off", "url": disabled.url, "token": SECRET, "enabled": false,
                "events": [events::LICENSE_UPDATED]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);

    // Act
    let created = json_of(app.create_license(&license_request("sub_filter")).await).await;
    let id = created["id"].as_str().unwrap();
    app.controls().update_license(
        id,
        LicenseChange {
            revoked: Some(true),
            suspended: None,
        },
    );
    wait_for_deliveries(&app.controls(), |deliveries| {
        deliveries.len() == 3 && all_finished(deliveries)
    })
    .await;
    // Anything wrongly queued would have had time to arrive.
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Assert
    assert_eq!(updates_only.events(), [events::LICENSE_UPDATED]);
    assert_eq!(
        everything.events(),
        [events::LICENSE_CREATED, events::LICENSE_UPDATED]
    );
    assert!(disabled.received().is_empty());
}

// === retries ===

#[tokio::test]
async fn a_4xx_answer_fails_the_delivery_without_a_retry() {
    // Arrange
    let app = start_with(quick_retries()).await;
    let receiver = Receiver::start_answering(&[400, 200], Duration::ZERO).await;
    app.controls().add_webhook(&receiver.url, SECRET, &[]);

    // Act
    app.controls().update_license(
        seed::DEMO_LICENSE_IDS[0],
        LicenseChange {
            revoked: None,
            suspended: Some(true),
        },
    );
    let deliveries = wait_for_deliveries(&app.controls(), |deliveries| {
        deliveries.len() == 1 && all_finished(deliveries)
    })
    .await;
    // Longer than every retry delay together: a retry would have arrived by now.
    tokio::time::sleep(Duration::from_millis(150)).await;

    // Assert
    assert_eq!(deliveries[0].status, DeliveryStatus::Failed);
    assert_eq!(deliveries[0].attempts, 1);
    assert_eq!(deliveries[0].last_status_code, Some(400));
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test]
async fn a_5xx_answer_is_retried_with_the_same_signed_body_until_it_succeeds() {
    // Arrange
    let app = start_with(quick_retries()).await;
    let receiver = Receiver::start_answering(&[503, 500], Duration::ZERO).await;
    app.controls().add_webhook(&receiver.url, SECRET, &[]);

    // Act
    app.controls().update_license(
        seed::DEMO_LICENSE_IDS[0],
        LicenseChange {
            revoked: Some(true),
            suspended: None,
        },
    );
    let deliveries = wait_for_deliveries(&app.controls(), |deliveries| {
        deliveries.len() == 1 && all_finished(deliveries)
    })
    .await;

    // Assert
    assert_eq!(deliveries[0].status, DeliveryStatus::Succeeded);
    assert_eq!(deliveries[0].attempts, 3);
    assert_eq!(deliveries[0].last_status_code, Some(200));
    let received = receiver.received();
    assert_eq!(received.len(), 3);
    assert!(received.iter().all(|attempt| attempt.raw == received[0].raw
        && attempt.signature == received[0].signature
        && attempt.signed_correctly));
}

#[tokio::test]
async fn an_unreachable_receiver_is_retried_then_given_up() {
    // Arrange: a port nobody listens on any more
    let app = start_with(quick_retries()).await;
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    app.controls().add_webhook(&url, SECRET, &[]);

    // Act
    app.controls()
        .update_license(seed::DEMO_LICENSE_IDS[0], LicenseChange::default());
    let deliveries = wait_for_deliveries(&app.controls(), |deliveries| {
        deliveries.len() == 1 && all_finished(deliveries)
    })
    .await;

    // Assert: one attempt plus one per retry delay
    assert_eq!(deliveries[0].status, DeliveryStatus::Failed);
    assert_eq!(deliveries[0].attempts, 4);
    assert_eq!(deliveries[0].last_status_code, None);
}

#[tokio::test]
async fn a_receiver_slower_than_the_timeout_is_retried() {
    // Arrange: every answer takes longer than an attempt may
    let app = start_with(SandboxOptions {
        webhook_retry_delays: vec![Duration::from_millis(10)],
        webhook_timeout: Duration::from_millis(100),
        ..quick_retries()
    })
    .await;
    let receiver = Receiver::start_answering(&[], Duration::from_millis(500)).await;
    app.controls().add_webhook(&receiver.url, SECRET, &[]);

    // Act
    app.controls()
        .update_license(seed::DEMO_LICENSE_IDS[0], LicenseChange::default());
    let deliveries = wait_for_deliveries(&app.controls(), |deliveries| {
        deliveries.len() == 1 && all_finished(deliveries)
    })
    .await;

    // Assert
    assert_eq!(deliveries[0].status, DeliveryStatus::Failed);
    assert_eq!(deliveries[0].attempts, 2);
    assert_eq!(receiver.received().len(), 2);
}

// === bounds ===

#[tokio::test]
async fn past_the_queue_bound_deliveries_fail_at_once_and_the_api_never_waits() {
    // Arrange: room for two unfinished deliveries, and a receiver that takes its time
    let app = start_with(SandboxOptions {
        webhook_queue_capacity: 2,
        ..quick_retries()
    })
    .await;
    let receiver = Receiver::start_answering(&[], Duration::from_secs(1)).await;
    app.controls().add_webhook(&receiver.url, SECRET, &[]);
    let pat = app.pat();

    // Act: five updates through the API, faster than the receiver answers one
    let started = Instant::now();
    for _ in 0..5 {
        let response = app
            .send_json(
                Method::PATCH,
                &format!("/v3/licenses/{}", seed::DEMO_LICENSE_IDS[0]),
                Some(&pat),
                Some(&json!({"notes": "again"})),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let elapsed = started.elapsed();
    let at_once = app.controls().webhook_deliveries();
    let settled = wait_for_deliveries(&app.controls(), all_finished).await;

    // Assert
    // Faster than the receiver answers one delivery: no request waited for the queue.
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
    let failed_at_once: Vec<_> = at_once
        .iter()
        .filter(|delivery| delivery.status == DeliveryStatus::Failed)
        .collect();
    assert_eq!(failed_at_once.len(), 3, "{at_once:?}");
    assert!(failed_at_once.iter().all(|delivery| delivery.attempts == 0));
    let succeeded = settled
        .iter()
        .filter(|delivery| delivery.status == DeliveryStatus::Succeeded)
        .count();
    assert_eq!(succeeded, 2);
    assert_eq!(receiver.received().len(), 2);
}

#[tokio::test]
async fn the_registry_refuses_bad_webhooks_and_holds_at_most_sixteen() {
    let app = start().await;
    let controls = app.controls();

    assert_eq!(
        controls.try_add_webhook("https://example.com/hook", SECRET, &[]),
        Err(InvalidWebhook::Url)
    );
    assert_eq!(
        controls.try_add_webhook("http://127.0.0.1:9/hook", "", &[]),
        Err(InvalidWebhook::Secret)
    );
    let too_many_events = vec!["license.updated"; MAX_WEBHOOK_EVENTS + 1];
    assert_eq!(
        controls.try_add_webhook("http://127.0.0.1:9/hook", SECRET, &too_many_events),
        Err(InvalidWebhook::Events)
    );
    for _ in 0..MAX_WEBHOOKS {
        controls.add_webhook("http://127.0.0.1:9/hook", SECRET, &[]);
    }
    assert_eq!(
        controls.try_add_webhook("http://127.0.0.1:9/hook", SECRET, &[]),
        Err(InvalidWebhook::TooMany)
    );
    let refused = app
        .post(
            "/__sandbox/webhooks",
            None,
            &json!({"url": "not a url", "secret": SECRET}),
        )
        .await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let body = json_of(refused).await;
    assert!(!body["message"].as_str().unwrap().contains(SECRET));
}

// === Cryptlex's own webhook API ===

#[tokio::test]
async fn the_webhook_api_creates_lists_and_deletes_with_cryptlex_shapes_and_scopes() {
    // Arrange
    let app = start_with(quick_retries()).await;
    let receiver = Receiver::start().await;
    let pat = app.pat();
    let (user, _) = app.demo_tokens().await;
    let reader = app.controls().create_pat(&["webhook:read"]);
    let reader = reader.expose_secret();
    let hook = json!({"name": "gateway", "url": receiver.url, "token": SECRET,
        "enabled": true, "events": [events::LICENSE_UPDATED]});

    // Act
    let by_user = app.post("/v3/webhooks", Some(&user), &hook).await;
    let by_reader = app.post("/v3/webhooks", Some(reader), &hook).await;
    let without_events = app
        .post(
            "/v3/webhooks",
            Some(&pat),
            &json!({"name": "x", "url": receiver.url, "token": SECRET, "enabled": true, "events": []}),
        )
        .await;
    let created = app.post("/v3/webhooks", Some(&pat), &hook).await;
    let created_status = created.status();
    let created = json_of(created).await;
    let listed = json_of(app.get("/v3/webhooks?page=1&limit=10", Some(reader)).await).await;
    app.controls()
        .update_license(seed::DEMO_LICENSE_IDS[0], LicenseChange::default());
    wait_for_deliveries(&app.controls(), |deliveries| {
        deliveries.len() == 1 && all_finished(deliveries)
    })
    .await;
    let id = created["id"].as_str().unwrap();
    let deleted = app
        .send_json(
            Method::DELETE,
            &format!("/v3/webhooks/{id}"),
            Some(&pat),
            None,
        )
        .await;
    let deleted_again = app
        .send_json(
            Method::DELETE,
            &format!("/v3/webhooks/{id}"),
            Some(&pat),
            None,
        )
        .await;
    app.controls()
        .update_license(seed::DEMO_LICENSE_IDS[0], LicenseChange::default());
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Assert
    assert_eq!(by_user.status(), StatusCode::FORBIDDEN);
    assert_eq!(by_reader.status(), StatusCode::FORBIDDEN);
    assert_eq!(without_events.status(), StatusCode::BAD_REQUEST);
    assert_eq!(created_status, StatusCode::CREATED);
    assert_eq!(created["name"], "gateway");
    assert_eq!(created["url"], receiver.url.as_str());
    assert_eq!(created["token"], SECRET);
    assert_eq!(created["enabled"], true);
    assert_eq!(created["status"], "healthy");
    assert_eq!(created["events"], json!([events::LICENSE_UPDATED]));
    assert_eq!(listed, json!([created]));
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(deleted_again.status(), StatusCode::NOT_FOUND);
    let received = receiver.received();
    assert_eq!(received.len(), 1, "nothing after the delete");
    assert!(received[0].signed_correctly, "signed with the token");
}

// === the dashboard control ===

#[tokio::test]
async fn the_license_control_changes_what_the_api_returns_and_fires_license_updated() {
    // Arrange
    let app = start_with(quick_retries()).await;
    let receiver = Receiver::start().await;
    let (user, _) = app.demo_tokens().await;
    app.controls()
        .add_webhook(&receiver.url, SECRET, &[events::LICENSE_UPDATED]);
    let license_id = seed::DEMO_LICENSE_IDS[0];
    app.controls().clear_requests();

    // Act: revoke over HTTP, suspend in process, and try an unknown license both ways
    let revoked = app
        .send_json(
            Method::PATCH,
            &format!("/__sandbox/licenses/{license_id}"),
            None,
            Some(&json!({"revoked": true})),
        )
        .await;
    let revoked_status = revoked.status();
    let revoked = json_of(revoked).await;
    let suspended = app.controls().update_license(
        license_id,
        LicenseChange {
            revoked: None,
            suspended: Some(true),
        },
    );
    let unknown = app.controls().update_license(
        "00000000-0000-4000-8000-000000000000",
        LicenseChange::default(),
    );
    let unknown_over_http = app
        .send_json(
            Method::PATCH,
            "/__sandbox/licenses/00000000-0000-4000-8000-000000000000",
            None,
            Some(&json!({"revoked": true})),
        )
        .await;
    let journaled = app.controls().requests().len();
    let mine = json_of(app.get("/v3/me/licenses", Some(&user)).await).await;
    let admin_view = json_of(
        app.get(&format!("/v3/licenses/{license_id}"), Some(&app.pat()))
            .await,
    )
    .await;
    wait_for_deliveries(&app.controls(), |deliveries| {
        deliveries.len() == 2 && all_finished(deliveries)
    })
    .await;

    // Assert
    assert_eq!(revoked_status, StatusCode::OK);
    assert_eq!(revoked["revoked"], true);
    let suspended = suspended.expect("the license exists");
    assert!(suspended.revoked && suspended.suspended);
    assert_eq!(unknown, None);
    assert_eq!(unknown_over_http.status(), StatusCode::NOT_FOUND);
    assert_eq!(journaled, 0, "controls are not API requests");
    let listed = mine
        .as_array()
        .unwrap()
        .iter()
        .find(|license| license["id"] == license_id)
        .unwrap();
    assert_eq!(listed["revoked"], true);
    assert_eq!(listed["suspended"], true);
    assert_eq!(admin_view["revoked"], true);
    assert_eq!(admin_view["suspended"], true);
    let received = receiver.received();
    assert_eq!(
        receiver.events(),
        [events::LICENSE_UPDATED, events::LICENSE_UPDATED]
    );
    assert_eq!(received[0].body["data"], revoked);
    assert_eq!(received[0].body["data"]["user"]["id"], seed::DEMO_USER_ID);
    assert_eq!(received[1].body["data"]["suspended"], true);
    assert_eq!(received[1].body["data"], admin_view);
}

#[tokio::test]
async fn the_delivery_log_is_served_over_http_in_the_agreed_shape() {
    // Arrange
    let app = start_with(quick_retries()).await;
    let receiver = Receiver::start_answering(&[404], Duration::ZERO).await;
    let id = app.controls().add_webhook(&receiver.url, SECRET, &[]);
    app.controls()
        .update_license(seed::DEMO_LICENSE_IDS[0], LicenseChange::default());
    wait_for_deliveries(&app.controls(), all_finished).await;

    // Act
    let log = json_of(app.get("/__sandbox/webhook-deliveries", None).await).await;

    // Assert
    let delivery = &log[0];
    assert_eq!(delivery["webhookId"], id.as_str());
    assert_eq!(delivery["event"], events::LICENSE_UPDATED);
    assert_eq!(delivery["url"], receiver.url.as_str());
    assert_eq!(delivery["status"], "failed");
    assert_eq!(delivery["attempts"], 1);
    assert_eq!(delivery["lastStatusCode"], 404);
    assert!(delivery["id"].is_string());
    assert!(
        !log.to_string().contains(SECRET),
        "the log never shows the secret"
    );
}

#[tokio::test]
async fn the_expiry_control_moves_a_license_into_the_past_or_makes_it_perpetual() {
    // Arrange
    let app = start_with(quick_retries()).await;
    let receiver = Receiver::start().await;
    app.controls()
        .add_webhook(&receiver.url, SECRET, &[events::LICENSE_UPDATED]);
    let (user, _) = app.demo_tokens().await;
    let license_id = seed::DEMO_LICENSE_IDS[1];
    let yesterday = chrono::Utc::now() - chrono::TimeDelta::days(1);

    // Act: in process, then over HTTP (null clears it), then an unknown license and bad JSON
    let expired = app
        .controls()
        .set_license_expiry(license_id, Some(yesterday));
    let seen_expired = json_of(
        app.get(&format!("/v3/me/licenses/{license_id}"), Some(&user))
            .await,
    )
    .await;
    let cleared = app
        .send_json(
            Method::PATCH,
            &format!("/__sandbox/licenses/{license_id}"),
            None,
            Some(&json!({"expiresAt": null})),
        )
        .await;
    let cleared_status = cleared.status();
    let cleared = json_of(cleared).await;
    let set_over_http = app
        .send_json(
            Method::PATCH,
            &format!("/__sandbox/licenses/{license_id}"),
            None,
            Some(&json!({"expiresAt": "2020-01-02T03:04:05Z", "suspended": true})),
        )
        .await;
    let set_over_http = json_of(set_over_http).await;
    let untouched = app
        .send_json(
            Method::PATCH,
            &format!("/__sandbox/licenses/{license_id}"),
            None,
            Some(&json!({"revoked": false})),
        )
        .await;
    let untouched = json_of(untouched).await;
    let unknown = app
        .controls()
        .set_license_expiry("00000000-0000-4000-8000-000000000000", None);
    let not_a_date = app
        .send_json(
            Method::PATCH,
            &format!("/__sandbox/licenses/{license_id}"),
            None,
            Some(&json!({"expiresAt": "tomorrow"})),
        )
        .await;
    wait_for_deliveries(&app.controls(), |deliveries| {
        deliveries.len() == 4 && all_finished(deliveries)
    })
    .await;

    // Assert
    assert_eq!(expired.unwrap().expires_at, Some(yesterday));
    assert_eq!(seen_expired["expiresAt"], crate::wire::timestamp(yesterday));
    assert_eq!(cleared_status, StatusCode::OK);
    assert_eq!(cleared["expiresAt"], Value::Null);
    assert_eq!(set_over_http["expiresAt"], "2020-01-02T03:04:05.0000000Z");
    assert_eq!(set_over_http["suspended"], true);
    assert_eq!(
        untouched["expiresAt"], "2020-01-02T03:04:05.0000000Z",
        "absent leaves it"
    );
    assert_eq!(unknown, None);
    assert_eq!(not_a_date.status(), StatusCode::BAD_REQUEST);
    assert_eq!(receiver.events(), [events::LICENSE_UPDATED; 4]);
}

// === the customer-portal events ===

#[tokio::test]
async fn patching_me_fires_user_updated_with_the_user_dto() {
    // Arrange
    let app = start_with(quick_retries()).await;
    let receiver = Receiver::start().await;
    app.controls()
        .add_webhook(&receiver.url, SECRET, &[events::USER_UPDATED]);
    let (token, _) = app.demo_tokens().await;

    // Act: one accepted change and one refused
    let patched = app
        .send_json(
            Method::PATCH,
            "/v3/me",
            Some(&token),
            Some(&json!({"firstName": "Hooked"})),
        )
        .await;
    let refused = app
        .send_json(
            Method::PATCH,
            "/v3/me",
            Some(&token),
            Some(&json!({"firstName": ""})),
        )
        .await;
    wait_for_deliveries(&app.controls(), |deliveries| {
        deliveries.len() == 1 && all_finished(deliveries)
    })
    .await;

    // Assert
    assert_eq!(patched.status(), StatusCode::OK);
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let received = receiver.received();
    assert_eq!(receiver.events(), [events::USER_UPDATED]);
    let data = &received[0].body["data"];
    let admin_view = json_of(
        app.get(
            &format!("/v3/users/{}", seed::DEMO_USER_ID),
            Some(&app.pat()),
        )
        .await,
    )
    .await;
    assert_eq!(data, &admin_view, "the UserDto after the change");
    assert_eq!(data["firstName"], "Hooked");
    assert!(received[0].signed_correctly);
}

#[tokio::test]
async fn deactivating_fires_activation_deleted_with_the_activation_and_its_license() {
    // Arrange
    let app = start_with(quick_retries()).await;
    let receiver = Receiver::start().await;
    app.controls()
        .add_webhook(&receiver.url, SECRET, &[events::ACTIVATION_DELETED]);
    let (token, _) = app.demo_tokens().await;
    let id = seed::DEMO_ACTIVATION_IDS[1];
    let before = json_of(
        app.get(&format!("/v3/me/activations/{id}"), Some(&token))
            .await,
    )
    .await;

    // Act: one deactivation, and one refused at the limit (no event)
    let deleted = app
        .send_json(Method::DELETE, &format!("/v3/activations/{id}"), None, None)
        .await;
    let refused = app
        .send_json(
            Method::DELETE,
            &format!("/v3/activations/{}", seed::LIMITED_ACTIVATION_ID),
            None,
            None,
        )
        .await;
    wait_for_deliveries(&app.controls(), |deliveries| {
        deliveries.len() == 1 && all_finished(deliveries)
    })
    .await;

    // Assert
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    let received = receiver.received();
    assert_eq!(receiver.events(), [events::ACTIVATION_DELETED]);
    assert_eq!(received[0].body["data"], before);
    assert_eq!(
        received[0].body["data"]["licenseId"],
        seed::DEMO_LICENSE_IDS[0]
    );
    assert!(received[0].signed_correctly);
}

#[tokio::test]
async fn renewing_and_setting_the_expiry_fire_their_own_events_with_the_api_dto() {
    // Arrange: a webhook for the two events only
    let app = start_with(quick_retries()).await;
    let receiver = Receiver::start().await;
    app.controls().add_webhook(
        &receiver.url,
        SECRET,
        &[events::LICENSE_RENEWED, events::LICENSE_EXPIRES_AT_UPDATED],
    );
    let id = seed::DEMO_LICENSE_IDS[0];
    let pat = app.pat();

    // Act: renew, then set the expiry, then an ordinary update that must not be delivered
    let renewed = app
        .send_json(
            Method::POST,
            &format!("/v3/licenses/{id}/renew"),
            Some(&pat),
            None,
        )
        .await;
    assert_eq!(renewed.status(), StatusCode::OK);
    let renewed = json_of(renewed).await;
    let dated = app
        .send_json(
            Method::PATCH,
            &format!("/v3/licenses/{id}/expires-at"),
            Some(&pat),
            Some(&json!({"expiresAt": "2035-05-05T05:05:05Z"})),
        )
        .await;
    let dated = json_of(dated).await;
    app.controls().update_license(id, LicenseChange::default());
    wait_for_deliveries(&app.controls(), |deliveries| {
        deliveries.len() == 2 && all_finished(deliveries)
    })
    .await;

    // Assert
    assert_eq!(
        receiver.events(),
        [events::LICENSE_RENEWED, events::LICENSE_EXPIRES_AT_UPDATED]
    );
    assert_eq!(
        events::LICENSE_EXPIRES_AT_UPDATED,
        "license.expiresAt.updated"
    );
    let received = receiver.received();
    assert_eq!(received[0].body["data"], renewed);
    assert_eq!(received[1].body["data"], dated);
    assert_eq!(dated["expiresAt"], "2035-05-05T05:05:05.0000000Z");
    assert!(received.iter().all(|delivery| delivery.signed_correctly));
}

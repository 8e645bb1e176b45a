//! The sandbox's webhooks held to Cryptlex's contract: its webhook registry and license
//! update operations answer in S1's shapes, and every delivery's `data` is the DTO S1's
//! callback for that event names (`LicenseDto`, `UserDto`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use cryptlex_sandbox::{DeliveryStatus, SandboxCryptlex, SandboxOptions, events, seed};
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};

use crate::contract::{Contract, Direction, assert_conforms};

type Bodies = Arc<Mutex<Vec<Value>>>;

async fn receive(State(bodies): State<Bodies>, body: Bytes) -> http::StatusCode {
    bodies
        .lock()
        .expect("receiver lock")
        .push(serde_json::from_slice(&body).expect("a JSON payload"));
    http::StatusCode::OK
}

#[tokio::test]
async fn the_webhook_and_license_update_operations_and_every_payload_conform_to_the_contract() {
    // Arrange: a bare sandbox, a receiver, and a webhook registered through the API
    crate::support::client::install_crypto_provider();
    let loopback: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let sandbox = SandboxCryptlex::start(
        loopback,
        SandboxOptions {
            rate_limit: None,
            ..SandboxOptions::default()
        },
    )
    .await
    .expect("sandbox");
    let bodies: Bodies = Arc::default();
    let listener = tokio::net::TcpListener::bind(loopback)
        .await
        .expect("receiver");
    let hook_url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(Arc::clone(&bodies));
    let receiver = tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::new();
    let pat = sandbox.admin_pat().expose_secret().to_owned();
    let send = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut request = http
            .request(method, format!("{}{path}", sandbox.base_url()))
            .bearer_auth(&pat);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send()
    };

    // Act: every new operation once, each change firing its event
    let created = send(
        reqwest::Method::POST,
        "/v3/webhooks",
        Some(
            json!({"name": "gateway", "url": hook_url, "token": "a-secret-token",
            "enabled": true, "events": [events::LICENSE_CREATED, events::LICENSE_UPDATED,
            events::LICENSE_DELETED, events::USER_CREATED]}),
        ),
    )
    .await
    .expect("create webhook");
    assert_eq!(created.status(), 201);
    let listed = send(reqwest::Method::GET, "/v3/webhooks?page=1&limit=10", None)
        .await
        .expect("list");
    assert_eq!(listed.status(), 200);
    let license: Value = send(
        reqwest::Method::POST,
        "/v3/licenses",
        Some(json!({"productId": seed::PRODUCT_ID, "userId": seed::DEMO_USER_ID})),
    )
    .await
    .expect("create license")
    .json()
    .await
    .expect("license");
    let id = license["id"].as_str().expect("id");
    let patched = send(
        reqwest::Method::PATCH,
        &format!("/v3/licenses/{id}"),
        Some(json!({"revoked": true, "suspended": false, "notes": "chargeback"})),
    )
    .await
    .expect("patch");
    assert_eq!(patched.status(), 200);
    let deleted = send(reqwest::Method::DELETE, &format!("/v3/licenses/{id}"), None)
        .await
        .expect("delete");
    assert_eq!(deleted.status(), 204);
    let user = send(
        reqwest::Method::POST,
        "/v3/users",
        Some(json!({"email": "hooked@example.com", "firstName": "H", "password": "long-enough"})),
    )
    .await
    .expect("create user");
    assert_eq!(user.status(), 201);
    let controls = sandbox.controls();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(controls.webhook_deliveries().len() == 4
        && controls
            .webhook_deliveries()
            .iter()
            .all(|delivery| delivery.status == DeliveryStatus::Succeeded))
    {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            controls.webhook_deliveries()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Assert: both directions of every exchange, then each payload's data
    assert_conforms(&controls);
    let contract = Contract::shared();
    let payloads = bodies.lock().expect("receiver lock").clone();
    assert_eq!(payloads.len(), 4);
    for payload in &payloads {
        let event = payload["event"].as_str().expect("event");
        let schema = if event.starts_with("user.") {
            "UserDto"
        } else {
            "LicenseDto"
        };
        let errors = contract.validate(
            &payload["data"],
            &Contract::component(schema),
            Direction::Response,
        );
        assert!(errors.is_empty(), "{event}: {errors:?}");
    }
    receiver.abort();
}

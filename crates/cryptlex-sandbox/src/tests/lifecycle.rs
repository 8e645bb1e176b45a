//! Renewing a license, setting its expiry, and the `PATCH /v3/licenses/{id}` changes the
//! gateway's lifecycle operations make (suspend, revoke, seats, metadata), over real HTTP.

use chrono::{DateTime, Utc};

use super::*;

impl TestSandbox {
    async fn send(
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

    async fn renew(&self, id: &str) -> reqwest::Response {
        let path = format!("/v3/licenses/{id}/renew");
        self.send(Method::POST, &path, Some(&self.pat()), None)
            .await
    }

    async fn set_expiry(&self, id: &str, body: &Value) -> reqwest::Response {
        let path = format!("/v3/licenses/{id}/expires-at");
        self.send(Method::PATCH, &path, Some(&self.pat()), Some(body))
            .await
    }

    async fn patch_license(&self, id: &str, body: &Value) -> reqwest::Response {
        let path = format!("/v3/licenses/{id}");
        self.send(Method::PATCH, &path, Some(&self.pat()), Some(body))
            .await
    }

    /// Creates a license from `body` (merged over the usual request) and returns its DTO.
    async fn new_license(&self, extra: Value) -> Value {
        let mut body = license_request("sub_lifecycle");
        for (key, value) in extra.as_object().unwrap() {
            body[key] = value.clone();
        }
        let response = self.create_license(&body).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        json_of(response).await
    }

    fn record(&self, id: &str) -> LicenseRecord {
        self.controls()
            .licenses()
            .into_iter()
            .find(|license| license.id == id)
            .unwrap()
    }
}

fn expiry_of(dto: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(dto["expiresAt"].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

fn id_of(dto: &Value) -> String {
    dto["id"].as_str().unwrap().to_owned()
}

// === renew ===

#[tokio::test]
async fn renew_adds_the_interval_to_the_current_expiry_every_time_it_is_called() {
    // Arrange: a monthly license expiring on a known future date
    let app = start().await;
    let license = app
        .new_license(json!({"subscriptionInterval": "P1M", "expiresAt": "2999-01-31T00:00:00Z"}))
        .await;
    let id = id_of(&license);

    // Act: renew twice, as a redelivered renewal would
    let first = app.renew(&id).await;
    assert_eq!(first.status(), StatusCode::OK);
    let first = json_of(first).await;
    let second = json_of(app.renew(&id).await).await;

    // Assert: calendar months from the expiry, twice: `/renew` is not idempotent
    assert_eq!(first["expiresAt"], "2999-02-28T00:00:00.0000000Z");
    assert_eq!(second["expiresAt"], "2999-03-28T00:00:00.0000000Z");
    assert_eq!(second["id"], license["id"]);
    assert_eq!(second["subscriptionInterval"], "P1M");
    assert_eq!(second["perpetual"], false);
    assert_eq!(
        app.record(&id).expires_at,
        Some(expiry_of(&second)),
        "the answer is exactly what is stored"
    );
}

#[tokio::test]
async fn renewing_a_lapsed_license_starts_the_interval_from_now() {
    let app = start().await;
    let license = app
        .new_license(json!({"subscriptionInterval": "P7D", "expiresAt": "2020-01-01T00:00:00Z"}))
        .await;
    let before = Utc::now();

    let renewed = json_of(app.renew(&id_of(&license)).await).await;

    let expiry = expiry_of(&renewed);
    let week = chrono::TimeDelta::days(7);
    assert!(
        expiry >= before + week - chrono::TimeDelta::seconds(1),
        "{expiry}"
    );
    assert!(expiry <= Utc::now() + week, "{expiry}");
}

#[tokio::test]
async fn renewing_an_activation_triggered_license_not_yet_activated_starts_from_now() {
    let app = start().await;
    let license = app
        .new_license(
            json!({"subscriptionInterval": "P1Y", "subscriptionStartTrigger": "activation"}),
        )
        .await;
    assert_eq!(license["expiresAt"], Value::Null);

    let renewed = json_of(app.renew(&id_of(&license)).await).await;

    let in_a_year = Utc::now() + chrono::TimeDelta::days(365);
    let expiry = expiry_of(&renewed);
    assert!((expiry - in_a_year).num_days().abs() <= 1, "{expiry}");
}

#[tokio::test]
async fn renewing_a_license_without_an_interval_is_400_and_changes_nothing() {
    // Arrange: one perpetual, one with a fixed date and no interval
    let app = start().await;
    let perpetual = app.new_license(json!({"subscriptionInterval": ""})).await;
    assert_eq!(perpetual["perpetual"], true);
    let fixed = app
        .new_license(json!({"subscriptionInterval": "", "expiresAt": "2999-01-01T00:00:00Z"}))
        .await;

    for license in [&perpetual, &fixed] {
        // Act
        let response = app.renew(&id_of(license)).await;

        // Assert
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = json_of(response).await;
        assert!(
            body["message"].as_str().unwrap().contains("renew"),
            "{body}"
        );
        assert_eq!(body["code"], Value::Null);
        let unchanged = json_of(
            app.get(
                &format!("/v3/licenses/{}", id_of(license)),
                Some(&app.pat()),
            )
            .await,
        )
        .await;
        assert_eq!(unchanged["expiresAt"], license["expiresAt"]);
    }
}

#[tokio::test]
async fn renewing_a_suspended_or_revoked_license_renews_it_and_keeps_its_state() {
    let app = start().await;
    let license = app
        .new_license(json!({"subscriptionInterval": "P1Y"}))
        .await;
    let id = id_of(&license);
    let patched = app
        .patch_license(&id, &json!({"suspended": true, "revoked": true}))
        .await;
    assert_eq!(patched.status(), StatusCode::OK);

    let renewed = json_of(app.renew(&id).await).await;

    assert!(expiry_of(&renewed) > expiry_of(&license));
    assert_eq!(renewed["suspended"], true);
    assert_eq!(renewed["revoked"], true);
}

#[tokio::test]
async fn the_expiry_endpoints_need_a_pat_with_license_write_and_an_existing_license() {
    let app = start().await;
    let id = seed::DEMO_LICENSE_IDS[0];
    let (user_token, _) = app.demo_tokens().await;
    let read_only = app.controls().create_pat(&["license:read"]);
    let read_only = read_only.expose_secret();
    let renew = format!("/v3/licenses/{id}/renew");
    let expiry = format!("/v3/licenses/{id}/expires-at");
    let body = json!({"expiresAt": "2999-01-01T00:00:00Z"});

    for (method, path, body) in [
        (Method::POST, &renew, None),
        (Method::PATCH, &expiry, Some(&body)),
    ] {
        let anonymous = app.send(method.clone(), path, None, body).await;
        let user = app
            .send(method.clone(), path, Some(&user_token), body)
            .await;
        let reader = app.send(method.clone(), path, Some(read_only), body).await;
        let missing = app
            .send(
                method.clone(),
                &path.replace(id, "00000000-0000-0000-0000-000000000000"),
                Some(&app.pat()),
                body,
            )
            .await;
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(user.status(), StatusCode::FORBIDDEN, "{path}");
        assert_eq!(reader.status(), StatusCode::FORBIDDEN, "{path}");
        assert_eq!(missing.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(json_of(missing).await["message"], "License not found!");
    }
    let seeded = app.record(id);
    assert_eq!(
        seeded.updated_at, seeded.created_at,
        "no refused call changed the license"
    );
}

// === expires-at ===

#[tokio::test]
async fn setting_the_expiry_stores_it_and_setting_it_again_is_harmless() {
    let app = start().await;
    let license = app.new_license(json!({})).await;
    let id = id_of(&license);
    let body = json!({"expiresAt": "2031-06-30T12:00:00.1234567Z"});

    let first = app.set_expiry(&id, &body).await;
    assert_eq!(first.status(), StatusCode::OK);
    let first = json_of(first).await;
    let replay = json_of(app.set_expiry(&id, &body).await).await;

    assert_eq!(first["expiresAt"], "2031-06-30T12:00:00.1234567Z");
    assert_eq!(replay["expiresAt"], first["expiresAt"]);
    assert_eq!(
        replay["subscriptionInterval"],
        license["subscriptionInterval"]
    );
    assert_eq!(replay["perpetual"], false);
}

#[tokio::test]
async fn a_null_expiry_makes_the_license_perpetual_and_a_date_makes_it_expire_again() {
    let app = start().await;
    let id = id_of(
        &app.new_license(json!({"subscriptionInterval": "P1Y"}))
            .await,
    );

    let perpetual = json_of(app.set_expiry(&id, &json!({"expiresAt": null})).await).await;
    let dated = json_of(
        app.set_expiry(&id, &json!({"expiresAt": "2030-01-01T00:00:00Z"}))
            .await,
    )
    .await;

    assert_eq!(perpetual["perpetual"], true);
    assert_eq!(perpetual["expiresAt"], Value::Null);
    assert_eq!(perpetual["subscriptionInterval"], Value::Null);
    assert_eq!(dated["perpetual"], false);
    assert_eq!(dated["expiresAt"], "2030-01-01T00:00:00.0000000Z");
    assert_eq!(
        app.renew(&id).await.status(),
        StatusCode::BAD_REQUEST,
        "no interval is left to renew by"
    );
}

#[tokio::test]
async fn an_expiry_in_the_past_is_accepted() {
    let app = start().await;
    let id = id_of(&app.new_license(json!({})).await);

    let response = app
        .set_expiry(&id, &json!({"expiresAt": "2001-01-01T00:00:00+02:00"}))
        .await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        json_of(response).await["expiresAt"],
        "2000-12-31T22:00:00.0000000Z"
    );
}

#[tokio::test]
async fn an_expiry_body_without_a_valid_expires_at_is_400() {
    let app = start().await;
    let license = app.new_license(json!({})).await;
    let id = id_of(&license);

    for (body, message) in [
        (json!({}), "The expiresAt field is required."),
        (
            json!({"expiresAt": "next tuesday"}),
            "The field expiresAt is not a valid date-time.",
        ),
    ] {
        let response = app.set_expiry(&id, &body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(json_of(response).await["message"], message);
    }
    let empty = app
        .client
        .patch(app.url(&format!("/v3/licenses/{id}/expires-at")))
        .bearer_auth(app.pat())
        .send()
        .await
        .unwrap();
    assert_eq!(empty.status(), StatusCode::BAD_REQUEST);
    let unchanged = json_of(
        app.get(&format!("/v3/licenses/{id}"), Some(&app.pat()))
            .await,
    )
    .await;
    assert_eq!(unchanged["expiresAt"], license["expiresAt"]);
}

// === PATCH /v3/licenses/{id}: what the lifecycle operations send ===

#[tokio::test]
async fn patching_suspends_resumes_revokes_and_sets_seats() {
    let app = start().await;
    let id = id_of(&app.new_license(json!({})).await);

    let suspended = json_of(app.patch_license(&id, &json!({"suspended": true})).await).await;
    let resumed = json_of(app.patch_license(&id, &json!({"suspended": false})).await).await;
    let seats = json_of(
        app.patch_license(&id, &json!({"allowedActivations": 5}))
            .await,
    )
    .await;
    let revoked = json_of(app.patch_license(&id, &json!({"revoked": true})).await).await;

    assert_eq!(suspended["suspended"], true);
    assert_eq!(resumed["suspended"], false);
    assert_eq!(seats["allowedActivations"], 5);
    assert_eq!(seats["revoked"], false);
    assert_eq!(revoked["revoked"], true);
    assert_eq!(
        revoked["allowedActivations"], 5,
        "fields not sent stay as they were"
    );
    let too_few = app
        .patch_license(&id, &json!({"allowedActivations": -2}))
        .await;
    assert_eq!(too_few.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn patching_metadata_replaces_the_list_and_keeps_the_ids_of_kept_keys() {
    // Arrange: a license with two entries
    let app = start().await;
    let license = app
        .new_license(json!({"metadata": [
            {"key": "licensing_gateway_request_id", "value": "req-1", "viewPermissions": []},
            {"key": "edition", "value": "pro", "viewPermissions": ["user"]}
        ]}))
        .await;
    let id = id_of(&license);
    let original_id = license["metadata"][0]["id"].clone();

    // Act: send the first entry unchanged plus a new one, leaving the second out
    let patched = json_of(
        app.patch_license(
            &id,
            &json!({"revoked": true, "metadata": [
                {"key": "licensing_gateway_request_id", "value": "req-1", "viewPermissions": []},
                {"key": "licensing_gateway_revocation", "value": "refund: duplicate charge", "viewPermissions": []}
            ]}),
        )
        .await,
    )
    .await;

    // Assert
    let metadata = patched["metadata"].as_array().unwrap();
    let keys: Vec<&str> = metadata
        .iter()
        .map(|entry| entry["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "licensing_gateway_request_id",
            "licensing_gateway_revocation"
        ],
        "the list is replaced, not merged"
    );
    assert_eq!(metadata[0]["id"], original_id);
    assert_eq!(
        metadata[0]["createdAt"],
        license["metadata"][0]["createdAt"]
    );
    assert_eq!(
        metadata[0]["updatedAt"],
        license["metadata"][0]["updatedAt"]
    );
    assert_ne!(metadata[1]["id"], license["metadata"][1]["id"]);
    assert_eq!(metadata[1]["value"], "refund: duplicate charge");
}

// === faults: the work done, the answer lost or wrong ===

#[tokio::test]
async fn respond_after_processing_renews_but_answers_the_canned_502() {
    // Arrange
    let app = start().await;
    let license = app
        .new_license(json!({"subscriptionInterval": "P1Y", "expiresAt": "2999-01-01T00:00:00Z"}))
        .await;
    let id = id_of(&license);
    app.controls()
        .add_fault(
            FaultRule::once(
                FaultAction::body(502, "text/html", "<h1>Bad gateway</h1>").after_processing(),
            )
            .method(Method::POST)
            .path_prefix(format!("/v3/licenses/{id}/renew")),
        )
        .unwrap();

    // Act
    let response = app.renew(&id).await;

    // Assert: the caller saw a 502, yet the license was renewed
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(response.text().await.unwrap(), "<h1>Bad gateway</h1>");
    assert_eq!(
        app.record(&id).expires_at,
        Some(
            DateTime::parse_from_rfc3339("3000-01-01T00:00:00Z")
                .unwrap()
                .to_utc()
        )
    );
    let recorded = app.controls().requests();
    let renewal = recorded.last().unwrap();
    assert_eq!(renewal.status, Some(502), "the journal keeps what was sent");
    assert_eq!(renewal.fault, Some(FaultKind::RespondAfterProcessing));
    let next = json_of(app.renew(&id).await).await;
    assert_eq!(next["expiresAt"], "3001-01-01T00:00:00.0000000Z");
}

#[tokio::test]
async fn reset_after_processing_sets_the_expiry_but_loses_the_reply() {
    let app = start().await;
    let id = id_of(&app.new_license(json!({})).await);
    app.controls()
        .add_fault(
            FaultRule::once(FaultAction::ResetAfterProcessing)
                .method(Method::PATCH)
                .path_prefix("/v3/licenses"),
        )
        .unwrap();

    let result = app
        .client
        .patch(app.url(&format!("/v3/licenses/{id}/expires-at")))
        .bearer_auth(app.pat())
        .json(&json!({"expiresAt": "2040-01-01T00:00:00Z"}))
        .send()
        .await;

    assert!(
        result.is_err(),
        "expected a connection error, got {result:?}"
    );
    assert_eq!(
        app.record(&id).expires_at,
        Some(
            DateTime::parse_from_rfc3339("2040-01-01T00:00:00Z")
                .unwrap()
                .to_utc()
        )
    );
}

#[tokio::test]
async fn the_http_control_adds_a_respond_after_processing_fault() {
    let app = start().await;
    let id = id_of(&app.new_license(json!({})).await);
    let added = app
        .post(
            "/__sandbox/faults",
            None,
            &json!({"method": "PATCH", "pathPrefix": "/v3/licenses/", "times": 1,
                    "action": {"kind": "respondAfterProcessing", "status": 503,
                               "contentType": "application/json",
                               "body": "{\"message\": \"Service unavailable\"}"}}),
        )
        .await;
    assert_eq!(added.status(), StatusCode::CREATED);

    let response = app.patch_license(&id, &json!({"suspended": true})).await;

    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(app.record(&id).suspended, "the suspension happened");
}

//! Black-box tests: each starts a sandbox on port 0 and talks to it over real HTTP with
//! reqwest, the way the gateway's Cryptlex client will.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::Method;
use reqwest::StatusCode;
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};

use super::pki::{DevPki, subject_alt_names};
use super::*;

mod portal;
mod webhooks;

// Issue 16: renew, expires-at, and the license changes the lifecycle operations make.
mod lifecycle;

// === helpers ===

struct TestSandbox {
    sandbox: SandboxCryptlex,
    client: reqwest::Client,
}

async fn start() -> TestSandbox {
    start_with(SandboxOptions {
        rate_limit: None,
        ..SandboxOptions::default()
    })
    .await
}

async fn start_with(options: SandboxOptions) -> TestSandbox {
    // reqwest is built with `rustls-no-provider`; it panics unless a provider is installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let sandbox = SandboxCryptlex::start(loopback, options).await.unwrap();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    TestSandbox { sandbox, client }
}

impl TestSandbox {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sandbox.base_url())
    }

    fn pat(&self) -> String {
        self.sandbox.admin_pat().expose_secret().to_owned()
    }

    fn controls(&self) -> Controls {
        self.sandbox.controls()
    }

    async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> reqwest::Response {
        let mut request = self.client.post(self.url(path)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut request = self.client.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    async fn login(&self, email: &str, password: &str) -> reqwest::Response {
        let body =
            json!({"accountAlias": seed::ACCOUNT_ALIAS, "email": email, "password": password});
        self.post("/v3/accounts/login", None, &body).await
    }

    /// Logs the demo user in and returns `(accessToken, refreshToken)`.
    async fn demo_tokens(&self) -> (String, String) {
        let response = self.login(seed::DEMO_EMAIL, seed::DEMO_PASSWORD).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        (
            body["accessToken"].as_str().unwrap().to_owned(),
            body["refreshToken"].as_str().unwrap().to_owned(),
        )
    }

    async fn create_license(&self, body: &Value) -> reqwest::Response {
        self.post("/v3/licenses", Some(&self.pat()), body).await
    }
}

fn license_request(subscription_id: &str) -> Value {
    json!({
        "productId": seed::PRODUCT_ID,
        "licenseTemplateId": seed::LICENSE_TEMPLATE_ID,
        "userId": seed::DEMO_USER_ID,
        "metadata": [{"key": "stripe_subscription_id", "value": subscription_id, "viewPermissions": []}]
    })
}

async fn json_of(response: reqwest::Response) -> Value {
    response.json().await.unwrap()
}

// === accounts ===

#[tokio::test]
async fn login_with_the_account_alias_returns_a_jwt_and_a_refresh_token() {
    let app = start().await;

    let response = app.login(seed::DEMO_EMAIL, seed::DEMO_PASSWORD).await;

    assert_eq!(response.status(), StatusCode::OK);
    let body = json_of(response).await;
    let access_token = body["accessToken"].as_str().unwrap();
    assert!(access_token.starts_with("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."));
    assert_eq!(access_token.split('.').count(), 3);
    assert!(!body["refreshToken"].as_str().unwrap().is_empty());
    assert_eq!(app.controls().stats().logins, 1);
}

#[tokio::test]
async fn login_with_the_account_id_and_a_differently_cased_email_succeeds() {
    let app = start().await;
    let body = json!({"accountId": seed::ACCOUNT_ID, "email": "Demo@Example.com", "password": seed::DEMO_PASSWORD});

    let response = app.post("/v3/accounts/login", None, &body).await;

    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn login_without_an_account_is_refused_with_the_message_the_forum_reported() {
    let app = start().await;
    let body = json!({"email": seed::DEMO_EMAIL, "password": seed::DEMO_PASSWORD});

    let response = app.post("/v3/accounts/login", None, &body).await;

    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        json_of(response).await,
        json!({"message": "Authentication Failed. Please try again!"})
    );
}

#[tokio::test]
async fn login_to_an_unknown_account_or_with_a_wrong_password_is_a_400() {
    let app = start().await;
    let unknown_account =
        json!({"accountAlias": "nope", "email": seed::DEMO_EMAIL, "password": seed::DEMO_PASSWORD});

    let wrong_account = app.post("/v3/accounts/login", None, &unknown_account).await;
    let wrong_password = app.login(seed::DEMO_EMAIL, "not-the-password").await;
    let unknown_email = app.login("nobody@example.com", seed::DEMO_PASSWORD).await;

    assert_eq!(wrong_account.status(), StatusCode::BAD_REQUEST);
    for response in [wrong_password, unknown_email] {
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            json_of(response).await,
            json!({"message": "Authentication Failed. Please try again!", "code": "AUTHENTICATION_FAILED"})
        );
    }
}

#[tokio::test]
async fn login_bodies_that_break_the_schema_are_400_with_a_message() {
    let app = start().await;
    let too_long = format!("{}@example.com", "a".repeat(250));
    let bodies = [
        json!({"accountAlias": "sandbox", "email": seed::DEMO_EMAIL, "password": "short"}),
        json!({"accountAlias": "sandbox", "email": "", "password": seed::DEMO_PASSWORD}),
        json!({"accountAlias": "sandbox", "email": too_long, "password": seed::DEMO_PASSWORD}),
        json!({"accountAlias": "sandbox", "password": seed::DEMO_PASSWORD}),
        json!({"accountAlias": "sandbox", "email": seed::DEMO_EMAIL, "password": "x".repeat(257)}),
    ];
    for body in bodies {
        let response = app.post("/v3/accounts/login", None, &body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        assert!(json_of(response).await["message"].is_string());
    }

    let malformed = app
        .client
        .post(app.url("/v3/accounts/login"))
        .header("content-type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    assert!(json_of(malformed).await["message"].is_string());
}

#[tokio::test]
async fn login_records_the_last_login_time_shown_by_me() {
    let app = start().await;
    let (token, _) = app.demo_tokens().await;

    let profile = json_of(app.get("/v3/me", Some(&token)).await).await;

    assert_eq!(profile["id"], seed::DEMO_USER_ID);
    assert_eq!(profile["name"], "Demo User");
    assert_eq!(profile["firstName"], "Demo");
    assert_eq!(profile["lastName"], "User");
    assert_eq!(profile["role"], "user");
    assert_eq!(profile["twoFactorEnabled"], false);
    assert_eq!(profile["googleSsoEnabled"], false);
    assert!(profile["company"].is_string());
    let last_login = profile["lastLoginAt"].as_str().unwrap();
    assert_eq!(last_login.len(), "2025-05-06T08:49:17.9361143Z".len());
    assert!(last_login.ends_with('Z'));
    assert!(profile.get("metadata").is_none());
}

#[tokio::test]
async fn refreshing_rotates_the_refresh_token() {
    let app = start().await;
    let (_, refresh_token) = app.demo_tokens().await;
    let body = json!({"refreshToken": refresh_token});

    let first = app
        .post("/v3/accounts/login-refresh-token", None, &body)
        .await;
    let second = app
        .post("/v3/accounts/login-refresh-token", None, &body)
        .await;

    assert_eq!(first.status(), StatusCode::OK);
    let pair = json_of(first).await;
    assert_ne!(pair["refreshToken"], refresh_token.as_str());
    let me = app.get("/v3/me", pair["accessToken"].as_str()).await;
    assert_eq!(me.status(), StatusCode::OK);
    assert_eq!(second.status(), StatusCode::BAD_REQUEST);
    let unknown = json!({"refreshToken": "never-issued"});
    let unknown = app
        .post("/v3/accounts/login-refresh-token", None, &unknown)
        .await;
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn logout_revokes_the_access_token_and_its_refresh_token() {
    let app = start().await;
    let (token, refresh_token) = app.demo_tokens().await;

    let logout = app
        .post("/v3/accounts/logout", Some(&token), &json!({}))
        .await;

    assert_eq!(logout.status(), StatusCode::OK);
    assert!(logout.bytes().await.unwrap().is_empty());
    assert_eq!(
        app.get("/v3/me", Some(&token)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let refresh = json!({"refreshToken": refresh_token});
    let refreshed = app
        .post("/v3/accounts/login-refresh-token", None, &refresh)
        .await;
    assert_eq!(refreshed.status(), StatusCode::BAD_REQUEST);
    let again = app
        .post("/v3/accounts/logout", Some(&token), &json!({}))
        .await;
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
    let anonymous = app.post("/v3/accounts/logout", None, &json!({})).await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn expired_access_tokens_are_401_until_refreshed() {
    let app = start_with(SandboxOptions {
        rate_limit: None,
        access_token_ttl: Duration::from_millis(300),
        ..SandboxOptions::default()
    })
    .await;
    let (token, refresh_token) = app.demo_tokens().await;
    assert_eq!(
        app.get("/v3/me", Some(&token)).await.status(),
        StatusCode::OK
    );

    tokio::time::sleep(Duration::from_millis(400)).await;

    let expired = app.get("/v3/me", Some(&token)).await;
    assert_eq!(expired.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        json_of(expired).await,
        json!({"message": "Invalid access token or required permissions are missing!"})
    );
    let refresh = json!({"refreshToken": refresh_token});
    let refreshed = app
        .post("/v3/accounts/login-refresh-token", None, &refresh)
        .await;
    assert_eq!(refreshed.status(), StatusCode::OK);
}

#[tokio::test]
async fn expiring_all_access_tokens_from_the_controls_makes_them_401() {
    let app = start().await;
    let (token, _) = app.demo_tokens().await;

    app.controls().expire_all_access_tokens();

    assert_eq!(
        app.get("/v3/me", Some(&token)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get("/v3/me", Some(&app.pat())).await.status(),
        StatusCode::OK
    );
}

// === authorisation ===

#[tokio::test]
async fn a_user_token_is_forbidden_outside_me_with_the_forum_message() {
    let app = start().await;
    let (token, _) = app.demo_tokens().await;
    let user_path = format!("/v3/users/{}", seed::DEMO_USER_ID);

    for path in ["/v3/licenses", "/v3/users", user_path.as_str()] {
        let response = app.get(path, Some(&token)).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
        assert_eq!(
            json_of(response).await,
            json!({"message": "Invalid access token or required permissions are missing!"})
        );
    }
    let create = app
        .post("/v3/licenses", Some(&token), &license_request("sub_1"))
        .await;
    assert_eq!(create.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.controls().license_count(), 3);
}

#[tokio::test]
async fn missing_or_unknown_tokens_are_401() {
    let app = start().await;

    let missing = app.get("/v3/licenses", None).await;
    let unknown = app
        .get("/v3/me", Some("eyJhbGciOiJIUzI1NiJ9.e30.bogus"))
        .await;
    let not_bearer = app
        .client
        .get(app.url("/v3/me"))
        .header("authorization", "Basic abc")
        .send()
        .await
        .unwrap();

    for response in [missing, unknown, not_bearer] {
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn a_pat_reaches_only_what_its_scopes_allow() {
    let app = start().await;
    let read_only = app.controls().create_pat(&["license:read"]);
    let read_only = read_only.expose_secret();

    let list = app.get("/v3/licenses", Some(read_only)).await;
    let create = app
        .post("/v3/licenses", Some(read_only), &license_request("sub_1"))
        .await;
    let users = app.get("/v3/users", Some(read_only)).await;

    assert_eq!(list.status(), StatusCode::OK);
    assert_eq!(create.status(), StatusCode::FORBIDDEN);
    assert_eq!(users.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn me_with_a_pat_returns_the_pat_owners_profile() {
    let app = start().await;

    let profile = json_of(app.get("/v3/me", Some(&app.pat())).await).await;

    assert_eq!(profile["id"], seed::ADMIN_USER_ID);
    assert_eq!(profile["role"], "admin");
    assert_eq!(profile["lastLoginAt"], Value::Null);
}

// === me/licenses ===

#[tokio::test]
async fn my_licenses_are_the_users_own_oldest_first_in_the_reduced_view() {
    let app = start().await;
    let (token, _) = app.demo_tokens().await;

    let licenses = json_of(app.get("/v3/me/licenses", Some(&token)).await).await;

    let licenses = licenses.as_array().unwrap();
    assert_eq!(licenses.len(), 2);
    assert_eq!(licenses[0]["id"], seed::DEMO_LICENSE_IDS[0]);
    assert_eq!(licenses[1]["id"], seed::DEMO_LICENSE_IDS[1]);
    let first = &licenses[0];
    assert_eq!(first["product"], json!({"displayName": seed::PRODUCT_NAME}));
    assert_eq!(first["type"], "node-locked");
    assert_eq!(first["subscriptionInterval"], "P1Y");
    assert!(first.get("productId").is_none());
    assert!(first.get("userId").is_none());
    assert!(first.get("user").is_none());
    let metadata = first["metadata"].as_array().unwrap();
    assert_eq!(
        metadata.len(),
        1,
        "only user-visible metadata: {metadata:?}"
    );
    assert_eq!(metadata[0]["key"], "edition");
    assert!(metadata[0].get("viewPermissions").is_none());

    let other = app.login(seed::OTHER_EMAIL, seed::OTHER_PASSWORD).await;
    let other_token = json_of(other).await["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let theirs = json_of(app.get("/v3/me/licenses", Some(&other_token)).await).await;
    assert_eq!(theirs.as_array().unwrap().len(), 1);
    assert_eq!(theirs[0]["id"], seed::OTHER_LICENSE_ID);
}

#[tokio::test]
async fn my_licenses_page_and_filter_by_product() {
    let app = start().await;
    let (token, _) = app.demo_tokens().await;

    let second_page = json_of(
        app.get("/v3/me/licenses?page=2&limit=1", Some(&token))
            .await,
    )
    .await;
    let past_the_end = json_of(
        app.get("/v3/me/licenses?page=3&limit=1", Some(&token))
            .await,
    )
    .await;
    let same_product = format!("/v3/me/licenses?productId[eq]={}", seed::PRODUCT_ID);
    let same_product = json_of(app.get(&same_product, Some(&token)).await).await;
    let other_product = "/v3/me/licenses?productId%5Beq%5D=00000000-0000-4000-8000-000000000000";
    let other_product = json_of(app.get(other_product, Some(&token)).await).await;

    assert_eq!(second_page.as_array().unwrap().len(), 1);
    assert_eq!(second_page[0]["id"], seed::DEMO_LICENSE_IDS[1]);
    assert_eq!(past_the_end, json!([]));
    assert_eq!(same_product.as_array().unwrap().len(), 2);
    assert_eq!(other_product, json!([]));
}

#[tokio::test]
async fn list_paging_out_of_range_or_non_numeric_is_a_400() {
    let app = start().await;
    let (token, _) = app.demo_tokens().await;

    for query in [
        "limit=0",
        "limit=101",
        "limit=abc",
        "page=0",
        "page=-1",
        "page=x",
    ] {
        let response = app
            .get(&format!("/v3/me/licenses?{query}"), Some(&token))
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        assert!(json_of(response).await["message"].is_string());
    }
    let at_the_limit = app.get("/v3/me/licenses?limit=100", Some(&token)).await;
    assert_eq!(at_the_limit.status(), StatusCode::OK);
}

#[tokio::test]
async fn another_users_license_is_404_through_me() {
    let app = start().await;
    let (token, _) = app.demo_tokens().await;

    let own = app
        .get(
            &format!("/v3/me/licenses/{}", seed::DEMO_LICENSE_IDS[0]),
            Some(&token),
        )
        .await;
    let foreign = app
        .get(
            &format!("/v3/me/licenses/{}", seed::OTHER_LICENSE_ID),
            Some(&token),
        )
        .await;

    assert_eq!(own.status(), StatusCode::OK);
    assert_eq!(foreign.status(), StatusCode::NOT_FOUND);
    assert!(json_of(foreign).await["message"].is_string());
}

// === users ===

#[tokio::test]
async fn creating_a_user_returns_201_and_a_duplicate_email_is_409() {
    let app = start().await;
    let body = json!({"email": "new@example.com", "firstName": "New", "lastName": "Buyer", "password": "Xy7-random-pass", "role": "user"});

    let created = app.post("/v3/users", Some(&app.pat()), &body).await;
    let duplicate_body =
        json!({"email": "NEW@example.com", "firstName": "Again", "password": "Xy7-random-pass"});
    let duplicate = app
        .post("/v3/users", Some(&app.pat()), &duplicate_body)
        .await;

    assert_eq!(created.status(), StatusCode::CREATED);
    let user = json_of(created).await;
    assert_eq!(user["name"], "New Buyer");
    assert_eq!(user["roles"], json!(["user"]));
    assert_eq!(user["metadata"], json!([]));
    assert!(uuid::Uuid::parse_str(user["id"].as_str().unwrap()).is_ok());
    assert_eq!(duplicate.status(), StatusCode::CONFLICT);
    assert_eq!(
        json_of(duplicate).await,
        json!({"message": "Email address is already taken!", "code": "DUPLICATE_FIELD_VALUE"})
    );
    assert_eq!(app.controls().stats().users_created, 1);
    assert_eq!(
        app.controls()
            .user_by_email("new@EXAMPLE.com")
            .unwrap()
            .first_name,
        "New"
    );

    let login = app.login("new@example.com", "Xy7-random-pass").await;
    assert_eq!(login.status(), StatusCode::OK);
}

#[tokio::test]
async fn creating_a_user_validates_required_fields() {
    let app = start().await;
    let bodies = [
        json!({"firstName": "A", "password": "long-enough"}),
        json!({"email": "a@example.com", "password": "long-enough"}),
        json!({"email": "a@example.com", "firstName": "A"}),
        json!({"email": "a@example.com", "firstName": "A", "password": "short"}),
        json!({"email": "not-an-email", "firstName": "A", "password": "long-enough"}),
        json!({"email": "a@example.com", "firstName": "", "password": "long-enough"}),
    ];
    for body in bodies {
        let response = app.post("/v3/users", Some(&app.pat()), &body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
    }
    assert_eq!(app.controls().users().len(), 3);
}

#[tokio::test]
async fn users_are_found_by_email_in_both_filter_forms_and_by_id() {
    let app = start().await;
    let pat = app.pat();

    let by_operator = json_of(
        app.get("/v3/users?email[eq]=demo@example.com", Some(&pat))
            .await,
    )
    .await;
    let by_plain = json_of(
        app.get("/v3/users?email=DEMO%40example.com", Some(&pat))
            .await,
    )
    .await;
    let nobody = json_of(
        app.get("/v3/users?email[eq]=nobody@example.com", Some(&pat))
            .await,
    )
    .await;
    let by_id = app
        .get(&format!("/v3/users/{}", seed::OTHER_USER_ID), Some(&pat))
        .await;
    let unknown_id = app
        .get("/v3/users/00000000-0000-4000-8000-000000000000", Some(&pat))
        .await;

    assert_eq!(by_operator.as_array().unwrap().len(), 1);
    assert_eq!(by_operator[0]["id"], seed::DEMO_USER_ID);
    assert_eq!(by_plain, by_operator);
    assert_eq!(nobody, json!([]));
    assert_eq!(json_of(by_id).await["email"], seed::OTHER_EMAIL);
    assert_eq!(unknown_id.status(), StatusCode::NOT_FOUND);
}

// === licenses ===

#[tokio::test]
async fn identical_license_posts_create_two_licenses_like_the_real_api() {
    let app = start().await;

    let first = app.create_license(&license_request("sub_dup")).await;
    let second = app.create_license(&license_request("sub_dup")).await;

    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(second.status(), StatusCode::CREATED);
    let (first, second) = (json_of(first).await, json_of(second).await);
    assert_ne!(first["id"], second["id"]);
    assert_ne!(first["key"], second["key"]);
    assert_eq!(
        app.controls()
            .licenses_with_metadata("stripe_subscription_id", "sub_dup")
            .len(),
        2
    );
    assert_eq!(app.controls().stats().licenses_created, 2);
    assert_eq!(app.controls().license_count(), 5);
}

#[tokio::test]
async fn a_created_license_has_the_admin_shape() {
    let app = start().await;

    let license = json_of(app.create_license(&license_request("sub_shape")).await).await;

    assert_eq!(license["productId"], seed::PRODUCT_ID);
    assert_eq!(license["userId"], seed::DEMO_USER_ID);
    assert_eq!(license["user"]["email"], seed::DEMO_EMAIL);
    assert_eq!(license["type"], "node-locked");
    assert_eq!(license["revoked"], false);
    assert_eq!(license["perpetual"], false);
    assert_eq!(license["subscriptionInterval"], "P1Y");
    assert_eq!(license["totalActivations"], 0);
    assert_eq!(license["fingerprintMatchingStrategy"], "fuzzy");
    assert_eq!(license["tags"], json!([]));
    let key = license["key"].as_str().unwrap();
    assert_eq!(key.len(), "0A2035-E8A2A3-4D31B7-8FF9C6-81A6CA-539E54".len());
    let metadata = &license["metadata"][0];
    assert_eq!(metadata["key"], "stripe_subscription_id");
    assert_eq!(metadata["value"], "sub_shape");
    assert_eq!(metadata["viewPermissions"], json!([]));
    assert_eq!(metadata["visible"], false);
    for field in ["createdAt", "updatedAt", "expiresAt"] {
        let value = license[field].as_str().unwrap();
        assert!(
            value.len() == 28 && value.ends_with('Z') && value.as_bytes()[19] == b'.',
            "{field}: {value}"
        );
    }
}

#[tokio::test]
async fn licenses_are_found_by_a_metadata_entry_with_both_key_and_value() {
    let app = start().await;
    app.create_license(&license_request("sub_a")).await;
    app.create_license(&license_request("sub_b")).await;
    let mut mixed = license_request("sub_other");
    mixed["metadata"] = json!([
        {"key": "stripe_subscription_id", "value": "sub_x"},
        {"key": "other_key", "value": "sub_a"}
    ]);
    app.create_license(&mixed).await;
    let pat = app.pat();

    let found = "/v3/licenses?metadata.key[eq]=stripe_subscription_id&metadata.value[eq]=sub_a";
    let found = json_of(app.get(found, Some(&pat)).await).await;
    let legacy = "/v3/licenses?metadataKey=stripe_subscription_id&metadataValue=sub_b";
    let legacy = json_of(app.get(legacy, Some(&pat)).await).await;
    let by_user = format!("/v3/licenses?userId={}&limit=100", seed::OTHER_USER_ID);
    let by_user = json_of(app.get(&by_user, Some(&pat)).await).await;

    assert_eq!(found.as_array().unwrap().len(), 1);
    assert_eq!(found[0]["metadata"][0]["value"], "sub_a");
    assert_eq!(legacy.as_array().unwrap().len(), 1);
    assert_eq!(by_user.as_array().unwrap().len(), 1);
    assert_eq!(by_user[0]["id"], seed::OTHER_LICENSE_ID);
    let one = app
        .get(
            &format!("/v3/licenses/{}", seed::OTHER_LICENSE_ID),
            Some(&pat),
        )
        .await;
    assert_eq!(json_of(one).await["user"]["email"], seed::OTHER_EMAIL);
    let missing = app
        .get(
            "/v3/licenses/00000000-0000-4000-8000-000000000000",
            Some(&pat),
        )
        .await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn license_bodies_with_unknown_ids_or_broken_limits_are_400() {
    let app = start().await;
    let mut unknown_product = license_request("sub_1");
    unknown_product["productId"] = json!("00000000-0000-4000-8000-000000000000");
    let mut unknown_user = license_request("sub_1");
    unknown_user["userId"] = json!("00000000-0000-4000-8000-000000000000");
    let mut too_much_metadata = license_request("sub_1");
    too_much_metadata["metadata"] = json!(
        (0..51)
            .map(|i| json!({"key": format!("k{i}"), "value": "v"}))
            .collect::<Vec<_>>()
    );
    let mut long_value = license_request("sub_1");
    long_value["metadata"][0]["value"] = json!("v".repeat(4097));
    let mut empty_key = license_request("sub_1");
    empty_key["metadata"][0]["key"] = json!("");
    let no_product = json!({"userId": seed::DEMO_USER_ID});

    let response = app.create_license(&unknown_product).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(response).await["code"], "INVALID_PRODUCT_ID");
    let response = app.create_license(&unknown_user).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_of(response).await["code"], "INVALID_USER_ID");
    for body in [too_much_metadata, long_value, empty_key, no_product] {
        assert_eq!(
            app.create_license(&body).await.status(),
            StatusCode::BAD_REQUEST
        );
    }
    assert_eq!(app.controls().license_count(), 3);
}

// === metadata, sorting and filters as S1 declares them ===

#[tokio::test]
async fn metadata_without_a_value_is_a_400_as_s1_requires_key_and_value() {
    let app = start().await;
    let mut license = license_request("sub_1");
    license["metadata"] = json!([{"key": "no_value"}]);
    let user = json!({
        "email": "novalue@example.com", "firstName": "No", "password": "long-enough",
        "metadata": [{"key": "no_value"}]
    });
    let mut empty_value = license_request("sub_1");
    empty_value["metadata"] = json!([{"key": "empty", "value": ""}]);

    let license = app.create_license(&license).await;
    let user = app.post("/v3/users", Some(&app.pat()), &user).await;
    let empty_value = app.create_license(&empty_value).await;

    assert_eq!(license.status(), StatusCode::BAD_REQUEST);
    assert!(
        json_of(license).await["message"]
            .as_str()
            .unwrap()
            .contains("metadata.value")
    );
    assert_eq!(user.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        empty_value.status(),
        StatusCode::CREATED,
        "empty is a value"
    );
}

#[tokio::test]
async fn deprecated_visible_true_means_access_on_activation_not_the_user_view() {
    let app = start().await;
    let mut request = license_request("sub_visible");
    request["metadata"] = json!([{"key": "legacy", "value": "v", "visible": true}]);
    let (token, _) = app.demo_tokens().await;

    let license = json_of(app.create_license(&request).await).await;
    let mine = json_of(app.get("/v3/me/licenses?limit=100", Some(&token)).await).await;

    assert_eq!(
        license["metadata"][0]["viewPermissions"],
        json!(["activation"])
    );
    assert_eq!(license["metadata"][0]["visible"], true);
    let created = mine
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["id"] == license["id"])
        .unwrap();
    assert_eq!(created["metadata"], json!([]), "not shown to the user");
}

#[tokio::test]
async fn lists_honour_sort_and_refuse_unknown_sort_fields() {
    let app = start().await;
    let pat = app.pat();
    let (token, _) = app.demo_tokens().await;

    let newest_first = json_of(app.get("/v3/licenses?sort=-createdAt", Some(&pat)).await).await;
    let oldest_first = json_of(app.get("/v3/licenses?sort=%2BcreatedAt", Some(&pat)).await).await;
    let mine = json_of(
        app.get("/v3/me/licenses?sort=-createdAt", Some(&token))
            .await,
    )
    .await;
    let users = json_of(app.get("/v3/users?sort=-email", Some(&pat)).await).await;
    let unknown = app.get("/v3/licenses?sort=-colour", Some(&pat)).await;
    let unsigned = app.get("/v3/licenses?sort=createdAt", Some(&pat)).await;

    let ids = |list: &Value| -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|entry| entry["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let mut reversed = ids(&oldest_first);
    reversed.reverse();
    assert_eq!(ids(&newest_first), reversed);
    assert_eq!(ids(&oldest_first)[0], seed::DEMO_LICENSE_IDS[0]);
    assert_eq!(
        ids(&mine),
        [seed::DEMO_LICENSE_IDS[1], seed::DEMO_LICENSE_IDS[0]]
    );
    assert_eq!(users[0]["email"], seed::OTHER_EMAIL);
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
    assert_eq!(unsigned.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_filter_without_its_operator_or_one_the_sandbox_lacks_is_a_400_not_everything() {
    let app = start().await;
    let pat = app.pat();
    let (token, _) = app.demo_tokens().await;

    let no_operator = app
        .get(
            "/v3/licenses?metadata.key=stripe_subscription_id",
            Some(&pat),
        )
        .await;
    let plain_product = app
        .get(
            &format!("/v3/me/licenses?productId={}", seed::PRODUCT_ID),
            Some(&token),
        )
        .await;
    let unsupported = app.get("/v3/licenses?key[cn]=0A20", Some(&pat)).await;
    let legacy = app
        .get(
            "/v3/licenses?metadataKey=stripe_subscription_id",
            Some(&pat),
        )
        .await;

    assert_eq!(no_operator.status(), StatusCode::BAD_REQUEST);
    assert!(
        json_of(no_operator).await["message"]
            .as_str()
            .unwrap()
            .contains("metadata.key[eq]")
    );
    assert_eq!(plain_product.status(), StatusCode::BAD_REQUEST);
    assert_eq!(unsupported.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        legacy.status(),
        StatusCode::OK,
        "the documented flat names stay"
    );
}

// === products and accounts ===

#[tokio::test]
async fn products_and_the_account_are_read_with_their_scopes_only() {
    let app = start().await;
    let pat = app.pat();
    let no_scopes = app.controls().create_pat(&["license:read"]);
    let no_scopes = no_scopes.expose_secret();
    let (user_token, _) = app.demo_tokens().await;

    let product = app
        .get(&format!("/v3/products/{}", seed::PRODUCT_ID), Some(&pat))
        .await;
    let unknown_product = app
        .get(
            "/v3/products/00000000-0000-4000-8000-000000000000",
            Some(&pat),
        )
        .await;
    let account = app
        .get(&format!("/v3/accounts/{}", seed::ACCOUNT_ID), Some(&pat))
        .await;
    let other_account = app
        .get(
            "/v3/accounts/00000000-0000-4000-8000-000000000000",
            Some(&pat),
        )
        .await;
    let product_without_scope = app
        .get(
            &format!("/v3/products/{}", seed::PRODUCT_ID),
            Some(no_scopes),
        )
        .await;
    let account_without_scope = app
        .get(
            &format!("/v3/accounts/{}", seed::ACCOUNT_ID),
            Some(no_scopes),
        )
        .await;
    let account_as_user = app
        .get(
            &format!("/v3/accounts/{}", seed::ACCOUNT_ID),
            Some(&user_token),
        )
        .await;

    assert_eq!(product.status(), StatusCode::OK);
    let product = json_of(product).await;
    assert_eq!(product["displayName"], seed::PRODUCT_NAME);
    assert_eq!(product["licenseTemplateId"], seed::LICENSE_TEMPLATE_ID);
    assert_eq!(product["totalLicenses"], 3);
    assert_eq!(unknown_product.status(), StatusCode::NOT_FOUND);
    assert_eq!(account.status(), StatusCode::OK);
    assert_eq!(json_of(account).await["accountAlias"], seed::ACCOUNT_ALIAS);
    assert_eq!(other_account.status(), StatusCode::NOT_FOUND);
    assert_eq!(product_without_scope.status(), StatusCode::FORBIDDEN);
    assert_eq!(account_without_scope.status(), StatusCode::FORBIDDEN);
    assert_eq!(account_as_user.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn every_listed_operation_is_routed_to_a_handler() {
    let app = start().await;
    let fallback = json_of(app.get("/v3/nothing-here", None).await).await;

    for (method, path) in API_OPERATIONS {
        let path = path.replace("{id}", "00000000-0000-4000-8000-000000000000");
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let response = app
            .client
            .request(method.clone(), app.url(&path))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = json_of(response).await;
        assert!(
            status != StatusCode::METHOD_NOT_ALLOWED && body != fallback,
            "{method} {path} is not routed: {status} {body}"
        );
    }
}

#[tokio::test]
async fn request_and_response_bodies_are_recorded_and_redacted_in_debug() {
    let app = start().await;

    app.login(seed::DEMO_EMAIL, seed::DEMO_PASSWORD).await;

    let login = &app.controls().requests()[0];
    let sent: Value = serde_json::from_slice(&login.body).unwrap();
    assert_eq!(sent["password"], seed::DEMO_PASSWORD);
    let answered: Value = serde_json::from_slice(&login.response_body).unwrap();
    assert!(answered["accessToken"].is_string());
    let debug = format!("{login:?}");
    assert!(!debug.contains(seed::DEMO_PASSWORD), "{debug}");
    assert!(!debug.contains(answered["accessToken"].as_str().unwrap()));
}

// === routing ===

#[tokio::test]
async fn unknown_paths_are_404_and_wrong_methods_405_both_json() {
    let app = start().await;

    let unknown = app.get("/v3/nothing-here", None).await;
    let wrong_method = app.get("/v3/accounts/login", None).await;

    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert!(json_of(unknown).await["message"].is_string());
    assert_eq!(wrong_method.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(json_of(wrong_method).await["message"].is_string());
}

// === recording ===

#[tokio::test]
async fn requests_are_recorded_with_auth_kind_request_id_and_status() {
    let app = start().await;
    let (token, _) = app.demo_tokens().await;
    app.controls().clear_requests();

    app.client
        .get(app.url("/v3/me/licenses?limit=5"))
        .bearer_auth(&token)
        .header("x-request-id", "req-42")
        .send()
        .await
        .unwrap();
    app.get("/v3/licenses", Some(&app.pat())).await;
    app.get("/v3/me", Some("garbage")).await;
    app.get("/v3/me", None).await;
    app.get("/__sandbox/stats", None).await;

    let requests = app.controls().requests();
    assert_eq!(requests.len(), 4, "control requests are not recorded");
    assert_eq!(requests[0].method, "GET");
    assert_eq!(requests[0].path, "/v3/me/licenses");
    assert_eq!(requests[0].query.as_deref(), Some("limit=5"));
    assert_eq!(requests[0].request_id.as_deref(), Some("req-42"));
    assert_eq!(requests[0].status, Some(200));
    assert_eq!(
        requests[0].auth,
        AuthKind::User {
            user_id: seed::DEMO_USER_ID.to_owned(),
            email: seed::DEMO_EMAIL.to_owned()
        }
    );
    assert_eq!(requests[0].bearer_token.as_deref(), Some(token.as_str()));
    assert!(
        !format!("{:?}", requests[0]).contains(&token),
        "debug output redacts the token"
    );
    assert_eq!(requests[1].auth, AuthKind::Pat);
    assert_eq!(requests[2].auth, AuthKind::Invalid);
    assert_eq!(requests[2].status, Some(401));
    assert_eq!(requests[3].auth, AuthKind::None);
}

#[tokio::test]
async fn accepted_connections_are_counted_and_reused_connections_are_not() {
    let app = start().await;
    for _ in 0..3 {
        app.get("/v3/me", None).await;
    }
    let stats = app.controls().stats();
    assert_eq!(stats.connections_accepted, 1, "one keep-alive connection");
    assert_eq!(stats.requests, 3);

    let fresh = reqwest::Client::new();
    fresh.get(app.url("/__sandbox/stats")).send().await.unwrap();
    let counted: Value = fresh
        .get(app.url("/__sandbox/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        counted["connectionsAccepted"], 2,
        "control connections count too"
    );
}

// === rate limit ===

#[tokio::test]
async fn the_rate_limit_answers_429_with_headers_and_retry_after() {
    let app = start_with(SandboxOptions {
        rate_limit: Some(RateLimit {
            max_requests: 3,
            window: Duration::from_secs(5),
        }),
        ..SandboxOptions::default()
    })
    .await;

    let mut responses = Vec::new();
    for _ in 0..4 {
        responses.push(app.get("/v3/me", None).await);
    }
    let control = app.get("/__sandbox/stats", None).await;

    let first = &responses[0];
    assert_eq!(first.headers()["x-rate-limit-limit"], "5s");
    assert_eq!(first.headers()["x-rate-limit-remaining"], "2");
    let reset = first.headers()["x-rate-limit-reset"].to_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(reset).is_ok(),
        "{reset}"
    );
    assert_eq!(responses[2].headers()["x-rate-limit-remaining"], "0");
    let refused = responses.pop().unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=5).contains(&retry_after));
    assert_eq!(refused.headers()["x-rate-limit-remaining"], "0");
    assert_eq!(
        json_of(refused).await,
        json!({"message": "API calls quota exceeded! maximum admitted 3 per 5s."})
    );
    assert_eq!(control.status(), StatusCode::OK, "controls are exempt");
    let stats = app.controls().stats();
    assert_eq!(
        (stats.responses_429, stats.rate_limited, stats.requests),
        (1, 1, 4)
    );
}

#[tokio::test]
async fn the_rate_limit_is_on_by_default_and_switchable_at_run_time() {
    let app = start_with(SandboxOptions::default()).await;
    assert_eq!(
        app.controls().rate_limit(),
        Some(RateLimit::cryptlex_default())
    );
    let first = app.get("/v3/me", None).await;
    assert_eq!(first.headers()["x-rate-limit-remaining"], "49");

    app.controls().set_rate_limit(Some(RateLimit {
        max_requests: 1,
        window: Duration::from_millis(300),
    }));
    assert_eq!(
        app.get("/v3/me", None).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get("/v3/me", None).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        app.get("/v3/me", None).await.status(),
        StatusCode::UNAUTHORIZED
    );

    app.controls().set_rate_limit(None);
    let unlimited = app.get("/v3/me", None).await;
    assert!(unlimited.headers().get("x-rate-limit-limit").is_none());
}

// === faults ===

#[tokio::test]
async fn a_delay_fault_slows_the_answer_and_then_answers_normally() {
    let app = start().await;
    app.controls()
        .add_fault(
            FaultRule::once(FaultAction::Delay(Duration::from_millis(300))).path_prefix("/v3/me"),
        )
        .unwrap();

    let started = Instant::now();
    let slow = app.get("/v3/me", Some(&app.pat())).await;
    let slow_elapsed = started.elapsed();
    let fast = app.get("/v3/me", Some(&app.pat())).await;

    assert_eq!(slow.status(), StatusCode::OK);
    assert!(slow_elapsed >= Duration::from_millis(300));
    assert_eq!(fast.status(), StatusCode::OK);
    assert_eq!(app.controls().requests()[0].fault, Some(FaultKind::Delay));
}

#[tokio::test]
async fn a_respond_fault_replaces_the_answer_for_its_number_of_times() {
    let app = start().await;
    let html = FaultAction::body(
        503,
        "text/html",
        "<html><body>Service Unavailable</body></html>",
    );
    app.controls()
        .add_fault(
            FaultRule::n_times(2, html)
                .method(Method::POST)
                .path_prefix("/v3/licenses"),
        )
        .unwrap();
    app.controls()
        .add_fault(
            FaultRule::once(
                FaultAction::json(429, &json!({"message": "slow down"}))
                    .with_header("Retry-After", "7"),
            )
            .path_prefix("/v3/users"),
        )
        .unwrap();

    let first = app.create_license(&license_request("sub_1")).await;
    let second = app.create_license(&license_request("sub_1")).await;
    let third = app.create_license(&license_request("sub_1")).await;
    let limited = app.get("/v3/users", Some(&app.pat())).await;

    assert_eq!(first.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(first.headers()["content-type"], "text/html");
    assert!(first.text().await.unwrap().contains("Service Unavailable"));
    assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(third.status(), StatusCode::CREATED);
    assert_eq!(
        app.controls().license_count(),
        4,
        "only the third reached the handler"
    );
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers()["retry-after"], "7");
    assert_eq!(app.controls().stats().responses_429, 1);
    assert_eq!(app.controls().stats().faults_applied, 3);
}

#[tokio::test]
async fn a_respond_fault_can_send_non_utf8_and_empty_bodies_and_redirects() {
    let app = start().await;
    app.controls()
        .add_fault(FaultRule::once(FaultAction::body(
            200,
            "application/json",
            vec![0xff, 0xfe, b'{'],
        )))
        .unwrap();
    app.controls()
        .add_fault(FaultRule::once(FaultAction::empty(502)))
        .unwrap();
    app.controls()
        .add_fault(FaultRule::once(
            FaultAction::empty(307).with_header("Location", "http://elsewhere.invalid/v3/me"),
        ))
        .unwrap();

    let garbage = app.get("/v3/me", None).await;
    assert_eq!(garbage.status(), StatusCode::OK);
    assert_eq!(garbage.bytes().await.unwrap().as_ref(), &[0xff, 0xfe, b'{']);
    let empty = app.get("/v3/me", None).await;
    assert_eq!(empty.status(), StatusCode::BAD_GATEWAY);
    assert!(empty.bytes().await.unwrap().is_empty());
    let redirect = app.get("/v3/me", None).await;
    assert_eq!(redirect.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(
        redirect.headers()["location"],
        "http://elsewhere.invalid/v3/me"
    );
}

#[tokio::test]
async fn reset_before_response_aborts_the_connection_without_doing_the_work() {
    let app = start().await;
    app.controls()
        .add_fault(FaultRule::once(FaultAction::ResetBeforeResponse).method(Method::POST))
        .unwrap();

    let result = app
        .client
        .post(app.url("/v3/licenses"))
        .bearer_auth(app.pat())
        .json(&license_request("sub_reset"))
        .send()
        .await;

    assert!(
        result.is_err(),
        "expected a connection error, got {result:?}"
    );
    assert_eq!(app.controls().license_count(), 3);
    let recorded = app.controls().requests();
    assert_eq!(recorded[0].fault, Some(FaultKind::ResetBeforeResponse));
    assert_eq!(recorded[0].status, None);
    assert_eq!(app.controls().stats().connections_reset, 1);
    let retry = app.create_license(&license_request("sub_reset")).await;
    assert_eq!(retry.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn reset_after_processing_creates_the_license_but_loses_the_reply() {
    let app = start().await;
    app.controls()
        .add_fault(FaultRule::once(FaultAction::ResetAfterProcessing).path_prefix("/v3/licenses"))
        .unwrap();

    let result = app
        .client
        .post(app.url("/v3/licenses"))
        .bearer_auth(app.pat())
        .json(&license_request("sub_lost"))
        .send()
        .await;

    assert!(
        result.is_err(),
        "expected a connection error, got {result:?}"
    );
    let created = app
        .controls()
        .licenses_with_metadata("stripe_subscription_id", "sub_lost");
    assert_eq!(created.len(), 1, "the upstream did the work");
    let recorded = app.controls().requests();
    assert_eq!(recorded[0].status, Some(201));
    assert_eq!(recorded[0].fault, Some(FaultKind::ResetAfterProcessing));
    let lookup = "/v3/licenses?metadata.key[eq]=stripe_subscription_id&metadata.value[eq]=sub_lost";
    let found = json_of(app.get(lookup, Some(&app.pat())).await).await;
    assert_eq!(found[0]["id"], created[0].id.as_str());
}

#[tokio::test]
async fn delay_after_processing_does_the_work_at_once_and_answers_late() {
    let app = start().await;
    let delay = Duration::from_millis(600);
    app.controls()
        .add_fault(
            FaultRule::once(FaultAction::DelayAfterProcessing(delay))
                .method(Method::POST)
                .path_prefix("/v3/licenses"),
        )
        .unwrap();

    let started = Instant::now();
    let request = app
        .client
        .post(app.url("/v3/licenses"))
        .bearer_auth(app.pat())
        .json(&license_request("sub_late"))
        .send();
    let pending = tokio::spawn(request);
    let mut created = Vec::new();
    while created.is_empty() && started.elapsed() < delay {
        tokio::time::sleep(Duration::from_millis(10)).await;
        created = app
            .controls()
            .licenses_with_metadata("stripe_subscription_id", "sub_late");
    }
    let seen_after = started.elapsed();
    let response = pending.await.unwrap().unwrap();
    let answered_after = started.elapsed();

    assert_eq!(created.len(), 1, "the license exists before the reply");
    assert!(
        seen_after < delay,
        "the work was done before the delay ran out"
    );
    assert!(answered_after >= delay, "the reply waited for the delay");
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(json_of(response).await["id"], created[0].id.as_str());
    let recorded = app.controls().requests();
    assert_eq!(recorded[0].status, Some(201));
    assert_eq!(recorded[0].fault, Some(FaultKind::DelayAfterProcessing));
    assert_eq!(app.controls().license_count(), 4);
}

#[tokio::test]
async fn reset_is_a_tcp_reset_not_a_clean_close() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let app = start().await;
    app.controls()
        .add_fault(FaultRule::once(FaultAction::ResetBeforeResponse))
        .unwrap();
    let mut stream = tokio::net::TcpStream::connect(app.sandbox.local_addr())
        .await
        .unwrap();

    stream
        .write_all(b"GET /v3/me HTTP/1.1\r\nhost: sandbox\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = Vec::new();
    let read = stream.read_to_end(&mut buffer).await;

    let error = read.expect_err("a reset is an error, not an EOF");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset);
    assert!(buffer.is_empty());
}

#[tokio::test]
async fn truncate_body_sends_less_than_the_content_length_promises() {
    let app = start().await;
    app.controls()
        .add_fault(FaultRule::once(FaultAction::TruncateBody).path_prefix("/v3/me"))
        .unwrap();

    let response = app.get("/v3/me", Some(&app.pat())).await;

    assert_eq!(response.status(), StatusCode::OK);
    let promised = response.content_length().unwrap();
    assert!(promised > 0);
    assert!(response.bytes().await.is_err(), "the body must end early");
    let intact = app.get("/v3/me", Some(&app.pat())).await;
    assert!(intact.json::<Value>().await.is_ok());
}

#[tokio::test]
async fn clearing_and_removing_faults_restores_normal_answers() {
    let app = start().await;
    let id = app
        .controls()
        .add_fault(FaultRule::always(FaultAction::empty(500)))
        .unwrap();
    assert_eq!(
        app.get("/v3/me", None).await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(
        app.get("/v3/me", None).await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );

    assert!(app.controls().remove_fault(id));
    assert_eq!(
        app.get("/v3/me", None).await.status(),
        StatusCode::UNAUTHORIZED
    );

    app.controls()
        .add_fault(FaultRule::always(FaultAction::empty(500)))
        .unwrap();
    app.controls().clear_faults();
    assert_eq!(
        app.get("/v3/me", None).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

// === HTTP controls ===

#[tokio::test]
async fn the_http_controls_add_faults_and_report_requests_and_stats() {
    let app = start().await;
    let rule = json!({
        "method": "GET",
        "pathPrefix": "/v3/me",
        "times": 1,
        "action": {"kind": "respond", "status": 504, "contentType": "application/json",
                   "body": "{\"message\":\"gateway timeout\"}", "headers": {"x-test": "yes"}}
    });

    let added = app.post("/__sandbox/faults", None, &rule).await;
    let faulted = app.get("/v3/me", None).await;
    let requests = json_of(app.get("/__sandbox/requests", None).await).await;
    let stats = json_of(app.get("/__sandbox/stats", None).await).await;
    let bad_rule = app
        .post(
            "/__sandbox/faults",
            None,
            &json!({"action": {"kind": "explode"}}),
        )
        .await;
    let pat = json_of(
        app.post("/__sandbox/pats", None, &json!({"scopes": ["user:read"]}))
            .await,
    )
    .await;
    let users = app.get("/v3/users", pat["token"].as_str()).await;

    assert_eq!(added.status(), StatusCode::CREATED);
    assert!(json_of(added).await["id"].is_u64());
    assert_eq!(faulted.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(faulted.headers()["x-test"], "yes");
    assert_eq!(requests[0]["path"], "/v3/me");
    assert_eq!(requests[0]["status"], 504);
    assert_eq!(requests[0]["fault"], "respond");
    assert_eq!(requests[0]["auth"], json!({"kind": "none"}));
    assert_eq!(stats["requests"], 1);
    assert_eq!(stats["faultsApplied"], 1);
    assert_eq!(bad_rule.status(), StatusCode::BAD_REQUEST);
    assert_eq!(users.status(), StatusCode::OK);

    let reset_rule = json!({"action": {"kind": "resetAfterProcessing"}});
    app.post("/__sandbox/faults", None, &reset_rule).await;
    let deleted = app
        .client
        .delete(app.url("/__sandbox/faults"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.get("/v3/me", None).await.status(),
        StatusCode::UNAUTHORIZED
    );

    let limit = json!({"maxRequests": 1, "windowMs": 60000});
    let set = app
        .client
        .put(app.url("/__sandbox/rate-limit"))
        .json(&limit)
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), StatusCode::NO_CONTENT);
    app.get("/v3/me", None).await;
    assert_eq!(
        app.get("/v3/me", None).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );

    let cleared = app
        .client
        .delete(app.url("/__sandbox/requests"))
        .send()
        .await
        .unwrap();
    assert_eq!(cleared.status(), StatusCode::NO_CONTENT);
    assert!(app.controls().requests().is_empty());
}

#[tokio::test]
async fn shutting_down_closes_the_port() {
    let app = start().await;
    let address = app.sandbox.local_addr();

    app.sandbox.shutdown().await;

    assert!(tokio::net::TcpStream::connect(address).await.is_err());
}

// === PKI ===

#[test]
fn the_dev_pki_writes_certificates_with_the_expected_identities() {
    let dir = tempfile::tempdir().unwrap();

    let pki = DevPki::generate(dir.path()).unwrap();

    let files = pki.files();
    let read = |path: &std::path::Path| std::fs::read_to_string(path).unwrap();
    assert_eq!(
        subject_alt_names(&read(&files.server_cert)).unwrap(),
        vec!["localhost", "127.0.0.1", "::1"]
    );
    assert_eq!(
        subject_alt_names(&read(&files.payment_service_cert)).unwrap(),
        vec![DevPki::PAYMENT_SERVICE_ID]
    );
    assert_eq!(
        subject_alt_names(&read(&files.intruder_cert)).unwrap(),
        vec![DevPki::INTRUDER_ID]
    );
    assert_eq!(read(&files.ca_cert), pki.ca_cert_pem());
    let server = parse_pem(&read(&files.server_cert));
    let (_, server) = x509_parser::parse_x509_certificate(&server).unwrap();
    let server_usage = server.extended_key_usage().unwrap().unwrap().value;
    assert!(server_usage.server_auth && !server_usage.client_auth);
    let client = parse_pem(&read(&files.payment_service_cert));
    let (_, client) = x509_parser::parse_x509_certificate(&client).unwrap();
    let client_usage = client.extended_key_usage().unwrap().unwrap().value;
    assert!(client_usage.client_auth && !client_usage.server_auth);
    let ca = parse_pem(pki.ca_cert_pem());
    let (_, ca) = x509_parser::parse_x509_certificate(&ca).unwrap();
    assert!(ca.is_ca());
    assert_eq!(client.issuer(), ca.subject());

    #[cfg(unix)]
    for key in [
        &files.ca_key,
        &files.server_key,
        &files.payment_service_key,
        &files.intruder_key,
    ] {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", key.display());
    }
}

#[test]
fn generating_again_keeps_the_ca_and_replaces_only_missing_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let first = DevPki::generate(dir.path()).unwrap();
    let server_before = std::fs::read_to_string(&first.files().server_cert).unwrap();
    std::fs::remove_file(&first.files().intruder_key).unwrap();

    let second = DevPki::generate(dir.path()).unwrap();

    assert_eq!(first.ca_cert_pem(), second.ca_cert_pem());
    assert_eq!(
        std::fs::read_to_string(&second.files().server_cert).unwrap(),
        server_before
    );
    assert!(second.files().intruder_key.exists());
    let intruder = std::fs::read_to_string(&second.files().intruder_cert).unwrap();
    let intruder = parse_pem(&intruder);
    let (_, intruder) = x509_parser::parse_x509_certificate(&intruder).unwrap();
    let ca = parse_pem(second.ca_cert_pem());
    let (_, ca) = x509_parser::parse_x509_certificate(&ca).unwrap();
    assert_eq!(intruder.issuer(), ca.subject());
}

#[test]
fn a_corrupt_ca_is_replaced_and_every_leaf_reissued() {
    let dir = tempfile::tempdir().unwrap();
    let first = DevPki::generate(dir.path()).unwrap();
    let server_before = std::fs::read_to_string(&first.files().server_cert).unwrap();
    std::fs::write(&first.files().ca_cert, "not a certificate").unwrap();

    let second = DevPki::generate(dir.path()).unwrap();

    assert_ne!(first.ca_cert_pem(), second.ca_cert_pem());
    assert_ne!(
        std::fs::read_to_string(&second.files().server_cert).unwrap(),
        server_before
    );
}

#[test]
fn the_pki_mints_expired_and_foreign_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let pki = DevPki::generate(dir.path()).unwrap();
    let day = Duration::from_secs(86_400);
    let now = std::time::SystemTime::now();

    let expired = pki
        .issue_client_cert(DevPki::PAYMENT_SERVICE_ID, now - 3 * day, now - day)
        .unwrap();
    let foreign = DevPki::generate_foreign_ca().unwrap();

    let expired_der = parse_pem(&expired.cert_pem);
    let (_, expired_cert) = x509_parser::parse_x509_certificate(&expired_der).unwrap();
    assert!(!expired_cert.validity().is_valid());
    assert_eq!(
        subject_alt_names(&expired.cert_pem).unwrap(),
        vec![DevPki::PAYMENT_SERVICE_ID]
    );
    assert!(expired.key_pem.expose_secret().contains("PRIVATE KEY"));
    let foreign_der = parse_pem(&foreign.client.cert_pem);
    let (_, foreign_cert) = x509_parser::parse_x509_certificate(&foreign_der).unwrap();
    let ca_der = parse_pem(pki.ca_cert_pem());
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    assert_ne!(foreign_cert.issuer(), ca.subject());
    assert_ne!(foreign.ca_cert_pem, pki.ca_cert_pem());
    let dns = pki
        .issue_client_cert("billing.internal", now - day, now + day)
        .unwrap();
    assert_eq!(
        subject_alt_names(&dns.cert_pem).unwrap(),
        vec!["billing.internal"]
    );
}

fn parse_pem(pem: &str) -> Vec<u8> {
    let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    parsed.contents
}

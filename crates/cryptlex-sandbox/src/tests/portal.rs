//! The customer-portal operations over real HTTP: two-factor sign-in and enrolment, profile
//! and password, password reset, feature entitlements, machines and releases. The answers
//! checked here are the ones `crate::portal`'s table decides.

use chrono::Utc;

use super::*;

// === helpers ===

impl TestSandbox {
    async fn call(
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

    async fn patch_me(&self, token: &str, body: &Value) -> reqwest::Response {
        self.call(Method::PATCH, "/v3/me", Some(token), Some(body))
            .await
    }

    /// Logs in with extra login fields (`twoFactorCode`, `twoFactorRecoveryCode`).
    async fn login_with(&self, email: &str, password: &str, extra: Value) -> reqwest::Response {
        let mut body =
            json!({"accountAlias": seed::ACCOUNT_ALIAS, "email": email, "password": password});
        for (name, value) in extra.as_object().unwrap() {
            body[name] = value.clone();
        }
        self.post("/v3/accounts/login", None, &body).await
    }

    async fn token_of(&self, email: &str, password: &str) -> String {
        let response = self.login(email, password).await;
        assert_eq!(response.status(), StatusCode::OK);
        json_of(response).await["accessToken"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Starts enrolment and returns the secret from the otpauth URL, as an app reads it.
    async fn start_enrolment(&self, token: &str) -> String {
        let response = self
            .post("/v3/me/2fa-secret", Some(token), &json!({}))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        secret_of(json_of(response).await["url"].as_str().unwrap())
    }

    /// Turns 2FA on for the demo user; returns their token and the secret.
    async fn demo_with_two_factor(&self) -> (String, String) {
        let (token, _) = self.demo_tokens().await;
        let secret = self.start_enrolment(&token).await;
        let enabled = self
            .patch_me(
                &token,
                &json!({"twoFactorEnabled": true, "twoFactorCode": now_code(&secret)}),
            )
            .await;
        assert_eq!(enabled.status(), StatusCode::OK);
        (token, secret)
    }
}

fn secret_of(otpauth_url: &str) -> String {
    url::Url::parse(otpauth_url)
        .unwrap()
        .query_pairs()
        .find(|(name, _)| name == "secret")
        .map(|(_, value)| value.into_owned())
        .expect("a secret in the URL")
}

fn now_code(secret: &str) -> String {
    totp::code(secret, Utc::now().timestamp().try_into().unwrap()).unwrap()
}

/// A code no step near now has (checked, so the test cannot flake on a lucky match).
fn wrong_code(secret: &str) -> String {
    let now: u64 = Utc::now().timestamp().try_into().unwrap();
    (0..1_000_000)
        .map(|value| format!("{value:06}"))
        .find(|candidate| {
            !totp::verify(secret, candidate, now) && !totp::verify(secret, candidate, now + 30)
        })
        .unwrap()
}

async fn assert_error(response: reqwest::Response, status: StatusCode, code: Option<&str>) {
    assert_eq!(response.status(), status);
    let body = json_of(response).await;
    assert!(body["message"].is_string(), "{body}");
    match code {
        Some(code) => assert_eq!(body["code"], code, "{body}"),
        None => assert!(body.get("code").is_none(), "{body}"),
    }
}

fn ids(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|item| item["id"].as_str().unwrap())
        .collect()
}

// === two-factor enrolment and sign-in ===

#[tokio::test]
async fn enrolment_gives_an_otpauth_url_and_nothing_changes_until_a_code_confirms_it() {
    let app = start().await;
    let (token, _) = app.demo_tokens().await;

    let response = app
        .post("/v3/me/2fa-secret", Some(&token), &json!({}))
        .await;

    assert_eq!(response.status(), StatusCode::OK);
    let body = json_of(response).await;
    assert_eq!(
        body.as_object().unwrap().len(),
        2,
        "only email and url: {body}"
    );
    assert_eq!(body["email"], seed::DEMO_EMAIL);
    let url = body["url"].as_str().unwrap();
    assert!(
        url.starts_with("otpauth://totp/Cryptlex%20Sandbox:demo%40example.com?secret="),
        "{url}"
    );
    assert!(url.ends_with("&issuer=Cryptlex%20Sandbox&algorithm=SHA1&digits=6&period=30"));
    assert_eq!(secret_of(url).len(), 32);
    let me = json_of(app.get("/v3/me", Some(&token)).await).await;
    assert_eq!(me["twoFactorEnabled"], false);
    let login = app.login(seed::DEMO_EMAIL, seed::DEMO_PASSWORD).await;
    assert_eq!(login.status(), StatusCode::OK, "not on before confirming");
}

#[tokio::test]
async fn with_two_factor_on_login_needs_a_current_code_and_refuses_a_wrong_one() {
    let app = start().await;
    let (token, secret) = app.demo_with_two_factor().await;
    let me = json_of(app.get("/v3/me", Some(&token)).await).await;
    assert_eq!(me["twoFactorEnabled"], true);
    let logins_before = app.controls().stats().logins;
    let last_login_before = me["lastLoginAt"].clone();

    let without = app.login(seed::DEMO_EMAIL, seed::DEMO_PASSWORD).await;
    let wrong = app
        .login_with(
            seed::DEMO_EMAIL,
            seed::DEMO_PASSWORD,
            json!({"twoFactorCode": wrong_code(&secret)}),
        )
        .await;
    let null_code = app
        .login_with(
            seed::DEMO_EMAIL,
            seed::DEMO_PASSWORD,
            json!({"twoFactorCode": null, "twoFactorRecoveryCode": null}),
        )
        .await;

    assert_error(
        without,
        StatusCode::BAD_REQUEST,
        Some("TWO_FACTOR_CODE_REQUIRED"),
    )
    .await;
    assert_error(
        wrong,
        StatusCode::BAD_REQUEST,
        Some("INVALID_TWO_FACTOR_CODE"),
    )
    .await;
    assert_error(
        null_code,
        StatusCode::BAD_REQUEST,
        Some("TWO_FACTOR_CODE_REQUIRED"),
    )
    .await;
    assert_eq!(
        app.controls().stats().logins,
        logins_before,
        "no login counted"
    );
    let me = json_of(app.get("/v3/me", Some(&token)).await).await;
    assert_eq!(
        me["lastLoginAt"], last_login_before,
        "refused logins leave no trace"
    );

    let right = app
        .login_with(
            seed::DEMO_EMAIL,
            seed::DEMO_PASSWORD,
            json!({"twoFactorCode": now_code(&secret)}),
        )
        .await;
    assert_eq!(right.status(), StatusCode::OK);
    assert!(json_of(right).await["accessToken"].is_string());
    assert_eq!(app.controls().stats().logins, logins_before + 1);
}

#[tokio::test]
async fn a_wrong_password_with_two_factor_on_is_authentication_failed_not_a_code_request() {
    let app = start().await;
    let (_, secret) = app.demo_with_two_factor().await;

    let without_code = app.login(seed::DEMO_EMAIL, "not-the-password").await;
    let with_code = app
        .login_with(
            seed::DEMO_EMAIL,
            "not-the-password",
            json!({"twoFactorCode": now_code(&secret)}),
        )
        .await;

    for response in [without_code, with_code] {
        assert_error(
            response,
            StatusCode::BAD_REQUEST,
            Some("AUTHENTICATION_FAILED"),
        )
        .await;
    }
}

#[tokio::test]
async fn with_two_factor_off_codes_in_the_login_are_ignored_but_must_fit_the_schema() {
    let app = start().await;

    let ignored = app
        .login_with(
            seed::DEMO_EMAIL,
            seed::DEMO_PASSWORD,
            json!({"twoFactorCode": "000000", "twoFactorRecoveryCode": "anything"}),
        )
        .await;
    let too_short = app
        .login_with(
            seed::DEMO_EMAIL,
            seed::DEMO_PASSWORD,
            json!({"twoFactorCode": "123"}),
        )
        .await;
    let empty_recovery = app
        .login_with(
            seed::DEMO_EMAIL,
            seed::DEMO_PASSWORD,
            json!({"twoFactorRecoveryCode": ""}),
        )
        .await;

    assert_eq!(ignored.status(), StatusCode::OK);
    assert_error(too_short, StatusCode::BAD_REQUEST, None).await;
    assert_error(empty_recovery, StatusCode::BAD_REQUEST, None).await;
}

#[tokio::test]
async fn enabling_needs_a_secret_first_and_a_right_code_and_a_refusal_changes_nothing() {
    let app = start().await;
    let (token, _) = app.demo_tokens().await;

    let before_secret = app
        .patch_me(
            &token,
            &json!({"twoFactorEnabled": true, "twoFactorCode": "123456"}),
        )
        .await;
    let secret = app.start_enrolment(&token).await;
    let wrong = app
        .patch_me(
            &token,
            &json!({"twoFactorEnabled": true, "twoFactorCode": wrong_code(&secret),
                "firstName": "Changed"}),
        )
        .await;
    let missing = app
        .patch_me(&token, &json!({"twoFactorEnabled": true}))
        .await;

    // A 400, not a 409: S1 declares no 409 on PATCH /v3/me.
    assert_error(
        before_secret,
        StatusCode::BAD_REQUEST,
        Some("TWO_FACTOR_NOT_ENABLED"),
    )
    .await;
    assert_error(
        wrong,
        StatusCode::BAD_REQUEST,
        Some("INVALID_TWO_FACTOR_CODE"),
    )
    .await;
    assert_error(
        missing,
        StatusCode::BAD_REQUEST,
        Some("INVALID_TWO_FACTOR_CODE"),
    )
    .await;
    let me = json_of(app.get("/v3/me", Some(&token)).await).await;
    assert_eq!(me["twoFactorEnabled"], false);
    assert_eq!(me["firstName"], "Demo", "nothing else changed either");

    let right = app
        .patch_me(
            &token,
            &json!({"twoFactorEnabled": true, "twoFactorCode": now_code(&secret)}),
        )
        .await;
    assert_eq!(right.status(), StatusCode::OK);
    assert_eq!(json_of(right).await["twoFactorEnabled"], true);
    let user = app.controls().user_by_email(seed::DEMO_EMAIL).unwrap();
    assert!(user.two_factor_enabled);
}

#[tokio::test]
async fn recovery_codes_are_ten_single_use_codes_that_replace_the_old_ones() {
    let app = start().await;
    let (token, _) = app.demo_tokens().await;
    let while_off = app
        .post(
            "/v3/me/2fa-recovery-codes",
            Some(&token),
            &json!({"twoFactorCode": "123456"}),
        )
        .await;
    assert_error(
        while_off,
        StatusCode::CONFLICT,
        Some("TWO_FACTOR_NOT_ENABLED"),
    )
    .await;
    let (token, secret) = app.demo_with_two_factor().await;

    let wrong = app
        .post(
            "/v3/me/2fa-recovery-codes",
            Some(&token),
            &json!({"twoFactorCode": wrong_code(&secret)}),
        )
        .await;
    let created = app
        .post(
            "/v3/me/2fa-recovery-codes",
            Some(&token),
            &json!({"twoFactorCode": now_code(&secret)}),
        )
        .await;

    assert_error(
        wrong,
        StatusCode::BAD_REQUEST,
        Some("INVALID_TWO_FACTOR_CODE"),
    )
    .await;
    assert_eq!(created.status(), StatusCode::OK);
    let body = json_of(created).await;
    let codes: Vec<String> = serde_json::from_value(body["recoveryCodes"].clone()).unwrap();
    assert_eq!(codes.len(), 10);
    let distinct: std::collections::BTreeSet<&String> = codes.iter().collect();
    assert_eq!(distinct.len(), 10);
    assert!(
        codes.iter().all(|code| (6..=12).contains(&code.len())),
        "{codes:?}"
    );

    let recover = |code: &str| {
        app.login_with(
            seed::DEMO_EMAIL,
            seed::DEMO_PASSWORD,
            json!({"twoFactorRecoveryCode": code}),
        )
    };
    assert_eq!(recover(&codes[0]).await.status(), StatusCode::OK);
    assert_eq!(
        recover(&codes[1].to_uppercase()).await.status(),
        StatusCode::OK,
        "case is ignored"
    );
    assert_error(
        recover(&codes[0]).await,
        StatusCode::BAD_REQUEST,
        Some("INVALID_TWO_FACTOR_CODE"),
    )
    .await;
    assert_error(
        recover("nope-nope").await,
        StatusCode::BAD_REQUEST,
        Some("INVALID_TWO_FACTOR_CODE"),
    )
    .await;

    // A recovery code also makes new codes (and is spent); the old set then stops working.
    let replaced = app
        .post(
            "/v3/me/2fa-recovery-codes",
            Some(&token),
            &json!({"twoFactorCode": codes[2]}),
        )
        .await;
    assert_eq!(replaced.status(), StatusCode::OK);
    let new_codes: Vec<String> =
        serde_json::from_value(json_of(replaced).await["recoveryCodes"].clone()).unwrap();
    assert_error(
        recover(&codes[3]).await,
        StatusCode::BAD_REQUEST,
        Some("INVALID_TWO_FACTOR_CODE"),
    )
    .await;
    assert_eq!(recover(&new_codes[0]).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn disabling_needs_a_current_code_and_forgets_the_secret() {
    let app = start().await;
    let (token, secret) = app.demo_with_two_factor().await;

    let wrong = app
        .patch_me(
            &token,
            &json!({"twoFactorEnabled": false, "twoFactorCode": wrong_code(&secret)}),
        )
        .await;
    assert_error(
        wrong,
        StatusCode::BAD_REQUEST,
        Some("INVALID_TWO_FACTOR_CODE"),
    )
    .await;
    assert!(
        app.controls()
            .user_by_email(seed::DEMO_EMAIL)
            .unwrap()
            .two_factor_enabled
    );

    let right = app
        .patch_me(
            &token,
            &json!({"twoFactorEnabled": false, "twoFactorCode": now_code(&secret)}),
        )
        .await;
    assert_eq!(right.status(), StatusCode::OK);
    assert_eq!(json_of(right).await["twoFactorEnabled"], false);
    assert_eq!(app.controls().current_totp(seed::DEMO_EMAIL), None);
    assert_eq!(
        app.login(seed::DEMO_EMAIL, seed::DEMO_PASSWORD)
            .await
            .status(),
        StatusCode::OK
    );
    let again = app
        .patch_me(
            &token,
            &json!({"twoFactorEnabled": false, "twoFactorCode": now_code(&secret)}),
        )
        .await;
    assert_error(
        again,
        StatusCode::BAD_REQUEST,
        Some("TWO_FACTOR_NOT_ENABLED"),
    )
    .await;
}

#[tokio::test]
async fn re_enrolment_keeps_the_old_secret_working_until_the_new_one_is_confirmed() {
    let app = start().await;
    let (token, old_secret) = app.demo_with_two_factor().await;

    let new_secret = app.start_enrolment(&token).await;
    let with_old = app
        .login_with(
            seed::DEMO_EMAIL,
            seed::DEMO_PASSWORD,
            json!({"twoFactorCode": now_code(&old_secret)}),
        )
        .await;
    assert_eq!(with_old.status(), StatusCode::OK);
    assert_eq!(
        app.controls().current_totp(seed::DEMO_EMAIL),
        Some(now_code(&new_secret)),
        "the control shows the code being enrolled"
    );

    let confirmed = app
        .patch_me(
            &token,
            &json!({"twoFactorEnabled": true, "twoFactorCode": now_code(&new_secret)}),
        )
        .await;
    assert_eq!(confirmed.status(), StatusCode::OK);
    let with_new = app
        .login_with(
            seed::DEMO_EMAIL,
            seed::DEMO_PASSWORD,
            json!({"twoFactorCode": now_code(&new_secret)}),
        )
        .await;
    assert_eq!(with_new.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_totp_control_gives_the_current_code_in_process_and_over_http() {
    let app = start().await;
    assert_eq!(app.controls().current_totp(seed::DEMO_EMAIL), None);
    let none = app
        .get("/__sandbox/totp?email=demo%40example.com", None)
        .await;
    assert_eq!(none.status(), StatusCode::NOT_FOUND);
    let (_, secret) = app.demo_with_two_factor().await;

    let in_process = app.controls().current_totp("Demo@Example.com").unwrap();
    let over_http = json_of(
        app.get("/__sandbox/totp?email=demo%40example.com", None)
            .await,
    )
    .await;

    // The step may turn between the two reads; both are accepted either way.
    let now: u64 = Utc::now().timestamp().try_into().unwrap();
    assert!(totp::verify(&secret, &in_process, now));
    assert!(totp::verify(
        &secret,
        over_http["code"].as_str().unwrap(),
        now
    ));
    let login = app
        .login_with(
            seed::DEMO_EMAIL,
            seed::DEMO_PASSWORD,
            json!({"twoFactorCode": in_process}),
        )
        .await;
    assert_eq!(login.status(), StatusCode::OK);
    assert_eq!(app.controls().current_totp("nobody@example.com"), None);
}

#[tokio::test]
async fn two_factor_operations_need_a_token_and_a_well_formed_code() {
    let app = start().await;
    let (token, _) = app.demo_tokens().await;

    let secret_anonymous = app.post("/v3/me/2fa-secret", None, &json!({})).await;
    let codes_anonymous = app
        .post(
            "/v3/me/2fa-recovery-codes",
            None,
            &json!({"twoFactorCode": "123456"}),
        )
        .await;
    let patch_anonymous = app
        .call(Method::PATCH, "/v3/me", Some("garbage"), Some(&json!({})))
        .await;
    let short_code = app
        .post(
            "/v3/me/2fa-recovery-codes",
            Some(&token),
            &json!({"twoFactorCode": "12345"}),
        )
        .await;
    let long_code = app
        .post(
            "/v3/me/2fa-recovery-codes",
            Some(&token),
            &json!({"twoFactorCode": "x".repeat(13)}),
        )
        .await;
    let no_body = app
        .call(
            Method::POST,
            "/v3/me/2fa-recovery-codes",
            Some(&token),
            None,
        )
        .await;

    for response in [secret_anonymous, codes_anonymous, patch_anonymous] {
        assert_error(response, StatusCode::UNAUTHORIZED, None).await;
    }
    for response in [short_code, long_code, no_body] {
        assert_error(response, StatusCode::BAD_REQUEST, None).await;
    }
}

// === profile ===

#[tokio::test]
async fn patching_me_changes_only_the_fields_given() {
    let app = start().await;
    let (token, _) = app.demo_tokens().await;
    let before = json_of(app.get("/v3/me", Some(&token)).await).await;

    let renamed = app
        .patch_me(
            &token,
            &json!({"firstName": "Dana", "lastName": null, "googleSsoEnabled": true}),
        )
        .await;

    assert_eq!(renamed.status(), StatusCode::OK);
    let renamed = json_of(renamed).await;
    assert_eq!(renamed["firstName"], "Dana");
    assert_eq!(renamed["lastName"], "User");
    assert_eq!(renamed["name"], "Dana User");
    assert_eq!(renamed["email"], seed::DEMO_EMAIL);
    assert_eq!(renamed["googleSsoEnabled"], false);
    assert_ne!(renamed["updatedAt"], before["updatedAt"]);
    assert_eq!(
        json_of(app.get("/v3/me", Some(&token)).await).await,
        renamed
    );

    let emptied = app
        .patch_me(
            &token,
            &json!({"lastName": "", "email": "dana@example.com"}),
        )
        .await;
    let emptied = json_of(emptied).await;
    assert_eq!(emptied["lastName"], "");
    assert_eq!(emptied["name"], "Dana");
    assert_eq!(emptied["email"], "dana@example.com");
    let login = app.login("dana@example.com", seed::DEMO_PASSWORD).await;
    assert_eq!(login.status(), StatusCode::OK, "the new address signs in");
    assert_eq!(
        app.login(seed::DEMO_EMAIL, seed::DEMO_PASSWORD)
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn patching_me_validates_like_s1_and_refuses_a_taken_email() {
    let app = start().await;
    let (token, _) = app.demo_tokens().await;

    for body in [
        json!({"firstName": ""}),
        json!({"firstName": "x".repeat(257)}),
        json!({"lastName": "x".repeat(257)}),
        json!({"email": "not-an-address"}),
        json!({"email": ""}),
        json!({"twoFactorCode": "12345"}),
        json!({"firstName": 7}),
    ] {
        let response = app.patch_me(&token, &body).await;
        assert_error(response, StatusCode::BAD_REQUEST, None).await;
    }
    let empty_body = app.call(Method::PATCH, "/v3/me", Some(&token), None).await;
    assert_error(empty_body, StatusCode::BAD_REQUEST, None).await;
    let taken = app
        .patch_me(&token, &json!({"email": "OTHER@example.com"}))
        .await;
    assert_error(
        taken,
        StatusCode::BAD_REQUEST,
        Some("DUPLICATE_FIELD_VALUE"),
    )
    .await;
    let own_in_capitals = app
        .patch_me(&token, &json!({"email": "DEMO@example.com"}))
        .await;
    assert_eq!(own_in_capitals.status(), StatusCode::OK);
    let long_but_valid = format!("{}@example.com", "a".repeat(300));
    let long = app
        .patch_me(&token, &json!({"email": long_but_valid}))
        .await;
    assert_eq!(long.status(), StatusCode::OK, "S1 sets no length on email");
}

// === password ===

#[tokio::test]
async fn changing_the_password_needs_the_old_one_and_keeps_the_sessions() {
    let app = start().await;
    let (token, refresh) = app.demo_tokens().await;
    let path = format!("/v3/users/{}/update-password", seed::DEMO_USER_ID);

    let wrong = app
        .post(
            &path,
            Some(&token),
            &json!({"oldPassword": "not-the-password", "newPassword": "brand-new-password"}),
        )
        .await;
    let changed = app
        .post(
            &path,
            Some(&token),
            &json!({"oldPassword": seed::DEMO_PASSWORD, "newPassword": "brand-new-password"}),
        )
        .await;

    assert_error(wrong, StatusCode::BAD_REQUEST, Some("INVALID_PASSWORD")).await;
    assert_eq!(changed.status(), StatusCode::NO_CONTENT);
    assert!(changed.bytes().await.unwrap().is_empty());
    assert_eq!(
        app.login(seed::DEMO_EMAIL, seed::DEMO_PASSWORD)
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        app.login(seed::DEMO_EMAIL, "brand-new-password")
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        app.get("/v3/me", Some(&token)).await.status(),
        StatusCode::OK
    );
    let refreshed = app
        .post(
            "/v3/accounts/login-refresh-token",
            None,
            &json!({"refreshToken": refresh}),
        )
        .await;
    assert_eq!(refreshed.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_password_change_is_only_for_oneself_and_validated_first() {
    let app = start().await;
    let (token, _) = app.demo_tokens().await;
    let body = json!({"oldPassword": seed::OTHER_PASSWORD, "newPassword": "brand-new-password"});

    let other_user = app
        .post(
            &format!("/v3/users/{}/update-password", seed::OTHER_USER_ID),
            Some(&token),
            &body,
        )
        .await;
    let anonymous = app
        .post(
            &format!("/v3/users/{}/update-password", seed::DEMO_USER_ID),
            None,
            &body,
        )
        .await;

    assert_error(other_user, StatusCode::FORBIDDEN, None).await;
    assert_error(anonymous, StatusCode::UNAUTHORIZED, None).await;
    assert_eq!(
        app.login(seed::OTHER_EMAIL, seed::OTHER_PASSWORD)
            .await
            .status(),
        StatusCode::OK,
        "unchanged"
    );
    let path = format!("/v3/users/{}/update-password", seed::DEMO_USER_ID);
    for body in [
        json!({"oldPassword": seed::DEMO_PASSWORD}),
        json!({"oldPassword": seed::DEMO_PASSWORD, "newPassword": "short"}),
        json!({"oldPassword": seed::DEMO_PASSWORD, "newPassword": "x".repeat(257)}),
        json!({"oldPassword": "short", "newPassword": "long-enough"}),
    ] {
        let response = app.post(&path, Some(&token), &body).await;
        assert_error(response, StatusCode::BAD_REQUEST, None).await;
    }
}

// === password reset ===

#[tokio::test]
async fn a_reset_request_mails_a_link_to_a_known_user_and_answers_the_same_for_anyone() {
    let app = start().await;
    let request = |email: &str, alias: Option<&str>| {
        let mut body = json!({"email": email});
        if let Some(alias) = alias {
            body["accountAlias"] = json!(alias);
        }
        app.client
            .post(app.url("/v3/accounts/reset-password-request"))
            .header("origin", "https://shop.example.com")
            .json(&body)
            .send()
    };

    let known = request("Demo@Example.com", Some(seed::ACCOUNT_ALIAS))
        .await
        .unwrap();
    let unknown = request("nobody@example.com", None).await.unwrap();
    let other_account = request(seed::OTHER_EMAIL, Some("someone-else"))
        .await
        .unwrap();

    let mut answers = Vec::new();
    for response in [known, unknown, other_account] {
        let status = response.status();
        let headers = response.headers().clone();
        answers.push((
            status,
            headers.get("content-length").cloned(),
            response.bytes().await.unwrap(),
        ));
    }
    assert!(
        answers.iter().all(|answer| answer == &answers[0]),
        "{answers:?}"
    );
    assert_eq!(answers[0].0, StatusCode::ACCEPTED);
    assert!(answers[0].2.is_empty());
    let mails = app.controls().mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    let mail = &mails[0];
    assert_eq!(mail.to, seed::DEMO_EMAIL);
    assert_eq!(mail.user_id, seed::DEMO_USER_ID);
    assert_eq!(
        mail.link,
        format!(
            "https://shop.example.com/reset-password?userId={}&token={}",
            seed::DEMO_USER_ID,
            mail.token
        )
    );
    let debug = format!("{mail:?}");
    assert!(!debug.contains(&mail.token), "{debug}");
    let over_http = json_of(app.get("/__sandbox/mails", None).await).await;
    assert_eq!(over_http[0]["token"], mail.token.as_str());
    assert_eq!(over_http[0]["userId"], seed::DEMO_USER_ID);
    assert!(over_http[0]["sentAt"].is_string());
}

#[tokio::test]
async fn a_reset_request_without_a_usable_origin_links_to_the_default_portal_and_validates() {
    let app = start().await;

    let plain = app
        .post(
            "/v3/accounts/reset-password-request",
            None,
            &json!({"email": seed::DEMO_EMAIL}),
        )
        .await;
    let odd_origin = app
        .client
        .post(app.url("/v3/accounts/reset-password-request"))
        .header("origin", "javascript:alert(1)")
        .json(&json!({"email": seed::DEMO_EMAIL}))
        .send()
        .await
        .unwrap();

    assert_eq!(plain.status(), StatusCode::ACCEPTED);
    assert_eq!(odd_origin.status(), StatusCode::ACCEPTED);
    let mails = app.controls().mails();
    assert_eq!(mails.len(), 2);
    assert!(mails.iter().all(|mail| {
        mail.link
            .starts_with("https://portal.sandbox.cryptlex.invalid/reset-password?userId=")
    }));
    assert_ne!(mails[0].token, mails[1].token);
    for body in [
        json!({}),
        json!({"email": ""}),
        json!({"email": "no-at-sign"}),
        json!({"email": seed::DEMO_EMAIL, "accountAlias": "x".repeat(257)}),
    ] {
        let response = app
            .post("/v3/accounts/reset-password-request", None, &body)
            .await;
        assert_error(response, StatusCode::BAD_REQUEST, None).await;
    }
    assert_eq!(app.controls().mails().len(), 2);
}

#[tokio::test]
async fn a_mailed_token_resets_the_password_once() {
    let app = start().await;
    app.post(
        "/v3/accounts/reset-password-request",
        None,
        &json!({"email": seed::DEMO_EMAIL}),
    )
    .await;
    let token = app.controls().mails()[0].token.clone();
    let path = format!("/v3/users/{}/reset-password", seed::DEMO_USER_ID);
    let body = json!({"token": token, "newPassword": "reset-password-1"});

    let first = app.post(&path, None, &body).await;
    let again = app
        .post(
            &path,
            None,
            &json!({"token": token, "newPassword": "reset-password-2"}),
        )
        .await;

    assert_eq!(first.status(), StatusCode::NO_CONTENT);
    assert!(first.bytes().await.unwrap().is_empty());
    assert_error(again, StatusCode::BAD_REQUEST, Some("INVALID_RESET_TOKEN")).await;
    assert_eq!(
        app.login(seed::DEMO_EMAIL, "reset-password-1")
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        app.login(seed::DEMO_EMAIL, seed::DEMO_PASSWORD)
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn a_reset_refuses_unknown_tokens_other_users_tokens_unknown_users_and_bad_bodies() {
    let app = start().await;
    app.post(
        "/v3/accounts/reset-password-request",
        None,
        &json!({"email": seed::DEMO_EMAIL}),
    )
    .await;
    let token = app.controls().mails()[0].token.clone();
    let app = &app;
    let reset = move |user_id: &str, body: Value| {
        let path = format!("/v3/users/{user_id}/reset-password");
        async move { app.post(&path, None, &body).await }
    };

    let unknown_token = reset(
        seed::DEMO_USER_ID,
        json!({"token": "made-up", "newPassword": "long-enough"}),
    )
    .await;
    let other_user = reset(
        seed::OTHER_USER_ID,
        json!({"token": token, "newPassword": "long-enough"}),
    )
    .await;
    let unknown_user = reset(
        "00000000-0000-4000-8000-000000000000",
        json!({"token": token, "newPassword": "long-enough"}),
    )
    .await;

    assert_error(
        unknown_token,
        StatusCode::BAD_REQUEST,
        Some("INVALID_RESET_TOKEN"),
    )
    .await;
    assert_error(
        other_user,
        StatusCode::BAD_REQUEST,
        Some("INVALID_RESET_TOKEN"),
    )
    .await;
    assert_error(unknown_user, StatusCode::NOT_FOUND, None).await;
    for body in [
        json!({"newPassword": "long-enough"}),
        json!({"token": token}),
        json!({"token": token, "newPassword": "short"}),
        json!({"token": "", "newPassword": "long-enough"}),
        json!({"token": "x".repeat(2049), "newPassword": "long-enough"}),
    ] {
        assert_error(
            reset(seed::DEMO_USER_ID, body).await,
            StatusCode::BAD_REQUEST,
            None,
        )
        .await;
    }
    // None of those spent the demo user's token.
    let valid = reset(
        seed::DEMO_USER_ID,
        json!({"token": token, "newPassword": "long-enough"}),
    )
    .await;
    assert_eq!(valid.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn a_pat_with_user_write_mints_reset_tokens_and_each_works_once() {
    let app = start().await;
    let path = format!("/v3/users/{}/reset-password-token", seed::DEMO_USER_ID);
    let (user_token, _) = app.demo_tokens().await;
    let lacking = app.controls().create_pat(&["user:read"]);

    let anonymous = app.post(&path, None, &json!({})).await;
    let as_user = app.post(&path, Some(&user_token), &json!({})).await;
    let without_scope = app
        .post(&path, Some(lacking.expose_secret()), &json!({}))
        .await;
    let unknown = app
        .call(
            Method::POST,
            "/v3/users/00000000-0000-4000-8000-000000000000/reset-password-token",
            Some(&app.pat()),
            None,
        )
        .await;
    let first = json_of(app.call(Method::POST, &path, Some(&app.pat()), None).await).await;
    let second = json_of(app.call(Method::POST, &path, Some(&app.pat()), None).await).await;

    assert_error(anonymous, StatusCode::UNAUTHORIZED, None).await;
    assert_error(as_user, StatusCode::FORBIDDEN, None).await;
    assert_error(without_scope, StatusCode::FORBIDDEN, None).await;
    assert_error(unknown, StatusCode::NOT_FOUND, None).await;
    let first = first["resetPasswordToken"].as_str().unwrap().to_owned();
    let second = second["resetPasswordToken"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    assert!(
        first
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_".contains(&byte)),
        "URL-safe: {first}"
    );
    assert!(app.controls().mails().is_empty(), "minted, not mailed");
    let reset = format!("/v3/users/{}/reset-password", seed::DEMO_USER_ID);
    // The older token still works after a newer one was minted; each works once.
    for (token, password) in [(&first, "from-first-token"), (&second, "from-second-token")] {
        let response = app
            .post(
                &reset,
                None,
                &json!({"token": token, "newPassword": password}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
    }
    let reused = app
        .post(
            &reset,
            None,
            &json!({"token": first, "newPassword": "once-more-please"}),
        )
        .await;
    assert_error(reused, StatusCode::BAD_REQUEST, Some("INVALID_RESET_TOKEN")).await;
    assert_eq!(
        app.login(seed::DEMO_EMAIL, "from-second-token")
            .await
            .status(),
        StatusCode::OK
    );
}

// === feature entitlements ===

#[tokio::test]
async fn feature_entitlements_are_the_license_owners_only() {
    let app = start().await;
    let (token, _) = app.demo_tokens().await;
    let path = |license: &str| format!("/v3/me/licenses/{license}/feature-entitlements");

    let first = app
        .get(&path(seed::DEMO_LICENSE_IDS[0]), Some(&token))
        .await;
    let second = json_of(
        app.get(&path(seed::DEMO_LICENSE_IDS[1]), Some(&token))
            .await,
    )
    .await;
    let foreign = app.get(&path(seed::OTHER_LICENSE_ID), Some(&token)).await;
    let anonymous = app.get(&path(seed::DEMO_LICENSE_IDS[0]), None).await;

    assert_eq!(first.status(), StatusCode::OK);
    let first = json_of(first).await;
    let license = &app.controls().licenses()[0];
    assert_eq!(
        first,
        json!([
            {"featureId": seed::FEATURE_IDS[0], "featureName": "cloud-sync",
             "value": null, "expiresAt": null},
            {"featureId": seed::FEATURE_IDS[1], "featureName": "seats", "value": "5",
             "expiresAt": crate::wire::timestamp(license.expires_at.unwrap())},
        ])
    );
    assert_eq!(second, json!([]));
    assert_error(foreign, StatusCode::NOT_FOUND, None).await;
    assert_error(anonymous, StatusCode::UNAUTHORIZED, None).await;
}

// === activations ===

#[tokio::test]
async fn the_seeded_machines_match_the_licenses_counters() {
    let app = start().await;
    let activations = app.controls().activations();

    assert_eq!(activations.len(), 4);
    for license in app.controls().licenses() {
        let machines = activations
            .iter()
            .filter(|activation| activation.license_id == license.id)
            .count();
        assert_eq!(
            license.total_activations as usize, machines,
            "{}",
            license.id
        );
        assert!(license.total_activations <= license.allowed_activations);
    }
    let limited = app
        .controls()
        .licenses()
        .into_iter()
        .find(|license| license.id == seed::DEMO_LICENSE_IDS[1])
        .unwrap();
    assert_eq!(limited.total_deactivations, limited.allowed_deactivations);
    let over_http = json_of(app.get("/__sandbox/activations", None).await).await;
    assert_eq!(over_http.as_array().unwrap().len(), 4);
    assert_eq!(over_http[0]["licenseId"], seed::DEMO_LICENSE_IDS[0]);
}

#[tokio::test]
async fn my_activations_are_the_users_own_oldest_first_in_the_user_view() {
    let app = start().await;
    let (token, _) = app.demo_tokens().await;
    let other = app.token_of(seed::OTHER_EMAIL, seed::OTHER_PASSWORD).await;

    let mine = json_of(app.get("/v3/me/activations", Some(&token)).await).await;
    let theirs = json_of(app.get("/v3/me/activations", Some(&other)).await).await;

    assert_eq!(ids(&mine), seed::DEMO_ACTIVATION_IDS);
    assert_eq!(ids(&theirs), [seed::OTHER_ACTIVATION_ID]);
    let first = mine[0].as_object().unwrap();
    assert_eq!(first["licenseId"], seed::DEMO_LICENSE_IDS[0]);
    assert_eq!(first["productId"], seed::PRODUCT_ID);
    assert_eq!(first["os"], "windows");
    assert_eq!(first["hostname"], "DEMO-WORKSTATION");
    assert_eq!(first["location"]["countryCode"], "DE");
    assert!(first["location"]["ipAddress"].is_string());
    assert_eq!(first["meterAttributes"], json!([]));
    assert_eq!(mine[2]["vmName"], "ci-runner-vm");
    for absent in ["user", "license", "ipAddress", "userId"] {
        assert!(!first.contains_key(absent), "{absent}");
    }
}

#[tokio::test]
async fn my_activations_filter_by_license_page_and_sort() {
    let app = start().await;
    let (token, _) = app.demo_tokens().await;
    let (app, token) = (&app, token.as_str());
    let list = move |query: String| async move {
        app.get(&format!("/v3/me/activations?{query}"), Some(token))
            .await
    };

    let first_license =
        json_of(list(format!("licenseId[eq]={}", seed::DEMO_LICENSE_IDS[0])).await).await;
    let encoded =
        json_of(list(format!("licenseId%5Beq%5D={}", seed::DEMO_LICENSE_IDS[1])).await).await;
    let not_first =
        json_of(list(format!("licenseId[ne]={}", seed::DEMO_LICENSE_IDS[0])).await).await;
    let listed = json_of(
        list(format!(
            "licenseId[in]={},{}",
            seed::DEMO_LICENSE_IDS[1],
            seed::OTHER_LICENSE_ID
        ))
        .await,
    )
    .await;
    let foreign = json_of(list(format!("licenseId[eq]={}", seed::OTHER_LICENSE_ID)).await).await;
    let second_page = json_of(list("page=2&limit=2".to_owned()).await).await;
    let newest_first = json_of(list("sort=-createdAt".to_owned()).await).await;
    let unknown_filter = list("os[eq]=linux".to_owned()).await;
    let without_operator = list(format!("licenseId={}", seed::DEMO_LICENSE_IDS[0])).await;
    let bad_limit = list("limit=101".to_owned()).await;

    assert_eq!(ids(&first_license), &seed::DEMO_ACTIVATION_IDS[..2]);
    assert_eq!(ids(&encoded), [seed::LIMITED_ACTIVATION_ID]);
    assert_eq!(ids(&not_first), [seed::LIMITED_ACTIVATION_ID]);
    assert_eq!(
        ids(&listed),
        [seed::LIMITED_ACTIVATION_ID],
        "never another user's"
    );
    assert_eq!(foreign, json!([]));
    assert_eq!(ids(&second_page), [seed::LIMITED_ACTIVATION_ID]);
    let mut reversed = seed::DEMO_ACTIVATION_IDS;
    reversed.reverse();
    assert_eq!(ids(&newest_first), reversed);
    for response in [unknown_filter, without_operator, bad_limit] {
        assert_error(response, StatusCode::BAD_REQUEST, None).await;
    }
}

#[tokio::test]
async fn one_activation_is_readable_by_its_licenses_owner_only() {
    let app = start().await;
    let (token, _) = app.demo_tokens().await;
    let path = |id: &str| format!("/v3/me/activations/{id}");

    let own = app
        .get(&path(seed::DEMO_ACTIVATION_IDS[1]), Some(&token))
        .await;
    let foreign = app
        .get(&path(seed::OTHER_ACTIVATION_ID), Some(&token))
        .await;
    let unknown = app
        .get(&path("00000000-0000-4000-8000-000000000000"), Some(&token))
        .await;
    let anonymous = app.get(&path(seed::DEMO_ACTIVATION_IDS[1]), None).await;

    assert_eq!(own.status(), StatusCode::OK);
    let own = json_of(own).await;
    assert_eq!(own["id"], seed::DEMO_ACTIVATION_IDS[1]);
    assert_eq!(own["os"], "macos");
    let listed = json_of(app.get("/v3/me/activations", Some(&token)).await).await;
    assert_eq!(own, listed[1], "the same view as the list");
    assert_error(foreign, StatusCode::NOT_FOUND, None).await;
    assert_error(unknown, StatusCode::NOT_FOUND, None).await;
    assert_error(anonymous, StatusCode::UNAUTHORIZED, None).await;
}

#[tokio::test]
async fn following_a_license_to_a_new_owner_moves_its_machines_too() {
    let app = start().await;
    let (token, _) = app.demo_tokens().await;
    let moved = app
        .call(
            Method::PATCH,
            &format!("/v3/licenses/{}", seed::DEMO_LICENSE_IDS[1]),
            Some(&app.pat()),
            Some(&json!({"userId": seed::OTHER_USER_ID})),
        )
        .await;
    assert_eq!(moved.status(), StatusCode::OK);

    let mine = json_of(app.get("/v3/me/activations", Some(&token)).await).await;
    let limited = app
        .get(
            &format!("/v3/me/activations/{}", seed::LIMITED_ACTIVATION_ID),
            Some(&token),
        )
        .await;

    assert_eq!(ids(&mine), &seed::DEMO_ACTIVATION_IDS[..2]);
    assert_error(limited, StatusCode::NOT_FOUND, None).await;
}

// === deactivation ===

#[tokio::test]
async fn deactivating_frees_the_activation_and_counts_a_deactivation_without_a_token() {
    let app = start().await;
    let (token, _) = app.demo_tokens().await;
    let id = seed::DEMO_ACTIVATION_IDS[0];

    let deleted = app
        .call(Method::DELETE, &format!("/v3/activations/{id}"), None, None)
        .await;

    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert!(deleted.bytes().await.unwrap().is_empty());
    let license = json_of(
        app.get(
            &format!("/v3/me/licenses/{}", seed::DEMO_LICENSE_IDS[0]),
            Some(&token),
        )
        .await,
    )
    .await;
    assert_eq!(license["totalActivations"], 1);
    assert_eq!(license["totalDeactivations"], 1);
    assert_eq!(license["allowedActivations"], 3);
    let mine = json_of(app.get("/v3/me/activations", Some(&token)).await).await;
    assert_eq!(ids(&mine), &seed::DEMO_ACTIVATION_IDS[1..]);
    assert!(
        app.controls()
            .activations()
            .iter()
            .all(|activation| activation.id != id)
    );
    let again = app
        .call(Method::DELETE, &format!("/v3/activations/{id}"), None, None)
        .await;
    assert_error(again, StatusCode::NOT_FOUND, None).await;
    let recorded = app
        .controls()
        .requests()
        .into_iter()
        .find(|request| request.method == "DELETE")
        .unwrap();
    assert_eq!(recorded.auth, AuthKind::None);
    assert_eq!(recorded.status, Some(204));
}

#[tokio::test]
async fn past_the_deactivation_limit_the_machine_stays_with_a_409() {
    let app = start().await;
    let before = app.controls().licenses();

    let refused = app
        .call(
            Method::DELETE,
            &format!("/v3/activations/{}", seed::LIMITED_ACTIVATION_ID),
            // A token, even an invalid one, changes nothing on this operation.
            Some("garbage"),
            None,
        )
        .await;
    let unknown = app
        .call(
            Method::DELETE,
            "/v3/activations/00000000-0000-4000-8000-000000000000",
            None,
            None,
        )
        .await;

    assert_error(
        refused,
        StatusCode::CONFLICT,
        Some("DEACTIVATION_LIMIT_REACHED"),
    )
    .await;
    assert_error(unknown, StatusCode::NOT_FOUND, None).await;
    assert_eq!(app.controls().licenses(), before, "nothing changed");
    assert_eq!(app.controls().activations().len(), 4);
}

#[tokio::test]
async fn unlimited_deactivations_never_run_out() {
    let app = start().await;
    let unlimited = app
        .call(
            Method::PATCH,
            &format!("/v3/licenses/{}", seed::DEMO_LICENSE_IDS[1]),
            Some(&app.pat()),
            Some(&json!({"allowedDeactivations": -1})),
        )
        .await;
    assert_eq!(unlimited.status(), StatusCode::OK);

    let deleted = app
        .call(
            Method::DELETE,
            &format!("/v3/activations/{}", seed::LIMITED_ACTIVATION_ID),
            None,
            None,
        )
        .await;

    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let license = app
        .controls()
        .licenses()
        .into_iter()
        .find(|license| license.id == seed::DEMO_LICENSE_IDS[1])
        .unwrap();
    assert_eq!(
        (license.total_activations, license.total_deactivations),
        (0, 3)
    );
}

// === releases ===

#[tokio::test]
async fn my_releases_are_the_published_ones_newest_first_with_their_files() {
    let app = start().await;
    let (token, _) = app.demo_tokens().await;

    let releases = json_of(app.get("/v3/me/releases", Some(&token)).await).await;

    assert_eq!(ids(&releases), seed::RELEASE_IDS, "no draft: {releases}");
    let channels: Vec<&str> = releases
        .as_array()
        .unwrap()
        .iter()
        .map(|release| release["channel"].as_str().unwrap())
        .collect();
    assert_eq!(channels, ["beta", "stable", "stable"]);
    let stable = releases[1].as_object().unwrap();
    assert_eq!(stable["version"], "2.1.0");
    assert_eq!(stable["name"], "Demo Desktop App 2.1.0");
    assert_eq!(
        stable["product"],
        json!({"displayName": seed::PRODUCT_NAME})
    );
    assert_eq!(stable["platforms"], json!(["windows", "macos", "linux"]));
    assert!(
        !stable.contains_key("platform"),
        "S1 declares no such property"
    );
    assert!(!stable.contains_key("productId"));
    assert_eq!(stable["totalFiles"], 3);
    let file = &stable["files"][0];
    assert_eq!(file["releaseId"], seed::RELEASE_IDS[1]);
    assert_eq!(file["releaseName"], "Demo Desktop App 2.1.0");
    assert_eq!(file["extension"], "msi");
    assert_eq!(file["published"], true);
    assert_eq!(file["secured"], false);
    assert!(file["url"].as_str().unwrap().starts_with("https://"));
    assert_eq!(file["checksum"].as_str().unwrap().len(), 64);
    assert_eq!(
        releases[0]["files"][0]["secured"], true,
        "beta files need a key"
    );
    let published: Vec<&str> = releases
        .as_array()
        .unwrap()
        .iter()
        .map(|release| release["publishedAt"].as_str().unwrap())
        .collect();
    assert!(
        published.windows(2).all(|pair| pair[0] > pair[1]),
        "{published:?}"
    );
}

#[tokio::test]
async fn my_releases_filter_by_product_name_page_and_sort() {
    let app = start().await;
    let (token, _) = app.demo_tokens().await;
    let (app, token) = (&app, token.as_str());
    let list = move |query: &str| {
        let path = format!("/v3/me/releases?{query}");
        async move { json_of(app.get(&path, Some(token)).await).await }
    };

    let exact = list("product.displayName[eq]=Demo%20Desktop%20App").await;
    let wrong_case = list("product.displayName[eq]=demo%20desktop%20app").await;
    let contains = list("product.displayName[cn]=desktop").await;
    let other = list("product.displayName[eq]=Other%20App").await;
    let excluded = list("product.displayName[nin]=Demo%20Desktop%20App,Other").await;
    let second_page = list("page=2&limit=2").await;
    let oldest_first = list("sort=%2BpublishedAt").await;
    let refused = app
        .get("/v3/me/releases?productId[eq]=x", Some(token))
        .await;

    assert_eq!(ids(&exact), seed::RELEASE_IDS);
    assert_eq!(wrong_case, json!([]));
    assert_eq!(ids(&contains), seed::RELEASE_IDS);
    assert_eq!(other, json!([]));
    assert_eq!(excluded, json!([]));
    assert_eq!(ids(&second_page), [seed::RELEASE_IDS[2]]);
    let mut reversed = seed::RELEASE_IDS;
    reversed.reverse();
    assert_eq!(ids(&oldest_first), reversed);
    assert_error(refused, StatusCode::BAD_REQUEST, None).await;
}

#[tokio::test]
async fn a_user_without_licenses_has_no_machines_and_no_releases() {
    let app = start().await;
    let created = app
        .post(
            "/v3/users",
            Some(&app.pat()),
            &json!({"email": "new@example.com", "firstName": "New", "password": "long-enough"}),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let token = app.token_of("new@example.com", "long-enough").await;

    let releases = json_of(app.get("/v3/me/releases", Some(&token)).await).await;
    let activations = json_of(app.get("/v3/me/activations", Some(&token)).await).await;
    let anonymous = app.get("/v3/me/releases", None).await;

    assert_eq!(releases, json!([]));
    assert_eq!(activations, json!([]));
    assert_error(anonymous, StatusCode::UNAUTHORIZED, None).await;
}

// === the pipeline ===

#[tokio::test]
async fn the_portal_operations_are_rate_limited_and_recorded_like_the_others() {
    let app = start_with(SandboxOptions {
        rate_limit: Some(RateLimit {
            max_requests: 2,
            window: Duration::from_secs(60),
        }),
        ..SandboxOptions::default()
    })
    .await;
    let body = json!({"email": seed::DEMO_EMAIL});

    let mut statuses = Vec::new();
    for _ in 0..3 {
        let response = app
            .post("/v3/accounts/reset-password-request", None, &body)
            .await;
        statuses.push(response.status());
    }

    assert_eq!(
        statuses,
        [
            StatusCode::ACCEPTED,
            StatusCode::ACCEPTED,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    assert_eq!(
        app.controls().mails().len(),
        2,
        "the refused request sent nothing"
    );
    let recorded = app.controls().requests();
    assert_eq!(recorded.len(), 3);
    assert_eq!(recorded[2].status, Some(429));
    let sent: Value = serde_json::from_slice(&recorded[0].body).unwrap();
    assert_eq!(sent, body);
}

#[tokio::test]
async fn a_fault_rule_applies_to_a_portal_operation() {
    let app = start().await;
    app.controls()
        .add_fault(
            FaultRule::once(FaultAction::json(503, &json!({"message": "down"})))
                .method(Method::DELETE)
                .path_prefix("/v3/activations/"),
        )
        .unwrap();

    let faulted = app
        .call(
            Method::DELETE,
            &format!("/v3/activations/{}", seed::DEMO_ACTIVATION_IDS[0]),
            None,
            None,
        )
        .await;

    assert_eq!(faulted.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        app.controls().activations().len(),
        4,
        "the canned answer did no work"
    );
}

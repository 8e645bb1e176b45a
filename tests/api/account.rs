//! The account calls over gRPC against the sandbox: UpdateProfile with its
//! update mask, ChangePassword, RequestPasswordReset and ResetPassword, the
//! internal AccountService.CreatePasswordResetToken over mutual TLS, and
//! that none of their secrets reaches the logs.

use std::time::{SystemTime, UNIX_EPOCH};

use cryptlex_sandbox::{FaultAction, FaultRule, seed, totp};
use licensing_gateway::grpc::pb::issuance_service_client::IssuanceServiceClient;
use licensing_gateway::grpc::pb::{
    ChangePasswordRequest, CreatePasswordResetTokenRequest, CreateRecoveryCodesRequest,
    EnableTwoFactorRequest, GetProfileRequest, IssueLicenseRequest, LoginRequest, Profile,
    RequestPasswordResetRequest, ResetPasswordRequest, StartTwoFactorEnrollmentRequest,
    UpdateProfileRequest, create_password_reset_token_request, issue_license_request,
    reset_password_request,
};
use tonic::{Code, Request};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;

use crate::helpers::{TestApp, TestOptions, captured_logs, spawn_app, spawn_app_with};
use crate::support::client::{assert_status, with_token};

/// Requests the sandbox received for `method` `path`.
fn upstream_calls(app: &TestApp, method: &str, path: &str) -> usize {
    app.cryptlex()
        .requests()
        .iter()
        .filter(|request| request.method == method && request.path == path)
        .count()
}

fn login(email: &str, password: &str) -> LoginRequest {
    LoginRequest {
        email: email.into(),
        password: password.into(),
        ..Default::default()
    }
}

fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|path| (*path).to_owned()).collect(),
    })
}

fn names(first_name: &str, last_name: &str) -> Option<Profile> {
    Some(Profile {
        first_name: first_name.into(),
        last_name: last_name.into(),
        ..Profile::default()
    })
}

/// The fields of a status's `BadRequest` violations.
fn violated_fields(status: &tonic::Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .expect("BadRequest details")
        .field_violations
        .into_iter()
        .map(|violation| violation.field)
        .collect()
}

/// Two free failures, then a minute's wait (long enough that a slow run
/// cannot slip past the back-off).
fn strict_throttle() -> TestOptions {
    TestOptions {
        env: vec![
            (
                "LICENSING_GATEWAY__LIMITS__LOGIN_FAILURES_PER_EMAIL".into(),
                "2".into(),
            ),
            (
                "LICENSING_GATEWAY__LIMITS__LOGIN_BACKOFF_BASE".into(),
                "60s".into(),
            ),
        ],
        ..TestOptions::default()
    }
}

// === UpdateProfile ===

#[tokio::test]
async fn update_profile_changes_the_masked_names_and_the_next_get_profile_shows_them_at_once() {
    // Arrange: the profile is in the gateway's cache
    let app = spawn_app().await;
    let token = app.demo_token().await;
    let mut client = app.user_client().await;
    let get_profile = || with_token(GetProfileRequest {}, &token);
    let before = client.get_profile(get_profile()).await.expect("profile");
    assert_eq!(
        before.into_inner().profile.expect("profile").first_name,
        "Demo"
    );

    // Act: only the first name, although the request carries a last name too
    let updated = client
        .update_profile(with_token(
            UpdateProfileRequest {
                profile: names("Ada", "Ignored"),
                update_mask: mask(&["first_name"]),
            },
            &token,
        ))
        .await
        .expect("updated")
        .into_inner()
        .profile
        .expect("profile");

    // Assert
    assert_eq!(
        (updated.first_name.as_str(), updated.last_name.as_str()),
        ("Ada", "User")
    );
    let reads_before = upstream_calls(&app, "GET", "/v3/me");
    let next = client
        .get_profile(get_profile())
        .await
        .expect("profile")
        .into_inner()
        .profile
        .expect("profile");
    assert_eq!(
        (next.first_name.as_str(), next.last_name.as_str()),
        ("Ada", "User")
    );
    assert_eq!(
        upstream_calls(&app, "GET", "/v3/me"),
        reads_before + 1,
        "the cached profile was dropped, so the next read asked Cryptlex"
    );
    let stored = app
        .cryptlex()
        .user_by_email(seed::DEMO_EMAIL)
        .expect("user");
    assert_eq!(stored.first_name, "Ada");
    let other = app
        .cryptlex()
        .user_by_email(seed::OTHER_EMAIL)
        .expect("user");
    assert_ne!(other.first_name, "Ada", "nobody else changed");

    // `*` sets both, and may clear the last name
    let both = client
        .update_profile(with_token(
            UpdateProfileRequest {
                profile: names("Grace", ""),
                update_mask: mask(&["*"]),
            },
            &token,
        ))
        .await
        .expect("updated")
        .into_inner()
        .profile
        .expect("profile");
    assert_eq!(
        (both.first_name.as_str(), both.last_name.as_str()),
        ("Grace", "")
    );

    // no mask: the names that are set
    let unmasked = client
        .update_profile(with_token(
            UpdateProfileRequest {
                profile: names("", "Hopper"),
                update_mask: None,
            },
            &token,
        ))
        .await
        .expect("updated")
        .into_inner()
        .profile
        .expect("profile");
    assert_eq!(
        (unmasked.first_name.as_str(), unmasked.last_name.as_str()),
        ("Grace", "Hopper")
    );
}

#[tokio::test]
async fn update_profile_refuses_email_unknown_paths_and_an_empty_first_name_before_any_upstream_call()
 {
    // Arrange
    let app = spawn_app().await;
    let token = app.demo_token().await;
    let mut client = app.user_client().await;
    app.cryptlex().clear_requests();
    let update = |profile: Option<Profile>, update_mask| {
        with_token(
            UpdateProfileRequest {
                profile,
                update_mask,
            },
            &token,
        )
    };
    let new_email = Some(Profile {
        email: "attacker@example.com".into(),
        ..Profile::default()
    });

    // Act
    let email = client
        .update_profile(update(new_email, mask(&["email"])))
        .await;
    let unknown = client
        .update_profile(update(names("Ada", ""), mask(&["first_name", "company"])))
        .await;
    let empty_first = client
        .update_profile(update(names("", "x"), mask(&["first_name"])))
        .await;
    let nothing = client.update_profile(update(None, None)).await;
    let too_long = client
        .update_profile(update(names(&"x".repeat(257), ""), None))
        .await;

    // Assert
    let email = assert_status(email, Code::InvalidArgument, "INVALID_ARGUMENT");
    let violation = &email
        .get_details_bad_request()
        .expect("BadRequest")
        .field_violations[0];
    assert_eq!(violation.field, "update_mask");
    assert!(
        violation.description.contains("stolen session"),
        "says why: {}",
        violation.description
    );
    for (result, field) in [
        (unknown, "update_mask"),
        (empty_first, "profile.first_name"),
        (nothing, "profile"),
        (too_long, "profile.first_name"),
    ] {
        let status = assert_status(result, Code::InvalidArgument, "INVALID_ARGUMENT");
        assert_eq!(violated_fields(&status), [field]);
    }
    assert!(
        app.cryptlex().requests().is_empty(),
        "nothing sent upstream"
    );
    let stored = app
        .cryptlex()
        .user_by_email(seed::DEMO_EMAIL)
        .expect("user");
    assert_eq!(
        (stored.first_name.as_str(), stored.email.as_str()),
        ("Demo", seed::DEMO_EMAIL)
    );
}

// === ChangePassword ===

#[tokio::test]
async fn change_password_with_the_right_current_password_changes_it() {
    let app = spawn_app().await;
    let token = app.demo_token().await;
    let mut client = app.user_client().await;

    client
        .change_password(with_token(
            ChangePasswordRequest {
                current_password: seed::DEMO_PASSWORD.into(),
                new_password: "a-brand-new-password".into(),
            },
            &token,
        ))
        .await
        .expect("changed");

    let old = client
        .login(login(seed::DEMO_EMAIL, seed::DEMO_PASSWORD))
        .await;
    assert_status(old, Code::Unauthenticated, "INVALID_CREDENTIALS");
    client
        .login(login(seed::DEMO_EMAIL, "a-brand-new-password"))
        .await
        .expect("the new password signs in");
    let update = app
        .cryptlex()
        .requests()
        .into_iter()
        .find(|request| request.path.ends_with("/update-password"))
        .expect("sent");
    assert_eq!(
        update.path,
        format!("/v3/users/{}/update-password", seed::DEMO_USER_ID),
        "the caller's own id, from their profile"
    );
}

#[tokio::test]
async fn wrong_current_passwords_are_refused_and_count_as_failed_sign_ins() {
    // Arrange
    let app = spawn_app_with(strict_throttle()).await;
    let token = app.demo_token().await;
    let mut client = app.user_client().await;
    let change = |current: &str| {
        with_token(
            ChangePasswordRequest {
                current_password: current.into(),
                new_password: "a-brand-new-password".into(),
            },
            &token,
        )
    };

    // Act
    let wrong = client.change_password(change("not-the-password")).await;
    let short = client.change_password(change("short")).await;
    let sent = upstream_calls(
        &app,
        "POST",
        &format!("/v3/users/{}/update-password", seed::DEMO_USER_ID),
    );
    let throttled = client.change_password(change(seed::DEMO_PASSWORD)).await;
    let sign_in = client
        .login(login(seed::DEMO_EMAIL, seed::DEMO_PASSWORD))
        .await;

    // Assert
    assert_status(wrong, Code::InvalidArgument, "WRONG_CURRENT_PASSWORD");
    assert_status(short, Code::InvalidArgument, "WRONG_CURRENT_PASSWORD");
    assert_eq!(
        sent, 1,
        "a too-short current password cannot match and costs no call"
    );
    assert_status(throttled, Code::ResourceExhausted, "TOO_MANY_ATTEMPTS");
    assert_status(sign_in, Code::ResourceExhausted, "TOO_MANY_ATTEMPTS");
    assert_eq!(
        upstream_calls(
            &app,
            "POST",
            &format!("/v3/users/{}/update-password", seed::DEMO_USER_ID),
        ),
        sent
    );
}

#[tokio::test]
async fn a_new_password_is_held_to_sign_up_s_rules_before_any_upstream_call() {
    let app = spawn_app().await;
    let token = app.demo_token().await;
    app.cryptlex().clear_requests();
    let result = app
        .user_client()
        .await
        .change_password(with_token(
            ChangePasswordRequest {
                current_password: String::new(),
                new_password: "short".into(),
            },
            &token,
        ))
        .await;
    let status = assert_status(result, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(
        violated_fields(&status),
        ["current_password", "new_password"]
    );
    assert!(app.cryptlex().requests().is_empty());
}

// === RequestPasswordReset ===

fn reset_request(email: &str) -> RequestPasswordResetRequest {
    RequestPasswordResetRequest {
        email: email.into(),
    }
}

#[tokio::test]
async fn a_reset_request_answers_the_same_for_known_and_unknown_addresses_and_mails_only_the_known()
{
    let app = spawn_app().await;
    let mut client = app.user_client().await;

    let known = client
        .request_password_reset(reset_request(seed::DEMO_EMAIL))
        .await
        .expect("accepted")
        .into_inner();
    let unknown = client
        .request_password_reset(reset_request("nobody@example.com"))
        .await
        .expect("accepted")
        .into_inner();

    assert_eq!(known, unknown);
    assert_eq!(
        upstream_calls(&app, "POST", "/v3/accounts/reset-password-request"),
        2,
        "both went to Cryptlex: the gateway cannot know who has an account"
    );
    let mails = app.cryptlex().mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(mails[0].to, seed::DEMO_EMAIL);
    assert_eq!(mails[0].user_id, seed::DEMO_USER_ID);
}

#[tokio::test]
async fn cryptlex_refusing_an_unknown_address_is_answered_like_a_sent_mail() {
    let app = spawn_app().await;
    let mut client = app.user_client().await;
    for status in [404, 400] {
        let mut rule = FaultRule::once(FaultAction::json(
            status,
            &serde_json::json!({"message": "User not found", "code": null}),
        ));
        rule.path_prefix = Some("/v3/accounts/reset-password-request".into());
        app.cryptlex().add_fault(rule).expect("fault");
        client
            .request_password_reset(reset_request("nobody@example.com"))
            .await
            .unwrap_or_else(|status| panic!("the same answer as for a known address: {status:?}"));
    }
    // A fault of the way to Cryptlex is no answer about the address.
    let mut rule = FaultRule::once(FaultAction::json(
        503,
        &serde_json::json!({"message": "down"}),
    ));
    rule.path_prefix = Some("/v3/accounts/reset-password-request".into());
    app.cryptlex().add_fault(rule).expect("fault");
    let down = client
        .request_password_reset(reset_request("nobody@example.com"))
        .await;
    assert_eq!(down.expect_err("unavailable").code(), Code::Unavailable);
}

#[tokio::test]
async fn reset_requests_are_throttled_per_address_the_same_for_known_and_unknown_ones() {
    let app = spawn_app().await;
    let mut client = app.user_client().await;
    // Three per address per hour by default.
    for _ in 0..3 {
        for email in [seed::DEMO_EMAIL, "nobody@example.com"] {
            client
                .request_password_reset(reset_request(email))
                .await
                .expect("within the allowance");
        }
    }
    let sent = upstream_calls(&app, "POST", "/v3/accounts/reset-password-request");

    let known = client
        .request_password_reset(reset_request(seed::DEMO_EMAIL))
        .await;
    let unknown = client
        .request_password_reset(reset_request("NOBODY@example.com"))
        .await;

    let known = assert_status(known, Code::ResourceExhausted, "TOO_MANY_ATTEMPTS");
    let unknown = assert_status(unknown, Code::ResourceExhausted, "TOO_MANY_ATTEMPTS");
    assert_eq!(known.message(), unknown.message());
    assert_eq!(
        upstream_calls(&app, "POST", "/v3/accounts/reset-password-request"),
        sent
    );
    assert_eq!(
        app.cryptlex().mails().len(),
        3,
        "no more mail for the owner"
    );
}

#[tokio::test]
async fn reset_requests_are_throttled_per_client_network() {
    let app = spawn_app_with(TestOptions {
        env: vec![(
            "LICENSING_GATEWAY__LIMITS__PASSWORD_RESET_REQUESTS_PER_ADDRESS".into(),
            "3".into(),
        )],
        ..TestOptions::default()
    })
    .await;
    let mut client = app.user_client().await;
    for index in 0..3 {
        client
            .request_password_reset(reset_request(&format!("someone{index}@example.com")))
            .await
            .expect("within the network's allowance");
    }
    let sent = upstream_calls(&app, "POST", "/v3/accounts/reset-password-request");

    let refused = client
        .request_password_reset(reset_request(seed::DEMO_EMAIL))
        .await;

    let status = assert_status(refused, Code::ResourceExhausted, "TOO_MANY_ATTEMPTS");
    assert!(status.get_details_retry_info().is_some());
    assert_eq!(
        upstream_calls(&app, "POST", "/v3/accounts/reset-password-request"),
        sent
    );
    assert!(app.cryptlex().mails().is_empty());
}

// === ResetPassword ===

fn reset_by_id(user_id: &str, token: &str, new_password: &str) -> ResetPasswordRequest {
    ResetPasswordRequest {
        user: Some(reset_password_request::User::UserId(user_id.into())),
        token: token.into(),
        new_password: new_password.into(),
    }
}

fn reset_by_email(email: &str, token: &str, new_password: &str) -> ResetPasswordRequest {
    ResetPasswordRequest {
        user: Some(reset_password_request::User::Email(email.into())),
        token: token.into(),
        new_password: new_password.into(),
    }
}

#[tokio::test]
async fn reset_password_with_the_mailed_token_then_sign_in_with_the_new_password_once() {
    // Arrange
    let app = spawn_app().await;
    let mut client = app.user_client().await;
    client
        .request_password_reset(reset_request(seed::DEMO_EMAIL))
        .await
        .expect("accepted");
    let mail = app.cryptlex().mails().pop().expect("a mail");
    assert!(mail.link.contains(&mail.user_id), "{}", mail.link);

    // Act
    client
        .reset_password(reset_by_id(&mail.user_id, &mail.token, "reset-password-1"))
        .await
        .expect("reset");

    // Assert
    client
        .login(login(seed::DEMO_EMAIL, "reset-password-1"))
        .await
        .expect("the new password signs in");
    let old = client
        .login(login(seed::DEMO_EMAIL, seed::DEMO_PASSWORD))
        .await;
    assert_status(old, Code::Unauthenticated, "INVALID_CREDENTIALS");
    let again = client
        .reset_password(reset_by_id(&mail.user_id, &mail.token, "reset-password-2"))
        .await;
    assert_status(again, Code::FailedPrecondition, "RESET_TOKEN_INVALID");

    // by email, with the next mail's token
    client
        .request_password_reset(reset_request(seed::DEMO_EMAIL))
        .await
        .expect("accepted");
    let mail = app.cryptlex().mails().pop().expect("a second mail");
    client
        .reset_password(reset_by_email(
            seed::DEMO_EMAIL,
            &mail.token,
            "reset-password-3",
        ))
        .await
        .expect("reset by email");
    client
        .login(login(seed::DEMO_EMAIL, "reset-password-3"))
        .await
        .expect("signs in");
}

#[tokio::test]
async fn a_wrong_token_and_an_unknown_user_get_the_same_answer() {
    // Arrange: a real token, for the demo user
    let app = spawn_app().await;
    let mut client = app.user_client().await;
    client
        .request_password_reset(reset_request(seed::DEMO_EMAIL))
        .await
        .expect("accepted");
    let mail = app.cryptlex().mails().pop().expect("a mail");

    // Act
    let wrong = client
        .reset_password(reset_by_id(
            seed::DEMO_USER_ID,
            "not-the-token",
            "new-password-1",
        ))
        .await;
    let someone_else = client
        .reset_password(reset_by_id(
            seed::OTHER_USER_ID,
            &mail.token,
            "new-password-1",
        ))
        .await;
    let unknown_id = client
        .reset_password(reset_by_id(
            "00000000-0000-4000-8000-000000000000",
            &mail.token,
            "new-password-1",
        ))
        .await;
    let unknown_email = client
        .reset_password(reset_by_email(
            "nobody@example.com",
            &mail.token,
            "new-password-1",
        ))
        .await;

    // Assert
    let answers: Vec<tonic::Status> = [wrong, someone_else, unknown_id, unknown_email]
        .into_iter()
        .map(|result| assert_status(result, Code::FailedPrecondition, "RESET_TOKEN_INVALID"))
        .collect();
    assert!(
        answers
            .iter()
            .all(|status| status.message() == answers[0].message())
    );
    client
        .login(login(seed::OTHER_EMAIL, seed::OTHER_PASSWORD))
        .await
        .expect("the other user's password is untouched");
    client
        .reset_password(reset_by_id(
            seed::DEMO_USER_ID,
            &mail.token,
            "new-password-2",
        ))
        .await
        .expect("the demo user's token still works for the demo user");
}

#[tokio::test]
async fn token_guesses_are_throttled_per_account_before_reaching_cryptlex() {
    // Arrange
    let app = spawn_app_with(strict_throttle()).await;
    let mut client = app.user_client().await;
    client
        .request_password_reset(reset_request(seed::DEMO_EMAIL))
        .await
        .expect("accepted");
    let mail = app.cryptlex().mails().pop().expect("a mail");
    let path = format!("/v3/users/{}/reset-password", seed::DEMO_USER_ID);

    // Act
    for guess in ["guess-1", "guess-2"] {
        let result = client
            .reset_password(reset_by_id(seed::DEMO_USER_ID, guess, "new-password-1"))
            .await;
        assert_status(result, Code::FailedPrecondition, "RESET_TOKEN_INVALID");
    }
    let sent = upstream_calls(&app, "POST", &path);
    let throttled = client
        .reset_password(reset_by_id(
            seed::DEMO_USER_ID,
            &mail.token,
            "new-password-1",
        ))
        .await;

    // Assert
    assert_status(throttled, Code::ResourceExhausted, "TOO_MANY_ATTEMPTS");
    assert_eq!(upstream_calls(&app, "POST", &path), sent);
}

#[tokio::test]
async fn a_malformed_reset_is_invalid_argument_without_an_upstream_call() {
    let app = spawn_app().await;
    let result = app
        .user_client()
        .await
        .reset_password(ResetPasswordRequest {
            user: None,
            token: "t".repeat(1025),
            new_password: "short".into(),
        })
        .await;
    let status = assert_status(result, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(violated_fields(&status), ["user", "token", "new_password"]);
    assert!(app.cryptlex().requests().is_empty());
}

// === AccountService.CreatePasswordResetToken (internal, mutual TLS) ===

fn mint_for_email(email: &str) -> CreatePasswordResetTokenRequest {
    CreatePasswordResetTokenRequest {
        user: Some(create_password_reset_token_request::User::Email(
            email.into(),
        )),
    }
}

fn mint_for_id(user_id: &str) -> CreatePasswordResetTokenRequest {
    CreatePasswordResetTokenRequest {
        user: Some(create_password_reset_token_request::User::UserId(
            user_id.into(),
        )),
    }
}

#[tokio::test]
async fn the_mailer_mints_a_reset_token_that_resets_the_password() {
    // Arrange
    let app = spawn_app().await;
    let mut mailer = app.mailer_client().await;

    // Act
    let minted = mailer
        .create_password_reset_token(mint_for_email(seed::DEMO_EMAIL))
        .await
        .expect("minted")
        .into_inner();
    let by_id = mailer
        .create_password_reset_token(mint_for_id(seed::OTHER_USER_ID))
        .await
        .expect("minted")
        .into_inner();

    // Assert
    assert_eq!(minted.user_id, seed::DEMO_USER_ID);
    assert_eq!(minted.email, seed::DEMO_EMAIL);
    assert!(!minted.token.is_empty());
    assert_eq!(by_id.email, seed::OTHER_EMAIL);
    assert!(
        app.cryptlex().mails().is_empty(),
        "the website mails it, not Cryptlex"
    );
    let mut client = app.user_client().await;
    client
        .reset_password(reset_by_id(
            &minted.user_id,
            &minted.token,
            "minted-password-1",
        ))
        .await
        .expect("reset with the minted token");
    client
        .login(login(seed::DEMO_EMAIL, "minted-password-1"))
        .await
        .expect("signs in");
}

#[tokio::test]
async fn minting_for_an_unknown_user_is_not_found() {
    let app = spawn_app().await;
    let mut mailer = app.mailer_client().await;
    let by_email = mailer
        .create_password_reset_token(mint_for_email("nobody@example.com"))
        .await;
    assert_status(by_email, Code::NotFound, "NOT_FOUND");
    let by_id = mailer
        .create_password_reset_token(mint_for_id("00000000-0000-4000-8000-000000000000"))
        .await;
    assert_status(by_id, Code::NotFound, "NOT_FOUND");
    let neither = mailer
        .create_password_reset_token(CreatePasswordResetTokenRequest { user: None })
        .await;
    assert_status(neither, Code::InvalidArgument, "INVALID_ARGUMENT");
}

#[tokio::test]
async fn only_an_identity_allowed_the_operation_may_mint_tokens_and_refusals_cost_no_upstream_call()
{
    // Arrange
    let app = spawn_app().await;
    let files = app.sandbox.pki.files().clone();
    let licenses = app.cryptlex().license_count();
    app.cryptlex().clear_requests();

    // Act: the payment service (allow-listed for IssueLicense only), an
    // identity the allow-list does not name, and the mailer issuing licenses
    let payment = app
        .account_client_as(&files.payment_service_cert, &files.payment_service_key)
        .await
        .create_password_reset_token(mint_for_email(seed::DEMO_EMAIL))
        .await;
    let intruder = app
        .account_client_as(&files.intruder_cert, &files.intruder_key)
        .await
        .create_password_reset_token(mint_for_email(seed::DEMO_EMAIL))
        .await;
    let cert = std::fs::read_to_string(&files.website_mailer_cert).expect("cert");
    let key = std::fs::read_to_string(&files.website_mailer_key).expect("key");
    let issue = IssuanceServiceClient::new(
        app.internal_channel(Some((&cert, &key)))
            .await
            .expect("mTLS connect"),
    )
    .issue_license(IssueLicenseRequest {
        request_id: "mailer-1".into(),
        user: Some(issue_license_request::User::UserEmail(
            seed::DEMO_EMAIL.into(),
        )),
        ..Default::default()
    })
    .await;

    // Assert
    assert_status(payment, Code::PermissionDenied, "OPERATION_NOT_ALLOWED");
    assert_status(intruder, Code::PermissionDenied, "CLIENT_NOT_ALLOWED");
    assert_status(issue, Code::PermissionDenied, "OPERATION_NOT_ALLOWED");
    assert!(
        app.cryptlex().requests().is_empty(),
        "nothing sent upstream"
    );
    assert_eq!(app.cryptlex().license_count(), licenses);
    // The payment service still issues.
    app.payment_client()
        .await
        .issue_license(IssueLicenseRequest {
            request_id: "payment-1".into(),
            user: Some(issue_license_request::User::UserEmail(
                seed::DEMO_EMAIL.into(),
            )),
            ..Default::default()
        })
        .await
        .expect("issued");
}

#[tokio::test]
async fn the_internal_listener_serves_the_account_service_and_the_public_one_does_not() {
    let app = spawn_app().await;
    let mut internal = HealthClient::new(
        app.internal_channel(Some((
            &std::fs::read_to_string(&app.sandbox.pki.files().website_mailer_cert).expect("cert"),
            &std::fs::read_to_string(&app.sandbox.pki.files().website_mailer_key).expect("key"),
        )))
        .await
        .expect("mTLS connect"),
    );
    for service in [
        "licensing.v1.IssuanceService",
        "licensing.v1.AccountService",
    ] {
        let answer = internal
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health")
            .into_inner();
        assert_eq!(answer.status(), ServingStatus::Serving, "{service}");
    }
    let mut public = HealthClient::new(app.public_channel().await);
    let unknown = public
        .check(HealthCheckRequest {
            service: "licensing.v1.AccountService".into(),
        })
        .await;
    assert_eq!(unknown.expect_err("not served here").code(), Code::NotFound);
}

// === secrets ===

/// `request` with `x-request-id: id`.
fn tagged<T>(mut request: Request<T>, id: &str) -> Request<T> {
    request
        .metadata_mut()
        .insert("x-request-id", id.parse().expect("a valid request id"));
    request
}

#[tokio::test]
async fn no_password_code_recovery_code_otpauth_secret_or_reset_token_is_logged() {
    // Arrange
    let logs = captured_logs();
    let app = spawn_app().await;
    let mut client = app.user_client().await;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let request_id = format!("account-secrets-{run}");
    macro_rules! with_id {
        ($request:expr) => {
            tagged($request, &request_id)
        };
    }
    let token = app.demo_token().await;

    // Act: every call that carries or returns a secret
    let enrollment = client
        .start_two_factor_enrollment(with_id!(with_token(
            StartTwoFactorEnrollmentRequest {},
            &token,
        )))
        .await
        .expect("started")
        .into_inner();
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let code = totp::code(&enrollment.secret, unix).expect("code");
    client
        .enable_two_factor(with_id!(with_token(
            EnableTwoFactorRequest { code: code.clone() },
            &token,
        )))
        .await
        .expect("enabled");
    let recovery_codes = client
        .create_recovery_codes(with_id!(with_token(
            CreateRecoveryCodesRequest { code: code.clone() },
            &token,
        )))
        .await
        .expect("codes")
        .into_inner()
        .recovery_codes;
    let mut with_recovery = login(seed::DEMO_EMAIL, seed::DEMO_PASSWORD);
    with_recovery.two_factor_recovery_code = recovery_codes[0].clone();
    client
        .login(with_id!(Request::new(with_recovery)))
        .await
        .expect("signed in");
    let mut wrong_recovery = login(seed::DEMO_EMAIL, seed::DEMO_PASSWORD);
    wrong_recovery.two_factor_recovery_code = "zzzzz-guess".into();
    let _ = client.login(with_id!(Request::new(wrong_recovery))).await;
    client
        .change_password(with_id!(with_token(
            ChangePasswordRequest {
                current_password: seed::DEMO_PASSWORD.into(),
                new_password: "changed-secret-password".into(),
            },
            &token,
        )))
        .await
        .expect("changed");
    let _ = client
        .change_password(with_id!(with_token(
            ChangePasswordRequest {
                current_password: "wrong-secret-password".into(),
                new_password: "another-secret-password".into(),
            },
            &token,
        )))
        .await;
    client
        .request_password_reset(with_id!(Request::new(reset_request(seed::DEMO_EMAIL))))
        .await
        .expect("requested");
    let mail = app.cryptlex().mails().pop().expect("a mail");
    client
        .reset_password(with_id!(Request::new(reset_by_id(
            &mail.user_id,
            &mail.token,
            "mailed-secret-password",
        ))))
        .await
        .expect("reset");
    let minted = app
        .mailer_client()
        .await
        .create_password_reset_token(with_id!(Request::new(mint_for_email(seed::DEMO_EMAIL))))
        .await
        .expect("minted")
        .into_inner();
    let _ = client
        .reset_password(with_id!(Request::new(reset_by_email(
            seed::DEMO_EMAIL,
            "a-guessed-reset-token",
            "guessed-secret-password",
        ))))
        .await;

    // Assert
    let log_text = logs.lines().join("\n");
    assert!(
        log_text.contains(&format!("account-secrets-{run}")),
        "the calls were logged"
    );
    let mut secrets = vec![
        seed::DEMO_PASSWORD.to_owned(),
        "changed-secret-password".to_owned(),
        "wrong-secret-password".to_owned(),
        "another-secret-password".to_owned(),
        "mailed-secret-password".to_owned(),
        "guessed-secret-password".to_owned(),
        "a-guessed-reset-token".to_owned(),
        "zzzzz-guess".to_owned(),
        enrollment.secret.clone(),
        enrollment.otpauth_url.clone(),
        mail.token.clone(),
        minted.token.clone(),
    ];
    secrets.extend(recovery_codes);
    for secret in &secrets {
        assert!(
            !log_text.contains(secret.as_str()),
            "a secret in the logs: {secret:?}"
        );
    }
    // Six digits may appear anywhere by chance (a timestamp's microseconds),
    // so the code is looked for as a value of its own.
    for shape in [
        format!("\"{code}\""),
        format!("={code}"),
        format!(": {code}"),
    ] {
        assert!(
            !log_text.contains(&shape),
            "the two-factor code in the logs"
        );
    }
}

//! Two-factor authentication over gRPC against the sandbox: enrolment, the
//! second step of sign-in (codes computed like an authenticator app from the
//! otpauth URL), recovery codes, disabling, and the throttles that keep six
//! digits from being found by trying.

use std::time::{SystemTime, UNIX_EPOCH};

use cryptlex_sandbox::{seed, totp};
use licensing_gateway::grpc::pb::{
    CreateRecoveryCodesRequest, DisableTwoFactorRequest, EnableTwoFactorRequest, GetProfileRequest,
    LoginRequest, StartTwoFactorEnrollmentRequest,
};
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{TestApp, TestOptions, spawn_app, spawn_app_with};
use crate::support::client::{assert_status, with_token};

/// Seconds since the Unix epoch, as an authenticator app's clock reads them.
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// The code an authenticator app shows now for `secret`.
fn code_now(secret: &str) -> String {
    totp::code(secret, now()).expect("a base32 secret")
}

/// A well-formed code that is none of the codes the sandbox accepts for
/// `secret` around now (the previous, current and next step), nor the step
/// after those in case the test crosses a step boundary.
fn wrong_code(secret: &str) -> String {
    let accepted: Vec<String> = [-30_i64, 0, 30, 60]
        .into_iter()
        .map(|offset| {
            let at = now().saturating_add_signed(offset);
            totp::code(secret, at).expect("a base32 secret")
        })
        .collect();
    (0..10)
        .map(|digit| digit.to_string().repeat(6))
        .find(|candidate| !accepted.contains(candidate))
        .expect("four codes cannot cover ten candidates")
}

/// A login of the demo user with an optional second factor.
fn demo_login(code: &str, recovery_code: &str) -> LoginRequest {
    LoginRequest {
        email: seed::DEMO_EMAIL.into(),
        password: seed::DEMO_PASSWORD.into(),
        two_factor_code: code.into(),
        two_factor_recovery_code: recovery_code.into(),
    }
}

/// Starts enrolment for `token`'s user and returns the otpauth URL and the
/// secret the response carries.
async fn start_enrollment(app: &TestApp, token: &str) -> (String, String) {
    let started = app
        .user_client()
        .await
        .start_two_factor_enrollment(with_token(StartTwoFactorEnrollmentRequest {}, token))
        .await
        .expect("enrolment starts")
        .into_inner();
    (started.otpauth_url, started.secret)
}

/// Enrols the demo user and turns two-factor authentication on; returns
/// the secret.
async fn enable_for_demo(app: &TestApp, token: &str) -> String {
    let (_, secret) = start_enrollment(app, token).await;
    app.user_client()
        .await
        .enable_two_factor(with_token(
            EnableTwoFactorRequest {
                code: code_now(&secret),
            },
            token,
        ))
        .await
        .expect("enabled");
    secret
}

/// Requests the sandbox received for `method` `path`.
fn upstream_calls(app: &TestApp, method: &str, path: &str) -> usize {
    app.cryptlex()
        .requests()
        .iter()
        .filter(|request| request.method == method && request.path == path)
        .count()
}

#[tokio::test]
async fn enrolment_then_sign_in_with_a_code_a_recovery_code_once_and_disabling() {
    // Arrange
    let app = spawn_app().await;
    let token = app.demo_token().await;
    let mut client = app.user_client().await;

    // Act: enrolment hands out the otpauth URL and the secret it holds
    let (otpauth_url, secret) = start_enrollment(&app, &token).await;
    let url = url::Url::parse(&otpauth_url).expect("a URL");
    assert_eq!(url.scheme(), "otpauth");
    let in_url = url
        .query_pairs()
        .find(|(name, _)| name == "secret")
        .map(|(_, value)| value.into_owned());
    assert_eq!(in_url.as_deref(), Some(secret.as_str()));
    // nothing changes until a code confirms it
    client
        .login(demo_login("", ""))
        .await
        .expect("no code needed yet");

    let enabled = client
        .enable_two_factor(with_token(
            EnableTwoFactorRequest {
                code: code_now(&secret),
            },
            &token,
        ))
        .await
        .expect("enabled")
        .into_inner()
        .profile
        .expect("profile");
    assert!(enabled.two_factor_enabled);
    let profile = client
        .get_profile(with_token(GetProfileRequest {}, &token))
        .await
        .expect("profile")
        .into_inner()
        .profile
        .expect("profile");
    assert!(
        profile.two_factor_enabled,
        "the cached profile was dropped when two-factor authentication came on"
    );

    // Assert: a sign-in now needs the code
    let without = client.login(demo_login("", "")).await;
    assert_status(without, Code::Unauthenticated, "TWO_FACTOR_REQUIRED");
    let wrong = client.login(demo_login(&wrong_code(&secret), "")).await;
    assert_status(wrong, Code::InvalidArgument, "INVALID_TWO_FACTOR_CODE");
    let session = client
        .login(demo_login(&code_now(&secret), ""))
        .await
        .expect("the authenticator's code signs in")
        .into_inner()
        .session
        .expect("session");
    assert!(!session.access_token.is_empty());

    // recovery codes: each signs in once
    let codes = client
        .create_recovery_codes(with_token(
            CreateRecoveryCodesRequest {
                code: code_now(&secret),
            },
            &token,
        ))
        .await
        .expect("recovery codes")
        .into_inner()
        .recovery_codes;
    assert_eq!(codes.len(), 10, "{}", codes.len());
    client
        .login(demo_login("", &codes[0]))
        .await
        .expect("a recovery code signs in");
    let spent = client.login(demo_login("", &codes[0])).await;
    assert_status(spent, Code::InvalidArgument, "INVALID_TWO_FACTOR_CODE");

    // disabling needs a code, and then sign-in needs none
    let disabled = client
        .disable_two_factor(with_token(
            DisableTwoFactorRequest {
                code: code_now(&secret),
            },
            &token,
        ))
        .await
        .expect("disabled")
        .into_inner()
        .profile
        .expect("profile");
    assert!(!disabled.two_factor_enabled);
    let profile = client
        .get_profile(with_token(GetProfileRequest {}, &token))
        .await
        .expect("profile")
        .into_inner()
        .profile
        .expect("profile");
    assert!(
        !profile.two_factor_enabled,
        "no stale profile after disabling"
    );
    client
        .login(demo_login("", ""))
        .await
        .expect("no code needed any more");
}

#[tokio::test]
async fn two_factor_calls_before_enrolment_are_failed_precondition() {
    let app = spawn_app().await;
    let token = app.demo_token().await;
    let mut client = app.user_client().await;

    let enable = client
        .enable_two_factor(with_token(
            EnableTwoFactorRequest {
                code: "123456".into(),
            },
            &token,
        ))
        .await;
    assert_status(enable, Code::FailedPrecondition, "TWO_FACTOR_NOT_ENABLED");
    let recovery = client
        .create_recovery_codes(with_token(
            CreateRecoveryCodesRequest {
                code: "123456".into(),
            },
            &token,
        ))
        .await;
    assert_status(recovery, Code::FailedPrecondition, "TWO_FACTOR_NOT_ENABLED");
    let disable = client
        .disable_two_factor(with_token(
            DisableTwoFactorRequest {
                code: "123456".into(),
            },
            &token,
        ))
        .await;
    assert_status(disable, Code::FailedPrecondition, "TWO_FACTOR_NOT_ENABLED");
}

#[tokio::test]
async fn malformed_codes_are_invalid_argument_without_an_upstream_call() {
    // Arrange
    let app = spawn_app().await;
    let token = app.demo_token().await;
    let mut client = app.user_client().await;
    app.cryptlex().clear_requests();

    // Act
    let both = client.login(demo_login("123456", "abcde-fghij")).await;
    let short = client.login(demo_login("12345", "")).await;
    let letters = client
        .enable_two_factor(with_token(
            EnableTwoFactorRequest {
                code: "12a456".into(),
            },
            &token,
        ))
        .await;
    let empty = client
        .disable_two_factor(with_token(DisableTwoFactorRequest::default(), &token))
        .await;

    // Assert
    for (result, field) in [
        (both.map(drop), "two_factor_recovery_code"),
        (short.map(drop), "two_factor_code"),
        (letters.map(drop), "code"),
        (empty.map(drop), "code"),
    ] {
        let status = assert_status(result, Code::InvalidArgument, "INVALID_ARGUMENT");
        let violations = status
            .get_details_bad_request()
            .expect("BadRequest")
            .field_violations;
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].field, field);
    }
    assert!(
        app.cryptlex().requests().is_empty(),
        "nothing sent upstream"
    );
}

#[tokio::test]
async fn two_factor_calls_without_a_session_are_unauthenticated() {
    let app = spawn_app().await;
    let mut client = app.user_client().await;
    let start = client
        .start_two_factor_enrollment(StartTwoFactorEnrollmentRequest {})
        .await;
    assert_status(start, Code::Unauthenticated, "TOKEN_MISSING");
    let disable = client
        .disable_two_factor(DisableTwoFactorRequest {
            code: "123456".into(),
        })
        .await;
    assert_status(disable, Code::Unauthenticated, "TOKEN_MISSING");
    assert!(app.cryptlex().requests().is_empty());
}

/// Two free failures, then a minute's wait: long enough that a slow test
/// run cannot slip past the back-off.
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

#[tokio::test]
async fn wrong_codes_for_disabling_are_throttled_per_user_before_reaching_cryptlex() {
    // Arrange: a stolen session of a user with two-factor authentication
    let app = spawn_app_with(strict_throttle()).await;
    let token = app.demo_token().await;
    let secret = enable_for_demo(&app, &token).await;
    let mut client = app.user_client().await;
    let disable = |code: String| with_token(DisableTwoFactorRequest { code }, &token);

    // Act: guess codes
    for _ in 0..2 {
        let guess = client
            .disable_two_factor(disable(wrong_code(&secret)))
            .await;
        assert_status(guess, Code::InvalidArgument, "INVALID_TWO_FACTOR_CODE");
    }
    let sent = upstream_calls(&app, "PATCH", "/v3/me");
    let throttled = client
        .disable_two_factor(disable(wrong_code(&secret)))
        .await;
    let even_right = client.disable_two_factor(disable(code_now(&secret))).await;

    // Assert
    let status = assert_status(throttled, Code::ResourceExhausted, "TOO_MANY_ATTEMPTS");
    assert!(status.get_details_retry_info().is_some());
    assert_status(even_right, Code::ResourceExhausted, "TOO_MANY_ATTEMPTS");
    assert_eq!(
        upstream_calls(&app, "PATCH", "/v3/me"),
        sent,
        "throttled guesses never reach Cryptlex"
    );
    assert!(
        app.cryptlex()
            .user_by_email(seed::DEMO_EMAIL)
            .expect("demo user")
            .two_factor_enabled,
        "two-factor authentication is still on"
    );
    // The code throttle is not the sign-in throttle: the owner still signs in.
    client
        .login(demo_login(&code_now(&secret), ""))
        .await
        .expect("the owner signs in");
}

#[tokio::test]
async fn wrong_codes_at_sign_in_count_as_failed_sign_ins() {
    // Arrange: someone who knows the password, without the authenticator
    let app = spawn_app_with(strict_throttle()).await;
    let token = app.demo_token().await;
    let secret = enable_for_demo(&app, &token).await;
    let mut client = app.user_client().await;

    // Act
    for _ in 0..2 {
        let guess = client.login(demo_login(&wrong_code(&secret), "")).await;
        assert_status(guess, Code::InvalidArgument, "INVALID_TWO_FACTOR_CODE");
    }
    let logins = upstream_calls(&app, "POST", "/v3/accounts/login");
    let throttled = client.login(demo_login(&code_now(&secret), "")).await;
    let recovery = client.login(demo_login("", "abcde-fghij")).await;

    // Assert
    assert_status(throttled, Code::ResourceExhausted, "TOO_MANY_ATTEMPTS");
    assert_status(recovery, Code::ResourceExhausted, "TOO_MANY_ATTEMPTS");
    assert_eq!(upstream_calls(&app, "POST", "/v3/accounts/login"), logins);
}

#[tokio::test]
async fn being_asked_for_a_code_is_no_failed_sign_in() {
    // Arrange
    let app = spawn_app_with(strict_throttle()).await;
    let token = app.demo_token().await;
    let secret = enable_for_demo(&app, &token).await;
    let mut client = app.user_client().await;

    // Act: the website's first step, many times over
    for _ in 0..4 {
        let first_step = client.login(demo_login("", "")).await;
        assert_status(first_step, Code::Unauthenticated, "TWO_FACTOR_REQUIRED");
    }

    // Assert
    client
        .login(demo_login(&code_now(&secret), ""))
        .await
        .expect("the second step is not throttled");
}

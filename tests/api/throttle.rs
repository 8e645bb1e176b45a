//! The sign-in throttle from outside: attempts reserved before the upstream
//! call, client addresses behind proxies, and no lock-out button.

use std::collections::HashMap;
use std::time::Duration;

use cryptlex_sandbox::{FaultAction, FaultRule, seed};
use licensing_gateway::config::RawSettings;
use licensing_gateway::grpc::pb::LoginRequest;
use licensing_gateway::grpc::pb::user_service_client::UserServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

use crate::helpers::{TestApp, TestOptions, spawn_app_with};
use crate::support::client::reason;

const LOGIN_PATH: &str = "/v3/accounts/login";

async fn app_with(settings: &[(&str, &str)]) -> TestApp {
    spawn_app_with(TestOptions {
        env: settings
            .iter()
            .map(|(key, value)| {
                (
                    format!("LICENSING_GATEWAY__LIMITS__{key}"),
                    (*value).to_owned(),
                )
            })
            .collect(),
        ..TestOptions::default()
    })
    .await
}

/// A gateway behind one proxy that appends to `x-forwarded-for`.
async fn app_behind_a_proxy(settings: &[(&str, &str)]) -> TestApp {
    let mut all = vec![
        ("CLIENT_ADDRESS_HEADER", "x-forwarded-for"),
        ("TRUSTED_PROXY_HOPS", "1"),
    ];
    all.extend_from_slice(settings);
    app_with(&all).await
}

fn login(email: &str, password: &str, forwarded_for: Option<&str>) -> Request<LoginRequest> {
    let mut request = Request::new(LoginRequest {
        email: email.into(),
        password: password.into(),
        ..Default::default()
    });
    if let Some(value) = forwarded_for {
        request
            .metadata_mut()
            .insert("x-forwarded-for", value.parse().expect("metadata value"));
    }
    request
}

/// A wrong-password login for a fresh email, so only the address limit applies.
async fn stranger_login(
    client: &mut UserServiceClient<Channel>,
    index: usize,
    forwarded_for: Option<&str>,
) -> Result<(), Status> {
    let email = format!("stranger{index}@example.com");
    client
        .login(login(&email, "wrong-password", forwarded_for))
        .await
        .map(drop)
}

/// The demo user signing in with the right password, from `forwarded_for`.
async fn demo_login(
    client: &mut UserServiceClient<Channel>,
    forwarded_for: &str,
) -> Result<(), Status> {
    client
        .login(login(
            seed::DEMO_EMAIL,
            seed::DEMO_PASSWORD,
            Some(forwarded_for),
        ))
        .await
        .map(drop)
}

#[track_caller]
fn assert_throttled(result: Result<impl std::fmt::Debug, Status>) -> Duration {
    let status = result.expect_err("throttled");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason(&status), "TOO_MANY_ATTEMPTS");
    status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .expect("RetryInfo says when to come back")
}

#[track_caller]
fn assert_not_throttled(result: Result<impl std::fmt::Debug, Status>) {
    if let Err(status) = result {
        assert_ne!(status.code(), Code::ResourceExhausted, "{status:?}");
    }
}

#[tokio::test]
async fn concurrent_wrong_password_logins_for_one_email_reach_cryptlex_at_most_the_per_email_allowance()
 {
    // Arrange: a slow Cryptlex, so every guess is in flight at once
    let app = app_with(&[
        ("LOGIN_FAILURES_PER_EMAIL", "5"),
        ("LOGIN_ATTEMPTS_PER_ADDRESS", "1000"),
    ])
    .await;
    app.cryptlex()
        .add_fault(
            FaultRule::always(FaultAction::Delay(Duration::from_millis(300)))
                .path_prefix(LOGIN_PATH),
        )
        .expect("fault");
    let client = app.user_client().await;
    app.cryptlex().clear_requests();

    // Act: 30 concurrent guesses at one account's password
    let guesses: Vec<_> = (0..30)
        .map(|index| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let password = format!("guess-number-{index}");
                client.login(login(seed::DEMO_EMAIL, &password, None)).await
            })
        })
        .collect();
    let mut codes = Vec::new();
    for guess in guesses {
        let status = guess
            .await
            .expect("task")
            .expect_err("every guess is wrong");
        codes.push(status.code());
    }

    // Assert
    let reached_cryptlex = app
        .cryptlex()
        .requests()
        .iter()
        .filter(|request| request.path == LOGIN_PATH)
        .count();
    assert!(
        reached_cryptlex <= 5,
        "{reached_cryptlex} of 30 concurrent guesses reached Cryptlex"
    );
    let wrong = codes
        .iter()
        .filter(|code| **code == Code::Unauthenticated)
        .count();
    let throttled = codes
        .iter()
        .filter(|code| **code == Code::ResourceExhausted)
        .count();
    assert_eq!(wrong, reached_cryptlex, "{codes:?}");
    assert_eq!(wrong + throttled, 30, "{codes:?}");
}

#[tokio::test]
async fn behind_a_proxy_each_client_has_its_own_address_allowance_and_forged_entries_do_not_help() {
    // Arrange: every call arrives from the same TCP peer, as through an ingress
    let app = app_behind_a_proxy(&[("LOGIN_ATTEMPTS_PER_ADDRESS", "3")]).await;
    let mut client = app.user_client().await;

    // Act: one client spends its allowance, forging a new left-most entry each time
    for index in 0..3 {
        let forged = format!("10.9.8.{index}, 203.0.113.7");
        assert_not_throttled(stranger_login(&mut client, index, Some(&forged)).await);
    }
    let forged_again = stranger_login(&mut client, 3, Some("10.9.8.200, 203.0.113.7")).await;
    let someone_else = demo_login(&mut client, "198.51.100.8").await;

    // Assert
    assert_throttled(forged_again);
    someone_else.expect("another client behind the same proxy is not affected");
}

#[tokio::test]
async fn behind_a_proxy_a_missing_or_garbage_address_header_is_counted_as_one_unknown_caller() {
    // Arrange
    let app = app_behind_a_proxy(&[("LOGIN_ATTEMPTS_PER_ADDRESS", "3")]).await;
    let mut client = app.user_client().await;

    // Act
    assert_not_throttled(stranger_login(&mut client, 0, None).await);
    assert_not_throttled(stranger_login(&mut client, 1, Some("garbage")).await);
    assert_not_throttled(stranger_login(&mut client, 2, Some("")).await);
    let fourth = stranger_login(&mut client, 3, None).await;
    let with_an_address = demo_login(&mut client, "198.51.100.9").await;

    // Assert: fail closed, not skipped; callers with an address are unaffected
    assert_throttled(fourth);
    with_an_address.expect("a caller with a real address has its own allowance");
}

#[tokio::test]
async fn behind_a_proxy_addresses_rotating_within_one_ipv6_slash_64_share_an_allowance() {
    // Arrange
    let app = app_behind_a_proxy(&[("LOGIN_ATTEMPTS_PER_ADDRESS", "3")]).await;
    let mut client = app.user_client().await;

    // Act
    for index in 1..=3 {
        let address = format!("2001:db8:1:2::{index}");
        assert_not_throttled(stranger_login(&mut client, index, Some(&address)).await);
    }
    let rotated = stranger_login(&mut client, 4, Some("2001:db8:1:2:abcd::ff")).await;
    let next_subnet = stranger_login(&mut client, 5, Some("2001:db8:1:3::1")).await;

    // Assert
    assert_throttled(rotated);
    assert_not_throttled(next_subnet);
}

#[tokio::test]
async fn wrong_passwords_from_elsewhere_do_not_lock_the_owner_out() {
    // Arrange: the owner has signed in from their network before
    let app = app_behind_a_proxy(&[
        ("LOGIN_FAILURES_PER_EMAIL", "3"),
        ("LOGIN_BACKOFF_BASE", "300ms"),
        ("LOGIN_ATTEMPTS_PER_ADDRESS", "1000"),
    ])
    .await;
    let mut client = app.user_client().await;
    const OWNER: &str = "198.51.100.7";
    const ATTACKER: &str = "203.0.113.66";
    demo_login(&mut client, OWNER)
        .await
        .expect("the owner signs in");

    // Act: someone else guesses until throttled
    for _ in 0..3 {
        let status = client
            .login(login(seed::DEMO_EMAIL, "wrong-password", Some(ATTACKER)))
            .await
            .expect_err("wrong password");
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    let backed_off = client
        .login(login(seed::DEMO_EMAIL, "wrong-password", Some(ATTACKER)))
        .await;
    let owner_at_home = demo_login(&mut client, OWNER).await;

    // Assert: the stranger waits a short back-off, not a 15-minute window; the owner not at all
    let retry_after = assert_throttled(backed_off);
    assert!(retry_after <= Duration::from_millis(300), "{retry_after:?}");
    owner_at_home.expect("the owner is not locked out from their own network");
    tokio::time::sleep(Duration::from_millis(350)).await;
    demo_login(&mut client, "192.0.2.1")
        .await
        .expect("from a new network the owner waits only the back-off");
}

#[test]
fn trusted_proxy_hops_must_be_between_one_and_ten() {
    let settings = |hops: &str| {
        let env: HashMap<String, String> = [
            ("LICENSING_GATEWAY__CRYPTLEX__ACCOUNT_ALIAS", "acme"),
            ("LICENSING_GATEWAY__INTERNAL__ENABLED", "false"),
            ("LICENSING_GATEWAY__SIGN_UP__ENABLED", "false"),
            (
                "LICENSING_GATEWAY__LIMITS__CLIENT_ADDRESS_HEADER",
                "x-forwarded-for",
            ),
            ("LICENSING_GATEWAY__LIMITS__TRUSTED_PROXY_HOPS", hops),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect();
        RawSettings::load(None, &env).expect("loads").validate()
    };

    for hops in ["1", "2", "10"] {
        settings(hops).unwrap_or_else(|error| panic!("{hops}: {error}"));
    }
    for hops in ["0", "11"] {
        let error = settings(hops).expect_err(hops);
        assert!(
            error.to_string().contains("limits.trusted_proxy_hops"),
            "{error}"
        );
    }
}

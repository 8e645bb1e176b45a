//! `IssuanceService` over mutual TLS, black-box: who may call, exactly-once issuance (replay,
//! reused ids, concurrent duplicates, lost replies), permanent and transient upstream failures,
//! input validation, and the website flow end to end.
//!
//! Tests whose subject is the ledger run once per backend (`<name>::sqlite` and
//! `<name>::postgres`); the others run on the default SQLite ledger. Crash tests that kill the
//! gateway process live in the `process` test binary (`tests/process/gateway_process.rs`).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use cryptlex_sandbox::pki::DevPki;
use cryptlex_sandbox::{FaultAction, FaultRule, seed};
use licensing_gateway::config::RawAllowedClient;
use licensing_gateway::grpc::pb::issuance_service_client::IssuanceServiceClient;
use licensing_gateway::grpc::pb::issue_license_request::User;
use licensing_gateway::grpc::pb::{
    IssueLicenseRequest, IssuedLicense, ListMyLicensesRequest, SignUpRequest,
};
use licensing_gateway::ledger::State;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{TestApp, TestOptions, spawn_app, spawn_app_with};
use crate::support::client::{assert_status, with_token};
use crate::support::issuance::{
    REQUEST_ID_KEY, issue_concurrently, issue_for_demo, license_or_in_progress, license_posts,
    retry_delay,
};
use crate::support::ledger::{Backend, TestSchema};

/// Runs each named `async fn(Backend)` once per ledger backend, as `<name>::sqlite` and
/// `<name>::postgres`. The bodies stay plain functions so rustfmt and the IDE see them.
macro_rules! on_both_ledgers {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name(crate::support::ledger::Backend::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name(crate::support::ledger::Backend::Postgres).await;
                }
            }
        )*
    };
}

on_both_ledgers!(
    fifty_concurrent_identical_calls_create_exactly_one_license,
    a_repeated_request_replays_the_identical_license_without_calling_cryptlex,
    a_reused_request_id_with_different_parameters_is_refused_without_calling_cryptlex,
    request_ids_are_scoped_to_the_calling_client,
    a_reply_lost_after_the_license_was_created_is_reconciled_by_the_retry,
    a_call_whose_deadline_expires_after_the_create_is_reconciled_by_a_prompt_retry,
    a_caller_that_goes_away_mid_create_does_not_strand_its_request_id,
    an_unknown_product_is_rejected_for_good_and_replayed_without_calling_cryptlex,
    a_transient_cryptlex_failure_is_unavailable_and_not_final,
);

// === Helpers ===

/// The payment service's certificate and key from the sandbox PKI.
fn payment_service_identity(app: &TestApp) -> (String, String) {
    let files = app.sandbox.pki.files();
    (
        std::fs::read_to_string(&files.payment_service_cert).expect("cert"),
        std::fs::read_to_string(&files.payment_service_key).expect("key"),
    )
}

/// Lets the payment service issue any product (the sandbox allows only the demo product).
fn any_product_options(backend: Backend) -> TestOptions {
    TestOptions {
        allowed_clients: vec![RawAllowedClient {
            identity: DevPki::PAYMENT_SERVICE_ID.into(),
            products: Vec::new(),
            operations: None,
        }],
        ..backend.options()
    }
}

/// Environment for a settling period after unknown outcomes (default 5 s) short enough that
/// a retry waiting for the first attempt (`issuance.wait_for_in_flight`, 2 s) outlasts it and
/// goes on to reconcile, so a test of what happens after the settling period needs no sleep.
pub(crate) fn short_settle(options: TestOptions) -> TestOptions {
    let mut env = options.env.clone();
    env.push((
        "LICENSING_GATEWAY__ISSUANCE__SETTLE_AFTER_UNKNOWN_OUTCOME".into(),
        "300ms".into(),
    ));
    TestOptions { env, ..options }
}

/// Asserts that a call with this client certificate (or none) never gets an answer because
/// the server ends the handshake with the TLS alert `alert`. With TLS 1.3 the server checks
/// the client certificate after the client considers the handshake done, so the alert shows
/// either as a connect error or as a transport error on the first call. Nothing may reach
/// Cryptlex.
async fn assert_refused_at_the_handshake(app: &TestApp, client: Option<(&str, &str)>, alert: &str) {
    let failure: Box<dyn std::error::Error> = match app.internal_channel(client).await {
        Err(error) => Box::new(error),
        Ok(channel) => {
            let result = IssuanceServiceClient::new(channel)
                .issue_license(issue_for_demo("handshake-refused"))
                .await;
            let status = result.expect_err("the call must not get through");
            assert!(
                matches!(status.code(), Code::Unknown | Code::Unavailable),
                "a transport failure, not an answer from the service: {status:?}"
            );
            Box::new(status)
        }
    };
    let mut causes = Vec::new();
    let mut cause: Option<&dyn std::error::Error> = Some(failure.as_ref());
    while let Some(error) = cause {
        causes.push(error.to_string());
        cause = error.source();
    }
    let expected = format!("received fatal alert: {alert}");
    assert!(
        causes.iter().any(|text| text.contains(&expected)),
        "expected the server's {alert} alert, got {causes:?}"
    );
    assert!(
        app.cryptlex().requests().is_empty(),
        "nothing reached cryptlex"
    );
    assert_eq!(
        app.cryptlex().license_count(),
        3,
        "only the seeded licenses"
    );
}

// === Mutual TLS ===

#[tokio::test]
async fn an_issued_license_shows_up_in_the_users_license_list() {
    let app = spawn_app().await;
    let issued = app
        .payment_client()
        .await
        .issue_license(issue_for_demo("payment-1"))
        .await
        .expect("issued")
        .into_inner();
    assert!(!issued.replayed);
    let license = issued.license.expect("license");
    assert_eq!(license.user_id, seed::DEMO_USER_ID);
    assert_eq!(license.product_id, seed::PRODUCT_ID);
    assert!(license.metadata.is_empty(), "gateway keys are not returned");

    let token = app.demo_token().await;
    let listed = app
        .user_client()
        .await
        .list_my_licenses(with_token(ListMyLicensesRequest::default(), &token))
        .await
        .expect("list")
        .into_inner()
        .licenses;
    assert!(
        listed
            .iter()
            .any(|item| item.id == license.id && item.key == license.key)
    );
    app.stop().await;
}

#[tokio::test]
async fn no_client_certificate_fails_the_handshake() {
    let app = spawn_app().await;
    assert_refused_at_the_handshake(&app, None, "CertificateRequired").await;
}

#[tokio::test]
async fn a_client_certificate_from_a_foreign_ca_fails_the_handshake() {
    let app = spawn_app().await;
    let foreign = DevPki::generate_foreign_ca().expect("foreign pki");
    let key = secrecy::ExposeSecret::expose_secret(&foreign.client.key_pem).to_owned();

    assert_refused_at_the_handshake(&app, Some((&foreign.client.cert_pem, &key)), "UnknownCA")
        .await;
}

#[tokio::test]
async fn an_expired_client_certificate_from_the_right_ca_fails_the_handshake() {
    let app = spawn_app().await;
    let day = Duration::from_secs(24 * 60 * 60);
    let expired = app
        .sandbox
        .pki
        .issue_client_cert(
            DevPki::PAYMENT_SERVICE_ID,
            SystemTime::now() - 30 * day,
            SystemTime::now() - day,
        )
        .expect("expired certificate");
    let key = secrecy::ExposeSecret::expose_secret(&expired.key_pem).to_owned();

    assert_refused_at_the_handshake(&app, Some((&expired.cert_pem, &key)), "CertificateExpired")
        .await;
}

#[tokio::test]
async fn a_valid_certificate_that_is_not_allow_listed_is_permission_denied() {
    let app = spawn_app().await;
    let files = app.sandbox.pki.files();
    let cert = std::fs::read_to_string(&files.intruder_cert).expect("cert");
    let key = std::fs::read_to_string(&files.intruder_key).expect("key");
    let channel = app
        .internal_channel(Some((&cert, &key)))
        .await
        .expect("the handshake succeeds: the certificate is valid");

    let result = IssuanceServiceClient::new(channel)
        .issue_license(issue_for_demo("intruder-1"))
        .await;

    assert_status(result, Code::PermissionDenied, "CLIENT_NOT_ALLOWED");
    assert!(app.cryptlex().requests().is_empty());
}

#[tokio::test]
async fn issue_license_on_the_public_listener_is_unimplemented() {
    let app = spawn_app().await;
    let mut client = IssuanceServiceClient::new(app.public_channel().await);

    let result = client.issue_license(issue_for_demo("public-1")).await;

    let status = result.expect_err("the public listener does not serve issuance");
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    assert!(app.cryptlex().requests().is_empty());
}

// === Exactly once ===

async fn fifty_concurrent_identical_calls_create_exactly_one_license(backend: Backend) {
    // Arrange: a slow create, so every duplicate arrives while the first is in flight.
    let app = spawn_app_with(backend.options()).await;
    let cryptlex = app.cryptlex();
    cryptlex
        .add_fault(
            FaultRule::once(FaultAction::Delay(Duration::from_millis(300)))
                .method(http::Method::POST)
                .path_prefix("/v3/licenses"),
        )
        .expect("fault");
    let (cert, key) = payment_service_identity(&app);
    let mut channels = Vec::new();
    for _ in 0..5 {
        channels.push(
            app.internal_channel(Some((&cert, &key)))
                .await
                .expect("connect"),
        );
    }
    let request = issue_for_demo("order-fifty");

    // Act
    let results = issue_concurrently(&channels, 50, &request).await;

    // Assert: one license upstream, and every answer is it or "retry".
    let created = cryptlex.licenses_with_metadata(REQUEST_ID_KEY, "order-fifty");
    assert_eq!(created.len(), 1, "exactly one license for the request id");
    assert_eq!(cryptlex.stats().licenses_created, 1);
    assert_eq!(license_posts(&cryptlex), 1);
    let answers: Vec<(IssuedLicense, bool)> = results
        .into_iter()
        .filter_map(license_or_in_progress)
        .collect();
    assert!(
        !answers.is_empty(),
        "at least the first call gets the license"
    );
    for (license, _) in &answers {
        assert_eq!(license.id, created[0].id);
        assert_eq!(license.key, created[0].key);
    }
    let fresh = answers.iter().filter(|(_, replayed)| !replayed).count();
    assert_eq!(fresh, 1, "only the call that created it is not a replay");

    let retried = app
        .payment_client()
        .await
        .issue_license(request)
        .await
        .expect("the retry succeeds")
        .into_inner();
    assert!(retried.replayed);
    assert_eq!(retried.license.expect("license").id, created[0].id);
    assert_eq!(license_posts(&cryptlex), 1);
}

async fn a_repeated_request_replays_the_identical_license_without_calling_cryptlex(
    backend: Backend,
) {
    let app = spawn_app_with(backend.options()).await;
    let mut client = app.payment_client().await;
    let request = IssueLicenseRequest {
        metadata: HashMap::from([("order".to_owned(), "A-17".to_owned())]),
        ..issue_for_demo("order-replay")
    };
    let first = client
        .issue_license(request.clone())
        .await
        .expect("issued")
        .into_inner();
    let upstream_before = app.cryptlex().requests().len();

    let second = client
        .issue_license(request)
        .await
        .expect("replayed")
        .into_inner();

    assert!(!first.replayed);
    assert!(second.replayed);
    assert_eq!(second.license, first.license, "the identical license");
    assert_eq!(
        first.license.expect("license").metadata,
        HashMap::from([("order".to_owned(), "A-17".to_owned())]),
        "the caller's metadata comes back, the gateway's keys do not"
    );
    assert_eq!(
        app.cryptlex().requests().len(),
        upstream_before,
        "a replay makes no upstream request"
    );
    let record = app
        .ledger()
        .await
        .get(DevPki::PAYMENT_SERVICE_ID, "order-replay")
        .await
        .expect("ledger read")
        .expect("a record");
    assert_eq!(record.state, State::Issued);
}

async fn a_reused_request_id_with_different_parameters_is_refused_without_calling_cryptlex(
    backend: Backend,
) {
    let app = spawn_app_with(any_product_options(backend)).await;
    let mut client = app.payment_client().await;
    let original = IssueLicenseRequest {
        metadata: HashMap::from([("order".to_owned(), "1".to_owned())]),
        ..issue_for_demo("order-reused")
    };
    let issued = client
        .issue_license(original.clone())
        .await
        .expect("issued")
        .into_inner();
    let upstream_before = app.cryptlex().requests().len();
    let variants = [
        IssueLicenseRequest {
            metadata: HashMap::from([("order".to_owned(), "2".to_owned())]),
            ..original.clone()
        },
        IssueLicenseRequest {
            user: Some(User::UserEmail(seed::OTHER_EMAIL.into())),
            ..original.clone()
        },
        IssueLicenseRequest {
            product_id: uuid::Uuid::new_v4().to_string(),
            ..original.clone()
        },
        IssueLicenseRequest {
            license_template_id: seed::LICENSE_TEMPLATE_ID.into(),
            ..original.clone()
        },
    ];

    for variant in variants {
        let result = client.issue_license(variant.clone()).await;
        assert_status(result, Code::FailedPrecondition, "REQUEST_ID_REUSED");
    }

    assert_eq!(
        app.cryptlex().requests().len(),
        upstream_before,
        "a refused reuse makes no upstream request"
    );
    let replay = client
        .issue_license(original)
        .await
        .expect("the original still replays")
        .into_inner();
    assert_eq!(replay.license, issued.license);
}

async fn request_ids_are_scoped_to_the_calling_client(backend: Backend) {
    // Arrange: allow-list the second certificate of the sandbox PKI as another client.
    let app = spawn_app_with(TestOptions {
        allowed_clients: vec![
            RawAllowedClient {
                identity: DevPki::PAYMENT_SERVICE_ID.into(),
                products: Vec::new(),
                operations: None,
            },
            RawAllowedClient {
                identity: DevPki::INTRUDER_ID.into(),
                products: Vec::new(),
                operations: None,
            },
        ],
        ..backend.options()
    })
    .await;
    let files = app.sandbox.pki.files();
    let cert = std::fs::read_to_string(&files.intruder_cert).expect("cert");
    let key = std::fs::read_to_string(&files.intruder_key).expect("key");
    let mut other_client = IssuanceServiceClient::new(
        app.internal_channel(Some((&cert, &key)))
            .await
            .expect("connect"),
    );
    let mut payment_client = app.payment_client().await;
    let for_demo = issue_for_demo("shared-id");
    let for_other_user = IssueLicenseRequest {
        user: Some(User::UserEmail(seed::OTHER_EMAIL.into())),
        ..issue_for_demo("shared-id")
    };

    // Act: the same request id from both clients, with different content.
    let mine = payment_client
        .issue_license(for_demo.clone())
        .await
        .expect("issued to the payment service")
        .into_inner();
    let theirs = other_client
        .issue_license(for_other_user.clone())
        .await
        .expect("issued to the other client: not a reuse of the payment service's id")
        .into_inner();

    // Assert: two licenses, each replayed only to its own client.
    assert!(!mine.replayed);
    assert!(!theirs.replayed, "not the payment service's outcome");
    let my_license = mine.license.expect("license");
    let their_license = theirs.license.expect("license");
    assert_ne!(my_license.id, their_license.id);
    assert_eq!(my_license.user_id, seed::DEMO_USER_ID);
    assert_eq!(their_license.user_id, seed::OTHER_USER_ID);
    assert_eq!(
        app.cryptlex()
            .licenses_with_metadata(REQUEST_ID_KEY, "shared-id")
            .len(),
        2
    );
    let my_replay = payment_client
        .issue_license(for_demo)
        .await
        .expect("replay")
        .into_inner();
    let their_replay = other_client
        .issue_license(for_other_user)
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(my_replay.license.expect("license").id, my_license.id);
    assert_eq!(their_replay.license.expect("license").id, their_license.id);
}

// === Crash safety and upstream failures ===

async fn a_reply_lost_after_the_license_was_created_is_reconciled_by_the_retry(backend: Backend) {
    // Arrange: Cryptlex creates the license, then resets the connection instead of answering.
    // The retry waits out the (shortened) settling period, then reconciles.
    let app = spawn_app_with(short_settle(backend.options())).await;
    let cryptlex = app.cryptlex();
    cryptlex
        .add_fault(
            FaultRule::once(FaultAction::ResetAfterProcessing)
                .method(http::Method::POST)
                .path_prefix("/v3/licenses"),
        )
        .expect("fault");
    let mut client = app.payment_client().await;
    let request = issue_for_demo("order-lost-reply");

    // Act
    let first = client.issue_license(request.clone()).await;
    let created = cryptlex.licenses_with_metadata(REQUEST_ID_KEY, "order-lost-reply");
    let retry = client
        .issue_license(request.clone())
        .await
        .expect("the retry returns the license")
        .into_inner();

    // Assert
    let status = first.expect_err("the reply was lost");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    retry_delay(&status);
    assert_eq!(created.len(), 1, "cryptlex did create it");
    assert!(retry.replayed, "found again by its request id, not created");
    let license = retry.license.expect("license");
    assert_eq!(license.id, created[0].id);
    assert_eq!(license.key, created[0].key);
    assert!(license.metadata.is_empty(), "gateway keys stay hidden");
    assert_eq!(license_posts(&cryptlex), 1, "no second create");
    assert_eq!(
        cryptlex
            .licenses_with_metadata(REQUEST_ID_KEY, "order-lost-reply")
            .len(),
        1
    );
    let upstream_before = cryptlex.requests().len();
    let replay = client
        .issue_license(request)
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(replay.license.expect("license").id, created[0].id);
    assert_eq!(
        cryptlex.requests().len(),
        upstream_before,
        "now from the ledger"
    );
}

async fn a_call_whose_deadline_expires_after_the_create_is_reconciled_by_a_prompt_retry(
    backend: Backend,
) {
    // Arrange: Cryptlex creates the license at once but answers only after the caller's
    // deadline. The lease is the default 60 s, so a retry within a few seconds only succeeds
    // if the timed-out attempt gave its lease back (after the shortened settling period).
    let app = spawn_app_with(short_settle(backend.options())).await;
    let cryptlex = app.cryptlex();
    cryptlex
        .add_fault(
            FaultRule::once(FaultAction::DelayAfterProcessing(Duration::from_secs(3)))
                .method(http::Method::POST)
                .path_prefix("/v3/licenses"),
        )
        .expect("fault");
    let mut client = app.payment_client().await;
    let mut with_deadline = tonic::Request::new(issue_for_demo("order-deadline"));
    with_deadline.set_timeout(Duration::from_millis(800));

    // Act
    let first = client.issue_license(with_deadline).await;
    let started = std::time::Instant::now();
    let retried = loop {
        match client.issue_license(issue_for_demo("order-deadline")).await {
            Err(status) if status.code() == Code::Aborted && started.elapsed() < BOUND => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => break other,
        }
    };

    // Assert
    let status = first.expect_err("the deadline expired");
    // Our DEADLINE_EXCEEDED, or the client's own timer if it fired first.
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    let created = cryptlex.licenses_with_metadata(REQUEST_ID_KEY, "order-deadline");
    assert_eq!(created.len(), 1, "cryptlex did create it");
    let retried = retried
        .expect("a prompt retry returns the license")
        .into_inner();
    assert!(retried.replayed, "found again by its request id");
    assert_eq!(retried.license.expect("license").id, created[0].id);
    assert_eq!(license_posts(&cryptlex), 1, "no second create");
}

async fn a_caller_that_goes_away_mid_create_does_not_strand_its_request_id(backend: Backend) {
    // Arrange: Cryptlex creates the license at once and answers a second later; the caller
    // (with no deadline) gives up in between, as a payment service that restarts would.
    let app = spawn_app_with(backend.options()).await;
    let cryptlex = app.cryptlex();
    cryptlex
        .add_fault(
            FaultRule::once(FaultAction::DelayAfterProcessing(Duration::from_secs(1)))
                .method(http::Method::POST)
                .path_prefix("/v3/licenses"),
        )
        .expect("fault");
    let mut client = app.payment_client().await;
    let mut abandoning_client = client.clone();
    let abandoned = tokio::spawn(async move {
        abandoning_client
            .issue_license(issue_for_demo("order-abandoned"))
            .await
    });
    let started = std::time::Instant::now();
    while cryptlex
        .licenses_with_metadata(REQUEST_ID_KEY, "order-abandoned")
        .is_empty()
    {
        assert!(started.elapsed() < BOUND, "the license was never created");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Act: the caller goes away (its stream is reset), then retries at once.
    abandoned.abort();
    let retried = loop {
        match client
            .issue_license(issue_for_demo("order-abandoned"))
            .await
        {
            Err(status) if status.code() == Code::Aborted && started.elapsed() < BOUND => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => break other,
        }
    };

    // Assert: the retry gets the license well within the 60 s lease.
    let created = cryptlex.licenses_with_metadata(REQUEST_ID_KEY, "order-abandoned");
    assert_eq!(created.len(), 1);
    let retried = retried
        .expect("a prompt retry returns the license")
        .into_inner();
    assert!(retried.replayed);
    assert_eq!(retried.license.expect("license").id, created[0].id);
    assert_eq!(license_posts(&cryptlex), 1, "no second create");
}

/// How long a prompt retry may keep getting ABORTED: well under the 60 s default lease.
const BOUND: Duration = Duration::from_secs(5);

async fn an_unknown_product_is_rejected_for_good_and_replayed_without_calling_cryptlex(
    backend: Backend,
) {
    let app = spawn_app_with(any_product_options(backend)).await;
    let mut client = app.payment_client().await;
    let request = IssueLicenseRequest {
        product_id: uuid::Uuid::new_v4().to_string(),
        ..issue_for_demo("order-unknown-product")
    };

    let first = client.issue_license(request.clone()).await;
    let upstream_before = app.cryptlex().requests().len();
    let second = client.issue_license(request).await;

    let first = assert_status(first, Code::FailedPrecondition, "UPSTREAM_REJECTED");
    let second = assert_status(second, Code::FailedPrecondition, "UPSTREAM_REJECTED");
    assert_eq!(second.message(), first.message(), "the stored rejection");
    assert!(first.get_details_retry_info().is_none(), "not retryable");
    assert_eq!(
        app.cryptlex().requests().len(),
        upstream_before,
        "a replayed rejection makes no upstream request"
    );
    assert_eq!(license_posts(&app.cryptlex()), 1);
    assert!(
        app.cryptlex()
            .licenses_with_metadata(REQUEST_ID_KEY, "order-unknown-product")
            .is_empty()
    );
    let record = app
        .ledger()
        .await
        .get(DevPki::PAYMENT_SERVICE_ID, "order-unknown-product")
        .await
        .expect("ledger read")
        .expect("a record");
    assert_eq!(record.state, State::Rejected);
}

async fn a_transient_cryptlex_failure_is_unavailable_and_not_final(backend: Backend) {
    // Arrange: the create fails with a 503, then with a 429, then works. A 503 may come from
    // a proxy after Cryptlex did the work, so the next call waits out the (shortened)
    // settling period and reconciles before it creates.
    let app = spawn_app_with(short_settle(backend.options())).await;
    let cryptlex = app.cryptlex();
    let create = |action| {
        FaultRule::once(action)
            .method(http::Method::POST)
            .path_prefix("/v3/licenses")
    };
    cryptlex
        .add_fault(create(FaultAction::json(
            503,
            &serde_json::json!({"message": "Service Unavailable"}),
        )))
        .expect("fault");
    cryptlex
        .add_fault(create(
            FaultAction::json(429, &serde_json::json!({"message": "Too many requests"}))
                .with_header("Retry-After", "3"),
        ))
        .expect("fault");
    let mut client = app.payment_client().await;
    let request = issue_for_demo("order-transient");

    // Act
    let unavailable = client.issue_license(request.clone()).await;
    let rate_limited = client.issue_license(request.clone()).await;
    let pending = app
        .ledger()
        .await
        .get(DevPki::PAYMENT_SERVICE_ID, "order-transient")
        .await
        .expect("ledger read")
        .expect("a record");
    let issued = client
        .issue_license(request)
        .await
        .expect("a later retry succeeds")
        .into_inner();

    // Assert
    let unavailable = assert_status(unavailable, Code::Unavailable, "UPSTREAM_UNAVAILABLE");
    retry_delay(&unavailable);
    let rate_limited = assert_status(rate_limited, Code::Unavailable, "UPSTREAM_RATE_LIMITED");
    assert_eq!(retry_delay(&rate_limited), Duration::from_secs(3));
    assert_eq!(
        pending.state,
        State::Pending,
        "a transient failure is not final"
    );
    assert!(!issued.replayed, "created by this attempt");
    let created = cryptlex.licenses_with_metadata(REQUEST_ID_KEY, "order-transient");
    assert_eq!(created.len(), 1);
    assert_eq!(issued.license.expect("license").id, created[0].id);
    assert_eq!(license_posts(&cryptlex), 3);
}

// === Leases, settling and reconciliation under hostile conditions ===

on_both_ledgers!(
    a_create_slower_than_the_lease_yields_one_license_because_the_lease_is_renewed,
    a_retry_within_the_settling_period_after_an_unknown_outcome_is_told_to_come_back_and_then_reconciles,
);

/// Makes Cryptlex apply `action` to the next `POST /v3/licenses`.
fn on_the_next_create(cryptlex: &cryptlex_sandbox::Controls, action: FaultAction) {
    cryptlex
        .add_fault(
            FaultRule::once(action)
                .method(http::Method::POST)
                .path_prefix("/v3/licenses"),
        )
        .expect("fault");
}

/// A gateway whose `issuance.lease` is `lease`, set after validation, which refuses a lease
/// shorter than the longest attempt: it shows what the lease keeper does on its own. Stops
/// (and drops its PostgreSQL schema) when dropped.
struct UncheckedLeaseApp {
    internal_port: u16,
    sandbox: licensing_gateway::commands::sandbox::Sandbox,
    _dir: tempfile::TempDir,
    _schema: Option<TestSchema>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl UncheckedLeaseApp {
    async fn spawn(backend: Backend, lease: Duration) -> Self {
        use licensing_gateway::commands::sandbox::{self, SandboxArgs};

        crate::support::client::install_crypto_provider();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut env = HashMap::from([
            (
                "LICENSING_GATEWAY__PUBLIC__ADDR".to_owned(),
                "127.0.0.1:0".to_owned(),
            ),
            (
                "LICENSING_GATEWAY__INTERNAL__ADDR".to_owned(),
                "127.0.0.1:0".to_owned(),
            ),
            (
                "LICENSING_GATEWAY__ADMIN__ENABLED".to_owned(),
                "false".to_owned(),
            ),
        ]);
        let schema = (backend == Backend::Postgres).then(TestSchema::fresh);
        if let Some(schema) = &schema {
            env.insert(
                "LICENSING_GATEWAY__LEDGER__URL".to_owned(),
                crate::support::ledger::postgres_url(),
            );
            env.insert(
                "LICENSING_GATEWAY__LEDGER__SCHEMA".to_owned(),
                schema.name().to_owned(),
            );
        }
        let raw = licensing_gateway::config::RawSettings::load(None, &env).expect("settings");
        let args = SandboxArgs {
            dir: dir.path().to_path_buf(),
            cryptlex_addr: "127.0.0.1:0".parse().expect("addr"),
            no_rate_limit: true,
            webhooks: false,
            access_token_ttl: Duration::from_secs(15 * 60),
        };
        let sandbox = sandbox::prepare(&args, raw).await.expect("sandbox starts");
        let mut settings = sandbox.settings.clone();
        settings.issuance.lease = lease;
        let app = licensing_gateway::app::Application::build(settings)
            .await
            .expect("gateway builds");
        let internal_port = app.internal_addr().expect("internal listener").port();
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(app.run_until_stopped(async move {
            let _ = stop.await;
        }));
        Self {
            internal_port,
            sandbox,
            _dir: dir,
            _schema: schema,
            _shutdown: shutdown,
        }
    }

    async fn payment_channel(&self) -> tonic::transport::Channel {
        let files = self.sandbox.pki.files();
        let cert = std::fs::read_to_string(&files.payment_service_cert).expect("cert");
        let key = std::fs::read_to_string(&files.payment_service_key).expect("key");
        crate::support::client::mtls_channel(
            self.internal_port,
            self.sandbox.pki.ca_cert_pem(),
            Some((&cert, &key)),
        )
        .await
        .expect("mTLS connect")
    }
}

async fn a_create_slower_than_the_lease_yields_one_license_because_the_lease_is_renewed(
    backend: Backend,
) {
    // Arrange: a 1 s lease and a create that takes 3 s (validation would refuse such a lease;
    // the keeper must hold the request id regardless).
    let app = UncheckedLeaseApp::spawn(backend, Duration::from_secs(1)).await;
    let cryptlex = app.sandbox.cryptlex.controls();
    on_the_next_create(&cryptlex, FaultAction::Delay(Duration::from_secs(3)));
    let mut first_client = IssuanceServiceClient::new(app.payment_channel().await);
    let mut second_client = IssuanceServiceClient::new(app.payment_channel().await);
    let first = tokio::spawn(async move {
        first_client
            .issue_license(issue_for_demo("order-slow-create"))
            .await
            .map(tonic::Response::into_inner)
    });

    // Act: the same request id again once the first attempt's lease would have run out.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = second_client
        .issue_license(issue_for_demo("order-slow-create"))
        .await
        .map(tonic::Response::into_inner);
    let first = first.await.expect("first call task");

    // Assert: one license, and both answers are it (or "retry" for the second).
    let created = cryptlex.licenses_with_metadata(REQUEST_ID_KEY, "order-slow-create");
    assert_eq!(created.len(), 1, "exactly one license for the request id");
    assert_eq!(license_posts(&cryptlex), 1, "no second create");
    let first = first.expect("the slow create succeeds");
    assert!(!first.replayed);
    assert_eq!(first.license.expect("license").id, created[0].id);
    if let Some((license, replayed)) = license_or_in_progress(second) {
        assert!(replayed, "the second call waited for the first");
        assert_eq!(license.id, created[0].id);
    }
}

async fn a_retry_within_the_settling_period_after_an_unknown_outcome_is_told_to_come_back_and_then_reconciles(
    backend: Backend,
) {
    // Arrange: Cryptlex creates the license and the reply is lost; for a while afterwards
    // its metadata search does not show the new license yet (it lags).
    const SETTLE: Duration = Duration::from_secs(2);
    let app = spawn_app_with(TestOptions {
        env: vec![
            (
                "LICENSING_GATEWAY__ISSUANCE__SETTLE_AFTER_UNKNOWN_OUTCOME".into(),
                "2s".into(),
            ),
            // Duplicates answer at once rather than waiting out the settling period.
            (
                "LICENSING_GATEWAY__ISSUANCE__WAIT_FOR_IN_FLIGHT".into(),
                "100ms".into(),
            ),
        ],
        ..backend.options()
    })
    .await;
    let cryptlex = app.cryptlex();
    on_the_next_create(&cryptlex, FaultAction::ResetAfterProcessing);
    let lagging_search = cryptlex
        .add_fault(
            FaultRule::always(FaultAction::json(200, &serde_json::json!([])))
                .method(http::Method::GET)
                .path_prefix("/v3/licenses"),
        )
        .expect("fault");
    let mut client = app.payment_client().await;
    let request = issue_for_demo("order-settle");

    // Act: the reply is lost; the payment service retries at once.
    let lost = client.issue_license(request.clone()).await;
    let too_soon = client.issue_license(request.clone()).await;

    // Assert: told to come back when the settling period ends, and nothing created twice.
    let lost = lost.expect_err("the reply was lost");
    assert_eq!(lost.code(), Code::Unavailable, "{lost:?}");
    let too_soon = assert_status(too_soon, Code::Aborted, "REQUEST_IN_PROGRESS");
    let come_back_in = retry_delay(&too_soon);
    assert!(
        come_back_in <= SETTLE && come_back_in > SETTLE / 2,
        "RetryInfo is the rest of the settling period: {come_back_in:?}"
    );
    assert_eq!(license_posts(&cryptlex), 1, "no second create");

    // Act: the search catches up within the settling period; the retry honours RetryInfo.
    cryptlex.remove_fault(lagging_search);
    tokio::time::sleep(come_back_in + Duration::from_millis(100)).await;
    let retried = client
        .issue_license(request)
        .await
        .expect("the retry after the settling period reconciles")
        .into_inner();

    // Assert
    let created = cryptlex.licenses_with_metadata(REQUEST_ID_KEY, "order-settle");
    assert_eq!(created.len(), 1, "exactly one license");
    assert!(retried.replayed, "found again, not created");
    assert_eq!(retried.license.expect("license").id, created[0].id);
    assert_eq!(license_posts(&cryptlex), 1, "no second create");
}

/// Creates a license straight in the sandbox with the administrator's PAT, bypassing the
/// gateway (another system, or an operator, using the same Cryptlex account). Returns its id.
async fn create_license_in_cryptlex(
    app: &TestApp,
    user_id: &str,
    metadata: &[(&str, &str)],
) -> String {
    let body = serde_json::json!({
        "productId": seed::PRODUCT_ID,
        "userId": user_id,
        "metadata": metadata
            .iter()
            .map(|(key, value)| serde_json::json!({"key": key, "value": value, "viewPermissions": []}))
            .collect::<Vec<_>>(),
    });
    let pat = app.sandbox.cryptlex.admin_pat();
    let response = reqwest::Client::new()
        .post(format!("{}/v3/licenses", app.sandbox.cryptlex.base_url()))
        .bearer_auth(secrecy::ExposeSecret::expose_secret(&pat))
        .json(&body)
        .send()
        .await
        .expect("the sandbox answers");
    assert_eq!(response.status(), 201, "the sandbox created the license");
    let created: serde_json::Value = response.json().await.expect("json");
    created["id"].as_str().expect("an id").to_owned()
}

#[tokio::test]
async fn a_reconciliation_reads_every_page_and_takes_only_this_requests_license() {
    // Arrange: before the order, Cryptlex already holds licenses carrying its request id: one
    // for another user (under our client's name), and a hundred of another client's, a full
    // page, so the gateway's own license lands on the second page.
    let app = spawn_app_with(short_settle(TestOptions::default())).await;
    let decoy_for_another_user = create_license_in_cryptlex(
        &app,
        seed::OTHER_USER_ID,
        &[
            (REQUEST_ID_KEY, "order-decoys"),
            ("licensing_gateway_client", DevPki::PAYMENT_SERVICE_ID),
        ],
    )
    .await;
    for _ in 0..100 {
        create_license_in_cryptlex(
            &app,
            seed::DEMO_USER_ID,
            &[
                (REQUEST_ID_KEY, "order-decoys"),
                (
                    "licensing_gateway_client",
                    "spiffe://example.org/refund-service",
                ),
            ],
        )
        .await;
    }
    let cryptlex = app.cryptlex();
    let posts_before = license_posts(&cryptlex);
    on_the_next_create(&cryptlex, FaultAction::ResetAfterProcessing);
    let mut client = app.payment_client().await;

    // Act: the create's reply is lost, and the retry reconciles.
    let lost = client.issue_license(issue_for_demo("order-decoys")).await;
    let retried = client
        .issue_license(issue_for_demo("order-decoys"))
        .await
        .expect("the retry reconciles")
        .into_inner();

    // Assert: the gateway's own license, not a decoy, and no second create.
    assert_eq!(
        lost.expect_err("the reply was lost").code(),
        Code::Unavailable
    );
    let ours: Vec<_> = cryptlex
        .licenses_with_metadata("licensing_gateway_client", DevPki::PAYMENT_SERVICE_ID)
        .into_iter()
        .filter(|license| license.user_id.as_deref() == Some(seed::DEMO_USER_ID))
        .collect();
    assert_eq!(ours.len(), 1, "the one license the gateway created");
    assert!(retried.replayed);
    let license = retried.license.expect("license");
    assert_ne!(
        license.id, decoy_for_another_user,
        "not another user's license"
    );
    assert_eq!(license.id, ours[0].id);
    assert_eq!(license.user_id, seed::DEMO_USER_ID);
    assert_eq!(
        license_posts(&cryptlex),
        posts_before + 1,
        "no second create"
    );
}

// === Input ===

#[tokio::test]
async fn invalid_requests_are_refused_with_field_violations_before_any_upstream_call() {
    let app = spawn_app().await;
    let mut client = app.payment_client().await;
    let too_many: HashMap<String, String> = (0..21)
        .map(|index| (format!("key{index}"), "value".to_owned()))
        .collect();
    let cases = [
        (issue_for_demo(""), "request_id"),
        (
            IssueLicenseRequest {
                user: Some(User::UserEmail("not-an-email".into())),
                ..issue_for_demo("order-bad-email")
            },
            "user_email",
        ),
        (
            IssueLicenseRequest {
                user: None,
                ..issue_for_demo("order-no-user")
            },
            "user",
        ),
        (
            IssueLicenseRequest {
                metadata: HashMap::from([(REQUEST_ID_KEY.to_owned(), "forged".to_owned())]),
                ..issue_for_demo("order-reserved-key")
            },
            "metadata[licensing_gateway_request_id]",
        ),
        (
            IssueLicenseRequest {
                metadata: too_many,
                ..issue_for_demo("order-too-much-metadata")
            },
            "metadata",
        ),
    ];

    for (request, field) in cases {
        let result = client.issue_license(request).await;
        let status = assert_status(result, Code::InvalidArgument, "INVALID_ARGUMENT");
        let violations = status
            .get_details_bad_request()
            .expect("BadRequest details")
            .field_violations;
        assert!(
            violations.iter().any(|violation| violation.field == field),
            "expected a violation of {field}, got {violations:?}"
        );
    }

    assert!(
        app.cryptlex().requests().is_empty(),
        "nothing reached cryptlex"
    );
    assert!(
        app.ledger()
            .await
            .list(None, 10)
            .await
            .expect("ledger read")
            .is_empty(),
        "nothing was recorded"
    );
}

#[tokio::test]
async fn an_unknown_user_email_is_not_found_and_nothing_is_created() {
    let app = spawn_app().await;
    let request = IssueLicenseRequest {
        user: Some(User::UserEmail("nobody@example.com".into())),
        ..issue_for_demo("order-nobody")
    };

    let result = app.payment_client().await.issue_license(request).await;

    assert_status(result, Code::NotFound, "NOT_FOUND");
    assert_eq!(license_posts(&app.cryptlex()), 0);
}

#[tokio::test]
async fn a_license_can_be_issued_to_a_user_given_by_id() {
    let app = spawn_app().await;
    let request = IssueLicenseRequest {
        user: Some(User::UserId(seed::OTHER_USER_ID.into())),
        ..issue_for_demo("order-by-id")
    };

    let issued = app
        .payment_client()
        .await
        .issue_license(request)
        .await
        .expect("issued")
        .into_inner();

    let license = issued.license.expect("license");
    assert_eq!(license.user_id, seed::OTHER_USER_ID);
    let created = app
        .cryptlex()
        .licenses_with_metadata(REQUEST_ID_KEY, "order-by-id");
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].user_id.as_deref(), Some(seed::OTHER_USER_ID));
}

// === The website flow ===

#[tokio::test]
async fn a_new_user_signs_up_is_issued_a_license_by_email_and_sees_it_after_logging_in() {
    let app = spawn_app().await;
    let email = "paying.customer@example.com";
    let password = "paying-customer-password";
    let signed_up = app
        .user_client()
        .await
        .sign_up(SignUpRequest {
            email: email.into(),
            password: password.into(),
            first_name: "Paying".into(),
            last_name: "Customer".into(),
        })
        .await
        .expect("sign-up")
        .into_inner();

    let issued = app
        .payment_client()
        .await
        .issue_license(IssueLicenseRequest {
            user: Some(User::UserEmail(email.into())),
            ..issue_for_demo("checkout-0001")
        })
        .await
        .expect("issued")
        .into_inner();
    let session = app.login(email, password).await;
    let listed = app
        .user_client()
        .await
        .list_my_licenses(with_token(
            ListMyLicensesRequest::default(),
            &session.access_token,
        ))
        .await
        .expect("list")
        .into_inner()
        .licenses;

    let license = issued.license.expect("license");
    assert_eq!(license.user_id, signed_up.user_id);
    assert_eq!(listed.len(), 1, "the new user's only license: {listed:?}");
    assert_eq!(listed[0].id, license.id);
    assert_eq!(listed[0].key, license.key);
}

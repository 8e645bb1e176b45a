//! The payment lifecycle over mutual TLS, black-box: renew, suspend, resume, revoke and seats,
//! each exactly once per request id (replay, reuse, concurrent duplicates, a reply lost after
//! Cryptlex did the work), suspend and resume in event order, per-caller policy, and
//! `IssueLicense` with a subscription reference and a quantity.
//!
//! Tests whose subject is the ledger run once per backend (`<name>::sqlite` and
//! `<name>::postgres`).

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use cryptlex_sandbox::pki::DevPki;
use cryptlex_sandbox::{FaultAction, FaultRule, LicenseRecord};
use licensing_gateway::commands::ledger::{self, LedgerAction};
use licensing_gateway::config::RawAllowedClient;
use licensing_gateway::grpc::pb::issuance_service_client::IssuanceServiceClient;
use licensing_gateway::grpc::pb::{
    self, IssueLicenseRequest, IssuedLicense, RenewLicenseRequest, ResumeLicenseRequest,
    RevocationReason, RevokeLicenseRequest, SetSeatsRequest, SuspendLicenseRequest,
};
use prost_types::Timestamp;
use tokio::task::JoinSet;
use tonic::Code;
use tonic::transport::Channel;

use crate::helpers::{TestApp, TestOptions, spawn_app_with};
use crate::issuance::short_settle;
use crate::support::client::assert_status;
use crate::support::issuance::{REQUEST_ID_KEY, issue_for_demo, license_posts};
use crate::support::ledger::Backend;

/// Runs each named `async fn(Backend)` once per ledger backend, as `<name>::sqlite` and
/// `<name>::postgres`.
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
    a_suspension_of_a_subscription_suspends_every_license_once_and_replays_without_cryptlex,
    a_reused_request_id_for_another_event_or_operation_is_refused_without_calling_cryptlex,
    twenty_concurrent_identical_suspensions_write_to_cryptlex_once,
    a_resume_then_an_older_suspend_leaves_the_license_active_and_answers_superseded,
    concurrent_events_for_one_license_leave_it_in_the_state_of_the_latest,
    a_lost_reply_to_each_operation_is_completed_by_the_retry_without_a_second_write,
    a_renewal_by_interval_whose_reply_was_lost_extends_the_license_once,
    a_renewal_by_interval_that_never_reached_cryptlex_is_made_by_the_retry,
    a_quantity_of_licenses_interrupted_midway_is_completed_by_the_retry_without_duplicates,
);

// === Helpers ===

/// The metadata key holding the subscription reference.
const SUBSCRIPTION_KEY: &str = "licensing_gateway_subscription";

/// How long a retry may keep getting ABORTED while an unknown outcome settles.
const BOUND: Duration = Duration::from_secs(10);

/// The instant `seconds` before now, as the provider's event time.
fn seconds_ago(seconds: i64) -> Timestamp {
    let at = Utc::now() - TimeDelta::seconds(seconds);
    Timestamp {
        seconds: at.timestamp(),
        nanos: 0,
    }
}

/// Like [`seconds_ago`], but from one instant fixed when first asked for, so a
/// retry of a request carries the same event time as the first try (a
/// different one would be a different request: `REQUEST_ID_REUSED`).
fn seconds_before_start(seconds: i64) -> Timestamp {
    static START: std::sync::LazyLock<i64> = std::sync::LazyLock::new(|| Utc::now().timestamp());
    Timestamp {
        seconds: *START - seconds,
        nanos: 0,
    }
}

fn timestamp(at: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).expect("below 1e9"),
    }
}

fn instant(at: &Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).expect("nanos")).expect("time")
}

/// Asserts two expiries agree to the millisecond: the ledger keeps milliseconds (the sandbox
/// keeps nanoseconds, and its API answers with 100 ns).
#[track_caller]
fn assert_same_expiry(left: Option<DateTime<Utc>>, right: Option<DateTime<Utc>>) {
    match (left, right) {
        (Some(left), Some(right)) => assert!(
            (left - right).abs() < TimeDelta::milliseconds(1),
            "{left} vs {right}"
        ),
        (left, right) => assert_eq!(left, right),
    }
}

fn by_subscription<T>(subscription: &str, wrap: impl FnOnce(String) -> T) -> Option<T> {
    Some(wrap(subscription.to_owned()))
}

fn suspend(request_id: &str, subscription: &str, at: Timestamp) -> SuspendLicenseRequest {
    SuspendLicenseRequest {
        request_id: request_id.into(),
        target: by_subscription(
            subscription,
            pb::suspend_license_request::Target::SubscriptionId,
        ),
        event_time: Some(at),
    }
}

fn resume(request_id: &str, subscription: &str, at: Timestamp) -> ResumeLicenseRequest {
    ResumeLicenseRequest {
        request_id: request_id.into(),
        target: by_subscription(
            subscription,
            pb::resume_license_request::Target::SubscriptionId,
        ),
        event_time: Some(at),
    }
}

fn revoke(request_id: &str, subscription: &str, reason: RevocationReason) -> RevokeLicenseRequest {
    RevokeLicenseRequest {
        request_id: request_id.into(),
        target: by_subscription(
            subscription,
            pb::revoke_license_request::Target::SubscriptionId,
        ),
        reason: reason.into(),
        note: String::new(),
    }
}

fn set_seats(request_id: &str, subscription: &str, seats: i32) -> SetSeatsRequest {
    SetSeatsRequest {
        request_id: request_id.into(),
        target: by_subscription(subscription, pb::set_seats_request::Target::SubscriptionId),
        allowed_activations: seats,
    }
}

fn renew(request_id: &str, subscription: &str, to: Option<Timestamp>) -> RenewLicenseRequest {
    RenewLicenseRequest {
        request_id: request_id.into(),
        target: by_subscription(
            subscription,
            pb::renew_license_request::Target::SubscriptionId,
        ),
        expires_at: to,
    }
}

/// Issues `quantity` licenses (one license per unit: the demo product is not configured as
/// activations) under `subscription`, and returns them.
async fn issue_subscription(
    client: &mut IssuanceServiceClient<Channel>,
    request_id: &str,
    subscription: &str,
    quantity: i32,
) -> Vec<IssuedLicense> {
    let response = client
        .issue_license(IssueLicenseRequest {
            subscription_id: subscription.into(),
            quantity,
            ..issue_for_demo(request_id)
        })
        .await
        .expect("issued")
        .into_inner();
    assert_eq!(
        response.licenses.len(),
        usize::try_from(quantity.max(1)).expect("size")
    );
    response.licenses
}

/// The sandbox's view of one license.
fn upstream(app: &TestApp, id: &str) -> LicenseRecord {
    app.cryptlex()
        .licenses()
        .into_iter()
        .find(|license| license.id == id)
        .unwrap_or_else(|| panic!("license {id} exists upstream"))
}

/// How many `method` requests reached a license path ending in `suffix` (`""` for
/// `/v3/licenses/{id}` itself).
fn license_writes(app: &TestApp, method: &str, suffix: &str) -> usize {
    app.cryptlex()
        .requests()
        .iter()
        .filter(|request| {
            request.method == method
                && request
                    .path
                    .strip_prefix("/v3/licenses/")
                    .is_some_and(|rest| {
                        !rest.is_empty()
                            && match suffix {
                                "" => !rest.contains('/'),
                                suffix => rest.ends_with(suffix),
                            }
                    })
        })
        .count()
}

/// Retries `call` while it answers ABORTED (an unknown outcome settling), within [`BOUND`].
macro_rules! retry_while_aborted {
    ($call:expr) => {{
        let started = std::time::Instant::now();
        loop {
            match $call.await {
                Err(status) if status.code() == Code::Aborted && started.elapsed() < BOUND => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => break other,
            }
        }
    }};
}

/// An allow-list of the payment service with `operations` (and any product), and the
/// intruder certificate with `intruder_operations`.
fn policy(backend: Backend, operations: &[&str], intruder_operations: &[&str]) -> TestOptions {
    let owned = |names: &[&str]| Some(names.iter().map(|name| (*name).to_owned()).collect());
    TestOptions {
        allowed_clients: vec![
            RawAllowedClient {
                identity: DevPki::PAYMENT_SERVICE_ID.into(),
                products: Vec::new(),
                operations: owned(operations),
            },
            RawAllowedClient {
                identity: DevPki::INTRUDER_ID.into(),
                products: vec![uuid::Uuid::new_v4().to_string()],
                operations: owned(intruder_operations),
            },
        ],
        ..backend.options()
    }
}

/// An `IssuanceService` client with the intruder's certificate (allow-listed by [`policy`]).
async fn intruder_client(app: &TestApp) -> IssuanceServiceClient<Channel> {
    let files = app.sandbox.pki.files();
    let cert = std::fs::read_to_string(&files.intruder_cert).expect("cert");
    let key = std::fs::read_to_string(&files.intruder_key).expect("key");
    IssuanceServiceClient::new(
        app.internal_channel(Some((&cert, &key)))
            .await
            .expect("connect"),
    )
}

// === Exactly once ===

async fn a_suspension_of_a_subscription_suspends_every_license_once_and_replays_without_cryptlex(
    backend: Backend,
) {
    // Arrange: a subscription of two licenses, and another subscription's license.
    let app = spawn_app_with(backend.options()).await;
    let mut client = app.payment_client().await;
    let licenses = issue_subscription(&mut client, "order-1", "sub_1", 2).await;
    let other = issue_subscription(&mut client, "order-2", "sub_2", 1).await;
    let request = suspend("evt_suspend", "sub_1", seconds_ago(60));

    // Act
    let first = client
        .suspend_license(request.clone())
        .await
        .expect("suspended")
        .into_inner();
    let upstream_before = app.cryptlex().requests().len();
    let replay = client
        .suspend_license(request)
        .await
        .expect("replayed")
        .into_inner();

    // Assert: every license of the subscription, and no other.
    assert!(!first.replayed);
    assert!(!first.superseded);
    let ids: Vec<&str> = first
        .licenses
        .iter()
        .map(|update| update.license.as_ref().expect("license").id.as_str())
        .collect();
    assert_eq!(ids, [licenses[0].id.as_str(), licenses[1].id.as_str()]);
    for update in &first.licenses {
        let license = update.license.as_ref().expect("license");
        assert!(license.suspended, "answered as it now is");
        assert_eq!(license.subscription_id, "sub_1");
        assert!(license.metadata.is_empty(), "gateway keys stay hidden");
        assert!(!update.superseded);
        assert!(upstream(&app, &license.id).suspended);
    }
    assert!(!upstream(&app, &other[0].id).suspended);
    assert_eq!(
        license_writes(&app, "PATCH", ""),
        2,
        "one write per license"
    );
    assert!(replay.replayed);
    assert_eq!(
        replay.licenses, first.licenses,
        "the stored answer, exactly"
    );
    assert_eq!(
        app.cryptlex().requests().len(),
        upstream_before,
        "a replay makes no upstream request"
    );
}

async fn a_reused_request_id_for_another_event_or_operation_is_refused_without_calling_cryptlex(
    backend: Backend,
) {
    let app = spawn_app_with(backend.options()).await;
    let mut client = app.payment_client().await;
    issue_subscription(&mut client, "order-1", "sub_1", 1).await;
    let at = seconds_ago(60);
    client
        .suspend_license(suspend("evt_1", "sub_1", at))
        .await
        .expect("suspended");
    let upstream_before = app.cryptlex().requests().len();

    let other_time = client
        .suspend_license(suspend("evt_1", "sub_1", seconds_ago(30)))
        .await;
    let other_operation = client.resume_license(resume("evt_1", "sub_1", at)).await;
    let issuance_id = client.set_seats(set_seats("order-1", "sub_1", 3)).await;

    assert_status(other_time, Code::FailedPrecondition, "REQUEST_ID_REUSED");
    assert_status(
        other_operation,
        Code::FailedPrecondition,
        "REQUEST_ID_REUSED",
    );
    assert_status(issuance_id, Code::FailedPrecondition, "REQUEST_ID_REUSED");
    assert_eq!(app.cryptlex().requests().len(), upstream_before);
}

async fn twenty_concurrent_identical_suspensions_write_to_cryptlex_once(backend: Backend) {
    // Arrange: a slow write, so every duplicate arrives while the first is in flight.
    let app = spawn_app_with(backend.options()).await;
    let mut client = app.payment_client().await;
    let license = issue_subscription(&mut client, "order-1", "sub_1", 1).await;
    app.cryptlex()
        .add_fault(
            FaultRule::once(FaultAction::Delay(Duration::from_millis(300)))
                .method(http::Method::PATCH)
                .path_prefix("/v3/licenses/"),
        )
        .expect("fault");
    let request = suspend("evt_concurrent", "sub_1", seconds_ago(60));

    // Act
    let mut tasks = JoinSet::new();
    for _ in 0..20 {
        let mut client = client.clone();
        let request = request.clone();
        tasks.spawn(async move { client.suspend_license(request).await });
    }
    let results = tasks.join_all().await;

    // Assert: one write, and every answer is the outcome or "retry".
    assert_eq!(license_writes(&app, "PATCH", ""), 1);
    assert!(upstream(&app, &license[0].id).suspended);
    let mut fresh = 0;
    for result in results {
        match result {
            Ok(response) => {
                let response = response.into_inner();
                fresh += usize::from(!response.replayed);
                assert!(
                    response.licenses[0]
                        .license
                        .as_ref()
                        .expect("license")
                        .suspended
                );
            }
            Err(status) => assert_eq!(status.code(), Code::Aborted, "{status:?}"),
        }
    }
    assert_eq!(fresh, 1, "only one call made the change");
}

// === Order ===

async fn a_resume_then_an_older_suspend_leaves_the_license_active_and_answers_superseded(
    backend: Backend,
) {
    let app = spawn_app_with(backend.options()).await;
    let mut client = app.payment_client().await;
    let license = issue_subscription(&mut client, "order-1", "sub_1", 1).await;
    let (t1, t2) = (seconds_ago(120), seconds_ago(60));

    let resumed = client
        .resume_license(resume("evt_resume", "sub_1", t2))
        .await
        .expect("resume")
        .into_inner();
    let late_suspend = client
        .suspend_license(suspend("evt_suspend", "sub_1", t1))
        .await
        .expect("an older event is acknowledged")
        .into_inner();
    let same_time = client
        .suspend_license(suspend("evt_suspend_tie", "sub_1", t2))
        .await
        .expect("a tie is acknowledged")
        .into_inner();

    assert!(!resumed.superseded, "the first event is applied");
    assert!(late_suspend.superseded);
    assert!(late_suspend.licenses[0].superseded);
    assert!(
        !late_suspend.licenses[0]
            .license
            .as_ref()
            .expect("license")
            .suspended
    );
    assert!(
        same_time.superseded,
        "an event at the same time is not later"
    );
    assert!(!upstream(&app, &license[0].id).suspended, "still active");
    assert_eq!(
        license_writes(&app, "PATCH", ""),
        0,
        "the license was active already and nothing later changed it"
    );
    // A later suspend still applies, and revocation is terminal.
    let later = client
        .suspend_license(suspend("evt_suspend_2", "sub_1", seconds_ago(30)))
        .await
        .expect("suspend")
        .into_inner();
    assert!(!later.superseded);
    assert!(upstream(&app, &license[0].id).suspended);
    client
        .revoke_license(revoke("evt_refund", "sub_1", RevocationReason::Refund))
        .await
        .expect("revoke");
    let after_revoke = client
        .resume_license(resume("evt_resume_2", "sub_1", seconds_ago(0)))
        .await
        .expect("acknowledged")
        .into_inner();
    assert!(after_revoke.superseded, "a revoked license stays revoked");
    assert!(upstream(&app, &license[0].id).revoked);
    assert!(
        upstream(&app, &license[0].id).suspended,
        "unchanged by the resume"
    );
}

async fn concurrent_events_for_one_license_leave_it_in_the_state_of_the_latest(backend: Backend) {
    // Arrange: a second replica on the same ledger (a real second pool on PostgreSQL), and
    // slow writes, so the events overlap.
    let app = spawn_app_with(backend.options()).await;
    let replica = app.spawn_replica().await;
    let mut client = app.payment_client().await;
    let license = issue_subscription(&mut client, "order-1", "sub_1", 1).await;
    app.cryptlex()
        .add_fault(
            FaultRule::n_times(10, FaultAction::Delay(Duration::from_millis(100)))
                .method(http::Method::PATCH)
                .path_prefix("/v3/licenses/"),
        )
        .expect("fault");
    let clients = [client.clone(), replica.payment_client().await];

    // Act: ten events, alternately resume and suspend; the latest (t = 10 s ago) a suspend.
    let mut tasks = JoinSet::new();
    for event in 0..10_i64 {
        let mut client = clients[usize::try_from(event).expect("index") % 2].clone();
        let at = seconds_ago(100 - event * 10);
        let request_id = format!("evt_{event}");
        tasks.spawn(async move {
            let started = std::time::Instant::now();
            loop {
                let result = if event % 2 == 1 {
                    client
                        .suspend_license(suspend(&request_id, "sub_1", at))
                        .await
                        .map(|response| response.into_inner().superseded)
                } else {
                    client
                        .resume_license(resume(&request_id, "sub_1", at))
                        .await
                        .map(|response| response.into_inner().superseded)
                };
                match result {
                    Err(status) if status.code() == Code::Aborted && started.elapsed() < BOUND => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    other => break other,
                }
            }
        });
    }
    let results = tasks.join_all().await;

    // Assert
    for result in &results {
        assert!(result.is_ok(), "{result:?}");
    }
    assert!(
        upstream(&app, &license[0].id).suspended,
        "the latest event was a suspend"
    );
    let order = app
        .ledger()
        .await
        .event_order(&license[0].id)
        .await
        .expect("read")
        .expect("an order");
    let last = order.last_event.expect("an event");
    assert_eq!(last.request_id, "evt_9");
    assert!(last.suspended);
    replica.stop().await;
}

// === Lost replies ===

/// One operation's request, built for a subscription, and what the license must show after it.
struct Case {
    name: &'static str,
    method: http::Method,
    suffix: &'static str,
    call: fn(IssuanceServiceClient<Channel>, String) -> CallFuture,
    check: fn(&LicenseRecord) -> bool,
    /// What must have happened to the license before (resume needs a suspension).
    before: Option<fn(IssuanceServiceClient<Channel>) -> CallFuture>,
}

type CallFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Vec<pb::LicenseUpdate>, tonic::Status>> + Send>,
>;

/// The far future the renewal to a date sets.
fn renewed_to() -> DateTime<Utc> {
    DateTime::from_timestamp(4_102_444_800, 0).expect("2100-01-01")
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "suspend",
            method: http::Method::PATCH,
            suffix: "",
            call: |mut client, id| {
                Box::pin(async move {
                    client
                        .suspend_license(suspend(&id, "sub_1", seconds_before_start(60)))
                        .await
                        .map(|r| r.into_inner().licenses)
                })
            },
            check: |license| license.suspended,
            before: None,
        },
        Case {
            name: "resume",
            method: http::Method::PATCH,
            suffix: "",
            call: |mut client, id| {
                Box::pin(async move {
                    client
                        .resume_license(resume(&id, "sub_1", seconds_before_start(60)))
                        .await
                        .map(|r| r.into_inner().licenses)
                })
            },
            check: |license| !license.suspended,
            before: Some(|mut client| {
                Box::pin(async move {
                    client
                        .suspend_license(suspend(
                            "evt_paused_before",
                            "sub_1",
                            seconds_before_start(120),
                        ))
                        .await
                        .map(|r| r.into_inner().licenses)
                })
            }),
        },
        Case {
            name: "revoke",
            method: http::Method::PATCH,
            suffix: "",
            call: |mut client, id| {
                Box::pin(async move {
                    client
                        .revoke_license(revoke(&id, "sub_1", RevocationReason::Chargeback))
                        .await
                        .map(|r| r.into_inner().licenses)
                })
            },
            check: |license| {
                license.revoked
                    && license.metadata.iter().any(|entry| {
                        entry.key == "licensing_gateway_revocation" && entry.value == "chargeback"
                    })
            },
            before: None,
        },
        Case {
            name: "seats",
            method: http::Method::PATCH,
            suffix: "",
            call: |mut client, id| {
                Box::pin(async move {
                    client
                        .set_seats(set_seats(&id, "sub_1", 7))
                        .await
                        .map(|r| r.into_inner().licenses)
                })
            },
            check: |license| license.allowed_activations == 7,
            before: None,
        },
        Case {
            name: "renew to a date",
            method: http::Method::PATCH,
            suffix: "/expires-at",
            call: |mut client, id| {
                Box::pin(async move {
                    client
                        .renew_license(renew(&id, "sub_1", Some(timestamp(renewed_to()))))
                        .await
                        .map(|r| r.into_inner().licenses)
                })
            },
            check: |license| license.expires_at == Some(renewed_to()),
            before: None,
        },
    ]
}

async fn a_lost_reply_to_each_operation_is_completed_by_the_retry_without_a_second_write(
    backend: Backend,
) {
    for case in cases() {
        // Arrange: Cryptlex does the work, then a proxy answers 502 instead of it.
        let app = spawn_app_with(short_settle(backend.options())).await;
        let mut client = app.payment_client().await;
        let license = issue_subscription(&mut client, "order-1", "sub_1", 1).await;
        let id = license[0].id.clone();
        if let Some(before) = case.before {
            before(client.clone()).await.expect("the earlier event");
            assert!(
                !(case.check)(&upstream(&app, &id)),
                "{}: not done yet",
                case.name
            );
        }
        let writes_before = license_writes(&app, case.method.as_str(), case.suffix);
        app.cryptlex()
            .add_fault(
                FaultRule::once(
                    FaultAction::json(502, &serde_json::json!({"message": "Bad Gateway"}))
                        .after_processing(),
                )
                .method(case.method.clone())
                .path_prefix(format!("/v3/licenses/{id}")),
            )
            .expect("fault");
        let request_id = format!("evt_{}", case.name.replace(' ', "_"));

        // Act
        let first = (case.call)(client.clone(), request_id.clone()).await;
        let done_upstream = (case.check)(&upstream(&app, &id));
        let retried = retry_while_aborted!((case.call)(client.clone(), request_id.clone()));

        // Assert
        let status = first.expect_err("the reply was lost");
        assert_eq!(
            status.code(),
            Code::Unavailable,
            "{}: {status:?}",
            case.name
        );
        assert!(done_upstream, "{}: cryptlex did the work", case.name);
        let updates = retried.unwrap_or_else(|status| panic!("{}: {status:?}", case.name));
        assert_eq!(updates.len(), 1);
        assert!(!updates[0].superseded, "{}", case.name);
        assert!((case.check)(&upstream(&app, &id)), "{}", case.name);
        assert_eq!(
            license_writes(&app, case.method.as_str(), case.suffix),
            writes_before + 1,
            "{}: no second write",
            case.name
        );
        let history = app
            .ledger()
            .await
            .history_entry(DevPki::PAYMENT_SERVICE_ID, &request_id, &id)
            .await
            .expect("read")
            .expect("a history row");
        assert_eq!(
            history.result,
            licensing_gateway::ledger::HistoryResult::Applied,
            "{}",
            case.name
        );
        assert_eq!(history.attempts, 1, "{}: written once", case.name);
    }
}

async fn a_renewal_by_interval_whose_reply_was_lost_extends_the_license_once(backend: Backend) {
    // Arrange: a P1Y license (the sandbox's default); Cryptlex renews, then the connection
    // breaks before the answer.
    let app = spawn_app_with(short_settle(backend.options())).await;
    let mut client = app.payment_client().await;
    let license = issue_subscription(&mut client, "order-1", "sub_1", 1).await;
    let id = license[0].id.clone();
    let before = upstream(&app, &id).expires_at.expect("an expiry");
    app.cryptlex()
        .add_fault(
            FaultRule::once(FaultAction::ResetAfterProcessing)
                .method(http::Method::POST)
                .path_prefix(format!("/v3/licenses/{id}/renew")),
        )
        .expect("fault");

    // Act
    let first = client.renew_license(renew("inv_paid", "sub_1", None)).await;
    let extended_once = upstream(&app, &id).expires_at;
    let retried = retry_while_aborted!(client.renew_license(renew("inv_paid", "sub_1", None)));
    let replay = client
        .renew_license(renew("inv_paid", "sub_1", None))
        .await
        .expect("replay")
        .into_inner();

    // Assert
    let status = first.expect_err("the reply was lost");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let retried = retried.expect("the retry answers").into_inner();
    assert!(
        retried.replayed,
        "done by the first attempt, found by reading back"
    );
    let update = &retried.licenses[0];
    assert_same_expiry(
        update.previous_expires_at.as_ref().map(instant),
        Some(before),
    );
    let after = upstream(&app, &id).expires_at;
    assert_eq!(after, extended_once, "not extended a second time");
    assert!(after.expect("expiry") > before + TimeDelta::days(364));
    assert_eq!(
        license_writes(&app, "POST", "/renew"),
        1,
        "one renewal upstream"
    );
    assert_eq!(replay.licenses, retried.licenses);
}

async fn a_renewal_by_interval_that_never_reached_cryptlex_is_made_by_the_retry(backend: Backend) {
    // Arrange: the connection breaks before Cryptlex acts, which the gateway cannot tell from
    // a lost reply; reading the license back must find it not renewed.
    let app = spawn_app_with(short_settle(backend.options())).await;
    let mut client = app.payment_client().await;
    let license = issue_subscription(&mut client, "order-1", "sub_1", 1).await;
    let id = license[0].id.clone();
    let before = upstream(&app, &id).expires_at.expect("an expiry");
    app.cryptlex()
        .add_fault(
            FaultRule::once(FaultAction::ResetBeforeResponse)
                .method(http::Method::POST)
                .path_prefix(format!("/v3/licenses/{id}/renew")),
        )
        .expect("fault");

    // Act
    let first = client.renew_license(renew("inv_paid", "sub_1", None)).await;
    let untouched = upstream(&app, &id).expires_at;
    let retried = retry_while_aborted!(client.renew_license(renew("inv_paid", "sub_1", None)));

    // Assert
    first.expect_err("the connection broke");
    assert_eq!(untouched, Some(before), "cryptlex did nothing");
    let retried = retried.expect("the retry renews").into_inner();
    assert!(!retried.replayed, "renewed by the retry");
    let after = upstream(&app, &id).expires_at.expect("expiry");
    let extension = after - before;
    assert!(
        extension > TimeDelta::days(364) && extension < TimeDelta::days(367),
        "extended exactly once: {extension}"
    );
    let history = app
        .ledger()
        .await
        .history_entry(DevPki::PAYMENT_SERVICE_ID, "inv_paid", &id)
        .await
        .expect("read")
        .expect("a row");
    assert_eq!(
        history.attempts, 2,
        "written, found not done, written again"
    );
}

// === Renewals, revocation, seats ===

#[tokio::test]
async fn a_renewal_to_a_date_extends_every_license_and_never_shortens_one() {
    let app = spawn_app_with(Backend::Sqlite.options()).await;
    let mut client = app.payment_client().await;
    let licenses = issue_subscription(&mut client, "order-1", "sub_1", 2).await;
    let before: Vec<Option<DateTime<Utc>>> = licenses
        .iter()
        .map(|license| upstream(&app, &license.id).expires_at)
        .collect();

    let later = client
        .renew_license(renew("inv_1", "sub_1", Some(timestamp(renewed_to()))))
        .await
        .expect("renewed")
        .into_inner();
    let shorter = client
        .renew_license(renew(
            "inv_0",
            "sub_1",
            Some(timestamp(Utc::now() + TimeDelta::days(30))),
        ))
        .await
        .expect("acknowledged")
        .into_inner();

    assert_eq!(later.licenses.len(), 2, "every license, not the first");
    for (update, before) in later.licenses.iter().zip(&before) {
        let license = update.license.as_ref().expect("license");
        assert!(!update.superseded);
        assert_eq!(license.expires_at.as_ref().map(instant), Some(renewed_to()));
        assert_same_expiry(update.previous_expires_at.as_ref().map(instant), *before);
        assert_eq!(upstream(&app, &license.id).expires_at, Some(renewed_to()));
    }
    for update in &shorter.licenses {
        assert!(
            update.superseded,
            "an earlier date never shortens a license"
        );
    }
    assert_eq!(
        upstream(&app, &licenses[0].id).expires_at,
        Some(renewed_to())
    );
    assert_eq!(license_writes(&app, "PATCH", "/expires-at"), 2);
}

#[tokio::test]
async fn a_revocation_keeps_the_license_records_the_reason_and_keeps_other_metadata() {
    let app = spawn_app_with(Backend::Sqlite.options()).await;
    let mut client = app.payment_client().await;
    let response = client
        .issue_license(IssueLicenseRequest {
            subscription_id: "sub_1".into(),
            metadata: [("order".to_owned(), "A-17".to_owned())].into(),
            ..issue_for_demo("order-1")
        })
        .await
        .expect("issued")
        .into_inner();
    let id = response.licenses[0].id.clone();

    let revoked = client
        .revoke_license(RevokeLicenseRequest {
            note: "dp_123".into(),
            ..revoke("evt_dispute", "sub_1", RevocationReason::Chargeback)
        })
        .await
        .expect("revoked")
        .into_inner();
    let again = client
        .revoke_license(revoke("evt_refund", "sub_1", RevocationReason::Refund))
        .await
        .expect("acknowledged")
        .into_inner();

    let license = revoked.licenses[0].license.as_ref().expect("license");
    assert!(license.revoked);
    assert_eq!(
        license.metadata.get("order").map(String::as_str),
        Some("A-17"),
        "the caller's metadata survives; the gateway's stays hidden"
    );
    assert_eq!(license.metadata.len(), 1);
    let stored = upstream(&app, &id);
    assert!(stored.revoked);
    let value = |key: &str| {
        stored
            .metadata
            .iter()
            .find(|entry| entry.key == key)
            .map(|entry| (entry.value.clone(), entry.view_permissions.is_empty()))
    };
    assert_eq!(
        value("licensing_gateway_revocation"),
        Some(("chargeback: dp_123".to_owned(), true)),
        "admin-only"
    );
    assert_eq!(value(REQUEST_ID_KEY), Some(("order-1".to_owned(), true)));
    assert_eq!(value(SUBSCRIPTION_KEY), Some(("sub_1".to_owned(), true)));
    assert_eq!(value("order"), Some(("A-17".to_owned(), true)));
    assert!(again.licenses[0].superseded, "already revoked");
    assert_eq!(license_writes(&app, "DELETE", ""), 0, "never deleted");
    assert_eq!(license_writes(&app, "PATCH", ""), 1);
}

#[tokio::test]
async fn set_seats_changes_allowed_activations_of_one_license_by_id() {
    let app = spawn_app_with(Backend::Sqlite.options()).await;
    let mut client = app.payment_client().await;
    let licenses = issue_subscription(&mut client, "order-1", "sub_1", 2).await;

    let response = client
        .set_seats(SetSeatsRequest {
            request_id: "evt_seats".into(),
            target: Some(pb::set_seats_request::Target::LicenseId(
                licenses[1].id.clone(),
            )),
            allowed_activations: 5,
        })
        .await
        .expect("seats")
        .into_inner();

    assert_eq!(response.licenses.len(), 1);
    assert_eq!(
        response.licenses[0]
            .license
            .as_ref()
            .expect("license")
            .allowed_activations,
        5
    );
    assert_eq!(upstream(&app, &licenses[1].id).allowed_activations, 5);
    assert_eq!(upstream(&app, &licenses[0].id).allowed_activations, 1);
}

// === Refusals ===

#[tokio::test]
async fn a_caller_without_the_operation_is_refused_before_any_upstream_call() {
    // The payment service may only issue and suspend; the other client only issue.
    let app = spawn_app_with(policy(
        Backend::Sqlite,
        &["IssueLicense", "SuspendLicense"],
        &["IssueLicense"],
    ))
    .await;
    let mut client = app.payment_client().await;
    issue_subscription(&mut client, "order-1", "sub_1", 1).await;
    let upstream_before = app.cryptlex().requests().len();

    let revoke_call = client
        .revoke_license(revoke("evt_1", "sub_1", RevocationReason::Refund))
        .await;
    let seats_call = client.set_seats(set_seats("evt_2", "sub_1", 2)).await;
    let intruder = intruder_client(&app)
        .await
        .suspend_license(suspend("evt_3", "sub_1", seconds_ago(5)))
        .await;

    assert_status(revoke_call, Code::PermissionDenied, "OPERATION_NOT_ALLOWED");
    assert_status(seats_call, Code::PermissionDenied, "OPERATION_NOT_ALLOWED");
    assert_status(intruder, Code::PermissionDenied, "OPERATION_NOT_ALLOWED");
    assert_eq!(app.cryptlex().requests().len(), upstream_before);
    assert!(
        app.ledger()
            .await
            .get(DevPki::PAYMENT_SERVICE_ID, "evt_1")
            .await
            .expect("read")
            .is_none(),
        "the ledger is not touched"
    );
}

#[tokio::test]
async fn a_license_of_a_product_the_caller_may_not_use_is_refused_without_a_write() {
    // The intruder may suspend, but only licenses of a product nobody issues.
    let app = spawn_app_with(policy(
        Backend::Sqlite,
        &["IssueLicense"],
        &["SuspendLicense"],
    ))
    .await;
    let mut client = app.payment_client().await;
    issue_subscription(&mut client, "order-1", "sub_1", 1).await;

    let refused = intruder_client(&app)
        .await
        .suspend_license(suspend("evt_1", "sub_1", seconds_ago(5)))
        .await;

    assert_status(refused, Code::PermissionDenied, "PRODUCT_NOT_ALLOWED");
    assert_eq!(license_writes(&app, "PATCH", ""), 0);
}

#[tokio::test]
async fn an_unknown_subscription_is_not_found_and_its_request_id_works_once_it_has_licenses() {
    let app = spawn_app_with(Backend::Sqlite.options()).await;
    let mut client = app.payment_client().await;
    let early = suspend("evt_early", "sub_later", seconds_ago(5));

    let missing = client.suspend_license(early.clone()).await;
    issue_subscription(&mut client, "order-1", "sub_later", 1).await;
    let later = client
        .suspend_license(early)
        .await
        .expect("the same request now finds the license")
        .into_inner();

    assert_status(missing, Code::NotFound, "NOT_FOUND");
    assert!(!later.replayed);
    assert_eq!(later.licenses.len(), 1);
    assert_eq!(license_writes(&app, "PATCH", ""), 1);
}

#[tokio::test]
async fn malformed_lifecycle_requests_are_invalid_before_any_upstream_call() {
    let app = spawn_app_with(Backend::Sqlite.options()).await;
    let mut client = app.payment_client().await;

    let no_event_time = client
        .suspend_license(SuspendLicenseRequest {
            event_time: None,
            ..suspend("evt_1", "sub_1", seconds_ago(5))
        })
        .await;
    let far_future = client
        .resume_license(resume(
            "evt_2",
            "sub_1",
            timestamp(Utc::now() + TimeDelta::days(1)),
        ))
        .await;
    let no_target = client
        .set_seats(SetSeatsRequest {
            target: None,
            ..set_seats("evt_3", "sub_1", 2)
        })
        .await;
    let no_seats = client.set_seats(set_seats("evt_4", "sub_1", 0)).await;
    let past = client
        .renew_license(renew("evt_5", "sub_1", Some(seconds_ago(60))))
        .await;
    let other_without_note = client
        .revoke_license(revoke("evt_6", "sub_1", RevocationReason::Other))
        .await;

    assert_status(no_event_time, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_status(far_future, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_status(no_target, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_status(no_seats, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_status(past, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_status(
        other_without_note,
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    );
    assert!(app.cryptlex().requests().is_empty());
}

// === Quantity ===

async fn a_quantity_of_licenses_interrupted_midway_is_completed_by_the_retry_without_duplicates(
    backend: Backend,
) {
    // Arrange: the second create is refused with a 429 (certainly not done), the others work.
    let app = spawn_app_with(backend.options()).await;
    let cryptlex = app.cryptlex();
    let create = |action| {
        FaultRule::once(action)
            .method(http::Method::POST)
            .path_prefix("/v3/licenses")
    };
    cryptlex
        .add_fault(create(FaultAction::Delay(Duration::ZERO)))
        .expect("fault");
    cryptlex
        .add_fault(create(FaultAction::json(
            429,
            &serde_json::json!({"message": "Too many requests"}),
        )))
        .expect("fault");
    let mut client = app.payment_client().await;
    let request = IssueLicenseRequest {
        subscription_id: "sub_3".into(),
        quantity: 3,
        ..issue_for_demo("order-3")
    };

    // Act
    let first = client.issue_license(request.clone()).await;
    let after_first = cryptlex
        .licenses_with_metadata(SUBSCRIPTION_KEY, "sub_3")
        .len();
    let retried = client
        .issue_license(request.clone())
        .await
        .expect("the retry completes it")
        .into_inner();
    let replay = client
        .issue_license(request)
        .await
        .expect("replay")
        .into_inner();

    // Assert
    assert_status(first, Code::Unavailable, "UPSTREAM_RATE_LIMITED");
    assert_eq!(after_first, 1, "the first unit was issued");
    assert_eq!(retried.licenses.len(), 3);
    assert_eq!(retried.license.as_ref(), retried.licenses.first());
    for (unit, license) in retried.licenses.iter().enumerate() {
        let key = format!("order-3#{}", unit + 1);
        let upstream = cryptlex.licenses_with_metadata(REQUEST_ID_KEY, &key);
        assert_eq!(upstream.len(), 1, "one license for {key}");
        assert_eq!(upstream[0].id, license.id);
        assert_eq!(license.subscription_id, "sub_3");
    }
    assert_eq!(
        cryptlex
            .licenses_with_metadata(SUBSCRIPTION_KEY, "sub_3")
            .len(),
        3
    );
    assert_eq!(
        license_posts(&cryptlex),
        4,
        "three creates and the refused one"
    );
    assert!(replay.replayed);
    assert_eq!(replay.licenses, retried.licenses);
}

#[tokio::test]
async fn a_quantity_for_a_product_listed_as_activations_makes_one_license_with_that_many() {
    let mut options = Backend::Sqlite.options();
    options.env.push((
        "LICENSING_GATEWAY__ISSUANCE__QUANTITY_AS_ACTIVATIONS".into(),
        cryptlex_sandbox::seed::PRODUCT_ID.to_owned(),
    ));
    let app = spawn_app_with(options).await;
    let mut client = app.payment_client().await;

    let response = client
        .issue_license(IssueLicenseRequest {
            quantity: 5,
            ..issue_for_demo("order-5")
        })
        .await
        .expect("issued")
        .into_inner();

    assert_eq!(response.licenses.len(), 1);
    assert_eq!(response.licenses[0].allowed_activations, 5);
    let upstream = app
        .cryptlex()
        .licenses_with_metadata(REQUEST_ID_KEY, "order-5");
    assert_eq!(upstream.len(), 1, "one license, under the plain request id");
    assert_eq!(upstream[0].allowed_activations, 5);
}

// === History ===

#[tokio::test]
async fn ledger_show_prints_a_licenses_history_and_a_requests_effects() {
    let app = spawn_app_with(Backend::Sqlite.options()).await;
    let mut client = app.payment_client().await;
    let license = issue_subscription(&mut client, "order-1", "sub_1", 1).await;
    let id = license[0].id.clone();
    client
        .suspend_license(suspend("evt_pause", "sub_1", seconds_ago(60)))
        .await
        .expect("suspend");
    client
        .suspend_license(suspend("evt_pause_old", "sub_1", seconds_ago(120)))
        .await
        .expect("superseded");

    let by_license = ledger::run(
        app.sandbox.settings.clone(),
        LedgerAction::Show {
            request_id: id.clone(),
        },
    )
    .await
    .expect("show");
    let by_request = ledger::run(
        app.sandbox.settings.clone(),
        LedgerAction::Show {
            request_id: "evt_pause".into(),
        },
    )
    .await
    .expect("show");

    let lines: Vec<&str> = by_license.lines().collect();
    assert_eq!(lines[0], format!("license {id}:"));
    assert!(
        lines[1].contains("IssueLicense") && lines[1].contains("order-1"),
        "{by_license}"
    );
    assert!(
        lines[2].contains("SuspendLicense") && lines[2].contains("applied"),
        "{by_license}"
    );
    assert!(
        lines[3].contains("evt_pause_old") && lines[3].contains("superseded"),
        "{by_license}"
    );
    assert!(by_license.contains("subscription=sub_1"), "{by_license}");
    assert!(
        by_request.contains("operation:    SuspendLicense"),
        "{by_request}"
    );
    assert!(by_request.contains("licenses:"), "{by_request}");
    assert!(
        by_request.contains(&format!("license={id}")),
        "{by_request}"
    );
}

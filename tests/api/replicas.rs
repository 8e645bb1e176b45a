//! Two gateway replicas on one PostgreSQL ledger (one schema) and one
//! sandbox Cryptlex: invalidations reach the other replica, and together
//! they stay inside Cryptlex's rate limit.

use std::time::{Duration, Instant};

use cryptlex_sandbox::RateLimit;
use licensing_gateway::grpc::pb::user_service_client::UserServiceClient;
use licensing_gateway::grpc::pb::{
    GetProfileRequest, ListMyLicensesRequest, ListMyLicensesResponse,
};
use sqlx::Connection as _;
use tonic::Code;
use tonic::transport::Channel;

use crate::helpers::{TestOptions, spawn_app_with};
use crate::support::client::with_token;
use crate::support::issuance::issue_for_demo;
use crate::support::ledger::{Backend, postgres_url};

/// How long a notification may take from one replica to the other on the
/// local PostgreSQL (it takes about a millisecond; this leaves room for a
/// loaded machine).
const PROPAGATION: Duration = Duration::from_millis(500);

/// How many `GET /v3/me/licenses` the sandbox has received.
fn license_list_calls(app: &crate::helpers::TestApp) -> usize {
    app.cryptlex()
        .requests()
        .iter()
        .filter(|request| request.method == "GET" && request.path == "/v3/me/licenses")
        .count()
}

/// One `ListMyLicenses` (the first page) through `client`.
async fn list(client: &UserServiceClient<Channel>, token: &str) -> ListMyLicensesResponse {
    client
        .clone()
        .list_my_licenses(with_token(ListMyLicensesRequest::default(), token))
        .await
        .expect("a page")
        .into_inner()
}

#[tokio::test]
async fn a_license_issued_through_one_replica_shows_on_the_other_replicas_next_read() {
    // Arrange: caches that would keep the page for ten minutes, so only an
    // invalidation can make replica B look again.
    let mut options = Backend::Postgres.options();
    options
        .env
        .push(("LICENSING_GATEWAY__CACHE__TTL".into(), "10m".into()));
    let app = spawn_app_with(options).await;
    let replica = app.spawn_replica().await;
    let token = app.demo_token().await;
    let on_b = replica.user_client().await;
    let before = list(&on_b, &token).await;
    let calls_after_first_read = license_list_calls(&app);
    let cached = list(&on_b, &token).await;
    assert_eq!(
        license_list_calls(&app),
        calls_after_first_read,
        "replica B serves the page from its cache"
    );
    assert_eq!(cached.licenses, before.licenses);

    // Act: the payment service issues through replica A.
    let issued = app
        .payment_client()
        .await
        .issue_license(issue_for_demo("replica-order-1"))
        .await
        .expect("issued")
        .into_inner()
        .license
        .expect("a license");
    tokio::time::sleep(PROPAGATION).await;

    // Assert: B's next read asks Cryptlex again and shows the license.
    let after = list(&on_b, &token).await;
    assert!(
        after.licenses.iter().any(|license| license.id == issued.id),
        "replica B still shows {} licenses without {}",
        after.licenses.len(),
        issued.id
    );
    assert_eq!(after.licenses.len(), before.licenses.len() + 1);
    assert_eq!(license_list_calls(&app), calls_after_first_read + 1);

    // And the other way round: A has the page cached, B issues.
    let on_a = app.user_client().await;
    let cached_on_a = list(&on_a, &token).await;
    assert_eq!(cached_on_a.licenses, after.licenses);
    let issued_on_b = replica
        .payment_client()
        .await
        .issue_license(issue_for_demo("replica-order-2"))
        .await
        .expect("issued")
        .into_inner()
        .license
        .expect("a license");
    tokio::time::sleep(PROPAGATION).await;
    let after_on_a = list(&on_a, &token).await;
    assert!(
        after_on_a
            .licenses
            .iter()
            .any(|license| license.id == issued_on_b.id),
        "replica A does not show {}",
        issued_on_b.id
    );
    replica.stop().await;
}

#[tokio::test]
async fn two_replicas_together_stay_inside_cryptlexs_rate_limit() {
    // Arrange: Cryptlex's real limit; no cache, so reads cost calls.
    let app = spawn_app_with(rate_limited_without_cache()).await;
    let replica = app.spawn_replica().await;
    let token = app.demo_token().await;
    let clients = [app.user_client().await, replica.user_client().await];
    let calls_before = app.cryptlex().stats().requests;

    // Act: 8 readers per replica for a window and a half, each reading as
    // fast as it is answered: several times what Cryptlex allows.
    let run_for = Duration::from_millis(7_500);
    let mut readers = Vec::new();
    for client in &clients {
        for _ in 0..8 {
            let mut client = client.clone();
            let token = token.clone();
            readers.push(tokio::spawn(async move {
                let (mut served, mut refused) = (0u32, 0u32);
                let end = Instant::now() + run_for;
                while Instant::now() < end {
                    match client
                        .get_profile(with_token(GetProfileRequest {}, &token))
                        .await
                    {
                        Ok(_) => served += 1,
                        Err(status) => {
                            assert!(
                                matches!(
                                    status.code(),
                                    Code::Unavailable | Code::ResourceExhausted
                                ),
                                "{status:?}"
                            );
                            refused += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
                (served, refused)
            }));
        }
    }
    let (mut served, mut refused) = (0, 0);
    for reader in readers {
        let (reader_served, reader_refused) = reader.await.expect("reader");
        served += reader_served;
        refused += reader_refused;
    }

    // Assert: no 429 (the sandbox enforces 50 per 5 s over both replicas),
    // while the offered load needed more than the limit and the limit was
    // used.
    let stats = app.cryptlex().stats();
    let calls = stats.requests - calls_before;
    println!("two replicas: served {served}, refused {refused}, upstream calls {calls}");
    assert_eq!(stats.responses_429, 0, "the replicas together caused a 429");
    assert!(refused > 0, "the load must exceed the limit");
    assert!(calls >= 60, "only {calls} upstream calls in 1.5 windows");
    replica.stop().await;
}

#[tokio::test]
async fn both_replicas_count_their_upstream_calls_in_the_shared_window() {
    // Arrange
    let app = spawn_app_with(rate_limited_without_cache()).await;
    let replica = app.spawn_replica().await;
    let token = app.demo_token().await;
    let began = chrono::Utc::now();

    // Act: a few reads through each replica, one at a time.
    for client in [app.user_client().await, replica.user_client().await] {
        for _ in 0..3 {
            client
                .clone()
                .get_profile(with_token(GetProfileRequest {}, &token))
                .await
                .expect("a profile");
        }
    }

    // Assert: every call either replica sent since is in the shared window
    // (it is five seconds long, and this took far less).
    let sent = app
        .cryptlex()
        .requests()
        .iter()
        .filter(|request| request.received_at >= began)
        .count();
    let schema = app.postgres_schema().expect("a postgres ledger");
    let mut conn = sqlx::PgConnection::connect(&postgres_url())
        .await
        .expect("postgres reachable");
    let recorded: i32 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT cardinality(starts) FROM \"{schema}\".upstream_call_window"
    )))
    .fetch_one(&mut conn)
    .await
    .expect("the window's row");
    assert!(sent >= 6, "{sent} calls sent");
    assert!(
        recorded as usize >= sent,
        "{recorded} starts recorded for {sent} calls"
    );
    replica.stop().await;
}

/// Cryptlex's real limit, no read cache, many users on one address (one
/// session stands for all of them, so its per-session share is lifted), and a
/// PostgreSQL ledger.
fn rate_limited_without_cache() -> TestOptions {
    let mut options = TestOptions {
        rate_limit: Some(RateLimit::cryptlex_default()),
        ..Backend::Postgres.options()
    }
    .many_users_on_one_address();
    options
        .env
        .push(("LICENSING_GATEWAY__CACHE__TTL".into(), "0s".into()));
    options.env.push((
        "LICENSING_GATEWAY__CRYPTLEX__BUDGET__PER_SESSION_READS".into(),
        "1000".into(),
    ));
    options
}

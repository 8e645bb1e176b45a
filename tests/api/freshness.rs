//! Freshness of the read cache against the sandbox: what a page view costs
//! upstream, stale-while-revalidate, the maximum age, the never-refuse-when-
//! cached rule, invalidation by writes and changes, isolation between tokens
//! and the byte bound. Upstream calls are counted in the sandbox's journal.

use std::collections::HashMap;
use std::time::Duration;

use cryptlex_sandbox::{FaultAction, FaultRule, seed};
use licensing_gateway::app::Application;
use licensing_gateway::commands::sandbox::{self, SandboxArgs};
use licensing_gateway::config::RawSettings;
use licensing_gateway::domain::CryptlexId;
use licensing_gateway::grpc::pb::issue_license_request::User;
use licensing_gateway::grpc::pb::user_service_client::UserServiceClient;
use licensing_gateway::grpc::pb::{
    GetProfileRequest, IssueLicenseRequest, ListMyLicensesRequest, LogoutRequest,
};
use licensing_gateway::licensing::changes::{Change, Origin};
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

use crate::helpers::{TestApp, TestOptions, spawn_app_with};
use crate::support::client::{install_crypto_provider, reason, with_token};

fn options(pairs: &[(&str, &str)]) -> TestOptions {
    TestOptions {
        env: pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect(),
        ..TestOptions::default()
    }
}

/// Upstream requests the sandbox received for `path` since the journal was
/// last cleared.
fn upstream(app: &TestApp, path: &str) -> usize {
    app.cryptlex()
        .requests()
        .iter()
        .filter(|request| request.path == path)
        .count()
}

/// What a web page does: the profile twice and the first license page, at
/// the same moment.
async fn page_view(client: &UserServiceClient<Channel>, token: &str) {
    let (mut a, mut b, mut c) = (client.clone(), client.clone(), client.clone());
    let (first, second, licenses) = tokio::join!(
        a.get_profile(with_token(GetProfileRequest {}, token)),
        b.get_profile(with_token(GetProfileRequest {}, token)),
        c.list_my_licenses(with_token(ListMyLicensesRequest::default(), token)),
    );
    first.expect("profile");
    second.expect("profile");
    licenses.expect("licenses");
}

/// Polls until `condition` holds (or fails after 5 s).
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn repeated_page_views_cost_only_the_first_profile_and_license_page_reads() {
    let app = spawn_app_with(TestOptions::default()).await;
    let token = app.demo_token().await;
    let client = app.user_client().await;
    app.cryptlex().clear_requests();

    for _ in 0..20 {
        page_view(&client, &token).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let requests = app.cryptlex().requests();
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths.len(), 2, "one /v3/me and one license page: {paths:?}");
    assert_eq!(upstream(&app, "/v3/me"), 1);
    assert_eq!(upstream(&app, "/v3/me/licenses"), 1);
}

#[tokio::test]
async fn between_fresh_for_and_max_age_reads_answer_from_memory_and_one_background_refresh_follows()
{
    let app = spawn_app_with(options(&[
        ("LICENSING_GATEWAY__CACHE__FRESH_FOR", "1s"),
        ("LICENSING_GATEWAY__CACHE__MAX_AGE", "1h"),
    ]))
    .await;
    let token = app.demo_token().await;
    let mut client = app.user_client().await;
    client
        .get_profile(with_token(GetProfileRequest {}, &token))
        .await
        .expect("profile");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // The refresh is held up upstream, so an answer that arrives at all
    // before it ends came from memory.
    app.cryptlex()
        .add_fault(FaultRule {
            path_prefix: Some("/v3/me".into()),
            ..FaultRule::once(FaultAction::Delay(Duration::from_millis(1500)))
        })
        .expect("fault");
    app.cryptlex().clear_requests();

    let started = std::time::Instant::now();
    for _ in 0..5 {
        client
            .get_profile(with_token(GetProfileRequest {}, &token))
            .await
            .expect("answered from memory");
    }
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "answers did not wait for the refresh: {:?}",
        started.elapsed()
    );
    eventually("the background refresh reaches Cryptlex", || {
        upstream(&app, "/v3/me") == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert_eq!(upstream(&app, "/v3/me"), 1, "exactly one refresh");
    // The refreshed answer is fresh again: no further upstream call.
    client
        .get_profile(with_token(GetProfileRequest {}, &token))
        .await
        .expect("profile");
    assert_eq!(upstream(&app, "/v3/me"), 1);
}

#[tokio::test]
async fn past_max_age_a_read_fetches_before_answering() {
    let app = spawn_app_with(options(&[
        ("LICENSING_GATEWAY__CACHE__FRESH_FOR", "500ms"),
        ("LICENSING_GATEWAY__CACHE__MAX_AGE", "500ms"),
    ]))
    .await;
    let token = app.demo_token().await;
    let mut client = app.user_client().await;
    client
        .get_profile(with_token(GetProfileRequest {}, &token))
        .await
        .expect("profile");
    tokio::time::sleep(Duration::from_millis(700)).await;
    app.cryptlex().clear_requests();

    client
        .get_profile(with_token(GetProfileRequest {}, &token))
        .await
        .expect("profile");

    assert_eq!(upstream(&app, "/v3/me"), 1, "fetched before the answer");
}

#[tokio::test]
async fn a_cached_read_is_answered_while_the_upstream_budget_is_spent() {
    // Reads may use a few calls per minute (what 19 leaves past the
    // reserves of 10 for issuance and 5 for sign-in).
    let app = spawn_app_with(options(&[
        ("LICENSING_GATEWAY__CRYPTLEX__BUDGET__MAX_REQUESTS", "19"),
        ("LICENSING_GATEWAY__CRYPTLEX__BUDGET__WINDOW", "60s"),
        ("LICENSING_GATEWAY__CACHE__FRESH_FOR", "200ms"),
        ("LICENSING_GATEWAY__CACHE__MAX_AGE", "1h"),
    ]))
    .await;
    let token = app.demo_token().await;
    let client = app.user_client().await;
    page_view(&client, &token).await;
    // Spend the rest of the read share on reads nothing in memory answers,
    // until one is refused.
    let mut refused = client.clone();
    let mut spent = false;
    for page_size in 2..20 {
        let other_page = refused
            .list_my_licenses(with_token(
                ListMyLicensesRequest {
                    page_size,
                    ..Default::default()
                },
                &token,
            ))
            .await;
        if let Err(status) = other_page {
            assert_eq!(reason(&status), "UPSTREAM_BUDGET_EXHAUSTED", "{status:?}");
            spent = true;
            break;
        }
    }
    assert!(spent, "the read share ran out");

    // Past fresh_for, with no budget for the refreshes: still answered.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..10 {
        page_view(&client, &token).await;
    }
}

#[tokio::test]
async fn issuing_a_license_invalidates_only_its_holders_license_pages() {
    let app = spawn_app_with(TestOptions::default()).await;
    let demo = app.demo_token().await;
    let other = app
        .login(seed::OTHER_EMAIL, seed::OTHER_PASSWORD)
        .await
        .access_token;
    let mut client = app.user_client().await;
    page_view(&client, &demo).await;
    page_view(&client, &other).await;
    app.cryptlex().clear_requests();

    let issued = app
        .payment_client()
        .await
        .issue_license(IssueLicenseRequest {
            request_id: "freshness-holder".into(),
            user: Some(User::UserEmail(seed::DEMO_EMAIL.into())),
            ..Default::default()
        })
        .await
        .expect("issued")
        .into_inner()
        .license
        .expect("license");
    app.cryptlex().clear_requests();

    page_view(&client, &other).await;
    assert!(
        app.cryptlex().requests().is_empty(),
        "another user's cached page view costs nothing"
    );
    let page = client
        .list_my_licenses(with_token(ListMyLicensesRequest::default(), &demo))
        .await
        .expect("page")
        .into_inner();
    assert!(page.licenses.iter().any(|license| license.id == issued.id));
    client
        .get_profile(with_token(GetProfileRequest {}, &demo))
        .await
        .expect("profile");
    assert_eq!(upstream(&app, "/v3/me/licenses"), 1, "the holder's page");
    assert_eq!(upstream(&app, "/v3/me"), 0, "profiles stay");
}

#[tokio::test]
async fn two_sessions_of_one_user_never_share_an_answer_and_signing_one_out_leaves_the_other() {
    let app = spawn_app_with(TestOptions::default()).await;
    let first = app.demo_token().await;
    let second = app.demo_token().await;
    assert_ne!(first, second);
    let client = app.user_client().await;
    app.cryptlex().clear_requests();

    // At the same moment: coalescing joins only identical reads of one token.
    tokio::join!(page_view(&client, &first), page_view(&client, &second));
    assert_eq!(upstream(&app, "/v3/me"), 2, "one per token");
    assert_eq!(upstream(&app, "/v3/me/licenses"), 2, "one per token");

    let mut client = client.clone();
    client
        .logout(with_token(LogoutRequest {}, &first))
        .await
        .expect("logout");
    app.cryptlex().clear_requests();
    let signed_out = client
        .get_profile(with_token(GetProfileRequest {}, &first))
        .await;
    assert_eq!(
        reason(&signed_out.expect_err("signed out")),
        "TOKEN_INVALID"
    );
    page_view(&client, &second).await;
    assert!(
        app.cryptlex()
            .requests()
            .iter()
            .all(|request| request.path != "/v3/me/licenses"),
        "the other session's answers stay cached"
    );
}

#[tokio::test]
async fn the_cache_stays_within_its_byte_bound() {
    let app = spawn_app_with(
        // Thirty distinct pages for one session: more than its fair share of
        // a window, which is not what this test is about.
        options(&[
            ("LICENSING_GATEWAY__CACHE__MAX_BYTES", "4096"),
            (
                "LICENSING_GATEWAY__CRYPTLEX__BUDGET__PER_SESSION_READS",
                "1000",
            ),
        ])
        .many_users_on_one_address(),
    )
    .await;
    let token = app.demo_token().await;
    let mut client = app.user_client().await;
    for page_size in 1..=30 {
        client
            .list_my_licenses(with_token(
                ListMyLicensesRequest {
                    page_size,
                    ..Default::default()
                },
                &token,
            ))
            .await
            .expect("page");
    }
    let (status, metrics) = app.admin_get("/metrics").await;
    assert_eq!(status, 200);
    let gauge = |name: &str| -> f64 {
        metrics
            .lines()
            .filter(|line| line.starts_with(name))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let bytes = gauge("licensing_gateway_cache_bytes");
    assert!(bytes > 0.0 && bytes <= 4096.0, "{bytes} bytes cached");
    assert!(gauge("licensing_gateway_cache_evicted_total") > 0.0);
    assert!(gauge("licensing_gateway_cache_entries") < 30.0);
}

/// A gateway whose use cases the test holds, to apply changes as a webhook
/// or another replica would.
struct Direct {
    licensing: licensing_gateway::licensing::Licensing,
    sandbox: sandbox::Sandbox,
    client: UserServiceClient<Channel>,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn spawn_direct() -> Direct {
    install_crypto_provider();
    let dir = tempfile::tempdir().expect("temp dir");
    let env: HashMap<String, String> = [
        ("LICENSING_GATEWAY__PUBLIC__ADDR", "127.0.0.1:0"),
        ("LICENSING_GATEWAY__INTERNAL__ADDR", "127.0.0.1:0"),
        ("LICENSING_GATEWAY__ADMIN__ADDR", "127.0.0.1:0"),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value.to_owned()))
    .collect();
    let raw = RawSettings::load(None, &env).expect("settings");
    let args = SandboxArgs {
        dir: dir.path().to_path_buf(),
        cryptlex_addr: "127.0.0.1:0".parse().expect("addr"),
        no_rate_limit: true,
        webhooks: false,
        access_token_ttl: Duration::from_secs(900),
    };
    let sandbox = sandbox::prepare(&args, raw).await.expect("sandbox");
    let app = Application::build(sandbox.settings.clone())
        .await
        .expect("gateway");
    let licensing = app.licensing().clone();
    let addr = app.public_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    Direct {
        licensing,
        sandbox,
        client: UserServiceClient::new(channel),
        _dir: dir,
        _stop: stop,
    }
}

impl Direct {
    async fn login(&self, email: &str, password: &str) -> String {
        self.client
            .clone()
            .login(licensing_gateway::grpc::pb::LoginRequest {
                email: email.into(),
                password: password.into(),
                ..Default::default()
            })
            .await
            .expect("login")
            .into_inner()
            .session
            .expect("session")
            .access_token
    }

    fn upstream(&self) -> usize {
        self.sandbox.cryptlex.controls().requests().len()
    }
}

#[tokio::test]
async fn a_user_change_drops_exactly_that_users_answers_and_a_sign_out_change_drops_a_token_by_digest()
 {
    let app = spawn_direct().await;
    let demo = app.login(seed::DEMO_EMAIL, seed::DEMO_PASSWORD).await;
    let other = app.login(seed::OTHER_EMAIL, seed::OTHER_PASSWORD).await;
    page_view(&app.client, &demo).await;
    page_view(&app.client, &other).await;
    let controls = app.sandbox.cryptlex.controls();
    controls.clear_requests();

    let mut changes = app.licensing.subscribe_changes();
    let change = Change::User {
        user_id: CryptlexId::from_upstream(seed::DEMO_USER_ID.into()),
    };
    app.licensing.apply_change(&change, Origin::Elsewhere);
    assert!(
        changes.try_recv().is_err(),
        "a change from elsewhere is not relayed"
    );

    page_view(&app.client, &other).await;
    assert_eq!(app.upstream(), 0, "the other user's answers stay");
    page_view(&app.client, &demo).await;
    assert_eq!(
        app.upstream(),
        2,
        "the demo user's profile and page are fetched"
    );

    // A sign-out heard from another replica names the token by digest only.
    controls.clear_requests();
    let digest = hex::encode(Sha256::digest(other.as_bytes()));
    let signed_out = Change::SignedOut {
        token_digest: digest.clone(),
    };
    app.licensing.apply_change(&signed_out, Origin::Elsewhere);
    page_view(&app.client, &demo).await;
    assert_eq!(app.upstream(), 0);
    page_view(&app.client, &other).await;
    assert_eq!(app.upstream(), 2, "the token's answers were dropped");

    // A sign-out here is relayed to the other replicas, by digest.
    app.client
        .clone()
        .logout(with_token(LogoutRequest {}, &other))
        .await
        .expect("logout");
    let relayed = changes.try_recv().expect("relayed");
    assert_eq!(
        relayed,
        Change::SignedOut {
            token_digest: digest
        }
    );
}

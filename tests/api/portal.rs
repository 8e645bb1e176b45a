//! The customer-portal RPCs over gRPC against the sandbox: one license in
//! detail, its machines, deactivating one, and releases; isolation between
//! users, what reaches Cryptlex (and what never does), and the read cache's
//! freshness after a deactivation.

use std::time::Duration;

use chrono::Utc;
use cryptlex_sandbox::{AuthKind, FaultAction, FaultRule, LicenseChange, seed};
use licensing_gateway::grpc::pb::user_service_client::UserServiceClient;
use licensing_gateway::grpc::pb::{
    DeactivateMachineRequest, GetLicenseRequest, GetLicenseResponse, License, LicenseStatus,
    ListActivationsRequest, ListActivationsResponse, ListMyLicensesRequest, ListReleasesRequest,
    ListReleasesResponse, SignUpRequest,
};
use serde_json::{Value, json};
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::contract::{Contract, Direction, Variant};
use crate::helpers::{TestApp, TestOptions, captured_logs, spawn_app, spawn_app_with};
use crate::support::client::{assert_status, reason, with_token};
use crate::support::ledger::Backend;

/// A license id no one has.
const MADE_UP_ID: &str = "00000000-0000-4000-8000-0000000000aa";

/// Requests the sandbox received with this method and path since the
/// journal was last cleared.
fn upstream(app: &TestApp, method: &str, path: &str) -> usize {
    app.cryptlex()
        .requests()
        .iter()
        .filter(|request| request.method == method && request.path == path)
        .count()
}

fn license_path(license_id: &str) -> String {
    format!("/v3/me/licenses/{license_id}")
}

fn entitlements_path(license_id: &str) -> String {
    format!("/v3/me/licenses/{license_id}/feature-entitlements")
}

async fn get_license(
    client: &mut UserServiceClient<Channel>,
    token: &str,
    license_id: &str,
) -> Result<GetLicenseResponse, Status> {
    client
        .get_license(with_token(
            GetLicenseRequest {
                license_id: license_id.into(),
            },
            token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn license(
    client: &mut UserServiceClient<Channel>,
    token: &str,
    license_id: &str,
) -> License {
    get_license(client, token, license_id)
        .await
        .expect("the license")
        .license
        .expect("a license")
}

async fn list_activations(
    client: &mut UserServiceClient<Channel>,
    token: &str,
    license_id: &str,
    page_size: i32,
    page_token: &str,
) -> Result<ListActivationsResponse, Status> {
    client
        .list_activations(with_token(
            ListActivationsRequest {
                license_id: license_id.into(),
                page_size,
                page_token: page_token.into(),
            },
            token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn activation_ids(
    client: &mut UserServiceClient<Channel>,
    token: &str,
    license_id: &str,
) -> Vec<String> {
    list_activations(client, token, license_id, 0, "")
        .await
        .expect("activations")
        .activations
        .into_iter()
        .map(|activation| activation.id)
        .collect()
}

async fn deactivate(
    client: &mut UserServiceClient<Channel>,
    token: &str,
    activation_id: &str,
) -> Result<String, Status> {
    client
        .deactivate_machine(with_token(
            DeactivateMachineRequest {
                activation_id: activation_id.into(),
            },
            token,
        ))
        .await
        .map(|response| response.into_inner().license_id)
}

async fn list_releases(
    client: &mut UserServiceClient<Channel>,
    token: &str,
    request: ListReleasesRequest,
) -> Result<ListReleasesResponse, Status> {
    client
        .list_releases(with_token(request, token))
        .await
        .map(tonic::Response::into_inner)
}

fn release_ids(response: &ListReleasesResponse) -> Vec<&str> {
    response
        .releases
        .iter()
        .map(|release| release.id.as_str())
        .collect()
}

// === GetLicense ===

#[tokio::test]
async fn get_license_returns_the_callers_license_with_its_entitlements_counts_and_status() {
    let app = spawn_app().await;
    let token = app.demo_token().await;
    let mut client = app.user_client().await;

    let response = get_license(&mut client, &token, seed::DEMO_LICENSE_IDS[0])
        .await
        .expect("the demo user's license");

    let license = response.license.expect("a license");
    let record = app
        .cryptlex()
        .licenses()
        .into_iter()
        .find(|record| record.id == seed::DEMO_LICENSE_IDS[0])
        .expect("seeded");
    assert_eq!(license.id, seed::DEMO_LICENSE_IDS[0]);
    assert_eq!(license.key, record.key);
    assert_eq!(license.product_name, seed::PRODUCT_NAME);
    assert_eq!(
        (license.allowed_activations, license.total_activations),
        (3, 2)
    );
    assert_eq!(
        (license.allowed_deactivations, license.total_deactivations),
        (10, 0)
    );
    assert_eq!(license.status(), LicenseStatus::Active);
    assert!(license.expires_at.is_some());
    let mut features: Vec<(&str, &str, &str)> = response
        .feature_entitlements
        .iter()
        .map(|feature| {
            (
                feature.feature_id.as_str(),
                feature.feature_name.as_str(),
                feature.value.as_str(),
            )
        })
        .collect();
    features.sort_unstable();
    let mut expected = vec![
        (seed::FEATURE_IDS[0], "cloud-sync", ""),
        (seed::FEATURE_IDS[1], "seats", "5"),
    ];
    expected.sort_unstable();
    assert_eq!(features, expected);
    let seats = response
        .feature_entitlements
        .iter()
        .find(|feature| feature.feature_name == "seats")
        .expect("seats");
    assert!(seats.expires_at.is_some(), "seats expire with the license");

    // Both reads went out with the user's own token, and the next call is
    // answered from memory.
    let license_id = seed::DEMO_LICENSE_IDS[0];
    assert_eq!(upstream(&app, "GET", &license_path(license_id)), 1);
    assert_eq!(upstream(&app, "GET", &entitlements_path(license_id)), 1);
    let reads = app.cryptlex().requests();
    for request in reads
        .iter()
        .filter(|request| request.path.starts_with("/v3/me"))
    {
        assert!(
            matches!(&request.auth, AuthKind::User { email, .. } if email == seed::DEMO_EMAIL),
            "{} {}: {:?}",
            request.method,
            request.path,
            request.auth
        );
    }
    app.cryptlex().clear_requests();
    get_license(&mut client, &token, seed::DEMO_LICENSE_IDS[0])
        .await
        .expect("again");
    assert!(app.cryptlex().requests().is_empty(), "from the read cache");
}

#[tokio::test]
async fn another_users_license_and_a_made_up_one_are_the_same_not_found() {
    let app = spawn_app().await;
    let token = app.demo_token().await;
    let mut client = app.user_client().await;

    let foreign = get_license(&mut client, &token, seed::OTHER_LICENSE_ID).await;
    let made_up = get_license(&mut client, &token, MADE_UP_ID).await;

    let foreign = assert_status(foreign, Code::NotFound, "NOT_FOUND");
    let made_up = assert_status(made_up, Code::NotFound, "NOT_FOUND");
    assert_eq!(foreign.message(), made_up.message());
    assert_eq!(foreign.message(), "license not found");
    // The other user still sees their own.
    let other = app
        .login(seed::OTHER_EMAIL, seed::OTHER_PASSWORD)
        .await
        .access_token;
    let theirs = license(&mut client, &other, seed::OTHER_LICENSE_ID).await;
    assert_eq!(theirs.id, seed::OTHER_LICENSE_ID);
    assert_status(
        get_license(&mut client, &other, seed::DEMO_LICENSE_IDS[0]).await,
        Code::NotFound,
        "NOT_FOUND",
    );
}

#[tokio::test]
async fn suspended_and_expired_licenses_show_their_status_in_detail_and_in_the_list() {
    let app = spawn_app().await;
    let token = app.demo_token().await;
    let mut client = app.user_client().await;
    app.cryptlex()
        .update_license(
            seed::DEMO_LICENSE_IDS[0],
            LicenseChange {
                suspended: Some(true),
                ..LicenseChange::default()
            },
        )
        .expect("seeded license");
    app.cryptlex()
        .set_license_expiry(
            seed::DEMO_LICENSE_IDS[1],
            Some(Utc::now() - chrono::TimeDelta::days(1)),
        )
        .expect("seeded license");

    let suspended = license(&mut client, &token, seed::DEMO_LICENSE_IDS[0]).await;
    let expired = license(&mut client, &token, seed::DEMO_LICENSE_IDS[1]).await;

    assert_eq!(suspended.status(), LicenseStatus::Suspended);
    assert!(suspended.suspended);
    assert_eq!(expired.status(), LicenseStatus::Expired);
    let listed = client
        .list_my_licenses(with_token(ListMyLicensesRequest::default(), &token))
        .await
        .expect("licenses")
        .into_inner()
        .licenses;
    let statuses: Vec<LicenseStatus> = listed.iter().map(License::status).collect();
    assert_eq!(statuses, [LicenseStatus::Suspended, LicenseStatus::Expired]);
}

// === ListActivations ===

#[tokio::test]
async fn list_activations_pages_through_a_licenses_machines_with_what_a_person_reads() {
    let app = spawn_app().await;
    let token = app.demo_token().await;
    let mut client = app.user_client().await;

    let mut seen = Vec::new();
    let mut page_token = String::new();
    for page in 1.. {
        let response = list_activations(
            &mut client,
            &token,
            seed::DEMO_LICENSE_IDS[0],
            1,
            &page_token,
        )
        .await
        .expect("a page");
        assert_eq!(response.activations.len(), 1, "page {page}");
        seen.extend(response.activations);
        page_token = response.next_page_token;
        if page_token.is_empty() {
            break;
        }
        assert!(page < 5, "pagination must end");
    }

    let ids: Vec<&str> = seen
        .iter()
        .map(|activation| activation.id.as_str())
        .collect();
    assert_eq!(ids, seed::DEMO_ACTIVATION_IDS[..2]);
    let records = app.cryptlex().activations();
    for activation in &seen {
        let record = records
            .iter()
            .find(|record| record.id == activation.id)
            .expect("a sandbox activation");
        assert_eq!(activation.license_id, seed::DEMO_LICENSE_IDS[0]);
        assert_eq!(activation.hostname, record.hostname);
        assert_eq!(activation.os, record.os);
        assert_eq!(
            activation.os_version,
            record.os_version.clone().unwrap_or_default()
        );
        assert_eq!(
            activation.vm_name,
            record.vm_name.clone().unwrap_or_default()
        );
        assert_eq!(
            activation.app_version,
            record.app_version.clone().unwrap_or_default()
        );
        assert_eq!(
            activation.release_version,
            record.release_version.clone().unwrap_or_default()
        );
        let place = &record.location;
        for part in [&place.city, &place.country_name].into_iter().flatten() {
            assert!(
                activation.location.contains(part.as_str()),
                "{activation:?}"
            );
        }
        assert!(
            !activation.location.contains(&place.ip_address),
            "the address is never shown"
        );
        assert_eq!(
            activation.country_code,
            place
                .country_code
                .clone()
                .unwrap_or_default()
                .to_uppercase()
        );
        assert_eq!(
            activation.last_synced_at.map(|at| at.seconds),
            Some(record.last_synced_at.timestamp())
        );
        assert_eq!(
            activation.created_at.map(|at| at.seconds),
            Some(record.created_at.timestamp())
        );
    }
    // One page of the default size holds both and says there is no more.
    let all = list_activations(&mut client, &token, seed::DEMO_LICENSE_IDS[0], 0, "")
        .await
        .expect("a page");
    assert_eq!(all.activations.len(), 2);
    assert!(all.next_page_token.is_empty());
    assert_eq!(
        activation_ids(&mut client, &token, seed::DEMO_LICENSE_IDS[1]).await,
        [seed::LIMITED_ACTIVATION_ID]
    );
}

#[tokio::test]
async fn list_activations_of_a_license_that_is_not_the_callers_is_not_found_not_empty() {
    let app = spawn_app().await;
    let token = app.demo_token().await;
    let mut client = app.user_client().await;

    let foreign = list_activations(&mut client, &token, seed::OTHER_LICENSE_ID, 0, "").await;
    let made_up = list_activations(&mut client, &token, MADE_UP_ID, 0, "").await;

    assert_status(foreign, Code::NotFound, "NOT_FOUND");
    assert_status(made_up, Code::NotFound, "NOT_FOUND");
    assert_eq!(
        upstream(&app, "GET", "/v3/me/activations"),
        0,
        "nothing is listed for a license that is not theirs"
    );
}

#[tokio::test]
async fn a_page_token_is_refused_for_another_license_or_page_size_without_an_upstream_call() {
    let app = spawn_app().await;
    let token = app.demo_token().await;
    let mut client = app.user_client().await;
    let first = list_activations(&mut client, &token, seed::DEMO_LICENSE_IDS[0], 1, "")
        .await
        .expect("a page");
    assert!(!first.next_page_token.is_empty());
    app.cryptlex().clear_requests();

    let other_license = list_activations(
        &mut client,
        &token,
        seed::DEMO_LICENSE_IDS[1],
        1,
        &first.next_page_token,
    )
    .await;
    let other_size = list_activations(
        &mut client,
        &token,
        seed::DEMO_LICENSE_IDS[0],
        2,
        &first.next_page_token,
    )
    .await;
    let licenses_token = client
        .list_my_licenses(with_token(
            ListMyLicensesRequest {
                page_size: 1,
                ..Default::default()
            },
            &token,
        ))
        .await
        .expect("licenses")
        .into_inner()
        .next_page_token;
    app.cryptlex().clear_requests();
    let another_lists_token = list_activations(
        &mut client,
        &token,
        seed::DEMO_LICENSE_IDS[0],
        1,
        &licenses_token,
    )
    .await;

    for refused in [other_license, other_size, another_lists_token] {
        assert_status(refused, Code::InvalidArgument, "INVALID_ARGUMENT");
    }
    assert!(app.cryptlex().requests().is_empty());
}

// === DeactivateMachine ===

#[tokio::test]
async fn deactivating_a_machine_frees_its_activation_and_the_next_reads_are_fresh() {
    // Arrange: the license page as a browser shows it, cached.
    let app = spawn_app().await;
    let token = app.demo_token().await;
    let mut client = app.user_client().await;
    let license_id = seed::DEMO_LICENSE_IDS[0];
    let machine = seed::DEMO_ACTIVATION_IDS[0];
    let before = license(&mut client, &token, license_id).await;
    assert_eq!(
        activation_ids(&mut client, &token, license_id).await.len(),
        2
    );
    client
        .list_my_licenses(with_token(ListMyLicensesRequest::default(), &token))
        .await
        .expect("licenses");
    app.cryptlex().clear_requests();

    // Act
    let freed_on = deactivate(&mut client, &token, machine)
        .await
        .expect("deactivated");

    // Assert: ownership with the user's token, then the delete with none.
    assert_eq!(freed_on, license_id);
    let requests = app.cryptlex().requests();
    let sent: Vec<(&str, &str)> = requests
        .iter()
        .map(|request| (request.method.as_str(), request.path.as_str()))
        .collect();
    let check = format!("/v3/me/activations/{machine}");
    let delete = format!("/v3/activations/{machine}");
    assert_eq!(sent, [("GET", check.as_str()), ("DELETE", delete.as_str())]);
    assert!(matches!(&requests[0].auth, AuthKind::User { email, .. } if email == seed::DEMO_EMAIL));
    assert_eq!(
        requests[1].auth,
        AuthKind::None,
        "the delete carries no token"
    );
    assert_eq!(requests[1].status, Some(204));
    assert!(
        !app.cryptlex()
            .activations()
            .iter()
            .any(|record| record.id == machine)
    );

    // The next reads show it, each with exactly one fresh upstream read.
    app.cryptlex().clear_requests();
    let machines = activation_ids(&mut client, &token, license_id).await;
    let after = license(&mut client, &token, license_id).await;
    let listed = client
        .list_my_licenses(with_token(ListMyLicensesRequest::default(), &token))
        .await
        .expect("licenses")
        .into_inner()
        .licenses;
    assert_eq!(machines, [seed::DEMO_ACTIVATION_IDS[1]]);
    assert_eq!(
        (after.total_activations, after.total_deactivations),
        (before.total_activations - 1, before.total_deactivations + 1)
    );
    let in_list = listed
        .iter()
        .find(|listed| listed.id == license_id)
        .expect("listed");
    assert_eq!(in_list.total_activations, after.total_activations);
    assert_eq!(upstream(&app, "GET", &license_path(license_id)), 1);
    assert_eq!(upstream(&app, "GET", &entitlements_path(license_id)), 1);
    assert_eq!(upstream(&app, "GET", "/v3/me/activations"), 1);
    assert_eq!(upstream(&app, "GET", "/v3/me/licenses"), 1);
    assert_eq!(app.cryptlex().requests().len(), 4);
    // And then they are cached again.
    activation_ids(&mut client, &token, license_id).await;
    license(&mut client, &token, license_id).await;
    assert_eq!(app.cryptlex().requests().len(), 4);

    // The same machine again: it is gone.
    assert_status(
        deactivate(&mut client, &token, machine).await,
        Code::NotFound,
        "NOT_FOUND",
    );
}

#[tokio::test]
async fn a_user_can_never_deactivate_another_users_machine() {
    let app = spawn_app().await;
    let token = app.demo_token().await;
    let mut client = app.user_client().await;
    let licenses_before = app.cryptlex().licenses();

    let foreign = deactivate(&mut client, &token, seed::OTHER_ACTIVATION_ID).await;
    let made_up = deactivate(&mut client, &token, MADE_UP_ID).await;

    let foreign = assert_status(foreign, Code::NotFound, "NOT_FOUND");
    let made_up = assert_status(made_up, Code::NotFound, "NOT_FOUND");
    assert_eq!(foreign.message(), "activation not found");
    assert_eq!(foreign.message(), made_up.message());
    assert!(
        app.cryptlex()
            .activations()
            .iter()
            .any(|record| record.id == seed::OTHER_ACTIVATION_ID),
        "the other user's machine is untouched"
    );
    assert_eq!(app.cryptlex().licenses(), licenses_before);
    let requests = app.cryptlex().requests();
    assert!(
        requests.iter().all(|request| request.method != "DELETE"),
        "no delete reached the sandbox"
    );
    assert!(requests.iter().all(|request| request.auth != AuthKind::Pat));
}

#[tokio::test]
async fn a_license_whose_deactivations_are_used_up_refuses_and_nothing_changes() {
    let app = spawn_app().await;
    let token = app.demo_token().await;
    let mut client = app.user_client().await;
    let license_id = seed::DEMO_LICENSE_IDS[1];
    let before = license(&mut client, &token, license_id).await;
    assert_eq!(before.allowed_deactivations, before.total_deactivations);
    let record = |app: &TestApp| {
        app.cryptlex()
            .licenses()
            .into_iter()
            .find(|record| record.id == license_id)
            .expect("seeded")
    };
    let upstream_before = record(&app);

    let refused = deactivate(&mut client, &token, seed::LIMITED_ACTIVATION_ID).await;

    let status = assert_status(
        refused,
        Code::FailedPrecondition,
        "DEACTIVATION_LIMIT_REACHED",
    );
    assert_eq!(
        status.message(),
        "this license has used all its allowed deactivations"
    );
    assert!(
        app.cryptlex()
            .activations()
            .iter()
            .any(|record| record.id == seed::LIMITED_ACTIVATION_ID)
    );
    assert_eq!(
        activation_ids(&mut client, &token, license_id).await,
        [seed::LIMITED_ACTIVATION_ID]
    );
    assert_eq!(
        record(&app),
        upstream_before,
        "the sandbox's license is unchanged"
    );
    let after = license(&mut client, &token, license_id).await;
    assert_eq!(after, before);
}

#[tokio::test]
async fn a_deactivation_through_one_replica_is_fresh_on_the_others_next_reads() {
    // Caches that would keep answers ten minutes: only the relayed change
    // can make replica B read again.
    let mut options = Backend::Postgres.options();
    options
        .env
        .push(("LICENSING_GATEWAY__CACHE__TTL".into(), "10m".into()));
    let app = spawn_app_with(options).await;
    let replica = app.spawn_replica().await;
    let token = app.demo_token().await;
    let mut on_a = app.user_client().await;
    let mut on_b = replica.user_client().await;
    let license_id = seed::DEMO_LICENSE_IDS[0];
    assert_eq!(activation_ids(&mut on_b, &token, license_id).await.len(), 2);
    let before = license(&mut on_b, &token, license_id).await;

    deactivate(&mut on_a, &token, seed::DEMO_ACTIVATION_IDS[1])
        .await
        .expect("deactivated through A");
    tokio::time::sleep(Duration::from_millis(500)).await;

    assert_eq!(
        activation_ids(&mut on_b, &token, license_id).await,
        [seed::DEMO_ACTIVATION_IDS[0]]
    );
    let after = license(&mut on_b, &token, license_id).await;
    assert_eq!(after.total_activations, before.total_activations - 1);
    replica.stop().await;
}

// === ListReleases ===

#[tokio::test]
async fn list_releases_lists_the_users_releases_newest_first_with_download_links() {
    let app = spawn_app().await;
    let token = app.demo_token().await;
    let mut client = app.user_client().await;

    let all = list_releases(&mut client, &token, ListReleasesRequest::default())
        .await
        .expect("releases");

    assert_eq!(release_ids(&all), seed::RELEASE_IDS);
    assert!(all.next_page_token.is_empty());
    for release in &all.releases {
        assert_eq!(release.product_name, seed::PRODUCT_NAME);
        assert!(!release.version.is_empty() && !release.channel.is_empty());
        assert!(release.published_at.is_some());
        assert!(!release.platforms.is_empty());
        assert!(!release.files.is_empty(), "{release:?}");
        for file in &release.files {
            assert!(file.url.starts_with("https://"), "{file:?}");
            assert!(file.size > 0 && !file.name.is_empty() && !file.extension.is_empty());
        }
    }
    let channels: Vec<&str> = all
        .releases
        .iter()
        .map(|release| release.channel.as_str())
        .collect();
    assert_eq!(channels, ["beta", "stable", "stable"]);
    assert!(!release_ids(&all).contains(&seed::DRAFT_RELEASE_ID));
}

#[tokio::test]
async fn list_releases_filters_by_product_upstream_and_by_channel_in_the_gateway() {
    let app = spawn_app().await;
    let token = app.demo_token().await;
    let mut client = app.user_client().await;
    let filtered = |product_name: &str, channel: &str| ListReleasesRequest {
        product_name: product_name.into(),
        channel: channel.into(),
        ..Default::default()
    };

    let of_product = list_releases(&mut client, &token, filtered(seed::PRODUCT_NAME, ""))
        .await
        .expect("releases");
    let of_nothing = list_releases(&mut client, &token, filtered("No Such Product", ""))
        .await
        .expect("releases");
    let stable = list_releases(&mut client, &token, filtered("", "stable"))
        .await
        .expect("releases");
    let beta = list_releases(&mut client, &token, filtered(seed::PRODUCT_NAME, "beta"))
        .await
        .expect("releases");
    let no_channel = list_releases(&mut client, &token, filtered("", "nightly"))
        .await
        .expect("releases");

    assert_eq!(release_ids(&of_product), seed::RELEASE_IDS);
    assert!(of_nothing.releases.is_empty() && of_nothing.next_page_token.is_empty());
    assert_eq!(release_ids(&stable), seed::RELEASE_IDS[1..]);
    assert_eq!(release_ids(&beta), seed::RELEASE_IDS[..1]);
    assert!(no_channel.releases.is_empty());
    // The product went to Cryptlex as its filter; the channel did not.
    let queries: Vec<String> = app
        .cryptlex()
        .requests()
        .iter()
        .filter(|request| request.path == "/v3/me/releases")
        .map(|request| request.query.clone().unwrap_or_default())
        .collect();
    assert!(
        queries
            .iter()
            .any(|query| query.contains("product.displayName%5Beq%5D=No+Such+Product")),
        "{queries:?}"
    );
    assert!(queries.iter().all(|query| !query.contains("channel")));
}

#[tokio::test]
async fn a_channel_filtered_page_may_be_short_and_still_lead_to_the_next() {
    let app = spawn_app().await;
    let token = app.demo_token().await;
    let mut client = app.user_client().await;

    let mut pages = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = list_releases(
            &mut client,
            &token,
            ListReleasesRequest {
                channel: "stable".into(),
                page_size: 1,
                page_token: page_token.clone(),
                ..Default::default()
            },
        )
        .await
        .expect("a page");
        pages.push(
            release_ids(&page)
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>(),
        );
        page_token = page.next_page_token;
        if page_token.is_empty() {
            break;
        }
        assert!(pages.len() < 10, "pagination must end");
    }

    // Newest first: the beta release fills Cryptlex's first page.
    assert_eq!(
        pages,
        [
            vec![],
            vec![seed::RELEASE_IDS[1].to_owned()],
            vec![seed::RELEASE_IDS[2].to_owned()]
        ]
    );
}

// === isolation, validation, credentials, logs ===

#[tokio::test]
async fn a_user_without_licenses_sees_no_license_machine_or_release_of_anyone() {
    let app = spawn_app().await;
    let mut client = app.user_client().await;
    let stranger = client
        .sign_up(SignUpRequest {
            email: "stranger@example.com".into(),
            password: "a long enough password".into(),
            first_name: "Stranger".into(),
            ..Default::default()
        })
        .await
        .expect("signed up")
        .into_inner()
        .session
        .expect("a session")
        .access_token;

    let releases = list_releases(&mut client, &stranger, ListReleasesRequest::default())
        .await
        .expect("releases");
    assert!(releases.releases.is_empty());
    for license_id in [seed::DEMO_LICENSE_IDS[0], seed::OTHER_LICENSE_ID] {
        assert_status(
            get_license(&mut client, &stranger, license_id).await,
            Code::NotFound,
            "NOT_FOUND",
        );
        assert_status(
            list_activations(&mut client, &stranger, license_id, 0, "").await,
            Code::NotFound,
            "NOT_FOUND",
        );
    }
    for machine in [seed::DEMO_ACTIVATION_IDS[0], seed::OTHER_ACTIVATION_ID] {
        assert_status(
            deactivate(&mut client, &stranger, machine).await,
            Code::NotFound,
            "NOT_FOUND",
        );
    }
    assert_eq!(app.cryptlex().activations().len(), 4, "nothing was deleted");
}

#[tokio::test]
async fn invalid_portal_requests_are_invalid_argument_and_never_reach_upstream() {
    let app = spawn_app().await;
    let token = app.demo_token().await;
    let mut client = app.user_client().await;
    app.cryptlex().clear_requests();
    let too_long = "x".repeat(257);

    let mut refused: Vec<(&str, Status)> = Vec::new();
    for license_id in ["", "../licenses", "a b", &too_long] {
        refused.push((
            "GetLicense",
            get_license(&mut client, &token, license_id)
                .await
                .expect_err("refused"),
        ));
    }
    for (license_id, page_size, page_token) in [
        ("", 0, ""),
        (seed::DEMO_LICENSE_IDS[0], -1, ""),
        (seed::DEMO_LICENSE_IDS[0], 0, "garbage"),
        ("%2e%2e", 0, ""),
    ] {
        refused.push((
            "ListActivations",
            list_activations(&mut client, &token, license_id, page_size, page_token)
                .await
                .expect_err("refused"),
        ));
    }
    for activation_id in ["", "a/b", &too_long] {
        refused.push((
            "DeactivateMachine",
            deactivate(&mut client, &token, activation_id)
                .await
                .expect_err("refused"),
        ));
    }
    for request in [
        ListReleasesRequest {
            product_name: too_long.clone(),
            ..Default::default()
        },
        ListReleasesRequest {
            channel: "be\u{7}ta".into(),
            ..Default::default()
        },
        ListReleasesRequest {
            page_size: -5,
            ..Default::default()
        },
        ListReleasesRequest {
            page_token: "garbage".into(),
            ..Default::default()
        },
    ] {
        refused.push((
            "ListReleases",
            list_releases(&mut client, &token, request)
                .await
                .expect_err("refused"),
        ));
    }

    for (rpc, status) in &refused {
        assert_eq!(status.code(), Code::InvalidArgument, "{rpc}: {status:?}");
        assert_eq!(reason(status), "INVALID_ARGUMENT", "{rpc}");
    }
    assert!(
        app.cryptlex().requests().is_empty(),
        "nothing sent upstream"
    );
}

#[tokio::test]
async fn portal_calls_without_a_token_are_unauthenticated_without_an_upstream_call() {
    let app = spawn_app().await;
    let mut client = app.user_client().await;
    app.cryptlex().clear_requests();

    let results = [
        client
            .get_license(GetLicenseRequest {
                license_id: seed::DEMO_LICENSE_IDS[0].into(),
            })
            .await
            .map(drop),
        client
            .list_activations(ListActivationsRequest {
                license_id: seed::DEMO_LICENSE_IDS[0].into(),
                ..Default::default()
            })
            .await
            .map(drop),
        client
            .deactivate_machine(DeactivateMachineRequest {
                activation_id: seed::DEMO_ACTIVATION_IDS[0].into(),
            })
            .await
            .map(drop),
        client
            .list_releases(ListReleasesRequest::default())
            .await
            .map(drop),
    ];

    for result in results {
        assert_status(result, Code::Unauthenticated, "TOKEN_MISSING");
    }
    assert!(app.cryptlex().requests().is_empty());
    assert_eq!(app.cryptlex().activations().len(), 4);
}

#[tokio::test]
async fn neither_the_token_nor_a_machines_address_reaches_the_logs() {
    let logs = captured_logs();
    let app = spawn_app().await;
    let token = app.demo_token().await;
    let mut client = app.user_client().await;

    license(&mut client, &token, seed::DEMO_LICENSE_IDS[0]).await;
    activation_ids(&mut client, &token, seed::DEMO_LICENSE_IDS[0]).await;
    deactivate(&mut client, &token, seed::DEMO_ACTIVATION_IDS[0])
        .await
        .expect("deactivated");
    let _ = deactivate(&mut client, &token, seed::LIMITED_ACTIVATION_ID).await;
    list_releases(&mut client, &token, ListReleasesRequest::default())
        .await
        .expect("releases");

    let log_text = logs.lines().join("\n");
    assert!(
        log_text.contains(seed::DEMO_ACTIVATION_IDS[0]),
        "the deactivation was logged"
    );
    assert!(!log_text.contains(&token), "the access token in the logs");
    for record in app.cryptlex().activations() {
        assert!(
            !log_text.contains(&record.location.ip_address),
            "a machine's address in the logs"
        );
    }
}

// === every answer S1 allows, not only the sandbox's ===

/// The item schema of a list answer of `method path`, or the answer's
/// schema.
fn answer_schema(method: &str, path: &str) -> Value {
    let contract = Contract::shared();
    let operation = contract.operation(method, path).expect("in the contract");
    let schema = contract
        .response_schema(operation, 200)
        .expect("declared")
        .expect("with a body")
        .clone();
    schema.get("items").cloned().unwrap_or(schema)
}

/// `schema`'s S1-valid examples: required fields only, every nullable one
/// `null`, and that with a field a later Cryptlex might add.
fn s1_variants(schema: &Value) -> Vec<Value> {
    let contract = Contract::shared();
    let minimal = contract.example(schema, Variant::Minimal);
    let nulls = contract.example(schema, Variant::Nulls);
    let mut newer = nulls.clone();
    newer["addedInALaterRelease"] = json!({"nested": [1, 2]});
    for variant in [&minimal, &nulls] {
        let errors = contract.validate(variant, schema, Direction::Response);
        assert!(errors.is_empty(), "the example is S1-valid: {errors:?}");
    }
    vec![minimal, nulls, newer]
}

/// Has the sandbox answer the next `GET path...` with `body`.
fn answer_once(app: &TestApp, path: &str, body: &Value) {
    app.cryptlex()
        .add_fault(
            FaultRule::once(FaultAction::json(200, body))
                .method(http::Method::GET)
                .path_prefix(path),
        )
        .expect("a valid rule");
}

#[tokio::test]
async fn the_portal_reads_accept_every_answer_s1_allows() {
    // Arrange: no cache, so each call reads what the sandbox is told to say.
    let app = spawn_app_with(TestOptions {
        env: vec![("LICENSING_GATEWAY__CACHE__TTL".into(), "0s".into())],
        ..TestOptions::default()
    })
    .await;
    let token = app.demo_token().await;
    let mut client = app.user_client().await;
    let license_id = seed::DEMO_LICENSE_IDS[0];
    let licenses = s1_variants(&answer_schema("GET", &license_path(license_id)));
    let entitlements = s1_variants(&answer_schema("GET", &entitlements_path(license_id)));
    let with_license = |mut activation: Value| {
        activation["licenseId"] = license_id.into();
        activation
    };
    let activations: Vec<Value> = s1_variants(&answer_schema("GET", "/v3/me/activations"))
        .into_iter()
        .map(with_license)
        .collect();
    let releases = s1_variants(&answer_schema("GET", "/v3/me/releases"));

    // Act and assert: each license shape, with every entitlement shape (the
    // more specific rule first: rules are tried in order).
    for shape in &licenses {
        answer_once(&app, &entitlements_path(license_id), &json!(entitlements));
        answer_once(&app, &license_path(license_id), shape);
        let detail = get_license(&mut client, &token, license_id)
            .await
            .expect("every license and entitlement shape decodes");
        assert_eq!(detail.feature_entitlements.len(), 3);
    }
    answer_once(&app, "/v3/me/activations", &json!(activations));
    let listed = list_activations(&mut client, &token, license_id, 0, "")
        .await
        .expect("every activation shape decodes");
    assert_eq!(listed.activations.len(), 3);
    let address = activations[0]["location"]["ipAddress"]
        .as_str()
        .expect("ipAddress is required");
    assert!(
        listed
            .activations
            .iter()
            .all(|activation| activation.location.is_empty()
                || !activation.location.contains(address)),
        "the address is never part of the place"
    );
    answer_once(&app, "/v3/me/releases", &json!(releases));
    let listed = list_releases(&mut client, &token, ListReleasesRequest::default())
        .await
        .expect("every release shape decodes");
    assert_eq!(listed.releases.len(), 3);
    answer_once(&app, "/v3/me/releases", &json!([]));
    let none = list_releases(&mut client, &token, ListReleasesRequest::default())
        .await
        .expect("an empty list decodes");
    assert!(none.releases.is_empty() && none.next_page_token.is_empty());

    // The ownership check reads a minimal activation of the user's.
    let machine = seed::DEMO_ACTIVATION_IDS[0];
    let minimal = Contract::shared().example(
        &answer_schema("GET", &format!("/v3/me/activations/{machine}")),
        Variant::Minimal,
    );
    answer_once(
        &app,
        &format!("/v3/me/activations/{machine}"),
        &with_license(minimal),
    );
    assert_eq!(
        deactivate(&mut client, &token, machine)
            .await
            .expect("deactivated"),
        license_id
    );
}

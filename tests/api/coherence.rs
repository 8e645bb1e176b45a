//! Coherence with changes made outside the gateway, end to end: the sandbox
//! Cryptlex sends its webhooks to the gateway (as `licensing-gateway sandbox`
//! registers them), so a license revoked or suspended through the sandbox's
//! controls, as Cryptlex's dashboard would, shows on the user's next read,
//! with no upstream call spent before the webhook arrived.

use std::time::Duration;

use cryptlex_sandbox::{DeliveryStatus, LicenseChange, seed};
use licensing_gateway::grpc::pb::ListMyLicensesRequest;
use licensing_gateway::grpc::pb::user_service_client::UserServiceClient;
use tonic::transport::Channel;

use crate::helpers::{TestApp, TestOptions, spawn_app_with};
use crate::support::client::with_token;

fn with_webhooks() -> TestOptions {
    let mut options = TestOptions {
        webhooks: true,
        ..TestOptions::default()
    };
    // Long enough that nothing but a change can refresh an answer in the test.
    options
        .env
        .push(("LICENSING_GATEWAY__CACHE__FRESH_FOR".into(), "10m".into()));
    options
        .env
        .push(("LICENSING_GATEWAY__CACHE__MAX_AGE".into(), "10m".into()));
    options
}

async fn license_flags(client: &UserServiceClient<Channel>, token: &str, id: &str) -> (bool, bool) {
    let page = client
        .clone()
        .list_my_licenses(with_token(ListMyLicensesRequest::default(), token))
        .await
        .expect("licenses")
        .into_inner();
    let license = page
        .licenses
        .iter()
        .find(|license| license.id == id)
        .expect("the license is listed");
    (license.revoked, license.suspended)
}

fn license_page_reads(app: &TestApp) -> usize {
    app.cryptlex()
        .requests()
        .iter()
        .filter(|request| request.path == "/v3/me/licenses")
        .count()
}

/// Waits until every `license.updated` delivery so far has succeeded.
async fn delivered(app: &TestApp, updates: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let deliveries = app.cryptlex().webhook_deliveries();
        let succeeded = deliveries
            .iter()
            .filter(|delivery| {
                delivery.event == "license.updated" && delivery.status == DeliveryStatus::Succeeded
            })
            .count();
        if succeeded >= updates {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the webhook was not delivered: {deliveries:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_license_revoked_in_the_dashboard_shows_revoked_on_the_next_read_after_its_webhook() {
    // Arrange: the user's license page is cached.
    let app = spawn_app_with(with_webhooks()).await;
    let token = app.demo_token().await;
    let client = app.user_client().await;
    let license = seed::DEMO_LICENSE_IDS[0];
    assert_eq!(
        license_flags(&client, &token, license).await,
        (false, false)
    );
    app.cryptlex().clear_requests();

    // Act: revoked as the dashboard would; reads before the webhook lands
    // are answered from memory, reads after it see the change.
    app.cryptlex()
        .update_license(
            license,
            LicenseChange {
                revoked: Some(true),
                suspended: None,
            },
        )
        .expect("the license exists");
    delivered(&app, 1).await;
    let after = license_flags(&client, &token, license).await;
    let again = license_flags(&client, &token, license).await;

    // Assert
    assert_eq!(after, (true, false), "the next read shows it revoked");
    assert_eq!(again, after);
    assert_eq!(
        license_page_reads(&app),
        1,
        "one re-fetch after the webhook, nothing spent polling"
    );
}

#[tokio::test]
async fn a_suspension_of_one_users_license_leaves_another_users_cached_page_alone() {
    // Arrange: both users' pages are cached.
    let app = spawn_app_with(with_webhooks()).await;
    let demo = app.demo_token().await;
    let other = app
        .login(seed::OTHER_EMAIL, seed::OTHER_PASSWORD)
        .await
        .access_token;
    let client = app.user_client().await;
    license_flags(&client, &demo, seed::DEMO_LICENSE_IDS[1]).await;
    license_flags(&client, &other, seed::OTHER_LICENSE_ID).await;
    app.cryptlex().clear_requests();

    // Act
    app.cryptlex()
        .update_license(
            seed::OTHER_LICENSE_ID,
            LicenseChange {
                revoked: None,
                suspended: Some(true),
            },
        )
        .expect("the license exists");
    delivered(&app, 1).await;
    let demo_after = license_flags(&client, &demo, seed::DEMO_LICENSE_IDS[1]).await;
    let other_after = license_flags(&client, &other, seed::OTHER_LICENSE_ID).await;

    // Assert: only the holder's page went upstream again.
    assert_eq!(demo_after, (false, false));
    assert_eq!(other_after, (false, true), "the holder sees it suspended");
    assert_eq!(
        license_page_reads(&app),
        1,
        "the other user's page stayed cached"
    );
}

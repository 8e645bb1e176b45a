//! `IssuanceService` over mutual TLS: the website flow end to end.

use licensing_gateway::grpc::pb::issue_license_request::User;
use licensing_gateway::grpc::pb::{IssueLicenseRequest, ListMyLicensesRequest};
use licensing_gateway::sandbox::seed;

use crate::helpers::{spawn_app, with_token};

fn issue_for_demo(request_id: &str) -> IssueLicenseRequest {
    IssueLicenseRequest {
        request_id: request_id.into(),
        user: Some(User::UserEmail(seed::DEMO_EMAIL.into())),
        ..Default::default()
    }
}

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
    let channel = app.internal_channel(None).await;
    let result = match channel {
        Err(_) => Err(()),
        Ok(channel) => {
            licensing_gateway::grpc::pb::issuance_service_client::IssuanceServiceClient::new(
                channel,
            )
            .issue_license(issue_for_demo("payment-2"))
            .await
            .map(|_| ())
            .map_err(|_| ())
        }
    };
    assert!(
        result.is_err(),
        "a call without a client certificate must fail"
    );
    assert_eq!(
        app.cryptlex().license_count(),
        3,
        "only the seeded licenses"
    );
}

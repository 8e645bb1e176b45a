//! Issuing licenses and checking the answers: the exactly-once tests of both binaries send
//! the same requests and accept the same answers, whether the gateway runs in the test
//! process or as child processes.

use std::time::Duration;

use cryptlex_sandbox::{Controls, seed};
use licensing_gateway::grpc::pb::issuance_service_client::IssuanceServiceClient;
use licensing_gateway::grpc::pb::issue_license_request::User;
use licensing_gateway::grpc::pb::{IssueLicenseRequest, IssueLicenseResponse, IssuedLicense};
use tokio::task::JoinSet;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use super::client::reason;

/// The metadata key carrying the request id on every issued license (the default setting).
pub const REQUEST_ID_KEY: &str = "licensing_gateway_request_id";

/// An `IssueLicense` request for the seeded demo user, by email, for the default product.
pub fn issue_for_demo(request_id: &str) -> IssueLicenseRequest {
    IssueLicenseRequest {
        request_id: request_id.into(),
        user: Some(User::UserEmail(seed::DEMO_EMAIL.into())),
        ..Default::default()
    }
}

/// How many `POST /v3/licenses` the sandbox has received.
pub fn license_posts(cryptlex: &Controls) -> usize {
    cryptlex
        .requests()
        .iter()
        .filter(|request| request.method == "POST" && request.path == "/v3/licenses")
        .count()
}

/// The `RetryInfo` delay of a status, which must carry one.
#[track_caller]
pub fn retry_delay(status: &Status) -> Duration {
    let delay = status
        .get_details_retry_info()
        .unwrap_or_else(|| panic!("no RetryInfo on {status:?}"))
        .retry_delay
        .unwrap_or_else(|| panic!("RetryInfo without a delay on {status:?}"));
    assert!(!delay.is_zero(), "a zero retry delay on {status:?}");
    delay
}

/// Checks one answer to a burst of identical calls: the license, or ABORTED with RetryInfo.
/// Returns the license and whether it was replayed, or `None` for ABORTED.
#[track_caller]
pub fn license_or_in_progress(
    result: Result<IssueLicenseResponse, Status>,
) -> Option<(IssuedLicense, bool)> {
    match result {
        Ok(response) => Some((response.license.expect("a license"), response.replayed)),
        Err(status) => {
            assert_eq!(
                status.code(),
                Code::Aborted,
                "unexpected status: {status:?}"
            );
            assert_eq!(reason(&status), "REQUEST_IN_PROGRESS");
            retry_delay(&status);
            None
        }
    }
}

/// Issues `request` on `calls` concurrent tasks spread over `channels` connections, and
/// returns every answer.
pub async fn issue_concurrently(
    channels: &[Channel],
    calls: usize,
    request: &IssueLicenseRequest,
) -> Vec<Result<IssueLicenseResponse, Status>> {
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(calls));
    let mut tasks = JoinSet::new();
    for call in 0..calls {
        let mut client = IssuanceServiceClient::new(channels[call % channels.len()].clone());
        let request = request.clone();
        let barrier = barrier.clone();
        tasks.spawn(async move {
            barrier.wait().await;
            client
                .issue_license(request)
                .await
                .map(tonic::Response::into_inner)
        });
    }
    tasks.join_all().await
}

//! Answers that did not come from Cryptlex, or that carry more than they should: an error page
//! from a proxy in between is a transient fault (never a permanent rejection, never "sign in
//! again"), and of Cryptlex's error body only a documented `code` may reach a caller's message.

use cryptlex_sandbox::pki::DevPki;
use cryptlex_sandbox::{FaultAction, FaultRule, seed};
use licensing_gateway::grpc::pb::{GetProfileRequest, LoginRequest};
use licensing_gateway::ledger::State;
use tonic::Code;

use crate::helpers::{TestOptions, spawn_app, spawn_app_with};
use crate::support::client::{assert_status, with_token};
use crate::support::issuance::{REQUEST_ID_KEY, issue_for_demo};

/// The page a reverse proxy (nginx here) serves when its upstream route is missing.
const PROXY_404_PAGE: &str = "<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n\
     <center><h1>404 Not Found</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

fn on_license_creates(action: FaultAction) -> FaultRule {
    FaultRule::always(action)
        .method(http::Method::POST)
        .path_prefix("/v3/licenses")
}

/// Answers every `method` request under `path` with an HTML page, as a proxy in between would.
fn proxy_page(method: http::Method, path: &str, status: u16, page: &str) -> FaultRule {
    FaultRule::always(FaultAction::body(status, "text/html", page))
        .method(method)
        .path_prefix(path)
}

#[tokio::test]
async fn an_html_404_from_a_proxy_does_not_reject_the_request_id_and_a_later_retry_issues() {
    // Arrange: every create meets the proxy's error page until the route is fixed. The
    // outcome of such a create is unknown, so the record settles briefly before a retry.
    let app = spawn_app_with(crate::issuance::short_settle(TestOptions::default())).await;
    let cryptlex = app.cryptlex();
    let proxy = cryptlex
        .add_fault(proxy_page(
            http::Method::POST,
            "/v3/licenses",
            404,
            PROXY_404_PAGE,
        ))
        .expect("fault");
    let mut client = app.payment_client().await;
    let request = issue_for_demo("order-behind-a-broken-proxy");

    // Act
    let during_the_outage = client.issue_license(request.clone()).await;
    let record = app
        .ledger()
        .await
        .get(DevPki::PAYMENT_SERVICE_ID, "order-behind-a-broken-proxy")
        .await
        .expect("ledger read")
        .expect("a record");
    assert!(cryptlex.remove_fault(proxy), "the proxy is fixed");
    let after_the_fix = client.issue_license(request).await;

    // Assert
    let status = assert_status(during_the_outage, Code::Unavailable, "UPSTREAM_UNAVAILABLE");
    assert!(!status.message().contains("nginx"), "{status:?}");
    assert_eq!(record.state, State::Pending, "not a permanent rejection");
    let issued = after_the_fix
        .expect("the retry after the fix issues the license")
        .into_inner();
    let license = issued.license.expect("a license");
    assert_eq!(
        cryptlex
            .licenses_with_metadata(REQUEST_ID_KEY, "order-behind-a-broken-proxy")
            .len(),
        1
    );
    assert_eq!(
        cryptlex.licenses_with_metadata(REQUEST_ID_KEY, "order-behind-a-broken-proxy")[0].id,
        license.id
    );
}

#[tokio::test]
async fn a_cryptlex_error_code_with_markup_never_reaches_the_callers_message() {
    // Arrange: a Cryptlex-shaped 400 whose code and message carry markup, then a documented code.
    let app = spawn_app().await;
    let cryptlex = app.cryptlex();
    let hostile = cryptlex
        .add_fault(on_license_creates(FaultAction::json(
            400,
            &serde_json::json!({
                "message": "<script>alert('message')</script>",
                "code": "<img src=x onerror=alert('code')>",
            }),
        )))
        .expect("fault");
    let mut client = app.payment_client().await;

    // Act
    let with_markup = client
        .issue_license(issue_for_demo("order-hostile-code"))
        .await;
    cryptlex.remove_fault(hostile);
    cryptlex
        .add_fault(on_license_creates(FaultAction::json(
            400,
            &serde_json::json!({"message": "Product does not exist!", "code": "INVALID_PRODUCT_ID"}),
        )))
        .expect("fault");
    let documented = client
        .issue_license(issue_for_demo("order-documented-code"))
        .await;

    // Assert: both are permanent rejections; only the documented code is named.
    let with_markup = assert_status(with_markup, Code::FailedPrecondition, "UPSTREAM_REJECTED");
    for leaked in ["<", ">", "onerror", "alert", "script"] {
        assert!(
            !with_markup.message().contains(leaked),
            "{leaked:?} in {:?}",
            with_markup.message()
        );
    }
    let documented = assert_status(documented, Code::FailedPrecondition, "UPSTREAM_REJECTED");
    assert!(
        documented.message().contains("INVALID_PRODUCT_ID"),
        "{:?}",
        documented.message()
    );
    assert!(!documented.message().contains("Product does not exist"));
}

#[tokio::test]
async fn a_proxy_401_page_is_unavailable_while_cryptlex_s_own_401_still_means_the_token_is_invalid()
{
    // Arrange
    let app = spawn_app().await;
    let cryptlex = app.cryptlex();
    let token = app.demo_token().await;
    let proxy = cryptlex
        .add_fault(proxy_page(
            http::Method::GET,
            "/v3/me",
            401,
            "<html><body><h1>401 Authorization Required</h1></body></html>",
        ))
        .expect("fault");
    let mut client = app.user_client().await;

    // Act
    let from_the_proxy = client
        .get_profile(with_token(GetProfileRequest {}, &token))
        .await;
    cryptlex.remove_fault(proxy);
    cryptlex.expire_all_access_tokens();
    let from_cryptlex = client
        .get_profile(with_token(GetProfileRequest {}, &token))
        .await;

    // Assert
    assert_status(from_the_proxy, Code::Unavailable, "UPSTREAM_UNAVAILABLE");
    assert_status(from_cryptlex, Code::Unauthenticated, "TOKEN_INVALID");
}

#[tokio::test]
async fn a_proxy_error_page_on_login_is_unavailable_not_a_wrong_password() {
    // Arrange
    let app = spawn_app().await;
    let cryptlex = app.cryptlex();
    let proxy = cryptlex
        .add_fault(proxy_page(
            http::Method::POST,
            "/v3/accounts/login",
            400,
            "<html><body>400 Bad Request: request header too large</body></html>",
        ))
        .expect("fault");
    let mut client = app.user_client().await;
    let login = LoginRequest {
        email: seed::DEMO_EMAIL.into(),
        password: seed::DEMO_PASSWORD.into(),
        ..Default::default()
    };

    // Act
    let during = client.login(login.clone()).await;
    cryptlex.remove_fault(proxy);
    let after = client.login(login).await;

    // Assert
    assert_status(during, Code::Unavailable, "UPSTREAM_UNAVAILABLE");
    assert!(after.is_ok(), "the right password still works: {after:?}");
}

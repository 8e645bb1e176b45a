//! `UserService` over gRPC: every RPC, success and error paths.

use std::time::Duration;

use cryptlex_sandbox::{AuthKind, seed};
use cryptlex_sandbox::{FaultAction, FaultRule};
use licensing_gateway::grpc::pb::{
    GetProfileRequest, ListMyLicensesRequest, LoginRequest, LogoutRequest, RefreshSessionRequest,
    SignUpRequest,
};
use tonic::{Code, Request};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;

use crate::helpers::{TestOptions, spawn_app, spawn_app_with};
use crate::support::client::{assert_status, with_token};

#[tokio::test]
async fn health_reports_serving_overall_and_for_the_user_service() {
    let app = spawn_app().await;
    let mut health = HealthClient::new(app.public_channel().await);
    for service in ["", "licensing.v1.UserService"] {
        let response = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check")
            .into_inner();
        assert_eq!(response.status(), ServingStatus::Serving, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "licensing.v1.IssuanceService".into(),
        })
        .await;
    assert_eq!(unknown.expect_err("not served here").code(), Code::NotFound);
}

#[tokio::test]
async fn login_returns_a_session_with_the_token_expiry() {
    let app = spawn_app().await;
    let session = app.login(seed::DEMO_EMAIL, seed::DEMO_PASSWORD).await;
    assert!(!session.access_token.is_empty());
    assert!(!session.refresh_token.is_empty());
    let expires_at = session.expires_at.expect("expiry read from the JWT");
    let in_seconds = expires_at.seconds - chrono::Utc::now().timestamp();
    assert!((800..=900).contains(&in_seconds), "{in_seconds}");
    let login = &app.cryptlex().requests()[0];
    assert_eq!(login.path, "/v3/accounts/login");
    assert!(login.request_id.is_some(), "x-request-id forwarded");
}

#[tokio::test]
async fn login_with_a_wrong_password_or_unknown_email_is_the_same_unauthenticated_answer() {
    let app = spawn_app().await;
    let mut client = app.user_client().await;
    let wrong_password = client
        .login(LoginRequest {
            email: seed::DEMO_EMAIL.into(),
            password: "not-the-password".into(),
            ..Default::default()
        })
        .await;
    let wrong = assert_status(wrong_password, Code::Unauthenticated, "INVALID_CREDENTIALS");
    let unknown_email = client
        .login(LoginRequest {
            email: "nobody@example.com".into(),
            password: "whatever-password".into(),
            ..Default::default()
        })
        .await;
    let unknown = assert_status(unknown_email, Code::Unauthenticated, "INVALID_CREDENTIALS");
    assert_eq!(wrong.message(), unknown.message());
}

#[tokio::test]
async fn malformed_login_input_is_invalid_argument_with_field_violations_and_no_upstream_call() {
    let app = spawn_app().await;
    let result = app
        .user_client()
        .await
        .login(LoginRequest {
            email: "not-an-email".into(),
            password: String::new(),
            ..Default::default()
        })
        .await;
    let status = assert_status(result, Code::InvalidArgument, "INVALID_ARGUMENT");
    let bad_request = status
        .get_details_bad_request()
        .expect("BadRequest details");
    let fields: Vec<&str> = bad_request
        .field_violations
        .iter()
        .map(|violation| violation.field.as_str())
        .collect();
    assert_eq!(fields, ["email", "password"]);
    assert!(
        app.cryptlex().requests().is_empty(),
        "nothing sent upstream"
    );
}

#[tokio::test]
async fn get_profile_returns_the_callers_own_profile() {
    let app = spawn_app().await;
    let token = app.demo_token().await;
    let profile = app
        .user_client()
        .await
        .get_profile(with_token(GetProfileRequest {}, &token))
        .await
        .expect("profile")
        .into_inner()
        .profile
        .expect("profile set");
    assert_eq!(profile.id, seed::DEMO_USER_ID);
    assert_eq!(profile.email, seed::DEMO_EMAIL);
    assert_eq!(profile.first_name, "Demo");
    assert_eq!(profile.last_name, "User");
    assert_eq!(profile.role, "user");
    assert!(profile.created_at.is_some());
    assert!(profile.last_login_at.is_some());
}

#[tokio::test]
async fn user_calls_without_a_token_are_unauthenticated_without_an_upstream_call() {
    let app = spawn_app().await;
    let mut client = app.user_client().await;
    let profile = client.get_profile(GetProfileRequest {}).await;
    assert_status(profile, Code::Unauthenticated, "TOKEN_MISSING");
    let licenses = client
        .list_my_licenses(ListMyLicensesRequest::default())
        .await;
    assert_status(licenses, Code::Unauthenticated, "TOKEN_MISSING");
    let mut basic = Request::new(GetProfileRequest {});
    basic.metadata_mut().insert(
        "authorization",
        "Basic ZGVtbzpkZW1v".parse().expect("value"),
    );
    assert_status(
        client.get_profile(basic).await,
        Code::Unauthenticated,
        "TOKEN_MISSING",
    );
    let logout = client.logout(LogoutRequest {}).await;
    assert_status(logout, Code::Unauthenticated, "TOKEN_MISSING");
    assert!(
        app.cryptlex().requests().is_empty(),
        "nothing sent upstream"
    );
}

#[tokio::test]
async fn a_garbage_or_expired_token_is_unauthenticated() {
    let app = spawn_app().await;
    let mut client = app.user_client().await;
    let garbage = client
        .get_profile(with_token(GetProfileRequest {}, "garbage.token.value"))
        .await;
    assert_status(garbage, Code::Unauthenticated, "TOKEN_INVALID");

    let token = app.demo_token().await;
    app.cryptlex().expire_all_access_tokens();
    let expired = client
        .list_my_licenses(with_token(ListMyLicensesRequest::default(), &token))
        .await;
    assert_status(expired, Code::Unauthenticated, "TOKEN_INVALID");
}

#[tokio::test]
async fn list_my_licenses_pages_through_both_licenses_to_the_end() {
    let app = spawn_app().await;
    let token = app.demo_token().await;
    let mut client = app.user_client().await;
    let mut seen = Vec::new();
    let mut page_token = String::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_my_licenses(with_token(
                ListMyLicensesRequest {
                    page_size: 1,
                    page_token: page_token.clone(),
                    product_id: String::new(),
                },
                &token,
            ))
            .await
            .expect("a page")
            .into_inner();
        pages += 1;
        seen.extend(page.licenses);
        page_token = page.next_page_token;
        if page_token.is_empty() {
            break;
        }
        assert!(pages < 10, "pagination must end");
    }
    let ids: Vec<&str> = seen.iter().map(|license| license.id.as_str()).collect();
    assert_eq!(ids, seed::DEMO_LICENSE_IDS);
    let first = &seen[0];
    assert_eq!(first.product_name, seed::PRODUCT_NAME);
    assert!(!first.key.is_empty());
    assert!(first.created_at.is_some());

    // The default page holds both, and says there is no more.
    let all = client
        .list_my_licenses(with_token(ListMyLicensesRequest::default(), &token))
        .await
        .expect("page")
        .into_inner();
    assert_eq!(all.licenses.len(), 2);
    assert!(all.next_page_token.is_empty());
}

#[tokio::test]
async fn list_my_licenses_filters_by_product_and_rejects_bad_paging_input() {
    let app = spawn_app().await;
    let token = app.demo_token().await;
    let mut client = app.user_client().await;
    let filtered = client
        .list_my_licenses(with_token(
            ListMyLicensesRequest {
                product_id: seed::PRODUCT_ID.into(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .expect("page")
        .into_inner();
    assert_eq!(filtered.licenses.len(), 2);
    let other_product = client
        .list_my_licenses(with_token(
            ListMyLicensesRequest {
                product_id: "00000000-0000-4000-8000-000000000000".into(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .expect("page")
        .into_inner();
    assert!(other_product.licenses.is_empty());

    app.cryptlex().clear_requests();
    for request in [
        ListMyLicensesRequest {
            page_size: -1,
            ..Default::default()
        },
        ListMyLicensesRequest {
            page_token: "garbage".into(),
            ..Default::default()
        },
        ListMyLicensesRequest {
            product_id: "not a product/../x".into(),
            ..Default::default()
        },
    ] {
        let result = client.list_my_licenses(with_token(request, &token)).await;
        assert_status(result, Code::InvalidArgument, "INVALID_ARGUMENT");
    }
    assert!(
        app.cryptlex().requests().is_empty(),
        "nothing sent upstream"
    );
}

#[tokio::test]
async fn another_users_token_never_yields_the_demo_users_data_and_user_calls_never_send_the_pat() {
    let app = spawn_app().await;
    let other = app
        .login(seed::OTHER_EMAIL, seed::OTHER_PASSWORD)
        .await
        .access_token;
    let mut client = app.user_client().await;
    let profile = client
        .get_profile(with_token(GetProfileRequest {}, &other))
        .await
        .expect("profile")
        .into_inner()
        .profile
        .expect("profile");
    assert_eq!(profile.email, seed::OTHER_EMAIL);
    let licenses = client
        .list_my_licenses(with_token(ListMyLicensesRequest::default(), &other))
        .await
        .expect("licenses")
        .into_inner()
        .licenses;
    let ids: Vec<&str> = licenses.iter().map(|license| license.id.as_str()).collect();
    assert_eq!(ids, [seed::OTHER_LICENSE_ID]);

    let requests = app.cryptlex().requests();
    assert!(!requests.is_empty());
    for request in requests {
        assert_ne!(
            request.auth,
            AuthKind::Pat,
            "{} {}",
            request.method,
            request.path
        );
        if request.path.starts_with("/v3/me") {
            assert!(
                matches!(&request.auth, AuthKind::User { email, .. } if email == seed::OTHER_EMAIL),
                "{:?}",
                request.auth
            );
        }
    }
}

#[tokio::test]
async fn refresh_session_returns_a_new_pair_and_the_old_refresh_token_is_spent() {
    let app = spawn_app().await;
    let session = app.login(seed::DEMO_EMAIL, seed::DEMO_PASSWORD).await;
    let mut client = app.user_client().await;
    let refreshed = client
        .refresh_session(RefreshSessionRequest {
            refresh_token: session.refresh_token.clone(),
        })
        .await
        .expect("refresh")
        .into_inner()
        .session
        .expect("session");
    assert_ne!(refreshed.access_token, session.access_token);
    client
        .get_profile(with_token(GetProfileRequest {}, &refreshed.access_token))
        .await
        .expect("the new token works");
    let again = client
        .refresh_session(RefreshSessionRequest {
            refresh_token: session.refresh_token,
        })
        .await;
    assert_status(again, Code::Unauthenticated, "TOKEN_INVALID");
    let empty = client
        .refresh_session(RefreshSessionRequest::default())
        .await;
    assert_status(empty, Code::InvalidArgument, "INVALID_ARGUMENT");
}

#[tokio::test]
async fn logout_revokes_the_token_even_for_answers_the_gateway_has_cached() {
    let app = spawn_app().await;
    let token = app.demo_token().await;
    let mut client = app.user_client().await;
    // Both reads are now in the gateway's read cache (3 s).
    let list = || ListMyLicensesRequest {
        page_size: 10,
        ..Default::default()
    };
    client
        .get_profile(with_token(GetProfileRequest {}, &token))
        .await
        .expect("profile");
    client
        .list_my_licenses(with_token(list(), &token))
        .await
        .expect("licenses");
    client
        .logout(with_token(LogoutRequest {}, &token))
        .await
        .expect("logout");
    let profile = client
        .get_profile(with_token(GetProfileRequest {}, &token))
        .await;
    assert_status(profile, Code::Unauthenticated, "TOKEN_INVALID");
    let licenses = client.list_my_licenses(with_token(list(), &token)).await;
    assert_status(licenses, Code::Unauthenticated, "TOKEN_INVALID");
}

#[tokio::test]
async fn the_callers_deadline_bounds_upstream_work() {
    let app = spawn_app().await;
    let token = app.demo_token().await;
    app.cryptlex()
        .add_fault(
            FaultRule::once(FaultAction::Delay(Duration::from_secs(3))).path_prefix("/v3/me"),
        )
        .expect("fault");
    let mut request = with_token(GetProfileRequest {}, &token);
    request.set_timeout(Duration::from_millis(400));
    let started = std::time::Instant::now();
    let result = app.user_client().await.get_profile(request).await;
    assert_status(result, Code::DeadlineExceeded, "DEADLINE_EXCEEDED");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn sign_up_creates_a_user_that_can_log_in() {
    let app = spawn_app().await;
    let mut client = app.user_client().await;
    let signed_up = client
        .sign_up(SignUpRequest {
            email: "new.customer@example.com".into(),
            password: "new-customer-password".into(),
            first_name: "New".into(),
            last_name: "Customer".into(),
        })
        .await
        .expect("sign-up")
        .into_inner();
    assert!(!signed_up.user_id.is_empty());
    let token = signed_up.session.expect("session").access_token;
    let profile = client
        .get_profile(with_token(GetProfileRequest {}, &token))
        .await
        .expect("profile")
        .into_inner()
        .profile
        .expect("profile");
    assert_eq!(profile.id, signed_up.user_id);
    assert_eq!(profile.role, "user");
    let created = app
        .cryptlex()
        .user_by_email("new.customer@example.com")
        .expect("user exists upstream");
    assert_eq!(created.role, "user");

    let duplicate = client
        .sign_up(SignUpRequest {
            email: "NEW.customer@example.com".into(),
            password: "another-password".into(),
            first_name: "Again".into(),
            last_name: String::new(),
        })
        .await;
    assert_status(duplicate, Code::AlreadyExists, "EMAIL_TAKEN");
}

#[tokio::test]
async fn sign_up_validates_input_before_any_upstream_call() {
    let app = spawn_app().await;
    let result = app
        .user_client()
        .await
        .sign_up(SignUpRequest {
            email: "x".into(),
            password: "short".into(),
            first_name: String::new(),
            last_name: "L".into(),
        })
        .await;
    let status = assert_status(result, Code::InvalidArgument, "INVALID_ARGUMENT");
    let violations = status
        .get_details_bad_request()
        .expect("details")
        .field_violations;
    let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(fields, ["email", "password", "first_name"]);
    assert!(app.cryptlex().requests().is_empty());
}

#[tokio::test]
async fn sign_up_can_be_disabled() {
    let app = spawn_app_with(TestOptions {
        env: vec![("LICENSING_GATEWAY__SIGN_UP__ENABLED".into(), "false".into())],
        ..TestOptions::default()
    })
    .await;
    let result = app
        .user_client()
        .await
        .sign_up(SignUpRequest {
            email: "someone@example.com".into(),
            password: "long-enough-password".into(),
            first_name: "Some".into(),
            last_name: "One".into(),
        })
        .await;
    assert_status(result, Code::Unimplemented, "SIGN_UP_DISABLED");
    assert!(app.cryptlex().requests().is_empty());
}

#[tokio::test]
async fn a_rejected_pat_is_an_internal_error_not_the_users_fault() {
    let app = spawn_app().await;
    let pat = std::fs::read_to_string(app.sandbox_dir().join("cryptlex-pat")).expect("pat file");
    assert!(app.cryptlex().revoke_token(pat.trim()));
    let result = app
        .user_client()
        .await
        .sign_up(SignUpRequest {
            email: "someone@example.com".into(),
            password: "long-enough-password".into(),
            first_name: "Some".into(),
            last_name: String::new(),
        })
        .await;
    let status = assert_status(result, Code::Internal, "INTERNAL");
    assert_eq!(status.message(), "internal error");
}

#[tokio::test]
async fn reflection_lists_the_user_service_but_not_issuance_on_the_public_listener() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let app = spawn_app().await;
    let mut client = ServerReflectionClient::new(app.public_channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let response = responses
        .message()
        .await
        .expect("stream")
        .expect("one response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<String> = list
        .service
        .into_iter()
        .map(|service| service.name)
        .collect();
    assert!(
        names.contains(&"licensing.v1.UserService".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|name| name.contains("Issuance")),
        "{names:?}"
    );
}

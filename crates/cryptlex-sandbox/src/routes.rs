//! The `/v3` endpoints: request parsing and validation, authorisation, and the calls into the
//! account state.
//!
//! Validation follows the limits in Cryptlex's OpenAPI document (field lengths, list sizes,
//! enum values). Its 400 messages are not documented, so the sandbox's wording copies ASP.NET's
//! data-annotation style; clients should branch on status and `code`, never on `message`.
//! Unknown JSON fields and unknown query parameters are ignored (an inference: the schema says
//! `additionalProperties: false`, but whether the server enforces that is unknown).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::routing::{MethodRouter, delete, get, patch, post};
use axum::{Extension, Json, Router};
use chrono::{DateTime, Utc};
use http::StatusCode;
use secrecy::SecretString;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::controls;
use crate::lifecycle;
use crate::pipeline::{Caller, front_door};
use crate::portal;
use crate::seed;
use crate::shared::{Shared, lock};
use crate::state::{
    DomainError, LicenseRecord, LicenseUpdate, NewLicense, NewMetadata, NewUser, add_interval,
};
use crate::tokens::TokenPair;
use crate::webhooks::{InvalidWebhook, MAX_WEBHOOK_EVENTS, NewWebhook, WebhookDto, events};
use crate::wire::{
    AUTHENTICATION_FAILED_MESSAGE, AccessTokenDto, AccountDto, ApiError, BaseProfileDto,
    LicenseDto, ProductDto, UserDto, UserLicenseDto, timestamp,
};

/// The page size when a list request gives no `limit` (an inference; Cryptlex does not say).
const DEFAULT_PAGE_SIZE: usize = 10;
const MAX_PAGE_SIZE: usize = 100;
const MAX_LICENSE_METADATA: usize = 50;
const MAX_USER_METADATA: usize = 20;
const MAX_TAGS: usize = 5;
const VIEW_PERMISSIONS: &[&str] = &["activation", "user", "organization", "reseller"];
const LICENSE_TYPES: &[&str] = &["node-locked", "hosted-floating", "on-premise-floating"];

pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// Every Cryptlex operation the sandbox serves, as (method, path template) in the OpenAPI
/// document's spelling. The router is built from this list alone, so it is the complete list:
/// the contract test checks that each entry has a schema in the project's OpenAPI subset.
pub const API_OPERATIONS: &[(&str, &str)] = &[
    ("POST", "/v3/accounts/login"),
    ("POST", "/v3/accounts/login-refresh-token"),
    ("POST", "/v3/accounts/logout"),
    ("GET", "/v3/accounts/{id}"),
    ("GET", "/v3/me"),
    ("GET", "/v3/me/licenses"),
    ("GET", "/v3/me/licenses/{id}"),
    ("GET", "/v3/products/{id}"),
    ("GET", "/v3/users"),
    ("POST", "/v3/users"),
    ("GET", "/v3/users/{id}"),
    ("GET", "/v3/licenses"),
    ("POST", "/v3/licenses"),
    ("GET", "/v3/licenses/{id}"),
    ("PATCH", "/v3/licenses/{id}"),
    ("DELETE", "/v3/licenses/{id}"),
    // Renewing and setting the expiry (issue 16), served by `lifecycle`.
    ("POST", "/v3/licenses/{id}/renew"),
    ("PATCH", "/v3/licenses/{id}/expires-at"),
    ("GET", "/v3/webhooks"),
    ("POST", "/v3/webhooks"),
    ("DELETE", "/v3/webhooks/{id}"),
    // The customer-portal operations (issue 15), served by `portal`.
    ("PATCH", "/v3/me"),
    ("POST", "/v3/me/2fa-secret"),
    ("POST", "/v3/me/2fa-recovery-codes"),
    ("GET", "/v3/me/licenses/{id}/feature-entitlements"),
    ("GET", "/v3/me/activations"),
    ("GET", "/v3/me/activations/{id}"),
    ("GET", "/v3/me/releases"),
    ("DELETE", "/v3/activations/{id}"),
    ("POST", "/v3/accounts/reset-password-request"),
    ("POST", "/v3/users/{id}/update-password"),
    ("POST", "/v3/users/{id}/reset-password"),
    ("POST", "/v3/users/{id}/reset-password-token"),
];

/// The handler of one entry of [`API_OPERATIONS`].
fn handler(method: &str, path: &str) -> MethodRouter<Arc<Shared>> {
    match (method, path) {
        ("POST", "/v3/accounts/login") => post(login),
        ("POST", "/v3/accounts/login-refresh-token") => post(refresh),
        ("POST", "/v3/accounts/logout") => post(logout),
        ("GET", "/v3/accounts/{id}") => get(get_account),
        ("GET", "/v3/me") => get(me),
        ("GET", "/v3/me/licenses") => get(my_licenses),
        ("GET", "/v3/me/licenses/{id}") => get(my_license),
        ("GET", "/v3/products/{id}") => get(get_product),
        ("GET", "/v3/users") => get(list_users),
        ("POST", "/v3/users") => post(create_user),
        ("GET", "/v3/users/{id}") => get(get_user),
        ("GET", "/v3/licenses") => get(list_licenses),
        ("POST", "/v3/licenses") => post(create_license),
        ("GET", "/v3/licenses/{id}") => get(get_license),
        ("PATCH", "/v3/licenses/{id}") => patch(update_license),
        ("DELETE", "/v3/licenses/{id}") => delete(delete_license),
        ("POST", "/v3/licenses/{id}/renew") => post(lifecycle::renew_license),
        ("PATCH", "/v3/licenses/{id}/expires-at") => patch(lifecycle::update_expires_at),
        ("GET", "/v3/webhooks") => get(list_webhooks),
        ("POST", "/v3/webhooks") => post(create_webhook),
        ("DELETE", "/v3/webhooks/{id}") => delete(delete_webhook),
        _ => portal::handler(method, path),
    }
}

/// Builds the whole application: API routes, control routes, fallbacks, and the front door.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let mut router = Router::new();
    for (method, path) in API_OPERATIONS {
        // Routes of one path with several methods merge into one method router.
        router = router.route(path, handler(method, path));
    }
    router
        .merge(controls::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            front_door,
        ))
        .with_state(shared)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "Resource not found!")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed!")
}

// === accounts ===

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LoginRequest {
    account_id: Option<String>,
    account_alias: Option<String>,
    email: Option<String>,
    password: Option<String>,
    two_factor_code: Option<String>,
    two_factor_recovery_code: Option<String>,
}

async fn login(State(shared): State<Arc<Shared>>, body: Bytes) -> ApiResult<Json<AccessTokenDto>> {
    let request: LoginRequest = parse_json(&body)?;
    let email = required_email("email", request.email.as_deref())?;
    let password = required_text("password", request.password.as_deref(), 8, 256)?;
    optional_text("accountId", request.account_id.as_deref(), 0, 36)?;
    optional_text("accountAlias", request.account_alias.as_deref(), 0, 256)?;
    let two_factor_code = optional_text("twoFactorCode", request.two_factor_code.as_deref(), 6, 6)?;
    let recovery_code = optional_text(
        "twoFactorRecoveryCode",
        request.two_factor_recovery_code.as_deref(),
        1,
        256,
    )?;

    // Either account field identifies the account; a given one must match. Neither given is
    // the failure a real team hit, answered with the bare message (confirmed on the forum).
    let account_id = request.account_id.filter(|id| !id.is_empty());
    let account_alias = request.account_alias.filter(|alias| !alias.is_empty());
    let account_matches = match (&account_id, &account_alias) {
        (None, None) => false,
        (id, alias) => {
            id.as_deref()
                .is_none_or(|id| id.eq_ignore_ascii_case(seed::ACCOUNT_ID))
                && alias
                    .as_deref()
                    .is_none_or(|alias| alias == seed::ACCOUNT_ALIAS)
        }
    };
    if !account_matches {
        return Err(ApiError::bad_request(AUTHENTICATION_FAILED_MESSAGE));
    }

    let now = Utc::now();
    let mut domain = lock(&shared.domain);
    // The code is an inference borrowed from the activation API's `AUTHENTICATION_FAILED`.
    let failed =
        || ApiError::bad_request(AUTHENTICATION_FAILED_MESSAGE).with_code("AUTHENTICATION_FAILED");
    let user_id = domain.authenticate(email, password).ok_or_else(failed)?;
    // The second factor is asked only of whoever knows the password (see `portal`).
    portal::check_login_second_factor(&mut domain, &user_id, two_factor_code, recovery_code, now)?;
    let user = domain.record_login(&user_id, now).ok_or_else(failed)?;
    shared
        .webhooks
        .fire(events::ACCOUNT_LOGGED_IN, &UserDto::from(&user));
    drop(domain);
    let pair = lock(&shared.tokens).issue_login(&user.id, now);
    lock(&shared.journal).stats.logins += 1;
    Ok(Json(token_dto(pair)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RefreshRequest {
    refresh_token: Option<String>,
}

async fn refresh(
    State(shared): State<Arc<Shared>>,
    body: Bytes,
) -> ApiResult<Json<AccessTokenDto>> {
    let request: RefreshRequest = parse_json(&body)?;
    let refresh_token = required_text("refreshToken", request.refresh_token.as_deref(), 1, 256)?;
    let pair = lock(&shared.tokens)
        .refresh(refresh_token, Utc::now())
        .map_err(|_| {
            ApiError::bad_request("Refresh token is invalid or has expired!")
                .with_code("INVALID_REFRESH_TOKEN")
        })?;
    Ok(Json(token_dto(pair)))
}

async fn logout(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<StatusCode> {
    let (_, token) = caller.any_token()?;
    // A PAT is managed in the admin portal, not by sessions, so logging out with one is
    // accepted but leaves it valid (an inference).
    if matches!(caller, Caller::User { .. }) {
        lock(&shared.tokens).revoke(token);
    }
    Ok(StatusCode::OK)
}

fn token_dto(pair: TokenPair) -> AccessTokenDto {
    AccessTokenDto {
        access_token: pair.access_token,
        refresh_token: pair.refresh_token,
    }
}

// === me ===

async fn me(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<BaseProfileDto>> {
    let (user_id, _) = caller.any_token()?;
    let domain = lock(&shared.domain);
    let user = domain.user(user_id).ok_or_else(ApiError::unauthorized)?;
    Ok(Json(BaseProfileDto::from(user)))
}

/// `GET /v3/me/licenses`: the caller's licenses, in the reduced view.
const MY_LICENSES: ListSpec = ListSpec {
    filters: &["productId[eq]"],
    sortable: LICENSE_SORT_FIELDS,
};

/// The license fields the sandbox sorts by.
const LICENSE_SORT_FIELDS: &[&str] = &["createdAt", "updatedAt", "expiresAt", "key"];

fn license_sort_key(license: &LicenseRecord, field: &str) -> String {
    match field {
        "createdAt" => timestamp(license.created_at),
        "updatedAt" => timestamp(license.updated_at),
        // Fixed-width timestamps sort as text; a license without expiry sorts first.
        "expiresAt" => license.expires_at.map(timestamp).unwrap_or_default(),
        _ => license.key.clone(),
    }
}

async fn my_licenses(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Vec<UserLicenseDto>>> {
    let (user_id, _) = caller.any_token()?;
    let query = ListQuery::parse(query.as_deref(), &MY_LICENSES)?;
    let product_filter = query.filter(&["productId[eq]"]);

    let domain = lock(&shared.domain);
    let owned = domain
        .licenses()
        .iter()
        .filter(|license| {
            license.user_id.as_deref() == Some(user_id)
                && product_filter.is_none_or(|product_id| license.product_id == product_id)
        })
        .collect();
    let page = query
        .page_of(owned, |license, field| license_sort_key(license, field))
        .into_iter()
        .map(|license| {
            let product = domain
                .product(&license.product_id)
                .map(|product| product.display_name.as_str())
                .unwrap_or_default();
            UserLicenseDto::new(license, product)
        })
        .collect();
    Ok(Json(page))
}

async fn my_license(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<UserLicenseDto>> {
    let (user_id, _) = caller.any_token()?;
    let domain = lock(&shared.domain);
    // Another user's license is reported as missing, not forbidden, so ids cannot be probed.
    let license = domain
        .license(&id)
        .filter(|license| license.user_id.as_deref() == Some(user_id))
        .ok_or_else(|| ApiError::not_found("License"))?;
    let product = domain
        .product(&license.product_id)
        .map(|product| product.display_name.as_str())
        .unwrap_or_default();
    Ok(Json(UserLicenseDto::new(license, product)))
}

// === users ===

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateUserRequest {
    email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    password: Option<String>,
    role: Option<String>,
    company: Option<String>,
    allow_customer_portal_access: Option<bool>,
    metadata: Option<Vec<MetadataRequest>>,
    tags: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetadataRequest {
    key: Option<String>,
    value: Option<String>,
    view_permissions: Option<Vec<String>>,
    /// Deprecated and write-only upstream; `true` without permissions means "access it on
    /// activation".
    visible: Option<bool>,
}

async fn create_user(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<UserDto>)> {
    caller.require_scope("user:write")?;
    let request: CreateUserRequest = parse_json(&body)?;
    let new_user = NewUser {
        email: required_email("email", request.email.as_deref())?.to_owned(),
        first_name: required_text("firstName", request.first_name.as_deref(), 1, 256)?.to_owned(),
        last_name: optional_text("lastName", request.last_name.as_deref(), 0, 256)?
            .unwrap_or_default()
            .to_owned(),
        password: SecretString::from(
            required_text("password", request.password.as_deref(), 8, 256)?.to_owned(),
        ),
        role: optional_text("role", request.role.as_deref(), 1, 256)?
            .unwrap_or("user")
            .to_owned(),
        company: optional_text("company", request.company.as_deref(), 0, 256)?.map(str::to_owned),
        allow_customer_portal_access: request.allow_customer_portal_access.unwrap_or(true),
        metadata: metadata(request.metadata, MAX_USER_METADATA)?,
        tags: tags(request.tags)?,
    };

    let mut domain = lock(&shared.domain);
    let user = domain
        .create_user(new_user, Utc::now())
        .map_err(domain_error)?;
    let dto = UserDto::from(&user);
    shared.webhooks.fire(events::USER_CREATED, &dto);
    drop(domain);
    lock(&shared.journal).stats.users_created += 1;
    Ok((StatusCode::CREATED, Json(dto)))
}

/// `GET /v3/users`. The flat `email=` is what older clients send; it means `email[eq]=`.
const LIST_USERS: ListSpec = ListSpec {
    filters: &["email[eq]", "email"],
    sortable: &["createdAt", "updatedAt", "email"],
};

async fn list_users(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Vec<UserDto>>> {
    caller.require_scope("user:read")?;
    let query = ListQuery::parse(query.as_deref(), &LIST_USERS)?;
    let email = query.filter(&["email[eq]", "email"]);

    let domain = lock(&shared.domain);
    let matching = domain
        .users()
        .iter()
        .filter(|user| email.is_none_or(|email| user.email.eq_ignore_ascii_case(email)))
        .collect();
    let page = query.page_of(matching, |user, field| match field {
        "createdAt" => timestamp(user.created_at),
        "updatedAt" => timestamp(user.updated_at),
        _ => user.email.to_lowercase(),
    });
    Ok(Json(page.into_iter().map(UserDto::from).collect()))
}

async fn get_user(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<UserDto>> {
    caller.require_scope("user:read")?;
    let domain = lock(&shared.domain);
    let user = domain
        .user(&id)
        .ok_or_else(|| ApiError::not_found("User"))?;
    Ok(Json(UserDto::from(user)))
}

// === licenses ===

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateLicenseRequest {
    product_id: Option<String>,
    user_id: Option<String>,
    license_template_id: Option<String>,
    /// The deprecated name of `licenseTemplateId`.
    license_policy_id: Option<String>,
    key: Option<String>,
    #[serde(rename = "type")]
    license_type: Option<String>,
    allowed_activations: Option<i64>,
    allowed_deactivations: Option<i64>,
    subscription_interval: Option<String>,
    subscription_start_trigger: Option<String>,
    expires_at: Option<String>,
    metadata: Option<Vec<MetadataRequest>>,
    tags: Option<Vec<String>>,
    notes: Option<String>,
}

async fn create_license(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<LicenseDto>)> {
    caller.require_scope("license:write")?;
    let request: CreateLicenseRequest = parse_json(&body)?;
    let now = Utc::now();
    let new_license = NewLicense {
        product_id: required_text("productId", request.product_id.as_deref(), 1, 256)?.to_owned(),
        user_id: request.user_id,
        // Templates are not modelled: any non-empty id is accepted and the product defaults
        // apply, so a gateway configured with a real template id works unchanged (a choice:
        // the real API would reject an unknown id).
        license_template_id: optional_text(
            "licenseTemplateId",
            request
                .license_template_id
                .as_deref()
                .or(request.license_policy_id.as_deref()),
            1,
            256,
        )?
        .map(str::to_owned),
        key: optional_text("key", request.key.as_deref(), 16, 256)?.map(str::to_owned),
        license_type: one_of("type", request.license_type, LICENSE_TYPES)?,
        allowed_activations: activation_limit("allowedActivations", request.allowed_activations)?,
        allowed_deactivations: activation_limit(
            "allowedDeactivations",
            request.allowed_deactivations,
        )?,
        subscription_interval: subscription_interval(request.subscription_interval, now)?,
        subscription_start_trigger: one_of(
            "subscriptionStartTrigger",
            request.subscription_start_trigger,
            &["creation", "activation"],
        )?,
        expires_at: date_time("expiresAt", request.expires_at.as_deref())?,
        metadata: metadata(request.metadata, MAX_LICENSE_METADATA)?,
        tags: tags(request.tags)?,
        notes: optional_text("notes", request.notes.as_deref(), 0, 4096)?.map(str::to_owned),
    };

    let mut domain = lock(&shared.domain);
    let license = domain
        .create_license(new_license, now)
        .map_err(domain_error)?;
    let owner = license.user_id.as_deref().and_then(|id| domain.user(id));
    let dto = LicenseDto::new(&license, owner);
    shared.webhooks.fire(events::LICENSE_CREATED, &dto);
    drop(domain);
    lock(&shared.journal).stats.licenses_created += 1;
    Ok((StatusCode::CREATED, Json(dto)))
}

/// `GET /v3/licenses`. The flat `metadataKey`, `metadataValue` and `email` are deprecated
/// since API 3.44.0 but still sent by older integrations; `userId` is a plain parameter in S1.
const LIST_LICENSES: ListSpec = ListSpec {
    filters: &[
        "metadata.key[eq]",
        "metadata.value[eq]",
        "metadataKey",
        "metadataValue",
        "userId",
        "productId[eq]",
        "user.email[eq]",
        "email",
    ],
    sortable: LICENSE_SORT_FIELDS,
};

async fn list_licenses(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Vec<LicenseDto>>> {
    caller.require_scope("license:read")?;
    let query = ListQuery::parse(query.as_deref(), &LIST_LICENSES)?;
    let metadata_key = query.filter(&["metadata.key[eq]", "metadataKey"]);
    let metadata_value = query.filter(&["metadata.value[eq]", "metadataValue"]);
    let user_id = query.filter(&["userId"]);
    let product_id = query.filter(&["productId[eq]"]);
    let email = query.filter(&["user.email[eq]", "email"]);

    let domain = lock(&shared.domain);
    let matching = domain
        .licenses()
        .iter()
        .filter(|license| {
            let owner = license.user_id.as_deref().and_then(|id| domain.user(id));
            // Key and value together mean one entry with both, not two entries with one each.
            let metadata_matches = (metadata_key.is_none() && metadata_value.is_none())
                || license.has_metadata(metadata_key, metadata_value);
            metadata_matches
                && user_id.is_none_or(|user_id| license.user_id.as_deref() == Some(user_id))
                && product_id.is_none_or(|product_id| license.product_id == product_id)
                && email.is_none_or(|email| {
                    owner.is_some_and(|owner| owner.email.eq_ignore_ascii_case(email))
                })
        })
        .collect();
    let page = query
        .page_of(matching, |license, field| license_sort_key(license, field))
        .into_iter()
        .map(|license| {
            let owner = license.user_id.as_deref().and_then(|id| domain.user(id));
            LicenseDto::new(license, owner)
        })
        .collect();
    Ok(Json(page))
}

async fn get_license(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<LicenseDto>> {
    caller.require_scope("license:read")?;
    let domain = lock(&shared.domain);
    let license = domain
        .license(&id)
        .ok_or_else(|| ApiError::not_found("License"))?;
    let owner = license.user_id.as_deref().and_then(|id| domain.user(id));
    Ok(Json(LicenseDto::new(license, owner)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateLicenseRequest {
    key: Option<String>,
    revoked: Option<bool>,
    suspended: Option<bool>,
    allowed_activations: Option<i64>,
    allowed_deactivations: Option<i64>,
    notes: Option<String>,
    user_id: Option<String>,
    tags: Option<Vec<String>>,
    metadata: Option<Vec<MetadataRequest>>,
}

/// `PATCH /v3/licenses/{id}`: the fields the sandbox models change, S1's others are accepted
/// and ignored; fires `license.updated` (also for a suspension or a revocation: S1 declares no
/// other event). `metadata` replaces the whole list, so a client adding one entry sends them
/// all (see `LicenseUpdate::metadata`).
async fn update_license(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<LicenseDto>> {
    caller.require_scope("license:write")?;
    let request: UpdateLicenseRequest = parse_json(&body)?;
    let update = LicenseUpdate {
        key: optional_text("key", request.key.as_deref(), 16, 256)?.map(str::to_owned),
        revoked: request.revoked,
        suspended: request.suspended,
        allowed_activations: activation_limit("allowedActivations", request.allowed_activations)?,
        allowed_deactivations: activation_limit(
            "allowedDeactivations",
            request.allowed_deactivations,
        )?,
        notes: optional_text("notes", request.notes.as_deref(), 0, 4096)?.map(str::to_owned),
        // An empty id takes the license away from its owner (an inference).
        user_id: optional_text("userId", request.user_id.as_deref(), 0, 256)?
            .map(|user_id| (!user_id.is_empty()).then(|| user_id.to_owned())),
        tags: request.tags.map(|list| tags(Some(list))).transpose()?,
        metadata: request
            .metadata
            .map(|entries| metadata(Some(entries), MAX_LICENSE_METADATA))
            .transpose()?,
        // S1's `LicenseUpdateRequestModel` has no `expiresAt`: the expiry changes through
        // `/expires-at` and `/renew` (`lifecycle`), and a stray field is ignored like any other.
        expires_at: None,
    };
    let (_, dto) = apply_license_update(&shared, &id, update)?;
    Ok(Json(dto))
}

/// Applies a license update for the API and the dashboard control alike, and fires
/// `license.updated` with the license as the API now returns it.
pub(crate) fn apply_license_update(
    shared: &Shared,
    id: &str,
    update: LicenseUpdate,
) -> ApiResult<(LicenseRecord, LicenseDto)> {
    let mut domain = lock(&shared.domain);
    let license = domain
        .update_license(id, update, Utc::now())
        .map_err(domain_error)?;
    let owner = license.user_id.as_deref().and_then(|id| domain.user(id));
    let dto = LicenseDto::new(&license, owner);
    shared.webhooks.fire(events::LICENSE_UPDATED, &dto);
    Ok((license, dto))
}

/// `DELETE /v3/licenses/{id}`: fires `license.deleted` with the license as it was.
async fn delete_license(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_scope("license:write")?;
    let mut domain = lock(&shared.domain);
    let license = domain.delete_license(&id).map_err(domain_error)?;
    let owner = license.user_id.as_deref().and_then(|id| domain.user(id));
    shared
        .webhooks
        .fire(events::LICENSE_DELETED, &LicenseDto::new(&license, owner));
    Ok(StatusCode::NO_CONTENT)
}

// === webhooks ===

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateWebhookRequest {
    name: Option<String>,
    url: Option<String>,
    token: Option<String>,
    enabled: Option<bool>,
    events: Option<Vec<String>>,
}

/// `POST /v3/webhooks`. Every field is required, as in S1's `WebhookCreateRequestModel`.
/// Event names are not checked against Cryptlex's list (the sandbox knows only the events it
/// fires), and an empty list is refused: Cryptlex's form needs at least one event, and a
/// webhook with none would never fire (the "every event" shorthand is the control's alone).
async fn create_webhook(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<WebhookDto>)> {
    caller.require_scope("webhook:write")?;
    let request: CreateWebhookRequest = parse_json(&body)?;
    let name = required_text("name", request.name.as_deref(), 1, 256)?;
    let url = required_text("url", request.url.as_deref(), 1, 256)?;
    let token = required_text("token", request.token.as_deref(), 1, 256)?;
    let enabled = request
        .enabled
        .ok_or_else(|| ApiError::bad_request("The enabled field is required."))?;
    let events = request
        .events
        .ok_or_else(|| ApiError::bad_request("The events field is required."))?;
    if events.is_empty() || events.len() > MAX_WEBHOOK_EVENTS {
        return Err(ApiError::bad_request(format!(
            "The field events must have between 1 and {MAX_WEBHOOK_EVENTS} items."
        )));
    }
    let created = shared.webhooks.add(NewWebhook {
        name,
        url,
        token,
        enabled,
        events,
    });
    let dto = created.map_err(webhook_error)?;
    Ok((StatusCode::CREATED, Json(dto)))
}

/// The 400 for a refused webhook. The message names the rule, never the secret.
pub(crate) fn webhook_error(error: InvalidWebhook) -> ApiError {
    match error {
        InvalidWebhook::Url => ApiError::bad_request(
            "The field url must be an absolute http URL of at most 256 characters (the sandbox delivers over plain HTTP).",
        ),
        InvalidWebhook::Secret => ApiError::bad_request(
            "The field token must be a string with a minimum length of 1 and a maximum length of 256.",
        ),
        InvalidWebhook::Name => ApiError::bad_request(
            "The field name must be a string with a minimum length of 1 and a maximum length of 256.",
        ),
        InvalidWebhook::Events => ApiError::bad_request(format!(
            "The field events must have at most {MAX_WEBHOOK_EVENTS} items of 1 to 256 characters."
        )),
        InvalidWebhook::TooMany => ApiError::bad_request(error.to_string()),
    }
}

/// `GET /v3/webhooks`: oldest first, paged like every list.
const LIST_WEBHOOKS: ListSpec = ListSpec {
    filters: &[],
    sortable: &["createdAt", "updatedAt"],
};

async fn list_webhooks(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Vec<WebhookDto>>> {
    caller.require_scope("webhook:read")?;
    let query = ListQuery::parse(query.as_deref(), &LIST_WEBHOOKS)?;
    let all = shared.webhooks.list();
    // The DTO's timestamps have a fixed width, so they sort as text.
    let page = query.page_of(all, |webhook, field| match field {
        "updatedAt" => webhook.updated_at().to_owned(),
        _ => webhook.created_at().to_owned(),
    });
    Ok(Json(page))
}

async fn delete_webhook(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_scope("webhook:write")?;
    if shared.webhooks.remove(&id) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("Webhook"))
    }
}

// === products and accounts (read-only: what `check-upstream` asks) ===

async fn get_product(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<ProductDto>> {
    caller.require_scope("product:read")?;
    let domain = lock(&shared.domain);
    let product = domain
        .product(&id)
        .ok_or_else(|| ApiError::not_found("Product"))?;
    let total_licenses = domain
        .licenses()
        .iter()
        .filter(|license| license.product_id == product.id)
        .count();
    Ok(Json(ProductDto::new(product, total_licenses)))
}

async fn get_account(
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<AccountDto>> {
    caller.require_scope("account:read")?;
    // A token sees only its own account; any other id is reported missing (an inference).
    if !id.eq_ignore_ascii_case(seed::ACCOUNT_ID) {
        return Err(ApiError::not_found("Account"));
    }
    Ok(Json(AccountDto::sandbox()))
}

pub(crate) fn domain_error(error: DomainError) -> ApiError {
    match error {
        DomainError::DuplicateEmail => {
            ApiError::new(StatusCode::CONFLICT, "Email address is already taken!")
                .with_code("DUPLICATE_FIELD_VALUE")
        }
        DomainError::DuplicateLicenseKey => {
            ApiError::new(StatusCode::CONFLICT, "License key is already taken!")
                .with_code("DUPLICATE_FIELD_VALUE")
        }
        DomainError::UnknownProduct => {
            ApiError::bad_request("Product does not exist!").with_code("INVALID_PRODUCT_ID")
        }
        // 400 rather than 404: `POST /v3/licenses` declares no 404 in the OpenAPI document,
        // and an id inside a body is a bad body, not a missing resource.
        DomainError::UnknownUser => {
            ApiError::bad_request("User does not exist!").with_code("INVALID_USER_ID")
        }
        DomainError::UnknownLicense => ApiError::not_found("License"),
        DomainError::UnknownActivation => ApiError::not_found("Activation"),
        DomainError::DeactivationLimitReached => ApiError::new(
            StatusCode::CONFLICT,
            "The deactivation limit of the license has been reached!",
        )
        .with_code("DEACTIVATION_LIMIT_REACHED"),
        DomainError::InvalidSubscriptionInterval => {
            ApiError::bad_request("The field subscriptionInterval is not a valid duration.")
        }
    }
}

// === request parsing ===

pub(crate) fn parse_json<T: DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "A non-empty request body is required.",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|error| ApiError::bad_request(format!("The request body is invalid: {error}")))
}

pub(crate) fn required_text<'a>(
    field: &str,
    value: Option<&'a str>,
    min: usize,
    max: usize,
) -> ApiResult<&'a str> {
    let value =
        value.ok_or_else(|| ApiError::bad_request(format!("The {field} field is required.")))?;
    check_length(field, value, min.max(1), max)?;
    Ok(value)
}

pub(crate) fn optional_text<'a>(
    field: &str,
    value: Option<&'a str>,
    min: usize,
    max: usize,
) -> ApiResult<Option<&'a str>> {
    if let Some(value) = value {
        check_length(field, value, min, max)?;
    }
    Ok(value)
}

pub(crate) fn check_length(field: &str, value: &str, min: usize, max: usize) -> ApiResult<()> {
    let length = value.chars().count();
    if length < min || length > max {
        return Err(ApiError::bad_request(format!(
            "The field {field} must be a string with a minimum length of {min} and a maximum length of {max}."
        )));
    }
    Ok(())
}

pub(crate) fn required_email<'a>(field: &str, value: Option<&'a str>) -> ApiResult<&'a str> {
    let value = required_text(field, value, 1, 256)?;
    check_email_format(field, value)?;
    Ok(value)
}

/// Checks the shape of an address (one `@` with text on both sides, no whitespace), not its
/// length.
pub(crate) fn check_email_format(field: &str, value: &str) -> ApiResult<()> {
    let well_formed = match value.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !value.chars().any(char::is_whitespace)
        }
        None => false,
    };
    if !well_formed {
        return Err(ApiError::bad_request(format!(
            "The {field} field is not a valid e-mail address."
        )));
    }
    Ok(())
}

fn one_of(field: &str, value: Option<String>, allowed: &[&str]) -> ApiResult<Option<String>> {
    match value {
        Some(value) if !allowed.contains(&value.as_str()) => Err(ApiError::bad_request(format!(
            "The field {field} must be one of: {}.",
            allowed.join(", ")
        ))),
        value => Ok(value),
    }
}

fn activation_limit(field: &str, value: Option<i64>) -> ApiResult<Option<i32>> {
    value
        .map(|value| {
            i32::try_from(value)
                .ok()
                .filter(|value| *value >= -1)
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "The field {field} must be between -1 and 2147483647."
                    ))
                })
        })
        .transpose()
}

fn subscription_interval(value: Option<String>, now: DateTime<Utc>) -> ApiResult<Option<String>> {
    match &value {
        Some(interval) if !interval.is_empty() && add_interval(now, interval).is_none() => {
            Err(domain_error(DomainError::InvalidSubscriptionInterval))
        }
        _ => Ok(value),
    }
}

pub(crate) fn date_time(field: &str, value: Option<&str>) -> ApiResult<Option<DateTime<Utc>>> {
    value
        .map(|text| {
            DateTime::parse_from_rfc3339(text)
                .map(|parsed| parsed.with_timezone(&Utc))
                .map_err(|_| {
                    ApiError::bad_request(format!("The field {field} is not a valid date-time."))
                })
        })
        .transpose()
}

fn metadata(
    entries: Option<Vec<MetadataRequest>>,
    max_entries: usize,
) -> ApiResult<Vec<NewMetadata>> {
    let entries = entries.unwrap_or_default();
    if entries.len() > max_entries {
        return Err(ApiError::bad_request(format!(
            "The field metadata must have at most {max_entries} items."
        )));
    }
    let mut parsed = Vec::with_capacity(entries.len());
    for entry in entries {
        let key = required_text("metadata.key", entry.key.as_deref(), 1, 256)?.to_owned();
        // `value` is required like `key` (S1: `LicenseMetadataRequestModel` and
        // `UserMetadataRequestModel` list both), though it may be empty.
        let value = entry
            .value
            .as_deref()
            .ok_or_else(|| ApiError::bad_request("The metadata.value field is required."))?;
        check_length("metadata.value", value, 0, 4096)?;
        let value = value.to_owned();
        // The deprecated `visible: true` means "access the metadata on activation" (S1's
        // description of the field), i.e. the `activation` view permission, not `user`.
        let view_permissions = match (entry.view_permissions, entry.visible) {
            (Some(permissions), _) => permissions,
            (None, Some(true)) => vec!["activation".to_owned()],
            (None, _) => Vec::new(),
        };
        if view_permissions.len() > 10
            || view_permissions
                .iter()
                .any(|permission| !VIEW_PERMISSIONS.contains(&permission.as_str()))
        {
            return Err(ApiError::bad_request(format!(
                "The field metadata.viewPermissions must hold at most 10 of: {}.",
                VIEW_PERMISSIONS.join(", ")
            )));
        }
        parsed.push(NewMetadata {
            key,
            value,
            view_permissions,
        });
    }
    Ok(parsed)
}

fn tags(tags: Option<Vec<String>>) -> ApiResult<Vec<String>> {
    let tags = tags.unwrap_or_default();
    if tags.len() > MAX_TAGS {
        return Err(ApiError::bad_request(format!(
            "The field tags must have at most {MAX_TAGS} items."
        )));
    }
    for tag in &tags {
        check_length("tags", tag, 1, 256)?;
    }
    Ok(tags)
}

/// What one list endpoint accepts besides `page` and `limit`: its filter parameters, exactly
/// as sent (`productId[eq]`, or a plain name such as `userId`), and the fields `sort` may name.
pub(crate) struct ListSpec {
    pub(crate) filters: &'static [&'static str],
    pub(crate) sortable: &'static [&'static str],
}

/// `page`, `limit`, `sort` and the filters of a list request.
///
/// Strict on purpose: a filter the sandbox does not implement, or one without its operator
/// (`metadata.key=K` where Cryptlex's deepObject style wants `metadata.key[eq]=K`), is a 400
/// rather than silently ignored. Ignoring it would answer with every record, and a client that
/// deduplicates by filtering would see a match that is not there. What Cryptlex does with such
/// a parameter is not documented; the sandbox chooses the loud answer.
#[derive(Debug)]
pub(crate) struct ListQuery {
    page: usize,
    limit: usize,
    /// `(field, descending)` pairs, most significant first.
    sort: Vec<(String, bool)>,
    params: Vec<(String, String)>,
}

impl ListQuery {
    pub(crate) fn parse(raw: Option<&str>, spec: &ListSpec) -> ApiResult<Self> {
        let params: Vec<(String, String)> =
            url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
                .into_owned()
                .collect();
        for (name, _) in &params {
            let known = ["page", "limit", "sort"].contains(&name.as_str())
                || spec.filters.contains(&name.as_str());
            if known {
                continue;
            }
            let with_operator = format!("{name}[");
            if spec
                .filters
                .iter()
                .any(|filter| filter.starts_with(&with_operator))
            {
                return Err(ApiError::bad_request(format!(
                    "The filter {name} needs an operator, e.g. {name}[eq]=value."
                )));
            }
            return Err(ApiError::bad_request(format!(
                "The query parameter {name} is not supported by the sandbox."
            )));
        }
        let number = |name: &str, default: usize, max: usize| -> ApiResult<usize> {
            let Some((_, text)) = params.iter().find(|(key, _)| key == name) else {
                return Ok(default);
            };
            text.parse::<usize>()
                .ok()
                .filter(|value| (1..=max).contains(value))
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "The field {name} must be a number between 1 and {max}."
                    ))
                })
        };
        let sort = match params.iter().find(|(key, _)| key == "sort") {
            Some((_, text)) => parse_sort(text, spec.sortable)?,
            None => Vec::new(),
        };
        Ok(ListQuery {
            page: number("page", 1, i32::MAX as usize)?,
            limit: number("limit", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?,
            sort,
            params,
        })
    }

    /// Returns the value of the first of `names` present in the query.
    pub(crate) fn filter(&self, names: &[&str]) -> Option<&str> {
        names.iter().find_map(|name| {
            self.params
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.as_str())
        })
    }

    /// Returns the `(operator, value)` pairs given for a deepObject filter, e.g. `("eq", v)`
    /// for `licenseId[eq]=v`.
    pub(crate) fn operators<'a>(
        &'a self,
        base: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.params.iter().filter_map(move |(name, value)| {
            let operator = name
                .strip_prefix(base)?
                .strip_prefix('[')?
                .strip_suffix(']')?;
            Some((operator, value.as_str()))
        })
    }

    /// Returns the requested page of `items` (given in creation order, Cryptlex's default),
    /// sorted first when `sort` asks; `sort_key` gives an item's value of a sortable field.
    pub(crate) fn page_of<T>(
        &self,
        mut items: Vec<T>,
        sort_key: impl Fn(&T, &str) -> String,
    ) -> Vec<T> {
        if !self.sort.is_empty() {
            // A stable sort keeps creation order among equal keys.
            items.sort_by(|left, right| {
                self.sort
                    .iter()
                    .map(|(field, descending)| {
                        let order = sort_key(left, field).cmp(&sort_key(right, field));
                        if *descending { order.reverse() } else { order }
                    })
                    .find(|order| order.is_ne())
                    .unwrap_or(std::cmp::Ordering::Equal)
            });
        }
        let skipped = (self.page - 1).saturating_mul(self.limit);
        items.into_iter().skip(skipped).take(self.limit).collect()
    }
}

/// Parses `sort`: `+field` or `-field`, up to six joined by `|` (S1's pattern
/// `([+-]\w*\.*\w*){1}(\|[+-]\w*){0,5}`), each naming a field the list can sort by.
fn parse_sort(text: &str, sortable: &[&str]) -> ApiResult<Vec<(String, bool)>> {
    let invalid = || {
        ApiError::bad_request(format!(
            "The field sort must be +field or -field (up to 6, joined by |), with field one of: {}.",
            sortable.join(", ")
        ))
    };
    let keys: Vec<&str> = text.split('|').collect();
    if keys.len() > 6 {
        return Err(invalid());
    }
    keys.into_iter()
        .map(|key| {
            let (descending, field) = match key.split_at_checked(1) {
                Some(("-", field)) => (true, field),
                // An unescaped `+` arrives as a space, as form decoding (and ASP.NET) reads it.
                Some(("+" | " ", field)) => (false, field),
                _ => return Err(invalid()),
            };
            if !sortable.contains(&field) {
                return Err(invalid());
            }
            Ok((field.to_owned(), descending))
        })
        .collect()
}

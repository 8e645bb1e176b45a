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
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::{DateTime, Utc};
use http::StatusCode;
use secrecy::SecretString;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::controls;
use crate::pipeline::{Caller, front_door};
use crate::seed;
use crate::shared::{Shared, lock};
use crate::state::{DomainError, NewLicense, NewMetadata, NewUser, add_interval};
use crate::tokens::TokenPair;
use crate::wire::{
    AUTHENTICATION_FAILED_MESSAGE, AccessTokenDto, ApiError, BaseProfileDto, LicenseDto, UserDto,
    UserLicenseDto,
};

/// The page size when a list request gives no `limit` (an inference; Cryptlex does not say).
const DEFAULT_PAGE_SIZE: usize = 10;
const MAX_PAGE_SIZE: usize = 100;
const MAX_LICENSE_METADATA: usize = 50;
const MAX_USER_METADATA: usize = 20;
const MAX_TAGS: usize = 5;
const VIEW_PERMISSIONS: &[&str] = &["activation", "user", "organization", "reseller"];
const LICENSE_TYPES: &[&str] = &["node-locked", "hosted-floating", "on-premise-floating"];

type ApiResult<T> = Result<T, ApiError>;

/// Builds the whole application: API routes, control routes, fallbacks, and the front door.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v3/accounts/login", post(login))
        .route("/v3/accounts/login-refresh-token", post(refresh))
        .route("/v3/accounts/logout", post(logout))
        .route("/v3/me", get(me))
        .route("/v3/me/licenses", get(my_licenses))
        .route("/v3/me/licenses/{id}", get(my_license))
        .route("/v3/users", get(list_users).post(create_user))
        .route("/v3/users/{id}", get(get_user))
        .route("/v3/licenses", get(list_licenses).post(create_license))
        .route("/v3/licenses/{id}", get(get_license))
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
}

async fn login(State(shared): State<Arc<Shared>>, body: Bytes) -> ApiResult<Json<AccessTokenDto>> {
    let request: LoginRequest = parse_json(&body)?;
    let email = required_email("email", request.email.as_deref())?;
    let password = required_text("password", request.password.as_deref(), 8, 256)?;
    optional_text("accountId", request.account_id.as_deref(), 0, 36)?;
    optional_text("accountAlias", request.account_alias.as_deref(), 0, 256)?;

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
    let user = lock(&shared.domain).check_password(email, password, now);
    // The code is an inference borrowed from the activation API's `AUTHENTICATION_FAILED`.
    let user = user.ok_or_else(|| {
        ApiError::bad_request(AUTHENTICATION_FAILED_MESSAGE).with_code("AUTHENTICATION_FAILED")
    })?;
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

async fn my_licenses(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Vec<UserLicenseDto>>> {
    let (user_id, _) = caller.any_token()?;
    let query = ListQuery::parse(query.as_deref())?;
    let product_filter = query.filter(&["productId[eq]", "productId"]);

    let domain = lock(&shared.domain);
    let owned = domain.licenses().iter().filter(|license| {
        license.user_id.as_deref() == Some(user_id)
            && product_filter.is_none_or(|product_id| license.product_id == product_id)
    });
    let page = query
        .page_of(owned)
        .map(|license| {
            let product = domain
                .product_display_name(&license.product_id)
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
        .product_display_name(&license.product_id)
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
    /// Deprecated and write-only upstream; `true` without permissions means "user can see it".
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

    let created = lock(&shared.domain).create_user(new_user, Utc::now());
    let user = created.map_err(domain_error)?;
    lock(&shared.journal).stats.users_created += 1;
    Ok((StatusCode::CREATED, Json(UserDto::from(&user))))
}

async fn list_users(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Vec<UserDto>>> {
    caller.require_scope("user:read")?;
    let query = ListQuery::parse(query.as_deref())?;
    // Older clients send the flat `email=`; it means the same as `email[eq]=`.
    let email = query.filter(&["email[eq]", "email"]);

    let domain = lock(&shared.domain);
    let matching = domain
        .users()
        .iter()
        .filter(|user| email.is_none_or(|email| user.email.eq_ignore_ascii_case(email)));
    Ok(Json(query.page_of(matching).map(UserDto::from).collect()))
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
    drop(domain);
    lock(&shared.journal).stats.licenses_created += 1;
    Ok((StatusCode::CREATED, Json(dto)))
}

async fn list_licenses(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Vec<LicenseDto>>> {
    caller.require_scope("license:read")?;
    let query = ListQuery::parse(query.as_deref())?;
    // The flat names are deprecated since API 3.44.0 but still sent by older integrations.
    let metadata_key = query.filter(&["metadata.key[eq]", "metadataKey"]);
    let metadata_value = query.filter(&["metadata.value[eq]", "metadataValue"]);
    let user_id = query.filter(&["userId", "userId[eq]"]);
    let product_id = query.filter(&["productId[eq]", "productId"]);
    let email = query.filter(&["user.email[eq]", "email"]);

    let domain = lock(&shared.domain);
    let matching = domain.licenses().iter().filter(|license| {
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
    });
    let page = query
        .page_of(matching)
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

fn domain_error(error: DomainError) -> ApiError {
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
        DomainError::InvalidSubscriptionInterval => {
            ApiError::bad_request("The field subscriptionInterval is not a valid duration.")
        }
    }
}

// === request parsing ===

fn parse_json<T: DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "A non-empty request body is required.",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|error| ApiError::bad_request(format!("The request body is invalid: {error}")))
}

fn required_text<'a>(
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

fn optional_text<'a>(
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

fn check_length(field: &str, value: &str, min: usize, max: usize) -> ApiResult<()> {
    let length = value.chars().count();
    if length < min || length > max {
        return Err(ApiError::bad_request(format!(
            "The field {field} must be a string with a minimum length of {min} and a maximum length of {max}."
        )));
    }
    Ok(())
}

fn required_email<'a>(field: &str, value: Option<&'a str>) -> ApiResult<&'a str> {
    let value = required_text(field, value, 1, 256)?;
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
    Ok(value)
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

fn date_time(field: &str, value: Option<&str>) -> ApiResult<Option<DateTime<Utc>>> {
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
        let value = optional_text("metadata.value", entry.value.as_deref(), 0, 4096)?
            .unwrap_or_default()
            .to_owned();
        let view_permissions = match (entry.view_permissions, entry.visible) {
            (Some(permissions), _) => permissions,
            (None, Some(true)) => vec!["user".to_owned()],
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

/// `page`, `limit` and the filters of a list request.
#[derive(Debug)]
struct ListQuery {
    page: usize,
    limit: usize,
    params: Vec<(String, String)>,
}

impl ListQuery {
    fn parse(raw: Option<&str>) -> ApiResult<Self> {
        let params: Vec<(String, String)> =
            url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
                .into_owned()
                .collect();
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
        Ok(ListQuery {
            page: number("page", 1, i32::MAX as usize)?,
            limit: number("limit", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?,
            params,
        })
    }

    /// Returns the value of the first of `names` present in the query.
    fn filter(&self, names: &[&str]) -> Option<&str> {
        names.iter().find_map(|name| {
            self.params
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.as_str())
        })
    }

    /// Returns the requested page of `items`, which are already in creation order.
    fn page_of<I: Iterator>(&self, items: I) -> std::iter::Take<std::iter::Skip<I>> {
        let skipped = (self.page - 1).saturating_mul(self.limit);
        items.skip(skipped).take(self.limit)
    }
}

//! Two-factor enrolment, profile and password changes, password reset, and login's second
//! step. What each refusal answers is decided in the table of [`crate::portal`].

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use http::{HeaderMap, StatusCode};
use secrecy::SecretString;
use serde::Deserialize;

use super::state::{PasswordResetMail, TwoFactorError};
use super::wire::{ResetPasswordTokenDto, TwoFactorRecoveryCodesDto, TwoFactorSecretDto};
use crate::pipeline::Caller;
use crate::routes::{ApiResult, check_email_format, optional_text, parse_json, required_text};
use crate::seed;
use crate::shared::{Shared, lock};
use crate::state::Domain;
use crate::totp;
use crate::webhooks::events;
use crate::wire::{ApiError, BaseProfileDto, UserDto};

/// Where reset links point when the request carries no usable `Origin` header.
const DEFAULT_PORTAL_ORIGIN: &str = "https://portal.sandbox.cryptlex.invalid";

fn two_factor_error(error: TwoFactorError) -> ApiError {
    match error {
        TwoFactorError::CodeRequired => {
            ApiError::bad_request("A two-factor authentication code is required!")
                .with_code("TWO_FACTOR_CODE_REQUIRED")
        }
        TwoFactorError::InvalidCode => {
            ApiError::bad_request("The two-factor authentication code is invalid!")
                .with_code("INVALID_TWO_FACTOR_CODE")
        }
        TwoFactorError::NotEnabled => ApiError::new(
            StatusCode::CONFLICT,
            "Two-factor authentication is not enabled!",
        )
        .with_code("TWO_FACTOR_NOT_ENABLED"),
    }
}

/// Login's second step, after the password matched: nothing to do for a user without 2FA
/// (codes sent anyway are ignored), else a code or a recovery code must pass.
pub(crate) fn check_login_second_factor(
    domain: &mut Domain,
    user_id: &str,
    code: Option<&str>,
    recovery_code: Option<&str>,
    now: DateTime<Utc>,
) -> ApiResult<()> {
    if !domain
        .user(user_id)
        .is_some_and(|user| user.two_factor_enabled)
    {
        return Ok(());
    }
    domain
        .portal
        .check_login(user_id, code, recovery_code, now)
        .map_err(two_factor_error)
}

/// `POST /v3/me/2fa-secret`: a new pending secret, as an otpauth URL. No body.
pub(super) async fn create_two_factor_secret(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<TwoFactorSecretDto>> {
    let (user_id, _) = caller.any_token()?;
    let mut domain = lock(&shared.domain);
    let email = domain
        .user(user_id)
        .ok_or_else(ApiError::unauthorized)?
        .email
        .clone();
    let secret = domain.portal.new_pending_secret(user_id);
    Ok(Json(TwoFactorSecretDto {
        url: totp::otpauth_url(&email, &secret),
        email,
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TwoFactorCodeRequest {
    two_factor_code: Option<String>,
}

/// `POST /v3/me/2fa-recovery-codes`: ten new recovery codes, replacing the old ones.
pub(super) async fn create_recovery_codes(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult<Json<TwoFactorRecoveryCodesDto>> {
    let (user_id, _) = caller.any_token()?;
    let request: TwoFactorCodeRequest = parse_json(&body)?;
    let code = required_text("twoFactorCode", request.two_factor_code.as_deref(), 6, 12)?;
    let recovery_codes = lock(&shared.domain)
        .portal
        .new_recovery_codes(user_id, code, Utc::now())
        .map_err(two_factor_error)?;
    Ok(Json(TwoFactorRecoveryCodesDto { recovery_codes }))
}

/// `MeUpdateRequestModel`: every field optional and nullable.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateProfileRequest {
    first_name: Option<String>,
    last_name: Option<String>,
    email: Option<String>,
    /// Accepted and ignored: the sandbox has no single sign-on.
    #[serde(rename = "googleSsoEnabled")]
    _google_sso_enabled: Option<bool>,
    two_factor_enabled: Option<bool>,
    two_factor_code: Option<String>,
}

/// `PATCH /v3/me`: names, email, and turning 2FA on or off; fires `user.updated`.
pub(super) async fn update_profile(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult<Json<BaseProfileDto>> {
    let (user_id, _) = caller.any_token()?;
    let request: UpdateProfileRequest = parse_json(&body)?;
    let first_name = optional_text("firstName", request.first_name.as_deref(), 1, 256)?;
    let last_name = optional_text("lastName", request.last_name.as_deref(), 0, 256)?;
    let email = request.email.as_deref();
    if let Some(email) = email {
        check_email_format("email", email)?;
    }
    let code = optional_text("twoFactorCode", request.two_factor_code.as_deref(), 6, 6)?;

    let now = Utc::now();
    let mut domain = lock(&shared.domain);
    let user = domain.user(user_id).ok_or_else(ApiError::unauthorized)?;
    let two_factor_was_on = user.two_factor_enabled;
    if let Some(email) = email
        && domain
            .user_by_email(email)
            .is_some_and(|holder| holder.id != user_id)
    {
        return Err(ApiError::bad_request("Email address is already taken!")
            .with_code("DUPLICATE_FIELD_VALUE"));
    }
    // The 2FA step first: a refused code must leave every other field as it was. A missing
    // code is checked as an empty one, so "not enabled" still wins over "wrong code". S1
    // declares no 409 on this operation (it does on 2fa-recovery-codes), so "not enabled" is a
    // 400 here, with the same code.
    let code = code.unwrap_or_default();
    let not_enabled =
        |message: &'static str| ApiError::bad_request(message).with_code("TWO_FACTOR_NOT_ENABLED");
    match request.two_factor_enabled {
        Some(true) => domain
            .portal
            .enable(user_id, code, now)
            .map_err(|error| match error {
                TwoFactorError::NotEnabled => not_enabled(
                    "Generate a two-factor secret before enabling two-factor authentication!",
                ),
                other => two_factor_error(other),
            })?,
        Some(false) if !two_factor_was_on => {
            return Err(not_enabled("Two-factor authentication is not enabled!"));
        }
        Some(false) => domain
            .portal
            .disable(user_id, code, now)
            .map_err(two_factor_error)?,
        None => {}
    }

    let user = domain
        .user_mut(user_id)
        .ok_or_else(ApiError::unauthorized)?;
    if let Some(enabled) = request.two_factor_enabled {
        user.two_factor_enabled = enabled;
    }
    if let Some(first_name) = first_name {
        first_name.clone_into(&mut user.first_name);
    }
    if let Some(last_name) = last_name {
        last_name.clone_into(&mut user.last_name);
    }
    if let Some(email) = email {
        email.clone_into(&mut user.email);
    }
    user.updated_at = now;
    let user = user.clone();
    shared
        .webhooks
        .fire(events::USER_UPDATED, &UserDto::from(&user));
    Ok(Json(BaseProfileDto::from(&user)))
}

/// `UserPasswordRequestModel`. No `Debug`: it holds passwords.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdatePasswordRequest {
    old_password: Option<String>,
    new_password: Option<String>,
}

/// `POST /v3/users/{id}/update-password`: only as the user themself (S1: "only when
/// authenticated as the given user"), with the current password. 204.
pub(super) async fn update_password(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let (user_id, _) = caller.any_token()?;
    let request: UpdatePasswordRequest = parse_json(&body)?;
    let old_password = required_text("oldPassword", request.old_password.as_deref(), 8, 256)?;
    let new_password = required_text("newPassword", request.new_password.as_deref(), 8, 256)?;
    if id != user_id {
        return Err(ApiError::forbidden());
    }
    let mut domain = lock(&shared.domain);
    if domain.user(&id).is_none() {
        return Err(ApiError::not_found("User"));
    }
    if !domain.password_matches(&id, old_password) {
        return Err(
            ApiError::bad_request("The old password is incorrect!").with_code("INVALID_PASSWORD")
        );
    }
    domain.set_password(&id, SecretString::from(new_password.to_owned()));
    Ok(StatusCode::NO_CONTENT)
}

/// `UserEmailRequestModel`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResetRequest {
    email: Option<String>,
    account_alias: Option<String>,
}

/// `POST /v3/accounts/reset-password-request`: no token; 202 and an empty body whether or
/// not the address belongs to anyone, and a mail only when it does.
pub(super) async fn request_password_reset(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let request: ResetRequest = parse_json(&body)?;
    let email = required_text("email", request.email.as_deref(), 1, usize::MAX)?;
    check_email_format("email", email)?;
    let alias = optional_text("accountAlias", request.account_alias.as_deref(), 0, 256)?;
    let this_account = alias.is_none_or(|alias| alias.is_empty() || alias == seed::ACCOUNT_ALIAS);

    let now = Utc::now();
    let mut domain = lock(&shared.domain);
    let user = domain
        .user_by_email(email)
        .filter(|_| this_account)
        .map(|user| (user.id.clone(), user.email.clone()));
    if let Some((user_id, to)) = user {
        let token = domain.portal.mint_reset_token(&user_id, now);
        let link = format!(
            "{}/reset-password?userId={user_id}&token={token}",
            reset_origin(&headers)
        );
        domain.portal.record_mail(PasswordResetMail {
            to,
            user_id,
            token,
            link,
            sent_at: now,
        });
    }
    Ok(StatusCode::ACCEPTED)
}

/// The request's `Origin` when it is an absolute `http(s)` origin, else the default.
fn reset_origin(headers: &HeaderMap) -> String {
    headers
        .get(http::header::ORIGIN)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| url::Url::parse(text).ok())
        .filter(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some())
        .map(|url| url.origin().ascii_serialization())
        .unwrap_or_else(|| DEFAULT_PORTAL_ORIGIN.to_owned())
}

/// `POST /v3/users/{id}/reset-password-token`: a PAT with `user:write` mints a token for the
/// caller to mail itself. No body.
pub(super) async fn create_reset_token(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<ResetPasswordTokenDto>> {
    caller.require_scope("user:write")?;
    let mut domain = lock(&shared.domain);
    if domain.user(&id).is_none() {
        return Err(ApiError::not_found("User"));
    }
    let reset_password_token = domain.portal.mint_reset_token(&id, Utc::now());
    Ok(Json(ResetPasswordTokenDto {
        reset_password_token,
    }))
}

/// `ResetPasswordRequestModel`. No `Debug`: it holds a token and a password.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResetPasswordRequest {
    token: Option<String>,
    new_password: Option<String>,
}

/// `POST /v3/users/{id}/reset-password`: no token needed; the reset token is the credential,
/// spent by its first successful use. 204.
pub(super) async fn reset_password(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let request: ResetPasswordRequest = parse_json(&body)?;
    let token = required_text("token", request.token.as_deref(), 1, 2048)?;
    let new_password = required_text("newPassword", request.new_password.as_deref(), 8, 256)?;
    let mut domain = lock(&shared.domain);
    if domain.user(&id).is_none() {
        return Err(ApiError::not_found("User"));
    }
    if !domain.portal.spend_reset_token(&id, token, Utc::now()) {
        return Err(
            ApiError::bad_request("The reset token is invalid or has expired!")
                .with_code("INVALID_RESET_TOKEN"),
        );
    }
    domain.set_password(&id, SecretString::from(new_password.to_owned()));
    Ok(StatusCode::NO_CONTENT)
}

//! Cryptlex's JSON for the account calls (two-factor enrolment, profile
//! changes, passwords and password reset), as its OpenAPI document has them
//! (`shared/cryptlex-api.md`, the project's `contract/`). Private to the
//! `cryptlex` module, like `wire`.
//!
//! Every request body here is `additionalProperties: false` upstream, so
//! optional fields are left out rather than sent as `null` unless the
//! document lists them as nullable and the gateway means "no change".

use serde::{Deserialize, Serialize};

/// `MeUpdateRequestModel` (`PATCH /v3/me`): only the fields that change are
/// sent.
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct MeUpdateBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) first_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) last_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) two_factor_enabled: Option<bool>,
    /// Exactly six digits upstream: a TOTP code, never a recovery code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) two_factor_code: Option<&'a str>,
}

/// `TwoFactorSecretDto` (`POST /v3/me/2fa-secret`): the otpauth URI.
#[derive(Deserialize)]
pub(super) struct TwoFactorSecretDto {
    pub(super) url: String,
}

/// `TwoFactorCodeRequestModel` (`POST /v3/me/2fa-recovery-codes`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TwoFactorCodeBody<'a> {
    pub(super) two_factor_code: &'a str,
}

/// `TwoFactorRecoveryCodesDto`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct TwoFactorRecoveryCodesDto {
    pub(super) recovery_codes: Vec<String>,
}

/// `UserPasswordRequestModel` (`POST /v3/users/{id}/update-password`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct UpdatePasswordBody<'a> {
    pub(super) old_password: &'a str,
    pub(super) new_password: &'a str,
}

/// `UserEmailRequestModel` (`POST /v3/accounts/reset-password-request`).
/// It has `accountAlias` but no `accountId`: a gateway configured with the
/// account's id sends the email alone.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ResetRequestBody<'a> {
    pub(super) email: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) account_alias: Option<&'a str>,
}

/// `ResetPasswordRequestModel` (`POST /v3/users/{id}/reset-password`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ResetPasswordBody<'a> {
    pub(super) token: &'a str,
    pub(super) new_password: &'a str,
}

/// `ResetPasswordTokenDto` (`POST /v3/users/{id}/reset-password-token`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ResetPasswordTokenDto {
    pub(super) reset_password_token: String,
}

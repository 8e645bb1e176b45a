//! Cryptlex's JSON, as documented in the v3 OpenAPI (see
//! `shared/cryptlex-api.md`). Private to the `cryptlex` module: nothing
//! outside it sees these shapes.
//!
//! Deserialization is lenient (unknown fields ignored, optional fields
//! defaulted) because Cryptlex adds fields over time; only the fields the
//! gateway relies on are required.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::{IssuedLicense, UserLicense, UserProfile};

/// `LoginRequestModel`: exactly one of the account fields is set.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct LoginBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) account_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) account_alias: Option<&'a str>,
    pub(super) email: &'a str,
    pub(super) password: &'a str,
}

/// Body of `POST /v3/accounts/login-refresh-token`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RefreshBody<'a> {
    pub(super) refresh_token: &'a str,
}

/// `AccessTokenDto`. `refreshToken` is new in 3.74.0, so tolerate its absence.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct AccessTokenDto {
    pub(super) access_token: String,
    #[serde(default)]
    pub(super) refresh_token: Option<String>,
}

/// `HttpErrorResponseDto`: `{message, code?}`.
#[derive(Deserialize)]
pub(super) struct ErrorDto {
    #[serde(default)]
    pub(super) message: Option<String>,
    #[serde(default)]
    pub(super) code: Option<String>,
}

/// `BaseProfileDto` (from `GET /v3/me`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ProfileDto {
    id: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    first_name: Option<String>,
    #[serde(default)]
    last_name: Option<String>,
    #[serde(default)]
    company: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    two_factor_enabled: bool,
    #[serde(default)]
    created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    last_login_at: Option<DateTime<Utc>>,
}

impl From<ProfileDto> for UserProfile {
    fn from(dto: ProfileDto) -> Self {
        Self {
            id: dto.id,
            email: dto.email,
            first_name: dto.first_name.unwrap_or_default(),
            last_name: dto.last_name.unwrap_or_default(),
            name: dto.name.unwrap_or_default(),
            company: dto.company.unwrap_or_default(),
            role: dto.role.unwrap_or_default(),
            two_factor_enabled: dto.two_factor_enabled,
            created_at: dto.created_at,
            last_login_at: dto.last_login_at,
        }
    }
}

/// `{displayName}` references (product, product version).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DisplayNameDto {
    #[serde(default)]
    display_name: Option<String>,
}

/// `MetadataDto` / `AdminMetadataDto` (the admin view adds permissions).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct MetadataDto {
    key: String,
    #[serde(default)]
    value: Option<String>,
}

/// `UserLicenseDto`, the reduced view `/v3/me/licenses` returns.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct UserLicenseDto {
    id: String,
    key: String,
    #[serde(default, rename = "type")]
    license_type: Option<String>,
    #[serde(default)]
    revoked: bool,
    #[serde(default)]
    suspended: bool,
    #[serde(default)]
    perpetual: bool,
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    allowed_activations: i32,
    #[serde(default)]
    total_activations: i32,
    #[serde(default)]
    subscription_interval: Option<String>,
    #[serde(default)]
    created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    metadata: Vec<MetadataDto>,
    #[serde(default)]
    product: Option<DisplayNameDto>,
}

impl From<UserLicenseDto> for UserLicense {
    fn from(dto: UserLicenseDto) -> Self {
        Self {
            id: dto.id,
            key: dto.key,
            license_type: dto.license_type.unwrap_or_default(),
            product_name: dto
                .product
                .and_then(|product| product.display_name)
                .unwrap_or_default(),
            revoked: dto.revoked,
            suspended: dto.suspended,
            perpetual: dto.perpetual,
            expires_at: dto.expires_at,
            allowed_activations: dto.allowed_activations,
            total_activations: dto.total_activations,
            subscription_interval: dto.subscription_interval.unwrap_or_default(),
            created_at: dto.created_at,
            metadata: metadata_map(dto.metadata),
        }
    }
}

/// `UserDto` (from `/v3/users`); only the fields the gateway uses.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct UserDto {
    pub(super) id: String,
    #[serde(default)]
    pub(super) email: String,
}

/// `UserRequestModel` for `POST /v3/users`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct NewUserBody<'a> {
    pub(super) email: &'a str,
    pub(super) first_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) last_name: Option<&'a str>,
    pub(super) password: &'a str,
    pub(super) role: &'a str,
}

/// A metadata entry in `LicenseRequestModel`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct NewMetadataBody<'a> {
    pub(super) key: &'a str,
    pub(super) value: &'a str,
    /// Empty: visible to administrators only, like Cryptlex's own payment
    /// integrations do for their bookkeeping keys.
    pub(super) view_permissions: Vec<&'a str>,
}

/// `LicenseRequestModel` for `POST /v3/licenses`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct NewLicenseBody<'a> {
    pub(super) product_id: &'a str,
    pub(super) user_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) license_template_id: Option<&'a str>,
    pub(super) metadata: Vec<NewMetadataBody<'a>>,
}

/// `LicenseDto`, the administrator's view (from `/v3/licenses`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct LicenseDto {
    id: String,
    key: String,
    #[serde(default)]
    product_id: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default, rename = "type")]
    license_type: Option<String>,
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    allowed_activations: i32,
    #[serde(default)]
    subscription_interval: Option<String>,
    #[serde(default)]
    created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    metadata: Vec<MetadataDto>,
}

impl LicenseDto {
    /// Converts to the domain view, leaving out `hidden_keys` (the gateway's
    /// bookkeeping metadata).
    pub(super) fn into_issued(self, hidden_keys: &[&str]) -> IssuedLicense {
        let mut metadata = metadata_map(self.metadata);
        metadata.retain(|key, _| !hidden_keys.contains(&key.as_str()));
        IssuedLicense {
            id: self.id,
            key: self.key,
            product_id: self.product_id.unwrap_or_default(),
            user_id: self.user_id.unwrap_or_default(),
            license_type: self.license_type.unwrap_or_default(),
            expires_at: self.expires_at,
            allowed_activations: self.allowed_activations,
            subscription_interval: self.subscription_interval.unwrap_or_default(),
            created_at: self.created_at,
            metadata,
        }
    }
}

fn metadata_map(entries: Vec<MetadataDto>) -> BTreeMap<String, String> {
    entries
        .into_iter()
        .map(|entry| (entry.key, entry.value.unwrap_or_default()))
        .collect()
}

//! Cryptlex's JSON shapes: response DTOs, the `{message, code?}` error body and timestamps.
//!
//! Field names are copied from Cryptlex's OpenAPI document (`LicenseDto`, `UserLicenseDto`,
//! `UserDto`, `BaseProfileDto`, `HttpErrorResponseDto`). Values for the many license policy
//! knobs the sandbox does not model are fixed, plausible defaults, so strict clients that
//! require every documented field still decode the responses.

use std::borrow::Cow;

use axum::Json;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use http::StatusCode;
use serde::Serialize;

use crate::state::{LicenseRecord, MetadataRecord, UserRecord};

/// The 401/403 message Cryptlex sends for a missing, bad or under-privileged token.
pub(crate) const INVALID_TOKEN_MESSAGE: &str =
    "Invalid access token or required permissions are missing!";

/// The 400 message for any failed login, including a missing account (confirmed by the forum).
pub(crate) const AUTHENTICATION_FAILED_MESSAGE: &str = "Authentication Failed. Please try again!";

/// Formats a timestamp as .NET's round-trip format does: 7 fractional digits and `Z`.
pub(crate) fn timestamp(at: DateTime<Utc>) -> String {
    // A leap second shows up as nanos >= 1e9; clamping keeps the field 7 digits wide.
    let ticks = (at.timestamp_subsec_nanos() / 100).min(9_999_999);
    format!("{}.{ticks:07}Z", at.format("%Y-%m-%dT%H:%M:%S"))
}

fn optional_timestamp(at: Option<DateTime<Utc>>) -> Option<String> {
    at.map(timestamp)
}

/// An error answer: `{"message": "...", "code": "..."}` with `code` left out when absent.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: Cow<'static, str>,
    pub(crate) code: Option<&'static str>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a str>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<Cow<'static, str>>) -> Self {
        ApiError {
            status,
            message: message.into(),
            code: None,
        }
    }

    pub(crate) fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub(crate) fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, INVALID_TOKEN_MESSAGE)
    }

    pub(crate) fn forbidden() -> Self {
        Self::new(StatusCode::FORBIDDEN, INVALID_TOKEN_MESSAGE)
    }

    pub(crate) fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("{what} not found!"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            message: &self.message,
            code: self.code,
        };
        (self.status, Json(body)).into_response()
    }
}

/// `BaseProfileDto`, returned by `GET /v3/me`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BaseProfileDto {
    id: String,
    created_at: String,
    updated_at: String,
    name: String,
    first_name: String,
    last_name: String,
    email: String,
    role: String,
    two_factor_enabled: bool,
    google_sso_enabled: bool,
    last_login_at: Option<String>,
    company: String,
}

impl From<&UserRecord> for BaseProfileDto {
    fn from(user: &UserRecord) -> Self {
        BaseProfileDto {
            id: user.id.clone(),
            created_at: timestamp(user.created_at),
            updated_at: timestamp(user.updated_at),
            name: user.name(),
            first_name: user.first_name.clone(),
            last_name: user.last_name.clone(),
            email: user.email.clone(),
            role: user.role.clone(),
            two_factor_enabled: false,
            google_sso_enabled: false,
            last_login_at: optional_timestamp(user.last_login_at),
            company: user.company.clone().unwrap_or_default(),
        }
    }
}

/// `UserDto`, returned by `/v3/users*` and embedded in `LicenseDto.user`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UserDto {
    id: String,
    created_at: String,
    updated_at: String,
    name: String,
    first_name: String,
    last_name: String,
    email: String,
    role: String,
    /// Deprecated upstream but still required in the schema.
    roles: Vec<String>,
    two_factor_enabled: bool,
    google_sso_enabled: bool,
    allow_customer_portal_access: bool,
    last_login_at: Option<String>,
    last_seen_at: Option<String>,
    company: Option<String>,
    organization_id: Option<String>,
    reseller_id: Option<String>,
    metadata: Vec<AdminMetadataDto>,
    tags: Vec<String>,
    email_preference: EmailPreferenceDto,
}

#[derive(Debug, Serialize)]
struct EmailPreferenceDto {
    metrics: bool,
}

impl From<&UserRecord> for UserDto {
    fn from(user: &UserRecord) -> Self {
        UserDto {
            id: user.id.clone(),
            created_at: timestamp(user.created_at),
            updated_at: timestamp(user.updated_at),
            name: user.name(),
            first_name: user.first_name.clone(),
            last_name: user.last_name.clone(),
            email: user.email.clone(),
            role: user.role.clone(),
            roles: vec![user.role.clone()],
            two_factor_enabled: false,
            google_sso_enabled: false,
            allow_customer_portal_access: user.allow_customer_portal_access,
            last_login_at: optional_timestamp(user.last_login_at),
            last_seen_at: optional_timestamp(user.last_login_at),
            company: user.company.clone(),
            organization_id: None,
            reseller_id: None,
            metadata: user.metadata.iter().map(AdminMetadataDto::from).collect(),
            tags: user.tags.clone(),
            email_preference: EmailPreferenceDto { metrics: false },
        }
    }
}

/// `AdminMetadataDto`: a metadata entry with who may see it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AdminMetadataDto {
    id: String,
    created_at: String,
    updated_at: String,
    key: String,
    value: String,
    view_permissions: Vec<String>,
    /// Read-only upstream; derived from the `user` view permission.
    visible: bool,
}

impl From<&MetadataRecord> for AdminMetadataDto {
    fn from(entry: &MetadataRecord) -> Self {
        AdminMetadataDto {
            id: entry.id.clone(),
            created_at: timestamp(entry.created_at),
            updated_at: timestamp(entry.updated_at),
            key: entry.key.clone(),
            value: entry.value.clone(),
            view_permissions: entry.view_permissions.clone(),
            visible: entry.visible_to_user(),
        }
    }
}

/// `MetadataDto`: a metadata entry as its user sees it, without permissions.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MetadataDto {
    id: String,
    created_at: String,
    updated_at: String,
    key: String,
    value: String,
}

impl From<&MetadataRecord> for MetadataDto {
    fn from(entry: &MetadataRecord) -> Self {
        MetadataDto {
            id: entry.id.clone(),
            created_at: timestamp(entry.created_at),
            updated_at: timestamp(entry.updated_at),
            key: entry.key.clone(),
            value: entry.value.clone(),
        }
    }
}

/// The fields `LicenseDto` and `UserLicenseDto` share.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct LicenseCommon {
    id: String,
    created_at: String,
    updated_at: String,
    key: String,
    #[serde(rename = "type")]
    license_type: String,
    revoked: bool,
    suspended: bool,
    perpetual: bool,
    total_activations: i32,
    total_deactivations: i32,
    allowed_activations: i32,
    allowed_deactivations: i32,
    allowed_floating_clients: i32,
    lease_duration: i64,
    subscription_interval: Option<String>,
    expires_at: Option<String>,
    effective_date: Option<String>,
    notes: Option<String>,
}

impl From<&LicenseRecord> for LicenseCommon {
    fn from(license: &LicenseRecord) -> Self {
        LicenseCommon {
            id: license.id.clone(),
            created_at: timestamp(license.created_at),
            updated_at: timestamp(license.updated_at),
            key: license.key.clone(),
            license_type: license.license_type.clone(),
            revoked: license.revoked,
            suspended: license.suspended,
            perpetual: license.is_perpetual(),
            total_activations: license.total_activations,
            total_deactivations: license.total_deactivations,
            allowed_activations: license.allowed_activations,
            allowed_deactivations: license.allowed_deactivations,
            allowed_floating_clients: 0,
            lease_duration: 0,
            subscription_interval: license.subscription_interval.clone(),
            expires_at: optional_timestamp(license.expires_at),
            effective_date: None,
            notes: license.notes.clone(),
        }
    }
}

/// `UserLicenseDto`: the reduced view `/v3/me/licenses*` returns. No product or user ids.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UserLicenseDto {
    #[serde(flatten)]
    common: LicenseCommon,
    metadata: Vec<MetadataDto>,
    meter_attributes: Vec<serde_json::Value>,
    product: ProductNameDto,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ProductNameDto {
    display_name: String,
}

impl UserLicenseDto {
    pub(crate) fn new(license: &LicenseRecord, product_display_name: &str) -> Self {
        UserLicenseDto {
            common: LicenseCommon::from(license),
            // Only entries the owner may see leave the server through this view.
            metadata: license
                .metadata
                .iter()
                .filter(|entry| entry.visible_to_user())
                .map(MetadataDto::from)
                .collect(),
            meter_attributes: Vec::new(),
            product: ProductNameDto {
                display_name: product_display_name.to_owned(),
            },
        }
    }
}

/// `LicenseDto`: the admin view `/v3/licenses*` returns.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LicenseDto {
    #[serde(flatten)]
    common: LicenseCommon,
    product_id: String,
    user_id: Option<String>,
    user: Option<UserDto>,
    subscription_start_trigger: Option<String>,
    metadata: Vec<AdminMetadataDto>,
    tags: Vec<String>,
    #[serde(flatten)]
    policy: PolicyDefaults,
}

impl LicenseDto {
    pub(crate) fn new(license: &LicenseRecord, owner: Option<&UserRecord>) -> Self {
        LicenseDto {
            common: LicenseCommon::from(license),
            product_id: license.product_id.clone(),
            user_id: license.user_id.clone(),
            user: owner.map(UserDto::from),
            subscription_start_trigger: license.subscription_start_trigger.clone(),
            metadata: license
                .metadata
                .iter()
                .map(AdminMetadataDto::from)
                .collect(),
            tags: license.tags.clone(),
            policy: PolicyDefaults::default(),
        }
    }
}

/// The `LicenseDto` fields the sandbox does not model, at the values a default template gives.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PolicyDefaults {
    server_sync_grace_period: i64,
    server_sync_interval: i64,
    allowed_clock_offset: i64,
    expiring_soon_event_offset: i64,
    fingerprint_matching_strategy: &'static str,
    leasing_strategy: &'static str,
    user_locked: bool,
    require_authentication: bool,
    allow_vm_activation: bool,
    allow_container_activation: bool,
    allow_client_lease_duration: bool,
    disable_geo_location: bool,
    disable_clock_validation: bool,
    crypto_binding_enabled: bool,
    allowed_countries: Vec<String>,
    disallowed_countries: Vec<String>,
    allowed_ip_addresses: Vec<String>,
    disallowed_ip_addresses: Vec<String>,
    allowed_ip_ranges: Vec<String>,
    additional_user_ids: Vec<String>,
    external_user_ids: Vec<String>,
    meter_attributes: Vec<serde_json::Value>,
    organization_id: Option<String>,
    reseller_id: Option<String>,
    activated_at: Option<String>,
    last_used_at: Option<String>,
    maintenance_expires_at: Option<String>,
}

impl Default for PolicyDefaults {
    fn default() -> Self {
        PolicyDefaults {
            server_sync_grace_period: 2_592_000,
            server_sync_interval: 3_600,
            allowed_clock_offset: 0,
            expiring_soon_event_offset: 0,
            fingerprint_matching_strategy: "fuzzy",
            leasing_strategy: "per-machine",
            user_locked: false,
            require_authentication: false,
            allow_vm_activation: true,
            allow_container_activation: true,
            allow_client_lease_duration: false,
            disable_geo_location: false,
            disable_clock_validation: false,
            crypto_binding_enabled: false,
            allowed_countries: Vec::new(),
            disallowed_countries: Vec::new(),
            allowed_ip_addresses: Vec::new(),
            disallowed_ip_addresses: Vec::new(),
            allowed_ip_ranges: Vec::new(),
            additional_user_ids: Vec::new(),
            external_user_ids: Vec::new(),
            meter_attributes: Vec::new(),
            organization_id: None,
            reseller_id: None,
            activated_at: None,
            last_used_at: None,
            maintenance_expires_at: None,
        }
    }
}

/// `AccessTokenDto`, returned by login and refresh.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AccessTokenDto {
    pub(crate) access_token: String,
    pub(crate) refresh_token: String,
}

#[cfg(test)]
mod unit_tests {
    use chrono::TimeZone as _;

    use super::*;

    #[test]
    fn timestamps_have_seven_fractional_digits_and_a_z() {
        let at = Utc
            .with_ymd_and_hms(2025, 5, 6, 8, 49, 17)
            .unwrap()
            .checked_add_signed(chrono::TimeDelta::nanoseconds(936_114_300))
            .unwrap();
        assert_eq!(timestamp(at), "2025-05-06T08:49:17.9361143Z");
    }
}

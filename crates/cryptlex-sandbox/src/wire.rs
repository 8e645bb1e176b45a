//! Cryptlex's JSON shapes: response DTOs, the `{message, code?}` error body and timestamps.
//!
//! Field names are copied from Cryptlex's OpenAPI document (`LicenseDto`, `UserLicenseDto`,
//! `UserDto`, `BaseProfileDto`, `ProductDto`, `AccountDto`, `HttpErrorResponseDto`). Values for the many license policy
//! knobs the sandbox does not model are fixed, plausible defaults, so strict clients that
//! require every documented field still decode the responses.

use std::borrow::Cow;

use axum::Json;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use http::StatusCode;
use serde::Serialize;

use crate::seed;
use crate::state::{LicenseRecord, MetadataRecord, Product, UserRecord};

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
            two_factor_enabled: user.two_factor_enabled,
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
            two_factor_enabled: user.two_factor_enabled,
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
    /// Read-only and deprecated upstream; what the old write-only `visible` flag set, which S1
    /// describes as "access the metadata on activation": the `activation` view permission.
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
            visible: entry.visible_on_activation(),
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
///
/// `user` and `subscriptionStartTrigger` are written as `null` when there is no owner or no
/// subscription, although S1 does not mark them nullable. That is what ASP.NET sends: S1's
/// schemas come from Swashbuckle, which cannot put `nullable` beside a `$ref` in OpenAPI 3.0,
/// so an optional referenced object or enum loses the flag; the property's absence from
/// `required` is what says it may be empty, and System.Text.Json writes an empty reference
/// as `null` (Cryptlex's own example license shows `"user": null`). The contract file makes
/// this explicit: its generator marks every optional bare `$ref` nullable.
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

/// `ProductDto`, returned by `GET /v3/products/{id}`.
///
/// S1 also lists `licensePolicy`, `trialPolicy` and `emailTemplates` as required without
/// declaring them as properties (and forbids undeclared properties), so no answer can satisfy
/// both; the sandbox leaves them out and the contract check skips required names it cannot see.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ProductDto {
    id: String,
    created_at: String,
    updated_at: String,
    name: String,
    display_name: String,
    description: String,
    public_key: String,
    total_licenses: i32,
    total_trial_activations: i32,
    total_releases: i32,
    total_product_versions: i32,
    total_feature_flags: i32,
    automated_emails: Vec<String>,
    license_template_id: String,
    trial_policy_id: String,
    metadata: Vec<AdminMetadataDto>,
}

impl ProductDto {
    pub(crate) fn new(product: &Product, total_licenses: usize) -> Self {
        ProductDto {
            id: product.id.clone(),
            created_at: timestamp(product.created_at),
            updated_at: timestamp(product.created_at),
            name: product.name.clone(),
            display_name: product.display_name.clone(),
            description: product.description.clone(),
            // Clients verify license files with it; the sandbox signs nothing, so any
            // RSA-looking text serves.
            public_key: "<RSAKeyValue><Modulus>c2FuZGJveA==</Modulus><Exponent>AQAB</Exponent></RSAKeyValue>"
                .to_owned(),
            total_licenses: i32::try_from(total_licenses).unwrap_or(i32::MAX),
            total_trial_activations: 0,
            total_releases: 0,
            total_product_versions: 0,
            total_feature_flags: 0,
            automated_emails: Vec::new(),
            license_template_id: product.license_template_id.clone(),
            // Required and non-nullable in S1; a product without a trial policy is sent with
            // an empty id (an inference).
            trial_policy_id: String::new(),
            metadata: Vec::new(),
        }
    }
}

/// `AccountDto`, returned by `GET /v3/accounts/{id}`: the seeded account, on a fixed plan.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AccountDto {
    id: &'static str,
    created_at: String,
    updated_at: String,
    company: &'static str,
    email: &'static str,
    status: &'static str,
    admin_portal_domain: &'static str,
    customer_portal_domain: &'static str,
    reseller_portal_domain: &'static str,
    website: &'static str,
    logo_url: &'static str,
    favicon_url: &'static str,
    google_client_id: &'static str,
    trial_expires_at: String,
    plan: PlanDto,
    /// Deprecated upstream: the alias's old name.
    company_id: &'static str,
    account_alias: &'static str,
    region: &'static str,
    payment_method: &'static str,
    psp: &'static str,
    total_trial_extensions: i32,
}

impl AccountDto {
    pub(crate) fn sandbox() -> Self {
        // Fixed dates: the account's history is not modelled.
        let created = "2024-01-01T00:00:00.0000000Z".to_owned();
        AccountDto {
            id: seed::ACCOUNT_ID,
            created_at: created.clone(),
            updated_at: created.clone(),
            company: "Sandbox Inc.",
            email: seed::ADMIN_EMAIL,
            status: "active",
            admin_portal_domain: "",
            customer_portal_domain: "",
            reseller_portal_domain: "",
            website: "",
            logo_url: "",
            favicon_url: "",
            google_client_id: "",
            trial_expires_at: created,
            plan: PlanDto::default(),
            company_id: seed::ACCOUNT_ALIAS,
            account_alias: seed::ACCOUNT_ALIAS,
            region: "us",
            payment_method: "",
            psp: "",
            total_trial_extensions: 0,
        }
    }
}

/// `PlanDto`: the subscription plan inside `AccountDto`, every field required by S1.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PlanDto {
    id: &'static str,
    name: &'static str,
    display_name: &'static str,
    version: i32,
    tier: i32,
    interval: &'static str,
    paddle_id: &'static str,
    paddle_price_id: &'static str,
    allowed_users: i32,
    allowed_organizations: i32,
    allowed_admins: i32,
    allowed_products: i32,
    allowed_meter_attributes: i32,
    allowed_feature_flags: i32,
    allowed_features: i32,
    allowed_activations: i32,
    allowed_trial_activations: i32,
    allowed_releases: i32,
    allowed_product_space: i64,
    allow_sending_domain: bool,
    amount: &'static str,
    allow_customer_portal_access: bool,
    allow_organization_admins: bool,
    allow_offline_activations: bool,
    allow_hosted_floating_licenses: bool,
    allow_on_premise_floating_licenses: bool,
    allow_custom_domain: bool,
    allow_resellers: bool,
    allow_sso: bool,
    allow_custom_roles: bool,
    allow_legacy_custom_roles: bool,
    allow_event_logs: bool,
    allow_audit_logs: bool,
    allow_custom_email_templates: bool,
    allow_maintenance_policies: bool,
    allow_activation_logs: bool,
    activation_logs_retention_period: &'static str,
    deprecated: bool,
    created_at: &'static str,
    updated_at: &'static str,
}

impl Default for PlanDto {
    fn default() -> Self {
        PlanDto {
            id: "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9",
            name: "sandbox",
            display_name: "Sandbox",
            version: 1,
            tier: 1,
            interval: "month",
            paddle_id: "",
            paddle_price_id: "",
            allowed_users: 1000,
            allowed_organizations: 10,
            allowed_admins: 5,
            allowed_products: 10,
            allowed_meter_attributes: 10,
            allowed_feature_flags: 10,
            allowed_features: 10,
            allowed_activations: 10_000,
            allowed_trial_activations: 10_000,
            allowed_releases: 100,
            allowed_product_space: 1_073_741_824,
            allow_sending_domain: false,
            amount: "0",
            allow_customer_portal_access: true,
            allow_organization_admins: false,
            allow_offline_activations: true,
            allow_hosted_floating_licenses: true,
            allow_on_premise_floating_licenses: false,
            allow_custom_domain: false,
            allow_resellers: false,
            allow_sso: false,
            allow_custom_roles: false,
            allow_legacy_custom_roles: false,
            allow_event_logs: true,
            allow_audit_logs: false,
            allow_custom_email_templates: false,
            allow_maintenance_policies: false,
            allow_activation_logs: true,
            activation_logs_retention_period: "P30D",
            deprecated: false,
            created_at: "2024-01-01T00:00:00.0000000Z",
            updated_at: "2024-01-01T00:00:00.0000000Z",
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

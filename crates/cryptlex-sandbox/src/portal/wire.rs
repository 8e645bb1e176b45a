//! The customer-portal JSON shapes, field for field from Cryptlex's OpenAPI document (S1):
//! `TwoFactorSecretDto`, `TwoFactorRecoveryCodesDto`, `ResetPasswordTokenDto`,
//! `FeatureEntitlementDto`, `UserActivationDto` (with `GeoLocationDto` and
//! `ActivationMeterAttributeDto`), `UserReleaseDto` (with `ReleaseFileDto` and
//! `UserProductDto`). Every schema forbids other properties, so nothing else is sent.

use serde::Serialize;

use super::state::{
    ActivationRecord, FeatureEntitlementRecord, GeoLocationRecord, ReleaseFileRecord, ReleaseRecord,
};
use crate::wire::timestamp;

/// `TwoFactorSecretDto`: the otpauth URL is all the secret there is (no separate field).
/// No `Debug`: it carries the secret.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TwoFactorSecretDto {
    pub(crate) email: String,
    pub(crate) url: String,
}

/// `TwoFactorRecoveryCodesDto`. No `Debug`: the codes sign in.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TwoFactorRecoveryCodesDto {
    pub(crate) recovery_codes: Vec<String>,
}

/// `ResetPasswordTokenDto`. No `Debug`: the token resets a password.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ResetPasswordTokenDto {
    pub(crate) reset_password_token: String,
}

/// `FeatureEntitlementDto`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FeatureEntitlementDto {
    feature_id: String,
    feature_name: String,
    value: Option<String>,
    expires_at: Option<String>,
}

impl From<&FeatureEntitlementRecord> for FeatureEntitlementDto {
    fn from(entitlement: &FeatureEntitlementRecord) -> Self {
        FeatureEntitlementDto {
            feature_id: entitlement.feature_id.clone(),
            feature_name: entitlement.feature_name.clone(),
            value: entitlement.value.clone(),
            expires_at: entitlement.expires_at.map(timestamp),
        }
    }
}

/// `UserActivationDto`: the machine as its user sees it (no user or license objects; the IP
/// address is inside `location`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UserActivationDto {
    id: String,
    created_at: String,
    updated_at: String,
    os: String,
    os_version: Option<String>,
    hostname: String,
    location: GeoLocationDto,
    vm_name: Option<String>,
    container: bool,
    app_version: Option<String>,
    release_version: Option<String>,
    release_channel: Option<String>,
    release_platform: Option<String>,
    offline: bool,
    product_id: String,
    /// Activation-level expiry (offline and leased activations); the sandbox models neither.
    expires_at: Option<String>,
    license_id: String,
    meter_attributes: Vec<ActivationMeterAttributeDto>,
    last_synced_at: String,
    lease_expires_at: Option<String>,
}

impl From<&ActivationRecord> for UserActivationDto {
    fn from(activation: &ActivationRecord) -> Self {
        UserActivationDto {
            id: activation.id.clone(),
            created_at: timestamp(activation.created_at),
            updated_at: timestamp(activation.updated_at),
            os: activation.os.clone(),
            os_version: activation.os_version.clone(),
            hostname: activation.hostname.clone(),
            location: GeoLocationDto::from(&activation.location),
            vm_name: activation.vm_name.clone(),
            container: activation.container,
            app_version: activation.app_version.clone(),
            release_version: activation.release_version.clone(),
            release_channel: activation.release_channel.clone(),
            release_platform: activation.release_platform.clone(),
            offline: activation.offline,
            product_id: activation.product_id.clone(),
            expires_at: None,
            license_id: activation.license_id.clone(),
            meter_attributes: Vec::new(),
            last_synced_at: timestamp(activation.last_synced_at),
            lease_expires_at: None,
        }
    }
}

/// `GeoLocationDto`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct GeoLocationDto {
    ip_address: String,
    country_code: Option<String>,
    country_name: Option<String>,
    region_code: Option<String>,
    region_name: Option<String>,
    city: Option<String>,
    zip_code: Option<String>,
    time_zone: Option<String>,
    latitude: Option<f64>,
    longitude: Option<f64>,
}

impl From<&GeoLocationRecord> for GeoLocationDto {
    fn from(location: &GeoLocationRecord) -> Self {
        GeoLocationDto {
            ip_address: location.ip_address.clone(),
            country_code: location.country_code.clone(),
            country_name: location.country_name.clone(),
            region_code: location.region_code.clone(),
            region_name: location.region_name.clone(),
            city: location.city.clone(),
            zip_code: location.zip_code.clone(),
            time_zone: location.time_zone.clone(),
            latitude: location.latitude,
            longitude: location.longitude,
        }
    }
}

/// `ActivationMeterAttributeDto`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ActivationMeterAttributeDto {
    name: String,
    uses: i64,
}

/// `UserReleaseDto`. S1 lists `platform` as required without declaring it (and forbids
/// undeclared properties), so, as with `ProductDto.licensePolicy`, it is left out; `channel`
/// is the channel's name as a plain string.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UserReleaseDto {
    id: String,
    created_at: String,
    updated_at: String,
    name: String,
    channel: String,
    version: String,
    platforms: Vec<String>,
    notes: String,
    published_at: Option<String>,
    total_files: i32,
    files: Vec<ReleaseFileDto>,
    product: UserProductDto,
}

impl UserReleaseDto {
    pub(crate) fn new(release: &ReleaseRecord, product_display_name: &str) -> Self {
        UserReleaseDto {
            id: release.id.clone(),
            created_at: timestamp(release.created_at),
            updated_at: timestamp(release.updated_at),
            name: release.name.clone(),
            channel: release.channel.clone(),
            version: release.version.clone(),
            platforms: release.platforms.clone(),
            notes: release.notes.clone(),
            published_at: release.published_at.map(timestamp),
            total_files: i32::try_from(release.files.len()).unwrap_or(i32::MAX),
            files: release
                .files
                .iter()
                .map(|file| ReleaseFileDto::new(file, release))
                .collect(),
            product: UserProductDto {
                display_name: product_display_name.to_owned(),
            },
        }
    }
}

/// `UserProductDto`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct UserProductDto {
    display_name: String,
}

/// `ReleaseFileDto`: the download link is `url`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ReleaseFileDto {
    id: String,
    created_at: String,
    updated_at: String,
    name: String,
    url: String,
    extension: String,
    size: i64,
    downloads: i64,
    secured: bool,
    checksum: String,
    release_id: String,
    release_name: String,
    published: bool,
}

impl ReleaseFileDto {
    fn new(file: &ReleaseFileRecord, release: &ReleaseRecord) -> Self {
        ReleaseFileDto {
            id: file.id.clone(),
            created_at: timestamp(file.created_at),
            updated_at: timestamp(file.created_at),
            name: file.name.clone(),
            url: file.url.clone(),
            extension: file.extension.clone(),
            size: file.size,
            downloads: file.downloads,
            secured: file.secured,
            checksum: file.checksum.clone(),
            release_id: release.id.clone(),
            release_name: release.name.clone(),
            published: release.published_at.is_some(),
        }
    }
}

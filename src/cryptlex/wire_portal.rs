//! Cryptlex's JSON for the customer-portal calls (`cryptlex-shapes.md`, read
//! from S1 field for field), decoded as leniently as `wire`'s: only ids are
//! required; every other field decodes from `null` and from absence alike.
//! Private to the `cryptlex` module.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::wire::null_as_default;
use crate::domain::{Activation, FeatureEntitlement, Release, ReleaseFile, readable_place};

/// `FeatureEntitlementDto` (from `GET /v3/me/licenses/{id}/feature-entitlements`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct FeatureEntitlementDto {
    feature_id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    feature_name: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
}

impl From<FeatureEntitlementDto> for FeatureEntitlement {
    fn from(dto: FeatureEntitlementDto) -> Self {
        Self {
            feature_id: dto.feature_id,
            feature_name: dto.feature_name,
            value: dto.value.unwrap_or_default(),
            expires_at: dto.expires_at,
        }
    }
}

/// `UserActivationDto` (from `GET /v3/me/activations` and
/// `/v3/me/activations/{id}`); only the fields the portal shows.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct UserActivationDto {
    id: String,
    /// Required: it is what ownership and invalidation go by.
    license_id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    hostname: String,
    /// An enum in S1 (`windows`, `linux`, `macos`, `android`, `ios`); kept
    /// as text so a new system does not fail the whole page.
    #[serde(default, deserialize_with = "null_as_default")]
    os: String,
    #[serde(default)]
    os_version: Option<String>,
    #[serde(default)]
    vm_name: Option<String>,
    #[serde(default)]
    app_version: Option<String>,
    #[serde(default)]
    release_version: Option<String>,
    #[serde(default)]
    location: Option<GeoLocationDto>,
    #[serde(default)]
    last_synced_at: Option<DateTime<Utc>>,
    #[serde(default)]
    created_at: Option<DateTime<Utc>>,
}

/// `GeoLocationDto`, without `ipAddress`: the machine's address is not
/// decoded, so it can never be kept, cached or shown.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GeoLocationDto {
    #[serde(default)]
    city: Option<String>,
    #[serde(default)]
    region_name: Option<String>,
    #[serde(default)]
    country_name: Option<String>,
    #[serde(default)]
    country_code: Option<String>,
}

impl From<UserActivationDto> for Activation {
    fn from(dto: UserActivationDto) -> Self {
        let location = dto.location.unwrap_or(GeoLocationDto {
            city: None,
            region_name: None,
            country_name: None,
            country_code: None,
        });
        // The country's name reads best; its code is better than nothing.
        let country = location
            .country_name
            .as_deref()
            .filter(|name| !name.trim().is_empty())
            .or(location.country_code.as_deref());
        Self {
            id: dto.id,
            license_id: dto.license_id,
            hostname: dto.hostname,
            os: dto.os,
            os_version: dto.os_version.unwrap_or_default(),
            vm_name: dto.vm_name.unwrap_or_default(),
            app_version: dto.app_version.unwrap_or_default(),
            release_version: dto.release_version.unwrap_or_default(),
            location: readable_place([
                location.city.as_deref(),
                location.region_name.as_deref(),
                country,
            ]),
            country_code: location
                .country_code
                .filter(|code| code.len() == 2 && code.bytes().all(|b| b.is_ascii_alphabetic()))
                .map(|code| code.to_ascii_uppercase())
                .unwrap_or_default(),
            last_synced_at: dto.last_synced_at,
            created_at: dto.created_at,
        }
    }
}

/// `UserReleaseDto` (from `GET /v3/me/releases`). S1 lists `platform` as
/// required without declaring it; it is not read.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct UserReleaseDto {
    id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    name: String,
    /// The channel's name (a plain string in the user view).
    #[serde(default, deserialize_with = "null_as_default")]
    channel: String,
    #[serde(default, deserialize_with = "null_as_default")]
    version: String,
    #[serde(default, deserialize_with = "null_as_default")]
    notes: String,
    #[serde(default, deserialize_with = "null_as_default")]
    platforms: Vec<String>,
    #[serde(default)]
    published_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "null_as_default")]
    files: Vec<ReleaseFileDto>,
    #[serde(default)]
    product: Option<UserProductDto>,
}

/// `UserProductDto`: `{displayName}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserProductDto {
    #[serde(default)]
    display_name: Option<String>,
}

/// `ReleaseFileDto`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReleaseFileDto {
    id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    name: String,
    #[serde(default, deserialize_with = "null_as_default")]
    url: String,
    #[serde(default, deserialize_with = "null_as_default")]
    size: i64,
    #[serde(default, deserialize_with = "null_as_default")]
    checksum: String,
    #[serde(default, deserialize_with = "null_as_default")]
    extension: String,
    #[serde(default, deserialize_with = "null_as_default")]
    secured: bool,
    /// Required in S1; a file Cryptlex says is unpublished is not offered.
    #[serde(default)]
    published: Option<bool>,
}

impl From<UserReleaseDto> for Release {
    fn from(dto: UserReleaseDto) -> Self {
        Self {
            id: dto.id,
            name: dto.name,
            version: dto.version,
            channel: dto.channel,
            platforms: dto.platforms,
            product_name: dto
                .product
                .and_then(|product| product.display_name)
                .unwrap_or_default(),
            notes: dto.notes,
            published_at: dto.published_at,
            files: dto
                .files
                .into_iter()
                .filter(|file| file.published != Some(false))
                .map(|file| ReleaseFile {
                    id: file.id,
                    name: file.name,
                    url: file.url,
                    size: file.size,
                    checksum: file.checksum,
                    extension: file.extension,
                    secured: file.secured,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_activation_shows_a_readable_place_and_never_the_ip_address() {
        let dto: UserActivationDto = serde_json::from_str(
            r#"{"id":"a1","licenseId":"l1","hostname":"build-01","os":"linux",
                "osVersion":"Ubuntu 24.04","vmName":null,"appVersion":"2.1.0",
                "releaseVersion":"2.1.0","container":false,"offline":false,
                "productId":"p1","meterAttributes":[],
                "createdAt":"2026-01-05T10:00:00Z","updatedAt":"2026-01-05T10:00:00Z",
                "lastSyncedAt":"2026-03-01T08:30:00Z",
                "location":{"ipAddress":"203.0.113.7","city":"Munich","regionName":"Bavaria",
                            "countryName":"Germany","countryCode":"de","latitude":48.1}}"#,
        )
        .expect("decodes");
        let activation = Activation::from(dto);
        assert_eq!(activation.location, "Munich, Bavaria, Germany");
        assert_eq!(activation.country_code, "DE");
        assert_eq!(activation.vm_name, "");
        assert_eq!(activation.os_version, "Ubuntu 24.04");
        assert!(!format!("{activation:?}").contains("203.0.113.7"));
    }

    #[test]
    fn an_activation_with_only_the_required_fields_and_nulls_decodes() {
        let dto: UserActivationDto = serde_json::from_str(
            r#"{"id":"a1","licenseId":"l1","hostname":null,"os":"ios",
                "location":{"ipAddress":"::1","city":null,"countryName":null,"countryCode":"XYZ"}}"#,
        )
        .expect("decodes");
        let activation = Activation::from(dto);
        assert_eq!(activation.location, "XYZ");
        assert_eq!(activation.country_code, "", "not an alpha-2 code");
        assert!(activation.created_at.is_none());
    }

    #[test]
    fn a_release_keeps_its_published_files_and_tolerates_the_undeclared_platform_field() {
        let dto: UserReleaseDto = serde_json::from_str(
            r#"{"id":"r1","name":"Demo 1.2","channel":"stable","version":"1.2.0",
                "platform":"windows","platforms":["windows","macos"],"notes":"",
                "totalFiles":2,"publishedAt":"2026-02-01T00:00:00Z",
                "createdAt":"2026-02-01T00:00:00Z","updatedAt":"2026-02-01T00:00:00Z",
                "product":{"displayName":"Demo"},
                "files":[
                  {"id":"f1","name":"demo.exe","url":"https://dl.example/f1","extension":"exe",
                   "checksum":"abc","size":1024,"downloads":3,"secured":true,"published":true,
                   "releaseId":"r1","releaseName":"Demo 1.2",
                   "createdAt":"2026-02-01T00:00:00Z","updatedAt":"2026-02-01T00:00:00Z"},
                  {"id":"f2","name":"draft.dmg","url":"https://dl.example/f2","extension":"dmg",
                   "checksum":"","size":1,"downloads":0,"secured":false,"published":false,
                   "releaseId":"r1","releaseName":"Demo 1.2",
                   "createdAt":"2026-02-01T00:00:00Z","updatedAt":"2026-02-01T00:00:00Z"}]}"#,
        )
        .expect("decodes");
        let release = Release::from(dto);
        assert_eq!(release.product_name, "Demo");
        assert_eq!(release.platforms, ["windows", "macos"]);
        assert_eq!(release.files.len(), 1);
        let file = &release.files[0];
        assert_eq!(
            (file.url.as_str(), file.size, file.secured),
            ("https://dl.example/f1", 1024, true)
        );
    }
}

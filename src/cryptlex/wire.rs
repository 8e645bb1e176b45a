//! Cryptlex's JSON, as documented in the v3 OpenAPI (see
//! `shared/cryptlex-api.md`). Private to the `cryptlex` module: nothing
//! outside it sees these shapes.
//!
//! Deserialization is lenient (unknown fields ignored, optional fields
//! defaulted) because Cryptlex adds fields over time; only the fields the
//! gateway relies on are required. Every field the OpenAPI document marks
//! nullable or leaves out of `required` decodes from `null` and from absence
//! alike: defaulted fields go through [`null_as_default`], since serde's
//! `default` covers only absence (a `null` list failed `ListMyLicenses`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};

use crate::domain::{IssuedLicense, UserLicense, UserProfile};

/// Reads `null` as the type's default, like an absent field.
pub(super) fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Option::unwrap_or_default)
}

/// `LoginRequestModel`: exactly one of the account fields has a value.
///
/// `accountId` is always sent, as `null` when the account is given by its
/// alias: the OpenAPI document lists it as required (and nullable), so a
/// server that enforces the schema refuses a body without it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct LoginBody<'a> {
    pub(super) account_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) account_alias: Option<&'a str>,
    pub(super) email: &'a str,
    pub(super) password: &'a str,
    /// For an account with two-factor authentication: the current code, or
    /// (in its place) a recovery code; left out otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) two_factor_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) two_factor_recovery_code: Option<&'a str>,
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
    #[serde(default, deserialize_with = "null_as_default")]
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
    #[serde(default, deserialize_with = "null_as_default")]
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
    pub(super) key: String,
    #[serde(default)]
    pub(super) value: Option<String>,
    /// Only in the administrator's view; kept so a metadata update can send every entry back
    /// as it was.
    #[serde(default, deserialize_with = "null_as_default")]
    pub(super) view_permissions: Vec<String>,
}

/// `UserLicenseDto`, the reduced view `/v3/me/licenses` returns.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct UserLicenseDto {
    id: String,
    key: String,
    #[serde(default, rename = "type")]
    license_type: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    revoked: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    suspended: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    perpetual: bool,
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "null_as_default")]
    allowed_activations: i32,
    #[serde(default, deserialize_with = "null_as_default")]
    total_activations: i32,
    /// Required in `UserLicenseDto`; -1 means unlimited.
    #[serde(default, deserialize_with = "null_as_default")]
    allowed_deactivations: i32,
    #[serde(default, deserialize_with = "null_as_default")]
    total_deactivations: i32,
    #[serde(default)]
    subscription_interval: Option<String>,
    #[serde(default)]
    created_at: Option<DateTime<Utc>>,
    /// Nullable and optional in `UserLicenseDto`.
    #[serde(default, deserialize_with = "null_as_default")]
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
            allowed_deactivations: dto.allowed_deactivations,
            total_deactivations: dto.total_deactivations,
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
    #[serde(default, deserialize_with = "null_as_default")]
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
    /// integrations do for their bookkeeping keys. A metadata update sends
    /// every other entry back with the permissions it had.
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
    /// Set only when a quantity becomes activations; the product's default otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) allowed_activations: Option<i32>,
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
    #[serde(default, deserialize_with = "null_as_default")]
    allowed_activations: i32,
    #[serde(default)]
    subscription_interval: Option<String>,
    #[serde(default)]
    created_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub(super) metadata: Vec<MetadataDto>,
    #[serde(default, deserialize_with = "null_as_default")]
    revoked: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    suspended: bool,
}

/// `LicenseUpdateRequestModel` for `PATCH /v3/licenses/{id}`: only the fields the payment
/// lifecycle changes; absent fields are left unchanged.
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct LicenseUpdateBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) revoked: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) suspended: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) allowed_activations: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) metadata: Option<Vec<NewMetadataBody<'a>>>,
}

/// `LicenseExpiresAtUpdateRequestModel` for `PATCH /v3/licenses/{id}/expires-at`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ExpiresAtBody {
    pub(super) expires_at: DateTime<Utc>,
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
            subscription_id: String::new(),
            revoked: self.revoked,
            suspended: self.suspended,
        }
    }
}

/// `ProductDto` (from `GET /v3/products/{id}`); only what `check-upstream`
/// reports.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ProductDto {
    pub(super) id: String,
    #[serde(default)]
    pub(super) display_name: Option<String>,
    #[serde(default)]
    pub(super) name: Option<String>,
}

/// `AccountDto` (from `GET /v3/accounts/{id}`); only what `check-upstream`
/// reports.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct AccountDto {
    pub(super) id: String,
    #[serde(default)]
    pub(super) account_alias: Option<String>,
    #[serde(default)]
    pub(super) company: Option<String>,
}

fn metadata_map(entries: Vec<MetadataDto>) -> BTreeMap<String, String> {
    entries
        .into_iter()
        .map(|entry| (entry.key, entry.value.unwrap_or_default()))
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn decode<T: for<'de> Deserialize<'de>>(value: serde_json::Value) -> T {
        serde_json::from_value(value).expect("an S1-valid answer decodes")
    }

    /// The fields `UserLicenseDto` requires, and nothing else.
    fn minimal_user_license() -> serde_json::Value {
        json!({
            "id": "l1", "createdAt": "2025-05-06T08:49:17.9361143Z",
            "updatedAt": "2025-05-06T08:49:17.9361143Z", "key": "K", "revoked": false,
            "suspended": false, "perpetual": true, "type": "node-locked",
            "totalActivations": 0, "totalDeactivations": 0, "allowedActivations": 1,
            "allowedDeactivations": 1, "allowedFloatingClients": 0, "leaseDuration": 0
        })
    }

    #[test]
    fn a_user_license_with_only_its_required_fields_decodes() {
        let license: UserLicense = decode::<UserLicenseDto>(minimal_user_license()).into();
        assert_eq!(license.key, "K");
        assert!(license.metadata.is_empty());
        assert_eq!(license.product_name, "");
        assert_eq!(license.expires_at, None);
    }

    #[test]
    fn a_user_license_with_every_nullable_field_null_decodes() {
        let mut value = minimal_user_license();
        for field in [
            "validity",
            "subscriptionInterval",
            "expiresAt",
            "effectiveDate",
            "notes",
            "metadata",
            "meterAttributes",
            "product",
            "productVersion",
            "entitlementSet",
        ] {
            value[field] = serde_json::Value::Null;
        }
        let license: UserLicense = decode::<UserLicenseDto>(value).into();
        assert!(license.metadata.is_empty());
        assert_eq!(license.subscription_interval, "");
    }

    #[test]
    fn metadata_without_a_value_and_unknown_fields_decode() {
        let mut value = minimal_user_license();
        value["metadata"] = json!([
            {"id": "m1", "createdAt": "2025-05-06T08:49:17Z", "updatedAt": "2025-05-06T08:49:17Z", "key": "a"},
            {"id": "m2", "createdAt": "2025-05-06T08:49:17Z", "updatedAt": "2025-05-06T08:49:17Z", "key": "b", "value": null},
        ]);
        value["somethingNew"] = json!({"added": "in a later release"});
        let license: UserLicense = decode::<UserLicenseDto>(value).into();
        assert_eq!(license.metadata.get("a").map(String::as_str), Some(""));
        assert_eq!(license.metadata.get("b").map(String::as_str), Some(""));
    }

    #[test]
    fn a_profile_with_last_login_null_or_absent_decodes() {
        let profile = json!({
            "id": "u1", "createdAt": "2018-05-01T07:53:56.0095476Z",
            "updatedAt": "2018-05-01T07:53:56.0095476Z", "name": "", "firstName": "",
            "lastName": "", "email": "a@b.c", "role": "user", "twoFactorEnabled": false,
            "googleSsoEnabled": false, "company": ""
        });
        let mut with_null = profile.clone();
        with_null["lastLoginAt"] = serde_json::Value::Null;
        for value in [profile, with_null] {
            let profile: UserProfile = decode::<ProfileDto>(value).into();
            assert_eq!(profile.last_login_at, None);
        }
    }

    #[test]
    fn an_admin_license_with_null_links_and_empty_lists_decodes() {
        let value = json!({
            "id": "l1", "key": "K", "productId": "p1", "type": "node-locked",
            "userId": null, "user": null, "subscriptionStartTrigger": null,
            "organization": null, "reseller": null, "expiresAt": null,
            "subscriptionInterval": null, "metadata": [], "tags": [], "meterAttributes": []
        });
        let license = decode::<LicenseDto>(value).into_issued(&[]);
        assert_eq!(license.user_id, "");
        assert!(license.metadata.is_empty());
    }

    #[test]
    fn an_access_token_without_a_refresh_token_decodes() {
        let dto = decode::<AccessTokenDto>(json!({"accessToken": "a", "refreshToken": null}));
        assert_eq!(dto.refresh_token, None);
        let dto = decode::<AccessTokenDto>(json!({"accessToken": "a"}));
        assert_eq!(dto.refresh_token, None);
    }

    #[test]
    fn the_login_body_always_carries_account_id_null_beside_an_alias() {
        let body = LoginBody {
            account_id: None,
            account_alias: Some("acme"),
            email: "a@b.c",
            password: "secret-password",
            two_factor_code: None,
            two_factor_recovery_code: None,
        };
        let sent = serde_json::to_value(&body).expect("serializes");
        assert_eq!(sent["accountId"], serde_json::Value::Null);
        assert!(sent.as_object().expect("object").contains_key("accountId"));
        assert_eq!(sent["accountAlias"], "acme");
        // No second factor: neither field goes out (a null code would be
        // refused by a server holding it to 6 characters).
        assert!(
            !sent
                .as_object()
                .expect("object")
                .contains_key("twoFactorCode")
        );
        assert!(
            !sent
                .as_object()
                .expect("object")
                .contains_key("twoFactorRecoveryCode")
        );
    }

    #[test]
    fn the_login_body_carries_the_second_factor_it_is_given() {
        let body = LoginBody {
            account_id: None,
            account_alias: Some("acme"),
            email: "a@b.c",
            password: "secret-password",
            two_factor_code: Some("123456"),
            two_factor_recovery_code: None,
        };
        let sent = serde_json::to_value(&body).expect("serializes");
        assert_eq!(sent["twoFactorCode"], "123456");
        assert!(
            !sent
                .as_object()
                .expect("object")
                .contains_key("twoFactorRecoveryCode")
        );
    }
}

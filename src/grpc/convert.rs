//! Conversions between generated `pb` messages and domain values: requests
//! are parsed into commands (every field checked, all violations reported at
//! once), results are turned into response messages.

use chrono::{DateTime, Utc};
use prost_types::Timestamp;

use super::pb::{self, issue_license_request::User};
use crate::domain::{
    CryptlexId, Email, FieldViolation, IssuedLicense, LicenseStatus, MetadataMap, PageRequest,
    Password, PersonName, RefreshToken, RequestId, Session, UserLicense, UserProfile,
    ValidationErrors,
};
use crate::licensing::pagination::page_request;
use crate::licensing::{IssueCommand, LicenseHolder, LoginCommand, SignUpCommand};

/// The first and last second a `google.protobuf.Timestamp` may hold
/// (0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z); clients refuse others.
const TIMESTAMP_SECONDS: (i64, i64) = (-62_135_596_800, 253_402_300_799);

/// Converts an instant, which may come from Cryptlex's JSON, into a valid
/// protobuf `Timestamp`.
///
/// chrono reads a leap second (`23:59:60`) as nanoseconds past 1e9, and
/// years from -262143 to 262142 (`-025-11-28`); a `Timestamp` has neither
/// (nanos below 1e9, years 1 to 9999). A leap second becomes the start of
/// the next second, as a smeared clock shows it, and an instant outside the
/// years 1 to 9999 the nearest end of that range, so a date long past stays
/// in the past and a far one stays far.
pub(super) fn timestamp(at: DateTime<Utc>) -> Timestamp {
    let (first, last) = TIMESTAMP_SECONDS;
    let (seconds, nanos) = match at.timestamp_subsec_nanos() {
        nanos if nanos >= 1_000_000_000 => (at.timestamp() + 1, nanos - 1_000_000_000),
        nanos => (at.timestamp(), nanos),
    };
    if seconds < first {
        return Timestamp {
            seconds: first,
            nanos: 0,
        };
    }
    if seconds > last {
        return Timestamp {
            seconds: last,
            nanos: 999_999_999,
        };
    }
    Timestamp {
        seconds,
        nanos: i32::try_from(nanos).expect("nanoseconds below 1e9 fit an i32"),
    }
}

impl From<Session> for pb::Session {
    fn from(session: Session) -> Self {
        Self {
            access_token: session.access_token.expose_secret().to_owned(),
            refresh_token: session
                .refresh_token
                .map(|token| token.expose_secret().to_owned())
                .unwrap_or_default(),
            expires_at: session.expires_at.map(timestamp),
        }
    }
}

impl From<UserProfile> for pb::Profile {
    fn from(profile: UserProfile) -> Self {
        Self {
            id: profile.id,
            email: profile.email,
            first_name: profile.first_name,
            last_name: profile.last_name,
            name: profile.name,
            company: profile.company,
            role: profile.role,
            two_factor_enabled: profile.two_factor_enabled,
            created_at: profile.created_at.map(timestamp),
            last_login_at: profile.last_login_at.map(timestamp),
        }
    }
}

impl From<UserLicense> for pb::License {
    fn from(license: UserLicense) -> Self {
        let status = match license.status(Utc::now()) {
            LicenseStatus::Active => pb::LicenseStatus::Active,
            LicenseStatus::Expired => pb::LicenseStatus::Expired,
            LicenseStatus::Suspended => pb::LicenseStatus::Suspended,
            LicenseStatus::Revoked => pb::LicenseStatus::Revoked,
        };
        Self {
            id: license.id,
            key: license.key,
            r#type: license.license_type,
            product_name: license.product_name,
            revoked: license.revoked,
            suspended: license.suspended,
            perpetual: license.perpetual,
            expires_at: license.expires_at.map(timestamp),
            allowed_activations: license.allowed_activations,
            total_activations: license.total_activations,
            allowed_deactivations: license.allowed_deactivations,
            total_deactivations: license.total_deactivations,
            status: status.into(),
            subscription_interval: license.subscription_interval,
            created_at: license.created_at.map(timestamp),
            metadata: license.metadata.into_iter().collect(),
        }
    }
}

impl From<IssuedLicense> for pb::IssuedLicense {
    fn from(license: IssuedLicense) -> Self {
        Self {
            id: license.id,
            key: license.key,
            product_id: license.product_id,
            user_id: license.user_id,
            r#type: license.license_type,
            expires_at: license.expires_at.map(timestamp),
            allowed_activations: license.allowed_activations,
            subscription_interval: license.subscription_interval,
            created_at: license.created_at.map(timestamp),
            metadata: license.metadata.into_iter().collect(),
            // Filled by the payment lifecycle (issue 16).
            subscription_id: String::new(),
            revoked: false,
            suspended: false,
        }
    }
}

// === requests: generated messages into parsed commands ===
//
// Each conversion checks every field and reports all violations at once
// (`INVALID_ARGUMENT` with `BadRequest`), before any upstream call.

impl TryFrom<pb::LoginRequest> for LoginCommand {
    type Error = ValidationErrors;

    fn try_from(request: pb::LoginRequest) -> Result<Self, Self::Error> {
        let mut errors = ValidationErrors::new();
        let email = errors.check(Email::parse("email", &request.email));
        let password = errors.check(Password::parse_for_login("password", request.password));
        let second_factor = super::account_convert::second_factor(
            &mut errors,
            request.two_factor_code,
            request.two_factor_recovery_code,
        );
        match (email, password) {
            (Some(email), Some(password)) if errors.is_empty() => Ok(Self {
                email,
                password,
                second_factor,
            }),
            _ => Err(errors),
        }
    }
}

impl TryFrom<pb::SignUpRequest> for SignUpCommand {
    type Error = ValidationErrors;

    fn try_from(request: pb::SignUpRequest) -> Result<Self, Self::Error> {
        let mut errors = ValidationErrors::new();
        let email = errors.check(Email::parse("email", &request.email));
        let password = errors.check(Password::parse("password", request.password));
        let first_name = errors.check(PersonName::parse("first_name", &request.first_name, 1));
        let last_name = errors.check(PersonName::parse("last_name", &request.last_name, 0));
        match (email, password, first_name, last_name) {
            (Some(email), Some(password), Some(first_name), Some(last_name))
                if errors.is_empty() =>
            {
                Ok(Self {
                    email,
                    password,
                    first_name,
                    last_name: (!last_name.as_str().is_empty()).then_some(last_name),
                })
            }
            _ => Err(errors),
        }
    }
}

impl TryFrom<pb::RefreshSessionRequest> for RefreshToken {
    type Error = ValidationErrors;

    fn try_from(request: pb::RefreshSessionRequest) -> Result<Self, Self::Error> {
        Ok(Self::parse("refresh_token", request.refresh_token)?)
    }
}

impl TryFrom<pb::ListMyLicensesRequest> for PageRequest {
    type Error = ValidationErrors;

    fn try_from(request: pb::ListMyLicensesRequest) -> Result<Self, Self::Error> {
        let mut errors = ValidationErrors::new();
        let product_id = optional_id(&mut errors, "product_id", &request.product_id);
        let page = errors.check(page_request(
            request.page_size,
            &request.page_token,
            product_id,
        ));
        match page {
            Some(page) if errors.is_empty() => Ok(page),
            _ => Err(errors),
        }
    }
}

impl TryFrom<pb::IssueLicenseRequest> for IssueCommand {
    type Error = ValidationErrors;

    fn try_from(request: pb::IssueLicenseRequest) -> Result<Self, Self::Error> {
        let mut errors = ValidationErrors::new();
        let request_id = errors.check(RequestId::parse("request_id", &request.request_id));
        let user = match request.user {
            Some(User::UserId(id)) => {
                errors.check(CryptlexId::parse("user_id", &id).map(LicenseHolder::Id))
            }
            Some(User::UserEmail(email)) => {
                errors.check(Email::parse("user_email", &email).map(LicenseHolder::Email))
            }
            None => {
                errors.push(FieldViolation::new(
                    "user",
                    "one of user_id or user_email is required",
                ));
                None
            }
        };
        let product_id = optional_id(&mut errors, "product_id", &request.product_id);
        let license_template_id = optional_id(
            &mut errors,
            "license_template_id",
            &request.license_template_id,
        );
        // Reserved keys depend on the configuration; the use case checks them.
        let metadata = match MetadataMap::parse("metadata", request.metadata, &[]) {
            Ok(metadata) => Some(metadata),
            Err(metadata_errors) => {
                for violation in metadata_errors.violations() {
                    errors.push(violation.clone());
                }
                None
            }
        };
        match (request_id, user, metadata) {
            (Some(request_id), Some(user), Some(metadata)) if errors.is_empty() => Ok(Self {
                request_id,
                user,
                product_id,
                license_template_id,
                metadata,
            }),
            _ => Err(errors),
        }
    }
}

/// An optional id field: empty means unset.
fn optional_id(errors: &mut ValidationErrors, field: &str, value: &str) -> Option<CryptlexId> {
    if value.is_empty() {
        None
    } else {
        errors.check(CryptlexId::parse(field, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> DateTime<Utc> {
        // As serde reads Cryptlex's JSON.
        serde_json::from_str(&format!("\"{text}\"")).expect("chrono reads it")
    }

    // Found by fuzz/cryptlex_json: a `createdAt` of `-025-11-28T21:18:00+01:00` was
    // sent as a Timestamp of year -25, which clients refuse.
    #[test]
    fn an_instant_before_year_one_is_sent_as_the_first_valid_timestamp() {
        let sent = timestamp(parsed("-025-11-28T21:18:00+01:00"));
        assert_eq!(
            (sent.seconds, sent.nanos),
            (TIMESTAMP_SECONDS.0, 0),
            "{sent:?}"
        );
    }

    #[test]
    fn an_instant_after_year_9999_is_sent_as_the_last_valid_timestamp() {
        let sent = timestamp(parsed("9999-12-31T23:59:59-23:59"));
        assert_eq!(
            (sent.seconds, sent.nanos),
            (TIMESTAMP_SECONDS.1, 999_999_999)
        );
    }

    #[test]
    fn a_leap_second_is_sent_as_the_start_of_the_next_second() {
        let sent = timestamp(parsed("2016-12-31T23:59:60.5Z"));
        let next_day = parsed("2017-01-01T00:00:00Z").timestamp();
        assert_eq!((sent.seconds, sent.nanos), (next_day, 500_000_000));
    }

    #[test]
    fn an_ordinary_instant_is_sent_as_it_is() {
        let at = parsed("2027-03-01T12:30:45.123Z");
        let sent = timestamp(at);
        assert_eq!((sent.seconds, sent.nanos), (at.timestamp(), 123_000_000));
    }
}

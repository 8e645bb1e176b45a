//! Conversions between generated `pb` messages and domain values: requests
//! are parsed into commands (every field checked, all violations reported at
//! once), results are turned into response messages.

use chrono::{DateTime, Utc};
use prost_types::Timestamp;

use super::pb::{self, issue_license_request::User};
use crate::domain::{
    CryptlexId, Email, FieldViolation, IssuedLicense, LicenseStatus, MetadataMap, PageRequest,
    Password, PersonName, RefreshToken, RequestId, Session, SubscriptionId, UserLicense,
    UserProfile, ValidationErrors,
};
use crate::licensing::pagination::page_request;
use crate::licensing::{
    IssueCommand, LicenseHolder, LicenseTarget, LicenseUpdate, LifecycleAction, LifecycleCommand,
    LoginCommand, MAX_QUANTITY, MAX_REVOCATION_NOTE, RevocationReason, SignUpCommand,
};

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
            subscription_id: license.subscription_id,
            revoked: license.revoked,
            suspended: license.suspended,
        }
    }
}

impl From<LicenseUpdate> for pb::LicenseUpdate {
    fn from(update: LicenseUpdate) -> Self {
        Self {
            license: Some(update.license.into()),
            previous_expires_at: update.previous_expires_at.map(timestamp),
            superseded: update.superseded,
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
        let subscription_id = if request.subscription_id.is_empty() {
            None
        } else {
            errors.check(SubscriptionId::parse(
                "subscription_id",
                &request.subscription_id,
            ))
        };
        let quantity = match u32::try_from(request.quantity) {
            Ok(0) => Some(1),
            Ok(quantity) if quantity <= MAX_QUANTITY => Some(quantity),
            _ => {
                errors.push(FieldViolation::new(
                    "quantity",
                    format!("must be 0 (meaning 1) to {MAX_QUANTITY}"),
                ));
                None
            }
        };
        match (request_id, user, metadata, quantity) {
            (Some(request_id), Some(user), Some(metadata), Some(quantity)) if errors.is_empty() => {
                Ok(Self {
                    request_id,
                    user,
                    product_id,
                    license_template_id,
                    metadata,
                    subscription_id,
                    quantity,
                })
            }
            _ => Err(errors),
        }
    }
}

// === lifecycle requests ===
//
// Every lifecycle request has a `request_id` and a `target` (a license id or a subscription
// reference, exactly one); the rest is the action's own fields.

/// How far ahead of the gateway's clock a provider's event time may be. A time further ahead
/// is a mistake (milliseconds sent as seconds), and would supersede every real event after it.
const EVENT_TIME_AHEAD: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// The `target` oneof of a lifecycle request, whichever message it came in.
enum RawTarget {
    License(String),
    Subscription(String),
}

macro_rules! raw_target {
    ($module:ident, $target:expr) => {
        match $target {
            Some(pb::$module::Target::LicenseId(id)) => Some(RawTarget::License(id)),
            Some(pb::$module::Target::SubscriptionId(id)) => Some(RawTarget::Subscription(id)),
            None => None,
        }
    };
}

/// Parses what every lifecycle request has, then builds the command from `action`.
fn lifecycle_command(
    mut errors: ValidationErrors,
    request_id: &str,
    target: Option<RawTarget>,
    action: Option<LifecycleAction>,
) -> Result<LifecycleCommand, ValidationErrors> {
    let request_id = errors.check(RequestId::parse("request_id", request_id));
    let target = match target {
        Some(RawTarget::License(id)) => {
            errors.check(CryptlexId::parse("license_id", &id).map(LicenseTarget::License))
        }
        Some(RawTarget::Subscription(id)) => errors
            .check(SubscriptionId::parse("subscription_id", &id).map(LicenseTarget::Subscription)),
        None => {
            errors.push(FieldViolation::new(
                "target",
                "one of license_id or subscription_id is required",
            ));
            None
        }
    };
    match (request_id, target, action) {
        (Some(request_id), Some(target), Some(action)) if errors.is_empty() => {
            Ok(LifecycleCommand {
                request_id,
                target,
                action,
            })
        }
        _ => Err(errors),
    }
}

/// Reads a `Timestamp` a client sent.
fn instant(field: &str, at: &Timestamp) -> Result<DateTime<Utc>, FieldViolation> {
    let (first, last) = TIMESTAMP_SECONDS;
    let nanos = u32::try_from(at.nanos)
        .ok()
        .filter(|nanos| *nanos < 1_000_000_000);
    match nanos {
        Some(nanos) if (first..=last).contains(&at.seconds) => {
            DateTime::from_timestamp(at.seconds, nanos)
                .ok_or_else(|| FieldViolation::new(field, "is not a valid time"))
        }
        _ => Err(FieldViolation::new(field, "is not a valid time")),
    }
}

/// Reads a provider's event time: required, and not in the future beyond clock skew.
fn event_time(
    errors: &mut ValidationErrors,
    at: Option<&Timestamp>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let Some(at) = at else {
        errors.push(FieldViolation::new(
            "event_time",
            "is required: it orders suspend and resume events",
        ));
        return None;
    };
    let at = errors.check(instant("event_time", at))?;
    if at > now + EVENT_TIME_AHEAD {
        errors.push(FieldViolation::new(
            "event_time",
            "is more than 5 minutes in the future",
        ));
        return None;
    }
    Some(at)
}

impl TryFrom<pb::RenewLicenseRequest> for LifecycleCommand {
    type Error = ValidationErrors;

    fn try_from(request: pb::RenewLicenseRequest) -> Result<Self, Self::Error> {
        let mut errors = ValidationErrors::new();
        let action = match request.expires_at.as_ref() {
            None => Some(LifecycleAction::Renew { expires_at: None }),
            Some(at) => match errors.check(instant("expires_at", at)) {
                Some(at) if at <= Utc::now() => {
                    errors.push(FieldViolation::new("expires_at", "must be in the future"));
                    None
                }
                Some(at) => Some(LifecycleAction::Renew {
                    expires_at: Some(at),
                }),
                None => None,
            },
        };
        let target = raw_target!(renew_license_request, request.target);
        lifecycle_command(errors, &request.request_id, target, action)
    }
}

impl TryFrom<pb::SuspendLicenseRequest> for LifecycleCommand {
    type Error = ValidationErrors;

    fn try_from(request: pb::SuspendLicenseRequest) -> Result<Self, Self::Error> {
        let mut errors = ValidationErrors::new();
        let action = event_time(&mut errors, request.event_time.as_ref(), Utc::now())
            .map(|event_time| LifecycleAction::Suspend { event_time });
        let target = raw_target!(suspend_license_request, request.target);
        lifecycle_command(errors, &request.request_id, target, action)
    }
}

impl TryFrom<pb::ResumeLicenseRequest> for LifecycleCommand {
    type Error = ValidationErrors;

    fn try_from(request: pb::ResumeLicenseRequest) -> Result<Self, Self::Error> {
        let mut errors = ValidationErrors::new();
        let action = event_time(&mut errors, request.event_time.as_ref(), Utc::now())
            .map(|event_time| LifecycleAction::Resume { event_time });
        let target = raw_target!(resume_license_request, request.target);
        lifecycle_command(errors, &request.request_id, target, action)
    }
}

impl TryFrom<pb::RevokeLicenseRequest> for LifecycleCommand {
    type Error = ValidationErrors;

    fn try_from(request: pb::RevokeLicenseRequest) -> Result<Self, Self::Error> {
        let mut errors = ValidationErrors::new();
        let reason = match pb::RevocationReason::try_from(request.reason) {
            Ok(pb::RevocationReason::Unspecified) => Some(RevocationReason::Unspecified),
            Ok(pb::RevocationReason::Refund) => Some(RevocationReason::Refund),
            Ok(pb::RevocationReason::Chargeback) => Some(RevocationReason::Chargeback),
            Ok(pb::RevocationReason::Cancellation) => Some(RevocationReason::Cancellation),
            Ok(pb::RevocationReason::Other) => Some(RevocationReason::Other),
            Err(_) => {
                errors.push(FieldViolation::new("reason", "is not a RevocationReason"));
                None
            }
        };
        let note = request.note.trim();
        if note.chars().count() > MAX_REVOCATION_NOTE {
            errors.push(FieldViolation::new(
                "note",
                format!("must be at most {MAX_REVOCATION_NOTE} characters"),
            ));
        }
        if note.chars().any(char::is_control) {
            errors.push(FieldViolation::new(
                "note",
                "must not contain control characters",
            ));
        }
        if reason == Some(RevocationReason::Other) && note.is_empty() {
            errors.push(FieldViolation::new(
                "note",
                "is required with REVOCATION_REASON_OTHER: say what the reason is",
            ));
        }
        let note = (!note.is_empty()).then(|| note.to_owned());
        let action = reason.map(|reason| LifecycleAction::Revoke { reason, note });
        let target = raw_target!(revoke_license_request, request.target);
        lifecycle_command(errors, &request.request_id, target, action)
    }
}

impl TryFrom<pb::SetSeatsRequest> for LifecycleCommand {
    type Error = ValidationErrors;

    fn try_from(request: pb::SetSeatsRequest) -> Result<Self, Self::Error> {
        let mut errors = ValidationErrors::new();
        let action = if (1..=MAX_SEATS).contains(&request.allowed_activations) {
            Some(LifecycleAction::SetSeats {
                allowed_activations: request.allowed_activations,
            })
        } else {
            errors.push(FieldViolation::new(
                "allowed_activations",
                format!("must be 1 to {MAX_SEATS}"),
            ));
            None
        };
        let target = raw_target!(set_seats_request, request.target);
        lifecycle_command(errors, &request.request_id, target, action)
    }
}

/// The most seats `SetSeats` accepts (the contract's bound).
const MAX_SEATS: i32 = 10_000;

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

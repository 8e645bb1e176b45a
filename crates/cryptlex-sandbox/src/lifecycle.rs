//! The two expiry endpoints of a license beside `PATCH /v3/licenses/{id}`: setting the expiry
//! outright (`PATCH /v3/licenses/{id}/expires-at`, S1's `UpdateExpiresAtLicense`) and renewing by
//! the subscription interval (`POST /v3/licenses/{id}/renew`, S1's `RenewLicense`). Both need a
//! personal access token with `license:write`, answer the `LicenseDto` as it now is, and fire
//! their own webhook (`license.expiresAt.updated`, `license.renewed`), not `license.updated`:
//! S1 declares exactly one callback on each.
//!
//! The read of the license and its change happen under one lock, so two renewals at once
//! extend twice, one after the other, as two renewals at Cryptlex would: `/renew` is not
//! idempotent, and a caller that must renew once has to guard it itself.
//!
//! # What the sandbox answers where S1 is silent
//!
//! | question | the sandbox's answer |
//! |---|---|
//! | what renew adds the interval to | the current `expiresAt`; or now, when it has passed or is unset (an activation-triggered license not yet activated). Cryptlex's guide says "adds the current subscriptionInterval to the expiration date"; starting from now when that date is past is an inference, so a renewal always ends in the future |
//! | renewing a perpetual license, or one without a `subscriptionInterval` (say, given a fixed `expiresAt`) | 400, `code` null: there is nothing to add. S1 declares 400 and 409 without saying which; 400 is the one `PATCH /expires-at` shares |
//! | renewing a revoked or suspended license | allowed, and the license stays revoked or suspended (as in the dashboard, renewing and revoking are separate actions) |
//! | `PATCH /expires-at` with `{}` (S1 requires no property) | 400 "The expiresAt field is required.": absent is not `null`, and reading it as "make perpetual" would turn a buggy client's call into a free license |
//! | `expiresAt: null` | the license becomes perpetual: no expiry and no subscription interval, so `perpetual` reads true (S1: "Set to null to make the license perpetual") |
//! | `expiresAt` in the past | accepted: the license is then expired (Cryptlex's guide: the expiry "can manually be updated to extend, shorten, or correct") |
//! | a date on a perpetual license | accepted; the license expires then and, having no interval, cannot be renewed until one is set |
//! | precision | expiries are kept to 100 ns, the .NET tick Cryptlex's timestamps carry, so what is answered is exactly what is stored |
//!
//! It deliberately does not model `PATCH /v3/licenses/{id}/subscription` (changing the interval)
//! or the deprecated `/extend`: the gateway calls neither.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use chrono::{DateTime, Timelike as _, Utc};
use serde::{Deserialize, Deserializer};

use crate::pipeline::Caller;
use crate::routes::{ApiResult, date_time, domain_error, parse_json};
use crate::shared::{Shared, lock};
use crate::state::{LicenseRecord, LicenseUpdate, add_interval};
use crate::webhooks::events;
use crate::wire::{ApiError, LicenseDto};

/// S1's `LicenseExpiresAtUpdateRequestModel`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExpiresAtRequest {
    /// `None`: the field is absent; `Some(None)`: it is `null`.
    #[serde(default, deserialize_with = "present")]
    expires_at: Option<Option<String>>,
}

/// Reads a field that is there (even as `null`) as `Some`, so absent and `null` stay apart.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(deserializer).map(Some)
}

/// `PATCH /v3/licenses/{id}/expires-at`: sets the expiry (or, with `null`, makes the license
/// perpetual) and fires `license.expiresAt.updated`. Sending the same date again changes
/// nothing but `updatedAt`, so a replay is harmless.
pub(crate) async fn update_expires_at(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<LicenseDto>> {
    caller.require_scope("license:write")?;
    let request: ExpiresAtRequest = parse_json(&body)?;
    let Some(expires_at) = request.expires_at else {
        return Err(ApiError::bad_request("The expiresAt field is required."));
    };
    let expires_at = date_time("expiresAt", expires_at.as_deref())?.map(to_ticks);
    let dto = change_expiry(&shared, &id, events::LICENSE_EXPIRES_AT_UPDATED, |_, _| {
        Ok(expires_at)
    })?;
    Ok(Json(dto))
}

/// `POST /v3/licenses/{id}/renew`: extends the expiry by the license's subscription interval
/// (see the module's table for where it starts) and fires `license.renewed`. Not idempotent.
pub(crate) async fn renew_license(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<LicenseDto>> {
    caller.require_scope("license:write")?;
    let dto = change_expiry(&shared, &id, events::LICENSE_RENEWED, |license, now| {
        renewed_expiry(license, now).map(Some)
    })?;
    Ok(Json(dto))
}

/// Returns the expiry a renewal at `now` gives `license`, or the 400 when it cannot be renewed.
pub(crate) fn renewed_expiry(
    license: &LicenseRecord,
    now: DateTime<Utc>,
) -> ApiResult<DateTime<Utc>> {
    let Some(interval) = license
        .subscription_interval
        .as_deref()
        .filter(|interval| !interval.is_empty())
    else {
        let message = if license.is_perpetual() {
            "A perpetual license cannot be renewed."
        } else {
            "The license has no subscription interval to renew by."
        };
        return Err(ApiError::bad_request(message));
    };
    let start = match license.expires_at {
        Some(expires_at) if expires_at > now => expires_at,
        _ => now,
    };
    // Intervals are checked when set, so only an expiry past the year 262143 fails here.
    add_interval(start, interval)
        .map(to_ticks)
        .ok_or_else(|| ApiError::bad_request("The renewed expiry is out of range."))
}

/// Reads the license, lets `decide` pick its new expiry, stores it and fires `event` with the
/// license as it is answered, all under the one domain lock.
fn change_expiry(
    shared: &Shared,
    id: &str,
    event: &str,
    decide: impl FnOnce(&LicenseRecord, DateTime<Utc>) -> ApiResult<Option<DateTime<Utc>>>,
) -> ApiResult<LicenseDto> {
    let now = Utc::now();
    let mut domain = lock(&shared.domain);
    let license = domain
        .license(id)
        .ok_or_else(|| ApiError::not_found("License"))?;
    let expires_at = decide(license, now)?;
    let update = LicenseUpdate {
        expires_at: Some(expires_at),
        ..LicenseUpdate::default()
    };
    let license = domain
        .update_license(id, update, now)
        .map_err(domain_error)?;
    let owner = license.user_id.as_deref().and_then(|id| domain.user(id));
    let dto = LicenseDto::new(&license, owner);
    shared.webhooks.fire(event, &dto);
    Ok(dto)
}

/// Drops what is finer than 100 ns, the tick of Cryptlex's (.NET) timestamps.
fn to_ticks(at: DateTime<Utc>) -> DateTime<Utc> {
    let nanos = at.nanosecond();
    at.with_nanosecond(nanos - nanos % 100).unwrap_or(at)
}

#[cfg(test)]
mod unit_tests {
    use chrono::TimeZone as _;

    use super::*;
    use crate::state::Domain;

    fn license(interval: Option<&str>, expires_at: Option<DateTime<Utc>>) -> LicenseRecord {
        let now = Utc::now();
        let mut license = Domain::seeded(now).licenses()[0].clone();
        license.subscription_interval = interval.map(str::to_owned);
        license.expires_at = expires_at;
        license
    }

    #[test]
    fn a_renewal_adds_the_interval_to_a_future_expiry() {
        let now = Utc.with_ymd_and_hms(2025, 3, 1, 0, 0, 0).unwrap();
        let expiry = Utc.with_ymd_and_hms(2025, 3, 20, 0, 0, 0).unwrap();
        let renewed = renewed_expiry(&license(Some("P1M"), Some(expiry)), now).unwrap();
        assert_eq!(renewed, Utc.with_ymd_and_hms(2025, 4, 20, 0, 0, 0).unwrap());
    }

    #[test]
    fn a_renewal_of_a_lapsed_or_unstarted_license_starts_from_now() {
        let now = Utc.with_ymd_and_hms(2025, 3, 1, 0, 0, 0).unwrap();
        let lapsed = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
        let expected = Utc.with_ymd_and_hms(2025, 3, 8, 0, 0, 0).unwrap();
        assert_eq!(
            renewed_expiry(&license(Some("P7D"), Some(lapsed)), now).unwrap(),
            expected
        );
        assert_eq!(
            renewed_expiry(&license(Some("P7D"), None), now).unwrap(),
            expected
        );
    }

    #[test]
    fn a_license_without_an_interval_cannot_be_renewed() {
        let now = Utc::now();
        for unrenewable in [
            license(None, None),
            license(None, Some(now)),
            license(Some(""), None),
        ] {
            let error = renewed_expiry(&unrenewable, now).unwrap_err();
            assert_eq!(error.status, http::StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn expiries_keep_whole_ticks() {
        let at = Utc.timestamp_opt(1_700_000_000, 123_456_789).unwrap();
        assert_eq!(to_ticks(at).nanosecond(), 123_456_700);
    }
}

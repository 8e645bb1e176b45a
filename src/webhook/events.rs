//! Cryptlex's webhook payloads and what they change for the caches.
//!
//! A delivery is `{event, data, triggeredAt}` (Cryptlex's
//! `WebhookPayloadDto`), `data` being the DTO the API would return. Events
//! are mapped by family, the part of the name before the first dot:
//!
//! - `license.*` (`LicenseDto`): the license `id`, and its user from the
//!   `user` object or `userId` when the license has one.
//! - `user.*` (`UserDto`): the user `id`.
//! - `activation.*` (`ActivationDto`): the activation's license
//!   (`licenseId`, or a `license` object) and user (`userId` or `user`): an
//!   activation changes the license's activation counts on license pages.
//!
//! Any other family (`trialActivation.*`, `product.*`, `account.*`, ...) is
//! nothing the caches hold and is acknowledged without a change. Only the
//! ids are read; the rest of the DTO (emails, license keys) is skipped and
//! never kept.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserialize;

use crate::domain::CryptlexId;
use crate::licensing::changes::Change;

/// The longest event name accepted; Cryptlex's are under 40 characters.
const MAX_EVENT_CHARS: usize = 64;

/// A delivery that is not a well-formed Cryptlex payload. Carries no part of
/// the body, so it can be logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Malformed {
    #[error("the body is not a webhook payload ({{event, data, triggeredAt}})")]
    NotAPayload,
    #[error("the event name is not one Cryptlex could send")]
    BadEventName,
    #[error("triggeredAt is not a date and time")]
    BadTriggeredAt,
    #[error("the {0} event's data has no usable {1}")]
    MissingId(&'static str, &'static str),
}

/// The parts of a delivery the gateway reads.
#[derive(Debug)]
pub(crate) struct Delivery {
    /// The event name, checked to be short and of safe characters (so it
    /// may be logged and used as a key).
    pub(crate) event: String,
    /// `triggeredAt` as sent (part of the replay key).
    pub(crate) triggered_at_text: String,
    pub(crate) triggered_at: DateTime<Utc>,
    data: serde_json::Value,
}

#[derive(Deserialize)]
struct Envelope {
    event: String,
    data: serde_json::Value,
    #[serde(rename = "triggeredAt")]
    triggered_at: String,
}

/// Parses a delivery's body.
pub(crate) fn parse(body: &[u8]) -> Result<Delivery, Malformed> {
    let envelope: Envelope = serde_json::from_slice(body).map_err(|_| Malformed::NotAPayload)?;
    if !is_event_name(&envelope.event) {
        return Err(Malformed::BadEventName);
    }
    let triggered_at =
        parse_triggered_at(&envelope.triggered_at).ok_or(Malformed::BadTriggeredAt)?;
    Ok(Delivery {
        event: envelope.event,
        triggered_at_text: envelope.triggered_at,
        triggered_at,
        data: envelope.data,
    })
}

/// Whether `event` looks like a Cryptlex event name (`family.action`,
/// letters, digits, dots, dashes and underscores).
fn is_event_name(event: &str) -> bool {
    !event.is_empty()
        && event.len() <= MAX_EVENT_CHARS
        && event
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-' | b'_'))
}

/// `triggeredAt` as RFC 3339, or without an offset (read as UTC, which is
/// what Cryptlex's API uses for every date).
fn parse_triggered_at(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Some(at.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|naive| naive.and_utc())
}

impl Delivery {
    /// The cache change this delivery announces; `None` for an event family
    /// the caches do not hold.
    pub(crate) fn change(&self) -> Result<Option<Change>, Malformed> {
        let family = self.event.split('.').next().unwrap_or_default();
        let ids = || Ids::deserialize(&self.data).unwrap_or_default();
        match family {
            "license" => {
                let ids = ids();
                let license_id =
                    id(ids.id.as_deref()).ok_or(Malformed::MissingId("license", "id"))?;
                Ok(Some(Change::License {
                    license_id,
                    user_id: ids.user_id(),
                }))
            }
            "user" => {
                let user_id = id(ids().id.as_deref()).ok_or(Malformed::MissingId("user", "id"))?;
                Ok(Some(Change::User { user_id }))
            }
            "activation" => {
                let ids = ids();
                let license_id = id(ids.license_id.as_deref())
                    .or_else(|| id(ids.license.as_ref().and_then(|l| l.id.as_deref())))
                    .ok_or(Malformed::MissingId("activation", "licenseId"))?;
                Ok(Some(Change::License {
                    license_id,
                    user_id: ids.user_id(),
                }))
            }
            _ => Ok(None),
        }
    }
}

/// The ids a DTO may carry; everything else is skipped by serde.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Ids {
    id: Option<String>,
    user_id: Option<String>,
    user: Option<Nested>,
    license_id: Option<String>,
    license: Option<Nested>,
}

#[derive(Debug, Default, Deserialize)]
struct Nested {
    id: Option<String>,
}

impl Ids {
    /// The user from the `user` object, else `userId`; none when neither is
    /// a usable id (a license without a user).
    fn user_id(&self) -> Option<CryptlexId> {
        id(self.user.as_ref().and_then(|user| user.id.as_deref()))
            .or_else(|| id(self.user_id.as_deref()))
    }
}

fn id(value: Option<&str>) -> Option<CryptlexId> {
    value.and_then(|value| CryptlexId::parse("id", value).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LICENSE_ID: &str = "b12d4b6c-8e7f-4ab1-9253-6f708192a3b4";
    const USER_ID: &str = "6c8f0d2e-4a3b-4c7d-9e1f-2b3c4d5e6f70";

    fn delivery(event: &str, data: serde_json::Value) -> Delivery {
        let body = serde_json::json!({
            "event": event,
            "data": data,
            "triggeredAt": "2026-12-02T01:20:36.123Z",
        });
        parse(body.to_string().as_bytes()).expect("a payload")
    }

    fn license_id() -> CryptlexId {
        CryptlexId::parse("id", LICENSE_ID).expect("id")
    }

    fn user_id() -> CryptlexId {
        CryptlexId::parse("id", USER_ID).expect("id")
    }

    /// A `LicenseDto` as Cryptlex's OpenAPI document describes it (the
    /// fields around the ids included, so skipping them is tested too).
    fn license_dto(user: serde_json::Value, user_id: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "id": LICENSE_ID,
            "key": "A1B2C3-D4E5F6-A7B8C9-D0E1F2",
            "revoked": true,
            "suspended": false,
            "allowedActivations": 2,
            "totalActivations": 1,
            "metadata": [{"key": "order", "value": "42", "visible": false}],
            "productId": "8a6f4e2d-1b3c-4d5e-8f70-9a1b2c3d4e5f",
            "user": user,
            "userId": user_id,
            "organization": null,
            "createdAt": "2026-01-01T00:00:00Z",
            "expiresAt": null,
        })
    }

    #[test]
    fn a_license_event_names_the_license_and_its_user_from_either_field() {
        let with_object = delivery(
            "license.updated",
            license_dto(
                serde_json::json!({"id": USER_ID, "email": "other@example.com"}),
                serde_json::Value::Null,
            ),
        );
        let expected = Change::License {
            license_id: license_id(),
            user_id: Some(user_id()),
        };
        assert_eq!(with_object.change(), Ok(Some(expected.clone())));
        let with_id = delivery(
            "license.deleted",
            license_dto(serde_json::Value::Null, serde_json::json!(USER_ID)),
        );
        assert_eq!(with_id.change(), Ok(Some(expected)));
        let without_user = delivery(
            "license.created",
            license_dto(serde_json::Value::Null, serde_json::Value::Null),
        );
        assert_eq!(
            without_user.change(),
            Ok(Some(Change::License {
                license_id: license_id(),
                user_id: None,
            }))
        );
    }

    #[test]
    fn a_user_event_names_the_user() {
        let user = delivery(
            "user.updated",
            serde_json::json!({
                "id": USER_ID,
                "email": "other@example.com",
                "firstName": "O",
                "role": "user",
                "metadata": [],
            }),
        );
        assert_eq!(user.change(), Ok(Some(Change::User { user_id: user_id() })));
    }

    #[test]
    fn an_activation_event_names_its_license() {
        // `ActivationDto`: `licenseId` is required; `userId` is nullable.
        let activation = delivery(
            "activation.created",
            serde_json::json!({
                "id": "0c1d2e3f-4a5b-4c6d-8e7f-901a2b3c4d5e",
                "os": "linux",
                "hostname": "build-7",
                "licenseId": LICENSE_ID,
                "productId": "8a6f4e2d-1b3c-4d5e-8f70-9a1b2c3d4e5f",
                "userId": USER_ID,
                "offline": false,
                "metadata": [],
            }),
        );
        let expected = Change::License {
            license_id: license_id(),
            user_id: Some(user_id()),
        };
        assert_eq!(activation.change(), Ok(Some(expected)));
        let nested = delivery(
            "activation.deleted",
            serde_json::json!({"id": "a-1", "license": {"id": LICENSE_ID}}),
        );
        assert_eq!(
            nested.change(),
            Ok(Some(Change::License {
                license_id: license_id(),
                user_id: None,
            }))
        );
    }

    #[test]
    fn other_families_change_nothing_even_with_odd_data() {
        for (event, data) in [
            ("trialActivation.created", serde_json::json!({"id": "t-1"})),
            ("product.updated", serde_json::json!([1, 2, 3])),
            ("account.logged-in", serde_json::json!({"id": USER_ID})),
            ("licenses", serde_json::json!(null)),
        ] {
            assert_eq!(delivery(event, data).change(), Ok(None), "{event}");
        }
    }

    #[test]
    fn a_known_family_without_a_usable_id_is_malformed() {
        for (event, data) in [
            ("license.updated", serde_json::json!({"key": "K"})),
            ("license.updated", serde_json::json!({"id": "has spaces"})),
            ("license.updated", serde_json::json!("not an object")),
            ("user.deleted", serde_json::json!({"id": 42})),
            ("activation.created", serde_json::json!({"id": "a-1"})),
        ] {
            assert!(
                matches!(
                    delivery(event, data).change(),
                    Err(Malformed::MissingId(..))
                ),
                "{event}"
            );
        }
    }

    #[test]
    fn envelopes_that_are_not_payloads_are_malformed() {
        let cases: &[(&[u8], Malformed)] = &[
            (b"", Malformed::NotAPayload),
            (b"not json", Malformed::NotAPayload),
            (br#"{"event":"license.updated","data":{}}"#, Malformed::NotAPayload),
            (
                br#"{"event":"license updated<script>","data":{},"triggeredAt":"2026-01-01T00:00:00Z"}"#,
                Malformed::BadEventName,
            ),
            (
                br#"{"event":"license.updated","data":{},"triggeredAt":"yesterday"}"#,
                Malformed::BadTriggeredAt,
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(
                parse(body).err().as_ref(),
                Some(expected),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn triggered_at_is_read_with_or_without_an_offset() {
        let expected: DateTime<Utc> = "2026-12-02T01:20:36Z".parse().expect("time");
        for text in [
            "2026-12-02T01:20:36Z",
            "2026-12-02T02:20:36+01:00",
            "2026-12-02T01:20:36.000Z",
            "2026-12-02T01:20:36",
        ] {
            assert_eq!(parse_triggered_at(text), Some(expected), "{text}");
        }
    }
}

//! What changed in Cryptlex, as far as the read caches care.
//!
//! A [`Change`] comes from three places: a write through this gateway
//! (issuance, sign-out, the portal's self-service calls), a Cryptlex webhook,
//! or another replica (PostgreSQL `LISTEN/NOTIFY`). Each replica applies it to
//! its own caches; changes that began here are also handed to whoever
//! subscribed (the relay that tells the other replicas).
//!
//! A change names users, licenses and tokens by id or by digest, never by a
//! secret, so it may travel between replicas and appear in logs.

use serde::{Deserialize, Serialize};

use crate::domain::CryptlexId;

/// One thing that changed, and so which cached answers are outdated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// Something about this user changed (profile, password, deletion):
    /// every answer cached for any of their tokens.
    User {
        #[serde(with = "id")]
        user_id: CryptlexId,
    },
    /// A license was created, changed or deleted: every license page that
    /// shows it, and every license page of its user when known.
    License {
        #[serde(with = "id")]
        license_id: CryptlexId,
        #[serde(with = "optional_id", default)]
        user_id: Option<CryptlexId>,
    },
    /// A token was signed out: every answer cached for it. The digest is the
    /// SHA-256 of the token, hex-encoded; the token itself never travels.
    SignedOut { token_digest: String },
    /// Every license page (when nothing narrower is known).
    AllLicensePages,
}

/// Where a change was first seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A write through this replica, or a webhook it received: other
    /// replicas must hear of it.
    Here,
    /// Another replica announced it: apply it, do not pass it on.
    Elsewhere,
}

mod id {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::domain::CryptlexId;

    pub(super) fn serialize<S: Serializer>(id: &CryptlexId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(id.as_str())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<CryptlexId, D::Error> {
        let value = String::deserialize(d)?;
        CryptlexId::parse("id", &value).map_err(|violation| {
            serde::de::Error::custom(format!("not a Cryptlex id: {}", violation.description))
        })
    }
}

mod optional_id {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::domain::CryptlexId;

    pub(super) fn serialize<S: Serializer>(
        id: &Option<CryptlexId>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match id {
            Some(id) => s.serialize_some(id.as_str()),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<CryptlexId>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|value| {
                CryptlexId::parse("id", &value).map_err(|violation| {
                    serde::de::Error::custom(format!(
                        "not a Cryptlex id: {}",
                        violation.description
                    ))
                })
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_travel_as_json_and_come_back_equal() {
        let changes = [
            Change::User {
                user_id: CryptlexId::from_upstream("u-1".into()),
            },
            Change::License {
                license_id: CryptlexId::from_upstream("l-1".into()),
                user_id: None,
            },
            Change::SignedOut {
                token_digest: "ab".repeat(32),
            },
            Change::AllLicensePages,
        ];
        for change in changes {
            let text = serde_json::to_string(&change).expect("serialize");
            assert_eq!(
                serde_json::from_str::<Change>(&text).expect("parse"),
                change
            );
        }
        assert!(serde_json::from_str::<Change>(r#"{"kind":"user","user_id":"a b"}"#).is_err());
    }
}

//! Conversions between domain values and generated `pb` messages.

use chrono::{DateTime, Utc};
use prost_types::Timestamp;

use super::pb;
use crate::domain::{IssuedLicense, Session, UserLicense, UserProfile};

pub(super) fn timestamp(at: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: at.timestamp(),
        // Always below 2e9, so the conversion cannot fail.
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
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
        }
    }
}

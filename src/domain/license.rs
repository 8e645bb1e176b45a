//! What the gateway hands back: sessions, profiles, licenses and pages.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{CryptlexId, RefreshToken, UserToken};

/// A Cryptlex session for one user.
#[derive(Debug, Clone)]
pub struct Session {
    /// The access token Cryptlex issued.
    pub access_token: UserToken,
    /// The refresh token, when Cryptlex issued one (older API versions did
    /// not).
    pub refresh_token: Option<RefreshToken>,
    /// The expiry read (unverified) from the token, for display only.
    pub expires_at: Option<DateTime<Utc>>,
}

/// The signed-in user's profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserProfile {
    pub id: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub name: String,
    pub company: String,
    pub role: String,
    pub two_factor_enabled: bool,
    pub created_at: Option<DateTime<Utc>>,
    pub last_login_at: Option<DateTime<Utc>>,
}

/// A license as its owner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserLicense {
    pub id: String,
    pub key: String,
    pub license_type: String,
    pub product_name: String,
    pub revoked: bool,
    pub suspended: bool,
    pub perpetual: bool,
    pub expires_at: Option<DateTime<Utc>>,
    pub allowed_activations: i32,
    pub total_activations: i32,
    /// -1 means unlimited.
    pub allowed_deactivations: i32,
    pub total_deactivations: i32,
    pub subscription_interval: String,
    pub created_at: Option<DateTime<Utc>>,
    /// Only metadata the owner may see (Cryptlex filters it for us).
    pub metadata: BTreeMap<String, String>,
}

/// What a license means for its owner at one moment, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LicenseStatus {
    Revoked,
    Suspended,
    Expired,
    Active,
}

impl UserLicense {
    /// The license's status at `now`: revoked beats suspended beats expired.
    /// A perpetual license, or one without an expiry yet, never expires.
    pub fn status(&self, now: DateTime<Utc>) -> LicenseStatus {
        if self.revoked {
            LicenseStatus::Revoked
        } else if self.suspended {
            LicenseStatus::Suspended
        } else if !self.perpetual && self.expires_at.is_some_and(|expires| expires <= now) {
            LicenseStatus::Expired
        } else {
            LicenseStatus::Active
        }
    }
}

/// A license created by issuance (the administrator's view).
///
/// Serializable because the ledger stores it to replay later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedLicense {
    pub id: String,
    pub key: String,
    pub product_id: String,
    pub user_id: String,
    pub license_type: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub allowed_activations: i32,
    pub subscription_interval: String,
    pub created_at: Option<DateTime<Utc>>,
    /// The caller's metadata, without the gateway's bookkeeping keys.
    pub metadata: BTreeMap<String, String>,
    /// The subscription reference it was issued with; empty when none. The three fields
    /// below came with the payment lifecycle: licenses stored before decode with defaults.
    #[serde(default)]
    pub subscription_id: String,
    #[serde(default)]
    pub revoked: bool,
    #[serde(default)]
    pub suspended: bool,
}

/// Which slice of a list to fetch, in Cryptlex's terms (1-based page number
/// of `page_size` items).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub page: u32,
    pub page_size: u32,
    pub product_id: Option<CryptlexId>,
}

/// One page of results and whether another may follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The request for the next page; `None` at the end.
    pub next: Option<PageRequest>,
    /// Served from the gateway's memory because Cryptlex was unavailable.
    pub stale: bool,
}

//! The customer-portal part of the account: activations (machines), releases, feature
//! entitlements, two-factor secrets and recovery codes, password-reset tokens, and the reset
//! mails "sent".
//!
//! It lives inside [`Domain`] (one lock), because deactivating a machine changes its license's
//! counters in the same step. Secrets (TOTP secrets, recovery codes, reset tokens) never leave
//! through `Debug` or the control API, except the mails, which tests read on purpose.

use std::collections::{HashMap, VecDeque};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, TimeDelta, Utc};
use rand::RngCore as _;
use rand::seq::IndexedRandom as _;
use serde::Serialize;

use crate::seed;
use crate::state::{Domain, DomainError, LicenseRecord};
use crate::totp;

/// How long a reset token stays valid (the plan's decision; Cryptlex does not document it).
pub(crate) const RESET_TOKEN_TTL: TimeDelta = TimeDelta::hours(1);

/// How many recovery codes one `POST /v3/me/2fa-recovery-codes` makes.
pub(crate) const RECOVERY_CODE_COUNT: usize = 10;

/// The most reset mails kept; older ones are forgotten, so a long demo does not grow forever.
const MAX_RECORDED_MAILS: usize = 1000;

/// The letters of recovery codes: lowercase letters and digits without the look-alikes
/// `0 o 1 l i`, so a code read off paper is typed right.
const RECOVERY_ALPHABET: &[u8] = b"23456789abcdefghjkmnpqrstuvwxyz";

/// One machine activated with a license, with the fields `UserActivationDto` carries.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivationRecord {
    pub id: String,
    pub license_id: String,
    pub product_id: String,
    /// `windows`, `linux`, `macos`, `android` or `ios`.
    pub os: String,
    pub os_version: Option<String>,
    pub hostname: String,
    pub vm_name: Option<String>,
    pub container: bool,
    pub app_version: Option<String>,
    pub release_version: Option<String>,
    pub release_channel: Option<String>,
    pub release_platform: Option<String>,
    pub offline: bool,
    pub location: GeoLocationRecord,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_synced_at: DateTime<Utc>,
}

/// Where an activation came from, as Cryptlex's geo-IP lookup reports it (`GeoLocationDto`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GeoLocationRecord {
    pub ip_address: String,
    pub country_code: Option<String>,
    pub country_name: Option<String>,
    pub region_code: Option<String>,
    pub region_name: Option<String>,
    pub city: Option<String>,
    pub zip_code: Option<String>,
    pub time_zone: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
}

/// A password-reset mail the sandbox "sent" for `POST /v3/accounts/reset-password-request`.
///
/// Test infrastructure: `token` and `link` are live credentials, so `Debug` redacts them and
/// they must never be logged.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PasswordResetMail {
    /// The address the mail went to (the user's, as stored).
    pub to: String,
    pub user_id: String,
    /// The reset token, for `POST /v3/users/{id}/reset-password`.
    pub token: String,
    /// The link the mail carries: `{origin}/reset-password?userId=...&token=...`.
    pub link: String,
    pub sent_at: DateTime<Utc>,
}

impl std::fmt::Debug for PasswordResetMail {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PasswordResetMail")
            .field("to", &self.to)
            .field("user_id", &self.user_id)
            .field("token", &"<redacted>")
            .field("link", &"<redacted>")
            .field("sent_at", &self.sent_at)
            .finish()
    }
}

/// A release of a product, with its files (`UserReleaseDto`).
#[derive(Clone, Debug)]
pub(crate) struct ReleaseRecord {
    pub(crate) id: String,
    pub(crate) product_id: String,
    pub(crate) name: String,
    pub(crate) channel: String,
    pub(crate) version: String,
    pub(crate) platforms: Vec<String>,
    pub(crate) notes: String,
    /// `None` for a draft, which users never see.
    pub(crate) published_at: Option<DateTime<Utc>>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
    pub(crate) files: Vec<ReleaseFileRecord>,
}

/// One downloadable file of a release (`ReleaseFileDto`).
#[derive(Clone, Debug)]
pub(crate) struct ReleaseFileRecord {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) extension: String,
    pub(crate) url: String,
    pub(crate) checksum: String,
    pub(crate) size: i64,
    pub(crate) downloads: i64,
    /// Cryptlex: a secured file needs a license key to download.
    pub(crate) secured: bool,
    pub(crate) created_at: DateTime<Utc>,
}

/// A feature a license entitles its owner to (`FeatureEntitlementDto`).
#[derive(Clone, Debug)]
pub(crate) struct FeatureEntitlementRecord {
    pub(crate) license_id: String,
    pub(crate) feature_id: String,
    pub(crate) feature_name: String,
    pub(crate) value: Option<String>,
    pub(crate) expires_at: Option<DateTime<Utc>>,
}

/// A user's two-factor secrets. The user record's `two_factor_enabled` is true exactly when
/// `active` is set.
#[derive(Default)]
struct TwoFactorSecrets {
    /// The secret codes are checked against at sign-in, once enabled.
    active: Option<String>,
    /// The secret of the last `POST /v3/me/2fa-secret` not yet confirmed by `PATCH /v3/me`.
    pending: Option<String>,
    /// Unused recovery codes; each works once.
    recovery_codes: Vec<String>,
}

struct ResetToken {
    user_id: String,
    expires_at: DateTime<Utc>,
}

/// The customer-portal state; see the module documentation.
pub(crate) struct PortalState {
    /// Kept in creation order, which is also `GET /v3/me/activations`' order.
    activations: Vec<ActivationRecord>,
    /// Kept in creation order; the user view sorts by publication, newest first.
    releases: Vec<ReleaseRecord>,
    feature_entitlements: Vec<FeatureEntitlementRecord>,
    /// By user id.
    two_factor: HashMap<String, TwoFactorSecrets>,
    /// By token. Spent tokens are removed, so a token found here is unused.
    reset_tokens: HashMap<String, ResetToken>,
    mails: VecDeque<PasswordResetMail>,
}

impl std::fmt::Debug for PortalState {
    // Hand-written so no secret, recovery code or reset token can reach a log line.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PortalState")
            .field("activations", &self.activations.len())
            .field("releases", &self.releases.len())
            .field("feature_entitlements", &self.feature_entitlements.len())
            .field("two_factor_users", &self.two_factor.len())
            .field("reset_tokens", &self.reset_tokens.len())
            .field("mails", &self.mails.len())
            .finish()
    }
}

/// How a two-factor step failed; the handlers map each to the decided status and code.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TwoFactorError {
    /// Login of a user with 2FA on, with neither a code nor a recovery code.
    CodeRequired,
    /// A code (or recovery code) that does not match.
    InvalidCode,
    /// 2FA is off (or, to enable it, no secret was generated).
    NotEnabled,
}

impl PortalState {
    /// The seeded machines and releases (see [`seed`]); feature entitlements follow with
    /// [`seed_feature_entitlements`](Self::seed_feature_entitlements) once the licenses exist.
    pub(crate) fn seeded(now: DateTime<Utc>) -> Self {
        PortalState {
            activations: seeded_activations(now),
            releases: seeded_releases(now),
            feature_entitlements: Vec::new(),
            two_factor: HashMap::new(),
            reset_tokens: HashMap::new(),
            mails: VecDeque::new(),
        }
    }

    /// Entitles the first demo license to two features, the second expiring with it.
    pub(crate) fn seed_feature_entitlements(&mut self, license: &LicenseRecord) {
        self.feature_entitlements = vec![
            FeatureEntitlementRecord {
                license_id: license.id.clone(),
                feature_id: seed::FEATURE_IDS[0].to_owned(),
                feature_name: "cloud-sync".to_owned(),
                value: None,
                expires_at: None,
            },
            FeatureEntitlementRecord {
                license_id: license.id.clone(),
                feature_id: seed::FEATURE_IDS[1].to_owned(),
                feature_name: "seats".to_owned(),
                value: Some("5".to_owned()),
                expires_at: license.expires_at,
            },
        ];
    }

    pub(crate) fn activations(&self) -> &[ActivationRecord] {
        &self.activations
    }

    pub(crate) fn activations_of<'a>(
        &'a self,
        license_id: &'a str,
    ) -> impl Iterator<Item = &'a ActivationRecord> + 'a {
        self.activations
            .iter()
            .filter(move |activation| activation.license_id == license_id)
    }

    pub(crate) fn releases(&self) -> &[ReleaseRecord] {
        &self.releases
    }

    pub(crate) fn feature_entitlements_of<'a>(
        &'a self,
        license_id: &'a str,
    ) -> impl Iterator<Item = &'a FeatureEntitlementRecord> + 'a {
        self.feature_entitlements
            .iter()
            .filter(move |entitlement| entitlement.license_id == license_id)
    }

    // === two-factor ===

    /// Makes a new pending secret for the user (replacing an unconfirmed one) and returns it.
    /// An active secret stays in use until a code of the new one confirms it.
    pub(crate) fn new_pending_secret(&mut self, user_id: &str) -> String {
        let secret = totp::new_secret();
        self.two_factor
            .entry(user_id.to_owned())
            .or_default()
            .pending = Some(secret.clone());
        secret
    }

    /// The secret an authenticator app of this user shows codes for right now: the pending
    /// one during (re-)enrolment, else the active one.
    pub(crate) fn current_secret(&self, user_id: &str) -> Option<&str> {
        let secrets = self.two_factor.get(user_id)?;
        secrets.pending.as_deref().or(secrets.active.as_deref())
    }

    /// Checks a code against the active secret.
    pub(crate) fn active_code_matches(
        &self,
        user_id: &str,
        code: &str,
        now: DateTime<Utc>,
    ) -> bool {
        self.two_factor
            .get(user_id)
            .and_then(|secrets| secrets.active.as_deref())
            .is_some_and(|secret| totp::verify(secret, code, unix_seconds(now)))
    }

    /// Spends one unused recovery code (compared ignoring case and surrounding space).
    pub(crate) fn spend_recovery_code(&mut self, user_id: &str, code: &str) -> bool {
        let Some(secrets) = self.two_factor.get_mut(user_id) else {
            return false;
        };
        let wanted = code.trim().to_ascii_lowercase();
        let Some(index) = secrets
            .recovery_codes
            .iter()
            .position(|known| *known == wanted)
        else {
            return false;
        };
        secrets.recovery_codes.remove(index);
        true
    }

    /// Confirms enrolment: with a code of the pending secret, that secret becomes the active
    /// one. Without a pending secret, a user with 2FA already on confirms with a code of the
    /// active secret, which changes nothing.
    pub(crate) fn enable(
        &mut self,
        user_id: &str,
        code: &str,
        now: DateTime<Utc>,
    ) -> Result<(), TwoFactorError> {
        let secrets = self
            .two_factor
            .get_mut(user_id)
            .ok_or(TwoFactorError::NotEnabled)?;
        match (&secrets.pending, &secrets.active) {
            (Some(pending), _) => {
                if !totp::verify(pending, code, unix_seconds(now)) {
                    return Err(TwoFactorError::InvalidCode);
                }
                secrets.active = secrets.pending.take();
                Ok(())
            }
            (None, Some(active)) if totp::verify(active, code, unix_seconds(now)) => Ok(()),
            (None, Some(_)) => Err(TwoFactorError::InvalidCode),
            (None, None) => Err(TwoFactorError::NotEnabled),
        }
    }

    /// Turns 2FA off with a code of the active secret; the secrets and codes are forgotten.
    pub(crate) fn disable(
        &mut self,
        user_id: &str,
        code: &str,
        now: DateTime<Utc>,
    ) -> Result<(), TwoFactorError> {
        if self
            .two_factor
            .get(user_id)
            .is_none_or(|secrets| secrets.active.is_none())
        {
            return Err(TwoFactorError::NotEnabled);
        }
        if !self.active_code_matches(user_id, code, now) {
            return Err(TwoFactorError::InvalidCode);
        }
        self.two_factor.remove(user_id);
        Ok(())
    }

    /// Replaces the user's recovery codes with [`RECOVERY_CODE_COUNT`] new ones, given a code
    /// of the active secret or an unused recovery code (which is spent either way).
    pub(crate) fn new_recovery_codes(
        &mut self,
        user_id: &str,
        code: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, TwoFactorError> {
        if self
            .two_factor
            .get(user_id)
            .is_none_or(|secrets| secrets.active.is_none())
        {
            return Err(TwoFactorError::NotEnabled);
        }
        if !self.active_code_matches(user_id, code, now) && !self.spend_recovery_code(user_id, code)
        {
            return Err(TwoFactorError::InvalidCode);
        }
        let codes: Vec<String> = (0..RECOVERY_CODE_COUNT)
            .map(|_| random_recovery_code())
            .collect();
        if let Some(secrets) = self.two_factor.get_mut(user_id) {
            secrets.recovery_codes = codes.clone();
        }
        Ok(codes)
    }

    /// The second step of a login for a user with 2FA on: `code` is checked when given (a
    /// recovery code given beside it is then not looked at), else `recovery_code`, spent if
    /// it matches.
    pub(crate) fn check_login(
        &mut self,
        user_id: &str,
        code: Option<&str>,
        recovery_code: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), TwoFactorError> {
        let passed = match (code, recovery_code) {
            (Some(code), _) => self.active_code_matches(user_id, code, now),
            (None, Some(recovery_code)) => self.spend_recovery_code(user_id, recovery_code),
            (None, None) => return Err(TwoFactorError::CodeRequired),
        };
        if passed {
            Ok(())
        } else {
            Err(TwoFactorError::InvalidCode)
        }
    }

    // === password reset ===

    /// Mints a single-use reset token for the user, valid for [`RESET_TOKEN_TTL`]. Older
    /// unused tokens stay valid. The token is URL-safe (base64url of 32 random bytes).
    pub(crate) fn mint_reset_token(&mut self, user_id: &str, now: DateTime<Utc>) -> String {
        self.reset_tokens.retain(|_, token| token.expires_at > now);
        let mut bytes = [0_u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let token = URL_SAFE_NO_PAD.encode(bytes);
        self.reset_tokens.insert(
            token.clone(),
            ResetToken {
                user_id: user_id.to_owned(),
                expires_at: now + RESET_TOKEN_TTL,
            },
        );
        token
    }

    /// Spends a reset token of this user: true if it was unused, unexpired and theirs. A
    /// token presented for another user is not spent.
    pub(crate) fn spend_reset_token(
        &mut self,
        user_id: &str,
        token: &str,
        now: DateTime<Utc>,
    ) -> bool {
        let valid = self
            .reset_tokens
            .get(token)
            .is_some_and(|found| found.user_id == user_id && found.expires_at > now);
        if valid {
            self.reset_tokens.remove(token);
        }
        valid
    }

    pub(crate) fn record_mail(&mut self, mail: PasswordResetMail) {
        self.mails.push_back(mail);
        while self.mails.len() > MAX_RECORDED_MAILS {
            self.mails.pop_front();
        }
    }

    pub(crate) fn mails(&self) -> Vec<PasswordResetMail> {
        self.mails.iter().cloned().collect()
    }
}

// === what needs both the licenses and the portal state ===

impl Domain {
    /// Returns the activation if its license belongs to `user_id` (its current owner).
    pub(crate) fn owned_activation(&self, user_id: &str, id: &str) -> Option<&ActivationRecord> {
        self.portal
            .activations
            .iter()
            .find(|activation| activation.id == id)
            .filter(|activation| self.owns_license(user_id, &activation.license_id))
    }

    /// Returns the user's license, or `None` if it does not exist or is someone else's.
    pub(crate) fn owned_license(&self, user_id: &str, license_id: &str) -> Option<&LicenseRecord> {
        self.license(license_id)
            .filter(|license| license.user_id.as_deref() == Some(user_id))
    }

    pub(crate) fn owns_license(&self, user_id: &str, license_id: &str) -> bool {
        self.owned_license(user_id, license_id).is_some()
    }

    /// Deletes an activation as `DELETE /v3/activations/{id}` does: refused when its license
    /// has used up its deactivations (`allowedDeactivations` -1 means unlimited), else the
    /// activation is gone, `totalActivations` goes down by one and `totalDeactivations` up.
    /// Returns the activation as it was.
    pub(crate) fn deactivate(
        &mut self,
        id: &str,
        now: DateTime<Utc>,
    ) -> Result<ActivationRecord, DomainError> {
        let index = self
            .portal
            .activations
            .iter()
            .position(|activation| activation.id == id)
            .ok_or(DomainError::UnknownActivation)?;
        let license_id = self.portal.activations[index].license_id.clone();
        if let Some(license) = self.license(&license_id)
            && license.allowed_deactivations != -1
            && license.total_deactivations >= license.allowed_deactivations
        {
            return Err(DomainError::DeactivationLimitReached);
        }
        let activation = self.portal.activations.remove(index);
        if let Some(license) = self.license_mut(&license_id) {
            license.total_activations = (license.total_activations - 1).max(0);
            license.total_deactivations = license.total_deactivations.saturating_add(1);
            license.updated_at = now;
        }
        Ok(activation)
    }
}

pub(crate) fn unix_seconds(at: DateTime<Utc>) -> u64 {
    u64::try_from(at.timestamp()).unwrap_or(0)
}

/// `xxxxx-xxxxx` from [`RECOVERY_ALPHABET`]: 11 characters, so it fits the 12 that
/// `TwoFactorCodeRequestModel` allows, with about 49 bits of randomness.
fn random_recovery_code() -> String {
    let mut rng = rand::rng();
    let mut pick = || {
        RECOVERY_ALPHABET
            .choose(&mut rng)
            .map(|byte| char::from(*byte))
            .unwrap_or('a')
    };
    let first: String = (0..5).map(|_| pick()).collect();
    let second: String = (0..5).map(|_| pick()).collect();
    format!("{first}-{second}")
}

// === the seed ===

fn location(
    ip_address: &str,
    (country_code, country_name): (&str, &str),
    (region_code, region_name): (&str, &str),
    city: &str,
    zip_code: &str,
    time_zone: &str,
    (latitude, longitude): (f64, f64),
) -> GeoLocationRecord {
    GeoLocationRecord {
        ip_address: ip_address.to_owned(),
        country_code: Some(country_code.to_owned()),
        country_name: Some(country_name.to_owned()),
        region_code: Some(region_code.to_owned()),
        region_name: Some(region_name.to_owned()),
        city: Some(city.to_owned()),
        zip_code: Some(zip_code.to_owned()),
        time_zone: Some(time_zone.to_owned()),
        latitude: Some(latitude),
        longitude: Some(longitude),
    }
}

/// The seeded machines, oldest first. Addresses are from the documentation ranges
/// (RFC 5737), so no real host is named.
fn seeded_activations(now: DateTime<Utc>) -> Vec<ActivationRecord> {
    struct Machine {
        id: &'static str,
        license_id: &'static str,
        os: (&'static str, &'static str),
        hostname: &'static str,
        vm_name: Option<&'static str>,
        release: (&'static str, &'static str, &'static str),
        location: GeoLocationRecord,
        created_days_ago: i64,
        synced_minutes_ago: i64,
    }
    let machines = [
        Machine {
            id: seed::DEMO_ACTIVATION_IDS[0],
            license_id: seed::DEMO_LICENSE_IDS[0],
            os: ("windows", "10.0.22631"),
            hostname: "DEMO-WORKSTATION",
            vm_name: None,
            release: ("2.1.0", "stable", "windows"),
            location: location(
                "203.0.113.24",
                ("DE", "Germany"),
                ("BE", "Berlin"),
                "Berlin",
                "10115",
                "Europe/Berlin",
                (52.52, 13.405),
            ),
            created_days_ago: 95,
            synced_minutes_ago: 120,
        },
        Machine {
            id: seed::DEMO_ACTIVATION_IDS[1],
            license_id: seed::DEMO_LICENSE_IDS[0],
            os: ("macos", "14.5"),
            hostname: "Demos-MacBook-Pro.local",
            vm_name: None,
            release: ("2.0.3", "stable", "macos"),
            location: location(
                "198.51.100.77",
                ("NL", "Netherlands"),
                ("NH", "North Holland"),
                "Amsterdam",
                "1012",
                "Europe/Amsterdam",
                (52.3676, 4.9041),
            ),
            created_days_ago: 70,
            synced_minutes_ago: 3 * 24 * 60,
        },
        Machine {
            id: seed::LIMITED_ACTIVATION_ID,
            license_id: seed::DEMO_LICENSE_IDS[1],
            os: ("linux", "Ubuntu 22.04"),
            hostname: "build-agent-01",
            vm_name: Some("ci-runner-vm"),
            release: ("2.2.0-beta.1", "beta", "linux"),
            location: location(
                "192.0.2.140",
                ("US", "United States"),
                ("CA", "California"),
                "San Francisco",
                "94103",
                "America/Los_Angeles",
                (37.7749, -122.4194),
            ),
            created_days_ago: 45,
            synced_minutes_ago: 20,
        },
        Machine {
            id: seed::OTHER_ACTIVATION_ID,
            license_id: seed::OTHER_LICENSE_ID,
            os: ("windows", "10.0.19045"),
            hostname: "OTHER-LAPTOP",
            vm_name: None,
            release: ("2.1.0", "stable", "windows"),
            location: location(
                "203.0.113.201",
                ("GB", "United Kingdom"),
                ("ENG", "England"),
                "London",
                "EC1A 1BB",
                "Europe/London",
                (51.5072, -0.1276),
            ),
            created_days_ago: 28,
            synced_minutes_ago: 24 * 60,
        },
    ];
    machines
        .into_iter()
        .map(|machine| {
            let (version, channel, platform) = machine.release;
            let synced = now - TimeDelta::minutes(machine.synced_minutes_ago);
            ActivationRecord {
                id: machine.id.to_owned(),
                license_id: machine.license_id.to_owned(),
                product_id: seed::PRODUCT_ID.to_owned(),
                os: machine.os.0.to_owned(),
                os_version: Some(machine.os.1.to_owned()),
                hostname: machine.hostname.to_owned(),
                vm_name: machine.vm_name.map(str::to_owned),
                container: false,
                app_version: Some(version.to_owned()),
                release_version: Some(version.to_owned()),
                release_channel: Some(channel.to_owned()),
                release_platform: Some(platform.to_owned()),
                offline: false,
                location: machine.location,
                created_at: now - TimeDelta::days(machine.created_days_ago),
                updated_at: synced,
                last_synced_at: synced,
            }
        })
        .collect()
}

/// The seeded releases of the demo product, in creation order: three published, one draft.
fn seeded_releases(now: DateTime<Utc>) -> Vec<ReleaseRecord> {
    let releases = [
        (
            seed::RELEASE_IDS[2],
            "2.0.3",
            "stable",
            "Fixes a crash when a project path holds non-ASCII characters.",
            46,
            Some(45),
        ),
        (
            seed::RELEASE_IDS[1],
            "2.1.0",
            "stable",
            "Faster start-up, a dark theme, and export to PDF.",
            13,
            Some(12),
        ),
        (
            seed::RELEASE_IDS[0],
            "2.2.0-beta.1",
            "beta",
            "Preview of cloud sync. Beta builds may be unstable: keep a backup.",
            4,
            Some(3),
        ),
        (
            seed::DRAFT_RELEASE_ID,
            "2.2.0",
            "stable",
            "Cloud sync for everyone (not yet published).",
            1,
            None,
        ),
    ];
    releases
        .into_iter()
        .map(
            |(id, version, channel, notes, created_days_ago, published_days_ago)| {
                let created_at = now - TimeDelta::days(created_days_ago);
                let published_at = published_days_ago.map(|days| now - TimeDelta::days(days));
                // Beta downloads need a license key (an illustration of `secured`).
                let secured = channel == "beta";
                let files = [
                    (
                        format!("DemoDesktopApp-{version}-x64.msi"),
                        "msi",
                        84_213_760,
                    ),
                    (
                        format!("DemoDesktopApp-{version}-universal.dmg"),
                        "dmg",
                        97_517_568,
                    ),
                    (
                        format!("demo-desktop-app-{version}-x86_64.AppImage"),
                        "AppImage",
                        91_226_112,
                    ),
                ]
                .into_iter()
                .enumerate()
                .map(|(index, (name, extension, size))| ReleaseFileRecord {
                    // Ids derived from the release's, so they are stable across starts.
                    id: format!("{}{index}", &id[..id.len() - 1]),
                    url: format!("https://downloads.sandbox.cryptlex.invalid/releases/{id}/{name}"),
                    checksum: hex::encode(ring::digest::digest(
                        &ring::digest::SHA256,
                        name.as_bytes(),
                    )),
                    name,
                    extension: extension.to_owned(),
                    size,
                    downloads: if published_at.is_some() {
                        1_000 / created_days_ago.max(1) * (3 - index as i64)
                    } else {
                        0
                    },
                    secured,
                    created_at,
                })
                .collect();
                ReleaseRecord {
                    id: id.to_owned(),
                    product_id: seed::PRODUCT_ID.to_owned(),
                    name: format!("{} {version}", seed::PRODUCT_NAME),
                    channel: channel.to_owned(),
                    version: version.to_owned(),
                    platforms: vec!["windows".to_owned(), "macos".to_owned(), "linux".to_owned()],
                    notes: notes.to_owned(),
                    published_at,
                    created_at,
                    updated_at: published_at.unwrap_or(created_at),
                    files,
                }
            },
        )
        .collect()
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn a_reset_token_expires_after_an_hour_and_is_spent_only_by_its_user() {
        let mut portal = PortalState::seeded(Utc::now());
        let minted_at = Utc::now();
        let token = portal.mint_reset_token(seed::DEMO_USER_ID, minted_at);
        let late = portal.mint_reset_token(seed::DEMO_USER_ID, minted_at);

        assert!(!portal.spend_reset_token(seed::OTHER_USER_ID, &token, minted_at));
        assert!(portal.spend_reset_token(seed::DEMO_USER_ID, &token, minted_at));
        assert!(!portal.spend_reset_token(seed::DEMO_USER_ID, &token, minted_at));
        let past_the_hour = minted_at + RESET_TOKEN_TTL;
        assert!(!portal.spend_reset_token(seed::DEMO_USER_ID, &late, past_the_hour));
        // Minting forgets expired tokens, so the table does not grow forever.
        portal.mint_reset_token(seed::DEMO_USER_ID, past_the_hour);
        assert_eq!(portal.reset_tokens.len(), 1);
    }

    #[test]
    fn recovery_codes_fit_the_request_model_and_avoid_look_alike_characters() {
        for _ in 0..100 {
            let code = random_recovery_code();
            assert_eq!(code.len(), 11);
            assert_eq!(&code[5..6], "-");
            assert!(
                code.bytes()
                    .filter(|byte| *byte != b'-')
                    .all(|byte| RECOVERY_ALPHABET.contains(&byte)),
                "{code}"
            );
        }
    }

    #[test]
    fn debug_shows_counts_not_secrets() {
        let mut portal = PortalState::seeded(Utc::now());
        let secret = portal.new_pending_secret(seed::DEMO_USER_ID);
        let token = portal.mint_reset_token(seed::DEMO_USER_ID, Utc::now());
        let debug = format!("{portal:?}");
        assert!(
            !debug.contains(&secret) && !debug.contains(&token),
            "{debug}"
        );
    }
}

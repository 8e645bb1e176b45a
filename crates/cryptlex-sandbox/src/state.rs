//! The sandbox's in-memory Cryptlex account: users, licenses and their metadata, plus the seed.
//!
//! Everything here is plain data behind one `std::sync::Mutex` held by [`Shared`]; no method
//! awaits, so the lock is never held across an `.await`. This module knows nothing about HTTP:
//! the routes translate requests into these calls and [`DomainError`]s into Cryptlex-shaped
//! error bodies. Tokens live in `tokens.rs`, not here.
//!
//! [`Shared`]: crate::shared::Shared

use std::collections::HashMap;

use chrono::{DateTime, Months, TimeDelta, Utc};
use rand::RngCore as _;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Serialize;
use uuid::Uuid;

use crate::portal::PortalState;
use crate::seed;

/// A user of the sandbox account, as an admin sees it.
///
/// The password is deliberately not part of this record: it is kept apart in `Domain` so a
/// record handed to a test (or serialised over the control API) can never carry it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRecord {
    pub id: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub role: String,
    pub company: Option<String>,
    pub allow_customer_portal_access: bool,
    pub metadata: Vec<MetadataRecord>,
    pub tags: Vec<String>,
    /// On once `PATCH /v3/me` confirmed a code of a secret from `POST /v3/me/2fa-secret`.
    /// The secret and the recovery codes are kept apart, like the password.
    pub two_factor_enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_login_at: Option<DateTime<Utc>>,
}

impl UserRecord {
    /// Returns the display name Cryptlex derives from the first and last names.
    pub fn name(&self) -> String {
        format!("{} {}", self.first_name, self.last_name)
            .trim()
            .to_owned()
    }
}

/// One license, with every field the sandbox models.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LicenseRecord {
    pub id: String,
    pub key: String,
    pub product_id: String,
    pub user_id: Option<String>,
    /// Kept only so tests can see what the caller sent; templates are not modelled.
    pub license_template_id: Option<String>,
    /// Cryptlex's `type`: `node-locked`, `hosted-floating` or `on-premise-floating`.
    pub license_type: String,
    pub revoked: bool,
    pub suspended: bool,
    pub allowed_activations: i32,
    pub allowed_deactivations: i32,
    pub total_activations: i32,
    pub total_deactivations: i32,
    pub subscription_interval: Option<String>,
    pub subscription_start_trigger: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub metadata: Vec<MetadataRecord>,
    pub tags: Vec<String>,
    pub notes: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl LicenseRecord {
    /// Returns whether the license never expires, which Cryptlex reports as `perpetual`.
    pub fn is_perpetual(&self) -> bool {
        self.expires_at.is_none() && self.subscription_interval.is_none()
    }

    /// Returns whether one metadata entry matches both `key` and `value` (each when given).
    pub fn has_metadata(&self, key: Option<&str>, value: Option<&str>) -> bool {
        self.metadata.iter().any(|entry| {
            key.is_none_or(|key| entry.key == key) && value.is_none_or(|value| entry.value == value)
        })
    }
}

/// A change to a license made as the Cryptlex dashboard would (revoke, suspend, or undo
/// either), for [`Controls::update_license`](crate::Controls::update_license); `None` leaves
/// a field as it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LicenseChange {
    pub revoked: Option<bool>,
    pub suspended: Option<bool>,
}

/// The license fields `PATCH /v3/licenses/{id}` may change that the sandbox models (a subset
/// of S1's `LicenseUpdateRequestModel`), plus the expiry that `PATCH .../expires-at` and
/// `POST .../renew` set (see `lifecycle.rs`); `None` leaves a field as it is.
#[derive(Debug, Default)]
pub(crate) struct LicenseUpdate {
    pub(crate) key: Option<String>,
    pub(crate) revoked: Option<bool>,
    pub(crate) suspended: Option<bool>,
    pub(crate) allowed_activations: Option<i32>,
    pub(crate) allowed_deactivations: Option<i32>,
    pub(crate) notes: Option<String>,
    /// `Some(None)` takes the license away from its owner.
    pub(crate) user_id: Option<Option<String>>,
    pub(crate) tags: Option<Vec<String>>,
    /// Replaces the whole list (an inference: S1 does not say whether entries are merged);
    /// an entry whose key the license already had keeps that entry's id and `createdAt`.
    pub(crate) metadata: Option<Vec<NewMetadata>>,
    /// `Some(None)` makes the license perpetual: no expiry and no subscription interval. Set by
    /// `/expires-at` and `/renew` (`lifecycle.rs`) and by the dashboard control
    /// ([`Controls::set_license_expiry`](crate::Controls::set_license_expiry));
    /// `PATCH /v3/licenses/{id}` has no such field in S1.
    pub(crate) expires_at: Option<Option<DateTime<Utc>>>,
}

impl From<LicenseChange> for LicenseUpdate {
    fn from(change: LicenseChange) -> Self {
        LicenseUpdate {
            revoked: change.revoked,
            suspended: change.suspended,
            ..LicenseUpdate::default()
        }
    }
}

/// A metadata entry on a license or user.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MetadataRecord {
    pub id: String,
    pub key: String,
    pub value: String,
    /// Who besides admins may see the entry: `user`, `activation`, `organization`, `reseller`.
    pub view_permissions: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl MetadataRecord {
    /// Returns whether the license's owner sees this entry through `/v3/me/licenses`.
    pub fn visible_to_user(&self) -> bool {
        self.view_permissions
            .iter()
            .any(|permission| permission == "user")
    }

    /// Returns whether the entry is readable on activation: what the deprecated `visible`
    /// flag meant (S1: "Set true to access the metadata on activation"), and so what the
    /// read-only `visible` of `AdminMetadataDto` reports.
    pub fn visible_on_activation(&self) -> bool {
        self.view_permissions
            .iter()
            .any(|permission| permission == "activation")
    }
}

/// A metadata entry as a caller submitted it, before it gets an id and timestamps.
#[derive(Clone, Debug)]
pub(crate) struct NewMetadata {
    pub(crate) key: String,
    pub(crate) value: String,
    pub(crate) view_permissions: Vec<String>,
}

/// A validated `POST /v3/users` body.
#[derive(Debug)]
pub(crate) struct NewUser {
    pub(crate) email: String,
    pub(crate) first_name: String,
    pub(crate) last_name: String,
    pub(crate) password: SecretString,
    pub(crate) role: String,
    pub(crate) company: Option<String>,
    pub(crate) allow_customer_portal_access: bool,
    pub(crate) metadata: Vec<NewMetadata>,
    pub(crate) tags: Vec<String>,
}

/// A validated `POST /v3/licenses` body; `None` means "inherit the product's default".
#[derive(Debug, Default)]
pub(crate) struct NewLicense {
    pub(crate) product_id: String,
    pub(crate) user_id: Option<String>,
    pub(crate) license_template_id: Option<String>,
    pub(crate) key: Option<String>,
    pub(crate) license_type: Option<String>,
    pub(crate) allowed_activations: Option<i32>,
    pub(crate) allowed_deactivations: Option<i32>,
    pub(crate) subscription_interval: Option<String>,
    pub(crate) subscription_start_trigger: Option<String>,
    pub(crate) expires_at: Option<DateTime<Utc>>,
    pub(crate) metadata: Vec<NewMetadata>,
    pub(crate) tags: Vec<String>,
    pub(crate) notes: Option<String>,
}

/// Why a state change was refused; the routes map each variant to a status and body.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DomainError {
    DuplicateEmail,
    DuplicateLicenseKey,
    UnknownActivation,
    DeactivationLimitReached,
    UnknownProduct,
    UnknownUser,
    UnknownLicense,
    InvalidSubscriptionInterval,
}

/// The account's whole state.
#[derive(Debug)]
pub(crate) struct Domain {
    products: Vec<Product>,
    /// Kept in creation order, which is also Cryptlex's default list order.
    users: Vec<UserRecord>,
    passwords: HashMap<String, SecretString>,
    /// Kept in creation order, which is also Cryptlex's default list order.
    licenses: Vec<LicenseRecord>,
    /// Activations, releases, two-factor secrets, reset tokens and mails (`portal/state.rs`).
    pub(crate) portal: PortalState,
}

/// A product of the account. Only the fields `ProductDto` carries and the sandbox can fill.
#[derive(Debug)]
pub(crate) struct Product {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) display_name: String,
    pub(crate) description: String,
    /// The product's default license template, which licenses created without one inherit.
    pub(crate) license_template_id: String,
    pub(crate) created_at: DateTime<Utc>,
}

impl Domain {
    /// Builds the seeded account described in [`seed`].
    pub(crate) fn seeded(now: DateTime<Utc>) -> Self {
        let mut domain = Domain {
            products: vec![Product {
                id: seed::PRODUCT_ID.to_owned(),
                name: "demo-desktop-app".to_owned(),
                display_name: seed::PRODUCT_NAME.to_owned(),
                description: "The seeded product of the sandbox account.".to_owned(),
                license_template_id: seed::LICENSE_TEMPLATE_ID.to_owned(),
                created_at: now - TimeDelta::days(400),
            }],
            users: Vec::new(),
            passwords: HashMap::new(),
            licenses: Vec::new(),
            portal: PortalState::seeded(now),
        };
        let days_ago = |days: i64| now - TimeDelta::days(days);

        domain.seed_user(
            seed::ADMIN_USER_ID,
            seed::ADMIN_EMAIL,
            ("Sandbox", "Admin"),
            "admin",
            None,
            days_ago(400),
        );
        domain.seed_user(
            seed::DEMO_USER_ID,
            seed::DEMO_EMAIL,
            ("Demo", "User"),
            "user",
            Some(seed::DEMO_PASSWORD),
            days_ago(120),
        );
        domain.seed_user(
            seed::OTHER_USER_ID,
            seed::OTHER_EMAIL,
            ("Other", "Person"),
            "user",
            Some(seed::OTHER_PASSWORD),
            days_ago(90),
        );

        // (allowed activations, allowed deactivations, deactivations used): the second demo
        // license has used up its deactivations, so its machine cannot be freed (409).
        let seeded_licenses = [
            (
                seed::DEMO_LICENSE_IDS[0],
                "0A2035-E8A2A3-4D31B7-8FF9C6-81A6CA-539E54",
                seed::DEMO_USER_ID,
                "Professional",
                days_ago(100),
                (3, 10, 0),
            ),
            (
                seed::DEMO_LICENSE_IDS[1],
                "1B3146-F9B3B4-5E42C8-90AAD7-92B7DB-64AF65",
                seed::DEMO_USER_ID,
                "Standard",
                days_ago(60),
                (2, 2, 2),
            ),
            (
                seed::OTHER_LICENSE_ID,
                "2C4257-0AC4C5-6F53D9-A1BBE8-A3C8EC-75B076",
                seed::OTHER_USER_ID,
                "Standard",
                days_ago(30),
                (2, 10, 0),
            ),
        ];
        for (id, key, user_id, edition, created_at, limits) in seeded_licenses {
            let (allowed_activations, allowed_deactivations, total_deactivations) = limits;
            // The counter matches the seeded machines (`portal/state.rs`).
            let total_activations = domain.portal.activations_of(id).count();
            domain.licenses.push(LicenseRecord {
                id: id.to_owned(),
                key: key.to_owned(),
                product_id: seed::PRODUCT_ID.to_owned(),
                user_id: Some(user_id.to_owned()),
                license_template_id: Some(seed::LICENSE_TEMPLATE_ID.to_owned()),
                license_type: "node-locked".to_owned(),
                revoked: false,
                suspended: false,
                allowed_activations,
                allowed_deactivations,
                total_activations: i32::try_from(total_activations).unwrap_or(i32::MAX),
                total_deactivations,
                subscription_interval: Some("P1Y".to_owned()),
                subscription_start_trigger: Some("creation".to_owned()),
                expires_at: add_interval(created_at, "P1Y"),
                metadata: vec![
                    metadata_record(
                        NewMetadata {
                            key: "edition".to_owned(),
                            value: edition.to_owned(),
                            view_permissions: vec!["user".to_owned(), "activation".to_owned()],
                        },
                        created_at,
                    ),
                    metadata_record(
                        NewMetadata {
                            key: "stripe_subscription_id".to_owned(),
                            value: format!("sub_seed_{}", &id[..8]),
                            view_permissions: Vec::new(),
                        },
                        created_at,
                    ),
                ],
                tags: Vec::new(),
                notes: None,
                created_at,
                updated_at: created_at,
            });
        }
        if let Some(license) = domain.license(seed::DEMO_LICENSE_IDS[0]).cloned() {
            domain.portal.seed_feature_entitlements(&license);
        }
        domain
    }

    fn seed_user(
        &mut self,
        id: &str,
        email: &str,
        (first_name, last_name): (&str, &str),
        role: &str,
        password: Option<&str>,
        created_at: DateTime<Utc>,
    ) {
        self.users.push(UserRecord {
            id: id.to_owned(),
            email: email.to_owned(),
            first_name: first_name.to_owned(),
            last_name: last_name.to_owned(),
            role: role.to_owned(),
            company: Some("Sandbox Inc.".to_owned()),
            allow_customer_portal_access: true,
            metadata: Vec::new(),
            tags: Vec::new(),
            two_factor_enabled: false,
            created_at,
            updated_at: created_at,
            last_login_at: None,
        });
        // The admin gets no password on purpose: it acts only through its personal access
        // token, which keeps "a login token is a user token" true without exceptions.
        if let Some(password) = password {
            self.passwords
                .insert(id.to_owned(), SecretString::from(password.to_owned()));
        }
    }

    pub(crate) fn product(&self, product_id: &str) -> Option<&Product> {
        self.products
            .iter()
            .find(|product| product.id == product_id)
    }

    pub(crate) fn user(&self, id: &str) -> Option<&UserRecord> {
        self.users.iter().find(|user| user.id == id)
    }

    /// Finds a user by email, ignoring case: the sandbox treats addresses as case-insensitive
    /// (an inference; Cryptlex does not document it).
    pub(crate) fn user_by_email(&self, email: &str) -> Option<&UserRecord> {
        self.users
            .iter()
            .find(|user| user.email.eq_ignore_ascii_case(email))
    }

    pub(crate) fn users(&self) -> &[UserRecord] {
        &self.users
    }

    pub(crate) fn licenses(&self) -> &[LicenseRecord] {
        &self.licenses
    }

    pub(crate) fn license(&self, id: &str) -> Option<&LicenseRecord> {
        self.licenses.iter().find(|license| license.id == id)
    }

    pub(crate) fn user_mut(&mut self, id: &str) -> Option<&mut UserRecord> {
        self.users.iter_mut().find(|user| user.id == id)
    }

    pub(crate) fn license_mut(&mut self, id: &str) -> Option<&mut LicenseRecord> {
        self.licenses.iter_mut().find(|license| license.id == id)
    }

    /// Checks an email and password, changing nothing; returns the user's id if both match.
    /// Login records the sign-in with [`record_login`](Self::record_login) only once every
    /// factor has passed.
    pub(crate) fn authenticate(&self, email: &str, password: &str) -> Option<String> {
        let user = self.user_by_email(email)?;
        self.password_matches(&user.id, password)
            .then(|| user.id.clone())
    }

    /// Records a completed sign-in (`lastLoginAt`) and returns the user.
    pub(crate) fn record_login(&mut self, user_id: &str, now: DateTime<Utc>) -> Option<UserRecord> {
        let user = self.user_mut(user_id)?;
        user.last_login_at = Some(now);
        Some(user.clone())
    }

    /// Returns whether `password` is the user's; false for a user without one (the admin).
    pub(crate) fn password_matches(&self, user_id: &str, password: &str) -> bool {
        self.passwords
            .get(user_id)
            .is_some_and(|stored| stored.expose_secret() == password)
    }

    /// Replaces a user's password; false if there is no such user.
    pub(crate) fn set_password(&mut self, user_id: &str, password: SecretString) -> bool {
        if self.user(user_id).is_none() {
            return false;
        }
        self.passwords.insert(user_id.to_owned(), password);
        true
    }

    pub(crate) fn create_user(
        &mut self,
        new_user: NewUser,
        now: DateTime<Utc>,
    ) -> Result<UserRecord, DomainError> {
        if self.user_by_email(&new_user.email).is_some() {
            return Err(DomainError::DuplicateEmail);
        }
        let user = UserRecord {
            id: Uuid::new_v4().to_string(),
            email: new_user.email,
            first_name: new_user.first_name,
            last_name: new_user.last_name,
            role: new_user.role,
            company: new_user.company,
            allow_customer_portal_access: new_user.allow_customer_portal_access,
            metadata: new_user
                .metadata
                .into_iter()
                .map(|entry| metadata_record(entry, now))
                .collect(),
            tags: new_user.tags,
            two_factor_enabled: false,
            created_at: now,
            updated_at: now,
            last_login_at: None,
        };
        self.passwords.insert(user.id.clone(), new_user.password);
        self.users.push(user.clone());
        Ok(user)
    }

    /// Creates a license. Like the real API this is not idempotent: the same request twice
    /// yields two licenses with different ids and keys.
    pub(crate) fn create_license(
        &mut self,
        new_license: NewLicense,
        now: DateTime<Utc>,
    ) -> Result<LicenseRecord, DomainError> {
        if self.product(&new_license.product_id).is_none() {
            return Err(DomainError::UnknownProduct);
        }
        if let Some(user_id) = &new_license.user_id
            && self.user(user_id).is_none()
        {
            return Err(DomainError::UnknownUser);
        }
        let key = match new_license.key {
            Some(key) if self.licenses.iter().any(|license| license.key == key) => {
                return Err(DomainError::DuplicateLicenseKey);
            }
            Some(key) => key,
            None => self.fresh_license_key(),
        };

        // Fields the caller leaves out come from the product's default license template,
        // which the sandbox fixes as a one-year, single-machine subscription.
        let subscription_interval = match new_license.subscription_interval {
            Some(interval) if interval.is_empty() => None,
            Some(interval) => Some(interval),
            None => Some("P1Y".to_owned()),
        };
        let subscription_start_trigger = new_license
            .subscription_start_trigger
            .unwrap_or_else(|| "creation".to_owned());
        let expires_at = match (&new_license.expires_at, &subscription_interval) {
            (Some(expires_at), _) => Some(*expires_at),
            // An activation-triggered subscription starts its clock on first activation.
            (None, Some(_)) if subscription_start_trigger == "activation" => None,
            (None, Some(interval)) => {
                Some(add_interval(now, interval).ok_or(DomainError::InvalidSubscriptionInterval)?)
            }
            (None, None) => None,
        };

        let license = LicenseRecord {
            id: Uuid::new_v4().to_string(),
            key,
            product_id: new_license.product_id,
            user_id: new_license.user_id,
            license_template_id: new_license.license_template_id,
            license_type: new_license
                .license_type
                .unwrap_or_else(|| "node-locked".to_owned()),
            revoked: false,
            suspended: false,
            allowed_activations: new_license.allowed_activations.unwrap_or(1),
            allowed_deactivations: new_license.allowed_deactivations.unwrap_or(10),
            total_activations: 0,
            total_deactivations: 0,
            subscription_start_trigger: subscription_interval
                .as_ref()
                .map(|_| subscription_start_trigger),
            subscription_interval,
            expires_at,
            metadata: new_license
                .metadata
                .into_iter()
                .map(|entry| metadata_record(entry, now))
                .collect(),
            tags: new_license.tags,
            notes: new_license.notes,
            created_at: now,
            updated_at: now,
        };
        self.licenses.push(license.clone());
        Ok(license)
    }

    /// Applies `update` to a license and returns it as changed. Like Cryptlex's dashboard, a
    /// save counts as an update (and moves `updatedAt`) even when no value differs.
    pub(crate) fn update_license(
        &mut self,
        id: &str,
        update: LicenseUpdate,
        now: DateTime<Utc>,
    ) -> Result<LicenseRecord, DomainError> {
        let index = self
            .licenses
            .iter()
            .position(|license| license.id == id)
            .ok_or(DomainError::UnknownLicense)?;
        if let Some(Some(user_id)) = &update.user_id
            && self.user(user_id).is_none()
        {
            return Err(DomainError::UnknownUser);
        }
        if let Some(key) = &update.key
            && self
                .licenses
                .iter()
                .any(|license| license.id != id && &license.key == key)
        {
            return Err(DomainError::DuplicateLicenseKey);
        }
        let license = &mut self.licenses[index];
        if let Some(key) = update.key {
            license.key = key;
        }
        if let Some(revoked) = update.revoked {
            license.revoked = revoked;
        }
        if let Some(suspended) = update.suspended {
            license.suspended = suspended;
        }
        if let Some(allowed) = update.allowed_activations {
            license.allowed_activations = allowed;
        }
        if let Some(allowed) = update.allowed_deactivations {
            license.allowed_deactivations = allowed;
        }
        if let Some(notes) = update.notes {
            license.notes = Some(notes);
        }
        if let Some(user_id) = update.user_id {
            license.user_id = user_id;
        }
        if let Some(tags) = update.tags {
            license.tags = tags;
        }
        if let Some(metadata) = update.metadata {
            license.metadata = replaced_metadata(&license.metadata, metadata, now);
        }
        if let Some(expires_at) = update.expires_at {
            license.expires_at = expires_at;
            // S1: "Set to null to make the license perpetual", which `perpetual` reports only
            // when no interval is left either.
            if expires_at.is_none() {
                license.subscription_interval = None;
                license.subscription_start_trigger = None;
            }
        }
        license.updated_at = now;
        Ok(license.clone())
    }

    /// Deletes a license for good and returns it as it was.
    pub(crate) fn delete_license(&mut self, id: &str) -> Result<LicenseRecord, DomainError> {
        let index = self
            .licenses
            .iter()
            .position(|license| license.id == id)
            .ok_or(DomainError::UnknownLicense)?;
        Ok(self.licenses.remove(index))
    }

    fn fresh_license_key(&self) -> String {
        loop {
            let key = random_license_key();
            if !self.licenses.iter().any(|license| license.key == key) {
                return key;
            }
        }
    }
}

fn metadata_record(entry: NewMetadata, now: DateTime<Utc>) -> MetadataRecord {
    MetadataRecord {
        id: Uuid::new_v4().to_string(),
        key: entry.key,
        value: entry.value,
        view_permissions: entry.view_permissions,
        created_at: now,
        updated_at: now,
    }
}

/// Returns `new` as the license's metadata list. An entry whose key was already there keeps the
/// old entry's id and `createdAt` (so a client holding the id, for
/// `DELETE /v3/licenses/metadata/{id}`, still finds it), and its `updatedAt` moves only when its
/// value or permissions changed; every other entry is new. An inference, as is the replacing.
fn replaced_metadata(
    old: &[MetadataRecord],
    new: Vec<NewMetadata>,
    now: DateTime<Utc>,
) -> Vec<MetadataRecord> {
    let mut reusable: Vec<&MetadataRecord> = old.iter().collect();
    new.into_iter()
        .map(|entry| {
            let Some(position) = reusable.iter().position(|kept| kept.key == entry.key) else {
                return metadata_record(entry, now);
            };
            let kept = reusable.remove(position);
            let unchanged =
                kept.value == entry.value && kept.view_permissions == entry.view_permissions;
            MetadataRecord {
                id: kept.id.clone(),
                key: entry.key,
                value: entry.value,
                view_permissions: entry.view_permissions,
                created_at: kept.created_at,
                updated_at: if unchanged { kept.updated_at } else { now },
            }
        })
        .collect()
}

/// Generates a key in Cryptlex's format: six dash-separated groups of six uppercase hex digits.
fn random_license_key() -> String {
    let mut bytes = [0_u8; 18];
    rand::rng().fill_bytes(&mut bytes);
    bytes
        .chunks(3)
        .map(hex::encode_upper)
        .collect::<Vec<_>>()
        .join("-")
}

/// Adds an ISO-8601 duration such as `P1Y`, `P6M`, `P1W`, `P7D`, `PT24H` or `PT30M` to `start`.
///
/// Returns `None` for anything that is not such a duration. Years and months are calendar
/// months (so `P1M` from 31 January lands on the last day of February), as .NET does.
pub(crate) fn add_interval(start: DateTime<Utc>, interval: &str) -> Option<DateTime<Utc>> {
    let designators = interval.strip_prefix('P')?;
    let (date_part, time_part) = match designators.split_once('T') {
        Some((date, time)) if !time.is_empty() => (date, Some(time)),
        Some(_) => return None,
        None => (designators, None),
    };
    if date_part.is_empty() && time_part.is_none() {
        return None;
    }

    let mut months: u32 = 0;
    let mut delta = TimeDelta::zero();
    for (amount, unit) in duration_components(date_part)? {
        match unit {
            'Y' => months = months.checked_add(amount.checked_mul(12)?)?,
            'M' => months = months.checked_add(amount)?,
            'W' => delta += TimeDelta::try_weeks(i64::from(amount))?,
            'D' => delta += TimeDelta::try_days(i64::from(amount))?,
            _ => return None,
        }
    }
    for (amount, unit) in duration_components(time_part.unwrap_or_default())? {
        match unit {
            'H' => delta += TimeDelta::try_hours(i64::from(amount))?,
            'M' => delta += TimeDelta::try_minutes(i64::from(amount))?,
            'S' => delta += TimeDelta::try_seconds(i64::from(amount))?,
            _ => return None,
        }
    }
    start
        .checked_add_months(Months::new(months))?
        .checked_add_signed(delta)
}

/// Splits `1Y6M` into `[(1, 'Y'), (6, 'M')]`; `None` if a unit has no number or vice versa.
fn duration_components(text: &str) -> Option<Vec<(u32, char)>> {
    let mut components = Vec::new();
    let mut digits = String::new();
    for character in text.chars() {
        if character.is_ascii_digit() {
            digits.push(character);
        } else {
            let amount = digits.parse().ok()?;
            components.push((amount, character));
            digits.clear();
        }
    }
    digits.is_empty().then_some(components)
}

#[cfg(test)]
mod unit_tests {
    use chrono::TimeZone as _;

    use super::*;

    #[test]
    fn intervals_add_calendar_months_and_clock_time() {
        let start = Utc.with_ymd_and_hms(2025, 1, 31, 12, 0, 0).unwrap();
        assert_eq!(
            add_interval(start, "P1M"),
            Some(Utc.with_ymd_and_hms(2025, 2, 28, 12, 0, 0).unwrap())
        );
        assert_eq!(
            add_interval(start, "P1Y"),
            Some(Utc.with_ymd_and_hms(2026, 1, 31, 12, 0, 0).unwrap())
        );
        assert_eq!(
            add_interval(start, "PT30M"),
            Some(Utc.with_ymd_and_hms(2025, 1, 31, 12, 30, 0).unwrap())
        );
        assert_eq!(
            add_interval(start, "P1W"),
            Some(Utc.with_ymd_and_hms(2025, 2, 7, 12, 0, 0).unwrap())
        );
    }

    #[test]
    fn malformed_intervals_are_rejected() {
        let start = Utc::now();
        for malformed in ["", "P", "PT", "1Y", "PY", "P1X", "P1", "PT1D"] {
            assert_eq!(add_interval(start, malformed), None, "{malformed}");
        }
    }

    #[test]
    fn generated_license_keys_have_the_cryptlex_shape() {
        let key = random_license_key();
        let groups: Vec<&str> = key.split('-').collect();
        assert_eq!(groups.len(), 6);
        assert!(groups.iter().all(|group| {
            group.len() == 6
                && group
                    .chars()
                    .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
        }));
    }
}

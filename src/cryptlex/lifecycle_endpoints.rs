//! The Cryptlex calls of the payment lifecycle, all with the PAT at [`Priority::Issuance`]:
//! reading one license with every metadata entry, setting its expiry, renewing it by its
//! subscription interval, and updating its suspended, revoked, seats and metadata fields.
//!
//! Writes are sent again only when Cryptlex certainly did not act on them
//! ([`Retry::IfNotProcessed`]; the renewal, which is not idempotent, never): after a lost
//! reply the use case reads the license back, under the ledger's per-license lease, instead.

use chrono::{DateTime, Utc};

use super::retry::Retry;
use super::transport::{Request, decode};
use super::{Client, CryptlexError, Priority, Rejection, wire};
use crate::domain::{AdminToken, CryptlexId, IssuedLicense, RequestContext};

/// One metadata entry of a license, as the administrator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataEntry {
    pub key: String,
    pub value: String,
    /// Who besides administrators may read it (`activation`, `user`, ...); empty for none.
    pub view_permissions: Vec<String>,
}

/// A license with every metadata entry, the gateway's bookkeeping included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminLicense {
    /// The license; its `metadata` map holds every entry's value (no key hidden).
    pub license: IssuedLicense,
    /// The entries themselves, with their permissions, to send back in a metadata update.
    pub metadata: Vec<MetadataEntry>,
}

/// What `PATCH /v3/licenses/{id}` changes; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct LicenseChange<'a> {
    pub suspended: Option<bool>,
    pub revoked: Option<bool>,
    pub allowed_activations: Option<i32>,
    /// The complete list of entries the license is to have: S1 does not say whether a
    /// metadata update merges or replaces, and sending every entry is right either way.
    pub metadata: Option<&'a [MetadataEntry]>,
}

impl Client {
    /// Returns the license with `id` (`GET /v3/licenses/{id}`), or `None` when there is none.
    pub async fn get_license(
        &self,
        ctx: &RequestContext,
        pat: &AdminToken,
        id: &CryptlexId,
    ) -> Result<Option<AdminLicense>, CryptlexError> {
        let path = ["licenses", id.as_str()];
        let request = Request::get(&path, Priority::Issuance).bearer(pat.expose_secret());
        match self.call(ctx, request).await {
            Ok(answer) => decode::<wire::LicenseDto>(&answer)
                .map(admin_license)
                .map(Some),
            Err(CryptlexError::Rejected {
                kind: Rejection::NotFound,
                ..
            }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Changes the license's suspended, revoked, seats or metadata fields
    /// (`PATCH /v3/licenses/{id}`).
    pub async fn update_license(
        &self,
        ctx: &RequestContext,
        pat: &AdminToken,
        id: &CryptlexId,
        change: &LicenseChange<'_>,
    ) -> Result<AdminLicense, CryptlexError> {
        let body = wire::LicenseUpdateBody {
            revoked: change.revoked,
            suspended: change.suspended,
            allowed_activations: change.allowed_activations,
            metadata: change.metadata.map(|entries| {
                entries
                    .iter()
                    .map(|entry| wire::NewMetadataBody {
                        key: &entry.key,
                        value: &entry.value,
                        view_permissions: entry
                            .view_permissions
                            .iter()
                            .map(String::as_str)
                            .collect(),
                    })
                    .collect()
            }),
        };
        let path = ["licenses", id.as_str()];
        let request = Request::patch(&path, Priority::Issuance, Retry::IfNotProcessed)
            .bearer(pat.expose_secret())
            .json(&body);
        let answer = self.call(ctx, request).await?;
        decode::<wire::LicenseDto>(&answer).map(admin_license)
    }

    /// Sets when the license expires (`PATCH /v3/licenses/{id}/expires-at`): an absolute
    /// time, so sending it twice changes nothing more.
    pub async fn set_license_expiry(
        &self,
        ctx: &RequestContext,
        pat: &AdminToken,
        id: &CryptlexId,
        expires_at: DateTime<Utc>,
    ) -> Result<AdminLicense, CryptlexError> {
        let body = wire::ExpiresAtBody { expires_at };
        let path = ["licenses", id.as_str(), "expires-at"];
        let request = Request::patch(&path, Priority::Issuance, Retry::IfNotProcessed)
            .bearer(pat.expose_secret())
            .json(&body);
        let answer = self.call(ctx, request).await?;
        decode::<wire::LicenseDto>(&answer).map(admin_license)
    }

    /// Extends the license by its subscription interval (`POST /v3/licenses/{id}/renew`).
    ///
    /// Not idempotent upstream: two calls renew twice. Callers must have recorded the attempt
    /// first and must read the license back (never repeat the call) when
    /// [`CryptlexError::outcome_unknown`].
    pub async fn renew_license(
        &self,
        ctx: &RequestContext,
        pat: &AdminToken,
        id: &CryptlexId,
    ) -> Result<AdminLicense, CryptlexError> {
        let path = ["licenses", id.as_str(), "renew"];
        let request =
            Request::post(&path, Priority::Issuance, Retry::Never).bearer(pat.expose_secret());
        let answer = self.call(ctx, request).await?;
        decode::<wire::LicenseDto>(&answer).map(admin_license)
    }
}

/// Converts the administrator's view of a license, keeping every metadata entry.
pub(super) fn admin_license(dto: wire::LicenseDto) -> AdminLicense {
    let metadata = dto
        .metadata
        .iter()
        .map(|entry| MetadataEntry {
            key: entry.key.clone(),
            value: entry.value.clone().unwrap_or_default(),
            view_permissions: entry.view_permissions.clone(),
        })
        .collect();
    AdminLicense {
        license: dto.into_issued(&[]),
        metadata,
    }
}

//! The read-only Cryptlex calls of `licensing-gateway ledger audit`, both with the PAT at
//! [`Priority::Background`], so an audit spends only budget nobody else needs: paging
//! through the licenses that carry one metadata key, and reading one license.
//!
//! They never wait for a slot (background calls do not) and are not retried past what
//! reads are; the audit paces itself and tries again after a refusal (see
//! `crate::commands::audit`).

use super::lifecycle_endpoints::admin_license;
use super::transport::{Request, decode};
use super::{AdminLicense, Client, CryptlexError, Priority, Rejection, wire};
use crate::domain::{AdminToken, CryptlexId, RequestContext};

impl Client {
    /// Returns page `page` (1-based, at most `page_size` licenses, oldest first) of the
    /// licenses carrying a metadata entry with `key`
    /// (`GET /v3/licenses?metadata.key[eq]=&page=&limit=`), every metadata entry included.
    /// A page shorter than `page_size` is the last.
    pub async fn licenses_with_metadata_key(
        &self,
        ctx: &RequestContext,
        pat: &AdminToken,
        key: &str,
        page: u32,
        page_size: u32,
    ) -> Result<Vec<AdminLicense>, CryptlexError> {
        let page = page.to_string();
        let limit = page_size.to_string();
        let query = [
            ("metadata.key[eq]", key),
            ("page", page.as_str()),
            ("limit", limit.as_str()),
        ];
        let request = Request::get(&["licenses"], Priority::Background)
            .query(&query)
            .bearer(pat.expose_secret());
        let answer = self.call(ctx, request).await?;
        let found: Vec<wire::LicenseDto> = decode(&answer)?;
        Ok(found.into_iter().map(admin_license).collect())
    }

    /// Returns the license with `id` (`GET /v3/licenses/{id}`) at background priority, or
    /// `None` when Cryptlex has none.
    pub async fn audit_license(
        &self,
        ctx: &RequestContext,
        pat: &AdminToken,
        id: &CryptlexId,
    ) -> Result<Option<AdminLicense>, CryptlexError> {
        let path = ["licenses", id.as_str()];
        let request = Request::get(&path, Priority::Background).bearer(pat.expose_secret());
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
}

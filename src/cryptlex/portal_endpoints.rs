//! The customer portal's Cryptlex calls: one license with its feature
//! entitlements, the machines activated with the user's licenses, deleting
//! an activation, and the releases the user may download. All but the delete
//! carry the user's own token; none carries the PAT.

use super::retry::Retry;
use super::transport::{Request, decode};
use super::{Client, CryptlexError, Priority, wire, wire_portal};
use crate::domain::{
    Activation, CryptlexId, FeatureEntitlement, FilterText, Release, RequestContext, UserLicense,
    UserToken,
};

impl Client {
    /// Returns one of the token owner's licenses (`GET /v3/me/licenses/{id}`);
    /// 404 when it does not exist or is someone else's.
    pub async fn my_license(
        &self,
        ctx: &RequestContext,
        token: &UserToken,
        license_id: &CryptlexId,
    ) -> Result<UserLicense, CryptlexError> {
        let path = ["me", "licenses", license_id.as_str()];
        let request = Request::get(&path, Priority::Read).bearer(token.expose_secret());
        let answer = self.call(ctx, request).await?;
        decode::<wire::UserLicenseDto>(&answer).map(UserLicense::from)
    }

    /// Returns the feature entitlements of one of the token owner's licenses
    /// (`GET /v3/me/licenses/{id}/feature-entitlements`); 404 as
    /// [`Self::my_license`].
    pub async fn my_license_feature_entitlements(
        &self,
        ctx: &RequestContext,
        token: &UserToken,
        license_id: &CryptlexId,
    ) -> Result<Vec<FeatureEntitlement>, CryptlexError> {
        let path = [
            "me",
            "licenses",
            license_id.as_str(),
            "feature-entitlements",
        ];
        let request = Request::get(&path, Priority::Read).bearer(token.expose_secret());
        let answer = self.call(ctx, request).await?;
        let entitlements: Vec<wire_portal::FeatureEntitlementDto> = decode(&answer)?;
        Ok(entitlements
            .into_iter()
            .map(FeatureEntitlement::from)
            .collect())
    }

    /// Returns one page of the token owner's activations of one license
    /// (`GET /v3/me/activations?licenseId[eq]=`), oldest first. A license that
    /// is not the owner's simply has none here (Cryptlex answers an empty
    /// list, not 404), so callers check ownership themselves.
    pub async fn my_activations(
        &self,
        ctx: &RequestContext,
        token: &UserToken,
        license_id: &CryptlexId,
        page: u32,
        limit: u32,
    ) -> Result<Vec<Activation>, CryptlexError> {
        let page = page.to_string();
        let limit = limit.to_string();
        let query = [
            ("licenseId[eq]", license_id.as_str()),
            ("page", page.as_str()),
            ("limit", limit.as_str()),
        ];
        let request = Request::get(&["me", "activations"], Priority::Read)
            .query(&query)
            .bearer(token.expose_secret());
        let answer = self.call(ctx, request).await?;
        let activations: Vec<wire_portal::UserActivationDto> = decode(&answer)?;
        Ok(activations.into_iter().map(Activation::from).collect())
    }

    /// Returns one of the token owner's activations
    /// (`GET /v3/me/activations/{id}`); 404 when it does not exist or is
    /// someone else's. The proof of ownership before a deactivation, so it
    /// spends the sign-in share of the budget (a person waits at a form),
    /// not the reads'.
    pub async fn my_activation(
        &self,
        ctx: &RequestContext,
        token: &UserToken,
        activation_id: &CryptlexId,
    ) -> Result<Activation, CryptlexError> {
        let path = ["me", "activations", activation_id.as_str()];
        let request = Request::get(&path, Priority::SignIn).bearer(token.expose_secret());
        let answer = self.call(ctx, request).await?;
        decode::<wire_portal::UserActivationDto>(&answer).map(Activation::from)
    }

    /// Deletes an activation (`DELETE /v3/activations/{id}`), freeing its
    /// slot on the license: 204, 404 for an unknown id, 409
    /// `DEACTIVATION_LIMIT_REACHED` when the license has no deactivation
    /// left.
    ///
    /// Sent with no credential at all: S1 declares the operation `[{}]`
    /// (no authentication; the activation id is the key, which is how the
    /// desktop client library deactivates). So this proves nothing about the
    /// caller: whoever calls it must have proved ownership first
    /// ([`Self::my_activation`]). Sending the PAT here would turn any id a
    /// caller names into an administrator's delete.
    ///
    /// Sent again only when Cryptlex certainly did not act on it (no
    /// connection, or 429): a repeated delete after a lost answer would
    /// spend a second deactivation of a limited license, or report 404 for
    /// a delete that worked.
    pub async fn delete_activation(
        &self,
        ctx: &RequestContext,
        activation_id: &CryptlexId,
    ) -> Result<(), CryptlexError> {
        let path = ["activations", activation_id.as_str()];
        let request = Request::delete(&path, Priority::SignIn, Retry::IfNotProcessed);
        self.call(ctx, request).await?;
        Ok(())
    }

    /// Returns one page of the releases the token owner may download
    /// (`GET /v3/me/releases`), newest first, of the product with display
    /// name `product_name` when given. Cryptlex filters by nothing else.
    pub async fn my_releases(
        &self,
        ctx: &RequestContext,
        token: &UserToken,
        page: u32,
        limit: u32,
        product_name: Option<&FilterText>,
    ) -> Result<Vec<Release>, CryptlexError> {
        let page = page.to_string();
        let limit = limit.to_string();
        let mut query = vec![("page", page.as_str()), ("limit", limit.as_str())];
        if let Some(product_name) = product_name {
            query.push(("product.displayName[eq]", product_name.as_str()));
        }
        let request = Request::get(&["me", "releases"], Priority::Read)
            .query(&query)
            .bearer(token.expose_secret());
        let answer = self.call(ctx, request).await?;
        let releases: Vec<wire_portal::UserReleaseDto> = decode(&answer)?;
        Ok(releases.into_iter().map(Release::from).collect())
    }
}

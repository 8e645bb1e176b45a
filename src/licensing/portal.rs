//! The customer portal's use cases: one license in detail, the machines
//! activated with it, deactivating one of them, and the releases the user
//! may download.
//!
//! Every call carries the user's own token and answers only what Cryptlex
//! answers that token, so a user can never see another user's licenses,
//! machines or releases; the reads go through the read cache like
//! [`Licensing::profile`], keyed by token. The one write, deactivation, is
//! the exception Cryptlex forces: its `DELETE /v3/activations/{id}` takes no
//! credential at all, so ownership is proved first with the caller's token
//! (never from memory, never with the PAT), and only then is the activation
//! deleted.

use std::sync::Arc;

use super::changes::Change;
use super::error::{Credential, upstream};
use super::read_cache::{Answer, CacheKey, Kind, TokenDigest};
use super::token_guard::TokenGuard;
use super::{Licensing, LicensingError, Missing, upstream_allowed, user_call_failed};
use crate::cryptlex::{CryptlexError, ErrorCode, Rejection};
use crate::domain::{
    ActivationPage, ActivationsRequest, CryptlexId, FilterText, LicenseDetail, ReleasePage,
    ReleasesRequest, RequestContext, UserToken,
};

impl Licensing {
    /// Returns one of the token owner's licenses with its feature
    /// entitlements; `NotFound(License)` when it does not exist or is not
    /// theirs (Cryptlex answers both with 404).
    #[tracing::instrument(name = "licensing.license", skip_all)]
    pub async fn license(
        &self,
        ctx: &RequestContext,
        token: &UserToken,
        license_id: &CryptlexId,
    ) -> Result<LicenseDetail, LicensingError> {
        let admitted = self.shared.tokens.check_access(token)?;
        let key = CacheKey::new(token, "me/licenses/{id}", license_id.as_str());
        let read = self.read_for(ctx, admitted, key);
        let cryptlex = self.cryptlex().clone();
        let tokens = Arc::clone(&self.shared.tokens);
        let throttle = Arc::clone(&self.shared.throttle);
        let token = token.clone();
        let license_id = license_id.clone();
        let (answer, _) = self
            .shared
            .cache
            .get_or_fetch(read, Kind::License, move |ctx| async move {
                upstream_allowed(&throttle, &ctx)?;
                // Two independent reads: one round trip instead of two.
                let (license, entitlements) = tokio::join!(
                    cryptlex.my_license(&ctx, &token, &license_id),
                    cryptlex.my_license_feature_entitlements(&ctx, &token, &license_id),
                );
                let missing = |error| not_found_as(Missing::License, &tokens, &token, error);
                let license = license.map_err(missing)?;
                // A 404 here too: the license went away between the two reads.
                let feature_entitlements = entitlements.map_err(missing)?;
                tokens.vouch_answered(&token);
                Ok(Answer::License(LicenseDetail {
                    license,
                    feature_entitlements,
                }))
            })
            .await?;
        let Answer::License(detail) = answer else {
            // The key names the call, so this cannot happen.
            return Err(LicensingError::internal(
                "another answer cached as a license",
            ));
        };
        Ok(detail)
    }

    /// Returns one page of the machines activated with one of the token
    /// owner's licenses, oldest first; `NotFound(License)` when the license
    /// is not theirs.
    #[tracing::instrument(name = "licensing.activations", skip_all, fields(page = request.page, page_size = request.page_size))]
    pub async fn activations(
        &self,
        ctx: &RequestContext,
        token: &UserToken,
        request: ActivationsRequest,
    ) -> Result<ActivationPage, LicensingError> {
        // Cryptlex's list holds only the caller's activations, but for a
        // license that is not theirs it is empty, not 404, and "not yours"
        // must not look like "no machines". The license's own read tells
        // them apart, usually from memory (a license page reads it first),
        // and before anything is asked for a license that is not theirs.
        self.license(ctx, token, &request.license_id).await?;
        let arguments = format!(
            "{}/{}/{}",
            request.license_id, request.page, request.page_size
        );
        let key = CacheKey::new(token, "me/activations", &arguments);
        // Checked again: the license read may have vouched for the token.
        let admitted = self.shared.tokens.check_access(token)?;
        let read = self.read_for(ctx, admitted, key);
        let cryptlex = self.cryptlex().clone();
        let tokens = Arc::clone(&self.shared.tokens);
        let throttle = Arc::clone(&self.shared.throttle);
        let token = token.clone();
        let (answer, _) = self
            .shared
            .cache
            .get_or_fetch(read, Kind::Activations, move |ctx| async move {
                upstream_allowed(&throttle, &ctx)?;
                let license_id = &request.license_id;
                let fetched = cryptlex
                    .my_activations(&ctx, &token, license_id, request.page, request.page_size)
                    .await
                    .map_err(|error| user_call_failed(&tokens, &token, error))?;
                // As for license pages: a full page may be the last one, so
                // the single item after it decides whether a token follows.
                let full_page = fetched.len() >= request.page_size as usize;
                let more = full_page
                    && !cryptlex
                        .my_activations(
                            &ctx,
                            &token,
                            license_id,
                            request
                                .page
                                .saturating_mul(request.page_size)
                                .saturating_add(1),
                            1,
                        )
                        .await
                        .map_err(|error| user_call_failed(&tokens, &token, error))?
                        .is_empty();
                let fetched_count = fetched.len();
                // Cryptlex filtered by license; should it ever not, another
                // license's machines (still the caller's own) stay off this
                // license's page.
                let activations: Vec<_> = fetched
                    .into_iter()
                    .filter(|activation| activation.license_id == license_id.as_str())
                    .collect();
                if activations.len() != fetched_count {
                    tracing::warn!(
                        dropped = fetched_count - activations.len(),
                        "cryptlex listed activations of other licenses despite the licenseId filter"
                    );
                }
                tokens.vouch_answered(&token);
                let next = more.then(|| ActivationsRequest {
                    page: request.page + 1,
                    ..request.clone()
                });
                Ok(Answer::Activations(ActivationPage {
                    license_id: request.license_id,
                    activations,
                    next,
                }))
            })
            .await?;
        let Answer::Activations(page) = answer else {
            // The key names the call, so this cannot happen.
            return Err(LicensingError::internal(
                "another answer cached as activations",
            ));
        };
        Ok(page)
    }

    /// Deactivates one of the token owner's machines and returns the
    /// license it was activated with.
    ///
    /// `NotFound(Activation)` when the activation does not exist or is not
    /// theirs (nothing is deleted then), `DeactivationLimitReached` when the
    /// license has no deactivation left (nothing changes). When the answer
    /// to the delete is lost (a timeout, a broken connection), the caller
    /// gets `Unavailable` and the machine may or may not be deactivated:
    /// calling again answers `NotFound` if it was.
    #[tracing::instrument(name = "licensing.deactivate_machine", skip_all)]
    pub async fn deactivate_machine(
        &self,
        ctx: &RequestContext,
        token: &UserToken,
        activation_id: &CryptlexId,
    ) -> Result<CryptlexId, LicensingError> {
        let tokens = &self.shared.tokens;
        tokens.check_access(token)?;
        self.upstream_allowed(ctx)?;
        // The proof of ownership: Cryptlex answers the caller's own token
        // with the activation only if it is theirs. Never skipped, never
        // answered from memory (a cached answer could predate a transfer),
        // never with the PAT (which would see everyone's).
        let activation = self
            .cryptlex()
            .my_activation(ctx, token, activation_id)
            .await
            .map_err(|error| not_found_as(Missing::Activation, tokens, token, error))?;
        let license_id = CryptlexId::from_upstream(activation.license_id);

        let result = self.cryptlex().delete_activation(ctx, activation_id).await;

        // The license's counts and machines have changed, or may have (an
        // answer lost after Cryptlex acted, or another deactivation that won
        // the race): drop what shows them, here and on every replica, before
        // answering, so the caller's next read is fresh wherever it lands.
        let may_have_changed = match &result {
            Ok(()) => true,
            Err(CryptlexError::Rejected {
                kind: Rejection::NotFound,
                ..
            }) => true,
            Err(error) => error.outcome_unknown(),
        };
        if may_have_changed {
            let user_id = self
                .shared
                .cache
                .confirmed_owner(&TokenDigest::new(token))
                .map(CryptlexId::from_upstream);
            self.apply_change_relayed(&Change::License {
                license_id: license_id.clone(),
                user_id,
            })
            .await;
        }
        match result {
            Ok(()) => {
                tracing::info!(%activation_id, %license_id, "deactivated a machine");
                Ok(license_id)
            }
            Err(error) => Err(deactivation_failed(error)),
        }
    }

    /// Returns one page of the releases the token owner may download,
    /// newest first, of one product and one channel when asked.
    ///
    /// Cryptlex filters by product only; the channel is picked from its
    /// page here, so a page may be short, or empty, and still have a next.
    ///
    /// Cached as long as the other reads (`cache.fresh_for`, `max_age`), not
    /// longer, though releases change rarely: nothing the gateway hears of
    /// announces a new release (it handles no release webhooks), so only age
    /// brings one in, and a customer told "version 2.1 is out" should find
    /// it within minutes. A license change of the holder drops the pages
    /// (their products, and so their releases, may have changed).
    #[tracing::instrument(name = "licensing.releases", skip_all, fields(page = request.page, page_size = request.page_size))]
    pub async fn releases(
        &self,
        ctx: &RequestContext,
        token: &UserToken,
        request: ReleasesRequest,
    ) -> Result<ReleasePage, LicensingError> {
        let admitted = self.shared.tokens.check_access(token)?;
        // JSON: filters may hold any character, so a separator could not
        // keep two requests' arguments apart.
        let arguments = serde_json::json!([
            request.page,
            request.page_size,
            request.product_name.as_ref().map(FilterText::as_str),
            request.channel.as_ref().map(FilterText::as_str),
        ])
        .to_string();
        let key = CacheKey::new(token, "me/releases", &arguments);
        let read = self.read_for(ctx, admitted, key);
        let cryptlex = self.cryptlex().clone();
        let tokens = Arc::clone(&self.shared.tokens);
        let throttle = Arc::clone(&self.shared.throttle);
        let token = token.clone();
        let (answer, _) = self
            .shared
            .cache
            .get_or_fetch(read, Kind::Releases, move |ctx| async move {
                upstream_allowed(&throttle, &ctx)?;
                let product_name = request.product_name.as_ref();
                let fetched = cryptlex
                    .my_releases(&ctx, &token, request.page, request.page_size, product_name)
                    .await
                    .map_err(|error| user_call_failed(&tokens, &token, error))?;
                let full_page = fetched.len() >= request.page_size as usize;
                let more = full_page
                    && !cryptlex
                        .my_releases(
                            &ctx,
                            &token,
                            request
                                .page
                                .saturating_mul(request.page_size)
                                .saturating_add(1),
                            1,
                            product_name,
                        )
                        .await
                        .map_err(|error| user_call_failed(&tokens, &token, error))?
                        .is_empty();
                let releases = match &request.channel {
                    Some(channel) => fetched
                        .into_iter()
                        .filter(|release| release.channel == channel.as_str())
                        .collect(),
                    None => fetched,
                };
                tokens.vouch_answered(&token);
                let next = more.then(|| ReleasesRequest {
                    page: request.page + 1,
                    ..request.clone()
                });
                Ok(Answer::Releases(ReleasePage { releases, next }))
            })
            .await?;
        let Answer::Releases(page) = answer else {
            // The key names the call, so this cannot happen.
            return Err(LicensingError::internal(
                "another answer cached as releases",
            ));
        };
        Ok(page)
    }
}

/// Translates the failure of a read with the user's token that names one
/// thing by id: Cryptlex's 404 (it does not exist, or is not theirs) is
/// `missing`.
fn not_found_as(
    missing: Missing,
    tokens: &TokenGuard,
    token: &UserToken,
    error: CryptlexError,
) -> LicensingError {
    match error {
        CryptlexError::Rejected {
            kind: Rejection::NotFound,
            ..
        } => LicensingError::NotFound(missing),
        error => user_call_failed(tokens, token, error),
    }
}

/// Translates the failure of `DELETE /v3/activations/{id}`, which carries no
/// credential (so no refusal of it is about the caller's token).
fn deactivation_failed(error: CryptlexError) -> LicensingError {
    match error {
        // S1 gives the delete one conflict: the license's deactivations are
        // used up (decided as 409 `DEACTIVATION_LIMIT_REACHED`; a 409 without
        // a code Cryptlex documents is read the same way).
        CryptlexError::Rejected {
            status: 409,
            code: Some(ErrorCode::DeactivationLimitReached) | None,
            ..
        } => LicensingError::DeactivationLimitReached,
        // Another deactivation of the same machine won the race.
        CryptlexError::Rejected {
            kind: Rejection::NotFound,
            ..
        } => LicensingError::NotFound(Missing::Activation),
        // S1 says the operation needs no credential: Cryptlex asking for one
        // is nothing the caller can fix.
        error @ CryptlexError::Rejected {
            kind: Rejection::Unauthenticated | Rejection::Forbidden,
            ..
        } => LicensingError::internal(error),
        error => upstream(Credential::UserToken, error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(status: u16, kind: Rejection, code: Option<ErrorCode>) -> CryptlexError {
        CryptlexError::Rejected {
            status,
            kind,
            code,
            message: None,
        }
    }

    #[test]
    fn a_refused_deactivation_means_the_limit_a_lost_race_or_a_server_fault() {
        assert!(matches!(
            deactivation_failed(rejected(
                409,
                Rejection::Conflict,
                Some(ErrorCode::DeactivationLimitReached)
            )),
            LicensingError::DeactivationLimitReached
        ));
        assert!(matches!(
            deactivation_failed(rejected(409, Rejection::Conflict, None)),
            LicensingError::DeactivationLimitReached
        ));
        assert!(matches!(
            deactivation_failed(rejected(404, Rejection::NotFound, None)),
            LicensingError::NotFound(Missing::Activation)
        ));
        // Not the caller's token: the delete carried none.
        assert!(matches!(
            deactivation_failed(rejected(401, Rejection::Unauthenticated, None)),
            LicensingError::Internal(_)
        ));
        // A proxy's 404 page is no answer about the activation.
        assert!(matches!(
            deactivation_failed(rejected(404, Rejection::Unrecognized, None)),
            LicensingError::Unavailable { .. }
        ));
        assert!(matches!(
            deactivation_failed(CryptlexError::Timeout { maybe_sent: true }),
            LicensingError::Unavailable { .. }
        ));
    }
}

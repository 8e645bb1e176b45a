//! Conversions for the customer-portal RPCs (`GetLicense`,
//! `ListActivations`, `DeactivateMachine`, `ListReleases`): requests parsed
//! into domain values (every field checked, all violations at once, before
//! any upstream call), results turned into response messages with their
//! page tokens.

use super::convert::timestamp;
use super::pb;
use crate::domain::{
    Activation, ActivationPage, ActivationsRequest, CryptlexId, FeatureEntitlement, FilterText,
    LicenseDetail, Release, ReleaseFile, ReleasePage, ReleasesRequest, ValidationErrors,
};
use crate::licensing::pagination::{BoundList, PagePosition, bound_page, bound_page_token};

// === requests ===

impl TryFrom<pb::GetLicenseRequest> for CryptlexId {
    type Error = ValidationErrors;

    fn try_from(request: pb::GetLicenseRequest) -> Result<Self, Self::Error> {
        Ok(Self::parse("license_id", &request.license_id)?)
    }
}

impl TryFrom<pb::DeactivateMachineRequest> for CryptlexId {
    type Error = ValidationErrors;

    fn try_from(request: pb::DeactivateMachineRequest) -> Result<Self, Self::Error> {
        Ok(Self::parse("activation_id", &request.activation_id)?)
    }
}

impl TryFrom<pb::ListActivationsRequest> for ActivationsRequest {
    type Error = ValidationErrors;

    fn try_from(request: pb::ListActivationsRequest) -> Result<Self, Self::Error> {
        let mut errors = ValidationErrors::new();
        let license_id = errors.check(CryptlexId::parse("license_id", &request.license_id));
        // The token is checked against the license id as sent, so a bad id
        // and a token for another license are both reported.
        let position = errors.check(bound_page(
            BoundList::Activations,
            &[request.license_id.as_str()],
            request.page_size,
            &request.page_token,
        ));
        match (license_id, position) {
            (Some(license_id), Some(PagePosition { page, page_size })) if errors.is_empty() => {
                Ok(Self {
                    license_id,
                    page,
                    page_size,
                })
            }
            _ => Err(errors),
        }
    }
}

impl TryFrom<pb::ListReleasesRequest> for ReleasesRequest {
    type Error = ValidationErrors;

    fn try_from(request: pb::ListReleasesRequest) -> Result<Self, Self::Error> {
        let mut errors = ValidationErrors::new();
        let product_name = errors.check(FilterText::parse_optional(
            "product_name",
            &request.product_name,
        ));
        let channel = errors.check(FilterText::parse_optional("channel", &request.channel));
        let position = errors.check(bound_page(
            BoundList::Releases,
            &release_binding(&request.product_name, &request.channel),
            request.page_size,
            &request.page_token,
        ));
        match (product_name, channel, position) {
            (Some(product_name), Some(channel), Some(PagePosition { page, page_size }))
                if errors.is_empty() =>
            {
                Ok(Self {
                    product_name,
                    channel,
                    page,
                    page_size,
                })
            }
            _ => Err(errors),
        }
    }
}

/// The fields a `ListReleases` token is bound to, in their order; an unset
/// filter is `""`, as the request carries it.
fn release_binding<'a>(product_name: &'a str, channel: &'a str) -> [&'a str; 2] {
    [product_name, channel]
}

// === results ===

impl From<LicenseDetail> for pb::GetLicenseResponse {
    fn from(detail: LicenseDetail) -> Self {
        Self {
            license: Some(detail.license.into()),
            feature_entitlements: detail
                .feature_entitlements
                .into_iter()
                .map(pb::FeatureEntitlement::from)
                .collect(),
        }
    }
}

impl From<FeatureEntitlement> for pb::FeatureEntitlement {
    fn from(entitlement: FeatureEntitlement) -> Self {
        Self {
            feature_id: entitlement.feature_id,
            feature_name: entitlement.feature_name,
            value: entitlement.value,
            expires_at: entitlement.expires_at.map(timestamp),
        }
    }
}

impl From<ActivationPage> for pb::ListActivationsResponse {
    fn from(page: ActivationPage) -> Self {
        let next_page_token = page
            .next
            .map(|next| {
                bound_page_token(
                    BoundList::Activations,
                    &[next.license_id.as_str()],
                    PagePosition {
                        page: next.page,
                        page_size: next.page_size,
                    },
                )
            })
            .unwrap_or_default();
        Self {
            activations: page
                .activations
                .into_iter()
                .map(pb::Activation::from)
                .collect(),
            next_page_token,
        }
    }
}

impl From<Activation> for pb::Activation {
    fn from(activation: Activation) -> Self {
        Self {
            id: activation.id,
            license_id: activation.license_id,
            hostname: activation.hostname,
            os: activation.os,
            os_version: activation.os_version,
            vm_name: activation.vm_name,
            app_version: activation.app_version,
            location: activation.location,
            country_code: activation.country_code,
            last_synced_at: activation.last_synced_at.map(timestamp),
            created_at: activation.created_at.map(timestamp),
            release_version: activation.release_version,
        }
    }
}

impl From<ReleasePage> for pb::ListReleasesResponse {
    fn from(page: ReleasePage) -> Self {
        let next_page_token = page
            .next
            .map(|next| {
                let product_name = next.product_name.as_ref().map_or("", FilterText::as_str);
                let channel = next.channel.as_ref().map_or("", FilterText::as_str);
                bound_page_token(
                    BoundList::Releases,
                    &release_binding(product_name, channel),
                    PagePosition {
                        page: next.page,
                        page_size: next.page_size,
                    },
                )
            })
            .unwrap_or_default();
        Self {
            releases: page.releases.into_iter().map(pb::Release::from).collect(),
            next_page_token,
        }
    }
}

impl From<Release> for pb::Release {
    fn from(release: Release) -> Self {
        Self {
            id: release.id,
            name: release.name,
            version: release.version,
            channel: release.channel,
            platforms: release.platforms,
            product_name: release.product_name,
            notes: release.notes,
            published_at: release.published_at.map(timestamp),
            files: release
                .files
                .into_iter()
                .map(pb::ReleaseFile::from)
                .collect(),
        }
    }
}

impl From<ReleaseFile> for pb::ReleaseFile {
    fn from(file: ReleaseFile) -> Self {
        Self {
            id: file.id,
            name: file.name,
            url: file.url,
            size: file.size,
            checksum: file.checksum,
            extension: file.extension,
            secured: file.secured,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn activations_request(
        license_id: &str,
        page_size: i32,
        page_token: &str,
    ) -> pb::ListActivationsRequest {
        pb::ListActivationsRequest {
            license_id: license_id.into(),
            page_size,
            page_token: page_token.into(),
        }
    }

    fn fields(errors: ValidationErrors) -> Vec<String> {
        errors
            .violations()
            .iter()
            .map(|violation| violation.field.clone())
            .collect()
    }

    #[test]
    fn the_next_activations_token_comes_back_as_the_next_page_of_the_same_license() {
        let license_id = CryptlexId::parse("license_id", "lic-1").expect("id");
        let response = pb::ListActivationsResponse::from(ActivationPage {
            license_id: license_id.clone(),
            activations: Vec::new(),
            next: Some(ActivationsRequest {
                license_id: license_id.clone(),
                page: 2,
                page_size: 5,
            }),
        });
        let token = response.next_page_token;
        assert_eq!(
            ActivationsRequest::try_from(activations_request("lic-1", 5, &token)),
            Ok(ActivationsRequest {
                license_id,
                page: 2,
                page_size: 5
            })
        );
        let other_license = ActivationsRequest::try_from(activations_request("lic-2", 5, &token));
        assert_eq!(fields(other_license.expect_err("refused")), ["page_token"]);
    }

    #[test]
    fn every_bad_field_of_a_list_activations_request_is_reported_at_once() {
        let refused = ActivationsRequest::try_from(activations_request("../x", -1, ""));
        assert_eq!(
            fields(refused.expect_err("refused")),
            ["license_id", "page_size"]
        );
        let missing = ActivationsRequest::try_from(activations_request("", 0, "junk"));
        assert_eq!(
            fields(missing.expect_err("refused")),
            ["license_id", "page_token"]
        );
    }

    #[test]
    fn a_releases_token_is_bound_to_both_filters_and_filters_are_bounded() {
        let request =
            |product_name: &str, channel: &str, page_token: &str| pb::ListReleasesRequest {
                product_name: product_name.into(),
                channel: channel.into(),
                page_size: 0,
                page_token: page_token.into(),
            };
        let first = ReleasesRequest::try_from(request("Demo", "beta", "")).expect("valid");
        assert_eq!((first.page, first.page_size), (1, 25));
        let token = pb::ListReleasesResponse::from(ReleasePage {
            releases: Vec::new(),
            next: Some(ReleasesRequest {
                page: 2,
                ..first.clone()
            }),
        })
        .next_page_token;
        assert_eq!(
            ReleasesRequest::try_from(request("Demo", "beta", &token)).map(|next| next.page),
            Ok(2)
        );
        for (product_name, channel) in [("Demo", ""), ("", "beta"), ("Demo", "stable")] {
            let refused = ReleasesRequest::try_from(request(product_name, channel, &token));
            assert_eq!(fields(refused.expect_err("refused")), ["page_token"]);
        }
        let too_long = "x".repeat(257);
        let refused = ReleasesRequest::try_from(request(&too_long, &too_long, ""));
        assert_eq!(
            fields(refused.expect_err("refused")),
            ["product_name", "channel"]
        );
        let unfiltered = ReleasesRequest::try_from(request("", "", "")).expect("valid");
        assert_eq!((unfiltered.product_name, unfiltered.channel), (None, None));
    }

    #[test]
    fn ids_are_cryptlex_ids_named_by_their_field() {
        let refused = CryptlexId::try_from(pb::DeactivateMachineRequest {
            activation_id: "a/../b".into(),
        });
        assert_eq!(fields(refused.expect_err("refused")), ["activation_id"]);
        let refused = CryptlexId::try_from(pb::GetLicenseRequest {
            license_id: String::new(),
        });
        assert_eq!(fields(refused.expect_err("refused")), ["license_id"]);
    }
}

//! A license's feature entitlements, the user's machines (activations) and their
//! deactivation, and the releases a user may download.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::{Extension, Json};
use chrono::Utc;
use http::StatusCode;

use super::state::ActivationRecord;
use super::wire::{FeatureEntitlementDto, UserActivationDto, UserReleaseDto};
use crate::pipeline::Caller;
use crate::routes::{ApiResult, ListQuery, ListSpec, domain_error};
use crate::shared::{Shared, lock};
use crate::webhooks::events;
use crate::wire::{ApiError, timestamp};

/// `GET /v3/me/licenses/{id}/feature-entitlements`: 404 unless the license is the caller's.
pub(super) async fn feature_entitlements(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<FeatureEntitlementDto>>> {
    let (user_id, _) = caller.any_token()?;
    let domain = lock(&shared.domain);
    if !domain.owns_license(user_id, &id) {
        return Err(ApiError::not_found("License"));
    }
    let entitlements = domain
        .portal
        .feature_entitlements_of(&id)
        .map(FeatureEntitlementDto::from)
        .collect();
    Ok(Json(entitlements))
}

/// `GET /v3/me/activations`: S1's id-operators on `licenseId`.
const MY_ACTIVATIONS: ListSpec = ListSpec {
    filters: &[
        "licenseId[eq]",
        "licenseId[ne]",
        "licenseId[in]",
        "licenseId[nin]",
    ],
    sortable: &["createdAt", "updatedAt", "lastSyncedAt", "hostname", "os"],
};

fn activation_sort_key(activation: &ActivationRecord, field: &str) -> String {
    match field {
        "createdAt" => timestamp(activation.created_at),
        "updatedAt" => timestamp(activation.updated_at),
        "lastSyncedAt" => timestamp(activation.last_synced_at),
        "hostname" => activation.hostname.to_lowercase(),
        _ => activation.os.clone(),
    }
}

/// `GET /v3/me/activations`: the machines of the caller's licenses, oldest first.
pub(super) async fn list_activations(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Vec<UserActivationDto>>> {
    let (user_id, _) = caller.any_token()?;
    let query = ListQuery::parse(query.as_deref(), &MY_ACTIVATIONS)?;
    let license_filters: Vec<(&str, &str)> = query.operators("licenseId").collect();

    let domain = lock(&shared.domain);
    let owned = domain
        .portal
        .activations()
        .iter()
        .filter(|activation| {
            domain.owns_license(user_id, &activation.license_id)
                && license_filters.iter().all(|(operator, argument)| {
                    text_matches(&activation.license_id, operator, argument)
                })
        })
        .collect();
    let page = query
        .page_of(owned, |activation, field| {
            activation_sort_key(activation, field)
        })
        .into_iter()
        .map(UserActivationDto::from)
        .collect();
    Ok(Json(page))
}

/// `GET /v3/me/activations/{id}`: 404 unless the activation's license is the caller's.
pub(super) async fn get_activation(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<UserActivationDto>> {
    let (user_id, _) = caller.any_token()?;
    let domain = lock(&shared.domain);
    let activation = domain
        .owned_activation(user_id, &id)
        .ok_or_else(|| ApiError::not_found("Activation"))?;
    Ok(Json(UserActivationDto::from(activation)))
}

/// `DELETE /v3/activations/{id}`: LexActivator's deactivation, which needs no token (the
/// activation id is the credential). Fires `activation.deleted`. 204.
pub(super) async fn delete_activation(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let mut domain = lock(&shared.domain);
    let activation = domain.deactivate(&id, Utc::now()).map_err(domain_error)?;
    shared.webhooks.fire(
        events::ACTIVATION_DELETED,
        &UserActivationDto::from(&activation),
    );
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v3/me/releases`: S1's text-operators on `product.displayName`, its only filter.
const MY_RELEASES: ListSpec = ListSpec {
    filters: &[
        "product.displayName[eq]",
        "product.displayName[ne]",
        "product.displayName[in]",
        "product.displayName[nin]",
        "product.displayName[sw]",
        "product.displayName[ew]",
        "product.displayName[cn]",
        "product.displayName[nc]",
    ],
    sortable: &["publishedAt", "createdAt", "updatedAt", "version", "name"],
};

/// `GET /v3/me/releases`: the published releases of the products the caller holds a license
/// for, newest first unless `sort` says otherwise.
pub(super) async fn list_releases(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Vec<UserReleaseDto>>> {
    let (user_id, _) = caller.any_token()?;
    let query = ListQuery::parse(query.as_deref(), &MY_RELEASES)?;
    let name_filters: Vec<(&str, &str)> = query.operators("product.displayName").collect();

    let domain = lock(&shared.domain);
    let licensed_products: BTreeSet<&str> = domain
        .licenses()
        .iter()
        .filter(|license| license.user_id.as_deref() == Some(user_id))
        .map(|license| license.product_id.as_str())
        .collect();
    let display_name = |product_id: &str| {
        domain
            .product(product_id)
            .map(|product| product.display_name.clone())
            .unwrap_or_default()
    };
    let mut visible: Vec<_> = domain
        .portal
        .releases()
        .iter()
        .filter(|release| {
            release.published_at.is_some()
                && licensed_products.contains(release.product_id.as_str())
                && name_filters.iter().all(|(operator, argument)| {
                    text_matches(&display_name(&release.product_id), operator, argument)
                })
        })
        .collect();
    // S1's order: newest publication first. An explicit `sort` re-sorts (stably) below.
    visible.sort_by_key(|release| std::cmp::Reverse(release.published_at));
    let page = query
        .page_of(visible, |release, field| match field {
            "publishedAt" => release.published_at.map(timestamp).unwrap_or_default(),
            "createdAt" => timestamp(release.created_at),
            "updatedAt" => timestamp(release.updated_at),
            "version" => release.version.clone(),
            _ => release.name.to_lowercase(),
        })
        .into_iter()
        .map(|release| UserReleaseDto::new(release, &display_name(&release.product_id)))
        .collect();
    Ok(Json(page))
}

/// One of S1's filter operators: `eq`, `ne`, `in`, `nin` (comma-separated) compare exactly;
/// `sw`, `ew`, `cn`, `nc` (starts with, ends with, contains, does not contain) ignore case.
fn text_matches(value: &str, operator: &str, argument: &str) -> bool {
    let listed = || argument.split(',').any(|item| item.trim() == value);
    let (value_lower, argument_lower) = (value.to_lowercase(), argument.to_lowercase());
    match operator {
        "eq" => value == argument,
        "ne" => value != argument,
        "in" => listed(),
        "nin" => !listed(),
        "sw" => value_lower.starts_with(&argument_lower),
        "ew" => value_lower.ends_with(&argument_lower),
        "cn" => value_lower.contains(&argument_lower),
        "nc" => !value_lower.contains(&argument_lower),
        // `ListQuery` refuses operators the spec does not list, so this is never reached.
        _ => false,
    }
}

#[cfg(test)]
mod unit_tests {
    use super::text_matches;

    #[test]
    fn text_operators_compare_as_documented() {
        let name = "Demo Desktop App";
        assert!(text_matches(name, "eq", "Demo Desktop App"));
        assert!(!text_matches(name, "eq", "demo desktop app"));
        assert!(text_matches(name, "ne", "Other"));
        assert!(text_matches(name, "in", "Other, Demo Desktop App"));
        assert!(text_matches(name, "nin", "Other,Another"));
        assert!(text_matches(name, "sw", "demo"));
        assert!(text_matches(name, "ew", "APP"));
        assert!(text_matches(name, "cn", "desk"));
        assert!(text_matches(name, "nc", "mobile"));
        assert!(!text_matches(name, "cn", "mobile"));
        assert!(!text_matches(name, "gt", "A"));
    }
}

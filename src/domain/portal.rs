//! What the customer-portal calls hand back and take: one license in detail,
//! the machines activated with it, the releases a user may download, and
//! the parsed requests for their pages.

use chrono::{DateTime, Utc};

use super::validation::{FieldViolation, check_length, check_no_control_chars};
use super::{CryptlexId, UserLicense};

/// One license with the features it entitles its owner to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicenseDetail {
    pub license: UserLicense,
    pub feature_entitlements: Vec<FeatureEntitlement>,
}

/// A feature a license entitles its owner to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureEntitlement {
    pub feature_id: String,
    pub feature_name: String,
    /// Empty when the feature has no value.
    pub value: String,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A machine activated with a license, as its owner may see it. The
/// machine's IP address, which Cryptlex returns with its location, is never
/// kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activation {
    pub id: String,
    pub license_id: String,
    pub hostname: String,
    pub os: String,
    pub os_version: String,
    pub vm_name: String,
    pub app_version: String,
    pub release_version: String,
    /// A place a person reads ("Berlin, Germany"); see [`readable_place`].
    pub location: String,
    /// ISO 3166-1 alpha-2; empty when unknown.
    pub country_code: String,
    pub last_synced_at: Option<DateTime<Utc>>,
    pub created_at: Option<DateTime<Utc>>,
}

/// A release the user may download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub id: String,
    pub name: String,
    pub version: String,
    pub channel: String,
    pub platforms: Vec<String>,
    pub product_name: String,
    pub notes: String,
    pub published_at: Option<DateTime<Utc>>,
    pub files: Vec<ReleaseFile>,
}

/// One downloadable file of a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseFile {
    pub id: String,
    pub name: String,
    pub url: String,
    pub size: i64,
    pub checksum: String,
    pub extension: String,
    /// Downloading needs a license key.
    pub secured: bool,
}

/// Which page of a license's activations to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivationsRequest {
    pub license_id: CryptlexId,
    /// 1-based, in Cryptlex's terms.
    pub page: u32,
    pub page_size: u32,
}

/// One page of a license's activations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivationPage {
    /// The license the activations belong to (also when there are none).
    pub license_id: CryptlexId,
    pub activations: Vec<Activation>,
    /// The request for the next page; `None` at the end.
    pub next: Option<ActivationsRequest>,
}

/// Which page of the user's releases to fetch, and the filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleasesRequest {
    /// Only releases of the product with this display name.
    pub product_name: Option<FilterText>,
    /// Only releases in this channel (filtered by the gateway: Cryptlex
    /// cannot).
    pub channel: Option<FilterText>,
    /// 1-based, in Cryptlex's terms: the page of all releases (of the
    /// product) the channel is picked from.
    pub page: u32,
    pub page_size: u32,
}

/// One page of releases. With a channel filter it may be short, or empty,
/// and still have a next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleasePage {
    pub releases: Vec<Release>,
    /// The request for the next page; `None` at the end.
    pub next: Option<ReleasesRequest>,
}

/// A text a list is filtered by (a product's display name, a channel's
/// name): 1 to 256 characters (Cryptlex's bound for filter values), no
/// control characters. Compared exactly as given, so it is not trimmed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FilterText(String);

impl FilterText {
    /// The longest filter text accepted.
    pub const MAX_LEN: usize = 256;

    /// Parses `value` for `field`; an empty value means no filter (`None`).
    pub fn parse_optional(field: &str, value: &str) -> Result<Option<Self>, FieldViolation> {
        if value.is_empty() {
            return Ok(None);
        }
        check_length(field, value, 1, Self::MAX_LEN)?;
        check_no_control_chars(field, value)?;
        Ok(Some(Self(value.to_owned())))
    }

    /// The text as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Joins the parts of a place a person reads, most specific first ("Berlin,
/// Germany"): blank parts are left out, and so is a part equal to the one
/// before it ("Singapore, Singapore" is "Singapore").
pub fn readable_place<'a>(parts: impl IntoIterator<Item = Option<&'a str>>) -> String {
    let mut place: Vec<&str> = Vec::new();
    for part in parts.into_iter().flatten() {
        let part = part.trim();
        if part.is_empty()
            || part.chars().any(char::is_control)
            || place
                .last()
                .is_some_and(|previous| previous.eq_ignore_ascii_case(part))
        {
            continue;
        }
        place.push(part);
    }
    place.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_place_is_its_known_parts_most_specific_first() {
        assert_eq!(
            readable_place([Some("Berlin"), Some("Land Berlin"), Some("Germany")]),
            "Berlin, Land Berlin, Germany"
        );
        assert_eq!(
            readable_place([None, Some(" "), Some("Germany")]),
            "Germany"
        );
        assert_eq!(
            readable_place([Some("Singapore"), Some("singapore"), Some("Singapore")]),
            "Singapore"
        );
        assert_eq!(readable_place([None, None, None]), "");
        assert_eq!(
            readable_place([Some("Evil\nCity"), Some("Ohio")]),
            "Ohio",
            "a part that would break a log line or a page is left out"
        );
    }

    #[test]
    fn filter_text_is_optional_bounded_and_kept_exactly() {
        assert_eq!(FilterText::parse_optional("channel", ""), Ok(None));
        assert_eq!(
            FilterText::parse_optional("channel", " Beta ")
                .expect("valid")
                .expect("set")
                .as_str(),
            " Beta "
        );
        assert!(FilterText::parse_optional("channel", &"x".repeat(256)).is_ok());
        assert!(FilterText::parse_optional("channel", &"x".repeat(257)).is_err());
        assert!(FilterText::parse_optional("product_name", "a\u{0}b").is_err());
    }
}

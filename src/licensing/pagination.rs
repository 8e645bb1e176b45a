//! AIP-158 page tokens for `ListMyLicenses`, `ListActivations` and
//! `ListReleases`.
//!
//! Cryptlex pages by number (`page`, `limit`); callers get an opaque token
//! instead, so the gateway can change how it pages without breaking them. A
//! token records the next page number and the request it belongs to (page
//! size and filter); using it with different parameters is refused rather
//! than silently returning a misaligned page.
//!
//! `ListMyLicenses` tokens carry their product filter as it is (the format
//! tokens already issued have). The other lists' tokens ([`BoundList`]) name
//! their list and carry a digest of the request's other fields instead
//! (`license_id`; `product_name` and `channel`, up to 256 characters each,
//! would not fit a token): the caller sends those fields again with every
//! page anyway, so the token only has to tell whether they are the same.
//! A token of one list is refused by every other.
//!
//! Tokens are not secret and not signed: all a forged token can do is ask for
//! another page of the caller's own licenses, activations or releases.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::{CryptlexId, FieldViolation, PageRequest};

/// Page size used when the caller asks for 0 (unspecified).
pub const DEFAULT_PAGE_SIZE: u32 = 25;
/// Largest page; larger requests are coerced down, as AIP-158 recommends.
pub const MAX_PAGE_SIZE: u32 = 100;
/// The last page a token may ask for. The use case computes the next page
/// (`page + 1`) and probes for the item after a full page (page
/// `page * page_size + 1` of size 1) in Cryptlex's 32-bit page numbers; up
/// to this page neither can overflow at any page size. That is 4.29 billion
/// licenses: no genuine token goes further.
pub const MAX_PAGE: u32 = u32::MAX / MAX_PAGE_SIZE;

#[derive(Serialize, Deserialize)]
struct TokenBody {
    /// Format version, so a future format can refuse old tokens clearly.
    v: u8,
    /// The next page number (1-based).
    p: u32,
    /// The page size the token was issued for.
    s: u32,
    /// The product filter the token was issued for (`ListMyLicenses`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    f: Option<String>,
    /// The list the token pages through; absent for `ListMyLicenses`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    l: Option<String>,
    /// A digest of the request's other fields ([`BoundList`] tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    b: Option<String>,
}

/// The page size a caller asked for, as AIP-158 reads it: 0 is the default,
/// above the maximum is the maximum, negative is invalid.
fn page_size(page_size: i32) -> Result<u32, FieldViolation> {
    match page_size {
        size if size < 0 => Err(FieldViolation::new("page_size", "must not be negative")),
        0 => Ok(DEFAULT_PAGE_SIZE),
        size => Ok(u32::try_from(size).map_or(MAX_PAGE_SIZE, |size| size.min(MAX_PAGE_SIZE))),
    }
}

/// Decodes a non-empty token this service could have issued, with its page
/// number in range.
fn decode(page_token: &str) -> Result<TokenBody, FieldViolation> {
    let invalid = || FieldViolation::new("page_token", "is not a token this service issued");
    if page_token.len() > 256 {
        return Err(invalid());
    }
    let bytes = URL_SAFE_NO_PAD.decode(page_token).map_err(|_| invalid())?;
    let body: TokenBody = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if body.v != 1 || body.p < 2 || body.p > MAX_PAGE {
        return Err(invalid());
    }
    Ok(body)
}

fn encode(body: &TokenBody) -> String {
    let json = serde_json::to_vec(body).expect("a struct of numbers and strings serializes");
    URL_SAFE_NO_PAD.encode(json)
}

/// Builds the request for a page from the caller's parameters.
pub fn page_request(
    page_size: i32,
    page_token: &str,
    product_id: Option<CryptlexId>,
) -> Result<PageRequest, FieldViolation> {
    let page_size = self::page_size(page_size)?;
    if page_token.is_empty() {
        return Ok(PageRequest {
            page: 1,
            page_size,
            product_id,
        });
    }
    let body = decode(page_token)?;
    if body.l.is_some() || body.b.is_some() {
        return Err(FieldViolation::new(
            "page_token",
            "was issued for a different list",
        ));
    }
    if body.s != page_size || body.f.as_deref() != product_id.as_ref().map(CryptlexId::as_str) {
        return Err(FieldViolation::new(
            "page_token",
            "was issued for a different page_size or product_id",
        ));
    }
    Ok(PageRequest {
        page: body.p,
        page_size,
        product_id,
    })
}

/// Encodes the token for `next`.
pub fn page_token(next: &PageRequest) -> String {
    encode(&TokenBody {
        v: 1,
        p: next.page,
        s: next.page_size,
        f: next.product_id.as_ref().map(|id| id.as_str().to_owned()),
        l: None,
        b: None,
    })
}

/// A list whose page tokens bind the request's other fields by digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BoundList {
    /// `ListActivations`, bound to `license_id`.
    Activations,
    /// `ListReleases`, bound to `product_name` and `channel`.
    Releases,
}

impl BoundList {
    /// The list's name in its tokens.
    fn name(self) -> &'static str {
        match self {
            Self::Activations => "activations",
            Self::Releases => "releases",
        }
    }

    /// The fields a token is bound to, for the refusal.
    fn refusal(self) -> &'static str {
        match self {
            Self::Activations => "was issued for a different page_size or license_id",
            Self::Releases => "was issued for a different page_size, product_name or channel",
        }
    }

    /// The digest of the bound fields' values, in the list's order. Each
    /// value is length-prefixed, so no two lists of values share one.
    fn digest(self, bound: &[&str]) -> String {
        let mut hasher = Sha256::new();
        hasher.update(self.name().as_bytes());
        for value in bound {
            hasher.update((value.len() as u64).to_be_bytes());
            hasher.update(value.as_bytes());
        }
        // 96 bits: a token is refused only for the caller's own mistake, so
        // this needs to tell requests apart, not to resist forgery.
        URL_SAFE_NO_PAD.encode(&hasher.finalize()[..12])
    }
}

/// Where a page of a [`BoundList`] starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PagePosition {
    /// 1-based.
    pub page: u32,
    pub page_size: u32,
}

/// Reads the caller's page size and token for `list`, whose other request
/// fields are `bound` (in the list's order; an unset filter is `""`).
pub fn bound_page(
    list: BoundList,
    bound: &[&str],
    page_size: i32,
    page_token: &str,
) -> Result<PagePosition, FieldViolation> {
    let page_size = self::page_size(page_size)?;
    if page_token.is_empty() {
        return Ok(PagePosition { page: 1, page_size });
    }
    let body = decode(page_token)?;
    if body.l.as_deref() != Some(list.name()) || body.f.is_some() {
        return Err(FieldViolation::new(
            "page_token",
            "was issued for a different list",
        ));
    }
    if body.s != page_size || body.b.as_deref() != Some(list.digest(bound).as_str()) {
        return Err(FieldViolation::new("page_token", list.refusal()));
    }
    Ok(PagePosition {
        page: body.p,
        page_size,
    })
}

/// Encodes the token for the page of `list` at `next`, bound to `bound` (as
/// [`bound_page`] reads it).
pub fn bound_page_token(list: BoundList, bound: &[&str], next: PagePosition) -> String {
    encode(&TokenBody {
        v: 1,
        p: next.page,
        s: next.page_size,
        f: None,
        l: Some(list.name().to_owned()),
        b: Some(list.digest(bound)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips_to_the_next_page() {
        let first = page_request(2, "", None).expect("first page");
        let next = PageRequest {
            page: first.page + 1,
            ..first
        };
        let token = page_token(&next);
        assert_eq!(page_request(2, &token, None).expect("valid token"), next);
    }

    #[test]
    fn page_size_defaults_and_is_coerced_to_the_maximum() {
        assert_eq!(
            page_request(0, "", None).expect("ok").page_size,
            DEFAULT_PAGE_SIZE
        );
        assert_eq!(
            page_request(1000, "", None).expect("ok").page_size,
            MAX_PAGE_SIZE
        );
        assert!(page_request(-1, "", None).is_err());
    }

    #[test]
    fn a_token_is_refused_with_other_parameters_or_when_garbled() {
        let product = CryptlexId::parse("product_id", "p1").expect("id");
        let token = page_token(&PageRequest {
            page: 2,
            page_size: 5,
            product_id: Some(product.clone()),
        });
        assert!(page_request(5, &token, Some(product)).is_ok());
        assert!(page_request(6, &token, None).is_err());
        assert!(page_request(5, &token, None).is_err());
        assert!(page_request(5, "not-a-token", None).is_err());
        assert!(page_request(5, &"A".repeat(300), None).is_err());
    }

    // Found by fuzz/page_token: a forged token for page 1721342208 of 100 was
    // accepted, and the use case's probe `page * page_size + 1` overflowed (and
    // `page + 1` for page u32::MAX), which panics in a debug build.
    #[test]
    fn a_token_for_a_page_past_the_last_addressable_one_is_refused() {
        let forged = |page| {
            page_token(&PageRequest {
                page,
                page_size: MAX_PAGE_SIZE,
                product_id: None,
            })
        };
        assert!(page_request(100, &forged(1_721_342_208), None).is_err());
        assert!(page_request(100, &forged(u32::MAX), None).is_err());
        let last = page_request(100, &forged(MAX_PAGE), None).expect("the last page");
        let probe = u64::from(last.page) * u64::from(last.page_size) + 1;
        assert!(probe <= u64::from(u32::MAX) && last.page.checked_add(1).is_some());
    }

    #[test]
    fn a_bound_token_round_trips_for_the_same_request_only() {
        let license = ["lic-1"];
        let first = bound_page(BoundList::Activations, &license, 0, "").expect("first page");
        assert_eq!(
            first,
            PagePosition {
                page: 1,
                page_size: DEFAULT_PAGE_SIZE
            }
        );
        let next = PagePosition {
            page: 2,
            page_size: 10,
        };
        let token = bound_page_token(BoundList::Activations, &license, next);
        assert!(token.len() <= 256);
        assert_eq!(
            bound_page(BoundList::Activations, &license, 10, &token),
            Ok(next)
        );
        let refused = |list, bound: &[&str], size| {
            bound_page(list, bound, size, &token)
                .expect_err("refused")
                .description
        };
        assert_eq!(
            refused(BoundList::Activations, &["lic-2"], 10),
            "was issued for a different page_size or license_id"
        );
        assert_eq!(
            refused(BoundList::Activations, &license, 11),
            "was issued for a different page_size or license_id"
        );
        assert_eq!(
            refused(BoundList::Releases, &license, 10),
            "was issued for a different list"
        );
    }

    #[test]
    fn release_tokens_bind_both_filters_without_carrying_them() {
        let long_name = "N".repeat(256);
        let bound = [long_name.as_str(), "beta"];
        let next = PagePosition {
            page: 3,
            page_size: 100,
        };
        let token = bound_page_token(BoundList::Releases, &bound, next);
        assert!(token.len() <= 256, "{}", token.len());
        assert_eq!(
            bound_page(BoundList::Releases, &bound, 100, &token),
            Ok(next)
        );
        // The same characters split differently are another request.
        let shifted = [&long_name[..255], "Nbeta"];
        assert!(bound_page(BoundList::Releases, &shifted, 100, &token).is_err());
        assert!(bound_page(BoundList::Releases, &[long_name.as_str(), ""], 100, &token).is_err());
        assert!(bound_page(BoundList::Releases, &bound, -1, "").is_err());
    }

    #[test]
    fn tokens_of_one_list_are_refused_by_the_others() {
        let licenses = page_token(&PageRequest {
            page: 2,
            page_size: 25,
            product_id: None,
        });
        let activations = bound_page_token(
            BoundList::Activations,
            &["lic-1"],
            PagePosition {
                page: 2,
                page_size: 25,
            },
        );
        assert!(bound_page(BoundList::Activations, &["lic-1"], 25, &licenses).is_err());
        assert!(bound_page(BoundList::Releases, &["", ""], 25, &licenses).is_err());
        assert!(page_request(25, &activations, None).is_err());
    }
}

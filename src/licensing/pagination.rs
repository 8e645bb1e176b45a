//! AIP-158 page tokens for `ListMyLicenses`.
//!
//! Cryptlex pages by number (`page`, `limit`); callers get an opaque token
//! instead, so the gateway can change how it pages without breaking them. A
//! token records the next page number and the request it belongs to (page
//! size and filter); using it with different parameters is refused rather
//! than silently returning a misaligned page.
//!
//! Tokens are not secret and not signed: all a forged token can do is ask for
//! another page of the caller's own licenses.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

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
    /// The product filter the token was issued for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    f: Option<String>,
}

/// Builds the request for a page from the caller's parameters.
pub fn page_request(
    page_size: i32,
    page_token: &str,
    product_id: Option<CryptlexId>,
) -> Result<PageRequest, FieldViolation> {
    let page_size = match page_size {
        size if size < 0 => {
            return Err(FieldViolation::new("page_size", "must not be negative"));
        }
        0 => DEFAULT_PAGE_SIZE,
        size => u32::try_from(size).map_or(MAX_PAGE_SIZE, |size| size.min(MAX_PAGE_SIZE)),
    };
    if page_token.is_empty() {
        return Ok(PageRequest {
            page: 1,
            page_size,
            product_id,
        });
    }
    let invalid = || FieldViolation::new("page_token", "is not a token this service issued");
    if page_token.len() > 256 {
        return Err(invalid());
    }
    let bytes = URL_SAFE_NO_PAD.decode(page_token).map_err(|_| invalid())?;
    let body: TokenBody = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if body.v != 1 || body.p < 2 || body.p > MAX_PAGE {
        return Err(invalid());
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
    let body = TokenBody {
        v: 1,
        p: next.page,
        s: next.page_size,
        f: next.product_id.as_ref().map(|id| id.as_str().to_owned()),
    };
    let json = serde_json::to_vec(&body).expect("a struct of numbers and strings serializes");
    URL_SAFE_NO_PAD.encode(json)
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
}

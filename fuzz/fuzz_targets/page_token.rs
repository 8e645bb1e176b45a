//! `ListMyLicenses` page tokens: `pagination::page_request` with any page
//! size, product filter and token, including tokens crafted the way the
//! gateway encodes its own (so the fuzzer reaches the checks past decoding).
//!
//! Properties: no panic; an accepted request is within bounds and is for the
//! caller's filter; the token for the page after it (the one the gateway
//! would hand out) round-trips, and the arithmetic the use case does with it
//! (`page + 1`, the probe `page * size + 1`) cannot overflow; a refusal names
//! `page_size` or `page_token` in printable words.

#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use licensing_gateway::domain::{CryptlexId, PageRequest};
use licensing_gateway::licensing::pagination::{MAX_PAGE, MAX_PAGE_SIZE, page_request, page_token};
use licensing_gateway_fuzz::assert_printable;

#[derive(Debug, Arbitrary)]
enum Token {
    /// Whatever a caller sends.
    Raw(String),
    /// JSON in the gateway's own format, base64url-encoded as it does; the
    /// size matches the request's when `same_size` (as in a genuine token).
    Crafted {
        version: u8,
        page: u32,
        same_size: bool,
        size: u32,
        filter: Option<String>,
        same_filter: bool,
    },
    /// Raw JSON, encoded as the gateway does.
    Json(String),
}

#[derive(Debug, Arbitrary)]
struct Input {
    page_size: i32,
    product_id: Option<String>,
    token: Token,
}

fuzz_target!(|input: Input| {
    let product_id = input
        .product_id
        .as_deref()
        .and_then(|id| CryptlexId::parse("product_id", id).ok());
    let coerced_size = match input.page_size {
        0 => 25,
        size => u32::try_from(size).map_or(MAX_PAGE_SIZE, |size| size.min(MAX_PAGE_SIZE)),
    };
    let token = match input.token {
        Token::Raw(token) => token,
        Token::Crafted {
            version,
            page,
            same_size,
            size,
            filter,
            same_filter,
        } => {
            let size = if same_size { coerced_size } else { size };
            let filter = if same_filter {
                product_id.as_ref().map(|id| id.as_str().to_owned())
            } else {
                filter
            };
            let mut body = serde_json::json!({ "v": version, "p": page, "s": size });
            if let Some(filter) = filter {
                body["f"] = filter.into();
            }
            URL_SAFE_NO_PAD.encode(body.to_string())
        }
        Token::Json(json) => URL_SAFE_NO_PAD.encode(json),
    };

    match page_request(input.page_size, &token, product_id.clone()) {
        Ok(request) => {
            assert!(input.page_size >= 0, "a negative page size was accepted");
            assert!((1..=MAX_PAGE_SIZE).contains(&request.page_size));
            assert_eq!(request.page_size, coerced_size);
            assert!(request.page >= 1);
            assert_eq!(request.product_id, product_id);
            if token.is_empty() {
                assert_eq!(request.page, 1);
            }
            // What `Licensing::my_licenses` computes from an accepted request.
            let probe = u64::from(request.page) * u64::from(request.page_size) + 1;
            assert!(
                probe <= u64::from(u32::MAX),
                "the probe for the item after page {} of {} overflows",
                request.page,
                request.page_size
            );
            let next = PageRequest {
                page: request
                    .page
                    .checked_add(1)
                    .expect("the next page number overflows"),
                ..request.clone()
            };
            // Past the last page a token may name, the use case still computes
            // `next` (safely), but its token is refused: 4.29 billion licenses in.
            if next.page <= MAX_PAGE {
                let issued = page_token(&next);
                assert_eq!(
                    page_request(input.page_size, &issued, product_id),
                    Ok(next),
                    "the token the gateway issues for the next page does not round-trip"
                );
            }
        }
        Err(violation) => {
            assert!(
                violation.field == "page_token" || violation.field == "page_size",
                "unexpected field {:?}",
                violation.field
            );
            assert_printable("the description", &violation.description);
        }
    }
});

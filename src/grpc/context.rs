//! Building the per-call [`RequestContext`] from request metadata.

use std::time::Duration;

use tonic::Request;
use tower_http::request_id::{MakeRequestId, MakeRequestUuid, RequestId};

use crate::domain::RequestContext;

/// How long calls may take when the caller does not say (and at most).
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// Applied when the request has no `grpc-timeout`.
    pub default: Duration,
    /// Upper bound, whatever the caller asks for.
    pub max: Duration,
}

/// Our own deadline fires a little before the caller's, so the caller gets
/// our `DEADLINE_EXCEEDED` with details rather than its own bare
/// cancellation: a quarter of the timeout, between these bounds (the answer
/// still has to travel back, and a busy host delays it).
const MIN_DEADLINE_MARGIN: Duration = Duration::from_millis(50);
const MAX_DEADLINE_MARGIN: Duration = Duration::from_millis(250);

/// The longest `x-request-id` we adopt; longer ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// The request id's metadata key.
pub(super) const REQUEST_ID_HEADER: http::HeaderName =
    http::HeaderName::from_static("x-request-id");

/// Returns the call's context: its request id (set by the request-id layer
/// when the caller sent none) and its deadline.
pub(super) fn request_context<T>(request: &Request<T>, deadlines: Deadlines) -> RequestContext {
    let metadata = request.metadata();
    let request_id = metadata
        .get(REQUEST_ID_HEADER.as_str())
        .and_then(|value| value.to_str().ok())
        .filter(|id| is_acceptable_request_id(id))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
    let budget = metadata
        .get("grpc-timeout")
        .and_then(|value| value.to_str().ok())
        .and_then(parse_grpc_timeout)
        .map_or(deadlines.default, |timeout| {
            let margin = (timeout / 4).clamp(MIN_DEADLINE_MARGIN, MAX_DEADLINE_MARGIN);
            timeout.saturating_sub(margin)
        })
        .min(deadlines.max);
    RequestContext::new(request_id, budget)
}

/// Keeps the caller's `x-request-id` only when it is acceptable (and only
/// its first value), and removes it otherwise, so the request-id layer
/// generates one: the id in the response, the logs and the upstream request
/// is then always the same.
pub(super) fn drop_unacceptable_request_id<B>(mut request: http::Request<B>) -> http::Request<B> {
    let headers = request.headers_mut();
    // Most callers send none: one lookup, and nothing to remove.
    let Some(first) = headers.get(REQUEST_ID_HEADER) else {
        return request;
    };
    if first.to_str().is_ok_and(is_acceptable_request_id) {
        let mut id = first.clone();
        id.set_sensitive(true);
        // `insert` replaces every value: a second id is dropped.
        headers.insert(REQUEST_ID_HEADER, id);
    } else {
        headers.remove(REQUEST_ID_HEADER);
    }
    request
}

/// Request ids for calls that bring none: random UUIDs, like
/// [`MakeRequestUuid`]'s, marked never to be indexed by HPACK.
///
/// Every id is new, so an indexed one would only take the place of entries
/// that do repeat (content types, statuses) in both ends' header tables, and
/// the encoder would pay for the insertion and the eviction on every answer
/// (BENCHMARKS.md, instructions). The mark is the "never indexed" literal of
/// RFC 7541 §6.2.3; nothing else reads it (the logs take the id as a string).
/// Adopted caller ids get the same mark in [`drop_unacceptable_request_id`].
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct MakeUnindexedRequestId;

impl MakeRequestId for MakeUnindexedRequestId {
    fn make_request_id<B>(&mut self, request: &http::Request<B>) -> Option<RequestId> {
        let mut id = MakeRequestUuid
            .make_request_id(request)?
            .into_header_value();
        id.set_sensitive(true);
        Some(RequestId::new(id))
    }
}

/// Whether a caller's request id is safe to log and forward as is.
pub(super) fn is_acceptable_request_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_REQUEST_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic())
}

/// Parses the gRPC `grpc-timeout` header: at most 8 digits and a unit.
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("150m"), Some(Duration::from_millis(150)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("10u"), Some(Duration::from_micros(10)));
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(parse_grpc_timeout("123456789S"), None);
        assert_eq!(parse_grpc_timeout("5x"), None);
    }

    #[test]
    fn an_unacceptable_request_id_is_removed_and_an_acceptable_one_kept_alone() {
        let with_ids = |ids: &[&str]| {
            let mut request = http::Request::new(());
            for id in ids {
                request
                    .headers_mut()
                    .append(REQUEST_ID_HEADER, id.parse().expect("a header value"));
            }
            drop_unacceptable_request_id(request)
        };
        let kept = with_ids(&["abc-123", "second"]);
        let kept: Vec<_> = kept.headers().get_all(REQUEST_ID_HEADER).iter().collect();
        assert_eq!(kept, ["abc-123"]);
        assert!(kept[0].is_sensitive(), "an adopted id is never indexed");
        for unacceptable in [&["two words"][..], &["x".repeat(129).as_str()], &[""]] {
            let request = with_ids(unacceptable);
            assert!(request.headers().get(REQUEST_ID_HEADER).is_none());
        }
    }

    #[test]
    fn request_ids_with_spaces_or_excess_length_are_not_adopted() {
        assert!(is_acceptable_request_id("abc-123"));
        assert!(!is_acceptable_request_id("two words"));
        assert!(!is_acceptable_request_id(&"x".repeat(129)));
        assert!(!is_acceptable_request_id(""));
    }
}

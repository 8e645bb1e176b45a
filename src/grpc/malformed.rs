//! Answers requests that are not well-formed gRPC as the caller's mistake:
//! `INVALID_ARGUMENT` with reason `MALFORMED_REQUEST`.
//!
//! tonic, its protobuf codec and tonic-web answer a request they cannot
//! decode with a bare `INTERNAL` (as the gRPC spec suggests for a server
//! that failed to parse). Here that would let any anonymous client trip the
//! alert on internal errors with a few bytes of garbage, and the answer
//! would lack the `ErrorInfo` every other error carries. This layer sits
//! inside the gRPC-Web translation (where every call looks like native gRPC)
//! and rewrites exactly those answers: a trailers-only `INTERNAL` without
//! details whose message is one that the decoders write. Any other
//! `INTERNAL` (a real fault, which the status table answers with details)
//! passes unchanged.

use tonic::{Code, Status};

use super::status::Refusal;

/// The beginnings of the messages with which the decoders refuse a request
/// (tonic 0.14's framing, tonic-prost's protobuf errors, tonic-web's
/// base64 and the base64 crate's errors that tonic-web passes on). A unit
/// test pins them to what the decoders really write.
const DECODE_FAILURE_MESSAGES: &[&str] = &[
    "failed to decode Protobuf message: ",
    "Unexpected EOF decoding stream.",
    "protocol error: received message with invalid compression flag: ",
    "protocol error: received message with compressed-flag but no grpc-encoding was specified",
    "tonic-web: malformed base64 request",
    "tonic-web: Invalid symbol ",
    "tonic-web: Invalid last symbol ",
    "tonic-web: Invalid input length: ",
    "tonic-web: Invalid padding",
];

/// Answers a decoder's refusal as `MALFORMED_REQUEST`, and anything else
/// unchanged (for `tower::util::MapResponseLayer`).
pub(super) fn answer_decode_failures(
    response: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    if is_decode_failure(response.headers()) {
        return Status::from(Refusal::MalformedRequest).into_http();
    }
    response
}

/// Whether `headers` are a trailers-only answer with which a decoder
/// refused the request.
fn is_decode_failure(headers: &http::HeaderMap) -> bool {
    let Some(status) = Status::from_header_map(headers) else {
        return false;
    };
    status.code() == Code::Internal
        && status.details().is_empty()
        && DECODE_FAILURE_MESSAGES
            .iter()
            .any(|prefix| status.message().starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use tonic::codec::{Codec as _, Streaming};

    use super::*;

    fn answer_headers(status: Status) -> http::HeaderMap {
        status.into_http::<tonic::body::Body>().headers().clone()
    }

    /// What tonic's own request decoder answers for `body`, so a dependency
    /// update that changes the wording fails here rather than in production.
    async fn decoder_answer(body: &'static [u8]) -> Status {
        let mut codec = tonic_prost::ProstCodec::<(), prost_types::Timestamp>::default();
        let body = http_body_util::Full::new(prost::bytes::Bytes::from_static(body));
        let mut messages = Streaming::new_request(codec.decoder(), body, None, None);
        messages
            .message()
            .await
            .expect_err("the request does not decode")
    }

    #[tokio::test]
    async fn a_protobuf_that_does_not_decode_is_recognised_from_the_decoders_own_message() {
        // One frame of five bytes that are no Timestamp (a bad varint).
        let status = decoder_answer(&[0, 0, 0, 0, 5, 0x08, 0xff, 0xff, 0xff, 0xff]).await;
        assert!(is_decode_failure(&answer_headers(status)));
    }

    #[tokio::test]
    async fn broken_framing_is_recognised_from_the_decoders_own_message() {
        let truncated = decoder_answer(&[0, 0, 0, 0, 9, 0x08]).await;
        assert!(is_decode_failure(&answer_headers(truncated)));
        let bad_flag = decoder_answer(&[7, 0, 0, 0, 0]).await;
        assert!(is_decode_failure(&answer_headers(bad_flag)));
        let compressed = decoder_answer(&[1, 0, 0, 0, 0]).await;
        assert!(is_decode_failure(&answer_headers(compressed)));
    }

    #[test]
    fn grpc_web_failures_are_recognised() {
        for message in [
            "tonic-web: malformed base64 request",
            "tonic-web: Invalid symbol 33, offset 0.",
        ] {
            assert!(
                is_decode_failure(&answer_headers(Status::internal(message))),
                "{message}"
            );
        }
    }

    #[test]
    fn other_internal_errors_and_other_codes_pass_unchanged() {
        assert!(!is_decode_failure(&answer_headers(Status::internal(
            "internal error"
        ))));
        assert!(!is_decode_failure(&answer_headers(Status::unknown(
            "failed to decode Protobuf message: invalid varint"
        ))));
        let with_details = Status::with_details(
            Code::Internal,
            "failed to decode Protobuf message: invalid varint",
            vec![1_u8, 2, 3].into(),
        );
        assert!(!is_decode_failure(&answer_headers(with_details)));
        assert!(!is_decode_failure(&http::HeaderMap::new()));
    }
}

//! A gRPC status as a Connect error: the HTTP status the protocol prescribes
//! for its code, and a JSON body with the code's name, the message and the
//! same `google.rpc` details gRPC callers get (`ErrorInfo`, `BadRequest`,
//! `RetryInfo`), each as `{"type", "value", "debug"}`.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use prost::Message as _;
use serde::Serialize;
use tonic::Code;

use super::schema::Schema;

/// Connect's name for `code` (note `canceled`, with one L).
pub(super) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "canceled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// The HTTP status of a Connect error with `code` (the protocol's table).
pub(super) fn http_status(code: Code) -> http::StatusCode {
    use http::StatusCode as S;
    match code {
        Code::Ok => S::OK,
        // 499, "Client Closed Request", as the protocol prescribes.
        Code::Cancelled => S::from_u16(499).unwrap_or(S::REQUEST_TIMEOUT),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => S::BAD_REQUEST,
        Code::DeadlineExceeded => S::GATEWAY_TIMEOUT,
        Code::NotFound => S::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => S::CONFLICT,
        Code::PermissionDenied => S::FORBIDDEN,
        Code::ResourceExhausted => S::TOO_MANY_REQUESTS,
        Code::Unimplemented => S::NOT_IMPLEMENTED,
        Code::Unavailable => S::SERVICE_UNAVAILABLE,
        Code::Unauthenticated => S::UNAUTHORIZED,
        Code::Unknown | Code::Internal | Code::DataLoss => S::INTERNAL_SERVER_ERROR,
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'static str,
    #[serde(skip_serializing_if = "str::is_empty")]
    message: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    details: Vec<Detail>,
}

#[derive(Serialize)]
struct Detail {
    /// The detail's full message name, e.g. `google.rpc.ErrorInfo`.
    #[serde(rename = "type")]
    type_name: String,
    /// Its protobuf, base64 without padding.
    value: String,
    /// The same in the JSON mapping, for people reading the answer (clients
    /// decode `value`).
    #[serde(skip_serializing_if = "Option::is_none")]
    debug: Option<serde_json::Value>,
}

/// The parts of a Connect error answer for `status`: HTTP status, headers
/// (content type, and `Retry-After` when the status carries a `RetryInfo`)
/// and the JSON body.
pub(super) fn render(
    status: &tonic::Status,
    schema: &Schema,
) -> (http::StatusCode, http::HeaderMap, Vec<u8>) {
    let mut retry_after = None;
    let details = decode_details(status.details())
        .into_iter()
        .map(|any| {
            let type_name = any
                .type_url
                .rsplit_once('/')
                .map_or(any.type_url.as_str(), |(_, name)| name)
                .to_owned();
            if type_name == "google.rpc.RetryInfo" {
                retry_after = retry_after_seconds(&any.value);
            }
            Detail {
                debug: schema.detail_json(&type_name, &any.value),
                value: STANDARD_NO_PAD.encode(&any.value),
                type_name,
            }
        })
        .collect();
    let body = ErrorBody {
        code: code_name(status.code()),
        message: status.message(),
        details,
    };
    // Serialising plain strings and JSON values cannot fail.
    let json = serde_json::to_vec(&body).unwrap_or_else(|_| b"{\"code\":\"internal\"}".to_vec());
    let mut headers = http::HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(seconds) = retry_after {
        headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
    }
    (http_status(status.code()), headers, json)
}

/// The `Any`s of an encoded `google.rpc.Status` (empty for none or garbage).
fn decode_details(bytes: &[u8]) -> Vec<prost_types::Any> {
    if bytes.is_empty() {
        return Vec::new();
    }
    tonic_types::pb::Status::decode(bytes)
        .map(|status| status.details)
        .unwrap_or_default()
}

/// A `RetryInfo`'s delay in whole seconds, rounded up (HTTP's
/// `Retry-After` has no fractions), at least 1.
fn retry_after_seconds(value: &[u8]) -> Option<u64> {
    let info = tonic_types::pb::RetryInfo::decode(value).ok()?;
    let delay = info.retry_delay?;
    let delay = Duration::try_from(delay).ok()?;
    Some(delay.as_secs_f64().ceil().max(1.0) as u64)
}

#[cfg(test)]
mod tests {
    use tonic_types::{ErrorDetails, StatusExt as _};

    use super::*;

    #[test]
    fn every_code_has_the_protocols_name_and_http_status() {
        let table = [
            (Code::Cancelled, "canceled", 499),
            (Code::Unknown, "unknown", 500),
            (Code::InvalidArgument, "invalid_argument", 400),
            (Code::DeadlineExceeded, "deadline_exceeded", 504),
            (Code::NotFound, "not_found", 404),
            (Code::AlreadyExists, "already_exists", 409),
            (Code::PermissionDenied, "permission_denied", 403),
            (Code::ResourceExhausted, "resource_exhausted", 429),
            (Code::FailedPrecondition, "failed_precondition", 400),
            (Code::Aborted, "aborted", 409),
            (Code::OutOfRange, "out_of_range", 400),
            (Code::Unimplemented, "unimplemented", 501),
            (Code::Internal, "internal", 500),
            (Code::Unavailable, "unavailable", 503),
            (Code::DataLoss, "data_loss", 500),
            (Code::Unauthenticated, "unauthenticated", 401),
        ];
        for (code, name, status) in table {
            assert_eq!(code_name(code), name);
            assert_eq!(http_status(code).as_u16(), status, "{name}");
        }
    }

    #[test]
    fn details_travel_as_type_value_and_debug() {
        let schema = Schema::new(&[]).unwrap();
        let mut details = ErrorDetails::new();
        details.set_error_info(
            "TOO_MANY_REQUESTS",
            "licensing-gateway",
            std::collections::HashMap::new(),
        );
        details.set_retry_info(Some(Duration::from_millis(1_500)));
        details.add_bad_request_violation("email", "must be an email address");
        let status =
            tonic::Status::with_error_details(Code::ResourceExhausted, "slow down", details);
        let (http, headers, body) = render(&status, &schema);
        assert_eq!(http.as_u16(), 429);
        assert_eq!(headers[RETRY_AFTER], "2");
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["code"], "resource_exhausted");
        assert_eq!(body["message"], "slow down");
        let details = body["details"].as_array().unwrap();
        let types: Vec<_> = details
            .iter()
            .map(|d| d["type"].as_str().unwrap())
            .collect();
        assert!(types.contains(&"google.rpc.ErrorInfo"), "{types:?}");
        assert!(types.contains(&"google.rpc.RetryInfo"), "{types:?}");
        assert!(types.contains(&"google.rpc.BadRequest"), "{types:?}");
        let info = details
            .iter()
            .find(|d| d["type"] == "google.rpc.ErrorInfo")
            .unwrap();
        assert_eq!(info["debug"]["reason"], "TOO_MANY_REQUESTS");
        let value = STANDARD_NO_PAD
            .decode(info["value"].as_str().unwrap())
            .unwrap();
        let decoded = tonic_types::pb::ErrorInfo::decode(value.as_slice()).unwrap();
        assert_eq!(decoded.domain, "licensing-gateway");

        // The same status, read back by a gRPC client, has the same details.
        assert!(status.get_error_details().error_info().is_some());
    }

    #[test]
    fn a_status_without_details_has_no_details_entry() {
        let schema = Schema::new(&[]).unwrap();
        let (http, headers, body) = render(&tonic::Status::not_found(""), &schema);
        assert_eq!(http.as_u16(), 404);
        assert!(headers.get(RETRY_AFTER).is_none());
        assert_eq!(body, br#"{"code":"not_found"}"#);
    }
}

//! gRPC-Web in JSON mode (`application/grpc-web+json`, as connect-es's
//! gRPC-Web transport sends with `useBinaryFormat: false`). tonic-web speaks
//! only the binary mode, so the request's JSON frames become protobuf frames
//! of the same gRPC-Web call, which then goes through tonic-web and the
//! service like any other (limits, metrics, status table unchanged); the
//! answer's data frames become JSON again and its trailer frame is kept as
//! it is. Unary calls only, uncompressed frames only.

use std::sync::Arc;

use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http_body_util::{BodyExt as _, Full, Limited};
use prost::bytes::{BufMut as _, Bytes, BytesMut};
use tokio::time::Instant;

use super::schema::{Method, Schema};
use super::{Body, BoxError, MAX_ANSWER_BYTES, Shared, read_body};
use crate::grpc::status::Refusal;

const JSON: &str = "application/grpc-web+json";
const PROTO: &str = "application/grpc-web+proto";
/// A frame's flag bits: the trailer frame, and a compressed message.
const TRAILERS: u8 = 0x80;
const COMPRESSED: u8 = 0x01;

/// Serves one gRPC-Web JSON call through `inner` (tonic-web and the services).
pub(super) async fn serve<S, ResBody>(
    shared: Arc<Shared>,
    mut inner: S,
    request: http::Request<Body>,
) -> Result<http::Response<Body>, S::Error>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<ResBody>>,
    ResBody: http_body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let started = Instant::now();
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let refuse = |status: tonic::Status| {
        super::super::rpc_metrics::record_unserved(shared.listener, &path, status.code(), started);
        trailers_only(status)
    };
    let Some(method) = shared.schema.method(&path).cloned() else {
        return Ok(refuse(tonic::Status::unimplemented(format!(
            "this listener has no method {path}"
        ))));
    };
    if !method.unary {
        return Ok(refuse(tonic::Status::unimplemented(format!(
            "{path} streams; call it with binary gRPC-Web ({PROTO}) or gRPC"
        ))));
    }
    let body = match read_body(&shared, &parts.headers, body).await {
        Ok(body) => body,
        Err(refused) => return Ok(refuse(refused.status)),
    };
    let proto = match reframe(&body, false, |json| {
        Schema::json_to_proto(&method.input, json)
            .map(Bytes::from)
            .map_err(|refusal| Refusal::MalformedRequest.with_message(refusal.description))
    }) {
        Ok(proto) => proto,
        Err(status) => return Ok(refuse(status)),
    };
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static(PROTO));
    parts.headers.remove(CONTENT_LENGTH);
    // The answer's frames are rewritten, so they must come uncompressed.
    parts.headers.remove("grpc-accept-encoding");
    let response = inner
        .call(http::Request::from_parts(
            parts,
            Body::new(Full::new(proto)),
        ))
        .await?;
    Ok(answer(response, &method).await)
}

/// The answer with its data frames in JSON.
async fn answer<B>(response: http::Response<B>, method: &Method) -> http::Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (mut parts, body) = response.into_parts();
    let binary = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/grpc-web"));
    if !binary {
        // Not a gRPC-Web answer (tonic-web refused the call at the HTTP level).
        return http::Response::from_parts(parts, Body::new(body.map_err(Into::into)));
    }
    let data = match Limited::new(body, MAX_ANSWER_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            tracing::warn!(%error, "a gRPC-Web answer could not be read for JSON");
            return trailers_only(tonic::Status::internal("the answer could not be read"));
        }
    };
    let json = match reframe(&data, true, |proto| {
        Schema::proto_to_json(&method.output, proto)
            .map(Bytes::from)
            .map_err(|error| {
                tracing::warn!(%error, "a gRPC-Web answer could not be written as JSON");
                tonic::Status::internal("the answer could not be written as JSON")
            })
    }) {
        Ok(json) => json,
        Err(status) => return trailers_only(status),
    };
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
    parts.headers.remove(CONTENT_LENGTH);
    http::Response::from_parts(parts, Body::new(Full::new(json)))
}

/// `body`'s gRPC-Web frames with each message converted by `convert`; a
/// trailer frame is kept as it is where `trailers_allowed`, refused
/// otherwise, as is a compressed or cut-off frame.
fn reframe(
    body: &[u8],
    trailers_allowed: bool,
    mut convert: impl FnMut(&[u8]) -> Result<Bytes, tonic::Status>,
) -> Result<Bytes, tonic::Status> {
    let malformed =
        |what: &str| Refusal::MalformedRequest.with_message(format!("the gRPC-Web body {what}"));
    let mut out = BytesMut::with_capacity(body.len() + 16);
    let mut rest = body;
    while !rest.is_empty() {
        let Some(header) = rest.get(..5) else {
            return Err(malformed("ends inside a frame header"));
        };
        let flags = header[0];
        let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let Some(payload) = rest.get(5..5 + length) else {
            return Err(malformed("ends inside a frame"));
        };
        rest = &rest[5 + length..];
        if flags & TRAILERS != 0 && trailers_allowed {
            out.put_slice(header);
            out.put_slice(payload);
            continue;
        }
        if flags != 0 {
            return Err(if flags & COMPRESSED != 0 {
                Refusal::UnsupportedEncoding.with_message(
                    "compressed gRPC-Web JSON frames are not accepted; send them uncompressed",
                )
            } else {
                malformed("has a frame with unknown flags")
            });
        }
        let message = convert(payload)?;
        out.put_u8(0);
        out.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
        out.put_slice(&message);
    }
    Ok(out.freeze())
}

/// A gRPC-Web answer with no message: the status in the headers.
fn trailers_only(status: tonic::Status) -> http::Response<Body> {
    let mut response = status.into_http::<Body>();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![flags];
        out.extend(u32::try_from(payload.len()).unwrap().to_be_bytes());
        out.extend(payload);
        out
    }

    #[test]
    fn frames_are_converted_one_by_one_and_trailers_kept_where_allowed() {
        let mut body = frame(0, b"ab");
        body.extend(frame(TRAILERS, b"grpc-status:0\r\n"));
        let out = reframe(&body, true, |payload| Ok(Bytes::from(payload.repeat(2)))).unwrap();
        let mut expected = frame(0, b"abab");
        expected.extend(frame(TRAILERS, b"grpc-status:0\r\n"));
        assert_eq!(&out[..], &expected[..]);
        assert!(reframe(&body, false, |p| Ok(Bytes::copy_from_slice(p))).is_err());
    }

    #[test]
    fn cut_off_compressed_and_unknown_frames_are_refused() {
        let convert = |p: &[u8]| Ok(Bytes::copy_from_slice(p));
        assert!(reframe(&[0, 0, 0], false, convert).is_err());
        assert!(reframe(&[0, 0, 0, 0, 9, 1], false, convert).is_err());
        let compressed = reframe(&frame(COMPRESSED, b"x"), false, convert).unwrap_err();
        assert_eq!(compressed.code(), tonic::Code::Unimplemented);
        assert!(reframe(&frame(0x40, b"x"), false, convert).is_err());
        assert_eq!(&reframe(&[], false, convert).unwrap()[..], b"");
    }
}

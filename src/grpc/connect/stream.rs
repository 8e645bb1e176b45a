//! Connect's streaming calls, binary only, for the listener's streaming
//! methods: server reflection (which `buf curl` asks over Connect before
//! calling anything) and health's `Watch`.
//!
//! Connect's envelopes are gRPC's length-prefixed frames (flag byte, four
//! bytes of length), so the request body passes through unchanged as a gRPC
//! request body, and the answer's frames pass through as they come. Only
//! the end differs: gRPC's trailers become Connect's end-of-stream envelope
//! (flag `0x02`) holding the status as JSON, `{"error": ..., "metadata":
//! ...}`. Compressed envelopes are refused (identity only): the only
//! streaming callers are tools asking for a few KiB of descriptors.

use std::pin::Pin;
use std::task::{Context, Poll};

use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http_body::{Body as HttpBody, Frame, SizeHint};
use prost::bytes::{BufMut as _, Bytes, BytesMut};
use tonic::Code;

use super::schema::Schema;
use super::{
    BoxError, PROTOCOL_VERSION, Shared, check_protocol_version, connect_timeout, error,
    grpc_headers,
};
use crate::grpc::status::Refusal;

const CONTENT_ENCODING: HeaderName = HeaderName::from_static("connect-content-encoding");
const ACCEPT_ENCODING: HeaderName = HeaderName::from_static("connect-accept-encoding");
/// The end-of-stream envelope's flag.
const END_STREAM: u8 = 0x02;

/// The gRPC request for a Connect streaming request, or the status that
/// refuses it.
pub(super) fn grpc_request(
    request: http::Request<super::Body>,
) -> Result<http::Request<super::Body>, tonic::Status> {
    let (mut parts, body) = request.into_parts();
    let identity = parts
        .headers
        .get(CONTENT_ENCODING)
        .is_none_or(|encoding| encoding.as_bytes().eq_ignore_ascii_case(b"identity"));
    if !identity {
        return Err(Refusal::UnsupportedEncoding
            .with_message("streaming calls take uncompressed messages (identity)"));
    }
    check_protocol_version(parts.headers.get(PROTOCOL_VERSION), "1")
        .map_err(|refused| refused.status)?;
    let timeout = connect_timeout(&parts.headers).map_err(|refused| refused.status)?;
    grpc_headers(
        &mut parts.headers,
        &[CONTENT_ENCODING, ACCEPT_ENCODING],
        timeout,
    );
    parts.version = http::Version::HTTP_2;
    Ok(http::Request::from_parts(parts, body))
}

/// The Connect streaming answer for a gRPC answer (or for a refusal, when
/// `response` is `Err`): HTTP 200, its frames, then the end-of-stream
/// envelope.
pub(super) fn answer<B>(
    shared: std::sync::Arc<Shared>,
    response: Result<http::Response<B>, tonic::Status>,
) -> http::Response<super::Body>
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (headers, body, status) = match response {
        Ok(response) => {
            let (parts, body) = response.into_parts();
            // A trailers-only answer has its status in the headers.
            let status = tonic::Status::from_header_map(&parts.headers);
            let headers = super::metadata_headers(&parts.headers, None);
            (headers, Some(body), status)
        }
        Err(status) => (http::HeaderMap::new(), None, Some(status)),
    };
    let mut response = http::Response::new(super::Body::new(StreamBody {
        inner: body.map(Box::pin),
        status,
        shared,
        finished: false,
    }));
    *response.headers_mut() = headers;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/connect+proto"),
    );
    response
}

/// A gRPC answer body as a Connect stream.
struct StreamBody<B> {
    inner: Option<Pin<Box<B>>>,
    /// The status from a trailers-only answer or a refusal.
    status: Option<tonic::Status>,
    shared: std::sync::Arc<Shared>,
    finished: bool,
}

impl<B> StreamBody<B> {
    /// The end-of-stream envelope for `status` and the answer's `trailers`.
    fn end_of_stream(&self, status: &tonic::Status, trailers: &http::HeaderMap) -> Bytes {
        let mut json = serde_json::Map::new();
        if status.code() != Code::Ok {
            json.insert("error".into(), error_json(status, &self.shared.schema));
        }
        let metadata = super::metadata_headers(trailers, None);
        if !metadata.is_empty() {
            let mut entries = serde_json::Map::new();
            for name in metadata.keys() {
                let values = metadata
                    .get_all(name)
                    .iter()
                    .filter_map(|value| value.to_str().ok())
                    .map(|value| serde_json::Value::String(value.to_owned()))
                    .collect();
                entries.insert(name.as_str().to_owned(), serde_json::Value::Array(values));
            }
            json.insert("metadata".into(), serde_json::Value::Object(entries));
        }
        let payload = serde_json::to_vec(&json).unwrap_or_else(|_| b"{}".to_vec());
        let mut envelope = BytesMut::with_capacity(5 + payload.len());
        envelope.put_u8(END_STREAM);
        envelope.put_u32(u32::try_from(payload.len()).unwrap_or(u32::MAX));
        envelope.put_slice(&payload);
        envelope.freeze()
    }
}

fn error_json(status: &tonic::Status, schema: &Schema) -> serde_json::Value {
    let (_, _, body) = error::render(status, schema);
    serde_json::from_slice(&body).unwrap_or_default()
}

impl<B> HttpBody for StreamBody<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.finished {
            return Poll::Ready(None);
        }
        if self.status.is_none()
            && let Some(inner) = self.inner.as_mut()
        {
            match inner.as_mut().poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(error))) => {
                    self.finished = true;
                    return Poll::Ready(Some(Err(error.into())));
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_trailers() {
                    Ok(trailers) => {
                        let status =
                            tonic::Status::from_header_map(&trailers).unwrap_or_else(|| {
                                tonic::Status::unknown("the call ended without a status")
                            });
                        self.finished = true;
                        let envelope = self.end_of_stream(&status, &trailers);
                        return Poll::Ready(Some(Ok(Frame::data(envelope))));
                    }
                    Err(frame) => match frame.into_data() {
                        Ok(data) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                        // Neither data nor trailers: nothing to pass on.
                        Err(_) => {
                            cx.waker().wake_by_ref();
                            return Poll::Pending;
                        }
                    },
                },
                Poll::Ready(None) => {}
            }
        }
        // A trailers-only answer, a refusal, or a body that ended without
        // trailers.
        let status = self
            .status
            .take()
            .unwrap_or_else(|| tonic::Status::unknown("the call ended without a status"));
        self.finished = true;
        let envelope = self.end_of_stream(&status, &http::HeaderMap::new());
        Poll::Ready(Some(Ok(Frame::data(envelope))))
    }

    fn is_end_stream(&self) -> bool {
        self.finished
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

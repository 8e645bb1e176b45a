//! What the sandbox received: the request log and the counters, as [`Controls`] reports them.
//!
//! [`Controls`]: crate::controls::Controls

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use http::StatusCode;
use serde::Serialize;

use crate::faults::FaultKind;

/// How a recorded request authenticated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum AuthKind {
    /// No `Authorization` header.
    None,
    /// A valid personal access token.
    Pat,
    /// A valid user access token.
    User { user_id: String, email: String },
    /// A header that is not a currently valid token: unknown, expired, revoked or malformed.
    Invalid,
}

/// One request the sandbox received (control requests excluded).
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceivedRequest {
    /// Arrival order, counting from 1 over the sandbox's life (not reset by clearing).
    pub sequence: u64,
    pub received_at: DateTime<Utc>,
    pub method: String,
    pub path: String,
    /// The raw query string, without the `?`.
    pub query: Option<String>,
    /// The `x-request-id` header.
    pub request_id: Option<String>,
    pub auth: AuthKind,
    /// The raw bearer token (or the whole `Authorization` value if it is not `Bearer ...`).
    /// Test infrastructure only: `Debug` redacts it, and it must never be logged.
    pub bearer_token: Option<String>,
    /// The status the sandbox produced; `None` while in flight or when a reset fault struck
    /// before the handler ran. After `ResetAfterProcessing` it is the status the client never saw.
    pub status: Option<u16>,
    /// The fault applied to this request, if any.
    pub fault: Option<FaultKind>,
    /// The request body as received (empty when there was none). Test infrastructure only: it
    /// holds passwords and tokens, so `Debug` shows only its length and it must never be logged.
    #[serde(serialize_with = "as_text")]
    pub body: Vec<u8>,
    /// The body of the response the sandbox produced (the handler's, or a canned one when
    /// `fault` is `Respond`); empty while in flight or when a reset struck before the handler.
    /// Redacted like `body`: login answers carry tokens.
    #[serde(serialize_with = "as_text")]
    pub response_body: Vec<u8>,
}

/// Bodies go over the control API as text (JSON bodies are UTF-8; anything else is shown lossily).
fn as_text<S: serde::Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&String::from_utf8_lossy(bytes))
}

impl std::fmt::Debug for ReceivedRequest {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ReceivedRequest")
            .field("sequence", &self.sequence)
            .field("received_at", &self.received_at)
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("request_id", &self.request_id)
            .field("auth", &self.auth)
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .field("status", &self.status)
            .field("fault", &self.fault)
            .field("body", &format_args!("<{} bytes>", self.body.len()))
            .field(
                "response_body",
                &format_args!("<{} bytes>", self.response_body.len()),
            )
            .finish()
    }
}

/// Counters over the sandbox's life (control requests excluded).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// TCP connections accepted, control connections included: a client that reuses its
    /// connections keeps this small however many requests it sends.
    pub connections_accepted: u64,
    pub requests: u64,
    /// Every 429 sent, whether by the rate limiter or by a `Respond` fault.
    pub responses_429: u64,
    /// 429s sent by the rate limiter alone.
    pub rate_limited: u64,
    pub faults_applied: u64,
    pub connections_reset: u64,
    pub logins: u64,
    pub licenses_created: u64,
    pub users_created: u64,
}

/// The most body bytes (request and response together) the log keeps; past this the oldest
/// requests are forgotten, as past the request count. A long demo paging through licenses
/// would otherwise hold every page it was ever sent.
const MAX_RECORDED_BODY_BYTES: usize = 32 * 1024 * 1024;

/// The request log and the counters.
#[derive(Debug)]
pub(crate) struct Journal {
    pub(crate) requests: VecDeque<ReceivedRequest>,
    capacity: usize,
    /// Body bytes held by `requests`, kept under [`MAX_RECORDED_BODY_BYTES`].
    body_bytes: usize,
    next_sequence: u64,
    pub(crate) stats: Stats,
}

impl Journal {
    /// Creates an empty journal that remembers at most `capacity` requests (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        Journal {
            requests: VecDeque::new(),
            capacity: capacity.max(1),
            body_bytes: 0,
            next_sequence: 0,
            stats: Stats::default(),
        }
    }

    /// Records an arriving request and returns its sequence number.
    pub(crate) fn record(&mut self, mut request: ReceivedRequest) -> u64 {
        self.next_sequence += 1;
        request.sequence = self.next_sequence;
        self.stats.requests += 1;
        self.body_bytes += request.body.len();
        self.requests.push_back(request);
        self.forget_oldest();
        self.next_sequence
    }

    /// Records the body of the response to request `sequence`.
    pub(crate) fn respond(&mut self, sequence: u64, body: &[u8]) {
        let Some(entry) = self
            .requests
            .iter_mut()
            .rev()
            .find(|entry| entry.sequence == sequence)
        else {
            return;
        };
        let replaced = std::mem::replace(&mut entry.response_body, body.to_vec());
        self.body_bytes = self.body_bytes - replaced.len() + body.len();
        self.forget_oldest();
    }

    /// Forgets the oldest requests while over either bound, always keeping the newest one.
    fn forget_oldest(&mut self) {
        while self.requests.len() > 1
            && (self.requests.len() > self.capacity || self.body_bytes > MAX_RECORDED_BODY_BYTES)
        {
            if let Some(oldest) = self.requests.pop_front() {
                self.body_bytes -= oldest.body.len() + oldest.response_body.len();
            }
        }
    }

    /// Forgets every recorded request.
    pub(crate) fn clear(&mut self) {
        self.requests.clear();
        self.body_bytes = 0;
    }

    /// Completes a recorded request with its outcome and updates the counters.
    pub(crate) fn finish(
        &mut self,
        sequence: u64,
        status: Option<StatusCode>,
        fault: Option<FaultKind>,
        rate_limited: bool,
    ) {
        // A response lost to a reset was never sent, so it does not count as a 429 sent.
        let delivered = fault != Some(FaultKind::ResetAfterProcessing);
        if delivered && status == Some(StatusCode::TOO_MANY_REQUESTS) {
            self.stats.responses_429 += 1;
        }
        if rate_limited {
            self.stats.rate_limited += 1;
        }
        if fault.is_some() {
            self.stats.faults_applied += 1;
        }
        if let Some(entry) = self
            .requests
            .iter_mut()
            .rev()
            .find(|entry| entry.sequence == sequence)
        {
            entry.status = status.map(|status| status.as_u16());
            entry.fault = fault;
        }
    }
}

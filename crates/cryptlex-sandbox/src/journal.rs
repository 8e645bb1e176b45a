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

/// The request log and the counters.
#[derive(Debug)]
pub(crate) struct Journal {
    pub(crate) requests: VecDeque<ReceivedRequest>,
    capacity: usize,
    next_sequence: u64,
    pub(crate) stats: Stats,
}

impl Journal {
    /// Creates an empty journal that remembers at most `capacity` requests (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        Journal {
            requests: VecDeque::new(),
            capacity: capacity.max(1),
            next_sequence: 0,
            stats: Stats::default(),
        }
    }

    /// Records an arriving request and returns its sequence number.
    pub(crate) fn record(&mut self, mut request: ReceivedRequest) -> u64 {
        self.next_sequence += 1;
        request.sequence = self.next_sequence;
        self.stats.requests += 1;
        if self.requests.len() >= self.capacity {
            self.requests.pop_front();
        }
        self.requests.push_back(request);
        self.next_sequence
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

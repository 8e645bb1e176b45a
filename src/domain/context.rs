//! Per-call context that travels from the transport edge to the upstream
//! client: the correlation id and the caller's deadline.

use std::time::Duration;

use tokio::time::Instant;

/// What every upstream call needs to know about the RPC it serves.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The `x-request-id` of the RPC, forwarded to Cryptlex so one id follows
    /// a call through both services' logs.
    pub request_id: String,
    /// When the caller stops waiting. All upstream work is bounded by it.
    pub deadline: Instant,
}

impl RequestContext {
    /// Creates a context for a call that must finish within `budget`.
    pub fn new(request_id: impl Into<String>, budget: Duration) -> Self {
        Self {
            request_id: request_id.into(),
            deadline: Instant::now() + budget,
        }
    }

    /// Time left before the deadline (zero once it has passed).
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

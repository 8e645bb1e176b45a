//! Per-call context that travels from the transport edge to the upstream
//! client: the correlation id, the caller's deadline and where the call came
//! from.

use std::net::IpAddr;
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
    /// The caller's address (behind a proxy, as the trusted proxy reported
    /// it), for per-address limits.
    pub client_address: ClientAddress,
    /// Whose read this is, so the upstream budget can share reads fairly
    /// between sessions; `None` for calls that are not user reads.
    pub read_share: Option<ReadShare>,
}

/// Who an upstream read is for, as the budget sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadShare {
    /// A digest of the caller's token (never the token): one session's reads
    /// are counted together.
    pub session: u64,
    /// Whether the token is known to work: this gateway issued it (login,
    /// refresh, sign-up) or Cryptlex has answered it before. Unvouched
    /// tokens (anyone can make one up) share a smaller part of the budget.
    pub vouched: bool,
    /// A background refresh nobody waits for: it spends only budget nobody
    /// else needs and never waits.
    pub background: bool,
}

/// Where a call comes from, as far as the gateway can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAddress {
    Ip(IpAddr),
    /// Behind a proxy that sent no usable address (or for calls that did not
    /// come over the network): all such callers share one allowance.
    Unknown,
}

impl RequestContext {
    /// Creates a context for a call that must finish within `budget`.
    pub fn new(request_id: impl Into<String>, budget: Duration) -> Self {
        Self {
            request_id: request_id.into(),
            deadline: Instant::now() + budget,
            client_address: ClientAddress::Unknown,
            read_share: None,
        }
    }

    /// The same context, for a read made for `share`.
    pub fn with_read_share(self, share: ReadShare) -> Self {
        Self {
            read_share: Some(share),
            ..self
        }
    }

    /// The same context, for a call that came from `address`.
    pub fn from_address(self, address: ClientAddress) -> Self {
        Self {
            client_address: address,
            ..self
        }
    }

    /// Time left before the deadline (zero once it has passed).
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

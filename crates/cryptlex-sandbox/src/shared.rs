//! The state the server and every [`Controls`] handle share, and the lock helper for it.
//!
//! [`Controls`]: crate::controls::Controls

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use http::StatusCode;

use crate::faults::{FaultKind, FaultTable};
use crate::journal::{Journal, ReceivedRequest};
use crate::rate_limit::{RateLimit, RateLimiter};
use crate::state::Domain;
use crate::tokens::TokenTable;
use crate::webhooks::{JobQueue, Webhooks};

/// Paths under this prefix are the test controls: never rate-limited, faulted or recorded.
pub(crate) const CONTROL_PREFIX: &str = "/__sandbox/";

/// State shared by the server and every [`Controls`](crate::controls::Controls) handle.
///
/// Each part has its own std `Mutex` because no critical section awaits and each is short.
/// Code never holds two of them at once, with one exception: `webhooks` is a leaf (code
/// holding it takes no other lock), so a route may fire an event while it still holds
/// `domain`, which keeps one record's events in the order its changes happened.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) domain: Mutex<Domain>,
    pub(crate) tokens: Mutex<TokenTable>,
    pub(crate) journal: Mutex<Journal>,
    pub(crate) faults: Mutex<FaultTable>,
    pub(crate) limiter: Mutex<RateLimiter>,
    pub(crate) webhooks: Webhooks,
}

impl Shared {
    /// Creates the state for a fresh start, from the fields of
    /// [`SandboxOptions`](crate::SandboxOptions) of the same names; also returns the webhook
    /// delivery queue, for the delivery task.
    pub(crate) fn new(
        rate_limit: Option<RateLimit>,
        access_token_ttl: Duration,
        refresh_token_ttl: Duration,
        max_recorded_requests: usize,
        webhook_queue_capacity: usize,
    ) -> (Self, JobQueue) {
        let ttl = |duration: Duration| TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX);
        let (webhooks, queue) = Webhooks::new(webhook_queue_capacity);
        let shared = Shared {
            domain: Mutex::new(Domain::seeded(Utc::now())),
            tokens: Mutex::new(TokenTable::new(
                ttl(access_token_ttl),
                ttl(refresh_token_ttl),
            )),
            journal: Mutex::new(Journal::new(max_recorded_requests)),
            faults: Mutex::new(FaultTable::default()),
            limiter: Mutex::new(RateLimiter::new(rate_limit)),
            webhooks,
        };
        (shared, queue)
    }

    /// Locks the journal for [`Journal::record`]: returns the request's sequence number.
    pub(crate) fn record(&self, request: ReceivedRequest) -> u64 {
        lock(&self.journal).record(request)
    }

    /// Locks the journal for [`Journal::finish`].
    pub(crate) fn finish(
        &self,
        sequence: u64,
        status: Option<StatusCode>,
        fault: Option<FaultKind>,
        rate_limited: bool,
    ) {
        lock(&self.journal).finish(sequence, status, fault, rate_limited);
    }
}

/// Locks a mutex, shrugging off poisoning: every critical section leaves the data consistent
/// at each step, so a panic elsewhere (a failing test thread) must not wedge the sandbox.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

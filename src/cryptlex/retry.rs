//! Which Cryptlex calls may be sent again after a failure, how long to wait,
//! and the budget that keeps retries from multiplying load on a struggling
//! Cryptlex.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use super::CryptlexError;

/// Whether a call may be sent again after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Retry {
    /// Creates: never. An unknown outcome is reconciled by the ledger.
    Never,
    /// Only when Cryptlex certainly did not act on it: no connection was
    /// made, or it answered 429. For calls with side effects such as token
    /// rotation (refresh) and logout.
    IfNotProcessed,
    /// Reads and login: also after 502/503/504 and broken connections.
    Safe,
}

impl Retry {
    /// How long to wait before retry number `retries + 1` after `error`, or
    /// `None` when the call must not be sent again.
    pub(super) fn delay(
        self,
        error: &CryptlexError,
        retries: u32,
        max_retries: u32,
    ) -> Option<Duration> {
        if retries >= max_retries {
            return None;
        }
        let retryable = match (self, error) {
            (Self::Never, _) => false,
            (_, CryptlexError::Connect(_) | CryptlexError::RateLimited { .. }) => true,
            (Self::Safe, CryptlexError::Transport(_)) => true,
            (Self::Safe, CryptlexError::ServerError { status, .. }) => matches!(status, 502..=504),
            _ => false,
        };
        if !retryable {
            return None;
        }
        // Exponential backoff with full jitter: 100 ms, 200 ms, 400 ms caps.
        let cap = Duration::from_millis(100u64 << retries.min(4));
        let jittered = cap.mul_f64(rand::random::<f64>().max(0.1));
        Some(match error {
            CryptlexError::RateLimited {
                retry_after: Some(wait),
            } => (*wait).max(jittered),
            _ => jittered,
        })
    }
}

/// Caps retries at a fraction of calls, so retries cannot multiply load on a
/// struggling Cryptlex (the idea of tower's retry budget, in a few lines):
/// each first attempt deposits a fifth of a token, each retry spends one.
#[derive(Debug)]
pub(super) struct RetryBudget {
    tokens: Mutex<f64>,
}

impl RetryBudget {
    const DEPOSIT: f64 = 0.2;
    const MAX_TOKENS: f64 = 20.0;

    pub(super) fn new() -> Self {
        // Start with a few tokens so a quiet gateway can still retry.
        Self {
            tokens: Mutex::new(5.0),
        }
    }

    /// Called once per first attempt.
    pub(super) fn deposit(&self) {
        let mut tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        *tokens = (*tokens + Self::DEPOSIT).min(Self::MAX_TOKENS);
    }

    /// Spends a token for one retry; `false` when there is none.
    pub(super) fn withdraw(&self) -> bool {
        let mut tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

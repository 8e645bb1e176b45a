//! The upstream budget's count when several replicas share it.
//!
//! Cryptlex counts calls per source IP, and replicas behind one NAT address
//! share that count. [`SharedWindow`] is the one place every replica records
//! the calls it starts; the PostgreSQL implementation lives in
//! `crate::coordination`. When it cannot be reached, the budget falls back to
//! its configured static share (`cryptlex.budget.fallback_share`).

use std::time::Duration;

use futures::future::BoxFuture;

/// What the shared count said about one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// The call is recorded: it may start now.
    Started,
    /// Too many calls started in the window: one may start after this long.
    NotBefore(Duration),
}

/// The shared count could not be consulted (the database is down, slow or
/// refused); the caller falls back to its static share.
#[derive(Debug, thiserror::Error)]
#[error("the shared upstream budget is unavailable: {reason}")]
pub struct SharedWindowUnavailable {
    /// What went wrong, safe to log (no credentials).
    pub reason: String,
}

/// Calls started by every replica in a sliding window.
pub trait SharedWindow: Send + Sync + std::fmt::Debug + 'static {
    /// Records one call start if fewer than `limit` calls (by any replica)
    /// started in the last `window`; otherwise says when one may. Must answer
    /// within `timeout` (then it is unavailable).
    fn try_start(
        &self,
        limit: u32,
        window: Duration,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Admit, SharedWindowUnavailable>>;
}

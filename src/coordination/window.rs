//! [`PgWindow`]: the upstream-call window every replica shares, in PostgreSQL.
//!
//! One row (`upstream_call_window`, see the migration) holds the start times
//! of the calls in the current window, by the database's clock; the function
//! `upstream_call_window_try_start` takes that row's lock, drops the starts
//! that left the window, and either appends one or says when one may. The
//! whole decision is one statement and one round trip, so the lock is held
//! only while it runs on the server, and the database's clock is the only
//! clock involved (replicas' clocks may differ).
//!
//! It does not decide what a call's limit is (the budget passes a limit per
//! priority) nor what to do when the count cannot be reached (the budget
//! falls back to its static share).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use sqlx::PgPool;

use super::metrics_names::{WINDOW_DURATION_SECONDS, WINDOW_TOTAL};
use crate::cryptlex::{Admit, SharedWindow, SharedWindowUnavailable};

/// One statement: the function does the locking, pruning and counting.
const TRY_START: &str = "SELECT started, started_at_us, retry_after_us \
     FROM upstream_call_window_try_start($1, $2 * INTERVAL '1 microsecond', $3)";

/// After a failure, how long calls are answered "unavailable" at once rather
/// than each waiting its timeout on a database that is down: the budget's
/// fallback share then decides without delay, and one call a second probes.
const PAUSE_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// The shared window in PostgreSQL. Holds a small pool of its own (see
/// [`super::Coordination`]), so issuance's ledger queries and the window's
/// never wait for each other's connections.
#[derive(Debug)]
pub struct PgWindow {
    pool: PgPool,
    /// No query until then: the last one failed (see [`PAUSE_AFTER_FAILURE`]).
    /// A std mutex: held for a comparison, never across an await.
    paused_until: Mutex<Option<Instant>>,
}

/// What one look at the window decided, with the recorded start for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decision {
    pub(crate) admit: Admit,
    /// When the call was recorded as started, in unix microseconds by the
    /// database's clock; `None` when refused.
    pub(crate) started_at_us: Option<i64>,
}

impl PgWindow {
    /// A window on `pool`, whose database holds the migrated table.
    pub(crate) fn new(pool: PgPool) -> Self {
        Self {
            pool,
            paused_until: Mutex::new(None),
        }
    }

    /// Records one start if fewer than `limit` calls started in the last
    /// `window`, within `timeout` (pool, lock and query together).
    pub(crate) async fn decide(
        &self,
        limit: u32,
        window: Duration,
        timeout: Duration,
    ) -> Result<Decision, SharedWindowUnavailable> {
        if self.is_paused() {
            return Err(unavailable("paused after a recent failure"));
        }
        let begun = Instant::now();
        let outcome = match tokio::time::timeout(timeout, self.query(limit, window, timeout)).await
        {
            Ok(Ok(decision)) => Ok(decision),
            Ok(Err(error)) => Err(describe(&error)),
            Err(_elapsed) => Err("no answer within the timeout".to_owned()),
        };
        metrics::histogram!(WINDOW_DURATION_SECONDS).record(begun.elapsed().as_secs_f64());
        match outcome {
            Ok(decision) => {
                let result = match decision.admit {
                    Admit::Started => "started",
                    Admit::NotBefore(_) => "refused",
                };
                metrics::counter!(WINDOW_TOTAL, "result" => result).increment(1);
                Ok(decision)
            }
            Err(reason) => {
                metrics::counter!(WINDOW_TOTAL, "result" => "unavailable").increment(1);
                self.pause();
                tracing::warn!(%reason, "the shared upstream window is unavailable");
                Err(unavailable(&reason))
            }
        }
    }

    async fn query(
        &self,
        limit: u32,
        window: Duration,
        timeout: Duration,
    ) -> Result<Decision, sqlx::Error> {
        // The lock wait is bounded on the server too, so a statement whose
        // caller gave up does not keep a place in the lock's queue.
        let lock_wait_ms = i32::try_from(timeout.as_millis().max(1)).unwrap_or(i32::MAX);
        let window_us = i64::try_from(window.as_micros()).unwrap_or(i64::MAX);
        let (started, started_at_us, retry_after_us): (bool, Option<i64>, i64) =
            sqlx::query_as(TRY_START)
                .bind(i32::try_from(limit).unwrap_or(i32::MAX))
                .bind(window_us)
                .bind(lock_wait_ms)
                .fetch_one(&self.pool)
                .await?;
        let admit = if started {
            Admit::Started
        } else {
            // At least a microsecond (a refusal is never "now"), at most a
            // window (should the database's clock step back).
            let wait = Duration::from_micros(u64::try_from(retry_after_us).unwrap_or(0).max(1));
            Admit::NotBefore(wait.min(window))
        };
        Ok(Decision {
            admit,
            started_at_us: started.then_some(started_at_us).flatten(),
        })
    }

    fn is_paused(&self) -> bool {
        let mut paused_until = self.lock();
        match *paused_until {
            Some(until) if Instant::now() < until => true,
            Some(_) => {
                // This call is the probe.
                *paused_until = None;
                false
            }
            None => false,
        }
    }

    fn pause(&self) {
        *self.lock() = Some(Instant::now() + PAUSE_AFTER_FAILURE);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        // The value is a plain deadline: a panic elsewhere cannot leave it
        // half-written, so a poisoned lock is still good.
        self.paused_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl SharedWindow for PgWindow {
    fn try_start(
        &self,
        limit: u32,
        window: Duration,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Admit, SharedWindowUnavailable>> {
        Box::pin(async move {
            self.decide(limit, window, timeout)
                .await
                .map(|decision| decision.admit)
        })
    }
}

/// A database error, as safe to log: sqlx's messages name the failure
/// (refused, timed out, SQLSTATE text) and never the URL or its password.
fn describe(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::PoolTimedOut => "no database connection free in time".to_owned(),
        sqlx::Error::Database(db) if db.code().as_deref() == Some(LOCK_NOT_AVAILABLE) => {
            "the window's lock was not free in time".to_owned()
        }
        other => other.to_string(),
    }
}

/// SQLSTATE of a `lock_timeout` that expired.
const LOCK_NOT_AVAILABLE: &str = "55P03";

fn unavailable(reason: &str) -> SharedWindowUnavailable {
    SharedWindowUnavailable {
        reason: reason.to_owned(),
    }
}

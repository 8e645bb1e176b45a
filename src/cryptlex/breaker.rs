//! A circuit breaker for Cryptlex.
//!
//! After `failure_threshold` consecutive upstream faults (5xx, timeouts,
//! broken connections, garbage answers) the breaker opens: calls fail at once
//! for `cooldown` instead of piling up timeouts against a service that is
//! down. Then one probe call is let through; its success closes the breaker,
//! its failure opens it again. Client errors (4xx) are answers, not faults,
//! and do not count.
//!
//! While the probe is out everyone else fails fast, so the breaker must learn
//! how the probe ended on every path, or it would stay half-open for good. A
//! call is let through as an [`Admission`], a guard the caller settles with
//! the outcome; a probe that is dropped unsettled hands the breaker back:
//! - a probe that was never sent (refused by the rate budget, or its caller
//!   went away while it waited for a slot) did not test Cryptlex: the next
//!   caller may probe at once;
//! - a probe that may have been sent and whose caller went away says nothing
//!   either, but it may still be running against a struggling Cryptlex: the
//!   breaker opens again for [`ABANDONED_PROBE_COOLDOWN`] (at most
//!   `cooldown`), so callers that give up early cannot turn probing into a
//!   stream of requests.
//!
//! As a last resort a probe that has neither answered nor been dropped after
//! [`HALF_OPEN_TIMEOUT`] is presumed lost and the next caller probes instead;
//! what the lost probe reports later still counts.
//!
//! # Bounds
//! | bound | default | where set |
//! |---|---|---|
//! | consecutive faults that open it | 5 | `cryptlex.breaker.failure_threshold` |
//! | time open before a probe | 10 s | `cryptlex.breaker.cooldown` |
//! | time open after an abandoned probe | 1 s, at most `cooldown` | [`ABANDONED_PROBE_COOLDOWN`] |
//! | longest one probe holds it half-open | 10 s | [`HALF_OPEN_TIMEOUT`] |
//! | `retry_after` told to callers while half-open | 500 ms | [`HALF_OPEN_RETRY_AFTER`] |

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How long the breaker stays open again after a probe that may have been
/// sent was abandoned by its caller. Short, because nothing was learned about
/// Cryptlex; not zero, so callers that keep cancelling cannot send more than
/// about one probe a second. Not configurable: `cooldown` caps it.
const ABANDONED_PROBE_COOLDOWN: Duration = Duration::from_secs(1);

/// Longest a single probe may hold the breaker half-open. Matches the default
/// `cryptlex.request_timeout`: a probe still out by then has almost certainly
/// been lost (a leaked future, a wait that never ends), and letting a second
/// probe through costs one request. Not configurable, because the drop guard
/// already settles every probe whose future ends; this only bounds the
/// impossible cases.
const HALF_OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// The `retry_after` given to callers refused while the probe is out: the
/// probe usually decides well within it.
const HALF_OPEN_RETRY_AFTER: Duration = Duration::from_millis(500);

/// Breaker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerOptions {
    /// Consecutive faults that open the breaker.
    pub failure_threshold: u32,
    /// How long it stays open before a probe.
    pub cooldown: Duration,
}

impl Default for BreakerOptions {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            cooldown: Duration::from_secs(10),
        }
    }
}

/// The breaker's state, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

/// Which probe holds the breaker half-open, so that a probe presumed lost
/// cannot disturb the one that replaced it when it is finally dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProbeId(u64);

#[derive(Debug)]
enum Circuit {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is in flight; everyone else still fails fast.
    HalfOpen {
        probe: ProbeId,
        since: Instant,
    },
}

#[derive(Debug)]
struct Inner {
    circuit: Circuit,
    /// Probes let through so far; the next one's id.
    probes: u64,
}

impl Inner {
    fn start_probe(&mut self, now: Instant) -> ProbeId {
        let probe = ProbeId(self.probes);
        self.probes += 1;
        self.circuit = Circuit::HalfOpen { probe, since: now };
        probe
    }
}

/// The breaker; shared by every call of the client.
#[derive(Debug)]
pub(super) struct Breaker {
    options: BreakerOptions,
    inner: Mutex<Inner>,
}

/// A call the breaker let through. Settle it with [`Admission::record_success`]
/// or [`Admission::record_failure`]; dropped unsettled, a probe hands the
/// breaker back (see the module docs) and an ordinary call records nothing.
#[derive(Debug)]
#[must_use = "dropping an admission abandons the call"]
pub(super) struct Admission<'a> {
    breaker: &'a Breaker,
    /// `Some` when this call is the half-open probe.
    probe: Option<ProbeId>,
    /// Whether the request may have reached Cryptlex.
    sent: bool,
}

impl Admission<'_> {
    /// Notes that the request is about to go out: from here on, a dropped
    /// probe may have reached Cryptlex.
    pub(super) fn sending(&mut self) {
        self.sent = true;
    }

    /// Records a call that got a proper answer.
    pub(super) fn record_success(mut self) {
        self.probe = None;
        self.breaker.record_success();
    }

    /// Records an upstream fault.
    pub(super) fn record_failure(mut self) {
        self.probe = None;
        self.breaker.record_failure();
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if let Some(probe) = self.probe.take() {
            self.breaker.abandon(probe, self.sent);
        }
    }
}

impl Breaker {
    /// Creates a closed breaker.
    pub(super) fn new(options: BreakerOptions) -> Self {
        Self {
            options,
            inner: Mutex::new(Inner {
                circuit: Circuit::Closed { failures: 0 },
                probes: 0,
            }),
        }
    }

    /// Lets a call through, or says how long until the next probe.
    pub(super) fn admit(&self) -> Result<Admission<'_>, Duration> {
        let probe = self.enter()?;
        Ok(Admission {
            breaker: self,
            probe,
            sent: false,
        })
    }

    /// Lets a call through whose outcome the caller reports with
    /// [`Breaker::record_success`] or [`Breaker::record_failure`]; a probe let
    /// through here is only ever released by its outcome or by
    /// [`HALF_OPEN_TIMEOUT`].
    #[cfg(test)]
    fn check(&self) -> Result<(), Duration> {
        self.enter().map(|_probe| ())
    }

    /// Decides whether a call may go out; `Some` when it is the probe.
    fn enter(&self) -> Result<Option<ProbeId>, Duration> {
        let now = Instant::now();
        let mut inner = self.lock();
        match inner.circuit {
            Circuit::Closed { .. } => Ok(None),
            Circuit::Open { until } if until <= now => Ok(Some(inner.start_probe(now))),
            Circuit::Open { until } => Err(until - now),
            Circuit::HalfOpen { since, .. } if now.duration_since(since) >= HALF_OPEN_TIMEOUT => {
                tracing::warn!(
                    timeout_ms = HALF_OPEN_TIMEOUT.as_millis() as u64,
                    "cryptlex circuit breaker probe presumed lost, probing again"
                );
                Ok(Some(inner.start_probe(now)))
            }
            // The probe decides; a second caller waits for the next cycle.
            Circuit::HalfOpen { .. } => Err(HALF_OPEN_RETRY_AFTER),
        }
    }

    /// Records a call that got a proper answer.
    pub(super) fn record_success(&self) {
        self.lock().circuit = Circuit::Closed { failures: 0 };
    }

    /// Records an upstream fault.
    pub(super) fn record_failure(&self) {
        let mut inner = self.lock();
        let failures = match inner.circuit {
            Circuit::Closed { failures } => failures + 1,
            Circuit::HalfOpen { .. } | Circuit::Open { .. } => self.options.failure_threshold,
        };
        inner.circuit = if failures >= self.options.failure_threshold {
            tracing::warn!(
                cooldown_ms = self.options.cooldown.as_millis() as u64,
                "cryptlex circuit breaker open"
            );
            Circuit::Open {
                until: Instant::now() + self.options.cooldown,
            }
        } else {
            Circuit::Closed { failures }
        };
    }

    /// Hands the breaker back after `probe` ended without an outcome.
    fn abandon(&self, probe: ProbeId, sent: bool) {
        let mut inner = self.lock();
        // A probe presumed lost, or one whose place an outcome already
        // settled, no longer holds the breaker.
        if !matches!(inner.circuit, Circuit::HalfOpen { probe: current, .. } if current == probe) {
            return;
        }
        let cooldown = if sent {
            ABANDONED_PROBE_COOLDOWN.min(self.options.cooldown)
        } else {
            Duration::ZERO
        };
        tracing::debug!(sent, "cryptlex circuit breaker probe abandoned");
        inner.circuit = Circuit::Open {
            until: Instant::now() + cooldown,
        };
    }

    /// The current state.
    pub(super) fn state(&self) -> BreakerState {
        match self.lock().circuit {
            Circuit::Closed { .. } => BreakerState::Closed,
            Circuit::Open { .. } => BreakerState::Open,
            Circuit::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_faults_and_recovers_through_a_probe() {
        let breaker = Breaker::new(BreakerOptions {
            failure_threshold: 3,
            cooldown: Duration::from_secs(10),
        });
        for _ in 0..2 {
            breaker.record_failure();
        }
        assert!(breaker.check().is_ok());
        breaker.record_failure();
        assert_eq!(breaker.check(), Err(Duration::from_secs(10)));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(breaker.check().is_ok(), "one probe");
        assert!(breaker.check().is_err(), "only one probe");
        breaker.record_success();
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert!(breaker.check().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_it_again() {
        let breaker = Breaker::new(BreakerOptions {
            failure_threshold: 1,
            cooldown: Duration::from_secs(5),
        });
        breaker.record_failure();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(breaker.check().is_ok());
        breaker.record_failure();
        assert_eq!(breaker.state(), BreakerState::Open);
    }

    #[test]
    fn a_success_resets_the_count() {
        let breaker = Breaker::new(BreakerOptions {
            failure_threshold: 2,
            cooldown: Duration::from_secs(5),
        });
        breaker.record_failure();
        breaker.record_success();
        breaker.record_failure();
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    /// A breaker that opened on one fault and whose cooldown (5 s) is over.
    async fn breaker_ready_to_probe() -> Breaker {
        let breaker = Breaker::new(BreakerOptions {
            failure_threshold: 1,
            cooldown: Duration::from_secs(5),
        });
        breaker.record_failure();
        tokio::time::advance(Duration::from_secs(5)).await;
        breaker
    }

    #[tokio::test(start_paused = true)]
    async fn the_probe_is_settled_through_its_admission() {
        let breaker = breaker_ready_to_probe().await;

        let probe = breaker.admit().expect("the probe");
        assert!(breaker.admit().is_err(), "only one probe");
        probe.record_success();

        assert_eq!(breaker.state(), BreakerState::Closed);
        assert!(breaker.admit().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_dropped_after_sending_reopens_briefly_then_lets_the_next_caller_probe() {
        let breaker = breaker_ready_to_probe().await;

        let mut probe = breaker.admit().expect("the probe");
        probe.sending();
        drop(probe);

        assert_eq!(breaker.state(), BreakerState::Open);
        assert_eq!(
            breaker.admit().map(|_| ()),
            Err(ABANDONED_PROBE_COOLDOWN),
            "a short cooldown, not the full one"
        );
        tokio::time::advance(ABANDONED_PROBE_COOLDOWN).await;
        breaker
            .admit()
            .expect("the next caller probes")
            .record_success();
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_was_never_sent_does_not_consume_the_probe() {
        let breaker = breaker_ready_to_probe().await;

        // What `attempt` does when the rate budget refuses the probe: the
        // admission is dropped before `sending`.
        drop(breaker.admit().expect("the probe"));

        let next = breaker.admit().expect("the next caller probes at once");
        assert!(breaker.admit().is_err(), "and it is the only probe");
        next.record_success();
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn the_abandoned_probe_cooldown_never_exceeds_the_configured_cooldown() {
        let breaker = Breaker::new(BreakerOptions {
            failure_threshold: 1,
            cooldown: Duration::from_millis(200),
        });
        breaker.record_failure();
        tokio::time::advance(Duration::from_millis(200)).await;

        let mut probe = breaker.admit().expect("the probe");
        probe.sending();
        drop(probe);

        assert_eq!(breaker.admit().map(|_| ()), Err(Duration::from_millis(200)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_never_finishes_cannot_hold_the_breaker_half_open() {
        let breaker = breaker_ready_to_probe().await;
        let mut lost = breaker.admit().expect("the probe");
        lost.sending();

        tokio::time::advance(HALF_OPEN_TIMEOUT - Duration::from_millis(1)).await;
        assert_eq!(
            breaker.admit().map(|_| ()),
            Err(HALF_OPEN_RETRY_AFTER),
            "still the lost probe's turn"
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        let replacement = breaker.admit().expect("a new probe after the timeout");
        assert_eq!(breaker.state(), BreakerState::HalfOpen);

        // The lost probe ending now must not disturb its replacement.
        drop(lost);
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert!(
            breaker.admit().is_err(),
            "the replacement is the only probe"
        );
        replacement.record_success();
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn an_ordinary_call_dropped_unsettled_records_nothing() {
        let breaker = Breaker::new(BreakerOptions {
            failure_threshold: 2,
            cooldown: Duration::from_secs(5),
        });
        breaker.record_failure();

        let mut call = breaker.admit().expect("closed");
        call.sending();
        drop(call);
        breaker.record_failure();

        assert_eq!(
            breaker.state(),
            BreakerState::Open,
            "the dropped call neither reset nor added to the count"
        );
    }
}

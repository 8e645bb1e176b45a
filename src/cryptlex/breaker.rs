//! A circuit breaker for Cryptlex.
//!
//! After `failure_threshold` consecutive upstream faults (5xx, timeouts,
//! broken connections, garbage answers) the breaker opens: calls fail at once
//! for `cooldown` instead of piling up timeouts against a service that is
//! down. Then one probe call is let through; its success closes the breaker,
//! its failure opens it again. Client errors (4xx) are answers, not faults,
//! and do not count.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

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

#[derive(Debug)]
enum Inner {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is in flight; everyone else still fails fast.
    HalfOpen,
}

/// The breaker; shared by every call of the client.
#[derive(Debug)]
pub(super) struct Breaker {
    options: BreakerOptions,
    inner: Mutex<Inner>,
}

impl Breaker {
    /// Creates a closed breaker.
    pub(super) fn new(options: BreakerOptions) -> Self {
        Self {
            options,
            inner: Mutex::new(Inner::Closed { failures: 0 }),
        }
    }

    /// Lets a call through, or says how long until the next probe.
    pub(super) fn check(&self) -> Result<(), Duration> {
        let now = Instant::now();
        let mut inner = self.lock();
        match *inner {
            Inner::Closed { .. } => Ok(()),
            Inner::Open { until } if until <= now => {
                *inner = Inner::HalfOpen;
                Ok(())
            }
            Inner::Open { until } => Err(until - now),
            // The probe decides; a second caller waits for the next cycle.
            Inner::HalfOpen => Err(Duration::from_millis(500)),
        }
    }

    /// Records a call that got a proper answer.
    pub(super) fn record_success(&self) {
        *self.lock() = Inner::Closed { failures: 0 };
    }

    /// Records an upstream fault.
    pub(super) fn record_failure(&self) {
        let mut inner = self.lock();
        let failures = match *inner {
            Inner::Closed { failures } => failures + 1,
            Inner::HalfOpen | Inner::Open { .. } => self.options.failure_threshold,
        };
        *inner = if failures >= self.options.failure_threshold {
            tracing::warn!(
                cooldown_ms = self.options.cooldown.as_millis() as u64,
                "cryptlex circuit breaker open"
            );
            Inner::Open {
                until: Instant::now() + self.options.cooldown,
            }
        } else {
            Inner::Closed { failures }
        };
    }

    /// The current state.
    pub(super) fn state(&self) -> BreakerState {
        match *self.lock() {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { .. } => BreakerState::Open,
            Inner::HalfOpen => BreakerState::HalfOpen,
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
}

//! A fixed-window, per-client-IP rate limiter that behaves like AspNetCoreRateLimit, which
//! Cryptlex runs (50 requests per 5 s by default).
//!
//! A window opens with a client's first request and lasts `window`; every request in it counts,
//! including refused ones, as AspNetCoreRateLimit does. This module only decides and describes;
//! the pipeline turns the verdict into headers or a 429.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// A rate limit: at most `max_requests` per client IP in each fixed `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub max_requests: u32,
    pub window: Duration,
}

impl RateLimit {
    /// Returns Cryptlex's published limit: 50 requests per 5-second window.
    pub const fn cryptlex_default() -> Self {
        RateLimit {
            max_requests: 50,
            window: Duration::from_secs(5),
        }
    }

    /// Renders the window the way AspNetCoreRateLimit names periods (`5s`, `1m`, `12h`, `1d`),
    /// falling back to milliseconds for the sub-second windows tests like to use.
    pub fn period(&self) -> String {
        let millis = self.window.as_millis();
        let seconds = self.window.as_secs();
        if !millis.is_multiple_of(1000) || seconds == 0 {
            format!("{millis}ms")
        } else if seconds.is_multiple_of(86_400) {
            format!("{}d", seconds / 86_400)
        } else if seconds.is_multiple_of(3_600) {
            format!("{}h", seconds / 3_600)
        } else if seconds.is_multiple_of(60) {
            format!("{}m", seconds / 60)
        } else {
            format!("{seconds}s")
        }
    }
}

/// What the limiter decided for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Limiting is switched off; send no rate-limit headers.
    Unlimited,
    Allowed(Quota),
    Refused {
        quota: Quota,
        /// Whole seconds until the window resets, at least 1 (the `Retry-After` value).
        retry_after_seconds: u64,
        /// AspNetCoreRateLimit's message, e.g. `API calls quota exceeded! maximum admitted 50 per 5s.`
        message: String,
    },
}

/// The values of the `X-Rate-Limit-*` headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Quota {
    pub(crate) limit: String,
    pub(crate) remaining: u32,
    pub(crate) reset: DateTime<Utc>,
}

#[derive(Debug)]
struct Window {
    opened: Instant,
    opened_utc: DateTime<Utc>,
    count: u32,
}

/// The limiter's configuration and its open windows.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    limit: Option<RateLimit>,
    windows: HashMap<IpAddr, Window>,
}

impl RateLimiter {
    pub(crate) fn new(limit: Option<RateLimit>) -> Self {
        RateLimiter {
            limit,
            windows: HashMap::new(),
        }
    }

    pub(crate) fn limit(&self) -> Option<RateLimit> {
        self.limit
    }

    /// Replaces the limit and forgets every window, so a test starts from a full quota.
    pub(crate) fn set_limit(&mut self, limit: Option<RateLimit>) {
        self.limit = limit;
        self.windows.clear();
    }

    /// Counts one request from `client` and decides whether it may proceed.
    pub(crate) fn check(
        &mut self,
        client: IpAddr,
        now: Instant,
        now_utc: DateTime<Utc>,
    ) -> Verdict {
        let Some(limit) = self.limit else {
            return Verdict::Unlimited;
        };
        // Expired windows of other clients are dropped lazily so the map stays small.
        self.windows
            .retain(|_, window| now.duration_since(window.opened) < limit.window);
        let window = self.windows.entry(client).or_insert(Window {
            opened: now,
            opened_utc: now_utc,
            count: 0,
        });
        window.count = window.count.saturating_add(1);

        let reset = window.opened_utc
            + chrono::TimeDelta::from_std(limit.window).unwrap_or(chrono::TimeDelta::MAX);
        let quota = Quota {
            limit: limit.period(),
            remaining: limit.max_requests.saturating_sub(window.count),
            reset,
        };
        if window.count <= limit.max_requests {
            return Verdict::Allowed(quota);
        }
        let until_reset = limit
            .window
            .saturating_sub(now.duration_since(window.opened));
        // Rounded up, so a client that waits exactly this long finds a fresh window.
        let retry_after_seconds = until_reset.as_secs_f64().ceil().max(1.0) as u64;
        Verdict::Refused {
            message: format!(
                "API calls quota exceeded! maximum admitted {} per {}.",
                limit.max_requests, quota.limit
            ),
            quota,
            retry_after_seconds,
        }
    }
}

#[cfg(test)]
mod unit_tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn periods_are_named_like_aspnetcoreratelimit() {
        let period = |window| {
            RateLimit {
                max_requests: 1,
                window,
            }
            .period()
        };
        assert_eq!(period(Duration::from_secs(5)), "5s");
        assert_eq!(period(Duration::from_secs(60)), "1m");
        assert_eq!(period(Duration::from_secs(43_200)), "12h");
        assert_eq!(period(Duration::from_secs(86_400)), "1d");
        assert_eq!(period(Duration::from_millis(500)), "500ms");
    }

    #[test]
    fn the_request_after_the_quota_is_refused_until_the_window_resets() {
        let mut limiter = RateLimiter::new(Some(RateLimit {
            max_requests: 2,
            window: Duration::from_secs(5),
        }));
        let client = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let start = Instant::now();
        let start_utc = Utc::now();

        assert!(matches!(
            limiter.check(client, start, start_utc),
            Verdict::Allowed(Quota { remaining: 1, .. })
        ));
        assert!(matches!(
            limiter.check(client, start, start_utc),
            Verdict::Allowed(Quota { remaining: 0, .. })
        ));
        let refused = limiter.check(client, start + Duration::from_millis(1500), start_utc);
        let Verdict::Refused {
            retry_after_seconds,
            message,
            ..
        } = refused
        else {
            panic!("expected a refusal, got {refused:?}");
        };
        assert_eq!(retry_after_seconds, 4);
        assert_eq!(
            message,
            "API calls quota exceeded! maximum admitted 2 per 5s."
        );

        let next_window = start + Duration::from_secs(5);
        assert!(matches!(
            limiter.check(client, next_window, start_utc),
            Verdict::Allowed(_)
        ));
    }
}

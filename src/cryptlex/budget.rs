//! The process-wide budget for Cryptlex calls.
//!
//! Cryptlex allows about 50 requests per 5 seconds per source IP and can
//! blacklist abusers, so the gateway must never be the one that causes a 429.
//! The budget is a sliding-window log: at most `max_requests` calls start in
//! any window of `window`, which also keeps any fixed window Cryptlex counts
//! in under the limit, however the two are aligned.
//!
//! Calls have priorities. Reads may only use the budget down to a reserve,
//! sign-in calls down to a smaller one, and issuance may use all of it, so a
//! burst of page views cannot delay a paid order. A call that cannot start in
//! time (before the caller's deadline, and within its class's maximum wait)
//! fails at once with the time to come back; there is no unbounded queue.
//!
//! The budget also follows what Cryptlex says: `X-Rate-Limit-Remaining` and
//! `X-Rate-Limit-Reset` cap it when another client on the same IP spends
//! part of the window, and a 429's `Retry-After` pauses every call.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// Calls stay in the log this much longer than the window. Our clock starts
/// a call when it is sent, Cryptlex's when it arrives; without a margin a
/// call that travels faster than the one leaving the window could land in
/// the same upstream window and be the 51st.
const WINDOW_MARGIN: Duration = Duration::from_millis(250);

/// How important an upstream call is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Profile and license reads: the bulk of traffic, and the first to wait.
    Read,
    /// Login, sign-up, refresh and logout: a person is waiting at a form.
    SignIn,
    /// License issuance and its lookups: someone has paid.
    Issuance,
}

impl Priority {
    /// A label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::SignIn => "sign_in",
            Self::Issuance => "issuance",
        }
    }
}

/// Budget settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetOptions {
    /// Calls allowed per window for this replica.
    pub max_requests: u32,
    /// The window length.
    pub window: Duration,
    /// Slots only issuance may use.
    pub reserved_for_issuance: u32,
    /// Further slots only sign-in and issuance may use.
    pub reserved_for_sign_in: u32,
    /// Longest a read waits for a slot before failing.
    pub max_read_wait: Duration,
    /// Most calls waiting for a slot at once; more fail at once.
    pub max_waiters: usize,
}

impl Default for BudgetOptions {
    fn default() -> Self {
        Self {
            max_requests: 50,
            window: Duration::from_secs(5),
            reserved_for_issuance: 10,
            reserved_for_sign_in: 5,
            max_read_wait: Duration::from_millis(500),
            max_waiters: 256,
        }
    }
}

/// Why no slot could be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exhausted {
    /// When a slot may be free again.
    pub retry_after: Duration,
}

/// The shared budget. Cloning is cheap and shares the state.
#[derive(Debug, Clone)]
pub struct Budget {
    options: BudgetOptions,
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    /// Start times of the calls in the current window, oldest first.
    started: VecDeque<Instant>,
    /// Cryptlex's own count: calls left until `reset`, minus those we
    /// started since it said so.
    upstream: Option<(u32, Instant)>,
    /// No call may start before this (after a 429).
    paused_until: Option<Instant>,
    waiters: usize,
}

/// A snapshot for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetSnapshot {
    /// Slots left in the current window (for issuance; reads see fewer).
    pub remaining: u32,
    pub waiters: usize,
}

impl Budget {
    /// Creates a budget.
    pub fn new(options: BudgetOptions) -> Self {
        Self {
            options,
            state: Arc::new(Mutex::new(State {
                started: VecDeque::with_capacity(options.max_requests as usize),
                upstream: None,
                paused_until: None,
                waiters: 0,
            })),
        }
    }

    /// The settings.
    pub fn options(&self) -> &BudgetOptions {
        &self.options
    }

    /// Waits for a slot for a call of `priority` that must start before
    /// `deadline`, or fails at once when none will be free in time.
    pub async fn acquire(&self, priority: Priority, deadline: Instant) -> Result<(), Exhausted> {
        let max_wait = match priority {
            Priority::Read => self.options.max_read_wait,
            Priority::SignIn | Priority::Issuance => Duration::MAX,
        };
        let give_up_at = deadline.min(Instant::now().checked_add(max_wait).unwrap_or(deadline));
        let mut waiting = false;
        let result = loop {
            let now = Instant::now();
            let next_free = {
                let mut state = self.lock();
                match state.try_take(&self.options, priority, now) {
                    Ok(()) => break Ok(()),
                    Err(next_free) => {
                        if !waiting {
                            if state.waiters >= self.options.max_waiters {
                                break Err(Exhausted {
                                    retry_after: next_free.saturating_duration_since(now),
                                });
                            }
                            state.waiters += 1;
                            waiting = true;
                        }
                        next_free
                    }
                }
            };
            if next_free > give_up_at {
                break Err(Exhausted {
                    retry_after: next_free.saturating_duration_since(now),
                });
            }
            tokio::time::sleep_until(next_free).await;
        };
        if waiting {
            self.lock().waiters -= 1;
        }
        result
    }

    /// Records what Cryptlex said about its own count in a response.
    pub fn observe_headers(&self, remaining: Option<u32>, reset_in: Option<Duration>) {
        let Some(remaining) = remaining else {
            return;
        };
        let reset_at = Instant::now() + reset_in.unwrap_or(self.options.window);
        let mut state = self.lock();
        // Our own in-flight calls may not be counted in this answer yet; the
        // lower of the two views wins until the window resets.
        state.upstream = Some((remaining, reset_at));
    }

    /// Pauses every call until `retry_after` has passed (after a 429).
    pub fn pause(&self, retry_after: Duration) {
        let until = Instant::now() + retry_after;
        let mut state = self.lock();
        if state.paused_until.is_none_or(|current| current < until) {
            state.paused_until = Some(until);
        }
    }

    /// The current state.
    pub fn snapshot(&self) -> BudgetSnapshot {
        let now = Instant::now();
        let mut state = self.lock();
        state.expire(&self.options, now);
        let used = u32::try_from(state.started.len()).unwrap_or(u32::MAX);
        let mut remaining = self.options.max_requests.saturating_sub(used);
        if let Some((upstream_remaining, _)) = state.upstream {
            remaining = remaining.min(upstream_remaining);
        }
        BudgetSnapshot {
            remaining,
            waiters: state.waiters,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every update
        // is a single push/pop/assignment.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl State {
    fn expire(&mut self, options: &BudgetOptions, now: Instant) {
        while self
            .started
            .front()
            .is_some_and(|started| now.duration_since(*started) >= options.window + WINDOW_MARGIN)
        {
            self.started.pop_front();
        }
        if self.upstream.is_some_and(|(_, reset)| reset <= now) {
            self.upstream = None;
        }
        if self.paused_until.is_some_and(|until| until <= now) {
            self.paused_until = None;
        }
    }

    /// Takes a slot, or says when one may be free.
    fn try_take(
        &mut self,
        options: &BudgetOptions,
        priority: Priority,
        now: Instant,
    ) -> Result<(), Instant> {
        self.expire(options, now);
        if let Some(until) = self.paused_until {
            return Err(until);
        }
        let reserve = match priority {
            Priority::Read => options.reserved_for_issuance + options.reserved_for_sign_in,
            Priority::SignIn => options.reserved_for_issuance,
            Priority::Issuance => 0,
        };
        let limit = options.max_requests.saturating_sub(reserve).max(1) as usize;
        if self.started.len() >= limit {
            // The slot we need frees when enough of the oldest calls leave the
            // window.
            let index = self.started.len() - limit;
            let frees_at = self.started[index] + options.window + WINDOW_MARGIN;
            return Err(frees_at);
        }
        if let Some((remaining, reset)) = &mut self.upstream {
            let upstream_reserve = match priority {
                Priority::Read => reserve,
                Priority::SignIn => options.reserved_for_issuance.min(reserve),
                Priority::Issuance => 0,
            };
            if *remaining <= upstream_reserve {
                return Err(*reset);
            }
            *remaining -= 1;
        }
        self.started.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(max_requests: u32) -> Budget {
        Budget::new(BudgetOptions {
            max_requests,
            window: Duration::from_secs(5),
            reserved_for_issuance: 2,
            reserved_for_sign_in: 1,
            max_read_wait: Duration::from_millis(100),
            max_waiters: 8,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn reads_stop_at_the_reserve_and_issuance_can_use_it() {
        let budget = budget(10);
        let far = Instant::now() + Duration::from_secs(30);
        for _ in 0..7 {
            budget
                .acquire(Priority::Read, far)
                .await
                .expect("read slot");
        }
        let refused = budget
            .acquire(Priority::Read, far)
            .await
            .expect_err("reserve");
        assert!(refused.retry_after <= Duration::from_secs(5) + WINDOW_MARGIN);
        budget
            .acquire(Priority::SignIn, far)
            .await
            .expect("sign-in slot");
        budget
            .acquire(Priority::Issuance, far)
            .await
            .expect("issuance slot");
        budget
            .acquire(Priority::Issuance, far)
            .await
            .expect("issuance slot");
        assert_eq!(budget.snapshot().remaining, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn issuance_waits_for_the_window_to_slide_and_then_proceeds() {
        let budget = budget(3);
        let far = Instant::now() + Duration::from_secs(30);
        for _ in 0..3 {
            budget.acquire(Priority::Issuance, far).await.expect("slot");
        }
        let started = Instant::now();
        budget
            .acquire(Priority::Issuance, far)
            .await
            .expect("slot after waiting");
        assert_eq!(started.elapsed(), Duration::from_secs(5) + WINDOW_MARGIN);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_cannot_start_before_its_deadline_fails_at_once() {
        let budget = budget(3);
        let soon = Instant::now() + Duration::from_secs(1);
        for _ in 0..3 {
            budget
                .acquire(Priority::Issuance, soon)
                .await
                .expect("slot");
        }
        let started = Instant::now();
        let refused = budget
            .acquire(Priority::Issuance, soon)
            .await
            .expect_err("too late");
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(refused.retry_after, Duration::from_secs(5) + WINDOW_MARGIN);
    }

    #[tokio::test(start_paused = true)]
    async fn upstream_headers_and_retry_after_constrain_the_budget() {
        let budget = budget(50);
        let far = Instant::now() + Duration::from_secs(30);
        budget.observe_headers(Some(3), Some(Duration::from_secs(2)));
        // Reads keep the reserve (3) even by Cryptlex's count.
        assert!(
            budget
                .acquire(Priority::Read, Instant::now())
                .await
                .is_err()
        );
        budget
            .acquire(Priority::Issuance, far)
            .await
            .expect("issuance");
        budget.pause(Duration::from_secs(4));
        let started = Instant::now();
        budget
            .acquire(Priority::Issuance, far)
            .await
            .expect("after the pause");
        assert_eq!(started.elapsed(), Duration::from_secs(4));
    }

    #[tokio::test(start_paused = true)]
    async fn never_more_than_the_limit_start_in_any_window() {
        let budget = budget(5);
        let far = Instant::now() + Duration::from_secs(60);
        let mut starts = Vec::new();
        for _ in 0..20 {
            budget.acquire(Priority::Issuance, far).await.expect("slot");
            starts.push(Instant::now());
        }
        for (index, start) in starts.iter().enumerate() {
            let in_window = starts[index..]
                .iter()
                .filter(|other| other.duration_since(*start) < Duration::from_secs(5))
                .count();
            assert!(in_window <= 5, "{in_window} calls in one window");
        }
    }
}

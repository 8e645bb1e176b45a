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
//! burst of page views cannot delay a paid order. Session calls (refresh and
//! logout) come last: they keep the reads' reserve and may use only a share
//! of each window besides, because anyone can send them with junk tokens that
//! nothing can tell from real ones; a flood of them then costs the reads
//! their share at most and never reaches the slots Login needs. A call that cannot start in
//! time (before the caller's deadline, and within its class's maximum wait)
//! fails at once with the time to come back; there is no unbounded queue.
//!
//! # Waiting
//!
//! A call that cannot start at once waits in line, and the line is part of
//! the arithmetic: a call's slot is the one left after every call ahead of it
//! has taken one (all waiting calls of a higher priority, and those of its own
//! priority that came earlier). So whether a wait can succeed is known before
//! it begins, and a read whose slot is further away than `max_read_wait` is
//! refused at once, with that slot's time as `retry_after`, instead of waiting
//! only to fail. (A call that arrives later with a higher priority can still
//! push a waiting call past its limit; then it fails when it wakes.) A newcomer
//! never takes a slot that a waiting call of its own or a higher priority is
//! about to take.
//!
//! Each priority has its own bounded number of waiting places, so reads (and
//! junk sent as reads) can never take the places of sign-in or issuance, nor
//! sign-in those of issuance. A waiting call holds its place through a guard,
//! so the place is given back on every path, a caller that goes away included.
//!
//! The budget also follows what Cryptlex says: `X-Rate-Limit-Remaining` and
//! `X-Rate-Limit-Reset` cap it when another client on the same IP spends
//! part of the window, and a 429's `Retry-After` pauses every call.
//!
//! # Bounds
//! | bound | default | where set |
//! |---|---|---|
//! | calls starting per window | 50 per 5 s | `cryptlex.budget.max_requests`, `cryptlex.budget.window` |
//! | slots only issuance may use | 10 | `cryptlex.budget.reserved_for_issuance` |
//! | further slots reads may not use | 5 | `cryptlex.budget.reserved_for_sign_in` |
//! | session calls (refresh, logout) starting per window | 10 | [`BudgetOptions::session_share`] (in code, not configurable) |
//! | longest a read or session call waits | 500 ms | `cryptlex.budget.max_read_wait` |
//! | longest sign-in and issuance wait | the caller's deadline | `public.default_deadline`, `public.max_deadline`, `grpc-timeout` |
//! | session calls waiting at once | 32 | [`BudgetOptions::max_waiters`] (in code, not configurable) |
//! | reads waiting at once | 128 | [`BudgetOptions::max_waiters`] (in code, not configurable) |
//! | sign-in calls waiting at once | 64 | [`BudgetOptions::max_waiters`] (in code, not configurable) |
//! | issuance calls waiting at once | 64 | [`BudgetOptions::max_waiters`] (in code, not configurable) |
//! | margin a call stays in the log after its window | 250 ms | `WINDOW_MARGIN` |

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// Calls stay in the log this much longer than the window. Our clock starts
/// a call when it is sent, Cryptlex's when it arrives; without a margin a
/// call that travels faster than the one leaving the window could land in
/// the same upstream window and be the 51st.
const WINDOW_MARGIN: Duration = Duration::from_millis(250);

/// How important an upstream call is, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Refresh and logout: they need no credential that a caller must prove
    /// first (any string is a refresh token, any JWT-shaped one may be an
    /// access token), so junk can be sent as them at no cost. Lowest, and held
    /// to a share of each window.
    Session,
    /// Profile and license reads: the bulk of traffic.
    Read,
    /// Login and sign-up: a person is waiting at a form.
    SignIn,
    /// License issuance and its lookups: someone has paid.
    Issuance,
}

impl Priority {
    /// Every priority, lowest first.
    pub const ALL: [Priority; 4] = [Self::Session, Self::Read, Self::SignIn, Self::Issuance];

    /// A label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::Read => "read",
            Self::SignIn => "sign_in",
            Self::Issuance => "issuance",
        }
    }
}

/// One value for each priority.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PerPriority<T> {
    pub session: T,
    pub read: T,
    pub sign_in: T,
    pub issuance: T,
}

impl<T> PerPriority<T> {
    /// The value for `priority`.
    pub fn get(&self, priority: Priority) -> &T {
        match priority {
            Priority::Session => &self.session,
            Priority::Read => &self.read,
            Priority::SignIn => &self.sign_in,
            Priority::Issuance => &self.issuance,
        }
    }

    fn get_mut(&mut self, priority: Priority) -> &mut T {
        match priority {
            Priority::Session => &mut self.session,
            Priority::Read => &mut self.read,
            Priority::SignIn => &mut self.sign_in,
            Priority::Issuance => &mut self.issuance,
        }
    }

    /// Each priority with its value, lowest priority first.
    pub fn iter(&self) -> impl Iterator<Item = (Priority, &T)> {
        Priority::ALL
            .into_iter()
            .map(move |priority| (priority, self.get(priority)))
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
    /// Longest a read or session call waits for a slot before failing.
    pub max_read_wait: Duration,
    /// Most session calls (refresh, logout) starting per window, within what
    /// reads may use.
    pub session_share: u32,
    /// Most calls of each priority waiting for a slot at once; more fail at
    /// once. Separate counts, so that no class can crowd out another.
    pub max_waiters: PerPriority<usize>,
}

impl Default for BudgetOptions {
    fn default() -> Self {
        Self {
            max_requests: 50,
            window: Duration::from_secs(5),
            reserved_for_issuance: 10,
            reserved_for_sign_in: 5,
            max_read_wait: Duration::from_millis(500),
            // A fifth of the window: far above what real users need (a
            // refresh per session every few minutes), while a flood leaves
            // reads most of theirs.
            session_share: 10,
            // Reads get the most because they are most of the traffic,
            // although at most the slots freeing within `max_read_wait` can
            // hold one usefully.
            max_waiters: PerPriority {
                session: 32,
                read: 128,
                sign_in: 64,
                issuance: 64,
            },
        }
    }
}

/// Why no slot could be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Exhausted {
    /// When a slot may be free again.
    pub retry_after: Duration,
}

/// The shared budget. Cloning is cheap and shares the state.
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    options: BudgetOptions,
    state: Arc<Mutex<State>>,
    /// The count every replica shares, when replicas share one budget.
    #[expect(dead_code, reason = "read once admission consults the shared window")]
    shared: Option<Arc<dyn super::SharedWindow>>,
}

#[derive(Debug)]
struct State {
    /// Start times of the calls in the current window, oldest first.
    started: VecDeque<Instant>,
    /// The same, for session calls only (they are also in `started`).
    session_started: VecDeque<Instant>,
    /// Cryptlex's own count: calls left until `reset`, minus those we
    /// started since it said so.
    upstream: Option<(u32, Instant)>,
    /// No call may start before this (after a 429).
    paused_until: Option<Instant>,
    /// The tickets of the calls waiting for a slot, per priority, in the
    /// order they arrived.
    waiting: PerPriority<VecDeque<u64>>,
    /// The next waiting call's ticket.
    next_ticket: u64,
}

/// A snapshot for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetSnapshot {
    /// Slots left in the current window (for issuance; reads see fewer).
    pub remaining: u32,
    /// Calls waiting for a slot, all priorities.
    pub waiters: usize,
    pub waiters_by_priority: PerPriority<usize>,
}

/// A waiting call's place in line; dropping it (the call started, gave up or
/// was cancelled) gives the place back.
#[derive(Debug)]
struct WaitingPlace<'a> {
    budget: &'a Budget,
    priority: Priority,
    ticket: u64,
}

impl Drop for WaitingPlace<'_> {
    fn drop(&mut self) {
        self.budget.lock().leave(self.priority, self.ticket);
    }
}

/// What one look at the budget decided.
enum Step {
    Started,
    Refused(Exhausted),
    /// Sleep until then and look again; `joined` is the ticket of a place
    /// taken in line by this look.
    Wait {
        until: Instant,
        joined: Option<u64>,
    },
}

impl Budget {
    /// Creates a budget.
    pub(crate) fn new(options: BudgetOptions) -> Self {
        Self {
            options,
            state: Arc::new(Mutex::new(State {
                started: VecDeque::with_capacity(options.max_requests as usize),
                session_started: VecDeque::with_capacity(options.session_share as usize),
                upstream: None,
                paused_until: None,
                waiting: PerPriority::default(),
                next_ticket: 0,
            })),
            shared: None,
        }
    }

    /// The same budget, also bounded by `window`, which every replica shares.
    pub(crate) fn with_shared(self, window: Arc<dyn super::SharedWindow>) -> Self {
        Self {
            shared: Some(window),
            ..self
        }
    }

    /// The settings.
    #[cfg(test)]
    pub(crate) fn options(&self) -> &BudgetOptions {
        &self.options
    }

    /// Waits for a slot for a call of `priority` that must start before
    /// `deadline`, or fails at once when none will be free in time.
    pub(crate) async fn acquire(
        &self,
        priority: Priority,
        deadline: Instant,
    ) -> Result<(), Exhausted> {
        let max_wait = match priority {
            // A session call waits no longer than a read: junk must not hold
            // call slots, and a real one is retried by its caller.
            Priority::Session | Priority::Read => self.options.max_read_wait,
            Priority::SignIn | Priority::Issuance => Duration::MAX,
        };
        let give_up_at = deadline.min(Instant::now().checked_add(max_wait).unwrap_or(deadline));
        // Declared before the loop so that it lives through every sleep and
        // is dropped on every way out, including this future being dropped.
        let mut place: Option<WaitingPlace<'_>> = None;
        loop {
            let ticket = place.as_ref().map(|place| place.ticket);
            let step = self.step(priority, ticket, give_up_at);
            let until = match step {
                Step::Started => return Ok(()),
                Step::Refused(exhausted) => return Err(exhausted),
                Step::Wait { until, joined } => {
                    if let Some(ticket) = joined {
                        place = Some(WaitingPlace {
                            budget: self,
                            priority,
                            ticket,
                        });
                    }
                    until
                }
            };
            tokio::time::sleep_until(until).await;
        }
    }

    /// Takes a slot, or decides between waiting (taking a place in line if
    /// `ticket` holds none yet) and refusing.
    fn step(&self, priority: Priority, ticket: Option<u64>, give_up_at: Instant) -> Step {
        let now = Instant::now();
        let mut state = self.lock();
        let next_free = match state.try_take(&self.options, priority, ticket, now) {
            Ok(()) => {
                // Leave the line now, under the same lock, so that no other
                // call counts this one both in the window and ahead of it.
                if let Some(ticket) = ticket {
                    state.leave(priority, ticket);
                }
                return Step::Started;
            }
            Err(next_free) => next_free,
        };
        let refused = Step::Refused(Exhausted {
            retry_after: next_free.saturating_duration_since(now),
        });
        if next_free > give_up_at {
            return refused;
        }
        if ticket.is_some() {
            return Step::Wait {
                until: next_free,
                joined: None,
            };
        }
        let line = state.waiting.get(priority).len();
        if line >= *self.options.max_waiters.get(priority) {
            return refused;
        }
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.waiting.get_mut(priority).push_back(ticket);
        Step::Wait {
            until: next_free,
            joined: Some(ticket),
        }
    }

    /// Records what Cryptlex said about its own count in a response.
    pub(crate) fn observe_headers(&self, remaining: Option<u32>, reset_in: Option<Duration>) {
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
    pub(crate) fn pause(&self, retry_after: Duration) {
        let until = Instant::now() + retry_after;
        let mut state = self.lock();
        if state.paused_until.is_none_or(|current| current < until) {
            state.paused_until = Some(until);
        }
    }

    /// The current state.
    pub(crate) fn snapshot(&self) -> BudgetSnapshot {
        let now = Instant::now();
        let mut state = self.lock();
        state.expire(&self.options, now);
        let used = u32::try_from(state.started.len()).unwrap_or(u32::MAX);
        let mut remaining = self.options.max_requests.saturating_sub(used);
        if let Some((upstream_remaining, _)) = state.upstream {
            remaining = remaining.min(upstream_remaining);
        }
        let waiters_by_priority = PerPriority {
            session: state.waiting.session.len(),
            read: state.waiting.read.len(),
            sign_in: state.waiting.sign_in.len(),
            issuance: state.waiting.issuance.len(),
        };
        BudgetSnapshot {
            remaining,
            waiters: waiters_by_priority.iter().map(|(_, count)| count).sum(),
            waiters_by_priority,
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
        while self
            .session_started
            .front()
            .is_some_and(|started| now.duration_since(*started) >= options.window + WINDOW_MARGIN)
        {
            self.session_started.pop_front();
        }
        if self.upstream.is_some_and(|(_, reset)| reset <= now) {
            self.upstream = None;
        }
        if self.paused_until.is_some_and(|until| until <= now) {
            self.paused_until = None;
        }
    }

    /// How many waiting calls take a slot before a call of `priority`
    /// holding `ticket` (or arriving now, without one): all those of higher
    /// priority, and those of its own that came earlier.
    fn ahead(&self, priority: Priority, ticket: Option<u64>) -> usize {
        let higher: usize = self
            .waiting
            .iter()
            .filter(|(other, _)| *other > priority)
            .map(|(_, line)| line.len())
            .sum();
        higher + self.earlier(priority, ticket)
    }

    /// How many waiting calls of `priority` came before the one holding
    /// `ticket` (or before one arriving now, without one).
    fn earlier(&self, priority: Priority, ticket: Option<u64>) -> usize {
        let own_line = self.waiting.get(priority);
        match ticket {
            Some(ticket) => own_line
                .iter()
                .take_while(|other| **other != ticket)
                .count(),
            None => own_line.len(),
        }
    }

    /// Gives a waiting call's place back; nothing if it was already given.
    fn leave(&mut self, priority: Priority, ticket: u64) {
        let line = self.waiting.get_mut(priority);
        if let Some(position) = line.iter().position(|other| *other == ticket) {
            line.remove(position);
        }
    }

    /// Takes a slot, or says when one may be free for this call once the
    /// calls ahead of it have taken theirs.
    fn try_take(
        &mut self,
        options: &BudgetOptions,
        priority: Priority,
        ticket: Option<u64>,
        now: Instant,
    ) -> Result<(), Instant> {
        self.expire(options, now);
        if let Some(until) = self.paused_until {
            return Err(until);
        }
        let ahead = self.ahead(priority, ticket);
        let reserve = match priority {
            Priority::Session | Priority::Read => {
                options.reserved_for_issuance + options.reserved_for_sign_in
            }
            Priority::SignIn => options.reserved_for_issuance,
            Priority::Issuance => 0,
        };
        let limit = options.max_requests.saturating_sub(reserve).max(1) as usize;
        // The window as it will be once every call ahead has started.
        let mut frees_at = slot_frees_at(
            &self.started,
            self.started.len() + ahead,
            limit,
            options,
            now,
        );
        if priority == Priority::Session {
            // Within its share too: only earlier session calls are ahead of
            // it there. It must wait for whichever frees later (`None`, free
            // now, is the least of all).
            let share = options.session_share.max(1) as usize;
            let in_share = self.session_started.len() + self.earlier(priority, ticket);
            frees_at = frees_at.max(slot_frees_at(
                &self.session_started,
                in_share,
                share,
                options,
                now,
            ));
        }
        if let Some(frees_at) = frees_at {
            return Err(frees_at);
        }
        if let Some((remaining, reset)) = &mut self.upstream {
            let upstream_reserve = match priority {
                Priority::Session | Priority::Read => reserve,
                Priority::SignIn => options.reserved_for_issuance.min(reserve),
                Priority::Issuance => 0,
            };
            let ahead = u32::try_from(ahead).unwrap_or(u32::MAX);
            if *remaining <= upstream_reserve.saturating_add(ahead) {
                return Err(*reset);
            }
            *remaining -= 1;
        }
        self.started.push_back(now);
        if priority == Priority::Session {
            self.session_started.push_back(now);
        }
        Ok(())
    }
}

/// When a slot frees for a call that finds `in_window` calls in `started`'s
/// window (counting those ahead of it that have not started yet) under a
/// `limit`; `None` when one is free now.
fn slot_frees_at(
    started: &VecDeque<Instant>,
    in_window: usize,
    limit: usize,
    options: &BudgetOptions,
    now: Instant,
) -> Option<Instant> {
    if in_window < limit {
        return None;
    }
    // The slot we need frees when enough of the oldest calls leave the
    // window. When calls that have not started yet would have to leave it,
    // the earliest that can happen is a whole window from now: look again
    // then.
    let leaving = in_window - limit;
    let started_at = started.get(leaving).map_or(now, |started| *started);
    Some(started_at + options.window + WINDOW_MARGIN)
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
            session_share: 2,
            max_waiters: PerPriority {
                session: 8,
                read: 8,
                sign_in: 8,
                issuance: 8,
            },
        })
    }

    /// Lets the spawned tasks run until `done` holds (they join the line on
    /// their first poll).
    async fn until(mut done: impl FnMut() -> bool) {
        for _ in 0..100 {
            if done() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the spawned tasks never got there");
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

    /// Takes `count` slots of `priority` that are free now.
    async fn take(budget: &Budget, priority: Priority, count: usize) {
        let far = Instant::now() + Duration::from_secs(30);
        for taken in 0..count {
            let slot = budget.acquire(priority, far).await;
            assert!(slot.is_ok(), "{priority:?} slot {taken} of {count}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn session_calls_keep_to_their_share_and_leave_the_sign_in_reserve_alone() {
        let budget = budget(10);
        let far = Instant::now() + Duration::from_secs(30);
        take(&budget, Priority::Session, 2).await;
        let refused = budget
            .acquire(Priority::Session, far)
            .await
            .expect_err("the share is used");
        assert_eq!(refused.retry_after, Duration::from_secs(5) + WINDOW_MARGIN);

        // Reads may use 7 slots: the sessions took two of them, and none of
        // the sign-in reserve.
        take(&budget, Priority::Read, 5).await;
        assert!(budget.acquire(Priority::Read, far).await.is_err());
        take(&budget, Priority::SignIn, 1).await;
        tokio::time::advance(Duration::from_secs(5) + WINDOW_MARGIN).await;
        take(&budget, Priority::Session, 2).await;
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_session_calls_are_never_ahead_of_reads() {
        let budget = Budget::new(BudgetOptions {
            // Long enough for a session call to wait for its share.
            max_read_wait: Duration::from_secs(10),
            session_share: 1,
            ..*budget(10).options()
        });
        let far = Instant::now() + Duration::from_secs(30);
        take(&budget, Priority::Session, 1).await;
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.acquire(Priority::Session, far).await }
        });
        until(|| budget.snapshot().waiters_by_priority.session == 1).await;

        let arrived = Instant::now();
        // All that reads may use but the session call's slot: the waiting
        // one is not ahead of them.
        take(&budget, Priority::Read, 6).await;

        assert_eq!(arrived.elapsed(), Duration::ZERO);
        waiting
            .await
            .expect("task")
            .expect("the session call gets the next window's slot");
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

    #[tokio::test(start_paused = true)]
    async fn waiting_calls_that_are_dropped_give_their_places_back() {
        let budget = budget(3);
        let far = Instant::now() + Duration::from_secs(30);
        for _ in 0..3 {
            budget.acquire(Priority::Issuance, far).await.expect("slot");
        }
        let mut waiting = Vec::new();
        for priority in [Priority::SignIn, Priority::SignIn, Priority::Issuance] {
            let budget = budget.clone();
            waiting.push(tokio::spawn(
                async move { budget.acquire(priority, far).await },
            ));
        }
        until(|| budget.snapshot().waiters == 3).await;
        assert_eq!(
            budget.snapshot().waiters_by_priority,
            PerPriority {
                session: 0,
                read: 0,
                sign_in: 2,
                issuance: 1
            }
        );

        for call in &waiting {
            call.abort();
        }
        for call in waiting {
            assert!(call.await.expect_err("aborted").is_cancelled());
        }

        assert_eq!(budget.snapshot().waiters, 0);
        assert_eq!(
            budget.snapshot().waiters_by_priority,
            PerPriority::default()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn reads_cannot_take_the_waiting_places_of_sign_in_and_issuance() {
        let budget = Budget::new(BudgetOptions {
            max_requests: 10,
            window: Duration::from_secs(5),
            reserved_for_issuance: 2,
            reserved_for_sign_in: 1,
            // Long enough for reads to wait for the window to slide.
            max_read_wait: Duration::from_secs(10),
            session_share: 2,
            max_waiters: PerPriority {
                session: 1,
                read: 2,
                sign_in: 1,
                issuance: 1,
            },
        });
        let far = Instant::now() + Duration::from_secs(30);
        for _ in 0..10 {
            budget.acquire(Priority::Issuance, far).await.expect("slot");
        }
        let mut reads = Vec::new();
        for _ in 0..2 {
            let budget = budget.clone();
            reads.push(tokio::spawn(async move {
                budget.acquire(Priority::Read, far).await
            }));
        }
        until(|| budget.snapshot().waiters_by_priority.read == 2).await;

        let third_read = budget.acquire(Priority::Read, far).await;
        assert!(third_read.is_err(), "the reads' places are taken");
        let started = Instant::now();
        let (sign_in, issuance) = tokio::join!(
            budget.acquire(Priority::SignIn, far),
            budget.acquire(Priority::Issuance, far),
        );

        sign_in.expect("sign-in waited in a place of its own");
        issuance.expect("issuance waited in a place of its own");
        assert_eq!(started.elapsed(), Duration::from_secs(5) + WINDOW_MARGIN);
        for read in reads {
            read.await
                .expect("task")
                .expect("the waiting reads get slots too");
        }
        assert_eq!(budget.snapshot().waiters, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_whose_slot_a_waiting_call_will_take_is_refused_at_once() {
        let budget = budget(10);
        let far = Instant::now() + Duration::from_secs(30);
        // Reads may use 7 slots: one started now, six two seconds later.
        budget.acquire(Priority::Read, far).await.expect("slot");
        tokio::time::advance(Duration::from_secs(2)).await;
        for _ in 0..6 {
            budget.acquire(Priority::Read, far).await.expect("slot");
        }
        // 50 ms before the first slot frees; reads may wait 100 ms.
        tokio::time::advance(Duration::from_millis(3200)).await;
        let first = tokio::spawn({
            let budget = budget.clone();
            async move { budget.acquire(Priority::Read, far).await }
        });
        until(|| budget.snapshot().waiters == 1).await;

        let arrived = Instant::now();
        let refused = budget
            .acquire(Priority::Read, far)
            .await
            .expect_err("the only slot within reach is the first read's");

        assert_eq!(arrived.elapsed(), Duration::ZERO, "refused without waiting");
        assert_eq!(
            refused.retry_after,
            Duration::from_secs(2) + Duration::from_millis(50),
            "told when the next slot after the waiting read's frees"
        );
        first
            .await
            .expect("task")
            .expect("the waiting read gets its slot");
    }

    #[tokio::test(start_paused = true)]
    async fn a_newcomer_does_not_take_the_slot_a_waiting_call_is_about_to_take() {
        let budget = budget(3);
        let far = Instant::now() + Duration::from_secs(30);
        budget.acquire(Priority::Issuance, far).await.expect("slot");
        tokio::time::advance(Duration::from_secs(1)).await;
        for _ in 0..2 {
            budget.acquire(Priority::Issuance, far).await.expect("slot");
        }
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move {
                budget.acquire(Priority::Issuance, far).await?;
                Ok::<_, Exhausted>(Instant::now())
            }
        });
        until(|| budget.snapshot().waiters == 1).await;

        let newcomer = budget
            .acquire(Priority::Issuance, far)
            .await
            .map(|()| Instant::now());

        let waiting = waiting.await.expect("task").expect("slot");
        let newcomer = newcomer.expect("slot");
        assert!(waiting < newcomer, "first come, first served");
        assert_eq!(
            newcomer - waiting,
            Duration::from_secs(1),
            "the newcomer took the next slot to free"
        );
    }
}

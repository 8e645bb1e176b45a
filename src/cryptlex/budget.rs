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
//! logout) keep the reads' reserve and may use only a share of each window
//! besides, because anyone can send them with junk tokens that nothing can
//! tell from real ones; a flood of them then costs the reads their share at
//! most and never reaches the slots Login needs. Background refreshes
//! (stale-while-revalidate) come last of all: they start only when nobody is
//! waiting and plenty of the reads' share is free, and never wait.
//!
//! Reads are also shared fairly: one session may start only
//! `per_session_reads` per window, and all sessions whose token nothing
//! vouches for (anyone can make one up) together only `unvouched_reads`, so
//! neither one heavy user nor a flood of distinct made-up sessions can take
//! the reads' whole share from known users.
//!
//! # Deciding at once
//!
//! A call that cannot start now books the first slot it may have: the log
//! holds the calls that started and, at their future times, the calls that
//! booked a slot. Everyone counts both, so a booked slot is never taken by
//! anyone else, whatever arrives later: a call that waits is certain to
//! start, and a call whose first possible slot is too far away (past the
//! caller's deadline, or `max_read_wait` for reads and session calls) is
//! refused in microseconds, with that slot's time as `retry_after`. Priority
//! does not reorder the waiting calls: it is in the limits instead, because
//! reads never book the slots reserved for sign-in and issuance. The only
//! thing that can still stop a booked call is Cryptlex itself: after a 429
//! every call waits out its `Retry-After`, and one that cannot is refused.
//!
//! Each priority has its own bounded number of waiting places, so reads (and
//! junk sent as reads) can never take the places of sign-in or issuance, nor
//! sign-in those of issuance. A booking is held by a guard, so it is given
//! back on every path, a caller that goes away included.
//!
//! # Replicas
//!
//! With a [`SharedWindow`] (replicas behind one egress IP sharing the count,
//! e.g. in PostgreSQL), a call also needs the shared window to record its
//! start, under the same limit its priority has locally, so priorities hold
//! across replicas. Reads, session calls and background refreshes never wait
//! in this mode (another replica may take any slot they would wait for);
//! sign-in and issuance wait for the time the shared window names, within
//! their deadline. When the shared window cannot be reached, this replica
//! falls back to its static share (`fallback_share`) and looks again every
//! [`SHARED_RETRY_INTERVAL`].
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
//! | reads one session starts per window | 12 | `cryptlex.budget.per_session_reads` |
//! | reads all unvouched sessions start per window | 10 | `cryptlex.budget.unvouched_reads` |
//! | reads' slots that must be free for a background refresh | 10 | `cryptlex.budget.background_headroom` |
//! | calls per window when the shared window is unreachable | 25 | `cryptlex.budget.fallback_share` |
//! | longest a read or session call waits | 500 ms | `cryptlex.budget.max_read_wait` |
//! | longest sign-in and issuance wait | the caller's deadline | `public.default_deadline`, `public.max_deadline`, `grpc-timeout` |
//! | calls waiting at once | 32 session, 128 read, 64 sign-in, 64 issuance, 0 background | [`BudgetOptions::max_waiters`] (in code, not configurable) |
//! | longest wait for the shared window's answer | 200 ms | `SHARED_TIMEOUT` |
//! | margin a call stays in the log after its window | 250 ms | `WINDOW_MARGIN` |
//!
//! The log, the session calls' log and the fairness logs hold only the calls
//! of the current window (and booked ones), so they are bounded by
//! `max_requests` plus the waiting places.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::shared_window::{Admit, SharedWindow, SharedWindowUnavailable};
use crate::domain::ReadShare;

/// Calls stay in the log this much longer than the window. Our clock starts
/// a call when it is sent, Cryptlex's when it arrives; without a margin a
/// call that travels faster than the one leaving the window could land in
/// the same upstream window and be the 51st.
pub(crate) const WINDOW_MARGIN: Duration = Duration::from_millis(250);

/// Longest a call waits for the shared window's answer before this replica
/// treats it as unreachable.
const SHARED_TIMEOUT: Duration = Duration::from_millis(200);

/// While falling back to the static share, how often one call tries the
/// shared window again.
pub(crate) const SHARED_RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// Shortest pause before asking the shared window again after it named a
/// time, so that a `NotBefore(0)` cannot become a busy loop.
const MIN_SHARED_PAUSE: Duration = Duration::from_millis(5);

/// How important an upstream call is, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// A stale-while-revalidate refresh nobody waits for: it uses only
    /// budget nobody else needs, and never waits.
    Background,
    /// Refresh and logout: they need no credential that a caller must prove
    /// first (any string is a refresh token, any JWT-shaped one may be an
    /// access token), so junk can be sent as them at no cost. Held to a share
    /// of each window.
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
    pub const ALL: [Priority; 5] = [
        Self::Background,
        Self::Session,
        Self::Read,
        Self::SignIn,
        Self::Issuance,
    ];

    /// A label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Background => "background",
            Self::Session => "session",
            Self::Read => "read",
            Self::SignIn => "sign_in",
            Self::Issuance => "issuance",
        }
    }

    /// Whether a call of this priority waits at most `max_read_wait` and
    /// stays out of the reserves.
    fn is_low(self) -> bool {
        self <= Self::Read
    }
}

/// One value for each priority.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PerPriority<T> {
    pub background: T,
    pub session: T,
    pub read: T,
    pub sign_in: T,
    pub issuance: T,
}

impl<T> PerPriority<T> {
    /// The value for `priority`.
    pub fn get(&self, priority: Priority) -> &T {
        match priority {
            Priority::Background => &self.background,
            Priority::Session => &self.session,
            Priority::Read => &self.read,
            Priority::SignIn => &self.sign_in,
            Priority::Issuance => &self.issuance,
        }
    }

    fn get_mut(&mut self, priority: Priority) -> &mut T {
        match priority {
            Priority::Background => &mut self.background,
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
    /// Calls allowed per window (for all replicas together when they share a
    /// window; for this replica alone otherwise).
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
    /// Most reads one session starts per window.
    pub per_session_reads: u32,
    /// Most reads all unvouched sessions together start per window.
    pub unvouched_reads: u32,
    /// Slots of the reads' share that must be free for a background refresh
    /// to start.
    pub background_headroom: u32,
    /// Calls per window this replica may start while the shared window
    /// cannot be reached (the reserves apply within it).
    pub fallback_share: u32,
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
            // A first page view costs about three reads (the profile, the
            // page, the probe past a full page), and paging through a few
            // pages quickly must not be refused; one session still gets at
            // most a third of the reads' 35.
            per_session_reads: 12,
            // Enough for a few sessions whose tokens the cache has not seen
            // yet (after a restart); the rest of the reads' 35 stays for the
            // known ones.
            unvouched_reads: 10,
            background_headroom: 10,
            // Half the limit: two replicas that both lose the database stay
            // within it together.
            fallback_share: 25,
            // Reads get the most because they are most of the traffic,
            // although at most the slots freeing within `max_read_wait` can
            // hold one usefully. Background refreshes never wait.
            max_waiters: PerPriority {
                background: 0,
                session: 32,
                read: 128,
                sign_in: 64,
                issuance: 64,
            },
        }
    }
}

impl BudgetOptions {
    /// Most calls in any window, counting every priority, when a call of
    /// `priority` starts, out of a window of `max` calls.
    fn limit(&self, priority: Priority, max: u32) -> u32 {
        let reads = self.reserved_for_issuance + self.reserved_for_sign_in;
        let limit = match priority {
            // "At least `background_headroom` free" before it starts.
            Priority::Background => max
                .saturating_sub(reads)
                .saturating_sub(self.background_headroom)
                .saturating_add(1),
            Priority::Session | Priority::Read => max.saturating_sub(reads),
            Priority::SignIn => max.saturating_sub(self.reserved_for_issuance),
            Priority::Issuance => max,
        };
        limit.max(1)
    }

    /// Cryptlex's own remaining count a call of `priority` must leave.
    fn upstream_reserve(&self, priority: Priority) -> u32 {
        match priority {
            Priority::Background | Priority::Session | Priority::Read => {
                self.reserved_for_issuance + self.reserved_for_sign_in
            }
            Priority::SignIn => self.reserved_for_issuance,
            Priority::Issuance => 0,
        }
    }

    /// How long a call stays in the log.
    fn span(&self) -> Duration {
        self.window + WINDOW_MARGIN
    }
}

/// Why no slot could be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Exhausted {
    /// When a slot may be free again.
    pub retry_after: Duration,
}

/// Which count bounds this replica's calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetMode {
    /// Its own window only (no shared window configured).
    Local,
    /// Its own window and the window every replica shares.
    Shared,
    /// The shared window is unreachable: its own window, within
    /// `fallback_share`.
    Fallback,
}

impl BudgetMode {
    /// Every mode.
    pub const ALL: [BudgetMode; 3] = [Self::Local, Self::Shared, Self::Fallback];

    /// A label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Shared => "shared",
            Self::Fallback => "fallback",
        }
    }
}

/// The shared budget. Cloning is cheap and shares the state.
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    options: BudgetOptions,
    state: Arc<Mutex<State>>,
    /// The count every replica shares, when replicas share one budget.
    shared: Option<Arc<dyn SharedWindow>>,
}

/// Start times (past, or booked in the future), oldest first, each with the
/// id of the call that holds it.
type Log = VecDeque<(Instant, u64)>;

#[derive(Debug)]
struct State {
    /// Every call in the current window.
    all: Log,
    /// The session calls among them.
    sessions: Log,
    /// The reads for unvouched sessions among them.
    unvouched: Log,
    /// The reads of each session (by its digest); a session without calls in
    /// the window has no entry.
    per_session: HashMap<u64, Log>,
    /// Cryptlex's own count: calls left until `reset`, minus those we
    /// started or booked since it said so.
    upstream: Option<(u32, Instant)>,
    /// No call may start before this (after a 429).
    paused_until: Option<Instant>,
    /// Calls holding a booked slot that has not come yet, per priority.
    waiting: PerPriority<usize>,
    /// The next call's id.
    next_id: u64,
    mode: BudgetMode,
    /// While falling back: when a call may try the shared window again.
    retry_shared_at: Instant,
}

/// A snapshot for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetSnapshot {
    /// Slots left in the current window (for issuance; reads see fewer).
    pub remaining: u32,
    /// Calls waiting for a slot, all priorities.
    pub waiters: usize,
    pub waiters_by_priority: PerPriority<usize>,
    /// Which count bounds the calls.
    pub mode: BudgetMode,
}

/// What a call is counted as.
#[derive(Debug, Clone, Copy)]
struct Claim {
    priority: Priority,
    /// The session whose read this is (reads only; background refreshes
    /// are not held to the sessions' shares).
    share: Option<ReadShare>,
}

/// A call's entries in the log; dropping it (the call gave up, was refused
/// by the shared window or was cancelled) takes them out again, and gives
/// back its waiting place if it still holds one.
#[derive(Debug)]
struct Slot<'a> {
    budget: &'a Budget,
    id: u64,
    claim: Claim,
    /// Still waiting for its booked time.
    waiting: bool,
    /// Started: the entries stay until they leave the window.
    kept: bool,
    /// The mode whose limits admitted it.
    admitted: BudgetMode,
    /// It booked a slot (rather than starting at once).
    booked: bool,
}

impl Slot<'_> {
    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        let mut state = self.budget.lock();
        state.remove(self.claim, self.id);
        if self.waiting {
            *state.waiting.get_mut(self.claim.priority) -= 1;
        }
    }
}

/// What one look at the budget decided.
enum Step<'a> {
    /// A slot is taken now.
    Started(Slot<'a>),
    /// A slot is booked for then.
    Booked(Slot<'a>, Instant),
    Refused(Exhausted),
}

/// Whether a call that has its local slot also asks the shared window.
enum Consult {
    No,
    Shared,
    /// The shared window was unreachable; this call looks whether it is
    /// back (its local slot is already within the fallback share).
    Probe,
    /// The slot was admitted under the shared limits, but the shared window
    /// has become unreachable since: look again under the fallback share.
    Again,
}

impl Budget {
    /// Creates a budget.
    pub(crate) fn new(options: BudgetOptions) -> Self {
        super::observe::budget_mode(BudgetMode::Local);
        Self {
            options,
            state: Arc::new(Mutex::new(State {
                // Room for Cryptlex's real window at once; a budget lifted far
                // beyond it (the benchmark's million) grows only as far as its
                // window actually fills, instead of a ring of `max_requests`
                // entries whose every page the head touches as it goes round.
                all: VecDeque::with_capacity((options.max_requests as usize).min(1024)),
                sessions: VecDeque::new(),
                unvouched: VecDeque::new(),
                per_session: HashMap::new(),
                upstream: None,
                paused_until: None,
                waiting: PerPriority::default(),
                next_id: 0,
                mode: BudgetMode::Local,
                retry_shared_at: Instant::now(),
            })),
            shared: None,
        }
    }

    /// The same budget, also bounded by `window`, which every replica shares.
    pub(crate) fn with_shared(self, window: Arc<dyn SharedWindow>) -> Self {
        self.lock().mode = BudgetMode::Shared;
        super::observe::budget_mode(BudgetMode::Shared);
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

    /// Waits for a slot for a call of `priority` (made for `share`, when it
    /// is a user's read) that must start before `deadline`, or fails at
    /// once when none will be free in time.
    pub(crate) async fn acquire(
        &self,
        priority: Priority,
        deadline: Instant,
        share: Option<ReadShare>,
    ) -> Result<(), Exhausted> {
        let claim = Claim {
            priority,
            share: share.filter(|_| priority == Priority::Read),
        };
        let max_wait = if priority.is_low() {
            // A session call waits no longer than a read: junk must not hold
            // call slots, and a real one is retried by its caller.
            self.options.max_read_wait
        } else {
            Duration::MAX
        };
        let give_up_at = deadline.min(Instant::now().checked_add(max_wait).unwrap_or(deadline));
        loop {
            let slot = match self.step(claim, give_up_at) {
                Step::Refused(exhausted) => return Err(exhausted),
                Step::Started(slot) => slot,
                Step::Booked(mut slot, at) => {
                    // The slot lives through the sleep and is given back if
                    // this future is dropped.
                    tokio::time::sleep_until(at).await;
                    match self.arrive(&mut slot) {
                        Ok(()) => slot,
                        // Paused by a 429 since it booked.
                        Err(exhausted) if priority.is_low() => return Err(exhausted),
                        Err(_) => continue,
                    }
                }
            };
            let Some(shared) = &self.shared else {
                slot.keep();
                return Ok(());
            };
            let waited = slot.booked && priority.is_low();
            let consult = self.lock().consult(Instant::now(), slot.admitted, waited);
            let probe = match consult {
                Consult::No => {
                    slot.keep();
                    return Ok(());
                }
                Consult::Again => continue,
                Consult::Shared => false,
                Consult::Probe => true,
            };
            let limit = self.options.limit(priority, self.options.max_requests);
            let answer = tokio::time::timeout(
                SHARED_TIMEOUT + MIN_SHARED_PAUSE,
                shared.try_start(limit, self.options.span(), SHARED_TIMEOUT),
            )
            .await
            .unwrap_or_else(|_| {
                Err(SharedWindowUnavailable {
                    reason: format!("no answer within {SHARED_TIMEOUT:?}"),
                })
            });
            match answer {
                Ok(Admit::Started) => {
                    self.shared_reachable();
                    slot.keep();
                    return Ok(());
                }
                Ok(Admit::NotBefore(after)) => {
                    self.shared_reachable();
                    drop(slot);
                    let after = after.max(MIN_SHARED_PAUSE);
                    // Another replica may take whatever a read would wait
                    // for: only sign-in and issuance wait for the shared
                    // window, within their deadline.
                    let within = Instant::now()
                        .checked_add(after)
                        .is_some_and(|at| at <= give_up_at);
                    if priority.is_low() || !within {
                        return Err(Exhausted { retry_after: after });
                    }
                    tokio::time::sleep(after).await;
                }
                Err(unavailable) => {
                    self.shared_unavailable(&unavailable);
                    if probe {
                        // Already admitted within the fallback share.
                        slot.keep();
                        return Ok(());
                    }
                    // Admitted under the shared limits: look again under
                    // the fallback share.
                    drop(slot);
                }
            }
        }
    }

    /// Takes a slot now, books one, or refuses.
    fn step(&self, claim: Claim, give_up_at: Instant) -> Step<'_> {
        let now = Instant::now();
        let mut state = self.lock();
        state.expire(&self.options, now);
        let priority = claim.priority;
        let max = match state.mode {
            BudgetMode::Fallback => self.options.fallback_share,
            BudgetMode::Local | BudgetMode::Shared => self.options.max_requests,
        };
        let at = state.earliest(&self.options, claim, max, now);
        let refused = Step::Refused(Exhausted {
            retry_after: at.saturating_duration_since(now),
        });
        let waiting_anywhere = state.waiting.iter().any(|(_, count)| *count > 0);
        if priority == Priority::Background && waiting_anywhere {
            return refused;
        }
        let waits = at > now;
        if waits {
            let may_wait = match priority {
                Priority::Background => false,
                // In shared mode, a slot free here may be taken elsewhere.
                _ if priority.is_low() => state.mode != BudgetMode::Shared,
                _ => true,
            };
            if !may_wait
                || at > give_up_at
                || *state.waiting.get(priority) >= *self.options.max_waiters.get(priority)
            {
                return refused;
            }
        }
        let id = state.next_id;
        state.next_id += 1;
        state.insert(claim, at, id);
        if let Some((remaining, reset)) = &mut state.upstream
            && at < *reset
        {
            *remaining = remaining.saturating_sub(1);
        }
        let slot = Slot {
            budget: self,
            id,
            claim,
            waiting: waits,
            kept: false,
            admitted: state.mode,
            booked: waits,
        };
        if waits {
            *state.waiting.get_mut(priority) += 1;
            Step::Booked(slot, at)
        } else {
            Step::Started(slot)
        }
    }

    /// A booked call's time has come: it starts, unless a 429 paused every
    /// call since it booked (then its booking is given back).
    fn arrive(&self, slot: &mut Slot<'_>) -> Result<(), Exhausted> {
        let now = Instant::now();
        let mut state = self.lock();
        *state.waiting.get_mut(slot.claim.priority) -= 1;
        slot.waiting = false;
        match state.paused_until {
            Some(until) if until > now => Err(Exhausted {
                retry_after: until - now,
            }),
            _ => Ok(()),
        }
    }

    /// The shared window answered.
    fn shared_reachable(&self) {
        let mut state = self.lock();
        if state.mode == BudgetMode::Fallback {
            state.mode = BudgetMode::Shared;
            drop(state);
            tracing::info!("the shared upstream budget is reachable again");
            super::observe::budget_mode(BudgetMode::Shared);
        }
    }

    /// The shared window could not be consulted: fall back to the static
    /// share, and say so once per outage.
    fn shared_unavailable(&self, unavailable: &SharedWindowUnavailable) {
        let now = Instant::now();
        let mut state = self.lock();
        state.retry_shared_at = now + SHARED_RETRY_INTERVAL;
        if state.mode == BudgetMode::Fallback {
            tracing::debug!(%unavailable, "the shared upstream budget is still unavailable");
            return;
        }
        state.mode = BudgetMode::Fallback;
        drop(state);
        tracing::warn!(
            %unavailable,
            fallback_share = self.options.fallback_share,
            "falling back to this replica's static share of the upstream budget"
        );
        super::observe::budget_mode(BudgetMode::Fallback);
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
        let max = match state.mode {
            BudgetMode::Fallback => self.options.fallback_share,
            BudgetMode::Local | BudgetMode::Shared => self.options.max_requests,
        };
        let used = u32::try_from(state.all.len()).unwrap_or(u32::MAX);
        let mut remaining = max.saturating_sub(used);
        if let Some((upstream_remaining, _)) = state.upstream {
            remaining = remaining.min(upstream_remaining);
        }
        BudgetSnapshot {
            remaining,
            waiters: state.waiting.iter().map(|(_, count)| count).sum(),
            waiters_by_priority: state.waiting,
            mode: state.mode,
        }
    }

    /// How many sessions the fairness log holds (for tests of its bound).
    #[cfg(test)]
    fn sessions_tracked(&self) -> usize {
        let mut state = self.lock();
        state.expire(&self.options, Instant::now());
        state.per_session.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every update
        // is a few pushes and removals that cannot panic halfway.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl State {
    fn expire(&mut self, options: &BudgetOptions, now: Instant) {
        let span = options.span();
        let expire = |log: &mut Log| {
            while log
                .front()
                .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= span)
            {
                log.pop_front();
            }
        };
        expire(&mut self.all);
        expire(&mut self.sessions);
        expire(&mut self.unvouched);
        self.per_session.retain(|_, log| {
            expire(log);
            !log.is_empty()
        });
        if self.upstream.is_some_and(|(_, reset)| reset <= now) {
            self.upstream = None;
        }
        if self.paused_until.is_some_and(|until| until <= now) {
            self.paused_until = None;
        }
    }

    /// Whether the call that just took its local slot asks the shared
    /// window; while falling back, one call per interval does. A read or
    /// session call that waited for a slot of the fallback share starts in
    /// it: asking now could only refuse it after its wait.
    fn consult(&mut self, now: Instant, admitted: BudgetMode, low_and_waited: bool) -> Consult {
        if admitted == BudgetMode::Fallback && low_and_waited {
            return Consult::No;
        }
        match self.mode {
            BudgetMode::Local => Consult::No,
            BudgetMode::Shared => Consult::Shared,
            BudgetMode::Fallback if admitted != BudgetMode::Fallback => Consult::Again,
            BudgetMode::Fallback if now >= self.retry_shared_at => {
                self.retry_shared_at = now + SHARED_RETRY_INTERVAL;
                Consult::Probe
            }
            BudgetMode::Fallback => Consult::No,
        }
    }

    /// The earliest time from `now` at which a call of `claim` fits every
    /// limit it is held to, out of a window of `max` calls.
    fn earliest(&self, options: &BudgetOptions, claim: Claim, max: u32, now: Instant) -> Instant {
        let span = options.span();
        let mut logs: Vec<(&Log, u32)> = vec![(&self.all, options.limit(claim.priority, max))];
        if claim.priority == Priority::Session {
            logs.push((&self.sessions, options.session_share.max(1)));
        }
        if let Some(share) = claim.share {
            if let Some(log) = self.per_session.get(&share.session) {
                logs.push((log, options.per_session_reads.max(1)));
            }
            if !share.vouched {
                logs.push((&self.unvouched, options.unvouched_reads.max(1)));
            }
        }
        let mut lower = now;
        if let Some(until) = self.paused_until {
            lower = lower.max(until);
        }
        if let Some((remaining, reset)) = self.upstream
            && remaining <= options.upstream_reserve(claim.priority)
        {
            lower = lower.max(reset);
        }
        // Most calls find a slot free at once: that check is a few binary
        // searches, where collecting and sorting every booked time (below)
        // grows with the window's calls (a budget far above Cryptlex's, as
        // the benchmark's, holds thousands).
        if logs
            .iter()
            .all(|(log, limit)| fits(log, lower, *limit, span))
        {
            return lower;
        }
        // A slot can only free when a call leaves a window: try those times.
        let mut candidates: Vec<Instant> = std::iter::once(lower)
            .chain(
                logs.iter()
                    .flat_map(|(log, _)| log.iter().map(|(at, _)| *at + span))
                    .filter(|at| *at > lower),
            )
            .collect();
        candidates.sort_unstable();
        candidates.dedup();
        candidates
            .iter()
            .copied()
            .find(|at| logs.iter().all(|(log, limit)| fits(log, *at, *limit, span)))
            // The last candidate is after every call has left: it always fits.
            .unwrap_or_else(|| candidates.last().copied().unwrap_or(lower))
    }

    fn insert(&mut self, claim: Claim, at: Instant, id: u64) {
        insert_sorted(&mut self.all, at, id);
        if claim.priority == Priority::Session {
            insert_sorted(&mut self.sessions, at, id);
        }
        if let Some(share) = claim.share {
            insert_sorted(self.per_session.entry(share.session).or_default(), at, id);
            if !share.vouched {
                insert_sorted(&mut self.unvouched, at, id);
            }
        }
    }

    fn remove(&mut self, claim: Claim, id: u64) {
        let remove = |log: &mut Log| {
            if let Some(position) = log.iter().position(|(_, other)| *other == id) {
                log.remove(position);
            }
        };
        remove(&mut self.all);
        if claim.priority == Priority::Session {
            remove(&mut self.sessions);
        }
        if let Some(share) = claim.share {
            if let Some(log) = self.per_session.get_mut(&share.session) {
                remove(log);
                if log.is_empty() {
                    self.per_session.remove(&share.session);
                }
            }
            if !share.vouched {
                remove(&mut self.unvouched);
            }
        }
    }
}

fn insert_sorted(log: &mut Log, at: Instant, id: u64) {
    let position = log.partition_point(|(other, _)| *other <= at);
    log.insert(position, (at, id));
}

/// Whether one more call at `at` keeps every window of `span` that contains
/// it within `limit` calls of `log` (started or booked).
fn fits(log: &Log, at: Instant, limit: u32, span: Duration) -> bool {
    let limit = limit as usize;
    // Calls in the window ending at `end`: those after `end - span`, up to
    // `end`.
    let in_window = |end: Instant| {
        let from = end
            .checked_sub(span)
            .map_or(0, |start| log.partition_point(|(other, _)| *other <= start));
        let to = log.partition_point(|(other, _)| *other <= end);
        to - from
    };
    // The windows containing `at` end from `at` to `at + span`; their counts
    // only rise at a call's time. The log is sorted, so those calls are one
    // run after `at` (found by binary search, not by reading the whole log).
    let after = log.partition_point(|(other, _)| *other <= at);
    let later = log
        .range(after..)
        .map(|(other, _)| *other)
        .take_while(|other| *other < at + span);
    std::iter::once(at)
        .chain(later)
        .all(|end| in_window(end) < limit)
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
                background: 0,
                session: 8,
                read: 8,
                sign_in: 8,
                issuance: 8,
            },
            ..BudgetOptions::default()
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
                .acquire(Priority::Read, far, None)
                .await
                .expect("read slot");
        }
        let refused = budget
            .acquire(Priority::Read, far, None)
            .await
            .expect_err("reserve");
        assert!(refused.retry_after <= Duration::from_secs(5) + WINDOW_MARGIN);
        budget
            .acquire(Priority::SignIn, far, None)
            .await
            .expect("sign-in slot");
        budget
            .acquire(Priority::Issuance, far, None)
            .await
            .expect("issuance slot");
        budget
            .acquire(Priority::Issuance, far, None)
            .await
            .expect("issuance slot");
        assert_eq!(budget.snapshot().remaining, 0);
    }

    /// Takes `count` slots of `priority` that are free now.
    async fn take(budget: &Budget, priority: Priority, count: usize) {
        let far = Instant::now() + Duration::from_secs(30);
        for taken in 0..count {
            let slot = budget.acquire(priority, far, None).await;
            assert!(slot.is_ok(), "{priority:?} slot {taken} of {count}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn session_calls_keep_to_their_share_and_leave_the_sign_in_reserve_alone() {
        let budget = budget(10);
        let far = Instant::now() + Duration::from_secs(30);
        take(&budget, Priority::Session, 2).await;
        let refused = budget
            .acquire(Priority::Session, far, None)
            .await
            .expect_err("the share is used");
        assert_eq!(refused.retry_after, Duration::from_secs(5) + WINDOW_MARGIN);

        // Reads may use 7 slots: the sessions took two of them, and none of
        // the sign-in reserve.
        take(&budget, Priority::Read, 5).await;
        assert!(budget.acquire(Priority::Read, far, None).await.is_err());
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
            async move { budget.acquire(Priority::Session, far, None).await }
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
            budget
                .acquire(Priority::Issuance, far, None)
                .await
                .expect("slot");
        }
        let started = Instant::now();
        budget
            .acquire(Priority::Issuance, far, None)
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
                .acquire(Priority::Issuance, soon, None)
                .await
                .expect("slot");
        }
        let started = Instant::now();
        let refused = budget
            .acquire(Priority::Issuance, soon, None)
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
                .acquire(Priority::Read, Instant::now(), None)
                .await
                .is_err()
        );
        budget
            .acquire(Priority::Issuance, far, None)
            .await
            .expect("issuance");
        budget.pause(Duration::from_secs(4));
        let started = Instant::now();
        budget
            .acquire(Priority::Issuance, far, None)
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
            budget
                .acquire(Priority::Issuance, far, None)
                .await
                .expect("slot");
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
            budget
                .acquire(Priority::Issuance, far, None)
                .await
                .expect("slot");
        }
        let mut waiting = Vec::new();
        for priority in [Priority::SignIn, Priority::SignIn, Priority::Issuance] {
            let budget = budget.clone();
            waiting.push(tokio::spawn(async move {
                budget.acquire(priority, far, None).await
            }));
        }
        until(|| budget.snapshot().waiters == 3).await;
        assert_eq!(
            budget.snapshot().waiters_by_priority,
            PerPriority {
                background: 0,
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
                background: 0,
                session: 1,
                read: 2,
                sign_in: 1,
                issuance: 1,
            },
            ..BudgetOptions::default()
        });
        let far = Instant::now() + Duration::from_secs(30);
        for _ in 0..10 {
            budget
                .acquire(Priority::Issuance, far, None)
                .await
                .expect("slot");
        }
        let mut reads = Vec::new();
        for _ in 0..2 {
            let budget = budget.clone();
            reads.push(tokio::spawn(async move {
                budget.acquire(Priority::Read, far, None).await
            }));
        }
        until(|| budget.snapshot().waiters_by_priority.read == 2).await;

        let third_read = budget.acquire(Priority::Read, far, None).await;
        assert!(third_read.is_err(), "the reads' places are taken");
        let started = Instant::now();
        let (sign_in, issuance) = tokio::join!(
            budget.acquire(Priority::SignIn, far, None),
            budget.acquire(Priority::Issuance, far, None),
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
        budget
            .acquire(Priority::Read, far, None)
            .await
            .expect("slot");
        tokio::time::advance(Duration::from_secs(2)).await;
        for _ in 0..6 {
            budget
                .acquire(Priority::Read, far, None)
                .await
                .expect("slot");
        }
        // 50 ms before the first slot frees; reads may wait 100 ms.
        tokio::time::advance(Duration::from_millis(3200)).await;
        let first = tokio::spawn({
            let budget = budget.clone();
            async move { budget.acquire(Priority::Read, far, None).await }
        });
        until(|| budget.snapshot().waiters == 1).await;

        let arrived = Instant::now();
        let refused = budget
            .acquire(Priority::Read, far, None)
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
        budget
            .acquire(Priority::Issuance, far, None)
            .await
            .expect("slot");
        tokio::time::advance(Duration::from_secs(1)).await;
        for _ in 0..2 {
            budget
                .acquire(Priority::Issuance, far, None)
                .await
                .expect("slot");
        }
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move {
                budget.acquire(Priority::Issuance, far, None).await?;
                Ok::<_, Exhausted>(Instant::now())
            }
        });
        until(|| budget.snapshot().waiters == 1).await;

        let newcomer = budget
            .acquire(Priority::Issuance, far, None)
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

    fn share(session: u64, vouched: bool) -> Option<ReadShare> {
        Some(ReadShare {
            session,
            vouched,
            background: false,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_read_is_never_pushed_back_by_later_higher_priority_calls() {
        let budget = budget(10);
        let far = Instant::now() + Duration::from_secs(30);
        // Reads may use 7 slots: one started now, six two seconds later.
        take(&budget, Priority::Read, 1).await;
        tokio::time::advance(Duration::from_secs(2)).await;
        take(&budget, Priority::Read, 6).await;
        // 50 ms before the first slot frees; reads may wait 100 ms.
        tokio::time::advance(Duration::from_millis(3200)).await;
        let read = tokio::spawn({
            let budget = budget.clone();
            async move {
                budget.acquire(Priority::Read, far, None).await?;
                Ok::<_, Exhausted>(Instant::now())
            }
        });
        until(|| budget.snapshot().waiters == 1).await;

        // Issuance and sign-in arrive after it and take what is left (which
        // used to push the read past its wait, to fail when it woke).
        let arrived = Instant::now();
        take(&budget, Priority::Issuance, 2).await;
        let sign_in = tokio::spawn({
            let budget = budget.clone();
            async move { budget.acquire(Priority::SignIn, far, None).await }
        });

        let started = read.await.expect("task").expect("the booked slot is kept");
        assert_eq!(started - arrived, Duration::from_millis(50));
        sign_in
            .await
            .expect("task")
            .expect("sign-in gets a later slot");
    }

    #[tokio::test(start_paused = true)]
    async fn under_load_a_read_is_refused_without_waiting_or_waits_and_starts() {
        let budget = budget(10);
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let mut calls = Vec::new();
        // A fixed pseudo-random mix: mostly reads, some of every priority,
        // arriving 0 to 150 ms apart for 30 s.
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let began = Instant::now();
        while began.elapsed() < Duration::from_secs(30) {
            let priority = match next() % 10 {
                0 => Priority::Issuance,
                1 => Priority::SignIn,
                2 => Priority::Session,
                3 => Priority::Background,
                _ => Priority::Read,
            };
            let session = next() % 4;
            let budget = budget.clone();
            let outcomes = Arc::clone(&outcomes);
            calls.push(tokio::spawn(async move {
                let arrived = Instant::now();
                let result = budget
                    .acquire(
                        priority,
                        arrived + Duration::from_secs(2),
                        share(session, session != 0),
                    )
                    .await;
                outcomes.lock().expect("lock").push((
                    priority,
                    arrived,
                    Instant::now(),
                    result.is_ok(),
                ));
            }));
            tokio::time::sleep(Duration::from_millis(next() % 150)).await;
        }
        for call in calls {
            call.await.expect("task");
        }

        let outcomes = outcomes.lock().expect("lock");
        let refused_reads = outcomes
            .iter()
            .filter(|(priority, _, _, ok)| priority.is_low() && !ok)
            .count();
        assert!(refused_reads > 50, "the budget was not exhausted");
        for (priority, arrived, done, ok) in outcomes.iter() {
            let waited = *done - *arrived;
            if priority.is_low() && !ok {
                assert_eq!(waited, Duration::ZERO, "a refused {priority:?} call waited");
            }
            if *ok && priority.is_low() {
                assert!(
                    waited <= Duration::from_millis(100),
                    "{priority:?} waited {waited:?}"
                );
            }
        }
        let mut starts: Vec<Instant> = outcomes
            .iter()
            .filter(|(_, _, _, ok)| *ok)
            .map(|(_, _, done, _)| *done)
            .collect();
        starts.sort_unstable();
        assert_within_limit(&starts, 10, Duration::from_secs(5));
    }

    /// Fails if more than `limit` of `starts` (sorted) fall in any window.
    #[track_caller]
    fn assert_within_limit(starts: &[Instant], limit: usize, window: Duration) {
        for (index, start) in starts.iter().enumerate() {
            let in_window = starts[index..]
                .iter()
                .take_while(|other| other.duration_since(*start) < window)
                .count();
            assert!(in_window <= limit, "{in_window} calls in one window");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn background_refreshes_use_only_spare_budget_and_never_wait() {
        // 50 calls, 35 for reads, of which 10 must stay free.
        let budget = Budget::new(BudgetOptions {
            max_read_wait: Duration::from_secs(10),
            session_share: 1,
            ..BudgetOptions::default()
        });
        let far = Instant::now() + Duration::from_secs(30);
        take(&budget, Priority::Read, 25).await;
        // 10 of the reads' slots are free: just enough.
        take(&budget, Priority::Background, 1).await;
        let arrived = Instant::now();
        let refused = budget
            .acquire(Priority::Background, far, None)
            .await
            .expect_err("only 9 of the reads' slots are free");
        assert_eq!(arrived.elapsed(), Duration::ZERO);
        assert_eq!(refused.retry_after, Duration::from_secs(5) + WINDOW_MARGIN);
        // Reads still have their slots.
        take(&budget, Priority::Read, 9).await;

        // A call waiting anywhere stops background refreshes too, whatever
        // is free.
        tokio::time::advance(Duration::from_secs(6)).await;
        take(&budget, Priority::Session, 1).await;
        let session = tokio::spawn({
            let budget = budget.clone();
            async move { budget.acquire(Priority::Session, far, None).await }
        });
        until(|| budget.snapshot().waiters == 1).await;
        assert!(
            budget
                .acquire(Priority::Background, far, None)
                .await
                .is_err()
        );
        assert_eq!(arrived.elapsed(), Duration::from_secs(6));
        session.await.expect("task").expect("session slot");
        take(&budget, Priority::Background, 1).await;
        assert_eq!(Priority::Background.as_str(), "background");
    }

    #[tokio::test(start_paused = true)]
    async fn one_session_starts_at_most_its_reads_per_window() {
        let budget = budget_of(50);
        let far = Instant::now() + Duration::from_secs(30);
        for _ in 0..budget.options().per_session_reads {
            budget
                .acquire(Priority::Read, far, share(1, true))
                .await
                .expect("within the session's share");
        }
        let arrived = Instant::now();
        let refused = budget
            .acquire(Priority::Read, far, share(1, true))
            .await
            .expect_err("the session's share is used, and its slot is beyond the wait");
        assert_eq!(arrived.elapsed(), Duration::ZERO);
        assert_eq!(refused.retry_after, Duration::from_secs(5) + WINDOW_MARGIN);
        // Others read on, and internal reads (no share) are not held to it.
        budget
            .acquire(Priority::Read, far, share(2, true))
            .await
            .expect("another session");
        take(&budget, Priority::Read, 1).await;

        tokio::time::advance(Duration::from_secs(5) + WINDOW_MARGIN).await;
        assert_eq!(
            budget.sessions_tracked(),
            0,
            "entries leave with their calls"
        );
        budget
            .acquire(Priority::Read, far, share(1, true))
            .await
            .expect("a new window");
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_unvouched_sessions_cannot_take_the_vouched_reads() {
        let budget = budget_of(50);
        let far = Instant::now() + Duration::from_secs(30);
        let mut admitted = 0;
        for session in 0..200 {
            let arrived = Instant::now();
            match budget
                .acquire(Priority::Read, far, share(1000 + session, false))
                .await
            {
                Ok(()) => admitted += 1,
                Err(refused) => {
                    assert_eq!(arrived.elapsed(), Duration::ZERO);
                    assert!(refused.retry_after > Duration::ZERO);
                }
            }
        }
        assert_eq!(admitted, 10, "the unvouched sessions' share");
        assert!(
            budget.sessions_tracked() <= 10,
            "only sessions with calls are kept"
        );
        // The rest of the reads' 35 is the vouched sessions'.
        for session in 0..25 {
            budget
                .acquire(Priority::Read, far, share(session, true))
                .await
                .expect("a vouched read");
        }
        assert!(
            budget
                .acquire(Priority::Read, far, share(99, true))
                .await
                .is_err(),
            "the reads' share is used"
        );
        take(&budget, Priority::SignIn, 5).await;
    }

    fn budget_of(max_requests: u32) -> Budget {
        Budget::new(BudgetOptions {
            max_requests,
            ..BudgetOptions::default()
        })
    }

    /// An in-memory shared window with the same sliding-window semantics as
    /// the PostgreSQL one; it can be made unreachable or unanswering.
    #[derive(Debug, Default)]
    struct MemoryWindow {
        starts: Mutex<VecDeque<Instant>>,
        unavailable: std::sync::atomic::AtomicBool,
        unanswering: std::sync::atomic::AtomicBool,
        calls: std::sync::atomic::AtomicUsize,
    }

    impl SharedWindow for MemoryWindow {
        fn try_start(
            &self,
            limit: u32,
            window: Duration,
            _timeout: Duration,
        ) -> futures::future::BoxFuture<'_, Result<Admit, SharedWindowUnavailable>> {
            use std::sync::atomic::Ordering;
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                if self.unanswering.load(Ordering::SeqCst) {
                    std::future::pending::<()>().await;
                }
                if self.unavailable.load(Ordering::SeqCst) {
                    return Err(SharedWindowUnavailable {
                        reason: "connection refused".into(),
                    });
                }
                let now = Instant::now();
                let mut starts = self.starts.lock().expect("lock");
                while starts
                    .front()
                    .is_some_and(|start| now.duration_since(*start) >= window)
                {
                    starts.pop_front();
                }
                if starts.len() < limit as usize {
                    starts.push_back(now);
                    Ok(Admit::Started)
                } else {
                    Ok(Admit::NotBefore(starts[0] + window - now))
                }
            })
        }
    }

    fn replicas(options: BudgetOptions) -> (Arc<MemoryWindow>, Budget, Budget) {
        let window = Arc::new(MemoryWindow::default());
        let first = Budget::new(options).with_shared(window.clone());
        let second = Budget::new(options).with_shared(window.clone());
        (window, first, second)
    }

    #[tokio::test(start_paused = true)]
    async fn replicas_sharing_a_window_never_exceed_the_limit_together() {
        let (_window, first, second) = replicas(*budget(10).options());
        let starts = Arc::new(Mutex::new(Vec::new()));
        let mut calls = Vec::new();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..400u64 {
            let budget = if next() % 2 == 0 { &first } else { &second };
            let budget = budget.clone();
            let priority = Priority::ALL[(next() % 5) as usize];
            let starts = Arc::clone(&starts);
            calls.push(tokio::spawn(async move {
                let arrived = Instant::now();
                let result = budget
                    .acquire(
                        priority,
                        arrived + Duration::from_secs(3),
                        share(round % 7, true),
                    )
                    .await;
                if result.is_ok() {
                    starts.lock().expect("lock").push(Instant::now());
                } else if priority.is_low() {
                    assert_eq!(arrived.elapsed(), Duration::ZERO, "refused after waiting");
                }
                result.is_ok()
            }));
            if next() % 3 == 0 {
                tokio::time::sleep(Duration::from_millis(next() % 120)).await;
            }
        }
        let mut admitted = 0;
        for call in calls {
            admitted += usize::from(call.await.expect("task"));
        }
        let mut starts = starts.lock().expect("lock").clone();
        starts.sort_unstable();
        assert!(admitted > 20 && admitted < 400, "{admitted} admitted");
        assert_within_limit(&starts, 10, Duration::from_secs(5));
        assert_eq!(first.snapshot().mode, BudgetMode::Shared);
    }

    #[tokio::test(start_paused = true)]
    async fn priorities_hold_across_replicas() {
        // 10 calls: reads 7, sign-in 8, issuance 10.
        let (window, first, second) = replicas(*budget(10).options());
        let far = Instant::now() + Duration::from_secs(30);
        take(&first, Priority::Read, 7).await;

        let arrived = Instant::now();
        let refused = second
            .acquire(Priority::Read, far, None)
            .await
            .expect_err("the other replica used the reads' share");
        assert_eq!(arrived.elapsed(), Duration::ZERO, "decided at once");
        assert_eq!(refused.retry_after, Duration::from_secs(5) + WINDOW_MARGIN);
        take(&second, Priority::SignIn, 1).await;
        take(&second, Priority::Issuance, 2).await;
        assert_eq!(window.starts.lock().expect("lock").len(), 10);

        // Issuance waits for the shared slot, within its deadline.
        let started = Instant::now();
        take(&second, Priority::Issuance, 1).await;
        assert_eq!(started.elapsed(), Duration::from_secs(5) + WINDOW_MARGIN);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreachable_shared_window_falls_back_to_the_static_share() {
        use std::sync::atomic::Ordering;
        // 10 calls shared, 6 alone; reads 7 and 3 of them.
        let (window, first, _second) = replicas(BudgetOptions {
            fallback_share: 6,
            ..*budget(10).options()
        });
        let far = Instant::now() + Duration::from_secs(30);
        window.unavailable.store(true, Ordering::SeqCst);
        take(&first, Priority::Read, 3).await;
        assert_eq!(first.snapshot().mode, BudgetMode::Fallback);
        assert!(first.acquire(Priority::Read, far, None).await.is_err());
        take(&first, Priority::Issuance, 3).await;
        assert_eq!(first.snapshot().remaining, 0);
        // Only the first call (and none within the retry interval) asked.
        assert_eq!(window.calls.load(Ordering::SeqCst), 1);

        window.unavailable.store(false, Ordering::SeqCst);
        tokio::time::advance(Duration::from_secs(6)).await;
        take(&first, Priority::Read, 1).await;
        assert_eq!(first.snapshot().mode, BudgetMode::Shared);
        assert_eq!(window.starts.lock().expect("lock").len(), 1);
        take(&first, Priority::Read, 6).await;
        assert_eq!(window.starts.lock().expect("lock").len(), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_dropped_while_the_shared_window_answers_leaves_nothing_behind() {
        use std::sync::atomic::Ordering;
        let (window, first, _second) = replicas(*budget(10).options());
        let far = Instant::now() + Duration::from_secs(30);
        window.unanswering.store(true, Ordering::SeqCst);
        let call = tokio::spawn({
            let first = first.clone();
            async move { first.acquire(Priority::Issuance, far, None).await }
        });
        until(|| window.calls.load(Ordering::SeqCst) == 1).await;
        assert_eq!(first.snapshot().remaining, 9, "counted while it asks");

        call.abort();
        assert!(call.await.expect_err("aborted").is_cancelled());
        let snapshot = first.snapshot();
        assert_eq!((snapshot.remaining, snapshot.waiters), (10, 0));

        // An answer that never comes is an unreachable window.
        let started = Instant::now();
        take(&first, Priority::Issuance, 1).await;
        assert_eq!(started.elapsed(), SHARED_TIMEOUT + MIN_SHARED_PAUSE);
        assert_eq!(first.snapshot().mode, BudgetMode::Fallback);
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_that_waited_in_the_fallback_share_starts_even_if_the_shared_window_is_back_and_full()
     {
        use std::sync::atomic::Ordering;
        let (window, first, second) = replicas(BudgetOptions {
            fallback_share: 6,
            ..*budget(10).options()
        });
        let far = Instant::now() + Duration::from_secs(30);
        window.unavailable.store(true, Ordering::SeqCst);
        take(&first, Priority::Read, 3).await;
        // 50 ms before the fallback share's first read slot frees.
        tokio::time::advance(Duration::from_millis(5200)).await;
        let read = tokio::spawn({
            let first = first.clone();
            async move { first.acquire(Priority::Read, far, None).await }
        });
        until(|| first.snapshot().waiters == 1).await;
        // Meanwhile the shared window is back, and the other replica fills
        // the reads' share in it.
        window.unavailable.store(false, Ordering::SeqCst);
        take(&second, Priority::Read, 7).await;

        let arrived = Instant::now();
        read.await
            .expect("task")
            .expect("a read that waited for its slot is not refused after all");
        assert_eq!(arrived.elapsed(), Duration::from_millis(50));
    }
}

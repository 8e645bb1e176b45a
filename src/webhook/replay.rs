//! The replay window: which deliveries were already applied recently.
//!
//! Cryptlex retries a delivery it thinks failed (a timeout, a lost answer),
//! and whoever captured a signed delivery can send it again. A delivery is
//! known by a digest of its event, its `triggeredAt` and its body; one seen
//! within the window is acknowledged and not applied again. Deliveries
//! triggered before the window are refused by the caller (as too old), so
//! forgetting entries after the window loses nothing.
//!
//! Memory is bounded: at most `capacity` entries, the oldest dropped first
//! when full, and every entry dropped once its window has passed. Each
//! delivery costs O(1) amortised: a hash lookup and a queue push, plus the
//! pops of entries that expired meanwhile.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use tokio::time::Instant;

/// The most deliveries remembered at once: far above Cryptlex's delivery
/// rate over any sensible window, and about 1 MiB of memory.
pub(crate) const DEFAULT_CAPACITY: usize = 10_000;

/// What identifies one delivery: SHA-256 over its parts.
pub(crate) type DeliveryKey = [u8; 32];

/// Returns the key of a delivery of `event` triggered at `triggered_at`
/// (as sent) with `body`. Each part is length-prefixed, so no two
/// different triples share an input.
pub(crate) fn delivery_key(event: &str, triggered_at: &str, body: &[u8]) -> DeliveryKey {
    let body_digest = Sha256::digest(body);
    let mut hasher = Sha256::new();
    for part in [event.as_bytes(), triggered_at.as_bytes()] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher.update(body_digest);
    hasher.finalize().into()
}

/// Whether a delivery was new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Not seen within the window: apply it (it is now remembered).
    First,
    /// Seen within the window: acknowledge, do not apply.
    Again,
}

/// Deliveries seen within the last `window`, at most `capacity` of them.
pub(crate) struct ReplayWindow {
    window: Duration,
    capacity: usize,
    // A std mutex: held for a few map operations, never across an await.
    state: Mutex<State>,
}

// By hand: the keys are of no use in a debug print, and there may be
// thousands.
impl std::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("window", &self.window)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    /// Each remembered key and when it was seen.
    seen: HashMap<DeliveryKey, Instant>,
    /// The same keys, oldest first, to expire and evict in order.
    order: VecDeque<(DeliveryKey, Instant)>,
}

impl ReplayWindow {
    /// Remembers deliveries for `window`, at most `capacity` (at least one).
    pub(crate) fn new(window: Duration, capacity: usize) -> Self {
        Self {
            window,
            capacity: capacity.max(1),
            state: Mutex::new(State::default()),
        }
    }

    /// Records `key` as seen at `now`, and says whether it was seen within
    /// the window before.
    pub(crate) fn check_and_record(&self, key: DeliveryKey, now: Instant) -> Seen {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.expire(now, self.window);
        if state.seen.contains_key(&key) {
            return Seen::Again;
        }
        while state.seen.len() >= self.capacity {
            let Some((oldest, _)) = state.order.pop_front() else {
                break;
            };
            state.seen.remove(&oldest);
        }
        state.seen.insert(key, now);
        state.order.push_back((key, now));
        Seen::First
    }

    /// Deliveries remembered now (for tests and inspection).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.state.lock().expect("replay window").seen.len()
    }
}

impl State {
    /// Drops every entry seen `window` or longer before `now`.
    fn expire(&mut self, now: Instant, window: Duration) {
        while let Some(&(key, seen_at)) = self.order.front() {
            if now.saturating_duration_since(seen_at) < window {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> DeliveryKey {
        delivery_key("license.updated", &n.to_string(), b"{}")
    }

    #[test]
    fn a_delivery_is_new_once_and_a_replay_within_the_window_is_not() {
        let replays = ReplayWindow::new(Duration::from_secs(600), 10);
        let now = Instant::now();
        assert_eq!(replays.check_and_record(key(1), now), Seen::First);
        assert_eq!(
            replays.check_and_record(key(1), now + Duration::from_secs(599)),
            Seen::Again
        );
        assert_eq!(replays.check_and_record(key(2), now), Seen::First);
    }

    #[test]
    fn entries_expire_after_the_window() {
        let replays = ReplayWindow::new(Duration::from_secs(60), 10);
        let now = Instant::now();
        replays.check_and_record(key(1), now);
        replays.check_and_record(key(2), now + Duration::from_secs(30));
        // At 60 s the first has expired, the second not yet.
        assert_eq!(
            replays.check_and_record(key(3), now + Duration::from_secs(60)),
            Seen::First
        );
        assert_eq!(replays.len(), 2);
        assert_eq!(
            replays.check_and_record(key(1), now + Duration::from_secs(61)),
            Seen::First
        );
        assert_eq!(
            replays.check_and_record(key(2), now + Duration::from_secs(61)),
            Seen::Again
        );
    }

    #[test]
    fn the_window_never_holds_more_than_its_capacity_and_drops_the_oldest() {
        let replays = ReplayWindow::new(Duration::from_secs(600), 3);
        let now = Instant::now();
        for n in 0..10 {
            replays.check_and_record(key(n), now);
            assert!(replays.len() <= 3);
        }
        // 7, 8 and 9 are remembered; 0 was dropped and counts as new.
        assert_eq!(replays.check_and_record(key(9), now), Seen::Again);
        assert_eq!(replays.check_and_record(key(0), now), Seen::First);
        assert_eq!(replays.len(), 3);
    }

    #[test]
    fn keys_separate_event_time_and_body() {
        let base = delivery_key("license.updated", "2026-01-01T00:00:00Z", b"{}");
        assert_ne!(
            base,
            delivery_key("license.deleted", "2026-01-01T00:00:00Z", b"{}")
        );
        assert_ne!(
            base,
            delivery_key("license.updated", "2026-01-01T00:00:01Z", b"{}")
        );
        assert_ne!(
            base,
            delivery_key("license.updated", "2026-01-01T00:00:00Z", b"{ }")
        );
        // Length prefixes: moving bytes between parts changes the key.
        assert_ne!(delivery_key("ab", "c", b""), delivery_key("a", "bc", b""));
    }
}

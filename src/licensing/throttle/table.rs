//! A capped map for the throttle's counters: bounded entries, bounded work
//! per call, and a defined behaviour when full.
//!
//! Entries live in a dense `Vec` with a key-to-position index, so a "clock
//! hand" can walk them in place. Every call moves the hand a few entries
//! ([`SWEEP_STEP`]) and drops those that no longer hold anything (expired
//! windows, forgotten failures): pruning is amortized over the calls instead
//! of a whole-map scan on the request path, and there is no background task
//! to own or stop.
//!
//! When the map is full, a new key looks at most [`EVICTION_PROBES`] entries
//! ahead of the hand for one it may replace: a dead one, or one whose loss can
//! only make the throttle stricter (see [`Tracked::may_be_evicted`]). Entries
//! that count failures or attempts are never dropped before they expire, so
//! flooding the map with new keys cannot reset anyone's count. A key that
//! finds no room shares one overflow entry with every other such key: they are
//! limited together (fail closed), never let through unlimited.
//!
//! It deliberately knows nothing about emails, addresses or back-off: what an
//! entry holds and when it expires is the entry type's business.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

/// Entries the hand examines on every call, live or not. Two per call, against
/// at most one insert per call, keeps dead entries from piling up.
pub(super) const SWEEP_STEP: usize = 2;

/// Entries a new key may examine, when the map is full, for one to replace.
/// Bounds the work of an insert at the cap; more would rarely find more.
pub(super) const EVICTION_PROBES: usize = 8;

/// How often a full map says so in the log (a flood repeats it on every call).
const FULL_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// What the table needs to know about an entry.
pub(super) trait Tracked: Default {
    /// The settings that decide when an entry expires.
    type Rules;

    /// Whether the entry still holds anything the throttle needs at `now`;
    /// one that does not is dropped.
    fn is_live(&self, now: Instant, rules: &Self::Rules) -> bool;

    /// Whether dropping the entry to make room can only make the throttle
    /// stricter (it counts no failures or attempts, only privileges).
    fn may_be_evicted(&self, now: Instant, rules: &Self::Rules) -> bool;
}

/// Where a key's count lives: its own entry, or the shared overflow entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Slot<K> {
    Own(K),
    Overflow,
}

/// A map of at most `capacity` entries plus one overflow entry.
#[derive(Debug)]
pub(super) struct Table<K, V> {
    /// For the log line when full.
    name: &'static str,
    capacity: usize,
    /// Dense, in no particular order: positions change on removal.
    entries: Vec<(K, V)>,
    positions: HashMap<K, usize>,
    /// The next position the sweep or an eviction looks at.
    hand: usize,
    /// Shared by every key that found no room.
    overflow: V,
    warned_full_at: Option<Instant>,
    /// Entries examined so far, so tests can bound the work of a call.
    #[cfg(test)]
    examined: usize,
}

impl<K: Eq + Hash + Copy, V: Tracked> Table<K, V> {
    /// Creates an empty table. Memory grows with use, up to `capacity`.
    pub(super) fn new(name: &'static str, capacity: usize) -> Self {
        Self {
            name,
            capacity: capacity.max(1),
            entries: Vec::new(),
            positions: HashMap::new(),
            hand: 0,
            overflow: V::default(),
            warned_full_at: None,
            #[cfg(test)]
            examined: 0,
        }
    }

    /// Returns where `key` is counted, creating its entry if there is (or can
    /// be made) room, else the overflow slot.
    pub(super) fn slot(&mut self, key: K, now: Instant, rules: &V::Rules) -> Slot<K> {
        self.sweep(now, rules);
        if self.positions.contains_key(&key) {
            return Slot::Own(key);
        }
        if self.entries.len() < self.capacity || self.make_room(now, rules) {
            self.positions.insert(key, self.entries.len());
            self.entries.push((key, V::default()));
            return Slot::Own(key);
        }
        self.warn_full(now);
        Slot::Overflow
    }

    /// Returns the entry that counts `key` without creating one: its own, the
    /// overflow entry when a new key would have to share it, or `None` when it
    /// would get a fresh entry.
    pub(super) fn peek(&self, key: K) -> Option<&V> {
        match self.positions.get(&key) {
            Some(&position) => Some(&self.entries[position].1),
            None if self.entries.len() >= self.capacity => Some(&self.overflow),
            None => None,
        }
    }

    /// Returns the entry of `slot`; `None` only if an own entry was dropped.
    pub(super) fn get_mut(&mut self, slot: Slot<K>) -> Option<&mut V> {
        match slot {
            Slot::Own(key) => {
                let position = *self.positions.get(&key)?;
                Some(&mut self.entries[position].1)
            }
            Slot::Overflow => Some(&mut self.overflow),
        }
    }

    /// Drops the own entry of `slot` if it holds nothing any more (a refused
    /// first attempt, a success that cleared everything), so it does not wait
    /// for the hand.
    pub(super) fn forget_if_dead(&mut self, slot: Slot<K>, now: Instant, rules: &V::Rules) {
        let Slot::Own(key) = slot else { return };
        if let Some(&position) = self.positions.get(&key)
            && !self.entries[position].1.is_live(now, rules)
        {
            self.remove_at(position);
        }
    }

    /// The number of own entries (the overflow entry not counted).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Entries examined so far.
    #[cfg(test)]
    pub(super) fn examined(&self) -> usize {
        self.examined
    }

    /// Moves the hand [`SWEEP_STEP`] entries, dropping the dead ones.
    fn sweep(&mut self, now: Instant, rules: &V::Rules) {
        for _ in 0..SWEEP_STEP {
            let Some(position) = self.next_position() else {
                return;
            };
            if self.entries[position].1.is_live(now, rules) {
                self.hand = position + 1;
            } else {
                // The entry moved into `position` is looked at next.
                self.remove_at(position);
            }
        }
    }

    /// Frees one position among the next [`EVICTION_PROBES`], if one may go.
    fn make_room(&mut self, now: Instant, rules: &V::Rules) -> bool {
        for _ in 0..EVICTION_PROBES {
            let Some(position) = self.next_position() else {
                return true;
            };
            let entry = &self.entries[position].1;
            if !entry.is_live(now, rules) || entry.may_be_evicted(now, rules) {
                self.remove_at(position);
                return true;
            }
            self.hand = position + 1;
        }
        false
    }

    /// The position under the hand (wrapping), counted as examined.
    fn next_position(&mut self) -> Option<usize> {
        if self.entries.is_empty() {
            return None;
        }
        if self.hand >= self.entries.len() {
            self.hand = 0;
        }
        #[cfg(test)]
        {
            self.examined += 1;
        }
        Some(self.hand)
    }

    fn remove_at(&mut self, position: usize) {
        let (key, _) = self.entries.swap_remove(position);
        self.positions.remove(&key);
        if let Some((moved, _)) = self.entries.get(position) {
            self.positions.insert(*moved, position);
        }
    }

    fn warn_full(&mut self, now: Instant) {
        let recently = self
            .warned_full_at
            .is_some_and(|at| now.duration_since(at) < FULL_WARNING_INTERVAL);
        if !recently {
            self.warned_full_at = Some(now);
            tracing::warn!(
                table = self.name,
                capacity = self.capacity,
                "sign-in throttle table is full; new keys share one allowance until entries expire"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A counter that lives for `Rules` after it was touched; `privileged`
    /// ones only grant something and may be evicted.
    #[derive(Debug, Default)]
    struct Count {
        touched: Option<Instant>,
        privileged: bool,
    }

    impl Tracked for Count {
        type Rules = Duration;

        fn is_live(&self, now: Instant, ttl: &Duration) -> bool {
            self.touched
                .is_some_and(|touched| now.duration_since(touched) < *ttl)
        }

        fn may_be_evicted(&self, _now: Instant, _ttl: &Duration) -> bool {
            self.privileged
        }
    }

    const TTL: Duration = Duration::from_secs(60);

    fn touch(table: &mut Table<u32, Count>, key: u32, privileged: bool) -> Slot<u32> {
        let now = Instant::now();
        let slot = table.slot(key, now, &TTL);
        let entry = table.get_mut(slot).expect("slot has an entry");
        entry.touched = Some(now);
        entry.privileged = privileged;
        slot
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_table_never_drops_a_counting_entry_and_sends_new_keys_to_the_overflow() {
        let mut table = Table::new("test", 4);
        for key in 0..4 {
            assert_eq!(touch(&mut table, key, false), Slot::Own(key));
        }

        let slot = touch(&mut table, 99, false);

        assert_eq!(slot, Slot::Overflow);
        assert_eq!(table.len(), 4);
        for key in 0..4 {
            assert!(table.peek(key).is_some_and(|entry| entry.touched.is_some()));
        }
        assert!(
            table
                .peek(100)
                .is_some_and(|entry| std::ptr::eq(entry, &table.overflow)),
            "a key that would not fit is judged by the overflow entry"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_table_replaces_an_entry_that_only_grants_a_privilege() {
        let mut table = Table::new("test", 3);
        touch(&mut table, 1, false);
        touch(&mut table, 2, true);
        touch(&mut table, 3, false);

        assert_eq!(touch(&mut table, 4, false), Slot::Own(4));

        assert!(table.peek(2).is_none_or(|entry| entry.touched.is_none()));
        for key in [1, 3, 4] {
            assert!(table.peek(key).is_some_and(|entry| entry.touched.is_some()));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn expired_entries_are_swept_a_few_per_call_and_their_room_reused() {
        let mut table = Table::new("test", 100);
        for key in 0..100 {
            touch(&mut table, key, false);
        }
        tokio::time::advance(TTL).await;

        let before = table.examined();
        let slot = touch(&mut table, 1000, false);

        assert_eq!(slot, Slot::Own(1000));
        assert!(table.examined() - before <= SWEEP_STEP);
        for key in 1001..1100 {
            touch(&mut table, key, false);
        }
        assert!(table.len() <= 100);
        assert!(
            table
                .peek(1099)
                .is_some_and(|entry| entry.touched.is_some())
        );
    }
}

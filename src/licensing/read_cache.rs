//! Spending less of the upstream budget on reads.
//!
//! Two mechanisms, both keyed by a SHA-256 of the caller's token plus the
//! call and its arguments (the token itself is never stored):
//! - coalescing: identical reads in flight at the same time share one
//!   upstream request;
//! - a short cache (a few seconds, bounded in entries) for `GetProfile` and
//!   `ListMyLicenses`, so a page that renders the profile twice, or a user
//!   who reloads, costs one call.
//!
//! Issuance bumps a generation counter that invalidates every cached license
//! page, so a user's next `ListMyLicenses` after `IssueLicense` shows the new
//! license (on this replica; other replicas within their TTL).
//!
//! `Logout` forgets every answer cached for its token, so a signed-out token
//! is never answered from memory on this replica; a fetch that was already in
//! flight when the token was forgotten is not stored either. (A token revoked
//! elsewhere, in Cryptlex's dashboard, is answered from memory until its
//! entries expire: at most `ttl`.) Anyone can send `Logout`, with any token,
//! so forgetting costs O(1) and leaves nothing behind unless the token has a
//! fetch in flight, and then only until that fetch ends.
//!
//! Optionally, when Cryptlex is unavailable, the last known answer may be
//! served marked stale (`cache.serve_stale`, off by default).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, Shared};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::LicensingError;
use crate::domain::UserToken;

/// Cache settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheOptions {
    /// How long an answer is reused; zero disables reuse (coalescing stays).
    pub ttl: Duration,
    /// Most entries kept.
    pub max_entries: usize,
    /// Serve the last known answer, marked stale, when Cryptlex is
    /// unavailable.
    pub serve_stale: bool,
    /// How old a stale answer may be.
    pub stale_for: Duration,
}

/// What a cache key names: which call, for which token, with which
/// arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey {
    token: TokenDigest,
    call: [u8; 32],
}

/// A SHA-256 of a token: lets entries be found by token without keeping it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct TokenDigest([u8; 32]);

impl TokenDigest {
    fn new(token: &UserToken) -> Self {
        Self(Sha256::digest(token.expose_secret().as_bytes()).into())
    }
}

impl CacheKey {
    /// Derives the key from the token and the call's identity.
    pub(crate) fn new(token: &UserToken, call: &str, arguments: &str) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(call.as_bytes());
        hasher.update([0]);
        hasher.update(arguments.as_bytes());
        Self {
            token: TokenDigest::new(token),
            call: hasher.finalize().into(),
        }
    }
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub coalesced: u64,
    pub misses: u64,
    pub stale_served: u64,
}

/// How an answer was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Freshness {
    Fresh,
    /// Served from memory because Cryptlex was unavailable.
    Stale,
}

type SharedFetch<T> = Shared<BoxFuture<'static, Result<T, LicensingError>>>;

struct Entry<T> {
    value: T,
    stored_at: Instant,
    generation: u64,
}

/// The cached answers, by token and then by call, so that a sign-out finds
/// its token's answers without looking at anyone else's.
struct Stored<T> {
    by_token: HashMap<TokenDigest, HashMap<[u8; 32], Entry<T>>>,
    /// Entries in all, for the bound.
    len: usize,
}

impl<T> Default for Stored<T> {
    fn default() -> Self {
        Self {
            by_token: HashMap::new(),
            len: 0,
        }
    }
}

impl<T> Stored<T> {
    fn get(&self, key: &CacheKey) -> Option<&Entry<T>> {
        self.by_token.get(&key.token)?.get(&key.call)
    }

    fn len(&self) -> usize {
        self.len
    }

    fn insert(&mut self, key: CacheKey, entry: Entry<T>) {
        let calls = self.by_token.entry(key.token).or_default();
        if calls.insert(key.call, entry).is_none() {
            self.len += 1;
        }
    }

    /// Drops every answer for `token`.
    fn remove_token(&mut self, token: &TokenDigest) {
        if let Some(calls) = self.by_token.remove(token) {
            self.len -= calls.len();
        }
    }

    /// Makes room for one more entry: drops what is older than `keep_for`,
    /// and if that is not enough, the oldest entry. Only runs when full, so
    /// the scan is rare.
    fn make_room(&mut self, keep_for: Duration, max_entries: usize) {
        self.by_token.retain(|_, calls| {
            calls.retain(|_, entry| entry.stored_at.elapsed() < keep_for);
            !calls.is_empty()
        });
        self.len = self.by_token.values().map(HashMap::len).sum();
        if self.len < max_entries {
            return;
        }
        let oldest = self
            .by_token
            .iter()
            .flat_map(|(token, calls)| calls.iter().map(move |(call, entry)| (token, call, entry)))
            .min_by_key(|(_, _, entry)| entry.stored_at)
            .map(|(token, call, _)| (*token, *call));
        if let Some((token, call)) = oldest
            && let Some(calls) = self.by_token.get_mut(&token)
        {
            calls.remove(&call);
            self.len -= 1;
            if calls.is_empty() {
                self.by_token.remove(&token);
            }
        }
    }
}

/// The reads in flight, and how many of them each token has, so a sign-out
/// can tell in O(1) whether it must keep one from being stored.
struct InFlight<T> {
    fetches: HashMap<CacheKey, SharedFetch<T>>,
    per_token: HashMap<TokenDigest, usize>,
}

impl<T> Default for InFlight<T> {
    fn default() -> Self {
        Self {
            fetches: HashMap::new(),
            per_token: HashMap::new(),
        }
    }
}

/// Which writes through the gateway invalidate a cache's entries (besides a
/// sign-out, which always drops the signed-out token's entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Invalidation {
    /// Issuance changes nothing this cache holds (profiles).
    SignOutOnly,
    /// Every license issued may change any user's pages (license lists).
    AlsoOnIssuance,
}

/// A read cache for values of type `T`. Cloning is cheap and shares it.
///
/// Locks are taken in the order `in_flight`, `entries`, `forgotten` (never
/// the other way round), each held for a few map operations.
pub(crate) struct ReadCache<T> {
    options: CacheOptions,
    invalidation: Invalidation,
    entries: Arc<Mutex<Stored<T>>>,
    in_flight: Arc<Mutex<InFlight<T>>>,
    /// Tokens signed out while a fetch for them was in flight: the forget
    /// count when it happened. An entry lives until the token's last fetch
    /// in flight ends, so the map is never larger than the reads in flight.
    forgotten: Arc<Mutex<HashMap<TokenDigest, u64>>>,
    /// How many times a token was forgotten; a fetch notes it when it starts.
    forgets: Arc<AtomicU64>,
    generation: Arc<AtomicU64>,
    hits: Arc<AtomicU64>,
    coalesced: Arc<AtomicU64>,
    misses: Arc<AtomicU64>,
    stale_served: Arc<AtomicU64>,
}

impl<T> Clone for ReadCache<T> {
    fn clone(&self) -> Self {
        Self {
            options: self.options,
            invalidation: self.invalidation,
            entries: Arc::clone(&self.entries),
            in_flight: Arc::clone(&self.in_flight),
            forgotten: Arc::clone(&self.forgotten),
            forgets: Arc::clone(&self.forgets),
            generation: Arc::clone(&self.generation),
            hits: Arc::clone(&self.hits),
            coalesced: Arc::clone(&self.coalesced),
            misses: Arc::clone(&self.misses),
            stale_served: Arc::clone(&self.stale_served),
        }
    }
}

impl<T> std::fmt::Debug for ReadCache<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadCache")
            .field("options", &self.options)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<T> ReadCache<T> {
    /// The counters so far.
    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            coalesced: self.coalesced.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            stale_served: self.stale_served.load(Ordering::Relaxed),
        }
    }
}

impl<T: Clone + Send + Sync + 'static> ReadCache<T> {
    /// Creates a cache whose entries `invalidation` also drops.
    pub(crate) fn new(options: CacheOptions, invalidation: Invalidation) -> Self {
        Self {
            options,
            invalidation,
            entries: Arc::default(),
            in_flight: Arc::default(),
            forgotten: Arc::default(),
            forgets: Arc::default(),
            generation: Arc::new(AtomicU64::new(0)),
            hits: Arc::default(),
            coalesced: Arc::default(),
            misses: Arc::default(),
            stale_served: Arc::default(),
        }
    }

    /// Returns the cached value for `key`, joins an identical fetch in
    /// flight, or runs `fetch` (and caches its success).
    pub(crate) async fn get_or_fetch<Fut>(
        &self,
        key: CacheKey,
        fetch: impl FnOnce() -> Fut,
    ) -> Result<(T, Freshness), LicensingError>
    where
        Fut: Future<Output = Result<T, LicensingError>> + Send + 'static,
    {
        let generation = self.generation.load(Ordering::Acquire);
        let started = self.forgets.load(Ordering::Acquire);
        if let Some(value) = self.fresh(key, generation) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok((value, Freshness::Fresh));
        }
        let (shared, leader) = {
            let mut in_flight = lock(&self.in_flight);
            match in_flight.fetches.get(&key) {
                Some(shared) => (shared.clone(), false),
                None => {
                    let shared = fetch().boxed().shared();
                    in_flight.fetches.insert(key, shared.clone());
                    *in_flight.per_token.entry(key.token).or_default() += 1;
                    (shared, true)
                }
            }
        };
        // The leader removes the in-flight entry when it is done (after
        // storing its answer), or when its caller goes away mid-call (the
        // guard's drop), so a finished fetch is never joined later.
        let _guard = if leader {
            self.misses.fetch_add(1, Ordering::Relaxed);
            Some(InFlightGuard {
                in_flight: &self.in_flight,
                forgotten: &self.forgotten,
                key,
            })
        } else {
            self.coalesced.fetch_add(1, Ordering::Relaxed);
            None
        };
        let result = shared.await;
        if leader && let Ok(value) = &result {
            self.store(key, value.clone(), generation, started);
        }
        match result {
            Ok(value) => Ok((value, Freshness::Fresh)),
            Err(error @ LicensingError::Unavailable { .. }) if self.options.serve_stale => {
                match self.stale(key) {
                    Some(value) => {
                        self.stale_served.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%error, "cryptlex unavailable: serving the last known answer, marked stale");
                        Ok((value, Freshness::Stale))
                    }
                    None => Err(error),
                }
            }
            Err(error) => Err(error),
        }
    }

    /// Drops every answer cached for `token` (after `Logout`), and keeps any
    /// fetch for it that is in flight now from being stored.
    ///
    /// A fetch that is not in flight yet sends its request after the sign-out
    /// reached Cryptlex, so it needs no keeping out: its answer is whatever
    /// Cryptlex now says about the token.
    pub(crate) fn forget_token(&self, token: &UserToken) {
        let digest = TokenDigest::new(token);
        {
            // Under the in-flight lock, so the token's last fetch cannot end
            // (and clear the record) between the look and the record.
            let in_flight = lock(&self.in_flight);
            if in_flight.per_token.contains_key(&digest) {
                let count = self.forgets.fetch_add(1, Ordering::AcqRel) + 1;
                lock(&self.forgotten).insert(digest, count);
            }
        }
        // After the record: a fetch storing now either stored before this
        // (and is dropped here) or sees the record (see `store`).
        lock(&self.entries).remove_token(&digest);
    }

    /// Marks every entry outdated (after issuance changed someone's licenses).
    pub(crate) fn invalidate_all(&self) {
        if self.invalidation == Invalidation::AlsoOnIssuance {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn fresh(&self, key: CacheKey, generation: u64) -> Option<T> {
        if self.options.ttl.is_zero() {
            return None;
        }
        let entries = lock(&self.entries);
        let entry = entries.get(&key)?;
        let fresh = entry.stored_at.elapsed() < self.options.ttl
            && (self.invalidation == Invalidation::SignOutOnly || entry.generation == generation);
        fresh.then(|| entry.value.clone())
    }

    fn stale(&self, key: CacheKey) -> Option<T> {
        let entries = lock(&self.entries);
        let entry = entries.get(&key)?;
        (entry.stored_at.elapsed() < self.options.stale_for).then(|| entry.value.clone())
    }

    /// Stores the answer of a fetch that began when the forget count was
    /// `started`, unless its token was forgotten since.
    fn store(&self, key: CacheKey, value: T, generation: u64, started: u64) {
        if self.options.ttl.is_zero() && !self.options.serve_stale {
            return;
        }
        let keep_for = if self.options.serve_stale {
            self.options.stale_for.max(self.options.ttl)
        } else {
            self.options.ttl
        };
        // The record is looked at under the entries lock, so a sign-out
        // that records itself after the look drops this answer afterwards.
        let mut entries = lock(&self.entries);
        if lock(&self.forgotten)
            .get(&key.token)
            .is_some_and(|&count| count > started)
        {
            return;
        }
        if entries.len() >= self.options.max_entries && entries.get(&key).is_none() {
            entries.make_room(keep_for, self.options.max_entries);
        }
        entries.insert(
            key,
            Entry {
                value,
                stored_at: Instant::now(),
                generation,
            },
        );
    }
}

/// Removes a leader's in-flight entry when dropped, and the token's
/// sign-out record with its last fetch in flight: every fetch that record was
/// for has then stored its answer or been kept out.
struct InFlightGuard<'a, T> {
    in_flight: &'a Mutex<InFlight<T>>,
    forgotten: &'a Mutex<HashMap<TokenDigest, u64>>,
    key: CacheKey,
}

impl<T> Drop for InFlightGuard<'_, T> {
    fn drop(&mut self) {
        let mut in_flight = lock(self.in_flight);
        in_flight.fetches.remove(&self.key);
        let token = self.key.token;
        let last = match in_flight.per_token.get_mut(&token) {
            Some(count) => {
                *count = count.saturating_sub(1);
                *count == 0
            }
            None => false,
        };
        if last {
            in_flight.per_token.remove(&token);
            lock(self.forgotten).remove(&token);
        }
    }
}

fn lock<V>(mutex: &Mutex<V>) -> std::sync::MutexGuard<'_, V> {
    // Every critical section is a single map operation, so a poisoned map
    // is still consistent.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(ttl: Duration, serve_stale: bool) -> ReadCache<u32> {
        ReadCache::new(
            CacheOptions {
                ttl,
                max_entries: 2,
                serve_stale,
                stale_for: Duration::from_secs(60),
            },
            Invalidation::AlsoOnIssuance,
        )
    }

    fn key(token: &str) -> CacheKey {
        CacheKey::new(&UserToken::parse(token).expect("token"), "call", "")
    }

    #[tokio::test]
    async fn identical_concurrent_reads_share_one_fetch() {
        let cache = cache(Duration::ZERO, false);
        let calls = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let cache = cache.clone();
            let calls = Arc::clone(&calls);
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_fetch(key("t"), || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(7)
                    })
                    .await
            }));
        }
        for task in tasks {
            assert_eq!(task.await.expect("task").expect("value").0, 7);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(cache.stats().coalesced, 9);
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_after_the_ttl_and_issuance_invalidates_them() {
        let cache = cache(Duration::from_secs(3), false);
        let fetch = |value| move || async move { Ok(value) };
        assert_eq!(
            cache.get_or_fetch(key("t"), fetch(1)).await.expect("v").0,
            1
        );
        assert_eq!(
            cache.get_or_fetch(key("t"), fetch(2)).await.expect("v").0,
            1
        );
        cache.invalidate_all();
        assert_eq!(
            cache.get_or_fetch(key("t"), fetch(3)).await.expect("v").0,
            3
        );
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(
            cache.get_or_fetch(key("t"), fetch(4)).await.expect("v").0,
            4
        );
    }

    #[tokio::test]
    async fn forgetting_a_token_drops_its_answers_and_keeps_its_fetch_in_flight_out() {
        let cache = ReadCache::new(
            CacheOptions {
                ttl: Duration::from_secs(60),
                max_entries: 10,
                serve_stale: false,
                stale_for: Duration::from_secs(60),
            },
            Invalidation::AlsoOnIssuance,
        );
        let fetch = |value| move || async move { Ok(value) };
        let token = UserToken::parse("signed-out").expect("token");
        let other = key("other");
        cache
            .get_or_fetch(key("signed-out"), fetch(1))
            .await
            .expect("v");
        cache.get_or_fetch(other, fetch(1)).await.expect("v");

        // A fetch for the token is in flight when it is forgotten.
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let in_flight = tokio::spawn({
            let cache = cache.clone();
            let key = CacheKey::new(&token, "another call", "");
            async move {
                cache
                    .get_or_fetch(key, || async move {
                        let _ = released.await;
                        Ok(5)
                    })
                    .await
            }
        });
        tokio::task::yield_now().await;
        cache.forget_token(&token);
        release.send(()).expect("release");
        assert_eq!(in_flight.await.expect("task").expect("v").0, 5);

        // Nothing for the token is answered from memory; other tokens keep theirs.
        assert_eq!(
            cache
                .get_or_fetch(key("signed-out"), fetch(2))
                .await
                .expect("v")
                .0,
            2
        );
        let again = CacheKey::new(&token, "another call", "");
        assert_eq!(cache.get_or_fetch(again, fetch(6)).await.expect("v").0, 6);
        assert_eq!(cache.get_or_fetch(other, fetch(3)).await.expect("v").0, 1);
        // Answers fetched after the forget are cached again.
        assert_eq!(
            cache
                .get_or_fetch(key("signed-out"), fetch(4))
                .await
                .expect("v")
                .0,
            2
        );
    }

    #[tokio::test]
    async fn signing_out_tokens_that_were_never_cached_leaves_nothing_behind() {
        let cache = cache(Duration::from_secs(60), false);
        cache
            .get_or_fetch(key("cached"), || async { Ok(1) })
            .await
            .expect("value");
        for n in 0..1000 {
            cache.forget_token(&UserToken::parse(&format!("junk-{n}")).expect("token"));
        }
        cache.forget_token(&UserToken::parse("cached").expect("token"));

        assert_eq!(lock(&cache.forgotten).len(), 0, "nothing was in flight");
        assert_eq!(
            lock(&cache.entries).len(),
            0,
            "the cached token's answer is gone"
        );
    }

    #[tokio::test]
    async fn a_forgotten_token_is_remembered_only_while_its_fetches_are_in_flight() {
        let cache = cache(Duration::from_secs(60), false);
        let token = UserToken::parse("signed-out").expect("token");
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let in_flight = tokio::spawn({
            let cache = cache.clone();
            async move {
                cache
                    .get_or_fetch(key("signed-out"), || async move {
                        let _ = released.await;
                        Ok(5)
                    })
                    .await
            }
        });
        while lock(&cache.in_flight).fetches.is_empty() {
            tokio::task::yield_now().await;
        }
        cache.forget_token(&token);
        assert_eq!(lock(&cache.forgotten).len(), 1);

        release.send(()).expect("release");
        in_flight.await.expect("task").expect("value");

        assert_eq!(lock(&cache.forgotten).len(), 0, "its last fetch is done");
        assert_eq!(lock(&cache.entries).len(), 0, "and was not stored");
    }

    #[tokio::test]
    async fn the_cache_stays_within_its_entry_bound() {
        let cache = cache(Duration::from_secs(60), false);
        for token in ["a", "b", "c", "d"] {
            cache
                .get_or_fetch(key(token), || async { Ok(1) })
                .await
                .expect("value");
        }
        assert!(lock(&cache.entries).len() <= 2);
    }

    #[tokio::test]
    async fn a_stale_answer_is_served_only_when_enabled_and_cryptlex_is_unavailable() {
        let unavailable = || async {
            Err(LicensingError::Unavailable {
                retry_after: None,
                source: Arc::new(crate::cryptlex::CryptlexError::ServerError {
                    status: 503,
                    retry_after: None,
                }),
            })
        };
        let stale = cache(Duration::ZERO, true);
        stale
            .get_or_fetch(key("t"), || async { Ok(5) })
            .await
            .expect("value");
        let (value, freshness) = stale
            .get_or_fetch(key("t"), unavailable)
            .await
            .expect("stale");
        assert_eq!((value, freshness), (5, Freshness::Stale));

        let strict = cache(Duration::ZERO, false);
        strict
            .get_or_fetch(key("t"), || async { Ok(5) })
            .await
            .expect("value");
        assert!(strict.get_or_fetch(key("t"), unavailable).await.is_err());
    }
}

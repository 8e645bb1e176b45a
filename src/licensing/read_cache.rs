//! Spending less of the upstream budget on reads: answers kept until
//! something changes them.
//!
//! Profiles, license pages, license details (with feature entitlements),
//! activation pages and release pages ([`Kind`]) are kept per token, keyed by
//! a SHA-256 of the caller's token plus the call and its arguments (the token
//! itself is never stored). An answer is:
//! - *fresh* while younger than `fresh_for`: answered from memory;
//! - *revalidating* between `fresh_for` and `max_age`: answered from memory
//!   at once, and one background refresh is started for it (at most
//!   [`MAX_BACKGROUND_REFRESHES`] at a time, each bounded by
//!   [`BACKGROUND_DEADLINE`], on the budget's background share);
//! - *too old* past `max_age`, or *invalidated*: fetched again in the
//!   foreground (identical reads in flight share one upstream request).
//!
//! What keeps answers correct is invalidation, not age: every write through
//! the gateway and every Cryptlex webhook becomes a [`Change`], which drops
//! exactly the answers it may have changed (a user's entries; everything
//! that shows a license: the license pages listing it, its detail, its
//! activation pages; the license and release pages of its holder, whose
//! products may have changed; a signed-out token's entries). `max_age`
//! bounds what nobody announced (a newly published release, for one). To
//! find the entries a change touches without scanning, each token's entries
//! know their owner (the profile's user id, else the token's unverified
//! `sub` claim) and each entry is indexed by the licenses it shows.
//!
//! A fetch in flight when a change touching its key arrives still answers
//! its callers (it was asked before the change) but is not stored, so the
//! cache never keeps an answer older than a change it has seen.
//!
//! Memory is bounded in entries and in estimated bytes; eviction follows
//! insertion order (a queue with lazy deletion), so an insert at the cap
//! costs O(1) amortized. Optionally, when Cryptlex is unavailable, an answer
//! past `max_age` may still be served marked stale (`cache.serve_stale`).
//!
//! Isolation: every key, flight and index entry names one token digest, and
//! nothing is ever answered across digests, so no answer reaches another
//! token, whether through coalescing, background refresh or invalidation.
//!
//! [`Change`]: super::changes::Change

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, Shared};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::LicensingError;
use crate::domain::{
    Activation, ActivationPage, FeatureEntitlement, LicenseDetail, Page, ReadShare, Release,
    ReleasePage, RequestContext, UserLicense, UserProfile, UserToken,
};

/// Background refreshes in flight at once; more are skipped (the entry is
/// still answered from memory and another reader will try again). Each is
/// one upstream call, so this also bounds what a burst of ageing entries can
/// ask of the budget's background share.
pub(crate) const MAX_BACKGROUND_REFRESHES: usize = 16;

/// How long a background refresh may take. Nobody waits for it, so it has
/// its own deadline rather than the caller's.
pub(crate) const BACKGROUND_DEADLINE: Duration = Duration::from_secs(5);

/// Estimated bytes an entry costs besides its strings: the key (64 bytes),
/// the map slots, the queue slot, the token and owner indexes.
const ENTRY_OVERHEAD: usize = 320;

/// Estimated bytes a license on a page costs besides its strings: the
/// struct, and its slot in the license index.
const ITEM_OVERHEAD: usize = 192;

/// Estimated bytes an activation, a release, a release file or a feature
/// entitlement costs besides its strings (the largest struct of these: an
/// activation's eleven fields).
const PART_OVERHEAD: usize = 320;

/// Estimated bytes of each string in a list (a release's platforms) besides
/// its text.
const STRING_OVERHEAD: usize = 24;

/// Cache settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheOptions {
    /// How long an answer is reused as is; zero disables reuse (coalescing
    /// stays, and answers are kept only to be served stale).
    pub fresh_for: Duration,
    /// How long an answer may be reused while it is refreshed in the
    /// background; at least `fresh_for`.
    pub max_age: Duration,
    /// Most entries kept.
    pub max_entries: usize,
    /// Most estimated bytes kept.
    pub max_bytes: usize,
    /// Serve the last known answer, marked stale, when Cryptlex is
    /// unavailable.
    pub serve_stale: bool,
    /// How old a stale answer may be.
    pub stale_for: Duration,
}

/// A SHA-256 of a token: lets entries be found by token without keeping it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct TokenDigest([u8; 32]);

impl TokenDigest {
    /// The token's digest, which the token computes once and keeps
    /// ([`UserToken::digest`]), so asking again costs a copy.
    pub(crate) fn new(token: &UserToken) -> Self {
        Self(*token.digest())
    }

    /// Parses the hex form (as a [`super::changes::Change::SignedOut`]
    /// carries it).
    pub(crate) fn from_hex(text: &str) -> Option<Self> {
        let mut bytes = [0; 32];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(Self(bytes))
    }

    pub(crate) fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    /// The first 8 bytes, for the budget's per-session share.
    pub(crate) fn session(self) -> u64 {
        let mut first = [0; 8];
        first.copy_from_slice(&self.0[..8]);
        u64::from_be_bytes(first)
    }
}

/// What a cache key names: which call, for which token, with which
/// arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey {
    token: TokenDigest,
    call: [u8; 32],
}

impl CacheKey {
    /// Derives the key from the token (its kept digest: the token is not
    /// hashed again) and the call's identity.
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

/// A cached answer.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    Profile(UserProfile),
    Page(Page<UserLicense>),
    License(LicenseDetail),
    Activations(ActivationPage),
    Releases(ReleasePage),
}

/// Which kind of answer, for counters and for changes that touch only some
/// kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Profile = 0,
    /// A page of `ListMyLicenses`.
    Page = 1,
    /// `GetLicense`: one license with its feature entitlements.
    License = 2,
    /// A page of `ListActivations`.
    Activations = 3,
    /// A page of `ListReleases`.
    Releases = 4,
}

impl Kind {
    const COUNT: usize = 5;

    /// Every kind, in the order of their numbers.
    pub(crate) const ALL: [Kind; Kind::COUNT] = [
        Self::Profile,
        Self::Page,
        Self::License,
        Self::Activations,
        Self::Releases,
    ];

    /// The kind's `cache` label in metrics.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Profile => "profile",
            Self::Page => "licenses",
            Self::License => "license",
            Self::Activations => "activations",
            Self::Releases => "releases",
        }
    }

    /// Whether a change to any license of a user may change this kind of
    /// answer for them even when it does not show that license: the list of
    /// their licenses (a new one), and their releases (Cryptlex shows the
    /// releases of the products they hold licenses for). Profiles do not
    /// show licenses; a license's detail and activations change only with
    /// that license, which the license index finds.
    fn follows_holders_licenses(self) -> bool {
        match self {
            Self::Page | Self::Releases => true,
            Self::Profile | Self::License | Self::Activations => false,
        }
    }
}

impl Answer {
    fn kind(&self) -> Kind {
        match self {
            Self::Profile(_) => Kind::Profile,
            Self::Page(_) => Kind::Page,
            Self::License(_) => Kind::License,
            Self::Activations(_) => Kind::Activations,
            Self::Releases(_) => Kind::Releases,
        }
    }

    /// Estimated memory: the strings' lengths plus fixed overheads.
    fn weight(&self) -> usize {
        match self {
            Self::Profile(profile) => {
                ENTRY_OVERHEAD
                    + [
                        &profile.id,
                        &profile.email,
                        &profile.first_name,
                        &profile.last_name,
                        &profile.name,
                        &profile.company,
                        &profile.role,
                    ]
                    .iter()
                    .map(|text| text.len())
                    .sum::<usize>()
            }
            Self::Page(page) => {
                let items: usize = page.items.iter().map(license_weight).sum();
                let next = page
                    .next
                    .as_ref()
                    .and_then(|next| next.product_id.as_ref())
                    .map_or(0, |id| id.as_str().len());
                ENTRY_OVERHEAD + items + next
            }
            Self::License(detail) => {
                let entitlements: usize = detail
                    .feature_entitlements
                    .iter()
                    .map(entitlement_weight)
                    .sum();
                ENTRY_OVERHEAD + license_weight(&detail.license) + entitlements
            }
            Self::Activations(page) => {
                let activations: usize = page.activations.iter().map(activation_weight).sum();
                // The license id in the page, in the index, and in `next`.
                let ids = 3 * page.license_id.as_str().len();
                ENTRY_OVERHEAD + ITEM_OVERHEAD + ids + activations
            }
            Self::Releases(page) => {
                let releases: usize = page.releases.iter().map(release_weight).sum();
                let next = page.next.as_ref().map_or(0, |next| {
                    [&next.product_name, &next.channel]
                        .into_iter()
                        .flatten()
                        .map(|filter| filter.as_str().len())
                        .sum()
                });
                ENTRY_OVERHEAD + releases + next
            }
        }
    }

    /// The licenses this answer shows, for the license index: those a
    /// change of one of them drops.
    fn license_ids(&self) -> Vec<&str> {
        match self {
            Self::Profile(_) | Self::Releases(_) => Vec::new(),
            Self::Page(page) => page
                .items
                .iter()
                .map(|license| license.id.as_str())
                .collect(),
            Self::License(detail) => vec![detail.license.id.as_str()],
            // Also when the page is empty: the next activation of the
            // license must drop it.
            Self::Activations(page) => vec![page.license_id.as_str()],
        }
    }
}

fn license_weight(license: &UserLicense) -> usize {
    ITEM_OVERHEAD
        // The id twice: in the item and in the index.
        + 2 * license.id.len()
        + license.key.len()
        + license.license_type.len()
        + license.product_name.len()
        + license.subscription_interval.len()
        + license
            .metadata
            .iter()
            .map(|(key, value)| 48 + key.len() + value.len())
            .sum::<usize>()
}

fn entitlement_weight(entitlement: &FeatureEntitlement) -> usize {
    PART_OVERHEAD
        + entitlement.feature_id.len()
        + entitlement.feature_name.len()
        + entitlement.value.len()
}

fn activation_weight(activation: &Activation) -> usize {
    PART_OVERHEAD
        + [
            &activation.id,
            &activation.license_id,
            &activation.hostname,
            &activation.os,
            &activation.os_version,
            &activation.vm_name,
            &activation.app_version,
            &activation.release_version,
            &activation.location,
            &activation.country_code,
        ]
        .iter()
        .map(|text| text.len())
        .sum::<usize>()
}

fn release_weight(release: &Release) -> usize {
    let texts: usize = [
        &release.id,
        &release.name,
        &release.version,
        &release.channel,
        &release.product_name,
        &release.notes,
    ]
    .iter()
    .map(|text| text.len())
    .sum();
    let platforms: usize = release
        .platforms
        .iter()
        .map(|platform| STRING_OVERHEAD + platform.len())
        .sum();
    let files: usize = release
        .files
        .iter()
        .map(|file| {
            PART_OVERHEAD
                + file.id.len()
                + file.name.len()
                + file.url.len()
                + file.checksum.len()
                + file.extension.len()
        })
        .sum();
    PART_OVERHEAD + texts + platforms + files
}

/// Counters and sizes for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Reads answered from memory (fresh, or while revalidating).
    pub hits: u64,
    /// Reads that joined an identical fetch in flight.
    pub coalesced: u64,
    /// Reads that fetched upstream.
    pub misses: u64,
    /// Reads answered with a stale answer because Cryptlex was unavailable.
    pub stale_served: u64,
    /// Background refreshes started.
    pub revalidated_in_background: u64,
    /// Entries dropped by changes (writes, webhooks, other replicas).
    pub invalidated: u64,
    /// Entries dropped for the bounds or for age.
    pub evicted: u64,
    /// Entries held now.
    pub entries: u64,
    /// Estimated bytes held now.
    pub bytes: u64,
}

/// How an answer was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Freshness {
    Fresh,
    /// Served from memory because Cryptlex was unavailable.
    Stale,
}

/// What a change touches, in the cache's terms.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target<'a> {
    /// Every entry of one token.
    Token(TokenDigest),
    /// Every entry of every token this user owns.
    User(&'a str),
    /// Every entry that shows the license (license pages, its detail, its
    /// activation pages), and the license and release pages of `user_id`'s
    /// tokens and of every token whose owner is unknown.
    License {
        license_id: &'a str,
        user_id: Option<&'a str>,
    },
    /// Every entry but profiles (when nothing narrower is known).
    AllPages,
}

/// A fetch in flight. Its answer is shared (`Arc`), so its waiters and the
/// entry it becomes hold one copy between them.
type SharedFetch = Shared<BoxFuture<'static, Result<Arc<Answer>, LicensingError>>>;

struct Entry {
    /// Shared with the readers it is answering, so a hit copies it outside
    /// the store's lock.
    value: Arc<Answer>,
    stored_at: Instant,
    /// Which insertion this is, to tell live queue slots from stale ones.
    seq: u64,
    weight: usize,
}

/// One token's entries and who owns them.
#[derive(Default)]
struct TokenEntries {
    calls: HashSet<[u8; 32]>,
    owner: Option<String>,
    /// The owner came from a profile answer, not from the token's claims.
    confirmed: bool,
}

/// The cached answers and their indexes. Every index entry points at a live
/// entry and is removed with it, so each is bounded by the entries.
#[derive(Default)]
struct Store {
    entries: HashMap<CacheKey, Entry>,
    tokens: HashMap<TokenDigest, TokenEntries>,
    /// Owner -> their tokens that have entries.
    by_user: HashMap<String, HashSet<TokenDigest>>,
    /// Tokens with entries and no known owner.
    ownerless: HashSet<TokenDigest>,
    /// License id -> the entries that show it.
    by_license: HashMap<String, HashSet<CacheKey>>,
    /// Insertion order, oldest first; a slot whose `seq` differs from the
    /// entry's (or whose entry is gone) is skipped when reached.
    order: VecDeque<(CacheKey, u64)>,
    next_seq: u64,
    bytes: usize,
    per_kind: [KindTotals; Kind::COUNT],
}

#[derive(Default, Clone, Copy)]
struct KindTotals {
    entries: u64,
    bytes: u64,
    evicted: u64,
    invalidated: u64,
}

/// Why an entry goes, for the counters.
#[derive(Clone, Copy)]
enum Removal {
    Replaced,
    Evicted,
    Invalidated,
}

impl Store {
    fn get(&self, key: &CacheKey) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// Stores `value`, with `owner` for the token (a confirmed owner replaces
    /// a claimed one), then drops what is past `keep_for` or beyond the
    /// bounds, oldest first.
    fn insert(
        &mut self,
        key: CacheKey,
        value: Arc<Answer>,
        owner: Option<(String, bool)>,
        limits: Limits,
    ) {
        self.remove(&key, Removal::Replaced);
        if let Some((owner, confirmed)) = owner {
            self.set_owner(key.token, owner, confirmed);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let weight = value.weight();
        let kind = value.kind();
        for license_id in value.license_ids() {
            self.by_license
                .entry(license_id.to_owned())
                .or_default()
                .insert(key);
        }
        let token = self.tokens.entry(key.token).or_default();
        token.calls.insert(key.call);
        if token.owner.is_none() {
            self.ownerless.insert(key.token);
        }
        self.entries.insert(
            key,
            Entry {
                value,
                stored_at: limits.now,
                seq,
                weight,
            },
        );
        self.bytes += weight;
        self.per_kind[kind as usize].entries += 1;
        self.per_kind[kind as usize].bytes += weight as u64;
        self.order.push_back((key, seq));
        self.shrink(limits);
    }

    /// Pops the queue's front while it is stale, past `keep_for`, or the
    /// cache is over a bound. Each insertion is queued once and popped once,
    /// so this is O(1) amortized.
    fn shrink(&mut self, limits: Limits) {
        while let Some(&(key, seq)) = self.order.front() {
            let over = self.entries.len() > limits.max_entries || self.bytes > limits.max_bytes;
            let expired = match self.entries.get(&key) {
                Some(entry) if entry.seq == seq => {
                    limits.now.saturating_duration_since(entry.stored_at) >= limits.keep_for
                }
                // A slot left by a replaced or removed entry.
                _ => {
                    self.order.pop_front();
                    continue;
                }
            };
            if !over && !expired {
                break;
            }
            self.order.pop_front();
            self.remove(&key, Removal::Evicted);
        }
        // Slots of entries dropped by changes stay queued until reached;
        // compacting when they outnumber the live ones keeps the queue
        // within twice the entries (amortized O(1) per insertion).
        if self.order.len() > 2 * self.entries.len() + 64 {
            let entries = &self.entries;
            self.order
                .retain(|(key, seq)| entries.get(key).is_some_and(|entry| entry.seq == *seq));
        }
    }

    /// Records who owns `token`'s entries.
    fn set_owner(&mut self, token: TokenDigest, owner: String, confirmed: bool) {
        let entries = self.tokens.entry(token).or_default();
        if entries.owner.as_deref() == Some(owner.as_str()) {
            entries.confirmed |= confirmed;
            return;
        }
        if entries.confirmed && !confirmed {
            return;
        }
        if let Some(previous) = entries.owner.replace(owner.clone()) {
            unlink(&mut self.by_user, &previous, &token);
        }
        entries.confirmed = confirmed;
        self.ownerless.remove(&token);
        self.by_user.entry(owner).or_default().insert(token);
    }

    fn owner(&self, token: &TokenDigest) -> Option<&str> {
        self.tokens.get(token)?.owner.as_deref()
    }

    /// Removes one entry and its index entries.
    fn remove(&mut self, key: &CacheKey, why: Removal) -> bool {
        let Some(entry) = self.entries.remove(key) else {
            return false;
        };
        self.bytes -= entry.weight;
        let totals = &mut self.per_kind[entry.value.kind() as usize];
        totals.entries -= 1;
        totals.bytes -= entry.weight as u64;
        match why {
            Removal::Replaced => {}
            Removal::Evicted => totals.evicted += 1,
            Removal::Invalidated => totals.invalidated += 1,
        }
        for license_id in entry.value.license_ids() {
            unlink(&mut self.by_license, license_id, key);
        }
        if let Some(token) = self.tokens.get_mut(&key.token) {
            token.calls.remove(&key.call);
            // A token with no entries left is forgotten, owner included,
            // unless an entry for it is being stored right now (`insert`
            // re-creates it).
            if token.calls.is_empty() {
                let owner = token.owner.take();
                self.tokens.remove(&key.token);
                self.ownerless.remove(&key.token);
                if let Some(owner) = owner {
                    unlink(&mut self.by_user, &owner, &key.token);
                }
            }
        }
        true
    }

    /// Removes `token`'s entries of the kinds `which` accepts; returns how
    /// many.
    fn remove_token(&mut self, token: TokenDigest, which: fn(Kind) -> bool) -> usize {
        let Some(entries) = self.tokens.get(&token) else {
            return 0;
        };
        let keys: Vec<CacheKey> = entries
            .calls
            .iter()
            .map(|&call| CacheKey { token, call })
            .filter(|key| {
                self.entries
                    .get(key)
                    .is_some_and(|entry| which(entry.value.kind()))
            })
            .collect();
        keys.iter()
            .filter(|key| self.remove(key, Removal::Invalidated))
            .count()
    }

    /// Removes what `target` touches; returns how many entries.
    fn invalidate(&mut self, target: Target<'_>) -> usize {
        match target {
            Target::Token(token) => self.remove_token(token, |_| true),
            Target::User(user_id) => {
                let tokens: Vec<TokenDigest> = self
                    .by_user
                    .get(user_id)
                    .map(|tokens| tokens.iter().copied().collect())
                    .unwrap_or_default();
                tokens
                    .into_iter()
                    .map(|token| self.remove_token(token, |_| true))
                    .sum()
            }
            Target::License {
                license_id,
                user_id,
            } => {
                let mut removed = 0;
                let showing: Vec<CacheKey> = self
                    .by_license
                    .get(license_id)
                    .map(|keys| keys.iter().copied().collect())
                    .unwrap_or_default();
                for key in showing {
                    removed += usize::from(self.remove(&key, Removal::Invalidated));
                }
                let mut tokens: Vec<TokenDigest> = self.ownerless.iter().copied().collect();
                if let Some(user_id) = user_id
                    && let Some(owned) = self.by_user.get(user_id)
                {
                    tokens.extend(owned.iter().copied());
                }
                for token in tokens {
                    removed += self.remove_token(token, Kind::follows_holders_licenses);
                }
                removed
            }
            Target::AllPages => {
                // Rare (nothing narrower was known): one pass over the map.
                let pages: Vec<CacheKey> = self
                    .entries
                    .iter()
                    .filter(|(_, entry)| entry.value.kind() != Kind::Profile)
                    .map(|(key, _)| *key)
                    .collect();
                pages
                    .iter()
                    .filter(|key| self.remove(key, Removal::Invalidated))
                    .count()
            }
        }
    }
}

/// Removes `item` from the set at `index[key]`, and the set once empty.
fn unlink<K, Q, V>(index: &mut HashMap<K, HashSet<V>>, key: &Q, item: &V)
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: std::hash::Hash + Eq + ?Sized,
    V: std::hash::Hash + Eq,
{
    if let Some(set) = index.get_mut(key) {
        set.remove(item);
        if set.is_empty() {
            index.remove(key);
        }
    }
}

/// The bounds an insertion enforces, and the time it happens.
#[derive(Clone, Copy)]
struct Limits {
    now: Instant,
    keep_for: Duration,
    max_entries: usize,
    max_bytes: usize,
}

/// A fetch in flight.
struct Flight {
    shared: SharedFetch,
    /// Tells this flight from a later one for the same key.
    id: u64,
    /// A background refresh: a foreground read does not wait on it (it may
    /// be refused budget a foreground read would get), it replaces it.
    background: bool,
    /// Set when a change touching the key arrives: the answer is not stored.
    outdated: Arc<AtomicBool>,
    kind: Kind,
    /// The owner the token claims, for changes that arrive before the token
    /// has an entry.
    claimed_owner: Option<Arc<str>>,
}

/// The reads in flight, and how many of them each token has, so that a
/// sign-out of a token with none (anyone can send one) costs O(1).
#[derive(Default)]
struct InFlight {
    fetches: HashMap<CacheKey, Flight>,
    per_token: HashMap<TokenDigest, usize>,
    next_id: u64,
}

impl InFlight {
    fn add(&mut self, key: CacheKey, mut flight: Flight) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        flight.id = id;
        if let Some(replaced) = self.fetches.insert(key, flight) {
            // Only a background refresh is ever replaced: it is older than
            // the fetch that replaces it, so its answer must not win.
            replaced.outdated.store(true, Ordering::Release);
        } else {
            *self.per_token.entry(key.token).or_default() += 1;
        }
        id
    }

    /// Removes flight `id` of `key`, if it is still the one in the map.
    fn finish(&mut self, key: &CacheKey, id: u64) {
        if self.fetches.get(key).is_none_or(|flight| flight.id != id) {
            return;
        }
        self.fetches.remove(key);
        if let Some(count) = self.per_token.get_mut(&key.token) {
            *count -= 1;
            if *count == 0 {
                self.per_token.remove(&key.token);
            }
        }
    }
}

/// Per-kind counters kept outside the locks.
#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    coalesced: AtomicU64,
    misses: AtomicU64,
    stale_served: AtomicU64,
    revalidated: AtomicU64,
}

struct Inner {
    options: CacheOptions,
    store: Mutex<Store>,
    in_flight: Mutex<InFlight>,
    background: AtomicUsize,
    /// Set once a profile showed that tokens' `sub` claims are not user ids
    /// here; claimed owners are ignored from then on.
    claims_unreliable: AtomicBool,
    counters: [Counters; Kind::COUNT],
}

/// The read cache for the answers of every [`Kind`]. Cloning is cheap and
/// shares it.
///
/// Locks are taken in the order `in_flight`, `store` (never the other way
/// round), each held for a few map operations.
#[derive(Clone)]
pub(crate) struct ReadCache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ReadCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut debug = f.debug_struct("ReadCache");
        debug.field("options", &self.inner.options);
        for kind in Kind::ALL {
            debug.field(kind.label(), &self.stats(kind));
        }
        debug.finish_non_exhaustive()
    }
}

/// One read, as the cache needs to know it.
pub(crate) struct Read<'a> {
    pub(crate) key: CacheKey,
    pub(crate) ctx: &'a RequestContext,
    /// Whose read it is (`background` false; the cache sets it for
    /// refreshes).
    pub(crate) share: ReadShare,
    /// The user id the token claims (unverified), if any.
    pub(crate) claimed_owner: Option<Arc<str>>,
    /// When the token's `exp` claim says it stops working: from then on
    /// nothing is answered for it from memory (Cryptlex decides).
    pub(crate) expires: Option<Instant>,
}

impl ReadCache {
    /// Creates an empty cache.
    pub(crate) fn new(options: CacheOptions) -> Self {
        Self {
            inner: Arc::new(Inner {
                options,
                store: Mutex::default(),
                in_flight: Mutex::default(),
                background: AtomicUsize::new(0),
                claims_unreliable: AtomicBool::new(false),
                counters: Default::default(),
            }),
        }
    }

    /// The counters and sizes for one kind of answer.
    pub(crate) fn stats(&self, kind: Kind) -> CacheStats {
        let counters = &self.inner.counters[kind as usize];
        let totals = lock(&self.inner.store).per_kind[kind as usize];
        CacheStats {
            hits: counters.hits.load(Ordering::Relaxed),
            coalesced: counters.coalesced.load(Ordering::Relaxed),
            misses: counters.misses.load(Ordering::Relaxed),
            stale_served: counters.stale_served.load(Ordering::Relaxed),
            revalidated_in_background: counters.revalidated.load(Ordering::Relaxed),
            invalidated: totals.invalidated,
            evicted: totals.evicted,
            entries: totals.entries,
            bytes: totals.bytes,
        }
    }

    /// Whether `token` has entries now.
    pub(crate) fn has_token(&self, token: &TokenDigest) -> bool {
        lock(&self.inner.store).tokens.contains_key(token)
    }

    /// The user `token`'s entries belong to, when a profile answer showed
    /// it (never only the token's own claim).
    pub(crate) fn confirmed_owner(&self, token: &TokenDigest) -> Option<String> {
        let store = lock(&self.inner.store);
        let entries = store.tokens.get(token)?;
        entries.confirmed.then(|| entries.owner.clone()).flatten()
    }

    /// Answers `read` from memory when it may, else joins an identical
    /// fetch in flight, else runs `fetch` with the caller's context (and
    /// stores its success). `fetch` is given the context to use: the
    /// caller's with its [`ReadShare`], or a background refresh's own.
    pub(crate) async fn get_or_fetch<Fut>(
        &self,
        read: Read<'_>,
        kind: Kind,
        fetch: impl FnOnce(RequestContext) -> Fut,
    ) -> Result<(Answer, Freshness), LicensingError>
    where
        Fut: Future<Output = Result<Answer, LicensingError>> + Send + 'static,
    {
        let options = &self.inner.options;
        let counters = &self.inner.counters[kind as usize];
        let key = read.key;
        let claimed_owner = if self.inner.claims_unreliable.load(Ordering::Relaxed) {
            None
        } else {
            read.claimed_owner
        };
        let usable = read.expires.is_none_or(|expires| Instant::now() < expires);
        if usable && let Some((value, age)) = self.remembered(&key) {
            if age < options.fresh_for {
                counters.hits.fetch_add(1, Ordering::Relaxed);
                return Ok((Arc::unwrap_or_clone(value), Freshness::Fresh));
            }
            if !options.fresh_for.is_zero() && age < options.max_age {
                counters.hits.fetch_add(1, Ordering::Relaxed);
                self.revalidate(key, kind, read.ctx, read.share, claimed_owner, fetch);
                return Ok((Arc::unwrap_or_clone(value), Freshness::Fresh));
            }
        }
        let (shared, outdated, leader) = {
            let mut in_flight = lock(&self.inner.in_flight);
            match in_flight.fetches.get(&key) {
                Some(flight) if !flight.background => {
                    (flight.shared.clone(), Arc::clone(&flight.outdated), None)
                }
                _ => {
                    let ctx = read.ctx.clone().with_read_share(ReadShare {
                        background: false,
                        ..read.share
                    });
                    let shared = fetch(ctx)
                        .map(|result| result.map(Arc::new))
                        .boxed()
                        .shared();
                    let outdated = Arc::new(AtomicBool::new(false));
                    let id = in_flight.add(
                        key,
                        Flight {
                            shared: shared.clone(),
                            id: 0,
                            background: false,
                            outdated: Arc::clone(&outdated),
                            kind,
                            claimed_owner: claimed_owner.clone(),
                        },
                    );
                    (shared, outdated, Some(id))
                }
            }
        };
        // The leader removes the flight when it is done (after storing its
        // answer), or when its caller goes away mid-call (the guard's drop),
        // so a finished fetch is never joined later.
        let _guard = match leader {
            Some(id) => {
                counters.misses.fetch_add(1, Ordering::Relaxed);
                Some(FlightGuard {
                    cache: self,
                    key,
                    id,
                })
            }
            None => {
                counters.coalesced.fetch_add(1, Ordering::Relaxed);
                None
            }
        };
        let result = shared.await;
        if leader.is_some() {
            self.settle(key, &result, &outdated, claimed_owner);
        }
        match result {
            // The last holder (the entry was not stored) takes it, any
            // other copies it.
            Ok(value) => Ok((Arc::unwrap_or_clone(value), Freshness::Fresh)),
            Err(error @ LicensingError::Unavailable { .. }) if options.serve_stale && usable => {
                match self.stale(&key) {
                    Some(value) => {
                        counters.stale_served.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(%error, "cryptlex unavailable: serving the last known answer, marked stale");
                        Ok((Arc::unwrap_or_clone(value), Freshness::Stale))
                    }
                    None => Err(error),
                }
            }
            Err(error) => Err(error),
        }
    }

    /// Starts one background refresh of `key`, unless one (or any fetch) is
    /// in flight for it or [`MAX_BACKGROUND_REFRESHES`] are running.
    fn revalidate<Fut>(
        &self,
        key: CacheKey,
        kind: Kind,
        ctx: &RequestContext,
        share: ReadShare,
        claimed_owner: Option<Arc<str>>,
        fetch: impl FnOnce(RequestContext) -> Fut,
    ) where
        Fut: Future<Output = Result<Answer, LicensingError>> + Send + 'static,
    {
        let inner = &self.inner;
        if inner.background.fetch_add(1, Ordering::AcqRel) >= MAX_BACKGROUND_REFRESHES {
            inner.background.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let slot = BackgroundSlot(Arc::clone(&self.inner));
        let mut in_flight = lock(&inner.in_flight);
        if in_flight.fetches.contains_key(&key) {
            return;
        }
        let background_ctx = RequestContext::new(ctx.request_id.clone(), BACKGROUND_DEADLINE)
            .from_address(ctx.client_address)
            .with_read_share(ReadShare {
                background: true,
                ..share
            });
        let fetch = fetch(background_ctx);
        let shared = async move {
            tokio::time::timeout(BACKGROUND_DEADLINE, fetch)
                .await
                .unwrap_or(Err(LicensingError::DeadlineExceeded))
                .map(Arc::new)
        }
        .boxed()
        .shared();
        let outdated = Arc::new(AtomicBool::new(false));
        let id = in_flight.add(
            key,
            Flight {
                shared: shared.clone(),
                id: 0,
                background: true,
                outdated: Arc::clone(&outdated),
                kind,
                claimed_owner: claimed_owner.clone(),
            },
        );
        drop(in_flight);
        inner.counters[kind as usize]
            .revalidated
            .fetch_add(1, Ordering::Relaxed);
        let cache = self.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _guard = FlightGuard {
                cache: &cache,
                key,
                id,
            };
            let result = shared.await;
            if let Err(error) = &result {
                // The old entry stays (unless the token was refused, see
                // `settle`); the next reader past `max_age` fetches.
                tracing::debug!(%error, "background refresh failed");
            }
            cache.settle(key, &result, &outdated, claimed_owner);
        });
    }

    /// Stores a leader's answer unless a change made it outdated; drops the
    /// token's entries if Cryptlex refused the token.
    fn settle(
        &self,
        key: CacheKey,
        result: &Result<Arc<Answer>, LicensingError>,
        outdated: &AtomicBool,
        claimed_owner: Option<Arc<str>>,
    ) {
        match result {
            Ok(value) => self.store(key, Arc::clone(value), outdated, claimed_owner),
            Err(LicensingError::TokenInvalid) => {
                self.invalidate(Target::Token(key.token));
            }
            Err(_) => {}
        }
    }

    /// Drops what `target` touches, and keeps fetches in flight that it may
    /// touch from being stored. Returns the entries dropped.
    pub(crate) fn invalidate(&self, target: Target<'_>) -> usize {
        let in_flight = lock(&self.inner.in_flight);
        // Under both locks: a fetch storing after this sees its flag, and
        // one that stored before is dropped below.
        let mut store = lock(&self.inner.store);
        let touched = |key: &CacheKey, flight: &Flight| match target {
            Target::Token(token) => key.token == token,
            Target::User(user_id) => {
                // An unknown owner may be this user.
                store
                    .owner(&key.token)
                    .or(flight.claimed_owner.as_deref())
                    .is_none_or(|owner| owner == user_id)
            }
            // A page in flight may show a license it does not know yet, and
            // a flight does not record which license its detail or
            // activations are of: every flight that may show one is kept
            // out (a change is rare; a fetch not stored costs one refetch).
            Target::License { .. } | Target::AllPages => flight.kind != Kind::Profile,
        };
        let skip =
            matches!(target, Target::Token(token) if !in_flight.per_token.contains_key(&token));
        if !skip {
            for (key, flight) in &in_flight.fetches {
                if touched(key, flight) {
                    flight.outdated.store(true, Ordering::Release);
                }
            }
        }
        store.invalidate(target)
    }

    /// The entry for `key` (shared: copying it is left for after the lock)
    /// and its age.
    fn remembered(&self, key: &CacheKey) -> Option<(Arc<Answer>, Duration)> {
        let store = lock(&self.inner.store);
        let entry = store.get(key)?;
        Some((
            Arc::clone(&entry.value),
            Instant::now().saturating_duration_since(entry.stored_at),
        ))
    }

    fn stale(&self, key: &CacheKey) -> Option<Arc<Answer>> {
        let (value, age) = self.remembered(key)?;
        (age < self.inner.options.stale_for).then_some(value)
    }

    fn limits(&self) -> Limits {
        let options = &self.inner.options;
        let reused_for = if options.fresh_for.is_zero() {
            Duration::ZERO
        } else {
            options.max_age.max(options.fresh_for)
        };
        let keep_for = if options.serve_stale {
            options.stale_for.max(reused_for)
        } else {
            reused_for
        };
        Limits {
            now: Instant::now(),
            keep_for,
            max_entries: options.max_entries,
            max_bytes: options.max_bytes,
        }
    }

    fn store(
        &self,
        key: CacheKey,
        value: Arc<Answer>,
        outdated: &AtomicBool,
        claimed: Option<Arc<str>>,
    ) {
        let limits = self.limits();
        if limits.keep_for.is_zero() {
            return;
        }
        let owner = match &*value {
            Answer::Profile(profile) => {
                if let Some(claimed) = &claimed
                    && **claimed != *profile.id
                    && !self.inner.claims_unreliable.swap(true, Ordering::Relaxed)
                {
                    tracing::warn!(
                        "access tokens' `sub` claim is not the user id here: pages are \
                         invalidated by owner only once the profile was read"
                    );
                }
                Some((profile.id.clone(), true))
            }
            Answer::Page(_) | Answer::License(_) | Answer::Activations(_) | Answer::Releases(_) => {
                claimed.map(|claimed| (claimed.to_string(), false))
            }
        };
        let mut store = lock(&self.inner.store);
        // Looked at under the store lock: a change that flags the fetch
        // after this look drops the entry afterwards.
        if outdated.load(Ordering::Acquire) {
            return;
        }
        store.insert(key, value, owner, limits);
    }
}

/// A background refresh's place among [`MAX_BACKGROUND_REFRESHES`],
/// released on every path (including a panic in the task).
struct BackgroundSlot(Arc<Inner>);

impl Drop for BackgroundSlot {
    fn drop(&mut self) {
        self.0.background.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Removes a leader's flight when dropped.
struct FlightGuard<'a> {
    cache: &'a ReadCache,
    key: CacheKey,
    id: u64,
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        lock(&self.cache.inner.in_flight).finish(&self.key, self.id);
    }
}

fn lock<V>(mutex: &Mutex<V>) -> std::sync::MutexGuard<'_, V> {
    // Every critical section leaves the maps consistent, so a poisoned map
    // is still usable.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const FRESH: Duration = Duration::from_secs(120);
    const MAX_AGE: Duration = Duration::from_secs(600);

    fn options() -> CacheOptions {
        CacheOptions {
            fresh_for: FRESH,
            max_age: MAX_AGE,
            max_entries: 100,
            max_bytes: 1 << 20,
            serve_stale: false,
            stale_for: Duration::from_secs(3600),
        }
    }

    fn token(name: &str) -> UserToken {
        UserToken::parse(name).expect("token")
    }

    fn profile(user: &str, name: &str) -> Answer {
        Answer::Profile(UserProfile {
            id: user.into(),
            email: format!("{user}@example.com"),
            first_name: name.into(),
            last_name: String::new(),
            name: name.into(),
            company: String::new(),
            role: "user".into(),
            two_factor_enabled: false,
            created_at: None,
            last_login_at: None,
        })
    }

    fn license(id: &str) -> UserLicense {
        UserLicense {
            id: id.into(),
            key: format!("KEY-{id}"),
            license_type: "node-locked".into(),
            product_name: "Demo".into(),
            revoked: false,
            suspended: false,
            perpetual: true,
            expires_at: None,
            allowed_activations: 1,
            total_activations: 0,
            allowed_deactivations: -1,
            total_deactivations: 0,
            subscription_interval: String::new(),
            created_at: None,
            metadata: BTreeMap::new(),
        }
    }

    fn page(ids: &[&str]) -> Answer {
        Answer::Page(Page {
            items: ids.iter().map(|id| license(id)).collect(),
            next: None,
            stale: false,
        })
    }

    fn detail(license_id: &str) -> Answer {
        Answer::License(LicenseDetail {
            license: license(license_id),
            feature_entitlements: vec![FeatureEntitlement {
                feature_id: "f1".into(),
                feature_name: "Export".into(),
                value: String::new(),
                expires_at: None,
            }],
        })
    }

    fn activation(id: &str, license_id: &str) -> Activation {
        Activation {
            id: id.into(),
            license_id: license_id.into(),
            hostname: format!("host-{id}"),
            os: "linux".into(),
            os_version: String::new(),
            vm_name: String::new(),
            app_version: "1.0".into(),
            release_version: String::new(),
            location: "Berlin, Germany".into(),
            country_code: "DE".into(),
            last_synced_at: None,
            created_at: None,
        }
    }

    /// A page of `license_id`'s activations with these ids (maybe none).
    fn activations(license_id: &str, ids: &[&str]) -> Answer {
        Answer::Activations(ActivationPage {
            license_id: crate::domain::CryptlexId::from_upstream(license_id.into()),
            activations: ids.iter().map(|id| activation(id, license_id)).collect(),
            next: None,
        })
    }

    fn release(id: &str, url_len: usize) -> Release {
        Release {
            id: id.into(),
            name: format!("Demo {id}"),
            version: "1.0.0".into(),
            channel: "stable".into(),
            platforms: vec!["windows".into()],
            product_name: "Demo".into(),
            notes: String::new(),
            published_at: None,
            files: vec![crate::domain::ReleaseFile {
                id: format!("{id}-file"),
                name: "setup.exe".into(),
                url: "u".repeat(url_len),
                size: 1,
                checksum: String::new(),
                extension: "exe".into(),
                secured: false,
            }],
        }
    }

    fn releases(ids: &[&str]) -> Answer {
        Answer::Releases(ReleasePage {
            releases: ids.iter().map(|id| release(id, 20)).collect(),
            next: None,
        })
    }

    fn name(answer: &Answer) -> String {
        let join = |ids: Vec<&str>| ids.join(",");
        match answer {
            Answer::Profile(profile) => profile.name.clone(),
            Answer::Page(page) => join(page.items.iter().map(|l| l.id.as_str()).collect()),
            Answer::License(detail) => detail.license.id.clone(),
            Answer::Activations(page) => join(
                page.activations
                    .iter()
                    .map(|activation| activation.id.as_str())
                    .collect(),
            ),
            Answer::Releases(page) => join(
                page.releases
                    .iter()
                    .map(|release| release.id.as_str())
                    .collect(),
            ),
        }
    }

    /// Reads `call` for `token` (owned by `claimed`), counting fetches in
    /// `calls`, answering `answer`; returns the answer's name.
    async fn read(
        cache: &ReadCache,
        token_text: &str,
        call: &str,
        claimed: Option<&str>,
        calls: &Arc<AtomicU64>,
        answer: Answer,
    ) -> Result<String, LicensingError> {
        let ctx = RequestContext::new("test", Duration::from_secs(10));
        let kind = answer.kind();
        let read = Read {
            key: CacheKey::new(&token(token_text), call, ""),
            ctx: &ctx,
            share: ReadShare {
                session: 1,
                vouched: true,
                background: false,
            },
            claimed_owner: claimed.map(Arc::from),
            expires: None,
        };
        let calls = Arc::clone(calls);
        cache
            .get_or_fetch(read, kind, move |_ctx| async move {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok(answer)
            })
            .await
            .map(|(answer, _)| name(&answer))
    }

    fn counter() -> Arc<AtomicU64> {
        Arc::new(AtomicU64::new(0))
    }

    /// Lets spawned background refreshes run to the end.
    async fn settle_background() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    fn unavailable() -> LicensingError {
        LicensingError::Unavailable {
            retry_after: None,
            source: Arc::new(crate::cryptlex::CryptlexError::ServerError {
                status: 503,
                retry_after: None,
            }),
        }
    }

    #[tokio::test]
    async fn identical_concurrent_reads_share_one_fetch() {
        let cache = ReadCache::new(CacheOptions {
            fresh_for: Duration::ZERO,
            ..options()
        });
        let calls = counter();
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let (cache, calls) = (cache.clone(), Arc::clone(&calls));
            tasks.push(tokio::spawn(async move {
                let ctx = RequestContext::new("t", Duration::from_secs(5));
                let read = Read {
                    key: CacheKey::new(&token("t"), "me", ""),
                    ctx: &ctx,
                    share: ReadShare {
                        session: 1,
                        vouched: false,
                        background: false,
                    },
                    claimed_owner: None,
                    expires: None,
                };
                cache
                    .get_or_fetch(read, Kind::Profile, move |ctx| async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        assert_eq!(
                            ctx.read_share,
                            Some(ReadShare {
                                session: 1,
                                vouched: false,
                                background: false,
                            }),
                            "the budget is told whose read it is"
                        );
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(profile("u", "seven"))
                    })
                    .await
                    .map(|(answer, _)| name(&answer))
            }));
        }
        for task in tasks {
            assert_eq!(task.await.expect("task").expect("value"), "seven");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(cache.stats(Kind::Profile).coalesced, 9);
        assert_eq!(
            cache.stats(Kind::Profile).entries,
            0,
            "fresh_for 0 keeps nothing"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_fresh_answer_is_reused_an_ageing_one_is_served_and_refreshed_once_and_an_old_one_is_fetched()
     {
        let cache = ReadCache::new(options());
        let calls = counter();
        let me = |n: &str| profile("u1", n);
        assert_eq!(
            read(&cache, "t", "me", None, &calls, me("v1"))
                .await
                .unwrap(),
            "v1"
        );
        // Fresh: memory, for the whole freshness period.
        tokio::time::advance(FRESH - Duration::from_secs(1)).await;
        assert_eq!(
            read(&cache, "t", "me", None, &calls, me("v2"))
                .await
                .unwrap(),
            "v1"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        // Ageing: the old answer at once, and one refresh in the background
        // however many readers come.
        tokio::time::advance(Duration::from_secs(2)).await;
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let background_share = Arc::new(Mutex::new(None));
        let ctx = RequestContext::new("r", Duration::from_secs(10));
        let first = {
            let (calls, share) = (Arc::clone(&calls), Arc::clone(&background_share));
            cache
                .get_or_fetch(
                    Read {
                        key: CacheKey::new(&token("t"), "me", ""),
                        ctx: &ctx,
                        share: ReadShare {
                            session: 9,
                            vouched: true,
                            background: false,
                        },
                        claimed_owner: None,
                        expires: None,
                    },
                    Kind::Profile,
                    move |ctx: RequestContext| async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        *share.lock().unwrap() = ctx.read_share;
                        let _ = released.await;
                        Ok(me("v3"))
                    },
                )
                .await
                .map(|(answer, _)| name(&answer))
        };
        assert_eq!(first.unwrap(), "v1", "answered at once from memory");
        for _ in 0..5 {
            assert_eq!(
                read(&cache, "t", "me", None, &calls, me("never"))
                    .await
                    .unwrap(),
                "v1"
            );
        }
        settle_background().await;
        assert_eq!(calls.load(Ordering::SeqCst), 2, "one background refresh");
        assert_eq!(
            *background_share.lock().unwrap(),
            Some(ReadShare {
                session: 9,
                vouched: true,
                background: true
            }),
            "the refresh tells the budget whose read it is, and that nobody waits"
        );
        release.send(()).unwrap();
        settle_background().await;
        assert_eq!(
            read(&cache, "t", "me", None, &calls, me("never"))
                .await
                .unwrap(),
            "v3"
        );
        assert_eq!(cache.stats(Kind::Profile).revalidated_in_background, 1);

        // Too old: fetched before answering.
        tokio::time::advance(MAX_AGE + Duration::from_secs(1)).await;
        assert_eq!(
            read(&cache, "t", "me", None, &calls, me("v4"))
                .await
                .unwrap(),
            "v4"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_page_view_every_second_for_a_minute_costs_its_first_two_fetches() {
        let cache = ReadCache::new(options());
        let calls = counter();
        for _ in 0..60 {
            // Two profile reads and the first license page, at once.
            let (a, b, c) = tokio::join!(
                read(&cache, "t", "me", Some("u1"), &calls, profile("u1", "v")),
                read(&cache, "t", "me", Some("u1"), &calls, profile("u1", "v")),
                read(&cache, "t", "page", Some("u1"), &calls, page(&["l1"])),
            );
            assert_eq!(
                (a.unwrap(), b.unwrap(), c.unwrap()),
                ("v".into(), "v".into(), "l1".into())
            );
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        let (profiles, pages) = (cache.stats(Kind::Profile), cache.stats(Kind::Page));
        assert_eq!((profiles.misses, pages.misses), (1, 1));
        assert_eq!(profiles.hits + profiles.coalesced + pages.hits, 178);
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_answered_from_memory_for_a_token_past_its_expiry() {
        let cache = ReadCache::new(options());
        let calls = counter();
        read(&cache, "t", "me", None, &calls, profile("u1", "v1"))
            .await
            .unwrap();
        let ctx = RequestContext::new("r", Duration::from_secs(10));
        let read_expired = Read {
            key: CacheKey::new(&token("t"), "me", ""),
            ctx: &ctx,
            share: ReadShare {
                session: 1,
                vouched: true,
                background: false,
            },
            claimed_owner: None,
            expires: Some(Instant::now()),
        };
        let result = cache
            .get_or_fetch(read_expired, Kind::Profile, |_| async {
                Err(LicensingError::TokenInvalid)
            })
            .await;
        assert!(matches!(result, Err(LicensingError::TokenInvalid)));
        assert_eq!(
            cache.stats(Kind::Profile).entries,
            0,
            "and its answers are gone"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_background_refresh_keeps_the_answer_and_a_refused_token_loses_its_answers() {
        let cache = ReadCache::new(options());
        let calls = counter();
        read(&cache, "t", "me", None, &calls, profile("u1", "v1"))
            .await
            .unwrap();
        read(&cache, "t", "page", None, &calls, page(&["l1"]))
            .await
            .unwrap();
        tokio::time::advance(FRESH + Duration::from_secs(1)).await;

        let ctx = RequestContext::new("r", Duration::from_secs(10));
        let fail = |error: LicensingError| {
            let read = Read {
                key: CacheKey::new(&token("t"), "me", ""),
                ctx: &ctx,
                share: ReadShare {
                    session: 1,
                    vouched: true,
                    background: false,
                },
                claimed_owner: None,
                expires: None,
            };
            cache.get_or_fetch(read, Kind::Profile, move |_| async move { Err(error) })
        };
        assert_eq!(name(&fail(unavailable()).await.unwrap().0), "v1");
        settle_background().await;
        assert_eq!(
            cache.stats(Kind::Profile).entries,
            1,
            "kept after a failure"
        );

        assert_eq!(
            name(&fail(LicensingError::TokenInvalid).await.unwrap().0),
            "v1"
        );
        settle_background().await;
        assert_eq!(
            cache.stats(Kind::Profile).entries,
            0,
            "the refused token's profile"
        );
        assert_eq!(cache.stats(Kind::Page).entries, 0, "and its pages");
    }

    #[tokio::test(start_paused = true)]
    async fn background_refreshes_are_bounded_and_extra_ones_skipped() {
        let cache = ReadCache::new(options());
        let calls = counter();
        for n in 0..(MAX_BACKGROUND_REFRESHES + 4) {
            read(
                &cache,
                &format!("t{n}"),
                "me",
                None,
                &calls,
                profile("u", "v1"),
            )
            .await
            .unwrap();
        }
        tokio::time::advance(FRESH + Duration::from_secs(1)).await;
        let (_hold, held) = tokio::sync::watch::channel(());
        let started = counter();
        let ctx = RequestContext::new("r", Duration::from_secs(10));
        for n in 0..(MAX_BACKGROUND_REFRESHES + 4) {
            let (started, mut held) = (Arc::clone(&started), held.clone());
            let read = Read {
                key: CacheKey::new(&token(&format!("t{n}")), "me", ""),
                ctx: &ctx,
                share: ReadShare {
                    session: 1,
                    vouched: true,
                    background: false,
                },
                claimed_owner: None,
                expires: None,
            };
            let answer = cache
                .get_or_fetch(read, Kind::Profile, move |_| async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    let _ = held.changed().await;
                    Ok(profile("u", "v2"))
                })
                .await
                .unwrap();
            assert_eq!(name(&answer.0), "v1");
        }
        settle_background().await;
        assert_eq!(
            started.load(Ordering::SeqCst),
            MAX_BACKGROUND_REFRESHES as u64
        );
        // Past their own deadline, the refreshes end and give their places back.
        tokio::time::advance(BACKGROUND_DEADLINE + Duration::from_secs(1)).await;
        settle_background().await;
        assert_eq!(cache.inner.background.load(Ordering::SeqCst), 0);
        assert!(lock(&cache.inner.in_flight).fetches.is_empty());
        assert_eq!(
            cache.stats(Kind::Profile).entries,
            20,
            "failed refreshes keep the old answers"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_user_change_drops_exactly_that_users_entries() {
        let cache = ReadCache::new(options());
        let calls = counter();
        // u1 has two tokens (one known by its profile, one by its claim); u2 one.
        read(&cache, "a", "me", None, &calls, profile("u1", "a"))
            .await
            .unwrap();
        read(&cache, "a", "page", None, &calls, page(&["l1"]))
            .await
            .unwrap();
        read(&cache, "b", "page", Some("u1"), &calls, page(&["l1"]))
            .await
            .unwrap();
        read(&cache, "c", "me", None, &calls, profile("u2", "c"))
            .await
            .unwrap();
        read(&cache, "c", "page", None, &calls, page(&["l2"]))
            .await
            .unwrap();

        assert_eq!(cache.invalidate(Target::User("u1")), 3);

        let before = calls.load(Ordering::SeqCst);
        read(&cache, "c", "me", None, &calls, profile("u2", "x"))
            .await
            .unwrap();
        read(&cache, "c", "page", None, &calls, page(&[]))
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), before, "u2 is untouched");
        read(&cache, "a", "me", None, &calls, profile("u1", "a2"))
            .await
            .unwrap();
        read(&cache, "b", "page", Some("u1"), &calls, page(&[]))
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), before + 2);
        assert_eq!(cache.invalidate(Target::User("nobody")), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_license_change_drops_the_pages_that_show_it_its_holders_pages_and_ownerless_pages() {
        let cache = ReadCache::new(options());
        let calls = counter();
        read(&cache, "holder", "me", None, &calls, profile("u1", "h"))
            .await
            .unwrap();
        read(&cache, "holder", "page", None, &calls, page(&[]))
            .await
            .unwrap();
        read(&cache, "shows", "page", Some("u3"), &calls, page(&["l9"]))
            .await
            .unwrap();
        read(&cache, "other", "page", Some("u2"), &calls, page(&["l2"]))
            .await
            .unwrap();
        read(&cache, "nobody", "page", None, &calls, page(&["l3"]))
            .await
            .unwrap();

        // A new license l9 for u1: u1's page, the page showing l9, the
        // ownerless page; not u2's page and not u1's profile.
        let dropped = cache.invalidate(Target::License {
            license_id: "l9",
            user_id: Some("u1"),
        });
        assert_eq!(dropped, 3);
        assert_eq!(cache.stats(Kind::Profile).entries, 1);
        assert_eq!(cache.stats(Kind::Page).entries, 1);
        let before = calls.load(Ordering::SeqCst);
        read(&cache, "other", "page", Some("u2"), &calls, page(&[]))
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), before);
        // The index holds nothing for the dropped pages.
        let store = lock(&cache.inner.store);
        assert!(!store.by_license.contains_key("l9"));
        assert!(!store.by_license.contains_key("l3"));
        assert!(store.ownerless.is_empty());
        drop(store);
        assert_eq!(cache.invalidate(Target::AllPages), 1);
        assert_eq!(cache.stats(Kind::Profile).entries, 1, "profiles stay");
    }

    #[tokio::test]
    async fn a_fetch_in_flight_when_a_change_touches_its_key_answers_but_is_not_stored() {
        for target in ["token", "user", "license"] {
            let cache = ReadCache::new(options());
            let (release, released) = tokio::sync::oneshot::channel::<()>();
            let in_flight = tokio::spawn({
                let cache = cache.clone();
                async move {
                    let ctx = RequestContext::new("r", Duration::from_secs(10));
                    let read = Read {
                        key: CacheKey::new(&token("t"), "page", ""),
                        ctx: &ctx,
                        share: ReadShare {
                            session: 1,
                            vouched: true,
                            background: false,
                        },
                        claimed_owner: Some("u1".into()),
                        expires: None,
                    };
                    cache
                        .get_or_fetch(read, Kind::Page, move |_| async move {
                            let _ = released.await;
                            Ok(page(&["old"]))
                        })
                        .await
                        .map(|(answer, _)| name(&answer))
                }
            });
            while lock(&cache.inner.in_flight).fetches.is_empty() {
                tokio::task::yield_now().await;
            }
            match target {
                "token" => cache.invalidate(Target::Token(TokenDigest::new(&token("t")))),
                "user" => cache.invalidate(Target::User("u1")),
                _ => cache.invalidate(Target::License {
                    license_id: "new",
                    user_id: None,
                }),
            };
            release.send(()).unwrap();
            assert_eq!(
                in_flight.await.unwrap().unwrap(),
                "old",
                "its callers get it"
            );
            assert_eq!(cache.stats(Kind::Page).entries, 0, "{target}: not stored");
            assert!(lock(&cache.inner.in_flight).fetches.is_empty());
        }
    }

    #[tokio::test]
    async fn a_change_about_someone_else_does_not_keep_a_fetch_out() {
        let cache = ReadCache::new(options());
        let calls = counter();
        read(&cache, "t", "me", None, &calls, profile("u1", "a"))
            .await
            .unwrap();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let in_flight = tokio::spawn({
            let cache = cache.clone();
            async move {
                let ctx = RequestContext::new("r", Duration::from_secs(10));
                let read = Read {
                    key: CacheKey::new(&token("t"), "page", ""),
                    ctx: &ctx,
                    share: ReadShare {
                        session: 1,
                        vouched: true,
                        background: false,
                    },
                    claimed_owner: None,
                    expires: None,
                };
                cache
                    .get_or_fetch(read, Kind::Page, move |_| async move {
                        let _ = released.await;
                        Ok(page(&["l1"]))
                    })
                    .await
            }
        });
        while lock(&cache.inner.in_flight).fetches.is_empty() {
            tokio::task::yield_now().await;
        }
        cache.invalidate(Target::User("u2"));
        cache.invalidate(Target::Token(TokenDigest::new(&token("other"))));
        release.send(()).unwrap();
        in_flight.await.unwrap().unwrap();
        assert_eq!(cache.stats(Kind::Page).entries, 1);
    }

    #[test]
    fn a_session_is_the_first_eight_bytes_of_the_token_digest() {
        let digest: [u8; 32] = Sha256::digest(b"some.token.text").into();
        let expected = u64::from_be_bytes(digest[..8].try_into().unwrap());
        assert_eq!(
            TokenDigest::new(&token("some.token.text")).session(),
            expected
        );
        assert_eq!(
            TokenDigest::new(&token("some.token.text")).to_hex(),
            hex::encode(digest)
        );
    }

    #[tokio::test]
    async fn signing_out_tokens_that_were_never_cached_leaves_nothing_behind() {
        let cache = ReadCache::new(options());
        let calls = counter();
        read(&cache, "cached", "me", None, &calls, profile("u1", "a"))
            .await
            .unwrap();
        for n in 0..1000 {
            let digest = TokenDigest::new(&token(&format!("junk-{n}")));
            assert_eq!(cache.invalidate(Target::Token(digest)), 0);
        }
        let digest = TokenDigest::from_hex(&TokenDigest::new(&token("cached")).to_hex()).unwrap();
        assert_eq!(cache.invalidate(Target::Token(digest)), 1);
        let store = lock(&cache.inner.store);
        assert!(store.entries.is_empty() && store.tokens.is_empty() && store.by_user.is_empty());
        assert!(TokenDigest::from_hex("not hex").is_none());
    }

    #[tokio::test]
    async fn two_tokens_of_the_same_user_never_share_an_answer() {
        let cache = ReadCache::new(options());
        let (release, released) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for who in ["first", "second", "first", "second"] {
            let (cache, mut released) = (cache.clone(), released.clone());
            tasks.push(tokio::spawn(async move {
                let ctx = RequestContext::new("r", Duration::from_secs(10));
                let read = Read {
                    key: CacheKey::new(&token(who), "me", ""),
                    ctx: &ctx,
                    share: ReadShare {
                        session: 1,
                        vouched: true,
                        background: false,
                    },
                    claimed_owner: Some("u1".into()),
                    expires: None,
                };
                let answer = cache
                    .get_or_fetch(read, Kind::Profile, move |_| async move {
                        let _ = released.wait_for(|go| *go).await;
                        Ok(profile("u1", who))
                    })
                    .await
                    .unwrap();
                (who, name(&answer.0))
            }));
        }
        tokio::task::yield_now().await;
        release.send(true).unwrap();
        for task in tasks {
            let (who, got) = task.await.unwrap();
            assert_eq!(who, got, "each token gets only its own answer");
        }
        let calls = counter();
        for who in ["first", "second"] {
            assert_eq!(
                read(&cache, who, "me", None, &calls, profile("u1", "x"))
                    .await
                    .unwrap(),
                who
            );
        }
        assert_eq!(cache.stats(Kind::Profile).misses, 2, "one fetch per token");
    }

    #[tokio::test]
    async fn the_cache_stays_within_its_entry_and_byte_bounds_and_its_queue_stays_small() {
        let cache = ReadCache::new(CacheOptions {
            max_entries: 10,
            ..options()
        });
        let calls = counter();
        for n in 0..100 {
            read(
                &cache,
                &format!("t{n}"),
                "me",
                None,
                &calls,
                profile("u", "v"),
            )
            .await
            .unwrap();
        }
        assert_eq!(cache.stats(Kind::Profile).entries, 10);
        assert_eq!(cache.stats(Kind::Profile).evicted, 90);

        let weight = profile("u", "v").weight();
        let cache = ReadCache::new(CacheOptions {
            max_bytes: weight * 5 + weight / 2,
            ..options()
        });
        for n in 0..100 {
            read(
                &cache,
                &format!("t{n}"),
                "me",
                None,
                &calls,
                profile("u", "v"),
            )
            .await
            .unwrap();
            // The same key stored again and again leaves no trail either.
            cache.invalidate(Target::User("nobody"));
            read(&cache, "same", "page", None, &calls, page(&["l"]))
                .await
                .unwrap();
            cache.invalidate(Target::License {
                license_id: "l",
                user_id: None,
            });
            let stats = (cache.stats(Kind::Profile), cache.stats(Kind::Page));
            assert!(stats.0.bytes + stats.1.bytes <= (weight * 5 + weight / 2) as u64);
        }
        for n in 0..5 {
            read(
                &cache,
                &format!("z{n}"),
                "me",
                None,
                &calls,
                profile("u", "v"),
            )
            .await
            .unwrap();
        }
        assert_eq!(
            cache.stats(Kind::Profile).entries,
            5,
            "five fit in the bytes"
        );
        let store = lock(&cache.inner.store);
        assert!(
            store.order.len() <= 2 * store.entries.len() + 64,
            "{}",
            store.order.len()
        );
        assert!(store.by_license.is_empty());
        // The newest answers are the ones kept.
        let newest = CacheKey::new(&token("z4"), "me", "");
        assert!(store.entries.contains_key(&newest));
    }

    #[tokio::test]
    async fn a_stale_answer_is_served_only_when_enabled_and_cryptlex_is_unavailable() {
        for serve_stale in [true, false] {
            let cache = ReadCache::new(CacheOptions {
                fresh_for: Duration::ZERO,
                serve_stale,
                ..options()
            });
            let calls = counter();
            read(&cache, "t", "page", None, &calls, page(&["l1"]))
                .await
                .unwrap();
            let ctx = RequestContext::new("r", Duration::from_secs(10));
            let read = Read {
                key: CacheKey::new(&token("t"), "page", ""),
                ctx: &ctx,
                share: ReadShare {
                    session: 1,
                    vouched: true,
                    background: false,
                },
                claimed_owner: None,
                expires: None,
            };
            let result = cache
                .get_or_fetch(read, Kind::Page, |_| async { Err(unavailable()) })
                .await;
            if serve_stale {
                let (answer, freshness) = result.expect("stale");
                assert_eq!((name(&answer), freshness), ("l1".into(), Freshness::Stale));
            } else {
                assert!(result.is_err());
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_past_max_age_does_not_wait_on_a_background_refresh_and_wins_over_it() {
        let cache = ReadCache::new(CacheOptions {
            fresh_for: Duration::from_secs(10),
            max_age: Duration::from_secs(12),
            ..options()
        });
        let calls = counter();
        read(&cache, "t", "me", None, &calls, profile("u", "v1"))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(11)).await;
        // A background refresh that is slow (or would be refused)...
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let ctx = RequestContext::new("r", Duration::from_secs(10));
        let read_again = Read {
            key: CacheKey::new(&token("t"), "me", ""),
            ctx: &ctx,
            share: ReadShare {
                session: 1,
                vouched: true,
                background: false,
            },
            claimed_owner: None,
            expires: None,
        };
        cache
            .get_or_fetch(read_again, Kind::Profile, |_| async {
                let _ = released.await;
                Ok(profile("u", "from the background"))
            })
            .await
            .unwrap();
        settle_background().await;
        // ...is not waited on once the answer is too old: the foreground
        // read fetches on its own, and its answer is the one kept.
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            read(&cache, "t", "me", None, &calls, profile("u", "v2"))
                .await
                .unwrap(),
            "v2"
        );
        release.send(()).unwrap();
        settle_background().await;
        assert_eq!(
            read(&cache, "t", "me", None, &calls, profile("u", "x"))
                .await
                .unwrap(),
            "v2"
        );
        assert!(lock(&cache.inner.in_flight).fetches.is_empty());
    }

    /// Which of `calls` (as `(token, call)`) are still answered from
    /// memory; each read that is not answers `fresh`.
    async fn still_cached(cache: &ReadCache, calls: &[(&str, &str, Answer)]) -> Vec<String> {
        let mut cached = Vec::new();
        for (token_text, call, fresh) in calls {
            let fetches = counter();
            read(cache, token_text, call, None, &fetches, fresh.clone())
                .await
                .unwrap();
            if fetches.load(Ordering::SeqCst) == 0 {
                cached.push(format!("{token_text}/{call}"));
            }
        }
        cached
    }

    #[tokio::test(start_paused = true)]
    async fn a_license_change_drops_its_detail_and_activations_and_its_holders_releases_only() {
        let cache = ReadCache::new(options());
        let calls = counter();
        for (token_text, call, claimed, answer) in [
            ("holder", "me", None, profile("u1", "h")),
            ("holder", "license/l1", None, detail("l1")),
            // Empty: the license's next activation must still drop it.
            ("holder", "activations/l1", None, activations("l1", &[])),
            ("holder", "license/l2", None, detail("l2")),
            ("holder", "activations/l2", None, activations("l2", &["a2"])),
            ("holder", "releases", None, releases(&["r1"])),
            ("other", "releases", Some("u2"), releases(&["r1"])),
            ("other", "license/l9", Some("u2"), detail("l9")),
        ] {
            read(&cache, token_text, call, claimed, &calls, answer)
                .await
                .unwrap();
        }

        // An activation of l1 deleted: l1's detail and machines, and the
        // holder's releases (their products may have changed).
        let dropped = cache.invalidate(Target::License {
            license_id: "l1",
            user_id: Some("u1"),
        });
        assert_eq!(dropped, 3);
        assert!(!lock(&cache.inner.store).by_license.contains_key("l1"));
        let kept = still_cached(
            &cache,
            &[
                ("holder", "me", profile("u1", "x")),
                ("holder", "license/l1", detail("l1")),
                ("holder", "activations/l1", activations("l1", &[])),
                ("holder", "license/l2", detail("l2")),
                ("holder", "activations/l2", activations("l2", &[])),
                ("holder", "releases", releases(&[])),
                ("other", "releases", releases(&[])),
                ("other", "license/l9", detail("l9")),
            ],
        )
        .await;
        assert_eq!(
            kept,
            [
                "holder/me",
                "holder/license/l2",
                "holder/activations/l2",
                "other/releases",
                "other/license/l9"
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn user_sign_out_and_all_pages_changes_reach_every_new_kind() {
        let cache = ReadCache::new(options());
        let calls = counter();
        let fill = |cache: ReadCache, calls: Arc<AtomicU64>| async move {
            for (token_text, call, answer) in [
                ("a", "me", profile("u1", "a")),
                ("a", "license/l1", detail("l1")),
                ("a", "activations/l1", activations("l1", &["x"])),
                ("a", "releases", releases(&["r1"])),
                ("b", "me", profile("u2", "b")),
                ("b", "releases", releases(&["r1"])),
            ] {
                read(&cache, token_text, call, None, &calls, answer)
                    .await
                    .unwrap();
            }
        };
        fill(cache.clone(), Arc::clone(&calls)).await;
        assert_eq!(cache.invalidate(Target::User("u1")), 4);
        fill(cache.clone(), Arc::clone(&calls)).await;
        assert_eq!(
            cache.invalidate(Target::Token(TokenDigest::new(&token("a")))),
            4
        );
        fill(cache.clone(), Arc::clone(&calls)).await;
        assert_eq!(cache.invalidate(Target::AllPages), 4, "all but profiles");
        for kind in [Kind::License, Kind::Activations, Kind::Releases] {
            assert_eq!(cache.stats(kind).entries, 0, "{kind:?}");
            assert!(cache.stats(kind).invalidated > 0, "{kind:?}");
        }
        assert_eq!(cache.stats(Kind::Profile).entries, 2);
        let store = lock(&cache.inner.store);
        assert!(store.by_license.is_empty());
    }

    #[tokio::test]
    async fn an_activations_fetch_in_flight_when_its_license_changes_is_not_stored() {
        let cache = ReadCache::new(options());
        let (release_fetch, released) = tokio::sync::oneshot::channel::<()>();
        let in_flight = tokio::spawn({
            let cache = cache.clone();
            async move {
                let ctx = RequestContext::new("r", Duration::from_secs(10));
                let read = Read {
                    key: CacheKey::new(&token("t"), "activations/l1", ""),
                    ctx: &ctx,
                    share: ReadShare {
                        session: 1,
                        vouched: true,
                        background: false,
                    },
                    claimed_owner: None,
                    expires: None,
                };
                cache
                    .get_or_fetch(read, Kind::Activations, move |_| async move {
                        let _ = released.await;
                        Ok(activations("l1", &["deleted-meanwhile"]))
                    })
                    .await
                    .map(|(answer, _)| name(&answer))
            }
        });
        while lock(&cache.inner.in_flight).fetches.is_empty() {
            tokio::task::yield_now().await;
        }
        cache.invalidate(Target::License {
            license_id: "l1",
            user_id: None,
        });
        release_fetch.send(()).unwrap();
        assert_eq!(in_flight.await.unwrap().unwrap(), "deleted-meanwhile");
        assert_eq!(cache.stats(Kind::Activations).entries, 0);
    }

    #[tokio::test]
    async fn new_kinds_count_their_strings_and_stay_within_the_byte_bound() {
        let small = Answer::Releases(ReleasePage {
            releases: vec![release("r", 10)],
            next: None,
        });
        let large = Answer::Releases(ReleasePage {
            releases: vec![release("r", 10_010)],
            next: None,
        });
        assert_eq!(
            large.weight() - small.weight(),
            10_000,
            "a url's bytes count"
        );
        let one = activations("l1", &["a"]).weight();
        let two = activations("l1", &["a", "b"]).weight();
        assert!(two - one >= PART_OVERHEAD, "each activation counts");
        assert!(detail("l1").weight() > license_weight(&license("l1")));

        let bound = 3 * large.weight();
        let cache = ReadCache::new(CacheOptions {
            max_bytes: bound,
            ..options()
        });
        let calls = counter();
        for n in 0..20 {
            read(
                &cache,
                &format!("t{n}"),
                "releases",
                None,
                &calls,
                large.clone(),
            )
            .await
            .unwrap();
            read(
                &cache,
                &format!("t{n}"),
                "activations",
                None,
                &calls,
                activations("l1", &["a"]),
            )
            .await
            .unwrap();
            let total: u64 = Kind::ALL.iter().map(|kind| cache.stats(*kind).bytes).sum();
            assert!(total <= bound as u64, "{total} > {bound}");
        }
        assert!(cache.stats(Kind::Releases).evicted > 0);
    }
}

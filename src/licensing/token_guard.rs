//! Refusing tokens that cannot work before they spend the upstream budget.
//!
//! Anyone can send a bearer or refresh token, and every one that reaches
//! Cryptlex costs a slot of the budget that all users share: a stream of
//! random tokens, each answered 401, once left real users with
//! `UPSTREAM_BUDGET_EXHAUSTED`. Two cheap filters stop most of it:
//! - shape: an access token that is no JWT, or whose `exp` is long past,
//!   would be refused by Cryptlex ([`UserToken::could_be_cryptlex_token`]);
//! - memory: a token Cryptlex itself refused is refused again locally for a
//!   while (`REMEMBER_FOR`), so repeating one costs one upstream call.
//!
//! Both only ever refuse, and with the answer Cryptlex would have given
//! (`TokenInvalid`). Nothing here accepts a token: a token that passes still
//! goes to Cryptlex, which alone decides. Refusals are remembered by the
//! SHA-256 of the whole token, so one can only ever reach the token that
//! earned it, and no token is kept in memory.
//!
//! It also remembers which access tokens are *vouched for* (this gateway
//! issued them through login, refresh or sign-up, or Cryptlex has answered a
//! read with them), so the budget can give unvouched tokens, which anyone
//! can make up, a smaller share. Vouching never lets a token skip Cryptlex
//! either; it only decides which share its upstream reads come from, and
//! saves decoding the token again on every read: the vouch keeps the claims
//! the reads use, and ends no later than the token's `exp`.
//!
//! Not done here: refresh tokens have no known shape (Cryptlex documents them
//! as opaque strings of 1 to 256 characters), and a forged JWT with a fresh
//! `exp` passes the shape check. What keeps such junk from starving others is
//! the budget: reads may not use the sign-in reserve, and refresh and logout
//! have a priority and a share of their own (`cryptlex::budget`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::LicensingError;
use super::read_cache::TokenDigest;
use crate::cryptlex::{CryptlexError, Rejection};
use crate::domain::{RefreshToken, Session, UserToken};

/// How long a refused token is remembered. Cryptlex never takes a refused
/// token back, so the bound is about memory and about a refusal that was not
/// Cryptlex's to make (see [`TokenGuard::access_call_failed`]), not about
/// correctness.
const REMEMBER_FOR: Duration = Duration::from_secs(60);

/// Most refused tokens remembered: 10 000 hashes are about 0.5 MiB. When full,
/// the oldest is forgotten, so a flood of distinct junk costs memory, never
/// correctness.
const MAX_REMEMBERED: usize = 10_000;

/// Most vouched-for tokens remembered: 50 000 digests with their expiry and
/// claims are about 6 MiB. When full, the oldest vouch is forgotten: that
/// token's reads then come from the unvouched share until Cryptlex answers it
/// again.
const MAX_VOUCHED: usize = 50_000;

/// How long a vouch lasts at most, and when the token carries no readable
/// `exp`: past it, the token is vouched for again by its next answered read.
const MAX_VOUCH_FOR: Duration = Duration::from_secs(24 * 60 * 60);

/// Which kind of token a refusal is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum TokenKind {
    Access,
    Refresh,
}

/// What a refused token is remembered by: its kind and the SHA-256 of its
/// text. The kind is part of it, so an access token and a refresh token with
/// the same text stay apart. An access token's digest is the one the token
/// already carries ([`UserToken::digest`]), so remembering or checking it
/// hashes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct TokenHash {
    kind: TokenKind,
    digest: [u8; 32],
}

impl TokenHash {
    fn access(token: &UserToken) -> Self {
        Self {
            kind: TokenKind::Access,
            digest: *token.digest(),
        }
    }

    fn refresh(token: &RefreshToken) -> Self {
        Self {
            kind: TokenKind::Refresh,
            digest: Sha256::digest(token.expose_secret().as_bytes()).into(),
        }
    }
}

/// The local refusals of tokens that cannot work.
#[derive(Debug)]
pub(crate) struct TokenGuard {
    remember_for: Duration,
    max_remembered: usize,
    // A std mutex: every critical section is a few map operations, never
    // held across an await.
    refused: Mutex<Refused>,
    vouched: Mutex<Vouched>,
}

/// Tokens known to work, with when each vouch ends. Expiries differ per
/// token, so the queue is in insertion order: it gives the oldest vouch to
/// forget when full, and expired ones are dropped as they reach its front.
#[derive(Debug, Default)]
struct Vouched {
    by_token: HashMap<TokenDigest, Vouch>,
    /// Oldest first; an entry whose time differs from `by_token`'s is a
    /// stale copy left by a later vouch (or an unvouch) of the same token.
    order: VecDeque<(TokenDigest, Instant)>,
}

/// One vouch.
#[derive(Debug)]
struct Vouch {
    until: Instant,
    /// The token's claims, when it passed the shape check as it was vouched
    /// for. The vouch ends no later than the token's `exp`, so while it lasts
    /// the check would pass again: a read with the token skips it and takes
    /// the claims from here instead of decoding the token once more.
    claims: Option<TokenClaims>,
}

/// What the cached reads use of a token's claims (unverified; see
/// [`claimed_user_id`] and [`expires_at`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct TokenClaims {
    /// The user id the token claims, if plausible.
    pub(crate) owner: Option<Arc<str>>,
    /// When the token's `exp` says it stops working.
    pub(crate) expires: Option<Instant>,
}

impl TokenClaims {
    fn of(token: &UserToken) -> Self {
        Self {
            owner: plausible_user_id(token).map(Arc::from),
            expires: expires_at(token),
        }
    }
}

/// An access token the guard let through, with what its reads need.
#[derive(Debug, Clone)]
pub(crate) struct Admitted {
    pub(crate) digest: TokenDigest,
    /// Whether the token is vouched for now.
    pub(crate) vouched: bool,
    pub(crate) claims: TokenClaims,
}

/// Tokens Cryptlex refused, with when each is forgotten. Every entry lives
/// `remember_for`, so the order of insertion is the order of expiry: the
/// queue gives the oldest in O(1), and expiry is paid as entries are added.
#[derive(Debug, Default)]
struct Refused {
    until: HashMap<TokenHash, Instant>,
    /// Oldest first; an entry whose time differs from `until`'s is a stale
    /// copy left by a later refusal of the same token.
    order: VecDeque<(TokenHash, Instant)>,
}

impl TokenGuard {
    /// Creates a guard with the built-in bounds.
    pub(crate) fn new() -> Self {
        Self::with_bounds(REMEMBER_FOR, MAX_REMEMBERED)
    }

    fn with_bounds(remember_for: Duration, max_remembered: usize) -> Self {
        Self {
            remember_for,
            max_remembered: max_remembered.max(1),
            refused: Mutex::default(),
            vouched: Mutex::default(),
        }
    }

    /// Vouches for the access token of a session this gateway obtained.
    pub(crate) fn vouch_issued(&self, session: &Session) {
        let lifetime = session.expires_at.map_or(MAX_VOUCH_FOR, |expires_at| {
            (expires_at - chrono::Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO)
        });
        self.vouch(&session.access_token, lifetime);
    }

    /// Vouches for a token Cryptlex has just answered a read with.
    pub(crate) fn vouch_answered(&self, token: &UserToken) {
        let lifetime = token.claimed_expiry().map_or(MAX_VOUCH_FOR, |exp| {
            Duration::try_from_secs_f64(exp - chrono::Utc::now().timestamp() as f64)
                .unwrap_or(Duration::ZERO)
        });
        self.vouch(token, lifetime);
    }

    /// Whether the token with `digest` is vouched for now.
    pub(crate) fn is_vouched(&self, digest: &TokenDigest) -> bool {
        lock(&self.vouched)
            .by_token
            .get(digest)
            .is_some_and(|vouch| vouch.until > Instant::now())
    }

    /// Forgets the vouch for a signed-out token (its queue slot goes stale).
    pub(crate) fn unvouch(&self, digest: &TokenDigest) {
        lock(&self.vouched).by_token.remove(digest);
    }

    fn vouch(&self, token: &UserToken, lifetime: Duration) {
        if lifetime.is_zero() {
            return;
        }
        let digest = TokenDigest::new(token);
        // Once per vouch (an upstream answer or a sign-in), not per read.
        let claims = token
            .could_be_cryptlex_token(chrono::Utc::now())
            .then(|| TokenClaims::of(token));
        let now = Instant::now();
        let mut until = now + lifetime.min(MAX_VOUCH_FOR);
        if let Some(expires) = claims.as_ref().and_then(|claims| claims.expires) {
            // A session's own expiry may differ from its token's `exp`; the
            // skipped shape check holds only until the `exp`.
            until = until.min(expires);
        }
        if until <= now {
            return;
        }
        let mut vouched = lock(&self.vouched);
        if vouched.by_token.get(&digest).map(|vouch| vouch.until) == Some(until) {
            return;
        }
        // Each vouch is queued once and popped once: O(1) amortized. The
        // queue holds every live vouch, so bounding it bounds both.
        while let Some(&(oldest, at)) = vouched.order.front() {
            let live = vouched.by_token.get(&oldest).map(|vouch| vouch.until) == Some(at);
            if live && at > now && vouched.order.len() < MAX_VOUCHED {
                break;
            }
            vouched.order.pop_front();
            if live {
                vouched.by_token.remove(&oldest);
            }
        }
        vouched.by_token.insert(digest, Vouch { until, claims });
        vouched.order.push_back((digest, until));
    }

    /// Refuses an access token that cannot be a live Cryptlex token, or that
    /// Cryptlex refused recently; otherwise says what its reads need to know
    /// of it. A token vouched for is not decoded again (see [`Vouch`]).
    pub(crate) fn check_access(&self, token: &UserToken) -> Result<Admitted, LicensingError> {
        let digest = TokenDigest::new(token);
        let vouch = lock(&self.vouched)
            .by_token
            .get(&digest)
            .filter(|vouch| vouch.until > Instant::now())
            .map(|vouch| vouch.claims.clone());
        let (vouched, claims) = match vouch {
            Some(Some(claims)) => (true, claims),
            vouch => {
                if !token.could_be_cryptlex_token(chrono::Utc::now()) {
                    return Err(LicensingError::TokenInvalid);
                }
                (vouch.is_some(), TokenClaims::of(token))
            }
        };
        self.check(TokenHash::access(token))?;
        Ok(Admitted {
            digest,
            vouched,
            claims,
        })
    }

    /// Refuses a refresh token that Cryptlex refused recently.
    pub(crate) fn check_refresh(&self, token: &RefreshToken) -> Result<(), LicensingError> {
        self.check(TokenHash::refresh(token))
    }

    /// Remembers `token` when `error` is Cryptlex refusing it (a 401 with
    /// Cryptlex's own error body). A bare 401, such as a proxy in front of
    /// Cryptlex might send, says nothing about the token and is not
    /// remembered.
    pub(crate) fn access_call_failed(&self, token: &UserToken, error: &CryptlexError) {
        if cryptlex_refused(error, &[Rejection::Unauthenticated]) {
            self.remember(TokenHash::access(token));
        }
    }

    /// Remembers `token` when `error` is Cryptlex refusing it (a 400 or 401
    /// with Cryptlex's own error body; refresh tokens are single-use, so a
    /// refused one never works again).
    pub(crate) fn refresh_failed(&self, token: &RefreshToken, error: &CryptlexError) {
        if cryptlex_refused(error, &[Rejection::Invalid, Rejection::Unauthenticated]) {
            self.remember(TokenHash::refresh(token));
        }
    }

    fn check(&self, hash: TokenHash) -> Result<(), LicensingError> {
        let refused = self.lock();
        match refused.until.get(&hash) {
            Some(until) if *until > Instant::now() => Err(LicensingError::TokenInvalid),
            _ => Ok(()),
        }
    }

    fn remember(&self, hash: TokenHash) {
        let now = Instant::now();
        let until = now + self.remember_for;
        let mut refused = self.lock();
        // Drop what has expired, then, if still full, the oldest. Each entry
        // is queued once per refusal and popped once, so this is O(1)
        // amortized. The queue holds every live entry (and maybe stale
        // copies), so bounding it bounds both.
        while let Some(&(oldest, at)) = refused.order.front() {
            let full = refused.order.len() >= self.max_remembered;
            if at > now && !full {
                break;
            }
            refused.order.pop_front();
            if refused.until.get(&oldest) == Some(&at) {
                refused.until.remove(&oldest);
            }
        }
        refused.until.insert(hash, until);
        refused.order.push_back((hash, until));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Refused> {
        lock(&self.refused)
    }
}

/// The user id an access token says it belongs to: its `sub` claim,
/// unverified. Used only to find the cached answers a change about that user
/// touches (an entry exists only once Cryptlex accepted the token, so the
/// claims are Cryptlex's own); never to answer anything. The sandbox puts the
/// user id in `sub`, as ASP.NET Core's JWT handler does by convention;
/// Cryptlex does not document its claims, so the read cache checks the claim
/// against the profile it reads and stops using claims if they differ.
pub(crate) fn claimed_user_id(token: &UserToken) -> Option<String> {
    plausible_user_id(token).map(str::to_owned)
}

fn plausible_user_id(token: &UserToken) -> Option<&str> {
    let sub = token.claimed_subject()?;
    let plausible =
        !sub.is_empty() && sub.len() <= 128 && sub.bytes().all(|b| b.is_ascii_graphic());
    plausible.then_some(sub)
}

/// When the token's `exp` claim (unverified) says it expires, if it has
/// one. Cryptlex refuses it from then on (give or take its clock skew), so
/// the read cache stops answering it from memory and lets Cryptlex decide.
pub(crate) fn expires_at(token: &UserToken) -> Option<Instant> {
    let exp = token.claimed_expiry()?;
    let left = exp - chrono::Utc::now().timestamp() as f64;
    Some(Instant::now() + Duration::try_from_secs_f64(left).unwrap_or(Duration::ZERO))
}

fn lock<V>(mutex: &Mutex<V>) -> std::sync::MutexGuard<'_, V> {
    // Every update leaves the maps consistent, so a poisoned lock is still
    // usable.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether `error` is Cryptlex itself refusing the call with one of `kinds`:
/// a refusal with Cryptlex's JSON error body (a message or a code).
fn cryptlex_refused(error: &CryptlexError, kinds: &[Rejection]) -> bool {
    match error {
        CryptlexError::Rejected {
            kind,
            code,
            message,
            ..
        } => kinds.contains(kind) && (code.is_some() || message.is_some()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(text: &str) -> UserToken {
        UserToken::parse(text).expect("well-formed bearer token")
    }

    fn refused_by_cryptlex() -> CryptlexError {
        CryptlexError::Rejected {
            status: 401,
            kind: Rejection::Unauthenticated,
            code: None,
            message: Some("Invalid access token".into()),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_cryptlex_refused_is_refused_for_a_while_and_no_other_token_is() {
        let guard = TokenGuard::with_bounds(Duration::from_secs(60), 10);
        let (refused, other) = (token("a.b.refused"), token("a.b.other"));

        guard.access_call_failed(&refused, &refused_by_cryptlex());

        assert!(guard.check(TokenHash::access(&refused)).is_err());
        assert!(guard.check(TokenHash::access(&other)).is_ok());
        let same_text = RefreshToken::parse("refresh_token", "a.b.refused".into()).expect("token");
        assert!(guard.check_refresh(&same_text).is_ok());
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(guard.check(TokenHash::access(&refused)).is_ok());
    }

    #[test]
    fn a_refusal_without_cryptlex_s_error_body_or_of_another_kind_is_not_remembered() {
        let guard = TokenGuard::new();
        let token = token("a.b.c");
        let bare = CryptlexError::Rejected {
            status: 401,
            kind: Rejection::Unauthenticated,
            code: None,
            message: None,
        };
        let forbidden = CryptlexError::Rejected {
            status: 403,
            kind: Rejection::Forbidden,
            code: None,
            message: Some("missing permissions".into()),
        };
        let unavailable = CryptlexError::ServerError {
            status: 503,
            retry_after: None,
        };
        for error in [bare, forbidden, unavailable] {
            guard.access_call_failed(&token, &error);
        }
        assert!(guard.check(TokenHash::access(&token)).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn the_memory_stays_within_its_bound_and_forgets_the_oldest_first() {
        let guard = TokenGuard::with_bounds(Duration::from_secs(60), 3);
        let tokens: Vec<UserToken> = (0..5).map(|n| token(&format!("a.b.{n}"))).collect();
        for token in &tokens {
            guard.access_call_failed(token, &refused_by_cryptlex());
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        // The same token refused twice is one entry.
        guard.access_call_failed(&tokens[4], &refused_by_cryptlex());

        let refused = guard.lock();
        assert!(refused.until.len() <= 3, "{}", refused.until.len());
        assert!(refused.order.len() <= 3, "{}", refused.order.len());
        drop(refused);
        assert!(guard.check(TokenHash::access(&tokens[0])).is_ok());
        assert!(guard.check(TokenHash::access(&tokens[4])).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn expired_refusals_are_dropped_as_new_ones_arrive() {
        let guard = TokenGuard::with_bounds(Duration::from_secs(60), 100);
        for n in 0..50 {
            guard.access_call_failed(&token(&format!("a.b.{n}")), &refused_by_cryptlex());
        }
        tokio::time::advance(Duration::from_secs(61)).await;
        guard.access_call_failed(&token("a.b.new"), &refused_by_cryptlex());

        let refused = guard.lock();
        assert_eq!((refused.until.len(), refused.order.len()), (1, 1));
    }

    fn jwt(claims: &serde_json::Value) -> UserToken {
        use base64::Engine as _;
        let part = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        token(&format!(
            "{}.{}.{}",
            part(br#"{"alg":"HS256"}"#),
            part(claims.to_string().as_bytes()),
            part(b"signature")
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_are_vouched_for_until_they_expire_and_no_longer_once_signed_out() {
        let guard = TokenGuard::new();
        let exp = chrono::Utc::now().timestamp() + 60;
        let answered = jwt(&serde_json::json!({"sub": "u1", "exp": exp}));
        let issued = jwt(&serde_json::json!({"sub": "u2"}));
        let stranger = jwt(&serde_json::json!({"sub": "u3"}));

        guard.vouch_answered(&answered);
        guard.vouch_issued(&Session {
            access_token: issued.clone(),
            refresh_token: None,
            expires_at: Some(chrono::Utc::now() + chrono::TimeDelta::hours(1)),
        });

        assert!(guard.is_vouched(&TokenDigest::new(&answered)));
        assert!(guard.is_vouched(&TokenDigest::new(&issued)));
        assert!(!guard.is_vouched(&TokenDigest::new(&stranger)));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(
            !guard.is_vouched(&TokenDigest::new(&answered)),
            "past its exp"
        );
        guard.unvouch(&TokenDigest::new(&issued));
        assert!(!guard.is_vouched(&TokenDigest::new(&issued)), "signed out");
        let expired = jwt(&serde_json::json!({"exp": exp - 3600}));
        guard.vouch_answered(&expired);
        assert!(!guard.is_vouched(&TokenDigest::new(&expired)));
    }

    #[test]
    fn the_vouched_set_stays_within_its_bound() {
        let guard = TokenGuard::new();
        for n in 0..(MAX_VOUCHED + 100) {
            guard.vouch_answered(&token(&format!("a.b.{n}")));
        }
        let vouched = lock(&guard.vouched);
        assert!(vouched.by_token.len() <= MAX_VOUCHED);
        assert!(vouched.order.len() <= MAX_VOUCHED);
    }

    #[test]
    fn a_cached_read_hashes_its_token_once_and_reads_its_claims_once() {
        use super::super::read_cache::CacheKey;
        let guard = TokenGuard::new();
        let exp = chrono::Utc::now().timestamp() + 900;
        let token = jwt(&serde_json::json!({"sub": "u1", "exp": exp}));
        let before = crate::domain::token_counts::get();

        // What a read (`profile`, `my_licenses`, ...) asks of its token: the
        // guard's checks (which give `read_for` the claims), the cache key,
        // and, once Cryptlex has answered, the vouch (on the clone the fetch
        // took).
        let admitted = guard.check_access(&token).expect("a live JWT");
        let key = CacheKey::new(&token, "me", "");
        assert!(!admitted.vouched);
        assert_eq!(admitted.claims.owner.as_deref(), Some("u1"));
        assert!(admitted.claims.expires.is_some());
        let fetched = token.clone();
        guard.vouch_answered(&fetched);
        assert!(guard.is_vouched(&admitted.digest));
        guard.access_call_failed(&token, &refused_by_cryptlex());
        assert!(guard.check_access(&token).is_err());

        let after = crate::domain::token_counts::get();
        assert_eq!((after.0 - before.0, after.1 - before.1), (1, 1));
        assert_eq!(key, CacheKey::new(&fetched, "me", ""));
    }

    #[tokio::test(start_paused = true)]
    async fn a_vouched_token_is_not_decoded_again_and_reads_the_same_claims() {
        let guard = TokenGuard::new();
        let exp = chrono::Utc::now().timestamp() + 900;
        let claims = serde_json::json!({"sub": "u1", "exp": exp});
        let first = guard.check_access(&jwt(&claims)).expect("a live JWT");
        guard.vouch_answered(&jwt(&claims));

        // A new call brings the same text in a new `UserToken`.
        let again = jwt(&claims);
        let before = crate::domain::token_counts::get();
        let admitted = guard.check_access(&again).expect("vouched for");
        let after = crate::domain::token_counts::get();

        assert!(admitted.vouched);
        assert_eq!(admitted.digest, first.digest);
        assert_eq!(admitted.claims.owner, first.claims.owner);
        let (a, b) = (admitted.claims.expires, first.claims.expires);
        let apart = a.zip(b).map(|(a, b)| a.max(b) - a.min(b));
        assert!(
            apart.is_some_and(|apart| apart < Duration::from_secs(2)),
            "{apart:?}"
        );
        assert_eq!(after.1 - before.1, 0, "the claims were decoded again");

        // Past its `exp` the vouch is over and the token decoded (and judged)
        // again, as any other.
        tokio::time::advance(Duration::from_secs(901)).await;
        let later = jwt(&claims);
        assert!(
            !guard
                .check_access(&later)
                .expect("within the leeway")
                .vouched
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_vouch_ends_at_its_token_s_exp_and_a_non_jwt_is_still_refused() {
        let guard = TokenGuard::new();
        let exp = chrono::Utc::now().timestamp() + 60;
        let claims = serde_json::json!({"sub": "u2", "exp": exp});
        // A session that says it lasts longer than its token's `exp`.
        let session = |access_token| Session {
            access_token,
            refresh_token: None,
            expires_at: Some(chrono::Utc::now() + chrono::TimeDelta::hours(1)),
        };
        guard.vouch_issued(&session(jwt(&claims)));
        guard.vouch_issued(&session(token("not-a-jwt")));

        assert!(guard.check_access(&jwt(&claims)).expect("live").vouched);
        // Vouched for, but never a Cryptlex token: refused as before.
        assert!(guard.is_vouched(&TokenDigest::new(&token("not-a-jwt"))));
        assert!(guard.check_access(&token("not-a-jwt")).is_err());
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(!guard.is_vouched(&TokenDigest::new(&jwt(&claims))));
    }

    #[test]
    fn access_and_refresh_refusals_of_the_same_text_stay_apart() {
        let guard = TokenGuard::new();
        let refresh = RefreshToken::parse("refresh_token", "a.b.c".into()).expect("token");
        let access = token("a.b.c");
        guard.refresh_failed(&refresh, &refused_by_cryptlex());
        assert!(guard.check_refresh(&refresh).is_err());
        assert!(guard.check(TokenHash::access(&access)).is_ok());
        assert_eq!(
            TokenHash::refresh(&refresh).digest,
            TokenHash::access(&access).digest
        );
    }

    #[test]
    fn the_claimed_user_id_is_the_sub_claim_when_it_is_a_plausible_id() {
        assert_eq!(
            claimed_user_id(&jwt(&serde_json::json!({"sub": "user-1"}))).as_deref(),
            Some("user-1")
        );
        assert_eq!(claimed_user_id(&jwt(&serde_json::json!({"sub": 7}))), None);
        assert_eq!(
            claimed_user_id(&jwt(&serde_json::json!({"sub": "a b"}))),
            None
        );
        assert_eq!(claimed_user_id(&jwt(&serde_json::json!({}))), None);
        assert_eq!(claimed_user_id(&token("not-a-jwt")), None);
    }
}

//! The use cases: what the gateway does for its callers.
//!
//! Each use case takes parsed domain values and a [`RequestContext`], talks to
//! Cryptlex through [`crate::cryptlex`], and fails with a [`LicensingError`].
//! Nothing here knows about gRPC.

mod account;
pub mod changes;
mod error;
mod issuance;
mod lifecycle;
pub mod pagination;
mod portal;
pub(crate) mod read_cache;
pub(crate) mod throttle;
mod token_guard;

use std::sync::Arc;

use crate::cryptlex::{self, CryptlexError, NewUser, Rejection};
use crate::domain::{
    AdminToken, CryptlexId, Email, Page, PageRequest, Password, PersonName, ReadShare,
    RefreshToken, RequestContext, SecondFactor, Session, UserLicense, UserProfile, UserToken,
};

pub use account::{ChangePasswordCommand, ResetPasswordCommand};
pub use error::LicensingError;
use error::{Credential, upstream};
pub use error::{Denial, Missing};
pub use issuance::{
    CLIENT_METADATA_KEY, IssuanceOptions, IssueCommand, Issued, LicenseHolder, MAX_QUANTITY,
    REVOCATION_METADATA_KEY, ReconcileOutcome, Reconciled, SUBSCRIPTION_METADATA_KEY,
};
pub use lifecycle::{
    LicenseTarget, LicenseUpdate, LifecycleAction, LifecycleCommand, LifecycleOutcome,
    MAX_REVOCATION_NOTE, RevocationReason,
};
use read_cache::{Answer, CacheKey, Kind, Read, Target, TokenDigest};

/// Changes that began here and wait for the relay to other replicas.
pub const CHANGE_FEED_CAPACITY: usize = 1024;

/// A parsed `Login` request.
#[derive(Debug)]
pub struct LoginCommand {
    pub email: Email,
    pub password: Password,
    /// For an account with two-factor authentication.
    pub second_factor: Option<SecondFactor>,
}

/// A parsed `SignUp` request.
#[derive(Debug)]
pub struct SignUpCommand {
    pub email: Email,
    pub password: Password,
    pub first_name: PersonName,
    pub last_name: Option<PersonName>,
}

/// The result of a sign-up.
#[derive(Debug)]
pub struct SignedUp {
    pub user_id: CryptlexId,
    pub session: Session,
}

/// Use-case settings.
#[derive(Debug, Clone)]
pub struct LicensingOptions {
    /// Whether `SignUp` is served.
    pub sign_up_enabled: bool,
    /// The PAT for sign-up and issuance; `None` disables both.
    pub admin_token: Option<AdminToken>,
    /// Issuance settings; `None` when this gateway does not issue.
    pub issuance: Option<IssuanceOptions>,
    /// The read cache.
    pub cache: read_cache::CacheOptions,
    /// Brute-force protection for login and sign-up.
    pub throttle: throttle::ThrottleOptions,
}

/// The gateway's use cases. Cloning is cheap and shares everything.
#[derive(Debug, Clone)]
pub struct Licensing {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    cryptlex: cryptlex::Client,
    options: LicensingOptions,
    /// The issuance ledger; `None` when this gateway does not issue.
    ledger: Option<crate::ledger::Ledger>,
    /// Profiles and license pages, by token digest.
    cache: read_cache::ReadCache,
    throttle: Arc<throttle::Throttle>,
    /// Refuses tokens that cannot work without asking Cryptlex. In an `Arc`
    /// of its own so reads in flight can hold it without holding `Shared`.
    tokens: Arc<token_guard::TokenGuard>,
    /// Changes that began here, for whoever tells the other replicas.
    changes: tokio::sync::broadcast::Sender<changes::Change>,
    /// How the relay is doing; see [`Licensing::apply_change_relayed`].
    relay: RelayProgress,
}

/// How far the relay to other replicas has got: changes handed to the feed,
/// and changes the relay has finished with (sent, or given up on).
#[derive(Debug)]
struct RelayProgress {
    /// Whether a relay reads the feed (only with a PostgreSQL ledger).
    attached: std::sync::atomic::AtomicBool,
    /// Changes sent on the feed so far, under this lock so that a change's
    /// number is its place in the feed.
    sent: std::sync::Mutex<u64>,
    /// Changes the relay has finished with.
    done: tokio::sync::watch::Sender<u64>,
}

/// Longest a write waits for the relay to hand its change to the other
/// replicas before answering anyway.
const RELAY_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

impl Licensing {
    /// Creates the use cases over a Cryptlex client and, for issuance, a
    /// ledger.
    pub fn new(
        cryptlex: cryptlex::Client,
        options: LicensingOptions,
        ledger: Option<crate::ledger::Ledger>,
    ) -> Self {
        let cache = read_cache::ReadCache::new(options.cache);
        let throttle = Arc::new(throttle::Throttle::new(options.throttle));
        Self {
            shared: Arc::new(Shared {
                cryptlex,
                options,
                ledger,
                cache,
                throttle,
                tokens: Arc::new(token_guard::TokenGuard::new()),
                changes: tokio::sync::broadcast::channel(CHANGE_FEED_CAPACITY).0,
                relay: RelayProgress {
                    attached: std::sync::atomic::AtomicBool::new(false),
                    sent: std::sync::Mutex::new(0),
                    done: tokio::sync::watch::Sender::new(0),
                },
            }),
        }
    }

    /// Applies `change` to this replica's caches and, when it began here,
    /// hands it to the subscribers of [`Self::subscribe_changes`].
    pub fn apply_change(&self, change: &changes::Change, origin: changes::Origin) {
        if self.apply_locally(change, origin) && origin == changes::Origin::Here {
            self.send_change(change);
        }
    }

    /// Applies `change` to this replica's caches; false when it named
    /// nothing that can be applied.
    fn apply_locally(&self, change: &changes::Change, origin: changes::Origin) -> bool {
        use changes::Change;
        let cache = &self.shared.cache;
        let dropped = match change {
            Change::User { user_id } => cache.invalidate(Target::User(user_id.as_str())),
            Change::License {
                license_id,
                user_id,
            } => cache.invalidate(Target::License {
                license_id: license_id.as_str(),
                user_id: user_id.as_ref().map(CryptlexId::as_str),
            }),
            Change::AllLicensePages => cache.invalidate(Target::AllPages),
            Change::SignedOut { token_digest } => match TokenDigest::from_hex(token_digest) {
                Some(digest) => {
                    self.shared.tokens.unvouch(&digest);
                    cache.invalidate(Target::Token(digest))
                }
                None => {
                    // Only another replica or a bug sends one; nothing to drop.
                    tracing::warn!("ignoring a sign-out change whose digest is not hex SHA-256");
                    return false;
                }
            },
        };
        tracing::debug!(
            ?change,
            ?origin,
            dropped,
            "applied a change to the read cache"
        );
        true
    }

    /// Hands `change` to the feed; its number in the feed when a relay reads
    /// it.
    fn send_change(&self, change: &changes::Change) -> Option<u64> {
        let progress = &self.shared.relay;
        let mut sent = progress
            .sent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // No subscriber (a single replica) is not an error.
        self.shared.changes.send(change.clone()).ok()?;
        *sent += 1;
        progress
            .attached
            .load(std::sync::atomic::Ordering::Acquire)
            .then_some(*sent)
    }

    /// Like [`Self::apply_change`] for a change that began here, and waits
    /// (at most [`RELAY_WAIT`]) until the relay has sent it to the other
    /// replicas: after a write that answers, the caller's next read on
    /// another replica sees it.
    pub(crate) async fn apply_change_relayed(&self, change: &changes::Change) {
        if !self.apply_locally(change, changes::Origin::Here) {
            return;
        }
        let Some(number) = self.send_change(change) else {
            return;
        };
        let mut done = self.shared.relay.done.subscribe();
        if tokio::time::timeout(RELAY_WAIT, done.wait_for(|done| *done >= number))
            .await
            .is_err()
        {
            tracing::warn!(
                "the change relay did not confirm within {RELAY_WAIT:?}; other replicas may show the change a little later"
            );
        }
    }

    /// For the relay to other replicas, before it reads the feed: writes
    /// then wait for it (see [`Self::apply_change_relayed`]).
    pub fn attach_relay(&self) {
        self.shared
            .relay
            .attached
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// For the relay: it has finished with the first `count` changes of the
    /// feed (sent them to the other replicas, or given up on them).
    pub fn relayed(&self, count: u64) {
        self.shared.relay.done.send_if_modified(|done| {
            let moved = count > *done;
            *done = (*done).max(count);
            moved
        });
    }

    /// The changes that begin on this replica from now on. A subscriber that
    /// falls more than [`CHANGE_FEED_CAPACITY`] behind is told it lagged.
    pub fn subscribe_changes(&self) -> tokio::sync::broadcast::Receiver<changes::Change> {
        self.shared.changes.subscribe()
    }

    /// The Cryptlex client (for its budget and breaker state).
    pub fn cryptlex_client(&self) -> &cryptlex::Client {
        &self.shared.cryptlex
    }

    /// Read-cache counters and sizes, by kind of answer with its `cache`
    /// metric label (`profile`, `licenses`, `license`, `activations`,
    /// `releases`).
    pub fn cache_stats(&self) -> Vec<(&'static str, read_cache::CacheStats)> {
        Kind::ALL
            .into_iter()
            .map(|kind| (kind.label(), self.shared.cache.stats(kind)))
            .collect()
    }

    /// Whose read a read by a token `check_access` let through is, and who
    /// the token says it belongs to, for the cache and the budget.
    fn read_for<'a>(
        &self,
        ctx: &'a RequestContext,
        admitted: token_guard::Admitted,
        key: CacheKey,
    ) -> Read<'a> {
        let digest = admitted.digest;
        Read {
            key,
            ctx,
            share: ReadShare {
                session: digest.session(),
                vouched: admitted.vouched || self.shared.cache.has_token(&digest),
                background: false,
            },
            claimed_owner: admitted.claims.owner,
            expires: admitted.claims.expires,
        }
    }

    fn cryptlex(&self) -> &cryptlex::Client {
        &self.shared.cryptlex
    }

    /// The issuance ledger, when this gateway issues (for readiness checks
    /// and metrics).
    pub fn ledger(&self) -> Option<&crate::ledger::Ledger> {
        self.shared.ledger.as_ref()
    }

    /// Signs a user in to the configured account.
    #[tracing::instrument(name = "licensing.login", skip_all)]
    pub async fn login(
        &self,
        ctx: &RequestContext,
        command: LoginCommand,
    ) -> Result<Session, LicensingError> {
        // Reserved before the upstream call: concurrent guesses count at once.
        let attempt = self
            .shared
            .throttle
            .begin_login(&command.email, ctx.client_address)
            .map_err(|retry_after| LicensingError::TooManyAttempts { retry_after })?;
        // Cryptlex refuses such passwords at sign-up, so none can match; the
        // answer is the same as for a wrong password and costs no upstream call.
        if !command.password.could_match_an_account() {
            attempt.failed();
            return Err(LicensingError::InvalidCredentials);
        }
        let result = self
            .cryptlex()
            .login(
                ctx,
                &command.email,
                &command.password,
                command.second_factor.as_ref(),
            )
            .await
            .map_err(|error| {
                // The second factor's refusals first: they say the password
                // was right, which any other refusal does not.
                account::sign_in_refusal(&error)
                    .unwrap_or_else(|| upstream(Credential::Password, error))
            });
        match &result {
            Ok(_) => attempt.succeeded(),
            // A wrong code is a failed guess like a wrong password: six
            // digits must not be found by trying.
            Err(LicensingError::InvalidCredentials | LicensingError::InvalidTwoFactorCode) => {
                attempt.failed();
            }
            // The password was right and no code came: no failure, but no
            // sign-in either (the network does not become a known one).
            Err(LicensingError::TwoFactorRequired) => drop(attempt),
            // No verdict (an upstream fault): the attempt is released uncounted.
            Err(_) => drop(attempt),
        }
        if let Ok(session) = &result {
            self.shared.tokens.vouch_issued(session);
        }
        result
    }

    /// Exchanges a refresh token for a new session.
    #[tracing::instrument(name = "licensing.refresh_session", skip_all)]
    pub async fn refresh_session(
        &self,
        ctx: &RequestContext,
        refresh_token: &RefreshToken,
    ) -> Result<Session, LicensingError> {
        let tokens = &self.shared.tokens;
        tokens.check_refresh(refresh_token)?;
        self.upstream_allowed(ctx)?;
        let session = self
            .cryptlex()
            .refresh(ctx, refresh_token)
            .await
            .map_err(|error| {
                tokens.refresh_failed(refresh_token, &error);
                upstream(Credential::RefreshToken, error)
            })?;
        tokens.vouch_issued(&session);
        Ok(session)
    }

    /// Ends the session of `token`, and forgets what was cached for it.
    #[tracing::instrument(name = "licensing.logout", skip_all)]
    pub async fn logout(
        &self,
        ctx: &RequestContext,
        token: &UserToken,
    ) -> Result<(), LicensingError> {
        let result = match self
            .shared
            .tokens
            .check_access(token)
            .and_then(|_| self.upstream_allowed(ctx))
        {
            Ok(()) => self
                .cryptlex()
                .logout(ctx, token)
                .await
                .map_err(|error| user_call_failed(&self.shared.tokens, token, error)),
            Err(refused) => Err(refused),
        };
        // Whatever the answer, the caller is done with this token (forgetting
        // one that was never cached costs next to nothing). Other replicas
        // are told only about a token that worked (Cryptlex accepted its
        // sign-out, or it is known here): anyone can send `Logout` with made-up
        // tokens, and those must not flood the relay.
        let digest = TokenDigest::new(token);
        let known = result.is_ok()
            || self.shared.tokens.is_vouched(&digest)
            || self.shared.cache.has_token(&digest);
        let origin = if known {
            changes::Origin::Here
        } else {
            // Applied here only, like a change heard from elsewhere.
            changes::Origin::Elsewhere
        };
        let change = changes::Change::SignedOut {
            token_digest: digest.to_hex(),
        };
        self.apply_change(&change, origin);
        result
    }

    /// Returns the profile of the user who owns `token`.
    #[tracing::instrument(name = "licensing.profile", skip_all)]
    pub async fn profile(
        &self,
        ctx: &RequestContext,
        token: &UserToken,
    ) -> Result<UserProfile, LicensingError> {
        // Before the cache: a token that cannot work never has entries, and
        // one Cryptlex refused is not answered from memory either.
        let admitted = self.shared.tokens.check_access(token)?;
        let read = self.read_for(ctx, admitted, CacheKey::new(token, "me", ""));
        let cryptlex = self.cryptlex().clone();
        let tokens = Arc::clone(&self.shared.tokens);
        let throttle = Arc::clone(&self.shared.throttle);
        let token = token.clone();
        let (answer, _) = self
            .shared
            .cache
            .get_or_fetch(read, Kind::Profile, move |ctx| async move {
                upstream_allowed(&throttle, &ctx)?;
                let profile = cryptlex
                    .me(&ctx, &token)
                    .await
                    .map_err(|error| user_call_failed(&tokens, &token, error))?;
                tokens.vouch_answered(&token);
                Ok(Answer::Profile(profile))
            })
            .await?;
        let Answer::Profile(profile) = answer else {
            // The key names the call, so this cannot happen.
            return Err(LicensingError::internal(
                "another answer cached as a profile",
            ));
        };
        Ok(profile)
    }

    /// Returns one page of the licenses of the user who owns `token`.
    #[tracing::instrument(name = "licensing.my_licenses", skip_all, fields(page = request.page, page_size = request.page_size))]
    pub async fn my_licenses(
        &self,
        ctx: &RequestContext,
        token: &UserToken,
        request: PageRequest,
    ) -> Result<Page<UserLicense>, LicensingError> {
        let admitted = self.shared.tokens.check_access(token)?;
        let arguments = format!(
            "{}/{}/{}",
            request.page,
            request.page_size,
            request.product_id.as_ref().map_or("", CryptlexId::as_str)
        );
        let read = self.read_for(
            ctx,
            admitted,
            CacheKey::new(token, "me/licenses", &arguments),
        );
        let cryptlex = self.cryptlex().clone();
        let tokens = Arc::clone(&self.shared.tokens);
        let throttle = Arc::clone(&self.shared.throttle);
        let token = token.clone();
        let (answer, freshness) = self
            .shared
            .cache
            .get_or_fetch(read, Kind::Page, move |ctx| async move {
                upstream_allowed(&throttle, &ctx)?;
                let items = cryptlex
                    .my_licenses(
                        &ctx,
                        &token,
                        request.page,
                        request.page_size,
                        request.product_id.as_ref(),
                    )
                    .await
                    .map_err(|error| user_call_failed(&tokens, &token, error))?;
                // Cryptlex sends no total count. A full page may be the last
                // one: ask for the single item after it (page `n * size + 1`
                // of size 1 is exactly that item) so the token is empty at the
                // end, as AIP-158 callers expect. Short pages need no probe.
                let full_page = items.len() >= request.page_size as usize;
                let more = full_page
                    && !cryptlex
                        .my_licenses(
                            &ctx,
                            &token,
                            request
                                .page
                                .saturating_mul(request.page_size)
                                .saturating_add(1),
                            1,
                            request.product_id.as_ref(),
                        )
                        .await
                        .map_err(|error| user_call_failed(&tokens, &token, error))?
                        .is_empty();
                let next = more.then(|| PageRequest {
                    page: request.page + 1,
                    ..request.clone()
                });
                tokens.vouch_answered(&token);
                Ok(Answer::Page(Page {
                    items,
                    next,
                    stale: false,
                }))
            })
            .await?;
        let Answer::Page(mut page) = answer else {
            // The key names the call, so this cannot happen.
            return Err(LicensingError::internal("a profile cached as a page"));
        };
        page.stale = freshness == read_cache::Freshness::Stale;
        Ok(page)
    }

    /// Creates an end user and signs them in.
    #[tracing::instrument(name = "licensing.sign_up", skip_all)]
    pub async fn sign_up(
        &self,
        ctx: &RequestContext,
        command: SignUpCommand,
    ) -> Result<SignedUp, LicensingError> {
        if !self.shared.options.sign_up_enabled {
            return Err(LicensingError::SignUpDisabled);
        }
        self.shared
            .throttle
            .begin_sign_up(&command.email, ctx.client_address)
            .map_err(|retry_after| LicensingError::TooManyAttempts { retry_after })?;
        let pat = self.admin_token()?;
        let new_user = NewUser {
            email: &command.email,
            password: &command.password,
            first_name: &command.first_name,
            last_name: command.last_name.as_ref(),
        };
        let user = match self.cryptlex().create_user(ctx, pat, &new_user).await {
            Ok(user) => user,
            Err(CryptlexError::Rejected {
                kind: Rejection::Conflict,
                ..
            }) => {
                return Err(LicensingError::EmailTaken);
            }
            Err(error) => return Err(upstream(Credential::Pat, error)),
        };
        tracing::info!(user_id = %user.id, "created cryptlex user");
        // A new user has no second factor.
        let session = self
            .cryptlex()
            .login(ctx, &command.email, &command.password, None)
            .await
            .map_err(|error| upstream(Credential::Password, error))?;
        self.shared.tokens.vouch_issued(&session);
        Ok(SignedUp {
            user_id: user.id,
            session,
        })
    }

    /// Counts an upstream call against the caller's network, or refuses it.
    fn upstream_allowed(&self, ctx: &RequestContext) -> Result<(), LicensingError> {
        upstream_allowed(&self.shared.throttle, ctx)
    }

    /// The PAT, or a server fault when none is configured.
    fn admin_token(&self) -> Result<&AdminToken, LicensingError> {
        self.shared
            .options
            .admin_token
            .as_ref()
            .ok_or_else(|| LicensingError::internal("no personal access token is configured"))
    }
}

/// Translates the failure of a call made with the user's `token`, and has
/// `tokens` remember the token when Cryptlex refused it.
fn user_call_failed(
    tokens: &token_guard::TokenGuard,
    token: &UserToken,
    error: CryptlexError,
) -> LicensingError {
    tokens.access_call_failed(token, &error);
    upstream(Credential::UserToken, error)
}

/// Counts an upstream call made for a user call from `ctx`'s network, or
/// refuses it (before anything is sent) with the time to wait. Only calls
/// that really go to Cryptlex count: a cache hit or a joined fetch never does.
fn upstream_allowed(
    throttle: &throttle::Throttle,
    ctx: &RequestContext,
) -> Result<(), LicensingError> {
    throttle
        .begin_upstream_call(ctx.client_address)
        .map_err(|retry_after| LicensingError::TooManyRequests { retry_after })
}

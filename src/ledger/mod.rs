//! The issuance ledger: durable idempotency records that make license issuance exactly-once.
//!
//! Every IssueLicense call is keyed by `(client, request_id)`. Before the gateway asks Cryptlex
//! for a license it claims that key with [`Ledger::begin`], which writes a `pending` record
//! holding a time-limited *lease* and a *fencing token* (a UUID unique to the attempt). The
//! holder keeps the lease alive while it works ([`Ledger::keep_alive`]), then settles the
//! record with [`Ledger::complete`] (issued), [`Ledger::reject`] (a permanent upstream refusal,
//! replayed to later retries) or [`Ledger::release`] (transient failure: the record stays
//! pending and the next attempt takes over at once). When the outcome is unknown (the create
//! may have happened), [`Ledger::release_after`] keeps the record leased for a settling period
//! first, so Cryptlex can finish a create it is still working on, and its metadata search can
//! catch up, before anyone looks. If the holder dies, its lease runs out and the next `begin`
//! takes over with [`Begin::Resume`]; that holder must reconcile with Cryptlex (look the
//! license up by request id) before creating anything, because the dead attempt may have
//! created it already. The fencing token makes every settle and renewal conditional, so an
//! attempt that was taken over can never overwrite the new holder's record.
//!
//! The payment lifecycle (renew, suspend, resume, revoke, seats) uses the same records, keyed
//! the same way, with the operation in the fingerprint; its answers are stored whole, so a
//! replay returns exactly the first answer. Two more tables serve it (see `licenses.rs`): the
//! per-license *event order*, which also holds the lease of the one attempt writing to a
//! license upstream at a time, and the per-license *history* of what each call did.
//!
//! This module does not talk to Cryptlex, compute fingerprints or validate request ids; the
//! use case does all three before calling in. It references no other module of the crate.
//!
//! # Backends
//!
//! SQLite (the default, for a single replica) and PostgreSQL (for several replicas sharing one
//! database). Both run the same SQL, apart from where "now" comes from (see Time): statements
//! use `$N` placeholders, which PostgreSQL and sqlx's SQLite driver both bind by number.
//! Migrations are embedded and run at start-up. The SQLite file holds license keys, so it is
//! created readable by its owner only (see `sqlite.rs`).
//!
//! # Why `begin` is race-free
//!
//! A claim is either an `INSERT ... ON CONFLICT DO NOTHING` (only one insert of a key can
//! succeed) or a take-over `UPDATE` fenced on the previous token, `state = 'pending'` and an
//! expired lease (only one update can match, because the winner changes the token). Each is a
//! single atomic statement whose rows-affected count decides who won, so there is no
//! check-then-act window, whether the racers are tasks in one process or two replicas.
//!
//! # Time
//!
//! Times are stored as unix milliseconds in 64-bit integers: both backends compare plain
//! integers identically, with no time zone or text-format pitfalls, and sqlx needs no `chrono`
//! feature. Which clock writes and compares them depends on the backend:
//!
//! - **PostgreSQL** uses the database's clock (`now()`) inside each statement, for every
//!   timestamp and every lease comparison. Replicas share that one clock, so a replica whose
//!   own clock is skewed can neither take over a live lease (its clock running ahead) nor hand
//!   out a lease that is already over (its clock running behind).
//! - **SQLite** serves a single replica on one machine, so the gateway's clock is the only
//!   clock involved; it is bound into each statement as a parameter.
//!
//! Either way a lease is only as good as its length: it must outlast the longest attempt
//! (the configuration refuses a lease that does not), and [`Ledger::keep_alive`] renews it
//! while the attempt runs, so a slow attempt keeps its key.

mod postgres;
mod sqlite;
#[cfg(test)]
mod tests;

use std::{fmt, str::FromStr, sync::Arc, time::Duration};

use chrono::{DateTime, TimeDelta, Utc};
use tokio::{
    sync::{Mutex, oneshot},
    task::JoinHandle,
};
use uuid::Uuid;

/// The shortest `retry_after` handed out, so clients never spin on a lease about to expire.
const MIN_RETRY_AFTER: Duration = Duration::from_millis(100);

/// How many claim rounds `begin` runs before giving up with `InProgress`. A round is only
/// repeated when another attempt won a race in between, after which the key is held or
/// finished; a third round would need a fresh race, so this bound is never reached in practice.
const MAX_BEGIN_ROUNDS: usize = 3;

/// The shortest pause between two renewals of a lease, so a very short lease (tests use tens
/// of milliseconds) does not turn the heartbeat into a busy loop.
const MIN_RENEW_INTERVAL: Duration = Duration::from_millis(10);

/// How long a query waits for a pooled connection. Start-up fails fast on an unreachable
/// database instead of hanging, and at run time a pool starved this long means the database
/// is in trouble, which the gateway should report as unavailable rather than queue behind.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

// === Public types ===

/// The operation name of license issuance, which every record written before the payment
/// lifecycle is (the migration's default).
pub const ISSUE_LICENSE: &str = "IssueLicense";

/// Separates a request id from its unit number in a unit sub-key: unit `k` of a request that
/// issues several licenses is recorded under `<request_id>#<k>`.
pub const UNIT_SEPARATOR: char = '#';

/// Where the ledger lives and how many connections it may hold.
#[derive(Clone)]
pub struct LedgerOptions {
    /// `sqlite://path/to/file.db` (the file is created if missing) or `postgres://...`.
    pub url: String,
    /// PostgreSQL only: the schema holding the ledger, created if missing and used through
    /// `search_path`, so several deployments (or test runs) can share one database.
    pub schema: Option<String>,
    /// Upper bound of the connection pool.
    pub max_connections: u32,
}

impl LedgerOptions {
    /// Returns options for `url` with no schema and a small pool.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: None,
            max_connections: 5,
        }
    }
}

// The URL may carry a database password, so Debug shows it redacted.
impl fmt::Debug for LedgerOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LedgerOptions")
            .field("url", &redact_url(&self.url))
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// The durable issuance ledger. Cloning is cheap: clones share one connection pool.
#[derive(Clone, Debug)]
pub struct Ledger {
    backend: Backend,
    clock: Clock,
}

/// The gateway's clock, as the SQLite backend reads it. A seam for tests, which skew it to
/// stand for a replica whose clock is off; PostgreSQL never reads it (see "Time" above).
#[derive(Clone, Copy, Debug, Default)]
struct Clock {
    skew: TimeDelta,
}

impl Clock {
    fn now_millis(self) -> i64 {
        (Utc::now() + self.skew).timestamp_millis()
    }
}

#[derive(Clone, Debug)]
enum Backend {
    /// SQLite is for a single replica: the writer lock below serialises this process's writes
    /// (SQLite allows one writer at a time anyway; queueing here is fairer than every
    /// connection polling the busy handler), and nothing coordinates with other processes
    /// beyond SQLite's own file locking.
    Sqlite {
        pool: sqlx::SqlitePool,
        writer: Arc<Mutex<()>>,
    },
    Postgres {
        pool: sqlx::PgPool,
    },
}

/// What [`Ledger::begin`] decided for one IssueLicense call.
#[derive(Debug)]
pub enum Begin {
    /// A new pending record was written: go and create the license.
    Fresh(Attempt),
    /// A pending record whose lease had expired (crash, timeout, lost reply) was taken over.
    /// The holder MUST first look the license up upstream (reconcile) before creating one.
    Resume(Attempt),
    /// The key finished earlier with this same fingerprint: answer with the stored outcome.
    Replay(Outcome),
    /// The key was used before with a different fingerprint.
    Conflict,
    /// Another attempt, possibly on another replica, holds a live lease on the key, or the
    /// key is settling after an unknown outcome ([`Ledger::release_after`]).
    InProgress {
        /// The lease's (or settling period's) remaining time, at least 100 ms.
        retry_after: Duration,
    },
}

/// The stored result of a finished request.
#[derive(Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The request finished with an answer: for `IssueLicense` Cryptlex created the license
    /// (`license_json` is it, or for several units the list of them); for the lifecycle
    /// operations `license_id` is the first license addressed and `license_json` the whole
    /// answer, every license's update. The ledger never reads the JSON.
    Issued {
        license_id: String,
        license_json: String,
    },
    /// Cryptlex refused permanently; retries get the same answer.
    Rejected { reason: String, message: String },
}

// The license JSON carries the license key, so Debug (and therefore logs) shows only its size.
impl fmt::Debug for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Issued {
                license_id,
                license_json,
            } => f
                .debug_struct("Issued")
                .field("license_id", license_id)
                .field("license_json", &Redacted(license_json.len()))
                .finish(),
            Self::Rejected { reason, message } => f
                .debug_struct("Rejected")
                .field("reason", reason)
                .field("message", message)
                .finish(),
        }
    }
}

/// The right to issue for one key, held by exactly one attempt at a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    client: String,
    request_id: String,
    token: Uuid,
    number: u32,
    lease_expires_at: DateTime<Utc>,
}

impl Attempt {
    /// Returns the client identity the record belongs to.
    pub fn client(&self) -> &str {
        &self.client
    }

    /// Returns the client's idempotency key.
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// Returns the fencing token unique to this attempt.
    pub fn token(&self) -> Uuid {
        self.token
    }

    /// Returns which attempt this is for the key: 1 for `Fresh`, more for each `Resume`.
    pub fn number(&self) -> u32 {
        self.number
    }

    /// Returns when the lease granted by the claim ends; renewals ([`Ledger::keep_alive`])
    /// move the stored expiry later, not this value.
    pub fn lease_expires_at(&self) -> DateTime<Utc> {
        self.lease_expires_at
    }
}

/// Renews an attempt's lease in the background; see [`Ledger::keep_alive`].
#[derive(Debug)]
#[must_use = "dropping the keeper stops the renewals at once"]
pub struct LeaseKeeper {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl LeaseKeeper {
    /// Stops the renewals and waits until none is in progress, so that whatever the attempt
    /// writes next is the last word on its lease.
    pub async fn stop(mut self) {
        drop(self.stop.take());
        if let Some(task) = self.task.take() {
            // The task ends at its next wake-up; it only fails if it panicked, and then it
            // renews nothing either.
            let _ = task.await;
        }
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Where a record is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    Pending,
    Issued,
    Rejected,
}

impl State {
    /// Every state, in the order `count_by_state` reports them.
    pub const ALL: [State; 3] = [State::Pending, State::Issued, State::Rejected];

    /// Returns the name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Issued => "issued",
            Self::Rejected => "rejected",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for State {
    type Err = ParseStateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| ParseStateError(s.to_owned()))
    }
}

/// A string that names no [`State`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown issuance state `{0}` (expected pending, issued or rejected)")]
pub struct ParseStateError(String);

/// One ledger record, as the operator view and tests see it.
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    pub client: String,
    pub request_id: String,
    /// The RPC the record is for (`IssueLicense`, `RenewLicense`, ...). Records written before
    /// the payment lifecycle existed are all `IssueLicense`.
    pub operation: String,
    pub fingerprint: String,
    pub state: State,
    pub license_id: Option<String>,
    pub license_json: Option<String>,
    pub error_reason: Option<String>,
    pub error_message: Option<String>,
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub lease_expires_at: DateTime<Utc>,
}

// As for `Outcome`: keep the license key out of logs.
impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("client", &self.client)
            .field("request_id", &self.request_id)
            .field("operation", &self.operation)
            .field("fingerprint", &self.fingerprint)
            .field("state", &self.state)
            .field("license_id", &self.license_id)
            .field(
                "license_json",
                &self.license_json.as_ref().map(|json| Redacted(json.len())),
            )
            .field("error_reason", &self.error_reason)
            .field("error_message", &self.error_message)
            .field("attempts", &self.attempts)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .field("lease_expires_at", &self.lease_expires_at)
            .finish()
    }
}

/// Why a ledger operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The URL is not a usable `sqlite://` or `postgres://` URL.
    #[error("invalid ledger url: {0}")]
    InvalidUrl(String),
    /// The other options are unusable (schema name, pool size).
    #[error("invalid ledger options: {0}")]
    InvalidOptions(String),
    /// The database could not be opened or reached at start-up.
    #[error("could not connect to the {backend} ledger database")]
    Connect {
        backend: &'static str,
        #[source]
        source: sqlx::Error,
    },
    /// The embedded migrations failed.
    #[error("could not migrate the ledger database")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("ledger database error")]
    Database(#[from] sqlx::Error),
    /// The fencing token no longer matches: another attempt took the key over, and nothing
    /// was changed.
    #[error("the issuance attempt was taken over by another attempt")]
    StaleAttempt,
    /// This attempt already settled the record with a different outcome (a client bug).
    #[error("the issuance attempt already finished as {0}")]
    AlreadyFinished(State),
    /// A stored row breaks the ledger's invariants (edited by hand, or a bug).
    #[error("corrupt ledger record: {0}")]
    Corrupt(String),
}

// === impl Ledger ===

/// Runs `$body` with `$pool` bound to the pool behind the ledger. The body is compiled once
/// per backend, so the SQL and decoding are written once but type-checked for both.
macro_rules! with_pool {
    ($ledger:expr, |$pool:ident| $body:expr) => {
        match &$ledger.backend {
            Backend::Sqlite { pool: $pool, .. } => $body,
            Backend::Postgres { pool: $pool } => $body,
        }
    };
}

/// Like `with_pool!`, for statements that write: on SQLite it holds the writer lock.
macro_rules! with_writer {
    ($ledger:expr, |$pool:ident| $body:expr) => {
        match &$ledger.backend {
            Backend::Sqlite {
                pool: $pool,
                writer,
            } => {
                let _guard = writer.lock().await;
                $body
            }
            Backend::Postgres { pool: $pool } => $body,
        }
    };
}

impl Ledger {
    /// Opens the ledger and runs its migrations.
    ///
    /// Fails with [`LedgerError::InvalidUrl`] for a URL that is neither `sqlite:` nor
    /// `postgres:`, and [`LedgerError::Connect`] when the database can't be reached.
    pub async fn connect(options: &LedgerOptions) -> Result<Ledger, LedgerError> {
        if options.max_connections == 0 {
            return Err(LedgerError::InvalidOptions(
                "max_connections must be at least 1".to_owned(),
            ));
        }
        let scheme = options
            .url
            .split_once(':')
            .map(|(scheme, _)| scheme.to_ascii_lowercase())
            .unwrap_or_default();
        let backend = match scheme.as_str() {
            "sqlite" => {
                if options.schema.is_some() {
                    return Err(LedgerError::InvalidOptions(
                        "a schema can only be set for postgres".to_owned(),
                    ));
                }
                Backend::Sqlite {
                    pool: sqlite::connect(options).await?,
                    writer: Arc::new(Mutex::new(())),
                }
            }
            "postgres" | "postgresql" => Backend::Postgres {
                pool: postgres::connect(options).await?,
            },
            _ => {
                return Err(LedgerError::InvalidUrl(format!(
                    "expected sqlite://path/to/file.db or postgres://..., got `{}`",
                    redact_url(&options.url)
                )));
            }
        };
        Ok(Ledger {
            backend,
            clock: Clock::default(),
        })
    }

    /// Returns the PostgreSQL pool, when the ledger is on PostgreSQL: replicas coordinate in
    /// the same database and schema (`crate::coordination`), which these migrations prepare.
    pub fn postgres_pool(&self) -> Option<&sqlx::PgPool> {
        match &self.backend {
            Backend::Sqlite { .. } => None,
            Backend::Postgres { pool } => Some(pool),
        }
    }

    /// Returns which database backs the ledger: `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite { .. } => "sqlite",
            Backend::Postgres { .. } => "postgres",
        }
    }

    /// Closes the pool, waiting for checked-out connections to come back.
    pub async fn close(&self) {
        with_pool!(self, |pool| pool.close().await);
    }

    /// Claims the right to issue for `(client, request_id)`: [`begin_operation`] for
    /// [`ISSUE_LICENSE`].
    ///
    /// [`begin_operation`]: Self::begin_operation
    pub async fn begin(
        &self,
        client: &str,
        request_id: &str,
        fingerprint: &str,
        lease: Duration,
    ) -> Result<Begin, LedgerError> {
        self.begin_operation(client, request_id, ISSUE_LICENSE, fingerprint, lease)
            .await
    }

    /// Claims the right to carry out `operation` for `(client, request_id)`.
    ///
    /// `fingerprint` identifies the request's content, the operation included (compare
    /// exactly, so pass it in one canonical form, e.g. lower-case hex): a request id used for
    /// one operation and then another is a [`Begin::Conflict`] because their fingerprints
    /// differ; `operation` itself is only stored, for the operator. `lease` is how long the
    /// claim stays exclusive before another attempt may take it over.
    pub async fn begin_operation(
        &self,
        client: &str,
        request_id: &str,
        operation: &str,
        fingerprint: &str,
        lease: Duration,
    ) -> Result<Begin, LedgerError> {
        let lease_ms = millis(lease);
        for _ in 0..MAX_BEGIN_ROUNDS {
            // One clock reading per round (SQLite; PostgreSQL reads its own): the lease we
            // grant and the expiry we test against must agree with each other.
            let now = self.gateway_now();
            let token = Uuid::new_v4();
            let attempt = |number: u32, lease_until: i64| -> Result<Attempt, LedgerError> {
                Ok(Attempt {
                    client: client.to_owned(),
                    request_id: request_id.to_owned(),
                    token,
                    number,
                    lease_expires_at: time(lease_until)?,
                })
            };

            let inserted = with_writer!(self, |pool| sqlx::query_scalar::<_, i64>(
                self.sql(&INSERT_FRESH)
            )
            .bind(client)
            .bind(request_id)
            .bind(fingerprint)
            .bind(token.to_string())
            .bind(lease_ms)
            .bind(now)
            .bind(operation)
            .fetch_optional(pool)
            .await)?;
            if let Some(lease_until) = inserted {
                return Ok(Begin::Fresh(attempt(1, lease_until)?));
            }

            let Some(RowAtNow { row, db_now }) = self.fetch_at_now(client, request_id, now).await?
            else {
                // Deleted between our insert and this read (only an operator does that):
                // the key is free again, so claim it afresh.
                continue;
            };
            // A different payload under a used key is refused whatever state the key is in.
            if row.fingerprint != fingerprint {
                return Ok(Begin::Conflict);
            }
            match row.state()? {
                State::Issued | State::Rejected => {
                    return Ok(Begin::Replay(row.outcome()?));
                }
                State::Pending if row.lease_expires_at > db_now => {
                    let remaining = row.lease_expires_at.saturating_sub(db_now);
                    let remaining = Duration::from_millis(u64::try_from(remaining).unwrap_or(0));
                    return Ok(Begin::InProgress {
                        retry_after: remaining.max(MIN_RETRY_AFTER),
                    });
                }
                State::Pending => {}
            }

            // The lease has expired: take over, fenced on the token we just read. If another
            // attempt got there first it changed the token, our UPDATE matches nothing, and
            // the next round reads what that attempt did.
            let taken = with_writer!(self, |pool| sqlx::query_as::<_, (i64, i64)>(
                self.sql(&TAKE_OVER)
            )
            .bind(client)
            .bind(request_id)
            .bind(token.to_string())
            .bind(lease_ms)
            .bind(&row.attempt_token)
            .bind(now)
            .fetch_optional(pool)
            .await)?;
            if let Some((attempts, lease_until)) = taken {
                let number = u32::try_from(attempts)
                    .map_err(|_| LedgerError::Corrupt(format!("attempt count {attempts}")))?;
                return Ok(Begin::Resume(attempt(number, lease_until)?));
            }
        }
        // Only reachable if the key kept changing hands under us: someone else is active.
        Ok(Begin::InProgress {
            retry_after: MIN_RETRY_AFTER,
        })
    }

    /// Marks the attempt's record issued (pending -> issued).
    ///
    /// Calling it again with the same license id is a successful no-op, so a retried write
    /// is harmless. The lease need not be live: the token alone decides, because a take-over
    /// is the only thing that invalidates an attempt.
    pub async fn complete(
        &self,
        attempt: &Attempt,
        license_id: &str,
        license_json: &str,
    ) -> Result<(), LedgerError> {
        let changed = with_writer!(self, |pool| sqlx::query(self.sql(&COMPLETE))
            .bind(&attempt.client)
            .bind(&attempt.request_id)
            .bind(attempt.token.to_string())
            .bind(license_id)
            .bind(license_json)
            .bind(self.gateway_now())
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
        self.settled(attempt, changed, |row| {
            row.state == State::Issued.as_str() && row.license_id.as_deref() == Some(license_id)
        })
        .await
    }

    /// Marks the attempt's record rejected (pending -> rejected); later retries replay it.
    ///
    /// Calling it again with the same reason and message is a successful no-op.
    pub async fn reject(
        &self,
        attempt: &Attempt,
        reason: &str,
        message: &str,
    ) -> Result<(), LedgerError> {
        let changed = with_writer!(self, |pool| sqlx::query(self.sql(&REJECT))
            .bind(&attempt.client)
            .bind(&attempt.request_id)
            .bind(attempt.token.to_string())
            .bind(reason)
            .bind(message)
            .bind(self.gateway_now())
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
        self.settled(attempt, changed, |row| {
            row.state == State::Rejected.as_str()
                && row.error_reason.as_deref() == Some(reason)
                && row.error_message.as_deref() == Some(message)
        })
        .await
    }

    /// Ends the attempt's lease now, leaving the record pending, so the next `begin` resumes
    /// it at once (and reconciles). For failures after which nothing was created: the create
    /// was never sent, or Cryptlex certainly did not act on it.
    ///
    /// Releasing an attempt that already settled its record is a no-op, so a clean-up path
    /// may call it unconditionally.
    pub async fn release(&self, attempt: &Attempt) -> Result<(), LedgerError> {
        self.release_after(attempt, Duration::ZERO).await
    }

    /// Deletes the attempt's pending record, as if the request had never come: for a refusal
    /// found out after the claim (no license to address, a product the caller may not use)
    /// when nothing at all was sent upstream for the key, by this attempt or an earlier one.
    /// A retry is then a new request, answered afresh (for example once the subscription has
    /// its licenses). A no-op on a record the attempt no longer holds or already settled.
    pub async fn forget(&self, attempt: &Attempt) -> Result<(), LedgerError> {
        with_writer!(self, |pool| sqlx::query(FORGET)
            .bind(&attempt.client)
            .bind(&attempt.request_id)
            .bind(attempt.token.to_string())
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
        Ok(())
    }

    /// Ends the attempt's lease `settle` from now, leaving the record pending. For unknown
    /// outcomes: Cryptlex may still be finishing a create whose reply we gave up on, and its
    /// metadata search may not show a new license yet, so reconciling at once could miss the
    /// license and create a second one. Until `settle` has passed, `begin` answers
    /// [`Begin::InProgress`] with the time left.
    ///
    /// Like [`release`](Self::release), a no-op on a record the attempt already settled.
    pub async fn release_after(
        &self,
        attempt: &Attempt,
        settle: Duration,
    ) -> Result<(), LedgerError> {
        self.end_lease_in(&RELEASE, attempt, settle).await
    }

    /// Extends the attempt's lease to `lease` from now, while it still holds the record.
    ///
    /// Fails with [`LedgerError::StaleAttempt`] once another attempt has taken the key over;
    /// a no-op on a record this attempt already settled.
    pub async fn renew(&self, attempt: &Attempt, lease: Duration) -> Result<(), LedgerError> {
        self.end_lease_in(&RENEW, attempt, lease).await
    }

    /// Runs `RELEASE` or `RENEW`, which both end the attempt's lease `from_now`, fenced by
    /// its token; a no-op on a record the attempt already settled.
    async fn end_lease_in(
        &self,
        statement: &Statement,
        attempt: &Attempt,
        from_now: Duration,
    ) -> Result<(), LedgerError> {
        let changed = with_writer!(self, |pool| sqlx::query(self.sql(statement))
            .bind(&attempt.client)
            .bind(&attempt.request_id)
            .bind(attempt.token.to_string())
            .bind(millis(from_now))
            .bind(self.gateway_now())
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
        self.settled(attempt, changed, |_| true).await
    }

    /// Starts renewing the attempt's lease in the background, every third of `lease`, until
    /// the returned keeper is stopped or dropped. A slow attempt (a create that takes longer
    /// than expected) then keeps its key, where an expired lease would let a retry take over,
    /// find nothing yet, and create a second license.
    ///
    /// Stop the keeper ([`LeaseKeeper::stop`]) before settling the record, so no renewal can
    /// land after the settle and lengthen a settling period or a release. Dropping it (a
    /// panic, a cancelled task) stops the renewals too; the lease then runs out on its own.
    pub fn keep_alive(&self, attempt: &Attempt, lease: Duration) -> LeaseKeeper {
        let (stop, mut stopped) = oneshot::channel::<()>();
        let ledger = self.clone();
        let attempt = attempt.clone();
        let interval = (lease / 3).max(MIN_RENEW_INTERVAL);
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    // A send or a dropped sender: either way, stop.
                    _ = &mut stopped => return,
                    () = tokio::time::sleep(interval) => {}
                }
                match ledger.renew(&attempt, lease).await {
                    Ok(()) => {}
                    Err(LedgerError::StaleAttempt) => {
                        // Only possible if renewals failed for a whole lease: the fencing
                        // token still keeps this attempt from overwriting the new holder.
                        tracing::error!(
                            client = attempt.client,
                            issuance_request_id = attempt.request_id,
                            "another attempt took over an issuance that is still in flight"
                        );
                        return;
                    }
                    Err(error) => {
                        // The lease has time left (we renew at a third of it): try again.
                        tracing::warn!(
                            %error,
                            issuance_request_id = attempt.request_id,
                            "could not renew the issuance lease"
                        );
                    }
                }
            }
        });
        LeaseKeeper {
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Returns the record for `(client, request_id)`, if any.
    pub async fn get(&self, client: &str, request_id: &str) -> Result<Option<Record>, LedgerError> {
        self.fetch(client, request_id)
            .await?
            .map(Record::try_from)
            .transpose()
    }

    /// Returns every client's record for `request_id` (the operator view), ordered by client.
    pub async fn find_by_request_id(&self, request_id: &str) -> Result<Vec<Record>, LedgerError> {
        let rows = with_pool!(self, |pool| sqlx::query_as::<_, Row>(FIND_BY_REQUEST_ID)
            .bind(request_id)
            .fetch_all(pool)
            .await)?;
        rows.into_iter().map(Record::try_from).collect()
    }

    /// Returns every client's records for `request_id` and for its unit sub-keys
    /// (`<request_id>#<k>`, one per license of a multi-license `IssueLicense`), ordered by
    /// client and key.
    pub async fn find_with_units(&self, request_id: &str) -> Result<Vec<Record>, LedgerError> {
        let (first, end) = unit_key_range(request_id);
        let rows = with_pool!(self, |pool| sqlx::query_as::<_, Row>(FIND_WITH_UNITS)
            .bind(request_id)
            .bind(&first)
            .bind(&end)
            .fetch_all(pool)
            .await)?;
        rows.into_iter().map(Record::try_from).collect()
    }

    /// Returns the records whose (first) license is `license_id`, oldest first.
    pub async fn find_by_license_id(&self, license_id: &str) -> Result<Vec<Record>, LedgerError> {
        let rows = with_pool!(self, |pool| sqlx::query_as::<_, Row>(FIND_BY_LICENSE_ID)
            .bind(license_id)
            .fetch_all(pool)
            .await)?;
        rows.into_iter().map(Record::try_from).collect()
    }

    /// Returns up to `limit` records, newest first, optionally only those in `state`.
    pub async fn list(&self, state: Option<State>, limit: u32) -> Result<Vec<Record>, LedgerError> {
        let limit = i64::from(limit);
        let rows = match state {
            Some(state) => with_pool!(self, |pool| sqlx::query_as::<_, Row>(LIST_BY_STATE)
                .bind(state.as_str())
                .bind(limit)
                .fetch_all(pool)
                .await)?,
            None => with_pool!(self, |pool| sqlx::query_as::<_, Row>(LIST_ALL)
                .bind(limit)
                .fetch_all(pool)
                .await)?,
        };
        rows.into_iter().map(Record::try_from).collect()
    }

    /// A PostgreSQL ledger that connects on first use and runs no migrations: only for
    /// tests of what happens when the database is unreachable.
    #[cfg(test)]
    pub(crate) fn connect_lazy_for_tests(url: &str) -> Ledger {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(Duration::from_millis(500))
            .connect_lazy(url)
            .expect("a valid postgres url");
        Ledger {
            backend: Backend::Postgres { pool },
            clock: Clock::default(),
        }
    }

    /// Returns this ledger with the gateway's clock moved by `skew`, standing for a replica
    /// whose clock is off. Only SQLite reads that clock.
    #[cfg(test)]
    pub(crate) fn with_clock_skew_for_tests(mut self, skew: TimeDelta) -> Ledger {
        self.clock.skew = skew;
        self
    }

    /// Checks that the database answers (`SELECT 1`), for readiness probes.
    pub async fn ping(&self) -> Result<(), LedgerError> {
        with_pool!(self, |pool| sqlx::query_scalar::<_, i32>("SELECT 1")
            .fetch_one(pool)
            .await)?;
        Ok(())
    }

    /// Returns how many records are in each state, every state listed (zero included) so a
    /// metrics gauge drops back to zero instead of keeping its last value.
    pub async fn count_by_state(&self) -> Result<Vec<(State, u64)>, LedgerError> {
        let rows = with_pool!(self, |pool| sqlx::query_as::<_, (String, i64)>(
            COUNT_BY_STATE
        )
        .fetch_all(pool)
        .await)?;
        let mut counts: Vec<(State, u64)> = State::ALL.iter().map(|&state| (state, 0)).collect();
        for (name, count) in rows {
            let state = name
                .parse::<State>()
                .map_err(|err| LedgerError::Corrupt(err.to_string()))?;
            if let Some(slot) = counts.iter_mut().find(|(s, _)| *s == state) {
                slot.1 = u64::try_from(count).unwrap_or(0);
            }
        }
        Ok(counts)
    }

    async fn fetch(&self, client: &str, request_id: &str) -> Result<Option<Row>, LedgerError> {
        Ok(with_pool!(self, |pool| sqlx::query_as::<_, Row>(
            SELECT_ONE
        )
        .bind(client)
        .bind(request_id)
        .fetch_optional(pool)
        .await)?)
    }

    /// Reads the record together with the time the read happened at, on the clock that leases
    /// are compared against: `now` on SQLite, the database's on PostgreSQL.
    async fn fetch_at_now(
        &self,
        client: &str,
        request_id: &str,
        now: Option<i64>,
    ) -> Result<Option<RowAtNow>, LedgerError> {
        Ok(with_pool!(self, |pool| sqlx::query_as::<_, RowAtNow>(
            self.sql(&SELECT_ONE_AT_NOW)
        )
        .bind(client)
        .bind(request_id)
        .bind(now)
        .fetch_optional(pool)
        .await)?)
    }

    /// Returns the gateway's time to bind as "now": `Some` on SQLite, whose statements use it,
    /// and `None` on PostgreSQL, whose statements fall back to the database's own clock.
    fn gateway_now(&self) -> Option<i64> {
        match self.backend {
            Backend::Sqlite { .. } => Some(self.clock.now_millis()),
            Backend::Postgres { .. } => None,
        }
    }

    /// Returns `statement` in this ledger's dialect.
    fn sql(&self, statement: &Statement) -> &'static str {
        match self.backend {
            Backend::Sqlite { .. } => statement.sqlite,
            Backend::Postgres { .. } => statement.postgres,
        }
    }

    /// Explains a fenced settle that changed `changed` rows: one row means it took effect;
    /// none means either another attempt holds the token (stale) or this attempt already
    /// settled the record, which is fine if `same_outcome` says it is a repeat.
    async fn settled(
        &self,
        attempt: &Attempt,
        changed: u64,
        same_outcome: impl Fn(&Row) -> bool,
    ) -> Result<(), LedgerError> {
        if changed == 1 {
            return Ok(());
        }
        match self.fetch(&attempt.client, &attempt.request_id).await? {
            Some(row) if row.attempt_token == attempt.token.to_string() => {
                if same_outcome(&row) {
                    Ok(())
                } else {
                    Err(LedgerError::AlreadyFinished(row.state()?))
                }
            }
            _ => Err(LedgerError::StaleAttempt),
        }
    }
}

// === SQL ===
//
// Plain runtime-checked queries: there is no DATABASE_URL at build time for the checked
// macros. `$N` placeholders work on both backends (sqlx binds SQLite's `$N` by number too),
// and a number may appear twice.
//
// Statements that read the time are written once with `NOW` where the time goes, and
// `timed!` spells it per backend: on SQLite the parameter `$N` (the gateway's clock, bound by
// `Ledger::gateway_now`), on PostgreSQL the database's clock. PostgreSQL gets the same `$N`,
// bound to NULL, inside a COALESCE, so both backends bind the very same parameters.

/// One statement in both dialects; see [`Ledger::sql`].
#[derive(Debug)]
struct Statement {
    sqlite: &'static str,
    postgres: &'static str,
}

/// The columns of a record, in `Row`'s order; a macro because `concat!` only takes literals.
macro_rules! record_columns {
    () => {
        "caller, request_id, fingerprint, state, attempt_token, attempts, license_id, \
         license_json, error_reason, error_message, created_at, updated_at, lease_expires_at, \
         operation"
    };
}

/// Builds a `SELECT` of every column.
macro_rules! select_from_records {
    ($($rest:literal)*) => {
        concat!("SELECT ", record_columns!(), " FROM issuance_records ", $($rest),*)
    };
}

/// One piece of a timed statement: `NOW`, `COLUMNS` (every record column) or a literal.
macro_rules! sql_part {
    (sqlite, $now:literal, NOW) => {
        concat!("$", $now)
    };
    // `now()` is the start of the statement's transaction, which for these single-statement
    // transactions is the statement itself.
    (postgres, $now:literal, NOW) => {
        concat!(
            "COALESCE($",
            $now,
            ", (EXTRACT(EPOCH FROM now()) * 1000)::BIGINT)"
        )
    };
    ($dialect:ident, $now:literal, COLUMNS) => {
        record_columns!()
    };
    ($dialect:ident, $now:literal, $literal:literal) => {
        $literal
    };
}

/// Declares a statement that reads the time, whose parameter `$now` carries the gateway's.
macro_rules! timed {
    (now = $now:literal; $($part:tt)+) => {
        Statement {
            sqlite: concat!($(sql_part!(sqlite, $now, $part)),+),
            postgres: concat!($(sql_part!(postgres, $now, $part)),+),
        }
    };
}

const INSERT_FRESH: Statement = timed!(now = 6;
    "INSERT INTO issuance_records \
     (caller, request_id, fingerprint, state, attempt_token, attempts, created_at, updated_at, \
      lease_expires_at, operation) \
     VALUES ($1, $2, $3, 'pending', $4, 1, " NOW ", " NOW ", " NOW " + $5, $7) \
     ON CONFLICT (caller, request_id) DO NOTHING \
     RETURNING lease_expires_at"
);

const SELECT_ONE: &str = select_from_records!("WHERE caller = $1 AND request_id = $2");

const SELECT_ONE_AT_NOW: Statement = timed!(now = 3;
    "SELECT " COLUMNS ", " NOW " AS db_now FROM issuance_records \
     WHERE caller = $1 AND request_id = $2"
);

const TAKE_OVER: Statement = timed!(now = 6;
    "UPDATE issuance_records \
     SET attempt_token = $3, attempts = attempts + 1, lease_expires_at = " NOW " + $4, \
         updated_at = " NOW " \
     WHERE caller = $1 AND request_id = $2 AND attempt_token = $5 \
       AND state = 'pending' AND lease_expires_at <= " NOW " \
     RETURNING attempts, lease_expires_at"
);

const COMPLETE: Statement = timed!(now = 6;
    "UPDATE issuance_records \
     SET state = 'issued', license_id = $4, license_json = $5, updated_at = " NOW ", \
         lease_expires_at = " NOW " \
     WHERE caller = $1 AND request_id = $2 AND attempt_token = $3 AND state = 'pending'"
);

const REJECT: Statement = timed!(now = 6;
    "UPDATE issuance_records \
     SET state = 'rejected', error_reason = $4, error_message = $5, updated_at = " NOW ", \
         lease_expires_at = " NOW " \
     WHERE caller = $1 AND request_id = $2 AND attempt_token = $3 AND state = 'pending'"
);

// `$4` is the settling period: zero releases at once.
const RELEASE: Statement = timed!(now = 5;
    "UPDATE issuance_records \
     SET lease_expires_at = " NOW " + $4, updated_at = " NOW " \
     WHERE caller = $1 AND request_id = $2 AND attempt_token = $3 AND state = 'pending'"
);

// A renewal is no change of state, so `updated_at` keeps saying when the record last changed.
const RENEW: Statement = timed!(now = 5;
    "UPDATE issuance_records \
     SET lease_expires_at = " NOW " + $4 \
     WHERE caller = $1 AND request_id = $2 AND attempt_token = $3 AND state = 'pending'"
);

const FORGET: &str = "DELETE FROM issuance_records \
     WHERE caller = $1 AND request_id = $2 AND attempt_token = $3 AND state = 'pending'";

const FIND_BY_REQUEST_ID: &str = select_from_records!("WHERE request_id = $1 ORDER BY caller");

// `$2`..`$3` is the range of the request's unit sub-keys, `<id>#...` (`$` follows `#`), so the
// index on request_id serves it and no LIKE pattern has to escape the id.
const FIND_WITH_UNITS: &str = select_from_records!(
    "WHERE request_id = $1 OR (request_id >= $2 AND request_id < $3) ORDER BY caller, request_id"
);

const FIND_BY_LICENSE_ID: &str =
    select_from_records!("WHERE license_id = $1 ORDER BY created_at, caller, request_id");

// Ties on the millisecond are broken by key, so paging through a listing is deterministic.
const LIST_ALL: &str =
    select_from_records!("ORDER BY created_at DESC, caller, request_id LIMIT $1");

const LIST_BY_STATE: &str =
    select_from_records!("WHERE state = $1 ORDER BY created_at DESC, caller, request_id LIMIT $2");

const COUNT_BY_STATE: &str = "SELECT state, COUNT(*) FROM issuance_records GROUP BY state";

// === Rows ===

/// A row exactly as stored; `Record` is its checked, typed form.
#[derive(Debug, sqlx::FromRow)]
struct Row {
    /// The `caller` column: the authorized client identity.
    #[sqlx(rename = "caller")]
    client: String,
    request_id: String,
    fingerprint: String,
    state: String,
    attempt_token: String,
    attempts: i64,
    license_id: Option<String>,
    license_json: Option<String>,
    error_reason: Option<String>,
    error_message: Option<String>,
    created_at: i64,
    updated_at: i64,
    lease_expires_at: i64,
    operation: String,
}

/// A row and the time it was read at, on the clock leases are compared against.
#[derive(Debug, sqlx::FromRow)]
struct RowAtNow {
    #[sqlx(flatten)]
    row: Row,
    db_now: i64,
}

impl Row {
    fn state(&self) -> Result<State, LedgerError> {
        self.state
            .parse()
            .map_err(|err: ParseStateError| LedgerError::Corrupt(err.to_string()))
    }

    /// Returns the outcome of a finished row.
    fn outcome(&self) -> Result<Outcome, LedgerError> {
        let missing = |what: &str| {
            LedgerError::Corrupt(format!(
                "{} record for request {} has no {what}",
                self.state, self.request_id
            ))
        };
        match self.state()? {
            State::Issued => Ok(Outcome::Issued {
                license_id: self
                    .license_id
                    .clone()
                    .ok_or_else(|| missing("license id"))?,
                license_json: self
                    .license_json
                    .clone()
                    .ok_or_else(|| missing("license json"))?,
            }),
            State::Rejected => Ok(Outcome::Rejected {
                reason: self
                    .error_reason
                    .clone()
                    .ok_or_else(|| missing("error reason"))?,
                message: self
                    .error_message
                    .clone()
                    .ok_or_else(|| missing("error message"))?,
            }),
            State::Pending => Err(missing("outcome")),
        }
    }
}

impl TryFrom<Row> for Record {
    type Error = LedgerError;

    fn try_from(row: Row) -> Result<Self, Self::Error> {
        Ok(Record {
            state: row.state()?,
            attempts: u32::try_from(row.attempts)
                .map_err(|_| LedgerError::Corrupt(format!("attempt count {}", row.attempts)))?,
            created_at: time(row.created_at)?,
            updated_at: time(row.updated_at)?,
            lease_expires_at: time(row.lease_expires_at)?,
            client: row.client,
            request_id: row.request_id,
            operation: row.operation,
            fingerprint: row.fingerprint,
            license_id: row.license_id,
            license_json: row.license_json,
            error_reason: row.error_reason,
            error_message: row.error_message,
        })
    }
}

// === Helpers ===

/// Returns a stored timestamp as a time.
fn time(millis: i64) -> Result<DateTime<Utc>, LedgerError> {
    DateTime::from_timestamp_millis(millis)
        .ok_or_else(|| LedgerError::Corrupt(format!("timestamp {millis} out of range")))
}

/// Returns the half-open key range `[<id>#, <id>$)` holding every unit sub-key of `request_id`.
fn unit_key_range(request_id: &str) -> (String, String) {
    (
        format!("{request_id}{UNIT_SEPARATOR}"),
        format!("{request_id}$"),
    )
}

/// Returns a duration in the milliseconds the database adds to its timestamps.
fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Shows a secret's size in place of its content.
struct Redacted(usize);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted, {} bytes>", self.0)
    }
}

/// Returns `url` with any password replaced, fit for errors and logs.
fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            // Only fails for URLs that cannot have credentials, which this one does.
            let _ = parsed.set_password(Some("redacted"));
            parsed.to_string()
        }
        Ok(_) => url.to_owned(),
        Err(_) => "<unparseable url>".to_owned(),
    }
}

// Declared last: it uses the statement macros above, which are in scope only after their
// definitions.
mod licenses;
pub use licenses::{
    AppliedEvent, EventOrder, HistoryEntry, HistoryResult, LicenseClaim, LicenseHold,
    ParseHistoryResultError,
};

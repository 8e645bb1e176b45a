//! Per license: the order of its suspend and resume events, the lease of the one attempt that
//! may write to it upstream, and the history of what each call did to it.
//!
//! # One writer per license
//!
//! Every lifecycle write to a license (suspend, resume, revoke, renew, seats) happens while its
//! attempt holds the license's row in `license_event_order` ([`Ledger::claim_license`]): a
//! lease like the request's own, claimed by one atomic statement (an insert that only one
//! racer can make, or an update fenced on the previous holder's token and an expired lease).
//! Two calls for one license, on one replica or two, therefore never write to it at the same
//! time, and each decides on what the one before it left. An attempt holds one license at a
//! time (a subscription's licenses are done one after another), so two calls can never wait
//! for each other.
//!
//! # Event order
//!
//! The row keeps the provider's time of the last suspend or resume applied. The holder
//! compares its event with it and writes upstream only if its event is later; once the write
//! is done it records its event with one statement that is conditional on its token *and* on
//! the stored time being earlier, so nothing older can ever replace something newer. A
//! revocation sets `revoked` for good.
//!
//! # History and crashes
//!
//! Before its upstream write the holder writes its history row as `pending`, with what the
//! write sets and (for a renewal) the expiry before. If it dies, or loses the reply, the row
//! stays pending, and the next holder of the license (a retry of the same request, or any
//! other call) settles it before doing anything: it reads the license back and marks the row
//! applied or not applied (an expiry later than the one before means a renewal happened), and
//! records a suspend or resume that did happen in the event order. An attempt whose reply was
//! lost gives the license back only after the settling period
//! ([`Ledger::release_license`]), so Cryptlex has finished the write before anyone reads the
//! license back.
//!
//! History rows are written fenced on the holder's token too, except those that need no
//! upstream write (issuance records its license's first row after the fact).

use std::{fmt, str::FromStr, time::Duration};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    Backend, Ledger, LedgerError, MAX_BEGIN_ROUNDS, MIN_RETRY_AFTER, Statement, millis, time,
    unit_key_range,
};

/// What [`Ledger::claim_license`] got.
#[derive(Debug)]
pub enum LicenseClaim {
    /// This attempt may write to the license until it releases it.
    Held(LicenseHold),
    /// Another attempt is writing to the license, or it is settling after an unknown outcome.
    Busy {
        /// The holder's remaining lease (or settling period), at least 100 ms.
        retry_after: Duration,
    },
}

/// The right to write to one license upstream, and the license's event order as the claim
/// found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicenseHold {
    license_id: String,
    token: Uuid,
    /// The event order when the claim was made; only the holder changes it.
    pub order: EventOrder,
}

impl LicenseHold {
    /// Returns the license held.
    pub fn license_id(&self) -> &str {
        &self.license_id
    }
}

/// What the gateway has applied to a license so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventOrder {
    /// The last suspend or resume applied, if any.
    pub last_event: Option<AppliedEvent>,
    /// Whether a revocation was applied (terminal).
    pub revoked: bool,
}

/// A suspend or resume event applied to a license.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedEvent {
    /// The provider's time of the event.
    pub at: DateTime<Utc>,
    /// Whether it suspended (true) or resumed (false) the license.
    pub suspended: bool,
    /// Who sent it, under which request id.
    pub caller: String,
    pub request_id: String,
}

/// Where a call's effect on one license stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HistoryResult {
    /// The upstream write is under way, or its outcome is unknown.
    Pending,
    /// The change was made.
    Applied,
    /// Nothing was changed: a later event had been applied, or the license is revoked.
    Superseded,
    /// A pending write was checked against the license and had not happened; a retry of the
    /// request makes it again.
    NotApplied,
    /// Cryptlex refused the change for good.
    Rejected,
}

impl HistoryResult {
    /// Every result, in the order they are documented.
    pub const ALL: [HistoryResult; 5] = [
        HistoryResult::Pending,
        HistoryResult::Applied,
        HistoryResult::Superseded,
        HistoryResult::NotApplied,
        HistoryResult::Rejected,
    ];

    /// Returns the name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Applied => "applied",
            Self::Superseded => "superseded",
            Self::NotApplied => "not_applied",
            Self::Rejected => "rejected",
        }
    }
}

impl fmt::Display for HistoryResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for HistoryResult {
    type Err = ParseHistoryResultError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|result| result.as_str() == s)
            .ok_or_else(|| ParseHistoryResultError(s.to_owned()))
    }
}

/// A string that names no [`HistoryResult`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown history result `{0}`")]
pub struct ParseHistoryResultError(String);

/// What one call did to one license: one row of its history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub caller: String,
    pub request_id: String,
    pub license_id: String,
    /// The subscription the call addressed, when it addressed one.
    pub subscription_id: Option<String>,
    /// The RPC (`SuspendLicense`, ...).
    pub operation: String,
    pub result: HistoryResult,
    /// Suspend and resume: the provider's event time.
    pub event_at: Option<DateTime<Utc>>,
    /// Renew: the expiry before and after.
    pub expires_before: Option<DateTime<Utc>>,
    pub expires_after: Option<DateTime<Utc>>,
    /// What the write sets, to check a pending row against the license read back.
    pub wanted_expires_at: Option<DateTime<Utc>>,
    pub wanted_seats: Option<i32>,
    pub revocation: Option<String>,
    /// A short note for the operator.
    pub detail: Option<String>,
    /// How many times the write was started (1, or more after a write that had not happened).
    pub attempts: u32,
    /// When the row was first written and last changed (the database's time; ignored when
    /// writing).
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl HistoryEntry {
    /// Returns a new entry with nothing but its key, operation and result set.
    pub fn new(
        caller: &str,
        request_id: &str,
        license_id: &str,
        operation: &str,
        result: HistoryResult,
    ) -> Self {
        let now = Utc::now();
        Self {
            caller: caller.to_owned(),
            request_id: request_id.to_owned(),
            license_id: license_id.to_owned(),
            subscription_id: None,
            operation: operation.to_owned(),
            result,
            event_at: None,
            expires_before: None,
            expires_after: None,
            wanted_expires_at: None,
            wanted_seats: None,
            revocation: None,
            detail: None,
            attempts: 1,
            created_at: now,
            updated_at: now,
        }
    }
}

// === impl Ledger ===

impl Ledger {
    /// Claims the right to write to `license_id` upstream for `lease`, unless another attempt
    /// holds it. The hold carries the license's event order as it was at the claim.
    ///
    /// Settle any pending history of the license ([`Ledger::pending_history`]) before
    /// writing: it was left by an attempt that died or lost its reply.
    pub async fn claim_license(
        &self,
        license_id: &str,
        lease: Duration,
    ) -> Result<LicenseClaim, LedgerError> {
        let lease_ms = millis(lease);
        for _ in 0..MAX_BEGIN_ROUNDS {
            let now = self.gateway_now();
            let token = Uuid::new_v4();
            let inserted = with_writer!(self, |pool| sqlx::query_scalar::<_, i64>(
                self.sql(&CLAIM_NEW_LICENSE)
            )
            .bind(license_id)
            .bind(token.to_string())
            .bind(lease_ms)
            .bind(now)
            .fetch_optional(pool)
            .await)?;
            if inserted.is_some() {
                return Ok(LicenseClaim::Held(LicenseHold {
                    license_id: license_id.to_owned(),
                    token,
                    order: EventOrder::default(),
                }));
            }
            let Some(row) = with_pool!(self, |pool| sqlx::query_as::<_, OrderRow>(
                self.sql(&SELECT_LICENSE_AT_NOW)
            )
            .bind(license_id)
            .bind(now)
            .fetch_optional(pool)
            .await)?
            else {
                // Deleted in between (only by hand): claim it afresh.
                continue;
            };
            if row.holder_until > row.db_now {
                let remaining = u64::try_from(row.holder_until - row.db_now).unwrap_or(0);
                return Ok(LicenseClaim::Busy {
                    retry_after: Duration::from_millis(remaining).max(MIN_RETRY_AFTER),
                });
            }
            let taken = with_writer!(self, |pool| sqlx::query_scalar::<_, i64>(
                self.sql(&TAKE_LICENSE)
            )
            .bind(license_id)
            .bind(token.to_string())
            .bind(lease_ms)
            .bind(&row.holder_token)
            .bind(now)
            .fetch_optional(pool)
            .await)?;
            if taken.is_some() {
                return Ok(LicenseClaim::Held(LicenseHold {
                    license_id: license_id.to_owned(),
                    token,
                    order: row.order()?,
                }));
            }
            // Another attempt took it between our read and our update: look again.
        }
        Ok(LicenseClaim::Busy {
            retry_after: MIN_RETRY_AFTER,
        })
    }

    /// Records `event` as the license's last suspend or resume, if it is later than the one
    /// recorded. Returns whether it was recorded: false means an event at the same time or
    /// later is recorded already (the holder compares first, so only a reconciliation that
    /// settles an older pending event sees false). Fails with [`LedgerError::StaleAttempt`]
    /// when the hold was taken over.
    pub async fn record_event(
        &self,
        hold: &LicenseHold,
        event: &AppliedEvent,
    ) -> Result<bool, LedgerError> {
        let changed = with_writer!(self, |pool| sqlx::query(self.sql(&RECORD_EVENT))
            .bind(&hold.license_id)
            .bind(hold.token.to_string())
            .bind(event.at.timestamp_millis())
            .bind(i64::from(event.suspended))
            .bind(&event.caller)
            .bind(&event.request_id)
            .bind(self.gateway_now())
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
        if changed == 1 {
            return Ok(true);
        }
        self.still_held(hold).await.map(|()| false)
    }

    /// Records that the license is revoked: later suspends and resumes are superseded.
    pub async fn record_revoked(&self, hold: &LicenseHold) -> Result<(), LedgerError> {
        let changed = with_writer!(self, |pool| sqlx::query(self.sql(&RECORD_REVOKED))
            .bind(&hold.license_id)
            .bind(hold.token.to_string())
            .bind(self.gateway_now())
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
        if changed == 1 {
            Ok(())
        } else {
            Err(LedgerError::StaleAttempt)
        }
    }

    /// Gives the license back: at once (`settle` zero), or after `settle` when the last write's
    /// outcome is unknown, so Cryptlex can finish it before the next holder reads the license
    /// back. A no-op when the hold was already taken over.
    pub async fn release_license(
        &self,
        hold: &LicenseHold,
        settle: Duration,
    ) -> Result<(), LedgerError> {
        if settle.is_zero() {
            with_writer!(self, |pool| sqlx::query(RELEASE_LICENSE)
                .bind(&hold.license_id)
                .bind(hold.token.to_string())
                .execute(pool)
                .await
                .map(|done| done.rows_affected()))?;
        } else {
            with_writer!(self, |pool| sqlx::query(self.sql(&RELEASE_LICENSE_AFTER))
                .bind(&hold.license_id)
                .bind(hold.token.to_string())
                .bind(millis(settle))
                .bind(self.gateway_now())
                .execute(pool)
                .await
                .map(|done| done.rows_affected()))?;
        }
        Ok(())
    }

    /// Returns the license's event order, if any call has touched it.
    pub async fn event_order(&self, license_id: &str) -> Result<Option<EventOrder>, LedgerError> {
        let row = with_pool!(self, |pool| sqlx::query_as::<_, OrderRow>(
            self.sql(&SELECT_LICENSE_AT_NOW)
        )
        .bind(license_id)
        .bind(self.gateway_now())
        .fetch_optional(pool)
        .await)?;
        row.map(|row| row.order()).transpose()
    }

    /// Writes `entry` (inserting it, or replacing the fields of the row with its key; the
    /// attempt count goes up whenever a row becomes pending again). With `hold`, only while
    /// the hold is live: [`LedgerError::StaleAttempt`] otherwise.
    pub async fn write_history(
        &self,
        hold: Option<&LicenseHold>,
        entry: &HistoryEntry,
    ) -> Result<(), LedgerError> {
        let millis_of = |at: Option<DateTime<Utc>>| at.map(|at| at.timestamp_millis());
        let changed = with_writer!(self, |pool| sqlx::query(self.sql(&WRITE_HISTORY))
            .bind(&entry.caller)
            .bind(&entry.request_id)
            .bind(&entry.license_id)
            .bind(&entry.subscription_id)
            .bind(&entry.operation)
            .bind(entry.result.as_str())
            .bind(millis_of(entry.event_at))
            .bind(millis_of(entry.expires_before))
            .bind(millis_of(entry.expires_after))
            .bind(millis_of(entry.wanted_expires_at))
            .bind(entry.wanted_seats.map(i64::from))
            .bind(&entry.revocation)
            .bind(&entry.detail)
            .bind(hold.map(|hold| hold.token.to_string()))
            .bind(self.gateway_now())
            .execute(pool)
            .await
            .map(|done| done.rows_affected()))?;
        if changed == 0 {
            return Err(LedgerError::StaleAttempt);
        }
        Ok(())
    }

    /// Returns one call's history row for one license.
    pub async fn history_entry(
        &self,
        caller: &str,
        request_id: &str,
        license_id: &str,
    ) -> Result<Option<HistoryEntry>, LedgerError> {
        let row = with_pool!(self, |pool| sqlx::query_as::<_, HistoryRow>(HISTORY_ENTRY)
            .bind(caller)
            .bind(request_id)
            .bind(license_id)
            .fetch_optional(pool)
            .await)?;
        row.map(HistoryEntry::try_from).transpose()
    }

    /// Returns the license's pending history rows, oldest first: writes whose outcome is not
    /// known yet. Only meaningful to the license's holder, who settles them.
    pub async fn pending_history(
        &self,
        license_id: &str,
    ) -> Result<Vec<HistoryEntry>, LedgerError> {
        let rows = with_pool!(self, |pool| sqlx::query_as::<_, HistoryRow>(
            PENDING_HISTORY
        )
        .bind(license_id)
        .fetch_all(pool)
        .await)?;
        rows.into_iter().map(HistoryEntry::try_from).collect()
    }

    /// Returns the license's history, oldest first.
    pub async fn license_history(
        &self,
        license_id: &str,
    ) -> Result<Vec<HistoryEntry>, LedgerError> {
        let rows = with_pool!(self, |pool| sqlx::query_as::<_, HistoryRow>(
            HISTORY_FOR_LICENSE
        )
        .bind(license_id)
        .fetch_all(pool)
        .await)?;
        rows.into_iter().map(HistoryEntry::try_from).collect()
    }

    /// Returns every history row of `request_id` and its unit sub-keys, all callers, oldest
    /// first.
    pub async fn request_history(
        &self,
        request_id: &str,
    ) -> Result<Vec<HistoryEntry>, LedgerError> {
        let (first, end) = unit_key_range(request_id);
        let rows = with_pool!(self, |pool| sqlx::query_as::<_, HistoryRow>(
            HISTORY_FOR_REQUEST
        )
        .bind(request_id)
        .bind(&first)
        .bind(&end)
        .fetch_all(pool)
        .await)?;
        rows.into_iter().map(HistoryEntry::try_from).collect()
    }

    /// Explains a fenced event write that changed nothing: fine while the hold is live.
    async fn still_held(&self, hold: &LicenseHold) -> Result<(), LedgerError> {
        let token = with_pool!(self, |pool| sqlx::query_scalar::<_, String>(HOLDER_TOKEN)
            .bind(&hold.license_id)
            .fetch_optional(pool)
            .await)?;
        match token {
            Some(token) if token == hold.token.to_string() => Ok(()),
            _ => Err(LedgerError::StaleAttempt),
        }
    }
}

// === SQL ===

const CLAIM_NEW_LICENSE: Statement = timed!(now = 4;
    "INSERT INTO license_event_order (license_id, holder_token, holder_until, updated_at) \
     VALUES ($1, $2, " NOW " + $3, " NOW ") \
     ON CONFLICT (license_id) DO NOTHING \
     RETURNING holder_until"
);

const SELECT_LICENSE_AT_NOW: Statement = timed!(now = 2;
    "SELECT event_at, suspended, event_caller, event_request_id, revoked, holder_token, \
            holder_until, " NOW " AS db_now \
     FROM license_event_order WHERE license_id = $1"
);

// Fenced on the token read just before, so of two racers only one can take the license.
const TAKE_LICENSE: Statement = timed!(now = 5;
    "UPDATE license_event_order \
     SET holder_token = $2, holder_until = " NOW " + $3, updated_at = " NOW " \
     WHERE license_id = $1 AND holder_token = $4 AND holder_until <= " NOW " \
     RETURNING holder_until"
);

// The one statement that orders events: only the holder, and only a later event.
const RECORD_EVENT: Statement = timed!(now = 7;
    "UPDATE license_event_order \
     SET event_at = $3, suspended = $4, event_caller = $5, event_request_id = $6, \
         updated_at = " NOW " \
     WHERE license_id = $1 AND holder_token = $2 AND (event_at IS NULL OR event_at < $3)"
);

const RECORD_REVOKED: Statement = timed!(now = 3;
    "UPDATE license_event_order SET revoked = 1, updated_at = " NOW " \
     WHERE license_id = $1 AND holder_token = $2"
);

const RELEASE_LICENSE: &str = "UPDATE license_event_order \
     SET holder_token = '', holder_until = 0 \
     WHERE license_id = $1 AND holder_token = $2";

// The token stays: the next holder knows nothing of it, and takes over once the time is up.
const RELEASE_LICENSE_AFTER: Statement = timed!(now = 4;
    "UPDATE license_event_order SET holder_until = " NOW " + $3 \
     WHERE license_id = $1 AND holder_token = $2"
);

const HOLDER_TOKEN: &str = "SELECT holder_token FROM license_event_order WHERE license_id = $1";

/// The columns of a history row, in `HistoryRow`'s order.
macro_rules! history_columns {
    () => {
        "caller, request_id, license_id, subscription_id, operation, result, event_at, \
         expires_before, expires_after, wanted_expires_at, wanted_seats, revocation, detail, \
         attempts, created_at, updated_at"
    };
}

// An INSERT ... SELECT so the fence is part of the one statement: with a token (`$14`) the row
// is written only while that token holds the license. SQLite needs the WHERE to tell the
// SELECT from the upsert clause anyway.
const WRITE_HISTORY: Statement = timed!(now = 15;
    "INSERT INTO license_history \
     (caller, request_id, license_id, subscription_id, operation, result, event_at, \
      expires_before, expires_after, wanted_expires_at, wanted_seats, revocation, detail, \
      attempts, created_at, updated_at) \
     SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 1, " NOW ", " NOW " \
     WHERE $14 IS NULL OR EXISTS (SELECT 1 FROM license_event_order \
                                  WHERE license_id = $3 AND holder_token = $14) \
     ON CONFLICT (caller, request_id, license_id) DO UPDATE SET \
         subscription_id = excluded.subscription_id, operation = excluded.operation, \
         result = excluded.result, event_at = excluded.event_at, \
         expires_before = excluded.expires_before, expires_after = excluded.expires_after, \
         wanted_expires_at = excluded.wanted_expires_at, wanted_seats = excluded.wanted_seats, \
         revocation = excluded.revocation, detail = excluded.detail, \
         attempts = license_history.attempts \
             + CASE WHEN excluded.result = 'pending' THEN 1 ELSE 0 END, \
         updated_at = excluded.updated_at"
);

const HISTORY_ENTRY: &str = concat!(
    "SELECT ",
    history_columns!(),
    " FROM license_history WHERE caller = $1 AND request_id = $2 AND license_id = $3"
);

const PENDING_HISTORY: &str = concat!(
    "SELECT ",
    history_columns!(),
    " FROM license_history WHERE license_id = $1 AND result = 'pending' \
     ORDER BY created_at, caller, request_id"
);

const HISTORY_FOR_LICENSE: &str = concat!(
    "SELECT ",
    history_columns!(),
    " FROM license_history WHERE license_id = $1 ORDER BY created_at, caller, request_id"
);

const HISTORY_FOR_REQUEST: &str = concat!(
    "SELECT ",
    history_columns!(),
    " FROM license_history \
     WHERE request_id = $1 OR (request_id >= $2 AND request_id < $3) \
     ORDER BY created_at, caller, request_id, license_id"
);

// === Rows ===

#[derive(Debug, sqlx::FromRow)]
struct OrderRow {
    event_at: Option<i64>,
    suspended: Option<i64>,
    event_caller: Option<String>,
    event_request_id: Option<String>,
    revoked: i64,
    holder_token: String,
    holder_until: i64,
    db_now: i64,
}

impl OrderRow {
    fn order(&self) -> Result<EventOrder, LedgerError> {
        let last_event = match (
            self.event_at,
            self.suspended,
            &self.event_caller,
            &self.event_request_id,
        ) {
            (Some(at), Some(suspended), Some(caller), Some(request_id)) => Some(AppliedEvent {
                at: time(at)?,
                suspended: suspended != 0,
                caller: caller.clone(),
                request_id: request_id.clone(),
            }),
            (None, None, None, None) => None,
            _ => {
                return Err(LedgerError::Corrupt(
                    "license event order with a partly recorded event".to_owned(),
                ));
            }
        };
        Ok(EventOrder {
            last_event,
            revoked: self.revoked != 0,
        })
    }
}

#[derive(Debug, sqlx::FromRow)]
struct HistoryRow {
    caller: String,
    request_id: String,
    license_id: String,
    subscription_id: Option<String>,
    operation: String,
    result: String,
    event_at: Option<i64>,
    expires_before: Option<i64>,
    expires_after: Option<i64>,
    wanted_expires_at: Option<i64>,
    wanted_seats: Option<i64>,
    revocation: Option<String>,
    detail: Option<String>,
    attempts: i64,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<HistoryRow> for HistoryEntry {
    type Error = LedgerError;

    fn try_from(row: HistoryRow) -> Result<Self, Self::Error> {
        let optional_time = |millis: Option<i64>| millis.map(time).transpose();
        Ok(HistoryEntry {
            result: row
                .result
                .parse()
                .map_err(|err: ParseHistoryResultError| LedgerError::Corrupt(err.to_string()))?,
            event_at: optional_time(row.event_at)?,
            expires_before: optional_time(row.expires_before)?,
            expires_after: optional_time(row.expires_after)?,
            wanted_expires_at: optional_time(row.wanted_expires_at)?,
            wanted_seats: row
                .wanted_seats
                .map(|seats| {
                    i32::try_from(seats)
                        .map_err(|_| LedgerError::Corrupt(format!("seat count {seats}")))
                })
                .transpose()?,
            attempts: u32::try_from(row.attempts)
                .map_err(|_| LedgerError::Corrupt(format!("attempt count {}", row.attempts)))?,
            created_at: time(row.created_at)?,
            updated_at: time(row.updated_at)?,
            caller: row.caller,
            request_id: row.request_id,
            license_id: row.license_id,
            subscription_id: row.subscription_id,
            operation: row.operation,
            revocation: row.revocation,
            detail: row.detail,
        })
    }
}

//! The payment lifecycle after the first sale: `RenewLicense`, `SuspendLicense`,
//! `ResumeLicense`, `RevokeLicense` and `SetSeats`, each exactly once per (caller, request id)
//! and, per license, in the order of the provider's events.
//!
//! # Exactly once
//!
//! A call claims its request id in the same ledger as issuance, with the operation and every
//! field in the fingerprint; a finished call's whole answer (every license's update) is stored
//! and replayed as it was. A call addresses one license or every license of a subscription
//! (found by the subscription reference in their admin-only metadata) and handles them one
//! after another. For each license it holds the license's lease in the ledger while it reads
//! the license, decides and writes, and it writes the license's history row `pending` before
//! the upstream write and settles it after; a retry of the request skips the licenses its
//! history shows done. So a retry after a partial failure finishes only what is missing, and
//! a renewal by interval (`POST /renew`, which Cryptlex does not deduplicate) is never sent
//! twice for one request and license: if its reply was lost, the next holder of the license
//! reads it back and compares the expiry with the one recorded before.
//!
//! # Order
//!
//! Suspend and resume carry the provider's event time. Under the license's lease the holder
//! compares it with the last event applied to the license (stored in the ledger, shared by
//! every replica): an event that is not later is acknowledged as `superseded` and changes
//! nothing. A revoked license stays revoked: later suspends, resumes, renewals and seat
//! changes are superseded too. A renewal to a date never shortens a license: a date that is
//! not later than the license's expiry is superseded as well.
//!
//! # Refusals
//!
//! Validation happens before anything else. The operation policy and the request's own
//! checks are done before the ledger is touched; a refusal that needs Cryptlex's answer (no
//! license for the subscription, a product the caller may not use) is found out after the
//! claim, before any write, and forgets the claim again, so the same request id may be used
//! once the licenses exist.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::Instrument as _;

use super::issuance::{
    CLIENT_METADATA_KEY, IN_FLIGHT_POLL, REJECTED_REASON, REVOCATION_METADATA_KEY,
    SUBSCRIPTION_METADATA_KEY,
};
use super::{Credential, Denial, Licensing, LicensingError, Missing, upstream};
use crate::cryptlex::{
    AdminLicense, CryptlexError, LicenseChange, MetadataEntry, MetadataMatches, Rejection,
};
use crate::domain::{
    AdminToken, AllowedClient, CryptlexId, IssuedLicense, Operation, RequestContext, RequestId,
    SubscriptionId,
};
use crate::ledger::{
    AppliedEvent, Attempt, Begin, EventOrder, HistoryEntry, HistoryResult, LedgerError,
    LicenseClaim, LicenseHold, Outcome,
};

/// The longest revocation note accepted.
pub const MAX_REVOCATION_NOTE: usize = 512;

/// Cryptlex may keep an expiry at a coarser precision than asked for; a read-back expiry
/// within this of the one asked for is the one asked for.
const EXPIRY_TOLERANCE: chrono::TimeDelta = chrono::TimeDelta::seconds(1);

/// Which licenses a lifecycle call addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LicenseTarget {
    /// One license, by its Cryptlex id.
    License(CryptlexId),
    /// Every license the gateway issued with this subscription reference, for any caller.
    Subscription(SubscriptionId),
}

/// Why licenses are revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationReason {
    Unspecified,
    Refund,
    Chargeback,
    Cancellation,
    Other,
}

impl RevocationReason {
    /// Returns the word stored in the license's metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Refund => "refund",
            Self::Chargeback => "chargeback",
            Self::Cancellation => "cancellation",
            Self::Other => "other",
        }
    }
}

/// What a lifecycle call does to each license it addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LifecycleAction {
    /// Sets the expiry to `expires_at`, or with `None` extends it by the license's own
    /// subscription interval.
    Renew { expires_at: Option<DateTime<Utc>> },
    /// Suspends, ordered by the provider's event time.
    Suspend { event_time: DateTime<Utc> },
    /// Resumes, ordered by the provider's event time.
    Resume { event_time: DateTime<Utc> },
    /// Revokes for good, with the reason in admin-only metadata.
    Revoke {
        reason: RevocationReason,
        note: Option<String>,
    },
    /// Sets how many machines each license may be activated on.
    SetSeats { allowed_activations: i32 },
}

impl LifecycleAction {
    /// Returns the operation (the RPC), as the policy names it and the ledger records it.
    pub fn operation(&self) -> Operation {
        match self {
            Self::Renew { .. } => Operation::RenewLicense,
            Self::Suspend { .. } => Operation::SuspendLicense,
            Self::Resume { .. } => Operation::ResumeLicense,
            Self::Revoke { .. } => Operation::RevokeLicense,
            Self::SetSeats { .. } => Operation::SetSeats,
        }
    }
}

/// A parsed lifecycle request.
#[derive(Debug, Clone)]
pub struct LifecycleCommand {
    pub request_id: RequestId,
    pub target: LicenseTarget,
    pub action: LifecycleAction,
}

/// One license after a lifecycle call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicenseUpdate {
    /// The license as Cryptlex holds it after the call (the gateway's keys left out).
    pub license: IssuedLicense,
    /// For a renewal: the expiry before it.
    pub previous_expires_at: Option<DateTime<Utc>>,
    /// Nothing was changed: a later event had been applied, or the license is revoked.
    pub superseded: bool,
}

/// The answer to a lifecycle call.
#[derive(Debug, Clone)]
pub struct LifecycleOutcome {
    /// Every license the call addressed, oldest first.
    pub licenses: Vec<LicenseUpdate>,
    /// The answer is the stored outcome of an earlier attempt.
    pub replayed: bool,
}

impl LifecycleOutcome {
    /// Whether nothing was changed because every license had seen a later event or is
    /// revoked.
    pub fn superseded(&self) -> bool {
        !self.licenses.is_empty() && self.licenses.iter().all(|update| update.superseded)
    }
}

/// What the ledger stores as a finished lifecycle call's answer.
#[derive(Debug, Serialize, Deserialize)]
struct StoredAnswer {
    licenses: Vec<LicenseUpdate>,
}

/// How a step of an attempt ended, for the request's ledger record.
#[derive(Debug)]
enum Step {
    /// Refused before any write (no license, a product not allowed): forget the claim.
    Refused(LicensingError),
    /// Cryptlex refused a write for good: record and replay it.
    Permanent { detail: String },
    /// Nothing was written, or what was written is known: the next attempt may take over at
    /// once.
    NotFinal(LicensingError),
    /// A write may have happened: hold the record for the settling period.
    Unknown(LicensingError),
}

impl From<LedgerError> for Step {
    fn from(error: LedgerError) -> Self {
        Step::NotFinal(LicensingError::internal(error))
    }
}

impl Licensing {
    /// Carries out (or replays) a lifecycle call for `caller`.
    #[tracing::instrument(name = "licensing.lifecycle", skip_all, fields(client = %caller.identity, operation = %command.action.operation(), issuance_request_id = %command.request_id))]
    pub async fn lifecycle(
        &self,
        ctx: &RequestContext,
        caller: &AllowedClient,
        command: LifecycleCommand,
    ) -> Result<LifecycleOutcome, LicensingError> {
        let operation = command.action.operation();
        if !caller.may_call(operation) {
            return Err(LicensingError::PermissionDenied(
                Denial::OperationNotAllowed,
            ));
        }
        let (ledger, options) = self.issuance()?;
        let fingerprint = fingerprint(&command);
        let wait_until =
            tokio::time::Instant::now() + options.wait_for_in_flight.min(ctx.remaining());
        loop {
            let begin = ledger
                .begin_operation(
                    caller.identity.as_str(),
                    command.request_id.as_str(),
                    operation.as_str(),
                    &fingerprint,
                    options.lease,
                )
                .await
                .map_err(LicensingError::internal)?;
            match begin {
                Begin::Replay(Outcome::Issued { license_json, .. }) => {
                    let stored: StoredAnswer =
                        serde_json::from_str(&license_json).map_err(LicensingError::internal)?;
                    tracing::info!("replayed stored answer");
                    return Ok(LifecycleOutcome {
                        licenses: stored.licenses,
                        replayed: true,
                    });
                }
                Begin::Replay(Outcome::Rejected { message, .. }) => {
                    return Err(LicensingError::IssuanceRejected { detail: message });
                }
                Begin::Conflict => return Err(LicensingError::RequestIdReused),
                Begin::InProgress { retry_after } => {
                    if tokio::time::Instant::now() + IN_FLIGHT_POLL >= wait_until {
                        return Err(LicensingError::RequestInProgress { retry_after });
                    }
                    tokio::time::sleep(IN_FLIGHT_POLL).await;
                }
                Begin::Fresh(attempt) | Begin::Resume(attempt) => {
                    return self
                        .lifecycle_to_the_end(ctx, caller, &command, attempt)
                        .await;
                }
            }
        }
    }

    /// Runs the attempt on a task of its own, so a caller that goes away cannot cut it short
    /// between an upstream write and its ledger write (as for issuance).
    async fn lifecycle_to_the_end(
        &self,
        ctx: &RequestContext,
        caller: &AllowedClient,
        command: &LifecycleCommand,
        attempt: Attempt,
    ) -> Result<LifecycleOutcome, LicensingError> {
        let licensing = self.clone();
        let ctx = ctx.clone();
        let caller = caller.clone();
        let command = command.clone();
        let task = tokio::spawn(
            async move {
                licensing
                    .lifecycle_attempt(&ctx, &caller, &command, attempt)
                    .await
            }
            .in_current_span(),
        );
        match task.await {
            Ok(result) => result,
            // Only a panic gets here; the record is left to its lease.
            Err(error) => Err(LicensingError::internal(error)),
        }
    }

    /// Runs one attempt that owns the request's record, and settles the record.
    async fn lifecycle_attempt(
        &self,
        ctx: &RequestContext,
        caller: &AllowedClient,
        command: &LifecycleCommand,
        attempt: Attempt,
    ) -> Result<LifecycleOutcome, LicensingError> {
        let (ledger, options) = self.issuance()?;
        let keeper = ledger.keep_alive(&attempt, options.lease);
        let result = self.apply_lifecycle(ctx, caller, command).await;
        keeper.stop().await;
        match result {
            Ok(outcome) => {
                let stored = StoredAnswer {
                    licenses: outcome.licenses,
                };
                let json = serde_json::to_string(&stored).map_err(LicensingError::internal)?;
                let first = stored
                    .licenses
                    .first()
                    .map(|update| update.license.id.clone())
                    .unwrap_or_default();
                if let Err(error) = ledger.complete(&attempt, &first, &json).await {
                    // Every license's history says what was done, so a retry finds it all
                    // done and answers the same.
                    tracing::error!(%error, "could not record the answer; a retry will");
                }
                tracing::info!(
                    licenses = stored.licenses.len(),
                    "lifecycle call carried out"
                );
                Ok(LifecycleOutcome {
                    licenses: stored.licenses,
                    replayed: outcome.replayed,
                })
            }
            Err(Step::Refused(error)) => {
                // Only the first attempt knows for sure that nothing was written for the key.
                let settled = if attempt.number() == 1 {
                    ledger.forget(&attempt).await
                } else {
                    ledger.release(&attempt).await
                };
                if let Err(ledger_error) = settled {
                    tracing::error!(error = %ledger_error, "could not give the ledger record back");
                }
                Err(error)
            }
            Err(Step::Permanent { detail }) => {
                if let Err(error) = ledger.reject(&attempt, REJECTED_REASON, &detail).await {
                    tracing::error!(%error, "could not record the rejection");
                }
                Err(LicensingError::IssuanceRejected { detail })
            }
            Err(Step::NotFinal(error)) => {
                if let Err(ledger_error) = ledger.release(&attempt).await {
                    tracing::error!(error = %ledger_error, "could not release the ledger record");
                }
                Err(error)
            }
            Err(Step::Unknown(error)) => {
                let settle = options.settle_after_unknown_outcome;
                if let Err(ledger_error) = ledger.release_after(&attempt, settle).await {
                    tracing::error!(error = %ledger_error, "could not release the ledger record");
                }
                Err(error)
            }
        }
    }

    /// Finds the licenses, checks them all, then changes them one after another.
    async fn apply_lifecycle(
        &self,
        ctx: &RequestContext,
        caller: &AllowedClient,
        command: &LifecycleCommand,
    ) -> Result<LifecycleOutcome, Step> {
        let pat = self.admin_token().map_err(Step::NotFinal)?;
        let targets = self.resolve_targets(ctx, pat, &command.target).await?;
        if targets.iter().any(|license| {
            !caller.may_issue(&CryptlexId::from_upstream(license.product_id.clone()))
        }) {
            return Err(Step::Refused(LicensingError::PermissionDenied(
                Denial::ProductNotAllowed,
            )));
        }
        // A renewal by interval needs an interval on every license; finding out before the
        // first write keeps a subscription from being renewed in part.
        if command.action == (LifecycleAction::Renew { expires_at: None })
            && let Some(license) = targets
                .iter()
                .find(|license| !license.revoked && license.subscription_interval.is_empty())
        {
            return Err(Step::Permanent {
                detail: format!(
                    "license {} has no subscription interval to renew by; renew it with expires_at",
                    license.id
                ),
            });
        }
        let mut licenses = Vec::with_capacity(targets.len());
        let mut all_done_before = true;
        for license in &targets {
            let (update, done_before) = self
                .apply_to_license(ctx, pat, caller, command, &license.id)
                .await?;
            all_done_before &= done_before;
            licenses.push(update);
        }
        Ok(LifecycleOutcome {
            licenses,
            replayed: all_done_before,
        })
    }

    /// Returns the licenses `target` addresses, with all their metadata, oldest first.
    async fn resolve_targets(
        &self,
        ctx: &RequestContext,
        pat: &AdminToken,
        target: &LicenseTarget,
    ) -> Result<Vec<IssuedLicense>, Step> {
        let not_found = || Step::Refused(LicensingError::NotFound(Missing::License));
        match target {
            LicenseTarget::License(id) => match self.cryptlex().get_license(ctx, pat, id).await {
                Ok(Some(found)) => Ok(vec![found.license]),
                Ok(None) => Err(not_found()),
                Err(error) => Err(Step::NotFinal(upstream(Credential::Pat, error))),
            },
            LicenseTarget::Subscription(subscription) => {
                let MetadataMatches { licenses, complete } = self
                    .cryptlex()
                    .find_licenses_by_metadata(
                        ctx,
                        pat,
                        SUBSCRIPTION_METADATA_KEY,
                        subscription.as_str(),
                        &[],
                    )
                    .await
                    .map_err(|error| Step::NotFinal(upstream(Credential::Pat, error)))?;
                if !complete {
                    // Changing only the licenses read so far would split the subscription.
                    return Err(Step::NotFinal(LicensingError::internal(format!(
                        "more than {} licenses carry this subscription reference; change them by license id",
                        licenses.len()
                    ))));
                }
                // Cryptlex may match the key and the value on different entries, and only
                // licenses this gateway issued carry its client key.
                let ours: Vec<IssuedLicense> = licenses
                    .into_iter()
                    .filter(|license| {
                        license
                            .metadata
                            .get(SUBSCRIPTION_METADATA_KEY)
                            .map(String::as_str)
                            == Some(subscription.as_str())
                            && license.metadata.contains_key(CLIENT_METADATA_KEY)
                    })
                    .collect();
                if ours.is_empty() {
                    return Err(not_found());
                }
                Ok(ours)
            }
        }
    }

    /// Applies the call to one license, unless an earlier attempt of this request did.
    /// Returns the license's update and whether an earlier attempt made it.
    async fn apply_to_license(
        &self,
        ctx: &RequestContext,
        pat: &AdminToken,
        caller: &AllowedClient,
        command: &LifecycleCommand,
        license_id: &str,
    ) -> Result<(LicenseUpdate, bool), Step> {
        let (ledger, options) = self.issuance().map_err(Step::NotFinal)?;
        let id = CryptlexId::from_upstream(license_id.to_owned());
        if let Some(entry) = ledger
            .history_entry(
                caller.identity.as_str(),
                command.request_id.as_str(),
                license_id,
            )
            .await?
            && is_final(entry.result)
        {
            let current = self.read_license(ctx, pat, &id).await?;
            return Ok((self.update_from(&entry, current), true));
        }

        let hold = self.hold_license(ctx, license_id).await?;
        let result = self.apply_held(ctx, pat, caller, command, &id, &hold).await;
        // After a write whose outcome is unknown the license stays held for the settling
        // period, so Cryptlex has finished before the next holder reads it back.
        let settle = match &result {
            Err(Step::Unknown(_)) => options.settle_after_unknown_outcome,
            _ => Duration::ZERO,
        };
        if let Err(error) = ledger.release_license(&hold, settle).await {
            tracing::error!(%error, license_id, "could not give the license back; its lease runs out");
        }
        result
    }

    /// Waits (within the caller's patience) until this attempt holds `license_id`.
    async fn hold_license(
        &self,
        ctx: &RequestContext,
        license_id: &str,
    ) -> Result<LicenseHold, Step> {
        let (ledger, options) = self.issuance().map_err(Step::NotFinal)?;
        let wait_until =
            tokio::time::Instant::now() + options.wait_for_in_flight.min(ctx.remaining());
        loop {
            match ledger.claim_license(license_id, options.lease).await? {
                LicenseClaim::Held(hold) => return Ok(hold),
                LicenseClaim::Busy { retry_after } => {
                    if tokio::time::Instant::now() + IN_FLIGHT_POLL >= wait_until {
                        return Err(Step::NotFinal(LicensingError::RequestInProgress {
                            retry_after,
                        }));
                    }
                    tokio::time::sleep(IN_FLIGHT_POLL).await;
                }
            }
        }
    }

    /// Reads the license, settles what earlier writers left pending, decides and writes:
    /// everything that happens while the license is held.
    async fn apply_held(
        &self,
        ctx: &RequestContext,
        pat: &AdminToken,
        caller: &AllowedClient,
        command: &LifecycleCommand,
        id: &CryptlexId,
        hold: &LicenseHold,
    ) -> Result<(LicenseUpdate, bool), Step> {
        let (ledger, _) = self.issuance().map_err(Step::NotFinal)?;
        let current = self.read_license(ctx, pat, id).await?;
        let mut order = hold.order.clone();
        for pending in ledger.pending_history(id.as_str()).await? {
            self.settle_pending(hold, &mut order, pending, &current)
                .await?;
        }

        let mut entry = match ledger
            .history_entry(
                caller.identity.as_str(),
                command.request_id.as_str(),
                id.as_str(),
            )
            .await?
        {
            // Settled just now by reading the license back: the earlier attempt did it.
            Some(entry) if is_final(entry.result) => {
                return Ok((self.update_from(&entry, current), true));
            }
            _ => HistoryEntry::new(
                caller.identity.as_str(),
                command.request_id.as_str(),
                id.as_str(),
                command.action.operation().as_str(),
                HistoryResult::Pending,
            ),
        };
        entry.result = HistoryResult::Pending;
        entry.detail = None;
        entry.subscription_id = match &command.target {
            LicenseTarget::Subscription(subscription) => Some(subscription.to_string()),
            LicenseTarget::License(_) => {
                let presented = current.license.metadata.get(SUBSCRIPTION_METADATA_KEY);
                presented.cloned()
            }
        };
        let revoked = order.revoked || current.license.revoked;

        // Decide: superseded, already so (no write needed), or write.
        let write = match &command.action {
            LifecycleAction::Suspend { event_time } | LifecycleAction::Resume { event_time } => {
                let suspend = matches!(command.action, LifecycleAction::Suspend { .. });
                entry.event_at = Some(*event_time);
                if revoked {
                    return self
                        .superseded(hold, entry, current, "the license is revoked")
                        .await;
                }
                if let Some(last) = &order.last_event
                    && *event_time <= last.at
                {
                    let why = format!(
                        "a later event ({} at {}) was applied",
                        if last.suspended { "suspend" } else { "resume" },
                        last.at.to_rfc3339()
                    );
                    return self.superseded(hold, entry, current, &why).await;
                }
                let event = AppliedEvent {
                    at: *event_time,
                    suspended: suspend,
                    caller: caller.identity.as_str().to_owned(),
                    request_id: command.request_id.as_str().to_owned(),
                };
                if current.license.suspended == suspend {
                    // Already so: the event is applied without a write.
                    ledger.record_event(hold, &event).await?;
                    entry.result = HistoryResult::Applied;
                    entry.detail = Some("already in that state".to_owned());
                    ledger.write_history(Some(hold), &entry).await?;
                    return Ok((self.update_from(&entry, current), false));
                }
                Write::Update {
                    suspended: Some(suspend),
                    revoked: None,
                    allowed_activations: None,
                    metadata: None,
                    event: Some(event),
                }
            }
            LifecycleAction::Revoke { reason, note } => {
                let revocation = match note {
                    Some(note) => format!("{}: {note}", reason.as_str()),
                    None => reason.as_str().to_owned(),
                };
                entry.revocation = Some(revocation.clone());
                if revoked {
                    if !order.revoked {
                        ledger.record_revoked(hold).await?;
                    }
                    return self
                        .superseded(hold, entry, current, "already revoked")
                        .await;
                }
                let mut metadata: Vec<MetadataEntry> = current
                    .metadata
                    .iter()
                    .filter(|existing| existing.key != REVOCATION_METADATA_KEY)
                    .cloned()
                    .collect();
                metadata.push(MetadataEntry {
                    key: REVOCATION_METADATA_KEY.to_owned(),
                    value: revocation,
                    view_permissions: Vec::new(),
                });
                Write::Update {
                    suspended: None,
                    revoked: Some(true),
                    allowed_activations: None,
                    metadata: Some(metadata),
                    event: None,
                }
            }
            LifecycleAction::SetSeats {
                allowed_activations,
            } => {
                entry.wanted_seats = Some(*allowed_activations);
                if revoked {
                    return self
                        .superseded(hold, entry, current, "the license is revoked")
                        .await;
                }
                if current.license.allowed_activations == *allowed_activations {
                    entry.result = HistoryResult::Applied;
                    entry.detail = Some("already so".to_owned());
                    ledger.write_history(Some(hold), &entry).await?;
                    return Ok((self.update_from(&entry, current), false));
                }
                Write::Update {
                    suspended: None,
                    revoked: None,
                    allowed_activations: Some(*allowed_activations),
                    metadata: None,
                    event: None,
                }
            }
            LifecycleAction::Renew { expires_at } => {
                entry.expires_before = current.license.expires_at;
                entry.wanted_expires_at = *expires_at;
                if revoked {
                    return self
                        .superseded(hold, entry, current, "the license is revoked")
                        .await;
                }
                match (expires_at, current.license.expires_at) {
                    // A renewal never shortens a license (a monthly period's end must not cut
                    // a yearly license short), and the same date again changes nothing.
                    (Some(at), Some(current_expiry))
                        if *at <= current_expiry + EXPIRY_TOLERANCE =>
                    {
                        entry.expires_after = Some(current_expiry);
                        return self
                            .superseded(
                                hold,
                                entry,
                                current,
                                "the license already expires then or later",
                            )
                            .await;
                    }
                    (Some(at), _) => Write::Expiry(*at),
                    (None, _) => Write::Renew,
                }
            }
        };

        // The row says what is about to happen before it does, so whoever holds the license
        // next can tell whether it did.
        ledger.write_history(Some(hold), &entry).await?;
        let written = match &write {
            Write::Update {
                suspended,
                revoked,
                allowed_activations,
                metadata,
                ..
            } => {
                let change = LicenseChange {
                    suspended: *suspended,
                    revoked: *revoked,
                    allowed_activations: *allowed_activations,
                    metadata: metadata.as_deref(),
                };
                self.cryptlex().update_license(ctx, pat, id, &change).await
            }
            Write::Expiry(at) => self.cryptlex().set_license_expiry(ctx, pat, id, *at).await,
            Write::Renew => self.cryptlex().renew_license(ctx, pat, id).await,
        };
        let updated = match written {
            Ok(updated) => updated,
            Err(error) => return Err(self.write_failed(hold, entry, id, error).await),
        };
        if let Write::Update {
            event: Some(event), ..
        } = &write
        {
            ledger.record_event(hold, event).await?;
        }
        if matches!(
            write,
            Write::Update {
                revoked: Some(true),
                ..
            }
        ) {
            ledger.record_revoked(hold).await?;
        }
        entry.result = HistoryResult::Applied;
        if matches!(command.action, LifecycleAction::Renew { .. }) {
            entry.expires_after = updated.license.expires_at;
        }
        ledger.write_history(Some(hold), &entry).await?;
        let holder = (!updated.license.user_id.is_empty())
            .then(|| CryptlexId::from_upstream(updated.license.user_id.clone()));
        self.apply_change_relayed(&super::changes::Change::License {
            license_id: id.clone(),
            user_id: holder,
        })
        .await;
        tracing::info!(license_id = %id, "license changed");
        Ok((self.update_from(&entry, updated), false))
    }

    /// Records an event that changes nothing, and answers it.
    async fn superseded(
        &self,
        hold: &LicenseHold,
        mut entry: HistoryEntry,
        current: AdminLicense,
        why: &str,
    ) -> Result<(LicenseUpdate, bool), Step> {
        let (ledger, _) = self.issuance().map_err(Step::NotFinal)?;
        entry.result = HistoryResult::Superseded;
        entry.detail = Some(why.to_owned());
        ledger.write_history(Some(hold), &entry).await?;
        tracing::info!(license_id = %entry.license_id, why, "superseded: nothing changed");
        Ok((self.update_from(&entry, current), false))
    }

    /// Settles the history row of a write that failed, and says how the attempt ends.
    async fn write_failed(
        &self,
        hold: &LicenseHold,
        mut entry: HistoryEntry,
        id: &CryptlexId,
        error: CryptlexError,
    ) -> Step {
        let Ok((ledger, _)) = self.issuance() else {
            return Step::NotFinal(LicensingError::internal("issuance is not configured"));
        };
        let (result, step) = match error {
            CryptlexError::Rejected {
                status,
                kind: kind @ (Rejection::Invalid | Rejection::NotFound | Rejection::Conflict),
                code,
                ..
            } => {
                // Only a documented code (a fixed string of ours) goes into the caller's
                // message, never the text of the answer.
                let detail = format!(
                    "cryptlex refused to change license {id} (http {status}{}{})",
                    code.map(|code| format!(", {}", code.as_str()))
                        .unwrap_or_default(),
                    match kind {
                        Rejection::Conflict =>
                            "; a renewal by interval needs a license with an interval and an expiry",
                        _ => "",
                    }
                );
                (HistoryResult::Rejected, Step::Permanent { detail })
            }
            error if error.outcome_unknown() => {
                tracing::warn!(%error, license_id = %id, "license change outcome unknown; the next holder reads it back");
                // The row stays pending: whoever holds the license next settles it.
                return Step::Unknown(upstream(Credential::Pat, error));
            }
            error => (
                HistoryResult::NotApplied,
                Step::NotFinal(upstream(Credential::Pat, error)),
            ),
        };
        entry.result = result;
        if let Step::Permanent { detail } = &step {
            entry.detail = Some(detail.clone());
        }
        if let Err(ledger_error) = ledger.write_history(Some(hold), &entry).await {
            tracing::error!(error = %ledger_error, "could not record the failed change; the next holder reads it back");
        }
        step
    }

    /// Settles a history row an earlier writer left pending, from the license as read now.
    async fn settle_pending(
        &self,
        hold: &LicenseHold,
        order: &mut EventOrder,
        mut pending: HistoryEntry,
        current: &AdminLicense,
    ) -> Result<(), Step> {
        let (ledger, _) = self.issuance().map_err(Step::NotFinal)?;
        let license = &current.license;
        let operation = Operation::parse(&pending.operation);
        let happened = match operation {
            Some(Operation::SuspendLicense) => license.suspended,
            Some(Operation::ResumeLicense) => !license.suspended,
            Some(Operation::RevokeLicense) => license.revoked,
            Some(Operation::SetSeats) => pending.wanted_seats == Some(license.allowed_activations),
            Some(Operation::RenewLicense) => match pending.wanted_expires_at {
                Some(wanted) => same_expiry(license.expires_at, wanted),
                // An expiry later than the one recorded before means the renewal happened.
                // The record keeps milliseconds, so "later" means by more than the tolerance
                // (a renewal adds a whole interval): an unrenewed expiry with more precision
                // than the record must not look renewed.
                None => match (license.expires_at, pending.expires_before) {
                    (Some(now), Some(before)) => now > before + EXPIRY_TOLERANCE,
                    (Some(_), None) => true,
                    (None, _) => false,
                },
            },
            Some(Operation::IssueLicense | Operation::CreatePasswordResetToken) | None => {
                tracing::error!(operation = %pending.operation, "a pending history row of an operation that writes none");
                false
            }
        };
        if happened {
            pending.result = HistoryResult::Applied;
            if operation == Some(Operation::RenewLicense) {
                pending.expires_after = license.expires_at;
            }
            if let (Some(Operation::SuspendLicense | Operation::ResumeLicense), Some(at)) =
                (operation, pending.event_at)
            {
                let event = AppliedEvent {
                    at,
                    suspended: operation == Some(Operation::SuspendLicense),
                    caller: pending.caller.clone(),
                    request_id: pending.request_id.clone(),
                };
                if ledger.record_event(hold, &event).await? {
                    order.last_event = Some(event);
                }
            }
            if operation == Some(Operation::RevokeLicense) {
                ledger.record_revoked(hold).await?;
                order.revoked = true;
            }
        } else {
            pending.result = HistoryResult::NotApplied;
        }
        pending.detail = Some("settled by reading the license back".to_owned());
        tracing::warn!(
            license_id = %pending.license_id,
            operation = %pending.operation,
            result = %pending.result,
            "settled a change an earlier attempt left unknown"
        );
        ledger.write_history(Some(hold), &pending).await?;
        Ok(())
    }

    /// Reads one license with all its metadata.
    async fn read_license(
        &self,
        ctx: &RequestContext,
        pat: &AdminToken,
        id: &CryptlexId,
    ) -> Result<AdminLicense, Step> {
        match self.cryptlex().get_license(ctx, pat, id).await {
            Ok(Some(license)) => Ok(license),
            Ok(None) => Err(Step::NotFinal(LicensingError::NotFound(Missing::License))),
            Err(error) => Err(Step::NotFinal(upstream(Credential::Pat, error))),
        }
    }

    /// Returns the answer for one license from its history row and the license as read.
    fn update_from(&self, entry: &HistoryEntry, current: AdminLicense) -> LicenseUpdate {
        let license = match self.issuance() {
            Ok((_, options)) => options.present(current.license),
            Err(_) => current.license,
        };
        LicenseUpdate {
            license,
            previous_expires_at: if entry.operation == Operation::RenewLicense.as_str() {
                entry.expires_before
            } else {
                None
            },
            superseded: entry.result == HistoryResult::Superseded,
        }
    }
}

/// The upstream write a lifecycle call makes to one license.
#[derive(Debug)]
enum Write {
    /// `PATCH /v3/licenses/{id}`, and the event it applies, if any.
    Update {
        suspended: Option<bool>,
        revoked: Option<bool>,
        allowed_activations: Option<i32>,
        metadata: Option<Vec<MetadataEntry>>,
        event: Option<AppliedEvent>,
    },
    /// `PATCH /v3/licenses/{id}/expires-at`.
    Expiry(DateTime<Utc>),
    /// `POST /v3/licenses/{id}/renew`.
    Renew,
}

/// Whether a history result means the call is done with the license.
fn is_final(result: HistoryResult) -> bool {
    matches!(result, HistoryResult::Applied | HistoryResult::Superseded)
}

/// Whether the license's expiry is the one asked for, at Cryptlex's precision.
fn same_expiry(current: Option<DateTime<Utc>>, wanted: DateTime<Utc>) -> bool {
    current.is_some_and(|current| (current - wanted).abs() < EXPIRY_TOLERANCE)
}

/// A stable digest of the operation and everything that defines the call, so a request id
/// reused for another call (or another operation) is detected.
fn fingerprint(command: &LifecycleCommand) -> String {
    let target = match &command.target {
        LicenseTarget::License(id) => serde_json::json!({ "license": id.as_str() }),
        LicenseTarget::Subscription(id) => serde_json::json!({ "subscription": id.as_str() }),
    };
    let action = match &command.action {
        LifecycleAction::Renew { expires_at } => serde_json::json!({
            "expires_at": expires_at.map(|at| at.timestamp_millis()),
        }),
        LifecycleAction::Suspend { event_time } | LifecycleAction::Resume { event_time } => {
            serde_json::json!({ "event_time": event_time.timestamp_millis() })
        }
        LifecycleAction::Revoke { reason, note } => serde_json::json!({
            "reason": reason.as_str(),
            "note": note,
        }),
        LifecycleAction::SetSeats {
            allowed_activations,
        } => serde_json::json!({ "allowed_activations": allowed_activations }),
    };
    let canonical = serde_json::json!({
        "v": 2,
        "op": command.action.operation().as_str(),
        "target": target,
        "action": action,
    });
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(action: LifecycleAction) -> LifecycleCommand {
        LifecycleCommand {
            request_id: RequestId::parse("request_id", "evt_1").expect("id"),
            target: LicenseTarget::Subscription(
                SubscriptionId::parse("subscription_id", "sub_1").expect("id"),
            ),
            action,
        }
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 0).expect("a time")
    }

    #[test]
    fn fingerprints_differ_by_operation_target_and_every_field() {
        let suspend = fingerprint(&command(LifecycleAction::Suspend { event_time: at(10) }));
        let resume = fingerprint(&command(LifecycleAction::Resume { event_time: at(10) }));
        let later = fingerprint(&command(LifecycleAction::Suspend { event_time: at(11) }));
        assert_ne!(suspend, resume, "the operation is part of it");
        assert_ne!(suspend, later);
        let mut by_license = command(LifecycleAction::Suspend { event_time: at(10) });
        by_license.target =
            LicenseTarget::License(CryptlexId::parse("license_id", "sub_1").expect("id"));
        assert_ne!(suspend, fingerprint(&by_license));
        let refund = fingerprint(&command(LifecycleAction::Revoke {
            reason: RevocationReason::Refund,
            note: None,
        }));
        let noted = fingerprint(&command(LifecycleAction::Revoke {
            reason: RevocationReason::Refund,
            note: Some("re_1".into()),
        }));
        assert_ne!(refund, noted);
        assert_eq!(
            suspend,
            fingerprint(&command(LifecycleAction::Suspend { event_time: at(10) })),
            "stable"
        );
    }

    #[test]
    fn an_expiry_within_a_second_is_the_one_asked_for() {
        let wanted = at(1_000);
        assert!(same_expiry(
            Some(wanted + chrono::TimeDelta::milliseconds(400)),
            wanted
        ));
        assert!(!same_expiry(Some(at(1_002)), wanted));
        assert!(!same_expiry(None, wanted));
    }

    #[test]
    fn an_answer_is_superseded_only_when_every_license_is() {
        let license = IssuedLicense {
            id: "l".into(),
            key: "K".into(),
            product_id: "p".into(),
            user_id: "u".into(),
            license_type: "node-locked".into(),
            expires_at: None,
            allowed_activations: 1,
            subscription_interval: String::new(),
            created_at: None,
            metadata: Default::default(),
            subscription_id: "sub_1".into(),
            revoked: false,
            suspended: false,
        };
        let update = |superseded| LicenseUpdate {
            license: license.clone(),
            previous_expires_at: None,
            superseded,
        };
        let outcome = |updates: Vec<LicenseUpdate>| LifecycleOutcome {
            licenses: updates,
            replayed: false,
        };
        assert!(outcome(vec![update(true), update(true)]).superseded());
        assert!(!outcome(vec![update(true), update(false)]).superseded());
        assert!(!outcome(Vec::new()).superseded());
    }
}

//! `IssueLicense`: exactly one license per (caller, request id), or per unit of a request for
//! several licenses.
//!
//! The ledger records the request before Cryptlex is called and the outcome
//! after. A retry of a finished request replays the stored outcome without
//! an upstream call; a concurrent duplicate waits briefly for the first
//! attempt or is told to retry; an attempt whose outcome is unknown (timeout,
//! lost reply, crash) is reconciled by the next one, which first looks the
//! license up by the request id stored in its Cryptlex metadata and only then
//! creates. `POST /v3/licenses` is never repeated blindly. An attempt runs on a
//! task of its own, so a caller that goes away mid-create does not leave its
//! request id held until the lease runs out.
//!
//! Three things keep a retry from reconciling too early, which would find no
//! license and create a second one: the lease outlasts the longest attempt
//! (the configuration checks it), the attempt renews its lease while it works,
//! and after an unknown outcome the record stays held for
//! `settle_after_unknown_outcome`, time for Cryptlex to finish a create it is
//! still working on and for its metadata search to show the new license.
//!
//! # Quantity
//!
//! A `quantity` of N makes one license with N allowed activations for the products listed in
//! `issuance.quantity_as_activations`, and N licenses for every other product. Each of the N
//! licenses is a *unit* with a ledger record of its own under the sub-key `<request_id>#<k>`,
//! which is also the request id in its Cryptlex metadata; the request's own record (under the
//! plain id) holds the whole answer and serialises retries. A retry after a partial failure
//! finds the finished units in the ledger and reconciles or creates only the missing ones.
//! A request for one license (quantity 0 or 1) has no units: its record and its license carry
//! the plain request id, exactly as before quantities existed, so older records replay.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::Instrument as _;

use super::{Credential, Denial, Licensing, LicensingError, Missing, upstream};
use crate::cryptlex::{CryptlexError, MetadataMatches, NewLicense, Rejection};
use crate::domain::{
    AllowList, AllowedClient, ClientIdentity, CryptlexId, Email, FieldViolation, IssuedLicense,
    MetadataMap, Operation, RequestContext, RequestId, SubscriptionId, ValidationErrors,
};
use crate::ledger::{Attempt, Begin, HistoryEntry, HistoryResult, ISSUE_LICENSE, Outcome};

/// Metadata key naming the client identity that issued a license. Together
/// with the request-id key it makes a license findable per caller, since two
/// callers may use the same request id.
pub const CLIENT_METADATA_KEY: &str = "licensing_gateway_client";

/// Metadata key holding the subscription (or order) reference a license was issued with; the
/// lifecycle calls find a subscription's licenses by it.
pub const SUBSCRIPTION_METADATA_KEY: &str = "licensing_gateway_subscription";

/// Metadata key a revocation writes: `<reason>` or `<reason>: <note>`.
pub const REVOCATION_METADATA_KEY: &str = "licensing_gateway_revocation";

/// The most units one `IssueLicense` may ask for.
pub const MAX_QUANTITY: u32 = 100;

/// The reason stored in the ledger for a permanent rejection (the ledger
/// keeps a reason column for the operator's view).
pub(super) const REJECTED_REASON: &str = "UPSTREAM_REJECTED";

/// How often a concurrent duplicate re-reads the ledger while it waits.
pub(super) const IN_FLIGHT_POLL: Duration = Duration::from_millis(50);

/// Who the license is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LicenseHolder {
    Id(CryptlexId),
    Email(Email),
}

/// A parsed `IssueLicense` request.
#[derive(Debug, Clone)]
pub struct IssueCommand {
    pub request_id: RequestId,
    pub user: LicenseHolder,
    pub product_id: Option<CryptlexId>,
    pub license_template_id: Option<CryptlexId>,
    pub metadata: MetadataMap,
    /// The payment provider's subscription or order reference, stored in admin-only metadata.
    pub subscription_id: Option<SubscriptionId>,
    /// How many units were bought: 1 to [`MAX_QUANTITY`].
    pub quantity: u32,
}

/// The answer to `IssueLicense`.
#[derive(Debug, Clone)]
pub struct Issued {
    /// Every license of the request, in unit order (one unless the quantity made several).
    pub licenses: Vec<IssuedLicense>,
    /// The outcome was stored by an earlier attempt.
    pub replayed: bool,
}

/// Issuance settings.
#[derive(Debug, Clone)]
pub struct IssuanceOptions {
    pub default_product_id: Option<CryptlexId>,
    pub request_id_metadata_key: String,
    /// How long an attempt owns a request before another may take over.
    pub lease: Duration,
    /// How long a concurrent duplicate waits for the first attempt.
    pub wait_for_in_flight: Duration,
    /// How long a request id stays held after a create whose outcome is unknown, before a
    /// retry may reconcile it.
    pub settle_after_unknown_outcome: Duration,
    /// The internal callers that may issue, and for which products.
    pub allow_list: AllowList,
    /// Products whose quantity becomes one license's allowed activations instead of that
    /// many licenses.
    pub quantity_as_activations: Vec<CryptlexId>,
}

impl IssuanceOptions {
    /// Metadata keys the gateway owns: callers may not set them, and they are
    /// left out of returned licenses.
    pub fn reserved_keys(&self) -> [&str; 4] {
        [
            self.request_id_metadata_key.as_str(),
            CLIENT_METADATA_KEY,
            SUBSCRIPTION_METADATA_KEY,
            REVOCATION_METADATA_KEY,
        ]
    }

    /// Turns a license read with all its metadata into what callers see: the subscription
    /// reference in its own field, the gateway's keys gone.
    pub(super) fn present(&self, mut license: IssuedLicense) -> IssuedLicense {
        if let Some(subscription) = license.metadata.get(SUBSCRIPTION_METADATA_KEY) {
            license.subscription_id = subscription.clone();
        }
        let hidden = self.reserved_keys();
        license
            .metadata
            .retain(|key, _| !hidden.contains(&key.as_str()));
        license
    }

    /// Refuses caller metadata that uses one of the gateway's own keys.
    fn check_reserved_keys(&self, metadata: &MetadataMap) -> Result<(), ValidationErrors> {
        let reserved = self.reserved_keys();
        let mut errors = ValidationErrors::new();
        for key in metadata.entries().keys() {
            if reserved
                .iter()
                .any(|reserved_key| reserved_key.eq_ignore_ascii_case(key))
            {
                errors.push(FieldViolation::new(
                    format!("metadata[{key}]"),
                    "is reserved by the gateway",
                ));
            }
        }
        errors.into_result()
    }
}

/// Where an attempt that owns its ledger record starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Start {
    /// A new record: nothing was sent for this request id yet.
    Fresh,
    /// A record an earlier attempt left pending: its create may have
    /// happened, so look the license up before creating.
    Resume,
}

/// One license to issue under one ledger key: the whole request when it makes one license,
/// or one unit of it.
#[derive(Debug, Clone)]
struct Unit {
    /// The ledger key and the request id in the license's metadata.
    request_id: RequestId,
    fingerprint: String,
    user: LicenseHolder,
    product_id: CryptlexId,
    license_template_id: Option<CryptlexId>,
    metadata: MetadataMap,
    subscription_id: Option<SubscriptionId>,
    /// Set when a quantity became activations.
    allowed_activations: Option<i32>,
}

/// What the ledger stores for a finished `IssueLicense`: one license (as before quantities
/// existed) or the list of a request's units.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum StoredIssue {
    One(IssuedLicense),
    Units { licenses: Vec<IssuedLicense> },
}

impl StoredIssue {
    fn into_licenses(self) -> Vec<IssuedLicense> {
        match self {
            Self::One(license) => vec![license],
            Self::Units { licenses } => licenses,
        }
    }
}

impl Licensing {
    /// Returns the allow-list entry of the internal caller whose verified
    /// certificate names `presented`. Called before anything else about the
    /// request is looked at.
    pub fn authorize_client(
        &self,
        presented: &[ClientIdentity],
    ) -> Result<AllowedClient, LicensingError> {
        let (_, options) = self.issuance()?;
        match options.allow_list.find(presented) {
            Some(client) => Ok(client.clone()),
            None => {
                tracing::warn!(identities = ?presented, "client certificate not on the allow-list");
                Err(LicensingError::PermissionDenied(Denial::ClientNotAllowed))
            }
        }
    }

    /// Issues (or replays) the license, or licenses, for `command` on behalf of `caller`.
    #[tracing::instrument(name = "licensing.issue_license", skip_all, fields(client = %caller.identity, issuance_request_id = %command.request_id))]
    pub async fn issue_license(
        &self,
        ctx: &RequestContext,
        caller: &AllowedClient,
        command: IssueCommand,
    ) -> Result<Issued, LicensingError> {
        if !caller.may_call(Operation::IssueLicense) {
            return Err(LicensingError::PermissionDenied(
                Denial::OperationNotAllowed,
            ));
        }
        let (_, options) = self.issuance()?;
        options.check_reserved_keys(&command.metadata)?;
        let product_id = match command
            .product_id
            .clone()
            .or_else(|| options.default_product_id.clone())
        {
            Some(product_id) => product_id,
            None => {
                return Err(crate::domain::FieldViolation::new(
                    "product_id",
                    "is required: this gateway has no default product",
                )
                .into());
            }
        };
        if !caller.may_issue(&product_id) {
            return Err(LicensingError::PermissionDenied(Denial::ProductNotAllowed));
        }
        let fingerprint = fingerprint(&command, &product_id);
        let as_activations = options.quantity_as_activations.contains(&product_id);
        if command.quantity <= 1 || as_activations {
            let unit = Unit {
                request_id: command.request_id.clone(),
                fingerprint,
                user: command.user,
                product_id,
                license_template_id: command.license_template_id,
                metadata: command.metadata,
                subscription_id: command.subscription_id,
                allowed_activations: (command.quantity > 1)
                    .then(|| i32::try_from(command.quantity).unwrap_or(i32::MAX)),
            };
            let (license, replayed) = self.issue_unit(ctx, caller, &unit).await?;
            return Ok(Issued {
                licenses: vec![license],
                replayed,
            });
        }
        let units: Vec<Unit> = (1..=command.quantity)
            .map(|number| Unit {
                request_id: command.request_id.unit(number),
                fingerprint: unit_fingerprint(&fingerprint, number, command.quantity),
                user: command.user.clone(),
                product_id: product_id.clone(),
                license_template_id: command.license_template_id.clone(),
                metadata: command.metadata.clone(),
                subscription_id: command.subscription_id.clone(),
                allowed_activations: None,
            })
            .collect();
        self.issue_units(ctx, caller, &command.request_id, &fingerprint, units)
            .await
    }

    /// Issues every unit of a request for several licenses, under the request's own record,
    /// which holds the whole answer once every unit is issued.
    async fn issue_units(
        &self,
        ctx: &RequestContext,
        caller: &AllowedClient,
        request_id: &RequestId,
        fingerprint: &str,
        units: Vec<Unit>,
    ) -> Result<Issued, LicensingError> {
        let (ledger, options) = self.issuance()?;
        let wait_until =
            tokio::time::Instant::now() + options.wait_for_in_flight.min(ctx.remaining());
        let attempt = loop {
            let begin = ledger
                .begin(
                    caller.identity.as_str(),
                    request_id.as_str(),
                    fingerprint,
                    options.lease,
                )
                .await
                .map_err(LicensingError::internal)?;
            match begin {
                Begin::Replay(Outcome::Issued { license_json, .. }) => {
                    let stored: StoredIssue =
                        serde_json::from_str(&license_json).map_err(LicensingError::internal)?;
                    tracing::info!("replayed stored licenses");
                    return Ok(Issued {
                        licenses: stored.into_licenses(),
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
                Begin::Fresh(attempt) | Begin::Resume(attempt) => break attempt,
            }
        };

        // The units run in turn, each exactly once through its own record; the request's
        // record is kept alive meanwhile, so a duplicate waits instead of racing them.
        let keeper = ledger.keep_alive(&attempt, options.lease);
        let mut licenses = Vec::with_capacity(units.len());
        let mut all_replayed = true;
        let mut failure = None;
        for unit in &units {
            match self.issue_unit(ctx, caller, unit).await {
                Ok((license, replayed)) => {
                    all_replayed &= replayed;
                    licenses.push(license);
                }
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        keeper.stop().await;
        if let Some(error) = failure {
            let settled = match &error {
                // A unit Cryptlex refused for good: so is the request (units issued before it
                // stay issued, and show in the ledger under their sub-keys).
                LicensingError::IssuanceRejected { detail } => {
                    ledger.reject(&attempt, REJECTED_REASON, detail).await
                }
                // Each unit guards itself (its record settles on its own), so the request's
                // record can be taken over at once.
                _ => ledger.release(&attempt).await,
            };
            if let Err(ledger_error) = settled {
                tracing::error!(error = %ledger_error, "could not settle the request's ledger record");
            }
            return Err(error);
        }
        let stored = StoredIssue::Units { licenses };
        let json = serde_json::to_string(&stored).map_err(LicensingError::internal)?;
        let licenses = stored.into_licenses();
        if let Some(first) = licenses.first()
            && let Err(error) = ledger.complete(&attempt, &first.id, &json).await
        {
            // Every unit is recorded on its own, so a retry completes this record.
            tracing::error!(%error, "could not record the request's licenses; a retry will");
        }
        tracing::info!(units = licenses.len(), "licenses issued");
        Ok(Issued {
            licenses,
            replayed: all_replayed,
        })
    }

    /// Issues (or replays) one license under one ledger key.
    async fn issue_unit(
        &self,
        ctx: &RequestContext,
        caller: &AllowedClient,
        unit: &Unit,
    ) -> Result<(IssuedLicense, bool), LicensingError> {
        let (ledger, options) = self.issuance()?;
        let wait_until =
            tokio::time::Instant::now() + options.wait_for_in_flight.min(ctx.remaining());

        loop {
            let begin = ledger
                .begin(
                    caller.identity.as_str(),
                    unit.request_id.as_str(),
                    &unit.fingerprint,
                    options.lease,
                )
                .await
                .map_err(LicensingError::internal)?;
            match begin {
                Begin::Replay(Outcome::Issued { license_json, .. }) => {
                    let stored: StoredIssue =
                        serde_json::from_str(&license_json).map_err(LicensingError::internal)?;
                    let Some(license) = stored.into_licenses().into_iter().next() else {
                        return Err(LicensingError::internal(
                            "a stored issuance without a license",
                        ));
                    };
                    tracing::info!("replayed stored license");
                    return Ok((license, true));
                }
                Begin::Replay(Outcome::Rejected { message, .. }) => {
                    return Err(LicensingError::IssuanceRejected { detail: message });
                }
                Begin::Conflict => return Err(LicensingError::RequestIdReused),
                Begin::InProgress { retry_after } => {
                    let now = tokio::time::Instant::now();
                    if now + IN_FLIGHT_POLL >= wait_until {
                        return Err(LicensingError::RequestInProgress { retry_after });
                    }
                    tokio::time::sleep(IN_FLIGHT_POLL).await;
                }
                Begin::Fresh(attempt) => {
                    return self
                        .attempt_to_the_end(ctx, caller, unit, attempt, Start::Fresh)
                        .await;
                }
                Begin::Resume(attempt) => {
                    return self
                        .attempt_to_the_end(ctx, caller, unit, attempt, Start::Resume)
                        .await;
                }
            }
        }
    }

    /// Runs [`attempt`](Self::attempt) on a task of its own, so a caller that goes away
    /// (its stream reset, so this future is dropped) cannot cut the attempt short between the
    /// create and the ledger write. The attempt still settles its record, bounded by the
    /// call's deadline, and the caller's retry is answered at once instead of waiting out the
    /// lease and reconciling.
    async fn attempt_to_the_end(
        &self,
        ctx: &RequestContext,
        caller: &AllowedClient,
        unit: &Unit,
        attempt: Attempt,
        start: Start,
    ) -> Result<(IssuedLicense, bool), LicensingError> {
        let licensing = self.clone();
        let ctx = ctx.clone();
        let caller = caller.clone();
        let unit = unit.clone();
        let task = tokio::spawn(
            async move {
                licensing
                    .attempt(&ctx, &caller, &unit, attempt, start)
                    .await
            }
            .in_current_span(),
        );
        match task.await {
            Ok(result) => result,
            // Only a panic in the attempt gets here; its record is left to the lease.
            Err(error) => Err(LicensingError::internal(error)),
        }
    }

    /// Runs one attempt that owns the ledger record: reconcile if needed,
    /// then create, then record the outcome. The lease is renewed for as long
    /// as the upstream work runs, and no longer: the keeper is stopped before
    /// the record is settled, on every path.
    async fn attempt(
        &self,
        ctx: &RequestContext,
        caller: &AllowedClient,
        unit: &Unit,
        attempt: Attempt,
        start: Start,
    ) -> Result<(IssuedLicense, bool), LicensingError> {
        let (ledger, options) = self.issuance()?;
        let keeper = ledger.keep_alive(&attempt, options.lease);
        let result = self.reconcile_or_create(ctx, caller, unit, start).await;
        keeper.stop().await;
        match result {
            Ok((license, replayed)) => {
                let json = serde_json::to_string(&license).map_err(LicensingError::internal)?;
                if let Err(error) = ledger.complete(&attempt, &license.id, &json).await {
                    // The license exists and carries the request id, so the
                    // next attempt reconciles it; the caller still gets it now.
                    tracing::error!(%error, license_id = %license.id, "could not record the issued license; a retry will reconcile it");
                }
                // The license's history starts with its issuance.
                let mut entry = HistoryEntry::new(
                    caller.identity.as_str(),
                    unit.request_id.as_str(),
                    &license.id,
                    ISSUE_LICENSE,
                    HistoryResult::Applied,
                );
                entry.subscription_id = unit.subscription_id.as_ref().map(|id| id.to_string());
                entry.expires_after = license.expires_at;
                if let Err(error) = ledger.write_history(None, &entry).await {
                    tracing::warn!(%error, license_id = %license.id, "could not record the license's history");
                }
                // The holder's next license list must show it, on every
                // replica: answered once the others have been told.
                let holder = (!license.user_id.is_empty())
                    .then(|| CryptlexId::from_upstream(license.user_id.clone()));
                self.apply_change_relayed(&super::changes::Change::License {
                    license_id: CryptlexId::from_upstream(license.id.clone()),
                    user_id: holder,
                })
                .await;
                tracing::info!(license_id = %license.id, replayed, "license issued");
                Ok((license, replayed))
            }
            Err(AttemptError::Permanent { detail }) => {
                if let Err(error) = ledger.reject(&attempt, REJECTED_REASON, &detail).await {
                    tracing::error!(%error, "could not record the rejection");
                }
                Err(LicensingError::IssuanceRejected { detail })
            }
            Err(AttemptError::NotFinal(error)) => {
                // Nothing was created: leave the record pending and let the
                // next attempt take over (and reconcile) at once.
                if let Err(ledger_error) = ledger.release(&attempt).await {
                    tracing::error!(error = %ledger_error, "could not release the ledger record");
                }
                Err(error)
            }
            Err(AttemptError::Unknown(error)) => {
                // The create may have happened, or may still be happening:
                // hold the record for the settling period before anyone
                // looks the license up.
                let settle = options.settle_after_unknown_outcome;
                if let Err(ledger_error) = ledger.release_after(&attempt, settle).await {
                    tracing::error!(error = %ledger_error, "could not release the ledger record");
                }
                Err(error)
            }
        }
    }

    async fn reconcile_or_create(
        &self,
        ctx: &RequestContext,
        caller: &AllowedClient,
        unit: &Unit,
        start: Start,
    ) -> Result<(IssuedLicense, bool), AttemptError> {
        let (_, options) = self.issuance().map_err(AttemptError::NotFinal)?;
        let pat = self.admin_token().map_err(AttemptError::NotFinal)?;
        let hidden = options.reserved_keys();
        let request_id = unit.request_id.as_str();
        // Resolved first, because reconciling checks the license is this user's.
        let user_id = self.resolve_user(ctx, pat, &unit.user).await?;

        if start == Start::Resume {
            let wanted = Wanted {
                client: caller.identity.as_str(),
                request_id,
                user_id: Some(&user_id),
                product_id: Some(&unit.product_id),
            };
            let found = self
                .find_issued(ctx, pat, options, &wanted)
                .await
                .map_err(AttemptError::NotFinal)?;
            if let Some(license) = found {
                tracing::warn!(license_id = %license.id, "reconciled a license created by an earlier attempt");
                return Ok((license, true));
            }
        }

        let mut metadata: Vec<(&str, &str)> = unit
            .metadata
            .entries()
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect();
        metadata.push((options.request_id_metadata_key.as_str(), request_id));
        metadata.push((CLIENT_METADATA_KEY, caller.identity.as_str()));
        if let Some(subscription) = &unit.subscription_id {
            metadata.push((SUBSCRIPTION_METADATA_KEY, subscription.as_str()));
        }
        let new_license = NewLicense {
            product_id: &unit.product_id,
            user_id: &user_id,
            license_template_id: unit.license_template_id.as_ref(),
            allowed_activations: unit.allowed_activations,
            metadata,
            hidden_keys: &hidden,
        };
        match self.cryptlex().create_license(ctx, pat, &new_license).await {
            Ok(mut license) => {
                if let Some(subscription) = &unit.subscription_id {
                    license.subscription_id = subscription.to_string();
                }
                Ok((license, false))
            }
            Err(CryptlexError::Rejected {
                status,
                kind: Rejection::Invalid | Rejection::NotFound | Rejection::Conflict,
                code,
                ..
            }) => Err(AttemptError::Permanent {
                // Only a documented code (a fixed string of ours) goes into
                // the caller's message, never the text of the answer.
                detail: format!(
                    "cryptlex rejected the license (http {status}{}); check product_id, license_template_id and user",
                    code.map(|code| format!(", {}", code.as_str()))
                        .unwrap_or_default()
                ),
            }),
            Err(error) if error.outcome_unknown() => {
                tracing::warn!(%error, "license creation outcome unknown; a retry reconciles after the settling period");
                Err(AttemptError::Unknown(upstream(Credential::Pat, error)))
            }
            Err(error) => Err(AttemptError::NotFinal(upstream(Credential::Pat, error))),
        }
    }

    async fn resolve_user(
        &self,
        ctx: &RequestContext,
        pat: &crate::domain::AdminToken,
        user: &LicenseHolder,
    ) -> Result<CryptlexId, AttemptError> {
        let found = match user {
            LicenseHolder::Id(id) => self.cryptlex().get_user(ctx, pat, id).await,
            LicenseHolder::Email(email) => {
                self.cryptlex().find_user_by_email(ctx, pat, email).await
            }
        };
        match found {
            Ok(Some(user)) => Ok(user.id),
            Ok(None) => Err(AttemptError::NotFinal(LicensingError::NotFound(
                Missing::User,
            ))),
            Err(error) => Err(AttemptError::NotFinal(upstream(Credential::Pat, error))),
        }
    }

    /// Reconciles pending ledger records whose attempt is over (crashed,
    /// timed out, or lost its reply): completes each one whose license exists
    /// in Cryptlex, and leaves the others pending for the client's retry.
    pub async fn reconcile_pending(
        &self,
        ctx: &RequestContext,
        limit: u32,
    ) -> Result<Vec<Reconciled>, LicensingError> {
        let (ledger, options) = self.issuance()?;
        let pat = self.admin_token()?;
        let internal = |error: crate::ledger::LedgerError| LicensingError::internal(error);
        let pending = ledger
            .list(Some(crate::ledger::State::Pending), limit)
            .await
            .map_err(internal)?;
        let mut results = Vec::with_capacity(pending.len());
        for record in pending {
            if record.operation != ISSUE_LICENSE {
                // A lifecycle call: its retry settles it, license by license, through the
                // per-license history, which needs the request itself.
                results.push(Reconciled::new(&record, ReconcileOutcome::LeftForRetry));
                continue;
            }
            let begin = ledger
                .begin(
                    &record.client,
                    &record.request_id,
                    &record.fingerprint,
                    options.lease,
                )
                .await
                .map_err(internal)?;
            let attempt = match begin {
                Begin::Resume(attempt) | Begin::Fresh(attempt) => attempt,
                Begin::InProgress { .. } => {
                    results.push(Reconciled::new(&record, ReconcileOutcome::InProgress));
                    continue;
                }
                Begin::Replay(_) | Begin::Conflict => {
                    results.push(Reconciled::new(&record, ReconcileOutcome::AlreadyFinished));
                    continue;
                }
            };
            // The record keeps no user or product (only their fingerprint), so the license
            // is matched on the request id and the client alone.
            let wanted = Wanted {
                client: &record.client,
                request_id: &record.request_id,
                user_id: None,
                product_id: None,
            };
            let keeper = ledger.keep_alive(&attempt, options.lease);
            let found = self.find_issued(ctx, pat, options, &wanted).await;
            keeper.stop().await;
            let mine = match found {
                Ok(found) => found,
                Err(error) => {
                    let _ = ledger.release(&attempt).await;
                    return Err(error);
                }
            };
            match mine {
                Some(license) => {
                    let json = serde_json::to_string(&license).map_err(LicensingError::internal)?;
                    ledger
                        .complete(&attempt, &license.id, &json)
                        .await
                        .map_err(internal)?;
                    results.push(Reconciled::new(
                        &record,
                        ReconcileOutcome::Completed {
                            license_id: license.id,
                        },
                    ));
                }
                None => {
                    ledger.release(&attempt).await.map_err(internal)?;
                    results.push(Reconciled::new(&record, ReconcileOutcome::NoLicenseYet));
                }
            }
        }
        Ok(results)
    }

    /// Finds the license an earlier attempt created for `wanted`, through its
    /// Cryptlex metadata, without the gateway's bookkeeping keys.
    ///
    /// Every page of the search is read, and a license counts only if one of
    /// its entries holds the request id itself (Cryptlex may match the key and
    /// the value on different entries), it names the same client, and it is
    /// for the user and product asked for: a license that merely shares the
    /// request id is someone else's and must not be handed out. When several
    /// match (duplicates made before these checks), the oldest is the one.
    async fn find_issued(
        &self,
        ctx: &RequestContext,
        pat: &crate::domain::AdminToken,
        options: &IssuanceOptions,
        wanted: &Wanted<'_>,
    ) -> Result<Option<IssuedLicense>, LicensingError> {
        let MetadataMatches { licenses, complete } = self
            .cryptlex()
            .find_licenses_by_metadata(
                ctx,
                pat,
                &options.request_id_metadata_key,
                wanted.request_id,
                &[],
            )
            .await
            .map_err(|error| upstream(Credential::Pat, error))?;
        let searched = licenses.len();
        let mut matching = licenses
            .into_iter()
            .filter(|license| wanted.matches(license, &options.request_id_metadata_key));
        let Some(found) = matching.next() else {
            if !complete {
                // Saying "none" without having read every candidate could
                // create a duplicate: refuse and let an operator look.
                return Err(LicensingError::internal(format!(
                    "more than {searched} licenses carry this request id in their metadata; reconcile by hand"
                )));
            }
            if searched > 0 {
                tracing::warn!(
                    searched,
                    "licenses carry this request id but none is this request's (other client, user or product)"
                );
            }
            return Ok(None);
        };
        let duplicates = matching.count();
        if duplicates > 0 {
            tracing::error!(license_id = %found.id, duplicates, "several licenses were issued for one request id; answering with the oldest");
        }
        Ok(Some(options.present(found)))
    }

    pub(super) fn issuance(
        &self,
    ) -> Result<(&crate::ledger::Ledger, &IssuanceOptions), LicensingError> {
        match (&self.shared.ledger, &self.shared.options.issuance) {
            (Some(ledger), Some(options)) => Ok((ledger, options)),
            _ => Err(LicensingError::internal(
                "issuance is not configured on this gateway",
            )),
        }
    }
}

/// What reconciliation did with one pending record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconciled {
    pub client: String,
    pub request_id: String,
    pub outcome: ReconcileOutcome,
}

impl Reconciled {
    fn new(record: &crate::ledger::Record, outcome: ReconcileOutcome) -> Self {
        Self {
            client: record.client.clone(),
            request_id: record.request_id.clone(),
            outcome,
        }
    }
}

/// The result of reconciling one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReconcileOutcome {
    /// The license existed in Cryptlex; the record is now complete.
    Completed { license_id: String },
    /// No license exists yet; the record stays pending for the client's retry.
    NoLicenseYet,
    /// An attempt is running right now; left alone.
    InProgress,
    /// Finished between listing and reconciling.
    AlreadyFinished,
    /// A lifecycle call (not an issuance): only its retry can finish it.
    LeftForRetry,
}

/// What a reconciliation looks for: the license one request created.
#[derive(Debug)]
struct Wanted<'a> {
    client: &'a str,
    request_id: &'a str,
    /// The license's user, when known (not to the operator's reconcile).
    user_id: Option<&'a CryptlexId>,
    /// The license's product, when known.
    product_id: Option<&'a CryptlexId>,
}

impl Wanted<'_> {
    /// Whether `license` (with its metadata unfiltered) is the one wanted.
    fn matches(&self, license: &IssuedLicense, request_id_key: &str) -> bool {
        let has =
            |key: &str, value: &str| license.metadata.get(key).map(String::as_str) == Some(value);
        has(request_id_key, self.request_id)
            && has(CLIENT_METADATA_KEY, self.client)
            && self
                .user_id
                .is_none_or(|user_id| license.user_id == user_id.as_str())
            && self
                .product_id
                .is_none_or(|product_id| license.product_id == product_id.as_str())
    }
}

/// How an attempt ended, for the ledger.
#[derive(Debug)]
enum AttemptError {
    /// Cryptlex refused for good; record and replay it.
    Permanent { detail: String },
    /// Nothing was created: the next attempt may take over at once (and
    /// still reconciles first).
    NotFinal(LicensingError),
    /// The create may have taken effect: hold the record for the settling
    /// period, then let the next attempt reconcile.
    Unknown(LicensingError),
}

/// A stable digest of everything that defines the request, so a reused
/// request id with different content is detected.
///
/// A request for one license with no subscription reference keeps the digest it had before
/// quantities and subscriptions existed (version 1), so a retry of a request stored then still
/// replays. Every other request gets version 2, which also covers the operation name, the
/// subscription and the quantity; lifecycle fingerprints always name their operation, so no
/// fingerprint of another operation can equal an issuance's.
fn fingerprint(command: &IssueCommand, product_id: &CryptlexId) -> String {
    let user = match &command.user {
        LicenseHolder::Id(id) => format!("id:{id}"),
        LicenseHolder::Email(email) => format!("email:{}", email.as_str().to_lowercase()),
    };
    let canonical = if command.quantity <= 1 && command.subscription_id.is_none() {
        serde_json::json!({
            "v": 1,
            "user": user,
            "product": product_id.as_str(),
            "template": command.license_template_id.as_ref().map(CryptlexId::as_str),
            "metadata": command.metadata.entries(),
        })
    } else {
        serde_json::json!({
            "v": 2,
            "op": ISSUE_LICENSE,
            "user": user,
            "product": product_id.as_str(),
            "template": command.license_template_id.as_ref().map(CryptlexId::as_str),
            "metadata": command.metadata.entries(),
            "subscription": command.subscription_id.as_ref().map(SubscriptionId::as_str),
            "quantity": command.quantity.max(1),
        })
    };
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

/// The fingerprint of unit `number` of `quantity` of the request fingerprinted `request`.
fn unit_fingerprint(request: &str, number: u32, quantity: u32) -> String {
    let canonical = serde_json::json!({
        "v": 2,
        "op": ISSUE_LICENSE,
        "request": request,
        "unit": number,
        "of": quantity,
    });
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(email: &str, metadata: &[(&str, &str)]) -> IssueCommand {
        IssueCommand {
            request_id: RequestId::parse("request_id", "pay_1").expect("id"),
            user: LicenseHolder::Email(Email::parse("user_email", email).expect("email")),
            product_id: None,
            license_template_id: None,
            metadata: MetadataMap::parse(
                "metadata",
                metadata
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
                &[],
            )
            .expect("metadata"),
            subscription_id: None,
            quantity: 1,
        }
    }

    fn license(user: &str, product: &str, metadata: &[(&str, &str)]) -> IssuedLicense {
        IssuedLicense {
            id: "lic".into(),
            key: "KEY".into(),
            product_id: product.into(),
            user_id: user.into(),
            license_type: "node-locked".into(),
            expires_at: None,
            allowed_activations: 1,
            subscription_interval: String::new(),
            created_at: None,
            metadata: metadata
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
            subscription_id: String::new(),
            revoked: false,
            suspended: false,
        }
    }

    #[test]
    fn reconciliation_takes_only_the_license_of_this_request_client_user_and_product() {
        const KEY: &str = "licensing_gateway_request_id";
        let user = CryptlexId::parse("user_id", "u1").expect("id");
        let product = CryptlexId::parse("product_id", "p1").expect("id");
        let wanted = Wanted {
            client: "spiffe://x/payment",
            request_id: "pay_1",
            user_id: Some(&user),
            product_id: Some(&product),
        };
        let ours = [(KEY, "pay_1"), (CLIENT_METADATA_KEY, "spiffe://x/payment")];

        assert!(wanted.matches(&license("u1", "p1", &ours), KEY));
        assert!(
            !wanted.matches(&license("u2", "p1", &ours), KEY),
            "another user"
        );
        assert!(
            !wanted.matches(&license("u1", "p2", &ours), KEY),
            "another product"
        );
        let other_client = [(KEY, "pay_1"), (CLIENT_METADATA_KEY, "spiffe://x/refund")];
        assert!(!wanted.matches(&license("u1", "p1", &other_client), KEY));
        // The key and the value matched on different entries, as Cryptlex's search may.
        let split = [
            (KEY, "pay_2"),
            ("order", "pay_1"),
            (CLIENT_METADATA_KEY, "spiffe://x/payment"),
        ];
        assert!(!wanted.matches(&license("u1", "p1", &split), KEY));
        // The operator's reconcile knows no user or product.
        let any_user = Wanted {
            user_id: None,
            product_id: None,
            ..wanted
        };
        assert!(any_user.matches(&license("u2", "p2", &ours), KEY));
    }

    #[test]
    fn the_fingerprint_is_stable_and_sensitive_to_every_field() {
        let product = CryptlexId::parse("product_id", "p1").expect("id");
        let other_product = CryptlexId::parse("product_id", "p2").expect("id");
        let base = fingerprint(&command("a@example.com", &[("k", "v")]), &product);
        assert_eq!(
            base,
            fingerprint(&command("A@example.com", &[("k", "v")]), &product)
        );
        assert_ne!(
            base,
            fingerprint(&command("b@example.com", &[("k", "v")]), &product)
        );
        assert_ne!(
            base,
            fingerprint(&command("a@example.com", &[("k", "w")]), &product)
        );
        assert_ne!(
            base,
            fingerprint(&command("a@example.com", &[("k", "v")]), &other_product)
        );
    }
}

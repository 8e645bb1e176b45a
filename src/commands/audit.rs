//! `licensing-gateway ledger audit`: compares the issuance ledger with Cryptlex and reports
//! where they disagree, as a table or as JSON.
//!
//! It finds five things, each a [`FindingKind`]:
//!
//! | finding | what it means |
//! |---|---|
//! | `license_without_record` | a license carries the gateway's request-id metadata, but the ledger has no record of that (client, request id), or its record was rejected or names another license: something created it behind the ledger's back, or a record was lost |
//! | `record_without_license` | an issued `IssueLicense` record names a license Cryptlex does not have (deleted by hand?) |
//! | `duplicate_licenses` | two or more licenses carry one (client, request id): the exactly-once promise was broken. Unit sub-keys (`<id>#<k>`) are distinct request ids, so the licenses of one multi-unit request are not duplicates |
//! | `stale_pending` | a record (any operation) has been pending for longer than `--pending-older-than`: its outcome is unknown and no retry came; `ledger reconcile` settles issuance ones |
//! | `subscription_disagrees` | the licenses of one subscription (metadata `licensing_gateway_subscription`) are not all revoked or all not, or not all suspended or all not |
//!
//! # Order of reading
//!
//! Cryptlex first, then the ledger. Every license the gateway creates had its pending record
//! written before the create, so a license seen upstream has its record by the time the
//! ledger is read, and a record written after the paging (whose license the paging may have
//! missed) is looked up by id before it is reported missing. The other order would report a
//! license issued while the audit paged as one without a record.
//!
//! # Pacing and safety
//!
//! It changes nothing in Cryptlex or in the ledger's records: it pages
//! `GET /v3/licenses?metadata.key[eq]=<request-id key>` 100 at a time and reads single
//! licenses by id (`GET /v3/licenses/{id}`), nothing else. Opening the ledger runs pending
//! migrations, as every `ledger` command does. Its calls are paced by a budget of its own,
//! `--calls-per-window` per [`PACING_WINDOW`] (default [`DEFAULT_CALLS_PER_WINDOW`]), and go
//! through the gateway's Cryptlex client at `Priority::Background`, which only starts when
//! plenty of the window is free; with a PostgreSQL ledger they are also booked in the
//! window the serving replicas share, so the replicas keep priority. A call the budget
//! refuses waits as long as it says and tries again, for up to [`MAX_REFUSED_WAIT`].
//!
//! Exit status: [`EXIT_CLEAN`] when nothing was found, [`EXIT_FINDINGS`] when something was,
//! [`EXIT_ERROR`] when the audit could not finish (nothing is reported then).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::time::Instant;

use crate::app::cryptlex_client;
use crate::config::Settings;
use crate::coordination::Coordination;
use crate::cryptlex::{AdminLicense, Client, CryptlexError};
use crate::domain::{AdminToken, CryptlexId, RequestContext};
use crate::ledger::{ISSUE_LICENSE, Ledger, LedgerOptions, Record, State};
use crate::licensing::{CLIENT_METADATA_KEY, SUBSCRIPTION_METADATA_KEY};

/// Exit status of an audit that found nothing.
pub const EXIT_CLEAN: i32 = 0;
/// Exit status of an audit that found something.
pub const EXIT_FINDINGS: i32 = 1;
/// Exit status of an audit that could not finish.
pub const EXIT_ERROR: i32 = 2;

/// Upstream calls per [`PACING_WINDOW`] unless `--calls-per-window` says otherwise: a tenth of
/// Cryptlex's 50, so serving replicas on the same address barely notice.
pub const DEFAULT_CALLS_PER_WINDOW: u32 = 5;

/// The window the audit's own budget counts in; Cryptlex's own window length.
pub const PACING_WINDOW: Duration = Duration::from_secs(5);

/// How long one call keeps trying while the gateway's budget (or its breaker, or a 429)
/// refuses it, before the audit gives up. Serving replicas that keep the shared window full
/// for this long are busy enough that the audit should be run later.
pub const MAX_REFUSED_WAIT: Duration = Duration::from_secs(120);

/// Licenses per page: Cryptlex's largest `limit`.
const PAGE_SIZE: u32 = 100;

/// The shortest pause after a refusal, so a refusal with no wait cannot spin.
const MIN_REFUSED_PAUSE: Duration = Duration::from_millis(100);

/// Most records read from the ledger: all of them (`list` takes a limit).
const ALL_RECORDS: u32 = u32::MAX;

/// How to run the audit.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// Print JSON instead of the table.
    pub json: bool,
    /// A pending record older than this is a finding.
    pub pending_older_than: Duration,
    /// The audit's own budget: upstream calls per [`PACING_WINDOW`].
    pub calls_per_window: u32,
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self {
            json: false,
            pending_older_than: Duration::from_secs(10 * 60),
            calls_per_window: DEFAULT_CALLS_PER_WINDOW,
        }
    }
}

/// What kind of disagreement a finding is; see the module's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    LicenseWithoutRecord,
    RecordWithoutLicense,
    DuplicateLicenses,
    StalePending,
    SubscriptionDisagrees,
}

impl FindingKind {
    /// The name the table and the JSON use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LicenseWithoutRecord => "license_without_record",
            Self::RecordWithoutLicense => "record_without_license",
            Self::DuplicateLicenses => "duplicate_licenses",
            Self::StalePending => "stale_pending",
            Self::SubscriptionDisagrees => "subscription_disagrees",
        }
    }
}

/// One disagreement between the ledger and Cryptlex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    /// The client identity of the record or license, when known.
    pub client: Option<String>,
    pub request_id: Option<String>,
    pub subscription_id: Option<String>,
    /// The licenses concerned, in Cryptlex's order (oldest first).
    pub license_ids: Vec<String>,
    /// What exactly disagrees, for a person.
    pub detail: String,
}

/// What an audit looked at and found.
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    /// True when there are no findings.
    pub clean: bool,
    /// `sqlite` or `postgres`.
    pub ledger_backend: &'static str,
    /// Licenses in Cryptlex carrying the request-id metadata.
    pub licenses_checked: usize,
    /// Records in the ledger.
    pub records_checked: usize,
    /// Calls that reached Cryptlex (a call the local budget refused is not one).
    pub upstream_calls: u32,
    /// Sorted by kind, then request id or subscription, then licenses.
    pub findings: Vec<Finding>,
}

impl AuditReport {
    /// Returns the process exit status this report calls for.
    pub fn exit_code(&self) -> i32 {
        if self.clean {
            EXIT_CLEAN
        } else {
            EXIT_FINDINGS
        }
    }

    /// Returns the report as printed: the table, or with `json` one JSON document.
    pub fn render(&self, json: bool) -> String {
        if json {
            // Plain data with string keys: serialising cannot fail.
            let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
            text.push('\n');
            return text;
        }
        let mut out = String::new();
        let _ = writeln!(
            out,
            "ledger audit: {} license(s) with request-id metadata in cryptlex, {} ledger record(s) ({}), {} upstream call(s)",
            self.licenses_checked, self.records_checked, self.ledger_backend, self.upstream_calls
        );
        if self.findings.is_empty() {
            let _ = writeln!(out, "clean: the ledger and cryptlex agree");
            return out;
        }
        let header = ["FINDING", "CLIENT", "REQUEST ID", "LICENSES", "DETAIL"];
        let rows: Vec<[String; 5]> = self
            .findings
            .iter()
            .map(|finding| {
                let reference = match (&finding.request_id, &finding.subscription_id) {
                    (Some(request_id), _) => request_id.clone(),
                    (None, Some(subscription)) => format!("subscription {subscription}"),
                    (None, None) => "-".to_owned(),
                };
                [
                    finding.kind.as_str().to_owned(),
                    finding.client.clone().unwrap_or_else(|| "-".to_owned()),
                    reference,
                    dash_if_empty(finding.license_ids.join(",")),
                    finding.detail.clone(),
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let header = header.map(str::to_owned);
        for row in std::iter::once(&header).chain(&rows) {
            let mut line = String::new();
            for (index, (cell, width)) in row.iter().zip(widths).enumerate() {
                if index + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<width$}  ");
                }
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
        let _ = writeln!(out, "{} finding(s)", self.findings.len());
        out
    }
}

fn dash_if_empty(text: String) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text
    }
}

/// Runs the audit against the configured Cryptlex and ledger.
pub async fn audit(settings: &Settings, options: &AuditOptions) -> anyhow::Result<AuditReport> {
    anyhow::ensure!(
        options.calls_per_window > 0,
        "--calls-per-window must be at least 1"
    );
    let pat = settings.cryptlex.admin_token.as_ref().context(
        "the audit reads licenses with the cryptlex pat (license:read): set cryptlex.pat or cryptlex.pat_file",
    )?;
    let ledger = Ledger::connect(&LedgerOptions {
        url: settings.ledger.url.clone(),
        schema: settings.ledger.schema.clone(),
        max_connections: 2,
    })
    .await
    .context("opening the issuance ledger")?;
    let mut client = cryptlex_client(settings)?;
    // Booked in the replicas' shared window too, at background priority, so they keep theirs.
    if let Some(pool) = ledger.postgres_pool() {
        let coordination = Coordination::from_ledger_pool(pool, settings.ledger.schema.as_deref());
        client = client.with_shared_window(coordination.window());
    }
    let mut upstream = Upstream {
        client: &client,
        pat,
        timeout: settings.cryptlex.request_timeout,
        pacer: Pacer::new(options.calls_per_window, PACING_WINDOW),
        sent: 0,
    };
    let result = run_audit(
        &ledger,
        &mut upstream,
        &settings.issuance.request_id_metadata_key,
        options,
    )
    .await;
    ledger.close().await;
    result
}

async fn run_audit(
    ledger: &Ledger,
    upstream: &mut Upstream<'_>,
    request_id_key: &str,
    options: &AuditOptions,
) -> anyhow::Result<AuditReport> {
    // Cryptlex first, then the ledger: see "Order of reading".
    let licenses = upstream.all_licenses(request_id_key).await?;
    let records = ledger
        .list(None, ALL_RECORDS)
        .await
        .context("reading the ledger")?;
    let now = Utc::now();

    let mut findings = Vec::new();
    findings.extend(licenses_against_records(&licenses, &records));
    findings.extend(stale_pending(&records, now, options.pending_older_than));
    findings.extend(disagreeing_subscriptions(&licenses));
    let seen: HashSet<&str> = licenses.iter().map(|license| license.id.as_str()).collect();
    let mut asked = HashSet::new();
    for record in &records {
        let Some(license_id) = issued_license(record) else {
            continue;
        };
        // A multi-unit request's own record names its first unit's license again.
        if seen.contains(license_id) || !asked.insert(license_id) {
            continue;
        }
        let id = CryptlexId::from_upstream(license_id.to_owned());
        if upstream.license(&id).await?.is_none() {
            findings.push(Finding {
                kind: FindingKind::RecordWithoutLicense,
                client: Some(record.client.clone()),
                request_id: Some(record.request_id.clone()),
                subscription_id: None,
                license_ids: vec![license_id.to_owned()],
                detail: format!(
                    "issued {} but cryptlex has no such license",
                    record.updated_at.to_rfc3339()
                ),
            });
        }
    }
    findings.sort_by(|left, right| {
        (
            left.kind,
            &left.request_id,
            &left.subscription_id,
            &left.license_ids,
        )
            .cmp(&(
                right.kind,
                &right.request_id,
                &right.subscription_id,
                &right.license_ids,
            ))
    });
    Ok(AuditReport {
        clean: findings.is_empty(),
        ledger_backend: ledger.backend(),
        licenses_checked: licenses.len(),
        records_checked: records.len(),
        upstream_calls: upstream.sent,
        findings,
    })
}

/// A license as the audit needs it: its id, the gateway's metadata, and its state.
#[derive(Debug, Clone)]
struct AuditedLicense {
    id: String,
    request_id: String,
    client: Option<String>,
    subscription: Option<String>,
    revoked: bool,
    suspended: bool,
}

impl AuditedLicense {
    /// Returns the audit's view of `license`, or `None` when it has no `request_id_key` entry
    /// (Cryptlex's filter should not return such a license, but the audit checks for itself).
    fn from_admin(license: AdminLicense, request_id_key: &str) -> Option<Self> {
        let value = |key: &str| {
            license
                .metadata
                .iter()
                .find(|entry| entry.key == key)
                .map(|entry| entry.value.clone())
        };
        Some(Self {
            request_id: value(request_id_key)?,
            client: value(CLIENT_METADATA_KEY).filter(|client| !client.is_empty()),
            subscription: value(SUBSCRIPTION_METADATA_KEY)
                .filter(|subscription| !subscription.is_empty()),
            id: license.license.id,
            revoked: license.license.revoked,
            suspended: license.license.suspended,
        })
    }
}

/// The license an issued `IssueLicense` record names.
fn issued_license(record: &Record) -> Option<&str> {
    (record.operation == ISSUE_LICENSE && record.state == State::Issued)
        .then_some(record.license_id.as_deref())
        .flatten()
}

/// Returns the licenses with no usable record, and the request ids carried by several.
fn licenses_against_records(licenses: &[AuditedLicense], records: &[Record]) -> Vec<Finding> {
    let mut by_key: HashMap<(&str, &str), &Record> = HashMap::new();
    let mut by_request_id: HashMap<&str, Vec<&Record>> = HashMap::new();
    for record in records {
        by_key.insert((&record.client, &record.request_id), record);
        by_request_id
            .entry(&record.request_id)
            .or_default()
            .push(record);
    }
    // Grouped by (client, request id) in Cryptlex's order; a license without the client
    // entry (issued before it existed) groups under its request id alone.
    let mut groups: BTreeMap<(Option<&str>, &str), Vec<&AuditedLicense>> = BTreeMap::new();
    for license in licenses {
        groups
            .entry((license.client.as_deref(), &license.request_id))
            .or_default()
            .push(license);
    }
    let mut findings = Vec::new();
    for ((client, request_id), group) in groups {
        let records: Vec<&Record> = match client {
            Some(client) => by_key
                .get(&(client, request_id))
                .copied()
                .into_iter()
                .collect(),
            None => by_request_id.get(request_id).cloned().unwrap_or_default(),
        };
        let license_ids: Vec<String> = group.iter().map(|license| license.id.clone()).collect();
        let finding = |kind, detail| Finding {
            kind,
            client: client.map(str::to_owned),
            request_id: Some(request_id.to_owned()),
            subscription_id: None,
            license_ids: license_ids.clone(),
            detail,
        };
        if group.len() > 1 {
            let held = records
                .iter()
                .filter_map(|record| record.license_id.as_deref())
                .collect::<Vec<_>>();
            let detail = match held.as_slice() {
                [] => format!("{} licenses carry this request id", group.len()),
                held => format!(
                    "{} licenses carry this request id; the ledger holds {}",
                    group.len(),
                    held.join(",")
                ),
            };
            findings.push(finding(FindingKind::DuplicateLicenses, detail));
            continue;
        }
        let license = group[0];
        let problem = match records.as_slice() {
            [] => Some("no ledger record for this client and request id".to_owned()),
            records => {
                let unrecorded: Vec<String> = records
                    .iter()
                    .filter_map(|record| record_disowns(record, &license.id))
                    .collect();
                // With no client entry any client's record may be the license's.
                (unrecorded.len() == records.len()).then(|| unrecorded.join("; "))
            }
        };
        if let Some(detail) = problem {
            findings.push(finding(FindingKind::LicenseWithoutRecord, detail));
        }
    }
    findings
}

/// Returns why `record` does not account for license `license_id`, or `None` when it does:
/// issued with that license, or still pending (reconciliation will adopt the license).
fn record_disowns(record: &Record, license_id: &str) -> Option<String> {
    match (record.state, record.license_id.as_deref()) {
        (State::Pending, _) => None,
        (State::Issued, Some(held)) if held == license_id => None,
        (State::Issued, Some(held)) => Some(format!("the ledger's record names license {held}")),
        (State::Issued, None) => Some("the ledger's record names no license".to_owned()),
        (State::Rejected, _) => Some(format!(
            "the ledger rejected this request ({})",
            record.error_reason.as_deref().unwrap_or("no reason")
        )),
    }
}

/// Returns the records pending for longer than `threshold` at `now`.
fn stale_pending(records: &[Record], now: DateTime<Utc>, threshold: Duration) -> Vec<Finding> {
    let threshold = chrono::TimeDelta::from_std(threshold).unwrap_or(chrono::TimeDelta::MAX);
    records
        .iter()
        .filter(|record| record.state == State::Pending && now - record.created_at > threshold)
        .map(|record| {
            let age = (now - record.created_at).to_std().unwrap_or_default();
            Finding {
                kind: FindingKind::StalePending,
                client: Some(record.client.clone()),
                request_id: Some(record.request_id.clone()),
                subscription_id: None,
                license_ids: record.license_id.iter().cloned().collect(),
                detail: format!(
                    "{} pending for {} (since {}), {} attempt(s)",
                    record.operation,
                    humantime::format_duration(Duration::from_secs(age.as_secs())),
                    record.created_at.to_rfc3339(),
                    record.attempts
                ),
            }
        })
        .collect()
}

/// Returns the subscriptions whose licenses are not all in one revoked state and one
/// suspended state.
fn disagreeing_subscriptions(licenses: &[AuditedLicense]) -> Vec<Finding> {
    let mut subscriptions: BTreeMap<&str, Vec<&AuditedLicense>> = BTreeMap::new();
    for license in licenses {
        if let Some(subscription) = &license.subscription {
            subscriptions.entry(subscription).or_default().push(license);
        }
    }
    let mut findings = Vec::new();
    for (subscription, group) in subscriptions {
        let mut disagreements = Vec::new();
        for (state, is) in [
            (
                "revoked",
                (|license: &AuditedLicense| license.revoked) as fn(&_) -> bool,
            ),
            ("suspended", |license: &AuditedLicense| license.suspended),
        ] {
            let (yes, no): (Vec<&&AuditedLicense>, Vec<_>) =
                group.iter().partition(|license| is(license));
            if !yes.is_empty() && !no.is_empty() {
                let ids = |licenses: &[&&AuditedLicense]| {
                    licenses
                        .iter()
                        .map(|license| license.id.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                };
                disagreements.push(format!("{state}: {}; not {state}: {}", ids(&yes), ids(&no)));
            }
        }
        if disagreements.is_empty() {
            continue;
        }
        let clients: BTreeSet<Option<&str>> = group
            .iter()
            .map(|license| license.client.as_deref())
            .collect();
        let client = match clients.into_iter().collect::<Vec<_>>().as_slice() {
            [Some(client)] => Some((*client).to_owned()),
            _ => None,
        };
        findings.push(Finding {
            kind: FindingKind::SubscriptionDisagrees,
            client,
            request_id: None,
            subscription_id: Some(subscription.to_owned()),
            license_ids: group.iter().map(|license| license.id.clone()).collect(),
            detail: disagreements.join(" / "),
        });
    }
    findings
}

// === the upstream side: paced reads ===

/// The audit's Cryptlex calls, each through its own budget first.
struct Upstream<'a> {
    client: &'a Client,
    pat: &'a AdminToken,
    timeout: Duration,
    pacer: Pacer,
    /// Calls that reached Cryptlex.
    sent: u32,
}

impl Upstream<'_> {
    /// Pages through every license carrying `request_id_key`, oldest first.
    async fn all_licenses(&mut self, request_id_key: &str) -> anyhow::Result<Vec<AuditedLicense>> {
        let mut licenses = Vec::new();
        for page in 1.. {
            let (client, pat) = (self.client, self.pat);
            let found = self
                .paced(async |ctx| {
                    client
                        .licenses_with_metadata_key(ctx, pat, request_id_key, page, PAGE_SIZE)
                        .await
                })
                .await
                .with_context(|| format!("reading page {page} of the licenses from cryptlex"))?;
            let last_page = found.len() < PAGE_SIZE as usize;
            licenses.extend(
                found
                    .into_iter()
                    .filter_map(|license| AuditedLicense::from_admin(license, request_id_key)),
            );
            if last_page {
                break;
            }
        }
        Ok(licenses)
    }

    /// Reads one license by id; `None` when Cryptlex has none.
    async fn license(&mut self, id: &CryptlexId) -> anyhow::Result<Option<AdminLicense>> {
        let (client, pat) = (self.client, self.pat);
        self.paced(async |ctx| client.audit_license(ctx, pat, id).await)
            .await
            .with_context(|| format!("reading license {id} from cryptlex"))
    }

    /// Makes one call within the audit's budget, trying again while the gateway's budget,
    /// breaker or Cryptlex's 429 refuse it, for up to [`MAX_REFUSED_WAIT`].
    async fn paced<T>(
        &mut self,
        call: impl AsyncFn(&RequestContext) -> Result<T, CryptlexError>,
    ) -> Result<T, CryptlexError> {
        let give_up_at = Instant::now() + MAX_REFUSED_WAIT;
        loop {
            self.pacer.admit().await;
            let ctx = RequestContext::new(
                format!("audit-{}", uuid::Uuid::new_v4()),
                // Room for the client's own retries of a read.
                self.timeout * 3,
            );
            let result = call(&ctx).await;
            let (wait, reached_cryptlex) = match &result {
                Err(CryptlexError::BudgetExhausted { retry_after, .. })
                | Err(CryptlexError::CircuitOpen { retry_after }) => (*retry_after, false),
                Err(CryptlexError::RateLimited { retry_after }) => {
                    (retry_after.unwrap_or(PACING_WINDOW), true)
                }
                _ => {
                    self.sent += 1;
                    return result;
                }
            };
            if reached_cryptlex {
                self.sent += 1;
            }
            let wait = wait.max(MIN_REFUSED_PAUSE);
            if Instant::now() + wait > give_up_at {
                return result;
            }
            tracing::debug!(
                wait_ms = wait.as_millis() as u64,
                "audit call refused by the budget, waiting"
            );
            tokio::time::sleep(wait).await;
        }
    }
}

/// The audit's own budget: at most `limit` calls start in any `window`.
#[derive(Debug)]
struct Pacer {
    limit: usize,
    window: Duration,
    /// Start times of the calls of the last `window`, oldest first.
    started: VecDeque<Instant>,
}

impl Pacer {
    fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit: usize::try_from(limit).unwrap_or(usize::MAX).max(1),
            window,
            started: VecDeque::new(),
        }
    }

    /// Waits until a call may start, and counts it.
    async fn admit(&mut self) {
        loop {
            let now = Instant::now();
            while self
                .started
                .front()
                .is_some_and(|&started| now.duration_since(started) >= self.window)
            {
                self.started.pop_front();
            }
            if self.started.len() < self.limit {
                self.started.push_back(now);
                return;
            }
            let Some(&oldest) = self.started.front() else {
                continue;
            };
            tokio::time::sleep_until(oldest + self.window).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(client: &str, request_id: &str, state: State, license_id: Option<&str>) -> Record {
        let at = Utc::now() - chrono::TimeDelta::hours(1);
        Record {
            client: client.to_owned(),
            request_id: request_id.to_owned(),
            operation: ISSUE_LICENSE.to_owned(),
            fingerprint: "f".to_owned(),
            state,
            license_id: license_id.map(str::to_owned),
            license_json: None,
            error_reason: (state == State::Rejected).then(|| "UPSTREAM_REJECTED".to_owned()),
            error_message: None,
            attempts: 1,
            created_at: at,
            updated_at: at,
            lease_expires_at: at,
        }
    }

    fn license(id: &str, client: Option<&str>, request_id: &str) -> AuditedLicense {
        AuditedLicense {
            id: id.to_owned(),
            request_id: request_id.to_owned(),
            client: client.map(str::to_owned),
            subscription: None,
            revoked: false,
            suspended: false,
        }
    }

    #[test]
    fn a_license_matching_its_issued_or_pending_record_is_no_finding() {
        let records = [
            record("a", "r1", State::Issued, Some("L1")),
            record("a", "r2", State::Pending, None),
            record("a", "r3#1", State::Issued, Some("L3")),
            record("a", "r3#2", State::Issued, Some("L4")),
        ];
        let licenses = [
            license("L1", Some("a"), "r1"),
            license("L2", Some("a"), "r2"),
            license("L3", Some("a"), "r3#1"),
            license("L4", Some("a"), "r3#2"),
        ];
        assert_eq!(licenses_against_records(&licenses, &records), Vec::new());
    }

    #[test]
    fn a_license_of_another_client_or_a_rejected_record_is_without_record() {
        let records = [
            record("a", "r1", State::Issued, Some("L1")),
            record("a", "r2", State::Rejected, None),
            record("a", "r3", State::Issued, Some("L9")),
        ];
        let licenses = [
            license("L1", Some("b"), "r1"),
            license("L2", Some("a"), "r2"),
            license("L3", Some("a"), "r3"),
            license("L4", None, "r4"),
        ];
        let findings = licenses_against_records(&licenses, &records);
        let kinds: Vec<_> = findings
            .iter()
            .map(|finding| (finding.kind, finding.license_ids[0].as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                (FindingKind::LicenseWithoutRecord, "L4"),
                (FindingKind::LicenseWithoutRecord, "L2"),
                (FindingKind::LicenseWithoutRecord, "L3"),
                (FindingKind::LicenseWithoutRecord, "L1"),
            ]
        );
        assert!(findings[2].detail.contains("names license L9"));
        assert!(findings[1].detail.contains("rejected"));
    }

    #[test]
    fn two_licenses_for_one_client_and_request_id_are_one_duplicate_finding() {
        let records = [record("a", "r1", State::Issued, Some("L1"))];
        let licenses = [
            license("L1", Some("a"), "r1"),
            license("L2", Some("a"), "r1"),
        ];
        let findings = licenses_against_records(&licenses, &records);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].kind, FindingKind::DuplicateLicenses);
        assert_eq!(findings[0].license_ids, ["L1", "L2"]);
        assert!(findings[0].detail.ends_with("the ledger holds L1"));
    }

    #[test]
    fn only_pending_records_past_the_threshold_are_stale() {
        let now = Utc::now();
        let mut fresh = record("a", "fresh", State::Pending, None);
        fresh.created_at = now - chrono::TimeDelta::seconds(30);
        let mut old = record("a", "old", State::Pending, None);
        old.created_at = now - chrono::TimeDelta::hours(1);
        let issued = record("a", "done", State::Issued, Some("L1"));
        let findings = stale_pending(&[fresh, old, issued], now, Duration::from_secs(600));
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].request_id.as_deref(), Some("old"));
        assert!(
            findings[0]
                .detail
                .starts_with("IssueLicense pending for 1h"),
            "{}",
            findings[0].detail
        );
    }

    #[test]
    fn a_subscription_with_a_revoked_and_an_active_license_disagrees() {
        let mut revoked = license("L1", Some("a"), "r1");
        revoked.subscription = Some("sub".to_owned());
        revoked.revoked = true;
        let mut active = license("L2", Some("a"), "r2");
        active.subscription = Some("sub".to_owned());
        let mut alone = license("L3", Some("a"), "r3");
        alone.subscription = Some("other".to_owned());
        alone.suspended = true;

        let findings = disagreeing_subscriptions(&[revoked, active, alone]);

        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].subscription_id.as_deref(), Some("sub"));
        assert_eq!(findings[0].client.as_deref(), Some("a"));
        assert_eq!(findings[0].detail, "revoked: L1; not revoked: L2");
    }

    #[tokio::test(start_paused = true)]
    async fn the_pacer_starts_at_most_its_limit_in_any_window() {
        let mut pacer = Pacer::new(2, Duration::from_secs(5));
        let start = Instant::now();
        let mut starts = Vec::new();
        for _ in 0..5 {
            pacer.admit().await;
            starts.push(start.elapsed().as_secs());
        }
        assert_eq!(starts, [0, 0, 5, 5, 10]);
    }

    #[test]
    fn the_table_lines_up_and_ends_with_the_count() {
        let report = AuditReport {
            clean: false,
            ledger_backend: "sqlite",
            licenses_checked: 2,
            records_checked: 1,
            upstream_calls: 1,
            findings: vec![Finding {
                kind: FindingKind::DuplicateLicenses,
                client: Some("a".to_owned()),
                request_id: Some("r1".to_owned()),
                subscription_id: None,
                license_ids: vec!["L1".to_owned(), "L2".to_owned()],
                detail: "2 licenses carry this request id".to_owned(),
            }],
        };
        let table = report.render(false);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[1].find("CLIENT"), lines[2].find("a  "));
        assert_eq!(
            lines[2].split_whitespace().next(),
            Some("duplicate_licenses")
        );
        assert_eq!(lines.last().copied(), Some("1 finding(s)"));
        let json: serde_json::Value = serde_json::from_str(&report.render(true)).unwrap();
        assert_eq!(json["findings"][0]["kind"], "duplicate_licenses");
        assert_eq!(report.exit_code(), EXIT_FINDINGS);
    }
}

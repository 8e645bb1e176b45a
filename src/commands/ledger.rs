//! `licensing-gateway ledger ...`: inspect the issuance ledger (a request's
//! records, a license's history) and reconcile records whose outcome is
//! unknown.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context as _;

use crate::app::build_licensing;
use crate::config::Settings;
use crate::domain::RequestContext;
use crate::ledger::{HistoryEntry, ISSUE_LICENSE, Ledger, LedgerOptions, Record, State};

/// What to do with the ledger.
#[derive(Debug, Clone)]
pub enum LedgerAction {
    /// List records, newest first, optionally in one state.
    List { state: Option<State>, limit: u32 },
    /// Show every record with this request id (all callers, unit sub-keys included) and
    /// what each did to its licenses; or, when no request has that id, the history of the
    /// license with that id.
    Show { request_id: String },
    /// Reconcile pending records against Cryptlex.
    Reconcile { limit: u32 },
}

/// Runs `action` and returns the text to print.
pub async fn run(settings: Settings, action: LedgerAction) -> anyhow::Result<String> {
    let ledger = Ledger::connect(&LedgerOptions {
        url: settings.ledger.url.clone(),
        schema: settings.ledger.schema.clone(),
        max_connections: 2,
    })
    .await
    .context("opening the issuance ledger")?;
    let mut out = String::new();
    match action {
        LedgerAction::List { state, limit } => {
            let counts = ledger.count_by_state().await?;
            let summary: Vec<String> = counts
                .iter()
                .map(|(state, count)| format!("{state}={count}"))
                .collect();
            let _ = writeln!(out, "ledger ({}): {}", ledger.backend(), summary.join(" "));
            for record in ledger.list(state, limit).await? {
                let _ = writeln!(out, "{}", one_line(&record));
            }
        }
        LedgerAction::Show { request_id: id } => {
            let records = ledger.find_with_units(&id).await?;
            if records.is_empty() {
                let history = ledger.license_history(&id).await?;
                let issued_by = ledger.find_by_license_id(&id).await?;
                if history.is_empty() && issued_by.is_empty() {
                    ledger.close().await;
                    // An error, so scripts see it in the exit status (1).
                    anyhow::bail!("no record with request id {id:?}, and no license {id:?}");
                }
                let _ = writeln!(out, "license {id}:");
                // Licenses issued before the history existed have only their record.
                if !history.iter().any(|entry| entry.operation == ISSUE_LICENSE) {
                    for record in issued_by.iter().filter(|r| r.operation == ISSUE_LICENSE) {
                        let _ = writeln!(
                            out,
                            "{}  {:<14} {:<11} {}  {}",
                            record.created_at.to_rfc3339(),
                            record.operation,
                            record.state.as_str(),
                            record.client,
                            record.request_id,
                        );
                    }
                }
                for entry in &history {
                    let _ = writeln!(out, "{}", history_line(entry));
                }
            } else {
                for record in &records {
                    let _ = writeln!(out, "{}", details(record));
                }
                let history = ledger.request_history(&id).await?;
                if !history.is_empty() {
                    let _ = writeln!(out, "licenses:");
                    for entry in &history {
                        let _ = writeln!(out, "{}", history_line(entry));
                    }
                }
            }
        }
        LedgerAction::Reconcile { limit } => {
            let licensing = build_licensing(&settings).await?;
            let ctx = RequestContext::new(
                format!("reconcile-{}", uuid::Uuid::new_v4()),
                Duration::from_secs(120),
            );
            let results = licensing.reconcile_pending(&ctx, limit).await?;
            let _ = writeln!(out, "reconciled {} pending record(s)", results.len());
            for result in results {
                let _ = writeln!(
                    out,
                    "{:<48} {:<40} {:?}",
                    result.client, result.request_id, result.outcome
                );
            }
        }
    }
    ledger.close().await;
    Ok(out)
}

fn one_line(record: &Record) -> String {
    format!(
        "{:<9} {:<40} {:<48} attempts={} license={} updated={}",
        record.state.as_str(),
        record.request_id,
        record.client,
        record.attempts,
        record.license_id.as_deref().unwrap_or("-"),
        record.updated_at.to_rfc3339(),
    )
}

fn details(record: &Record) -> String {
    format!(
        "request_id:   {}\nclient:       {}\noperation:    {}\nstate:        {}\nfingerprint:  {}\nattempts:     {}\nlicense_id:   {}\nerror:        {}\ncreated_at:   {}\nupdated_at:   {}\nlease_until:  {}\n",
        record.request_id,
        record.client,
        record.operation,
        record.state.as_str(),
        record.fingerprint,
        record.attempts,
        record.license_id.as_deref().unwrap_or("-"),
        match (&record.error_reason, &record.error_message) {
            (Some(reason), Some(message)) => format!("{reason}: {message}"),
            _ => "-".to_owned(),
        },
        record.created_at.to_rfc3339(),
        record.updated_at.to_rfc3339(),
        record.lease_expires_at.to_rfc3339(),
    )
}

/// One line of a license's history: when, what, the result, who and under which request id,
/// then what the call set or found.
fn history_line(entry: &HistoryEntry) -> String {
    let mut line = format!(
        "{}  {:<14} {:<11} {}  {}  license={}",
        entry.created_at.to_rfc3339(),
        entry.operation,
        entry.result.as_str(),
        entry.caller,
        entry.request_id,
        entry.license_id,
    );
    let time = |at: Option<chrono::DateTime<chrono::Utc>>| {
        at.map_or_else(|| "-".to_owned(), |at| at.to_rfc3339())
    };
    if let Some(subscription) = &entry.subscription_id {
        let _ = write!(line, " subscription={subscription}");
    }
    if let Some(at) = entry.event_at {
        let _ = write!(line, " event_time={}", at.to_rfc3339());
    }
    if entry.expires_before.is_some() || entry.expires_after.is_some() {
        let _ = write!(
            line,
            " expires={}->{}",
            time(entry.expires_before),
            time(entry.expires_after)
        );
    }
    if let Some(seats) = entry.wanted_seats {
        let _ = write!(line, " seats={seats}");
    }
    if let Some(revocation) = &entry.revocation {
        let _ = write!(line, " revocation={revocation:?}");
    }
    if entry.attempts > 1 {
        let _ = write!(line, " attempts={}", entry.attempts);
    }
    if let Some(detail) = &entry.detail {
        let _ = write!(line, " ({detail})");
    }
    line
}

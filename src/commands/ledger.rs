//! `licensing-gateway ledger ...`: inspect the issuance ledger and reconcile
//! records whose outcome is unknown.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context as _;

use crate::app::build_licensing;
use crate::config::Settings;
use crate::domain::RequestContext;
use crate::ledger::{Ledger, LedgerOptions, Record, State};

/// What to do with the ledger.
#[derive(Debug, Clone)]
pub enum LedgerAction {
    /// List records, newest first, optionally in one state.
    List { state: Option<State>, limit: u32 },
    /// Show every record with this request id (all callers).
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
        LedgerAction::Show { request_id } => {
            let records = ledger.find_by_request_id(&request_id).await?;
            if records.is_empty() {
                ledger.close().await;
                // An error, so scripts see it in the exit status (1).
                anyhow::bail!("no record with request id {request_id:?}");
            }
            for record in records {
                let _ = writeln!(out, "{}", details(&record));
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
        "request_id:   {}\nclient:       {}\nstate:        {}\nfingerprint:  {}\nattempts:     {}\nlicense_id:   {}\nerror:        {}\ncreated_at:   {}\nupdated_at:   {}\nlease_until:  {}\n",
        record.request_id,
        record.client,
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

//! `licensing-gateway check-config`: validates a configuration the way
//! start-up would, and more, without binding anything or calling anyone.
//!
//! On top of [`RawSettings::validate`] (types, required keys, URL forms,
//! the account, addresses) it opens every referenced file: certificates and
//! keys must parse and belong together, the client CA bundle must hold only
//! CA certificates, no certificate may be expired or not yet valid, and the
//! ledger URL must name a database it could open. Each problem is one line
//! naming the key to fix; certificates expiring within
//! [`EXPIRY_WARNING_DAYS`] are warnings, not problems.
//!
//! It does not contact Cryptlex or the database: a configuration is checked
//! in CI and in init containers, where neither may be reachable.

use std::path::Path;

use chrono::{DateTime, Utc};
use url::Url;

use crate::config::RawSettings;
use crate::grpc::tls::{self, TlsError};

/// Certificates expiring sooner than this are reported as warnings.
pub const EXPIRY_WARNING_DAYS: i64 = 14;

/// The outcome of a check: problems make the configuration unusable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
}

impl Report {
    /// Whether the configuration can be used.
    pub fn is_valid(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks `raw` completely, as of `now`.
pub fn check(raw: &RawSettings, now: DateTime<Utc>) -> Report {
    let mut report = Report::default();
    if let Err(error) = raw.validate() {
        report.problems.extend(error.problems);
    }

    if let (Some(cert), Some(key)) = (&raw.public.tls_cert_file, &raw.public.tls_key_file) {
        check_key_pair(&mut report, "public", cert, key, now);
    }
    if raw.internal.enabled {
        if let (Some(cert), Some(key)) = (&raw.internal.tls_cert_file, &raw.internal.tls_key_file) {
            check_key_pair(&mut report, "internal", cert, key, now);
        }
        if let Some(ca) = &raw.internal.client_ca_file {
            check_client_ca(&mut report, ca, now);
        }
        check_ledger_url(&mut report, raw.ledger.url.trim());
    }
    report
}

/// A certificate chain and its key: readable, parseable, matching, valid now.
fn check_key_pair(report: &mut Report, section: &str, cert: &Path, key: &Path, now: DateTime<Utc>) {
    let cert_key = format!("{section}.tls_cert_file");
    let key_key = format!("{section}.tls_key_file");
    if let Err(error) = tls::load_certified_key(cert, key) {
        let culprit = match &error {
            TlsError::Read { path, .. } | TlsError::NoKey { path }
                if *path == key.display().to_string() =>
            {
                &key_key
            }
            TlsError::KeyMismatch { .. } => &key_key,
            _ => &cert_key,
        };
        report.problems.push(format!("{culprit}: {error}"));
        return;
    }
    check_validity(report, &cert_key, cert, "certificate", now);
}

/// The client CA bundle: only CA certificates, valid now.
fn check_client_ca(report: &mut Report, ca: &Path, now: DateTime<Utc>) {
    if let Err(error) = tls::load_client_verifier(ca) {
        report
            .problems
            .push(format!("internal.client_ca_file: {error}"));
        return;
    }
    check_validity(report, "internal.client_ca_file", ca, "CA certificate", now);
}

fn check_validity(report: &mut Report, key: &str, path: &Path, what: &str, now: DateTime<Utc>) {
    let (not_before, not_after) = match tls::validity(path) {
        Ok(window) => window,
        Err(error) => {
            report.problems.push(format!("{key}: {error}"));
            return;
        }
    };
    let at = |seconds: i64| {
        DateTime::from_timestamp(seconds, 0)
            .map_or_else(|| seconds.to_string(), |time| time.to_rfc3339())
    };
    let now_seconds = now.timestamp();
    if not_after < now_seconds {
        report.problems.push(format!(
            "{key}: the {what} in {} expired on {}",
            path.display(),
            at(not_after)
        ));
    } else if not_before > now_seconds {
        report.problems.push(format!(
            "{key}: the {what} in {} is not valid before {}",
            path.display(),
            at(not_before)
        ));
    } else if not_after - now_seconds < EXPIRY_WARNING_DAYS * 24 * 60 * 60 {
        report.warnings.push(format!(
            "{key}: the {what} in {} expires on {}",
            path.display(),
            at(not_after)
        ));
    }
}

/// The ledger URL beyond its scheme (which `validate` checks): a PostgreSQL
/// URL must parse and name a host; a SQLite file's directory must exist.
fn check_ledger_url(report: &mut Report, url: &str) {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match Url::parse(url) {
            Ok(parsed) if parsed.has_host() && !parsed.host_str().unwrap_or_default().is_empty() => {}
            Ok(_) => report.problems.push(format!(
                "ledger.url: {:?} names no database host (postgres://user@host:5432/database)",
                crate::config::redact_url_password(url)
            )),
            Err(error) => report.problems.push(format!(
                "ledger.url: not a valid PostgreSQL URL ({error}); expected postgres://user@host:5432/database"
            )),
        }
    } else if let Some(rest) = url.strip_prefix("sqlite:") {
        let path = rest.trim_start_matches("//");
        let path = path.split('?').next().unwrap_or_default();
        if path.is_empty() || path == ":memory:" {
            return;
        }
        let parent = Path::new(path)
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty());
        if let Some(parent) = parent
            && !parent.is_dir()
        {
            report.problems.push(format!(
                "ledger.url: the directory {} of the SQLite file does not exist",
                parent.display()
            ));
        }
    }
}

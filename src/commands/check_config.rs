//! `licensing-gateway check-config`: validates a configuration the way
//! start-up would, and more, without binding anything or calling anyone.
//!
//! On top of [`RawSettings::validate`] (types, required keys, URL forms,
//! the account, addresses) it opens every referenced file: certificates and
//! keys must parse and belong together, the client CA bundle must hold only
//! CA certificates, no certificate may be expired or not yet valid, and the
//! ledger URL must name a database it could open (and the CA file its
//! `sslrootcert` names must exist). Each problem is one line naming the key
//! to fix. Warnings do not make a configuration invalid: certificates
//! expiring within [`EXPIRY_WARNING_DAYS`], and what
//! [`RawSettings::warnings`] finds (an admin listener reachable from other
//! machines, a PAT file others can read, a PostgreSQL ledger whose server is
//! not verified), which `serve` also logs at start-up.
//!
//! The issuance lease must outlast the longest attempt (the sum of
//! `public.max_deadline`, `cryptlex.request_timeout` and a margin), which
//! `validate` refuses otherwise; turning the settling period after unknown
//! outcomes off is allowed but warned about.
//!
//! It does not contact Cryptlex or the database: a configuration is checked
//! in CI and in init containers, where neither may be reachable.

use std::path::Path;

use chrono::{DateTime, Utc};
use url::Url;

use crate::config::{ConfigError, RawSettings};
use crate::tls::{self, TlsError};

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
    report.warnings.extend(raw.warnings());

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
        check_settling_period(&mut report, raw);
    }
    report
}

/// A zero settling period is the operator's call, but the risk deserves a line.
fn check_settling_period(report: &mut Report, raw: &RawSettings) {
    if raw.issuance.settle_after_unknown_outcome.is_zero() {
        report.warnings.push(
            "issuance.settle_after_unknown_outcome is 0s: a retry right after an unknown outcome reconciles at once, so a create Cryptlex finishes late (or a metadata search that lags) can issue a second license".into(),
        );
    }
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
/// URL must parse and name a host, and the CA file its `sslrootcert` names
/// must exist; a SQLite file's directory must exist.
fn check_ledger_url(report: &mut Report, url: &str) {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match Url::parse(url) {
            Ok(parsed) if parsed.has_host() && !parsed.host_str().unwrap_or_default().is_empty() => {
                // sqlx reads these three spellings of the CA file parameter.
                let root_certs = parsed.query_pairs().filter(|(key, _)| {
                    matches!(key.as_ref(), "sslrootcert" | "ssl-root-cert" | "ssl-ca")
                });
                for (_, ca) in root_certs {
                    if !Path::new(ca.as_ref()).is_file() {
                        report.problems.push(format!(
                            "ledger.url: the sslrootcert file {ca} does not exist (the CA that signed the database server's certificate)"
                        ));
                    }
                }
            }
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

/// Runs `check-config` on what loading gave: prints every problem (stderr)
/// or "configuration is valid" (stdout), with any warnings, and returns the
/// exit code: 0 valid, 1 invalid.
pub fn run(loaded: Result<RawSettings, ConfigError>, now: DateTime<Utc>) -> i32 {
    let report = match loaded {
        Ok(raw) => check(&raw, now),
        Err(error) => Report {
            problems: error.problems,
            warnings: Vec::new(),
        },
    };
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    if report.is_valid() {
        println!("configuration is valid");
        return 0;
    }
    let count = report.problems.len();
    let noun = if count == 1 { "problem" } else { "problems" };
    eprintln!("invalid configuration ({count} {noun}):");
    for problem in &report.problems {
        eprintln!("  - {problem}");
    }
    1
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::{Duration, SystemTime};

    use secrecy::ExposeSecret as _;

    use super::*;
    use crate::config::RawAllowedClient;
    use cryptlex_sandbox::pki::DevPki;

    const DAY: Duration = Duration::from_secs(24 * 60 * 60);

    /// A complete, valid configuration over a fresh development PKI.
    struct Fixture {
        dir: tempfile::TempDir,
        pki: DevPki,
        raw: RawSettings,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let pki = DevPki::generate(&dir.path().join("pki")).expect("pki");
            let pat_file = dir.path().join("pat");
            std::fs::write(&pat_file, "a-pat\n").expect("pat");
            // Readable by its owner only, as a PAT file should be.
            #[cfg(unix)]
            std::fs::set_permissions(
                &pat_file,
                std::os::unix::fs::PermissionsExt::from_mode(0o600),
            )
            .expect("chmod pat");
            let files = pki.files().clone();
            let mut raw = RawSettings::default();
            raw.cryptlex.account_alias = Some("acme".into());
            raw.cryptlex.pat_file = Some(pat_file);
            raw.internal.tls_cert_file = Some(files.server_cert.clone());
            raw.internal.tls_key_file = Some(files.server_key.clone());
            raw.internal.client_ca_file = Some(files.ca_cert.clone());
            raw.internal.allowed_clients = vec![RawAllowedClient {
                identity: DevPki::PAYMENT_SERVICE_ID.into(),
                products: Vec::new(),
                operations: None,
            }];
            raw.ledger.url = format!("sqlite://{}", dir.path().join("ledger.db").display());
            Self { dir, pki, raw }
        }

        fn file(&self, name: &str, contents: &str) -> PathBuf {
            let path = self.dir.path().join(name);
            std::fs::write(&path, contents).expect("write");
            path
        }

        /// Checks, asserting a valid configuration with exactly one warning
        /// containing `expected`.
        #[track_caller]
        fn assert_one_warning(&self, expected: &str) {
            let report = check(&self.raw, Utc::now());
            assert!(report.is_valid(), "{report:#?}");
            assert_eq!(report.warnings.len(), 1, "{report:#?}");
            assert!(
                report.warnings[0].contains(expected),
                "{:?} does not mention {expected:?}",
                report.warnings[0]
            );
        }

        /// Checks, asserting exactly one problem containing `expected`.
        #[track_caller]
        fn assert_one_problem(&self, expected: &str) {
            let report = check(&self.raw, Utc::now());
            assert_eq!(report.problems.len(), 1, "{:#?}", report.problems);
            assert!(
                report.problems[0].contains(expected),
                "{:?} does not mention {expected:?}",
                report.problems[0]
            );
        }
    }

    #[test]
    fn the_fixture_is_valid() {
        let fixture = Fixture::new();
        let report = check(&fixture.raw, Utc::now());
        assert!(report.is_valid(), "{report:#?}");
        assert!(report.warnings.is_empty(), "{report:#?}");
    }

    #[test]
    fn a_missing_certificate_file_is_named() {
        let mut fixture = Fixture::new();
        fixture.raw.internal.tls_cert_file = Some(fixture.dir.path().join("nope.pem"));
        fixture.assert_one_problem("internal.tls_cert_file: cannot read");
    }

    #[test]
    fn a_file_without_a_certificate_is_refused() {
        let mut fixture = Fixture::new();
        fixture.raw.internal.tls_cert_file = Some(fixture.file("garbage.pem", "not a pem"));
        fixture.assert_one_problem("holds no PEM certificate");
    }

    #[test]
    fn a_key_of_another_certificate_is_a_mismatch() {
        let mut fixture = Fixture::new();
        let other = fixture.pki.issue_server_cert().expect("other pair");
        fixture.raw.internal.tls_key_file =
            Some(fixture.file("other.key", other.key_pem.expose_secret()));
        fixture.assert_one_problem("internal.tls_key_file: the private key");
    }

    #[test]
    fn a_key_file_without_a_key_is_refused() {
        let mut fixture = Fixture::new();
        fixture.raw.internal.tls_key_file = Some(fixture.file("empty.key", ""));
        fixture.assert_one_problem("internal.tls_key_file");
    }

    #[test]
    fn a_leaf_certificate_as_client_ca_is_not_a_ca() {
        let mut fixture = Fixture::new();
        fixture.raw.internal.client_ca_file = Some(fixture.pki.files().server_cert.clone());
        fixture.assert_one_problem("is not a CA");
    }

    #[test]
    fn an_expired_server_certificate_is_refused_and_one_about_to_expire_is_a_warning() {
        let mut fixture = Fixture::new();
        let now = SystemTime::now();
        let expired = fixture
            .pki
            .issue_client_cert("localhost", now - 30 * DAY, now - DAY)
            .expect("expired");
        fixture.raw.internal.tls_cert_file = Some(fixture.file("expired.pem", &expired.cert_pem));
        fixture.raw.internal.tls_key_file =
            Some(fixture.file("expired.key", expired.key_pem.expose_secret()));
        fixture.assert_one_problem("expired on");

        let soon = fixture
            .pki
            .issue_client_cert("localhost", now - DAY, now + 3 * DAY)
            .expect("soon");
        fixture.raw.internal.tls_cert_file = Some(fixture.file("soon.pem", &soon.cert_pem));
        fixture.raw.internal.tls_key_file =
            Some(fixture.file("soon.key", soon.key_pem.expose_secret()));
        let report = check(&fixture.raw, Utc::now());
        assert!(report.is_valid(), "{report:#?}");
        assert!(report.warnings[0].contains("expires on"), "{report:#?}");
    }

    #[test]
    fn a_certificate_not_yet_valid_is_refused() {
        let mut fixture = Fixture::new();
        let now = SystemTime::now();
        let future = fixture
            .pki
            .issue_client_cert("localhost", now + DAY, now + 30 * DAY)
            .expect("future");
        fixture.raw.internal.tls_cert_file = Some(fixture.file("future.pem", &future.cert_pem));
        fixture.raw.internal.tls_key_file =
            Some(fixture.file("future.key", future.key_pem.expose_secret()));
        fixture.assert_one_problem("is not valid before");
    }

    #[test]
    fn public_tls_needs_both_files() {
        let mut fixture = Fixture::new();
        fixture.raw.public.tls_cert_file = Some(fixture.pki.files().server_cert.clone());
        fixture.assert_one_problem("must be set together");
    }

    #[test]
    fn a_non_http_base_url_is_refused() {
        let mut fixture = Fixture::new();
        fixture.raw.cryptlex.base_url = "ftp://api.cryptlex.com".into();
        fixture.assert_one_problem("cryptlex.base_url");
    }

    #[test]
    fn a_missing_account_is_refused() {
        let mut fixture = Fixture::new();
        fixture.raw.cryptlex.account_alias = None;
        fixture.assert_one_problem("account_id or account_alias");
    }

    #[test]
    fn an_empty_pat_file_is_refused() {
        let mut fixture = Fixture::new();
        fixture.raw.cryptlex.pat_file = Some(fixture.file("empty-pat", "\n"));
        let report = check(&fixture.raw, Utc::now());
        assert!(
            report
                .problems
                .iter()
                .any(|problem| problem.contains("pat_file") && problem.contains("is empty")),
            "{report:#?}"
        );
    }

    #[test]
    fn ledger_urls_must_name_a_usable_database() {
        let mut fixture = Fixture::new();
        fixture.raw.ledger.url = "mysql://db/ledger".into();
        fixture.assert_one_problem("ledger.url must start with");

        fixture.raw.ledger.url = "postgres:///ledger".into();
        fixture.assert_one_problem("names no database host");

        fixture.raw.ledger.url = "sqlite:///no/such/dir/ledger.db".into();
        fixture.assert_one_problem("/no/such/dir");

        fixture.raw.ledger.url = "postgres://gateway:secret-pw@db:5432/ledger".into();
        assert!(check(&fixture.raw, Utc::now()).is_valid());
    }

    #[test]
    fn a_bad_admin_address_is_refused() {
        let mut fixture = Fixture::new();
        fixture.raw.admin.addr = "localhost".into();
        fixture.assert_one_problem("admin.addr");
        fixture.raw.admin.enabled = false;
        assert!(check(&fixture.raw, Utc::now()).is_valid());
    }

    #[test]
    fn a_bad_otlp_endpoint_is_refused() {
        let mut fixture = Fixture::new();
        fixture.raw.otlp.enabled = true;
        fixture.raw.otlp.endpoint = "collector:4318".into();
        let report = check(&fixture.raw, Utc::now());
        assert!(
            report
                .problems
                .iter()
                .any(|problem| problem.contains("otlp.endpoint")),
            "{report:#?}"
        );
    }

    #[test]
    fn plain_http_to_a_remote_cryptlex_is_refused_and_the_loopback_sandbox_is_not() {
        let mut fixture = Fixture::new();
        fixture.raw.cryptlex.base_url = "http://api.cryptlex.com".into();
        fixture.assert_one_problem("plain http to another machine");
        fixture.raw.cryptlex.base_url = "http://127.0.0.1:8089".into();
        assert!(check(&fixture.raw, Utc::now()).is_valid());
    }

    #[test]
    fn an_in_memory_sqlite_ledger_is_refused() {
        let mut fixture = Fixture::new();
        fixture.raw.ledger.url = "sqlite::memory:".into();
        fixture.assert_one_problem("in-memory SQLite");
        fixture.raw.ledger.url = "sqlite://ledger.db?mode=memory".into();
        fixture.assert_one_problem("in-memory SQLite");
    }

    #[test]
    fn an_admin_listener_on_every_interface_is_a_warning() {
        let mut fixture = Fixture::new();
        fixture.raw.admin.addr = "0.0.0.0:9090".into();
        fixture.assert_one_warning("admin.addr 0.0.0.0:9090 is reachable from other machines");
    }

    #[cfg(unix)]
    #[test]
    fn a_world_readable_pat_file_is_a_warning() {
        let mut fixture = Fixture::new();
        let pat_file = fixture.file("open-pat", "a-pat\n");
        std::fs::set_permissions(
            &pat_file,
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )
        .expect("chmod");
        fixture.raw.cryptlex.pat_file = Some(pat_file);
        fixture.assert_one_warning("can be read by every user");
    }

    #[test]
    fn a_postgres_ledger_is_verified_with_a_ca_file_that_exists() {
        let mut fixture = Fixture::new();
        let ca = fixture.pki.files().ca_cert.display().to_string();
        fixture.raw.ledger.url =
            "postgres://gateway@db.internal:5432/ledger?sslmode=require".into();
        fixture.assert_one_warning("sslmode=require");

        fixture.raw.ledger.url = format!(
            "postgres://gateway@db.internal:5432/ledger?sslmode=verify-full&sslrootcert={ca}"
        );
        let report = check(&fixture.raw, Utc::now());
        assert!(report.is_valid(), "{report:#?}");
        assert!(report.warnings.is_empty(), "{report:#?}");

        fixture.raw.ledger.url = "postgres://gateway@db.internal:5432/ledger?sslmode=verify-full&sslrootcert=/no/such/ca.crt".into();
        fixture.assert_one_problem("sslrootcert file /no/such/ca.crt does not exist");
    }

    #[test]
    fn a_lease_of_one_millisecond_is_refused_naming_the_keys() {
        let mut fixture = Fixture::new();
        fixture.raw.issuance.lease = Duration::from_millis(1);

        let report = check(&fixture.raw, Utc::now());

        assert_eq!(report.problems.len(), 1, "{:#?}", report.problems);
        let problem = &report.problems[0];
        for key in [
            "issuance.lease (1ms)",
            "public.max_deadline (30s)",
            "cryptlex.request_timeout (10s)",
        ] {
            assert!(problem.contains(key), "{problem:?} does not name {key:?}");
        }
    }

    #[test]
    fn a_deadline_longer_than_the_lease_is_refused() {
        let mut fixture = Fixture::new();
        fixture.raw.issuance.lease = Duration::from_secs(30);
        fixture.raw.public.max_deadline = Duration::from_secs(45);
        // Above the longer deadline, so the lease is the one problem.
        fixture.raw.limits.request_timeout = Duration::from_secs(60);

        fixture.assert_one_problem("issuance.lease (30s) must be longer than");
    }

    #[test]
    fn a_lease_must_be_longer_than_deadline_plus_request_timeout_plus_the_margin() {
        let mut fixture = Fixture::new();
        fixture.raw.public.default_deadline = Duration::from_secs(2);
        fixture.raw.public.max_deadline = Duration::from_secs(2);
        fixture.raw.cryptlex.request_timeout = Duration::from_secs(1);

        // 2 s + 1 s + the 2 s margin = 5 s: a lease of exactly that is too short.
        fixture.raw.issuance.lease = Duration::from_secs(5);
        fixture.assert_one_problem("= 5s");
        fixture.raw.issuance.lease = Duration::from_millis(5001);
        let report = check(&fixture.raw, Utc::now());
        assert!(report.is_valid(), "{report:#?}");
    }

    #[test]
    fn the_lease_is_not_checked_against_deadlines_when_nothing_is_issued() {
        let mut fixture = Fixture::new();
        fixture.raw.internal.enabled = false;
        fixture.raw.issuance.lease = Duration::from_secs(1);

        let report = check(&fixture.raw, Utc::now());

        assert!(report.is_valid(), "{report:#?}");
    }

    #[test]
    fn turning_the_settling_period_off_is_a_warning() {
        let mut fixture = Fixture::new();
        fixture.raw.issuance.settle_after_unknown_outcome = Duration::ZERO;

        let report = check(&fixture.raw, Utc::now());

        assert!(report.is_valid(), "{report:#?}");
        assert_eq!(report.warnings.len(), 1, "{report:#?}");
        assert!(
            report.warnings[0].contains("issuance.settle_after_unknown_outcome"),
            "{report:#?}"
        );
    }

    #[test]
    fn an_empty_allow_list_is_refused() {
        let mut fixture = Fixture::new();
        fixture.raw.internal.allowed_clients.clear();
        fixture.assert_one_problem("internal.allowed_clients is empty");
    }
}

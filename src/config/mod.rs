//! The gateway's settings: one typed tree, loaded once from a TOML file and
//! `LICENSING_GATEWAY__...` environment variables, and validated before
//! anything binds.
//!
//! Loading takes the environment as a map (the process environment in
//! `main`, a literal map in tests), so tests never touch global state.
//! Validation reports every problem at once, each naming the key to fix.
//!
//! - `raw`: the serde shapes of the file, with their defaults.
//! - `validate`: one function per section, no I/O.
//! - `settings`: the validated, typed tree.

mod raw;
mod settings;
mod validate;

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use url::Url;

pub use raw::{
    RawAdmin, RawAllowedClient, RawBreaker, RawBudget, RawCache, RawCryptlex, RawInternal,
    RawIssuance, RawLedger, RawLimits, RawLog, RawOtlp, RawPublic, RawSettings, RawSignUp, RawTls,
    RawWebhook,
};
pub use settings::{
    CryptlexSettings, InternalSettings, IssuanceSettings, LedgerSettings, PublicSettings, Settings,
    TlsFiles, WebhookSettings,
};

/// Prefix of environment overrides: `LICENSING_GATEWAY__CRYPTLEX__ACCOUNT_ALIAS`
/// sets `cryptlex.account_alias`.
pub const ENV_PREFIX: &str = "LICENSING_GATEWAY";

/// Everything wrong with a configuration, one line per problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration:")?;
        for problem in &self.problems {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn one(problem: impl Into<String>) -> Self {
        Self {
            problems: vec![problem.into()],
        }
    }
}

impl RawSettings {
    /// Reads `file` (if given) and overlays `LICENSING_GATEWAY__*` entries of
    /// `env`. List values in the environment are comma-separated.
    pub fn load(file: Option<&Path>, env: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(file) = file {
            if !file.is_file() {
                return Err(ConfigError::one(format!(
                    "configuration file {} does not exist or is not a file",
                    file.display()
                )));
            }
            builder = builder.add_source(config::File::from(file).format(config::FileFormat::Toml));
        }
        let environment = config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .list_separator(",")
            .with_list_parse_key("public.cors_allowed_origins")
            .with_list_parse_key("issuance.quantity_as_activations")
            .source(Some(
                env.iter()
                    .filter(|(key, _)| key.starts_with(ENV_PREFIX))
                    .map(|(key, value)| (key.clone(), value.clone()))
                    .collect(),
            ));
        let config = builder
            .add_source(environment)
            .build()
            .map_err(|error| ConfigError::one(error.to_string()))?;
        let mut unknown_keys = Vec::new();
        let mut raw: Self = serde_ignored::deserialize(config, |path| {
            unknown_keys.push(path.to_string());
        })
        .map_err(|error| ConfigError::one(error.to_string()))?;
        raw.unknown_keys = unknown_keys;
        Ok(raw)
    }

    /// Reads the files the settings name by content (`cryptlex.pat_file`,
    /// `webhook.secret_file`), then checks every setting and returns the
    /// typed tree, or every problem.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let pat_file = self.cryptlex.pat_file.as_ref().map(std::fs::read_to_string);
        let webhook_secret_file = self
            .webhook
            .secret_file
            .as_ref()
            .map(std::fs::read_to_string);
        validate::settings(self, pat_file, webhook_secret_file)
    }

    /// Returns what these settings allow but an operator should look at, one
    /// line each (check-config prints them, `serve` logs them at start-up).
    /// Reads the permissions of `cryptlex.pat_file` and
    /// `webhook.secret_file`, nothing else.
    pub fn warnings(&self) -> Vec<String> {
        let pat_file = self.cryptlex.pat_file.as_deref().and_then(pat_file_access);
        let webhook_secret_file = self
            .webhook
            .secret_file
            .as_deref()
            .and_then(pat_file_access);
        let mut warnings = validate::warnings(self, pat_file);
        warnings.extend(validate::webhook_warnings(self, webhook_secret_file));
        warnings
    }
}

/// Who may read the PAT file, from its Unix permissions; `None` when they
/// cannot be read (validation reports an unreadable file) or on a system
/// without them.
#[cfg(unix)]
fn pat_file_access(path: &Path) -> Option<validate::PatFileAccess> {
    use std::os::unix::fs::MetadataExt as _;
    let metadata = std::fs::metadata(path).ok()?;
    // Linux's /proc/self belongs to the process's effective user and group;
    // where there is none, a group-readable file is judged as another group's.
    let our_group = std::fs::metadata("/proc/self").ok().map(|own| own.gid());
    Some(validate::PatFileAccess {
        mode: metadata.mode() & 0o777,
        group_is_ours: our_group == Some(metadata.gid()),
    })
}

#[cfg(not(unix))]
fn pat_file_access(_path: &Path) -> Option<validate::PatFileAccess> {
    None
}

/// Hides the password of a database URL in messages.
pub fn redact_url_password(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("REDACTED"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cryptlex::Account;
    use crate::domain::Operation;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    fn minimal_env() -> HashMap<String, String> {
        env(&[
            ("LICENSING_GATEWAY__CRYPTLEX__ACCOUNT_ALIAS", "acme"),
            ("LICENSING_GATEWAY__INTERNAL__ENABLED", "false"),
            ("LICENSING_GATEWAY__SIGN_UP__ENABLED", "false"),
        ])
    }

    #[test]
    fn defaults_plus_an_account_are_a_valid_public_only_configuration() {
        let settings = RawSettings::load(None, &minimal_env())
            .expect("loads")
            .validate()
            .expect("valid");
        assert_eq!(
            settings.public.addr,
            "127.0.0.1:50051".parse().expect("addr")
        );
        assert_eq!(settings.cryptlex.account, Account::Alias("acme".into()));
        assert!(settings.internal.is_none());
    }

    #[test]
    fn a_missing_account_is_reported_with_the_keys_to_set() {
        let mut environment = minimal_env();
        environment.remove("LICENSING_GATEWAY__CRYPTLEX__ACCOUNT_ALIAS");
        let error = RawSettings::load(None, &environment)
            .expect("loads")
            .validate()
            .expect_err("no account");
        assert!(
            error
                .problems
                .iter()
                .any(|problem| problem.contains("account_id or account_alias")),
            "{error}"
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let environment = env(&[
            ("LICENSING_GATEWAY__PUBLIC__ADDR", "nowhere"),
            ("LICENSING_GATEWAY__CRYPTLEX__BASE_URL", "ftp://x"),
            (
                "LICENSING_GATEWAY__PUBLIC__CORS_ALLOWED_ORIGINS",
                "https://ok.example,not an origin",
            ),
        ]);
        let error = RawSettings::load(None, &environment)
            .expect("loads")
            .validate()
            .expect_err("invalid");
        let text = error.to_string();
        for expected in [
            "public.addr",
            "cryptlex.base_url",
            "not an origin",
            "account_id or account_alias",
            "internal.tls_cert_file",
            "personal access token",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in {text}");
        }
    }

    #[test]
    fn unknown_keys_are_refused_together_with_every_other_problem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("gateway.toml");
        std::fs::write(
            &file,
            "[cryptlex]\naccount_alais = \"typo\"\n[public]\naddr = \"not an address\"\n",
        )
        .expect("write");
        let env = HashMap::from([("LICENSING_GATEWAY__CACHE__TLL".to_owned(), "5s".to_owned())]);
        let raw = RawSettings::load(Some(&file), &env).expect("loads");
        let problems = raw.validate().expect_err("typos").problems;
        for expected in ["cryptlex.account_alais", "cache.tll", "public.addr"] {
            assert!(
                problems.iter().any(|problem| problem.contains(expected)),
                "missing {expected:?} in {problems:?}"
            );
        }
    }

    /// The operations of each `[[internal.allowed_clients]]` entry of a
    /// TOML file with `entries` (and everything else the internal listener
    /// needs), or the problems.
    fn allowed_operations(entries: &str) -> Result<Vec<Vec<Operation>>, Vec<String>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let pat_file = dir.path().join("pat");
        std::fs::write(&pat_file, "pat").expect("write");
        let file = dir.path().join("gateway.toml");
        std::fs::write(
            &file,
            format!(
                "[cryptlex]\naccount_alias = \"acme\"\npat_file = {pat:?}\n\
                 [internal]\nenabled = true\ntls_cert_file = \"c\"\ntls_key_file = \"k\"\nclient_ca_file = \"ca\"\n\
                 {entries}",
                pat = pat_file.display().to_string(),
            ),
        )
        .expect("write");
        let raw = RawSettings::load(Some(&file), &HashMap::new()).expect("loads");
        raw.validate()
            .map(|settings| {
                let internal = settings.internal.expect("internal listener enabled");
                internal
                    .allowed_clients
                    .clients()
                    .iter()
                    .map(|client| client.operations.clone())
                    .collect()
            })
            .map_err(|error| error.problems)
    }

    #[test]
    fn an_allowed_client_without_operations_may_issue_licenses_only() {
        let operations = allowed_operations(
            "[[internal.allowed_clients]]\nidentity = \"spiffe://example.org/payments\"\n",
        )
        .expect("valid");
        assert_eq!(operations, [vec![Operation::IssueLicense]]);
    }

    #[test]
    fn allowed_clients_name_their_operations_by_rpc_name() {
        let operations = allowed_operations(
            "[[internal.allowed_clients]]\nidentity = \"spiffe://example.org/mailer\"\noperations = [\"CreatePasswordResetToken\"]\n\
             [[internal.allowed_clients]]\nidentity = \"spiffe://example.org/both\"\noperations = [\"IssueLicense\", \"CreatePasswordResetToken\"]\n",
        )
        .expect("valid");
        assert_eq!(
            operations,
            [
                vec![Operation::CreatePasswordResetToken],
                vec![Operation::IssueLicense, Operation::CreatePasswordResetToken],
            ]
        );
    }

    #[test]
    fn unknown_or_no_operations_are_problems_listed_with_the_others() {
        let problems = allowed_operations(
            "[[internal.allowed_clients]]\nidentity = \"spiffe://example.org/a\"\noperations = [\"IssueLicense\", \"DeleteEverything\"]\noperation = []\n\
             [[internal.allowed_clients]]\nidentity = \"spiffe://example.org/b\"\noperations = []\n",
        )
        .expect_err("refused");
        for expected in [
            "internal.allowed_clients[0].operations: \"DeleteEverything\" is not an operation",
            "internal.allowed_clients[1].operations is empty",
            "operation is not a setting",
        ] {
            assert!(
                problems.iter().any(|problem| problem.contains(expected)),
                "missing {expected:?} in {problems:?}"
            );
        }
    }

    /// The minimal environment with `cryptlex.pat_file` set to a file in
    /// `dir` holding `pat-secret-value`, and that file's path.
    fn env_with_pat_file(dir: &Path) -> (HashMap<String, String>, std::path::PathBuf) {
        let pat_file = dir.join("pat");
        std::fs::write(&pat_file, "pat-secret-value\n").expect("write");
        let mut environment = minimal_env();
        environment.insert(
            "LICENSING_GATEWAY__CRYPTLEX__PAT_FILE".into(),
            pat_file.display().to_string(),
        );
        (environment, pat_file)
    }

    #[test]
    fn the_pat_is_read_from_a_file_and_never_shown_in_debug_output() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (environment, _) = env_with_pat_file(dir.path());
        let settings = RawSettings::load(None, &environment)
            .expect("loads")
            .validate()
            .expect("valid");
        let pat = settings.cryptlex.admin_token.as_ref().expect("pat read");
        assert_eq!(pat.expose_secret(), "pat-secret-value");
        assert!(!format!("{settings:?}").contains("pat-secret-value"));
    }

    #[cfg(unix)]
    #[test]
    fn a_world_readable_pat_file_is_a_warning_and_a_private_one_is_not() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let (environment, pat_file) = env_with_pat_file(dir.path());
        let raw = RawSettings::load(None, &environment).expect("loads");
        let chmod = |mode| {
            std::fs::set_permissions(&pat_file, std::fs::Permissions::from_mode(mode))
                .expect("chmod")
        };

        chmod(0o644);
        let world_readable = raw.warnings();
        chmod(0o600);
        let private = raw.warnings();

        assert!(
            world_readable.len() == 1 && world_readable[0].contains("every user"),
            "{world_readable:?}"
        );
        assert!(!world_readable[0].contains("pat-secret-value"));
        assert_eq!(private, Vec::<String>::new());
        raw.validate().expect("a warning never stops start-up");
    }
}

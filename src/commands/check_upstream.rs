//! `licensing-gateway check-upstream`: asks the configured Cryptlex (the real
//! one, or the sandbox) whether this configuration will work, before go-live.
//!
//! `check-config` validates the configuration without calling anyone; this
//! command calls Cryptlex, with read-only requests only, through the same
//! client (rate budget, breaker, timeouts) the gateway uses, and reports in
//! plain words:
//!
//! 1. the base URL answers like Cryptlex (a request without a token gets 401);
//! 2. the PAT is accepted (`GET /v3/me` with it);
//! 3. the PAT holds each scope the configuration needs: sign-up needs
//!    `user:write`; issuance needs `user:read` (finding the license holder),
//!    `license:read` (reconciling by request id) and `license:write`;
//! 4. the default product and every product of the internal allow-list exist
//!    (`GET /v3/products/{id}`);
//! 5. the account id or alias names the account (`GET /v3/accounts/{id}`);
//! 6. how much of Cryptlex's rate limit is left (`X-Rate-Limit-*`).
//!
//! Cryptlex has no endpoint that tells a token its own scopes. Read scopes
//! are therefore probed with a harmless read that needs exactly that scope
//! (one user, one license); write scopes cannot be probed without writing,
//! so they are read from the PAT's own claims when it is a JWT that lists
//! them, and reported as unverified otherwise. Products and the account need
//! `product:read` and `account:read`, which the gateway itself never uses: a
//! PAT without them gets a warning to verify by hand, not a failure. A
//! configured account alias can only be checked through an account id in
//! the PAT's claims, since Cryptlex looks accounts up by id alone.
//!
//! It creates and changes nothing, prints no secret (not the PAT, nor the
//! PAT owner's email), and exits 0 when the configuration is ready and 1 when
//! it is not (warnings alone do not fail it).

use std::fmt::Write as _;
use std::time::Duration;

use crate::app::cryptlex_client;
use crate::config::{ConfigError, RawSettings, Settings};
use crate::cryptlex::{Account, Client, CryptlexError, PatClaims, RateLimitStatus, Rejection};
use crate::domain::{AdminToken, CryptlexId, RequestContext};

/// Longest one check call may take, retries included.
const CALL_BUDGET: Duration = Duration::from_secs(20);

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// As the configuration needs.
    Ok,
    /// Not verifiable from here, or worth a look; does not block go-live.
    Warning,
    /// The configuration will not work as it is.
    Problem,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub outcome: Outcome,
    pub message: String,
}

/// Everything `check-upstream` found, in the order it checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    /// Whether nothing blocks go-live.
    pub fn is_ready(&self) -> bool {
        self.problems() == 0
    }

    /// How many findings are problems.
    pub fn problems(&self) -> usize {
        self.findings
            .iter()
            .filter(|finding| finding.outcome == Outcome::Problem)
            .count()
    }

    /// The report as printed: one line per finding, then the verdict.
    pub fn render(&self) -> String {
        let mut text = String::new();
        for finding in &self.findings {
            let label = match finding.outcome {
                Outcome::Ok => "ok  ",
                Outcome::Warning => "warn",
                Outcome::Problem => "FAIL",
            };
            let _ = writeln!(text, "{label}  {}", finding.message);
        }
        let _ = match self.problems() {
            0 => writeln!(text, "ready: this configuration works against Cryptlex"),
            count => writeln!(
                text,
                "not ready: {count} problem(s) to fix before going live"
            ),
        };
        text
    }

    fn push(&mut self, outcome: Outcome, message: impl Into<String>) {
        self.findings.push(Finding {
            outcome,
            message: message.into(),
        });
    }
}

/// Runs the command for `main`: prints the report and returns the exit code
/// (0 ready, 1 not ready or the configuration does not load).
pub async fn run(loaded: Result<RawSettings, ConfigError>) -> i32 {
    let settings = match loaded.and_then(|raw| raw.validate()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("{error}\n(run `licensing-gateway check-config` for every problem)");
            return 1;
        }
    };
    let report = check(&settings).await;
    print!("{}", report.render());
    if report.is_ready() { 0 } else { 1 }
}

/// Checks `settings` against the Cryptlex they name.
pub async fn check(settings: &Settings) -> Report {
    let mut report = Report::default();
    let client = match cryptlex_client(settings) {
        Ok(client) => client,
        Err(error) => {
            report.push(Outcome::Problem, format!("{error:#}"));
            return report;
        }
    };
    let base_url = settings.cryptlex.base_url.as_str().trim_end_matches('/');
    if !base_url_answers(&client, base_url, &mut report).await {
        return report;
    }

    let Some(pat) = &settings.cryptlex.admin_token else {
        report.push(
            Outcome::Ok,
            "no PAT configured: sign-up and issuance are off, so none is needed",
        );
        return report;
    };
    let Some(rate_limit) = pat_accepted(&client, pat, &mut report).await else {
        return report;
    };
    let claims = PatClaims::read(pat);
    check_scopes(&client, settings, pat, &claims, &mut report).await;
    check_products(&client, settings, pat, &mut report).await;
    check_account(
        &client,
        &settings.cryptlex.account,
        pat,
        &claims,
        &mut report,
    )
    .await;
    report_rate_limit(&rate_limit, settings, &mut report);
    report
}

fn context() -> RequestContext {
    RequestContext::new(
        format!("check-upstream-{}", uuid::Uuid::new_v4()),
        CALL_BUDGET,
    )
}

/// A request without a token: Cryptlex answers 401, which proves the URL
/// reaches it without needing any credential.
async fn base_url_answers(client: &Client, base_url: &str, report: &mut Report) -> bool {
    match client.ping(&context()).await {
        Ok(()) => {
            report.push(
                Outcome::Ok,
                format!("{base_url} answers like Cryptlex (401 without a token)"),
            );
            true
        }
        Err(error) => {
            report.push(
                Outcome::Problem,
                format!(
                    "{base_url} does not answer like Cryptlex: {error}{}; check cryptlex.base_url (https://api.cryptlex.com, or https://api.eu.cryptlex.com for EU accounts)",
                    error_detail(&error)
                ),
            );
            false
        }
    }
}

/// `GET /v3/me` with the PAT: any valid token may call it.
async fn pat_accepted(
    client: &Client,
    pat: &AdminToken,
    report: &mut Report,
) -> Option<RateLimitStatus> {
    match client.pat_owner(&context(), pat).await {
        Ok((owner, rate_limit)) => {
            let role = if owner.role.is_empty() {
                "unknown"
            } else {
                owner.role.as_str()
            };
            report.push(
                Outcome::Ok,
                format!("the PAT is accepted (it belongs to a user with role {role})"),
            );
            Some(rate_limit)
        }
        Err(CryptlexError::Rejected {
            kind: Rejection::Unauthenticated,
            ..
        }) => {
            report.push(
                Outcome::Problem,
                "the PAT is not accepted (401): it is wrong, expired or revoked; create one in the admin portal (Settings > Personal access tokens) and set cryptlex.pat_file",
            );
            None
        }
        Err(error) => {
            report.push(
                Outcome::Problem,
                format!("could not check the PAT: {error}{}", error_detail(&error)),
            );
            None
        }
    }
}

/// A scope the configuration needs, and why.
struct Needed {
    scope: &'static str,
    why: &'static str,
}

async fn check_scopes(
    client: &Client,
    settings: &Settings,
    pat: &AdminToken,
    claims: &PatClaims,
    report: &mut Report,
) {
    let mut needed = Vec::new();
    if settings.sign_up_enabled {
        needed.push(Needed {
            scope: "user:write",
            why: "sign-up creates users",
        });
    }
    if settings.internal.is_some() {
        needed.extend([
            Needed {
                scope: "user:read",
                why: "issuance looks up the license holder",
            },
            Needed {
                scope: "license:read",
                why: "issuance finds licenses by request id to stay exactly-once",
            },
            Needed {
                scope: "license:write",
                why: "issuance creates licenses",
            },
        ]);
    }
    if needed.is_empty() {
        report.push(
            Outcome::Ok,
            "sign-up and issuance are off: the PAT needs no scope",
        );
        return;
    }
    for Needed { scope, why } in needed {
        let probe = match scope {
            "user:read" => Some(client.probe_user_read(&context(), pat).await),
            "license:read" => Some(client.probe_license_read(&context(), pat).await),
            _ => None,
        };
        let (outcome, message) = match probe {
            Some(Ok(())) => (
                Outcome::Ok,
                format!("the PAT has {scope} ({why}): a read that needs it succeeded"),
            ),
            Some(Err(CryptlexError::Rejected {
                kind: Rejection::Forbidden,
                ..
            })) => (
                Outcome::Problem,
                format!(
                    "the PAT lacks {scope}, which {why}: a read that needs it was refused (403); add the scope to the PAT"
                ),
            ),
            Some(Err(error)) => (
                Outcome::Problem,
                format!("could not check {scope}: {error}{}", error_detail(&error)),
            ),
            // Writes cannot be probed without writing.
            None => match &claims.scopes {
                Some(scopes) if scopes.iter().any(|held| held == scope) => (
                    Outcome::Ok,
                    format!(
                        "the PAT lists {scope} ({why}) in its claims; not tried, since only a write would"
                    ),
                ),
                Some(_) => (
                    Outcome::Problem,
                    format!(
                        "the PAT's claims do not list {scope}, which {why}; add the scope to the PAT"
                    ),
                ),
                None => (
                    Outcome::Warning,
                    format!(
                        "cannot verify {scope} ({why}) without writing, and the PAT does not list its scopes; check it in the admin portal"
                    ),
                ),
            },
        };
        report.push(outcome, message);
    }
}

async fn check_products(
    client: &Client,
    settings: &Settings,
    pat: &AdminToken,
    report: &mut Report,
) {
    let mut products: Vec<(&CryptlexId, &str)> = Vec::new();
    if let Some(default) = &settings.issuance.default_product_id {
        products.push((default, "issuance.default_product_id"));
    }
    if let Some(internal) = &settings.internal {
        for allowed in internal.allowed_clients.clients() {
            for product in &allowed.products {
                if !products.iter().any(|(listed, _)| *listed == product) {
                    products.push((product, "internal.allowed_clients"));
                }
            }
        }
    }
    for (product, key) in products {
        let (outcome, message) = match client.get_product(&context(), pat, product).await {
            Ok(Some(found)) => (
                Outcome::Ok,
                format!("product {product} ({key}) exists: {:?}", found.display_name),
            ),
            Ok(None) => (
                Outcome::Problem,
                format!(
                    "product {product} ({key}) does not exist in this account (404); licenses for it would be refused"
                ),
            ),
            Err(CryptlexError::Rejected {
                kind: Rejection::Forbidden,
                ..
            }) => (
                Outcome::Warning,
                format!(
                    "cannot check product {product} ({key}): the PAT lacks product:read, which only this check uses; verify the id in the admin portal"
                ),
            ),
            Err(error) => (
                Outcome::Problem,
                format!(
                    "could not check product {product} ({key}): {error}{}",
                    error_detail(&error)
                ),
            ),
        };
        report.push(outcome, message);
    }
}

async fn check_account(
    client: &Client,
    account: &Account,
    pat: &AdminToken,
    claims: &PatClaims,
    report: &mut Report,
) {
    // The id to ask for: the configured one, or (for an alias) the account
    // the PAT says it belongs to.
    let (id, configured) = match account {
        Account::Id(id) => (id.as_str(), format!("cryptlex.account_id {id}")),
        Account::Alias(alias) => match &claims.account_id {
            Some(id) => (id.as_str(), format!("cryptlex.account_alias {alias:?}")),
            None => {
                report.push(
                    Outcome::Warning,
                    format!("cannot verify cryptlex.account_alias {alias:?}: Cryptlex looks accounts up by id only and the PAT does not name its account; compare it with the alias in the admin portal (Settings > Account), or set cryptlex.account_id, which this check can verify"),
                );
                return;
            }
        },
    };
    let (outcome, message) = match client.get_account(&context(), pat, id).await {
        Ok(Some(found)) => match account {
            Account::Alias(alias) if !found.alias.eq_ignore_ascii_case(alias) => (
                Outcome::Problem,
                format!(
                    "{configured} is not the PAT's account, whose alias is {:?}; logins would fail with \"Authentication Failed\"",
                    found.alias
                ),
            ),
            _ => (
                Outcome::Ok,
                format!(
                    "{configured} is the account {:?} (alias {:?})",
                    found.company, found.alias
                ),
            ),
        },
        Ok(None) => (
            Outcome::Problem,
            format!(
                "{configured}: no such account (404); logins would fail with \"Authentication Failed\""
            ),
        ),
        Err(CryptlexError::Rejected {
            kind: Rejection::Forbidden,
            ..
        }) => (
            Outcome::Warning,
            format!(
                "cannot verify {configured}: the PAT lacks account:read, which only this check uses; compare it with the admin portal (Settings > Account)"
            ),
        ),
        Err(error) => (
            Outcome::Problem,
            format!(
                "could not check {configured}: {error}{}",
                error_detail(&error)
            ),
        ),
    };
    report.push(outcome, message);
}

fn report_rate_limit(rate_limit: &RateLimitStatus, settings: &Settings, report: &mut Report) {
    let budget = &settings.cryptlex.budget;
    let ours = format!(
        "this replica's budget is {} per {}",
        budget.max_requests,
        humantime::format_duration(budget.window)
    );
    let Some(remaining) = rate_limit.remaining else {
        report.push(
            Outcome::Warning,
            format!(
                "Cryptlex sent no X-Rate-Limit-Remaining header, so its headroom is unknown; {ours}"
            ),
        );
        return;
    };
    let period = rate_limit.period.as_deref().unwrap_or("window");
    let resets = rate_limit
        .resets_in
        .map(|wait| format!(", resetting in {}s", wait.as_secs()))
        .unwrap_or_default();
    let message = format!(
        "Cryptlex's rate limit: {remaining} requests left in the current {period} window{resets}; {ours}"
    );
    // This check spent a handful; little left means someone else on this IP
    // is spending the shared limit too.
    let outcome = if remaining < 10 {
        Outcome::Warning
    } else {
        Outcome::Ok
    };
    report.push(outcome, message);
}

/// Cryptlex's own words on a refusal, for the operator (never a secret: the
/// message is Cryptlex's, and the client truncates it).
fn error_detail(error: &CryptlexError) -> String {
    match error {
        CryptlexError::Rejected {
            message: Some(message),
            ..
        } => format!(" ({message:?})"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_with_only_warnings_is_ready_and_one_problem_is_not() {
        let mut report = Report::default();
        report.push(Outcome::Ok, "fine");
        report.push(Outcome::Warning, "look");
        assert!(report.is_ready());
        assert!(
            report
                .render()
                .ends_with("ready: this configuration works against Cryptlex\n")
        );

        report.push(Outcome::Problem, "broken");
        assert!(!report.is_ready());
        let text = report.render();
        assert!(text.contains("FAIL  broken\n"), "{text}");
        assert!(text.ends_with("not ready: 1 problem(s) to fix before going live\n"));
    }
}

//! Upstream metrics: each Cryptlex call is counted under a low-cardinality
//! route template (`GET /v3/users/{id}`), never the concrete path or query,
//! which carry ids and emails.

use std::time::Duration;

use reqwest::Method;

use super::CryptlexError;

/// Every Cryptlex operation the client calls, as `METHOD /path/{template}`:
/// the labels [`endpoint`] gives. The contract test checks each against the
/// project's OpenAPI subset (`contract/`), and debug builds refuse to send a
/// call that is not listed, so a new endpoint cannot skip its schema.
pub const OPERATIONS: &[&str] = &[
    "POST /v3/accounts/login",
    "POST /v3/accounts/login-refresh-token",
    "POST /v3/accounts/logout",
    "GET /v3/accounts/{id}",
    "GET /v3/me",
    "GET /v3/me/licenses",
    "GET /v3/products/{id}",
    "POST /v3/users",
    "GET /v3/users",
    "GET /v3/users/{id}",
    "POST /v3/licenses",
    "GET /v3/licenses",
    "GET /v3/licenses/{id}",
    // The customer portal (issue 15): one license, machines, releases.
    "GET /v3/me/licenses/{id}",
    "GET /v3/me/licenses/{id}/feature-entitlements",
    "GET /v3/me/activations",
    "GET /v3/me/activations/{id}",
    "DELETE /v3/activations/{id}",
    "GET /v3/me/releases",
    // === account (two-factor, profile, password, password reset) ===
    "POST /v3/me/2fa-secret",
    "POST /v3/me/2fa-recovery-codes",
    "PATCH /v3/me",
    "POST /v3/users/{id}/update-password",
    "POST /v3/accounts/reset-password-request",
    "POST /v3/users/{id}/reset-password",
    "POST /v3/users/{id}/reset-password-token",
    // === payment lifecycle ===
    "PATCH /v3/licenses/{id}",
    "PATCH /v3/licenses/{id}/expires-at",
    "POST /v3/licenses/{id}/renew",
];

/// The route template of a call, from its method and path segments (after
/// `/v3`). Unlisted routes are `other`, so a new call shows up without
/// minting unbounded label values.
pub(super) fn endpoint(method: &Method, path: &[&str]) -> &'static str {
    let label = template(method, path);
    debug_assert!(
        label == "other" || OPERATIONS.contains(&label),
        "{label} is missing from OPERATIONS"
    );
    label
}

fn template(method: &Method, path: &[&str]) -> &'static str {
    match (method.as_str(), path) {
        ("POST", ["accounts", "login"]) => "POST /v3/accounts/login",
        ("POST", ["accounts", "login-refresh-token"]) => "POST /v3/accounts/login-refresh-token",
        ("POST", ["accounts", "logout"]) => "POST /v3/accounts/logout",
        ("GET", ["accounts", _]) => "GET /v3/accounts/{id}",
        ("GET", ["me"]) => "GET /v3/me",
        ("GET", ["me", "licenses"]) => "GET /v3/me/licenses",
        ("GET", ["products", _]) => "GET /v3/products/{id}",
        ("POST", ["users"]) => "POST /v3/users",
        ("GET", ["users"]) => "GET /v3/users",
        ("GET", ["users", _]) => "GET /v3/users/{id}",
        ("POST", ["licenses"]) => "POST /v3/licenses",
        ("GET", ["licenses"]) => "GET /v3/licenses",
        ("GET", ["licenses", _]) => "GET /v3/licenses/{id}",
        // The customer portal (issue 15).
        ("GET", ["me", "licenses", _]) => "GET /v3/me/licenses/{id}",
        ("GET", ["me", "licenses", _, "feature-entitlements"]) => {
            "GET /v3/me/licenses/{id}/feature-entitlements"
        }
        ("GET", ["me", "activations"]) => "GET /v3/me/activations",
        ("GET", ["me", "activations", _]) => "GET /v3/me/activations/{id}",
        ("DELETE", ["activations", _]) => "DELETE /v3/activations/{id}",
        ("GET", ["me", "releases"]) => "GET /v3/me/releases",
        // === account ===
        ("POST", ["me", "2fa-secret"]) => "POST /v3/me/2fa-secret",
        ("POST", ["me", "2fa-recovery-codes"]) => "POST /v3/me/2fa-recovery-codes",
        ("PATCH", ["me"]) => "PATCH /v3/me",
        ("POST", ["users", _, "update-password"]) => "POST /v3/users/{id}/update-password",
        ("POST", ["accounts", "reset-password-request"]) => {
            "POST /v3/accounts/reset-password-request"
        }
        ("POST", ["users", _, "reset-password"]) => "POST /v3/users/{id}/reset-password",
        ("POST", ["users", _, "reset-password-token"]) => {
            "POST /v3/users/{id}/reset-password-token"
        }
        // === payment lifecycle ===
        ("PATCH", ["licenses", _]) => "PATCH /v3/licenses/{id}",
        ("PATCH", ["licenses", _, "expires-at"]) => "PATCH /v3/licenses/{id}/expires-at",
        ("POST", ["licenses", _, "renew"]) => "POST /v3/licenses/{id}/renew",
        _ => "other",
    }
}

/// Records one call: its HTTP status when an answer arrived, and an outcome
/// from a fixed set.
pub(super) fn record(
    endpoint: &'static str,
    result: &Result<u16, &CryptlexError>,
    elapsed: Duration,
) {
    let (status, outcome) = match result {
        Ok(status) => (Some(*status), "success"),
        Err(error) => match error {
            CryptlexError::Rejected { status, .. } => (Some(*status), "client_error"),
            CryptlexError::RateLimited { .. } => (Some(429), "rate_limited"),
            CryptlexError::ServerError { status, .. } => (Some(*status), "server_error"),
            CryptlexError::Redirected { status } => (Some(*status), "redirected"),
            CryptlexError::Timeout { .. } => (None, "timeout"),
            CryptlexError::DeadlineExceeded { .. } => (None, "deadline_exceeded"),
            CryptlexError::Connect(_) => (None, "connect_error"),
            CryptlexError::Transport(_) => (None, "transport_error"),
            CryptlexError::TooLarge { .. } => (None, "too_large"),
            CryptlexError::Malformed { .. } => (None, "malformed"),
            CryptlexError::BudgetExhausted { .. } => (None, "budget_exhausted"),
            CryptlexError::CircuitOpen { .. } => (None, "circuit_open"),
        },
    };
    crate::metrics::record_upstream(endpoint, status, outcome, elapsed);
}

/// Gauge `{mode="local"|"shared"|"fallback"}`: 1 for the count that bounds
/// this replica's upstream calls (its own window; the window shared with
/// other replicas; its static fallback share while the shared one is
/// unreachable), 0 for the others.
pub(crate) const BUDGET_MODE: &str = "licensing_gateway_budget_mode";

/// Publishes which count bounds the budget.
pub(super) fn budget_mode(mode: super::budget::BudgetMode) {
    for other in super::budget::BudgetMode::ALL {
        let value = if other == mode { 1.0 } else { 0.0 };
        ::metrics::gauge!(BUDGET_MODE, "mode" => other.as_str()).set(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_never_reach_the_endpoint_label() {
        assert_eq!(
            endpoint(&Method::GET, &["users", "3f1c0b6e-aaaa"]),
            "GET /v3/users/{id}"
        );
        assert_eq!(
            endpoint(&Method::GET, &["me", "licenses"]),
            "GET /v3/me/licenses"
        );
        assert_eq!(endpoint(&Method::DELETE, &["users", "x", "y"]), "other");
    }
}

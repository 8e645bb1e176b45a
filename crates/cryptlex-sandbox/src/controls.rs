//! The test-control surface: [`Controls`] in process, and the same operations as JSON under
//! `/__sandbox/` for tools running in another process.
//!
//! Controls read and steer the sandbox without going through the API, so they are never rate
//! limited, faulted or recorded, and using them never disturbs what a test is measuring. The
//! ones that change the account (a license updated as the dashboard would) still fire the
//! webhooks Cryptlex would fire, since that is what they stand for.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use http::StatusCode;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};

use crate::faults::{FaultId, FaultRule, FaultRuleJson, InvalidFaultRule};
use crate::journal::{ReceivedRequest, Stats};
use crate::portal::{ActivationRecord, PasswordResetMail, unix_seconds};
use crate::rate_limit::RateLimit;
use crate::routes::{apply_license_update, webhook_error};
use crate::seed;
use crate::shared::{Shared, lock};
use crate::state::{LicenseChange, LicenseRecord, LicenseUpdate, UserRecord};
use crate::totp;
use crate::webhooks::{InvalidWebhook, NewWebhook, WebhookDelivery};
use crate::wire::ApiError;

/// A handle to a running sandbox's state. Cloning is shallow: every clone steers the same
/// sandbox, and the handle keeps working (on stale state) after the server stops.
#[derive(Clone, Debug)]
pub struct Controls {
    shared: Arc<Shared>,
}

impl Controls {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Controls { shared }
    }

    /// Returns the recorded requests, oldest first.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        lock(&self.shared.journal)
            .requests
            .iter()
            .cloned()
            .collect()
    }

    /// Forgets the recorded requests (the counters in [`stats`](Self::stats) stay).
    pub fn clear_requests(&self) {
        lock(&self.shared.journal).clear();
    }

    /// Returns the counters.
    pub fn stats(&self) -> Stats {
        lock(&self.shared.journal).stats
    }

    /// Sets every counter back to zero.
    pub fn reset_stats(&self) {
        lock(&self.shared.journal).stats = Stats::default();
    }

    /// Returns every license, oldest first.
    pub fn licenses(&self) -> Vec<LicenseRecord> {
        lock(&self.shared.domain).licenses().to_vec()
    }

    /// Returns the licenses with one metadata entry having both this key and this value.
    pub fn licenses_with_metadata(&self, key: &str, value: &str) -> Vec<LicenseRecord> {
        lock(&self.shared.domain)
            .licenses()
            .iter()
            .filter(|license| license.has_metadata(Some(key), Some(value)))
            .cloned()
            .collect()
    }

    /// Returns how many licenses exist, seeded ones included.
    pub fn license_count(&self) -> usize {
        lock(&self.shared.domain).licenses().len()
    }

    /// Returns every user, oldest first.
    pub fn users(&self) -> Vec<UserRecord> {
        lock(&self.shared.domain).users().to_vec()
    }

    /// Finds a user by email, ignoring case.
    pub fn user_by_email(&self, email: &str) -> Option<UserRecord> {
        lock(&self.shared.domain).user_by_email(email).cloned()
    }

    /// Returns every activation (machine), oldest first, whoever owns it.
    pub fn activations(&self) -> Vec<ActivationRecord> {
        lock(&self.shared.domain).portal.activations().to_vec()
    }

    /// Returns the password-reset mails the sandbox "sent", oldest first (the newest 1000):
    /// one per `POST /v3/accounts/reset-password-request` for an existing user. Each holds a
    /// live reset token: never log one.
    pub fn mails(&self) -> Vec<PasswordResetMail> {
        lock(&self.shared.domain).portal.mails()
    }

    /// Returns the TOTP code an authenticator app set up for this user shows now: of the
    /// secret being enrolled if there is one, else of the active secret; `None` if the user
    /// is unknown or has no secret. For tests that cannot read the otpauth URL themselves
    /// (tests that can should compute it with [`totp::code`]).
    pub fn current_totp(&self, email: &str) -> Option<String> {
        let domain = lock(&self.shared.domain);
        let user = domain.user_by_email(email)?;
        let secret = domain.portal.current_secret(&user.id)?;
        totp::code(secret, unix_seconds(Utc::now()))
    }

    /// Mints a personal access token for the seeded admin with exactly `scopes`.
    pub fn create_pat(&self, scopes: &[&str]) -> SecretString {
        let token = lock(&self.shared.tokens).issue_pat(seed::ADMIN_USER_ID, scopes, Utc::now());
        SecretString::from(token)
    }

    /// Makes every user access token issued so far expired (their next use gets 401).
    /// Refresh tokens and PATs keep working.
    pub fn expire_all_access_tokens(&self) {
        lock(&self.shared.tokens).expire_all_access_tokens(Utc::now());
    }

    /// Revokes any token (access token with its refresh token, or a PAT); false if unknown.
    pub fn revoke_token(&self, token: &str) -> bool {
        lock(&self.shared.tokens).revoke(token)
    }

    /// Adds a fault rule behind the ones already added.
    pub fn add_fault(&self, rule: FaultRule) -> Result<FaultId, InvalidFaultRule> {
        lock(&self.shared.faults).add(rule)
    }

    /// Removes one rule; false if it was unknown or already used up.
    pub fn remove_fault(&self, id: FaultId) -> bool {
        lock(&self.shared.faults).remove(id)
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// Switches rate limiting (`None` turns it off); every client starts a fresh window.
    pub fn set_rate_limit(&self, limit: Option<RateLimit>) {
        lock(&self.shared.limiter).set_limit(limit);
    }

    /// Returns the current rate limit.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        lock(&self.shared.limiter).limit()
    }

    /// Registers a webhook receiving `events` (empty means every event), signed with `secret`,
    /// as if created in the dashboard; returns its id.
    ///
    /// # Panics
    /// If [`try_add_webhook`](Self::try_add_webhook) refuses it: a test's own mistake.
    pub fn add_webhook(&self, url: &str, secret: &str, events: &[&str]) -> String {
        self.try_add_webhook(url, secret, events)
            .unwrap_or_else(|error| panic!("the sandbox refused the webhook: {error}"))
    }

    /// Registers a webhook like [`add_webhook`](Self::add_webhook), or says why not: the url
    /// is not an absolute `http://` URL, the secret is empty or over 256 characters, there are
    /// more than [`MAX_WEBHOOK_EVENTS`](crate::MAX_WEBHOOK_EVENTS) events, or the sandbox
    /// already holds [`MAX_WEBHOOKS`](crate::MAX_WEBHOOKS).
    pub fn try_add_webhook(
        &self,
        url: &str,
        secret: &str,
        events: &[&str],
    ) -> Result<String, InvalidWebhook> {
        let added = self.shared.webhooks.add(NewWebhook {
            name: "sandbox control",
            url,
            token: secret,
            enabled: true,
            events: events.iter().map(|event| (*event).to_owned()).collect(),
        })?;
        Ok(added.id().to_owned())
    }

    /// Unregisters a webhook; false if unknown. Deliveries already queued still go out.
    pub fn remove_webhook(&self, id: &str) -> bool {
        self.shared.webhooks.remove(id)
    }

    /// Returns the webhook delivery log, oldest first (at most
    /// [`MAX_RECORDED_DELIVERIES`](crate::MAX_RECORDED_DELIVERIES)).
    pub fn webhook_deliveries(&self) -> Vec<WebhookDelivery> {
        self.shared.webhooks.deliveries()
    }

    /// Changes a license as the Cryptlex dashboard would (revoke, suspend, or undo either):
    /// not rate limited, not journaled, and firing `license.updated` like any update. Returns
    /// the license as changed, or `None` if there is no such license.
    pub fn update_license(&self, id: &str, change: LicenseChange) -> Option<LicenseRecord> {
        apply_license_update(&self.shared, id, change.into())
            .ok()
            .map(|(license, _)| license)
    }

    /// Moves a license's expiry as the dashboard would (`None`: it never expires, and loses its
    /// subscription interval, as `PATCH /v3/licenses/{id}/expires-at` with `null` does), e.g. into
    /// the past for a test that needs an expired license; fires `license.updated` like
    /// [`update_license`](Self::update_license). Returns the license as changed, or `None` if
    /// there is no such license.
    pub fn set_license_expiry(
        &self,
        id: &str,
        expires_at: Option<DateTime<Utc>>,
    ) -> Option<LicenseRecord> {
        let update = LicenseUpdate {
            expires_at: Some(expires_at),
            ..LicenseUpdate::default()
        };
        apply_license_update(&self.shared, id, update)
            .ok()
            .map(|(license, _)| license)
    }
}

/// The `/__sandbox/` routes, the HTTP form of [`Controls`].
pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route(
            "/__sandbox/requests",
            get(list_requests).delete(clear_requests),
        )
        .route("/__sandbox/stats", get(stats).delete(reset_stats))
        .route("/__sandbox/faults", post(add_fault).delete(clear_faults))
        .route("/__sandbox/faults/{id}", delete(remove_fault))
        .route("/__sandbox/rate-limit", get(rate_limit).put(set_rate_limit))
        .route("/__sandbox/pats", post(create_pat))
        .route(
            "/__sandbox/expire-access-tokens",
            post(expire_access_tokens),
        )
        .route("/__sandbox/licenses", get(list_licenses))
        .route("/__sandbox/licenses/{id}", patch(update_license))
        .route("/__sandbox/webhooks", post(add_webhook))
        .route("/__sandbox/webhooks/{id}", delete(remove_webhook))
        .route("/__sandbox/webhook-deliveries", get(webhook_deliveries))
        .route("/__sandbox/users", get(list_users))
        .route("/__sandbox/activations", get(list_activations))
        .route("/__sandbox/mails", get(list_mails))
        .route("/__sandbox/totp", get(current_totp))
}

async fn list_activations(State(shared): State<Arc<Shared>>) -> Json<Vec<ActivationRecord>> {
    Json(Controls::new(shared).activations())
}

async fn list_mails(State(shared): State<Arc<Shared>>) -> Json<Vec<PasswordResetMail>> {
    Json(Controls::new(shared).mails())
}

#[derive(Deserialize)]
struct TotpQuery {
    email: String,
}

#[derive(Serialize)]
struct TotpCode {
    code: String,
}

/// `GET /__sandbox/totp?email=`: `{"code": "123456"}`, or 404 if the user has no secret.
async fn current_totp(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<TotpQuery>,
) -> Response {
    match Controls::new(shared).current_totp(&query.email) {
        Some(code) => Json(TotpCode { code }).into_response(),
        None => ApiError::not_found("Two-factor secret").into_response(),
    }
}

async fn list_requests(State(shared): State<Arc<Shared>>) -> Json<Vec<ReceivedRequest>> {
    Json(Controls::new(shared).requests())
}

async fn clear_requests(State(shared): State<Arc<Shared>>) -> StatusCode {
    Controls::new(shared).clear_requests();
    StatusCode::NO_CONTENT
}

async fn stats(State(shared): State<Arc<Shared>>) -> Json<Stats> {
    Json(Controls::new(shared).stats())
}

async fn reset_stats(State(shared): State<Arc<Shared>>) -> StatusCode {
    Controls::new(shared).reset_stats();
    StatusCode::NO_CONTENT
}

#[derive(Serialize)]
struct AddedFault {
    id: FaultId,
}

async fn add_fault(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let added = serde_json::from_slice::<FaultRuleJson>(&body)
        .map_err(|error| ApiError::bad_request(format!("invalid fault rule: {error}")))
        .and_then(|json| {
            FaultRule::try_from(json)
                .and_then(|rule| Controls::new(shared).add_fault(rule))
                .map_err(|error: InvalidFaultRule| {
                    ApiError::bad_request(format!("invalid fault rule: {error}"))
                })
        });
    match added {
        Ok(id) => (StatusCode::CREATED, Json(AddedFault { id })).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn clear_faults(State(shared): State<Arc<Shared>>) -> StatusCode {
    Controls::new(shared).clear_faults();
    StatusCode::NO_CONTENT
}

async fn remove_fault(State(shared): State<Arc<Shared>>, Path(id): Path<u64>) -> Response {
    if Controls::new(shared).remove_fault(FaultId(id)) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        ApiError::not_found("Fault rule").into_response()
    }
}

/// The JSON form of a [`RateLimit`]; `null` means off.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RateLimitJson {
    max_requests: u32,
    window_ms: u64,
}

async fn rate_limit(State(shared): State<Arc<Shared>>) -> Json<Option<RateLimitJson>> {
    Json(
        Controls::new(shared)
            .rate_limit()
            .map(|limit| RateLimitJson {
                max_requests: limit.max_requests,
                window_ms: u64::try_from(limit.window.as_millis()).unwrap_or(u64::MAX),
            }),
    )
}

async fn set_rate_limit(
    State(shared): State<Arc<Shared>>,
    Json(limit): Json<Option<RateLimitJson>>,
) -> StatusCode {
    Controls::new(shared).set_rate_limit(limit.map(|limit| RateLimit {
        max_requests: limit.max_requests,
        window: std::time::Duration::from_millis(limit.window_ms),
    }));
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatRequest {
    scopes: Vec<String>,
}

#[derive(Serialize)]
struct PatResponse {
    token: String,
}

async fn create_pat(
    State(shared): State<Arc<Shared>>,
    Json(request): Json<PatRequest>,
) -> (StatusCode, Json<PatResponse>) {
    let scopes: Vec<&str> = request.scopes.iter().map(String::as_str).collect();
    let token = Controls::new(shared).create_pat(&scopes);
    let token = token.expose_secret().to_owned();
    (StatusCode::CREATED, Json(PatResponse { token }))
}

async fn expire_access_tokens(State(shared): State<Arc<Shared>>) -> StatusCode {
    Controls::new(shared).expire_all_access_tokens();
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LicenseFilter {
    metadata_key: Option<String>,
    metadata_value: Option<String>,
}

async fn list_licenses(
    State(shared): State<Arc<Shared>>,
    Query(filter): Query<LicenseFilter>,
) -> Json<Vec<LicenseRecord>> {
    let licenses = Controls::new(shared)
        .licenses()
        .into_iter()
        .filter(|license| {
            license.has_metadata(
                filter.metadata_key.as_deref(),
                filter.metadata_value.as_deref(),
            ) || (filter.metadata_key.is_none() && filter.metadata_value.is_none())
        })
        .collect();
    Json(licenses)
}

#[derive(Deserialize)]
struct UserFilter {
    email: Option<String>,
}

async fn list_users(
    State(shared): State<Arc<Shared>>,
    Query(filter): Query<UserFilter>,
) -> Json<Vec<UserRecord>> {
    let users = Controls::new(shared)
        .users()
        .into_iter()
        .filter(|user| {
            filter
                .email
                .as_deref()
                .is_none_or(|email| user.email.eq_ignore_ascii_case(email))
        })
        .collect();
    Json(users)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookRequest {
    url: String,
    secret: String,
    #[serde(default)]
    events: Vec<String>,
}

#[derive(Serialize)]
struct AddedWebhook {
    id: String,
}

async fn add_webhook(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let request = match serde_json::from_slice::<WebhookRequest>(&body) {
        Ok(request) => request,
        Err(error) => {
            return ApiError::bad_request(format!("invalid webhook: {error}")).into_response();
        }
    };
    let events: Vec<&str> = request.events.iter().map(String::as_str).collect();
    match Controls::new(shared).try_add_webhook(&request.url, &request.secret, &events) {
        Ok(id) => (StatusCode::CREATED, Json(AddedWebhook { id })).into_response(),
        Err(error) => webhook_error(error).into_response(),
    }
}

async fn remove_webhook(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    if Controls::new(shared).remove_webhook(&id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        ApiError::not_found("Webhook").into_response()
    }
}

async fn webhook_deliveries(State(shared): State<Arc<Shared>>) -> Json<Vec<WebhookDelivery>> {
    Json(Controls::new(shared).webhook_deliveries())
}

/// The JSON form of a [`LicenseChange`], plus `expiresAt` ([`Controls::set_license_expiry`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LicenseChangeJson {
    revoked: Option<bool>,
    suspended: Option<bool>,
    /// An RFC 3339 time, or `null` for "never expires"; absent leaves the expiry as it is.
    #[serde(default, rename = "expiresAt", deserialize_with = "present")]
    expires_at: Option<Option<DateTime<Utc>>>,
}

/// Tells a field given as `null` (`Some(None)`) from one left out (`None`, by `default`).
fn present<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<DateTime<Utc>>>, D::Error> {
    Option::<DateTime<Utc>>::deserialize(deserializer).map(Some)
}

/// `PATCH /__sandbox/licenses/{id}`: answers the license as the admin API shows it.
async fn update_license(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let update = match serde_json::from_slice::<LicenseChangeJson>(&body) {
        Ok(change) => LicenseUpdate {
            revoked: change.revoked,
            suspended: change.suspended,
            expires_at: change.expires_at,
            ..LicenseUpdate::default()
        },
        Err(error) => {
            return ApiError::bad_request(format!("invalid license change: {error}"))
                .into_response();
        }
    };
    match apply_license_update(&shared, &id, update) {
        Ok((_, dto)) => Json(dto).into_response(),
        Err(error) => error.into_response(),
    }
}

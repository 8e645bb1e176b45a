//! Cryptlex's outgoing webhooks: the registry, the events the sandbox fires, and their delivery.
//!
//! What Cryptlex documents (S1, its OpenAPI document): every operation that changes state
//! declares the event it triggers as an OpenAPI `callback` named after the event. Each
//! delivery is a POST of `WebhookPayloadDto` `{event, data, triggeredAt}` whose `data` is the
//! DTO the operation returns, signed in a `Webhook-Signature` header (base64 of HMAC-SHA256 of
//! the body, keyed by the webhook's `token`). The callbacks' responses say: 2xx is received,
//! 4xx "will be treated as a failure. No retries are attempted", 5xx "retries are attempted".
//! A webhook is `WebhookCreateRequestModel` `{name, url, token, enabled, events}` (at most 20
//! events), and S1's delivery log (`WebhookEventLogDto`) has the statuses `pending`, `queued`,
//! `succeeded`, `retrying`, `failed` and `cancelled`; the sandbox uses the four it can reach.
//!
//! How the sandbox delivers: one background task per sandbox (see [`run`]) takes jobs from a
//! bounded queue. Deliveries to one webhook go out one at a time, in the order their events
//! happened; different webhooks do not wait for each other. The number of deliveries not yet
//! finished is bounded ([`SandboxOptions::webhook_queue_capacity`]); an event past the bound
//! is recorded as a failed delivery at once, so firing an event never blocks an API request.
//! How many attempts Cryptlex makes, and how far apart, is not documented: the sandbox's
//! delays are options ([`SandboxOptions::webhook_retry_delays`]).
//!
//! Deliveries go the other way from the API, so they never count against its rate limit and
//! never appear in the request journal.
//!
//! [`SandboxOptions::webhook_queue_capacity`]: crate::SandboxOptions::webhook_queue_capacity
//! [`SandboxOptions::webhook_retry_delays`]: crate::SandboxOptions::webhook_retry_delays

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use http::header::{CONTENT_TYPE, USER_AGENT};
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Serialize;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::shared::{Shared, lock};
use crate::wire::timestamp;

/// The events the sandbox fires, with Cryptlex's names. Each is the name of the OpenAPI
/// callback S1 declares on the operation given (S1 = Cryptlex's OpenAPI document, the copy in
/// `donhui/jentic-public-apis`, `apis/openapi/cryptlex.com/main/v3/meta/import/input-bundle.json`).
/// Cryptlex has many more (`license.extended`, `user.deleted`, `activation.created`, ...); the
/// sandbox fires only those of the operations it models, and none for its webhook registry.
pub mod events {
    /// `POST /v3/licenses`; `data` is the `LicenseDto` the request returned.
    pub const LICENSE_CREATED: &str = "license.created";
    /// `PATCH /v3/licenses/{id}`, and the dashboard's edits (revoke, suspend), which the
    /// sandbox's license control stands for; `data` is the `LicenseDto` after the change.
    pub const LICENSE_UPDATED: &str = "license.updated";
    /// `POST /v3/licenses/{id}/renew`; `data` is the `LicenseDto` after the renewal.
    pub const LICENSE_RENEWED: &str = "license.renewed";
    /// `PATCH /v3/licenses/{id}/expires-at` (camelCase, as S1 spells it); `data` is the
    /// `LicenseDto` after the change.
    pub const LICENSE_EXPIRES_AT_UPDATED: &str = "license.expiresAt.updated";
    /// `DELETE /v3/licenses/{id}`; `data` is the `LicenseDto` as it was before deletion.
    pub const LICENSE_DELETED: &str = "license.deleted";
    /// `POST /v3/users`; `data` is the `UserDto` the request returned.
    pub const USER_CREATED: &str = "user.created";
    /// `POST /v3/accounts/login`; `data` is the signed-in user's `UserDto`.
    pub const ACCOUNT_LOGGED_IN: &str = "account.logged-in";
    /// `PATCH /v3/me` (names, email, two-factor on or off); `data` is the user's `UserDto`
    /// after the change.
    pub const USER_UPDATED: &str = "user.updated";
    /// `DELETE /v3/activations/{id}`; `data` is the activation as it was, in the user view
    /// (`UserActivationDto`, which carries `licenseId`; see `crate::portal`).
    pub const ACTIVATION_DELETED: &str = "activation.deleted";

    /// Every event above.
    pub const ALL: &[&str] = &[
        LICENSE_CREATED,
        LICENSE_UPDATED,
        LICENSE_RENEWED,
        LICENSE_EXPIRES_AT_UPDATED,
        LICENSE_DELETED,
        USER_CREATED,
        ACCOUNT_LOGGED_IN,
        USER_UPDATED,
        ACTIVATION_DELETED,
    ];
}

/// The most webhooks a sandbox holds (a sandbox bound, not Cryptlex's).
pub const MAX_WEBHOOKS: usize = 16;

/// The most events one webhook subscribes to: S1's `maxItems` of
/// `WebhookCreateRequestModel.events`.
pub const MAX_WEBHOOK_EVENTS: usize = 20;

/// The most deliveries the log keeps; older ones are forgotten, finished or not.
pub const MAX_RECORDED_DELIVERIES: usize = 1000;

/// How much of a receiver's answer is read (and then discarded) so its connection can be
/// reused; a longer answer just costs that connection.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Where a delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Queued, or its first attempt is under way.
    Pending,
    /// The receiver answered 2xx.
    Succeeded,
    /// An attempt failed in a way Cryptlex retries (5xx, no connection, timeout); another
    /// attempt follows after the next delay.
    Retrying,
    /// Given up: a 4xx (or other non-2xx, non-5xx) answer, the last attempt failed, or the
    /// queue was full when the event happened (then `attempts` is 0).
    Failed,
}

/// One event sent (or to be sent) to one webhook, as the delivery log shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookDelivery {
    pub id: String,
    pub webhook_id: String,
    pub event: String,
    pub url: String,
    pub status: DeliveryStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// The status code of the last attempt; `None` before the first answer, and when the last
    /// attempt got no answer (connection refused or reset, timeout).
    pub last_status_code: Option<u16>,
}

/// Why a webhook could not be registered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidWebhook {
    #[error("the url must be an absolute http:// URL of at most 256 characters")]
    Url,
    #[error("the secret must be 1 to 256 characters")]
    Secret,
    #[error("the name must be 1 to 256 characters")]
    Name,
    #[error(
        "a webhook subscribes to at most {MAX_WEBHOOK_EVENTS} events, each 1 to 256 characters"
    )]
    Events,
    #[error("the sandbox holds at most {MAX_WEBHOOKS} webhooks")]
    TooMany,
}

/// What a new webhook is made of, already taken from whichever form registered it.
pub(crate) struct NewWebhook<'a> {
    pub(crate) name: &'a str,
    pub(crate) url: &'a str,
    pub(crate) token: &'a str,
    pub(crate) enabled: bool,
    /// Empty means every event.
    pub(crate) events: Vec<String>,
}

/// A registered webhook. The token never leaves through `Debug`.
struct Webhook {
    id: String,
    name: String,
    url: String,
    uri: Uri,
    token: SecretString,
    enabled: bool,
    events: Vec<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Webhook")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("enabled", &self.enabled)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl Webhook {
    fn subscribes_to(&self, event: &str) -> bool {
        self.enabled && (self.events.is_empty() || self.events.iter().any(|name| name == event))
    }
}

/// `WebhookDto`, what `POST` and `GET /v3/webhooks` return. S1 lists `token` among its
/// required fields, so Cryptlex hands the secret back to any holder of `webhook:read`. No
/// `Debug`, so the token cannot end up in a log line by accident.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WebhookDto {
    id: String,
    created_at: String,
    updated_at: String,
    name: String,
    url: String,
    token: String,
    enabled: bool,
    /// `healthy`, `unhealthy` or `suspended` in S1; the sandbox never degrades a webhook
    /// (what makes Cryptlex do so is not documented), so it is always `healthy`.
    status: &'static str,
    events: Vec<String>,
}

impl From<&Webhook> for WebhookDto {
    fn from(webhook: &Webhook) -> Self {
        WebhookDto {
            id: webhook.id.clone(),
            created_at: timestamp(webhook.created_at),
            updated_at: timestamp(webhook.updated_at),
            name: webhook.name.clone(),
            url: webhook.url.clone(),
            token: webhook.token.expose_secret().to_owned(),
            enabled: webhook.enabled,
            status: "healthy",
            events: webhook.events.clone(),
        }
    }
}

impl WebhookDto {
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn created_at(&self) -> &str {
        &self.created_at
    }

    pub(crate) fn updated_at(&self) -> &str {
        &self.updated_at
    }
}

/// `WebhookPayloadDto`, the body of every delivery, fields in S1's order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Payload<'a, T> {
    event: &'a str,
    data: &'a T,
    triggered_at: String,
}

/// One delivery handed to the delivery task.
struct Job {
    delivery_id: String,
    webhook_id: String,
    uri: Uri,
    token: SecretString,
    body: Bytes,
}

/// How the delivery task treats failures; from [`SandboxOptions`](crate::SandboxOptions).
#[derive(Clone, Debug)]
pub(crate) struct DeliveryPolicy {
    /// The wait before each retry; attempts = `retry_delays.len() + 1`.
    pub(crate) retry_delays: Vec<Duration>,
    /// The longest one attempt may take, connecting and reading the answer included.
    pub(crate) attempt_timeout: Duration,
}

/// The webhook registry and the delivery log, shared by the API, the controls and the
/// delivery task.
///
/// Its mutex is a leaf: code holding it takes no other lock, so the routes may fire an event
/// while still holding the account's lock, which keeps one license's events in the order its
/// changes happened.
#[derive(Debug)]
pub(crate) struct Webhooks {
    registry: Mutex<Registry>,
    jobs: mpsc::Sender<Job>,
}

#[derive(Debug)]
struct Registry {
    hooks: Vec<Webhook>,
    deliveries: VecDeque<WebhookDelivery>,
    /// Deliveries queued or under way: at most `capacity`.
    unfinished: usize,
    capacity: usize,
}

/// The receiving end of the delivery queue, consumed by [`run`].
pub(crate) struct JobQueue(mpsc::Receiver<Job>);

impl Webhooks {
    /// Creates an empty registry whose queue holds at most `capacity` unfinished deliveries.
    pub(crate) fn new(capacity: usize) -> (Self, JobQueue) {
        let capacity = capacity.max(1);
        let (jobs, queue) = mpsc::channel(capacity);
        let webhooks = Webhooks {
            registry: Mutex::new(Registry {
                hooks: Vec::new(),
                deliveries: VecDeque::new(),
                unfinished: 0,
                capacity,
            }),
            jobs,
        };
        (webhooks, JobQueue(queue))
    }

    /// Registers a webhook and returns it as Cryptlex would.
    pub(crate) fn add(&self, new: NewWebhook<'_>) -> Result<WebhookDto, InvalidWebhook> {
        let uri = parse_url(new.url)?;
        if !(1..=256).contains(&new.token.chars().count()) {
            return Err(InvalidWebhook::Secret);
        }
        if !(1..=256).contains(&new.name.chars().count()) {
            return Err(InvalidWebhook::Name);
        }
        if new.events.len() > MAX_WEBHOOK_EVENTS
            || new
                .events
                .iter()
                .any(|event| !(1..=256).contains(&event.chars().count()))
        {
            return Err(InvalidWebhook::Events);
        }
        let mut registry = lock(&self.registry);
        if registry.hooks.len() >= MAX_WEBHOOKS {
            return Err(InvalidWebhook::TooMany);
        }
        let now = Utc::now();
        let webhook = Webhook {
            id: Uuid::new_v4().to_string(),
            name: new.name.to_owned(),
            url: new.url.to_owned(),
            uri,
            token: SecretString::from(new.token.to_owned()),
            enabled: new.enabled,
            events: new.events,
            created_at: now,
            updated_at: now,
        };
        let dto = WebhookDto::from(&webhook);
        registry.hooks.push(webhook);
        Ok(dto)
    }

    /// Unregisters a webhook; false if unknown. Deliveries already queued for it still go out:
    /// their events happened while it was registered.
    pub(crate) fn remove(&self, id: &str) -> bool {
        let mut registry = lock(&self.registry);
        let before = registry.hooks.len();
        registry.hooks.retain(|webhook| webhook.id != id);
        registry.hooks.len() != before
    }

    /// Returns every webhook, oldest first.
    pub(crate) fn list(&self) -> Vec<WebhookDto> {
        lock(&self.registry)
            .hooks
            .iter()
            .map(WebhookDto::from)
            .collect()
    }

    /// Returns the delivery log, oldest first.
    pub(crate) fn deliveries(&self) -> Vec<WebhookDelivery> {
        lock(&self.registry).deliveries.iter().cloned().collect()
    }

    /// Queues `event` with `data` for every enabled webhook subscribed to it. Never waits:
    /// past the queue's bound the delivery is recorded as failed instead.
    pub(crate) fn fire<T: Serialize>(&self, event: &str, data: &T) {
        let mut registry = lock(&self.registry);
        if !registry
            .hooks
            .iter()
            .any(|webhook| webhook.subscribes_to(event))
        {
            return;
        }
        let payload = Payload {
            event,
            data,
            triggered_at: timestamp(Utc::now()),
        };
        let body = match serde_json::to_vec(&payload) {
            Ok(body) => Bytes::from(body),
            Err(error) => {
                // Only a broken Serialize impl gets here; the DTOs are plain data.
                tracing::error!(%error, event, "could not serialise a webhook payload");
                return;
            }
        };
        let Registry {
            hooks,
            deliveries,
            unfinished,
            capacity,
        } = &mut *registry;
        for webhook in hooks.iter().filter(|webhook| webhook.subscribes_to(event)) {
            let mut delivery = WebhookDelivery {
                id: Uuid::new_v4().to_string(),
                webhook_id: webhook.id.clone(),
                event: event.to_owned(),
                url: webhook.url.clone(),
                status: DeliveryStatus::Pending,
                attempts: 0,
                last_status_code: None,
            };
            let job = Job {
                delivery_id: delivery.id.clone(),
                webhook_id: webhook.id.clone(),
                uri: webhook.uri.clone(),
                token: webhook.token.clone(),
                body: body.clone(),
            };
            // `unfinished` is the bound; the channel's own capacity equals it, so `try_send`
            // fails only when the delivery task is gone (the sandbox stopped).
            if *unfinished < *capacity && self.jobs.try_send(job).is_ok() {
                *unfinished += 1;
            } else {
                tracing::warn!(event, webhook_id = %webhook.id, "webhook queue full; delivery failed");
                delivery.status = DeliveryStatus::Failed;
            }
            deliveries.push_back(delivery);
            while deliveries.len() > MAX_RECORDED_DELIVERIES {
                deliveries.pop_front();
            }
        }
    }

    /// Records the outcome of one attempt; a final outcome frees its place in the queue.
    fn record_attempt(
        &self,
        delivery_id: &str,
        status: DeliveryStatus,
        attempts: u32,
        last_status_code: Option<u16>,
    ) {
        let mut registry = lock(&self.registry);
        if !matches!(status, DeliveryStatus::Pending | DeliveryStatus::Retrying) {
            registry.unfinished = registry.unfinished.saturating_sub(1);
        }
        // A delivery pushed out of the log by newer ones is no longer shown; nothing to do.
        if let Some(delivery) = registry
            .deliveries
            .iter_mut()
            .rev()
            .find(|delivery| delivery.id == delivery_id)
        {
            delivery.status = status;
            delivery.attempts = attempts;
            delivery.last_status_code = last_status_code;
        }
    }
}

/// Accepts an absolute `http://` URL of at most 256 characters (S1's `maxLength`). The
/// sandbox has no TLS client, and delivers to local receivers only in practice.
fn parse_url(text: &str) -> Result<Uri, InvalidWebhook> {
    if !(1..=256).contains(&text.chars().count()) {
        return Err(InvalidWebhook::Url);
    }
    let url = url::Url::parse(text).map_err(|_| InvalidWebhook::Url)?;
    if url.scheme() != "http" || url.host_str().is_none_or(str::is_empty) {
        return Err(InvalidWebhook::Url);
    }
    url.as_str().parse().map_err(|_| InvalidWebhook::Url)
}

/// Returns Cryptlex's `Webhook-Signature` for `body`: base64 of HMAC-SHA256 keyed by `token`.
pub(crate) fn signature(token: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, token.as_bytes());
    BASE64.encode(ring::hmac::sign(&key, body).as_ref())
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// The delivery task: runs until aborted (the sandbox stopping aborts it, which also drops
/// every attempt under way and every open connection).
///
/// Each webhook has at most one delivery under way; its later jobs wait in `waiting` in
/// arrival order. A webhook's entry in `waiting` exists exactly while it is busy.
pub(crate) async fn run(shared: Arc<Shared>, queue: JobQueue, policy: DeliveryPolicy) {
    let JobQueue(mut jobs) = queue;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(policy.attempt_timeout));
    let client: HttpClient = Client::builder(TokioExecutor::new()).build(connector);
    let policy = Arc::new(policy);
    let mut waiting: HashMap<String, VecDeque<Job>> = HashMap::new();
    let mut under_way = FuturesUnordered::new();
    loop {
        tokio::select! {
            job = jobs.recv() => {
                // `shared` holds the sender, so the queue stays open while this task lives.
                let Some(job) = job else { break };
                match waiting.get_mut(&job.webhook_id) {
                    Some(later) => later.push_back(job),
                    None => {
                        waiting.insert(job.webhook_id.clone(), VecDeque::new());
                        under_way.push(deliver(Arc::clone(&shared), client.clone(), Arc::clone(&policy), job));
                    }
                }
            }
            Some(webhook_id) = under_way.next() => {
                match waiting.get_mut(&webhook_id).and_then(VecDeque::pop_front) {
                    Some(job) => under_way.push(deliver(Arc::clone(&shared), client.clone(), Arc::clone(&policy), job)),
                    None => {
                        waiting.remove(&webhook_id);
                    }
                }
            }
        }
    }
}

/// Makes every attempt one delivery gets and records each; returns the webhook's id.
async fn deliver(
    shared: Arc<Shared>,
    client: HttpClient,
    policy: Arc<DeliveryPolicy>,
    job: Job,
) -> String {
    let signature = signature(job.token.expose_secret(), &job.body);
    let max_attempts = policy.retry_delays.len() + 1;
    let mut attempts: u32 = 0;
    for attempt in 1..=max_attempts {
        attempts = attempts.saturating_add(1);
        let answer = attempt_once(&client, &job, &signature, policy.attempt_timeout).await;
        let last = attempt == max_attempts;
        let status = match answer {
            Some(code) if code.is_success() => DeliveryStatus::Succeeded,
            Some(code) if code.is_server_error() && !last => DeliveryStatus::Retrying,
            None if !last => DeliveryStatus::Retrying,
            // 4xx (and anything else neither 2xx nor 5xx) is not retried, as S1 says of 4xx.
            _ => DeliveryStatus::Failed,
        };
        shared.webhooks.record_attempt(
            &job.delivery_id,
            status,
            attempts,
            answer.map(|code| code.as_u16()),
        );
        if status != DeliveryStatus::Retrying {
            break;
        }
        tokio::time::sleep(policy.retry_delays[attempt - 1]).await;
    }
    job.webhook_id
}

/// One POST; returns the answer's status, or `None` if none came within `timeout`.
async fn attempt_once(
    client: &HttpClient,
    job: &Job,
    signature: &str,
    timeout: Duration,
) -> Option<StatusCode> {
    let signature = HeaderValue::from_str(signature).ok()?;
    let request = Request::post(job.uri.clone())
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .header(
            USER_AGENT,
            HeaderValue::from_static("cryptlex-sandbox-webhooks"),
        )
        .header("Webhook-Signature", signature)
        .body(Full::new(job.body.clone()))
        .ok()?;
    let exchange = async {
        let answer = client.request(request).await.ok()?;
        let status = answer.status();
        // Reading the answer lets the connection be reused; its content does not matter.
        let _ = Limited::new(answer.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await;
        Some(status)
    };
    tokio::time::timeout(timeout, exchange).await.ok().flatten()
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn the_signature_is_base64_of_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let expected = "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM=";
        assert_eq!(signature("Jefe", b"what do ya want for nothing?"), expected);
    }

    #[test]
    fn only_absolute_http_urls_are_accepted() {
        assert!(parse_url("http://127.0.0.1:8080/webhooks/cryptlex").is_ok());
        for bad in [
            "",
            "https://example.com/hook",
            "ftp://example.com",
            "/relative",
            "not a url",
        ] {
            assert_eq!(parse_url(bad).unwrap_err(), InvalidWebhook::Url, "{bad}");
        }
        let long = format!("http://example.com/{}", "a".repeat(250));
        assert_eq!(parse_url(&long).unwrap_err(), InvalidWebhook::Url);
    }

    #[test]
    fn an_empty_event_list_subscribes_to_everything_and_a_disabled_hook_to_nothing() {
        let (webhooks, _queue) = Webhooks::new(4);
        let hook = |events: Vec<String>, enabled| NewWebhook {
            name: "n",
            url: "http://127.0.0.1:1/",
            token: "t",
            enabled,
            events,
        };
        webhooks.add(hook(Vec::new(), true)).unwrap();
        webhooks
            .add(hook(vec![events::USER_CREATED.to_owned()], true))
            .unwrap();
        webhooks.add(hook(Vec::new(), false)).unwrap();

        webhooks.fire(events::LICENSE_UPDATED, &serde_json::json!({"id": "l"}));
        webhooks.fire(events::USER_CREATED, &serde_json::json!({"id": "u"}));

        let fired: Vec<String> = webhooks
            .deliveries()
            .into_iter()
            .map(|delivery| delivery.event)
            .collect();
        assert_eq!(
            fired,
            [
                events::LICENSE_UPDATED,
                events::USER_CREATED,
                events::USER_CREATED
            ]
        );
    }
}

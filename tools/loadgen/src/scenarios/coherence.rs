//! Coherence: a user has their license page in the gateway's cache; the license is then
//! revoked "in the dashboard" (the sandbox's `PATCH /__sandbox/licenses/{id}`), which
//! sends the gateway's registered webhook. The next `ListMyLicenses` after the delivery
//! should show the license revoked, having cost exactly one upstream call (the re-fetch
//! the webhook made necessary) and none spent polling.
//!
//! The webhook's secret is the sandbox's (`<dir>/webhook-secret`, which the gateway's
//! configuration then names) when there is one; otherwise one made here and handed to
//! the gateway as `LICENSING_GATEWAY__WEBHOOK__SECRET`. It is never printed.

use std::time::Duration;

use anyhow::Context as _;
use licensing_gateway::grpc::pb::user_service_client::UserServiceClient;
use tokio::time::Instant;

use super::browse::sign_in;
use super::{Env, user_request};
use crate::process::GatewayProcess;
use crate::targets::{Profile, connect, list_request};

/// How long the delivery of the revocation's webhook is waited for.
const DELIVERY_WITHIN: Duration = Duration::from_secs(10);
/// How long, when the next read did not show the revocation, reads are repeated to see
/// when (and at what cost) it would.
const POLL_FOR: Duration = Duration::from_secs(15);
const POLL_EVERY: Duration = Duration::from_millis(500);

/// What the coherence scenario found; `notes` say plainly what was missing.
#[derive(Debug, Default)]
pub(crate) struct CoherenceOutcome {
    pub(super) notes: Vec<String>,
    pub(super) webhook_registered: bool,
    pub(super) revoke_available: bool,
    /// The delivery's final status (`succeeded`, `failed`, ...) and when it got there.
    pub(super) delivery: Option<(String, Duration)>,
    /// Whether the first read after the delivery (or after the revocation, without a
    /// webhook) showed the license revoked.
    pub(super) next_read_revoked: Option<bool>,
    /// Upstream requests from the revocation to that read's answer, and what they were.
    pub(super) upstream_between: Option<u64>,
    pub(super) upstream_requests: Vec<String>,
    /// When the next read did not show it: how long until a read did (polling), and the
    /// upstream requests the polling cost.
    pub(super) polled: Option<(Option<Duration>, u64)>,
}

pub(super) async fn run(env: &Env<'_>) -> anyhow::Result<CoherenceOutcome> {
    let mut outcome = CoherenceOutcome::default();
    let user = env
        .create_users(1, 1_000)
        .await?
        .pop()
        .context("no user created")?;
    let secret_file = env.dir.join("webhook-secret");
    let (secret, gateway) = if secret_file.exists() {
        let secret = std::fs::read_to_string(&secret_file)
            .context("reading the sandbox's webhook secret")?
            .trim()
            .to_owned();
        let gateway = GatewayProcess::start(env.bin, env.sandbox, Profile::Browsing).await?;
        (secret, gateway)
    } else {
        let secret = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let extra = [(
            "LICENSING_GATEWAY__WEBHOOK__SECRET".to_owned(),
            secret.clone(),
        )];
        match GatewayProcess::start_with(env.bin, env.sandbox, Profile::Browsing, &extra).await {
            Ok(gateway) => (secret, gateway),
            Err(error) => {
                outcome.notes.push(format!(
                    "The gateway would not start with `LICENSING_GATEWAY__WEBHOOK__SECRET` \
                     ({error:#}): this build has no webhook settings; started without it."
                ));
                let gateway =
                    GatewayProcess::start(env.bin, env.sandbox, Profile::Browsing).await?;
                (secret, gateway)
            }
        }
    };
    let result = check(env, &user, &secret, &gateway, &mut outcome).await;
    gateway.stop().await;
    result.map(|()| outcome)
}

async fn check(
    env: &Env<'_>,
    user: &super::User,
    secret: &str,
    gateway: &GatewayProcess,
    outcome: &mut CoherenceOutcome,
) -> anyhow::Result<()> {
    let client = UserServiceClient::new(connect(gateway.public_addr).await?);
    env.limit_on();
    let mut calls = Vec::new();
    let token = sign_in(
        &client,
        user,
        0,
        Instant::now() + Duration::from_secs(10),
        &mut calls,
    )
    .await
    .context("the user could not sign in")?;
    let read = || {
        let mut client = client.clone();
        let request = user_request(list_request(), &user.address, Some(&token));
        let license_id = user.license_id.clone();
        async move {
            let page = client
                .list_my_licenses(request)
                .await
                .context("ListMyLicenses")?
                .into_inner();
            page.licenses
                .iter()
                .find(|license| license.id == license_id)
                .map(|license| license.revoked)
                .context("the user's license is not on their page")
        }
    };
    // The page the gateway now holds.
    if read().await? {
        anyhow::bail!("the license was revoked before the scenario revoked it");
    }

    let url = format!("http://{}/webhooks/cryptlex", gateway.public_addr);
    let webhook = env.admin.add_webhook(&url, secret).await?;
    outcome.webhook_registered = webhook.is_some();
    if webhook.is_none() {
        outcome.notes.push(
            "`POST /__sandbox/webhooks` answered 404: this sandbox cannot send webhooks.".into(),
        );
    }

    let mark = env.controls.stats();
    env.controls.clear_requests();
    outcome.revoke_available = env.admin.revoke_license(&user.license_id).await?;
    if !outcome.revoke_available {
        outcome.notes.push(
            "`PATCH /__sandbox/licenses/{id}` answered 404: control not available, so \
             nothing was revoked and there is nothing to check."
                .into(),
        );
        return Ok(());
    }
    let revoked_at = Instant::now();
    if let Some(webhook_id) = &webhook {
        outcome.delivery = wait_for_delivery(env, webhook_id, outcome).await;
    }
    let revoked = read().await;
    let between = env.controls.stats().requests - mark.requests;
    outcome.upstream_between = Some(between);
    outcome.upstream_requests = env
        .controls
        .requests()
        .iter()
        .map(|request| format!("{} {}", request.method, request.path))
        .collect();
    let revoked = revoked?;
    outcome.next_read_revoked = Some(revoked);
    if !revoked {
        let polling_from = env.controls.stats();
        let mut shown_after = None;
        while revoked_at.elapsed() < POLL_FOR {
            tokio::time::sleep(POLL_EVERY).await;
            if read().await.unwrap_or(false) {
                shown_after = Some(revoked_at.elapsed());
                break;
            }
        }
        let spent = env.controls.stats().requests - polling_from.requests;
        outcome.polled = Some((shown_after, spent));
    }
    Ok(())
}

/// Polls the sandbox's deliveries until the one for `webhook_id` has succeeded or failed
/// (or [`DELIVERY_WITHIN`] passes); its status and how long it took.
async fn wait_for_delivery(
    env: &Env<'_>,
    webhook_id: &str,
    outcome: &mut CoherenceOutcome,
) -> Option<(String, Duration)> {
    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < DELIVERY_WITHIN {
        match env.admin.webhook_deliveries().await {
            Ok(Some(deliveries)) => {
                // The latest delivery to this webhook.
                let status = deliveries
                    .iter()
                    .rev()
                    .filter(|delivery| {
                        delivery.get("webhookId").and_then(|id| id.as_str()) == Some(webhook_id)
                    })
                    .find_map(|delivery| delivery.get("status").and_then(|s| s.as_str()))
                    .map(str::to_owned);
                if let Some(status) = &status
                    && (status == "succeeded" || status == "failed")
                {
                    return Some((status.clone(), started.elapsed()));
                }
                last = status;
            }
            Ok(None) => {
                outcome.notes.push(
                    "`GET /__sandbox/webhook-deliveries` answered 404: deliveries cannot be \
                     watched; the read was made at once."
                        .into(),
                );
                return None;
            }
            Err(error) => {
                outcome
                    .notes
                    .push(format!("reading the webhook deliveries failed: {error:#}"));
                return None;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    outcome.notes.push(format!(
        "The webhook delivery was not done within {DELIVERY_WITHIN:?} (last status: {}).",
        last.as_deref().unwrap_or("none seen")
    ));
    last.map(|status| (status, started.elapsed()))
}

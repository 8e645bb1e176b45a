//! A read flood during sales: many distinct sessions each read `GetProfile` about once a
//! second (far beyond Cryptlex's 10 requests/s), while the payment service issues a
//! license every 0.75 s over mutual TLS on the internal listener. What matters is that
//! every license is issued quickly and that the reads the budget cannot carry are
//! refused at once rather than after a wait.
//!
//! The sessions sign in beforehand, outside the measured period, at a pace the budget
//! carries (three a second).

use std::time::Duration;

use licensing_gateway::grpc::pb::issuance_service_client::IssuanceServiceClient;
use licensing_gateway::grpc::pb::user_service_client::UserServiceClient;
use licensing_gateway::grpc::pb::{GetProfileRequest, IssueLicenseRequest, issue_license_request};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::Code;

use super::browse::sign_in;
use super::{Call, Env, User, timed, uniform, user_request};
use crate::load::busiest_window;
use crate::process::GatewayProcess;
use crate::targets::{CALL_TIMEOUT, Profile, connect};

/// How long, past the end of the flood, the calls still in flight may take.
const DRAIN: Duration = Duration::from_secs(15);
/// The pause between the sign-ins and the flood, so their calls leave Cryptlex's window.
const QUIET: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy)]
pub(crate) struct FloodPlan {
    pub(super) sessions: usize,
    pub(super) sign_ins_per_second: f64,
    pub(super) read_for: Duration,
    pub(super) issue_every: Duration,
}

impl FloodPlan {
    pub(super) fn full() -> Self {
        FloodPlan {
            sessions: 120,
            sign_ins_per_second: 3.0,
            read_for: Duration::from_secs(30),
            issue_every: Duration::from_millis(750),
        }
    }
}

/// What the flood measured.
pub(crate) struct FloodOutcome {
    pub(super) plan: FloodPlan,
    /// Sessions that signed in beforehand (the rest do not read).
    pub(super) signed_in: usize,
    pub(super) sign_in_time: Duration,
    /// Every sign-in attempt (not measured; shown for what the setup cost).
    pub(super) sign_in_calls: Vec<Call>,
    pub(super) reads: Vec<Call>,
    pub(super) issues: Vec<Call>,
    pub(super) upstream: u64,
    pub(super) responses_429: u64,
    pub(super) busiest_window: usize,
}

pub(super) async fn run(env: &Env<'_>, plan: FloodPlan) -> anyhow::Result<FloodOutcome> {
    let users = env.create_users(plan.sessions, 0).await?;
    let gateway = GatewayProcess::start(env.bin, env.sandbox, Profile::Browsing).await?;
    let result = flood(env, plan, &users, &gateway).await;
    gateway.stop().await;
    result
}

async fn flood(
    env: &Env<'_>,
    plan: FloodPlan,
    users: &[User],
    gateway: &GatewayProcess,
) -> anyhow::Result<FloodOutcome> {
    let channel = connect(gateway.public_addr).await?;
    let client = UserServiceClient::new(channel);
    let payment = super::payment_channel(env, gateway.internal_addr).await?;
    env.limit_on();

    // Sign-ins, paced so the budget carries them.
    let pace = Duration::from_secs_f64(1.0 / plan.sign_ins_per_second);
    let sign_in_started = Instant::now();
    let sign_in_until =
        sign_in_started + pace.mul_f64(users.len() as f64) + Duration::from_secs(20);
    eprintln!(
        "  {} sign-ins at {}/s before the flood",
        users.len(),
        plan.sign_ins_per_second
    );
    let mut tasks = JoinSet::new();
    for (i, user) in users.iter().enumerate() {
        let client = client.clone();
        let user = user.clone();
        let at = sign_in_started + pace.mul_f64(i as f64);
        tasks.spawn(async move {
            tokio::time::sleep_until(at).await;
            let mut calls = Vec::new();
            let token = sign_in(&client, &user, 0, sign_in_until, &mut calls).await;
            (user, token, calls)
        });
    }
    let mut sessions = Vec::new();
    let mut sign_in_calls = Vec::new();
    while let Ok(Some(joined)) =
        tokio::time::timeout_at(sign_in_until + DRAIN, tasks.join_next()).await
    {
        if let Ok((user, token, calls)) = joined {
            sign_in_calls.extend(calls);
            if let Some(token) = token {
                sessions.push((user, token));
            }
        }
    }
    tasks.abort_all();
    let sign_in_time = sign_in_started.elapsed();
    if sessions.is_empty() {
        anyhow::bail!("no session signed in ({} attempts)", sign_in_calls.len());
    }
    tokio::time::sleep(QUIET).await;

    // The flood.
    env.controls.clear_requests();
    let before = env.controls.stats();
    eprintln!(
        "  {} sessions read GetProfile every ~1 s for {:?}; a license every {:?}",
        sessions.len(),
        plan.read_for,
        plan.issue_every
    );
    let started = Instant::now();
    let until = started + plan.read_for;
    let mut readers = JoinSet::new();
    for (i, (user, token)) in sessions.iter().enumerate() {
        let mut client = client.clone();
        let (user, token) = (user.clone(), token.clone());
        readers.spawn(async move {
            let mut rng = crate::soak::Rng(0xf100d + i as u64);
            let mut calls = Vec::new();
            let mut next = started + uniform(&mut rng, Duration::ZERO, Duration::from_secs(1));
            while next < until {
                tokio::time::sleep_until(next).await;
                let request = user_request(GetProfileRequest {}, &user.address, Some(&token));
                let (call, _) = timed("GetProfile", 0, client.get_profile(request)).await;
                calls.push(call);
                next += uniform(
                    &mut rng,
                    Duration::from_millis(800),
                    Duration::from_millis(1200),
                );
            }
            calls
        });
    }
    let mut issuers = JoinSet::new();
    let attempts = (plan.read_for.as_secs_f64() / plan.issue_every.as_secs_f64()).floor() as usize;
    let issuer = IssuanceServiceClient::new(payment);
    let paying: Vec<String> = sessions
        .iter()
        .map(|(user, _)| user.user_id.clone())
        .collect();
    for k in 0..attempts {
        tokio::time::sleep_until(started + plan.issue_every.mul_f64(k as f64)).await;
        let mut issuer = issuer.clone();
        let user_id = paying[k % paying.len()].clone();
        issuers.spawn(async move {
            let mut request = tonic::Request::new(IssueLicenseRequest {
                request_id: format!("loadgen-flood-{}", uuid::Uuid::new_v4().simple()),
                user: Some(issue_license_request::User::UserId(user_id)),
                ..Default::default()
            });
            request.set_timeout(CALL_TIMEOUT);
            timed("IssueLicense", 0, issuer.issue_license(request))
                .await
                .0
        });
    }
    let deadline = until + DRAIN;
    let mut reads = Vec::new();
    while let Ok(Some(joined)) = tokio::time::timeout_at(deadline, readers.join_next()).await {
        if let Ok(calls) = joined {
            reads.extend(calls);
        }
    }
    readers.abort_all();
    let mut issues = Vec::new();
    while let Ok(Some(joined)) = tokio::time::timeout_at(deadline, issuers.join_next()).await {
        if let Ok(call) = joined {
            issues.push(call);
        }
    }
    // An issuance abandoned at the deadline still counts as attempted.
    let abandoned = issuers.len();
    issuers.abort_all();
    issues.extend((0..abandoned).map(|_| Call {
        rpc: "IssueLicense",
        code: Code::DeadlineExceeded,
        latency: deadline - started,
        replica: 0,
    }));
    let after = env.controls.stats();
    let busiest = busiest_window(
        &env.controls
            .requests()
            .iter()
            .map(|request| request.received_at)
            .collect::<Vec<_>>(),
        chrono::Duration::seconds(5),
    );
    Ok(FloodOutcome {
        plan,
        signed_in: sessions.len(),
        sign_in_time,
        sign_in_calls,
        reads,
        issues,
        upstream: after.requests - before.requests,
        responses_429: after.responses_429 - before.responses_429,
        busiest_window: busiest,
    })
}

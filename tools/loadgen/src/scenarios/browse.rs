//! A busy evening: users sign in through the gateway, spread evenly over a period, then
//! each views a page every 2 to 4 s (uniform) until the end; a quarter of the views are
//! reloaded a second later. A page view is what a server-rendered page asks for at once:
//! `GetProfile` twice (layout and page) and `ListMyLicenses` once.
//!
//! With several replicas (`licensing-gateway serve` processes with the same
//! configuration and one PostgreSQL ledger, in a schema of the run's own), users are
//! spread round-robin over them, and afterwards a license issued through one replica's
//! internal listener is looked for on another's next `ListMyLicenses`.

use std::time::Duration;

use anyhow::Context as _;
use licensing_gateway::grpc::pb::issuance_service_client::IssuanceServiceClient;
use licensing_gateway::grpc::pb::user_service_client::UserServiceClient;
use licensing_gateway::grpc::pb::{
    GetProfileRequest, IssueLicenseRequest, LoginRequest, issue_license_request,
};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::Code;
use tonic::transport::Channel;

use super::{Call, Env, PASSWORD, User, retry_delay, timed, uniform, user_request};
use crate::load::busiest_window;
use crate::process::{GatewayProcess, sum_counter};
use crate::targets::{Profile, connect, list_request};

/// HTTP/2 connections from the website's backend to each replica.
const CONNECTIONS_PER_REPLICA: usize = 2;
/// How long the cross-replica check waits for the license to show up.
const VISIBLE_WITHIN: Duration = Duration::from_secs(10);
/// How long, past the end of the browsing, the calls still in flight may take.
const DRAIN: Duration = Duration::from_secs(15);

/// The shape of one busy evening.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BrowsePlan {
    pub(super) name: &'static str,
    pub(super) users: usize,
    /// Sign-ins are spread evenly over this period from the start.
    pub(super) sign_in_over: Duration,
    /// Browsing stops at this time from the start.
    pub(super) until: Duration,
    pub(super) replicas: usize,
    /// The share of calls that should be OK, in percent.
    pub(super) target_ok_percent: f64,
}

impl BrowsePlan {
    pub(super) fn busy_evening_30() -> Self {
        BrowsePlan {
            name: "busy-evening-30",
            users: 30,
            sign_in_over: Duration::from_secs(15),
            until: Duration::from_secs(40),
            replicas: 1,
            target_ok_percent: 99.9,
        }
    }

    pub(super) fn busy_evening_100() -> Self {
        BrowsePlan {
            name: "busy-evening-100",
            users: 100,
            sign_in_over: Duration::from_secs(60),
            until: Duration::from_secs(90),
            replicas: 1,
            target_ok_percent: 99.0,
        }
    }

    /// busy-evening-30 over `replicas` processes on one PostgreSQL.
    pub(super) fn replicas(replicas: usize) -> Self {
        BrowsePlan {
            name: if replicas == 2 {
                "replicas-2"
            } else {
                "replicas-3"
            },
            replicas,
            ..Self::busy_evening_30()
        }
    }

    pub(super) fn smoke() -> Self {
        BrowsePlan {
            name: "busy-evening (smoke)",
            users: 5,
            sign_in_over: Duration::from_millis(2_500),
            until: Duration::from_secs(8),
            replicas: 1,
            target_ok_percent: 99.9,
        }
    }
}

/// What one busy evening measured.
pub(crate) struct BrowseOutcome {
    pub(super) plan: BrowsePlan,
    /// Every call, sign-ins included.
    pub(super) calls: Vec<Call>,
    pub(super) signed_in: usize,
    pub(super) page_views: usize,
    /// Requests the sandbox received during the run.
    pub(super) upstream: u64,
    pub(super) responses_429: u64,
    /// The most requests the sandbox received within any 5 s.
    pub(super) busiest_window: usize,
    /// Per replica, from its own metrics.
    pub(super) replicas: Vec<ReplicaFigures>,
    /// With two replicas or more.
    pub(super) cross_replica: Option<CrossReplica>,
    pub(super) elapsed: Duration,
}

impl BrowseOutcome {
    /// Whether no call at all was made (the pipeline itself is broken).
    pub(crate) fn made_no_calls(&self) -> bool {
        self.calls.is_empty()
    }
}

/// One replica's upstream calls during the run, from its `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ReplicaFigures {
    /// Upstream requests that got an answer.
    pub(super) answered: u64,
    pub(super) responses_429: u64,
    /// Upstream calls the replica's own budget refused to start.
    pub(super) refused_by_budget: u64,
}

/// A license issued through one replica, looked for through another.
#[derive(Debug, Default)]
pub(crate) struct CrossReplica {
    pub(super) issued_through: usize,
    pub(super) read_through: usize,
    /// Whether the first `ListMyLicenses` after the issuance listed it.
    pub(super) next_read_shows: bool,
    /// When it was first listed, polling every 200 ms, counted from the issuance's answer.
    pub(super) visible_after: Option<Duration>,
    /// Why the check could not be made, if it could not.
    pub(super) problem: Option<String>,
}

pub(super) async fn run(env: &Env<'_>, plan: BrowsePlan) -> anyhow::Result<BrowseOutcome> {
    let users = env.create_users(plan.users, 0).await?;
    let schema = if plan.replicas > 1 {
        Some(PgSchema::fresh().await?)
    } else {
        None
    };
    let result = measure(env, plan, &users, schema.as_ref()).await;
    if let Some(schema) = schema {
        schema.drop_schema().await;
    }
    result
}

async fn measure(
    env: &Env<'_>,
    plan: BrowsePlan,
    users: &[User],
    schema: Option<&PgSchema>,
) -> anyhow::Result<BrowseOutcome> {
    let mut extra = Vec::new();
    if let Some(schema) = schema {
        extra.push((
            "LICENSING_GATEWAY__LEDGER__URL".to_owned(),
            schema.url.clone(),
        ));
        extra.push((
            "LICENSING_GATEWAY__LEDGER__SCHEMA".to_owned(),
            schema.name.clone(),
        ));
    }
    let mut gateways = Vec::with_capacity(plan.replicas);
    for replica in 0..plan.replicas {
        eprintln!("  starting replica {replica}");
        // One after the other: the first migrates the ledger's schema.
        gateways.push(
            GatewayProcess::start_with(env.bin, env.sandbox, Profile::Browsing, &extra)
                .await
                .with_context(|| format!("starting replica {replica}"))?,
        );
    }
    let result = browse(env, plan, users, &gateways).await;
    for gateway in gateways {
        gateway.stop().await;
    }
    result
}

async fn browse(
    env: &Env<'_>,
    plan: BrowsePlan,
    users: &[User],
    gateways: &[GatewayProcess],
) -> anyhow::Result<BrowseOutcome> {
    let mut channels = Vec::with_capacity(gateways.len());
    for gateway in gateways {
        let mut replica = Vec::with_capacity(CONNECTIONS_PER_REPLICA);
        for _ in 0..CONNECTIONS_PER_REPLICA {
            replica.push(connect(gateway.public_addr).await?);
        }
        channels.push(replica);
    }
    let metrics_before = replica_metrics(gateways).await;
    let before = env.limit_on();
    eprintln!(
        "  {} users sign in over {:?}, browse until {:?}, {} replica(s)",
        plan.users, plan.sign_in_over, plan.until, plan.replicas
    );

    let started = Instant::now();
    let until = started + plan.until;
    let mut tasks = JoinSet::new();
    for (i, user) in users.iter().enumerate() {
        let replica = i % gateways.len();
        let channel = channels[replica][(i / gateways.len()) % CONNECTIONS_PER_REPLICA].clone();
        let start_at = started
            + plan
                .sign_in_over
                .mul_f64(i as f64 / plan.users.max(1) as f64);
        tasks.spawn(browse_as(
            user.clone(),
            channel,
            replica,
            start_at,
            until,
            i as u64,
        ));
    }
    let mut outcome = BrowseOutcome {
        plan,
        calls: Vec::new(),
        signed_in: 0,
        page_views: 0,
        upstream: 0,
        responses_429: 0,
        busiest_window: 0,
        replicas: Vec::new(),
        cross_replica: None,
        elapsed: Duration::ZERO,
    };
    let mut first_token = None;
    let deadline = until + DRAIN;
    loop {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(Ok(user))) => {
                outcome.calls.extend(user.calls);
                outcome.page_views += user.page_views;
                if user.token.is_some() {
                    outcome.signed_in += 1;
                }
                if user.index == 0 {
                    first_token = user.token;
                }
            }
            Ok(Some(Err(error))) => eprintln!("  a user's task failed: {error}"),
            Ok(None) => break,
            Err(_) => {
                eprintln!("  calls still in flight {DRAIN:?} after the end; abandoned");
                tasks.abort_all();
                break;
            }
        }
    }
    outcome.elapsed = started.elapsed();
    let after = env.controls.stats();
    outcome.upstream = after.requests - before.requests;
    outcome.responses_429 = after.responses_429 - before.responses_429;
    outcome.busiest_window = busiest_window(
        &env.controls
            .requests()
            .iter()
            .map(|request| request.received_at)
            .collect::<Vec<_>>(),
        chrono::Duration::seconds(5),
    );
    let metrics_after = replica_metrics(gateways).await;
    outcome.replicas = metrics_before
        .iter()
        .zip(&metrics_after)
        .map(|(before, after)| ReplicaFigures {
            answered: after.answered.saturating_sub(before.answered),
            responses_429: after.responses_429.saturating_sub(before.responses_429),
            refused_by_budget: after
                .refused_by_budget
                .saturating_sub(before.refused_by_budget),
        })
        .collect();
    if gateways.len() > 1 {
        outcome.cross_replica =
            Some(cross_replica(env, gateways, &channels, &users[0], first_token).await);
    }
    Ok(outcome)
}

/// What one user did.
struct UserRun {
    index: u64,
    calls: Vec<Call>,
    page_views: usize,
    /// Their access token, if they signed in.
    token: Option<String>,
}

/// One user's evening: sign in at `start_at` (trying again after the refusal's
/// `RetryInfo`, as a person clicking again would), then browse until `until`.
async fn browse_as(
    user: User,
    channel: Channel,
    replica: usize,
    start_at: Instant,
    until: Instant,
    index: u64,
) -> UserRun {
    let mut run = UserRun {
        index,
        calls: Vec::new(),
        page_views: 0,
        token: None,
    };
    let mut rng = crate::soak::Rng(0x5eed_0000 + index);
    let client = UserServiceClient::new(channel);
    tokio::time::sleep_until(start_at).await;
    let Some(token) = sign_in(&client, &user, replica, until, &mut run.calls).await else {
        return run;
    };
    // The first page is the one the sign-in lands on.
    let mut next = Instant::now();
    while next < until {
        tokio::time::sleep_until(next).await;
        let view_started = Instant::now();
        page_view(&client, &user, &token, replica, &mut run.calls).await;
        run.page_views += 1;
        if rng.below(4) == 0 {
            tokio::time::sleep_until(view_started + Duration::from_secs(1)).await;
            if Instant::now() < until {
                page_view(&client, &user, &token, replica, &mut run.calls).await;
                run.page_views += 1;
            }
        }
        next = view_started + uniform(&mut rng, Duration::from_secs(2), Duration::from_secs(4));
    }
    run.token = Some(token);
    run
}

/// Signs `user` in, trying again after refusals that say to (at most until `until`);
/// their access token.
pub(super) async fn sign_in(
    client: &UserServiceClient<Channel>,
    user: &User,
    replica: usize,
    until: Instant,
    calls: &mut Vec<Call>,
) -> Option<String> {
    loop {
        let request = user_request(
            LoginRequest {
                email: user.email.clone(),
                password: PASSWORD.into(),
                ..Default::default()
            },
            &user.address,
            None,
        );
        let (call, result) = timed("Login", replica, client.clone().login(request)).await;
        calls.push(call);
        let status = match result {
            Ok(response) => return response.session.map(|session| session.access_token),
            Err(status) => status,
        };
        let transient = matches!(
            status.code(),
            Code::Unavailable | Code::ResourceExhausted | Code::Aborted | Code::DeadlineExceeded
        );
        let wait = retry_delay(&status)
            .unwrap_or(Duration::from_secs(1))
            .clamp(Duration::from_millis(500), Duration::from_secs(5));
        if !transient || Instant::now() + wait >= until {
            return None;
        }
        tokio::time::sleep(wait).await;
    }
}

/// One page view: the profile twice and the licenses once, at the same moment.
async fn page_view(
    client: &UserServiceClient<Channel>,
    user: &User,
    token: &str,
    replica: usize,
    calls: &mut Vec<Call>,
) {
    let profile = || {
        let mut client = client.clone();
        let request = user_request(GetProfileRequest {}, &user.address, Some(token));
        timed("GetProfile", replica, async move {
            client.get_profile(request).await
        })
    };
    let licenses = {
        let mut client = client.clone();
        let request = user_request(list_request(), &user.address, Some(token));
        timed("ListMyLicenses", replica, async move {
            client.list_my_licenses(request).await
        })
    };
    let ((layout, _), (page, _), (list, _)) = tokio::join!(profile(), profile(), licenses);
    calls.extend([layout, page, list]);
}

/// Each replica's upstream counters now (zeros for one whose metrics cannot be read).
async fn replica_metrics(gateways: &[GatewayProcess]) -> Vec<ReplicaFigures> {
    let mut figures = Vec::with_capacity(gateways.len());
    for gateway in gateways {
        let text = gateway.metrics().await.unwrap_or_default();
        let name = "licensing_gateway_upstream_requests_total";
        figures.push(ReplicaFigures {
            answered: sum_counter(&text, name, |labels| !labels.contains("status=\"none\"")),
            responses_429: sum_counter(&text, name, |labels| labels.contains("status=\"429\"")),
            refused_by_budget: sum_counter(&text, name, |labels| {
                labels.contains("outcome=\"budget_exhausted\"")
            }),
        });
    }
    figures
}

/// Issues a license for `user` through replica 0's internal listener and looks for it
/// on replica 1's next `ListMyLicenses` (whose page the user has read just before).
async fn cross_replica(
    env: &Env<'_>,
    gateways: &[GatewayProcess],
    channels: &[Vec<Channel>],
    user: &User,
    token: Option<String>,
) -> CrossReplica {
    let mut check = CrossReplica {
        issued_through: 0,
        read_through: 1,
        ..CrossReplica::default()
    };
    if let Err(error) = cross_replica_check(env, gateways, channels, user, token, &mut check).await
    {
        check.problem = Some(format!("{error:#}"));
    }
    check
}

async fn cross_replica_check(
    env: &Env<'_>,
    gateways: &[GatewayProcess],
    channels: &[Vec<Channel>],
    user: &User,
    token: Option<String>,
    check: &mut CrossReplica,
) -> anyhow::Result<()> {
    let reader = UserServiceClient::new(channels[check.read_through][0].clone());
    let mut calls = Vec::new();
    let token = match token {
        Some(token) => token,
        None => sign_in(
            &reader,
            user,
            check.read_through,
            Instant::now() + VISIBLE_WITHIN,
            &mut calls,
        )
        .await
        .context("the user could not sign in for the check")?,
    };
    let list = |reader: &UserServiceClient<Channel>| {
        let mut reader = reader.clone();
        let request = user_request(list_request(), &user.address, Some(&token));
        async move {
            reader
                .list_my_licenses(request)
                .await
                .map(|response| response.into_inner())
        }
    };
    // The page replica B now holds for the user.
    list(&reader)
        .await
        .context("reading the license page through replica B")?;
    let mut issuer = IssuanceServiceClient::new(
        super::payment_channel(env, gateways[check.issued_through].internal_addr).await?,
    );
    let mut request = tonic::Request::new(IssueLicenseRequest {
        request_id: format!("loadgen-{}", uuid::Uuid::new_v4().simple()),
        user: Some(issue_license_request::User::UserId(user.user_id.clone())),
        ..Default::default()
    });
    request.set_timeout(crate::targets::CALL_TIMEOUT);
    let issued = issuer
        .issue_license(request)
        .await
        .context("IssueLicense through replica A")?
        .into_inner()
        .license
        .context("IssueLicense answered no license")?;
    let issued_at = Instant::now();
    let mut first = true;
    while issued_at.elapsed() < VISIBLE_WITHIN {
        let shows = match list(&reader).await {
            Ok(page) => page.licenses.iter().any(|license| license.id == issued.id),
            Err(_) => false,
        };
        if first {
            check.next_read_shows = shows;
            first = false;
        }
        if shows {
            check.visible_after = Some(issued_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// A PostgreSQL schema of this run's own for the replicas' shared ledger, dropped after.
pub(super) struct PgSchema {
    pub(super) url: String,
    pub(super) name: String,
}

impl PgSchema {
    /// A fresh schema name on the server at `LGW_TEST_POSTGRES_URL` (or
    /// `LEDGER_TEST_POSTGRES_URL`, or the local trust-auth server), checked reachable.
    pub(super) async fn fresh() -> anyhow::Result<Self> {
        use sqlx::Connection as _;
        let url = std::env::var("LGW_TEST_POSTGRES_URL")
            .or_else(|_| std::env::var("LEDGER_TEST_POSTGRES_URL"))
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let shown = licensing_gateway::config::redact_url_password(&url);
        let connection =
            tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(&url))
                .await
                .map_err(|_| anyhow::anyhow!("PostgreSQL at {shown} did not answer within 5 s"))?
                .with_context(|| format!("PostgreSQL at {shown} is not reachable"))?;
        let _ = connection.close().await;
        Ok(PgSchema {
            url,
            name: format!("loadgen_{}", uuid::Uuid::new_v4().simple()),
        })
    }

    /// Drops the schema; failing to clean up is only reported.
    pub(super) async fn drop_schema(self) {
        use sqlx::Connection as _;
        let ddl = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name);
        let dropped = tokio::time::timeout(Duration::from_secs(10), async {
            let mut connection = sqlx::PgConnection::connect(&self.url).await?;
            sqlx::query(sqlx::AssertSqlSafe(ddl))
                .execute(&mut connection)
                .await?;
            connection.close().await
        })
        .await;
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("  could not drop the PostgreSQL schema {}", self.name);
        }
    }
}

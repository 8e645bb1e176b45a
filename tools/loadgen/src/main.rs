//! `loadgen`: what the gateway costs and saves, measured on this machine in one run.
//!
//! ```sh
//! cargo run --release --bin loadgen -- --out BENCHMARKS.md   # about a minute
//! cargo run --release --bin loadgen -- --smoke               # a few seconds, for CI
//! ```
//!
//! It starts the sandbox Cryptlex in this process, the release gateway binary as
//! child processes (`licensing-gateway serve` with the sandbox's effective configuration,
//! so a child's memory is the gateway's alone) and a bare tonic `UserService` that
//! answers from memory. Then it measures, with bounded counts:
//!
//! 1. Closed-loop throughput and latency of `GetProfile` and `ListMyLicenses` through
//!    the gateway (sandbox rate limit off), straight to the sandbox over HTTP (reqwest,
//!    keep-alive), and against the bare tonic server; the ratios between them.
//! 2. Latency at a fixed open-loop rate (1,000 rps), through the gateway and direct.
//! 3. Upstream TCP connections per 10,000 gateway calls, idle and peak RSS of the
//!    gateway, start-up time to the first SERVING health answer, binary size.
//! 4. With the sandbox enforcing Cryptlex's 50 requests per 5 s: page views from many
//!    users (each page asks for the profile twice and the licenses once) versus upstream
//!    calls, what the read cache and coalescing answered, and the 429s the sandbox sent.
//!
//! Sections 1-3 measure the cost of the hop, so they run against a gateway whose read
//! cache is off and whose own upstream budget is lifted (every call reaches the sandbox),
//! with one session per concurrent caller (no coalescing). Section 4 runs against a
//! second gateway on its defaults, as deployed.
//!
//! Every gRPC status other than OK counts as an error. Nothing here is a timed
//! assertion: `--smoke` only checks that the whole pipeline runs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use cryptlex_sandbox::{Controls, RateLimit, seed};
use licensing_gateway::commands::sandbox::{self, Sandbox, SandboxArgs};
use licensing_gateway::config::RawSettings;
use licensing_gateway::grpc::pb::user_service_client::UserServiceClient;
use licensing_gateway::grpc::pb::user_service_server::{UserService, UserServiceServer};
use licensing_gateway::grpc::pb::{
    GetProfileRequest, GetProfileResponse, ListMyLicensesRequest, ListMyLicensesResponse,
    LoginRequest, LoginResponse, LogoutRequest, LogoutResponse, RefreshSessionRequest,
    RefreshSessionResponse, SignUpRequest, SignUpResponse,
};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::task::JoinSet;
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Benchmarks the gateway against the sandbox Cryptlex and writes a Markdown report.
#[derive(Debug, Parser)]
struct Args {
    /// Tiny counts, a few seconds in all (for CI). The numbers mean nothing.
    #[arg(long)]
    smoke: bool,
    /// Also write the report to this file (e.g. BENCHMARKS.md).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The gateway binary. Default: `licensing-gateway` next to this program,
    /// built first with `cargo build` in the same profile.
    #[arg(long)]
    gateway_bin: Option<PathBuf>,
}

/// The counts of one run.
#[derive(Debug, Clone, Copy)]
struct Plan {
    warmup: usize,
    calls: usize,
    concurrency: usize,
    open_rate: u32,
    open_duration: Duration,
    /// Page views per second in the rate-limited run; each makes [`READS_PER_PAGE`] reads.
    page_views_per_second: u32,
    limited_duration: Duration,
    limited_users: usize,
}

impl Plan {
    fn full() -> Self {
        Plan {
            warmup: 1_000,
            calls: 20_000,
            concurrency: 32,
            open_rate: 1_000,
            open_duration: Duration::from_secs(5),
            page_views_per_second: 10,
            limited_duration: Duration::from_secs(15),
            limited_users: 20,
        }
    }

    fn smoke() -> Self {
        Plan {
            warmup: 10,
            calls: 200,
            concurrency: 8,
            open_rate: 100,
            open_duration: Duration::from_secs(1),
            page_views_per_second: 10,
            limited_duration: Duration::from_secs(1),
            limited_users: 3,
        }
    }
}

/// The repository root (the gateway's package), two levels above this crate.
const WORKSPACE_ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The gateways log at `warn`; the rate-limited run makes one warn of every read it sheds.
const MAX_GATEWAY_LINES: usize = 10;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a rustls crypto provider was already installed"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let plan = if args.smoke {
        Plan::smoke()
    } else {
        Plan::full()
    };
    if cfg!(debug_assertions) && !args.smoke {
        eprintln!("warning: loadgen is a debug build; use `cargo run --release --bin loadgen`");
    }
    let gateway_bin = match args.gateway_bin.clone() {
        Some(path) => path,
        None => build_gateway()?,
    };
    let binary_size = std::fs::metadata(&gateway_bin)
        .with_context(|| format!("reading {}", gateway_bin.display()))?
        .len();

    let dir = std::env::temp_dir().join(format!("loadgen-{}", uuid::Uuid::new_v4().simple()));
    let result = measure(&args, plan, &gateway_bin, binary_size, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    let report = result?;
    println!("{report}");
    if let Some(out) = &args.out {
        std::fs::write(out, &report).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}

/// Builds the gateway binary in this program's profile and returns its path.
fn build_gateway() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin_dir = exe.parent().context("loadgen has no directory")?;
    let release = !cfg!(debug_assertions);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    // `cargo run` hands this program its package's variables; build scripts
    // that watch them (ring watches CARGO_MANIFEST_DIR) would otherwise see a
    // change and rebuild half the tree on every run, and again for the next
    // plain `cargo build`.
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("CARGO_PKG_")
            || matches!(
                name,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_MANIFEST_LINKS"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_RUSTC_CURRENT_DIR"
                    | "OUT_DIR"
            )
        {
            command.env_remove(name);
        }
    }
    command
        .args([
            "build",
            "--quiet",
            "--bin",
            "licensing-gateway",
            "--manifest-path",
        ])
        .arg(Path::new(WORKSPACE_ROOT).join("Cargo.toml"));
    if release {
        command.arg("--release");
    }
    let status = command.status().context("running cargo build")?;
    if !status.success() {
        bail!("cargo build of licensing-gateway failed");
    }
    Ok(bin_dir.join("licensing-gateway"))
}

async fn measure(
    args: &Args,
    plan: Plan,
    gateway_bin: &Path,
    binary_size: u64,
    dir: &Path,
) -> anyhow::Result<String> {
    // Other work on the machine skews everything; say how busy it was.
    let load_average = machine::load_average();
    // The sandbox Cryptlex in this process; its rate limit starts off.
    let env: std::collections::HashMap<String, String> = [
        ("LICENSING_GATEWAY__PUBLIC__ADDR", "127.0.0.1:0"),
        ("LICENSING_GATEWAY__INTERNAL__ADDR", "127.0.0.1:0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let raw = RawSettings::load(None, &env)?;
    let sandbox = sandbox::prepare(
        &SandboxArgs {
            dir: dir.to_path_buf(),
            cryptlex_addr: "127.0.0.1:0".parse()?,
            no_rate_limit: true,
            access_token_ttl: Duration::from_secs(60 * 60),
        },
        raw,
    )
    .await?;
    let controls = sandbox.cryptlex.controls();

    eprintln!(
        "starting the measurement gateway ({})",
        gateway_bin.display()
    );
    let gateway = GatewayProcess::start(gateway_bin, &sandbox, Profile::HopCost).await?;
    let idle_rss = {
        tokio::time::sleep(Duration::from_millis(300)).await;
        gateway.rss_kib()?
    };
    let channel = connect(gateway.public_addr).await?;
    let gateway_client = UserServiceClient::new(channel);

    // One session of the demo user per concurrent caller, so that no two calls in
    // flight are identical and the gateway cannot coalesce them: every gateway call
    // is one upstream call. The direct HTTP runs use the same tokens.
    let mut tokens = Vec::with_capacity(plan.concurrency);
    for _ in 0..plan.concurrency {
        let session = gateway_client
            .clone()
            .login(LoginRequest {
                email: seed::DEMO_EMAIL.into(),
                password: seed::DEMO_PASSWORD.into(),
            })
            .await
            .context("logging in the demo user")?
            .into_inner()
            .session
            .context("no session")?;
        tokens.push(session.access_token);
    }
    let tokens: Arc<[String]> = tokens.into();

    // The bare tonic server answers with the gateway's own answers, so the payloads match.
    let profile = gateway_client
        .clone()
        .get_profile(with_token(GetProfileRequest {}, &tokens[0]))
        .await?
        .into_inner();
    let licenses = gateway_client
        .clone()
        .list_my_licenses(with_token(list_request(), &tokens[0]))
        .await?
        .into_inner();
    let bare = BareServer::start(Canned { profile, licenses })?;
    let bare_client = UserServiceClient::new(connect(bare.addr).await?);

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(plan.concurrency)
        .tcp_nodelay(true)
        .build()?;
    let base = sandbox.cryptlex.base_url();
    let caller = |rpc: Rpc, target: Target| Caller {
        rpc,
        target,
        tokens: Arc::clone(&tokens),
        gateway: gateway_client.clone(),
        bare: bare_client.clone(),
        http: http.clone(),
        base: base.clone(),
    };

    // === 1. closed loop ===
    let mut closed = Vec::new();
    let rss_peak = Arc::new(AtomicU64::new(0));
    let mut gateway_calls = 0usize;
    let mut gateway_connections = 0u64;
    let mut gateway_upstream = 0u64;
    for rpc in [Rpc::GetProfile, Rpc::ListMyLicenses] {
        for target in [Target::Bare, Target::Direct, Target::Gateway] {
            eprintln!("closed loop: {} via {}", rpc.name(), target.name());
            let call = caller(rpc, target);
            let before = controls.stats();
            closed_loop(plan.warmup, plan.concurrency, call.clone()).await;
            let sampler = (target == Target::Gateway).then(|| gateway.sample_rss(&rss_peak));
            let sample = closed_loop(plan.calls, plan.concurrency, call).await;
            if let Some(sampler) = sampler {
                sampler.stop().await;
                let after = controls.stats();
                gateway_calls += plan.warmup + plan.calls;
                gateway_connections += after.connections_accepted - before.connections_accepted;
                gateway_upstream += after.requests - before.requests;
            }
            closed.push((rpc, target, sample));
        }
    }

    // === 2. open loop at a fixed rate ===
    let mut open = Vec::new();
    for target in [Target::Bare, Target::Direct, Target::Gateway] {
        eprintln!(
            "open loop: GetProfile via {} at {} rps",
            target.name(),
            plan.open_rate
        );
        let before = controls.stats();
        let sample = open_loop(
            plan.open_rate,
            plan.open_duration,
            caller(Rpc::GetProfile, target),
        )
        .await;
        if target == Target::Gateway {
            let after = controls.stats();
            gateway_calls += sample.sent();
            gateway_connections += after.connections_accepted - before.connections_accepted;
            gateway_upstream += after.requests - before.requests;
        }
        open.push((target, sample));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss_after = gateway.rss_kib()?;

    // Users for the rate-limited run, signed up while nothing limits the rate.
    let mut users = Vec::with_capacity(plan.limited_users);
    for i in 0..plan.limited_users {
        let response = gateway_client
            .clone()
            .sign_up(SignUpRequest {
                email: format!("loadgen-{i}-{}@example.com", uuid::Uuid::new_v4().simple()),
                password: "loadgen-password".into(),
                first_name: format!("Load{i}"),
                last_name: "Gen".into(),
            })
            .await
            .context("signing up a load user")?
            .into_inner();
        users.push(response.session.context("no session")?.access_token);
    }
    let startup_hop = gateway.startup;
    gateway.stop().await;
    bare.stop();

    // === 4. under the rate limit, against a gateway on its defaults ===
    eprintln!("starting a gateway on its defaults");
    let gateway = GatewayProcess::start(gateway_bin, &sandbox, Profile::Defaults).await?;
    let client = UserServiceClient::new(connect(gateway.public_addr).await?);
    eprintln!(
        "rate limited: {} page views/s for {:?} from {} users",
        plan.page_views_per_second, plan.limited_duration, plan.limited_users
    );
    let limited = rate_limited(&client, &gateway, &controls, &users, plan).await?;
    let startup_defaults = gateway.startup;
    gateway.stop().await;

    let report = Report {
        args,
        load_average,
        plan,
        binary_size,
        gateway_bin: gateway_bin
            .strip_prefix(Path::new(WORKSPACE_ROOT))
            .unwrap_or(gateway_bin)
            .display()
            .to_string(),
        startup: [startup_hop, startup_defaults],
        idle_rss,
        idle_rss_after,
        peak_rss: rss_peak.load(Ordering::Relaxed),
        closed,
        open,
        gateway_calls,
        gateway_connections,
        gateway_upstream,
        limited,
    };
    Ok(report.render())
}

/// How a gateway child process is configured, on top of the sandbox's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Profile {
    /// The cost of the hop: every call goes upstream.
    HopCost,
    /// What `licensing-gateway sandbox` runs with; the rate-limited run.
    Defaults,
}

impl Profile {
    /// `LICENSING_GATEWAY__*` overrides, also printed in the report.
    fn overrides(self) -> &'static [(&'static str, &'static str)] {
        match self {
            // No read cache; a budget far above what the run sends (the sandbox's limit is
            // off); the loadgen signs in once per concurrent caller from one address.
            Profile::HopCost => &[
                ("LICENSING_GATEWAY__CACHE__TTL", "0s"),
                (
                    "LICENSING_GATEWAY__CRYPTLEX__BUDGET__MAX_REQUESTS",
                    "1000000",
                ),
                (
                    "LICENSING_GATEWAY__LIMITS__LOGIN_ATTEMPTS_PER_ADDRESS",
                    "1000",
                ),
            ],
            Profile::Defaults => &[],
        }
    }
}

// === targets ===

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rpc {
    GetProfile,
    ListMyLicenses,
}

impl Rpc {
    fn name(self) -> &'static str {
        match self {
            Rpc::GetProfile => "GetProfile",
            Rpc::ListMyLicenses => "ListMyLicenses",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// A tonic server in this process answering from memory.
    Bare,
    /// The sandbox over HTTP/1.1 with reqwest (what the gateway itself sends).
    Direct,
    /// The gateway child process, which calls the sandbox.
    Gateway,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Bare => "bare tonic (from memory)",
            Target::Direct => "sandbox over HTTP (direct)",
            Target::Gateway => "gateway -> sandbox",
        }
    }
}

fn list_request() -> ListMyLicensesRequest {
    ListMyLicensesRequest {
        page_size: 25,
        page_token: String::new(),
        product_id: String::new(),
    }
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// Makes one call of one kind to one target.
#[derive(Clone)]
struct Caller {
    rpc: Rpc,
    target: Target,
    /// One session per concurrent caller.
    tokens: Arc<[String]>,
    gateway: UserServiceClient<Channel>,
    bare: UserServiceClient<Channel>,
    http: reqwest::Client,
    base: String,
}

impl Caller {
    /// One call with session `session` (taken modulo the sessions there are): Ok, or a
    /// short description of the failure.
    async fn call(&self, session: usize) -> Result<(), String> {
        let token = &self.tokens[session % self.tokens.len()];
        match self.target {
            Target::Bare | Target::Gateway => {
                let mut client = if self.target == Target::Bare {
                    self.bare.clone()
                } else {
                    self.gateway.clone()
                };
                let result = match self.rpc {
                    Rpc::GetProfile => client
                        .get_profile(with_token(GetProfileRequest {}, token))
                        .await
                        .map(|_| ()),
                    Rpc::ListMyLicenses => client
                        .list_my_licenses(with_token(list_request(), token))
                        .await
                        .map(|_| ()),
                };
                result.map_err(|status| format!("{:?}: {}", status.code(), status.message()))
            }
            Target::Direct => {
                let url = match self.rpc {
                    Rpc::GetProfile => format!("{}/v3/me", self.base),
                    Rpc::ListMyLicenses => format!("{}/v3/me/licenses?page=1&limit=25", self.base),
                };
                let response = self
                    .http
                    .get(url)
                    .bearer_auth(token)
                    .timeout(CALL_TIMEOUT)
                    .send()
                    .await
                    .map_err(|error| error.to_string())?;
                let status = response.status();
                // Read and parse the body as the gateway does.
                let body = response.bytes().await.map_err(|error| error.to_string())?;
                if !status.is_success() {
                    return Err(format!("HTTP {status}"));
                }
                serde_json::from_slice::<serde_json::Value>(&body)
                    .map(|_| ())
                    .map_err(|error| error.to_string())
            }
        }
    }
}

// === measurement ===

#[derive(Debug, Default)]
struct Sample {
    latencies: Vec<Duration>,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
}

impl Sample {
    fn sent(&self) -> usize {
        self.latencies.len() + usize::try_from(self.errors).unwrap_or(usize::MAX)
    }

    fn rps(&self) -> f64 {
        self.sent() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `p`-th percentile of successful calls, in milliseconds.
    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
    }
}

/// `calls` calls from `concurrency` tasks, each starting its next call when the last ends.
async fn closed_loop(calls: usize, concurrency: usize, caller: Caller) -> Sample {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for worker in 0..concurrency {
        let next = Arc::clone(&next);
        let caller = caller.clone();
        tasks.spawn(async move {
            let mut sample = Sample::default();
            while next.fetch_add(1, Ordering::Relaxed) < calls {
                let start = Instant::now();
                match caller.call(worker).await {
                    Ok(()) => sample.latencies.push(start.elapsed()),
                    Err(error) => {
                        sample.errors += 1;
                        sample.first_error.get_or_insert(error);
                    }
                }
            }
            sample
        });
    }
    let mut total = merge(tasks).await;
    total.elapsed = started.elapsed();
    total
}

/// Calls at a fixed rate whatever the answers do; latency counts from the scheduled
/// start, so a stall shows up in the percentiles (no coordinated omission).
async fn open_loop(rate: u32, duration: Duration, caller: Caller) -> Sample {
    let total = (f64::from(rate) * duration.as_secs_f64()).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let started = tokio::time::Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..total {
        let scheduled = started + interval.mul_f64(i as f64);
        tokio::time::sleep_until(scheduled).await;
        let caller = caller.clone();
        tasks.spawn(async move {
            let mut sample = Sample::default();
            let session = usize::try_from(i).unwrap_or_default();
            match caller.call(session).await {
                Ok(()) => sample.latencies.push(scheduled.elapsed()),
                Err(error) => {
                    sample.errors = 1;
                    sample.first_error = Some(error);
                }
            }
            sample
        });
    }
    let mut sample = merge(tasks).await;
    sample.elapsed = started.elapsed();
    sample
}

async fn merge(mut tasks: JoinSet<Sample>) -> Sample {
    let mut total = Sample::default();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(sample) => {
                total.latencies.extend(sample.latencies);
                total.errors += sample.errors;
                if total.first_error.is_none() {
                    total.first_error = sample.first_error;
                }
            }
            Err(error) => {
                total.errors += 1;
                total.first_error.get_or_insert(error.to_string());
            }
        }
    }
    total
}

// === the rate-limited scenario ===

/// Reads per page view: the layout and the page each ask for the profile, and the
/// page asks for the licenses, all at once (as server components rendering in parallel do).
const READS_PER_PAGE: usize = 3;

#[derive(Debug, Default)]
struct Limited {
    users: usize,
    page_views: usize,
    offered: usize,
    ok: usize,
    errors: BTreeMap<String, usize>,
    upstream_requests: u64,
    /// The most upstream requests that arrived within any 5 s.
    busiest_window: usize,
    responses_429: u64,
    connections: u64,
    /// `licensing_gateway_cache_requests_total` by `result`, from the gateway's /metrics.
    cache: BTreeMap<String, u64>,
    elapsed: Duration,
}

async fn rate_limited(
    gateway: &UserServiceClient<Channel>,
    process: &GatewayProcess,
    controls: &Controls,
    users: &[String],
    plan: Plan,
) -> anyhow::Result<Limited> {
    // Switch Cryptlex's limit on (fresh windows) and count from here.
    controls.set_rate_limit(Some(RateLimit::cryptlex_default()));
    controls.clear_requests();
    let before = controls.stats();

    let page_views = (f64::from(plan.page_views_per_second) * plan.limited_duration.as_secs_f64())
        .round() as usize;
    let interval = Duration::from_secs_f64(1.0 / f64::from(plan.page_views_per_second));
    let started = tokio::time::Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..page_views {
        tokio::time::sleep_until(started + interval.mul_f64(i as f64)).await;
        let token = &users[i % users.len()];
        for read in 0..READS_PER_PAGE {
            let mut client = gateway.clone();
            let token = token.clone();
            tasks.spawn(async move {
                let result = if read < 2 {
                    client
                        .get_profile(with_token(GetProfileRequest {}, &token))
                        .await
                        .map(|_| ())
                } else {
                    client
                        .list_my_licenses(with_token(list_request(), &token))
                        .await
                        .map(|_| ())
                };
                result.map_err(|status| {
                    let reason = tonic_types::StatusExt::get_details_error_info(&status)
                        .map(|info| info.reason)
                        .unwrap_or_default();
                    let retry = tonic_types::StatusExt::get_details_retry_info(&status)
                        .map(|_| " +RetryInfo")
                        .unwrap_or_default();
                    format!("{:?} {reason}{retry}", status.code())
                })
            });
        }
    }
    let mut limited = Limited {
        users: users.len(),
        page_views,
        offered: page_views * READS_PER_PAGE,
        ..Limited::default()
    };
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(())) => limited.ok += 1,
            Ok(Err(error)) => *limited.errors.entry(error).or_default() += 1,
            Err(error) => *limited.errors.entry(error.to_string()).or_default() += 1,
        }
    }
    limited.elapsed = started.elapsed();
    let after = controls.stats();
    controls.set_rate_limit(None);
    limited.upstream_requests = after.requests - before.requests;
    limited.responses_429 = after.responses_429 - before.responses_429;
    limited.connections = after.connections_accepted - before.connections_accepted;
    limited.busiest_window = busiest_window(
        &controls
            .requests()
            .iter()
            .map(|request| request.received_at)
            .collect::<Vec<_>>(),
        chrono::Duration::seconds(5),
    );
    controls.clear_requests();
    limited.cache = process.cache_results().await?;
    Ok(limited)
}

/// The most instants that fall within any span of length `window`.
fn busiest_window(instants: &[chrono::DateTime<chrono::Utc>], window: chrono::Duration) -> usize {
    let mut sorted = instants.to_vec();
    sorted.sort_unstable();
    let mut start = 0;
    let mut most = 0;
    for end in 0..sorted.len() {
        while sorted[end] - sorted[start] >= window {
            start += 1;
        }
        most = most.max(end - start + 1);
    }
    most
}

// === the gateway child process ===

struct GatewayProcess {
    child: tokio::process::Child,
    pid: u32,
    public_addr: SocketAddr,
    admin_addr: SocketAddr,
    startup: Duration,
}

impl GatewayProcess {
    /// Starts `licensing-gateway serve` with the sandbox's configuration and `profile`'s
    /// overrides, and waits for the first SERVING answer of the health service for
    /// `licensing.v1.UserService`.
    async fn start(bin: &Path, sandbox: &Sandbox, profile: Profile) -> anyhow::Result<Self> {
        // Free ports picked now, so the health check can start polling at once.
        let public_addr = free_local_addr()?;
        let admin_addr = free_local_addr()?;
        let started = Instant::now();
        let mut command = tokio::process::Command::new(bin);
        command
            .arg("--config")
            .arg(&sandbox.config_file)
            .args(["--public-addr", &public_addr.to_string()])
            .args(["--internal-addr", "127.0.0.1:0", "serve"])
            .env("LICENSING_GATEWAY__LOG__LEVEL", "warn")
            .env("LICENSING_GATEWAY__ADMIN__ADDR", admin_addr.to_string())
            .envs(profile.overrides().iter().copied())
            .env_remove("RUST_LOG");
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id().context("the gateway exited at once")?;
        // Drain its output so it never blocks on a full pipe; show warnings.
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ]
        .into_iter()
        .flatten()
        {
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                let mut shown = 0;
                while let Ok(Some(line)) = lines.next_line().await {
                    shown += 1;
                    if shown <= MAX_GATEWAY_LINES {
                        eprintln!("  gateway | {line}");
                    } else if shown == MAX_GATEWAY_LINES + 1 {
                        eprintln!("  gateway | (further output suppressed)");
                    }
                }
            });
        }

        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait()? {
                bail!("the gateway exited during start-up: {status}");
            }
            if Instant::now() > deadline {
                bail!("the gateway was not SERVING within 30 s");
            }
            if serving(public_addr).await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(GatewayProcess {
            child,
            pid,
            public_addr,
            admin_addr,
            startup: started.elapsed(),
        })
    }

    /// `licensing_gateway_cache_requests_total` summed over both caches, by `result`.
    async fn cache_results(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        let text = reqwest::get(format!("http://{}/metrics", self.admin_addr))
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(cache_results(&text))
    }

    /// The resident set size in KiB.
    fn rss_kib(&self) -> anyhow::Result<u64> {
        rss_kib(self.pid)
    }

    /// Samples the RSS every 50 ms into `peak` until stopped.
    fn sample_rss(&self, peak: &Arc<AtomicU64>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let pid = self.pid;
        let handle = tokio::spawn({
            let stop = Arc::clone(&stop);
            let peak = Arc::clone(peak);
            async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(rss) = rss_kib(pid) {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
        Sampler { stop, handle }
    }

    async fn stop(mut self) {
        // SIGTERM for a graceful drain, as Kubernetes would.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

struct Sampler {
    stop: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<()>,
}

impl Sampler {
    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.handle.await;
    }
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/<pid>/status")
}

/// Sums `licensing_gateway_cache_requests_total` in Prometheus text by its `result` label.
fn cache_results(metrics: &str) -> BTreeMap<String, u64> {
    let mut results = BTreeMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("licensing_gateway_cache_requests_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let result = labels
            .split(',')
            .find_map(|label| label.strip_prefix("result=\""))
            .map(|value| value.trim_end_matches('"'));
        if let (Some(result), Ok(value)) = (result, value.trim().parse::<f64>()) {
            *results.entry(result.to_owned()).or_default() += value as u64;
        }
    }
    results
}

fn free_local_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

async fn serving(addr: SocketAddr) -> bool {
    let Ok(endpoint) = Channel::from_shared(format!("http://{addr}")) else {
        return false;
    };
    let Ok(channel) = endpoint.connect().await else {
        return false;
    };
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "licensing.v1.UserService".into(),
        })
        .await
        .map(|response| response.into_inner().status == ServingStatus::Serving as i32)
        .unwrap_or(false)
}

async fn connect(addr: SocketAddr) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await?)
}

// === the bare tonic server ===

/// Answers `GetProfile` and `ListMyLicenses` from memory; everything else is unimplemented.
#[derive(Debug, Clone)]
struct Canned {
    profile: GetProfileResponse,
    licenses: ListMyLicensesResponse,
}

#[tonic::async_trait]
impl UserService for Canned {
    async fn login(&self, _: Request<LoginRequest>) -> Result<Response<LoginResponse>, Status> {
        Err(Status::unimplemented("canned"))
    }
    async fn refresh_session(
        &self,
        _: Request<RefreshSessionRequest>,
    ) -> Result<Response<RefreshSessionResponse>, Status> {
        Err(Status::unimplemented("canned"))
    }
    async fn logout(&self, _: Request<LogoutRequest>) -> Result<Response<LogoutResponse>, Status> {
        Err(Status::unimplemented("canned"))
    }
    async fn sign_up(&self, _: Request<SignUpRequest>) -> Result<Response<SignUpResponse>, Status> {
        Err(Status::unimplemented("canned"))
    }
    async fn get_profile(
        &self,
        request: Request<GetProfileRequest>,
    ) -> Result<Response<GetProfileResponse>, Status> {
        require_bearer(&request)?;
        Ok(Response::new(self.profile.clone()))
    }
    async fn list_my_licenses(
        &self,
        request: Request<ListMyLicensesRequest>,
    ) -> Result<Response<ListMyLicensesResponse>, Status> {
        require_bearer(&request)?;
        Ok(Response::new(self.licenses.clone()))
    }
}

fn require_bearer<T>(request: &Request<T>) -> Result<(), Status> {
    match request.metadata().get("authorization") {
        Some(value) if value.as_bytes().starts_with(b"Bearer ") => Ok(()),
        _ => Err(Status::unauthenticated("no token")),
    }
}

/// The bare server on its own runtime and thread, like a separate process would be.
struct BareServer {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl BareServer {
    fn start(canned: Canned) -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("bare-tonic".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("runtime for the bare server");
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("bare listener");
                    // The builder's tcp_nodelay does not apply to our own listener.
                    let incoming = tonic::transport::server::TcpIncoming::from(listener)
                        .with_nodelay(Some(true));
                    let _ = Server::builder()
                        .add_service(UserServiceServer::new(canned))
                        .serve_with_incoming_shutdown(incoming, async {
                            let _ = stop.await;
                        })
                        .await;
                });
            })?;
        Ok(BareServer {
            addr,
            shutdown: Some(shutdown),
        })
    }

    fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

// === the report ===

struct Report<'a> {
    args: &'a Args,
    load_average: String,
    plan: Plan,
    binary_size: u64,
    /// The gateway binary, relative to the repository when inside it.
    gateway_bin: String,
    /// Start-up of the hop-cost gateway and of the gateway on its defaults.
    startup: [Duration; 2],
    idle_rss: u64,
    idle_rss_after: u64,
    peak_rss: u64,
    closed: Vec<(Rpc, Target, Sample)>,
    open: Vec<(Target, Sample)>,
    gateway_calls: usize,
    gateway_connections: u64,
    /// Requests the sandbox received during the gateway runs of sections 1 and 2.
    gateway_upstream: u64,
    limited: Limited,
}

impl Report<'_> {
    fn render(&self) -> String {
        let mut md = String::new();
        let plan = self.plan;
        let mut command = String::from("cargo run --release --bin loadgen --");
        if self.args.smoke {
            command.push_str(" --smoke");
        }
        if let Some(out) = &self.args.out {
            let _ = write!(command, " --out {}", out.display());
        }
        let _ = writeln!(md, "# Benchmarks\n");
        if self.args.smoke {
            let _ = writeln!(
                md,
                "> **Smoke run**: tiny counts that only show the pipeline works. The numbers mean nothing.\n"
            );
        }
        let _ = writeln!(md, "Produced by `{command}` on {}.\n", machine::date());
        let _ = writeln!(md, "| machine | |\n|---|---|");
        let _ = writeln!(md, "| CPU | {} |", machine::cpu_model());
        let _ = writeln!(md, "| cores (nproc) | {} |", machine::nproc());
        let _ = writeln!(md, "| memory | {} |", machine::memory());
        let _ = writeln!(md, "| OS | {} |", machine::os());
        let _ = writeln!(md, "| rustc | {} |", machine::rustc());
        let _ = writeln!(
            md,
            "| load average at start (1, 5, 15 min) | {} |",
            self.load_average
        );
        let _ = writeln!(md, "| gateway commit | {} |", machine::git_commit());
        let _ = writeln!(
            md,
            "| build | loadgen {} ; gateway `licensing-gateway serve` as child processes |",
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
        );
        let _ = writeln!(
            md,
            "\nEverything shares the machine's cores: this program (load client, the sandbox \
             Cryptlex, the bare tonic server) and the gateway process. Loopback only; \
             the sandbox answers from memory, so the `direct` rows are the floor that a real \
             Cryptlex (tens of ms away) would dwarf.\n"
        );
        let overrides = |profile: Profile| {
            profile
                .overrides()
                .iter()
                .map(|(key, value)| format!("`{key}={value}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            md,
            "Two gateways, both `licensing-gateway serve` with the configuration that \
             `licensing-gateway sandbox` writes:\n\n\
             - **hop cost** (sections 1 to 3): {}. Its read cache is off and its own upstream \
             budget lifted, so every call reaches the sandbox; each concurrent caller has its own \
             session, so no two calls in flight are identical and none are coalesced. \
             {} gateway calls made {} upstream requests.\n\
             - **defaults** (section 4): no overrides (3 s read cache, coalescing, 50 upstream \
             requests per 5 s with reserves for issuance and sign-in).\n",
            overrides(Profile::HopCost),
            self.gateway_calls,
            self.gateway_upstream,
        );

        // 1. closed loop
        let _ = writeln!(
            md,
            "## 1. Throughput and latency (closed loop, sandbox rate limit off)\n\n\
             {} calls per row after {} warm-up calls, {} concurrent callers; gRPC on one HTTP/2 \
             connection, direct HTTP on a keep-alive pool. Latencies in ms.\n",
            plan.calls, plan.warmup, plan.concurrency
        );
        let _ = writeln!(
            md,
            "| RPC | path | calls | errors | calls/s | p50 | p90 | p99 |\n|---|---|--:|--:|--:|--:|--:|--:|"
        );
        for (rpc, target, sample) in &self.closed {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} |",
                rpc.name(),
                target.name(),
                sample.sent(),
                sample.errors,
                sample.rps(),
                sample.percentile_ms(50.0),
                sample.percentile_ms(90.0),
                sample.percentile_ms(99.0)
            );
        }
        let _ = writeln!(
            md,
            "\n### Cost per hop (ratios)\n\n\
             `gateway ÷ direct`: what putting the gateway in front of the upstream costs; \
             `gateway ÷ bare`: the gateway against a gRPC server that does no work.\n"
        );
        let _ = writeln!(
            md,
            "| RPC | throughput gateway ÷ direct | p50 gateway ÷ direct | p99 gateway ÷ direct | \
             throughput gateway ÷ bare | p50 gateway ÷ bare | added p50 vs direct (ms) |\n\
             |---|--:|--:|--:|--:|--:|--:|"
        );
        for rpc in [Rpc::GetProfile, Rpc::ListMyLicenses] {
            let find = |target: Target| {
                self.closed
                    .iter()
                    .find(|(r, t, _)| *r == rpc && *t == target)
                    .map(|(_, _, sample)| sample)
            };
            if let (Some(gateway), Some(direct), Some(bare)) = (
                find(Target::Gateway),
                find(Target::Direct),
                find(Target::Bare),
            ) {
                let _ = writeln!(
                    md,
                    "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:+.2} |",
                    rpc.name(),
                    gateway.rps() / direct.rps(),
                    gateway.percentile_ms(50.0) / direct.percentile_ms(50.0),
                    gateway.percentile_ms(99.0) / direct.percentile_ms(99.0),
                    gateway.rps() / bare.rps(),
                    gateway.percentile_ms(50.0) / bare.percentile_ms(50.0),
                    gateway.percentile_ms(50.0) - direct.percentile_ms(50.0),
                );
            }
        }

        // 2. open loop
        let _ = writeln!(
            md,
            "\n## 2. Added latency at a fixed rate (open loop)\n\n\
             `GetProfile` at {} calls/s for {:?}, each call started on schedule whatever the \
             earlier ones did; latency counts from the scheduled start. Latencies in ms.\n",
            plan.open_rate, plan.open_duration
        );
        let _ = writeln!(
            md,
            "| path | calls | errors | achieved calls/s | p50 | p90 | p99 |\n|---|--:|--:|--:|--:|--:|--:|"
        );
        for (target, sample) in &self.open {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} |",
                target.name(),
                sample.sent(),
                sample.errors,
                sample.rps(),
                sample.percentile_ms(50.0),
                sample.percentile_ms(90.0),
                sample.percentile_ms(99.0)
            );
        }
        let find_open = |target: Target| {
            self.open
                .iter()
                .find(|(t, _)| *t == target)
                .map(|(_, sample)| sample)
        };
        if let (Some(gateway), Some(direct)) =
            (find_open(Target::Gateway), find_open(Target::Direct))
        {
            let _ = writeln!(
                md,
                "\nAdded by the gateway at {} calls/s: p50 {:+.2} ms, p90 {:+.2} ms, p99 {:+.2} ms.",
                plan.open_rate,
                gateway.percentile_ms(50.0) - direct.percentile_ms(50.0),
                gateway.percentile_ms(90.0) - direct.percentile_ms(90.0),
                gateway.percentile_ms(99.0) - direct.percentile_ms(99.0),
            );
        }

        // 3. resources
        let per_10k = self.gateway_connections as f64 * 10_000.0 / self.gateway_calls.max(1) as f64;
        let _ = writeln!(md, "\n## 3. Resources\n\n| metric | value |\n|---|--:|");
        let _ = writeln!(
            md,
            "| upstream TCP connections opened per 10,000 gateway calls | {per_10k:.2} ({} over {} calls) |",
            self.gateway_connections, self.gateway_calls
        );
        let _ = writeln!(
            md,
            "| gateway RSS, idle after start-up | {} |",
            mib(self.idle_rss)
        );
        let _ = writeln!(
            md,
            "| gateway RSS, peak under closed-loop load | {} |",
            mib(self.peak_rss)
        );
        let _ = writeln!(
            md,
            "| gateway RSS, idle after the load | {} |",
            mib(self.idle_rss_after)
        );
        let _ = writeln!(
            md,
            "| start-up: process spawn to first SERVING health answer (hop cost, defaults) | \
             {:.0} ms, {:.0} ms |",
            self.startup[0].as_secs_f64() * 1000.0,
            self.startup[1].as_secs_f64() * 1000.0
        );
        let _ = writeln!(
            md,
            "| gateway binary size (`{}`) | {:.1} MiB |",
            self.gateway_bin,
            self.binary_size as f64 / (1024.0 * 1024.0)
        );

        // 4. rate limited
        let l = &self.limited;
        let errors = if l.errors.is_empty() {
            "none".to_owned()
        } else {
            l.errors
                .iter()
                .map(|(kind, count)| format!("{count}× {kind}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let cache = |result: &str| l.cache.get(result).copied().unwrap_or(0);
        let answered_by_cache = cache("hit") + cache("coalesced") + cache("stale");
        let ratio = |part: u64| part as f64 * 100.0 / l.offered.max(1) as f64;
        let _ = writeln!(
            md,
            "\n## 4. Under Cryptlex's rate limit (sandbox enforcing 50 requests per 5 s)\n\n\
             The gateway on its defaults. {} page views at {} per second for {:?} (open loop), \
             round-robin over {} signed-in users, so each user views a page every {:.1} s. \
             Each page view makes {READS_PER_PAGE} reads at once: `GetProfile` twice (layout \
             and page) and `ListMyLicenses` once. The offered load, {:.0} reads/s, is {:.1}× \
             what Cryptlex allows the whole service (10 requests/s).\n",
            l.page_views,
            plan.page_views_per_second,
            plan.limited_duration,
            l.users,
            l.users as f64 / f64::from(plan.page_views_per_second),
            l.offered as f64 / plan.limited_duration.as_secs_f64(),
            l.offered as f64 / plan.limited_duration.as_secs_f64() / 10.0,
        );
        let _ = writeln!(md, "| metric | value |\n|---|--:|");
        let _ = writeln!(md, "| reads offered to the gateway | {} |", l.offered);
        let _ = writeln!(md, "| answered OK | {} |", l.ok);
        let _ = writeln!(md, "| failed (gRPC code and ErrorInfo reason) | {errors} |");
        let _ = writeln!(
            md,
            "| answered from the read cache | {} ({:.1} %) |",
            cache("hit"),
            ratio(cache("hit"))
        );
        let _ = writeln!(
            md,
            "| answered by joining an identical call in flight (coalesced) | {} ({:.1} %) |",
            cache("coalesced"),
            ratio(cache("coalesced"))
        );
        let _ = writeln!(
            md,
            "| cache and coalescing hit ratio (reads answered without an upstream call) | {:.1} % |",
            ratio(answered_by_cache)
        );
        let _ = writeln!(
            md,
            "| cache misses (sent to Cryptlex, or refused when the budget was spent) | {} |",
            cache("miss")
        );
        let _ = writeln!(
            md,
            "| upstream calls made (requests the sandbox received) | {} |",
            l.upstream_requests
        );
        let _ = writeln!(
            md,
            "| upstream calls per offered read | {:.2} |",
            l.upstream_requests as f64 / l.offered.max(1) as f64
        );
        let _ = writeln!(
            md,
            "| most upstream calls in any 5 s (Cryptlex allows 50) | {} |",
            l.busiest_window
        );
        let _ = writeln!(md, "| 429s sent by the sandbox | **{}** |", l.responses_429);
        let _ = writeln!(md, "| upstream connections opened | {} |", l.connections);
        let _ = writeln!(md, "| wall time | {:.1} s |", l.elapsed.as_secs_f64());
        if l.responses_429 > 0 {
            let _ = writeln!(
                md,
                "\n**{} 429s reached the gateway.** The goal is zero: the gateway keeps its own \
                 budget below Cryptlex's limit, so a 429 means the budget and the limit disagree.",
                l.responses_429
            );
        } else if l.ok < l.offered {
            let _ = writeln!(
                md,
                "\nReads beyond what the cache, coalescing and the budget can serve are refused \
                 at once with `UNAVAILABLE` and a `RetryInfo` delay, instead of being sent to \
                 Cryptlex and answered 429 there; the budget keeps a share for `IssueLicense` \
                 and sign-in, which this run does not use."
            );
        }

        // errors seen anywhere
        let mut first_errors = Vec::new();
        for (rpc, target, sample) in &self.closed {
            if let Some(error) = &sample.first_error {
                first_errors.push(format!("{} via {}: {error}", rpc.name(), target.name()));
            }
        }
        for (target, sample) in &self.open {
            if let Some(error) = &sample.first_error {
                first_errors.push(format!("open loop via {}: {error}", target.name()));
            }
        }
        if !first_errors.is_empty() {
            let _ = writeln!(md, "\n### First error of each run that had errors\n");
            for error in first_errors {
                let _ = writeln!(md, "- {error}");
            }
        }
        md
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Facts about the machine, best effort.
mod machine {
    pub(super) fn date() -> String {
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string()
    }

    pub(super) fn load_average() -> String {
        std::fs::read_to_string("/proc/loadavg")
            .ok()
            .map(|text| {
                text.split_whitespace()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_else(|| "unknown".into())
    }

    pub(super) fn nproc() -> usize {
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
    }

    pub(super) fn cpu_model() -> String {
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|line| line.starts_with("model name"))
                    .and_then(|line| line.split_once(':'))
                    .map(|(_, model)| model.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into())
    }

    pub(super) fn memory() -> String {
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|line| line.strip_prefix("MemTotal:"))
                    .and_then(|value| {
                        value
                            .trim()
                            .trim_end_matches("kB")
                            .trim()
                            .parse::<f64>()
                            .ok()
                    })
            })
            .map_or_else(
                || "unknown".into(),
                |kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0),
            )
    }

    pub(super) fn os() -> String {
        let pretty = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|line| line.strip_prefix("PRETTY_NAME="))
                    .map(|name| name.trim_matches('"').to_owned())
            });
        let kernel = command("uname", &["-r"]);
        format!(
            "{}, Linux {}",
            pretty.unwrap_or_else(|| std::env::consts::OS.into()),
            kernel
        )
    }

    pub(super) fn rustc() -> String {
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
        command(&rustc, &["--version"])
    }

    /// The commit, with `-dirty` when the work tree has uncommitted changes.
    pub(super) fn git_commit() -> String {
        let dir = super::WORKSPACE_ROOT;
        command(
            "git",
            &["-C", dir, "describe", "--always", "--dirty", "--abbrev=7"],
        )
    }

    fn command(program: &str, args: &[&str]) -> String {
        std::process::Command::new(program)
            .args(args)
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
            .unwrap_or_else(|| "unknown".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_results_sum_both_caches_by_result() {
        let text = "\
# TYPE licensing_gateway_cache_requests_total counter
licensing_gateway_cache_requests_total{cache=\"profile\",result=\"hit\"} 7
licensing_gateway_cache_requests_total{cache=\"licenses\",result=\"hit\"} 3
licensing_gateway_cache_requests_total{cache=\"profile\",result=\"miss\"} 2
licensing_gateway_cache_requests_total_other{result=\"hit\"} 100
licensing_gateway_rpc_requests_total{code=\"OK\"} 12
";
        let results = cache_results(text);
        assert_eq!(results.get("hit"), Some(&10));
        assert_eq!(results.get("miss"), Some(&2));
        assert_eq!(results.len(), 2);
    }

    #[test]
    fn busiest_window_counts_the_densest_span() {
        let start = chrono::Utc::now();
        let at = |ms: i64| start + chrono::Duration::milliseconds(ms);
        // Spans are half-open: 6000 is not within 5 s of 1000, so the most are
        // 1000, 3000 and 5999 (or 3000, 5999 and 6000).
        let instants = [at(6000), at(0), at(1000), at(3000), at(5999)];
        assert_eq!(busiest_window(&instants, chrono::Duration::seconds(5)), 3);
        assert_eq!(
            busiest_window(&instants, chrono::Duration::milliseconds(5001)),
            4,
            "a span a millisecond longer also holds 6000"
        );
        assert_eq!(busiest_window(&[], chrono::Duration::seconds(5)), 0);
    }
}

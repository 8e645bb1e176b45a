//! `--instructions`: what one call costs the server, in instructions, counted by
//! `valgrind --tool=callgrind`. Unlike a wall-clock figure on a shared 2-core machine,
//! an instruction count repeats for the same binary and inputs whatever else the
//! machine is doing, so it is the measure a regression guard can hold a line on.
//!
//! Each server runs as its own process under callgrind: the gateway
//! (`licensing-gateway serve`) and the bare tonic server (this program with
//! `--bare-server`, answering from memory what the gateway answered). For each row,
//! loadgen makes [`InstructionPlan::warmup`] calls, zeroes the counters
//! (`callgrind_control --zero`), makes [`InstructionPlan::calls`] calls one after
//! another on one HTTP/2 connection, dumps the counters (`callgrind_control --dump`),
//! and divides the instructions the process executed in between (every thread:
//! the runtime, the handlers, the background tasks) by the calls. The sandbox Cryptlex
//! runs in loadgen's own process, so an uncached call counts the gateway's side of
//! the hop only.
//!
//! `--guard FILE` measures the cached `GetProfile` in a short mode and fails when it
//! costs more than [`GUARD_TOLERANCE`] over the figure committed in FILE
//! (`--update-baseline` rewrites it): a regression guard, not a timing.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use licensing_gateway::commands::sandbox::Sandbox;
use licensing_gateway::grpc::pb::user_service_client::UserServiceClient;
use licensing_gateway::grpc::pb::{GetProfileRequest, SignUpRequest};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::process::GatewayProcess;
use crate::targets::{Profile, connect, demo_sessions, list_request, with_token};

/// The section's heading in the report.
pub(crate) const HEADING: &str = "## Instructions per call (callgrind)";

/// A call may cost at most this much more than the committed baseline.
pub(crate) const GUARD_TOLERANCE: f64 = 0.25;
/// Licenses the user of the `ListMyLicenses` rows holds.
const LICENSES: usize = 10;
/// Start-up under callgrind is tens of times slower than without it.
const START_DEADLINE: Duration = Duration::from_secs(180);

/// How many calls each row makes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InstructionPlan {
    pub(crate) warmup: usize,
    pub(crate) calls: usize,
}

impl InstructionPlan {
    pub(crate) fn full() -> Self {
        Self {
            warmup: 200,
            calls: 2_000,
        }
    }

    /// The guard's: one row on each server, a few seconds under callgrind.
    pub(crate) fn guard() -> Self {
        Self {
            warmup: 100,
            calls: 500,
        }
    }
}

/// What a row calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Call {
    /// `grpc.health.v1.Health/Check` for `licensing.v1.UserService`.
    Health,
    /// `GetProfile` of the demo user (two licenses).
    GetProfile,
    /// `ListMyLicenses` (page size 25) of a user holding [`LICENSES`] licenses.
    ListMyLicenses,
}

impl Call {
    fn name(self) -> &'static str {
        match self {
            Call::Health => "health check",
            Call::GetProfile => "GetProfile",
            Call::ListMyLicenses => "ListMyLicenses (10 licenses)",
        }
    }
}

/// Which server answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Server {
    /// The bare tonic server, from memory.
    Bare,
    /// The gateway with its read cache holding the answer.
    Cached,
    /// The gateway with its read cache off: every call goes to the sandbox.
    Uncached,
}

/// One measured row.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) call: Call,
    pub(crate) server: Server,
    pub(crate) calls: usize,
    pub(crate) instructions: u64,
}

impl Row {
    pub(crate) fn per_call(&self) -> f64 {
        self.instructions as f64 / self.calls as f64
    }
}

/// The figures of one run.
#[derive(Debug, Clone)]
pub(crate) struct Measured {
    pub(crate) plan: InstructionPlan,
    pub(crate) rows: Vec<Row>,
    /// The token digest's cost (full runs only).
    pub(crate) digest: Option<DigestCost>,
}

impl Measured {
    pub(crate) fn per_call(&self, call: Call, server: Server) -> Option<f64> {
        self.rows
            .iter()
            .find(|row| row.call == call && row.server == server)
            .map(Row::per_call)
    }

    /// The gateway's row over the bare server's, for the same call.
    pub(crate) fn ratio(&self, call: Call, server: Server) -> Option<f64> {
        Some(self.per_call(call, server)? / self.per_call(call, Server::Bare)?)
    }

    /// The Markdown section of the report.
    pub(crate) fn render(&self, command: &str) -> String {
        let mut text = String::new();
        text.push_str(&format!(
            "Instructions the server process executed per call (every thread), counted by `valgrind --tool=callgrind`: {} calls after {} warm-up calls, one after another on one HTTP/2 connection. Counts repeat for the same binary and inputs whatever else the machine does (runs differ by well under 1%), so these are the figures to compare across commits. The sandbox runs in the load generator's process, so an uncached call counts the gateway's side of the hop only. Produced by `{command}`.\n\n",
            self.plan.calls, self.plan.warmup
        ));
        text.push_str("| call | server | instructions per call | × bare tonic |\n");
        text.push_str("|---|---|---:|---:|\n");
        for row in &self.rows {
            let server = match (row.server, row.call) {
                (Server::Bare, _) => "bare tonic (from memory)",
                (Server::Cached, Call::Health) => "gateway, public listener",
                (Server::Cached, _) => "gateway, answered from its cache",
                (Server::Uncached, _) => "gateway -> sandbox (cache off)",
            };
            let ratio = match row.server {
                Server::Bare => "1.00".to_owned(),
                server => self
                    .ratio(row.call, server)
                    .map_or_else(|| "-".to_owned(), |ratio| format!("{ratio:.2}")),
            };
            text.push_str(&format!(
                "| {} | {server} | {} | {ratio} |\n",
                row.call.name(),
                group_digits(row.per_call().round() as u64),
            ));
        }
        if let Some(digest) = &self.digest {
            text.push_str(&self.render_digest(digest));
        }
        text
    }

    /// The paragraph on the bearer token's SHA-256, under callgrind and natively.
    fn render_digest(&self, digest: &DigestCost) -> String {
        let mut text = format!(
            "\nEvery call with a bearer token hashes it (here {} bytes) with SHA-256 once, for the read cache's and the refused tokens' keys. Valgrind's virtual CPU has no SHA extensions, so under callgrind that digest runs in software: {} instructions (the same crate hashing a token of that length on its own under callgrind, {DIGESTS} digests). ",
            digest.bytes,
            group_digits(digest.instructions.round() as u64),
        );
        if digest.cpu_has_sha {
            text.push_str(&format!(
                "This machine's CPU has them (`sha_ni`), and the native binary uses them: a digest takes {:.0} ns here natively. ",
                digest.native_nanos
            ));
        } else {
            text.push_str(&format!(
                "This machine's CPU has none either, so natively too the digest runs in software ({:.0} ns each). ",
                digest.native_nanos
            ));
        }
        if let (Some(cached), Some(bare)) = (
            self.per_call(Call::GetProfile, Server::Cached),
            self.per_call(Call::GetProfile, Server::Bare),
        ) {
            let without = cached - digest.instructions;
            text.push_str(&format!(
                "Without the software digest the cached `GetProfile` is {} instructions, {:.2}× bare tonic.\n",
                group_digits(without.round() as u64),
                without / bare
            ));
        }
        text
    }
}

/// The bearer token's SHA-256, which the gateway computes once a call (its read
/// cache and refused-token keys), as valgrind counts it and as it runs natively.
///
/// Valgrind's virtual CPU has no SHA extensions, so under callgrind the `sha2`
/// crate takes its software path; the native binary uses the CPU's SHA
/// instructions where it has them (`sha_ni` in `/proc/cpuinfo`). The digest's
/// share of a cached call is therefore counted here on its own: this program
/// hashes a token of the same length under callgrind (see [`digest_probe`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct DigestCost {
    /// The token's length.
    pub(crate) bytes: usize,
    /// Instructions per digest under callgrind (the software path).
    pub(crate) instructions: f64,
    /// Nanoseconds per digest here, natively.
    pub(crate) native_nanos: f64,
    /// Whether this CPU has the SHA extensions the native path uses.
    pub(crate) cpu_has_sha: bool,
}

/// Digests counted under callgrind by [`digest_cost`].
const DIGESTS: usize = 1_000;

/// `loadgen --sha256-probe N --sha256-probe-bytes B`: hashes B bytes N times, with
/// the gateway's SHA-256 crate, and nothing else.
pub(crate) fn digest_probe(count: usize, bytes: usize) {
    use sha2::Digest as _;
    let token = vec![b'e'; bytes];
    for _ in 0..count {
        std::hint::black_box(sha2::Sha256::digest(std::hint::black_box(&token)));
    }
}

/// The cost of one digest of `bytes` bytes: under callgrind (this program run twice
/// with [`digest_probe`], [`DIGESTS`] digests apart) and natively.
async fn digest_cost(dir: &Path, bytes: usize) -> anyhow::Result<DigestCost> {
    let this = std::env::current_exe().context("locating loadgen itself")?;
    let mut totals = [0u64; 2];
    for (total, count) in totals.iter_mut().zip([0, DIGESTS]) {
        let out = dir.join(format!("digest-{count}.out"));
        let run = tokio::process::Command::new("valgrind")
            .arg("--tool=callgrind")
            .arg("--quiet")
            .arg(format!("--callgrind-out-file={}", out.display()))
            .arg(&this)
            .arg("--sha256-probe")
            .arg(count.to_string())
            .arg("--sha256-probe-bytes")
            .arg(bytes.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output();
        let output = tokio::time::timeout(START_DEADLINE, run)
            .await
            .context("the SHA-256 probe under callgrind took too long")??;
        if !output.status.success() {
            bail!(
                "the SHA-256 probe under callgrind failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let text = std::fs::read_to_string(&out)?;
        *total = dump_total(&text).with_context(|| format!("no totals in {}", out.display()))?;
    }
    let instructions = totals[1].saturating_sub(totals[0]) as f64 / DIGESTS as f64;
    let native = 20_000;
    let started = std::time::Instant::now();
    digest_probe(native, bytes);
    let native_nanos = started.elapsed().as_nanos() as f64 / native as f64;
    Ok(DigestCost {
        bytes,
        instructions,
        native_nanos,
        cpu_has_sha: cpu_has_sha(),
    })
}

fn cpu_has_sha() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("sha")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `1234567` as `1,234,567`.
fn group_digits(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// Every row (`full`), or only the cached `GetProfile` and its bare counterpart.
pub(crate) async fn measure(
    gateway_bin: &Path,
    sandbox: &Sandbox,
    dir: &Path,
    plan: InstructionPlan,
    full: bool,
) -> anyhow::Result<Measured> {
    require_valgrind()?;
    let out_dir = dir.join("callgrind");
    std::fs::create_dir_all(&out_dir)?;
    let mut rows = Vec::new();
    let callgrind = Callgrind::new(&out_dir, "gateway-cached");
    eprintln!("instructions: starting the gateway under callgrind");
    let gateway = GatewayProcess::start_under(
        gateway_bin,
        sandbox,
        Profile::Cached,
        &[],
        &callgrind.wrapper(),
        START_DEADLINE,
    )
    .await?;
    let channel = connect(gateway.public_addr).await?;
    let client = UserServiceClient::new(channel.clone());
    let demo = demo_sessions(&client, 1).await?[0].clone();
    let holder = if full {
        Some(user_with_licenses(&client, sandbox).await?)
    } else {
        None
    };
    let canned = crate::targets::Canned::copy_of(&client, &demo, holder.as_deref()).await?;
    let mut calls = vec![Call::GetProfile];
    if full {
        calls.insert(0, Call::Health);
        calls.push(Call::ListMyLicenses);
    }
    for &call in &calls {
        let token = if call == Call::ListMyLicenses {
            holder.as_deref().unwrap_or(&demo)
        } else {
            &demo
        };
        let instructions = count(&callgrind, gateway.pid(), &channel, call, token, plan).await?;
        rows.push(Row {
            call,
            server: Server::Cached,
            calls: plan.calls,
            instructions,
        });
    }
    gateway.stop().await;

    if full {
        let callgrind = Callgrind::new(&out_dir, "gateway-uncached");
        eprintln!("instructions: starting the cache-less gateway under callgrind");
        let gateway = GatewayProcess::start_under(
            gateway_bin,
            sandbox,
            Profile::HopCost,
            &[],
            &callgrind.wrapper(),
            START_DEADLINE,
        )
        .await?;
        let channel = connect(gateway.public_addr).await?;
        let client = UserServiceClient::new(channel.clone());
        let token = demo_sessions(&client, 1).await?[0].clone();
        let instructions = count(
            &callgrind,
            gateway.pid(),
            &channel,
            Call::GetProfile,
            &token,
            plan,
        )
        .await?;
        rows.push(Row {
            call: Call::GetProfile,
            server: Server::Uncached,
            calls: plan.calls,
            instructions,
        });
        gateway.stop().await;
    }

    let callgrind = Callgrind::new(&out_dir, "bare");
    eprintln!("instructions: starting the bare tonic server under callgrind");
    let bare = BareProcess::start(&callgrind, &canned, dir).await?;
    let channel = connect(bare.addr).await?;
    for &call in &calls {
        let instructions = count(&callgrind, bare.pid, &channel, call, &demo, plan).await?;
        rows.push(Row {
            call,
            server: Server::Bare,
            calls: plan.calls,
            instructions,
        });
    }
    bare.stop().await;
    rows.sort_by_key(|row| (row.call as u8, row.server as u8));
    let digest = if full {
        eprintln!("instructions: the token's SHA-256 under callgrind");
        Some(digest_cost(&out_dir, demo.len()).await?)
    } else {
        None
    };
    Ok(Measured { plan, rows, digest })
}

/// A new user holding [`LICENSES`] licenses (created with a PAT, as the payment
/// service's issuance would); their access token.
async fn user_with_licenses(
    client: &UserServiceClient<Channel>,
    sandbox: &Sandbox,
) -> anyhow::Result<String> {
    let session = client
        .clone()
        .sign_up(SignUpRequest {
            email: format!("holder-{}@example.com", uuid::Uuid::new_v4().simple()),
            password: "loadgen-password".into(),
            first_name: "License".into(),
            last_name: "Holder".into(),
        })
        .await
        .context("signing up the license holder")?
        .into_inner()
        .session
        .context("no session")?;
    let profile = client
        .clone()
        .get_profile(with_token(GetProfileRequest {}, &session.access_token))
        .await?
        .into_inner()
        .profile
        .context("no profile")?;
    let pat = sandbox.cryptlex.controls().create_pat(&["license:write"]);
    let http = reqwest::Client::new();
    for _ in 0..LICENSES {
        http.post(format!("{}/v3/licenses", sandbox.cryptlex.base_url()))
            .bearer_auth(secrecy::ExposeSecret::expose_secret(&pat))
            .json(&serde_json::json!({
                "productId": cryptlex_sandbox::seed::PRODUCT_ID,
                "licenseTemplateId": cryptlex_sandbox::seed::LICENSE_TEMPLATE_ID,
                "userId": profile.id,
            }))
            .send()
            .await?
            .error_for_status()
            .context("creating a license in the sandbox")?;
    }
    Ok(session.access_token)
}

/// Warm-up calls, zeroed counters, the measured calls, a dump: the instructions
/// process `pid` executed for the measured calls.
async fn count(
    callgrind: &Callgrind,
    pid: u32,
    channel: &Channel,
    call: Call,
    token: &str,
    plan: InstructionPlan,
) -> anyhow::Result<u64> {
    eprintln!("instructions: {} on pid {pid}", call.name());
    calls(channel, call, token, plan.warmup).await?;
    callgrind.control(pid, "--zero").await?;
    calls(channel, call, token, plan.calls).await?;
    callgrind.control(pid, "--dump").await?;
    callgrind.last_dump_total(pid)
}

/// `n` calls of `call`, one after another; the first failure ends them.
async fn calls(channel: &Channel, call: Call, token: &str, n: usize) -> anyhow::Result<()> {
    let mut users = UserServiceClient::new(channel.clone());
    let mut health = HealthClient::new(channel.clone());
    for _ in 0..n {
        match call {
            Call::Health => {
                health
                    .check(HealthCheckRequest {
                        service: "licensing.v1.UserService".into(),
                    })
                    .await?;
            }
            Call::GetProfile => {
                users
                    .get_profile(with_token(GetProfileRequest {}, token))
                    .await?;
            }
            Call::ListMyLicenses => {
                let page = users
                    .list_my_licenses(with_token(list_request(), token))
                    .await?
                    .into_inner();
                if page.licenses.is_empty() {
                    bail!("ListMyLicenses answered no licenses");
                }
            }
        }
    }
    Ok(())
}

fn require_valgrind() -> anyhow::Result<()> {
    for tool in ["valgrind", "callgrind_control"] {
        let found = std::process::Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            bail!("--instructions needs `{tool}` (Debian: apt-get install valgrind)");
        }
    }
    Ok(())
}

/// One process's callgrind output, in `dir` under `name`.
struct Callgrind {
    dir: PathBuf,
    name: String,
}

impl Callgrind {
    fn new(dir: &Path, name: &str) -> Self {
        Self {
            dir: dir.to_path_buf(),
            name: name.to_owned(),
        }
    }

    /// The command line in front of the server's.
    fn wrapper(&self) -> Vec<OsString> {
        let mut out_file = OsString::from("--callgrind-out-file=");
        out_file.push(self.dir.join(format!("{}.%p", self.name)));
        vec![
            "valgrind".into(),
            "--tool=callgrind".into(),
            "--quiet".into(),
            out_file,
            // Only totals are read: no per-instruction or per-jump data.
            "--dump-instr=no".into(),
        ]
    }

    /// `callgrind_control <option> <pid>`, within a minute.
    async fn control(&self, pid: u32, option: &str) -> anyhow::Result<()> {
        let run = tokio::process::Command::new("callgrind_control")
            .arg(option)
            .arg(pid.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .with_context(|| format!("callgrind_control {option} {pid} took over a minute"))??;
        if !output.status.success() {
            bail!(
                "callgrind_control {option} {pid} failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    /// The instruction total of process `pid`'s latest dump
    /// (`<name>.<pid>.<n>`, the highest `n`).
    fn last_dump_total(&self, pid: u32) -> anyhow::Result<u64> {
        let prefix = format!("{}.{pid}.", self.name);
        let mut latest: Option<(u32, PathBuf)> = None;
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(n) = name
                .to_str()
                .and_then(|name| name.strip_prefix(&prefix))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if latest.as_ref().is_none_or(|(best, _)| n > *best) {
                latest = Some((n, entry.path()));
            }
        }
        let (_, path) = latest
            .with_context(|| format!("no callgrind dump {prefix}* in {}", self.dir.display()))?;
        let text = std::fs::read_to_string(&path)?;
        dump_total(&text).with_context(|| format!("no totals in {}", path.display()))
    }
}

/// The first event's figure (`Ir`) on a dump's `summary:` or `totals:` line.
fn dump_total(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| {
            line.strip_prefix("summary:")
                .or_else(|| line.strip_prefix("totals:"))
        })
        .and_then(|figures| figures.split_whitespace().next())
        .and_then(|first| first.parse().ok())
}

/// `loadgen --bare-server FILE` as a child process under callgrind.
struct BareProcess {
    child: tokio::process::Child,
    pid: u32,
    addr: std::net::SocketAddr,
}

impl BareProcess {
    async fn start(
        callgrind: &Callgrind,
        canned: &crate::targets::Canned,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let file = dir.join("canned.bin");
        std::fs::write(&file, canned.to_bytes())?;
        let mut wrapper = callgrind.wrapper();
        let program = wrapper.remove(0);
        let mut child = tokio::process::Command::new(program)
            .args(wrapper)
            .arg(std::env::current_exe()?)
            .arg("--bare-server")
            .arg(&file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting the bare server under valgrind")?;
        let pid = child.id().context("the bare server exited at once")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(START_DEADLINE, lines.next_line())
            .await
            .context("the bare server did not start in time")??
            .context("the bare server exited during start-up")?;
        let addr = line
            .strip_prefix(crate::targets::BARE_LISTENING)
            .context("the bare server's first line is not its address")?
            .trim()
            .parse()?;
        Ok(Self { child, pid, addr })
    }

    /// Closing its stdin ends it.
    async fn stop(mut self) {
        drop(self.child.stdin.take());
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// The committed figure `--guard` holds the cached `GetProfile` to.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Baseline {
    /// Instructions per cached `GetProfile` in the guard's short mode.
    pub(crate) cached_get_profile: u64,
    /// The same for the bare tonic server, for context.
    pub(crate) bare_get_profile: u64,
    /// How the figure was made.
    pub(crate) note: String,
}

/// Compares `measured` (a guard run) with the baseline in `file`, or rewrites it.
pub(crate) fn guard(measured: &Measured, file: &Path, update: bool) -> anyhow::Result<String> {
    let cached = measured
        .per_call(Call::GetProfile, Server::Cached)
        .context("no cached GetProfile row")?
        .round() as u64;
    let bare = measured
        .per_call(Call::GetProfile, Server::Bare)
        .context("no bare GetProfile row")?
        .round() as u64;
    if update {
        let baseline = Baseline {
            cached_get_profile: cached,
            bare_get_profile: bare,
            note: format!(
                "instructions per call, `loadgen --instructions --guard` ({} calls after {} warm-up), release build; rewrite with --update-baseline",
                measured.plan.calls, measured.plan.warmup
            ),
        };
        std::fs::write(file, serde_json::to_string_pretty(&baseline)? + "\n")
            .with_context(|| format!("writing {}", file.display()))?;
        return Ok(format!(
            "wrote {}: cached GetProfile {cached} instructions per call (bare tonic {bare})",
            file.display()
        ));
    }
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let baseline: Baseline = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a baseline", file.display()))?;
    let verdict = judge(cached, baseline.cached_get_profile);
    let summary = format!(
        "cached GetProfile: {cached} instructions per call, baseline {} ({:+.1}%, at most +{:.0}% allowed); bare tonic {bare} (baseline {})",
        baseline.cached_get_profile,
        (cached as f64 / baseline.cached_get_profile as f64 - 1.0) * 100.0,
        GUARD_TOLERANCE * 100.0,
        baseline.bare_get_profile,
    );
    match verdict {
        Verdict::Within => Ok(summary),
        Verdict::Over => bail!("{summary}: the cached read grew past the guard"),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Within,
    Over,
}

fn judge(measured: u64, baseline: u64) -> Verdict {
    if measured as f64 > baseline as f64 * (1.0 + GUARD_TOLERANCE) {
        Verdict::Over
    } else {
        Verdict::Within
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dump_total_is_the_first_figure_of_summary_or_totals() {
        let dump = "version: 1\ncreator: callgrind-3.19.0\nevents: Ir\n\nfn=main\n1 5\n\nsummary: 123456\ntotals: 123456\n";
        assert_eq!(dump_total(dump), Some(123_456));
        assert_eq!(dump_total("events: Ir Dr\ntotals: 77 9\n"), Some(77));
        assert_eq!(dump_total("events: Ir\n"), None);
    }

    #[test]
    fn the_guard_fails_only_past_a_quarter_over_the_baseline() {
        assert_eq!(judge(100, 100), Verdict::Within);
        assert_eq!(judge(125, 100), Verdict::Within);
        assert_eq!(judge(126, 100), Verdict::Over);
        assert_eq!(judge(60, 100), Verdict::Within);
    }

    #[test]
    fn figures_are_grouped_by_thousands() {
        assert_eq!(group_digits(0), "0");
        assert_eq!(group_digits(999), "999");
        assert_eq!(group_digits(1_000), "1,000");
        assert_eq!(group_digits(267_987), "267,987");
        assert_eq!(group_digits(1_234_567), "1,234,567");
    }
}

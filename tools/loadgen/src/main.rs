//! `loadgen`: what the gateway costs and saves, measured on this machine in one run.
//!
//! ```sh
//! cargo run --release -p loadgen -- --out BENCHMARKS.md   # about a minute
//! cargo run --release -p loadgen -- --smoke               # a few seconds, for CI
//! cargo run --release -p loadgen -- --soak --out BENCHMARKS.md  # 1M calls, minutes
//! cargo run --release -p loadgen -- --scenarios --out BENCHMARKS.md  # issue 12, ~5 min
//! cargo run -p loadgen -- --scenarios --scenario busy-evening-30  # one, debug build
//! cargo run --release -p loadgen -- --instructions --out BENCHMARKS.md  # ~3 min
//! cargo run --release -p loadgen -- --instructions --guard perf/baseline.json  # CI
//! cargo build --profile profiling && cargo run --release -p loadgen -- --perf-top \
//!     --gateway-bin target/profiling/licensing-gateway --out BENCHMARKS.md
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
//! `--soak` runs only the soak ([`soak`]): a million mixed calls, most of them hostile
//! (junk tokens, malformed requests, bytes that are not protobuf) among valid users'
//! calls, with the gateway's RSS and open descriptors sampled throughout; it writes its
//! own section into `--out`, and a full run keeps that section when it rewrites the file.
//!
//! `--scenarios` runs only the scenarios of issue 12 ([`scenarios`]): page views, a read
//! flood, replicas on PostgreSQL and webhook coherence, with the sandbox enforcing
//! Cryptlex's limit; `--scenario <name>` (repeatable) picks some. They write their own
//! section into `--out`, kept by the other runs.
//!
//! `--instructions` runs only the instruction counts ([`instructions`]): the gateway and
//! a bare tonic server each under `valgrind --tool=callgrind`, instructions per call for
//! a health check, a cached and an uncached `GetProfile` and `ListMyLicenses`; it writes
//! its own section into `--out`. With `--guard FILE` it measures only the cached
//! `GetProfile` (a short mode) and fails if it grew more than 25% over FILE's figure.
//!
//! Every gRPC status other than OK counts as an error. Nothing here is a timed
//! assertion: `--smoke` only checks that the whole pipeline runs.
//!
//! The run's sequence is [`measure`], below. [`plan`] holds the counts, [`targets`] what
//! is called, [`load`] how calls are sent, [`process`] the gateway child processes and
//! their resources, and [`report`] (with [`machine`]) the Markdown written at the end.

mod instructions;
mod load;
mod machine;
mod perf_top;
mod plan;
mod process;
mod report;
mod scenarios;
mod soak;
mod targets;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use licensing_gateway::grpc::pb::user_service_client::UserServiceClient;

use crate::load::GatewayTally;
use crate::plan::Plan;
use crate::process::GatewayProcess;
use crate::report::Report;
use crate::targets::{
    BareServer, Profile, Targets, connect, demo_sessions, sign_up_users, start_sandbox,
};

/// Benchmarks the gateway against the sandbox Cryptlex and writes a Markdown report.
#[derive(Debug, Parser)]
struct Args {
    /// Tiny counts, a few seconds in all (for CI). The numbers mean nothing.
    #[arg(long)]
    smoke: bool,
    /// Also write the report to this file (e.g. BENCHMARKS.md).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Run only the soak: mixed hostile and valid calls, the gateway's memory and
    /// descriptors sampled throughout. Writes its own section into `--out`.
    #[arg(long)]
    soak: bool,
    /// Calls the soak makes.
    #[arg(long, default_value_t = 1_000_000)]
    soak_calls: usize,
    /// The soak stops after this long even if calls remain.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    soak_max_time: Duration,
    /// Run only the scenarios of issue 12 (all of them unless `--scenario` picks).
    /// Writes its own section into `--out`.
    #[arg(long)]
    scenarios: bool,
    /// Run only this scenario (repeatable); implies `--scenarios`.
    #[arg(long, value_enum)]
    scenario: Vec<scenarios::Scenario>,
    /// The gateway binary. Default: `licensing-gateway` next to this program,
    /// built first with `cargo build` in the same profile.
    #[arg(long)]
    gateway_bin: Option<PathBuf>,
    /// Run only the instruction counts under `valgrind --tool=callgrind`. Writes its
    /// own section into `--out`.
    #[arg(long)]
    instructions: bool,
    /// With `--instructions`: measure only the cached `GetProfile` (a short mode) and
    /// fail if it costs more than 25% over the baseline in this file.
    #[arg(long, requires = "instructions")]
    guard: Option<PathBuf>,
    /// With `--guard`: write the figures measured into the baseline file instead.
    #[arg(long, requires = "guard")]
    update_baseline: bool,
    /// With `--instructions`: keep the callgrind files in this directory, one per
    /// server process and dump (`gateway-cached.<pid>.<n>`, `bare.<pid>.<n>`...), for
    /// `callgrind_annotate`. Function names need binaries with symbols
    /// (`cargo build --profile profiling`).
    #[arg(long, requires = "instructions")]
    keep_callgrind: Option<PathBuf>,
    /// Run only a `perf record -e cpu-clock` profile of the gateway under cached
    /// `GetProfile` calls; symbols need `--gateway-bin target/profiling/licensing-gateway`
    /// (`cargo build --profile profiling`). Writes its own section into `--out`.
    #[arg(long, conflicts_with = "instructions")]
    perf_top: bool,
    /// Serve the canned answers in this file as a bare tonic server (the process
    /// `--instructions` measures); prints its address, ends when stdin closes.
    #[arg(long, hide = true)]
    bare_server: Option<PathBuf>,
    /// Hash `--sha256-probe-bytes` bytes this many times with SHA-256 and end (what
    /// `--instructions` counts under callgrind as the token digest's cost).
    #[arg(long, hide = true)]
    sha256_probe: Option<usize>,
    #[arg(long, hide = true, default_value_t = 800)]
    sha256_probe_bytes: usize,
}

/// The repository root (the gateway's package), two levels above this crate.
const WORKSPACE_ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(count) = args.sha256_probe {
        instructions::digest_probe(count, args.sha256_probe_bytes);
        return Ok(());
    }
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a rustls crypto provider was already installed"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let Some(file) = &args.bare_server {
        return runtime.block_on(targets::serve_bare(file));
    }
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let plan = if args.smoke {
        Plan::smoke()
    } else {
        Plan::full()
    };
    let scenario_mode = args.scenarios || !args.scenario.is_empty();
    if cfg!(debug_assertions) && !args.smoke {
        eprintln!("warning: loadgen is a debug build; use `cargo run --release -p loadgen`");
    }
    let gateway_bin = match args.gateway_bin.clone() {
        Some(path) => path,
        None => process::build_gateway()?,
    };
    let binary_size = std::fs::metadata(&gateway_bin)
        .with_context(|| format!("reading {}", gateway_bin.display()))?
        .len();

    let dir = std::env::temp_dir().join(format!("loadgen-{}", uuid::Uuid::new_v4().simple()));
    if let Some(file) = &args.guard {
        let result = run_guard(&gateway_bin, &dir, file, args.update_baseline).await;
        let _ = std::fs::remove_dir_all(&dir);
        println!("{}", result?);
        return Ok(());
    }
    let result = if args.soak {
        run_soak(&args, &gateway_bin, &dir).await
    } else if args.instructions {
        run_instructions(&args, &gateway_bin, &dir).await
    } else if args.perf_top {
        let sandbox = start_sandbox(&dir).await?;
        perf_top::run(&gateway_bin, &sandbox, &dir).await
    } else if scenario_mode {
        run_scenarios(&args, &gateway_bin, &dir).await
    } else {
        measure(&args, plan, &gateway_bin, binary_size, &dir).await
    };
    if let Some(keep) = &args.keep_callgrind {
        keep_callgrind_files(&dir.join("callgrind"), keep)?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    let report = result?;
    println!("{report}");
    if let Some(out) = &args.out {
        let existing = std::fs::read_to_string(out).unwrap_or_default();
        let text = if args.soak {
            soak::splice_section(&existing, &report)
        } else if args.instructions {
            soak::splice_named(&existing, instructions::HEADING, &report)
        } else if args.perf_top {
            soak::splice_named(&existing, perf_top::HEADING, &report)
        } else if scenario_mode {
            soak::splice_named(&existing, scenarios::HEADING, &report)
        } else {
            // A full run rewrites the file but keeps the soak's and the scenarios'
            // sections (unless it wrote one itself, as the smoke does).
            let mut text = report;
            for heading in [
                instructions::HEADING,
                perf_top::HEADING,
                scenarios::HEADING,
                soak::HEADING,
            ] {
                if !text.contains(heading)
                    && let Some(section) = soak::existing_named(&existing, heading)
                {
                    text = soak::splice_named(&text, heading, section);
                }
            }
            text
        };
        std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}

/// The soak against one gateway on [`Profile::Soak`]; returns its report section.
/// Copies the callgrind files of `from` into `to` (created if missing).
fn keep_callgrind_files(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        std::fs::copy(entry.path(), &target)
            .with_context(|| format!("copying to {}", target.display()))?;
    }
    eprintln!("callgrind files kept in {}", to.display());
    Ok(())
}

async fn run_soak(args: &Args, gateway_bin: &Path, dir: &Path) -> anyhow::Result<String> {
    let sandbox = start_sandbox(dir).await?;
    let controls = sandbox.cryptlex.controls();
    eprintln!("starting the soak gateway ({})", gateway_bin.display());
    let gateway = GatewayProcess::start(gateway_bin, &sandbox, Profile::Soak).await?;
    let plan = soak::SoakPlan {
        calls: args.soak_calls,
        max_time: args.soak_max_time,
    };
    eprintln!("soak: {} calls, at most {:?}", plan.calls, plan.max_time);
    let result = soak::run(&gateway, &controls, plan, Profile::Soak.overrides()).await;
    gateway.stop().await;
    let mut command = String::from("cargo run --release -p loadgen -- --soak");
    if args.soak_calls != 1_000_000 {
        command.push_str(&format!(" --soak-calls {}", args.soak_calls));
    }
    if let Some(out) = &args.out {
        command.push_str(&format!(" --out {}", out.display()));
    }
    Ok(result?.render(&command))
}

/// Every instruction-count row; returns their section.
async fn run_instructions(args: &Args, gateway_bin: &Path, dir: &Path) -> anyhow::Result<String> {
    let sandbox = start_sandbox(dir).await?;
    let plan = instructions::InstructionPlan::full();
    let measured = instructions::measure(gateway_bin, &sandbox, dir, plan, true).await?;
    let mut command = String::from("cargo run --release -p loadgen -- --instructions");
    if let Some(out) = &args.out {
        command.push_str(&format!(" --out {}", out.display()));
    }
    let commit = machine::git_commit();
    // A blank line before the next section.
    Ok(format!(
        "{}\n\n{}\n",
        instructions::HEADING,
        measured.render(&format!("{command}` at commit `{commit}"))
    ))
}

/// The guard: the cached `GetProfile` against the baseline in `file`.
async fn run_guard(
    gateway_bin: &Path,
    dir: &Path,
    file: &Path,
    update: bool,
) -> anyhow::Result<String> {
    if cfg!(debug_assertions) {
        anyhow::bail!("the guard's baseline is a release build's: use `cargo run --release`");
    }
    let sandbox = start_sandbox(dir).await?;
    let plan = instructions::InstructionPlan::guard();
    let measured = instructions::measure(gateway_bin, &sandbox, dir, plan, false).await?;
    instructions::guard(&measured, file, update)
}

/// The scenarios of issue 12 (those `--scenario` picks, or all); returns their section.
async fn run_scenarios(args: &Args, gateway_bin: &Path, dir: &Path) -> anyhow::Result<String> {
    let sandbox = start_sandbox(dir).await?;
    let mut selected = if args.scenario.is_empty() {
        scenarios::Scenario::ALL.to_vec()
    } else {
        args.scenario.clone()
    };
    selected.sort_unstable();
    selected.dedup();
    eprintln!("scenarios with {}", gateway_bin.display());
    let outcomes = scenarios::run(gateway_bin, &sandbox, &selected).await;
    let mut command = format!(
        "cargo run {}-p loadgen -- --scenarios",
        if cfg!(debug_assertions) {
            ""
        } else {
            "--release "
        }
    );
    if !args.scenario.is_empty() {
        for scenario in &selected {
            command.push_str(&format!(" --scenario {}", scenario.name()));
        }
    }
    if let Some(out) = &args.out {
        command.push_str(&format!(" --out {}", out.display()));
    }
    Ok(scenarios::render(&outcomes, &command))
}

/// The whole run, section by section; returns the report.
async fn measure(
    args: &Args,
    plan: Plan,
    gateway_bin: &Path,
    binary_size: u64,
    dir: &Path,
) -> anyhow::Result<String> {
    // Other work on the machine skews everything; say how busy it was.
    let load_average = machine::load_average();
    let sandbox = start_sandbox(dir).await?;
    let controls = sandbox.cryptlex.controls();

    // === sections 1 to 3: the cost of the hop ===
    eprintln!(
        "starting the measurement gateway ({})",
        gateway_bin.display()
    );
    let gateway = GatewayProcess::start(gateway_bin, &sandbox, Profile::HopCost).await?;
    let idle_rss = gateway.quiet_rss_kib(Duration::from_millis(300)).await?;
    let idle_rss_parts = process::rss_parts_kib(gateway.pid())?;
    let client = UserServiceClient::new(connect(gateway.public_addr).await?);
    let tokens = demo_sessions(&client, plan.concurrency).await?;
    let bare = BareServer::start_like(&client, &tokens[0]).await?;
    eprintln!("starting the cached gateway");
    let cached = GatewayProcess::start(gateway_bin, &sandbox, Profile::Cached).await?;
    let targets = Targets::new(
        tokens,
        client.clone(),
        UserServiceClient::new(connect(bare.addr).await?),
        UserServiceClient::new(connect(cached.public_addr).await?),
        sandbox.cryptlex.base_url(),
        format!("http://{}", gateway.public_addr),
        plan.concurrency,
    )?;

    let mut tally = GatewayTally::default();
    // 1. closed loop
    let (closed, peak_rss) =
        load::closed_loops(plan, &targets, &gateway, &controls, &mut tally).await;
    // 2. open loop at a fixed rate
    let open = load::open_loops(plan, &targets, &controls, &mut tally).await;
    // 3. resources (the rest were measured along the way)
    let idle_rss_after = gateway.quiet_rss_kib(Duration::from_millis(500)).await?;
    let idle_rss_after_parts = process::rss_parts_kib(gateway.pid())?;
    let cached_rss_after = process::rss_parts_kib(cached.pid())?;

    // Users for the rate-limited run, signed up while nothing limits the rate.
    let users = sign_up_users(&client, plan.limited_users).await?;
    let startup_hop = gateway.startup;
    gateway.stop().await;
    cached.stop().await;
    bare.stop();

    // === 4. under the rate limit, against a gateway on its defaults ===
    eprintln!("starting a gateway on its defaults");
    let gateway = GatewayProcess::start(gateway_bin, &sandbox, Profile::Defaults).await?;
    let client = UserServiceClient::new(connect(gateway.public_addr).await?);
    eprintln!(
        "rate limited: {} page views/s for {:?} from {} users",
        plan.page_views_per_second, plan.limited_duration, plan.limited_users
    );
    let limited = load::rate_limited(&client, &gateway, &controls, &users, plan).await?;
    let startup_defaults = gateway.startup;
    gateway.stop().await;

    let report = Report {
        args,
        load_average,
        plan,
        binary_size,
        gateway_bin,
        startup: [startup_hop, startup_defaults],
        idle_rss,
        idle_rss_parts,
        idle_rss_after,
        idle_rss_after_parts,
        cached_rss_after,
        peak_rss,
        closed,
        open,
        tally,
        limited,
    };
    let mut text = report.render();
    if args.smoke {
        // A few users for a few seconds: only that the scenarios' pipeline runs.
        eprintln!("scenario smoke: busy evening, 5 users for 8 s");
        let outcome = scenarios::smoke(gateway_bin, &sandbox).await?;
        if let scenarios::Outcome::Browse(browse) = &outcome
            && browse.made_no_calls()
        {
            anyhow::bail!("the busy-evening smoke made no calls");
        }
        text.push('\n');
        text.push_str(&scenarios::render(
            std::slice::from_ref(&outcome),
            "cargo run -p loadgen -- --smoke",
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn the_flags_parse_and_scenarios_are_named_as_documented() {
        Args::command().debug_assert();
        let args = Args::try_parse_from([
            "loadgen",
            "--scenario",
            "busy-evening-30",
            "--scenario",
            "replicas-3",
        ])
        .expect("valid flags");
        assert_eq!(
            args.scenario,
            [
                scenarios::Scenario::BusyEvening30,
                scenarios::Scenario::Replicas3
            ]
        );
        assert!(Args::try_parse_from(["loadgen", "--scenario", "nonesuch"]).is_err());
        for scenario in scenarios::Scenario::ALL {
            let parsed = Args::try_parse_from(["loadgen", "--scenario", scenario.name()])
                .expect("every scenario's name parses");
            assert_eq!(parsed.scenario, [scenario]);
        }
    }
}

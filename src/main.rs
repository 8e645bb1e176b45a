//! The `licensing-gateway` binary: parse the command line, load the
//! configuration, set up logging, dispatch, and run until SIGTERM or Ctrl-C.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use licensing_gateway::app::Application;
use licensing_gateway::commands::check_config;
use licensing_gateway::commands::ledger::{self, LedgerAction};
#[cfg(feature = "sandbox")]
use licensing_gateway::commands::sandbox::{self, SandboxArgs};
use licensing_gateway::config::{RawSettings, Settings};
use licensing_gateway::ledger::State;
use licensing_gateway::telemetry;

/// A safe, fast gRPC and gRPC-Web front for the Cryptlex licensing API.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// TOML configuration file; `LICENSING_GATEWAY__SECTION__KEY` environment
    /// variables override it.
    #[arg(long, global = true, env = "LICENSING_GATEWAY_CONFIG")]
    config: Option<PathBuf>,
    /// Public listener address (overrides `public.addr`).
    #[arg(long, global = true)]
    public_addr: Option<String>,
    /// Internal listener address (overrides `internal.addr`).
    #[arg(long, global = true)]
    internal_addr: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve with the given configuration (the default).
    Serve,
    /// Run against a local stand-in for Cryptlex, with demo users and a
    /// development PKI: no account needed.
    #[cfg(feature = "sandbox")]
    Sandbox {
        /// Directory for the PKI, the PAT file, the ledger and the effective configuration.
        #[arg(long, default_value = "sandbox-data")]
        dir: PathBuf,
        /// Address of the sandbox Cryptlex HTTP server.
        #[arg(long, default_value = "127.0.0.1:8089")]
        cryptlex_addr: std::net::SocketAddr,
        /// Switch off the sandbox's Cryptlex rate limit (50 requests per 5 s).
        #[arg(long)]
        no_rate_limit: bool,
        /// Lifetime of sandbox access tokens, e.g. `15m` or `30s`.
        #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
        access_token_ttl: std::time::Duration,
    },
    /// Builds without the `sandbox` feature (production images) have no
    /// sandbox; asking for it explains that instead of "unrecognized subcommand".
    #[cfg(not(feature = "sandbox"))]
    #[command(hide = true)]
    Sandbox {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        ignored: Vec<String>,
    },
    /// Validate the configuration (files, certificates, URLs, account) and exit.
    CheckConfig,
    /// Inspect the issuance ledger.
    Ledger {
        #[command(subcommand)]
        action: LedgerCommand,
    },
}

#[derive(Debug, Subcommand)]
enum LedgerCommand {
    /// List records, newest first.
    List {
        /// Only records in this state: pending, issued or rejected.
        #[arg(long)]
        state: Option<State>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show the records of one request id.
    Show { request_id: String },
    /// Look up pending records' licenses in Cryptlex and complete them.
    Reconcile {
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // One rustls provider for the whole process (with none installed, the
    // first TLS handshake panics rather than guess); must
    // precede every TLS config and HTTP client.
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a rustls crypto provider was already installed"))?;

    let cli = Cli::parse();
    let env: HashMap<String, String> = std::env::vars().collect();
    let loaded = RawSettings::load(cli.config.as_deref(), &env);
    if matches!(cli.command, Some(Command::CheckConfig)) {
        let exit_code = run_check_config(loaded, cli.public_addr, cli.internal_addr);
        std::process::exit(exit_code);
    }
    let mut raw = loaded?;
    if let Some(addr) = cli.public_addr {
        raw.public.addr = addr;
    }
    if let Some(addr) = cli.internal_addr {
        raw.internal.addr = addr;
    }
    let rust_log = env.get("RUST_LOG").map(String::as_str);

    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let settings = raw.validate()?;
            let _telemetry = init_logging(&settings, rust_log);
            for warning in raw.warnings() {
                tracing::warn!(%warning, "configuration needs attention");
            }
            serve(settings, None).await
        }
        #[cfg(feature = "sandbox")]
        Command::Sandbox {
            dir,
            cryptlex_addr,
            no_rate_limit,
            access_token_ttl,
        } => {
            let args = SandboxArgs {
                dir,
                cryptlex_addr,
                no_rate_limit,
                access_token_ttl,
            };
            let sandbox = sandbox::prepare(&args, raw).await?;
            let _telemetry = init_logging(&sandbox.settings, rust_log);
            let settings = sandbox.settings.clone();
            let banner = |app: &Application| {
                println!(
                    "{}",
                    sandbox::banner(
                        &sandbox,
                        app.public_addr(),
                        app.internal_addr(),
                        app.admin_addr()
                    )
                );
            };
            serve(settings, Some(Box::new(banner))).await
        }
        #[cfg(not(feature = "sandbox"))]
        Command::Sandbox { .. } => {
            anyhow::bail!(
                "this build of licensing-gateway has no sandbox: it was built without the `sandbox` feature (production images are). Build with default features (`cargo run --release -- sandbox`) to run against the local stand-in for Cryptlex"
            )
        }
        Command::CheckConfig => unreachable!("handled before loading"),
        Command::Ledger { action } => {
            let settings = raw.validate()?;
            let action = match action {
                LedgerCommand::List { state, limit } => LedgerAction::List { state, limit },
                LedgerCommand::Show { request_id } => LedgerAction::Show { request_id },
                LedgerCommand::Reconcile { limit } => LedgerAction::Reconcile { limit },
            };
            print!("{}", ledger::run(settings, action).await?);
            Ok(())
        }
    }
}

fn init_logging(settings: &Settings, rust_log: Option<&str>) -> telemetry::TelemetryGuard {
    telemetry::init(
        &settings.log.level,
        settings.log.format,
        rust_log,
        std::io::stdout,
        settings.otlp.as_ref(),
    )
}

/// Prints every problem (stderr) or "configuration is valid" (stdout) and
/// returns the exit code: 0 valid, 1 invalid.
fn run_check_config(
    loaded: Result<RawSettings, licensing_gateway::config::ConfigError>,
    public_addr: Option<String>,
    internal_addr: Option<String>,
) -> i32 {
    let report = match loaded {
        Ok(mut raw) => {
            if let Some(addr) = public_addr {
                raw.public.addr = addr;
            }
            if let Some(addr) = internal_addr {
                raw.internal.addr = addr;
            }
            check_config::check(&raw, chrono::Utc::now())
        }
        Err(error) => check_config::Report {
            problems: error.problems,
            warnings: Vec::new(),
        },
    };
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    if report.is_valid() {
        println!("configuration is valid");
        return 0;
    }
    eprintln!(
        "invalid configuration ({} problems):",
        report.problems.len()
    );
    for problem in &report.problems {
        eprintln!("  - {problem}");
    }
    1
}

/// What to print once the listeners are bound (the sandbox's banner).
type OnServing<'a> = Option<Box<dyn FnOnce(&Application) + 'a>>;

async fn serve(settings: Settings, on_serving: OnServing<'_>) -> anyhow::Result<()> {
    let app = Application::build(settings)
        .await
        .context("starting the gateway")?;
    tracing::info!(public = %app.public_addr(), internal = ?app.internal_addr(), admin = ?app.admin_addr(), "licensing-gateway serving");
    if let Some(on_serving) = on_serving {
        on_serving(&app);
    }
    app.run_until_stopped(shutdown_signal()).await
}

/// Resolves on SIGTERM (Kubernetes) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested");
}

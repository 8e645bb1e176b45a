//! The `licensing-gateway` binary: parse the command line, load the
//! configuration, set up logging, run until SIGTERM or Ctrl-C.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use licensing_gateway::app::Application;
use licensing_gateway::config::RawSettings;
use licensing_gateway::telemetry;

/// A safe, fast gRPC and gRPC-Web front for the Cryptlex licensing API.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// TOML configuration file (environment variables `LICENSING_GATEWAY__*` override it).
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
    /// Validate the configuration and exit.
    CheckConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // One rustls provider for the whole process (toolchain gotcha G1); must
    // precede every TLS config and HTTP client.
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a rustls crypto provider was already installed"))?;

    let cli = Cli::parse();
    let env: HashMap<String, String> = std::env::vars().collect();
    let mut raw = RawSettings::load(cli.config.as_deref(), &env)?;
    if let Some(addr) = cli.public_addr {
        raw.public.addr = addr;
    }
    if let Some(addr) = cli.internal_addr {
        raw.internal.addr = addr;
    }

    match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig => {
            raw.validate()?;
            println!("configuration is valid");
            Ok(())
        }
        Command::Serve => {
            let settings = raw.validate()?;
            telemetry::init(
                &settings.log.level,
                settings.log.format,
                env.get("RUST_LOG").map(String::as_str),
                std::io::stdout,
            );
            let app = Application::build(settings)
                .await
                .context("starting the gateway")?;
            tracing::info!(public = %app.public_addr(), "licensing-gateway serving");
            app.run_until_stopped(shutdown_signal()).await
        }
    }
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

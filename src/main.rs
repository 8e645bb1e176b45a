//! The `licensing-gateway` binary: parse the command line, load the
//! configuration, set up logging, dispatch, and run until SIGTERM or Ctrl-C.

mod cli;

use std::collections::HashMap;

use anyhow::Context as _;
use clap::Parser as _;
use cli::{Cli, Command, LedgerCommand, ListenerArgs};
use licensing_gateway::app::Application;
use licensing_gateway::commands::audit::{self, AuditOptions};
use licensing_gateway::commands::ledger::{self, LedgerAction};
#[cfg(feature = "sandbox")]
use licensing_gateway::commands::sandbox::{self, SandboxArgs};
use licensing_gateway::commands::{check_config, check_upstream};
use licensing_gateway::config::{RawSettings, Settings};
use licensing_gateway::telemetry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // One rustls provider for the whole process (with none installed, the
    // first TLS handshake panics rather than guess); must
    // precede every TLS config and HTTP client.
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a rustls crypto provider was already installed"))?;

    let Cli {
        config,
        listeners,
        command,
    } = Cli::parse();
    let command = command.unwrap_or(Command::Serve {
        listeners: ListenerArgs::default(),
    });
    // Given after `serve` or `sandbox`, an address wins over one given before.
    let listeners = match &command {
        Command::Serve { listeners: after } => listeners.or(after.clone()),
        #[cfg(feature = "sandbox")]
        Command::Sandbox {
            listeners: after, ..
        } => listeners.or(after.clone()),
        _ => listeners,
    };
    let env: HashMap<String, String> = std::env::vars().collect();
    let loaded = RawSettings::load(config.as_deref(), &env).map(|mut raw| {
        if let Some(addr) = listeners.public_addr {
            raw.public.addr = addr;
        }
        if let Some(addr) = listeners.internal_addr {
            raw.internal.addr = addr;
        }
        if let Some(addr) = listeners.admin_addr {
            raw.admin.addr = addr;
        }
        raw
    });
    let rust_log = env.get("RUST_LOG").map(String::as_str);

    match command {
        // Reports every problem, including the file's, rather than the first.
        Command::CheckConfig => std::process::exit(check_config::run(loaded, chrono::Utc::now())),
        Command::CheckUpstream => std::process::exit(check_upstream::run(loaded).await),
        Command::Serve { .. } => {
            let raw = loaded?;
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
            listeners: _,
            cryptlex_addr,
            no_rate_limit,
            no_webhooks,
            access_token_ttl,
        } => {
            let args = SandboxArgs {
                dir,
                cryptlex_addr,
                no_rate_limit,
                webhooks: !no_webhooks,
                access_token_ttl,
            };
            let sandbox = sandbox::prepare(&args, loaded?).await?;
            let _telemetry = init_logging(&sandbox.settings, rust_log);
            let settings = sandbox.settings.clone();
            let banner = |app: &Application| {
                sandbox::register_webhook(
                    &sandbox,
                    app.public_addr(),
                    sandbox.settings.public.tls.is_some(),
                );
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
        Command::Ledger { action } => {
            let action = match action {
                // Its own exit statuses (2 for any error), so it never returns here.
                LedgerCommand::Audit {
                    json,
                    pending_older_than,
                    calls_per_window,
                } => {
                    let options = AuditOptions {
                        json,
                        pending_older_than,
                        calls_per_window,
                    };
                    std::process::exit(run_audit(loaded, &options, rust_log).await)
                }
                LedgerCommand::List { state, limit } => LedgerAction::List { state, limit },
                LedgerCommand::Show { request_id } => LedgerAction::Show { request_id },
                LedgerCommand::Reconcile { limit } => LedgerAction::Reconcile { limit },
            };
            let settings = loaded?.validate()?;
            print!("{}", ledger::run(settings, action).await?);
            Ok(())
        }
    }
}

/// Runs `ledger audit` and returns its exit status: 0 clean, 1 findings, 2 any error
/// (the configuration's included), which goes to standard error.
async fn run_audit(
    loaded: Result<RawSettings, licensing_gateway::config::ConfigError>,
    options: &AuditOptions,
    rust_log: Option<&str>,
) -> i32 {
    let settings = match loaded
        .map_err(anyhow::Error::from)
        .and_then(|raw| raw.validate().map_err(anyhow::Error::from))
    {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("error: {error:#}");
            return audit::EXIT_ERROR;
        }
    };
    // Logs go to standard error, so the table or JSON on standard output stays clean.
    let _telemetry = telemetry::init(
        &settings.log.level,
        settings.log.format,
        rust_log,
        std::io::stderr,
        false,
        None,
    );
    match audit::audit(&settings, options).await {
        Ok(report) => {
            print!("{}", report.render(options.json));
            report.exit_code()
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            audit::EXIT_ERROR
        }
    }
}

fn init_logging(settings: &Settings, rust_log: Option<&str>) -> telemetry::TelemetryGuard {
    telemetry::init(
        &settings.log.level,
        settings.log.format,
        rust_log,
        std::io::stdout,
        std::io::IsTerminal::is_terminal(&std::io::stdout()),
        settings.otlp.as_ref(),
    )
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

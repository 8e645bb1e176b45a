//! The command line: the subcommands and their flags (clap).

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use licensing_gateway::ledger::State;

/// A safe, fast gRPC and gRPC-Web front for the Cryptlex licensing API.
#[derive(Debug, Parser)]
#[command(version, about)]
pub(crate) struct Cli {
    /// TOML configuration file; `LICENSING_GATEWAY__SECTION__KEY` environment
    /// variables override it.
    #[arg(long, global = true, env = "LICENSING_GATEWAY_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Listener addresses, before the subcommand (`--public-addr .. serve`);
    /// `serve` and `sandbox` also take them after it.
    #[command(flatten)]
    pub(crate) listeners: ListenerArgs,
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

/// The listeners' addresses, for the commands that serve. Not global, so the
/// operator commands' help does not list them.
#[derive(Debug, Default, Clone, clap::Args)]
pub(crate) struct ListenerArgs {
    /// Public listener address (overrides `public.addr`).
    #[arg(long)]
    pub(crate) public_addr: Option<String>,
    /// Internal listener address (overrides `internal.addr`).
    #[arg(long)]
    pub(crate) internal_addr: Option<String>,
    /// Admin listener address, for /metrics and the probes (overrides
    /// `admin.addr`). `127.0.0.1:0` on any listener picks a free port, which
    /// the sandbox's banner prints.
    #[arg(long)]
    pub(crate) admin_addr: Option<String>,
}

impl ListenerArgs {
    /// These addresses, where `later` (given after the subcommand) wins.
    pub(crate) fn or(self, later: Self) -> Self {
        Self {
            public_addr: later.public_addr.or(self.public_addr),
            internal_addr: later.internal_addr.or(self.internal_addr),
            admin_addr: later.admin_addr.or(self.admin_addr),
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Serve with the given configuration (the default).
    Serve {
        #[command(flatten)]
        listeners: ListenerArgs,
    },
    /// Run against a local stand-in for Cryptlex, with demo users and a
    /// development PKI: no account needed.
    #[cfg(feature = "sandbox")]
    Sandbox {
        /// Directory for the PKI, the PAT file, the ledger and the effective configuration.
        #[arg(long, default_value = "sandbox-data")]
        dir: PathBuf,
        #[command(flatten)]
        listeners: ListenerArgs,
        /// Address of the sandbox Cryptlex HTTP server.
        #[arg(long, default_value = "127.0.0.1:8089")]
        cryptlex_addr: std::net::SocketAddr,
        /// Switch off the sandbox's Cryptlex rate limit (50 requests per 5 s).
        #[arg(long)]
        no_rate_limit: bool,
        /// Do not have the sandbox send its webhooks to the gateway (changes
        /// made through the sandbox's controls then show after `cache.max_age`).
        #[arg(long)]
        no_webhooks: bool,
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
    /// Check the configuration against the configured Cryptlex with read-only
    /// calls (URL, PAT and its scopes, products, account, rate-limit headroom);
    /// exits 0 when it is ready to go live.
    CheckUpstream,
    /// Inspect the issuance ledger.
    Ledger {
        #[command(subcommand)]
        action: LedgerCommand,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum LedgerCommand {
    /// List records, newest first.
    List {
        /// Only records in this state: pending, issued or rejected.
        #[arg(long)]
        state: Option<State>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show the records of one request id (with its units and what it did to each license),
    /// or the history of one license.
    Show {
        #[arg(value_name = "REQUEST_ID|LICENSE_ID")]
        request_id: String,
    },
    /// Look up pending records' licenses in Cryptlex and complete them.
    Reconcile {
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Compare the ledger with Cryptlex, read-only and slowly; exits 0 when they agree,
    /// 1 when something was found, 2 when the audit could not finish.
    Audit {
        /// Print one JSON document instead of the table.
        #[arg(long)]
        json: bool,
        /// Report records pending for longer than this, e.g. `10m` or `1h`.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        pending_older_than: std::time::Duration,
        /// The audit's own upstream budget: calls per 5-second window.
        #[arg(long, default_value_t = licensing_gateway::commands::audit::DEFAULT_CALLS_PER_WINDOW,
              value_parser = clap::value_parser!(u32).range(1..))]
        calls_per_window: u32,
    },
}

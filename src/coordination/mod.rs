//! Replicas that share a PostgreSQL ledger coordinate through it.
//!
//! - [`PgWindow`] (`window`): one upstream-call window for all replicas, so
//!   together they stay inside Cryptlex's rate limit, which counts the whole
//!   service. The budget consults it through [`crate::cryptlex::SharedWindow`].
//! - [`Relay`] (`relay`): cache invalidations between replicas over
//!   `LISTEN/NOTIFY`, so a license issued through one replica shows on the
//!   others' next read.
//!
//! Both live in the ledger's database and schema: the window's table comes
//! with the ledger's migrations, and the channel is named after the schema,
//! so deployments that share a database in separate schemas stay apart. A
//! SQLite ledger means one replica, and none of this runs.
//!
//! This module neither decides what a call's limit is nor what a change
//! invalidates; the budget and the caches do.

mod relay;
#[cfg(test)]
mod tests;
mod window;

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

pub use relay::{ChangeSink, Relay, RelayCounters};
pub use window::PgWindow;

/// The channel when the ledger has no schema of its own.
const CHANNEL: &str = "licensing_gateway_changes";
/// Connections of the window and the relay's publishes. A window query
/// holds one for well under a millisecond, so a few serve hundreds of calls
/// a second; when all are busy a call gives up at its timeout and the
/// budget falls back to its static share.
const POOL_CONNECTIONS: u32 = 4;
/// Server-side bound of any coordination statement: a backstop behind each
/// caller's own timeout (the window also bounds its lock wait).
const STATEMENT_TIMEOUT_MS: u32 = 2_000;
/// How long a pooled query waits for a connection; callers' timeouts are
/// shorter still.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// Metric names (same convention as `crate::metrics`).
pub(crate) mod metrics_names {
    /// Counter `{result="started"|"refused"|"unavailable"}`: looks at the
    /// shared upstream window.
    pub(crate) const WINDOW_TOTAL: &str = "licensing_gateway_coordination_window_total";
    /// Histogram: how long a look at the shared window took, in seconds.
    pub(crate) const WINDOW_DURATION_SECONDS: &str =
        "licensing_gateway_coordination_window_duration_seconds";
    /// Counter `{direction="sent"|"received", result="ok"|"failed"|"unparseable"}`:
    /// changes relayed between replicas.
    pub(crate) const CHANGES_TOTAL: &str = "licensing_gateway_coordination_changes_total";
    /// Counter: times the relay's listener connected again after losing its
    /// connection (each time, every license page is dropped).
    pub(crate) const LISTENER_RECONNECTS_TOTAL: &str =
        "licensing_gateway_coordination_listener_reconnects_total";
}

/// What replicas share through the ledger's PostgreSQL. Cloning is cheap and
/// shares the pool.
#[derive(Clone)]
pub struct Coordination {
    /// The window's queries and the relay's publishes.
    pool: PgPool,
    /// The ledger's connection options (URL, schema), for the listener.
    base: PgConnectOptions,
    channel: String,
    /// This process, so the relay can tell its own notifications apart.
    replica: String,
    window: Arc<PgWindow>,
}

// The connect options can hold the database password.
impl std::fmt::Debug for Coordination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordination")
            .field("channel", &self.channel)
            .field("replica", &self.replica)
            .finish_non_exhaustive()
    }
}

impl Coordination {
    /// Coordination in the database and schema of the ledger's `pool`
    /// (which has run the migrations), on connections of its own: the
    /// ledger's queries and these never wait for each other.
    ///
    /// Connects lazily: a database that is down now only means the window is
    /// unavailable (the budget falls back) and the relay retries.
    pub fn from_ledger_pool(ledger_pool: &PgPool, schema: Option<&str>) -> Self {
        let base = (*ledger_pool.connect_options()).clone();
        let pool = PgPoolOptions::new()
            .max_connections(POOL_CONNECTIONS)
            // One warm connection, so the first upstream call does not pay
            // for a connection inside its short timeout.
            .min_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(
                base.clone()
                    .application_name("licensing-gateway-coordination")
                    .options([("statement_timeout", STATEMENT_TIMEOUT_MS)]),
            );
        Self {
            window: Arc::new(PgWindow::new(pool.clone())),
            pool,
            base,
            channel: channel_name(schema),
            replica: uuid::Uuid::new_v4().simple().to_string(),
        }
    }

    /// The shared upstream-call window, for `cryptlex::Client::with_shared_window`.
    pub fn window(&self) -> Arc<PgWindow> {
        Arc::clone(&self.window)
    }

    /// The relay that applies other replicas' changes to `sink`; run it
    /// with this replica's change feed.
    pub fn relay(&self, sink: Arc<dyn ChangeSink>) -> Relay {
        Relay::new(
            self.pool.clone(),
            // A DBA can tell the listener (one per replica) apart.
            self.base
                .clone()
                .application_name(&format!("licensing-gateway-relay-{}", self.replica)),
            self.channel.clone(),
            self.replica.clone(),
            sink,
        )
    }

    /// The `LISTEN/NOTIFY` channel.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// This process's id on the channel.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Closes the pool's connections (the relay's listener closes with the
    /// relay).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The channel of the deployment whose ledger lives in `schema`.
///
/// Channels are per database, not per schema, so the schema goes into the
/// name: hashed, because a channel name must stay under 64 bytes.
fn channel_name(schema: Option<&str>) -> String {
    match schema {
        None => CHANNEL.to_owned(),
        Some(schema) => {
            let digest = Sha256::digest(schema.as_bytes());
            format!("{CHANNEL}_{}", &hex::encode(digest)[..16])
        }
    }
}

//! [`Relay`]: cache invalidations between replicas, over PostgreSQL's
//! `LISTEN/NOTIFY`.
//!
//! Two loops run side by side until told to stop:
//! - *publish*: every change that began on this replica
//!   ([`Licensing::subscribe_changes`]) goes out as one `pg_notify` on the
//!   shared pool, as `{"replica": <this process>, "change": <Change>}`;
//! - *listen*: one dedicated connection LISTENs on the channel and applies
//!   every other replica's change here ([`Origin::Elsewhere`]); our own come
//!   back too and are ignored.
//!
//! NOTIFY is fire-and-forget: a replica that is not listening at that moment
//! never hears it. So wherever changes may have been lost (the listener
//! reconnected, a publish failed, this replica's feed overflowed), the relay
//! falls back to [`Change::AllLicensePages`], the widest change there is;
//! cached profiles then rely on the cache's maximum age. A heartbeat (a
//! notification to ourselves) notices a listener connection that died
//! silently.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::Instant;

use super::metrics_names::{CHANGES_TOTAL, LISTENER_RECONNECTS_TOTAL};
use crate::licensing::Licensing;
use crate::licensing::changes::{Change, Origin};

/// PostgreSQL refuses NOTIFY payloads of 8000 bytes or more. A change is a
/// few ids (a hundred bytes or so); anything near this is not one.
const MAX_PAYLOAD_BYTES: usize = 7999;
/// Longest a publish (pool, round trip) may take; the feed meanwhile buffers.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a listener (re)connection and its LISTEN may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pauses between listener connection attempts: doubling from the first to
/// the last, so a database that is down is not hammered.
const RECONNECT_BACKOFF: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(10));
/// How often the listener proves it still hears the channel. A listener
/// that heard nothing, not even its own heartbeat, for this long reconnects.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(15);
/// After a failed publish, how often to try to tell the others what they
/// missed ([`Change::AllLicensePages`]).
const REPUBLISH_EVERY: Duration = Duration::from_secs(1);

/// Where the relay applies what other replicas announce. [`Licensing`] is
/// the real one; tests record.
pub trait ChangeSink: Send + Sync + 'static {
    /// Applies a change that began on another replica (or that stands for
    /// changes lost on the way).
    fn apply_elsewhere(&self, change: &Change);

    /// Says that the relay has finished with the first `count` changes of
    /// its feed (sent them, or given up on them), so writes waiting for
    /// their change to reach the other replicas may answer.
    fn relayed(&self, count: u64) {
        let _ = count;
    }
}

impl ChangeSink for Licensing {
    fn apply_elsewhere(&self, change: &Change) {
        self.apply_change(change, Origin::Elsewhere);
    }

    fn relayed(&self, count: u64) {
        Licensing::relayed(self, count);
    }
}

/// One notification on the channel.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    /// The sending process ([`super::ReplicaId`]).
    replica: String,
    /// `None` for a heartbeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    change: Option<Change>,
}

/// What the relay did, for tests and the report in the logs.
#[derive(Debug, Default)]
pub struct RelayCounters {
    /// Changes sent to the other replicas.
    pub published: AtomicU64,
    /// Publishes that failed (the database down, slow or refusing).
    pub publish_failures: AtomicU64,
    /// Other replicas' changes applied here.
    pub applied: AtomicU64,
    /// Notifications that were not an envelope.
    pub unparseable: AtomicU64,
    /// Listener connections made (the first included).
    pub connections: AtomicU64,
}

/// The relay of one replica; [`Relay::run`] runs it.
#[derive(Clone)]
pub struct Relay {
    /// Shared with the window: publishes and heartbeats.
    pool: PgPool,
    /// For the listener's own connection (not pooled with anything).
    listen_options: PgConnectOptions,
    channel: String,
    replica: String,
    sink: Arc<dyn ChangeSink>,
    counters: Arc<RelayCounters>,
}

// The connect options can hold the database password.
impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("channel", &self.channel)
            .field("replica", &self.replica)
            .finish_non_exhaustive()
    }
}

/// Why a listener connection was given up.
enum Lost {
    Connection(String),
    HeartbeatUnanswered,
}

impl Relay {
    pub(crate) fn new(
        pool: PgPool,
        listen_options: PgConnectOptions,
        channel: String,
        replica: String,
        sink: Arc<dyn ChangeSink>,
    ) -> Self {
        Self {
            pool,
            listen_options,
            channel,
            replica,
            sink,
            counters: Arc::default(),
        }
    }

    /// What the relay did so far.
    pub fn counters(&self) -> Arc<RelayCounters> {
        Arc::clone(&self.counters)
    }

    /// Relays `changes` out and the others' changes in until `stop`
    /// resolves. Every connection and query is dropped when it returns.
    pub async fn run(
        self,
        changes: broadcast::Receiver<Change>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::select! {
            () = stop => {}
            () = async { tokio::join!(self.publish_loop(changes), self.listen_loop()); } => {}
        }
    }

    // === publish ===

    async fn publish_loop(&self, mut changes: broadcast::Receiver<Change>) {
        // Set when a change may not have reached the others; cleared once
        // they have been told to drop every license page.
        let mut owed = false;
        // Changes of the feed finished with (sent, or lost and covered by
        // `AllLicensePages`), for writes waiting on their change.
        let mut finished = 0u64;
        let mut retry = tokio::time::interval(REPUBLISH_EVERY);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let change = tokio::select! {
                received = changes.recv() => match received {
                    Ok(change) => {
                        finished += 1;
                        change
                    }
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "the change relay fell behind; other replicas drop every license page");
                        finished += missed;
                        Change::AllLicensePages
                    }
                    // The use cases are gone: nothing more will change here.
                    Err(RecvError::Closed) => return,
                },
                _ = retry.tick(), if owed => Change::AllLicensePages,
            };
            if !self.publish(Some(&change)).await {
                owed = true;
            } else if change == Change::AllLicensePages {
                owed = false;
            } else if owed {
                owed = !self.publish(Some(&Change::AllLicensePages)).await;
            }
            // Sent or not (a failed one is made good by the republish above),
            // nobody should wait longer for it.
            self.sink.relayed(finished);
        }
    }

    /// Sends one envelope (a heartbeat for `None`); says whether it went.
    async fn publish(&self, change: Option<&Change>) -> bool {
        let Some(payload) = self.payload(change) else {
            return false;
        };
        let sent = tokio::time::timeout(
            PUBLISH_TIMEOUT,
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(&self.channel)
                .bind(&payload)
                .execute(&self.pool),
        )
        .await;
        let failure = match sent {
            Ok(Ok(_)) => None,
            Ok(Err(error)) => Some(error.to_string()),
            Err(_elapsed) => Some("no answer within the timeout".to_owned()),
        };
        if change.is_none() {
            // Heartbeats are not changes: neither counted nor logged.
            return failure.is_none();
        }
        match failure {
            None => {
                self.counters.published.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(CHANGES_TOTAL, "direction" => "sent", "result" => "ok")
                    .increment(1);
                true
            }
            Some(reason) => {
                self.counters
                    .publish_failures
                    .fetch_add(1, Ordering::Relaxed);
                metrics::counter!(CHANGES_TOTAL, "direction" => "sent", "result" => "failed")
                    .increment(1);
                tracing::warn!(%reason, "could not relay a change to the other replicas");
                false
            }
        }
    }

    /// The notification for `change`, within PostgreSQL's payload limit.
    fn payload(&self, change: Option<&Change>) -> Option<String> {
        let encode = |change: Option<&Change>| {
            serde_json::to_string(&Envelope {
                replica: self.replica.clone(),
                change: change.cloned(),
            })
        };
        match encode(change) {
            Ok(payload) if payload.len() <= MAX_PAYLOAD_BYTES => Some(payload),
            Ok(payload) => {
                // Cannot happen for a change of ids; widen it rather than
                // send something PostgreSQL refuses.
                tracing::error!(
                    bytes = payload.len(),
                    "a change is too large to relay; relaying every license page instead"
                );
                encode(Some(&Change::AllLicensePages)).ok()
            }
            Err(error) => {
                tracing::error!(%error, "a change could not be serialised for the relay");
                None
            }
        }
    }

    // === listen ===

    async fn listen_loop(&self) {
        let mut backoff = RECONNECT_BACKOFF.0;
        // Nothing is cached before the first connection; after a failure or
        // a loss, whatever was announced meanwhile is lost.
        let mut may_have_missed = false;
        loop {
            let mut listener = match self.connect().await {
                Ok(listener) => listener,
                Err(reason) => {
                    tracing::warn!(%reason, retry_in = ?backoff, "the change relay cannot listen");
                    may_have_missed = true;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RECONNECT_BACKOFF.1);
                    continue;
                }
            };
            backoff = RECONNECT_BACKOFF.0;
            let connections = self.counters.connections.fetch_add(1, Ordering::Relaxed);
            if connections > 0 {
                metrics::counter!(LISTENER_RECONNECTS_TOTAL).increment(1);
            }
            if may_have_missed {
                tracing::info!("the change relay listens again; dropping every license page");
                self.sink.apply_elsewhere(&Change::AllLicensePages);
            }
            may_have_missed = true;
            match self.listen(&mut listener).await {
                Lost::Connection(reason) => {
                    tracing::warn!(%reason, "the change relay lost its connection; reconnecting");
                }
                Lost::HeartbeatUnanswered => {
                    tracing::warn!("the change relay stopped hearing the channel; reconnecting");
                }
            }
        }
    }

    /// A listener on a connection of its own, subscribed to the channel.
    async fn connect(&self) -> Result<PgListener, String> {
        let connecting = async {
            // A pool of one, made per connection: dropping the listener closes
            // its connection, so a suspect one is never reused.
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(CONNECT_TIMEOUT)
                .max_lifetime(None)
                .idle_timeout(None)
                .connect_lazy_with(self.listen_options.clone());
            let mut listener = PgListener::connect_with(&pool).await?;
            // Reconnections are ours (with back-off, and dropping the pages).
            listener.eager_reconnect(false);
            listener.listen(&self.channel).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(Ok(listener)) => Ok(listener),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_elapsed) => Err("no connection within the timeout".to_owned()),
        }
    }

    /// Applies what arrives until the connection is lost or goes deaf.
    async fn listen(&self, listener: &mut PgListener) -> Lost {
        let mut heartbeat =
            tokio::time::interval_at(Instant::now() + HEARTBEAT_EVERY, HEARTBEAT_EVERY);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Whether anything arrived since the last heartbeat was sent.
        let mut heard = true;
        loop {
            tokio::select! {
                // Cancel-safe: sqlx consumes a message only once it is whole.
                received = listener.try_recv() => match received {
                    Ok(Some(notification)) => {
                        heard = true;
                        self.receive(notification.payload());
                    }
                    Ok(None) => return Lost::Connection("the connection closed".to_owned()),
                    Err(error) => return Lost::Connection(error.to_string()),
                },
                _ = heartbeat.tick() => {
                    if !heard {
                        return Lost::HeartbeatUnanswered;
                    }
                    // Only a heartbeat that went out can go unanswered; if
                    // the pool cannot send, the listener is not to blame.
                    heard = !self.publish(None).await;
                }
            }
        }
    }

    fn receive(&self, payload: &str) {
        let envelope: Envelope = match serde_json::from_str(payload) {
            Ok(envelope) => envelope,
            Err(error) => {
                // Changes carry ids and token digests only, so the parse
                // error (which may quote the payload) is safe to log.
                self.counters.unparseable.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(CHANGES_TOTAL, "direction" => "received", "result" => "unparseable")
                    .increment(1);
                tracing::warn!(%error, bytes = payload.len(), "ignoring an unparseable change notification");
                return;
            }
        };
        if envelope.replica == self.replica {
            return;
        }
        let Some(change) = envelope.change else {
            // Another replica's heartbeat.
            return;
        };
        self.counters.applied.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(CHANGES_TOTAL, "direction" => "received", "result" => "ok").increment(1);
        tracing::debug!(?change, "applying a change from another replica");
        self.sink.apply_elsewhere(&change);
    }
}

//! The window and the relay against a real PostgreSQL, each test in a schema
//! of its own (`lgw_coord_<random>`), so parallel runs never collide.
//!
//! PostgreSQL is found at `LGW_TEST_POSTGRES_URL` (or
//! `LEDGER_TEST_POSTGRES_URL`), by default the local trust-auth server.
//! "Replicas" are separate ledger pools and separate [`Coordination`]s, as
//! separate processes would hold them.

use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sqlx::{AssertSqlSafe, Connection as _, postgres::PgConnection};
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinSet;

use super::*;
use crate::cryptlex::{Admit, SharedWindow as _};
use crate::domain::CryptlexId;
use crate::ledger::{Ledger, LedgerOptions};
use crate::licensing::changes::Change;

const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Long enough for any healthy local query.
const TIMEOUT: Duration = Duration::from_secs(2);

// === Harness ===

fn postgres_url() -> String {
    std::env::var("LGW_TEST_POSTGRES_URL")
        .or_else(|_| std::env::var("LEDGER_TEST_POSTGRES_URL"))
        .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned())
}

/// One test's schema, dropped when the test ends (even if it panics).
struct TestDb {
    schema: String,
}

impl TestDb {
    fn new() -> Self {
        Self {
            schema: format!("lgw_coord_{}", uuid::Uuid::new_v4().simple()),
        }
    }

    /// A replica: its own ledger pool (which migrates) and coordination.
    async fn replica(&self) -> Coordination {
        let mut options = LedgerOptions::new(postgres_url());
        options.schema = Some(self.schema.clone());
        options.max_connections = 2;
        let ledger = Ledger::connect(&options)
            .await
            .expect("the test ledger opens");
        let pool = ledger.postgres_pool().expect("a postgres ledger");
        Coordination::from_ledger_pool(pool, Some(&self.schema))
    }

    /// A plain connection, for looking behind the gateway's back.
    async fn connection(&self) -> PgConnection {
        PgConnection::connect(&postgres_url())
            .await
            .expect("postgres reachable")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let ddl = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.schema);
        // Drop cannot await, and the test's runtime may be the one dropping.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("clean-up runtime");
            runtime.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&postgres_url()).await {
                    let _ = sqlx::query(AssertSqlSafe(ddl)).execute(&mut conn).await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

/// The database's clock now, in unix microseconds.
async fn database_now_us(conn: &mut PgConnection) -> i64 {
    sqlx::query_scalar("SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::BIGINT")
        .fetch_one(conn)
        .await
        .expect("clock query")
}

/// Records what a relay applied.
#[derive(Default)]
struct RecordingSink {
    applied: Mutex<Vec<Change>>,
    /// The last count of feed changes the relay said it finished with.
    relayed: std::sync::atomic::AtomicU64,
}

impl ChangeSink for RecordingSink {
    fn apply_elsewhere(&self, change: &Change) {
        self.applied.lock().expect("sink").push(change.clone());
    }

    fn relayed(&self, count: u64) {
        self.relayed.store(count, Ordering::SeqCst);
    }
}

impl RecordingSink {
    fn applied(&self) -> Vec<Change> {
        self.applied.lock().expect("sink").clone()
    }

    /// Waits until `change` was applied; false after `TIMEOUT`.
    async fn wait_for(&self, change: &Change) -> bool {
        poll_until(|| self.applied().contains(change)).await
    }
}

async fn poll_until(mut condition: impl FnMut() -> bool) -> bool {
    let give_up = Instant::now() + TIMEOUT * 3;
    while Instant::now() < give_up {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    condition()
}

/// A running relay with its change feed.
struct RunningRelay {
    feed: broadcast::Sender<Change>,
    sink: Arc<RecordingSink>,
    counters: Arc<RelayCounters>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningRelay {
    /// Starts `coordination`'s relay with the changes already in `feed`
    /// waiting (so a small feed can be made to overflow).
    fn start_with_feed(
        coordination: &Coordination,
        feed: broadcast::Sender<Change>,
        receiver: broadcast::Receiver<Change>,
    ) -> Self {
        let sink = Arc::new(RecordingSink::default());
        let relay = coordination.relay(sink.clone());
        let counters = relay.counters();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(relay.run(receiver, async move {
            let _ = stopped.await;
        }));
        Self {
            feed,
            sink,
            counters,
            stop: Some(stop),
            task,
        }
    }

    fn start(coordination: &Coordination) -> Self {
        let (feed, receiver) = broadcast::channel(16);
        Self::start_with_feed(coordination, feed, receiver)
    }

    async fn wait_connected(&self, times: u64) {
        assert!(
            poll_until(|| self.counters.connections.load(Ordering::Relaxed) >= times).await,
            "the relay did not connect {times} time(s)"
        );
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(TIMEOUT, self.task)
            .await
            .expect("the relay stops at once")
            .expect("the relay ran cleanly");
    }
}

fn license_change(id: &str) -> Change {
    Change::License {
        license_id: CryptlexId::from_upstream(id.to_owned()),
        user_id: Some(CryptlexId::from_upstream("user-1".to_owned())),
    }
}

// === The window ===

#[tokio::test]
async fn concurrent_starters_on_two_replicas_never_exceed_the_limit_in_any_window() {
    // Arrange: two replicas, 12 tasks each, all starting as fast as allowed.
    let db = TestDb::new();
    let replicas = [db.replica().await, db.replica().await];
    let limit = 5;
    let window = Duration::from_millis(300);
    let run_for = Duration::from_millis(1_500);

    // Act
    let mut tasks = JoinSet::new();
    for replica in &replicas {
        for _ in 0..12 {
            let pg_window = replica.window();
            tasks.spawn(async move {
                let mut starts = Vec::new();
                let end = Instant::now() + run_for;
                while Instant::now() < end {
                    let decision = pg_window
                        .decide(limit, window, TIMEOUT)
                        .await
                        .expect("the window answers");
                    match decision.admit {
                        Admit::Started => starts.push(decision.started_at_us.expect("a start")),
                        Admit::NotBefore(wait) => tokio::time::sleep(wait).await,
                    }
                }
                starts
            });
        }
    }
    let mut starts: Vec<i64> = tasks.join_all().await.into_iter().flatten().collect();
    starts.sort_unstable();

    // Assert: in every window by the database's clock (each one opening at a
    // start), at most `limit` starts; and the window was actually used.
    let window_us = i64::try_from(window.as_micros()).expect("small");
    for (index, &opening) in starts.iter().enumerate() {
        let inside = starts[index..]
            .iter()
            .take_while(|&&start| start < opening + window_us)
            .count();
        assert!(
            inside <= limit as usize,
            "{inside} starts within {window:?} from {opening}"
        );
    }
    let windows = (run_for.as_millis() / window.as_millis()) as usize;
    assert!(
        starts.len() >= limit as usize * windows / 2,
        "only {} starts in {windows} windows",
        starts.len()
    );
}

#[tokio::test]
async fn a_refusal_says_when_the_oldest_start_leaves_the_window() {
    // Arrange: the limit used up.
    let db = TestDb::new();
    let replica = db.replica().await;
    let pg_window = replica.window();
    let mut conn = db.connection().await;
    let window = Duration::from_millis(800);
    let first = pg_window.decide(2, window, TIMEOUT).await.expect("first");
    let second = pg_window.decide(2, window, TIMEOUT).await.expect("second");
    let (Some(first_at), Some(second_at)) = (first.started_at_us, second.started_at_us) else {
        panic!("both start: {first:?} {second:?}");
    };

    // Act
    let refused = pg_window.decide(2, window, TIMEOUT).await.expect("third");
    let after = database_now_us(&mut conn).await;

    // Assert: the wait ends when the first start is a window old, by the
    // database's clock (decided between the second start and `after`).
    let Admit::NotBefore(wait) = refused.admit else {
        panic!("the third call must be refused: {refused:?}");
    };
    let window_us = i64::try_from(window.as_micros()).expect("small");
    let wait_us = i64::try_from(wait.as_micros()).expect("small");
    assert!(
        wait_us >= first_at + window_us - after && wait_us <= first_at + window_us - second_at + 1,
        "wait {wait_us} us; first {first_at}, second {second_at}, after {after}"
    );
    tokio::time::sleep(wait + Duration::from_millis(5)).await;
    let later = pg_window.decide(2, window, TIMEOUT).await.expect("later");
    assert_eq!(later.admit, Admit::Started);
}

#[tokio::test]
async fn each_call_counts_every_start_against_its_own_limit() {
    // Arrange: three starts under a generous limit.
    let db = TestDb::new();
    let replica = db.replica().await;
    let pg_window = replica.window();
    let window = Duration::from_secs(30);
    for _ in 0..3 {
        assert_eq!(
            pg_window
                .try_start(10, window, TIMEOUT)
                .await
                .expect("start"),
            Admit::Started
        );
    }

    // Act: a lower priority's smaller limit, then a higher one's.
    let low = pg_window.try_start(3, window, TIMEOUT).await.expect("low");
    let high = pg_window.try_start(4, window, TIMEOUT).await.expect("high");
    let none = pg_window.try_start(0, window, TIMEOUT).await.expect("zero");

    // Assert
    assert!(
        matches!(low, Admit::NotBefore(wait) if wait <= window),
        "{low:?}"
    );
    assert_eq!(high, Admit::Started);
    assert!(matches!(none, Admit::NotBefore(_)), "{none:?}");
    let mut conn = db.connection().await;
    let held: i32 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT cardinality(starts) FROM \"{}\".upstream_call_window",
        db.schema
    )))
    .fetch_one(&mut conn)
    .await
    .expect("row");
    assert_eq!(held, 4, "only started calls are recorded");
}

#[tokio::test]
async fn the_window_holds_only_the_starts_of_the_current_window() {
    let db = TestDb::new();
    let replica = db.replica().await;
    let pg_window = replica.window();
    let window = Duration::from_millis(100);
    for _ in 0..5 {
        pg_window
            .try_start(100, window, TIMEOUT)
            .await
            .expect("start");
    }
    tokio::time::sleep(window + Duration::from_millis(20)).await;

    // A refusal prunes too.
    let refused = pg_window.try_start(0, window, TIMEOUT).await.expect("look");

    assert!(matches!(refused, Admit::NotBefore(_)));
    let mut conn = db.connection().await;
    let held: i32 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT cardinality(starts) FROM \"{}\".upstream_call_window",
        db.schema
    )))
    .fetch_one(&mut conn)
    .await
    .expect("row");
    assert_eq!(held, 0);
}

#[tokio::test]
async fn a_deleted_window_row_is_recreated_empty() {
    let db = TestDb::new();
    let replica = db.replica().await;
    let mut conn = db.connection().await;
    sqlx::query(AssertSqlSafe(format!(
        "DELETE FROM \"{}\".upstream_call_window",
        db.schema
    )))
    .execute(&mut conn)
    .await
    .expect("delete");

    let first = replica
        .window()
        .try_start(1, Duration::from_secs(5), TIMEOUT)
        .await;
    let second = replica
        .window()
        .try_start(1, Duration::from_secs(5), TIMEOUT)
        .await;

    assert_eq!(first.expect("first"), Admit::Started);
    assert!(matches!(second.expect("second"), Admit::NotBefore(_)));
}

/// A pool whose server never answers (a socket that accepts and stays
/// silent) or is not there (a closed port).
async fn unreachable_window(silent: bool) -> (PgWindow, Option<tokio::net::TcpListener>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let kept = if silent {
        Some(listener)
    } else {
        drop(listener);
        None
    };
    let options: PgConnectOptions = format!("postgres://postgres@127.0.0.1:{port}/test")
        .parse()
        .expect("url");
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(30))
        .connect_lazy_with(options);
    (PgWindow::new(pool), kept)
}

#[tokio::test]
async fn the_window_is_unavailable_within_its_timeout_when_the_database_is_unreachable() {
    for silent in [false, true] {
        let (pg_window, _server) = unreachable_window(silent).await;
        let timeout = Duration::from_millis(200);

        let begun = Instant::now();
        let first = pg_window
            .try_start(10, Duration::from_secs(5), timeout)
            .await;
        let first_took = begun.elapsed();
        let again = Instant::now();
        let second = pg_window
            .try_start(10, Duration::from_secs(5), timeout)
            .await;
        let second_took = again.elapsed();

        assert!(first.is_err(), "silent={silent}: {first:?}");
        assert!(
            first_took < timeout + Duration::from_millis(100),
            "silent={silent}: took {first_took:?}"
        );
        // Right after a failure the answer is immediate: reads fall back to
        // the static share without waiting on a database that is down.
        assert!(second.is_err());
        assert!(second_took < Duration::from_millis(20), "{second_took:?}");
    }
}

/// Not a test of behaviour: prints how long one look at the window takes
/// on this machine's PostgreSQL (run with `--ignored --nocapture`).
#[tokio::test]
#[ignore = "a measurement, not a test"]
async fn measure_the_latency_of_one_look_at_the_window() {
    let db = TestDb::new();
    let replica = db.replica().await;
    let pg_window = replica.window();
    let window = Duration::from_secs(5);
    for _ in 0..50 {
        let _ = pg_window.try_start(1_000_000, window, TIMEOUT).await;
    }
    let mut took = Vec::new();
    for round in 0..2_000u32 {
        // Alternate starts and refusals, with the row holding up to 50 starts.
        let limit = if round % 2 == 0 { 50 } else { 0 };
        let begun = Instant::now();
        pg_window
            .try_start(limit, window, TIMEOUT)
            .await
            .expect("look");
        took.push(begun.elapsed());
    }
    let (mut started, mut refused): (Vec<_>, Vec<_>) = took
        .iter()
        .enumerate()
        .partition(|(round, _)| round % 2 == 0);
    let mut baseline = Vec::new();
    for _ in 0..1_000 {
        let begun = Instant::now();
        sqlx::query("SELECT 1")
            .execute(&replica.pool)
            .await
            .expect("select 1");
        baseline.push(begun.elapsed());
    }
    for (name, sample) in [
        ("all", took.clone()),
        ("started", started.drain(..).map(|(_, d)| *d).collect()),
        ("refused", refused.drain(..).map(|(_, d)| *d).collect()),
        ("SELECT 1 on the same pool", baseline),
    ] {
        let mut sample: Vec<Duration> = sample;
        sample.sort_unstable();
        let at = |q: f64| sample[((sample.len() as f64 * q) as usize).min(sample.len() - 1)];
        println!(
            "{name}: {} calls, p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
            sample.len(),
            at(0.5),
            at(0.9),
            at(0.99),
            sample[sample.len() - 1]
        );
    }
}

// === The relay ===

#[tokio::test]
async fn a_change_published_on_one_replica_reaches_the_other_and_not_itself() {
    // Arrange
    let db = TestDb::new();
    let (a, b) = (db.replica().await, db.replica().await);
    let relay_a = RunningRelay::start(&a);
    let relay_b = RunningRelay::start(&b);
    relay_a.wait_connected(1).await;
    relay_b.wait_connected(1).await;
    let change = license_change("license-1");

    // Act
    relay_a.feed.send(change.clone()).expect("a subscriber");

    // Assert
    assert!(relay_b.sink.wait_for(&change).await, "B never heard it");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        relay_a.sink.applied(),
        Vec::<Change>::new(),
        "A heard itself"
    );
    assert_eq!(relay_b.sink.applied(), vec![change]);
    assert_eq!(relay_a.counters.published.load(Ordering::Relaxed), 1);
    assert_eq!(
        relay_a.sink.relayed.load(Ordering::SeqCst),
        1,
        "A said it finished with its one change, so a write waiting on it may answer"
    );
    relay_a.stop().await;
    relay_b.stop().await;
}

#[tokio::test]
async fn deployments_in_other_schemas_do_not_hear_each_other() {
    let (db, other_db) = (TestDb::new(), TestDb::new());
    let (a, other) = (db.replica().await, other_db.replica().await);
    assert_ne!(a.channel(), other.channel());
    let relay_a = RunningRelay::start(&a);
    let relay_other = RunningRelay::start(&other);
    relay_a.wait_connected(1).await;
    relay_other.wait_connected(1).await;

    relay_a
        .feed
        .send(license_change("license-1"))
        .expect("a subscriber");

    assert!(poll_until(|| relay_a.counters.published.load(Ordering::Relaxed) == 1).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(relay_other.sink.applied(), Vec::<Change>::new());
    relay_a.stop().await;
    relay_other.stop().await;
}

#[tokio::test]
async fn unparseable_notifications_are_counted_and_ignored() {
    let db = TestDb::new();
    let replica = db.replica().await;
    let relay = RunningRelay::start(&replica);
    relay.wait_connected(1).await;
    let mut conn = db.connection().await;

    for payload in [
        "not json",
        r#"{"replica":"x","change":{"kind":"nonsense"}}"#,
        r#"{"replica":"x","change":{"kind":"user","user_id":"has space"}}"#,
    ] {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(replica.channel())
            .bind(payload)
            .execute(&mut conn)
            .await
            .expect("notify");
    }

    assert!(poll_until(|| relay.counters.unparseable.load(Ordering::Relaxed) == 3).await);
    assert_eq!(relay.sink.applied(), Vec::<Change>::new());
    relay.stop().await;
}

#[tokio::test]
async fn after_losing_its_connection_the_relay_listens_again_and_drops_every_license_page() {
    // Arrange
    let db = TestDb::new();
    let (a, b) = (db.replica().await, db.replica().await);
    let relay_a = RunningRelay::start(&a);
    let relay_b = RunningRelay::start(&b);
    relay_a.wait_connected(1).await;
    relay_b.wait_connected(1).await;
    let mut conn = db.connection().await;

    // Act: the database ends B's listener session.
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(format!("licensing-gateway-relay-{}", b.replica()))
    .fetch_all(&mut conn)
    .await
    .expect("terminate");
    assert_eq!(ended, vec![true], "exactly B's listener");

    // Assert: B reconnects, drops every page (it may have missed changes),
    // and hears changes again.
    relay_b.wait_connected(2).await;
    assert!(relay_b.sink.wait_for(&Change::AllLicensePages).await);
    let change = license_change("license-after");
    relay_a.feed.send(change.clone()).expect("a subscriber");
    assert!(
        relay_b.sink.wait_for(&change).await,
        "B deaf after reconnecting"
    );
    relay_a.stop().await;
    relay_b.stop().await;
}

#[tokio::test]
async fn a_replica_whose_feed_overflowed_tells_the_others_to_drop_every_license_page() {
    // Arrange: B listens; A's feed holds more than it can keep.
    let db = TestDb::new();
    let (a, b) = (db.replica().await, db.replica().await);
    let relay_b = RunningRelay::start(&b);
    relay_b.wait_connected(1).await;
    let (feed, receiver) = broadcast::channel(2);
    for index in 0..5 {
        feed.send(license_change(&format!("license-{index}")))
            .expect("a subscriber");
    }

    // Act
    let relay_a = RunningRelay::start_with_feed(&a, feed, receiver);

    // Assert: the three lost changes became "every license page"; the two
    // kept ones follow.
    assert!(relay_b.sink.wait_for(&license_change("license-4")).await);
    assert_eq!(
        relay_b.sink.applied(),
        vec![
            Change::AllLicensePages,
            license_change("license-3"),
            license_change("license-4"),
        ]
    );
    relay_a.stop().await;
    relay_b.stop().await;
}

#[tokio::test]
async fn a_change_that_could_not_be_sent_makes_the_others_drop_every_license_page_once_it_can() {
    // Arrange: B listens; A publishes through a pool that cannot reach the
    // database yet (a closed port), and listens normally.
    let db = TestDb::new();
    let (a, b) = (db.replica().await, db.replica().await);
    let relay_b = RunningRelay::start(&b);
    relay_b.wait_connected(1).await;
    let closed_port = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let unreachable: PgConnectOptions = format!("postgres://postgres@127.0.0.1:{closed_port}/test")
        .parse()
        .expect("url");
    let publishing = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_millis(200))
        .connect_lazy_with(unreachable);
    let relay = Relay::new(
        publishing.clone(),
        a.base.clone(),
        a.channel.clone(),
        a.replica.clone(),
        Arc::new(RecordingSink::default()),
    );
    let counters = relay.counters();
    let (feed, receiver) = broadcast::channel(4);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(relay.run(receiver, async move {
        let _ = stopped.await;
    }));

    // Act: a change is lost on the way; then the database is reachable.
    feed.send(license_change("lost")).expect("a subscriber");
    assert!(poll_until(|| counters.publish_failures.load(Ordering::Relaxed) >= 1).await);
    publishing.set_connect_options((*a.pool.connect_options()).clone());

    // Assert: B is told to drop every license page, which covers the lost
    // change.
    assert!(relay_b.sink.wait_for(&Change::AllLicensePages).await);
    assert!(!relay_b.sink.applied().contains(&license_change("lost")));
    let _ = stop.send(());
    task.await.expect("the relay ran cleanly");
    relay_b.stop().await;
}

#[test]
fn channels_are_named_after_the_schema_within_postgres_limits() {
    assert_eq!(channel_name(None), "licensing_gateway_changes");
    let long = "s".repeat(63);
    let named = channel_name(Some(&long));
    assert!(named.len() < 64, "{named}");
    assert_ne!(channel_name(Some("a")), channel_name(Some("b")));
}

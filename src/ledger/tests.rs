//! Behaviour of the ledger, each test run against both backends: SQLite in a temporary file
//! and PostgreSQL in a schema of its own (`lgw_test_<random>`), so parallel runs never collide.
//!
//! PostgreSQL is found at `LEDGER_TEST_POSTGRES_URL`, by default the local trust-auth server.
//! Leases are shortened to tens of milliseconds where a test needs one to run out.

use std::{sync::Arc, time::Duration};

use chrono::TimeDelta;
use sqlx::{AssertSqlSafe, Connection, postgres::PgConnection};
use tempfile::TempDir;
use tokio::{sync::Barrier, task::JoinSet};

use super::*;

const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const CLIENT: &str = "spiffe://x/payment-service";
const OTHER_CALLER: &str = "spiffe://x/refund-service";
/// Long enough never to run out during a test.
const LONG: Duration = Duration::from_secs(30);
/// Short enough to wait out; `wait_out_short_lease` sleeps comfortably past it.
const SHORT: Duration = Duration::from_millis(40);

// === Harness ===

/// One test's database, removed when the test ends (even if it panics).
struct TestDb {
    options: LedgerOptions,
    /// Keeps the SQLite file's directory alive for the test.
    _dir: Option<TempDir>,
    /// The PostgreSQL schema to drop at the end.
    schema: Option<String>,
}

impl TestDb {
    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
        TestDb {
            options: LedgerOptions::new(url),
            _dir: Some(dir),
            schema: None,
        }
    }

    async fn postgres() -> Self {
        let schema = format!("lgw_test_{}", Uuid::new_v4().simple());
        let mut options = LedgerOptions::new(postgres_url());
        options.schema = Some(schema.clone());
        TestDb {
            options,
            _dir: None,
            schema: Some(schema),
        }
    }

    async fn connect(&self) -> Ledger {
        Ledger::connect(&self.options)
            .await
            .expect("connect to the test ledger")
    }

    /// Returns ledgers as separate gateway replicas would hold them: two independent pools
    /// on PostgreSQL; on SQLite, which serves a single replica, one ledger shared twice.
    async fn replicas(&self) -> Vec<Ledger> {
        let first = self.connect().await;
        let second = match first.backend() {
            "postgres" => self.connect().await,
            _ => first.clone(),
        };
        vec![first, second]
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(schema) = self.schema.take() else {
            return;
        };
        // Drop can't await, and the test's runtime may be the one calling us, so the clean-up
        // gets a thread and a runtime of its own. Failing to clean up is not a test failure.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("clean-up runtime");
            runtime.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&postgres_url()).await {
                    let ddl = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
                    let _ = sqlx::query(AssertSqlSafe(ddl)).execute(&mut conn).await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

fn postgres_url() -> String {
    std::env::var("LEDGER_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned())
}

/// Runs each named `async fn(&TestDb)` once per backend, as `on_sqlite::<name>` and
/// `on_postgres::<name>`. The bodies stay plain functions so rustfmt and the IDE see them.
macro_rules! ledger_tests {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&super::TestDb::sqlite().await).await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&super::TestDb::postgres().await).await;
                }
            )*
        }
    };
}

/// A stand-in for the SHA-256 hex digest the use case computes.
fn fingerprint(tag: char) -> String {
    tag.to_string().repeat(64)
}

fn fresh(begin: Begin) -> Attempt {
    match begin {
        Begin::Fresh(attempt) => attempt,
        other => panic!("expected Fresh, got {other:?}"),
    }
}

fn resumed(begin: Begin) -> Attempt {
    match begin {
        Begin::Resume(attempt) => attempt,
        other => panic!("expected Resume, got {other:?}"),
    }
}

fn replayed(begin: Begin) -> Outcome {
    match begin {
        Begin::Replay(outcome) => outcome,
        other => panic!("expected Replay, got {other:?}"),
    }
}

fn issued(id: &str) -> Outcome {
    Outcome::Issued {
        license_id: id.to_owned(),
        license_json: license_json(id),
    }
}

fn license_json(id: &str) -> String {
    format!(r#"{{"id":"{id}","key":"AAAA-BBBB"}}"#)
}

/// Calls `begin` for the key and payload most tests use (`req-1`, fingerprint `a`).
async fn begin_req_1(ledger: &Ledger, lease: Duration) -> Begin {
    ledger
        .begin(CLIENT, "req-1", &fingerprint('a'), lease)
        .await
        .expect("begin")
}

async fn wait_out_short_lease() {
    tokio::time::sleep(SHORT * 2).await;
}

// === Behaviour, on both backends ===

ledger_tests!(
    a_fresh_claim_completed_once_is_replayed_for_the_same_fingerprint,
    completing_again_with_the_same_license_is_a_no_op_and_with_another_is_refused,
    a_different_fingerprint_for_the_same_key_is_a_conflict,
    a_second_begin_while_the_lease_is_live_is_in_progress_with_a_retry_hint,
    a_retry_hint_is_never_shorter_than_a_hundred_milliseconds,
    an_expired_lease_is_resumed_and_the_stale_attempt_can_no_longer_settle,
    a_rejection_is_recorded_and_replayed,
    a_released_attempt_is_resumed_at_once,
    the_same_request_id_from_two_clients_is_two_independent_records,
    fifty_concurrent_begins_for_one_key_yield_exactly_one_claim,
    listing_is_newest_first_and_counts_cover_every_state,
    records_survive_a_reconnect_and_rerunning_migrations_is_harmless,
    a_kept_alive_lease_outlasts_its_length_until_the_keeper_stops,
    a_dropped_keeper_stops_renewing_and_the_lease_runs_out,
    a_taken_over_attempt_can_no_longer_renew_its_lease,
    a_record_released_after_a_settling_period_stays_in_progress_until_it_ends,
    records_name_their_operation_and_those_of_issuance_say_so,
    a_forgotten_claim_leaves_the_key_free_for_a_fresh_one,
    units_and_licenses_find_their_records,
    a_license_has_one_holder_at_a_time_and_keeps_its_event_order,
    an_event_that_is_not_later_never_replaces_the_recorded_one,
    a_holder_whose_lease_ran_out_can_no_longer_write_for_the_license,
    fifty_concurrent_claims_of_one_license_yield_exactly_one_holder,
    a_license_released_after_a_settling_period_stays_busy_until_it_ends,
    history_rows_move_from_pending_to_settled_and_count_their_attempts,
);

async fn a_fresh_claim_completed_once_is_replayed_for_the_same_fingerprint(db: &TestDb) {
    let ledger = db.connect().await;
    let attempt = fresh(
        ledger
            .begin(CLIENT, "req-1", &fingerprint('a'), LONG)
            .await
            .unwrap(),
    );
    assert_eq!(attempt.number(), 1);
    assert_eq!(attempt.client(), CLIENT);
    assert_eq!(attempt.request_id(), "req-1");

    ledger
        .complete(&attempt, "lic-1", &license_json("lic-1"))
        .await
        .unwrap();

    let outcome = replayed(
        ledger
            .begin(CLIENT, "req-1", &fingerprint('a'), LONG)
            .await
            .unwrap(),
    );
    assert_eq!(outcome, issued("lic-1"));
    let record = ledger.get(CLIENT, "req-1").await.unwrap().expect("record");
    assert_eq!(record.state, State::Issued);
    assert_eq!(record.fingerprint, fingerprint('a'));
    assert_eq!(record.license_id.as_deref(), Some("lic-1"));
    assert_eq!(record.license_json, Some(license_json("lic-1")));
    assert_eq!(record.attempts, 1);
    assert!(record.created_at <= record.updated_at);
}

async fn completing_again_with_the_same_license_is_a_no_op_and_with_another_is_refused(
    db: &TestDb,
) {
    let ledger = db.connect().await;
    let attempt = fresh(
        ledger
            .begin(CLIENT, "req-1", &fingerprint('a'), LONG)
            .await
            .unwrap(),
    );
    ledger
        .complete(&attempt, "lic-1", &license_json("lic-1"))
        .await
        .unwrap();

    ledger
        .complete(&attempt, "lic-1", &license_json("lic-1"))
        .await
        .unwrap();
    let err = ledger
        .complete(&attempt, "lic-2", &license_json("lic-2"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, LedgerError::AlreadyFinished(State::Issued)),
        "{err:?}"
    );
    // Releasing after settling is harmless, so clean-up paths may always call it.
    ledger.release(&attempt).await.unwrap();

    let record = ledger.get(CLIENT, "req-1").await.unwrap().expect("record");
    assert_eq!(record.license_id.as_deref(), Some("lic-1"));
    assert_eq!(record.state, State::Issued);
}

async fn a_different_fingerprint_for_the_same_key_is_a_conflict(db: &TestDb) {
    let ledger = db.connect().await;
    let attempt = fresh(
        ledger
            .begin(CLIENT, "req-1", &fingerprint('a'), LONG)
            .await
            .unwrap(),
    );

    // While pending...
    let begin = ledger
        .begin(CLIENT, "req-1", &fingerprint('b'), LONG)
        .await
        .unwrap();
    assert!(matches!(begin, Begin::Conflict), "{begin:?}");

    // ...and once finished.
    ledger
        .complete(&attempt, "lic-1", &license_json("lic-1"))
        .await
        .unwrap();
    let begin = ledger
        .begin(CLIENT, "req-1", &fingerprint('b'), LONG)
        .await
        .unwrap();
    assert!(matches!(begin, Begin::Conflict), "{begin:?}");

    let record = ledger.get(CLIENT, "req-1").await.unwrap().expect("record");
    assert_eq!(record.fingerprint, fingerprint('a'));
}

async fn a_second_begin_while_the_lease_is_live_is_in_progress_with_a_retry_hint(db: &TestDb) {
    let ledger = db.connect().await;
    fresh(
        ledger
            .begin(CLIENT, "req-1", &fingerprint('a'), LONG)
            .await
            .unwrap(),
    );

    match ledger
        .begin(CLIENT, "req-1", &fingerprint('a'), LONG)
        .await
        .unwrap()
    {
        Begin::InProgress { retry_after } => {
            assert!(retry_after > Duration::from_secs(25), "{retry_after:?}");
            assert!(retry_after <= LONG, "{retry_after:?}");
        }
        other => panic!("expected InProgress, got {other:?}"),
    }
    let record = ledger.get(CLIENT, "req-1").await.unwrap().expect("record");
    assert_eq!(record.state, State::Pending);
    assert_eq!(record.attempts, 1);
}

async fn a_retry_hint_is_never_shorter_than_a_hundred_milliseconds(db: &TestDb) {
    let ledger = db.connect().await;
    fresh(
        ledger
            .begin(
                CLIENT,
                "req-1",
                &fingerprint('a'),
                Duration::from_millis(500),
            )
            .await
            .unwrap(),
    );
    // Wait until less than 100 ms of the lease are left.
    tokio::time::sleep(Duration::from_millis(450)).await;
    match ledger
        .begin(CLIENT, "req-1", &fingerprint('a'), LONG)
        .await
        .unwrap()
    {
        Begin::InProgress { retry_after } => assert!(retry_after >= MIN_RETRY_AFTER),
        // The lease may run out on a slow machine; then taking over is right too.
        Begin::Resume(_) => {}
        other => panic!("expected InProgress, got {other:?}"),
    }
}

async fn an_expired_lease_is_resumed_and_the_stale_attempt_can_no_longer_settle(db: &TestDb) {
    let ledger = db.connect().await;
    let stale = fresh(
        ledger
            .begin(CLIENT, "req-1", &fingerprint('a'), SHORT)
            .await
            .unwrap(),
    );
    wait_out_short_lease().await;

    let current = resumed(
        ledger
            .begin(CLIENT, "req-1", &fingerprint('a'), LONG)
            .await
            .unwrap(),
    );
    assert_eq!(current.number(), 2);
    assert_ne!(current.token(), stale.token());
    assert!(current.lease_expires_at() > stale.lease_expires_at());

    // The crashed-and-revived attempt is fenced out of every settle, and changes nothing.
    let err = ledger
        .complete(&stale, "lic-stale", &license_json("lic-stale"))
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::StaleAttempt), "{err:?}");
    let err = ledger.reject(&stale, "bad", "no").await.unwrap_err();
    assert!(matches!(err, LedgerError::StaleAttempt), "{err:?}");
    let err = ledger.release(&stale).await.unwrap_err();
    assert!(matches!(err, LedgerError::StaleAttempt), "{err:?}");
    let record = ledger.get(CLIENT, "req-1").await.unwrap().expect("record");
    assert_eq!(record.state, State::Pending);
    assert_eq!(record.attempts, 2);
    assert_eq!(record.lease_expires_at, current.lease_expires_at());

    // The live lease keeps a third attempt out, and the new holder settles normally.
    let begin = ledger
        .begin(CLIENT, "req-1", &fingerprint('a'), LONG)
        .await
        .unwrap();
    assert!(matches!(begin, Begin::InProgress { .. }), "{begin:?}");
    ledger
        .complete(&current, "lic-1", &license_json("lic-1"))
        .await
        .unwrap();
    let err = ledger
        .complete(&stale, "lic-1", &license_json("lic-1"))
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::StaleAttempt), "{err:?}");
    let outcome = replayed(
        ledger
            .begin(CLIENT, "req-1", &fingerprint('a'), LONG)
            .await
            .unwrap(),
    );
    assert_eq!(outcome, issued("lic-1"));
}

async fn a_rejection_is_recorded_and_replayed(db: &TestDb) {
    let ledger = db.connect().await;
    let attempt = fresh(
        ledger
            .begin(CLIENT, "req-1", &fingerprint('a'), LONG)
            .await
            .unwrap(),
    );
    ledger
        .reject(&attempt, "product_not_found", "no such product")
        .await
        .unwrap();
    // A repeated identical reject is a no-op; a different one is refused.
    ledger
        .reject(&attempt, "product_not_found", "no such product")
        .await
        .unwrap();
    let err = ledger.reject(&attempt, "other", "other").await.unwrap_err();
    assert!(
        matches!(err, LedgerError::AlreadyFinished(State::Rejected)),
        "{err:?}"
    );
    let err = ledger
        .complete(&attempt, "lic-1", &license_json("lic-1"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, LedgerError::AlreadyFinished(State::Rejected)),
        "{err:?}"
    );

    let outcome = replayed(
        ledger
            .begin(CLIENT, "req-1", &fingerprint('a'), LONG)
            .await
            .unwrap(),
    );
    assert_eq!(
        outcome,
        Outcome::Rejected {
            reason: "product_not_found".to_owned(),
            message: "no such product".to_owned(),
        }
    );
    let record = ledger.get(CLIENT, "req-1").await.unwrap().expect("record");
    assert_eq!(record.state, State::Rejected);
    assert_eq!(record.error_reason.as_deref(), Some("product_not_found"));
    assert_eq!(record.error_message.as_deref(), Some("no such product"));
    assert_eq!(record.license_id, None);
}

async fn a_released_attempt_is_resumed_at_once(db: &TestDb) {
    let ledger = db.connect().await;
    let first = fresh(
        ledger
            .begin(CLIENT, "req-1", &fingerprint('a'), LONG)
            .await
            .unwrap(),
    );
    ledger.release(&first).await.unwrap();
    let record = ledger.get(CLIENT, "req-1").await.unwrap().expect("record");
    assert_eq!(record.state, State::Pending);

    let second = resumed(
        ledger
            .begin(CLIENT, "req-1", &fingerprint('a'), LONG)
            .await
            .unwrap(),
    );
    assert_eq!(second.number(), 2);
    let err = ledger
        .complete(&first, "lic-1", &license_json("lic-1"))
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::StaleAttempt), "{err:?}");
    ledger
        .complete(&second, "lic-1", &license_json("lic-1"))
        .await
        .unwrap();
    let record = ledger.get(CLIENT, "req-1").await.unwrap().expect("record");
    assert_eq!(record.attempts, 2);
    assert_eq!(record.state, State::Issued);
}

async fn the_same_request_id_from_two_clients_is_two_independent_records(db: &TestDb) {
    let ledger = db.connect().await;
    let mine = fresh(
        ledger
            .begin(CLIENT, "req-1", &fingerprint('a'), LONG)
            .await
            .unwrap(),
    );
    // Another client's key is free even while ours is held, and a different payload is
    // no conflict: keys never cross clients.
    let theirs = fresh(
        ledger
            .begin(OTHER_CALLER, "req-1", &fingerprint('b'), LONG)
            .await
            .unwrap(),
    );
    ledger
        .complete(&mine, "lic-mine", &license_json("lic-mine"))
        .await
        .unwrap();

    let begin = ledger
        .begin(OTHER_CALLER, "req-1", &fingerprint('b'), LONG)
        .await
        .unwrap();
    assert!(matches!(begin, Begin::InProgress { .. }), "{begin:?}");
    ledger.reject(&theirs, "quota", "over quota").await.unwrap();

    let outcome = replayed(
        ledger
            .begin(CLIENT, "req-1", &fingerprint('a'), LONG)
            .await
            .unwrap(),
    );
    assert_eq!(outcome, issued("lic-mine"));
    let outcome = replayed(
        ledger
            .begin(OTHER_CALLER, "req-1", &fingerprint('b'), LONG)
            .await
            .unwrap(),
    );
    assert!(matches!(outcome, Outcome::Rejected { .. }), "{outcome:?}");
    assert_eq!(
        ledger.get("spiffe://x/nobody", "req-1").await.unwrap(),
        None
    );

    // The operator view sees both, ordered by client.
    let records = ledger.find_by_request_id("req-1").await.unwrap();
    let clients: Vec<&str> = records.iter().map(|r| r.client.as_str()).collect();
    assert_eq!(clients, [CLIENT, OTHER_CALLER]);
    assert!(ledger.find_by_request_id("req-2").await.unwrap().is_empty());
}

async fn fifty_concurrent_begins_for_one_key_yield_exactly_one_claim(db: &TestDb) {
    let replicas = db.replicas().await;

    // A lease that outlasts the race: with a short one, a race slowed down by a busy machine
    // would see it run out midway, and a late racer would rightly take over.
    let outcomes = race(&replicas, LONG).await;
    assert_eq!(
        count(&outcomes, |b| matches!(b, Begin::Fresh(_))),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        count(&outcomes, |b| matches!(b, Begin::InProgress { .. })),
        49,
        "{outcomes:?}"
    );
    let first = outcomes
        .into_iter()
        .find_map(|b| match b {
            Begin::Fresh(attempt) => Some(attempt),
            _ => None,
        })
        .expect("one fresh attempt");

    // Once the lease ends (released here, which ends it now, as expiry would), fifty racers
    // again: exactly one takes over.
    replicas[0].release(&first).await.unwrap();
    let outcomes = race(&replicas, LONG).await;
    assert_eq!(
        count(&outcomes, |b| matches!(b, Begin::Resume(_))),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        count(&outcomes, |b| matches!(b, Begin::InProgress { .. })),
        49,
        "{outcomes:?}"
    );
    let winner = outcomes
        .into_iter()
        .find_map(|b| match b {
            Begin::Resume(attempt) => Some(attempt),
            _ => None,
        })
        .expect("one resumed attempt");
    assert_eq!(winner.number(), 2);

    // And after it finishes, everyone gets the replay.
    replicas[1]
        .complete(&winner, "lic-1", &license_json("lic-1"))
        .await
        .unwrap();
    let outcomes = race(&replicas, LONG).await;
    assert_eq!(
        count(&outcomes, |b| matches!(b, Begin::Replay(_))),
        50,
        "{outcomes:?}"
    );
    let record = replicas[0]
        .get(CLIENT, "req-race")
        .await
        .unwrap()
        .expect("record");
    assert_eq!(record.attempts, 2);
}

async fn listing_is_newest_first_and_counts_cover_every_state(db: &TestDb) {
    let ledger = db.connect().await;
    assert_eq!(
        ledger.count_by_state().await.unwrap(),
        [
            (State::Pending, 0),
            (State::Issued, 0),
            (State::Rejected, 0)
        ]
    );

    let a = fresh(
        ledger
            .begin(CLIENT, "req-a", &fingerprint('a'), LONG)
            .await
            .unwrap(),
    );
    ledger
        .complete(&a, "lic-a", &license_json("lic-a"))
        .await
        .unwrap();
    // Distinct creation times, so "newest first" has one right answer.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let b = fresh(
        ledger
            .begin(CLIENT, "req-b", &fingerprint('b'), LONG)
            .await
            .unwrap(),
    );
    ledger.reject(&b, "quota", "over quota").await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    fresh(
        ledger
            .begin(OTHER_CALLER, "req-c", &fingerprint('c'), LONG)
            .await
            .unwrap(),
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    fresh(
        ledger
            .begin(CLIENT, "req-d", &fingerprint('d'), LONG)
            .await
            .unwrap(),
    );

    let ids = |records: Vec<Record>| -> Vec<String> {
        records.into_iter().map(|r| r.request_id).collect()
    };
    assert_eq!(
        ids(ledger.list(None, 10).await.unwrap()),
        ["req-d", "req-c", "req-b", "req-a"]
    );
    assert_eq!(ids(ledger.list(None, 2).await.unwrap()), ["req-d", "req-c"]);
    assert_eq!(
        ids(ledger.list(Some(State::Pending), 10).await.unwrap()),
        ["req-d", "req-c"]
    );
    assert_eq!(
        ids(ledger.list(Some(State::Issued), 10).await.unwrap()),
        ["req-a"]
    );
    assert_eq!(
        ids(ledger.list(Some(State::Rejected), 10).await.unwrap()),
        ["req-b"]
    );
    assert!(ledger.list(None, 0).await.unwrap().is_empty());
    assert_eq!(
        ledger.count_by_state().await.unwrap(),
        [
            (State::Pending, 2),
            (State::Issued, 1),
            (State::Rejected, 1)
        ]
    );
}

async fn records_survive_a_reconnect_and_rerunning_migrations_is_harmless(db: &TestDb) {
    let ledger = db.connect().await;
    let done = fresh(
        ledger
            .begin(CLIENT, "req-done", &fingerprint('a'), LONG)
            .await
            .unwrap(),
    );
    ledger
        .complete(&done, "lic-1", &license_json("lic-1"))
        .await
        .unwrap();
    let held = fresh(
        ledger
            .begin(CLIENT, "req-held", &fingerprint('b'), LONG)
            .await
            .unwrap(),
    );
    let before = ledger.list(None, 10).await.unwrap();
    ledger.close().await;
    drop(ledger);

    // A restarted gateway: new pool, migrations run again over the existing tables.
    let ledger = db.connect().await;
    assert_eq!(ledger.list(None, 10).await.unwrap(), before);
    let outcome = replayed(
        ledger
            .begin(CLIENT, "req-done", &fingerprint('a'), LONG)
            .await
            .unwrap(),
    );
    assert_eq!(outcome, issued("lic-1"));
    // The lease taken before the restart still holds, and its holder can still finish.
    let begin = ledger
        .begin(CLIENT, "req-held", &fingerprint('b'), LONG)
        .await
        .unwrap();
    assert!(matches!(begin, Begin::InProgress { .. }), "{begin:?}");
    ledger
        .complete(&held, "lic-2", &license_json("lic-2"))
        .await
        .unwrap();

    // And a third start, concurrent with the second still open, is just as harmless.
    let again = db.connect().await;
    assert_eq!(again.count_by_state().await.unwrap()[1], (State::Issued, 2));
}

async fn a_kept_alive_lease_outlasts_its_length_until_the_keeper_stops(db: &TestDb) {
    // Long enough that a renewal delayed by a busy machine (or a slow fsync) still lands in
    // time, short enough to outlive five times over.
    const KEPT: Duration = Duration::from_millis(300);
    let ledger = db.connect().await;
    let attempt = fresh(begin_req_1(&ledger, KEPT).await);
    let keeper = ledger.keep_alive(&attempt, KEPT);

    // Five lease lengths later the key is still held: a slow create keeps its claim.
    tokio::time::sleep(KEPT * 5).await;
    let begin = begin_req_1(&ledger, LONG).await;
    assert!(matches!(begin, Begin::InProgress { .. }), "{begin:?}");

    // Once the attempt ends, the lease is renewed no more and runs out as usual.
    keeper.stop().await;
    tokio::time::sleep(KEPT * 2).await;
    let next = resumed(begin_req_1(&ledger, LONG).await);
    assert_eq!(next.number(), 2);
}

async fn a_dropped_keeper_stops_renewing_and_the_lease_runs_out(db: &TestDb) {
    let ledger = db.connect().await;
    let attempt = fresh(begin_req_1(&ledger, SHORT).await);
    // An attempt that panics or is cancelled drops its keeper without stopping it.
    drop(ledger.keep_alive(&attempt, SHORT));

    wait_out_short_lease().await;
    resumed(begin_req_1(&ledger, LONG).await);
}

async fn a_taken_over_attempt_can_no_longer_renew_its_lease(db: &TestDb) {
    let ledger = db.connect().await;
    let stale = fresh(begin_req_1(&ledger, SHORT).await);
    wait_out_short_lease().await;
    let current = resumed(begin_req_1(&ledger, LONG).await);

    let err = ledger.renew(&stale, LONG * 2).await.unwrap_err();

    assert!(matches!(err, LedgerError::StaleAttempt), "{err:?}");
    let record = ledger.get(CLIENT, "req-1").await.unwrap().expect("record");
    assert_eq!(record.lease_expires_at, current.lease_expires_at());
    // The holder renews; renewing a finished record is a harmless no-op.
    ledger.renew(&current, LONG).await.unwrap();
    ledger
        .complete(&current, "lic-1", &license_json("lic-1"))
        .await
        .unwrap();
    ledger.renew(&current, LONG).await.unwrap();
    let record = ledger.get(CLIENT, "req-1").await.unwrap().expect("record");
    assert_eq!(record.state, State::Issued);
}

async fn a_record_released_after_a_settling_period_stays_in_progress_until_it_ends(db: &TestDb) {
    const SETTLE: Duration = Duration::from_millis(400);
    let ledger = db.connect().await;
    let attempt = fresh(begin_req_1(&ledger, LONG).await);

    ledger.release_after(&attempt, SETTLE).await.unwrap();

    // Within the settling period a retry is told how long is left, not let in to reconcile.
    match begin_req_1(&ledger, LONG).await {
        Begin::InProgress { retry_after } => {
            assert!(retry_after <= SETTLE, "{retry_after:?}");
            assert!(retry_after > SETTLE / 2, "{retry_after:?}");
        }
        other => panic!("expected InProgress, got {other:?}"),
    }
    let record = ledger.get(CLIENT, "req-1").await.unwrap().expect("record");
    assert_eq!(record.state, State::Pending);
    // After it, the next attempt takes over (and reconciles).
    tokio::time::sleep(SETTLE + SHORT).await;
    let next = resumed(begin_req_1(&ledger, LONG).await);
    assert_eq!(next.number(), 2);
}

/// Starts fifty `begin`s for one key at once, spread over `replicas`, and collects them.
async fn race(replicas: &[Ledger], lease: Duration) -> Vec<Begin> {
    const RACERS: usize = 50;
    let start = Arc::new(Barrier::new(RACERS));
    let mut tasks = JoinSet::new();
    for i in 0..RACERS {
        let ledger = replicas[i % replicas.len()].clone();
        let start = Arc::clone(&start);
        tasks.spawn(async move {
            start.wait().await;
            ledger
                .begin(CLIENT, "req-race", &fingerprint('a'), lease)
                .await
        });
    }
    let mut outcomes = Vec::with_capacity(RACERS);
    while let Some(joined) = tasks.join_next().await {
        outcomes.push(joined.expect("racer panicked").expect("begin failed"));
    }
    outcomes
}

fn count(outcomes: &[Begin], pick: impl Fn(&Begin) -> bool) -> usize {
    outcomes.iter().filter(|b| pick(b)).count()
}

// === Whose clock decides ===

/// An hour: far more skew than NTP ever leaves, so a test cannot pass by luck of timing.
const HOUR: TimeDelta = TimeDelta::hours(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_replica_whose_clock_runs_ahead_cannot_take_over_a_live_lease() {
    let db = TestDb::postgres().await;
    let holder = db.connect().await;
    let ahead = db.connect().await.with_clock_skew_for_tests(HOUR);
    fresh(begin_req_1(&holder, LONG).await);

    let begin = begin_req_1(&ahead, LONG).await;

    match begin {
        // The hint is the lease's real remaining time, not one skewed by an hour.
        Begin::InProgress { retry_after } => {
            assert!(
                retry_after > LONG - Duration::from_secs(5),
                "{retry_after:?}"
            );
            assert!(retry_after <= LONG, "{retry_after:?}");
        }
        other => panic!("the database's clock says the lease is live, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_replica_whose_clock_runs_behind_grants_a_lease_that_holds() {
    let db = TestDb::postgres().await;
    let behind = db.connect().await.with_clock_skew_for_tests(-HOUR);
    let other = db.connect().await;
    let attempt = fresh(begin_req_1(&behind, LONG).await);

    let begin = begin_req_1(&other, LONG).await;

    assert!(matches!(begin, Begin::InProgress { .. }), "{begin:?}");
    // Every timestamp is the database's, whichever replica wrote it.
    let record = other.get(CLIENT, "req-1").await.unwrap().expect("record");
    let off = (record.created_at - Utc::now()).abs();
    assert!(
        off < TimeDelta::minutes(1),
        "created_at {}",
        record.created_at
    );
    assert_eq!(record.lease_expires_at, attempt.lease_expires_at());
    // Renewals and settling periods too: released by the skewed replica for 30 s, the record
    // stays held for the others.
    behind.renew(&attempt, LONG).await.unwrap();
    behind.release_after(&attempt, LONG).await.unwrap();
    let begin = begin_req_1(&other, LONG).await;
    assert!(matches!(begin, Begin::InProgress { .. }), "{begin:?}");
}

/// The control for the two tests above: on SQLite (one replica, one machine) the gateway's
/// clock is the one that decides, so the skew seam is real and the PostgreSQL tests above
/// could fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_the_gateways_own_clock_decides() {
    let db = TestDb::sqlite().await;
    let ledger = db.connect().await;
    fresh(begin_req_1(&ledger, LONG).await);

    let ahead = ledger.with_clock_skew_for_tests(HOUR);
    let begin = begin_req_1(&ahead, LONG).await;

    assert!(matches!(begin, Begin::Resume(_)), "{begin:?}");
}

// === The SQLite file ===

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[cfg(unix)]
#[tokio::test]
async fn a_new_sqlite_ledger_file_is_readable_by_its_owner_only() {
    let db = TestDb::sqlite().await;
    let ledger = db.connect().await;
    // Write something, so the WAL file exists too.
    fresh(begin_req_1(&ledger, LONG).await);

    let dir = db._dir.as_ref().expect("a sqlite test db has a directory");
    let file = dir.path().join("ledger.db");
    assert_eq!(mode(&file), 0o600, "the ledger file");
    let wal = dir.path().join("ledger.db-wal");
    assert!(wal.exists(), "WAL mode keeps a -wal file while open");
    assert_eq!(mode(&wal), 0o600, "the -wal file");
}

#[cfg(unix)]
#[tokio::test]
async fn an_existing_sqlite_ledger_file_readable_by_others_is_tightened() {
    use std::os::unix::fs::PermissionsExt as _;
    let db = TestDb::sqlite().await;
    let ledger = db.connect().await;
    ledger.close().await;
    drop(ledger);
    let dir = db._dir.as_ref().expect("a sqlite test db has a directory");
    let file = dir.path().join("ledger.db");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");

    let ledger = db.connect().await;

    assert_eq!(mode(&file), 0o600);
    assert_eq!(
        ledger.count_by_state().await.unwrap()[0],
        (State::Pending, 0)
    );
}

// === Backend-independent ===

#[tokio::test]
async fn a_url_with_an_unknown_scheme_is_refused_clearly() {
    for url in ["mysql://root@localhost/db", "", "ledger.db"] {
        let err = Ledger::connect(&LedgerOptions::new(url)).await.unwrap_err();
        assert!(matches!(err, LedgerError::InvalidUrl(_)), "{url}: {err:?}");
        assert!(err.to_string().contains("sqlite://"), "{err}");
    }
}

#[tokio::test]
async fn an_unreachable_postgres_is_a_connect_error() {
    // Port 1 refuses connections at once, so this fails fast rather than timing out.
    let mut options = LedgerOptions::new("postgres://postgres@127.0.0.1:1/test");
    let err = Ledger::connect(&options).await.unwrap_err();
    assert!(
        matches!(
            err,
            LedgerError::Connect {
                backend: "postgres",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "could not connect to the postgres ledger database"
    );

    options.schema = Some("lgw_unreachable".to_owned());
    let err = Ledger::connect(&options).await.unwrap_err();
    assert!(matches!(err, LedgerError::Connect { .. }), "{err:?}");
}

#[tokio::test]
async fn a_malformed_postgres_url_is_an_invalid_url() {
    let err = Ledger::connect(&LedgerOptions::new(
        "postgres://postgres@127.0.0.1:notaport/test",
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, LedgerError::InvalidUrl(_)), "{err:?}");
}

#[tokio::test]
async fn a_sqlite_file_that_cannot_be_created_is_a_connect_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!(
        "sqlite://{}",
        dir.path().join("missing/dir/ledger.db").display()
    );
    let err = Ledger::connect(&LedgerOptions::new(url)).await.unwrap_err();
    assert!(
        matches!(
            err,
            LedgerError::Connect {
                backend: "sqlite",
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn unusable_options_are_refused_before_connecting() {
    let mut options = LedgerOptions::new(postgres_url());
    for schema in [
        "Upper",
        "1digit",
        "semi;colon",
        "with\"quote",
        "",
        &"x".repeat(64),
    ] {
        options.schema = Some(schema.to_owned());
        let err = Ledger::connect(&options).await.unwrap_err();
        assert!(
            matches!(err, LedgerError::InvalidOptions(_)),
            "{schema}: {err:?}"
        );
    }

    let mut options = LedgerOptions::new("sqlite://ledger.db");
    options.schema = Some("ledger".to_owned());
    let err = Ledger::connect(&options).await.unwrap_err();
    assert!(matches!(err, LedgerError::InvalidOptions(_)), "{err:?}");

    let mut options = LedgerOptions::new("sqlite://ledger.db");
    options.max_connections = 0;
    let err = Ledger::connect(&options).await.unwrap_err();
    assert!(matches!(err, LedgerError::InvalidOptions(_)), "{err:?}");
}

#[test]
fn options_and_records_keep_secrets_out_of_debug_output() {
    let options = LedgerOptions::new("postgres://ledger:hunter2@db.internal:5432/ledger");
    let shown = format!("{options:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("db.internal"), "{shown}");

    let shown = format!("{:?}", issued("lic-1"));
    assert!(!shown.contains("AAAA-BBBB"), "{shown}");
    assert!(shown.contains("lic-1"), "{shown}");
}

#[test]
fn states_round_trip_through_their_names() {
    for state in State::ALL {
        assert_eq!(state.to_string().parse::<State>(), Ok(state));
    }
    assert_eq!("issued".parse::<State>(), Ok(State::Issued));
    assert!("Issued".parse::<State>().is_err());
}

// === The payment lifecycle: operations, units, per-license order and history ===

async fn records_name_their_operation_and_those_of_issuance_say_so(db: &TestDb) {
    let ledger = db.connect().await;
    fresh(begin_req_1(&ledger, LONG).await);
    fresh(
        ledger
            .begin_operation(CLIENT, "evt-1", "SuspendLicense", &fingerprint('s'), LONG)
            .await
            .expect("begin"),
    );

    let issuance = ledger
        .get(CLIENT, "req-1")
        .await
        .expect("get")
        .expect("row");
    let suspend = ledger
        .get(CLIENT, "evt-1")
        .await
        .expect("get")
        .expect("row");

    assert_eq!(issuance.operation, ISSUE_LICENSE);
    assert_eq!(suspend.operation, "SuspendLicense");
}

async fn a_forgotten_claim_leaves_the_key_free_for_a_fresh_one(db: &TestDb) {
    let ledger = db.connect().await;
    let first = fresh(begin_req_1(&ledger, LONG).await);

    ledger.forget(&first).await.expect("forget");

    assert!(ledger.get(CLIENT, "req-1").await.expect("get").is_none());
    let again = fresh(begin_req_1(&ledger, LONG).await);
    assert_eq!(again.number(), 1, "a new request, not a resumed one");
    // Forgetting is fenced: the first attempt cannot remove the new claim.
    ledger.forget(&first).await.expect("a no-op");
    assert!(ledger.get(CLIENT, "req-1").await.expect("get").is_some());
    ledger
        .complete(&again, "lic-1", &license_json("lic-1"))
        .await
        .expect("complete");
    ledger.forget(&again).await.expect("a no-op once settled");
    assert_eq!(replayed(begin_req_1(&ledger, LONG).await), issued("lic-1"));
}

async fn units_and_licenses_find_their_records(db: &TestDb) {
    let ledger = db.connect().await;
    for key in ["order-7", "order-7#1", "order-7#2", "order-70", "order-7$"] {
        let attempt = fresh(
            ledger
                .begin(CLIENT, key, &fingerprint('u'), LONG)
                .await
                .expect("begin"),
        );
        ledger
            .complete(&attempt, &format!("lic-{key}"), &license_json(key))
            .await
            .expect("complete");
    }

    let found = ledger.find_with_units("order-7").await.expect("find");
    let by_license = ledger
        .find_by_license_id("lic-order-7#2")
        .await
        .expect("find");

    let keys: Vec<&str> = found.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(keys, ["order-7", "order-7#1", "order-7#2"]);
    assert_eq!(by_license.len(), 1);
    assert_eq!(by_license[0].request_id, "order-7#2");
}

fn held(claim: LicenseClaim) -> LicenseHold {
    match claim {
        LicenseClaim::Held(hold) => hold,
        other => panic!("expected Held, got {other:?}"),
    }
}

fn event(seconds: i64, suspended: bool, request_id: &str) -> AppliedEvent {
    AppliedEvent {
        at: DateTime::from_timestamp(1_900_000_000 + seconds, 0).expect("time"),
        suspended,
        caller: CLIENT.to_owned(),
        request_id: request_id.to_owned(),
    }
}

async fn a_license_has_one_holder_at_a_time_and_keeps_its_event_order(db: &TestDb) {
    let ledger = db.connect().await;
    let first = held(ledger.claim_license("lic-1", LONG).await.expect("claim"));
    assert_eq!(first.order, EventOrder::default(), "nothing applied yet");

    let busy = ledger.claim_license("lic-1", LONG).await.expect("claim");
    assert!(
        matches!(busy, LicenseClaim::Busy { retry_after } if retry_after > Duration::from_secs(20)),
        "{busy:?}"
    );
    held(
        ledger
            .claim_license("lic-2", LONG)
            .await
            .expect("another license is free"),
    );
    assert!(
        ledger
            .record_event(&first, &event(10, true, "evt-a"))
            .await
            .expect("record")
    );
    ledger.record_revoked(&first).await.expect("revoke");
    ledger
        .release_license(&first, Duration::ZERO)
        .await
        .expect("release");

    let second = held(ledger.claim_license("lic-1", LONG).await.expect("claim"));
    assert_eq!(
        second.order,
        EventOrder {
            last_event: Some(event(10, true, "evt-a")),
            revoked: true,
        }
    );
    assert_eq!(
        ledger.event_order("lic-1").await.expect("read"),
        Some(second.order.clone())
    );
    assert_eq!(ledger.event_order("lic-none").await.expect("read"), None);
}

async fn an_event_that_is_not_later_never_replaces_the_recorded_one(db: &TestDb) {
    let ledger = db.connect().await;
    let hold = held(ledger.claim_license("lic-1", LONG).await.expect("claim"));

    let later = ledger
        .record_event(&hold, &event(20, false, "evt-resume"))
        .await;
    let older = ledger
        .record_event(&hold, &event(10, true, "evt-suspend"))
        .await;
    let same_time = ledger
        .record_event(&hold, &event(20, true, "evt-other"))
        .await;
    let newest = ledger
        .record_event(&hold, &event(30, true, "evt-late"))
        .await;

    assert!(later.expect("record"));
    assert!(!older.expect("not an error"));
    assert!(!same_time.expect("not an error"));
    assert!(newest.expect("record"));
    let order = ledger
        .event_order("lic-1")
        .await
        .expect("read")
        .expect("row");
    assert_eq!(order.last_event, Some(event(30, true, "evt-late")));
}

async fn a_holder_whose_lease_ran_out_can_no_longer_write_for_the_license(db: &TestDb) {
    let ledger = db.connect().await;
    let stale = held(ledger.claim_license("lic-1", SHORT).await.expect("claim"));
    wait_out_short_lease().await;

    let current = held(
        ledger
            .claim_license("lic-1", LONG)
            .await
            .expect("take over"),
    );

    assert_ne!(stale, current);
    let recorded = ledger.record_event(&stale, &event(10, true, "evt-1")).await;
    assert!(
        matches!(recorded, Err(LedgerError::StaleAttempt)),
        "{recorded:?}"
    );
    let revoked = ledger.record_revoked(&stale).await;
    assert!(
        matches!(revoked, Err(LedgerError::StaleAttempt)),
        "{revoked:?}"
    );
    let entry = HistoryEntry::new(
        CLIENT,
        "evt-1",
        "lic-1",
        "SuspendLicense",
        HistoryResult::Pending,
    );
    let written = ledger.write_history(Some(&stale), &entry).await;
    assert!(
        matches!(written, Err(LedgerError::StaleAttempt)),
        "{written:?}"
    );
    assert!(
        ledger
            .license_history("lic-1")
            .await
            .expect("read")
            .is_empty()
    );
    // Releasing a hold that was taken over leaves the new holder alone.
    ledger
        .release_license(&stale, Duration::ZERO)
        .await
        .expect("a no-op");
    assert!(matches!(
        ledger.claim_license("lic-1", LONG).await.expect("claim"),
        LicenseClaim::Busy { .. }
    ));
    ledger
        .write_history(Some(&current), &entry)
        .await
        .expect("the holder writes");
}

async fn fifty_concurrent_claims_of_one_license_yield_exactly_one_holder(db: &TestDb) {
    let replicas = db.replicas().await;
    let barrier = Arc::new(Barrier::new(50));
    let mut tasks = JoinSet::new();
    for index in 0..50 {
        let ledger = replicas[index % replicas.len()].clone();
        let barrier = barrier.clone();
        tasks.spawn(async move {
            barrier.wait().await;
            ledger.claim_license("lic-race", LONG).await.expect("claim")
        });
    }
    let claims = tasks.join_all().await;

    let holders = claims
        .iter()
        .filter(|claim| matches!(claim, LicenseClaim::Held(_)))
        .count();
    assert_eq!(holders, 1, "{claims:?}");
}

async fn a_license_released_after_a_settling_period_stays_busy_until_it_ends(db: &TestDb) {
    // Longer than SHORT: the claim right after the release must land inside the period even
    // on a loaded machine.
    let settle = Duration::from_millis(800);
    let ledger = db.connect().await;
    let hold = held(ledger.claim_license("lic-1", LONG).await.expect("claim"));

    ledger
        .release_license(&hold, settle)
        .await
        .expect("release");

    assert!(matches!(
        ledger.claim_license("lic-1", LONG).await.expect("claim"),
        LicenseClaim::Busy { .. }
    ));
    tokio::time::sleep(settle + Duration::from_millis(200)).await;
    held(
        ledger
            .claim_license("lic-1", LONG)
            .await
            .expect("claim after settling"),
    );
}

async fn history_rows_move_from_pending_to_settled_and_count_their_attempts(db: &TestDb) {
    let ledger = db.connect().await;
    let hold = held(ledger.claim_license("lic-1", LONG).await.expect("claim"));
    let before = DateTime::from_timestamp(1_900_000_000, 0).expect("time");
    let mut renewal = HistoryEntry::new(
        CLIENT,
        "evt-renew",
        "lic-1",
        "RenewLicense",
        HistoryResult::Pending,
    );
    renewal.subscription_id = Some("sub_1".to_owned());
    renewal.expires_before = Some(before);

    ledger
        .write_history(Some(&hold), &renewal)
        .await
        .expect("pending");
    let pending = ledger.pending_history("lic-1").await.expect("read");
    renewal.result = HistoryResult::NotApplied;
    ledger
        .write_history(Some(&hold), &renewal)
        .await
        .expect("not applied");
    renewal.result = HistoryResult::Pending;
    ledger
        .write_history(Some(&hold), &renewal)
        .await
        .expect("pending again");
    renewal.result = HistoryResult::Applied;
    renewal.expires_after = Some(before + TimeDelta::days(30));
    ledger
        .write_history(Some(&hold), &renewal)
        .await
        .expect("applied");
    let issued = HistoryEntry::new(
        CLIENT,
        "order-1#2",
        "lic-1",
        ISSUE_LICENSE,
        HistoryResult::Applied,
    );
    ledger.write_history(None, &issued).await.expect("unfenced");

    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].expires_before, Some(before));
    assert!(
        ledger
            .pending_history("lic-1")
            .await
            .expect("read")
            .is_empty()
    );
    let entry = ledger
        .history_entry(CLIENT, "evt-renew", "lic-1")
        .await
        .expect("read")
        .expect("row");
    assert_eq!(entry.result, HistoryResult::Applied);
    assert_eq!(entry.attempts, 2, "pending twice");
    assert_eq!(entry.subscription_id.as_deref(), Some("sub_1"));
    assert_eq!(entry.expires_after, Some(before + TimeDelta::days(30)));
    let history = ledger.license_history("lic-1").await.expect("read");
    assert_eq!(history.len(), 2);
    let units = ledger.request_history("order-1").await.expect("read");
    assert_eq!(units.len(), 1, "unit sub-keys belong to their request");
    assert_eq!(units[0].request_id, "order-1#2");
}

#[test]
fn history_results_round_trip_through_their_names() {
    for result in HistoryResult::ALL {
        assert_eq!(result.as_str().parse::<HistoryResult>(), Ok(result));
    }
    assert!("done".parse::<HistoryResult>().is_err());
}

#[tokio::test]
async fn on_sqlite_a_database_from_before_the_lifecycle_migrates_and_its_records_replay() {
    // Arrange: a ledger file with only the first migration, and a record written then.
    let db = TestDb::sqlite().await;
    {
        let old = sqlx::SqlitePool::connect_with(
            <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&db.options.url)
                .expect("url")
                .create_if_missing(true),
        )
        .await
        .expect("open");
        let all = sqlx::migrate!("./migrations/sqlite");
        let first_only = sqlx::migrate::Migrator {
            migrations: std::borrow::Cow::Owned(all.migrations[..1].to_vec()),
            ..sqlx::migrate::Migrator::DEFAULT
        };
        first_only.run(&old).await.expect("the first migration");
        sqlx::query(
            "INSERT INTO issuance_records (caller, request_id, fingerprint, state, attempt_token, \
             attempts, license_id, license_json, created_at, updated_at, lease_expires_at) \
             VALUES ($1, 'old-1', $2, 'issued', 'token', 1, 'lic-old', $3, 1, 1, 1)",
        )
        .bind(CLIENT)
        .bind(fingerprint('o'))
        .bind(license_json("lic-old"))
        .execute(&old)
        .await
        .expect("an old record");
        old.close().await;
    }

    // Act: today's gateway opens it (and runs the rest of the migrations).
    let ledger = db.connect().await;

    // Assert
    let record = ledger
        .get(CLIENT, "old-1")
        .await
        .expect("get")
        .expect("kept");
    assert_eq!(
        record.operation, ISSUE_LICENSE,
        "the default names what it was"
    );
    let replay = ledger
        .begin(CLIENT, "old-1", &fingerprint('o'), LONG)
        .await
        .expect("begin");
    assert_eq!(replayed(replay), issued("lic-old"));
    assert!(
        ledger
            .license_history("lic-old")
            .await
            .expect("read")
            .is_empty()
    );
}

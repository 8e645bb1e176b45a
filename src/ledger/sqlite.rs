//! Opens the SQLite ledger: one file, WAL mode, migrations run at start-up.
//!
//! SQLite is for a single gateway replica. Its file lock keeps the data safe if a second
//! process opens the file, but the writer queue in `Ledger` is per process, so run several
//! replicas on PostgreSQL instead.

use std::{str::FromStr, time::Duration};

use sqlx::{
    SqlitePool,
    migrate::Migrator,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use super::{ACQUIRE_TIMEOUT, LedgerError, LedgerOptions};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a statement waits for SQLite's write lock (held by another process, or by a
/// checkpoint) before failing with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens (creating if missing) the database file and brings its schema up to date.
pub(super) async fn connect(options: &LedgerOptions) -> Result<SqlitePool, LedgerError> {
    let connect_options = SqliteConnectOptions::from_str(&options.url)
        .map_err(|err| LedgerError::InvalidUrl(format!("not a usable sqlite url: {err}")))?
        .create_if_missing(true)
        // WAL lets readers (the operator view, metrics) run while a write is in progress.
        .journal_mode(SqliteJournalMode::Wal)
        // FULL syncs the WAL on every commit: a record that says "issued" must survive a
        // power cut, or a retry after the crash would issue a second license.
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(BUSY_TIMEOUT);
    let pool = SqlitePoolOptions::new()
        .max_connections(options.max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(connect_options)
        .await
        .map_err(|source| LedgerError::Connect {
            backend: "sqlite",
            source,
        })?;
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}

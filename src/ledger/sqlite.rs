//! Opens the SQLite ledger: one file, WAL mode, migrations run at start-up.
//!
//! SQLite is for a single gateway replica. Its file lock keeps the data safe if a second
//! process opens the file, but the writer queue in `Ledger` is per process, so run several
//! replicas on PostgreSQL instead.
//!
//! The file holds every issued license key, so it is readable by its owner only (0600): a new
//! file is created that way before SQLite opens it (SQLite gives its `-wal` and `-shm` files
//! the database file's permissions), and an existing file that others may read, with its
//! `-wal` and `-shm`, is tightened to 0600 with a warning in the log. If it cannot be
//! tightened (the gateway does not own it), the gateway warns and carries on: the operator
//! decides who may read a file they created.

use std::{path::Path, str::FromStr, time::Duration};

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
    if !is_in_memory(&options.url) {
        restrict_permissions(connect_options.get_filename())?;
    }
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

/// Whether the URL names an in-memory database, which has no file to protect.
fn is_in_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

/// Creates the database file owner-only if it is missing, and tightens it (with its `-wal`
/// and `-shm` companions) if others may read it. A missing directory is left for SQLite to
/// report, so that error reads the same as before.
#[cfg(unix)]
fn restrict_permissions(database: &Path) -> Result<(), LedgerError> {
    use std::fs::{self, OpenOptions, Permissions};
    use std::io::ErrorKind;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    use std::path::PathBuf;

    const OWNER_ONLY: u32 = 0o600;
    // SQLite's files next to the database.
    let companion = |suffix: &str| {
        let mut name = database.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(OWNER_ONLY)
        .open(database)
    {
        Ok(_) => return Ok(()),
        Err(error) if error.kind() == ErrorKind::AlreadyExists => {}
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(LedgerError::Connect {
                backend: "sqlite",
                source: sqlx::Error::Io(source),
            });
        }
    }
    for path in [database.to_path_buf(), companion("-wal"), companion("-shm")] {
        let Ok(metadata) = fs::metadata(&path) else {
            continue;
        };
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 == 0 {
            continue;
        }
        match fs::set_permissions(&path, Permissions::from_mode(mode & 0o700)) {
            Ok(()) => tracing::warn!(
                path = %path.display(),
                was = format_args!("{mode:o}"),
                "the ledger file holds license keys and was readable by others: now owner-only"
            ),
            Err(error) => tracing::warn!(
                path = %path.display(),
                mode = format_args!("{mode:o}"),
                %error,
                "the ledger file holds license keys and is readable by others; restrict it"
            ),
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn restrict_permissions(_database: &Path) -> Result<(), LedgerError> {
    Ok(())
}

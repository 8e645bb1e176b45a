//! Opens the PostgreSQL ledger, optionally in its own schema, and runs migrations at start-up.
//!
//! PostgreSQL is the backend for several gateway replicas: the claim statements in `mod.rs`
//! are single atomic statements, so they need no locks or transactions of their own here.

use std::str::FromStr;

use sqlx::{
    AssertSqlSafe, Connection, PgPool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgConnection, PgPoolOptions},
};

use super::{ACQUIRE_TIMEOUT, LedgerError, LedgerOptions};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// SQLSTATEs of a `CREATE SCHEMA IF NOT EXISTS` that lost a race with another replica's:
/// `IF NOT EXISTS` is not atomic in PostgreSQL, so the loser can still see these.
const DUPLICATE_SCHEMA: &str = "42P06";
const UNIQUE_VIOLATION: &str = "23505";

/// Connects, creates the schema if one is configured, and brings the tables up to date.
pub(super) async fn connect(options: &LedgerOptions) -> Result<PgPool, LedgerError> {
    let base = PgConnectOptions::from_str(&options.url)
        .map_err(|err| LedgerError::InvalidUrl(format!("not a usable postgres url: {err}")))?
        // Lets a DBA tell the ledger's sessions apart in pg_stat_activity.
        .application_name("licensing-gateway-ledger");
    if let Some(schema) = &options.schema {
        validate_schema(schema)?;
    }
    prepare(&base, options.schema.as_deref()).await?;
    let connect_options = match &options.schema {
        // Set at session start-up, so every pooled connection (and the migrator, whose
        // bookkeeping table then lives in the schema too) uses it with no extra round trip.
        Some(schema) => base.options([("search_path", schema.as_str())]),
        None => base,
    };
    let pool = PgPoolOptions::new()
        .max_connections(options.max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(connect_options)
        .await
        .map_err(connect_error)?;
    // sqlx serialises concurrent migrators (replicas starting together) with an advisory lock.
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}

/// Accepts plain lower-case identifiers only, which need no quoting rules beyond the quotes
/// we add, so the name can be spliced into DDL (which cannot take bind parameters) safely.
fn validate_schema(schema: &str) -> Result<(), LedgerError> {
    let mut chars = schema.chars();
    let valid_start = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let valid_rest = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    // PostgreSQL truncates identifiers past 63 bytes, which would silently pick another schema.
    if valid_start && valid_rest && schema.len() <= 63 {
        Ok(())
    } else {
        Err(LedgerError::InvalidOptions(format!(
            "schema `{schema}` must be 1-63 characters of a-z, 0-9 and _, not starting with a digit"
        )))
    }
}

/// Opens one connection before the pool does, creating the schema (if any) on it. This also
/// makes an unreachable server fail at once with the real cause ("connection refused"),
/// where the pool would retry until its acquire timeout and then only report the timeout.
async fn prepare(base: &PgConnectOptions, schema: Option<&str>) -> Result<(), LedgerError> {
    let mut conn = PgConnection::connect_with(base)
        .await
        .map_err(connect_error)?;
    let created = match schema {
        Some(schema) => {
            // The name passed `validate_schema`, so splicing it in is safe.
            let ddl = format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"");
            sqlx::query(AssertSqlSafe(ddl))
                .execute(&mut conn)
                .await
                .map(drop)
        }
        None => Ok(()),
    };
    // Closing politely only tells the server we're going; a failure here changes nothing.
    let _ = conn.close().await;
    match created {
        Ok(()) => Ok(()),
        Err(err) if lost_creation_race(&err) => Ok(()),
        Err(err) => Err(LedgerError::Database(err)),
    }
}

fn lost_creation_race(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .and_then(|db| db.code())
        .is_some_and(|code| code == DUPLICATE_SCHEMA || code == UNIQUE_VIOLATION)
}

fn connect_error(source: sqlx::Error) -> LedgerError {
    LedgerError::Connect {
        backend: "postgres",
        source,
    }
}

//! Where a test's issuance ledger lives, and PostgreSQL for tests: the server
//! at `LEDGER_TEST_POSTGRES_URL` (by default the local trust-auth server, as
//! `scripts/test` sets it), one fresh schema per test so parallel tests never
//! collide, dropped when the test ends, even if it panics.

/// Where a test's issuance ledger lives; exactly-once tests run against both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server for ledger tests: `LEDGER_TEST_POSTGRES_URL`, by default the local
/// trust-auth server.
pub fn postgres_url() -> String {
    std::env::var("LEDGER_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A PostgreSQL schema of one test's own, dropped with this guard. Nothing is
/// created here: the gateway's ledger creates the schema when it migrates.
#[derive(Debug)]
pub struct TestSchema {
    name: String,
}

impl TestSchema {
    /// A fresh, unused schema name.
    pub fn fresh() -> Self {
        TestSchema {
            name: format!("lgw_it_{}", uuid::Uuid::new_v4().simple()),
        }
    }

    /// The schema's name, for `ledger.schema`.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestSchema {
    /// Drops the schema. It runs on a thread and runtime of its own, since the test's runtime
    /// may be the one dropping. Failing to clean up is not a test failure.
    fn drop(&mut self) {
        use sqlx::Connection as _;
        let ddl = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name);
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&postgres_url()).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(ddl))
                        .execute(&mut conn)
                        .await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

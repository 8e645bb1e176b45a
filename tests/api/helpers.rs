//! `spawn_app()`: the sandbox Cryptlex plus the real gateway on port 0, and
//! clients for both listeners.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use cryptlex_sandbox::seed;
use cryptlex_sandbox::{Controls, RateLimit};
use licensing_gateway::app::Application;
use licensing_gateway::commands::sandbox::{self, Sandbox, SandboxArgs};
use licensing_gateway::config::{RawAllowedClient, RawSettings};
use licensing_gateway::grpc::pb::issuance_service_client::IssuanceServiceClient;
use licensing_gateway::grpc::pb::user_service_client::UserServiceClient;
use licensing_gateway::grpc::pb::{self, LoginRequest};
use licensing_gateway::ledger::{Ledger, LedgerOptions};
use tonic::transport::Channel;

use crate::support::client::{install_crypto_provider, mtls_channel};
use crate::support::ledger::{Backend, TestSchema, postgres_url};

/// How to start the gateway for one test.
#[derive(Debug, Clone)]
pub struct TestOptions {
    /// Sandbox rate limit; off by default so tests are not throttled.
    pub rate_limit: Option<RateLimit>,
    pub access_token_ttl: Duration,
    /// Extra `LICENSING_GATEWAY__*` settings.
    pub env: Vec<(String, String)>,
    /// A PostgreSQL URL for the ledger (a fresh schema is used); SQLite otherwise.
    pub postgres: Option<String>,
    /// The internal listener's allow-list; empty keeps the sandbox's (the payment service,
    /// limited to the demo product).
    pub allowed_clients: Vec<RawAllowedClient>,
    /// Have the sandbox deliver its webhooks to the gateway (as `licensing-gateway
    /// sandbox` does); off by default, so a test's upstream counts never depend on
    /// when a delivery lands.
    pub webhooks: bool,
}

impl TestOptions {
    /// Every call of the test comes from 127.0.0.1, so a test that stands for
    /// many users (or many clients) at once turns off the per-network upstream
    /// allowance (`limits.upstream_calls_per_address`) and lifts the
    /// per-address connection cap, which would otherwise count them all as
    /// one network.
    pub fn many_users_on_one_address(mut self) -> Self {
        self.env.push((
            "LICENSING_GATEWAY__LIMITS__UPSTREAM_CALLS_PER_ADDRESS".into(),
            "0".into(),
        ));
        self.env.push((
            "LICENSING_GATEWAY__LIMITS__MAX_CONNECTIONS_PER_ADDRESS".into(),
            "100000".into(),
        ));
        self
    }
}

impl Default for TestOptions {
    fn default() -> Self {
        Self {
            rate_limit: None,
            access_token_ttl: Duration::from_secs(15 * 60),
            env: Vec::new(),
            postgres: None,
            allowed_clients: Vec::new(),
            webhooks: false,
        }
    }
}

// `Backend` is shared with the `process` binary; its options are this harness's.
impl Backend {
    /// Returns default test options with this ledger backend.
    pub fn options(self) -> TestOptions {
        TestOptions {
            postgres: match self {
                Backend::Sqlite => None,
                Backend::Postgres => Some(postgres_url()),
            },
            ..TestOptions::default()
        }
    }
}

/// A running gateway and its sandbox.
pub struct TestApp {
    pub public_addr: SocketAddr,
    pub internal_addr: Option<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    pub sandbox: Sandbox,
    pub dir: tempfile::TempDir,
    /// The PostgreSQL schema, if the ledger is on PostgreSQL; dropped with the app, after
    /// the shutdown signal.
    _schema: Option<TestSchema>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl std::fmt::Debug for TestApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestApp")
            .field("public_addr", &self.public_addr)
            .finish_non_exhaustive()
    }
}

/// Starts a gateway with default test options.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(TestOptions::default()).await
}

/// Starts a gateway with `options`.
pub async fn spawn_app_with(options: TestOptions) -> TestApp {
    install_crypto_provider();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut env: HashMap<String, String> = options.env.iter().cloned().collect();
    env.insert(
        "LICENSING_GATEWAY__PUBLIC__ADDR".into(),
        "127.0.0.1:0".into(),
    );
    env.insert(
        "LICENSING_GATEWAY__INTERNAL__ADDR".into(),
        "127.0.0.1:0".into(),
    );
    env.entry("LICENSING_GATEWAY__ADMIN__ADDR".into())
        .or_insert_with(|| "127.0.0.1:0".into());
    let schema = options.postgres.as_ref().map(|_| TestSchema::fresh());
    if let (Some(url), Some(schema)) = (&options.postgres, &schema) {
        env.insert("LICENSING_GATEWAY__LEDGER__URL".into(), url.clone());
        env.insert(
            "LICENSING_GATEWAY__LEDGER__SCHEMA".into(),
            schema.name().to_owned(),
        );
    }
    let mut raw = RawSettings::load(None, &env).expect("test settings load");
    if !options.allowed_clients.is_empty() {
        raw.internal.allowed_clients = options.allowed_clients.clone();
    }
    let args = SandboxArgs {
        dir: dir.path().to_path_buf(),
        cryptlex_addr: "127.0.0.1:0".parse().expect("addr"),
        no_rate_limit: options.rate_limit.is_none(),
        webhooks: options.webhooks,
        access_token_ttl: options.access_token_ttl,
    };
    let sandbox = sandbox::prepare(&args, raw).await.expect("sandbox starts");
    if options.rate_limit.is_some() {
        sandbox
            .cryptlex
            .controls()
            .set_rate_limit(options.rate_limit);
    }
    let app = Application::build(sandbox.settings.clone())
        .await
        .expect("gateway builds");
    let public_addr = app.public_addr();
    sandbox::register_webhook(&sandbox, public_addr, false);
    let internal_addr = app.internal_addr();
    let admin_addr = app.admin_addr();
    let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = stop.await;
    }));
    TestApp {
        public_addr,
        internal_addr,
        admin_addr,
        sandbox,
        dir,
        _schema: schema,
        shutdown: Some(shutdown),
        server: Some(server),
    }
}

impl TestApp {
    /// GETs `path` on the admin listener; returns the status and body.
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        install_crypto_provider();
        let addr = self.admin_addr.expect("admin listener enabled");
        let response = reqwest::get(format!("http://{addr}{path}"))
            .await
            .expect("admin listener reachable");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }

    /// The sandbox's test controls.
    pub fn cryptlex(&self) -> Controls {
        self.sandbox.cryptlex.controls()
    }

    /// A plaintext channel to the public listener.
    pub async fn public_channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.public_addr))
            .expect("uri")
            .connect()
            .await
            .expect("public listener reachable")
    }

    /// A `UserService` client on the public listener.
    pub async fn user_client(&self) -> UserServiceClient<Channel> {
        UserServiceClient::new(self.public_channel().await)
    }

    /// A mutual-TLS channel to the internal listener with the given client
    /// certificate (or none).
    pub async fn internal_channel(
        &self,
        client: Option<(&str, &str)>,
    ) -> Result<Channel, tonic::transport::Error> {
        let addr = self.internal_addr.expect("internal listener enabled");
        mtls_channel(addr.port(), self.sandbox.pki.ca_cert_pem(), client).await
    }

    /// An `IssuanceService` client authenticated as the allow-listed payment
    /// service.
    pub async fn payment_client(&self) -> IssuanceServiceClient<Channel> {
        let files = self.sandbox.pki.files();
        let cert = std::fs::read_to_string(&files.payment_service_cert).expect("cert");
        let key = std::fs::read_to_string(&files.payment_service_key).expect("key");
        IssuanceServiceClient::new(
            self.internal_channel(Some((&cert, &key)))
                .await
                .expect("mTLS connect"),
        )
    }

    /// Logs in and returns the access token.
    pub async fn login(&self, email: &str, password: &str) -> pb::Session {
        self.user_client()
            .await
            .login(LoginRequest {
                email: email.into(),
                password: password.into(),
                ..Default::default()
            })
            .await
            .expect("login succeeds")
            .into_inner()
            .session
            .expect("a session")
    }

    /// Logs in as the seeded demo user and returns the access token.
    pub async fn demo_token(&self) -> String {
        self.login(seed::DEMO_EMAIL, seed::DEMO_PASSWORD)
            .await
            .access_token
    }

    /// Stops the gateway and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server ran cleanly");
        }
    }

    /// Opens the gateway's issuance ledger, as the operator command would.
    pub async fn ledger(&self) -> Ledger {
        let settings = &self.sandbox.settings.ledger;
        Ledger::connect(&LedgerOptions {
            url: settings.url.clone(),
            schema: settings.schema.clone(),
            max_connections: 1,
        })
        .await
        .expect("the test ledger opens")
    }

    /// The sandbox directory (PKI, PAT file, ledger).
    pub fn sandbox_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        // Every test is a contract test: what the gateway sent and the sandbox answered
        // must match Cryptlex's OpenAPI document. Skipped when the test already failed.
        if !std::thread::panicking() {
            crate::contract::assert_conforms(&self.cryptlex());
        }
    }
}

/// Log lines (JSON, one per line) written by every gateway in this test
/// process from the first call on. The subscriber is process-wide, so tests
/// find their own lines by their request ids.
pub fn captured_logs() -> CapturedLogs {
    static CAPTURE: std::sync::OnceLock<CapturedLogs> = std::sync::OnceLock::new();
    CAPTURE
        .get_or_init(|| {
            let capture = CapturedLogs::default();
            let _guard = licensing_gateway::telemetry::init(
                "info,tower_http=debug,licensing_gateway=debug",
                licensing_gateway::telemetry::LogFormat::Json,
                None,
                capture.clone(),
                false,
                None,
            );
            capture
        })
        .clone()
}

/// A shared in-memory log sink.
#[derive(Debug, Clone, Default)]
pub struct CapturedLogs {
    buffer: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl CapturedLogs {
    /// Every line logged so far.
    pub fn lines(&self) -> Vec<String> {
        let buffer = self.buffer.lock().expect("log buffer");
        String::from_utf8_lossy(&buffer)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl std::io::Write for CapturedLogs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer
            .lock()
            .expect("log buffer")
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'writer> tracing_subscriber::fmt::MakeWriter<'writer> for CapturedLogs {
    type Writer = CapturedLogs;

    fn make_writer(&'writer self) -> Self::Writer {
        self.clone()
    }
}

/// A second gateway beside a [`TestApp`], as another process would run it:
/// the same settings (the sandbox, the PKI, the ledger and its PostgreSQL
/// schema), listeners of its own.
pub struct Replica {
    pub public_addr: SocketAddr,
    pub internal_addr: Option<SocketAddr>,
    ca_pem: String,
    payment_identity: (String, String),
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    /// The ledger's PostgreSQL schema, when the ledger is on PostgreSQL.
    pub fn postgres_schema(&self) -> Option<&str> {
        self._schema.as_ref().map(TestSchema::name)
    }

    /// Starts another replica of this gateway (see [`Replica`]).
    pub async fn spawn_replica(&self) -> Replica {
        let app = Application::build(self.sandbox.settings.clone())
            .await
            .expect("the replica builds");
        let public_addr = app.public_addr();
        let internal_addr = app.internal_addr();
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async move {
            let _ = stop.await;
        }));
        let files = self.sandbox.pki.files();
        Replica {
            public_addr,
            internal_addr,
            ca_pem: self.sandbox.pki.ca_cert_pem().to_owned(),
            payment_identity: (
                std::fs::read_to_string(&files.payment_service_cert).expect("cert"),
                std::fs::read_to_string(&files.payment_service_key).expect("key"),
            ),
            shutdown: Some(shutdown),
            server: Some(server),
        }
    }
}

impl Replica {
    /// A `UserService` client on this replica's public listener.
    pub async fn user_client(&self) -> UserServiceClient<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.public_addr))
            .expect("uri")
            .connect()
            .await
            .expect("the replica's public listener is reachable");
        UserServiceClient::new(channel)
    }

    /// An `IssuanceService` client on this replica, as the payment service.
    pub async fn payment_client(&self) -> IssuanceServiceClient<Channel> {
        let addr = self.internal_addr.expect("internal listener enabled");
        let (cert, key) = &self.payment_identity;
        let channel = mtls_channel(addr.port(), &self.ca_pem, Some((cert, key)))
            .await
            .expect("mTLS connect");
        IssuanceServiceClient::new(channel)
    }

    /// Stops the replica and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("replica task")
                .expect("the replica ran cleanly");
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

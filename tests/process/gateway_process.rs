//! Crash safety with the real binary: gateways run as child processes against one sandbox
//! Cryptlex started in the test, so a test can SIGKILL a gateway between the license create
//! and the ledger write, restart it on the same ledger, run the `ledger` operator command, or
//! run two replicas on one PostgreSQL.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use cryptlex_sandbox::pki::DevPki;
use cryptlex_sandbox::{
    FaultAction, FaultRule, LicenseRecord, SandboxCryptlex, SandboxOptions, seed,
};
use licensing_gateway::grpc::pb::issuance_service_client::IssuanceServiceClient;
use licensing_gateway::grpc::pb::{IssueLicenseRequest, IssueLicenseResponse};
use secrecy::ExposeSecret as _;
use tokio::process::{Child, Command};
use tonic::Code;
use tonic::transport::Channel;

use crate::support::client::{install_crypto_provider, mtls_channel};
use crate::support::issuance::{
    REQUEST_ID_KEY, issue_concurrently, issue_for_demo, license_or_in_progress, license_posts,
    retry_delay,
};
use crate::support::ledger::{Backend, TestSchema, postgres_url};

/// How long a gateway process may take to start listening (a debug build, migrations).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Longer than the configured 6 s lease, so a retry may keep getting ABORTED until then.
const LEASE_RUNS_OUT: Duration = Duration::from_secs(15);

// === Harness ===

/// One sandbox Cryptlex, one PKI and one ledger, shared by every gateway process a test
/// starts, as replicas or restarts of one deployment would share them.
struct Deployment {
    dir: tempfile::TempDir,
    cryptlex: SandboxCryptlex,
    pki: DevPki,
    ledger_url: String,
    /// The PostgreSQL schema, dropped with the deployment.
    schema: Option<TestSchema>,
}

/// A running gateway process; killed if the test ends without doing so.
struct GatewayProcess {
    child: Child,
    internal_port: u16,
    log: PathBuf,
}

impl Deployment {
    async fn start(backend: Backend) -> Self {
        install_crypto_provider();
        let dir = tempfile::tempdir().expect("temp dir");
        let cryptlex = SandboxCryptlex::start(
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            SandboxOptions {
                rate_limit: None,
                ..SandboxOptions::default()
            },
        )
        .await
        .expect("sandbox cryptlex starts");
        let pki = DevPki::generate(&dir.path().join("pki")).expect("pki");
        std::fs::write(
            dir.path().join("cryptlex-pat"),
            cryptlex.admin_pat().expose_secret(),
        )
        .expect("pat file");
        let (ledger_url, schema) = match backend {
            Backend::Sqlite => (
                format!("sqlite://{}", dir.path().join("ledger.db").display()),
                None,
            ),
            Backend::Postgres => (postgres_url(), Some(TestSchema::fresh())),
        };
        Deployment {
            dir,
            cryptlex,
            pki,
            ledger_url,
            schema,
        }
    }

    /// Writes a configuration file for one process, listening on `public` and `internal`.
    /// Deadlines are short so the lease, which must outlast the longest attempt (2 s + 1 s +
    /// a 2 s margin), can be short too: a killed gateway's request id is free 6 s later.
    fn write_config(&self, name: &str, public: u16, internal: u16) -> PathBuf {
        let files = self.pki.files();
        let path = |path: &Path| toml_string(&path.display().to_string());
        let schema = self
            .schema
            .as_ref()
            .map(|schema| format!("schema = {}\n", toml_string(schema.name())))
            .unwrap_or_default();
        let config = format!(
            "[admin]\naddr = \"127.0.0.1:0\"\n\n[public]\naddr = \"127.0.0.1:{public}\"\n\
             default_deadline = \"2s\"\nmax_deadline = \"2s\"\n\n\
             [internal]\naddr = \"127.0.0.1:{internal}\"\n\
             tls_cert_file = {server_cert}\ntls_key_file = {server_key}\nclient_ca_file = {ca}\n\n\
             [[internal.allowed_clients]]\nidentity = {identity}\nproducts = [{product}]\n\n\
             [cryptlex]\nbase_url = {base_url}\naccount_alias = {alias}\npat_file = {pat}\n\
             request_timeout = \"1s\"\n\n\
             [issuance]\ndefault_product_id = {product}\nlease = \"6s\"\n\n\
             [sign_up]\nenabled = false\n\n\
             [ledger]\nurl = {ledger}\n{schema}\n\
             [log]\nlevel = \"licensing_gateway=debug,info\"\n",
            server_cert = path(&files.server_cert),
            server_key = path(&files.server_key),
            ca = path(&files.ca_cert),
            identity = toml_string(DevPki::PAYMENT_SERVICE_ID),
            product = toml_string(seed::PRODUCT_ID),
            base_url = toml_string(&self.cryptlex.base_url()),
            alias = toml_string(seed::ACCOUNT_ALIAS),
            pat = path(&self.dir.path().join("cryptlex-pat")),
            ledger = toml_string(&self.ledger_url),
        );
        let file = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&file, config).expect("config file");
        file
    }

    /// Starts the binary as `name` and waits until its internal listener accepts connections.
    async fn start_gateway(&self, name: &str) -> GatewayProcess {
        let public = free_port();
        let internal = free_port();
        let config = self.write_config(name, public, internal);
        let log = self.dir.path().join(format!("{name}.log"));
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_licensing-gateway"))
            .arg("--config")
            .arg(&config)
            .arg("serve")
            .env_clear()
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .expect("the gateway binary starts");
        let mut gateway = GatewayProcess {
            child,
            internal_port: internal,
            log,
        };
        let started = tokio::time::Instant::now();
        loop {
            if let Some(exit) = gateway.child.try_wait().expect("child status") {
                panic!(
                    "gateway {name} exited with {exit} before listening:\n{}",
                    gateway.log_text()
                );
            }
            if TcpStream::connect(("127.0.0.1", internal)).is_ok() {
                return gateway;
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "gateway {name} did not listen within {START_TIMEOUT:?}:\n{}",
                gateway.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A mutual-TLS channel to `gateway` as the payment service.
    async fn payment_channel(&self, gateway: &GatewayProcess) -> Channel {
        let files = self.pki.files();
        let cert = std::fs::read_to_string(&files.payment_service_cert).expect("cert");
        let key = std::fs::read_to_string(&files.payment_service_key).expect("key");
        mtls_channel(
            gateway.internal_port,
            self.pki.ca_cert_pem(),
            Some((&cert, &key)),
        )
        .await
        .expect("mTLS connect")
    }

    /// Runs `licensing-gateway --config <ops.toml> <args>` and returns its standard output.
    async fn command(&self, args: &[&str]) -> String {
        let output = self.command_output(args).await;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "`{}` failed with {}:\n{stdout}\n{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    /// Runs an operator command against this deployment, succeed or not.
    async fn command_output(&self, args: &[&str]) -> std::process::Output {
        let config = self.write_config("ops", free_port(), free_port());
        Command::new(env!("CARGO_BIN_EXE_licensing-gateway"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .env_clear()
            .stdin(Stdio::null())
            .output()
            .await
            .expect("the command runs")
    }

    /// Asserts that no gateway log written so far holds the PAT or a private key.
    fn assert_no_secrets_in_logs(&self) {
        let files = self.pki.files();
        let pat = self.cryptlex.admin_pat().expose_secret().to_owned();
        let mut secrets = vec![("the cryptlex pat", pat)];
        for (what, key_file) in [
            ("the server key", &files.server_key),
            ("the payment service key", &files.payment_service_key),
        ] {
            let pem = std::fs::read_to_string(key_file).expect("key file");
            // The longest base64 line of the key: present in any dump of it.
            let line = pem
                .lines()
                .filter(|line| !line.starts_with("-----"))
                .max_by_key(|line| line.len())
                .expect("a key body")
                .to_owned();
            secrets.push((what, line));
        }
        let mut logs = 0;
        for entry in std::fs::read_dir(self.dir.path()).expect("deployment dir") {
            let path = entry.expect("dir entry").path();
            if path.extension().is_none_or(|extension| extension != "log") {
                continue;
            }
            logs += 1;
            let text = std::fs::read_to_string(&path).expect("log");
            for (what, secret) in &secrets {
                assert!(
                    !text.contains(secret.as_str()),
                    "{what} appears in {}",
                    path.display()
                );
            }
        }
        assert!(logs > 0, "no gateway log was written");
    }

    /// Waits (bounded) until Cryptlex holds a license for `request_id`, and returns it.
    async fn wait_for_license(&self, request_id: &str) -> LicenseRecord {
        let controls = self.cryptlex.controls();
        let started = tokio::time::Instant::now();
        loop {
            if let Some(license) = controls
                .licenses_with_metadata(REQUEST_ID_KEY, request_id)
                .into_iter()
                .next()
            {
                return license;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no license for {request_id} within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts the first gateway, makes Cryptlex hold back its reply to the create, issues
    /// `request_id`, and SIGKILLs the gateway once the license exists: the crash between the
    /// create and the ledger write. Returns the license Cryptlex created.
    async fn issue_and_kill_after_the_create(&self, request_id: &str) -> LicenseRecord {
        self.cryptlex
            .controls()
            .add_fault(
                FaultRule::once(FaultAction::DelayAfterProcessing(Duration::from_secs(30)))
                    .method(http::Method::POST)
                    .path_prefix("/v3/licenses"),
            )
            .expect("fault");
        let mut gateway = self.start_gateway("doomed").await;
        let mut client = IssuanceServiceClient::new(self.payment_channel(&gateway).await);
        let request = issue_for_demo(request_id);
        let call = tokio::spawn(async move { client.issue_license(request).await });

        let created = self.wait_for_license(request_id).await;
        gateway.child.kill().await.expect("SIGKILL the gateway");
        let lost = call.await.expect("call task");

        assert!(lost.is_err(), "the killed gateway never answered: {lost:?}");
        created
    }
}

impl GatewayProcess {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Returns a port that was free a moment ago (bound to port 0, read, released).
fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// A TOML basic string; test paths and URLs need only quotes and backslashes escaped.
fn toml_string(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Issues `request` until it is answered, retrying ABORTED (request in progress) for at most
/// `bound`, as the payment service would.
async fn issue_retrying_in_progress(
    channel: Channel,
    request: IssueLicenseRequest,
    bound: Duration,
) -> IssueLicenseResponse {
    let mut client = IssuanceServiceClient::new(channel);
    let started = tokio::time::Instant::now();
    loop {
        match client.issue_license(request.clone()).await {
            Ok(response) => return response.into_inner(),
            Err(status) if status.code() == Code::Aborted && started.elapsed() < bound => {
                tokio::time::sleep(retry_delay(&status).min(Duration::from_millis(500))).await;
            }
            Err(status) => panic!("the retry failed: {status:?}"),
        }
    }
}

// === Tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_between_create_and_ledger_write_returns_the_same_license_after_restart_on_sqlite()
 {
    killed_between_create_and_ledger_write_then_restarted(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_between_create_and_ledger_write_returns_the_same_license_after_restart_on_postgres()
 {
    killed_between_create_and_ledger_write_then_restarted(Backend::Postgres).await;
}

async fn killed_between_create_and_ledger_write_then_restarted(backend: Backend) {
    // Arrange
    let deployment = Deployment::start(backend).await;
    let created = deployment
        .issue_and_kill_after_the_create("order-crash")
        .await;

    // Act: the payment service retries against the restarted gateway.
    let restarted = deployment.start_gateway("restarted").await;
    let retried = issue_retrying_in_progress(
        deployment.payment_channel(&restarted).await,
        issue_for_demo("order-crash"),
        LEASE_RUNS_OUT,
    )
    .await;

    // Assert
    let cryptlex = deployment.cryptlex.controls();
    assert!(retried.replayed, "found again by its request id");
    let license = retried.license.expect("license");
    assert_eq!(license.id, created.id);
    assert_eq!(license.key, created.key);
    assert_eq!(
        cryptlex
            .licenses_with_metadata(REQUEST_ID_KEY, "order-crash")
            .len(),
        1,
        "exactly one license"
    );
    assert_eq!(license_posts(&cryptlex), 1, "no second create");
    // The operator can see what happened. (This line used to go missing on
    // PostgreSQL: see `telemetry::init` on per-layer filters.)
    let log = restarted.log_text();
    assert!(
        log.contains("licensing-gateway serving")
            && log.contains("reconciled a license created by an earlier attempt"),
        "the restarted gateway logged its start and the reconciliation:\n{log}"
    );
    assert!(
        !log.contains('\u{1b}'),
        "a log written to a file carries no colour codes:\n{log}"
    );
    deployment.assert_no_secrets_in_logs();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_command_lists_and_reconciles_a_record_left_pending_by_a_killed_gateway() {
    // Arrange
    let deployment = Deployment::start(Backend::Sqlite).await;
    let created = deployment
        .issue_and_kill_after_the_create("order-reconcile")
        .await;

    // Act
    let pending = deployment
        .command(&["ledger", "list", "--state", "pending"])
        .await;
    // The dead attempt's 6 s lease must run out before the record can be taken over.
    let started = tokio::time::Instant::now();
    let reconciled = loop {
        let output = deployment.command(&["ledger", "reconcile"]).await;
        if output.contains("Completed") || started.elapsed() > LEASE_RUNS_OUT {
            break output;
        }
        assert!(output.contains("InProgress"), "unexpected: {output}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let shown = deployment
        .command(&["ledger", "show", "order-reconcile"])
        .await;
    let unknown = deployment
        .command_output(&["ledger", "show", "no-such-order"])
        .await;

    // Assert
    assert!(
        pending.contains("pending") && pending.contains("order-reconcile"),
        "the pending record is listed: {pending}"
    );
    assert!(
        reconciled.contains("order-reconcile") && reconciled.contains(&created.id),
        "reconciled with the existing license: {reconciled}"
    );
    assert!(
        shown.contains("state:        issued"),
        "now issued: {shown}"
    );
    assert!(shown.contains(&created.id), "with its license: {shown}");
    assert!(
        !unknown.status.success()
            && String::from_utf8_lossy(&unknown.stderr)
                .contains("no record with request id \"no-such-order\""),
        "an unknown request id fails, and says why: {unknown:?}"
    );

    let restarted = deployment.start_gateway("restarted").await;
    let upstream_before = deployment.cryptlex.controls().requests().len();
    let replay = issue_retrying_in_progress(
        deployment.payment_channel(&restarted).await,
        issue_for_demo("order-reconcile"),
        Duration::from_secs(5),
    )
    .await;
    assert!(replay.replayed);
    assert_eq!(replay.license.expect("license").id, created.id);
    assert_eq!(
        deployment.cryptlex.controls().requests().len(),
        upstream_before,
        "replayed from the ledger"
    );
    assert_eq!(license_posts(&deployment.cryptlex.controls()), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateway_processes_sharing_postgres_create_one_license_for_fifty_concurrent_calls() {
    // Arrange: two replicas started together on one fresh schema, and a slow create so the
    // duplicates overlap the first attempt.
    let deployment = Deployment::start(Backend::Postgres).await;
    let (first, second) = tokio::join!(
        deployment.start_gateway("replica-a"),
        deployment.start_gateway("replica-b")
    );
    let cryptlex = deployment.cryptlex.controls();
    cryptlex
        .add_fault(
            FaultRule::once(FaultAction::Delay(Duration::from_millis(300)))
                .method(http::Method::POST)
                .path_prefix("/v3/licenses"),
        )
        .expect("fault");
    let mut channels = Vec::new();
    for _ in 0..3 {
        channels.push(deployment.payment_channel(&first).await);
        channels.push(deployment.payment_channel(&second).await);
    }
    let request = issue_for_demo("order-replicas");

    // Act
    let results = issue_concurrently(&channels, 50, &request).await;

    // Assert
    let created = cryptlex.licenses_with_metadata(REQUEST_ID_KEY, "order-replicas");
    assert_eq!(created.len(), 1, "exactly one license across both replicas");
    assert_eq!(license_posts(&cryptlex), 1);
    let answers: Vec<_> = results
        .into_iter()
        .filter_map(license_or_in_progress)
        .collect();
    assert!(!answers.is_empty());
    for (license, _) in &answers {
        assert_eq!(license.id, created[0].id);
    }
    assert_eq!(
        answers.iter().filter(|(_, replayed)| !replayed).count(),
        1,
        "only the call that created it is not a replay"
    );
    for gateway in [&first, &second] {
        let retried = issue_retrying_in_progress(
            deployment.payment_channel(gateway).await,
            request.clone(),
            Duration::from_secs(5),
        )
        .await;
        assert!(retried.replayed);
        assert_eq!(retried.license.expect("license").id, created[0].id);
    }
    assert_eq!(license_posts(&cryptlex), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_audit_exits_0_when_clean_1_with_findings_and_2_on_error() {
    // Arrange: one license issued through a gateway
    let deployment = Deployment::start(Backend::Sqlite).await;
    let gateway = deployment.start_gateway("issuer").await;
    let mut client = IssuanceServiceClient::new(deployment.payment_channel(&gateway).await);
    client
        .issue_license(issue_for_demo("order-audited"))
        .await
        .expect("issued");

    // Act: audit, then make a license behind the ledger's back and audit again
    let clean = deployment.command_output(&["ledger", "audit"]).await;
    let body = serde_json::json!({
        "productId": seed::PRODUCT_ID,
        "userId": seed::DEMO_USER_ID,
        "metadata": [{"key": REQUEST_ID_KEY, "value": "order-unrecorded", "viewPermissions": []}]
    });
    let created = reqwest::Client::new()
        .post(format!("{}/v3/licenses", deployment.cryptlex.base_url()))
        .bearer_auth(deployment.cryptlex.admin_pat().expose_secret())
        .json(&body)
        .send()
        .await
        .expect("the sandbox answers");
    assert_eq!(created.status().as_u16(), 201);
    let found = deployment
        .command_output(&["ledger", "audit", "--json", "--calls-per-window", "2"])
        .await;
    let broken = Command::new(env!("CARGO_BIN_EXE_licensing-gateway"))
        .arg("--config")
        .arg(deployment.dir.path().join("missing.toml"))
        .args(["ledger", "audit"])
        .env_clear()
        .output()
        .await
        .expect("the command runs");

    // Assert
    let clean_out = String::from_utf8_lossy(&clean.stdout);
    assert_eq!(clean.status.code(), Some(0), "{clean_out}");
    assert!(
        clean_out.contains("clean: the ledger and cryptlex agree"),
        "{clean_out}"
    );
    assert_eq!(found.status.code(), Some(1));
    let report: serde_json::Value =
        serde_json::from_slice(&found.stdout).expect("only the JSON on standard output");
    assert_eq!(report["findings"][0]["kind"], "license_without_record");
    assert_eq!(report["findings"][0]["request_id"], "order-unrecorded");
    assert_eq!(broken.status.code(), Some(2));
    assert!(broken.stdout.is_empty());
    assert!(String::from_utf8_lossy(&broken.stderr).starts_with("error: "));
    deployment.assert_no_secrets_in_logs();
}

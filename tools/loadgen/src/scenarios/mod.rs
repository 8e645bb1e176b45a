//! The scenarios of issue 12 (`--scenarios`): what website users see while the sandbox
//! enforces Cryptlex's 50 requests per 5 s, with the gateway on its defaults behind one
//! trusted proxy (each user's address in `x-forwarded-for`, as the Next.js backend sends
//! it).
//!
//! - [`browse`]: a busy evening (users sign in, then view pages), on one gateway or on
//!   several replicas sharing a PostgreSQL ledger, with a cross-replica coherence check;
//! - [`flood`]: a read flood from many sessions while the payment service issues licenses;
//! - [`coherence`]: a license revoked in the "dashboard" (the sandbox's controls), seen
//!   through the webhook.
//!
//! The features these measure arrive on other branches; against a gateway or sandbox
//! without them a scenario still completes and says what was missing (a 404 from a
//! sandbox control, a gateway that refuses a setting). Every wait is bounded, and a
//! scenario that cannot run at all is reported as such, never as a panic.
//!
//! Users are created straight at the sandbox with its PAT while its rate limit is off
//! (setup, not measured); the limit is switched on, with fresh windows, when a
//! scenario's gateways are up.

mod browse;
mod coherence;
mod flood;
mod render;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use cryptlex_sandbox::{Controls, RateLimit, seed};
use licensing_gateway::commands::sandbox::Sandbox;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::{Code, Request, Status};

use crate::targets::CALL_TIMEOUT;

pub(crate) use render::render;

/// The heading of the section the scenarios write; a full benchmark run keeps it.
pub(crate) const HEADING: &str = "## Page views within Cryptlex's limit";

/// The password of every user the scenarios create.
const PASSWORD: &str = "loadgen-scenario-password";

/// A scenario, by the name `--scenario` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub(crate) enum Scenario {
    /// 30 users sign in over 15 s and browse until 40 s.
    #[value(name = "busy-evening-30")]
    BusyEvening30,
    /// 100 users sign in over 60 s and browse until 90 s.
    #[value(name = "busy-evening-100")]
    BusyEvening100,
    /// 120 sessions read their profile every second while licenses are issued.
    #[value(name = "read-flood")]
    ReadFlood,
    /// busy-evening-30 over two replicas on one PostgreSQL.
    #[value(name = "replicas-2")]
    Replicas2,
    /// busy-evening-30 over three replicas on one PostgreSQL.
    #[value(name = "replicas-3")]
    Replicas3,
    /// A license revoked in the dashboard, announced by webhook.
    #[value(name = "coherence")]
    Coherence,
}

impl Scenario {
    pub(crate) const ALL: [Scenario; 6] = [
        Scenario::BusyEvening30,
        Scenario::BusyEvening100,
        Scenario::ReadFlood,
        Scenario::Replicas2,
        Scenario::Replicas3,
        Scenario::Coherence,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Scenario::BusyEvening30 => "busy-evening-30",
            Scenario::BusyEvening100 => "busy-evening-100",
            Scenario::ReadFlood => "read-flood",
            Scenario::Replicas2 => "replicas-2",
            Scenario::Replicas3 => "replicas-3",
            Scenario::Coherence => "coherence",
        }
    }
}

/// What one scenario measured, or why it could not run.
pub(crate) enum Outcome {
    Browse(browse::BrowseOutcome),
    Flood(flood::FloodOutcome),
    Coherence(coherence::CoherenceOutcome),
    /// The scenario stopped with this error (e.g. PostgreSQL unreachable).
    Failed(&'static str, String),
}

/// Runs `selected` in order against gateways started from `bin`, each scenario on
/// fresh gateways and fresh users. A scenario's error is reported, not propagated.
pub(crate) async fn run(bin: &Path, sandbox: &Sandbox, selected: &[Scenario]) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    let env = match Env::new(bin, sandbox) {
        Ok(env) => env,
        Err(error) => {
            for scenario in selected {
                outcomes.push(Outcome::Failed(scenario.name(), format!("{error:#}")));
            }
            return outcomes;
        }
    };
    for &scenario in selected {
        eprintln!("scenario {}", scenario.name());
        let result = match scenario {
            Scenario::BusyEvening30 => browse::run(&env, browse::BrowsePlan::busy_evening_30())
                .await
                .map(Outcome::Browse),
            Scenario::BusyEvening100 => browse::run(&env, browse::BrowsePlan::busy_evening_100())
                .await
                .map(Outcome::Browse),
            Scenario::Replicas2 => browse::run(&env, browse::BrowsePlan::replicas(2))
                .await
                .map(Outcome::Browse),
            Scenario::Replicas3 => browse::run(&env, browse::BrowsePlan::replicas(3))
                .await
                .map(Outcome::Browse),
            Scenario::ReadFlood => flood::run(&env, flood::FloodPlan::full())
                .await
                .map(Outcome::Flood),
            Scenario::Coherence => coherence::run(&env).await.map(Outcome::Coherence),
        };
        // Whatever happened, the next scenario starts from an unlimited sandbox.
        env.controls.set_rate_limit(None);
        outcomes.push(result.unwrap_or_else(|error| {
            eprintln!("scenario {} failed: {error:#}", scenario.name());
            Outcome::Failed(scenario.name(), format!("{error:#}"))
        }));
    }
    outcomes
}

/// The smoke's scenario: five users for 8 s on one gateway. Its figures mean nothing;
/// only that the whole scenario pipeline runs.
pub(crate) async fn smoke(bin: &Path, sandbox: &Sandbox) -> anyhow::Result<Outcome> {
    let env = Env::new(bin, sandbox)?;
    let outcome = browse::run(&env, browse::BrowsePlan::smoke()).await;
    env.controls.set_rate_limit(None);
    Ok(Outcome::Browse(outcome?))
}

/// What every scenario uses: the gateway binary, the sandbox and its admin API.
pub(crate) struct Env<'a> {
    bin: &'a Path,
    sandbox: &'a Sandbox,
    controls: Controls,
    /// The sandbox's directory (PKI, PAT, `gateway.toml`).
    dir: PathBuf,
    admin: SandboxAdmin,
}

impl<'a> Env<'a> {
    fn new(bin: &'a Path, sandbox: &'a Sandbox) -> anyhow::Result<Self> {
        let dir = sandbox
            .config_file
            .parent()
            .context("the sandbox configuration has no directory")?
            .to_path_buf();
        let pat = std::fs::read_to_string(dir.join("cryptlex-pat"))
            .context("reading the sandbox's PAT file")?
            .trim()
            .to_owned();
        Ok(Env {
            bin,
            sandbox,
            controls: sandbox.cryptlex.controls(),
            admin: SandboxAdmin {
                http: reqwest::Client::builder().timeout(CALL_TIMEOUT).build()?,
                base: sandbox.cryptlex.base_url(),
                pat,
            },
            dir,
        })
    }

    /// Switches Cryptlex's limit on with fresh windows, forgets the journal, and
    /// returns the counters to measure from.
    fn limit_on(&self) -> cryptlex_sandbox::Stats {
        self.controls
            .set_rate_limit(Some(RateLimit::cryptlex_default()));
        self.controls.clear_requests();
        self.controls.stats()
    }

    /// `count` new users, each with one license, created at the sandbox (rate limit
    /// switched off for it); `first` numbers their client addresses.
    async fn create_users(&self, count: usize, first: usize) -> anyhow::Result<Vec<User>> {
        self.controls.set_rate_limit(None);
        let mut users = Vec::with_capacity(count);
        for n in first..first + count {
            let email = format!("loadgen-{n}-{}@example.com", uuid::Uuid::new_v4().simple());
            let user_id = self.admin.create_user(&email, n).await?;
            let license_id = self.admin.create_license(&user_id).await?;
            users.push(User {
                email,
                user_id,
                license_id,
                address: client_address(n),
            });
        }
        Ok(users)
    }
}

/// A mutual-TLS channel to an internal listener at `addr` as the payment service, with
/// the sandbox's development PKI.
async fn payment_channel(env: &Env<'_>, addr: SocketAddr) -> anyhow::Result<Channel> {
    let files = env.sandbox.pki.files();
    let cert = std::fs::read_to_string(&files.payment_service_cert)
        .context("reading the payment service's certificate")?;
    let key = std::fs::read_to_string(&files.payment_service_key)
        .context("reading the payment service's key")?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(env.sandbox.pki.ca_cert_pem()))
        .domain_name("localhost")
        .identity(Identity::from_pem(cert, key));
    let channel = Channel::from_shared(format!("https://{addr}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("connecting to the internal listener at {addr}"))?;
    Ok(channel)
}

/// A user of the website: who they are at Cryptlex and the address they browse from.
#[derive(Debug, Clone)]
pub(crate) struct User {
    email: String,
    user_id: String,
    /// The license created with the user.
    license_id: String,
    /// Their own IPv4 address, sent in `x-forwarded-for`.
    address: String,
}

/// A distinct IPv4 address for user `n`, in 10.0.0.0/8.
fn client_address(n: usize) -> String {
    let n = n + 1;
    format!("10.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff)
}

/// `message` as user `user` sends it through the website's backend: their address in
/// `x-forwarded-for`, their session's token if they have one, and a deadline.
fn user_request<T>(message: T, address: &str, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    if let Ok(value) = MetadataValue::try_from(address) {
        request.metadata_mut().insert("x-forwarded-for", value);
    }
    if let Some(token) = token
        && let Ok(value) = MetadataValue::try_from(format!("Bearer {token}"))
    {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// One answered call: which RPC, its gRPC code, how long it took, through which replica.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    rpc: &'static str,
    code: Code,
    latency: Duration,
    replica: usize,
}

/// Awaits `call` (bounded by [`CALL_TIMEOUT`] and a second) and records it.
async fn timed<T>(
    rpc: &'static str,
    replica: usize,
    call: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> (Call, Result<T, Status>) {
    let started = tokio::time::Instant::now();
    let result = match tokio::time::timeout(CALL_TIMEOUT + Duration::from_secs(1), call).await {
        Ok(result) => result.map(tonic::Response::into_inner),
        Err(_) => Err(Status::deadline_exceeded("loadgen gave up waiting")),
    };
    let code = result.as_ref().map_or_else(Status::code, |_| Code::Ok);
    let call = Call {
        rpc,
        code,
        latency: started.elapsed(),
        replica,
    };
    (call, result)
}

/// The `RetryInfo` delay of a refusal, if it carries one.
fn retry_delay(status: &Status) -> Option<Duration> {
    tonic_types::StatusExt::get_details_retry_info(status).and_then(|info| info.retry_delay)
}

/// A gRPC code as the spec spells it (`RESOURCE_EXHAUSTED`).
fn code_name(code: Code) -> String {
    let camel = format!("{code:?}");
    let mut name = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

/// The `p`-th percentile of `latencies` in milliseconds (NaN when empty).
fn percentile_ms(latencies: &[Duration], p: f64) -> f64 {
    if latencies.is_empty() {
        return f64::NAN;
    }
    let mut sorted = latencies.to_vec();
    sorted.sort_unstable();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}

/// A uniform draw in `[low, high)`.
fn uniform(rng: &mut crate::soak::Rng, low: Duration, high: Duration) -> Duration {
    let unit = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
    low + (high.saturating_sub(low)).mul_f64(unit)
}

/// The sandbox's API and `/__sandbox/` controls over HTTP, as another process would
/// use them: the PAT for users and licenses, and the controls of the contract that
/// this sandbox may not have yet (a 404 then means "not available").
struct SandboxAdmin {
    http: reqwest::Client,
    base: String,
    pat: String,
}

impl SandboxAdmin {
    /// `POST /v3/users`; the new user's id.
    async fn create_user(&self, email: &str, n: usize) -> anyhow::Result<String> {
        let body = serde_json::json!({
            "email": email,
            "password": PASSWORD,
            "firstName": format!("Load{n}"),
            "lastName": "Gen",
        });
        self.created_id("/v3/users", &body).await
    }

    /// `POST /v3/licenses` for the seeded product; the new license's id.
    async fn create_license(&self, user_id: &str) -> anyhow::Result<String> {
        let body = serde_json::json!({
            "productId": seed::PRODUCT_ID,
            "licenseTemplateId": seed::LICENSE_TEMPLATE_ID,
            "userId": user_id,
        });
        self.created_id("/v3/licenses", &body).await
    }

    async fn created_id(&self, path: &str, body: &serde_json::Value) -> anyhow::Result<String> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.pat)
            .json(body)
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = response.status();
        let value: serde_json::Value = response
            .json()
            .await
            .with_context(|| format!("POST {path}: reading the answer"))?;
        if !status.is_success() {
            anyhow::bail!("POST {path} answered {status}: {value}");
        }
        value
            .get("id")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
            .with_context(|| format!("POST {path} answered no id"))
    }

    /// `POST /__sandbox/webhooks`: the webhook's id, or `None` when the control does
    /// not exist (404).
    async fn add_webhook(&self, url: &str, secret: &str) -> anyhow::Result<Option<String>> {
        let body = serde_json::json!({"url": url, "secret": secret, "events": []});
        let response = self
            .http
            .post(format!("{}/__sandbox/webhooks", self.base))
            .json(&body)
            .send()
            .await
            .context("POST /__sandbox/webhooks")?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let status = response.status();
        let value: serde_json::Value = response.json().await.unwrap_or_default();
        if !status.is_success() {
            anyhow::bail!("POST /__sandbox/webhooks answered {status}");
        }
        value
            .get("id")
            .and_then(serde_json::Value::as_str)
            .map(|id| Some(id.to_owned()))
            .context("POST /__sandbox/webhooks answered no id")
    }

    /// `GET /__sandbox/webhook-deliveries`, or `None` when the control does not exist.
    async fn webhook_deliveries(&self) -> anyhow::Result<Option<Vec<serde_json::Value>>> {
        let response = self
            .http
            .get(format!("{}/__sandbox/webhook-deliveries", self.base))
            .send()
            .await
            .context("GET /__sandbox/webhook-deliveries")?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let response = response.error_for_status()?;
        Ok(Some(response.json().await?))
    }

    /// `PATCH /__sandbox/licenses/{id}` `{"revoked": true}`: false when the control
    /// does not exist (404 or 405: no such route). A sandbox with the route answers an
    /// unknown license with a 404 naming the license, which is an error here.
    async fn revoke_license(&self, license_id: &str) -> anyhow::Result<bool> {
        let response = self
            .http
            .patch(format!("{}/__sandbox/licenses/{license_id}", self.base))
            .json(&serde_json::json!({"revoked": true}))
            .send()
            .await
            .context("PATCH /__sandbox/licenses/{id}")?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND
            || status == reqwest::StatusCode::METHOD_NOT_ALLOWED
        {
            let body = response.bytes().await.unwrap_or_default();
            if String::from_utf8_lossy(&body).contains("License") {
                anyhow::bail!(
                    "PATCH /__sandbox/licenses/{{id}}: the sandbox does not know the license"
                );
            }
            return Ok(false);
        }
        if !status.is_success() {
            anyhow::bail!("PATCH /__sandbox/licenses/{{id}} answered {status}");
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_addresses_are_distinct_ipv4_addresses() {
        let addresses: std::collections::BTreeSet<String> =
            (0..70_000).map(client_address).collect();
        assert_eq!(addresses.len(), 70_000);
        for address in [client_address(0), client_address(69_999)] {
            assert!(address.parse::<std::net::Ipv4Addr>().is_ok(), "{address}");
        }
    }

    #[test]
    fn code_names_are_screaming_snake_case() {
        assert_eq!(code_name(Code::Ok), "OK");
        assert_eq!(code_name(Code::ResourceExhausted), "RESOURCE_EXHAUSTED");
        assert_eq!(code_name(Code::Unavailable), "UNAVAILABLE");
    }

    #[test]
    fn percentiles_pick_by_rank() {
        let latencies: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&latencies, 50.0), 50.0);
        assert_eq!(percentile_ms(&latencies, 99.0), 99.0);
        assert!(percentile_ms(&[], 50.0).is_nan());
    }

    #[test]
    fn uniform_draws_stay_in_range() {
        let mut rng = crate::soak::Rng(7);
        for _ in 0..1_000 {
            let draw = uniform(&mut rng, Duration::from_secs(2), Duration::from_secs(4));
            assert!(draw >= Duration::from_secs(2) && draw < Duration::from_secs(4));
        }
    }
}

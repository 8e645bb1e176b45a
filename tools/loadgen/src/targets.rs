//! What is called: the two RPCs, the three targets that answer them (the gateway, the
//! sandbox Cryptlex straight over HTTP, and a bare tonic server that answers from
//! memory), the two ways a gateway child is configured, the sessions the calls carry,
//! and the [`Caller`] that makes one call of one kind to one target.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use cryptlex_sandbox::seed;
use licensing_gateway::commands::sandbox::{self, Sandbox, SandboxArgs};
use licensing_gateway::config::RawSettings;
use licensing_gateway::grpc::pb;
use licensing_gateway::grpc::pb::user_service_client::UserServiceClient;
use licensing_gateway::grpc::pb::user_service_server::{UserService, UserServiceServer};
use licensing_gateway::grpc::pb::{
    GetProfileRequest, GetProfileResponse, ListMyLicensesRequest, ListMyLicensesResponse,
    LoginRequest, LoginResponse, LogoutRequest, LogoutResponse, RefreshSessionRequest,
    RefreshSessionResponse, SignUpRequest, SignUpResponse,
};
use prost::Message as _;
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};

pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How a gateway child process is configured, on top of the sandbox's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Profile {
    /// The cost of the hop: every call goes upstream.
    HopCost,
    /// What `licensing-gateway sandbox` runs with; the rate-limited run.
    Defaults,
    /// The cached rows of section 1, `--instructions` and `--perf-top`: answers fresh
    /// for an hour (no background refresh mid-run), so every call after
    /// a session's first is answered from memory; the allowances lifted as for
    /// [`Profile::HopCost`], since every call comes from one address.
    Cached,
    /// The soak: defaults (read cache on), but the budget and the per-address sign-in
    /// and upstream allowances lifted, since every call comes from one address and the point is what
    /// the gateway holds on to, not what it sheds.
    Soak,
    /// The scenarios of issue 12: defaults, behind one trusted proxy that writes the
    /// client's address in `x-forwarded-for`, as the Next.js backend does, so the
    /// per-network allowances see each user's own address.
    Browsing,
}

impl Profile {
    /// `LICENSING_GATEWAY__*` overrides, also printed in the report.
    pub(crate) fn overrides(self) -> &'static [(&'static str, &'static str)] {
        match self {
            // No read cache; a budget far above what the run sends (the sandbox's limit is
            // off); the loadgen signs in once per concurrent caller from one address.
            Profile::HopCost => &[
                ("LICENSING_GATEWAY__CACHE__TTL", "0s"),
                (
                    "LICENSING_GATEWAY__CRYPTLEX__BUDGET__MAX_REQUESTS",
                    "1000000",
                ),
                (
                    "LICENSING_GATEWAY__LIMITS__LOGIN_ATTEMPTS_PER_ADDRESS",
                    "1000",
                ),
                // Every call comes from one address; the per-network allowance for
                // upstream calls would measure itself instead of the hop.
                ("LICENSING_GATEWAY__LIMITS__UPSTREAM_CALLS_PER_ADDRESS", "0"),
                // Each caller's session reads far more than a person would; the
                // budget's per-session share would measure itself too.
                (
                    "LICENSING_GATEWAY__CRYPTLEX__BUDGET__PER_SESSION_READS",
                    "1000000",
                ),
                (
                    "LICENSING_GATEWAY__CRYPTLEX__BUDGET__UNVOUCHED_READS",
                    "1000000",
                ),
            ],
            Profile::Defaults => &[],
            Profile::Cached => &[
                ("LICENSING_GATEWAY__CACHE__FRESH_FOR", "1h"),
                ("LICENSING_GATEWAY__CACHE__MAX_AGE", "2h"),
                (
                    "LICENSING_GATEWAY__CRYPTLEX__BUDGET__MAX_REQUESTS",
                    "1000000",
                ),
                ("LICENSING_GATEWAY__LIMITS__UPSTREAM_CALLS_PER_ADDRESS", "0"),
                (
                    "LICENSING_GATEWAY__CRYPTLEX__BUDGET__PER_SESSION_READS",
                    "1000000",
                ),
                // The 32 sessions' first reads all start at once, none of them
                // known to this gateway yet.
                (
                    "LICENSING_GATEWAY__CRYPTLEX__BUDGET__UNVOUCHED_READS",
                    "1000000",
                ),
            ],
            // The sign-in throttle's tables capped low enough that the soak's random
            // emails fill them during the warm-up: growth measured after it is then
            // what is NOT bounded, not tables filling towards their (documented) caps.
            Profile::Soak => &[
                (
                    "LICENSING_GATEWAY__CRYPTLEX__BUDGET__MAX_REQUESTS",
                    "1000000",
                ),
                (
                    "LICENSING_GATEWAY__LIMITS__LOGIN_ATTEMPTS_PER_ADDRESS",
                    "1000000",
                ),
                ("LICENSING_GATEWAY__LIMITS__MAX_TRACKED_EMAILS", "2000"),
                ("LICENSING_GATEWAY__LIMITS__MAX_TRACKED_ADDRESSES", "2000"),
                ("LICENSING_GATEWAY__LIMITS__UPSTREAM_CALLS_PER_ADDRESS", "0"),
            ],
            Profile::Browsing => &[
                (
                    "LICENSING_GATEWAY__LIMITS__CLIENT_ADDRESS_HEADER",
                    "x-forwarded-for",
                ),
                ("LICENSING_GATEWAY__LIMITS__TRUSTED_PROXY_HOPS", "1"),
            ],
        }
    }
}

/// Settings as the reports show them: `` `KEY=value` ``, comma-separated.
pub(crate) fn overrides_markdown(overrides: &[(&str, &str)]) -> String {
    overrides
        .iter()
        .map(|(key, value)| format!("`{key}={value}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rpc {
    GetProfile,
    ListMyLicenses,
}

impl Rpc {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Rpc::GetProfile => "GetProfile",
            Rpc::ListMyLicenses => "ListMyLicenses",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// A tonic server in this process answering from memory.
    Bare,
    /// The sandbox over HTTP/1.1 with reqwest (what the gateway itself sends).
    Direct,
    /// The gateway child process, which calls the sandbox.
    Gateway,
    /// The same gateway over the Connect protocol: a plain HTTP/1.1 POST of JSON to
    /// `/licensing.v1.UserService/<Method>` (issue 17).
    ConnectJson,
    /// A second gateway child process ([`Profile::Cached`]) whose read cache holds every
    /// session's answer: the gateway's own cost, no upstream call (issue 18).
    Cached,
}

impl Target {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Target::Bare => "bare tonic (from memory)",
            Target::Direct => "sandbox over HTTP (direct)",
            Target::Gateway => "gateway -> sandbox",
            Target::ConnectJson => "gateway -> sandbox, Connect JSON over HTTP/1.1",
            Target::Cached => "gateway, answered from its read cache",
        }
    }
}

pub(crate) fn list_request() -> ListMyLicensesRequest {
    ListMyLicensesRequest {
        page_size: 25,
        page_token: String::new(),
        product_id: String::new(),
    }
}

pub(crate) fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

pub(crate) async fn connect(addr: SocketAddr) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await?)
}

/// Starts the sandbox Cryptlex in this process, keeping its files in `dir`; its rate
/// limit starts off.
pub(crate) async fn start_sandbox(dir: &Path) -> anyhow::Result<Sandbox> {
    let env: std::collections::HashMap<String, String> = [
        ("LICENSING_GATEWAY__PUBLIC__ADDR", "127.0.0.1:0"),
        ("LICENSING_GATEWAY__INTERNAL__ADDR", "127.0.0.1:0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let raw = RawSettings::load(None, &env)?;
    sandbox::prepare(
        &SandboxArgs {
            dir: dir.to_path_buf(),
            cryptlex_addr: "127.0.0.1:0".parse()?,
            no_rate_limit: true,
            // A webhook secret in the sandbox directory and `webhook.secret_file` in
            // gateway.toml; the scenarios register their gateways with it.
            webhooks: true,
            access_token_ttl: Duration::from_secs(60 * 60),
        },
        raw,
    )
    .await
}

/// `count` sessions of the demo user, signed in through `gateway`; their access tokens.
///
/// One session per concurrent caller, so that no two calls in flight are identical and
/// the gateway cannot coalesce them: every gateway call is one upstream call. The direct
/// HTTP runs use the same tokens.
pub(crate) async fn demo_sessions(
    gateway: &UserServiceClient<Channel>,
    count: usize,
) -> anyhow::Result<Arc<[String]>> {
    let mut tokens = Vec::with_capacity(count);
    for _ in 0..count {
        let session = gateway
            .clone()
            .login(LoginRequest {
                email: seed::DEMO_EMAIL.into(),
                password: seed::DEMO_PASSWORD.into(),
                ..Default::default()
            })
            .await
            .context("logging in the demo user")?
            .into_inner()
            .session
            .context("no session")?;
        tokens.push(session.access_token);
    }
    Ok(tokens.into())
}

/// `count` new users, signed up through `gateway`; their access tokens.
pub(crate) async fn sign_up_users(
    gateway: &UserServiceClient<Channel>,
    count: usize,
) -> anyhow::Result<Vec<String>> {
    let mut users = Vec::with_capacity(count);
    for i in 0..count {
        let response = gateway
            .clone()
            .sign_up(SignUpRequest {
                email: format!("loadgen-{i}-{}@example.com", uuid::Uuid::new_v4().simple()),
                password: "loadgen-password".into(),
                first_name: format!("Load{i}"),
                last_name: "Gen".into(),
            })
            .await
            .context("signing up a load user")?
            .into_inner();
        users.push(response.session.context("no session")?.access_token);
    }
    Ok(users)
}

/// The three targets and the sessions to call them with; [`Targets::caller`] picks one.
#[derive(Clone)]
pub(crate) struct Targets {
    /// One session per concurrent caller.
    tokens: Arc<[String]>,
    gateway: UserServiceClient<Channel>,
    bare: UserServiceClient<Channel>,
    /// The gateway whose cache answers ([`Target::Cached`]).
    cached: UserServiceClient<Channel>,
    http: reqwest::Client,
    /// The sandbox's base URL, for the direct HTTP calls.
    base: String,
    /// The gateway's public listener as `http://host:port`, for the Connect calls.
    gateway_base: String,
}

impl Targets {
    /// The direct HTTP calls to `base` get a keep-alive pool of `concurrency` connections.
    pub(crate) fn new(
        tokens: Arc<[String]>,
        gateway: UserServiceClient<Channel>,
        bare: UserServiceClient<Channel>,
        cached: UserServiceClient<Channel>,
        base: String,
        gateway_base: String,
        concurrency: usize,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(concurrency)
            .tcp_nodelay(true)
            .build()?;
        Ok(Targets {
            tokens,
            gateway,
            bare,
            cached,
            http,
            base,
            gateway_base,
        })
    }

    pub(crate) fn caller(&self, rpc: Rpc, target: Target) -> Caller {
        Caller {
            rpc,
            target,
            targets: self.clone(),
        }
    }
}

/// Makes one call of one kind to one target.
#[derive(Clone)]
pub(crate) struct Caller {
    rpc: Rpc,
    target: Target,
    targets: Targets,
}

impl Caller {
    /// One call with session `session` (taken modulo the sessions there are): Ok, or a
    /// short description of the failure.
    pub(crate) async fn call(&self, session: usize) -> Result<(), String> {
        let Targets {
            tokens,
            gateway,
            bare,
            cached,
            http,
            base,
            gateway_base,
        } = &self.targets;
        let token = &tokens[session % tokens.len()];
        match self.target {
            Target::Bare | Target::Gateway | Target::Cached => {
                let mut client = match self.target {
                    Target::Bare => bare.clone(),
                    Target::Cached => cached.clone(),
                    _ => gateway.clone(),
                };
                let result = match self.rpc {
                    Rpc::GetProfile => client
                        .get_profile(with_token(GetProfileRequest {}, token))
                        .await
                        .map(|_| ()),
                    Rpc::ListMyLicenses => client
                        .list_my_licenses(with_token(list_request(), token))
                        .await
                        .map(|_| ()),
                };
                result.map_err(|status| format!("{:?}: {}", status.code(), status.message()))
            }
            Target::ConnectJson => {
                // Connect unary: the request message as JSON in the body, the answer
                // as JSON with HTTP 200 (an error is a JSON body with another status).
                let (method, body) = match self.rpc {
                    Rpc::GetProfile => ("GetProfile", "{}"),
                    Rpc::ListMyLicenses => ("ListMyLicenses", r#"{"pageSize":25}"#),
                };
                let response = http
                    .post(format!("{gateway_base}/licensing.v1.UserService/{method}"))
                    .bearer_auth(token)
                    .header("content-type", "application/json")
                    .header("connect-protocol-version", "1")
                    .body(body)
                    .timeout(CALL_TIMEOUT)
                    .send()
                    .await
                    .map_err(|error| error.to_string())?;
                let status = response.status();
                let body = response.bytes().await.map_err(|error| error.to_string())?;
                if !status.is_success() {
                    return Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
                }
                serde_json::from_slice::<serde_json::Value>(&body)
                    .map(|_| ())
                    .map_err(|error| error.to_string())
            }
            Target::Direct => {
                let url = match self.rpc {
                    Rpc::GetProfile => format!("{base}/v3/me"),
                    Rpc::ListMyLicenses => format!("{base}/v3/me/licenses?page=1&limit=25"),
                };
                let response = http
                    .get(url)
                    .bearer_auth(token)
                    .timeout(CALL_TIMEOUT)
                    .send()
                    .await
                    .map_err(|error| error.to_string())?;
                let status = response.status();
                // Read and parse the body as the gateway does.
                let body = response.bytes().await.map_err(|error| error.to_string())?;
                if !status.is_success() {
                    return Err(format!("HTTP {status}"));
                }
                serde_json::from_slice::<serde_json::Value>(&body)
                    .map(|_| ())
                    .map_err(|error| error.to_string())
            }
        }
    }
}

// === the bare tonic server ===

/// Answers `GetProfile` and `ListMyLicenses` from memory; everything else is unimplemented.
#[derive(Debug, Clone)]
pub(crate) struct Canned {
    profile: GetProfileResponse,
    licenses: ListMyLicensesResponse,
}

/// The first line `loadgen --bare-server` prints, before its address.
pub(crate) const BARE_LISTENING: &str = "listening on ";

impl Canned {
    /// What `gateway` answers: the profile of session `token`, and the licenses of
    /// session `licenses_of` (or `token`).
    pub(crate) async fn copy_of(
        gateway: &UserServiceClient<Channel>,
        token: &str,
        licenses_of: Option<&str>,
    ) -> anyhow::Result<Self> {
        let profile = gateway
            .clone()
            .get_profile(with_token(GetProfileRequest {}, token))
            .await?
            .into_inner();
        let licenses = gateway
            .clone()
            .list_my_licenses(with_token(list_request(), licenses_of.unwrap_or(token)))
            .await?
            .into_inner();
        Ok(Canned { profile, licenses })
    }

    /// Both answers, each length-delimited protobuf.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = self.profile.encode_length_delimited_to_vec();
        bytes.extend(self.licenses.encode_length_delimited_to_vec());
        bytes
    }

    fn from_bytes(mut bytes: &[u8]) -> anyhow::Result<Self> {
        let profile = GetProfileResponse::decode_length_delimited(&mut bytes)?;
        let licenses = ListMyLicensesResponse::decode_length_delimited(&mut bytes)?;
        Ok(Canned { profile, licenses })
    }
}

/// `loadgen --bare-server FILE`: the bare tonic server (with a health service) as a
/// process of its own, answering what FILE holds ([`Canned::to_bytes`]) on a free
/// loopback port it prints; it ends when its stdin closes.
pub(crate) async fn serve_bare(file: &Path) -> anyhow::Result<()> {
    let canned = Canned::from_bytes(&std::fs::read(file)?)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("{BARE_LISTENING}{}", listener.local_addr()?);
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<UserServiceServer<Canned>>().await;
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    // A thread blocks on stdin (tokio's stdin is not among the features built).
    let (closed, stdin_closed) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        let _ = closed.send(());
    });
    let stdin_closed = async {
        let _ = stdin_closed.await;
    };
    Server::builder()
        .add_service(health)
        .add_service(UserServiceServer::new(canned))
        .serve_with_incoming_shutdown(incoming, stdin_closed)
        .await?;
    Ok(())
}

#[tonic::async_trait]
impl UserService for Canned {
    async fn login(&self, _: Request<LoginRequest>) -> Result<Response<LoginResponse>, Status> {
        Err(Status::unimplemented("canned"))
    }
    async fn refresh_session(
        &self,
        _: Request<RefreshSessionRequest>,
    ) -> Result<Response<RefreshSessionResponse>, Status> {
        Err(Status::unimplemented("canned"))
    }
    async fn logout(&self, _: Request<LogoutRequest>) -> Result<Response<LogoutResponse>, Status> {
        Err(Status::unimplemented("canned"))
    }
    async fn sign_up(&self, _: Request<SignUpRequest>) -> Result<Response<SignUpResponse>, Status> {
        Err(Status::unimplemented("canned"))
    }
    async fn get_profile(
        &self,
        request: Request<GetProfileRequest>,
    ) -> Result<Response<GetProfileResponse>, Status> {
        require_bearer(&request)?;
        Ok(Response::new(self.profile.clone()))
    }
    async fn list_my_licenses(
        &self,
        request: Request<ListMyLicensesRequest>,
    ) -> Result<Response<ListMyLicensesResponse>, Status> {
        require_bearer(&request)?;
        Ok(Response::new(self.licenses.clone()))
    }
    async fn update_profile(
        &self,
        _: Request<pb::UpdateProfileRequest>,
    ) -> Result<Response<pb::UpdateProfileResponse>, Status> {
        Err(Status::unimplemented("canned"))
    }
    async fn change_password(
        &self,
        _: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        Err(Status::unimplemented("canned"))
    }
    async fn request_password_reset(
        &self,
        _: Request<pb::RequestPasswordResetRequest>,
    ) -> Result<Response<pb::RequestPasswordResetResponse>, Status> {
        Err(Status::unimplemented("canned"))
    }
    async fn reset_password(
        &self,
        _: Request<pb::ResetPasswordRequest>,
    ) -> Result<Response<pb::ResetPasswordResponse>, Status> {
        Err(Status::unimplemented("canned"))
    }
    async fn start_two_factor_enrollment(
        &self,
        _: Request<pb::StartTwoFactorEnrollmentRequest>,
    ) -> Result<Response<pb::StartTwoFactorEnrollmentResponse>, Status> {
        Err(Status::unimplemented("canned"))
    }
    async fn enable_two_factor(
        &self,
        _: Request<pb::EnableTwoFactorRequest>,
    ) -> Result<Response<pb::EnableTwoFactorResponse>, Status> {
        Err(Status::unimplemented("canned"))
    }
    async fn create_recovery_codes(
        &self,
        _: Request<pb::CreateRecoveryCodesRequest>,
    ) -> Result<Response<pb::CreateRecoveryCodesResponse>, Status> {
        Err(Status::unimplemented("canned"))
    }
    async fn disable_two_factor(
        &self,
        _: Request<pb::DisableTwoFactorRequest>,
    ) -> Result<Response<pb::DisableTwoFactorResponse>, Status> {
        Err(Status::unimplemented("canned"))
    }
    async fn get_license(
        &self,
        _: Request<pb::GetLicenseRequest>,
    ) -> Result<Response<pb::GetLicenseResponse>, Status> {
        Err(Status::unimplemented("canned"))
    }
    async fn list_activations(
        &self,
        _: Request<pb::ListActivationsRequest>,
    ) -> Result<Response<pb::ListActivationsResponse>, Status> {
        Err(Status::unimplemented("canned"))
    }
    async fn deactivate_machine(
        &self,
        _: Request<pb::DeactivateMachineRequest>,
    ) -> Result<Response<pb::DeactivateMachineResponse>, Status> {
        Err(Status::unimplemented("canned"))
    }
    async fn list_releases(
        &self,
        _: Request<pb::ListReleasesRequest>,
    ) -> Result<Response<pb::ListReleasesResponse>, Status> {
        Err(Status::unimplemented("canned"))
    }
}

fn require_bearer<T>(request: &Request<T>) -> Result<(), Status> {
    match request.metadata().get("authorization") {
        Some(value) if value.as_bytes().starts_with(b"Bearer ") => Ok(()),
        _ => Err(Status::unauthenticated("no token")),
    }
}

/// The bare server on its own runtime and thread, like a separate process would be.
pub(crate) struct BareServer {
    pub(crate) addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl BareServer {
    /// Starts a bare server that answers what `gateway` answers with session `token`,
    /// so the payloads match.
    pub(crate) async fn start_like(
        gateway: &UserServiceClient<Channel>,
        token: &str,
    ) -> anyhow::Result<Self> {
        Self::start(Canned::copy_of(gateway, token, None).await?)
    }

    fn start(canned: Canned) -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("bare-tonic".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("runtime for the bare server");
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("bare listener");
                    // The builder's tcp_nodelay does not apply to our own listener.
                    let incoming = tonic::transport::server::TcpIncoming::from(listener)
                        .with_nodelay(Some(true));
                    let _ = Server::builder()
                        .add_service(UserServiceServer::new(canned))
                        .serve_with_incoming_shutdown(incoming, async {
                            let _ = stop.await;
                        })
                        .await;
                });
            })?;
        Ok(BareServer {
            addr,
            shutdown: Some(shutdown),
        })
    }

    pub(crate) fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

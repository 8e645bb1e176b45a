//! The soak run (`--soak`): a long stream of mixed calls, most of them hostile, against
//! one gateway child process, with the process's resident memory and open file
//! descriptors sampled throughout. What it looks for is growth once the gateway is warm:
//! a cache, a throttle map, a connection or a task that is never let go.
//!
//! The calls, picked by a seeded generator so two runs send the same sequence:
//! valid users' `GetProfile`, `ListMyLicenses` (following page tokens) and `Login`;
//! wrong passwords for random emails; random and malformed bearer tokens; requests with
//! invalid fields; bytes that are not protobuf at all; and calls on a fresh connection
//! that is dropped afterwards. Bounded in count and in time, loopback only.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::{Buf as _, BufMut as _};
use cryptlex_sandbox::{Controls, seed};
use licensing_gateway::grpc::pb::user_service_client::UserServiceClient;
use licensing_gateway::grpc::pb::{
    GetProfileRequest, ListMyLicensesRequest, LoginRequest, LogoutRequest, SignUpRequest,
};
use tokio::task::JoinSet;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::process::{self, GatewayProcess};
use crate::targets::{connect, with_token};

/// The heading of the section this run writes; a full benchmark run keeps it.
pub(crate) const HEADING: &str = "## Soak: hostile traffic, memory and descriptors";

/// Concurrent callers, spread over [`CONNECTIONS`] HTTP/2 connections.
const CONCURRENCY: usize = 32;
const CONNECTIONS: usize = 4;
/// How often the gateway's RSS and descriptors are read.
const SAMPLE_EVERY: Duration = Duration::from_millis(500);
/// The share of the calls counted as warm-up: growth is measured from its end.
const WARMUP_SHARE: f64 = 0.10;
/// Samples averaged at each end of the measured span, so one allocator hiccup or a
/// connection being opened does not decide the figure: a twentieth of the measured
/// samples, and at least this many.
const MIN_SAMPLES_PER_END: usize = 5;

/// The soak's bounds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SoakPlan {
    pub(crate) calls: usize,
    pub(crate) max_time: Duration,
}

/// One kind of call in the mix, with its share of the calls in percent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    ValidGetProfile,
    ValidListMyLicenses,
    ValidLogin,
    WrongPassword,
    JunkToken,
    MalformedToken,
    InvalidFields,
    NotProtobuf,
    FreshConnection,
}

impl Kind {
    /// The mix, in percent (sums to 100).
    const MIX: [(Kind, u64); 9] = [
        (Kind::ValidGetProfile, 30),
        (Kind::ValidListMyLicenses, 15),
        (Kind::ValidLogin, 4),
        (Kind::WrongPassword, 6),
        (Kind::JunkToken, 15),
        (Kind::MalformedToken, 10),
        (Kind::InvalidFields, 10),
        (Kind::NotProtobuf, 9),
        (Kind::FreshConnection, 1),
    ];

    fn pick(roll: u64) -> Kind {
        let mut threshold = 0;
        for (kind, share) in Self::MIX {
            threshold += share;
            if roll % 100 < threshold {
                return kind;
            }
        }
        Kind::ValidGetProfile
    }

    fn name(self) -> &'static str {
        match self {
            Kind::ValidGetProfile => "valid user: GetProfile",
            Kind::ValidListMyLicenses => "valid user: ListMyLicenses (page tokens followed)",
            Kind::ValidLogin => "valid user: Login",
            Kind::WrongPassword => "Login, random email and wrong password",
            Kind::JunkToken => "GetProfile/ListMyLicenses/Logout, random bearer token",
            Kind::MalformedToken => "malformed or missing authorization",
            Kind::InvalidFields => "invalid fields (page token, page size, email, names)",
            Kind::NotProtobuf => "random bytes that are not the message",
            Kind::FreshConnection => "GetProfile on a new connection, then dropped",
        }
    }

    /// Whether this kind must succeed: a failure of a valid user's call is an error.
    fn must_succeed(self) -> bool {
        matches!(
            self,
            Kind::ValidGetProfile
                | Kind::ValidListMyLicenses
                | Kind::ValidLogin
                | Kind::FreshConnection
        )
    }
}

/// SplitMix64: a seeded sequence, so every run sends the same calls.
#[derive(Debug, Clone)]
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }

    /// `length` characters drawn from `alphabet`.
    fn string(&mut self, alphabet: &[u8], length: usize) -> String {
        (0..length)
            .map(|_| char::from(alphabet[self.below(alphabet.len() as u64) as usize]))
            .collect()
    }

    fn bytes(&mut self, length: usize) -> Vec<u8> {
        (0..length).map(|_| self.next() as u8).collect()
    }
}

const TOKEN_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~+/=";

/// One resource sample of the gateway process.
#[derive(Debug, Clone, Copy)]
struct ResourceSample {
    calls_done: usize,
    rss_kib: u64,
    fds: u64,
}

/// What the soak measured.
#[derive(Debug)]
pub(crate) struct Soak {
    plan: SoakPlan,
    sent: usize,
    elapsed: Duration,
    stopped_by_time: bool,
    /// Answers by kind and gRPC code.
    answers: BTreeMap<Kind, BTreeMap<String, usize>>,
    /// Valid users' calls that failed, with the first message.
    failures: usize,
    first_failure: Option<String>,
    samples: Vec<ResourceSample>,
    idle_before: ResourceSample,
    idle_after: ResourceSample,
    upstream_requests: u64,
    upstream_connections: u64,
    overrides: &'static [(&'static str, &'static str)],
}

/// The sessions and channels the callers share.
struct Shared {
    channels: Vec<Channel>,
    /// Access tokens of the seeded users (demo, other).
    tokens: Vec<String>,
    public_addr: std::net::SocketAddr,
    next: AtomicUsize,
    plan: SoakPlan,
    deadline: Instant,
    stopped_by_time: AtomicBool,
}

/// Runs the soak against `gateway` (started with [`crate::targets::Profile::Soak`]).
pub(crate) async fn run(
    gateway: &GatewayProcess,
    controls: &Controls,
    plan: SoakPlan,
    overrides: &'static [(&'static str, &'static str)],
) -> anyhow::Result<Soak> {
    let mut channels = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        channels.push(connect(gateway.public_addr).await?);
    }
    let mut tokens = Vec::new();
    for (email, password) in [
        (seed::DEMO_EMAIL, seed::DEMO_PASSWORD),
        (seed::OTHER_EMAIL, seed::OTHER_PASSWORD),
    ] {
        let session = UserServiceClient::new(channels[0].clone())
            .login(LoginRequest {
                email: email.into(),
                password: password.into(),
                ..Default::default()
            })
            .await
            .context("signing in a seeded user")?
            .into_inner()
            .session
            .context("no session")?;
        tokens.push(session.access_token);
    }
    let idle_before = resource_sample(gateway.pid(), 0)?;
    let before = controls.stats();
    let started = Instant::now();
    let shared = Arc::new(Shared {
        channels,
        tokens,
        public_addr: gateway.public_addr,
        next: AtomicUsize::new(0),
        plan,
        deadline: started + plan.max_time,
        stopped_by_time: AtomicBool::new(false),
    });

    // The sampler reads /proc every SAMPLE_EVERY until the callers are done.
    let done = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn({
        let (done, shared, pid) = (Arc::clone(&done), Arc::clone(&shared), gateway.pid());
        async move {
            let mut samples = Vec::new();
            while !done.load(Ordering::Relaxed) {
                if let Ok(sample) = resource_sample(pid, shared.next.load(Ordering::Relaxed)) {
                    samples.push(sample);
                }
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
            samples
        }
    });
    // The sandbox records every request it receives; keep that list short.
    let cleaner = tokio::spawn({
        let (done, controls) = (Arc::clone(&done), controls.clone());
        async move {
            while !done.load(Ordering::Relaxed) {
                controls.clear_requests();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    });
    let progress = tokio::spawn({
        let (done, shared) = (Arc::clone(&done), Arc::clone(&shared));
        async move {
            while !done.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(30)).await;
                eprintln!(
                    "soak: {} of {} calls after {:.0?}",
                    shared.next.load(Ordering::Relaxed).min(shared.plan.calls),
                    shared.plan.calls,
                    started.elapsed()
                );
            }
        }
    });

    let mut workers = JoinSet::new();
    for worker in 0..CONCURRENCY {
        let shared = Arc::clone(&shared);
        workers.spawn(async move { caller(worker, &shared).await });
    }
    let mut answers: BTreeMap<Kind, BTreeMap<String, usize>> = BTreeMap::new();
    let mut failures = 0;
    let mut first_failure = None;
    let mut sent = 0;
    while let Some(joined) = workers.join_next().await {
        let tally = joined.context("a soak caller panicked")?;
        sent += tally.sent;
        failures += tally.failures;
        if first_failure.is_none() {
            first_failure = tally.first_failure;
        }
        for (kind, codes) in tally.answers {
            let into = answers.entry(kind).or_default();
            for (code, count) in codes {
                *into.entry(code).or_default() += count;
            }
        }
    }
    let elapsed = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let samples = sampler.await.context("the sampler panicked")?;
    let _ = cleaner.await;
    progress.abort();
    let after = controls.stats();
    let stopped_by_time = shared.stopped_by_time.load(Ordering::Relaxed);
    // Idle: past the read cache's TTL, with the callers' connections closed.
    drop(shared);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_after = resource_sample(gateway.pid(), sent)?;
    Ok(Soak {
        plan,
        sent,
        elapsed,
        stopped_by_time,
        answers,
        failures,
        first_failure,
        samples,
        idle_before,
        idle_after,
        upstream_requests: after.requests - before.requests,
        upstream_connections: after.connections_accepted - before.connections_accepted,
        overrides,
    })
}

/// One caller's answers.
#[derive(Default)]
struct Tally {
    sent: usize,
    answers: BTreeMap<Kind, BTreeMap<String, usize>>,
    failures: usize,
    first_failure: Option<String>,
}

/// Takes call numbers until the plan's count or time runs out; call `n`'s kind and
/// arguments come from a generator seeded with `n`.
async fn caller(worker: usize, shared: &Shared) -> Tally {
    let mut tally = Tally::default();
    let channel = shared.channels[worker % shared.channels.len()].clone();
    // A valid page token to follow on this caller's next ListMyLicenses.
    let mut page_token = String::new();
    loop {
        let n = shared.next.fetch_add(1, Ordering::Relaxed);
        if n >= shared.plan.calls {
            break;
        }
        if Instant::now() >= shared.deadline {
            shared.stopped_by_time.store(true, Ordering::Relaxed);
            break;
        }
        let mut rng = Rng(n as u64);
        let kind = Kind::pick(rng.next());
        let token = &shared.tokens[rng.below(shared.tokens.len() as u64) as usize];
        let result = call(kind, &mut rng, &channel, shared, token, &mut page_token).await;
        tally.sent += 1;
        let code = match &result {
            Ok(()) => "OK".to_owned(),
            Err(status) => format!("{:?}", status.code()),
        };
        *tally
            .answers
            .entry(kind)
            .or_default()
            .entry(code)
            .or_default() += 1;
        if let Err(status) = result
            && kind.must_succeed()
        {
            tally.failures += 1;
            tally.first_failure.get_or_insert_with(|| {
                format!("{}: {:?} {}", kind.name(), status.code(), status.message())
            });
        }
    }
    tally
}

async fn call(
    kind: Kind,
    rng: &mut Rng,
    channel: &Channel,
    shared: &Shared,
    token: &str,
    page_token: &mut String,
) -> Result<(), Status> {
    let mut client = UserServiceClient::new(channel.clone());
    match kind {
        Kind::ValidGetProfile => client
            .get_profile(with_token(GetProfileRequest {}, token))
            .await
            .map(drop),
        Kind::ValidListMyLicenses => {
            // Page size 1, so the seeded user's licenses span pages and the token
            // the gateway issued is sent back on this caller's next list.
            let request = ListMyLicensesRequest {
                page_size: 1,
                page_token: std::mem::take(page_token),
                product_id: String::new(),
            };
            let response = client.list_my_licenses(with_token(request, token)).await;
            match response {
                Ok(response) => {
                    *page_token = response.into_inner().next_page_token;
                    Ok(())
                }
                Err(status) => Err(status),
            }
        }
        Kind::ValidLogin => {
            let (email, password) = if rng.below(2) == 0 {
                (seed::DEMO_EMAIL, seed::DEMO_PASSWORD)
            } else {
                (seed::OTHER_EMAIL, seed::OTHER_PASSWORD)
            };
            client
                .login(LoginRequest {
                    email: email.into(),
                    password: password.into(),
                    ..Default::default()
                })
                .await
                .map(drop)
        }
        Kind::WrongPassword => {
            let local = rng.string(b"abcdefghijklmnopqrstuvwxyz0123456789", 12);
            client
                .login(LoginRequest {
                    email: format!("{local}@example.com"),
                    password: rng.string(TOKEN_CHARS, 16),
                    ..Default::default()
                })
                .await
                .map(drop)
        }
        Kind::JunkToken => {
            let length = 8 + rng.below(600) as usize;
            let junk = rng.string(TOKEN_CHARS, length);
            match rng.below(3) {
                0 => client
                    .get_profile(with_token(GetProfileRequest {}, &junk))
                    .await
                    .map(drop),
                1 => client
                    .list_my_licenses(with_token(list_first_page(), &junk))
                    .await
                    .map(drop),
                _ => client
                    .logout(with_token(LogoutRequest::default(), &junk))
                    .await
                    .map(drop),
            }
        }
        Kind::MalformedToken => {
            let mut request = Request::new(GetProfileRequest {});
            request.set_timeout(Duration::from_secs(10));
            let value = match rng.below(5) {
                0 => None,
                1 => Some(format!("Basic {}", rng.string(TOKEN_CHARS, 24))),
                2 => Some(format!("Bearer {} {}", rng.string(TOKEN_CHARS, 8), token)),
                3 => Some(format!("Bearer {}", "x".repeat(5_000))),
                _ => Some(format!("bearer{}", rng.string(TOKEN_CHARS, 32))),
            };
            if let Some(value) = value.and_then(|value| value.parse().ok()) {
                request.metadata_mut().insert("authorization", value);
            }
            client.get_profile(request).await.map(drop)
        }
        Kind::InvalidFields => match rng.below(4) {
            0 => {
                let length = 1 + rng.below(300) as usize;
                let request = ListMyLicensesRequest {
                    page_size: 1,
                    page_token: rng.string(TOKEN_CHARS, length),
                    product_id: String::new(),
                };
                client
                    .list_my_licenses(with_token(request, token))
                    .await
                    .map(drop)
            }
            1 => {
                let request = ListMyLicensesRequest {
                    page_size: -1 - rng.below(1_000) as i32,
                    page_token: String::new(),
                    product_id: "not/an id".into(),
                };
                client
                    .list_my_licenses(with_token(request, token))
                    .await
                    .map(drop)
            }
            2 => client
                .sign_up(SignUpRequest {
                    email: rng.string(TOKEN_CHARS, 20),
                    password: "short".into(),
                    first_name: "\u{7}bell".into(),
                    last_name: "x".repeat(300),
                })
                .await
                .map(drop),
            _ => client
                .login(LoginRequest {
                    email: String::new(),
                    password: "x".repeat(300),
                    ..Default::default()
                })
                .await
                .map(drop),
        },
        Kind::NotProtobuf => {
            let methods = [
                "Login",
                "SignUp",
                "RefreshSession",
                "GetProfile",
                "ListMyLicenses",
            ];
            let method = methods[rng.below(methods.len() as u64) as usize];
            let length = rng.below(512) as usize;
            raw_call(channel, method, rng.bytes(length), token).await
        }
        Kind::FreshConnection => {
            let channel = connect(shared.public_addr)
                .await
                .map_err(|error| Status::unavailable(error.to_string()))?;
            UserServiceClient::new(channel)
                .get_profile(with_token(GetProfileRequest {}, token))
                .await
                .map(drop)
        }
    }
}

fn list_first_page() -> ListMyLicensesRequest {
    ListMyLicensesRequest {
        page_size: 10,
        page_token: String::new(),
        product_id: String::new(),
    }
}

/// Sends `body` as the request message of `UserService/<method>`, whatever it is.
async fn raw_call(
    channel: &Channel,
    method: &str,
    body: Vec<u8>,
    token: &str,
) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|error| Status::unavailable(error.to_string()))?;
    let path = PathAndQuery::try_from(format!("/licensing.v1.UserService/{method}"))
        .map_err(|error| Status::internal(error.to_string()))?;
    grpc.unary(with_token(body, token), path, RawCodec)
        .await
        .map(drop)
}

/// A codec that sends and receives message bytes as they are.
#[derive(Debug, Clone, Copy)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let length = src.remaining();
        Ok(Some(src.copy_to_bytes(length).to_vec()))
    }
}

fn resource_sample(pid: u32, calls_done: usize) -> anyhow::Result<ResourceSample> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .context("reading /proc/<pid>/fd")?
        .count() as u64;
    Ok(ResourceSample {
        calls_done,
        rss_kib: process::rss_kib(pid)?,
        fds,
    })
}

// === the report section ===

/// Mean RSS and descriptors over the samples at each end of the measured span
/// (after warm-up, to the end of the load).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Growth {
    rss_start_kib: f64,
    rss_end_kib: f64,
    fds_start: f64,
    fds_end: f64,
}

impl Growth {
    fn of(samples: &[ResourceSample], warmup_calls: usize) -> Option<Growth> {
        let measured: Vec<&ResourceSample> = samples
            .iter()
            .filter(|sample| sample.calls_done >= warmup_calls)
            .collect();
        if measured.len() < 2 * MIN_SAMPLES_PER_END {
            return None;
        }
        let per_end = (measured.len() / 20).max(MIN_SAMPLES_PER_END);
        let mean = |window: &[&ResourceSample], value: fn(&ResourceSample) -> u64| {
            window
                .iter()
                .map(|sample| value(sample) as f64)
                .sum::<f64>()
                / window.len() as f64
        };
        let start = &measured[..per_end];
        let end = &measured[measured.len() - per_end..];
        Some(Growth {
            rss_start_kib: mean(start, |sample| sample.rss_kib),
            rss_end_kib: mean(end, |sample| sample.rss_kib),
            fds_start: mean(start, |sample| sample.fds),
            fds_end: mean(end, |sample| sample.fds),
        })
    }

    fn rss_percent(&self) -> f64 {
        percent(self.rss_start_kib, self.rss_end_kib)
    }

    fn fds_percent(&self) -> f64 {
        percent(self.fds_start, self.fds_end)
    }
}

/// The first sample at or past each tenth of the calls sent.
fn timeline(samples: &[ResourceSample], sent: usize) -> Vec<ResourceSample> {
    (1..=10)
        .filter_map(|tenth| {
            let mark = sent * tenth / 10;
            samples
                .iter()
                .find(|sample| sample.calls_done >= mark)
                .or_else(|| samples.last().filter(|_| tenth == 10))
                .copied()
        })
        .collect()
}

fn percent(start: f64, end: f64) -> f64 {
    (end - start) / start.max(1e-9) * 100.0
}

impl Soak {
    /// The Markdown section, starting with [`HEADING`].
    pub(crate) fn render(&self, command: &str) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "{HEADING}\n");
        let _ = writeln!(
            md,
            "Produced by `{command}` on {} (machine as above; load average at the end: {}). \
             Not part of CI.\n",
            crate::machine::date(),
            crate::machine::load_average(),
        );
        let overrides = crate::targets::overrides_markdown(self.overrides);
        let _ = writeln!(
            md,
            "One release gateway (`licensing-gateway serve`, sandbox configuration, read cache \
             on) with {overrides}, so that the sign-in throttle and the upstream budget answer \
             only the hostile calls they exist for. {} calls planned (stopping after {:?} at \
             the latest), {CONCURRENCY} concurrent callers on {CONNECTIONS} HTTP/2 connections, \
             the kinds drawn from a seeded generator. The gateway's VmRSS and `/proc/<pid>/fd` \
             count were read every {:?}; growth is measured from the end of the warm-up \
             (the first {:.0} % of the calls) to the end of the load, each end the mean of a \
             twentieth of the samples after warm-up (at least {MIN_SAMPLES_PER_END}).\n",
            self.plan.calls,
            self.plan.max_time,
            SAMPLE_EVERY,
            WARMUP_SHARE * 100.0,
        );
        if self.stopped_by_time {
            let _ = writeln!(
                md,
                "> **Stopped by the time bound** after {} of {} calls.\n",
                self.sent, self.plan.calls
            );
        }
        let _ = writeln!(md, "| kind | share | calls | answers (gRPC code × count) |");
        let _ = writeln!(md, "|---|--:|--:|---|");
        for (kind, share) in Kind::MIX {
            let codes = self.answers.get(&kind);
            let calls: usize = codes.map_or(0, |codes| codes.values().sum());
            let cell = codes.map_or_else(String::new, |codes| {
                codes
                    .iter()
                    .map(|(code, count)| format!("{code} {count}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            });
            let _ = writeln!(md, "| {} | {share} % | {calls} | {cell} |", kind.name());
        }
        let _ = writeln!(md);
        let warmup_calls = (self.plan.calls.min(self.sent) as f64 * WARMUP_SHARE) as usize;
        let growth = Growth::of(&self.samples, warmup_calls);
        let peak_rss = self.samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
        let peak_fds = self.samples.iter().map(|s| s.fds).max().unwrap_or(0);
        let _ = writeln!(md, "| metric | value |\n|---|--:|");
        let _ = writeln!(
            md,
            "| calls sent | {} in {:.1} s ({:.0} calls/s) |",
            self.sent,
            self.elapsed.as_secs_f64(),
            self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
        );
        let _ = writeln!(
            md,
            "| valid users' calls that failed | **{}**{} |",
            self.failures,
            self.first_failure
                .as_ref()
                .map(|first| format!(" (first: {})", first.replace('|', "\\|")))
                .unwrap_or_default()
        );
        let _ = writeln!(
            md,
            "| upstream requests (sandbox), connections opened | {}, {} |",
            self.upstream_requests, self.upstream_connections
        );
        let _ = writeln!(md, "| resource samples | {} |", self.samples.len());
        match growth {
            Some(growth) => {
                let _ = writeln!(
                    md,
                    "| RSS after warm-up → end of load | {:.1} MiB → {:.1} MiB (**{:+.1} %**) |",
                    growth.rss_start_kib / 1024.0,
                    growth.rss_end_kib / 1024.0,
                    growth.rss_percent()
                );
                let _ = writeln!(
                    md,
                    "| open descriptors after warm-up → end of load | {:.1} → {:.1} (**{:+.1} %**) |",
                    growth.fds_start,
                    growth.fds_end,
                    growth.fds_percent()
                );
            }
            None => {
                let _ = writeln!(md, "| growth | too few samples after warm-up |");
            }
        }
        let _ = writeln!(
            md,
            "| peak RSS, peak descriptors | {:.1} MiB, {peak_fds} |",
            peak_rss as f64 / 1024.0
        );
        let _ = writeln!(
            md,
            "| idle before the load (two sessions signed in) | {:.1} MiB, {} descriptors |",
            self.idle_before.rss_kib as f64 / 1024.0,
            self.idle_before.fds
        );
        let _ = writeln!(
            md,
            "| 5 s idle after the load (callers disconnected) | {:.1} MiB, {} descriptors |",
            self.idle_after.rss_kib as f64 / 1024.0,
            self.idle_after.fds
        );
        let _ = writeln!(md);
        let _ = writeln!(
            md,
            "| calls done | RSS (MiB) | descriptors |\n|--:|--:|--:|"
        );
        for sample in timeline(&self.samples, self.sent) {
            let _ = writeln!(
                md,
                "| {} | {:.1} | {} |",
                sample.calls_done,
                sample.rss_kib as f64 / 1024.0,
                sample.fds
            );
        }
        let _ = writeln!(md);
        if let Some(growth) = growth {
            let verdict = |percent: f64| if percent < 5.0 { "within" } else { "**over**" };
            let _ = writeln!(
                md,
                "Growth after warm-up: memory {} the 5 % goal, descriptors {} it.\n",
                verdict(growth.rss_percent()),
                verdict(growth.fds_percent()),
            );
        }
        md
    }
}

/// `existing` with the section starting at [`HEADING`] replaced by `section` (which
/// starts with it), or with `section` appended when there is none. The section runs to
/// the next level-2 heading.
pub(crate) fn splice_section(existing: &str, section: &str) -> String {
    splice_named(existing, HEADING, section)
}

/// The soak section of `existing`, if it has one.
#[cfg(test)]
pub(crate) fn existing_section(existing: &str) -> Option<&str> {
    existing_named(existing, HEADING)
}

/// [`splice_section`] for the section under `heading`.
pub(crate) fn splice_named(existing: &str, heading: &str, section: &str) -> String {
    let Some((start, end)) = section_span(existing, heading) else {
        let mut text = existing.trim_end().to_owned();
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        text.push_str(section);
        return text;
    };
    format!("{}{}{}", &existing[..start], section, &existing[end..])
}

/// [`existing_section`] for the section under `heading`.
pub(crate) fn existing_named<'a>(existing: &'a str, heading: &str) -> Option<&'a str> {
    section_span(existing, heading).map(|(start, end)| &existing[start..end])
}

/// Where the section under `heading` starts and ends (at the next level-2 heading).
fn section_span(existing: &str, heading: &str) -> Option<(usize, usize)> {
    let start = existing.find(heading)?;
    let after = start + heading.len();
    let end = existing[after..]
        .find("\n## ")
        .map_or(existing.len(), |offset| after + offset + 1);
    Some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_adds_up_to_all_calls_and_every_kind_is_drawn() {
        assert_eq!(Kind::MIX.iter().map(|(_, share)| share).sum::<u64>(), 100);
        let mut seen = std::collections::BTreeSet::new();
        for roll in 0..100 {
            seen.insert(Kind::pick(roll));
        }
        assert_eq!(seen.len(), Kind::MIX.len());
    }

    #[test]
    fn a_named_section_is_replaced_without_touching_the_others() {
        let other = "## Page views within Cryptlex's limit";
        let before = format!("# B\n\n## 1. a\n\none\n\n{other}\n\nold\n\n{HEADING}\n\nsoak\n");
        let replaced = splice_named(&before, other, &format!("{other}\n\nnew\n\n"));
        assert_eq!(
            replaced,
            format!("# B\n\n## 1. a\n\none\n\n{other}\n\nnew\n\n{HEADING}\n\nsoak\n")
        );
        assert_eq!(
            existing_named(&replaced, other),
            Some(format!("{other}\n\nnew\n\n").as_str())
        );
        assert_eq!(
            existing_section(&replaced),
            Some(format!("{HEADING}\n\nsoak\n").as_str())
        );
    }

    #[test]
    fn the_soak_section_is_replaced_in_place_or_appended() {
        let section = format!("{HEADING}\n\nnew\n");
        let before =
            format!("# Benchmarks\n\n## 1. a\n\none\n\n{HEADING}\n\nold\n\n## 5. b\n\nfive\n");
        let replaced = splice_section(&before, &section);
        assert_eq!(
            replaced,
            format!("# Benchmarks\n\n## 1. a\n\none\n\n{HEADING}\n\nnew\n## 5. b\n\nfive\n")
        );
        let appended = splice_section("# Benchmarks\n\n## 1. a\n", &section);
        assert_eq!(appended, format!("# Benchmarks\n\n## 1. a\n\n{section}"));
        assert_eq!(existing_section(&replaced), Some(section.as_str()));
        assert_eq!(existing_section("# Benchmarks\n"), None);
    }

    #[test]
    fn growth_is_measured_from_the_end_of_the_warm_up() {
        let samples: Vec<ResourceSample> = (0..30)
            .map(|i| ResourceSample {
                calls_done: i * 100,
                rss_kib: if i < 10 {
                    1_000
                } else {
                    20_000 + i as u64 * 10
                },
                fds: 20,
            })
            .collect();
        let growth = Growth::of(&samples, 1_000).expect("enough samples");
        assert_eq!(growth.rss_start_kib, 20_120.0);
        assert_eq!(growth.rss_end_kib, 20_270.0);
        assert_eq!(growth.fds_percent(), 0.0);
        assert!(Growth::of(&samples[..12], 1_000).is_none());
    }
}

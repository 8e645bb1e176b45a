//! The abuse suite: the real executable (`licensing-gateway sandbox`, with
//! Cryptlex's 50-per-5-s limit on) under several hostile clients at once,
//! while a legitimate user signs in, reads their profile and licenses, and the
//! payment service issues licenses. Every legitimate call must succeed within
//! its deadline throughout, and the gateway must recover by itself afterwards.
//!
//! Bounded: the attacks run for a fixed time with bounded concurrency, all on
//! loopback, and stop by themselves.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cryptlex_sandbox::seed;
use licensing_gateway::grpc::pb::issuance_service_client::IssuanceServiceClient;
use licensing_gateway::grpc::pb::user_service_client::UserServiceClient;
use licensing_gateway::grpc::pb::{
    GetProfileRequest, ListMyLicensesRequest, LoginRequest, RefreshSessionRequest,
};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tonic::transport::Channel;

use crate::sandbox_process::SandboxProcess;
use crate::support::client::{install_crypto_provider, mtls_channel, with_token};
use crate::support::issuance::issue_for_demo;

/// How long the attacks last.
const ATTACK: Duration = Duration::from_secs(8);
/// The deadline of every legitimate call.
const DEADLINE: Duration = Duration::from_secs(5);

/// Where the legitimate user is, as the ingress in front of the gateway
/// reports it (`x-forwarded-for`, one trusted hop, as deployed).
const USER_ADDRESS: &str = "198.51.100.20";
/// Where the attackers are.
const ATTACKER_ADDRESS: &str = "203.0.113.66";

/// `request` as it arrives through the ingress from `address`.
fn via_ingress<T>(mut request: tonic::Request<T>, address: &str) -> tonic::Request<T> {
    request.metadata_mut().insert(
        "x-forwarded-for",
        address.parse().expect("an address is a valid header value"),
    );
    request
}

/// A JWT-shaped token with a future `exp` and a random signature: it passes
/// every local shape check, so only the gateway's other defences stop it.
fn forged_token() -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(
        serde_json::json!({
            "sub": uuid::Uuid::new_v4().to_string(),
            "exp": chrono::Utc::now().timestamp() + 3600,
        })
        .to_string(),
    );
    let signature = URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes());
    format!("{header}.{claims}.{signature}")
}

/// A TCP connection from 127.0.0.2, another host as far as the gateway's
/// per-address limits can tell (the legitimate clients use 127.0.0.1).
async fn connect_from_attacker(to: std::net::SocketAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind("127.0.0.2:0".parse().expect("addr"))?;
    socket.connect(to).await
}

/// Runs `attack` in `copies` tasks until `stop` is set.
fn spawn_attack<F, Fut>(
    copies: usize,
    stop: &Arc<AtomicBool>,
    attack: F,
) -> Vec<tokio::task::JoinHandle<()>>
where
    F: Fn() -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    (0..copies)
        .map(|_| {
            let stop = Arc::clone(stop);
            let attack = attack.clone();
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    attack().await;
                }
            })
        })
        .collect()
}

async fn public_channel(gateway: &SandboxProcess) -> Channel {
    Channel::from_shared(gateway.public_url())
        .expect("uri")
        .connect()
        .await
        .expect("connect to the public listener")
}

async fn payment_channel(gateway: &SandboxProcess) -> Channel {
    let read = |name: &str| std::fs::read_to_string(gateway.dir().join(name)).expect(name);
    let (ca, cert, key) = (
        read("ca.pem"),
        read("payment-service.pem"),
        read("payment-service.key"),
    );
    mtls_channel(gateway.internal.port(), &ca, Some((&cert, &key)))
        .await
        .expect("mTLS connect")
}

/// What the legitimate user and the payment service saw.
#[derive(Debug, Default)]
struct Served {
    calls: usize,
    failures: Vec<String>,
}

/// The legitimate side: a user who reads their profile and licenses four
/// times a second (and signs in again every 5 s, a new session whose first
/// reads go to Cryptlex) and a payment service issuing a license every 2 s.
async fn legitimate_traffic(gateway: &SandboxProcess, until: Instant) -> Served {
    let mut user = UserServiceClient::new(public_channel(gateway).await);
    let mut payments = IssuanceServiceClient::new(payment_channel(gateway).await);
    let mut served = Served::default();
    let mut token = None;
    let mut order = 0;
    let mut round = 0;
    while Instant::now() < until {
        round += 1;
        if token.is_none() || round % 20 == 0 {
            let mut login = via_ingress(
                tonic::Request::new(LoginRequest {
                    email: seed::DEMO_EMAIL.into(),
                    password: seed::DEMO_PASSWORD.into(),
                    ..Default::default()
                }),
                USER_ADDRESS,
            );
            login.set_timeout(DEADLINE);
            served.calls += 1;
            match user.login(login).await {
                Ok(answer) => {
                    let session = answer.into_inner().session.expect("a session");
                    token = Some(session.access_token);
                }
                Err(status) => served.failures.push(format!("Login: {status:?}")),
            }
        }
        if let Some(token) = &token {
            let mut profile = via_ingress(with_token(GetProfileRequest {}, token), USER_ADDRESS);
            profile.set_timeout(DEADLINE);
            served.calls += 1;
            if let Err(status) = user.get_profile(profile).await {
                served.failures.push(format!("GetProfile: {status:?}"));
            }
            let mut licenses = via_ingress(
                with_token(ListMyLicensesRequest::default(), token),
                USER_ADDRESS,
            );
            licenses.set_timeout(DEADLINE);
            served.calls += 1;
            if let Err(status) = user.list_my_licenses(licenses).await {
                served.failures.push(format!("ListMyLicenses: {status:?}"));
            }
        }
        if round % 8 == 0 {
            order += 1;
            let mut issue = tonic::Request::new(issue_for_demo(&format!("abuse-order-{order}")));
            issue.set_timeout(DEADLINE);
            served.calls += 1;
            if let Err(status) = payments.issue_license(issue).await {
                served.failures.push(format!("IssueLicense: {status:?}"));
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    served
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legitimate_users_and_the_payment_service_are_served_throughout_an_attack_and_after() {
    install_crypto_provider();
    // Behind an ingress that reports the caller's address, as deployed.
    let gateway = SandboxProcess::start(&[(
        "LICENSING_GATEWAY__LIMITS__CLIENT_ADDRESS_HEADER",
        "x-forwarded-for",
    )])
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let junk_answers = Arc::new(AtomicUsize::new(0));
    let public = public_channel(&gateway).await;

    // The attacks, all at once:
    let mut attacks = Vec::new();
    // 1. Forged, well-shaped bearer tokens, each a new one.
    let channel = public.clone();
    let answers = Arc::clone(&junk_answers);
    attacks.extend(spawn_attack(4, &stop, move || {
        let mut client = UserServiceClient::new(channel.clone());
        let answers = Arc::clone(&answers);
        async move {
            let forged = with_token(GetProfileRequest {}, &forged_token());
            let _ = client
                .get_profile(via_ingress(forged, ATTACKER_ADDRESS))
                .await;
            answers.fetch_add(1, Ordering::Relaxed);
        }
    }));
    // 2. Junk refresh tokens.
    let channel = public.clone();
    attacks.extend(spawn_attack(2, &stop, move || {
        let mut client = UserServiceClient::new(channel.clone());
        async move {
            let junk = tonic::Request::new(RefreshSessionRequest {
                refresh_token: uuid::Uuid::new_v4().simple().to_string().repeat(2),
            });
            let _ = client
                .refresh_session(via_ingress(junk, ATTACKER_ADDRESS))
                .await;
        }
    }));
    // 3. Password guessing against another account.
    let channel = public.clone();
    attacks.extend(spawn_attack(2, &stop, move || {
        let mut client = UserServiceClient::new(channel.clone());
        async move {
            let guess = tonic::Request::new(LoginRequest {
                email: seed::OTHER_EMAIL.into(),
                password: format!("guess-{}", uuid::Uuid::new_v4()),
                ..Default::default()
            });
            let _ = client.login(via_ingress(guess, ATTACKER_ADDRESS)).await;
        }
    }));
    // 4. Unfinished HTTP/1.1 gRPC-Web bodies and idle sockets on the TLS port,
    //    each held open for the whole attack.
    let public_addr = gateway.public;
    let internal_addr = gateway.internal;
    let mut held = Vec::new();
    for _ in 0..64 {
        if let Ok(mut socket) = connect_from_attacker(public_addr).await {
            let head = "POST /licensing.v1.UserService/GetProfile HTTP/1.1\r\nhost: x\r\n\
                        content-type: application/grpc-web+proto\r\ncontent-length: 1000\r\n\r\n\0";
            let _ = socket.write_all(head.as_bytes()).await;
            held.push(socket);
        }
        if let Ok(socket) = connect_from_attacker(internal_addr).await {
            held.push(socket);
        }
    }

    // The legitimate side, during the attacks.
    let during = legitimate_traffic(&gateway, Instant::now() + ATTACK).await;
    stop.store(true, Ordering::Relaxed);
    for attack in attacks {
        let _ = tokio::time::timeout(Duration::from_secs(10), attack).await;
    }
    drop(held);

    // And after: the gateway recovers by itself (no restart, no operator).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = legitimate_traffic(&gateway, Instant::now() + Duration::from_secs(3)).await;
    let output = gateway.stop();

    assert!(
        junk_answers.load(Ordering::Relaxed) > 50,
        "the attack really ran"
    );
    assert!(during.calls > 20, "{during:?}");
    assert!(
        during.failures.is_empty(),
        "legitimate calls failed during the attack: {:#?}\n{}",
        during.failures,
        tail(&output)
    );
    assert!(
        after.failures.is_empty(),
        "legitimate calls failed after the attack: {:#?}\n{}",
        after.failures,
        tail(&output)
    );
    assert!(
        !output.contains(" 429 ") && !output.contains("cryptlex answered 429"),
        "the gateway made Cryptlex answer 429:\n{}",
        tail(&output)
    );
}

/// The last lines of the gateway's output, for a failure message.
fn tail(output: &str) -> String {
    let lines: Vec<&str> = output.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

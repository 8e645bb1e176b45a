//! `licensing-gateway sandbox`: the gateway against a local stand-in for
//! Cryptlex, so the whole service works on a fresh machine without an
//! account.
//!
//! It starts the sandbox Cryptlex (a real HTTP server on loopback), writes a
//! development PKI and the sandbox's PAT into its directory, points the
//! gateway's settings at them, prints a banner with copy-paste commands and
//! serves. Only this command ever starts the sandbox.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use secrecy::{ExposeSecret as _, SecretString};

use crate::config::{RawAllowedClient, RawSettings, Settings};
use crate::domain::Operation;
use cryptlex_sandbox::pki::DevPki;
use cryptlex_sandbox::{RateLimit, SandboxCryptlex, SandboxOptions, seed};

/// Options of the `sandbox` subcommand.
#[derive(Debug, Clone)]
pub struct SandboxArgs {
    /// Where the PKI, the PAT file, the ledger and the effective
    /// configuration are kept.
    pub dir: PathBuf,
    /// Address of the sandbox Cryptlex.
    pub cryptlex_addr: SocketAddr,
    /// Switch the sandbox's rate limit (50 per 5 s) off, e.g. for benchmarks.
    pub no_rate_limit: bool,
    /// Have the sandbox deliver its webhooks to the gateway, with a secret
    /// made here (unless one is configured).
    pub webhooks: bool,
    /// Lifetime of the access tokens the sandbox issues.
    pub access_token_ttl: Duration,
}

/// A running sandbox Cryptlex and the gateway settings that use it.
#[derive(Debug)]
pub struct Sandbox {
    pub cryptlex: SandboxCryptlex,
    pub pki: DevPki,
    pub settings: Settings,
    pub config_file: PathBuf,
    /// The secret the sandbox signs its webhooks with, when this command
    /// made one (a configured `webhook.secret` or `secret_file` is left to
    /// whoever registers it).
    pub webhook_secret: Option<SecretString>,
}

/// Starts the sandbox Cryptlex and derives the gateway's settings from `raw`
/// (whose listener addresses and other choices are kept).
pub async fn prepare(args: &SandboxArgs, mut raw: RawSettings) -> anyhow::Result<Sandbox> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating the sandbox directory {}", args.dir.display()))?;
    let dir = args
        .dir
        .canonicalize()
        .with_context(|| format!("resolving {}", args.dir.display()))?;
    let pki = DevPki::generate(&dir).context("generating the development PKI")?;

    let options = SandboxOptions {
        rate_limit: (!args.no_rate_limit).then(RateLimit::cryptlex_default),
        access_token_ttl: args.access_token_ttl,
        ..SandboxOptions::default()
    };
    let cryptlex = SandboxCryptlex::start(args.cryptlex_addr, options)
        .await
        .with_context(|| {
            format!(
                "starting the sandbox Cryptlex on {} (change it with --cryptlex-addr)",
                args.cryptlex_addr
            )
        })?;

    // The PAT goes to a file, as a Kubernetes secret mount would provide it.
    let pat_file = dir.join("cryptlex-pat");
    write_private(&pat_file, cryptlex.admin_pat().expose_secret())?;

    raw.cryptlex.base_url = cryptlex.base_url();
    raw.cryptlex.account_id = None;
    raw.cryptlex.account_alias = Some(seed::ACCOUNT_ALIAS.to_owned());
    raw.cryptlex.pat = None;
    raw.cryptlex.pat_file = Some(pat_file);
    raw.issuance.default_product_id = Some(seed::PRODUCT_ID.to_owned());
    // A webhook secret of our own, so the sandbox's webhooks keep the
    // gateway's caches coherent out of the box, as Cryptlex's would.
    let webhook_secret =
        if args.webhooks && raw.webhook.secret.is_none() && raw.webhook.secret_file.is_none() {
            let secret = random_secret();
            let secret_file = dir.join("webhook-secret");
            write_private(&secret_file, secret.expose_secret())?;
            raw.webhook.secret_file = Some(secret_file);
            Some(secret)
        } else {
            None
        };
    if !raw.ledger.url.starts_with("postgres") {
        // The stand-in Cryptlex starts empty on every run, so its ledger does
        // too: a ledger kept from an earlier run would replay licenses that
        // no longer exist.
        let ledger = dir.join("ledger.db");
        for suffix in ["", "-wal", "-shm"] {
            let file = PathBuf::from(format!("{}{suffix}", ledger.display()));
            match std::fs::remove_file(&file) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    return Err(error).with_context(|| {
                        format!("resetting the sandbox ledger {}", file.display())
                    });
                }
            }
        }
        raw.ledger.url = format!("sqlite://{}", ledger.display());
    }
    let files = pki.files();
    raw.internal.enabled = true;
    raw.internal.tls_cert_file = Some(files.server_cert.clone());
    raw.internal.tls_key_file = Some(files.server_key.clone());
    raw.internal.client_ca_file = Some(files.ca_cert.clone());
    if raw.internal.allowed_clients.is_empty() {
        raw.internal.allowed_clients = vec![
            RawAllowedClient {
                identity: DevPki::PAYMENT_SERVICE_ID.to_owned(),
                products: vec![seed::PRODUCT_ID.to_owned()],
                // Every IssuanceService operation: the payment lifecycle end to end.
                operations: Some(
                    Operation::ISSUANCE_SERVICE
                        .iter()
                        .map(|operation| operation.as_str().to_owned())
                        .collect(),
                ),
            },
            // The website's mailer may mint reset tokens and do nothing else.
            RawAllowedClient {
                identity: DevPki::WEBSITE_MAILER_ID.to_owned(),
                products: Vec::new(),
                operations: Some(vec![
                    Operation::CreatePasswordResetToken.as_str().to_owned(),
                ]),
            },
        ];
    }
    if raw.public.cors_allowed_origins.is_empty() {
        // The Next.js development server.
        raw.public.cors_allowed_origins = vec!["http://localhost:3000".to_owned()];
    }
    let settings = raw.validate()?;
    let config_file = dir.join("gateway.toml");
    std::fs::write(&config_file, effective_config(&raw))
        .with_context(|| format!("writing {}", config_file.display()))?;
    Ok(Sandbox {
        cryptlex,
        pki,
        settings,
        config_file,
        webhook_secret,
    })
}

/// Has the sandbox Cryptlex send its webhooks to the gateway's public
/// listener at `public`, as one registers the endpoint in Cryptlex's
/// dashboard. Does nothing when the secret was configured elsewhere.
pub fn register_webhook(sandbox: &Sandbox, public: SocketAddr, public_tls: bool) {
    let Some(secret) = &sandbox.webhook_secret else {
        return;
    };
    if public_tls {
        // The sandbox delivers over plain HTTP only.
        tracing::warn!(
            "the public listener uses TLS: the sandbox cannot deliver webhooks to it, so changes made through its controls show after cache.max_age"
        );
        return;
    }
    let url = format!("http://{public}{}", sandbox.settings.webhook.path);
    sandbox
        .cryptlex
        .controls()
        .add_webhook(&url, secret.expose_secret(), &[]);
}

/// 32 random bytes, base64url: a webhook secret.
fn random_secret() -> SecretString {
    use base64::Engine as _;
    let bytes: [u8; 32] = rand::random();
    SecretString::from(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Writes `contents` to `path` readable by the owner only.
fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The sandbox's settings as a TOML file, so operator commands
/// (`ledger`, `check-config`) can be pointed at the running sandbox. It
/// references the PAT file; it never contains a secret.
fn effective_config(raw: &RawSettings) -> String {
    let quote = |value: &str| toml_string(value);
    let path = |value: &Option<PathBuf>| {
        value
            .as_ref()
            .map(|path| quote(&path.display().to_string()))
            .unwrap_or_else(|| quote(""))
    };
    let mut text = String::from(
        "# Written by `licensing-gateway sandbox` on each start; edits are overwritten.\n",
    );
    let _ = writeln!(text, "[public]\naddr = {}", quote(&raw.public.addr));
    let origins: Vec<String> = raw
        .public
        .cors_allowed_origins
        .iter()
        .map(|origin| quote(origin))
        .collect();
    let _ = writeln!(text, "cors_allowed_origins = [{}]\n", origins.join(", "));
    let _ = writeln!(
        text,
        "[internal]\naddr = {}\ntls_cert_file = {}\ntls_key_file = {}\nclient_ca_file = {}\n",
        quote(&raw.internal.addr),
        path(&raw.internal.tls_cert_file),
        path(&raw.internal.tls_key_file),
        path(&raw.internal.client_ca_file),
    );
    for client in &raw.internal.allowed_clients {
        let products: Vec<String> = client.products.iter().map(|p| quote(p)).collect();
        let _ = writeln!(
            text,
            "[[internal.allowed_clients]]\nidentity = {}\nproducts = [{}]",
            quote(&client.identity),
            products.join(", ")
        );
        if let Some(operations) = &client.operations {
            let operations: Vec<String> = operations.iter().map(|op| quote(op)).collect();
            let _ = writeln!(text, "operations = [{}]", operations.join(", "));
        }
        text.push('\n');
    }
    let _ = writeln!(
        text,
        "[cryptlex]\nbase_url = {}\naccount_alias = {}\npat_file = {}\n",
        quote(&raw.cryptlex.base_url),
        quote(raw.cryptlex.account_alias.as_deref().unwrap_or_default()),
        path(&raw.cryptlex.pat_file),
    );
    let _ = writeln!(
        text,
        "[issuance]\ndefault_product_id = {}\n\n[ledger]\nurl = {}",
        quote(
            raw.issuance
                .default_product_id
                .as_deref()
                .unwrap_or_default()
        ),
        quote(&crate::config::redact_url_password(&raw.ledger.url)),
    );
    if let Some(secret_file) = &raw.webhook.secret_file {
        let _ = writeln!(
            text,
            "\n[webhook]\nsecret_file = {}",
            quote(&secret_file.display().to_string())
        );
    }
    text
}

fn toml_string(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(quoted, "\\u{:04X}", c as u32);
            }
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// The banner printed when the sandbox is up.
pub fn banner(
    sandbox: &Sandbox,
    public: SocketAddr,
    internal: Option<SocketAddr>,
    admin: Option<SocketAddr>,
) -> String {
    let files = sandbox.pki.files();
    let mut text = String::new();
    let _ = writeln!(text, "\nlicensing-gateway sandbox is running");
    let _ = writeln!(text, "  public (gRPC + gRPC-Web) : http://{public}");
    if let Some(admin) = admin {
        let _ = writeln!(
            text,
            "  metrics and probes       : http://{admin}/metrics /healthz /readyz"
        );
    }
    if let Some(internal) = internal {
        let _ = writeln!(
            text,
            "  internal (mutual TLS)    : https://localhost:{}",
            internal.port()
        );
    }
    let _ = writeln!(
        text,
        "  sandbox Cryptlex         : {}",
        sandbox.cryptlex.base_url()
    );
    if sandbox.webhook_secret.is_some() {
        let _ = writeln!(
            text,
            "  webhooks (sandbox → us)  : http://{public}{}",
            sandbox.settings.webhook.path
        );
    }
    let _ = writeln!(
        text,
        "  effective configuration  : {}",
        sandbox.config_file.display()
    );
    let _ = writeln!(
        text,
        "  demo users               : {} / {}   {} / {}",
        seed::DEMO_EMAIL,
        seed::DEMO_PASSWORD,
        seed::OTHER_EMAIL,
        seed::OTHER_PASSWORD
    );
    let _ = writeln!(text, "  account alias            : {}", seed::ACCOUNT_ALIAS);
    let url = format!("http://{public}");
    let _ = writeln!(
        text,
        "\nTry it (buf: `scripts/install-test-clients` and `export PATH=\"$PWD/.tools/npm/node_modules/.bin:$PATH\"` at the repository root; jq from your system; README.md \"Calling it\" walks through every call):"
    );
    let _ = writeln!(
        text,
        "  buf curl --protocol grpc --list-methods {url}\n  \
         buf curl --protocol grpc -d '{{\"service\":\"licensing.v1.UserService\"}}' {url}/grpc.health.v1.Health/Check\n  \
         TOKEN=$(buf curl --protocol grpc -d '{{\"email\":\"{email}\",\"password\":\"{password}\"}}' {url}/licensing.v1.UserService/Login | jq -r .session.accessToken)\n  \
         buf curl --protocol grpc -H \"authorization: Bearer $TOKEN\" {url}/licensing.v1.UserService/GetProfile\n  \
         buf curl --protocol grpcweb -H \"authorization: Bearer $TOKEN\" -d '{{\"pageSize\":1}}' {url}/licensing.v1.UserService/ListMyLicenses\n  \
         buf curl --protocol grpc -H \"authorization: Bearer $TOKEN\" {url}/licensing.v1.UserService/Logout",
        email = seed::DEMO_EMAIL,
        password = seed::DEMO_PASSWORD,
    );
    if let Some(internal) = internal {
        let _ = writeln!(
            text,
            "\nIssue a license over mutual TLS as the payment service:\n  \
             buf curl --protocol grpc --cacert {ca} --cert {cert} --key {key} \\\n    \
             -d '{{\"requestId\":\"payment-0001\",\"userEmail\":\"{email}\"}}' \\\n    \
             https://localhost:{port}/licensing.v1.IssuanceService/IssueLicense",
            ca = files.ca_cert.display(),
            cert = files.payment_service_cert.display(),
            key = files.payment_service_key.display(),
            email = seed::DEMO_EMAIL,
            port = internal.port(),
        );
        let _ = writeln!(
            text,
            "\nMint a password-reset token over mutual TLS as the website's mailer (it may do nothing else):\n  \
             buf curl --protocol grpc --cacert {ca} --cert {cert} --key {key} \\\n    \
             -d '{{\"email\":\"{email}\"}}' \\\n    \
             https://localhost:{port}/licensing.v1.AccountService/CreatePasswordResetToken",
            ca = files.ca_cert.display(),
            cert = files.website_mailer_cert.display(),
            key = files.website_mailer_key.display(),
            email = seed::DEMO_EMAIL,
            port = internal.port(),
        );
    }
    text
}

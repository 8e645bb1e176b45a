//! The gateway as a child process: building the binary, starting `licensing-gateway serve`
//! on free loopback ports and waiting until its health service answers SERVING, reading
//! its RSS (once, or sampled for the peak) and its cache metrics, and stopping it as
//! Kubernetes would.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use licensing_gateway::commands::sandbox::Sandbox;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::WORKSPACE_ROOT;
use crate::targets::Profile;

/// The gateways log at `warn`; the rate-limited run makes one warn of every read it sheds.
const MAX_GATEWAY_LINES: usize = 10;

/// Builds the gateway binary in this program's profile and returns its path.
pub(crate) fn build_gateway() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin_dir = exe.parent().context("loadgen has no directory")?;
    let release = !cfg!(debug_assertions);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    // `cargo run` hands this program its package's variables; build scripts
    // that watch them (ring watches CARGO_MANIFEST_DIR) would otherwise see a
    // change and rebuild half the tree on every run, and again for the next
    // plain `cargo build`.
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("CARGO_PKG_")
            || matches!(
                name,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_MANIFEST_LINKS"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_RUSTC_CURRENT_DIR"
                    | "OUT_DIR"
            )
        {
            command.env_remove(name);
        }
    }
    command
        .args([
            "build",
            "--quiet",
            "--bin",
            "licensing-gateway",
            "--manifest-path",
        ])
        .arg(Path::new(WORKSPACE_ROOT).join("Cargo.toml"));
    if release {
        command.arg("--release");
    }
    let status = command.status().context("running cargo build")?;
    if !status.success() {
        bail!("cargo build of licensing-gateway failed");
    }
    Ok(bin_dir.join("licensing-gateway"))
}

pub(crate) struct GatewayProcess {
    child: tokio::process::Child,
    pid: u32,
    pub(crate) public_addr: SocketAddr,
    /// The mutual-TLS listener of `IssuanceService`.
    pub(crate) internal_addr: SocketAddr,
    admin_addr: SocketAddr,
    /// From spawning the process to the first SERVING answer.
    pub(crate) startup: Duration,
}

impl GatewayProcess {
    /// Starts `licensing-gateway serve` with the sandbox's configuration and `profile`'s
    /// overrides, and waits for the first SERVING answer of the health service for
    /// `licensing.v1.UserService`.
    pub(crate) async fn start(
        bin: &Path,
        sandbox: &Sandbox,
        profile: Profile,
    ) -> anyhow::Result<Self> {
        Self::start_with(bin, sandbox, profile, &[]).await
    }

    /// [`start`](Self::start) with `extra` variables on top of the profile's (later
    /// ones win), e.g. a replica's PostgreSQL ledger.
    pub(crate) async fn start_with(
        bin: &Path,
        sandbox: &Sandbox,
        profile: Profile,
        extra: &[(String, String)],
    ) -> anyhow::Result<Self> {
        Self::start_under(bin, sandbox, profile, extra, &[], Duration::from_secs(30)).await
    }

    /// [`start_with`](Self::start_with), the gateway's command line behind `wrapper`'s
    /// (such as `valgrind --tool=callgrind`), SERVING within `deadline`. The process
    /// id is then the wrapper's, which valgrind shares with the program it runs.
    pub(crate) async fn start_under(
        bin: &Path,
        sandbox: &Sandbox,
        profile: Profile,
        extra: &[(String, String)],
        wrapper: &[OsString],
        deadline: Duration,
    ) -> anyhow::Result<Self> {
        // Free ports picked now, so the health check can start polling at once.
        let public_addr = free_local_addr()?;
        let internal_addr = free_local_addr()?;
        let admin_addr = free_local_addr()?;
        let started = Instant::now();
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = tokio::process::Command::new(program);
                command.args(args).arg(bin);
                command
            }
            None => tokio::process::Command::new(bin),
        };
        command
            .arg("--config")
            .arg(&sandbox.config_file)
            .args(["--public-addr", &public_addr.to_string()])
            .args(["--internal-addr", &internal_addr.to_string(), "serve"])
            .env("LICENSING_GATEWAY__LOG__LEVEL", "warn")
            .env("LICENSING_GATEWAY__ADMIN__ADDR", admin_addr.to_string())
            .envs(profile.overrides().iter().copied())
            .envs(extra.iter().map(|(key, value)| (key, value)))
            .env_remove("RUST_LOG");
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id().context("the gateway exited at once")?;
        // Drain its output so it never blocks on a full pipe; show warnings.
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ]
        .into_iter()
        .flatten()
        {
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                let mut shown = 0;
                while let Ok(Some(line)) = lines.next_line().await {
                    shown += 1;
                    if shown <= MAX_GATEWAY_LINES {
                        eprintln!("  gateway | {line}");
                    } else if shown == MAX_GATEWAY_LINES + 1 {
                        eprintln!("  gateway | (further output suppressed)");
                    }
                }
            });
        }

        let until = Instant::now() + deadline;
        loop {
            if let Some(status) = child.try_wait()? {
                bail!("the gateway exited during start-up: {status}");
            }
            if Instant::now() > until {
                bail!("the gateway was not SERVING within {deadline:?}");
            }
            if serving(public_addr).await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(GatewayProcess {
            child,
            pid,
            public_addr,
            internal_addr,
            admin_addr,
            startup: started.elapsed(),
        })
    }

    /// The child's process id, for reading its resources in /proc.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// `licensing_gateway_cache_requests_total` summed over both caches, by `result`.
    pub(crate) async fn cache_results(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        Ok(cache_results(&self.metrics().await?))
    }

    /// The admin listener's `/metrics` in Prometheus text, within 5 s.
    pub(crate) async fn metrics(&self) -> anyhow::Result<String> {
        let text = reqwest::Client::new()
            .get(format!("http://{}/metrics", self.admin_addr))
            .timeout(Duration::from_secs(5))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(text)
    }

    /// Waits `quiet`, then reads the resident set size in KiB: the idle RSS when
    /// nothing calls the gateway meanwhile.
    pub(crate) async fn quiet_rss_kib(&self, quiet: Duration) -> anyhow::Result<u64> {
        tokio::time::sleep(quiet).await;
        rss_kib(self.pid)
    }

    /// Samples the RSS every 50 ms into `peak` until stopped.
    pub(crate) fn sample_rss(&self, peak: &Arc<AtomicU64>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let pid = self.pid;
        let handle = tokio::spawn({
            let stop = Arc::clone(&stop);
            let peak = Arc::clone(peak);
            async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(rss) = rss_kib(pid) {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
        Sampler { stop, handle }
    }

    pub(crate) async fn stop(mut self) {
        // SIGTERM for a graceful drain, as Kubernetes would.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// The task behind [`GatewayProcess::sample_rss`].
pub(crate) struct Sampler {
    stop: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<()>,
}

impl Sampler {
    pub(crate) async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.handle.await;
    }
}

/// Process `pid`'s resident anonymous memory and resident file pages (mostly the
/// binary's own code), in KiB.
pub(crate) fn rss_parts_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok((
        status_kib(&status, "RssAnon:")?,
        status_kib(&status, "RssFile:")?,
    ))
}

/// The resident set size of process `pid`, in KiB.
pub(crate) fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(
        &std::fs::read_to_string(format!("/proc/{pid}/status"))?,
        "VmRSS:",
    )
}

/// The figure of `/proc/<pid>/status` line `name` (such as `VmRSS:`), in KiB.
fn status_kib(status: &str, name: &str) -> anyhow::Result<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {name} in /proc/<pid>/status"))
}

/// The sum of the samples of counter `name` in Prometheus text whose labels satisfy
/// `keep` (given the text between the braces, empty when there are none).
pub(crate) fn sum_counter(metrics: &str, name: &str, keep: impl Fn(&str) -> bool) -> u64 {
    let mut sum = 0.0;
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (labels, value) = if let Some(rest) = rest.strip_prefix('{') {
            match rest.split_once("} ") {
                Some(split) => split,
                None => continue,
            }
        } else if let Some(value) = rest.strip_prefix(' ') {
            ("", value)
        } else {
            // Another metric whose name starts with this one.
            continue;
        };
        if let Ok(value) = value.trim().parse::<f64>()
            && keep(labels)
        {
            sum += value;
        }
    }
    sum as u64
}

/// Sums `licensing_gateway_cache_requests_total` in Prometheus text by its `result` label.
fn cache_results(metrics: &str) -> BTreeMap<String, u64> {
    let mut results = BTreeMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("licensing_gateway_cache_requests_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let result = labels
            .split(',')
            .find_map(|label| label.strip_prefix("result=\""))
            .map(|value| value.trim_end_matches('"'));
        if let (Some(result), Ok(value)) = (result, value.trim().parse::<f64>()) {
            *results.entry(result.to_owned()).or_default() += value as u64;
        }
    }
    results
}

fn free_local_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Whether the health service at `addr` answers SERVING for `licensing.v1.UserService`.
async fn serving(addr: SocketAddr) -> bool {
    let Ok(endpoint) = Channel::from_shared(format!("http://{addr}")) else {
        return false;
    };
    let Ok(channel) = endpoint.connect().await else {
        return false;
    };
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "licensing.v1.UserService".into(),
        })
        .await
        .map(|response| response.into_inner().status == ServingStatus::Serving as i32)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_results_sum_both_caches_by_result() {
        let text = "\
# TYPE licensing_gateway_cache_requests_total counter
licensing_gateway_cache_requests_total{cache=\"profile\",result=\"hit\"} 7
licensing_gateway_cache_requests_total{cache=\"licenses\",result=\"hit\"} 3
licensing_gateway_cache_requests_total{cache=\"profile\",result=\"miss\"} 2
licensing_gateway_cache_requests_total_other{result=\"hit\"} 100
licensing_gateway_rpc_requests_total{code=\"OK\"} 12
";
        let results = cache_results(text);
        assert_eq!(results.get("hit"), Some(&10));
        assert_eq!(results.get("miss"), Some(&2));
        assert_eq!(results.len(), 2);
    }

    #[test]
    fn sum_counter_filters_by_labels_and_skips_longer_names() {
        let text = "\
licensing_gateway_upstream_requests_total{endpoint=\"/v3/me\",status=\"200\",outcome=\"ok\"} 5
licensing_gateway_upstream_requests_total{endpoint=\"/v3/me\",status=\"429\",outcome=\"rate_limited\"} 2
licensing_gateway_upstream_requests_total{endpoint=\"/v3/me\",status=\"none\",outcome=\"budget_exhausted\"} 7
licensing_gateway_upstream_requests_total_other{status=\"200\"} 100
";
        let name = "licensing_gateway_upstream_requests_total";
        assert_eq!(sum_counter(text, name, |_| true), 14);
        assert_eq!(
            sum_counter(text, name, |labels| labels.contains("status=\"429\"")),
            2
        );
        assert_eq!(
            sum_counter("plain 3\n", "plain", |labels| labels.is_empty()),
            3
        );
    }
}

//! `--perf-top`: where a cached `GetProfile`'s time goes inside the gateway, as a
//! `perf record -e cpu-clock` profile (the software clock: hardware counters are not
//! available on these machines) of the gateway process while 8 callers read their
//! cached profile in a closed loop, reported as the top symbols by self time.
//!
//! Symbols need an unstripped binary: `cargo build --profile profiling` (the release
//! build with its symbol table) and `--gateway-bin target/profiling/licensing-gateway`.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use licensing_gateway::commands::sandbox::Sandbox;
use licensing_gateway::grpc::pb::GetProfileRequest;
use licensing_gateway::grpc::pb::user_service_client::UserServiceClient;

use crate::process::GatewayProcess;
use crate::targets::{Profile, connect, demo_sessions, with_token};

/// The section's heading in the report.
pub(crate) const HEADING: &str = "## Where a cached GetProfile's time goes (perf)";
/// Concurrent callers, on one HTTP/2 connection.
const CALLERS: usize = 8;
/// How long `perf` samples.
const SAMPLING: Duration = Duration::from_secs(8);
/// Symbols reported.
const TOP: usize = 25;

/// Profiles the gateway `gateway_bin` and returns the section.
pub(crate) async fn run(
    gateway_bin: &Path,
    sandbox: &Sandbox,
    dir: &Path,
) -> anyhow::Result<String> {
    let gateway = GatewayProcess::start(gateway_bin, sandbox, Profile::Cached).await?;
    let channel = connect(gateway.public_addr).await?;
    let client = UserServiceClient::new(channel);
    let tokens = demo_sessions(&client, CALLERS).await?;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut callers = tokio::task::JoinSet::new();
    for token in tokens.iter() {
        let token = token.clone();
        let mut client = client.clone();
        let stop = std::sync::Arc::clone(&stop);
        callers.spawn(async move {
            let mut calls = 0_u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                client
                    .get_profile(with_token(GetProfileRequest {}, &token))
                    .await?;
                calls += 1;
            }
            Ok::<_, tonic::Status>(calls)
        });
    }
    // Warm: every session's profile cached, the connection's buffers grown.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let data = dir.join("perf.data");
    let record = tokio::process::Command::new("perf")
        .args(["record", "-e", "cpu-clock", "-F", "2000", "-o"])
        .arg(&data)
        .args(["-p", &gateway.pid().to_string(), "--", "sleep"])
        .arg(SAMPLING.as_secs().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .context("running perf record (Debian: apt-get install linux-perf)")?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut calls = 0;
    while let Some(done) = callers.join_next().await {
        calls += done??;
    }
    gateway.stop().await;
    if !record.status.success() {
        bail!(
            "perf record failed: {}",
            String::from_utf8_lossy(&record.stderr).trim()
        );
    }
    let report = |sort: &str| -> anyhow::Result<Vec<String>> {
        let report = std::process::Command::new("perf")
            .args(["report", "--stdio", "--no-children", "--sort", sort])
            .args(["--percent-limit", "0.5", "-i"])
            .arg(&data)
            .stderr(Stdio::null())
            .output()
            .context("running perf report")?;
        if !report.status.success() {
            bail!("perf report --sort {sort} failed");
        }
        let rows = top_rows(&String::from_utf8_lossy(&report.stdout), TOP);
        if rows.is_empty() {
            bail!("perf report listed no samples");
        }
        Ok(rows)
    };
    let by_object = report("dso")?;
    let rows = report("dso,sym")?;
    let binary = gateway_bin
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or("licensing-gateway");
    let mut section = format!(
        "{HEADING}\n\n`perf record -e cpu-clock -F 2000` of the gateway process for {}s while {CALLERS} callers read their cached profile in a closed loop on one HTTP/2 connection ({calls} calls in all, the sampling included); self time by object, then the top {} symbols (those above 0.5%). Produced by `cargo build --profile profiling && cargo run --release -p loadgen -- --perf-top --gateway-bin target/profiling/{binary} --out BENCHMARKS.md` at commit `{}`.\n\n```text\n",
        SAMPLING.as_secs(),
        rows.len(),
        crate::machine::git_commit(),
    );
    section.push_str("by object:\n");
    for row in by_object {
        section.push_str(&row);
        section.push('\n');
    }
    section.push_str("\nby symbol:\n");
    for row in rows {
        section.push_str(&row);
        section.push('\n');
    }
    // A blank line before the next section's heading.
    section.push_str("```\n\n");
    Ok(section)
}

/// The first `top` sample lines of `perf report --stdio` (comments and blank lines
/// dropped), trimmed.
fn top_rows(report: &str, top: usize) -> Vec<String> {
    report
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter(|line| {
            line.split_whitespace()
                .next()
                .is_some_and(|first| first.ends_with('%'))
        })
        .take(top)
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            // perf pads a missing source line column with "-".
            let end = words.len() - words.iter().rev().take_while(|w| **w == "-").count();
            words[..end].join(" ")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_rows_keep_the_sample_lines_in_order() {
        let report = "# Samples: 16K of event 'cpu-clock'\n#\n# Overhead  Shared Object  Symbol\n#\n     9.12%  licensing-gateway  [.] sha2::sha256::compress\n     4.00%  libc.so.6          [.] __memmove_avx_unaligned_erms\n\n#\n# (footer)\n";
        assert_eq!(
            top_rows(report, 10),
            [
                "9.12% licensing-gateway [.] sha2::sha256::compress",
                "4.00% libc.so.6 [.] __memmove_avx_unaligned_erms"
            ]
        );
        assert_eq!(top_rows(report, 1).len(), 1);
    }
}

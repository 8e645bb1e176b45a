//! The Markdown report: the machine and the configuration first, then one section per
//! measurement, with the ratios and differences a reader would otherwise work out. Every
//! number comes from a [`Report`]; nothing here measures.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::load::{GatewayTally, Limited, READS_PER_PAGE, Runs};
use crate::plan::Plan;
use crate::targets::{Profile, Rpc, Target, overrides_markdown};
use crate::{Args, WORKSPACE_ROOT, machine};

/// What a run measured.
pub(crate) struct Report<'a> {
    pub(crate) args: &'a Args,
    pub(crate) load_average: String,
    pub(crate) plan: Plan,
    pub(crate) binary_size: u64,
    /// The gateway binary, shown relative to the repository when inside it.
    pub(crate) gateway_bin: &'a Path,
    /// Start-up of the hop-cost gateway and of the gateway on its defaults.
    pub(crate) startup: [Duration; 2],
    pub(crate) idle_rss: u64,
    /// The idle RSS's anonymous and file-backed KiB (`RssAnon`, `RssFile`).
    pub(crate) idle_rss_parts: (u64, u64),
    pub(crate) idle_rss_after: u64,
    /// `RssAnon` and `RssFile` of the same moment as `idle_rss_after`.
    pub(crate) idle_rss_after_parts: (u64, u64),
    /// The cached gateway's `RssAnon` and `RssFile` after its rows of section 1.
    pub(crate) cached_rss_after: (u64, u64),
    pub(crate) peak_rss: u64,
    pub(crate) closed: Vec<(Rpc, Target, Runs)>,
    pub(crate) open: Vec<(Target, Runs)>,
    /// The hop-cost gateway's calls in sections 1 and 2.
    pub(crate) tally: GatewayTally,
    pub(crate) limited: Limited,
}

impl Report<'_> {
    pub(crate) fn render(&self) -> String {
        let mut md = String::new();
        self.header(&mut md);
        self.closed_loop(&mut md);
        self.cached(&mut md);
        self.open_loop(&mut md);
        self.resources(&mut md);
        self.rate_limited(&mut md);
        self.first_errors(&mut md);
        md
    }

    /// The title, the machine, and how the two gateways are configured.
    fn header(&self, md: &mut String) {
        let mut command = String::from("cargo run --release -p loadgen --");
        if self.args.smoke {
            command.push_str(" --smoke");
        }
        if let Some(out) = &self.args.out {
            let _ = write!(command, " --out {}", out.display());
        }
        let _ = writeln!(md, "# Benchmarks\n");
        if self.args.smoke {
            let _ = writeln!(
                md,
                "> **Smoke run**: tiny counts that only show the pipeline works. The numbers mean nothing.\n"
            );
        }
        let _ = writeln!(md, "Produced by `{command}` on {}.\n", machine::date());
        let _ = writeln!(md, "| machine | |\n|---|---|");
        let _ = writeln!(md, "| CPU | {} |", machine::cpu_model());
        let _ = writeln!(md, "| cores (nproc) | {} |", machine::nproc());
        let _ = writeln!(md, "| memory | {} |", machine::memory());
        let _ = writeln!(md, "| OS | {} |", machine::os());
        let _ = writeln!(md, "| rustc | {} |", machine::rustc());
        let _ = writeln!(
            md,
            "| load average at start (1, 5, 15 min) | {} |",
            self.load_average
        );
        let _ = writeln!(md, "| gateway commit | {} |", machine::git_commit());
        let _ = writeln!(
            md,
            "| build | loadgen {} ; gateway `licensing-gateway serve` as child processes |",
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
        );
        let _ = writeln!(
            md,
            "\nEverything shares the machine's cores: this program (load client, the sandbox \
             Cryptlex, the bare tonic server) and the gateway process. Loopback only; \
             the sandbox answers from memory, so the `direct` rows are the floor that a real \
             Cryptlex (tens of ms away) would dwarf.\n"
        );
        let overrides = |profile: Profile| overrides_markdown(profile.overrides());
        let _ = writeln!(
            md,
            "Three gateways, all `licensing-gateway serve` with the configuration that \
             `licensing-gateway sandbox` writes:\n\n\
             - **hop cost** (sections 1 to 3): {}. Its read cache is off and its own upstream \
             budget lifted, so every call reaches the sandbox; each concurrent caller has its own \
             session, so no two calls in flight are identical and none are coalesced. \
             {} gateway calls made {} upstream requests.\n\
             - **cached** (the \"answered from its read cache\" rows of section 1): {}. Each \
             session's first call goes upstream; the rest are answered from memory.\n\
             - **defaults** (section 4): no overrides (3 s read cache, coalescing, 50 upstream \
             requests per 5 s with reserves for issuance and sign-in).\n",
            overrides(Profile::HopCost),
            self.tally.calls,
            self.tally.upstream,
            overrides(Profile::Cached),
        );
    }

    /// Section 1, with the ratios between the targets.
    fn closed_loop(&self, md: &mut String) {
        let plan = self.plan;
        let _ = writeln!(
            md,
            "## 1. Throughput and latency (closed loop, sandbox rate limit off)\n\n\
             {} calls per row after {} warm-up calls, {} concurrent callers; gRPC on one HTTP/2 \
             connection, direct HTTP on a keep-alive pool. {}Latencies in ms.\n",
            plan.calls,
            plan.warmup,
            plan.concurrency,
            rounds_note(plan.rounds)
        );
        let _ = writeln!(md, "{TABLE_HEAD}\n{TABLE_RULE}");
        for (rpc, target, sample) in &self.closed {
            let _ = writeln!(
                md,
                "| {} | {} | {} |",
                rpc.name(),
                target.name(),
                sample_cells(sample)
            );
        }
        let _ = writeln!(
            md,
            "\n### Cost per hop (ratios)\n\n\
             `gateway ÷ direct`: what putting the gateway in front of the upstream costs; \
             `gateway ÷ bare`: the gateway against a gRPC server that does no work.\n"
        );
        let _ = writeln!(
            md,
            "| RPC | throughput gateway ÷ direct | p50 gateway ÷ direct | p99 gateway ÷ direct | \
             throughput gateway ÷ bare | p50 gateway ÷ bare | added p50 vs direct (ms) |\n\
             |---|--:|--:|--:|--:|--:|--:|"
        );
        for rpc in [Rpc::GetProfile, Rpc::ListMyLicenses] {
            let find = |target: Target| {
                self.closed
                    .iter()
                    .find(|(r, t, _)| *r == rpc && *t == target)
                    .map(|(_, _, sample)| sample)
            };
            if let (Some(gateway), Some(direct), Some(bare)) = (
                find(Target::Gateway),
                find(Target::Direct),
                find(Target::Bare),
            ) {
                let _ = writeln!(
                    md,
                    "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:+.2} |",
                    rpc.name(),
                    gateway.rps() / direct.rps(),
                    gateway.percentile_ms(50.0) / direct.percentile_ms(50.0),
                    gateway.percentile_ms(99.0) / direct.percentile_ms(99.0),
                    gateway.rps() / bare.rps(),
                    gateway.percentile_ms(50.0) / bare.percentile_ms(50.0),
                    gateway.percentile_ms(50.0) - direct.percentile_ms(50.0),
                );
            }
        }
        let find = |target: Target| {
            self.closed
                .iter()
                .find(|(rpc, t, _)| *rpc == Rpc::GetProfile && *t == target)
                .map(|(_, _, runs)| runs)
        };
        if let (Some(grpc), Some(json)) = (find(Target::Gateway), find(Target::ConnectJson)) {
            let _ = writeln!(
                md,
                "\nThe cost of JSON: `GetProfile` over Connect JSON (HTTP/1.1, a keep-alive pool) \
                 against gRPC (one HTTP/2 connection), the same gateway and sessions: \
                 throughput {:.2}×, p50 {:+.2} ms, p99 {:+.2} ms.",
                json.rps() / grpc.rps(),
                json.percentile_ms(50.0) - grpc.percentile_ms(50.0),
                json.percentile_ms(99.0) - grpc.percentile_ms(99.0),
            );
        }
    }

    /// The cached rows against bare tonic.
    fn cached(&self, md: &mut String) {
        for rpc in [Rpc::GetProfile, Rpc::ListMyLicenses] {
            let find = |target: Target| {
                self.closed
                    .iter()
                    .find(|(r, t, _)| *r == rpc && *t == target)
                    .map(|(_, _, runs)| runs)
            };
            if let (Some(cached), Some(bare)) = (find(Target::Cached), find(Target::Bare)) {
                let _ = writeln!(
                    md,
                    "\nAnswered from the gateway's read cache, `{}` against bare tonic answering \
                     from memory: throughput {:.2}×, p50 {:+.2} ms, p99 {:+.2} ms.",
                    rpc.name(),
                    cached.rps() / bare.rps(),
                    cached.percentile_ms(50.0) - bare.percentile_ms(50.0),
                    cached.percentile_ms(99.0) - bare.percentile_ms(99.0),
                );
            }
        }
    }

    /// Section 2.
    fn open_loop(&self, md: &mut String) {
        let plan = self.plan;
        let _ = writeln!(
            md,
            "\n## 2. Added latency at a fixed rate (open loop)\n\n\
             `GetProfile` at {} calls/s for {:?}, each call started on schedule whatever the \
             earlier ones did; latency counts from the scheduled start. {}Latencies in ms.\n",
            plan.open_rate,
            plan.open_duration,
            rounds_note(plan.rounds)
        );
        let _ = writeln!(
            md,
            "{}\n{}",
            TABLE_HEAD
                .replacen("| RPC ", "", 1)
                .replacen("calls/s", "achieved calls/s", 1),
            TABLE_RULE.replacen("|---", "", 1)
        );
        for (target, sample) in &self.open {
            let _ = writeln!(md, "| {} | {} |", target.name(), sample_cells(sample));
        }
        let find_open = |target: Target| {
            self.open
                .iter()
                .find(|(t, _)| *t == target)
                .map(|(_, sample)| sample)
        };
        if let (Some(gateway), Some(direct)) =
            (find_open(Target::Gateway), find_open(Target::Direct))
        {
            let _ = writeln!(
                md,
                "\nAdded by the gateway at {} calls/s: p50 {:+.2} ms, p90 {:+.2} ms, p99 {:+.2} ms.",
                plan.open_rate,
                gateway.percentile_ms(50.0) - direct.percentile_ms(50.0),
                gateway.percentile_ms(90.0) - direct.percentile_ms(90.0),
                gateway.percentile_ms(99.0) - direct.percentile_ms(99.0),
            );
        }
    }

    /// Section 3.
    fn resources(&self, md: &mut String) {
        let per_10k = self.tally.connections as f64 * 10_000.0 / self.tally.calls.max(1) as f64;
        let _ = writeln!(md, "\n## 3. Resources\n\n| metric | value |\n|---|--:|");
        let _ = writeln!(
            md,
            "| upstream TCP connections opened per 10,000 gateway calls | {per_10k:.2} ({} over {} calls) |",
            self.tally.connections, self.tally.calls
        );
        let _ = writeln!(
            md,
            "| gateway RSS, idle after start-up | {} ({} anonymous, {} file-backed: pages of the binary's code and data) |",
            mib(self.idle_rss),
            mib(self.idle_rss_parts.0),
            mib(self.idle_rss_parts.1)
        );
        let _ = writeln!(
            md,
            "| gateway RSS, peak under closed-loop load | {} |",
            mib(self.peak_rss)
        );
        let _ = writeln!(
            md,
            "| gateway RSS, idle after the load ({} calls) | {} ({} anonymous, {} file-backed) |",
            self.tally.calls,
            mib(self.idle_rss_after),
            mib(self.idle_rss_after_parts.0),
            mib(self.idle_rss_after_parts.1)
        );
        let (anon, file) = self.cached_rss_after;
        let _ = writeln!(
            md,
            "| cached gateway RSS after its rows of section 1 | {} ({} anonymous, {} file-backed) |",
            mib(anon + file),
            mib(anon),
            mib(file)
        );
        let _ = writeln!(
            md,
            "| start-up: process spawn to first SERVING health answer (hop cost, defaults) | \
             {:.0} ms, {:.0} ms |",
            self.startup[0].as_secs_f64() * 1000.0,
            self.startup[1].as_secs_f64() * 1000.0
        );
        let _ = writeln!(
            md,
            "| gateway binary size (`{}`) | {:.1} MiB |",
            in_repository(self.gateway_bin),
            self.binary_size as f64 / (1024.0 * 1024.0)
        );
    }

    /// Section 4.
    fn rate_limited(&self, md: &mut String) {
        let plan = self.plan;
        let l = &self.limited;
        let errors = if l.errors.is_empty() {
            "none".to_owned()
        } else {
            l.errors
                .iter()
                .map(|(kind, count)| format!("{count}× {kind}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let cache = |result: &str| l.cache.get(result).copied().unwrap_or(0);
        let answered_by_cache = cache("hit") + cache("coalesced") + cache("stale");
        let ratio = |part: u64| part as f64 * 100.0 / l.offered.max(1) as f64;
        let _ = writeln!(
            md,
            "\n## 4. Under Cryptlex's rate limit (sandbox enforcing 50 requests per 5 s)\n\n\
             The gateway on its defaults. {} page views at {} per second for {:?} (open loop), \
             round-robin over {} signed-in users, so each user views a page every {:.1} s. \
             Each page view makes {READS_PER_PAGE} reads at once: `GetProfile` twice (layout \
             and page) and `ListMyLicenses` once. The offered load, {:.0} reads/s, is {:.1}× \
             what Cryptlex allows the whole service (10 requests/s).\n",
            l.page_views,
            plan.page_views_per_second,
            plan.limited_duration,
            l.users,
            l.users as f64 / f64::from(plan.page_views_per_second),
            l.offered as f64 / plan.limited_duration.as_secs_f64(),
            l.offered as f64 / plan.limited_duration.as_secs_f64() / 10.0,
        );
        let _ = writeln!(md, "| metric | value |\n|---|--:|");
        let _ = writeln!(md, "| reads offered to the gateway | {} |", l.offered);
        let _ = writeln!(md, "| answered OK | {} |", l.ok);
        let _ = writeln!(md, "| failed (gRPC code and ErrorInfo reason) | {errors} |");
        let _ = writeln!(
            md,
            "| answered from the read cache | {} ({:.1} %) |",
            cache("hit"),
            ratio(cache("hit"))
        );
        let _ = writeln!(
            md,
            "| answered by joining an identical call in flight (coalesced) | {} ({:.1} %) |",
            cache("coalesced"),
            ratio(cache("coalesced"))
        );
        let _ = writeln!(
            md,
            "| cache and coalescing hit ratio (reads answered without an upstream call) | {:.1} % |",
            ratio(answered_by_cache)
        );
        let _ = writeln!(
            md,
            "| cache misses (sent to Cryptlex, or refused when the budget was spent) | {} |",
            cache("miss")
        );
        let _ = writeln!(
            md,
            "| upstream calls made (requests the sandbox received) | {} |",
            l.upstream_requests
        );
        let _ = writeln!(
            md,
            "| upstream calls per offered read | {:.2} |",
            l.upstream_requests as f64 / l.offered.max(1) as f64
        );
        let _ = writeln!(
            md,
            "| most upstream calls in any 5 s (Cryptlex allows 50) | {} |",
            l.busiest_window
        );
        let _ = writeln!(md, "| 429s sent by the sandbox | **{}** |", l.responses_429);
        let _ = writeln!(md, "| upstream connections opened | {} |", l.connections);
        let _ = writeln!(md, "| wall time | {:.1} s |", l.elapsed.as_secs_f64());
        if l.responses_429 > 0 {
            let _ = writeln!(
                md,
                "\n**{} 429s reached the gateway.** The goal is zero: the gateway keeps its own \
                 budget below Cryptlex's limit, so a 429 means the budget and the limit disagree.",
                l.responses_429
            );
        } else if l.ok < l.offered {
            let _ = writeln!(
                md,
                "\nReads beyond what the cache, coalescing and the budget can serve are refused \
                 at once with `UNAVAILABLE` and a `RetryInfo` delay, instead of being sent to \
                 Cryptlex and answered 429 there; the budget keeps a share for `IssueLicense` \
                 and sign-in, which this run does not use."
            );
            let per_network: usize = l
                .errors
                .iter()
                .filter(|(kind, _)| kind.contains("TOO_MANY_REQUESTS"))
                .map(|(_, count)| count)
                .sum();
            if per_network > 0 {
                let _ = writeln!(
                    md,
                    "\nThe {per_network} `TOO_MANY_REQUESTS` refusals are the per-network \
                     allowance, not the budget: every caller here comes from one address, as \
                     every user does when the gateway sits behind a website backend that does \
                     not pass on its users' addresses, and one network may cause only so many \
                     upstream calls (`limits.upstream_calls_per_address`, 15 per 5 s by \
                     default). Behind such a backend, set `limits.client_address_header` \
                     (README, \"Behind proxies\"), as the scenarios further down do."
                );
            }
        }
    }

    /// The first error of each run of sections 1 and 2 that had any.
    fn first_errors(&self, md: &mut String) {
        let mut first_errors = Vec::new();
        for (rpc, target, sample) in &self.closed {
            if let Some(error) = sample.first_error() {
                first_errors.push(format!("{} via {}: {error}", rpc.name(), target.name()));
            }
        }
        for (target, sample) in &self.open {
            if let Some(error) = sample.first_error() {
                first_errors.push(format!("open loop via {}: {error}", target.name()));
            }
        }
        if !first_errors.is_empty() {
            let _ = writeln!(md, "\n### First error of each run that had errors\n");
            for error in first_errors {
                let _ = writeln!(md, "- {error}");
            }
        }
    }
}

/// The columns of the tables of sections 1 and 2 ([`sample_cells`]).
const TABLE_HEAD: &str =
    "| RPC | path | calls | errors | calls/s | calls/s range | p50 | p90 | p99 | p99 range |";
const TABLE_RULE: &str = "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|";

/// How sections 1 and 2 read their figures, when there were several rounds.
fn rounds_note(rounds: usize) -> String {
    if rounds <= 1 {
        return String::new();
    }
    format!(
        "Every row ran {rounds} times, interleaved (each round runs every row in turn); calls \
         and errors are summed, calls/s and the percentiles are the median round's, and the \
         ranges are the lowest and highest round's. "
    )
}

/// A row's cells in the tables of sections 1 and 2: calls, errors, calls/s and its
/// range, p50, p90, p99 and its range.
fn sample_cells(runs: &Runs) -> String {
    let (low, high) = runs.rps_range();
    let (p99_low, p99_high) = runs.percentile_range_ms(99.0);
    format!(
        "{} | {} | {:.0} | {:.0}-{:.0} | {:.2} | {:.2} | {:.2} | {:.2}-{:.2}",
        runs.sent(),
        runs.errors(),
        runs.rps(),
        low,
        high,
        runs.percentile_ms(50.0),
        runs.percentile_ms(90.0),
        runs.percentile_ms(99.0),
        p99_low,
        p99_high
    )
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// `path` relative to the repository when inside it.
fn in_repository(path: &Path) -> String {
    // `strip_prefix` compares components as written, and WORKSPACE_ROOT ends in `..`.
    let root = std::fs::canonicalize(WORKSPACE_ROOT).unwrap_or_else(|_| WORKSPACE_ROOT.into());
    path.strip_prefix(&root)
        .unwrap_or(path)
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_repository_is_relative_to_the_repository_root() {
        let root = std::fs::canonicalize(WORKSPACE_ROOT).expect("the repository root");
        assert_eq!(
            in_repository(&root.join("target/release/licensing-gateway")),
            "target/release/licensing-gateway"
        );
        assert_eq!(
            in_repository(Path::new("target/debug/licensing-gateway")),
            "target/debug/licensing-gateway"
        );
        assert_eq!(
            in_repository(Path::new("/elsewhere/licensing-gateway")),
            "/elsewhere/licensing-gateway"
        );
    }
}

//! The shapes of load: a closed loop (each caller starts its next call when the last
//! ends), an open loop at a fixed rate (calls start on schedule whatever the answers do),
//! and the rate-limited scenario of page views from many users. Each run yields a
//! [`Sample`]; the runs of sections 1 and 2 also add to a [`GatewayTally`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cryptlex_sandbox::{Controls, RateLimit, Stats};
use licensing_gateway::grpc::pb::GetProfileRequest;
use licensing_gateway::grpc::pb::user_service_client::UserServiceClient;
use tokio::task::JoinSet;
use tonic::transport::Channel;

use crate::plan::Plan;
use crate::process::GatewayProcess;
use crate::targets::{Caller, Rpc, Target, Targets, list_request, with_token};

/// The calls of one run: latencies of the successful ones, and the failures.
#[derive(Debug, Default)]
pub(crate) struct Sample {
    latencies: Vec<Duration>,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
}

impl Sample {
    pub(crate) fn sent(&self) -> usize {
        self.latencies.len() + usize::try_from(self.errors).unwrap_or(usize::MAX)
    }

    pub(crate) fn rps(&self) -> f64 {
        self.sent() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `p`-th percentile of successful calls, in milliseconds.
    pub(crate) fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
    }
}

/// One row's runs, one per interleaved round (every row runs once per round, in turn,
/// so a burst of other work on the machine falls on all rows alike rather than on
/// one): counts summed, and throughput and percentiles as the median of the rounds
/// with their range.
#[derive(Debug, Default)]
pub(crate) struct Runs(Vec<Sample>);

impl Runs {
    pub(crate) fn push(&mut self, sample: Sample) {
        self.0.push(sample);
    }

    pub(crate) fn sent(&self) -> usize {
        self.0.iter().map(Sample::sent).sum()
    }

    pub(crate) fn errors(&self) -> u64 {
        self.0.iter().map(|sample| sample.errors).sum()
    }

    pub(crate) fn first_error(&self) -> Option<&str> {
        self.0
            .iter()
            .find_map(|sample| sample.first_error.as_deref())
    }

    /// The median round's calls per second.
    pub(crate) fn rps(&self) -> f64 {
        median(self.0.iter().map(Sample::rps))
    }

    /// The lowest and highest round's calls per second.
    pub(crate) fn rps_range(&self) -> (f64, f64) {
        range(self.0.iter().map(Sample::rps))
    }

    /// The median of the rounds' `p`-th percentiles, in milliseconds.
    pub(crate) fn percentile_ms(&self, p: f64) -> f64 {
        median(self.0.iter().map(|sample| sample.percentile_ms(p)))
    }

    /// The lowest and highest round's `p`-th percentile, in milliseconds.
    pub(crate) fn percentile_range_ms(&self, p: f64) -> (f64, f64) {
        range(self.0.iter().map(|sample| sample.percentile_ms(p)))
    }
}

/// The median (the mean of the middle two of an even count); NaN when empty.
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::NAN, f64::NAN), |(low, high), value| {
        (low.min(value), high.max(value))
    })
}

/// What the hop-cost gateway was sent in sections 1 and 2, and what it sent upstream
/// meanwhile.
#[derive(Debug, Default)]
pub(crate) struct GatewayTally {
    /// Calls made to the gateway, warm-up included.
    pub(crate) calls: usize,
    /// TCP connections the sandbox accepted.
    pub(crate) connections: u64,
    /// Requests the sandbox received.
    pub(crate) upstream: u64,
}

impl GatewayTally {
    fn add(&mut self, calls: usize, before: Stats, after: Stats) {
        self.calls += calls;
        self.connections += after.connections_accepted - before.connections_accepted;
        self.upstream += after.requests - before.requests;
    }
}

/// Section 1: each RPC in a closed loop on each target, the gateway last, the whole
/// sequence repeated `plan.rounds` times. Returns the runs and the gateway's peak RSS
/// in KiB, sampled while it was under load.
pub(crate) async fn closed_loops(
    plan: Plan,
    targets: &Targets,
    gateway: &GatewayProcess,
    controls: &Controls,
    tally: &mut GatewayTally,
) -> (Vec<(Rpc, Target, Runs)>, u64) {
    let mut rows: Vec<(Rpc, Target, Runs)> = Vec::new();
    for rpc in [Rpc::GetProfile, Rpc::ListMyLicenses] {
        let connect = (rpc == Rpc::GetProfile).then_some(Target::ConnectJson);
        for target in [Target::Bare, Target::Direct, Target::Gateway]
            .into_iter()
            .chain(connect)
            .chain([Target::Cached])
        {
            rows.push((rpc, target, Runs::default()));
        }
    }
    let rss_peak = Arc::new(AtomicU64::new(0));
    for round in 1..=plan.rounds {
        for (rpc, target, runs) in &mut rows {
            let (rpc, target) = (*rpc, *target);
            eprintln!(
                "closed loop, round {round}/{}: {} via {}",
                plan.rounds,
                rpc.name(),
                target.name()
            );
            let call = targets.caller(rpc, target);
            let before = controls.stats();
            closed_loop(plan.warmup, plan.concurrency, call.clone()).await;
            let sampler = (target == Target::Gateway).then(|| gateway.sample_rss(&rss_peak));
            let sample = closed_loop(plan.calls, plan.concurrency, call).await;
            if let Some(sampler) = sampler {
                sampler.stop().await;
            }
            if matches!(target, Target::Gateway | Target::ConnectJson) {
                tally.add(plan.warmup + plan.calls, before, controls.stats());
            }
            runs.push(sample);
        }
    }
    (rows, rss_peak.load(Ordering::Relaxed))
}

/// Section 2: `GetProfile` in an open loop at the plan's rate on each target, the
/// gateway last, the sequence repeated `plan.rounds` times.
pub(crate) async fn open_loops(
    plan: Plan,
    targets: &Targets,
    controls: &Controls,
    tally: &mut GatewayTally,
) -> Vec<(Target, Runs)> {
    let mut rows: Vec<(Target, Runs)> = [
        Target::Bare,
        Target::Direct,
        Target::Gateway,
        Target::ConnectJson,
    ]
    .into_iter()
    .map(|target| (target, Runs::default()))
    .collect();
    for round in 1..=plan.rounds {
        for (target, runs) in &mut rows {
            let target = *target;
            eprintln!(
                "open loop, round {round}/{}: GetProfile via {} at {} rps",
                plan.rounds,
                target.name(),
                plan.open_rate
            );
            let before = controls.stats();
            let sample = open_loop(
                plan.open_rate,
                plan.open_duration,
                targets.caller(Rpc::GetProfile, target),
            )
            .await;
            if matches!(target, Target::Gateway | Target::ConnectJson) {
                tally.add(sample.sent(), before, controls.stats());
            }
            runs.push(sample);
        }
    }
    rows
}

/// `calls` calls from `concurrency` tasks, each starting its next call when the last ends.
async fn closed_loop(calls: usize, concurrency: usize, caller: Caller) -> Sample {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for worker in 0..concurrency {
        let next = Arc::clone(&next);
        let caller = caller.clone();
        tasks.spawn(async move {
            let mut sample = Sample::default();
            while next.fetch_add(1, Ordering::Relaxed) < calls {
                let start = Instant::now();
                match caller.call(worker).await {
                    Ok(()) => sample.latencies.push(start.elapsed()),
                    Err(error) => {
                        sample.errors += 1;
                        sample.first_error.get_or_insert(error);
                    }
                }
            }
            sample
        });
    }
    let mut total = merge(tasks).await;
    total.elapsed = started.elapsed();
    total
}

/// Calls at a fixed rate whatever the answers do; latency counts from the scheduled
/// start, so a stall shows up in the percentiles (no coordinated omission).
async fn open_loop(rate: u32, duration: Duration, caller: Caller) -> Sample {
    let total = (f64::from(rate) * duration.as_secs_f64()).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let started = tokio::time::Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..total {
        let scheduled = started + interval.mul_f64(i as f64);
        tokio::time::sleep_until(scheduled).await;
        let caller = caller.clone();
        tasks.spawn(async move {
            let mut sample = Sample::default();
            let session = usize::try_from(i).unwrap_or_default();
            match caller.call(session).await {
                Ok(()) => sample.latencies.push(scheduled.elapsed()),
                Err(error) => {
                    sample.errors = 1;
                    sample.first_error = Some(error);
                }
            }
            sample
        });
    }
    let mut sample = merge(tasks).await;
    sample.elapsed = started.elapsed();
    sample
}

/// The tasks' samples as one (without `elapsed`, which the caller knows).
async fn merge(mut tasks: JoinSet<Sample>) -> Sample {
    let mut total = Sample::default();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(sample) => {
                total.latencies.extend(sample.latencies);
                total.errors += sample.errors;
                if total.first_error.is_none() {
                    total.first_error = sample.first_error;
                }
            }
            Err(error) => {
                total.errors += 1;
                total.first_error.get_or_insert(error.to_string());
            }
        }
    }
    total
}

// === the rate-limited scenario ===

/// Reads per page view: the layout and the page each ask for the profile, and the
/// page asks for the licenses, all at once (as server components rendering in parallel do).
pub(crate) const READS_PER_PAGE: usize = 3;

/// What section 4 offered the gateway, what it answered, and what reached the sandbox.
#[derive(Debug, Default)]
pub(crate) struct Limited {
    pub(crate) users: usize,
    pub(crate) page_views: usize,
    pub(crate) offered: usize,
    pub(crate) ok: usize,
    pub(crate) errors: BTreeMap<String, usize>,
    pub(crate) upstream_requests: u64,
    /// The most upstream requests that arrived within any 5 s.
    pub(crate) busiest_window: usize,
    pub(crate) responses_429: u64,
    pub(crate) connections: u64,
    /// `licensing_gateway_cache_requests_total` by `result`, from the gateway's /metrics.
    pub(crate) cache: BTreeMap<String, u64>,
    pub(crate) elapsed: Duration,
}

/// Section 4: page views at the plan's rate, round-robin over `users`, with the sandbox
/// enforcing Cryptlex's rate limit for the duration.
pub(crate) async fn rate_limited(
    gateway: &UserServiceClient<Channel>,
    process: &GatewayProcess,
    controls: &Controls,
    users: &[String],
    plan: Plan,
) -> anyhow::Result<Limited> {
    // Switch Cryptlex's limit on (fresh windows) and count from here.
    controls.set_rate_limit(Some(RateLimit::cryptlex_default()));
    controls.clear_requests();
    let before = controls.stats();

    let page_views = (f64::from(plan.page_views_per_second) * plan.limited_duration.as_secs_f64())
        .round() as usize;
    let interval = Duration::from_secs_f64(1.0 / f64::from(plan.page_views_per_second));
    let started = tokio::time::Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..page_views {
        tokio::time::sleep_until(started + interval.mul_f64(i as f64)).await;
        let token = &users[i % users.len()];
        for read in 0..READS_PER_PAGE {
            let mut client = gateway.clone();
            let token = token.clone();
            tasks.spawn(async move {
                let result = if read < 2 {
                    client
                        .get_profile(with_token(GetProfileRequest {}, &token))
                        .await
                        .map(|_| ())
                } else {
                    client
                        .list_my_licenses(with_token(list_request(), &token))
                        .await
                        .map(|_| ())
                };
                result.map_err(|status| {
                    let reason = tonic_types::StatusExt::get_details_error_info(&status)
                        .map(|info| info.reason)
                        .unwrap_or_default();
                    let retry = tonic_types::StatusExt::get_details_retry_info(&status)
                        .map(|_| " +RetryInfo")
                        .unwrap_or_default();
                    format!("{:?} {reason}{retry}", status.code())
                })
            });
        }
    }
    let mut limited = Limited {
        users: users.len(),
        page_views,
        offered: page_views * READS_PER_PAGE,
        ..Limited::default()
    };
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(())) => limited.ok += 1,
            Ok(Err(error)) => *limited.errors.entry(error).or_default() += 1,
            Err(error) => *limited.errors.entry(error.to_string()).or_default() += 1,
        }
    }
    limited.elapsed = started.elapsed();
    let after = controls.stats();
    controls.set_rate_limit(None);
    limited.upstream_requests = after.requests - before.requests;
    limited.responses_429 = after.responses_429 - before.responses_429;
    limited.connections = after.connections_accepted - before.connections_accepted;
    limited.busiest_window = busiest_window(
        &controls
            .requests()
            .iter()
            .map(|request| request.received_at)
            .collect::<Vec<_>>(),
        chrono::Duration::seconds(5),
    );
    controls.clear_requests();
    limited.cache = process.cache_results().await?;
    Ok(limited)
}

/// The most instants that fall within any span of length `window`.
pub(crate) fn busiest_window(
    instants: &[chrono::DateTime<chrono::Utc>],
    window: chrono::Duration,
) -> usize {
    let mut sorted = instants.to_vec();
    sorted.sort_unstable();
    let mut start = 0;
    let mut most = 0;
    for end in 0..sorted.len() {
        while sorted[end] - sorted[start] >= window {
            start += 1;
        }
        most = most.max(end - start + 1);
    }
    most
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busiest_window_counts_the_densest_span() {
        let start = chrono::Utc::now();
        let at = |ms: i64| start + chrono::Duration::milliseconds(ms);
        // Spans are half-open: 6000 is not within 5 s of 1000, so the most are
        // 1000, 3000 and 5999 (or 3000, 5999 and 6000).
        let instants = [at(6000), at(0), at(1000), at(3000), at(5999)];
        assert_eq!(busiest_window(&instants, chrono::Duration::seconds(5)), 3);
        assert_eq!(
            busiest_window(&instants, chrono::Duration::milliseconds(5001)),
            4,
            "a span a millisecond longer also holds 6000"
        );
        assert_eq!(busiest_window(&[], chrono::Duration::seconds(5)), 0);
    }
}

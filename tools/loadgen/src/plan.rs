//! The counts of a run: how many calls each closed loop makes and from how many callers,
//! the rate and length of the open loop and of the rate-limited run. A full run takes
//! about a minute; a smoke run a few seconds, and its numbers mean nothing.

use std::time::Duration;

/// The counts of one run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    /// Sections 1 and 2 run this many times, interleaved; the report gives medians.
    pub(crate) rounds: usize,
    pub(crate) warmup: usize,
    pub(crate) calls: usize,
    pub(crate) concurrency: usize,
    pub(crate) open_rate: u32,
    pub(crate) open_duration: Duration,
    /// Page views per second in the rate-limited run; each makes
    /// [`READS_PER_PAGE`](crate::load::READS_PER_PAGE) reads.
    pub(crate) page_views_per_second: u32,
    pub(crate) limited_duration: Duration,
    pub(crate) limited_users: usize,
}

impl Plan {
    pub(crate) fn full() -> Self {
        Plan {
            rounds: 3,
            warmup: 1_000,
            calls: 20_000,
            concurrency: 32,
            open_rate: 1_000,
            open_duration: Duration::from_secs(5),
            page_views_per_second: 10,
            limited_duration: Duration::from_secs(15),
            limited_users: 20,
        }
    }

    pub(crate) fn smoke() -> Self {
        Plan {
            rounds: 1,
            warmup: 10,
            calls: 200,
            concurrency: 8,
            open_rate: 100,
            open_duration: Duration::from_secs(1),
            page_views_per_second: 10,
            limited_duration: Duration::from_secs(1),
            limited_users: 3,
        }
    }
}

//! What the backends did, per backend: counters and latency percentiles for
//! `inkling/stats`, and where the last answer came from for `inkling/status`.

use std::time::Duration;

/// How many recent samples the percentiles are computed over.
const WINDOW: usize = 500;

/// Recent durations, oldest overwritten first.
#[derive(Clone, Debug, Default)]
pub struct Samples {
    values: Vec<Duration>,
    next: usize,
}

impl Samples {
    /// Adds one.
    pub fn record(&mut self, value: Duration) {
        if self.values.len() < WINDOW {
            self.values.push(value);
        } else {
            self.values[self.next] = value;
        }
        self.next = (self.next + 1) % WINDOW;
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The `p` quantile (0..=1), nearest rank; zero without samples.
    pub fn quantile(&self, p: f64) -> Duration {
        let mut sorted = self.values.clone();
        sorted.sort_unstable();
        sorted
            .get(((sorted.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or_default()
    }
}

/// Where an answer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The in-process engine.
    Local,
    /// The remote engine.
    Remote,
}

impl Source {
    /// The name used in `inkling/stats` and `inkling/status`.
    pub fn name(self) -> &'static str {
        match self {
            Source::Local => "local",
            Source::Remote => "remote",
        }
    }
}

/// Counters of one backend.
#[derive(Clone, Debug, Default)]
pub struct BackendStats {
    /// Requests sent to it.
    pub requests: u64,
    /// Answers of it that were used.
    pub wins: u64,
    /// Requests that failed (connection, status, timeout, malformed stream, no first
    /// token before the local engine answered).
    pub failures: u64,
    /// Requests answered with no text (the other backend's answer is used).
    pub empty: u64,
    /// Time to first token of its requests (to the end, for answers with no text; at
    /// least the time it had, for a remote that lost the race before its first token).
    pub first_token: Samples,
    /// Time to the whole answer of its requests that answered, from its own start
    /// (a local leg started after the hedge delay counts from then).
    pub total: Samples,
}

/// What the hedging backend did.
#[derive(Clone, Debug, Default)]
pub struct HedgeStats {
    /// The in-process engine.
    pub local: BackendStats,
    /// The remote engine.
    pub remote: BackendStats,
    /// Requests the policy kept local (not counting the deny-list).
    pub kept_local: u64,
    /// Requests the deny-list kept local.
    pub denied: u64,
    /// Requests the open breaker kept local.
    pub skipped_by_breaker: u64,
    /// Times the local engine was started because the remote had no first token
    /// within the hedge delay.
    pub hedges: u64,
    /// Requests the local engine answered after the remote failed or answered
    /// nothing.
    pub fallbacks: u64,
    /// Where the last answer came from.
    pub last_source: Option<Source>,
}

//! What the backends did, per backend: counters and latency percentiles for
//! `inkling/stats`, and where the last answer came from for `inkling/status`.

use std::time::Duration;

use inkling_core::generate::Generation;

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
        nearest_rank(self.values.clone(), p)
    }

    /// The `p` quantile of the `n` most recent samples.
    pub fn recent_quantile(&self, p: f64, n: usize) -> Duration {
        let len = self.values.len();
        let n = n.min(len);
        // `next` follows the newest once the window is full; before, the end does.
        let end = if len < WINDOW { len } else { self.next };
        let recent = (0..n).map(|back| self.values[(end + len - 1 - back) % len]);
        nearest_rank(recent.collect(), p)
    }
}

/// The `p` quantile of `values`, nearest rank; zero without values.
fn nearest_rank(mut values: Vec<Duration>, p: f64) -> Duration {
    values.sort_unstable();
    values
        .get(((values.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or_default()
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
    /// Time to first token of its requests. Remote: to the end, for answers with no
    /// text; at least the time it had, for a remote that lost the race before its
    /// first token; only from races it started first or with local. Local: of its
    /// answers used, the time before it generated.
    pub first_token: Samples,
    /// Time to the whole answer of its requests that answered, from its own start
    /// (a local leg started after the hedge delay counts from then).
    pub total: Samples,
}

impl BackendStats {
    /// Counts an answer of the local engine used, `took` from its start: its time to
    /// first token is what it took before generating.
    pub fn answered(&mut self, took: Duration, generation: &Generation) {
        self.wins += 1;
        self.total.record(took);
        self.first_token
            .record(took.saturating_sub(generation.generation_time));
    }
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
    /// Races in which the second leg started too: the local engine because the
    /// remote had no first token within the hedge delay (zero while the remote is
    /// unmeasured, and in probes), or (local first) the remote because local had no
    /// answer within it.
    pub hedges: u64,
    /// Races the local engine started first (a remote measured slower than local).
    pub local_first: u64,
    /// The remote's time to a whole answer (with text or not) in races it started
    /// first or with local; when local answered first, the time it had (a lower
    /// bound). What decides which goes first.
    pub remote_answers: Samples,
    /// Requests while the remote was measured slower than local, probes included.
    pub remote_slower: u64,
    /// Requests the local engine answered after the remote failed or answered
    /// nothing.
    pub fallbacks: u64,
    /// Where the last answer came from.
    pub last_source: Option<Source>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn recent_quantiles_follow_the_newest_samples_across_the_wrap() {
        let mut samples = Samples::default();
        for n in 1..=10 {
            samples.record(ms(n));
        }
        assert_eq!(samples.recent_quantile(0.0, 3), ms(8));
        assert_eq!(samples.recent_quantile(1.0, 30), ms(10));
        assert_eq!(samples.recent_quantile(0.0, 30), ms(1));
        // Past the window the oldest are overwritten: the newest are found after the
        // write position wrapped.
        for n in 11..=(WINDOW as u64 + 5) {
            samples.record(ms(n));
        }
        let newest = WINDOW as u64 + 5;
        assert_eq!(samples.recent_quantile(0.0, 4), ms(newest - 3));
        assert_eq!(samples.recent_quantile(1.0, 4), ms(newest));
        assert_eq!(samples.recent_quantile(0.5, WINDOW), samples.quantile(0.5));
        assert_eq!(Samples::default().recent_quantile(0.9, 5), Duration::ZERO);
    }
}

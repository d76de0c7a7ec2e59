//! The circuit breaker of a remote: consecutive failures open it for a while,
//! during which requests go straight to local; then one request probes it
//! (half-open), and its outcome closes or reopens it. Time is passed in, so the
//! states are tested without waiting.

use std::time::{Duration, Instant};

/// The breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Requests go remote; `failures` in a row so far.
    Closed {
        /// Consecutive failures.
        failures: u32,
    },
    /// Requests stay local until `until`.
    Open {
        /// When a probe may go.
        until: Instant,
    },
    /// One probe is out; others stay local until it ends.
    HalfOpen,
}

impl State {
    /// The name shown in `inkling/stats`.
    pub fn name(self) -> &'static str {
        match self {
            State::Closed { .. } => "closed",
            State::Open { .. } => "open",
            State::HalfOpen => "half-open",
        }
    }
}

/// A request's admission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// It may go remote.
    Allowed,
    /// It may go remote as the half-open probe.
    Probe,
    /// It stays local.
    Refused,
}

/// See the module documentation.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    open_for: Duration,
    state: State,
    trips: u64,
}

impl Breaker {
    /// A closed breaker that opens after `threshold` consecutive failures, for `open_for`.
    pub fn new(threshold: u32, open_for: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            open_for,
            state: State::Closed { failures: 0 },
            trips: 0,
        }
    }

    /// Whether a request may go remote at `now`.
    pub fn admit(&mut self, now: Instant) -> Admission {
        match self.state {
            State::Closed { .. } => Admission::Allowed,
            State::Open { until } if now >= until => {
                self.state = State::HalfOpen;
                Admission::Probe
            }
            State::Open { .. } | State::HalfOpen => Admission::Refused,
        }
    }

    /// A request admitted as `admission` succeeded. While half-open only the probe
    /// decides: a request admitted before the breaker opened, ending late, says
    /// nothing about the remote now.
    pub fn succeeded(&mut self, admission: Admission) {
        if matches!(self.state, State::Closed { .. }) || admission == Admission::Probe {
            self.state = State::Closed { failures: 0 };
        }
    }

    /// A request admitted as `admission` failed at `now` (a late one while open or
    /// half-open is ignored, as in [`Breaker::succeeded`]).
    pub fn failed(&mut self, now: Instant, admission: Admission) {
        self.state = match (self.state, admission) {
            (State::Closed { failures }, _) if failures + 1 < self.threshold => State::Closed {
                failures: failures + 1,
            },
            (State::Closed { .. }, _) | (State::HalfOpen, Admission::Probe) => {
                self.trips += 1;
                State::Open {
                    until: now + self.open_for,
                }
            }
            (state, _) => state,
        };
    }

    /// A request admitted as `admission` ended without a verdict (cancelled, or it
    /// lost the race while streaming): when it was the probe, another request may
    /// probe.
    pub fn inconclusive(&mut self, now: Instant, admission: Admission) {
        if self.state == State::HalfOpen && admission == Admission::Probe {
            self.state = State::Open { until: now };
        }
    }

    /// The state now.
    pub fn state(&self) -> State {
        self.state
    }

    /// Times it opened.
    pub fn trips(&self) -> u64 {
        self.trips
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_failures_open_it_and_a_probe_closes_it() {
        let start = Instant::now();
        let mut breaker = Breaker::new(3, Duration::from_secs(10));
        breaker.failed(start, Admission::Allowed);
        breaker.failed(start, Admission::Allowed);
        breaker.succeeded(Admission::Allowed);
        breaker.failed(start, Admission::Allowed);
        breaker.failed(start, Admission::Allowed);
        assert_eq!(breaker.admit(start), Admission::Allowed);
        breaker.failed(start, Admission::Allowed);
        assert_eq!(breaker.trips(), 1);
        assert_eq!(
            breaker.admit(start + Duration::from_secs(9)),
            Admission::Refused
        );
        let later = start + Duration::from_secs(10);
        assert_eq!(breaker.admit(later), Admission::Probe);
        // Only one probe at a time.
        assert_eq!(breaker.admit(later), Admission::Refused);
        // A request admitted before the breaker opened ends now: the probe decides.
        breaker.succeeded(Admission::Allowed);
        assert_eq!(breaker.state().name(), "half-open");
        breaker.failed(later, Admission::Allowed);
        breaker.inconclusive(later, Admission::Allowed);
        assert_eq!((breaker.state().name(), breaker.trips()), ("half-open", 1));
        breaker.succeeded(Admission::Probe);
        assert_eq!(breaker.state().name(), "closed");
        assert_eq!(breaker.admit(later), Admission::Allowed);
    }

    #[test]
    fn a_failed_probe_reopens_it_and_an_inconclusive_one_lets_another_probe() {
        let start = Instant::now();
        let mut breaker = Breaker::new(1, Duration::from_secs(5));
        breaker.failed(start, Admission::Allowed);
        let later = start + Duration::from_secs(5);
        assert_eq!(breaker.admit(later), Admission::Probe);
        breaker.inconclusive(later, Admission::Probe);
        assert_eq!(breaker.admit(later), Admission::Probe);
        breaker.failed(later, Admission::Probe);
        assert_eq!(breaker.trips(), 2);
        assert_eq!(breaker.state().name(), "open");
        assert_eq!(
            breaker.admit(later + Duration::from_secs(4)),
            Admission::Refused
        );
    }
}

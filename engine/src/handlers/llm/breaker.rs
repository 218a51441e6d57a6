//! A provider's circuit breaker: after `failures` retryable failures in a row it opens and the provider is
//! skipped; after `cooldown` one trial call goes through, and its outcome closes or re-opens the breaker.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        since: Instant,
    },
    /// One trial call is out.
    Trial,
}

#[derive(Debug)]
pub struct Breaker {
    failures: u32,
    cooldown: Duration,
    state: Mutex<State>,
}

impl Breaker {
    pub fn new(failures: u32, cooldown: Duration) -> Self {
        Self { failures, cooldown, state: Mutex::new(State::Closed { failures: 0 }) }
    }

    /// Whether a call may go out now (taking the one trial slot of a cooled-down breaker).
    pub fn allow(&self, now: Instant) -> bool {
        let Ok(mut state) = self.state.lock() else { return true };
        match *state {
            State::Closed { .. } => true,
            State::Open { since } if now.duration_since(since) >= self.cooldown => {
                *state = State::Trial;
                true
            }
            State::Open { .. } | State::Trial => false,
        }
    }

    pub fn succeeded(&self) {
        if let Ok(mut state) = self.state.lock() {
            *state = State::Closed { failures: 0 };
        }
    }

    /// A failure worth retrying (the provider's fault); the request's own faults do not count.
    pub fn failed(&self, now: Instant) {
        if self.failures == 0 {
            return;
        }
        if let Ok(mut state) = self.state.lock() {
            *state = match *state {
                State::Closed { failures } if failures + 1 >= self.failures => State::Open { since: now },
                State::Closed { failures } => State::Closed { failures: failures + 1 },
                State::Trial | State::Open { .. } => State::Open { since: now },
            };
        }
    }

    pub fn is_open(&self) -> bool {
        self.state.lock().map(|s| !matches!(*s, State::Closed { .. })).unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_then_lets_one_trial_through() {
        let breaker = Breaker::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        breaker.failed(t0);
        assert!(breaker.allow(t0), "one failure is not enough");
        breaker.failed(t0);
        assert!(!breaker.allow(t0 + Duration::from_secs(1)), "open: skipped");
        assert!(breaker.allow(t0 + Duration::from_secs(10)), "cooled down: one trial");
        assert!(!breaker.allow(t0 + Duration::from_secs(10)), "only one trial at a time");
        breaker.failed(t0 + Duration::from_secs(11));
        assert!(!breaker.allow(t0 + Duration::from_secs(12)), "the trial failed: open again");
        assert!(breaker.allow(t0 + Duration::from_secs(21)));
        breaker.succeeded();
        assert!(breaker.allow(t0 + Duration::from_secs(21)) && !breaker.is_open(), "the trial worked: closed");
    }
}

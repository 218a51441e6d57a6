//! Admission control: whether new jobs may enter a queue, and when to come back if not.
//!
//! Pure functions over plain numbers, the one decision `POST /jobs` and `POST /jobs/batch` both take; the
//! numbers come from the stores (exact depth, kept by triggers) and from the recent drain rate measured in
//! memory.

pub mod drain;
pub mod enqueue;
pub mod gate;
pub mod inflight;

/// The caps of a gateway (0 = no cap).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdmissionLimits {
    /// Queued jobs per engine shard.
    pub max_queue_depth: u64,
    /// Queued jobs over all engines.
    pub max_total_depth: u64,
    /// Queued + running jobs per user per engine.
    pub max_user_inflight: u64,
}

/// The shortest `Retry-After` (seconds): the header counts whole seconds, and a slot that frees in 100 ms is
/// still "retry in a second", never "retry now" (which invites a hot loop).
pub const RETRY_AFTER_MIN_S: u64 = 1;
/// The longest `Retry-After` (seconds): the drain rate is measured over seconds, so an estimate further out is
/// a guess; a client that comes back after a minute gets a fresh one.
pub const RETRY_AFTER_MAX_S: u64 = 60;
/// The `Retry-After` (seconds) when nothing has drained the queue lately (no engine claims yet, or none is
/// online): no rate to divide by, so a moderate wait that neither stampedes nor stalls a client once an engine
/// starts.
pub const RETRY_AFTER_UNKNOWN_RATE_S: u64 = 5;

/// How many jobs must leave a capped count before `wanted` more fit under `cap`: what is over the cap now, plus
/// the jobs asked for (at least one).
pub fn slots_needed(cap: u64, current: u64, wanted: u64) -> u64 {
    current.saturating_add(wanted.max(1)).saturating_sub(cap).max(1)
}

/// The expected time until a retry needing `slots` free places is admitted: `slots` divided by the rate
/// engines have been taking jobs, rounded *up* to whole seconds (so a client adding its own jitter on top never
/// comes back before the places are expected to be free), within `RETRY_AFTER_MIN_S..=RETRY_AFTER_MAX_S`. An
/// unknown or zero rate gives `RETRY_AFTER_UNKNOWN_RATE_S`.
pub fn retry_after_s(slots: u64, drain_rate_per_s: f64) -> u64 {
    if !drain_rate_per_s.is_finite() || drain_rate_per_s <= 0.0 {
        return RETRY_AFTER_UNKNOWN_RATE_S;
    }
    let seconds = (slots.max(1) as f64 / drain_rate_per_s).ceil();
    if seconds.is_finite() {
        (seconds.min(RETRY_AFTER_MAX_S as f64) as u64).clamp(RETRY_AFTER_MIN_S, RETRY_AFTER_MAX_S)
    } else {
        RETRY_AFTER_MAX_S
    }
}

/// What a cap allows of a request for `wanted` new jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionDecision {
    /// How many of the jobs fit (the first ones, in order).
    pub admitted: u64,
    /// For the rest, when a retry of them is expected to fit; `None` when all fit.
    pub retry_after_s: Option<u64>,
}

/// The admission decision of one cap (`cap` 0 = none) holding `current` jobs, for `wanted` new ones, with the
/// rate engines drain what the cap counts.
pub fn admit(cap: u64, current: u64, wanted: u64, drain_rate_per_s: f64) -> AdmissionDecision {
    if cap == 0 {
        return AdmissionDecision { admitted: wanted, retry_after_s: None };
    }
    let admitted = wanted.min(cap.saturating_sub(current));
    let retry_after_s =
        (admitted < wanted).then(|| retry_after_s(slots_needed(cap, current, wanted), drain_rate_per_s));
    AdmissionDecision { admitted, retry_after_s }
}

/// Whether a cap is hit: `cap` 0 means no cap.
pub fn over(cap: u64, current: u64) -> bool {
    cap > 0 && current >= cap
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_the_time_until_the_places_needed_free_up() {
        // The review's case: cap 100, a full queue, 9.3 jobs/s: one place frees in ~0.1 s, so 1 s, not 11.
        assert_eq!(retry_after_s(slots_needed(100, 100, 1), 9.3), 1);
        assert_eq!(retry_after_s(slots_needed(100, 130, 1), 10.0), 4, "31 places at 10/s, rounded up");
        assert_eq!(retry_after_s(20, 10.0), 2);
        assert_eq!(retry_after_s(21, 10.0), 3, "rounded up, never early");
        assert_eq!(retry_after_s(1, 0.5), 2, "a slow drain means a later retry");
        assert_eq!(retry_after_s(1, 1_000.0), RETRY_AFTER_MIN_S, "never below a second");
        assert_eq!(retry_after_s(1_000_000, 1.0), RETRY_AFTER_MAX_S, "never beyond the cap");
        assert_eq!(retry_after_s(u64::MAX, f64::MIN_POSITIVE), RETRY_AFTER_MAX_S);
        for unknown in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(retry_after_s(10, unknown), RETRY_AFTER_UNKNOWN_RATE_S, "{unknown}");
        }
    }

    #[test]
    fn the_places_needed_are_the_excess_plus_the_jobs_asked_for() {
        assert_eq!(slots_needed(100, 100, 1), 1);
        assert_eq!(slots_needed(100, 105, 1), 6);
        assert_eq!(slots_needed(100, 90, 30), 20, "a batch needs room for all of its refused part");
        assert_eq!(slots_needed(100, 0, 1), 1, "at least one");
        assert_eq!(slots_needed(100, u64::MAX, u64::MAX), u64::MAX - 100);
    }

    #[test]
    fn one_decision_for_a_job_and_for_a_batch() {
        let one = admit(100, 100, 1, 9.3);
        assert_eq!(one, AdmissionDecision { admitted: 0, retry_after_s: Some(1) });
        assert_eq!(admit(100, 99, 1, 9.3), AdmissionDecision { admitted: 1, retry_after_s: None });
        // A batch of 50 with room for 10: the first 10 go in, the other 40 come back when 40 places free.
        assert_eq!(admit(100, 90, 50, 10.0), AdmissionDecision { admitted: 10, retry_after_s: Some(4) });
        assert_eq!(admit(100, 150, 5, 0.0), AdmissionDecision { admitted: 0, retry_after_s: Some(5) });
        assert_eq!(admit(0, 1_000_000, 5, 0.0), AdmissionDecision { admitted: 5, retry_after_s: None }, "no cap");
    }

    #[test]
    fn zero_caps_are_off() {
        assert!(!over(0, 1_000_000));
        assert!(over(10, 10));
        assert!(!over(10, 9));
    }
}

//! Admission control: whether a new job may enter a queue, and when to come back if not.
//!
//! Pure functions over plain numbers; the numbers come from the shard (exact depth, kept by triggers) and from
//! the recent drain rate measured in memory.

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

/// Shortest and longest `Retry-After` ever given (seconds).
pub const RETRY_AFTER_RANGE: (u64, u64) = (1, 600);

/// When a full queue will have drained enough to be worth retrying: its depth divided by the rate engines
/// have been taking jobs from it, clamped to `RETRY_AFTER_RANGE`. A queue nobody drains gets the maximum.
pub fn retry_after_s(depth: u64, drain_rate_per_s: f64) -> u64 {
    let (min, max) = RETRY_AFTER_RANGE;
    if drain_rate_per_s.is_nan() || drain_rate_per_s <= 0.0 {
        return max;
    }
    let seconds = (depth as f64 / drain_rate_per_s).ceil();
    if seconds.is_finite() { (seconds as u64).clamp(min, max) } else { max }
}

/// Whether a cap is hit: `cap` 0 means no cap.
pub fn over(cap: u64, current: u64) -> bool {
    cap > 0 && current >= cap
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_follows_the_drain_rate_within_bounds() {
        assert_eq!(retry_after_s(1_000, 100.0), 10);
        assert_eq!(retry_after_s(1_000, 50.0), 20, "a slower drain means a later retry");
        assert_eq!(retry_after_s(1_001, 100.0), 11, "rounded up");
        assert_eq!(retry_after_s(10, 1_000.0), 1, "never below the minimum");
        assert_eq!(retry_after_s(1_000_000, 1.0), 600, "never above the maximum");
        assert_eq!(retry_after_s(10, 0.0), 600, "a queue nobody drains");
        assert_eq!(retry_after_s(10, f64::NAN), 600);
    }

    #[test]
    fn zero_caps_are_off() {
        assert!(!over(0, 1_000_000));
        assert!(over(10, 10));
        assert!(!over(10, 9));
    }
}

//! Retry delay policy: exponential backoff with "full jitter" (AWS architecture blog, 2015).
//!
//! Full jitter spreads retries of jobs that failed together uniformly over the whole window, so a provider
//! outage does not turn into synchronised waves of retries when it recovers.

/// The upper bound of the retry window after `attempt` failed attempts (1-based): `base * 2^(attempt-1)`,
/// never more than `cap`.
pub fn backoff_ceiling_ms(attempt: u32, base_ms: u64, cap_ms: u64) -> u64 {
    let exponent = attempt.saturating_sub(1).min(62);
    base_ms.saturating_mul(1u64 << exponent).min(cap_ms)
}

/// The delay before the next attempt: uniform in `[0, ceiling]`, picked by `unit` in `[0, 1)`.
///
/// `unit` comes from the caller's random source so the policy stays a pure function that tests can drive.
pub fn full_jitter_delay_ms(attempt: u32, base_ms: u64, cap_ms: u64, unit: f64) -> u64 {
    let ceiling = backoff_ceiling_ms(attempt, base_ms, cap_ms);
    let unit = if unit.is_finite() { unit.clamp(0.0, 1.0) } else { 0.0 };
    ((ceiling as f64) * unit).round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_per_attempt_until_the_cap() {
        assert_eq!(backoff_ceiling_ms(1, 1_000, 60_000), 1_000);
        assert_eq!(backoff_ceiling_ms(2, 1_000, 60_000), 2_000);
        assert_eq!(backoff_ceiling_ms(3, 1_000, 60_000), 4_000);
        assert_eq!(backoff_ceiling_ms(7, 1_000, 60_000), 60_000);
        assert_eq!(backoff_ceiling_ms(0, 1_000, 60_000), 1_000);
        assert_eq!(backoff_ceiling_ms(u32::MAX, u64::MAX, u64::MAX), u64::MAX);
    }

    #[test]
    fn delay_stays_within_zero_and_the_ceiling() {
        for attempt in 1..40 {
            for i in 0..=100 {
                let unit = i as f64 / 100.0;
                let delay = full_jitter_delay_ms(attempt, 500, 30_000, unit);
                assert!(delay <= backoff_ceiling_ms(attempt, 500, 30_000), "attempt {attempt} unit {unit}");
            }
        }
        assert_eq!(full_jitter_delay_ms(3, 1_000, 60_000, 0.0), 0);
        assert_eq!(full_jitter_delay_ms(3, 1_000, 60_000, 1.0), 4_000);
        assert_eq!(full_jitter_delay_ms(3, 1_000, 60_000, f64::NAN), 0);
        assert_eq!(full_jitter_delay_ms(3, 1_000, 60_000, 7.0), 4_000);
    }

    #[test]
    fn delays_are_spread_over_the_window() {
        let delays: Vec<u64> = (0..10).map(|i| full_jitter_delay_ms(4, 1_000, 60_000, i as f64 / 10.0)).collect();
        assert_eq!(delays, vec![0, 800, 1_600, 2_400, 3_200, 4_000, 4_800, 5_600, 6_400, 7_200]);
    }
}

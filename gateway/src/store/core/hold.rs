//! Why a queued job is not claimable now: the `hold` column both drivers park jobs with.

/// Why a queued job is not claimable now (the `hold` column).
pub const HOLD_NONE: i64 = 0;
pub const HOLD_RUN_AT: i64 = 1;
pub const HOLD_KEY: i64 = 2;
pub const HOLD_BREAKER: i64 = 3;

/// The hold a job gets when it is (re)queued with this `run_at`.
pub fn hold_for_run_at(run_at: i64, now: i64) -> i64 {
    if run_at > now { HOLD_RUN_AT } else { HOLD_NONE }
}

//! What an attempt's outcome does to its job: the one finish rule both drivers execute.

use flowork_common::backoff::full_jitter_delay_ms;
use flowork_common::wire::{AttemptEnd, JobStatus};

use super::hold::hold_for_run_at;
use crate::store::{Finish, RetryPolicy};

/// The error a job keeps when its engine stopped it after its cancellation was asked.
pub const CANCELLED_WHILE_RUNNING: &str = "cancelled while running";

/// The row a finished attempt leaves: every column a driver writes (and clears the lease of).
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub status: JobStatus,
    /// The result JSON text, on success (`null` when the handler returned none); the column is left alone otherwise.
    pub result: Option<String>,
    /// The error text; `None` clears it.
    pub error: Option<String>,
    /// When the job became final; `None` while it will run again.
    pub finished_at_ms: Option<i64>,
    /// When a retried job runs again; the column is left alone otherwise.
    pub run_at_ms: Option<i64>,
    /// The hold of a retried job (parked until its `run_at`); the column is left alone otherwise.
    pub hold: Option<i64>,
}

/// Decides where attempt number `attempts` (of `max_attempts`) leaves its job: a success or a cancellation is
/// final; a retryable failure with attempts left goes back to `queued` after a full-jitter backoff drawn with
/// `jitter_unit` (in 0..1), unless the job's cancellation was asked (then it ends `cancelled`); any other failure
/// is final (`dead`).
pub fn after_attempt(
    finish: &Finish,
    attempts: u32,
    max_attempts: u32,
    cancel_requested: bool,
    now: i64,
    policy: RetryPolicy,
    jitter_unit: f64,
) -> Transition {
    let last = |status, error: Option<String>| Transition {
        status,
        result: None,
        error,
        finished_at_ms: Some(now),
        run_at_ms: None,
        hold: None,
    };
    // A timeout is a retryable failure; only its attempt's record tells them apart.
    let timed_out;
    let finish = match finish {
        Finish::TimedOut { error } => {
            timed_out = Finish::Failed { error: error.clone(), retryable: true };
            &timed_out
        }
        other => other,
    };
    match finish {
        Finish::Succeeded { result } => Transition {
            result: Some(result.clone().unwrap_or_else(|| "null".into())),
            ..last(JobStatus::Succeeded, None)
        },
        Finish::Failed { error, retryable } if *retryable && attempts < max_attempts && cancel_requested => {
            last(JobStatus::Cancelled, Some(format!("{CANCELLED_WHILE_RUNNING}: {error}")))
        }
        Finish::Failed { error, retryable } if *retryable && attempts < max_attempts => {
            let delay = full_jitter_delay_ms(attempts, policy.base_ms, policy.cap_ms, jitter_unit);
            let run_at = now.saturating_add(delay.min(i64::MAX as u64) as i64);
            Transition {
                status: JobStatus::Queued,
                result: None,
                error: Some(error.clone()),
                finished_at_ms: None,
                run_at_ms: Some(run_at),
                hold: Some(hold_for_run_at(run_at, now)),
            }
        }
        Finish::Cancelled => last(JobStatus::Cancelled, Some(CANCELLED_WHILE_RUNNING.into())),
        Finish::Failed { error, .. } | Finish::TimedOut { error } => last(JobStatus::Dead, Some(error.clone())),
    }
}

/// How an attempt reported with `finish` ended, and the error its record keeps: what both drivers append to the
/// job's attempt log.
pub fn attempt_end(finish: &Finish) -> (AttemptEnd, Option<&str>) {
    match finish {
        Finish::Succeeded { .. } => (AttemptEnd::Succeeded, None),
        Finish::Failed { error, .. } => (AttemptEnd::Failed, Some(error)),
        Finish::TimedOut { error } => (AttemptEnd::TimedOut, Some(error)),
        Finish::Cancelled => (AttemptEnd::Cancelled, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::core::hold::{HOLD_NONE, HOLD_RUN_AT};

    const POLICY: RetryPolicy = RetryPolicy { base_ms: 1_000, cap_ms: 60_000 };

    fn failed(retryable: bool) -> Finish {
        Finish::Failed { error: "boom".into(), retryable }
    }

    #[test]
    fn a_success_is_final_with_its_result_and_no_error() {
        let done = after_attempt(&Finish::Succeeded { result: None }, 1, 3, false, 500, POLICY, 0.5);
        assert_eq!(done.status, JobStatus::Succeeded);
        assert_eq!(done.result.as_deref(), Some("null"));
        assert_eq!((done.error, done.finished_at_ms, done.run_at_ms), (None, Some(500), None));
        let done = after_attempt(&Finish::Succeeded { result: Some("[1]".into()) }, 3, 3, false, 500, POLICY, 0.5);
        assert_eq!(done.result.as_deref(), Some("[1]"));
    }

    #[test]
    fn a_retryable_failure_with_attempts_left_is_queued_again_after_a_backoff_within_bounds() {
        for unit in [0.0, 0.3, 0.999] {
            let next = after_attempt(&failed(true), 2, 3, false, 10_000, POLICY, unit);
            assert_eq!(next.status, JobStatus::Queued);
            assert_eq!((next.error.as_deref(), next.finished_at_ms), (Some("boom"), None));
            let run_at = next.run_at_ms.expect("a retry has a run_at");
            assert!((10_000..=10_000 + 60_000).contains(&run_at), "run_at {run_at}");
            let hold = if run_at > 10_000 { HOLD_RUN_AT } else { HOLD_NONE };
            assert_eq!(next.hold, Some(hold));
        }
    }

    #[test]
    fn the_last_attempt_or_a_permanent_failure_is_dead_and_a_cancel_is_cancelled() {
        for (finish, attempts) in [(failed(true), 3), (failed(false), 1)] {
            let dead = after_attempt(&finish, attempts, 3, false, 700, POLICY, 0.5);
            assert_eq!((dead.status, dead.error.as_deref()), (JobStatus::Dead, Some("boom")));
            assert_eq!((dead.finished_at_ms, dead.run_at_ms, dead.hold), (Some(700), None, None));
        }
        let cancelled = after_attempt(&Finish::Cancelled, 1, 3, true, 700, POLICY, 0.5);
        assert_eq!(cancelled.status, JobStatus::Cancelled);
        assert_eq!(cancelled.error.as_deref(), Some(CANCELLED_WHILE_RUNNING));
        assert_eq!(cancelled.result, None);
        // A failure after the cancel was asked does not run the job again.
        let stopped = after_attempt(&failed(true), 1, 3, true, 700, POLICY, 0.5);
        assert_eq!((stopped.status, stopped.finished_at_ms), (JobStatus::Cancelled, Some(700)));
        assert_eq!(stopped.error.as_deref(), Some("cancelled while running: boom"));
    }
}

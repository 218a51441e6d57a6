//! When a job's end-to-end clock starts, for the roadmap's latency SLO (enqueue → final outcome): the time in its
//! UUIDv7 id (minted at enqueue), or the `run_at` its user scheduled it for, remembered when it is first claimed.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use flowork_common::timefmt::parse_ms;
use flowork_common::wire::Job;

/// Scheduled jobs remembered at once at most; past it, a scheduled job is measured from its enqueue (too long,
/// never too short), so memory stays bounded when finishes go to other gateways of a fleet.
const MAX_SCHEDULED: usize = 100_000;

/// The start of the clock of scheduled jobs in flight; every other job's start is in its id.
#[derive(Debug, Default)]
pub struct EndToEndClock {
    scheduled: Mutex<HashMap<String, i64>>,
}

impl EndToEndClock {
    /// A claimed job: on its first attempt, a `run_at` later than its enqueue is the user's schedule (a retry's
    /// backoff also moves `run_at`, but the clock of a retried job keeps running from its first start).
    pub fn claimed(&self, job: &Job) {
        if job.attempts > 1 {
            return;
        }
        let (Some(enqueued), Some(run_at)) = (parse_ms(&job.enqueued_at), parse_ms(&job.run_at)) else { return };
        if run_at > enqueued {
            let mut scheduled = self.scheduled.lock().unwrap_or_else(PoisonError::into_inner);
            if scheduled.len() < MAX_SCHEDULED {
                scheduled.insert(job.id.clone(), run_at);
            }
        }
    }

    /// When the job's clock started (ms since the epoch), if its id tells; a final outcome forgets it.
    pub fn started_ms(&self, job_id: &str, is_final: bool) -> Option<i64> {
        let mut scheduled = self.scheduled.lock().unwrap_or_else(PoisonError::into_inner);
        let remembered = if is_final { scheduled.remove(job_id) } else { scheduled.get(job_id).copied() };
        remembered.or_else(|| uuid_v7_ms(job_id))
    }
}

/// The creation time in a UUIDv7 (ms since the epoch); none for other versions.
fn uuid_v7_ms(id: &str) -> Option<i64> {
    let uuid = uuid::Uuid::parse_str(id).ok()?;
    if uuid.get_version_num() != 7 {
        return None;
    }
    let (seconds, nanos) = uuid.get_timestamp()?.to_unix();
    i64::try_from(seconds).ok().map(|s| s * 1_000 + i64::from(nanos / 1_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, attempts: u32, enqueued_at: &str, run_at: &str) -> Job {
        serde_json::from_value(serde_json::json!({
            "id": id, "engine": "e", "user": "u", "kind": "k", "status": "running", "payload": null,
            "attempts": attempts, "max_attempts": 5, "priority": 0, "run_at": run_at, "enqueued_at": enqueued_at,
            "timeout_ms": 1000,
        }))
        .unwrap()
    }

    #[test]
    fn an_immediate_job_starts_at_its_ids_time() {
        let id = uuid::Uuid::now_v7().to_string();
        let now = flowork_common::clock::system_now_ms();
        let started = EndToEndClock::default().started_ms(&id, true).unwrap();
        assert!((now - started).abs() < 5_000, "{now} vs {started}");
        assert_eq!(EndToEndClock::default().started_ms(&uuid::Uuid::new_v4().to_string(), true), None);
        assert_eq!(EndToEndClock::default().started_ms("not-a-uuid", true), None);
    }

    #[test]
    fn a_scheduled_job_starts_at_its_run_at_until_its_final_outcome() {
        let clock = EndToEndClock::default();
        let id = uuid::Uuid::now_v7().to_string();
        let (enqueued, run_at) = ("2026-01-01T00:00:00.000Z", "2026-01-01T01:00:00.000Z");
        clock.claimed(&job(&id, 1, enqueued, run_at));
        let at = parse_ms(run_at).unwrap();
        assert_eq!(clock.started_ms(&id, false), Some(at), "a retry keeps the start");
        clock.claimed(&job(&id, 2, enqueued, "2026-01-01T02:00:00.000Z"));
        assert_eq!(clock.started_ms(&id, true), Some(at));
        assert_ne!(clock.started_ms(&id, true), Some(at), "forgotten after the final outcome");
        // A job due at once is not remembered.
        let other = uuid::Uuid::now_v7().to_string();
        clock.claimed(&job(&other, 1, enqueued, enqueued));
        assert!(clock.scheduled.lock().unwrap().is_empty());
    }
}

//! The API's view of a job the moment it is stored, the same for both drivers.

use flowork_common::timefmt::format_ms;
use flowork_common::wire::{Job, JobStatus};
use serde_json::value::RawValue;

use crate::store::{NewJob, StoreError};

/// The API's view of a job just stored.
pub fn created_job(job: &NewJob, now: i64) -> Result<Job, StoreError> {
    Ok(Job {
        id: job.id.clone(),
        engine: job.engine.clone(),
        user: job.user.clone(),
        kind: job.kind.clone(),
        status: JobStatus::Queued,
        payload: RawValue::from_string(job.payload.clone())
            .map_err(|e| StoreError::Task(format!("a payload that is not JSON reached the store: {e}")))?,
        attempts: 0,
        max_attempts: job.max_attempts,
        priority: job.priority,
        timeout_ms: job.timeout_ms,
        run_at: format_ms(job.run_at_ms),
        enqueued_at: format_ms(now),
        claimed_at: None,
        finished_at: None,
        result: None,
        error: None,
        traceparent: job.traceparent.clone(),
        concurrency_key: job.concurrency_key.clone(),
        queue_position: None,
        waiting_on: None,
        cancel_requested: false,
        progress: None,
    })
}

//! What a job event carries: `job.created` a summary of the new job (no payload), `job.updated` the fields that
//! move (status, attempts, times, progress), the kind and enqueue time a client's filters and counts need, and the
//! result or error once the job is final, `job.deleted` the id and the state it was deleted in.

use flowork_common::wire::JobStatus;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::store::changes::JobChange;

/// `job.created`.
#[derive(Debug, Serialize)]
pub struct Created<'a> {
    pub cursor: &'a str,
    pub id: &'a str,
    pub engine: &'a str,
    pub kind: &'a str,
    pub status: JobStatus,
    pub attempts: u32,
    pub max_attempts: u32,
    pub priority: i32,
    pub run_at: &'a str,
    pub enqueued_at: &'a str,
    pub claimed_at: Option<&'a str>,
    pub finished_at: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<&'a str>,
}

/// `job.updated`.
#[derive(Debug, Serialize)]
pub struct Updated<'a> {
    pub cursor: &'a str,
    pub id: &'a str,
    pub engine: &'a str,
    pub kind: &'a str,
    pub enqueued_at: &'a str,
    pub status: JobStatus,
    pub attempts: u32,
    pub max_attempts: u32,
    pub claimed_at: Option<&'a str>,
    pub finished_at: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cancel_requested: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
}

/// `job.deleted`: the job is gone (deleted by its user).
#[derive(Debug, Serialize)]
pub struct Deleted<'a> {
    pub cursor: &'a str,
    pub id: &'a str,
    pub engine: &'a str,
    /// The state it was deleted in (for counts kept by the client).
    pub status: JobStatus,
}

/// The event name and its JSON for one change.
pub fn render(change: &JobChange, cursor: &str) -> serde_json::Result<(&'static str, Box<RawValue>)> {
    let job = &change.job;
    if change.deleted {
        let event = Deleted { cursor, id: &job.id, engine: &job.engine, status: job.status };
        return Ok(("job.deleted", serde_json::value::to_raw_value(&event)?));
    }
    if change.created {
        let event = Created {
            cursor,
            id: &job.id,
            engine: &job.engine,
            kind: &job.kind,
            status: job.status,
            attempts: job.attempts,
            max_attempts: job.max_attempts,
            priority: job.priority,
            run_at: &job.run_at,
            enqueued_at: &job.enqueued_at,
            claimed_at: job.claimed_at.as_deref(),
            finished_at: job.finished_at.as_deref(),
            concurrency_key: job.concurrency_key.as_deref(),
        };
        return Ok(("job.created", serde_json::value::to_raw_value(&event)?));
    }
    let last = job.status.is_final();
    let event = Updated {
        cursor,
        id: &job.id,
        engine: &job.engine,
        kind: &job.kind,
        enqueued_at: &job.enqueued_at,
        status: job.status,
        attempts: job.attempts,
        max_attempts: job.max_attempts,
        claimed_at: job.claimed_at.as_deref(),
        finished_at: job.finished_at.as_deref(),
        progress: if job.status == JobStatus::Running { job.progress.as_deref() } else { None },
        cancel_requested: job.cancel_requested,
        result: if last { job.result.as_deref() } else { None },
        error: if last { job.error.as_deref() } else { None },
    };
    Ok(("job.updated", serde_json::value::to_raw_value(&event)?))
}

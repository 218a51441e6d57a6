//! Operator actions on jobs and their attempt history: which states retry, cancel and delete apply to, what a
//! retry resets, the attempt log both drivers append to, and the bulk walk over a filter, chunk by chunk.

use flowork_common::timefmt::format_ms;
use flowork_common::wire::{AttemptEnd, JobAttempt, JobStatus};
use serde::Deserialize;

use crate::store::{ActOutcome, JobAction, JobFilter, JobStore, StoreError};

/// Jobs one bulk step reads and changes: one short transaction each, so enqueues wait at most one step.
pub const BULK_CHUNK: usize = 200;

impl JobAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retry => "retry",
            Self::Cancel => "cancel",
            Self::Delete => "delete",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Retry, Self::Cancel, Self::Delete].into_iter().find(|a| a.as_str() == text)
    }

    /// The states the action applies to: retry a `dead` or `cancelled` job, cancel a queued or running one, delete
    /// a final one.
    pub fn applies_to(self) -> &'static [JobStatus] {
        match self {
            Self::Retry => &[JobStatus::Dead, JobStatus::Cancelled],
            Self::Cancel => &[JobStatus::Queued, JobStatus::Running],
            Self::Delete => &[JobStatus::Succeeded, JobStatus::Dead, JobStatus::Cancelled],
        }
    }

    /// `filter` narrowed to the states the action applies to (all of them when it names none).
    pub fn narrow(self, filter: &JobFilter) -> JobFilter {
        let applies = self.applies_to();
        let statuses = if filter.statuses.is_empty() {
            applies.to_vec()
        } else {
            filter.statuses.iter().copied().filter(|s| applies.contains(s)).collect()
        };
        JobFilter { statuses, ..filter.clone() }
    }
}

/// Why an action on one job changed nothing, from the job's state read again afterwards: gone, a retry by a user
/// no longer on the whitelist (the state still applies), or a job that moved on to a state the action skips.
pub fn unchanged(action: JobAction, status_now: Option<JobStatus>) -> ActOutcome {
    match status_now {
        None => ActOutcome::NotFound,
        Some(status) if action == JobAction::Retry && action.applies_to().contains(&status) => ActOutcome::NotAllowed,
        Some(status) => ActOutcome::NotApplicable(status),
    }
}

/// One entry of a job's attempt log (a JSON array kept with the job): what a driver appends as an attempt ends.
#[derive(Debug, Deserialize)]
struct LoggedAttempt {
    worker: Option<String>,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    outcome: String,
    error: Option<String>,
}

/// The attempt running now, from the job's lease columns.
#[derive(Debug, Clone, Default)]
pub struct RunningAttempt {
    pub worker: Option<String>,
    pub started_at_ms: Option<i64>,
}

/// Every attempt of a job, oldest first: those in its log (`None` before the first ended), then the running one.
pub fn attempts_from_log(log: Option<&str>, running: Option<RunningAttempt>) -> Result<Vec<JobAttempt>, StoreError> {
    let logged: Vec<LoggedAttempt> = match log {
        Some(text) => serde_json::from_str(text)
            .map_err(|e| StoreError::Corrupt(format!("a job's attempt log does not parse: {e}")))?,
        None => Vec::new(),
    };
    let mut attempts: Vec<JobAttempt> = logged
        .into_iter()
        .map(|entry| JobAttempt {
            number: 0,
            worker: entry.worker,
            started_at: entry.started_at.map(format_ms),
            finished_at: entry.finished_at.map(format_ms),
            outcome: AttemptEnd::parse(&entry.outcome),
            error: entry.error,
        })
        .collect();
    if let Some(running) = running {
        attempts.push(JobAttempt {
            number: 0,
            worker: running.worker,
            started_at: running.started_at_ms.map(format_ms),
            finished_at: None,
            outcome: None,
            error: None,
        });
    }
    for (index, attempt) in attempts.iter_mut().enumerate() {
        attempt.number = index as u32 + 1;
    }
    Ok(attempts)
}

/// What a bulk action did: jobs the filter selected in a state the action applies to, and those it changed (a job
/// that moved on between the two is matched, not changed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BulkCount {
    pub matched: u64,
    pub changed: u64,
}

/// Applies `action` to every job of `user` that `filter` selects, newest first, `BULK_CHUNK` at a time: each
/// chunk is read, then changed in its own short transaction, so no shard's writer is held for long.
pub async fn act_on_filter(
    store: &dyn JobStore,
    user: &str,
    filter: &JobFilter,
    action: JobAction,
) -> Result<BulkCount, StoreError> {
    let filter = action.narrow(filter);
    let mut count = BulkCount::default();
    if filter.statuses.is_empty() {
        return Ok(count);
    }
    let mut before: Option<String> = None;
    loop {
        let page = store.job_ids(user, &filter, before.as_deref(), BULK_CHUNK).await?;
        let Some((_, last)) = page.last() else { break };
        before = Some(last.clone());
        count.matched += page.len() as u64;
        let mut by_engine: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
        for (engine, id) in &page {
            by_engine.entry(engine.as_str()).or_default().push(id.clone());
        }
        for (engine, ids) in by_engine {
            count.changed += store.act_on_many(engine, user, &ids, action).await?;
        }
        if page.len() < BULK_CHUNK {
            break;
        }
        // Let requests that queued behind this chunk go first.
        tokio::task::yield_now().await;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_action_applies_to_its_states_and_narrows_a_filter_to_them() {
        assert_eq!(JobAction::parse("retry"), Some(JobAction::Retry));
        assert_eq!(JobAction::parse("purge"), None);
        let all = JobAction::Delete.narrow(&JobFilter::default());
        assert_eq!(all.statuses, vec![JobStatus::Succeeded, JobStatus::Dead, JobStatus::Cancelled]);
        let asked = JobFilter { statuses: vec![JobStatus::Queued, JobStatus::Dead], ..JobFilter::default() };
        assert_eq!(JobAction::Retry.narrow(&asked).statuses, vec![JobStatus::Dead]);
        assert_eq!(JobAction::Cancel.narrow(&asked).statuses, vec![JobStatus::Queued]);
        let none = JobFilter { statuses: vec![JobStatus::Running], ..JobFilter::default() };
        assert!(JobAction::Delete.narrow(&none).statuses.is_empty());
    }

    #[test]
    fn the_log_and_the_running_attempt_are_numbered_in_order() {
        let log = r#"[{"worker":"w1","started_at":1000,"finished_at":2000,"outcome":"timed_out","error":"slow"},
                      {"worker":null,"started_at":null,"finished_at":3000,"outcome":"lease_expired","error":null}]"#;
        let running = RunningAttempt { worker: Some("w2".into()), started_at_ms: Some(4000) };
        let attempts = attempts_from_log(Some(log), Some(running)).unwrap();
        assert_eq!(attempts.iter().map(|a| a.number).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(attempts[0].outcome, Some(AttemptEnd::TimedOut));
        assert_eq!(attempts[0].error.as_deref(), Some("slow"));
        assert_eq!(attempts[1].outcome, Some(AttemptEnd::LeaseExpired));
        assert_eq!((attempts[2].outcome, attempts[2].finished_at.as_deref()), (None, None));
        assert!(attempts_from_log(None, None).unwrap().is_empty());
        assert!(matches!(attempts_from_log(Some("{"), None), Err(StoreError::Corrupt(_))));
    }
}

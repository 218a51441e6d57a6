//! The SQL of a shard's operator actions and filtered reads: listings and bulk pages by filter, retry, cancel and
//! delete of a set of jobs, attempt history, counts per state. The rules (which states an action applies to) are
//! in `store::core::operate`.

use flowork_common::wire::{Job, JobAttempt, JobCounts, JobStatus};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params_from_iter};

use super::queries::{JOB_COLUMNS, job_from_row};
use crate::store::core::operate::{RunningAttempt, attempts_from_log};
use crate::store::{JobAction, JobFilter, StoreError};

/// The `WHERE` clause of `filter` for `user`, older than `before_id`, with its parameters in order. Only the
/// conditions a filter sets are written, so each shape gets its own plan (a status uses `jobs_by_user_status`).
fn filtered(user: &str, filter: &JobFilter, before_id: Option<&str>) -> (String, Vec<Value>) {
    let mut sql = String::from("user_id = ?");
    let mut values = vec![Value::Text(user.to_string())];
    match filter.statuses.as_slice() {
        [] => {}
        [one] => {
            sql.push_str(" AND status = ?");
            values.push(Value::Text(one.as_str().into()));
        }
        many => {
            sql.push_str(&format!(" AND status IN ({})", vec!["?"; many.len()].join(", ")));
            values.extend(many.iter().map(|s| Value::Text(s.as_str().into())));
        }
    }
    if let Some(kind) = &filter.kind {
        sql.push_str(" AND kind = ?");
        values.push(Value::Text(kind.clone()));
    }
    if let Some(from) = filter.enqueued_from_ms {
        sql.push_str(" AND enqueued_at >= ?");
        values.push(Value::Integer(from));
    }
    if let Some(before) = filter.enqueued_before_ms {
        sql.push_str(" AND enqueued_at < ?");
        values.push(Value::Integer(before));
    }
    if let Some(prefix) = &filter.id_prefix {
        // Ids are lowercase hex and `-`, all below `g`: the prefix's range, which the id index serves.
        sql.push_str(" AND id >= ? AND id < ?");
        values.push(Value::Text(prefix.clone()));
        values.push(Value::Text(format!("{prefix}g")));
    }
    if let Some(before_id) = before_id {
        sql.push_str(" AND id < ?");
        values.push(Value::Text(before_id.to_string()));
    }
    (sql, values)
}

/// Up to `limit` of `user`'s jobs matching `filter`, newest first, older than `before_id`.
pub fn list(
    conn: &Connection,
    engine: &str,
    user: &str,
    filter: &JobFilter,
    before_id: Option<&str>,
    limit: usize,
) -> Result<Vec<Job>, StoreError> {
    let (clause, mut values) = filtered(user, filter, before_id);
    values.push(Value::Integer(limit as i64));
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE {clause} ORDER BY id DESC LIMIT ?");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(values), |row| job_from_row(row, engine))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Up to `limit` ids of `user`'s jobs matching `filter`, newest first, older than `before_id`.
pub fn ids(
    conn: &Connection,
    user: &str,
    filter: &JobFilter,
    before_id: Option<&str>,
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    let (clause, mut values) = filtered(user, filter, before_id);
    values.push(Value::Integer(limit as i64));
    let sql = format!("SELECT id FROM jobs WHERE {clause} ORDER BY id DESC LIMIT ?");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(values), |row| row.get(0))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// What an action did to a set of jobs: those it changed (as they are now; as they were, if deleted), and the
/// running ones whose engine is asked to stop them (cancel).
#[derive(Debug, Default)]
pub struct Acted {
    pub done: Vec<Job>,
    pub requested: Vec<Job>,
}

/// Applies `action` to those of `ids` that are `user`'s and in a state it applies to. A retry needs the user still
/// on the engine's whitelist; it puts the job back in the queue now with a fresh budget of attempts, keeping its
/// attempt log.
pub fn act(
    conn: &Connection,
    engine: &str,
    user: &str,
    ids: &[String],
    action: JobAction,
    now: i64,
) -> Result<Acted, StoreError> {
    let ids_json = serde_json::to_string(ids).map_err(|e| StoreError::Task(e.to_string()))?;
    let read = |sql: &str, values: rusqlite::ParamsFromIter<Vec<Value>>| -> Result<Vec<Job>, StoreError> {
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt.query_map(values, |row| job_from_row(row, engine))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    };
    let chosen = "id IN (SELECT value FROM json_each(?1)) AND user_id = ?2";
    let base = vec![Value::Text(ids_json), Value::Text(user.to_string())];
    let mut acted = Acted::default();
    match action {
        JobAction::Retry => {
            let sql = format!(
                "UPDATE jobs SET status = 'queued', attempts = 0, run_at = ?3, hold = 0, finished_at = NULL,
                        claimed_at = NULL, result = NULL, error = NULL, cancel_requested = 0, progress = NULL
                 WHERE {chosen} AND status IN ('dead', 'cancelled')
                   AND EXISTS (SELECT 1 FROM allowed_users WHERE user_id = ?2)
                 RETURNING {JOB_COLUMNS}"
            );
            let mut values = base;
            values.push(Value::Integer(now));
            acted.done = read(&sql, params_from_iter(values))?;
        }
        JobAction::Cancel => {
            let sql = format!(
                "UPDATE jobs SET status = 'cancelled', finished_at = ?3 WHERE {chosen} AND status = 'queued'
                 RETURNING {JOB_COLUMNS}"
            );
            let mut values = base.clone();
            values.push(Value::Integer(now));
            acted.done = read(&sql, params_from_iter(values))?;
            // A running job: its engine learns at its next heartbeat.
            let sql = format!(
                "UPDATE jobs SET cancel_requested = 1 WHERE {chosen} AND status = 'running'
                 RETURNING {JOB_COLUMNS}"
            );
            acted.requested = read(&sql, params_from_iter(base))?;
        }
        JobAction::Delete => {
            let sql = format!(
                "DELETE FROM jobs WHERE {chosen} AND status IN ('succeeded', 'dead', 'cancelled')
                 RETURNING {JOB_COLUMNS}"
            );
            acted.done = read(&sql, params_from_iter(base))?;
        }
    }
    Ok(acted)
}

/// The state of one of `user`'s jobs, if it exists here.
pub fn status_of(conn: &Connection, user: &str, id: &str) -> Result<Option<JobStatus>, StoreError> {
    let status: Option<String> = conn
        .prepare_cached("SELECT status FROM jobs WHERE id = ?1 AND user_id = ?2")?
        .query_row([id, user], |row| row.get(0))
        .optional()?;
    Ok(status.as_deref().and_then(JobStatus::parse))
}

/// Every attempt of one of `user`'s jobs, if it is here.
pub fn attempts(conn: &Connection, user: &str, id: &str) -> Result<Option<Vec<JobAttempt>>, StoreError> {
    /// The attempt log, the state, and the lease's worker and start.
    type LogRow = (Option<String>, String, Option<String>, Option<i64>);
    let row: Option<LogRow> = conn
        .prepare_cached("SELECT attempt_log, status, lease_owner, claimed_at FROM jobs WHERE id = ?1 AND user_id = ?2")?
        .query_row([id, user], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)))
        .optional()?;
    let Some((log, status, worker, started_at_ms)) = row else { return Ok(None) };
    let running = (status == JobStatus::Running.as_str()).then_some(RunningAttempt { worker, started_at_ms });
    attempts_from_log(log.as_deref(), running).map(Some)
}

/// How many of `user`'s jobs are in each state (read from `jobs_by_user_status`).
pub fn counts(conn: &Connection, user: &str) -> Result<JobCounts, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT status, count(*) FROM jobs WHERE user_id = ?1 GROUP BY status")?;
    let rows = stmt.query_map([user], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))?;
    let mut counts = JobCounts::default();
    for row in rows {
        let (status, n) = row?;
        if let Some(status) = JobStatus::parse(&status) {
            counts.add(status, n.max(0) as u64);
        }
    }
    Ok(counts)
}

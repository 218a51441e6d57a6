//! The SQL of operator actions and filtered reads in PostgreSQL: listings and bulk pages by filter, retry, cancel
//! and delete of a set of jobs, attempt history, counts per state (the same rules as `sqlite/operate.rs`, from
//! `store::core::operate`).

use deadpool_postgres::GenericClient;
use flowork_common::wire::{Job, JobAttempt, JobCounts, JobStatus};
use tokio_postgres::types::ToSql;

use super::jobs::{JOB_COLUMN_COUNT, JOB_COLUMNS, job_from_row, query, query_opt};
use crate::store::core::operate::{RunningAttempt, attempts_from_log};
use crate::store::{JobAction, JobFilter, StoreError};

/// The condition of a filter: $1 user, $2 statuses, $3 engine, $4 kind, $5 from, $6 before, $7 id prefix,
/// $8 the cursor; $9 the limit.
const FILTERED: &str =
    "user_id = $1 AND ($2::TEXT[] IS NULL OR status = ANY($2)) AND ($3::TEXT IS NULL OR engine_id = $3)
     AND ($4::TEXT IS NULL OR kind = $4) AND ($5::BIGINT IS NULL OR enqueued_at >= $5)
     AND ($6::BIGINT IS NULL OR enqueued_at < $6) AND ($7::TEXT IS NULL OR starts_with(id, $7))
     AND ($8::TEXT IS NULL OR id < $8)
     ORDER BY id DESC LIMIT $9";

/// Reads `columns` of `user`'s jobs matching `filter`, newest first, older than `before_id`.
async fn select_filtered(
    tx: &impl GenericClient,
    columns: &str,
    user: &str,
    filter: &JobFilter,
    before_id: Option<&str>,
    limit: usize,
) -> Result<Vec<tokio_postgres::Row>, StoreError> {
    let statuses = (!filter.statuses.is_empty()).then(|| filter.status_names());
    let limit = limit as i64;
    let params: [&(dyn ToSql + Sync); 9] = [
        &user,
        &statuses,
        &filter.engine,
        &filter.kind,
        &filter.enqueued_from_ms,
        &filter.enqueued_before_ms,
        &filter.id_prefix,
        &before_id,
        &limit,
    ];
    query(tx, &format!("SELECT {columns} FROM jobs WHERE {FILTERED}"), &params).await
}

/// Up to `limit` of `user`'s jobs matching `filter`, newest first.
pub async fn list(
    tx: &impl GenericClient,
    user: &str,
    filter: &JobFilter,
    before_id: Option<&str>,
    limit: usize,
) -> Result<Vec<Job>, StoreError> {
    let rows = select_filtered(tx, &format!("{JOB_COLUMNS}, engine_id"), user, filter, before_id, limit).await?;
    rows.iter().map(|row| job_from_row(row, &row.try_get::<_, String>(JOB_COLUMN_COUNT)?)).collect()
}

/// Up to `limit` of `user`'s jobs matching `filter`, newest first, as (engine, id).
pub async fn ids(
    tx: &impl GenericClient,
    user: &str,
    filter: &JobFilter,
    before_id: Option<&str>,
    limit: usize,
) -> Result<Vec<(String, String)>, StoreError> {
    let rows = select_filtered(tx, "engine_id, id", user, filter, before_id, limit).await?;
    rows.iter().map(|row| Ok((row.try_get(0)?, row.try_get(1)?))).collect()
}

/// What an action did to a set of jobs: those it changed (as they are now; as they were, if deleted), and the
/// running ones whose engine is asked to stop them (cancel).
#[derive(Debug, Default)]
pub struct Acted {
    pub done: Vec<Job>,
    pub requested: Vec<Job>,
}

/// Applies `action` to those of `ids` on `engine` that are `user`'s and in a state it applies to; the caller
/// holds the engine's lock. A retry needs the user still on the engine's whitelist; it puts the job back in the
/// queue now with a fresh budget of attempts, keeping its attempt log.
pub async fn act(
    tx: &impl GenericClient,
    engine: &str,
    user: &str,
    ids: &[String],
    action: JobAction,
    now: i64,
) -> Result<Acted, StoreError> {
    let chosen = "engine_id = $1 AND id = ANY($2::TEXT[]) AND user_id = $3";
    let jobs = |rows: Vec<tokio_postgres::Row>| -> Result<Vec<Job>, StoreError> {
        rows.iter().map(|row| job_from_row(row, engine)).collect()
    };
    let mut acted = Acted::default();
    match action {
        JobAction::Retry => {
            let sql = format!(
                "UPDATE jobs SET status = 'queued', attempts = 0, run_at = $4, hold = 0, finished_at = NULL,
                        claimed_at = NULL, result = NULL, error = NULL, cancel_requested = false, progress = NULL
                 WHERE {chosen} AND status IN ('dead', 'cancelled')
                   AND EXISTS (SELECT 1 FROM allowed_users WHERE engine_id = $1 AND user_id = $3)
                 RETURNING {JOB_COLUMNS}"
            );
            acted.done = jobs(query(tx, &sql, &[&engine, &ids, &user, &now]).await?)?;
        }
        JobAction::Cancel => {
            let sql = format!(
                "UPDATE jobs SET status = 'cancelled', finished_at = $4 WHERE {chosen} AND status = 'queued'
                 RETURNING {JOB_COLUMNS}"
            );
            acted.done = jobs(query(tx, &sql, &[&engine, &ids, &user, &now]).await?)?;
            let sql = format!(
                "UPDATE jobs SET cancel_requested = true WHERE {chosen} AND status = 'running' RETURNING {JOB_COLUMNS}"
            );
            acted.requested = jobs(query(tx, &sql, &[&engine, &ids, &user]).await?)?;
        }
        JobAction::Delete => {
            let sql = format!(
                "DELETE FROM jobs WHERE {chosen} AND status IN ('succeeded', 'dead', 'cancelled')
                 RETURNING {JOB_COLUMNS}"
            );
            acted.done = jobs(query(tx, &sql, &[&engine, &ids, &user]).await?)?;
        }
    }
    Ok(acted)
}

/// The engine and state of one of `user`'s jobs.
pub async fn find(tx: &impl GenericClient, user: &str, id: &str) -> Result<Option<(String, JobStatus)>, StoreError> {
    let row = query_opt(tx, "SELECT engine_id, status FROM jobs WHERE user_id = $1 AND id = $2", &[&user, &id]).await?;
    let Some(row) = row else { return Ok(None) };
    let status: String = row.try_get(1)?;
    let status =
        JobStatus::parse(&status).ok_or_else(|| StoreError::Corrupt(format!("unknown job status {status:?}")))?;
    Ok(Some((row.try_get(0)?, status)))
}

/// Every attempt of one of `user`'s jobs.
pub async fn attempts(tx: &impl GenericClient, user: &str, id: &str) -> Result<Option<Vec<JobAttempt>>, StoreError> {
    let row = query_opt(
        tx,
        "SELECT attempt_log::TEXT, status, lease_owner, claimed_at FROM jobs WHERE user_id = $1 AND id = $2",
        &[&user, &id],
    )
    .await?;
    let Some(row) = row else { return Ok(None) };
    let (log, status): (Option<String>, String) = (row.try_get(0)?, row.try_get(1)?);
    let running = (status == JobStatus::Running.as_str())
        .then(|| Ok::<_, StoreError>(RunningAttempt { worker: row.try_get(2)?, started_at_ms: row.try_get(3)? }))
        .transpose()?;
    attempts_from_log(log.as_deref(), running).map(Some)
}

/// How many of `user`'s jobs are in each state, on one engine or all.
pub async fn counts(tx: &impl GenericClient, user: &str, engine: Option<&str>) -> Result<JobCounts, StoreError> {
    let rows = query(
        tx,
        "SELECT status, count(*) FROM jobs WHERE user_id = $1 AND ($2::TEXT IS NULL OR engine_id = $2) GROUP BY status",
        &[&user, &engine],
    )
    .await?;
    let mut counts = JobCounts::default();
    for row in rows {
        let (status, n): (String, i64) = (row.try_get(0)?, row.try_get(1)?);
        if let Some(status) = JobStatus::parse(&status) {
            counts.add(status, n.max(0) as u64);
        }
    }
    Ok(counts)
}

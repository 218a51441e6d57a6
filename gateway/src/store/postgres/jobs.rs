//! The SQL of the jobs in PostgreSQL: every state transition as one function over a transaction, the same rules
//! as the SQLite shard's (`sqlite/queries.rs`), with `engine_id` in every statement.
//!
//! Lock order, so concurrent transactions never deadlock: the engine's `queue_stats` row first (`lock_engine`;
//! every write that changes a job's state takes it, as the shard's single writer does), then job rows, then the
//! counters the trigger keeps. A heartbeat changes no state and takes only its job's row.

use std::collections::HashMap;

use deadpool_postgres::GenericClient;
use flowork_common::timefmt::format_ms;
use flowork_common::wire::{AttemptEnd, Job, JobStatus};
use serde_json::value::RawValue;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::stats;
use crate::admission::{AdmissionLimits, over};
use crate::store::core::attempt::{after_attempt, attempt_end};
use crate::store::core::created::created_job;
use crate::store::core::hold::hold_for_run_at;
use crate::store::core::stats::Tally;
use crate::store::{AllowedUser, AttemptReport, EnqueueOutcome, FinishOutcome, NewJob, RetryPolicy, StoreError};

/// The columns `job_from_row` reads, in order.
pub const JOB_COLUMNS: &str = "id, user_id, kind, status, payload, attempts, max_attempts, priority, timeout_ms, \
                               run_at, enqueued_at, claimed_at, finished_at, result, error, traceparent, \
                               cancel_requested, progress, concurrency_key";
/// How many columns `JOB_COLUMNS` names.
pub const JOB_COLUMN_COUNT: usize = 19;

/// Runs a statement prepared once per connection.
pub async fn query(tx: &impl GenericClient, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, StoreError> {
    let statement = tx.prepare_cached(sql).await?;
    Ok(tx.query(&statement, params).await?)
}

pub async fn query_opt(
    tx: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<Row>, StoreError> {
    let statement = tx.prepare_cached(sql).await?;
    Ok(tx.query_opt(&statement, params).await?)
}

pub async fn execute(tx: &impl GenericClient, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
    let statement = tx.prepare_cached(sql).await?;
    Ok(tx.execute(&statement, params).await?)
}

fn raw_json(text: String) -> Result<Box<RawValue>, StoreError> {
    RawValue::from_string(text).map_err(|e| StoreError::Task(format!("a stored JSON value is unreadable: {e}")))
}

/// Builds the API's job from a row selected with `JOB_COLUMNS`.
pub fn job_from_row(row: &Row, engine: &str) -> Result<Job, StoreError> {
    let status: String = row.try_get(3)?;
    let status = JobStatus::parse(&status).ok_or_else(|| StoreError::Task(format!("unknown job status {status:?}")))?;
    Ok(Job {
        id: row.try_get(0)?,
        engine: engine.to_string(),
        user: row.try_get(1)?,
        kind: row.try_get(2)?,
        status,
        payload: raw_json(row.try_get(4)?)?,
        attempts: row.try_get::<_, i32>(5)?.max(0) as u32,
        max_attempts: row.try_get::<_, i32>(6)?.max(0) as u32,
        priority: row.try_get(7)?,
        timeout_ms: row.try_get::<_, i64>(8)?.max(0) as u64,
        run_at: format_ms(row.try_get(9)?),
        enqueued_at: format_ms(row.try_get(10)?),
        claimed_at: row.try_get::<_, Option<i64>>(11)?.map(format_ms),
        finished_at: row.try_get::<_, Option<i64>>(12)?.map(format_ms),
        result: row.try_get::<_, Option<String>>(13)?.map(raw_json).transpose()?,
        error: row.try_get(14)?,
        traceparent: row.try_get(15)?,
        cancel_requested: row.try_get(16)?,
        progress: row.try_get::<_, Option<String>>(17)?.map(raw_json).transpose()?,
        concurrency_key: row.try_get(18)?,
        queue_position: None,
        waiting_on: None,
    })
}

/// How long the attempt of a row selected with `JOB_COLUMNS` ran until `now` (its `claimed_at` is kept).
fn ran_ms(row: &Row, now: i64) -> Result<i64, StoreError> {
    Ok(now - row.try_get::<_, Option<i64>>(11)?.unwrap_or(now))
}

/// Takes the engine's write lock (its counter row) and returns its queue depth; an unknown engine has none.
pub async fn lock_engine(tx: &impl GenericClient, engine: &str) -> Result<i64, StoreError> {
    let row = query_opt(tx, "SELECT queued FROM queue_stats WHERE engine_id = $1 FOR UPDATE", &[&engine]).await?;
    row.map(|r| r.get(0)).ok_or_else(|| StoreError::EngineNotFound(engine.to_string()))
}

/// Wakes the claims waiting on `engine`, in every gateway, once the transaction commits.
pub async fn notify_claimable(tx: &impl GenericClient, engine: &str) -> Result<(), StoreError> {
    query(tx, "SELECT pg_notify('flowork_wake', $1)", &[&engine]).await?;
    Ok(())
}

/// Enqueues jobs of one engine, each answered as the SQLite shard answers it: not allowed, over a cap (unless
/// its key replays an accepted job), created, replayed, or key reused. Returns the outcomes in order. When no
/// cap can be crossed, every allowed job goes in with one statement; otherwise one by one, so caps count exactly.
/// The created jobs are counted for `GET /jobs/stats` in the same transaction.
pub async fn enqueue_all(
    tx: &impl GenericClient,
    engine: &str,
    jobs: &[NewJob],
    now: i64,
    caps: AdmissionLimits,
) -> Result<Vec<EnqueueOutcome>, StoreError> {
    let outcomes = admit_and_insert(tx, engine, jobs, now, caps).await?;
    let mut tally = Tally::default();
    for outcome in &outcomes {
        if let EnqueueOutcome::Created(job) = outcome {
            tally.enqueued(&job.user, now, 1);
        }
    }
    stats::add(tx, engine, &tally).await?;
    Ok(outcomes)
}

async fn admit_and_insert(
    tx: &impl GenericClient,
    engine: &str,
    jobs: &[NewJob],
    now: i64,
    caps: AdmissionLimits,
) -> Result<Vec<EnqueueOutcome>, StoreError> {
    let mut depth = lock_engine(tx, engine).await?.max(0) as u64;
    let mut allowed: HashMap<&str, bool> = HashMap::new();
    let mut inflight: HashMap<&str, u64> = HashMap::new();
    for job in jobs {
        if !allowed.contains_key(job.user.as_str()) {
            allowed.insert(&job.user, is_allowed(tx, engine, &job.user).await?);
        }
        if caps.max_user_inflight > 0 && !inflight.contains_key(job.user.as_str()) {
            inflight.insert(&job.user, user_inflight(tx, engine, &job.user).await?);
        }
    }
    let may = |job: &NewJob| allowed.get(job.user.as_str()).copied().unwrap_or(false);
    let insertable: Vec<&NewJob> = jobs.iter().filter(|job| may(job)).collect();
    if room_for_all(&insertable, depth, &inflight, caps) {
        let created = insert_jobs(tx, engine, &insertable, now).await?;
        let mut outcomes = Vec::with_capacity(jobs.len());
        for job in jobs {
            outcomes.push(if !may(job) {
                EnqueueOutcome::NotAllowed
            } else if created.contains(job.id.as_str()) {
                EnqueueOutcome::Created(created_job(job, now)?)
            } else {
                not_inserted(tx, job).await?
            });
        }
        return Ok(outcomes);
    }
    let mut outcomes = Vec::with_capacity(jobs.len());
    for job in jobs {
        if !may(job) {
            outcomes.push(EnqueueOutcome::NotAllowed);
            continue;
        }
        let user_count = inflight.get(job.user.as_str()).copied().unwrap_or(0);
        let refusal = if over(caps.max_queue_depth, depth) {
            Some(EnqueueOutcome::QueueFull { depth })
        } else if over(caps.max_user_inflight, user_count) {
            Some(EnqueueOutcome::UserLimit { inflight: user_count })
        } else {
            None
        };
        if let Some(refusal) = refusal {
            outcomes.push(existing_for_key(tx, job).await?.unwrap_or(refusal));
            continue;
        }
        if insert_jobs(tx, engine, &[job], now).await?.contains(job.id.as_str()) {
            depth += 1;
            if let Some(count) = inflight.get_mut(job.user.as_str()) {
                *count += 1;
            }
            outcomes.push(EnqueueOutcome::Created(created_job(job, now)?));
        } else {
            outcomes.push(not_inserted(tx, job).await?);
        }
    }
    Ok(outcomes)
}

/// Whether no cap could refuse any of `jobs`, every one of them counted.
fn room_for_all(jobs: &[&NewJob], depth: u64, inflight: &HashMap<&str, u64>, caps: AdmissionLimits) -> bool {
    let n = jobs.len() as u64;
    if n == 0 {
        return true;
    }
    if over(caps.max_queue_depth, depth + n - 1) {
        return false;
    }
    if caps.max_user_inflight == 0 {
        return true;
    }
    let mut per_user: HashMap<&str, u64> = HashMap::new();
    for job in jobs {
        *per_user.entry(job.user.as_str()).or_default() += 1;
    }
    per_user
        .iter()
        .all(|(user, count)| !over(caps.max_user_inflight, inflight.get(user).copied().unwrap_or(0) + count - 1))
}

/// The answer for a job whose insert did nothing: its key was used before.
async fn not_inserted(tx: &impl GenericClient, job: &NewJob) -> Result<EnqueueOutcome, StoreError> {
    existing_for_key(tx, job).await?.ok_or_else(|| StoreError::Task("an idempotency conflict without a row".into()))
}

/// Inserts jobs with one statement (arrays unnested, so one prepared statement serves every batch size); the ids
/// it created (a job whose key was used before is skipped).
async fn insert_jobs(
    tx: &impl GenericClient,
    engine: &str,
    jobs: &[&NewJob],
    now: i64,
) -> Result<std::collections::HashSet<String>, StoreError> {
    if jobs.is_empty() {
        return Ok(Default::default());
    }
    let column = |f: fn(&NewJob) -> String| jobs.iter().map(|j| f(j)).collect::<Vec<String>>();
    let optional = |f: fn(&NewJob) -> Option<String>| jobs.iter().map(|j| f(j)).collect::<Vec<Option<String>>>();
    let ids = column(|j| j.id.clone());
    let users = column(|j| j.user.clone());
    let kinds = column(|j| j.kind.clone());
    let payloads = column(|j| j.payload.clone());
    let keys = column(|j| j.idempotency_key.clone());
    let fingerprints = column(|j| j.fingerprint.clone());
    let traceparents = optional(|j| j.traceparent.clone());
    let concurrency_keys = optional(|j| j.concurrency_key.clone());
    let priorities: Vec<i32> = jobs.iter().map(|j| j.priority).collect();
    let run_ats: Vec<i64> = jobs.iter().map(|j| j.run_at_ms).collect();
    let attempts: Vec<i32> = jobs.iter().map(|j| j.max_attempts.min(i32::MAX as u32) as i32).collect();
    let timeouts: Vec<i64> = jobs.iter().map(|j| j.timeout_ms.min(i64::MAX as u64) as i64).collect();
    let holds: Vec<i16> = jobs.iter().map(|j| hold_for_run_at(j.run_at_ms, now) as i16).collect();
    let rows = query(
        tx,
        "INSERT INTO jobs (engine_id, id, user_id, kind, payload, priority, run_at, max_attempts, timeout_ms, status,
                           enqueued_at, idempotency_key, request_fingerprint, traceparent, concurrency_key, hold)
         SELECT $1, j.id, j.user_id, j.kind, j.payload, j.priority, j.run_at, j.max_attempts, j.timeout_ms, 'queued',
                $2, j.key, j.fingerprint, j.traceparent, j.concurrency_key, j.hold
         FROM unnest($3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::INTEGER[], $8::BIGINT[], $9::INTEGER[],
                     $10::BIGINT[], $11::TEXT[], $12::TEXT[], $13::TEXT[], $14::TEXT[], $15::SMALLINT[])
              AS j(id, user_id, kind, payload, priority, run_at, max_attempts, timeout_ms, key, fingerprint,
                   traceparent, concurrency_key, hold)
         ON CONFLICT (engine_id, user_id, idempotency_key) DO NOTHING
         RETURNING id",
        &[
            &engine,
            &now,
            &ids,
            &users,
            &kinds,
            &payloads,
            &priorities,
            &run_ats,
            &attempts,
            &timeouts,
            &keys,
            &fingerprints,
            &traceparents,
            &concurrency_keys,
            &holds,
        ],
    )
    .await?;
    rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
}

async fn is_allowed(tx: &impl GenericClient, engine: &str, user: &str) -> Result<bool, StoreError> {
    let row =
        query_opt(tx, "SELECT 1 FROM allowed_users WHERE engine_id = $1 AND user_id = $2", &[&engine, &user]).await?;
    Ok(row.is_some())
}

async fn user_inflight(tx: &impl GenericClient, engine: &str, user: &str) -> Result<u64, StoreError> {
    let row =
        query_opt(tx, "SELECT inflight FROM user_inflight WHERE engine_id = $1 AND user_id = $2", &[&engine, &user])
            .await?;
    Ok(row.map(|r| r.get::<_, i64>(0)).unwrap_or(0).max(0) as u64)
}

/// The answer for a key already used by this user on this engine: the original job, or a conflict.
pub async fn existing_for_key(tx: &impl GenericClient, job: &NewJob) -> Result<Option<EnqueueOutcome>, StoreError> {
    let sql = format!(
        "SELECT {JOB_COLUMNS}, request_fingerprint FROM jobs
         WHERE engine_id = $1 AND user_id = $2 AND idempotency_key = $3"
    );
    let Some(row) = query_opt(tx, &sql, &[&job.engine, &job.user, &job.idempotency_key]).await? else {
        return Ok(None);
    };
    let fingerprint: String = row.try_get(JOB_COLUMN_COUNT)?;
    Ok(Some(if fingerprint == job.fingerprint {
        EnqueueOutcome::Replayed(job_from_row(&row, &job.engine)?)
    } else {
        EnqueueOutcome::KeyReused
    }))
}

/// Why a lease check failed: the job does not exist here, or the lease is not (or no longer) this token's.
async fn lease_failure(tx: &impl GenericClient, engine: &str, job_id: &str) -> Result<StoreError, StoreError> {
    let exists = query_opt(tx, "SELECT 1 FROM jobs WHERE engine_id = $1 AND id = $2", &[&engine, &job_id]).await?;
    Ok(if exists.is_some() {
        StoreError::LeaseLost(job_id.to_string())
    } else {
        StoreError::JobNotFound(job_id.to_string())
    })
}

/// Extends a live lease held by `lease_token`; returns the new expiry, whether cancellation was asked, and the
/// job as it is now when the heartbeat reported progress (a change a watcher sees).
pub async fn heartbeat(
    tx: &impl GenericClient,
    engine: &str,
    job_id: &str,
    lease_token: &str,
    lease_ms: u64,
    progress: Option<&str>,
    now: i64,
) -> Result<(i64, bool, Option<Job>), StoreError> {
    let expires = now.saturating_add(lease_ms.min(i64::MAX as u64) as i64);
    let sql = format!(
        "UPDATE jobs SET lease_expires_at = $1, progress = coalesce($5, progress)
         WHERE engine_id = $6 AND id = $2 AND status = 'running' AND lease_token = $3 AND lease_expires_at > $4
         RETURNING {JOB_COLUMNS}"
    );
    let row = query_opt(tx, &sql, &[&expires, &job_id, &lease_token, &now, &progress, &engine]).await?;
    let Some(row) = row else { return Err(lease_failure(tx, engine, job_id).await?) };
    let job = job_from_row(&row, engine)?;
    let cancel_requested = job.cancel_requested;
    Ok((expires, cancel_requested, progress.is_some().then_some(job)))
}

/// Whether an engine is registered (its counter row exists), without locking anything.
pub async fn engine_exists(tx: &impl GenericClient, engine: &str) -> Result<(), StoreError> {
    match query_opt(tx, "SELECT 1 FROM queue_stats WHERE engine_id = $1", &[&engine]).await? {
        Some(_) => Ok(()),
        None => Err(StoreError::EngineNotFound(engine.to_string())),
    }
}

const CLEAR_LEASE: &str = "lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL";

/// Records an attempt's outcome if `lease_token` still holds a live lease (fencing), as `after_attempt` decides;
/// the caller holds the engine's lock. Returns the outcome and the job as it is now.
pub async fn finish(
    tx: &impl GenericClient,
    engine: &str,
    report: AttemptReport<'_>,
    now: i64,
    policy: RetryPolicy,
    tally: &mut Tally,
) -> Result<(FinishOutcome, Job), StoreError> {
    let AttemptReport { job_id, lease_token, finish: outcome } = report;
    let held = query_opt(
        tx,
        "SELECT attempts, max_attempts, cancel_requested, kind, user_id, claimed_at FROM jobs
         WHERE engine_id = $1 AND id = $2 AND status = 'running' AND lease_token = $3 AND lease_expires_at > $4
         FOR UPDATE",
        &[&engine, &job_id, &lease_token, &now],
    )
    .await?;
    let Some(held) = held else { return Err(lease_failure(tx, engine, job_id).await?) };
    let (attempts, max_attempts): (i32, i32) = (held.try_get(0)?, held.try_get(1)?);
    let (cancel_requested, kind): (bool, String) = (held.try_get(2)?, held.try_get(3)?);
    let (user, claimed_at): (String, Option<i64>) = (held.try_get(4)?, held.try_get(5)?);
    let (attempts, max_attempts) = (attempts.max(0) as u32, max_attempts.max(0) as u32);
    let next = after_attempt(outcome, attempts, max_attempts, cancel_requested, now, policy, rand::random());
    // PostgreSQL text cannot hold a NUL character; an engine's error message may.
    let error = next.error.as_deref().map(|error| error.replace('\0', "\u{fffd}"));
    let hold = next.hold.map(|hold| hold as i16);
    let (end, attempt_error) = attempt_end(outcome);
    let attempt_error = attempt_error.map(|error| error.replace('\0', "\u{fffd}"));
    let sql = format!(
        "UPDATE jobs SET status = $1, result = coalesce($2, result), error = $3, finished_at = $4,
                run_at = coalesce($5, run_at), hold = coalesce($6, hold),
                attempt_log = coalesce(attempt_log, '[]'::jsonb) || jsonb_build_array(jsonb_build_object(
                    'worker', lease_owner, 'started_at', claimed_at, 'finished_at', $9::BIGINT,
                    'outcome', $10::TEXT, 'error', $11::TEXT)),
                {CLEAR_LEASE}
         WHERE engine_id = $7 AND id = $8 RETURNING {JOB_COLUMNS}"
    );
    let end_of_attempt = end;
    let end = end.as_str();
    let params: [&(dyn ToSql + Sync); 11] = [
        &next.status.as_str(),
        &next.result,
        &error,
        &next.finished_at_ms,
        &next.run_at_ms,
        &hold,
        &engine,
        &job_id,
        &now,
        &end,
        &attempt_error,
    ];
    let row = query_opt(tx, &sql, &params).await?.ok_or_else(|| StoreError::LeaseLost(job_id.to_string()))?;
    tally.finished(&user, now, now - claimed_at.unwrap_or(now), end_of_attempt, next.status);
    Ok((FinishOutcome { status: next.status, run_at_ms: next.run_at_ms, kind }, job_from_row(&row, engine)?))
}

/// Records many successes with one statement: each item is (job id, lease token, result JSON). Returns, by id,
/// the jobs whose lease was still live, as they are now; the others are left for the one-by-one path to explain.
pub async fn finish_succeeded_many(
    tx: &impl GenericClient,
    engine: &str,
    items: &[(&str, &str, Option<&str>)],
    now: i64,
    tally: &mut Tally,
) -> Result<HashMap<String, Job>, StoreError> {
    if items.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<&str> = items.iter().map(|(id, _, _)| *id).collect();
    let tokens: Vec<&str> = items.iter().map(|(_, token, _)| *token).collect();
    let results: Vec<&str> = items.iter().map(|(_, _, result)| result.unwrap_or("null")).collect();
    let sql = format!(
        "UPDATE jobs SET status = 'succeeded', result = item.result, error = NULL, finished_at = $2,
                attempt_log = coalesce(jobs.attempt_log, '[]'::jsonb) || jsonb_build_array(jsonb_build_object(
                    'worker', jobs.lease_owner, 'started_at', jobs.claimed_at, 'finished_at', $2::BIGINT,
                    'outcome', 'succeeded', 'error', NULL)),
                {CLEAR_LEASE}
         FROM (SELECT DISTINCT ON (id) id, token, result
               FROM unnest($3::TEXT[], $4::TEXT[], $5::TEXT[]) AS u(id, token, result)) AS item
         WHERE jobs.engine_id = $1 AND jobs.id = item.id AND jobs.lease_token = item.token
           AND jobs.status = 'running' AND jobs.lease_expires_at > $2
         RETURNING {}",
        JOB_COLUMNS.split(", ").map(|c| format!("jobs.{c}")).collect::<Vec<_>>().join(", ")
    );
    let rows = query(tx, &sql, &[&engine, &now, &ids, &tokens, &results]).await?;
    rows.iter()
        .map(|row| {
            let job = job_from_row(row, engine)?;
            tally.finished(&job.user, now, ran_ms(row, now)?, AttemptEnd::Succeeded, JobStatus::Succeeded);
            Ok((job.id.clone(), job))
        })
        .collect()
}

/// Requeues the engine's jobs whose lease expired (the attempt counts), or marks them `dead` when no attempt is
/// left; the caller holds the engine's lock. Returns the jobs as they are now.
pub async fn reap_expired(
    tx: &impl GenericClient,
    engine: &str,
    now: i64,
    tally: &mut Tally,
) -> Result<Vec<Job>, StoreError> {
    let sql = format!(
        "UPDATE jobs SET
             status = CASE WHEN cancel_requested THEN 'cancelled' WHEN attempts >= max_attempts THEN 'dead' ELSE 'queued' END,
             finished_at = CASE WHEN cancel_requested OR attempts >= max_attempts THEN $1 ELSE NULL END,
             error = CASE WHEN cancel_requested THEN 'cancelled while running: ' ELSE '' END
                     || 'lease expired on attempt ' || attempts || ' of ' || max_attempts
                     || ': the engine stopped heartbeating',
             attempt_log = coalesce(attempt_log, '[]'::jsonb) || jsonb_build_array(jsonb_build_object(
                 'worker', lease_owner, 'started_at', claimed_at, 'finished_at', $1::BIGINT,
                 'outcome', 'lease_expired', 'error', 'the engine stopped heartbeating')),
             run_at = $1, hold = 0, {CLEAR_LEASE}
         WHERE engine_id = $2 AND status = 'running' AND lease_expires_at <= $1
         RETURNING {JOB_COLUMNS}"
    );
    query(tx, &sql, &[&now, &engine])
        .await?
        .iter()
        .map(|row| {
            let job = job_from_row(row, engine)?;
            tally.finished(&job.user, now, ran_ms(row, now)?, AttemptEnd::LeaseExpired, job.status);
            Ok(job)
        })
        .collect()
}

/// Deletes up to `limit` of the engine's jobs that finished before `before_ms`; returns how many.
pub async fn prune_finished(
    tx: &impl GenericClient,
    engine: &str,
    before_ms: i64,
    limit: u32,
) -> Result<u64, StoreError> {
    execute(
        tx,
        "DELETE FROM jobs WHERE engine_id = $1 AND id IN (
             SELECT id FROM jobs WHERE engine_id = $1 AND finished_at IS NOT NULL AND finished_at < $2
             ORDER BY finished_at LIMIT $3)",
        &[&engine, &before_ms, &i64::from(limit)],
    )
    .await
}

/// Adds a user to the whitelist, or marks the owner; returns whether anything changed.
pub async fn allow_user(
    tx: &impl GenericClient,
    engine: &str,
    user: &str,
    is_owner: bool,
    now: i64,
) -> Result<bool, StoreError> {
    let changed = execute(
        tx,
        "INSERT INTO allowed_users AS a (engine_id, user_id, is_owner, added_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (engine_id, user_id) DO UPDATE SET is_owner = true
         WHERE excluded.is_owner AND NOT a.is_owner",
        &[&engine, &user, &is_owner, &now],
    )
    .await?;
    Ok(changed > 0)
}

/// The owner and the whitelist of an engine.
pub async fn allowed_users(tx: &impl GenericClient, engine: &str) -> Result<Vec<AllowedUser>, StoreError> {
    let rows = query(
        tx,
        "SELECT user_id, is_owner, added_at FROM allowed_users WHERE engine_id = $1 ORDER BY is_owner DESC, user_id",
        &[&engine],
    )
    .await?;
    rows.iter()
        .map(|r| Ok(AllowedUser { user: r.try_get(0)?, is_owner: r.try_get(1)?, added_at_ms: r.try_get(2)? }))
        .collect()
}

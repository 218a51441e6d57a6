//! The SQL of one shard: every job state transition as one function over a connection.
//!
//! The writer thread calls the mutating functions inside its group-commit transaction; the read functions run
//! on pooled connections. State guards live in the `WHERE` clauses, so a stale caller changes nothing.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use flowork_common::timefmt::format_ms;
use flowork_common::wire::{AttemptEnd, Job, JobStatus};
use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::value::RawValue;

use super::counters;
use super::parking::hold_for_run_at;
use crate::admission::{AdmissionLimits, over};
use crate::store::core::attempt::{after_attempt, attempt_end};
pub use crate::store::core::created::created_job;
use crate::store::core::stats::Tally;
use crate::store::{
    AllowedUser, AttemptReport, EnqueueOutcome, FinishOutcome, NewJob, QueueCounts, RetryPolicy, StoreError,
};

/// The columns `job_from_row` reads, in order.
pub const JOB_COLUMNS: &str = "id, user_id, kind, status, payload, attempts, max_attempts, priority, timeout_ms, \
                               run_at, enqueued_at, claimed_at, finished_at, result, error, traceparent, \
                               cancel_requested, progress, concurrency_key";
/// How many columns `JOB_COLUMNS` names (the index of the first column a query selects after them).
pub const JOB_COLUMN_COUNT: usize = 19;

fn raw_json(text: String, column: usize) -> rusqlite::Result<Box<RawValue>> {
    RawValue::from_string(text).map_err(|e| rusqlite::Error::FromSqlConversionFailure(column, Type::Text, Box::new(e)))
}

/// Builds the API's job from a row selected with `JOB_COLUMNS`.
pub fn job_from_row(row: &Row<'_>, engine: &str) -> rusqlite::Result<Job> {
    let status: String = row.get(3)?;
    let status = JobStatus::parse(&status).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(3, Type::Text, format!("unknown job status {status:?}").into())
    })?;
    let result: Option<String> = row.get(13)?;
    Ok(Job {
        id: row.get(0)?,
        engine: engine.to_string(),
        user: row.get(1)?,
        kind: row.get(2)?,
        status,
        payload: raw_json(row.get(4)?, 4)?,
        attempts: row.get(5)?,
        max_attempts: row.get(6)?,
        priority: row.get(7)?,
        timeout_ms: row.get::<_, i64>(8)?.max(0) as u64,
        run_at: format_ms(row.get(9)?),
        enqueued_at: format_ms(row.get(10)?),
        claimed_at: row.get::<_, Option<i64>>(11)?.map(format_ms),
        finished_at: row.get::<_, Option<i64>>(12)?.map(format_ms),
        result: result.map(|r| raw_json(r, 13)).transpose()?,
        error: row.get(14)?,
        traceparent: row.get(15)?,
        concurrency_key: row.get(18)?,
        queue_position: None,
        waiting_on: None,
        cancel_requested: row.get(16)?,
        progress: row.get::<_, Option<String>>(17)?.map(|p| raw_json(p, 17)).transpose()?,
    })
}

/// Stores a job unless its (user, idempotency key) is taken; then answers with the original or a conflict.
/// Only the engine's owner and whitelisted users may enqueue, checked in the same transaction.
/// Caps are checked only when reached, and a replay of an accepted job is answered even then.
pub fn enqueue(conn: &Connection, job: &NewJob, now: i64, caps: AdmissionLimits) -> Result<EnqueueOutcome, StoreError> {
    if !is_allowed(conn, &job.user)? {
        return Ok(EnqueueOutcome::NotAllowed);
    }
    if let Some(refusal) = over_caps(conn, &job.user, caps)? {
        return Ok(match existing_for_key(conn, job)? {
            Some(outcome) => outcome,
            None => refusal,
        });
    }
    let inserted = conn
        .prepare_cached(
            "INSERT INTO jobs (id, user_id, kind, payload, priority, run_at, max_attempts, timeout_ms, status,
                               enqueued_at, idempotency_key, request_fingerprint, traceparent, concurrency_key, hold,
                               counted)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'queued', ?9, ?10, ?11, ?12, ?13, ?14, 1)
             ON CONFLICT (user_id, idempotency_key) DO NOTHING",
        )?
        .execute(params![
            job.id,
            job.user,
            job.kind,
            job.payload,
            job.priority,
            job.run_at_ms,
            job.max_attempts,
            job.timeout_ms as i64,
            now,
            job.idempotency_key,
            job.fingerprint,
            job.traceparent,
            job.concurrency_key,
            hold_for_run_at(job.run_at_ms, now),
        ])?;
    if inserted == 1 {
        counters::count_inserted(conn, &[job], now)?;
        return Ok(EnqueueOutcome::Created(created_job(job, now)?));
    }
    not_inserted(conn, job)
}

/// Enqueues the jobs of one write transaction with one INSERT (one statement journal for all of them, where one
/// per job was most of an enqueue's cost), each answered as `enqueue` would. When an admission cap could refuse
/// one of them, or there is only one, they go one by one, so caps count exactly as before. The outer error is a
/// database failure (it breaks the transaction); the inner ones are per job.
pub fn enqueue_many(
    conn: &Connection,
    jobs: &[&NewJob],
    now: i64,
    caps: AdmissionLimits,
) -> Result<Vec<Result<EnqueueOutcome, StoreError>>, StoreError> {
    if jobs.len() < 2 || !room_for_all(conn, jobs, caps)? {
        return jobs
            .iter()
            .map(|job| match enqueue(conn, job, now, caps) {
                Err(error) if error.breaks_transaction() => Err(error),
                outcome => Ok(outcome),
            })
            .collect();
    }
    let mut allowed = HashMap::new();
    for job in jobs {
        if !allowed.contains_key(job.user.as_str()) {
            allowed.insert(job.user.as_str(), is_allowed(conn, &job.user)?);
        }
    }
    let insertable: Vec<&NewJob> =
        jobs.iter().copied().filter(|job| allowed.get(job.user.as_str()).copied().unwrap_or(false)).collect();
    let mut created = HashSet::new();
    let mut rest = insertable.as_slice();
    while !rest.is_empty() {
        // Chunks of a few fixed sizes, so a handful of cached statements serve every batch size.
        let size = BATCH_CHUNKS.iter().copied().find(|size| *size <= rest.len()).unwrap_or(1);
        let (chunk, tail) = rest.split_at(size);
        insert_chunk(conn, chunk, now, &mut created)?;
        rest = tail;
    }
    let inserted: Vec<&NewJob> = insertable.iter().copied().filter(|job| created.contains(&job.id)).collect();
    counters::count_inserted(conn, &inserted, now)?;
    jobs.iter()
        .map(|job| {
            let outcome = if !allowed.get(job.user.as_str()).copied().unwrap_or(false) {
                Ok(EnqueueOutcome::NotAllowed)
            } else if created.contains(&job.id) {
                created_job(job, now).map(EnqueueOutcome::Created)
            } else {
                not_inserted(conn, job)
            };
            match outcome {
                Err(error) if error.breaks_transaction() => Err(error),
                outcome => Ok(outcome),
            }
        })
        .collect()
}

/// Rows per multi-row statement, largest first (the last must be 1).
const BATCH_CHUNKS: [usize; 4] = [64, 16, 4, 1];

/// The text of a multi-row statement for each chunk size, made once per process.
type ChunkSql = OnceLock<[String; BATCH_CHUNKS.len()]>;
static INSERT_SQL: ChunkSql = OnceLock::new();
static SUCCEED_SQL: ChunkSql = OnceLock::new();

/// The statement for a chunk of `rows` (one of `BATCH_CHUNKS`), written by `make` the first time.
fn chunk_sql(cache: &'static ChunkSql, rows: usize, make: impl Fn(usize) -> String) -> &'static str {
    let texts = cache.get_or_init(|| BATCH_CHUNKS.map(&make));
    let index = BATCH_CHUNKS.iter().position(|size| *size == rows).unwrap_or(BATCH_CHUNKS.len() - 1);
    &texts[index]
}

/// Inserts `chunk` with one statement, adding the ids it created (not those whose key was used before).
fn insert_chunk(
    conn: &Connection,
    chunk: &[&NewJob],
    now: i64,
    created: &mut HashSet<String>,
) -> Result<(), StoreError> {
    const COLUMNS: usize = 14;
    let sql = chunk_sql(&INSERT_SQL, chunk.len(), |rows| {
        let values = (0..rows)
            .map(|row| {
                let first = row * COLUMNS + 1;
                let slots: Vec<String> = (first..first + COLUMNS).map(|i| format!("?{i}")).collect();
                format!("({}, 'queued', 1)", slots.join(", "))
            })
            .collect::<Vec<_>>()
            .join(",\n");
        format!(
            "INSERT INTO jobs (id, user_id, kind, payload, priority, run_at, max_attempts, timeout_ms, enqueued_at,
                               idempotency_key, request_fingerprint, traceparent, concurrency_key, hold, status,
                               counted)
             VALUES {values}
             ON CONFLICT (user_id, idempotency_key) DO NOTHING
             RETURNING id"
        )
    });
    let mut stmt = conn.prepare_cached(sql)?;
    for (row, job) in chunk.iter().enumerate() {
        let first = row * COLUMNS + 1;
        let values: [&dyn rusqlite::ToSql; COLUMNS] = [
            &job.id,
            &job.user,
            &job.kind,
            &job.payload,
            &job.priority,
            &job.run_at_ms,
            &job.max_attempts,
            &(job.timeout_ms as i64),
            &now,
            &job.idempotency_key,
            &job.fingerprint,
            &job.traceparent,
            &job.concurrency_key,
            &hold_for_run_at(job.run_at_ms, now),
        ];
        for (offset, value) in values.into_iter().enumerate() {
            stmt.raw_bind_parameter(first + offset, value)?;
        }
    }
    let mut rows = stmt.raw_query();
    while let Some(row) = rows.next()? {
        created.insert(row.get(0)?);
    }
    Ok(())
}

/// Whether no cap could refuse any of `jobs` (checked against the counters as they are, every job counted).
fn room_for_all(conn: &Connection, jobs: &[&NewJob], caps: AdmissionLimits) -> Result<bool, StoreError> {
    let n = jobs.len() as u64;
    if caps.max_queue_depth > 0 {
        let depth: i64 = conn.prepare_cached("SELECT queued FROM queue_stats")?.query_row([], |r| r.get(0))?;
        if over(caps.max_queue_depth, depth.max(0) as u64 + n - 1) {
            return Ok(false);
        }
    }
    if caps.max_user_inflight > 0 {
        let mut per_user: HashMap<&str, u64> = HashMap::new();
        for job in jobs {
            *per_user.entry(job.user.as_str()).or_default() += 1;
        }
        for (user, count) in per_user {
            let inflight: i64 = conn
                .prepare_cached("SELECT inflight FROM user_inflight WHERE user_id = ?1")?
                .query_row([user], |r| r.get(0))
                .optional()?
                .unwrap_or(0);
            if over(caps.max_user_inflight, inflight.max(0) as u64 + count - 1) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Whether `user` may submit to this engine (its owner or on its whitelist).
pub fn is_allowed(conn: &Connection, user: &str) -> Result<bool, StoreError> {
    let allowed = conn
        .prepare_cached("SELECT 1 FROM allowed_users WHERE user_id = ?1")?
        .query_row([user], |_| Ok(()))
        .optional()?;
    Ok(allowed.is_some())
}

/// The answer for a job whose insert did nothing: its key was used before.
fn not_inserted(conn: &Connection, job: &NewJob) -> Result<EnqueueOutcome, StoreError> {
    existing_for_key(conn, job)?.ok_or_else(|| StoreError::Task("an idempotency conflict without a row".into()))
}

/// The answer for a key already used by this user: the original job, or a conflict.
pub fn existing_for_key(conn: &Connection, job: &NewJob) -> Result<Option<EnqueueOutcome>, StoreError> {
    let sql =
        format!("SELECT {JOB_COLUMNS}, request_fingerprint FROM jobs WHERE user_id = ?1 AND idempotency_key = ?2");
    let existing = conn
        .prepare_cached(&sql)?
        .query_row(params![job.user, job.idempotency_key], |row| {
            Ok((job_from_row(row, &job.engine)?, row.get::<_, String>(JOB_COLUMN_COUNT)?))
        })
        .optional()?;
    Ok(existing.map(|(found, fingerprint)| {
        if fingerprint == job.fingerprint { EnqueueOutcome::Replayed(found) } else { EnqueueOutcome::KeyReused }
    }))
}

/// The refusal a new job would get from the shard's caps, if any.
fn over_caps(conn: &Connection, user: &str, caps: AdmissionLimits) -> Result<Option<EnqueueOutcome>, StoreError> {
    if caps.max_queue_depth > 0 {
        let depth: i64 = conn.prepare_cached("SELECT queued FROM queue_stats")?.query_row([], |r| r.get(0))?;
        if over(caps.max_queue_depth, depth.max(0) as u64) {
            return Ok(Some(EnqueueOutcome::QueueFull { depth: depth as u64 }));
        }
    }
    if caps.max_user_inflight > 0 {
        let inflight: i64 = conn
            .prepare_cached("SELECT inflight FROM user_inflight WHERE user_id = ?1")?
            .query_row([user], |r| r.get(0))
            .optional()?
            .unwrap_or(0);
        if over(caps.max_user_inflight, inflight.max(0) as u64) {
            return Ok(Some(EnqueueOutcome::UserLimit { inflight: inflight as u64 }));
        }
    }
    Ok(None)
}

/// Why a lease check failed: the job does not exist here, or the lease is not (or no longer) this token's.
fn lease_failure(conn: &Connection, job_id: &str) -> Result<StoreError, StoreError> {
    let exists =
        conn.prepare_cached("SELECT 1 FROM jobs WHERE id = ?1")?.query_row([job_id], |_| Ok(())).optional()?.is_some();
    Ok(if exists { StoreError::LeaseLost(job_id.to_string()) } else { StoreError::JobNotFound(job_id.to_string()) })
}

/// Extends a live lease held by `lease_token`; returns the new expiry.
pub fn heartbeat(
    conn: &Connection,
    job_id: &str,
    lease_token: &str,
    lease_ms: u64,
    progress: Option<&str>,
    now: i64,
) -> Result<(i64, bool), StoreError> {
    let expires = now.saturating_add(lease_ms as i64);
    let renewed: Option<bool> = conn
        .prepare_cached(
            "UPDATE jobs SET lease_expires_at = ?1, progress = coalesce(?5, progress)
             WHERE id = ?2 AND status = 'running' AND lease_token = ?3 AND lease_expires_at > ?4
             RETURNING cancel_requested",
        )?
        .query_row(params![expires, job_id, lease_token, now, progress], |r| r.get(0))
        .optional()?;
    match renewed {
        Some(cancel_requested) => Ok((expires, cancel_requested)),
        None => Err(lease_failure(conn, job_id)?),
    }
}

/// Records an attempt's outcome, if `lease_token` still holds a live lease (fencing), as `after_attempt` decides.
pub fn finish(
    conn: &Connection,
    report: AttemptReport<'_>,
    now: i64,
    policy: RetryPolicy,
    jitter_unit: f64,
    tally: &mut Tally,
) -> Result<FinishOutcome, StoreError> {
    let AttemptReport { job_id, lease_token, finish: outcome } = report;
    let held: Option<(u32, u32, bool, String, String, Option<i64>)> = conn
        .prepare_cached(
            "SELECT attempts, max_attempts, cancel_requested, kind, user_id, claimed_at FROM jobs
             WHERE id = ?1 AND status = 'running' AND lease_token = ?2 AND lease_expires_at > ?3",
        )?
        .query_row(params![job_id, lease_token, now], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?, row.get(5)?))
        })
        .optional()?;
    let Some((attempts, max_attempts, cancel_requested, kind, user, claimed_at)) = held else {
        return Err(lease_failure(conn, job_id)?);
    };
    let next = after_attempt(outcome, attempts, max_attempts, cancel_requested, now, policy, jitter_unit);
    let (end, attempt_error) = attempt_end(outcome);
    conn.prepare_cached(
        "UPDATE jobs SET status = ?1, result = coalesce(?2, result), error = ?3, finished_at = ?4,
                run_at = coalesce(?5, run_at), hold = coalesce(?6, hold),
                attempt_log = json_insert(coalesce(attempt_log, '[]'), '$[#]',
                    json_object('worker', lease_owner, 'started_at', claimed_at, 'finished_at', ?8,
                                'outcome', ?9, 'error', ?10)),
                lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
         WHERE id = ?7",
    )?
    .execute(params![
        next.status.as_str(),
        next.result,
        next.error,
        next.finished_at_ms,
        next.run_at_ms,
        next.hold,
        job_id,
        now,
        end.as_str(),
        attempt_error,
    ])?;
    tally.finished(&user, now, now - claimed_at.unwrap_or(now), end, next.status);
    Ok(FinishOutcome { status: next.status, run_at_ms: next.run_at_ms, kind })
}

/// Records many successes in one statement (one statement journal for the batch, not one per job) and counts
/// them: each item is (job id, lease token, result JSON). Returns the kind of each job whose lease was still live,
/// by job id; the others are left untouched, for the one-by-one path to explain.
pub fn finish_succeeded_many(
    conn: &Connection,
    items: &[(&str, &str, Option<&str>)],
    now: i64,
    tally: &mut Tally,
) -> Result<HashMap<String, String>, StoreError> {
    if items.is_empty() {
        return Ok(HashMap::new());
    }
    let mut finished = HashMap::with_capacity(items.len());
    let mut moved = Vec::with_capacity(items.len());
    let mut rest = items;
    while !rest.is_empty() {
        let size = BATCH_CHUNKS.iter().copied().find(|size| *size <= rest.len()).unwrap_or(1);
        let (chunk, tail) = rest.split_at(size);
        let sql = chunk_sql(&SUCCEED_SQL, chunk.len(), |rows| {
            let values = vec!["(?, ?, ?)"; rows].join(", ");
            format!(
                "UPDATE jobs SET status = 'succeeded', result = item.column3, error = NULL, finished_at = ?1,
                        attempt_log = json_insert(coalesce(attempt_log, '[]'), '$[#]',
                            json_object('worker', lease_owner, 'started_at', claimed_at, 'finished_at', ?1,
                                        'outcome', 'succeeded', 'error', NULL)),
                        lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, counted = counted + 1
                 FROM (VALUES {values}) AS item
                 WHERE jobs.id = item.column1 AND jobs.lease_token = item.column2
                   AND jobs.status = 'running' AND jobs.lease_expires_at > ?1
                 RETURNING jobs.id, jobs.kind, jobs.user_id, jobs.concurrency_key, jobs.claimed_at"
            )
        });
        let mut stmt = conn.prepare_cached(sql)?;
        stmt.raw_bind_parameter(1, now)?;
        for (row, (id, token, result)) in chunk.iter().enumerate() {
            stmt.raw_bind_parameter(row * 3 + 2, id)?;
            stmt.raw_bind_parameter(row * 3 + 3, token)?;
            stmt.raw_bind_parameter(row * 3 + 4, result.unwrap_or("null"))?;
        }
        let mut rows = stmt.raw_query();
        while let Some(row) = rows.next()? {
            finished.insert(row.get(0)?, row.get(1)?);
            let (user, claimed_at) = (row.get::<_, String>(2)?, row.get::<_, Option<i64>>(4)?);
            tally.finished(&user, now, now - claimed_at.unwrap_or(now), AttemptEnd::Succeeded, JobStatus::Succeeded);
            moved.push((user, row.get::<_, Option<String>>(3)?));
        }
        rest = tail;
    }
    counters::count_succeeded(conn, moved.iter().map(|(user, key)| (user.as_str(), key.as_deref())))?;
    Ok(finished)
}

/// Puts back leases whose claim answer never reached the engine, without counting the attempt.
pub fn release(conn: &Connection, leases: &[(String, String)]) -> Result<u64, StoreError> {
    let mut stmt = conn.prepare_cached(
        "UPDATE jobs SET status = 'queued', attempts = attempts - 1, claimed_at = NULL, hold = 0,
                lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
         WHERE id = ?1 AND lease_token = ?2 AND status = 'running'",
    )?;
    let mut released = 0;
    for (id, token) in leases {
        released += stmt.execute(params![id, token])? as u64;
    }
    Ok(released)
}

/// Requeues jobs whose lease expired (the attempt counts), or marks them `dead` when no attempt is left; returns
/// them as (id, kind).
pub fn reap_expired(conn: &Connection, now: i64, tally: &mut Tally) -> Result<Vec<(String, String)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "UPDATE jobs SET
                 status = CASE WHEN cancel_requested = 1 THEN 'cancelled' WHEN attempts >= max_attempts THEN 'dead' ELSE 'queued' END,
                 finished_at = CASE WHEN cancel_requested = 1 OR attempts >= max_attempts THEN ?1 ELSE NULL END,
                 error = CASE WHEN cancel_requested = 1 THEN 'cancelled while running: ' ELSE '' END
                     || 'lease expired on attempt ' || attempts || ' of ' || max_attempts
                         || ': the engine stopped heartbeating',
                 attempt_log = json_insert(coalesce(attempt_log, '[]'), '$[#]',
                     json_object('worker', lease_owner, 'started_at', claimed_at, 'finished_at', ?1,
                                 'outcome', 'lease_expired', 'error', 'the engine stopped heartbeating')),
                 run_at = ?1, hold = 0, lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
             WHERE status = 'running' AND lease_expires_at <= ?1
             RETURNING id, kind, user_id, claimed_at, status",
    )?;
    let mut rows = stmt.query([now])?;
    let mut reaped = Vec::new();
    while let Some(row) = rows.next()? {
        let (user, claimed_at, status) =
            (row.get::<_, String>(2)?, row.get::<_, Option<i64>>(3)?, row.get::<_, String>(4)?);
        let status = JobStatus::parse(&status).unwrap_or(JobStatus::Queued);
        tally.finished(&user, now, now - claimed_at.unwrap_or(now), AttemptEnd::LeaseExpired, status);
        reaped.push((row.get(0)?, row.get(1)?));
    }
    Ok(reaped)
}

/// The earliest moment something may become claimable: a delayed job's `run_at`, a lease's expiry, or the end
/// of an open breaker's cool-down.
pub fn next_due(conn: &Connection, breaker_cooldown_ms: u64) -> Result<Option<i64>, StoreError> {
    // Delayed jobs only: runnable ones were just looked at, parked ones wait for a key or a breaker.
    let run_at: Option<i64> = conn
        .prepare_cached("SELECT min(run_at) FROM jobs WHERE status = 'queued' AND hold = 1")?
        .query_row([], |row| row.get(0))?;
    let cooled: Option<i64> = conn
        .prepare_cached(
            "SELECT min(opened_at) + ?1 FROM (SELECT opened_at FROM kind_breakers WHERE state = 'open'
                                             UNION ALL SELECT opened_at FROM user_breakers WHERE state = 'open')",
        )?
        .query_row([breaker_cooldown_ms as i64], |row| row.get(0))?;
    let run_at = match (run_at, cooled) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let expiry: Option<i64> = conn
        .prepare_cached("SELECT min(lease_expires_at) FROM jobs WHERE status = 'running'")?
        .query_row([], |row| row.get(0))?;
    Ok(match (run_at, expiry) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    })
}

/// Pauses or resumes the engine; returns whether anything changed.
pub fn set_paused(conn: &Connection, paused: bool, now: i64) -> Result<bool, StoreError> {
    let changed = conn
        .prepare_cached("UPDATE engine_state SET paused = ?1, changed_at = ?2 WHERE paused <> ?1")?
        .execute(params![paused, now])?;
    Ok(changed > 0)
}

pub fn is_paused(conn: &Connection) -> Result<bool, StoreError> {
    Ok(conn.prepare_cached("SELECT paused FROM engine_state")?.query_row([], |r| r.get(0))?)
}

/// One job of `user` by id.
pub fn get(conn: &Connection, engine: &str, user: &str, job_id: &str) -> Result<Option<Job>, StoreError> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1 AND user_id = ?2");
    Ok(conn.prepare_cached(&sql)?.query_row(params![job_id, user], |row| job_from_row(row, engine)).optional()?)
}

/// How many jobs are queued and running.
pub fn counts(conn: &Connection) -> Result<QueueCounts, StoreError> {
    let (queued, running): (i64, i64) = conn
        .prepare_cached("SELECT queued, running FROM queue_stats")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(QueueCounts { queued: queued.max(0) as u64, running: running.max(0) as u64, ..QueueCounts::default() })
}

/// Adds a user to the whitelist, or marks the owner; returns whether anything changed.
pub fn allow_user(conn: &Connection, user: &str, is_owner: bool, now: i64) -> Result<bool, StoreError> {
    let changed = conn
        .prepare_cached(
            "INSERT INTO allowed_users (user_id, is_owner, added_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (user_id) DO UPDATE SET is_owner = max(is_owner, excluded.is_owner)
             WHERE excluded.is_owner > allowed_users.is_owner",
        )?
        .execute(params![user, is_owner, now])?;
    Ok(changed > 0)
}

/// Removes a whitelisted user (never the owner); returns whether anything changed.
pub fn disallow_user(conn: &Connection, user: &str) -> Result<bool, StoreError> {
    let changed =
        conn.prepare_cached("DELETE FROM allowed_users WHERE user_id = ?1 AND is_owner = 0")?.execute([user])?;
    Ok(changed > 0)
}

/// The owner and the whitelist of this engine.
pub fn allowed_users(conn: &Connection) -> Result<Vec<AllowedUser>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT user_id, is_owner, added_at FROM allowed_users ORDER BY is_owner DESC, user_id")?;
    let rows =
        stmt.query_map([], |r| Ok(AllowedUser { user: r.get(0)?, is_owner: r.get(1)?, added_at_ms: r.get(2)? }))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Deletes up to `limit` finished jobs that finished before `before_ms` (their idempotency keys go with them),
/// then returns the freed pages to the file system; returns how many jobs were deleted.
pub fn prune_finished(conn: &Connection, before_ms: i64, limit: u32) -> Result<u64, StoreError> {
    let deleted = conn
        .prepare_cached(
            "DELETE FROM jobs WHERE id IN (
                 SELECT id FROM jobs WHERE status IN ('succeeded', 'dead', 'cancelled') AND finished_at < ?1
                 ORDER BY finished_at LIMIT ?2)",
        )?
        .execute(params![before_ms, limit])?;
    if deleted > 0 {
        // Shards use auto_vacuum=INCREMENTAL: give the free pages back, so the file stops growing.
        conn.execute_batch("PRAGMA incremental_vacuum")?;
    }
    Ok(deleted as u64)
}

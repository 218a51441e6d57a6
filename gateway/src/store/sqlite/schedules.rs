//! The SQL of cron schedules in a shard, and firing their due ticks as jobs.
//!
//! A tick's job has the idempotency key `schedule:<id>:<tick ms>` and is enqueued in the same transaction that
//! moves the schedule's `next_run_at` past it, so each tick gives exactly one job, whichever gateway process
//! fires it and however often it restarts.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::queries;
use crate::admission::AdmissionLimits;
use crate::cron::CronSchedule;
use crate::store::core::schedule::{FIRE_BATCH, MAX_PER_USER, plan_ticks, refusal, tick_job};
use crate::store::core::stats::Tally;
use crate::store::{EnqueueOutcome, MissedTicks, Schedule, ScheduleOutcome, StoreError};

const COLUMNS: &str = "id, user_id, kind, payload, cron, timezone, missed, priority, max_attempts, timeout_ms, \
                       concurrency_key, next_run_at, last_run_at, last_job_id, last_error, created_at";

fn from_row(row: &Row<'_>, engine: &str) -> rusqlite::Result<Schedule> {
    let missed: String = row.get(6)?;
    Ok(Schedule {
        id: row.get(0)?,
        engine: engine.to_string(),
        user: row.get(1)?,
        kind: row.get(2)?,
        payload: row.get(3)?,
        cron: row.get(4)?,
        timezone: row.get(5)?,
        missed: MissedTicks::parse(&missed).unwrap_or(MissedTicks::Skip),
        priority: row.get(7)?,
        max_attempts: row.get(8)?,
        timeout_ms: row.get::<_, i64>(9)?.max(1) as u64,
        concurrency_key: row.get(10)?,
        next_run_at_ms: row.get(11)?,
        last_run_at_ms: row.get(12)?,
        last_job_id: row.get(13)?,
        last_error: row.get(14)?,
        created_at_ms: row.get(15)?,
    })
}

/// Stores a schedule of an allowed user, within the per-user cap.
pub fn create(conn: &Connection, schedule: &Schedule) -> Result<ScheduleOutcome, StoreError> {
    let allowed = conn
        .prepare_cached("SELECT 1 FROM allowed_users WHERE user_id = ?1")?
        .query_row([&schedule.user], |_| Ok(()))
        .optional()?;
    if allowed.is_none() {
        return Ok(ScheduleOutcome::NotAllowed);
    }
    let count: i64 = conn
        .prepare_cached("SELECT count(*) FROM schedules WHERE user_id = ?1")?
        .query_row([&schedule.user], |r| r.get(0))?;
    if count.max(0) as u64 >= MAX_PER_USER {
        return Ok(ScheduleOutcome::TooMany(count as u64));
    }
    conn.prepare_cached(
        "INSERT INTO schedules (id, user_id, kind, payload, cron, timezone, missed, priority, max_attempts,
                                timeout_ms, concurrency_key, next_run_at, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        schedule.id,
        schedule.user,
        schedule.kind,
        schedule.payload,
        schedule.cron,
        schedule.timezone,
        schedule.missed.as_str(),
        schedule.priority,
        schedule.max_attempts,
        schedule.timeout_ms as i64,
        schedule.concurrency_key,
        schedule.next_run_at_ms,
        schedule.created_at_ms,
    ])?;
    Ok(ScheduleOutcome::Created(Box::new(schedule.clone())))
}

pub fn list(conn: &Connection, engine: &str, user: &str) -> Result<Vec<Schedule>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM schedules WHERE user_id = ?1 ORDER BY id"))?;
    let rows = stmt.query_map([user], |row| from_row(row, engine))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub fn delete(conn: &Connection, user: &str, id: &str) -> Result<bool, StoreError> {
    let deleted =
        conn.prepare_cached("DELETE FROM schedules WHERE id = ?1 AND user_id = ?2")?.execute(params![id, user])?;
    Ok(deleted > 0)
}

/// Whether any schedule of this shard has a tick due.
pub fn any_due(conn: &Connection, now: i64) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM schedules WHERE next_run_at <= ?1 LIMIT 1")?
        .query_row([now], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Fires the due ticks of this shard's schedules; returns how many jobs were created.
pub fn fire_due(
    conn: &Connection,
    engine: &str,
    now: i64,
    grace_ms: u64,
    caps: AdmissionLimits,
    tally: &mut Tally,
) -> Result<u64, StoreError> {
    let due: Vec<Schedule> = {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM schedules WHERE next_run_at <= ?1 ORDER BY next_run_at LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![now, FIRE_BATCH], |row| from_row(row, engine))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
    };
    let mut created = 0;
    for schedule in due {
        let cron = match CronSchedule::parse(&schedule.cron, &schedule.timezone) {
            Ok(cron) => cron,
            Err(error) => {
                // Accepted once, refused now (say, a zone gone from the system's database): stop, and say why.
                record(conn, &schedule.id, i64::MAX, None, None, Some(&error.to_string()))?;
                continue;
            }
        };
        let plan = plan_ticks(&cron, schedule.next_run_at_ms, schedule.missed, now, grace_ms);
        let (mut last_tick, mut last_job, mut last_error) = (None, None, None);
        for tick in &plan.fire {
            match queries::enqueue(conn, &tick_job(&schedule, *tick, now), now, caps)? {
                EnqueueOutcome::Created(job) => {
                    created += 1;
                    tally.enqueued(&job.user, now, 1);
                    (last_tick, last_job, last_error) = (Some(*tick), Some(job.id), None);
                }
                EnqueueOutcome::Replayed(job) => (last_tick, last_job) = (Some(*tick), Some(job.id)),
                refused => last_error = Some(refusal(&refused)),
            }
        }
        record(conn, &schedule.id, plan.next_run_at, last_tick, last_job.as_deref(), last_error.as_deref())?;
    }
    Ok(created)
}

fn record(
    conn: &Connection,
    id: &str,
    next_run_at: i64,
    last_tick: Option<i64>,
    last_job: Option<&str>,
    last_error: Option<&str>,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE schedules SET next_run_at = ?2, last_run_at = coalesce(?3, last_run_at),
                              last_job_id = coalesce(?4, last_job_id), last_error = ?5
         WHERE id = ?1",
    )?
    .execute(params![id, next_run_at, last_tick, last_job, last_error])?;
    Ok(())
}

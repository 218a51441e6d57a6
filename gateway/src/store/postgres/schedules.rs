//! Cron schedules in PostgreSQL: the rules of `sqlite/schedules.rs` (one job per tick, keyed
//! `schedule:<id>:<tick ms>`, enqueued in the transaction that moves the schedule on), per engine.

use deadpool_postgres::GenericClient;
use flowork_common::wire::Job;
use tokio_postgres::Row;

use super::jobs::{enqueue_all, execute, query, query_opt};
use crate::admission::AdmissionLimits;
use crate::cron::CronSchedule;
use crate::store::core::schedule::{FIRE_BATCH, MAX_PER_USER, plan_ticks, refusal, tick_job};
use crate::store::{EnqueueOutcome, MissedTicks, Schedule, ScheduleOutcome, StoreError};

const COLUMNS: &str = "id, user_id, kind, payload, cron, timezone, missed, priority, max_attempts, timeout_ms, \
                       concurrency_key, next_run_at, last_run_at, last_job_id, last_error, created_at, engine_id";

fn from_row(row: &Row) -> Result<Schedule, StoreError> {
    let missed: String = row.try_get(6)?;
    Ok(Schedule {
        id: row.try_get(0)?,
        user: row.try_get(1)?,
        kind: row.try_get(2)?,
        payload: row.try_get(3)?,
        cron: row.try_get(4)?,
        timezone: row.try_get(5)?,
        missed: MissedTicks::parse(&missed).unwrap_or(MissedTicks::Skip),
        priority: row.try_get(7)?,
        max_attempts: row.try_get::<_, i32>(8)?.max(1) as u32,
        timeout_ms: row.try_get::<_, i64>(9)?.max(1) as u64,
        concurrency_key: row.try_get(10)?,
        next_run_at_ms: row.try_get(11)?,
        last_run_at_ms: row.try_get(12)?,
        last_job_id: row.try_get(13)?,
        last_error: row.try_get(14)?,
        created_at_ms: row.try_get(15)?,
        engine: row.try_get(16)?,
    })
}

/// Stores a schedule of an allowed user, within the per-user cap; the caller holds the engine's lock.
pub async fn create(tx: &impl GenericClient, schedule: &Schedule) -> Result<ScheduleOutcome, StoreError> {
    let engine = &schedule.engine;
    let allowed =
        query_opt(tx, "SELECT 1 FROM allowed_users WHERE engine_id = $1 AND user_id = $2", &[engine, &schedule.user])
            .await?;
    if allowed.is_none() {
        return Ok(ScheduleOutcome::NotAllowed);
    }
    let count: i64 = query_opt(
        tx,
        "SELECT count(*) FROM schedules WHERE engine_id = $1 AND user_id = $2",
        &[engine, &schedule.user],
    )
    .await?
    .map(|r| r.get(0))
    .unwrap_or(0);
    if count.max(0) as u64 >= MAX_PER_USER {
        return Ok(ScheduleOutcome::TooMany(count as u64));
    }
    execute(
        tx,
        "INSERT INTO schedules (engine_id, id, user_id, kind, payload, cron, timezone, missed, priority, max_attempts,
                                timeout_ms, concurrency_key, next_run_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        &[
            engine,
            &schedule.id,
            &schedule.user,
            &schedule.kind,
            &schedule.payload,
            &schedule.cron,
            &schedule.timezone,
            &schedule.missed.as_str(),
            &schedule.priority,
            &(schedule.max_attempts.min(i32::MAX as u32) as i32),
            &(schedule.timeout_ms.min(i64::MAX as u64) as i64),
            &schedule.concurrency_key,
            &schedule.next_run_at_ms,
            &schedule.created_at_ms,
        ],
    )
    .await?;
    Ok(ScheduleOutcome::Created(Box::new(schedule.clone())))
}

/// The user's schedules on every engine.
pub async fn list(tx: &impl GenericClient, user: &str) -> Result<Vec<Schedule>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM schedules WHERE user_id = $1 ORDER BY id");
    query(tx, &sql, &[&user]).await?.iter().map(from_row).collect()
}

pub async fn delete(tx: &impl GenericClient, user: &str, id: &str) -> Result<bool, StoreError> {
    Ok(execute(tx, "DELETE FROM schedules WHERE id = $1 AND user_id = $2", &[&id, &user]).await? > 0)
}

pub async fn any_due(tx: &impl GenericClient, engine: &str, now: i64) -> Result<bool, StoreError> {
    let row =
        query_opt(tx, "SELECT 1 FROM schedules WHERE engine_id = $1 AND next_run_at <= $2 LIMIT 1", &[&engine, &now])
            .await?;
    Ok(row.is_some())
}

/// Fires the engine's due ticks; the caller holds the engine's lock. Returns the jobs created.
pub async fn fire_due(
    tx: &impl GenericClient,
    engine: &str,
    now: i64,
    grace_ms: u64,
    caps: AdmissionLimits,
) -> Result<Vec<Job>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM schedules WHERE engine_id = $1 AND next_run_at <= $2 ORDER BY next_run_at LIMIT $3
         FOR UPDATE"
    );
    let due =
        query(tx, &sql, &[&engine, &now, &FIRE_BATCH]).await?.iter().map(from_row).collect::<Result<Vec<_>, _>>()?;
    let mut created = Vec::new();
    for schedule in due {
        let cron = match CronSchedule::parse(&schedule.cron, &schedule.timezone) {
            Ok(cron) => cron,
            Err(error) => {
                record(tx, &schedule, i64::MAX, None, None, Some(&error.to_string())).await?;
                continue;
            }
        };
        let plan = plan_ticks(&cron, schedule.next_run_at_ms, schedule.missed, now, grace_ms);
        let (mut last_tick, mut last_job, mut last_error) = (None, None, None);
        for tick in &plan.fire {
            let outcome = enqueue_all(tx, engine, &[tick_job(&schedule, *tick, now)], now, caps).await?.pop();
            match outcome {
                Some(EnqueueOutcome::Created(job)) => {
                    (last_tick, last_job, last_error) = (Some(*tick), Some(job.id.clone()), None);
                    created.push(job);
                }
                Some(EnqueueOutcome::Replayed(job)) => (last_tick, last_job) = (Some(*tick), Some(job.id)),
                Some(refused) => last_error = Some(refusal(&refused)),
                None => {}
            }
        }
        record(tx, &schedule, plan.next_run_at, last_tick, last_job.as_deref(), last_error.as_deref()).await?;
    }
    Ok(created)
}

async fn record(
    tx: &impl GenericClient,
    schedule: &Schedule,
    next_run_at: i64,
    last_tick: Option<i64>,
    last_job: Option<&str>,
    last_error: Option<&str>,
) -> Result<(), StoreError> {
    execute(
        tx,
        "UPDATE schedules SET next_run_at = $3, last_run_at = coalesce($4, last_run_at),
                              last_job_id = coalesce($5, last_job_id), last_error = $6
         WHERE engine_id = $1 AND id = $2",
        &[&schedule.engine, &schedule.id, &next_run_at, &last_tick, &last_job, &last_error],
    )
    .await?;
    Ok(())
}

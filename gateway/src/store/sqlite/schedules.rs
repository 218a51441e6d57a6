//! The SQL of cron schedules in a shard, and firing their due ticks as jobs.
//!
//! A tick's job has the idempotency key `schedule:<id>:<tick ms>` and is enqueued in the same transaction that
//! moves the schedule's `next_run_at` past it, so each tick gives exactly one job, whichever gateway process
//! fires it and however often it restarts.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::queries;
use crate::admission::AdmissionLimits;
use crate::cron::CronSchedule;
use crate::store::{EnqueueOutcome, MissedTicks, NewJob, Schedule, ScheduleOutcome, StoreError};

/// Most schedules one user may have on one engine.
pub const MAX_PER_USER: u64 = 100;
/// Most schedules fired in one transaction; the rest fire in the next pass.
pub(crate) const FIRE_BATCH: i64 = 100;
/// Most on-time ticks of one schedule fired in one pass (a per-second schedule after a long pause).
const MAX_TICKS_PER_PASS: usize = 1_000;

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

/// Which ticks of a schedule to fire now, and where it goes on from.
#[derive(Debug, PartialEq, Eq)]
pub struct TickPlan {
    pub fire: Vec<i64>,
    pub next_run_at: i64,
}

/// Plans the ticks due at `now`: ticks within `grace_ms` fire one job each; older ones were missed and follow
/// the schedule's policy.
pub fn plan_ticks(cron: &CronSchedule, next_run_at: i64, missed: MissedTicks, now: i64, grace_ms: u64) -> TickPlan {
    let cutoff = now.saturating_sub(grace_ms as i64);
    let mut fire = Vec::new();
    let mut tick = Some(next_run_at);
    if next_run_at < cutoff {
        // Ticks before the cutoff were missed; the first on-time tick is the first at or after it.
        let first_on_time = cron.next_after(cutoff - 1);
        if missed == MissedTicks::CatchUpOne {
            let latest_missed = cron.previous_before(cutoff).filter(|t| *t >= next_run_at).unwrap_or(next_run_at);
            fire.push(latest_missed);
        }
        tick = first_on_time;
    }
    while let Some(t) = tick {
        if t > now || fire.len() >= MAX_TICKS_PER_PASS {
            break;
        }
        fire.push(t);
        tick = cron.next_after(t);
    }
    let next_run_at = match tick {
        Some(t) if t > now => t,
        // Too many ticks for one pass: skip to the future.
        Some(_) => cron.next_after(now).unwrap_or(i64::MAX),
        None => i64::MAX,
    };
    TickPlan { fire, next_run_at }
}

/// The job a schedule's tick enqueues.
pub(crate) fn tick_job(schedule: &Schedule, tick: i64, now: i64) -> NewJob {
    NewJob {
        id: uuid::Uuid::now_v7().to_string(),
        engine: schedule.engine.clone(),
        user: schedule.user.clone(),
        kind: schedule.kind.clone(),
        payload: schedule.payload.clone(),
        priority: schedule.priority,
        run_at_ms: now,
        max_attempts: schedule.max_attempts,
        timeout_ms: schedule.timeout_ms,
        idempotency_key: format!("schedule:{}:{tick}", schedule.id),
        // Every tick of a schedule is the same request; the key tells ticks apart.
        fingerprint: format!("schedule:{}", schedule.id),
        traceparent: None,
        concurrency_key: schedule.concurrency_key.clone(),
    }
}

/// Fires the due ticks of this shard's schedules; returns how many jobs were created.
pub fn fire_due(
    conn: &Connection,
    engine: &str,
    now: i64,
    grace_ms: u64,
    caps: AdmissionLimits,
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

pub(crate) fn refusal(outcome: &EnqueueOutcome) -> String {
    match outcome {
        EnqueueOutcome::NotAllowed => "the schedule's user is no longer allowed on this engine".into(),
        EnqueueOutcome::QueueFull { depth } => format!("the engine's queue was full ({depth} jobs); tick skipped"),
        EnqueueOutcome::UserLimit { inflight } => format!("the user had {inflight} jobs in flight; tick skipped"),
        EnqueueOutcome::KeyReused => "the tick's idempotency key was taken by another request".into(),
        EnqueueOutcome::Created(_) | EnqueueOutcome::Replayed(_) => String::new(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z, a minute boundary

    fn every_second() -> CronSchedule {
        CronSchedule::parse("* * * * * *", "UTC").unwrap()
    }

    #[test]
    fn on_time_ticks_each_fire_once() {
        let plan = plan_ticks(&every_second(), T0, MissedTicks::Skip, T0 + 2_500, 60_000);
        assert_eq!(plan, TickPlan { fire: vec![T0, T0 + 1_000, T0 + 2_000], next_run_at: T0 + 3_000 });
    }

    #[test]
    fn missed_ticks_are_skipped_or_caught_up_once() {
        // Down from T0 to T0 + 100 s, with a 10 s grace: ticks before T0 + 90 s were missed.
        let now = T0 + 100_000;
        let skip = plan_ticks(&every_second(), T0, MissedTicks::Skip, now, 10_000);
        assert_eq!(skip.fire.first(), Some(&(T0 + 90_000)));
        assert_eq!(skip.fire.len(), 11);
        let catch_up = plan_ticks(&every_second(), T0, MissedTicks::CatchUpOne, now, 10_000);
        assert_eq!(catch_up.fire.first(), Some(&(T0 + 89_000)), "the latest missed tick, once");
        assert_eq!(catch_up.fire.len(), 12);
        assert_eq!(catch_up.next_run_at, now + 1_000);
    }

    #[test]
    fn a_long_outage_of_a_slow_schedule_catches_up_one() {
        let hourly = CronSchedule::parse("0 * * * *", "UTC").unwrap();
        let now = T0 + 5 * 3_600_000 + 60_000;
        let plan = plan_ticks(&hourly, T0, MissedTicks::CatchUpOne, now, 30_000);
        assert_eq!(plan, TickPlan { fire: vec![T0 + 5 * 3_600_000], next_run_at: T0 + 6 * 3_600_000 });
        let skipped = plan_ticks(&hourly, T0, MissedTicks::Skip, now, 30_000);
        assert_eq!(skipped, TickPlan { fire: vec![], next_run_at: T0 + 6 * 3_600_000 });
    }
}

//! The rules of cron schedules both drivers follow: which ticks fire, the job each tick enqueues, and what a
//! refused tick records.

use crate::cron::CronSchedule;
use crate::store::{EnqueueOutcome, MissedTicks, NewJob, Schedule};

/// Most schedules one user may have on one engine.
pub const MAX_PER_USER: u64 = 100;
/// Most schedules fired in one transaction; the rest fire in the next pass.
pub const FIRE_BATCH: i64 = 100;
/// Most on-time ticks of one schedule fired in one pass (a per-second schedule after a long pause).
const MAX_TICKS_PER_PASS: usize = 1_000;

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
pub fn tick_job(schedule: &Schedule, tick: i64, now: i64) -> NewJob {
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

/// Why a tick made no job, as the schedule's `last_error` says it.
pub fn refusal(outcome: &EnqueueOutcome) -> String {
    match outcome {
        EnqueueOutcome::NotAllowed => "the schedule's user is no longer allowed on this engine".into(),
        EnqueueOutcome::QueueFull { depth } => format!("the engine's queue was full ({depth} jobs); tick skipped"),
        EnqueueOutcome::UserLimit { inflight } => format!("the user had {inflight} jobs in flight; tick skipped"),
        EnqueueOutcome::KeyReused => "the tick's idempotency key was taken by another request".into(),
        EnqueueOutcome::Created(_) | EnqueueOutcome::Replayed(_) => String::new(),
    }
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

//! Cron schedules: create, delete, and enqueue the jobs of due ticks.

use rusqlite::Connection;

use super::{Batch, ShardOp};
use crate::store::sqlite::schedules;
use crate::store::{Schedule, ScheduleOutcome, StoreError};

/// Create a schedule (or answer the existing one for its key).
pub struct CreateSchedule(pub Box<Schedule>);

/// Delete `user`'s schedule `id`; answers whether it existed.
pub struct DeleteSchedule {
    pub user: String,
    pub id: String,
}

/// Enqueue the jobs of due cron ticks; ticks older than `grace_ms` count as missed. Answers how many jobs.
pub struct FireSchedules {
    pub grace_ms: u64,
}

impl ShardOp for CreateSchedule {
    type Output = ScheduleOutcome;

    fn apply(&self, conn: &Connection, _batch: &mut Batch<'_>) -> Result<ScheduleOutcome, StoreError> {
        schedules::create(conn, &self.0)
    }
}

impl ShardOp for DeleteSchedule {
    type Output = bool;

    fn apply(&self, conn: &Connection, _batch: &mut Batch<'_>) -> Result<bool, StoreError> {
        schedules::delete(conn, &self.user, &self.id)
    }
}

impl ShardOp for FireSchedules {
    type Output = u64;

    fn apply(&self, conn: &Connection, batch: &mut Batch<'_>) -> Result<u64, StoreError> {
        let context = batch.context;
        schedules::fire_due(conn, &context.engine, batch.now, self.grace_ms, context.caps, batch.tally)
    }

    fn wakes(fired: &u64) -> bool {
        *fired > 0
    }
}

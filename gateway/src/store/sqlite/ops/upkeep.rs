//! Upkeep the background loops ask for: reaping lapsed leases and pruning finished jobs.

use rusqlite::Connection;

use super::{Batch, ShardOp};
use crate::store::StoreError;
use crate::store::core::stats::KEPT_MS;
use crate::store::sqlite::{breakers, queries, stats};

/// Requeue (or bury) jobs whose lease expired; answers how many.
pub struct ReapExpired;

/// Delete up to `limit` jobs that finished before `before_ms` (and statistics older than a day); answers how many
/// jobs.
pub struct Prune {
    pub before_ms: i64,
    pub limit: u32,
}

impl ShardOp for ReapExpired {
    type Output = u64;

    fn apply(&self, conn: &Connection, batch: &mut Batch<'_>) -> Result<u64, StoreError> {
        let lapsed = queries::reap_expired(conn, batch.now, batch.tally)?;
        breakers::record_lapsed(conn, &lapsed, batch.now, batch.context.breaker)?;
        Ok(lapsed.len() as u64)
    }

    fn wakes(reaped: &u64) -> bool {
        *reaped > 0
    }
}

impl ShardOp for Prune {
    type Output = u64;

    fn apply(&self, conn: &Connection, batch: &mut Batch<'_>) -> Result<u64, StoreError> {
        stats::prune(conn, batch.now - KEPT_MS)?;
        queries::prune_finished(conn, self.before_ms, self.limit)
    }
}

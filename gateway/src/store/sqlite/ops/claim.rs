//! Claims (the neutral sequence in `store/core/claim.rs` on this shard) and heartbeats on a lease.

use flowork_common::wire::Lease;
use rusqlite::Connection;

use super::{Batch, ShardOp};
use crate::store::StoreError;
use crate::store::core::claim::{claim, run_ready};
use crate::store::core::fair::ClaimBy;
use crate::store::sqlite::claim_steps::ShardClaim;
use crate::store::sqlite::queries;

/// Lease up to `max` runnable jobs to `worker` for `lease_ms`.
pub struct Claim {
    pub max: u32,
    pub lease_ms: u64,
    pub worker: String,
}

/// The leases, and when the next job becomes due if nothing was claimable.
#[derive(Debug)]
pub struct Claimed {
    pub leases: Vec<Lease>,
    pub next_due_ms: Option<i64>,
}

impl ShardOp for Claim {
    type Output = Claimed;

    fn apply(&self, conn: &Connection, batch: &mut Batch<'_>) -> Result<Claimed, StoreError> {
        let context = batch.context;
        let by = ClaimBy {
            engine: &context.engine,
            worker: &self.worker,
            max: self.max,
            lease_ms: self.lease_ms,
            now: batch.now,
        };
        let mut steps = ShardClaim(conn);
        let done = run_ready(claim(&mut steps, &by, context.breaker, &context.metrics, batch.tally))?;
        Ok(Claimed { leases: done.leases, next_due_ms: done.next_due_ms })
    }

    fn leases(output: Claimed) -> Vec<(String, String)> {
        output.leases.into_iter().map(|lease| (lease.job.id, lease.lease_token)).collect()
    }
}

/// Extend a lease, optionally reporting progress.
pub struct Heartbeat {
    pub job_id: String,
    pub lease_token: String,
    pub lease_ms: u64,
    pub progress: Option<String>,
}

impl ShardOp for Heartbeat {
    /// The new lease expiry, and whether cancellation was requested.
    type Output = (i64, bool);

    fn apply(&self, conn: &Connection, batch: &mut Batch<'_>) -> Result<(i64, bool), StoreError> {
        queries::heartbeat(conn, &self.job_id, &self.lease_token, self.lease_ms, self.progress.as_deref(), batch.now)
    }

    /// A heartbeat that reports no progress changes nothing a watcher sees.
    fn unseen(&self) -> bool {
        self.progress.is_none()
    }
}

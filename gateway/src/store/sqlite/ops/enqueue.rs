//! Enqueues: one job, or a batch for the same shard. Their rows are written with every other enqueue of the
//! transaction in one statement (see `writer.rs`); these take their outcomes in order.

use rusqlite::Connection;

use super::{Batch, ShardOp};
use crate::store::{EnqueueOutcome, NewJob, StoreError};

/// One job.
pub struct Enqueue(pub NewJob);

/// Several jobs for this shard, committed in the same transaction.
pub struct EnqueueMany(pub Vec<NewJob>);

fn created(outcome: &EnqueueOutcome) -> bool {
    matches!(outcome, EnqueueOutcome::Created(_))
}

impl ShardOp for Enqueue {
    type Output = EnqueueOutcome;

    fn apply(&self, _conn: &Connection, batch: &mut Batch<'_>) -> Result<EnqueueOutcome, StoreError> {
        batch.enqueued.next().unwrap_or_else(|| Err(StoreError::Task("an enqueue without an outcome".into())))
    }

    fn jobs(&self) -> &[NewJob] {
        std::slice::from_ref(&self.0)
    }

    fn wakes(output: &EnqueueOutcome) -> bool {
        created(output)
    }
}

impl ShardOp for EnqueueMany {
    type Output = Vec<EnqueueOutcome>;

    fn apply(&self, _conn: &Connection, batch: &mut Batch<'_>) -> Result<Vec<EnqueueOutcome>, StoreError> {
        // All of this request's outcomes are taken before any is looked at, so an early error cannot leave some of
        // them to the next request.
        let outcomes: Vec<_> = (&mut *batch.enqueued).take(self.0.len()).collect();
        outcomes.into_iter().collect()
    }

    fn jobs(&self) -> &[NewJob] {
        &self.0
    }

    fn wakes(output: &Vec<EnqueueOutcome>) -> bool {
        output.iter().any(created)
    }
}

//! The writes a shard's writer thread applies, one type per write with its own answer, grouped by family:
//! enqueues, claims and heartbeats, finishes, actions on jobs, upkeep, settings and schedules.

pub mod act;
pub mod claim;
pub mod enqueue;
pub mod finish;
pub mod schedules;
pub mod settings;
pub mod upkeep;

use rusqlite::Connection;

use super::writer::WriterContext;
use crate::store::changes::JobChange;
use crate::store::core::stats::Tally;
use crate::store::{EnqueueOutcome, NewJob, StoreError};

/// What one transaction's writes share.
pub struct Batch<'a> {
    pub now: i64,
    pub context: &'a WriterContext,
    /// The outcomes of the batch's enqueues, in request order (all written first, in one statement).
    pub enqueued: &'a mut dyn Iterator<Item = Result<EnqueueOutcome, StoreError>>,
    /// What the transaction stores, claims and finishes, for `GET /jobs/stats`.
    pub tally: &'a mut Tally,
}

/// One write to a shard and what it answers.
pub trait ShardOp: Send + 'static {
    type Output: Send + 'static;

    /// Applies the write in the batch's transaction. Business refusals (lease lost, key reused) are `Err`s that
    /// leave the transaction whole; only a database failure breaks it (`StoreError::breaks_transaction`).
    fn apply(&self, conn: &Connection, batch: &mut Batch<'_>) -> Result<Self::Output, StoreError>;

    /// The jobs this write enqueues, which the writer inserts with the batch's other enqueues.
    fn jobs(&self) -> &[NewJob] {
        &[]
    }

    /// Whether the committed write may let a waiting claim find work.
    fn wakes(_output: &Self::Output) -> bool {
        false
    }

    /// Whether the write changes nothing a watcher of the job sees (its touched rows are not published).
    fn unseen(&self) -> bool {
        false
    }

    /// The jobs the write deleted, published as they were (their rows are gone).
    fn deleted(&self, _output: &Self::Output) -> Vec<JobChange> {
        Vec::new()
    }

    /// The leases an answer holds, put back when its caller has gone: (job id, lease token).
    fn leases(_output: Self::Output) -> Vec<(String, String)> {
        Vec::new()
    }
}

//! Retry, cancel or delete a user's jobs.

use flowork_common::wire::JobStatus;
use rusqlite::Connection;

use super::{Batch, ShardOp};
use crate::store::changes::JobChange;
use crate::store::sqlite::operate::{self, Acted};
use crate::store::{JobAction, StoreError};

/// Apply `action` to those of `ids` that are `user`'s and in a state the action applies to.
pub struct Act {
    pub user: String,
    pub ids: Vec<String>,
    pub action: JobAction,
}

impl ShardOp for Act {
    type Output = Acted;

    fn apply(&self, conn: &Connection, batch: &mut Batch<'_>) -> Result<Acted, StoreError> {
        operate::act(conn, &batch.context.engine, &self.user, &self.ids, self.action, batch.now)
    }

    fn wakes(output: &Acted) -> bool {
        output.done.iter().any(|job| job.status == JobStatus::Queued)
    }

    fn deleted(&self, output: &Acted) -> Vec<JobChange> {
        // Only a delete's jobs are gone; a retry's and a cancel's are read back like any touched row.
        match self.action {
            JobAction::Delete => output.done.iter().cloned().map(JobChange::deleted).collect(),
            JobAction::Retry | JobAction::Cancel => Vec::new(),
        }
    }
}

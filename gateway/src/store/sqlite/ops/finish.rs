//! Finishes: an attempt's outcome, one or many, each feeding its kind's breaker.

use flowork_common::wire::JobStatus;
use rand::random;
use rusqlite::Connection;

use super::{Batch, ShardOp};
use crate::store::breakers::Signal;
use crate::store::sqlite::{breakers, queries};
use crate::store::{AttemptReport, Finish as Outcome, FinishOutcome, StoreError};

/// One attempt's outcome, on its lease.
pub struct Finish {
    pub job_id: String,
    pub lease_token: String,
    pub finish: Outcome,
}

/// Several outcomes: (job id, lease token, outcome).
pub struct FinishMany(pub Vec<(String, String, Outcome)>);

fn requeued(outcome: &FinishOutcome) -> bool {
    outcome.status == JobStatus::Queued
}

impl ShardOp for Finish {
    type Output = FinishOutcome;

    fn apply(&self, conn: &Connection, batch: &mut Batch<'_>) -> Result<FinishOutcome, StoreError> {
        finish_one(conn, &self.job_id, &self.lease_token, &self.finish, batch)
    }

    fn wakes(output: &FinishOutcome) -> bool {
        requeued(output)
    }
}

impl ShardOp for FinishMany {
    type Output = Vec<Result<FinishOutcome, StoreError>>;

    fn apply(&self, conn: &Connection, batch: &mut Batch<'_>) -> Result<Self::Output, StoreError> {
        // Successes go in one statement; the rest (failures, cancellations, and successes whose lease was lost, to
        // say why) one by one.
        let items = &self.0;
        let successes = Outcome::successes(items);
        let mut succeeded = queries::finish_succeeded_many(conn, &successes, batch.now, batch.tally)?;
        let mut outcomes = Vec::with_capacity(items.len());
        for (job_id, lease_token, finish) in items {
            // Taken out once: the same job twice in one batch finishes once; the second learns its lease is gone.
            if let Some(kind) = succeeded.remove(job_id) {
                breakers::record(conn, &kind, job_id, Signal::Worked, batch.now, batch.context.breaker)?;
                outcomes.push(Ok(FinishOutcome { status: JobStatus::Succeeded, run_at_ms: None, kind }));
                continue;
            }
            match finish_one(conn, job_id, lease_token, finish, batch) {
                // A database failure breaks the transaction; only refusals are per item.
                Err(error) if error.breaks_transaction() => return Err(error),
                outcome => outcomes.push(outcome),
            }
        }
        Ok(outcomes)
    }

    fn wakes(output: &Self::Output) -> bool {
        output.iter().any(|outcome| outcome.as_ref().is_ok_and(requeued))
    }
}

/// Records one attempt's outcome and feeds its kind's breaker.
fn finish_one(
    conn: &Connection,
    job_id: &str,
    lease_token: &str,
    finish: &Outcome,
    batch: &mut Batch<'_>,
) -> Result<FinishOutcome, StoreError> {
    let report = AttemptReport { job_id, lease_token, finish };
    let outcome = queries::finish(conn, report, batch.now, batch.context.retry, random(), batch.tally)?;
    if let Some(signal) = finish.breaker_signal() {
        breakers::record(conn, &outcome.kind, job_id, signal, batch.now, batch.context.breaker)?;
    }
    Ok(outcome)
}

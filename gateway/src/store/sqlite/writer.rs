//! The single writer of one shard: a dedicated thread that commits concurrent writes together (group commit).
//!
//! Requests queue on a channel; the thread takes everything waiting (up to `MAX_BATCH`), applies it in one
//! `BEGIN IMMEDIATE` transaction and answers each caller after the commit. Under load many enqueues, claims and
//! finishes share one commit, so throughput is not bound by one commit per request; when idle a lone request
//! commits at once. SQLite never runs on a tokio worker thread.

use std::sync::Arc;
use std::thread;

use flowork_common::clock::Clock;
use flowork_common::wire::{JobStatus, Lease};
use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{Notify, mpsc, oneshot};

use super::claim_steps::ShardClaim;
use super::touched::{self, Touched};
use super::{breakers, fair, operate, parking, queries, schedules, stats};
use crate::admission::AdmissionLimits;
use crate::observability::queue_metrics::QueueMetrics;
use crate::store::breakers::Signal;
use crate::store::changes::{ChangeFeed, JobChange};
use crate::store::core::claim as core_claim;
use crate::store::core::fair::ClaimBy;
use crate::store::core::stats::{KEPT_MS, Tally};
use crate::store::{
    AttemptReport, BreakerPolicy, EnqueueOutcome, Finish, FinishOutcome, JobAction, NewJob, RetryPolicy, Schedule,
    ScheduleOutcome, StoreError,
};

/// The most requests committed in one transaction: bounds the latency one commit adds to its first caller.
const MAX_BATCH: usize = 512;
/// Requests waiting for the writer before callers wait to queue.
const CHANNEL_CAPACITY: usize = 8_192;

/// One write to a shard.
#[derive(Debug)]
pub enum WriteOp {
    Enqueue(NewJob),
    /// Several jobs for this shard, committed in the same transaction.
    EnqueueMany(Vec<NewJob>),
    Claim {
        max: u32,
        lease_ms: u64,
        worker: String,
    },
    Heartbeat {
        job_id: String,
        lease_token: String,
        lease_ms: u64,
        progress: Option<String>,
    },
    Finish {
        job_id: String,
        lease_token: String,
        finish: Finish,
    },
    /// Several outcomes: (job id, lease token, outcome).
    FinishMany(Vec<(String, String, Finish)>),
    /// Retry, cancel or delete those of `ids` that are `user`'s and in a state the action applies to.
    Act {
        user: String,
        ids: Vec<String>,
        action: JobAction,
    },
    ReapExpired,
    /// Delete up to `limit` jobs that finished before `before_ms`.
    Prune {
        before_ms: i64,
        limit: u32,
    },
    AllowUser {
        user: String,
        is_owner: bool,
    },
    SetPaused(bool),
    DisallowUser {
        user: String,
    },
    SetWeight {
        user: String,
        weight: i64,
    },
    SetKeyLimit {
        key: String,
        limit: Option<i64>,
    },
    SetDefaultKeyLimit(Option<i64>),
    CreateSchedule(Box<Schedule>),
    DeleteSchedule {
        user: String,
        id: String,
    },
    /// Enqueue the jobs of due cron ticks; ticks older than `grace_ms` count as missed.
    FireSchedules {
        grace_ms: u64,
    },
}

/// What a write did; the variant matches the `WriteOp`.
// Moved once through a oneshot channel; boxing the job would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum WriteDone {
    Enqueued(EnqueueOutcome),
    EnqueuedMany(Vec<EnqueueOutcome>),
    /// The leases, and when the next job becomes due if nothing was claimable.
    Claimed {
        leases: Vec<Lease>,
        next_due_ms: Option<i64>,
    },
    /// The new lease expiry, and whether cancellation was requested.
    Heartbeat(i64, bool),
    Finished(FinishOutcome),
    FinishedMany(Vec<Result<FinishOutcome, StoreError>>),
    Acted(operate::Acted),
    Reaped(u64),
    Pruned(u64),
    /// Whether a whitelist edit changed anything.
    Changed(bool),
    ScheduleCreated(ScheduleOutcome),
    /// How many jobs due cron ticks created.
    Fired(u64),
}

struct WriteRequest {
    op: WriteOp,
    reply: oneshot::Sender<Result<WriteDone, StoreError>>,
}

/// Handle to a shard's writer thread; cheap to clone. The thread stops when the last handle is dropped.
#[derive(Clone)]
pub struct ShardWriter {
    engine: Arc<str>,
    tx: mpsc::Sender<WriteRequest>,
}

/// What the writer thread needs besides its connection.
pub struct WriterContext {
    pub engine: Arc<str>,
    pub clock: Arc<dyn Clock>,
    pub retry: RetryPolicy,
    /// Woken after a commit that made jobs claimable, so waiting claims retry at once.
    pub wake: Arc<Notify>,
    pub caps: AdmissionLimits,
    pub breaker: BreakerPolicy,
    /// Where claims are counted, for the drain rate and queue latency.
    pub metrics: Arc<QueueMetrics>,
    /// Where the jobs committed transactions touched are published (only while someone listens).
    pub changes: Arc<ChangeFeed>,
    /// Touched with `wake`, for the claims other gateway processes on this data directory hold.
    pub wake_file: super::wake_file::WakeFile,
}

impl ShardWriter {
    /// Starts the writer thread over an open, migrated connection.
    pub fn spawn(conn: Connection, context: WriterContext) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let engine = context.engine.clone();
        thread::Builder::new()
            .name(format!("shard-writer-{engine}"))
            .spawn(move || run(conn, rx, context))
            .map_err(|source| StoreError::Io { path: format!("writer thread for {engine}"), source })?;
        Ok(Self { engine, tx })
    }

    /// Queues a write and waits for its commit.
    pub async fn write(&self, op: WriteOp) -> Result<WriteDone, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(WriteRequest { op, reply })
            .await
            .map_err(|_| StoreError::WriterStopped(self.engine.to_string()))?;
        answer.await.map_err(|_| StoreError::WriterStopped(self.engine.to_string()))?
    }
}

fn run(mut conn: Connection, mut rx: mpsc::Receiver<WriteRequest>, context: WriterContext) {
    let touched = match Touched::install(&conn) {
        Ok(touched) => Some(touched),
        Err(error) => {
            tracing::error!(engine = %context.engine, %error, "no live job events from this shard");
            None
        }
    };
    let mut batch: Vec<WriteRequest> = Vec::with_capacity(MAX_BATCH);
    let mut changed: Vec<(i64, bool)> = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let mut wake = false;
        let results = match commit_batch(&mut conn, &batch, &context, touched.as_ref()) {
            Ok(committed) => {
                wake |= committed.released_parked;
                changed.extend(committed.touched);
                committed.results
            }
            // One request broke the shared transaction (disk full, corruption, a bug): nothing of it was
            // committed, so give every request its own transaction and let only the broken one fail.
            Err(error) => {
                tracing::warn!(engine = %context.engine, %error, size = batch.len(), "group commit failed; retrying one by one");
                batch
                    .iter()
                    .map(|request| {
                        match commit_batch(&mut conn, std::slice::from_ref(request), &context, touched.as_ref()) {
                            Ok(mut one) => {
                                wake |= one.released_parked;
                                changed.extend(std::mem::take(&mut one.touched));
                                one.results.pop().unwrap_or(Err(StoreError::WriterStopped(context.engine.to_string())))
                            }
                            Err(error) => Err(error),
                        }
                    })
                    .collect()
            }
        };
        let mut undelivered: Vec<(String, String)> = Vec::new();
        let mut deleted: Vec<JobChange> = Vec::new();
        for (request, result) in batch.drain(..).zip(results) {
            wake |= makes_work_claimable(&result);
            if let (WriteOp::Act { action: JobAction::Delete, .. }, Ok(WriteDone::Acted(acted))) =
                (&request.op, &result)
                && context.changes.is_live()
            {
                deleted.extend(acted.done.iter().cloned().map(JobChange::deleted));
            }
            if let Err(Ok(WriteDone::Claimed { leases, .. })) = request.reply.send(result) {
                // The claimer went away (client disconnected) after we leased: put the jobs straight back.
                undelivered.extend(leases.into_iter().map(|l| (l.job.id, l.lease_token)));
            }
        }
        if !undelivered.is_empty() {
            if let Some(touched) = &touched {
                touched.clear();
            }
            match release_undelivered(&mut conn, &undelivered) {
                Ok(released) => {
                    changed.extend(touched.as_ref().map(Touched::take).unwrap_or_default());
                    tracing::info!(engine = %context.engine, released, "released leases of an abandoned claim");
                    wake = true;
                }
                Err(error) => {
                    tracing::warn!(engine = %context.engine, %error, "could not release abandoned leases; they will expire")
                }
            }
        }
        if wake {
            context.wake.notify_waiters();
            context.wake_file.touch();
        }
        if !changed.is_empty() && context.changes.is_live() {
            match touched::read_changes(&conn, &context.engine, &changed) {
                Ok(changes) => context.changes.publish(changes),
                Err(error) => {
                    tracing::warn!(engine = %context.engine, %error, "could not read changed jobs for live events")
                }
            }
        }
        changed.clear();
        // The touched rows are read back above; deleted ones are gone, so they are published as they were.
        context.changes.publish(std::mem::take(&mut deleted));
    }
}

/// Whether a committed write may let a waiting claim find work.
fn makes_work_claimable(result: &Result<WriteDone, StoreError>) -> bool {
    match result {
        Ok(WriteDone::Enqueued(EnqueueOutcome::Created(_))) => true,
        Ok(WriteDone::EnqueuedMany(outcomes)) => outcomes.iter().any(|o| matches!(o, EnqueueOutcome::Created(_))),
        Ok(WriteDone::Finished(outcome)) => outcome.status == flowork_common::wire::JobStatus::Queued,
        Ok(WriteDone::FinishedMany(outcomes)) => {
            outcomes.iter().any(|o| o.as_ref().is_ok_and(|o| o.status == flowork_common::wire::JobStatus::Queued))
        }
        Ok(WriteDone::Reaped(n)) => *n > 0,
        // A resume (or any pause change) lets waiting claims look again.
        Ok(WriteDone::Changed(true)) => true,
        Ok(WriteDone::Fired(n)) => *n > 0,
        Ok(WriteDone::Acted(acted)) => acted.done.iter().any(|job| job.status == JobStatus::Queued),
        _ => false,
    }
}

/// What one committed transaction answered, and whether it made parked jobs runnable.
struct Committed {
    results: Vec<Result<WriteDone, StoreError>>,
    released_parked: bool,
    /// The rows of `jobs` the transaction inserted or updated.
    touched: Vec<(i64, bool)>,
}

/// Applies requests in one transaction. Business refusals (lease lost, key reused) are per-request results;
/// only a database failure aborts the transaction.
fn commit_batch(
    conn: &mut Connection,
    batch: &[WriteRequest],
    context: &WriterContext,
    touched: Option<&Touched>,
) -> Result<Committed, StoreError> {
    let now = context.clock.now_ms();
    let _span = tracing::info_span!("shard.transaction", engine = %context.engine, writes = batch.len()).entered();
    if let Some(touched) = touched {
        touched.clear();
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // What the transaction stores, claims and finishes, for `GET /jobs/stats`: written once, before the commit.
    let mut tally = Tally::default();
    // Every enqueue of the batch (single jobs and job batches) goes in first, in one statement.
    let enqueued = enqueue_all(&tx, batch, now, context)?;
    for outcome in &enqueued {
        if let Ok(EnqueueOutcome::Created(job)) = outcome {
            tally.enqueued(&job.user, now, 1);
        }
    }
    let mut enqueued = enqueued.into_iter();
    let mut results = Vec::with_capacity(batch.len());
    for request in batch {
        let mark = touched.map(Touched::mark);
        let result = apply(&tx, &request.op, now, context, &mut enqueued, &mut tally);
        // A heartbeat that reports no progress changes nothing a watcher sees.
        if let (Some(touched), Some(mark), WriteOp::Heartbeat { progress: None, .. }) = (touched, mark, &request.op) {
            touched.forget_since(mark);
        }
        match result {
            Err(error) if error.breaks_transaction() => return Err(error),
            result => results.push(result),
        }
    }
    // Keys that got room in this batch (a job finished, was cancelled or was retried later) release parked jobs.
    let released = parking::release_parked_keys(&tx)?;
    stats::add(&tx, &tally)?;
    tx.commit()?;
    let touched = touched.map(Touched::take).unwrap_or_default();
    Ok(Committed { results, released_parked: released > 0, touched })
}

/// The outcomes of every job the batch enqueues, in request order.
fn enqueue_all(
    conn: &Connection,
    batch: &[WriteRequest],
    now: i64,
    context: &WriterContext,
) -> Result<Vec<Result<EnqueueOutcome, StoreError>>, StoreError> {
    let jobs: Vec<&NewJob> = batch
        .iter()
        .flat_map(|request| match &request.op {
            WriteOp::Enqueue(job) => std::slice::from_ref(job),
            WriteOp::EnqueueMany(jobs) => jobs.as_slice(),
            _ => &[],
        })
        .collect();
    queries::enqueue_many(conn, &jobs, now, context.caps)
}

fn missing_outcome() -> Result<EnqueueOutcome, StoreError> {
    Err(StoreError::Task("an enqueue without an outcome".into()))
}

/// Applies one request; its enqueues' outcomes come from `enqueued` (the batch's enqueues, already written).
fn apply(
    conn: &Connection,
    op: &WriteOp,
    now: i64,
    context: &WriterContext,
    enqueued: &mut impl Iterator<Item = Result<EnqueueOutcome, StoreError>>,
    tally: &mut Tally,
) -> Result<WriteDone, StoreError> {
    match op {
        WriteOp::Enqueue(_) => enqueued.next().unwrap_or_else(missing_outcome).map(WriteDone::Enqueued),
        WriteOp::EnqueueMany(jobs) => {
            // All of this request's outcomes are taken before any is looked at, so an early error cannot leave
            // some of them to the next request.
            let outcomes: Vec<_> = enqueued.by_ref().take(jobs.len()).collect();
            outcomes.into_iter().collect::<Result<Vec<_>, _>>().map(WriteDone::EnqueuedMany)
        }
        WriteOp::SetPaused(paused) => queries::set_paused(conn, *paused, now).map(WriteDone::Changed),
        WriteOp::Claim { max, lease_ms, worker } => {
            let by = ClaimBy { engine: &context.engine, worker, max: *max, lease_ms: *lease_ms, now };
            let mut steps = ShardClaim(conn);
            let done =
                core_claim::run_ready(core_claim::claim(&mut steps, &by, context.breaker, &context.metrics, tally))?;
            Ok(WriteDone::Claimed { leases: done.leases, next_due_ms: done.next_due_ms })
        }
        WriteOp::Heartbeat { job_id, lease_token, lease_ms, progress } => {
            queries::heartbeat(conn, job_id, lease_token, *lease_ms, progress.as_deref(), now)
                .map(|(expires, cancel)| WriteDone::Heartbeat(expires, cancel))
        }
        WriteOp::Finish { job_id, lease_token, finish } => {
            finish_one(conn, job_id, lease_token, finish, now, context, tally).map(WriteDone::Finished)
        }
        WriteOp::FinishMany(items) => {
            // Successes go in one statement; the rest (failures, cancellations, and successes whose lease was
            // lost, to say why) one by one.
            let successes = Finish::successes(items);
            let mut succeeded = queries::finish_succeeded_many(conn, &successes, now, tally)?;
            let mut outcomes = Vec::with_capacity(items.len());
            for (job_id, lease_token, finish) in items {
                // Taken out once: the same job twice in one batch finishes once; the second learns its lease is gone.
                if let Some(kind) = succeeded.remove(job_id) {
                    breakers::record(conn, &kind, job_id, Signal::Worked, now, context.breaker)?;
                    outcomes.push(Ok(FinishOutcome { status: JobStatus::Succeeded, run_at_ms: None, kind }));
                    continue;
                }
                match finish_one(conn, job_id, lease_token, finish, now, context, tally) {
                    // A database failure breaks the transaction; only refusals are per item.
                    Err(error) if error.breaks_transaction() => return Err(error),
                    outcome => outcomes.push(outcome),
                }
            }
            Ok(WriteDone::FinishedMany(outcomes))
        }
        WriteOp::Act { user, ids, action } => {
            operate::act(conn, &context.engine, user, ids, *action, now).map(WriteDone::Acted)
        }
        WriteOp::ReapExpired => {
            let lapsed = queries::reap_expired(conn, now, tally)?;
            breakers::record_lapsed(conn, &lapsed, now, context.breaker)?;
            Ok(WriteDone::Reaped(lapsed.len() as u64))
        }
        WriteOp::Prune { before_ms, limit } => {
            stats::prune(conn, now - KEPT_MS)?;
            queries::prune_finished(conn, *before_ms, *limit).map(WriteDone::Pruned)
        }
        WriteOp::AllowUser { user, is_owner } => {
            queries::allow_user(conn, user, *is_owner, now).map(WriteDone::Changed)
        }
        WriteOp::DisallowUser { user } => queries::disallow_user(conn, user).map(WriteDone::Changed),
        WriteOp::SetWeight { user, weight } => fair::set_weight(conn, user, *weight).map(WriteDone::Changed),
        WriteOp::SetKeyLimit { key, limit } => parking::set_key_limit(conn, key, *limit).map(WriteDone::Changed),
        WriteOp::SetDefaultKeyLimit(limit) => parking::set_default_key_limit(conn, *limit).map(WriteDone::Changed),
        WriteOp::CreateSchedule(schedule) => schedules::create(conn, schedule).map(WriteDone::ScheduleCreated),
        WriteOp::DeleteSchedule { user, id } => schedules::delete(conn, user, id).map(WriteDone::Changed),
        WriteOp::FireSchedules { grace_ms } => {
            schedules::fire_due(conn, &context.engine, now, *grace_ms, context.caps, tally).map(WriteDone::Fired)
        }
    }
}

/// Records one attempt's outcome and feeds its kind's breaker.
fn finish_one(
    conn: &Connection,
    job_id: &str,
    lease_token: &str,
    finish: &Finish,
    now: i64,
    context: &WriterContext,
    tally: &mut Tally,
) -> Result<FinishOutcome, StoreError> {
    let unit: f64 = rand::random();
    let report = AttemptReport { job_id, lease_token, finish };
    let outcome = queries::finish(conn, report, now, context.retry, unit, tally)?;
    if let Some(signal) = finish.breaker_signal() {
        breakers::record(conn, &outcome.kind, job_id, signal, now, context.breaker)?;
    }
    Ok(outcome)
}

fn release_undelivered(conn: &mut Connection, leases: &[(String, String)]) -> Result<u64, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let released = queries::release(&tx, leases)?;
    parking::release_parked_keys(&tx)?;
    tx.commit()?;
    Ok(released)
}

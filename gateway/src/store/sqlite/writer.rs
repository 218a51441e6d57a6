//! The single writer of one shard: a dedicated thread that commits concurrent writes together (group commit).
//!
//! Requests queue on a channel; the thread takes everything waiting (up to `MAX_BATCH`), applies it in one
//! `BEGIN IMMEDIATE` transaction and answers each caller after the commit. Under load many enqueues, claims and
//! finishes share one commit, so throughput is not bound by one commit per request; when idle a lone request
//! commits at once. SQLite never runs on a tokio worker thread. The writes themselves, each a type with its own
//! answer, are in `ops/`.

use std::sync::Arc;
use std::thread;

use flowork_common::clock::Clock;
use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{Notify, mpsc, oneshot};

use super::ops::{Batch, ShardOp};
use super::touched::{self, Touched};
use super::{parking, queries, stats};
use crate::admission::AdmissionLimits;
use crate::observability::queue_metrics::QueueMetrics;
use crate::store::changes::{ChangeFeed, JobChange};
use crate::store::core::stats::Tally;
use crate::store::{BreakerPolicy, EnqueueOutcome, NewJob, RetryPolicy, StoreError};

/// The most requests committed in one transaction: bounds the latency one commit adds to its first caller.
const MAX_BATCH: usize = 512;
/// Requests waiting for the writer before callers wait to queue.
const CHANNEL_CAPACITY: usize = 8_192;

/// A queued write of any type, as the writer thread handles it.
trait Pending: Send {
    fn jobs(&self) -> &[NewJob];
    /// Applies the write, keeping its answer; `Err` only when the failure breaks the transaction.
    fn apply(&mut self, conn: &Connection, batch: &mut Batch<'_>) -> Result<(), StoreError>;
    fn unseen(&self) -> bool;
    /// Answers with an error (its transaction did not commit).
    fn fail(&mut self, error: StoreError);
    /// After the commit: whether the answer may let a waiting claim find work, and the jobs it deleted.
    fn committed(&self) -> (bool, Vec<JobChange>);
    /// Sends the answer; returns the leases it held if the caller has gone.
    fn answer(self: Box<Self>) -> Vec<(String, String)>;
}

/// A write and where its answer goes.
struct Request<O: ShardOp> {
    op: O,
    answer: Option<Result<O::Output, StoreError>>,
    reply: oneshot::Sender<Result<O::Output, StoreError>>,
}

impl<O: ShardOp> Pending for Request<O> {
    fn jobs(&self) -> &[NewJob] {
        self.op.jobs()
    }

    fn apply(&mut self, conn: &Connection, batch: &mut Batch<'_>) -> Result<(), StoreError> {
        match self.op.apply(conn, batch) {
            Err(error) if error.breaks_transaction() => Err(error),
            answer => {
                self.answer = Some(answer);
                Ok(())
            }
        }
    }

    fn unseen(&self) -> bool {
        self.op.unseen()
    }

    fn fail(&mut self, error: StoreError) {
        self.answer = Some(Err(error));
    }

    fn committed(&self) -> (bool, Vec<JobChange>) {
        match &self.answer {
            Some(Ok(output)) => (O::wakes(output), self.op.deleted(output)),
            _ => (false, Vec::new()),
        }
    }

    fn answer(self: Box<Self>) -> Vec<(String, String)> {
        let answer = self.answer.unwrap_or_else(|| Err(StoreError::Task("a write was not applied".into())));
        match self.reply.send(answer) {
            // The claimer went away (client disconnected) after we leased: put the jobs straight back.
            Err(Ok(output)) => O::leases(output),
            _ => Vec::new(),
        }
    }
}

type Queued = Box<dyn Pending>;

/// Handle to a shard's writer thread; cheap to clone. The thread stops when the last handle is dropped.
#[derive(Clone)]
pub struct ShardWriter {
    engine: Arc<str>,
    tx: mpsc::Sender<Queued>,
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
    pub async fn write<O: ShardOp>(&self, op: O) -> Result<O::Output, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Box::new(Request { op, answer: None, reply }))
            .await
            .map_err(|_| StoreError::WriterStopped(self.engine.to_string()))?;
        answer.await.map_err(|_| StoreError::WriterStopped(self.engine.to_string()))?
    }
}

fn run(mut conn: Connection, mut rx: mpsc::Receiver<Queued>, context: WriterContext) {
    let touched = match Touched::install(&conn) {
        Ok(touched) => Some(touched),
        Err(error) => {
            tracing::error!(engine = %context.engine, %error, "no live job events from this shard");
            None
        }
    };
    let mut batch: Vec<Queued> = Vec::with_capacity(MAX_BATCH);
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
        match commit_batch(&mut conn, &mut batch, &context, touched.as_ref()) {
            Ok(committed) => {
                wake |= committed.released_parked;
                changed.extend(committed.touched);
            }
            // One request broke the shared transaction (disk full, corruption, a bug): nothing of it was
            // committed, so give every request its own transaction and let only the broken one fail.
            Err(error) => {
                tracing::warn!(engine = %context.engine, %error, size = batch.len(), "group commit failed; retrying one by one");
                for request in batch.iter_mut() {
                    match commit_batch(&mut conn, std::slice::from_mut(request), &context, touched.as_ref()) {
                        Ok(one) => {
                            wake |= one.released_parked;
                            changed.extend(one.touched);
                        }
                        Err(error) => request.fail(error),
                    }
                }
            }
        }
        let mut undelivered: Vec<(String, String)> = Vec::new();
        let mut deleted: Vec<JobChange> = Vec::new();
        for request in batch.drain(..) {
            let (wakes, gone) = request.committed();
            wake |= wakes;
            if context.changes.is_live() {
                deleted.extend(gone);
            }
            undelivered.extend(request.answer());
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

/// What one committed transaction changed besides the answers its requests keep.
struct Committed {
    /// Whether it made parked jobs runnable.
    released_parked: bool,
    /// The rows of `jobs` the transaction inserted or updated.
    touched: Vec<(i64, bool)>,
}

/// Applies requests in one transaction, each keeping its answer. Business refusals (lease lost, key reused) are
/// per-request answers; only a database failure aborts the transaction.
fn commit_batch(
    conn: &mut Connection,
    batch: &mut [Queued],
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
    let jobs: Vec<&NewJob> = batch.iter().flat_map(|request| request.jobs()).collect();
    let enqueued = queries::enqueue_many(&tx, &jobs, now, context.caps)?;
    for outcome in &enqueued {
        if let Ok(EnqueueOutcome::Created(job)) = outcome {
            tally.enqueued(&job.user, now, 1);
        }
    }
    let mut enqueued = enqueued.into_iter();
    let mut shared = Batch { now, context, enqueued: &mut enqueued, tally: &mut tally };
    for request in batch.iter_mut() {
        let mark = touched.map(Touched::mark);
        request.apply(&tx, &mut shared)?;
        if let (Some(touched), Some(mark), true) = (touched, mark, request.unseen()) {
            touched.forget_since(mark);
        }
    }
    // Keys that got room in this batch (a job finished, was cancelled or was retried later) release parked jobs.
    let released = parking::release_parked_keys(&tx)?;
    stats::add(&tx, &tally)?;
    tx.commit()?;
    let touched = touched.map(Touched::take).unwrap_or_default();
    Ok(Committed { released_parked: released > 0, touched })
}

fn release_undelivered(conn: &mut Connection, leases: &[(String, String)]) -> Result<u64, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let released = queries::release(&tx, leases)?;
    parking::release_parked_keys(&tx)?;
    tx.commit()?;
    Ok(released)
}

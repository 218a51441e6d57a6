//! Group commit for enqueues on PostgreSQL: the enqueues of one engine that arrive while its previous
//! transaction commits go in together, in one transaction (as the SQLite shard's writer batches them). Every
//! enqueue of an engine takes the engine's counter row, so without this each one would wait for the previous
//! one's commit and its flush to disk; with it, one commit serves every request that queued up meanwhile.
//!
//! A batch that fails as a whole (a database error) is retried request by request, so one bad request cannot fail
//! the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use deadpool_postgres::Pool;
use flowork_common::clock::Clock;
use tokio::sync::{mpsc, oneshot};

use super::jobs::{enqueue_all, notify_claimable};
use crate::admission::AdmissionLimits;
use crate::store::changes::{ChangeFeed, JobChange};
use crate::store::{EnqueueOutcome, NewJob, StoreError};

/// The most jobs one transaction carries.
const MAX_BATCH_JOBS: usize = 1_000;
/// Requests waiting for an engine's transaction before senders wait too.
const QUEUE: usize = 4_096;

type Reply = oneshot::Sender<Result<Vec<EnqueueOutcome>, StoreError>>;

/// One request: its jobs and where its outcomes go.
struct Request {
    jobs: Vec<NewJob>,
    reply: Reply,
}

/// What a batch transaction needs.
pub struct BatchContext {
    pub pool: Pool,
    pub clock: Arc<dyn Clock>,
    pub caps: AdmissionLimits,
    pub changes: Arc<ChangeFeed>,
}

/// One batching task per engine, started on its first enqueue and ended when the batcher is dropped.
pub struct EnqueueBatcher {
    context: Arc<BatchContext>,
    engines: Mutex<HashMap<String, mpsc::Sender<Request>>>,
}

impl EnqueueBatcher {
    pub fn new(context: BatchContext) -> Self {
        Self { context: Arc::new(context), engines: Mutex::default() }
    }

    /// Enqueues jobs of one engine in the next transaction of that engine; their outcomes, in order.
    pub async fn enqueue(&self, engine: &str, jobs: Vec<NewJob>) -> Result<Vec<EnqueueOutcome>, StoreError> {
        let (reply, answer) = oneshot::channel();
        let sender = self.sender(engine);
        sender.send(Request { jobs, reply }).await.map_err(|_| StoreError::WriterStopped(engine.to_string()))?;
        answer.await.map_err(|_| StoreError::WriterStopped(engine.to_string()))?
    }

    fn sender(&self, engine: &str) -> mpsc::Sender<Request> {
        let mut engines = self.engines.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sender) = engines.get(engine).filter(|s| !s.is_closed()) {
            return sender.clone();
        }
        let (sender, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(run(self.context.clone(), engine.to_string(), receiver));
        engines.insert(engine.to_string(), sender.clone());
        sender
    }
}

/// Takes what is waiting, commits it in one transaction, answers each request; until every sender is gone.
async fn run(context: Arc<BatchContext>, engine: String, mut receiver: mpsc::Receiver<Request>) {
    while let Some(first) = receiver.recv().await {
        let mut batch = vec![first];
        let mut jobs = batch[0].jobs.len();
        while jobs < MAX_BATCH_JOBS {
            match receiver.try_recv() {
                Ok(request) => {
                    jobs += request.jobs.len();
                    batch.push(request);
                }
                Err(_) => break,
            }
        }
        let all: Vec<NewJob> = batch.iter().flat_map(|r| r.jobs.iter().cloned()).collect();
        match commit(&context, &engine, &all).await {
            Ok(outcomes) => answer(&context, batch, outcomes),
            Err(_) if batch.len() > 1 => {
                // Which request broke it is unknown: each goes again on its own.
                for request in batch {
                    let result = commit(&context, &engine, &request.jobs).await;
                    match result {
                        Ok(outcomes) => answer(&context, vec![request], outcomes),
                        Err(error) => {
                            let _ = request.reply.send(Err(error));
                        }
                    }
                }
            }
            Err(error) => {
                for request in batch {
                    let _ = request.reply.send(Err(error.clone()));
                }
            }
        }
    }
}

/// One transaction: every job of the batch, and the wake-up of waiting claims if any was created.
async fn commit(context: &BatchContext, engine: &str, jobs: &[NewJob]) -> Result<Vec<EnqueueOutcome>, StoreError> {
    let now = context.clock.now_ms();
    let mut client = context.pool.get().await?;
    let tx = client.transaction().await?;
    let outcomes = enqueue_all(&tx, engine, jobs, now, context.caps).await?;
    if outcomes.iter().any(|o| matches!(o, EnqueueOutcome::Created(_))) {
        notify_claimable(&tx, engine).await?;
    }
    tx.commit().await?;
    Ok(outcomes)
}

/// Hands each request its share of the outcomes, and publishes the created jobs.
fn answer(context: &BatchContext, batch: Vec<Request>, outcomes: Vec<EnqueueOutcome>) {
    if context.changes.is_live() {
        let created = outcomes
            .iter()
            .filter_map(|o| match o {
                EnqueueOutcome::Created(job) => Some(JobChange::created(job.clone())),
                _ => None,
            })
            .collect();
        context.changes.publish(created);
    }
    let mut outcomes = outcomes.into_iter();
    for request in batch {
        let mine: Vec<EnqueueOutcome> = outcomes.by_ref().take(request.jobs.len()).collect();
        let _ = request.reply.send(Ok(mine));
    }
}

//! The PostgreSQL store of a gateway fleet (`--store postgres://...`): the same `JobStore` and `ControlStore`
//! contract as the SQLite shards, with every rule (idempotency, leases, fencing, caps, the fair order) enforced
//! by the database, so any gateway of the fleet answers any request.

pub mod batcher;
pub mod breakers;
pub mod claim;
pub mod claim_steps;
pub mod control;
pub mod error;
pub mod jobs;
pub mod migrate;
pub mod operate;
pub mod position;
pub mod schedules;
pub mod stats;
pub mod tokens;
pub mod wake;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use flowork_common::clock::Clock;
use flowork_common::wire::{Job, JobAttempt, JobCounts, JobPage, JobStatus, Lease};
use tokio_postgres::NoTls;
use tokio_util::sync::{CancellationToken, DropGuard};

use self::jobs::{JOB_COLUMN_COUNT, JOB_COLUMNS, job_from_row, lock_engine, notify_claimable, query_opt};
use crate::admission::AdmissionLimits;
use crate::audit::{AuditEntry, AuditReport};
use crate::observability::queue_metrics::QueueMetrics;
use crate::store::breakers::Signal;
use crate::store::changes::{ChangeFeed, JobChange};
use crate::store::core::claim as core_claim;
use crate::store::core::fair::ClaimBy;
use crate::store::core::operate::unchanged;
use crate::store::core::stats::{KEPT_MS, StatRow, Tally};
use crate::store::core::wait::wait_for_work;
use crate::store::{
    ActOutcome, AllowedUser, AttemptReport, AuditPage, AuditQuery, BreakerPolicy, ClaimParams, ControlStore,
    EngineRecord, EnqueueOutcome, Finish, FinishOutcome, JobAction, JobFilter, JobStore, KindBreaker, ListQuery,
    NewJob, NonceCheck, QueueCounts, RefreshCheck, RefreshTokenRecord, RetryPolicy, Schedule, ScheduleOutcome,
    ShareSettings, StoreError,
};

/// Connections per gateway process.
const POOL_SIZE: usize = 16;

/// The PostgreSQL-backed store.
pub struct PgStore {
    pool: Pool,
    config: tokio_postgres::Config,
    clock: Arc<dyn Clock>,
    retry: RetryPolicy,
    caps: AdmissionLimits,
    breaker: BreakerPolicy,
    changes: Arc<ChangeFeed>,
    wakers: Arc<wake::Wakers>,
    /// Started with the first claim (command-line tools never need it); stopped when the store is dropped.
    listener: OnceLock<DropGuard>,
    /// Claim latencies and rates per engine, as seen by this gateway.
    metrics: RwLock<HashMap<String, Arc<QueueMetrics>>>,
    /// Group commit of enqueues, per engine (made with the caps, so after `with_caps`).
    batcher: OnceLock<batcher::EnqueueBatcher>,
}

/// Runs `$body` (which may use `?` and `.await`) in one transaction on a pooled connection, and commits it.
macro_rules! in_tx {
    ($store:expr, |$tx:ident| $body:expr) => {{
        let mut client = $store.client().await?;
        let $tx = client.transaction().await?;
        let value = $body;
        $tx.commit().await?;
        value
    }};
}

/// Runs `$body` (single-statement reads) on a pooled connection without a transaction: one round trip, not three.
macro_rules! read {
    ($store:expr, |$client:ident| $body:expr) => {{
        let connection = $store.client().await?;
        let $client = &connection;
        $body
    }};
}

impl PgStore {
    /// Connects, and brings the schema up to date (under an advisory lock, so gateways started together do not
    /// race).
    pub async fn open(url: &str, clock: Arc<dyn Clock>, retry: RetryPolicy) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e| StoreError::Config(format!("{}: {e}", crate::connection_string::redact(url))))?;
        if config.get_connect_timeout().is_none() {
            // An unreachable server answers 503 within seconds instead of holding requests open.
            config.connect_timeout(Duration::from_secs(5));
        }
        let manager =
            Manager::from_config(config.clone(), NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(Duration::from_secs(10)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Config(format!("PostgreSQL connection pool: {e}")))?;
        let store = Self {
            pool,
            config,
            clock,
            retry,
            caps: AdmissionLimits::default(),
            breaker: BreakerPolicy::default(),
            changes: Arc::new(ChangeFeed::default()),
            wakers: Arc::default(),
            listener: OnceLock::new(),
            metrics: RwLock::default(),
            batcher: OnceLock::new(),
        };
        let mut client = store.client().await?;
        migrate::apply(&mut client, &crate::connection_string::redact(url)).await?;
        // The audit key exists before any transaction needs it (gateways starting together make it once).
        control::ensure_audit_key(&client).await?;
        Ok(store)
    }

    /// Sets the admission caps enforced at enqueue.
    pub fn with_caps(mut self, caps: AdmissionLimits) -> Self {
        self.caps = caps;
        self
    }

    /// Sets the per-kind circuit breaker policy.
    pub fn with_breaker(mut self, breaker: BreakerPolicy) -> Self {
        self.breaker = breaker;
        self
    }

    /// Applies an action to jobs of one engine in one transaction under its lock; publishes what changed and
    /// wakes claimers when jobs became runnable.
    async fn act_on_engine(
        &self,
        engine: &str,
        user: &str,
        ids: &[String],
        action: JobAction,
    ) -> Result<operate::Acted, StoreError> {
        let now = self.clock.now_ms();
        let acted = in_tx!(self, |tx| {
            lock_engine(&tx, engine).await?;
            let acted = operate::act(&tx, engine, user, ids, action, now).await?;
            if !acted.done.is_empty() && action != JobAction::Delete {
                claim::release_parked_keys(&tx, engine).await?;
                if action == JobAction::Retry {
                    notify_claimable(&tx, engine).await?;
                }
            }
            acted
        });
        if action == JobAction::Delete {
            if self.changes.is_live() {
                self.changes.publish(acted.done.iter().cloned().map(JobChange::deleted).collect());
            }
        } else {
            self.publish(acted.done.iter().chain(&acted.requested).map(|job| (false, job.clone())));
        }
        Ok(acted)
    }

    async fn client(&self) -> Result<Object, StoreError> {
        Ok(self.pool.get().await?)
    }

    /// Starts listening for other gateways' wake-ups (once).
    fn ensure_listener(&self) {
        self.listener.get_or_init(|| {
            let stop = CancellationToken::new();
            tokio::spawn(wake::listen(self.config.clone(), self.wakers.clone(), stop.clone()));
            stop.drop_guard()
        });
    }

    fn metrics_of(&self, engine: &str) -> Arc<QueueMetrics> {
        if let Some(found) = self.metrics.read().ok().and_then(|m| m.get(engine).cloned()) {
            return found;
        }
        match self.metrics.write() {
            Ok(mut map) => map.entry(engine.to_string()).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }

    /// Publishes committed job changes, if anyone listens.
    fn publish(&self, jobs: impl IntoIterator<Item = (bool, Job)>) {
        if self.changes.is_live() {
            self.changes.publish(
                jobs.into_iter()
                    .map(|(created, job)| if created { JobChange::created(job) } else { JobChange::changed(job) })
                    .collect(),
            );
        }
    }

    /// Engines with expired leases (all of them, whichever gateway's claims they came from).
    async fn engines_with_expired_leases(&self, now: i64) -> Result<Vec<String>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT DISTINCT engine_id FROM jobs WHERE status = 'running' AND lease_expires_at <= $1", &[&now])
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// One claim transaction: reaps the engine's lapsed leases, then leases in the fair order (with breaker
    /// probes); when nothing is leased, also when to look again.
    async fn claim_once(
        &self,
        engine: &str,
        params: &ClaimParams,
    ) -> Result<(Vec<Lease>, Vec<Job>, Option<i64>), StoreError> {
        let now = self.clock.now_ms();
        Ok(in_tx!(self, |tx| {
            lock_engine(&tx, engine).await?;
            let mut tally = Tally::default();
            let by = ClaimBy { engine, worker: &params.worker, max: params.max, lease_ms: params.lease_ms, now };
            let mut steps = claim_steps::EngineClaim { tx: &tx, engine };
            let metrics = self.metrics_of(engine);
            let done = core_claim::claim(&mut steps, &by, self.breaker, &metrics, &mut tally).await?;
            stats::add(&tx, engine, &tally).await?;
            (done.leases, done.lapsed, done.next_due_ms)
        }))
    }

    /// A settings write on an engine (its lock taken first), answering whether anything changed; `wake` wakes
    /// the engine's claims when it did.
    async fn engine_write<F>(&self, engine: &str, wake: bool, write: F) -> Result<bool, StoreError>
    where
        F: for<'a> FnOnce(
                &'a deadpool_postgres::Transaction<'a>,
            ) -> std::pin::Pin<Box<dyn Future<Output = Result<bool, StoreError>> + Send + 'a>>
            + Send,
    {
        Ok(in_tx!(self, |tx| {
            lock_engine(&tx, engine).await?;
            let changed = write(&tx).await?;
            if changed {
                claim::release_parked_keys(&tx, engine).await?;
                if wake {
                    notify_claimable(&tx, engine).await?;
                }
            }
            changed
        }))
    }
}

#[async_trait]
impl JobStore for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn changes(&self) -> &Arc<ChangeFeed> {
        &self.changes
    }

    async fn enqueue(&self, job: NewJob) -> Result<EnqueueOutcome, StoreError> {
        let engine = job.engine.clone();
        let mut outcomes = self.enqueue_many(&engine, vec![job]).await?;
        outcomes.pop().ok_or_else(|| StoreError::Task("an enqueue without an outcome".into()))
    }

    async fn enqueue_many(&self, engine: &str, jobs: Vec<NewJob>) -> Result<Vec<EnqueueOutcome>, StoreError> {
        let batcher = self.batcher.get_or_init(|| {
            batcher::EnqueueBatcher::new(batcher::BatchContext {
                pool: self.pool.clone(),
                clock: self.clock.clone(),
                caps: self.caps,
                changes: self.changes.clone(),
            })
        });
        batcher.enqueue(engine, jobs).await
    }

    async fn replay(&self, job: &NewJob) -> Result<Option<EnqueueOutcome>, StoreError> {
        Ok(read!(self, |tx| jobs::existing_for_key(tx, job).await?))
    }

    async fn get_job(&self, user: &str, id: &str) -> Result<Option<Job>, StoreError> {
        let sql = format!("SELECT {JOB_COLUMNS}, engine_id FROM jobs WHERE user_id = $1 AND id = $2");
        Ok(in_tx!(self, |tx| {
            match query_opt(&tx, &sql, &[&user, &id]).await? {
                Some(row) => {
                    let mut job = job_from_row(&row, &row.try_get::<_, String>(JOB_COLUMN_COUNT)?)?;
                    position::place_in_queue(&tx, std::slice::from_mut(&mut job)).await?;
                    Some(job)
                }
                None => None,
            }
        }))
    }

    async fn list_jobs(&self, user: &str, query_by: ListQuery) -> Result<JobPage, StoreError> {
        let mut jobs = in_tx!(self, |tx| {
            let mut jobs =
                operate::list(&tx, user, &query_by.filter, query_by.before_id.as_deref(), query_by.limit + 1).await?;
            position::place_in_queue(&tx, &mut jobs).await?;
            jobs
        });
        let more = jobs.len() > query_by.limit;
        jobs.truncate(query_by.limit);
        let next_cursor = if more { jobs.last().map(|j| j.id.clone()) } else { None };
        Ok(JobPage { jobs, next_cursor })
    }

    async fn act(&self, user: &str, id: &str, action: JobAction) -> Result<ActOutcome, StoreError> {
        let found = read!(self, |client| operate::find(client, user, id).await?);
        let Some((engine, status)) = found else { return Ok(ActOutcome::NotFound) };
        if !action.applies_to().contains(&status) {
            return Ok(ActOutcome::NotApplicable(status));
        }
        let acted = self.act_on_engine(&engine, user, &[id.to_string()], action).await?;
        if let Some(job) = acted.done.into_iter().next() {
            return Ok(ActOutcome::Done(Box::new(job)));
        }
        if let Some(job) = acted.requested.into_iter().next() {
            return Ok(ActOutcome::Requested(Box::new(job)));
        }
        let now = read!(self, |client| operate::find(client, user, id).await?);
        Ok(unchanged(action, now.map(|(_, status)| status)))
    }

    async fn act_on_many(
        &self,
        engine: &str,
        user: &str,
        ids: &[String],
        action: JobAction,
    ) -> Result<u64, StoreError> {
        let acted = self.act_on_engine(engine, user, ids, action).await?;
        Ok((acted.done.len() + acted.requested.len()) as u64)
    }

    async fn job_ids(
        &self,
        user: &str,
        filter: &JobFilter,
        before_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        Ok(read!(self, |client| operate::ids(client, user, filter, before_id, limit).await?))
    }

    async fn attempts(&self, user: &str, id: &str) -> Result<Option<Vec<JobAttempt>>, StoreError> {
        Ok(read!(self, |client| operate::attempts(client, user, id).await?))
    }

    async fn count_jobs(&self, user: &str, engine: Option<&str>) -> Result<JobCounts, StoreError> {
        Ok(read!(self, |client| operate::counts(client, user, engine).await?))
    }

    async fn job_stats(&self, user: &str, engine: Option<&str>, from_ms: i64) -> Result<Vec<StatRow>, StoreError> {
        Ok(read!(self, |client| stats::read(client, user, engine, from_ms).await?))
    }

    async fn claim(
        &self,
        engine: &str,
        params: ClaimParams,
        stop: CancellationToken,
    ) -> Result<Vec<Lease>, StoreError> {
        self.ensure_listener();
        let wake = self.wakers.of(engine);
        wait_for_work(&wake, self.clock.as_ref(), params.wait_ms, &stop, || async {
            let (leases, reaped, next_due_ms) = self.claim_once(engine, &params).await?;
            self.publish(reaped.into_iter().map(|job| (false, job)));
            self.publish(leases.iter().map(|lease| (false, lease.job.clone())));
            Ok((leases, next_due_ms))
        })
        .await
    }

    async fn heartbeat(
        &self,
        engine: &str,
        job_id: &str,
        lease_token: &str,
        lease_ms: u64,
        progress: Option<String>,
    ) -> Result<(i64, bool), StoreError> {
        let now = self.clock.now_ms();
        let (expires, cancel_requested, changed) = in_tx!(self, |tx| {
            jobs::heartbeat(&tx, engine, job_id, lease_token, lease_ms, progress.as_deref(), now).await?
        });
        self.publish(changed.map(|job| (false, job)));
        Ok((expires, cancel_requested))
    }

    async fn finish(
        &self,
        engine: &str,
        job_id: &str,
        lease_token: &str,
        finish: Finish,
    ) -> Result<FinishOutcome, StoreError> {
        let item = vec![(job_id.to_string(), lease_token.to_string(), finish)];
        let mut outcomes = self.finish_many(engine, item).await?;
        outcomes.pop().unwrap_or_else(|| Err(StoreError::Task("a finish without an outcome".into())))
    }

    async fn finish_many(
        &self,
        engine: &str,
        items: Vec<(String, String, Finish)>,
    ) -> Result<Vec<Result<FinishOutcome, StoreError>>, StoreError> {
        let now = self.clock.now_ms();
        let (outcomes, changed) = in_tx!(self, |tx| {
            lock_engine(&tx, engine).await?;
            let mut outcomes = Vec::with_capacity(items.len());
            let mut changed = Vec::new();
            let mut requeued = false;
            // Successes in one statement; the rest (and successes whose lease was lost, to say why) one by one.
            let successes = Finish::successes(&items);
            let mut tally = Tally::default();
            let mut succeeded = jobs::finish_succeeded_many(&tx, engine, &successes, now, &mut tally).await?;
            for (job_id, token, finish) in &items {
                // Taken out once: the same job twice in one batch finishes once; the second learns its lease is gone.
                if let Some(job) = succeeded.remove(job_id.as_str()) {
                    breakers::record(&tx, engine, &job.kind, &job.user, job_id, Signal::Worked, now, self.breaker)
                        .await?;
                    outcomes.push(Ok(FinishOutcome {
                        status: JobStatus::Succeeded,
                        run_at_ms: None,
                        kind: job.kind.clone(),
                    }));
                    changed.push((false, job));
                    continue;
                }
                let report = AttemptReport { job_id, lease_token: token, finish };
                match jobs::finish(&tx, engine, report, now, self.retry, &mut tally).await {
                    Ok((outcome, job)) => {
                        if let Some(signal) = finish.breaker_signal() {
                            breakers::record(&tx, engine, &outcome.kind, &job.user, job_id, signal, now, self.breaker)
                                .await?;
                        }
                        requeued |= outcome.status == JobStatus::Queued;
                        changed.push((false, job));
                        outcomes.push(Ok(outcome));
                    }
                    Err(refusal @ (StoreError::LeaseLost(_) | StoreError::JobNotFound(_))) => {
                        outcomes.push(Err(refusal))
                    }
                    Err(error) => return Err(error),
                }
            }
            if !changed.is_empty() {
                // Finished jobs free their concurrency keys' slots; a retry (or a freed slot) is claimable.
                let released = claim::release_parked_keys(&tx, engine).await?;
                if requeued || released > 0 {
                    notify_claimable(&tx, engine).await?;
                }
            }
            stats::add(&tx, engine, &tally).await?;
            (outcomes, changed)
        });
        self.publish(changed);
        Ok(outcomes)
    }

    async fn prune_finished(&self, before_ms: i64, batch: u32) -> Result<u64, StoreError> {
        read!(self, |client| stats::prune(client, self.clock.now_ms() - KEPT_MS).await?);
        let mut pruned = 0;
        for engine in self.list_engines().await? {
            pruned += in_tx!(self, |tx| jobs::prune_finished(&tx, &engine.id, before_ms, batch).await?);
        }
        Ok(pruned)
    }

    async fn reap_expired_leases(&self) -> Result<u64, StoreError> {
        let now = self.clock.now_ms();
        let mut reaped = 0;
        for engine in self.engines_with_expired_leases(now).await? {
            let jobs = in_tx!(self, |tx| {
                lock_engine(&tx, &engine).await?;
                let mut tally = Tally::default();
                let jobs = jobs::reap_expired(&tx, &engine, now, &mut tally).await?;
                breakers::record_lapsed(&tx, &engine, &jobs, now, self.breaker).await?;
                stats::add(&tx, &engine, &tally).await?;
                if !jobs.is_empty() {
                    claim::release_parked_keys(&tx, &engine).await?;
                    notify_claimable(&tx, &engine).await?;
                }
                jobs
            });
            reaped += jobs.len() as u64;
            self.publish(jobs.into_iter().map(|job| (false, job)));
        }
        Ok(reaped)
    }

    async fn queue_counts(&self, engine: &str) -> Result<QueueCounts, StoreError> {
        let row = read!(self, |tx| {
            query_opt(tx, "SELECT queued, running FROM queue_stats WHERE engine_id = $1", &[&engine]).await?
        });
        let row = row.ok_or_else(|| StoreError::EngineNotFound(engine.to_string()))?;
        let (queued, running): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
        Ok(QueueCounts {
            queued: queued.max(0) as u64,
            running: running.max(0) as u64,
            window: self.metrics_of(engine).window(self.clock.now_ms()),
        })
    }

    async fn allow_user(&self, engine: &str, user: &str, is_owner: bool) -> Result<bool, StoreError> {
        let now = self.clock.now_ms();
        let (engine_id, user) = (engine.to_string(), user.to_string());
        self.engine_write(engine, false, move |tx| {
            Box::pin(async move { jobs::allow_user(tx, &engine_id, &user, is_owner, now).await })
        })
        .await
    }

    async fn disallow_user(&self, engine: &str, user: &str) -> Result<bool, StoreError> {
        let (engine_id, user) = (engine.to_string(), user.to_string());
        self.engine_write(engine, false, move |tx| {
            Box::pin(async move {
                let sql = "DELETE FROM allowed_users WHERE engine_id = $1 AND user_id = $2 AND NOT is_owner";
                Ok(jobs::execute(tx, sql, &[&engine_id, &user]).await? > 0)
            })
        })
        .await
    }

    async fn allowed_users(&self, engine: &str) -> Result<Vec<AllowedUser>, StoreError> {
        Ok(in_tx!(self, |tx| {
            jobs::engine_exists(&tx, engine).await?;
            jobs::allowed_users(&tx, engine).await?
        }))
    }

    async fn set_paused(&self, engine: &str, paused: bool) -> Result<bool, StoreError> {
        let (engine_id, now) = (engine.to_string(), self.clock.now_ms());
        // Resuming wakes the claims that waited through the pause.
        self.engine_write(engine, !paused, move |tx| {
            Box::pin(async move {
                let sql = "UPDATE engine_state SET paused = $2, changed_at = $3 WHERE engine_id = $1 AND paused <> $2";
                Ok(jobs::execute(tx, sql, &[&engine_id, &paused, &now]).await? > 0)
            })
        })
        .await
    }

    async fn is_paused(&self, engine: &str) -> Result<bool, StoreError> {
        let row = read!(self, |tx| {
            query_opt(tx, "SELECT paused FROM engine_state WHERE engine_id = $1", &[&engine]).await?
        });
        row.map(|r| r.get(0)).ok_or_else(|| StoreError::EngineNotFound(engine.to_string()))
    }

    fn quarantined(&self) -> Vec<(String, String)> {
        // One database, checked by PostgreSQL itself: no shard is ever set aside.
        Vec::new()
    }

    async fn breakers(&self, engine: &str) -> Result<Vec<KindBreaker>, StoreError> {
        Ok(read!(self, |tx| breakers::tripped(tx, engine).await?))
    }

    async fn set_weight(&self, engine: &str, user: &str, weight: i64) -> Result<bool, StoreError> {
        let (engine_id, user) = (engine.to_string(), user.to_string());
        self.engine_write(engine, false, move |tx| {
            Box::pin(async move { claim::set_weight(tx, &engine_id, &user, weight).await })
        })
        .await
    }

    async fn set_key_limit(&self, engine: &str, key: &str, limit: Option<i64>) -> Result<bool, StoreError> {
        let (engine_id, key) = (engine.to_string(), key.to_string());
        self.engine_write(engine, true, move |tx| {
            Box::pin(async move { claim::set_key_limit(tx, &engine_id, &key, limit).await })
        })
        .await
    }

    async fn set_default_key_limit(&self, engine: &str, limit: Option<i64>) -> Result<bool, StoreError> {
        let engine_id = engine.to_string();
        self.engine_write(engine, true, move |tx| {
            Box::pin(async move { claim::set_default_key_limit(tx, &engine_id, limit).await })
        })
        .await
    }

    async fn share_settings(&self, engine: &str) -> Result<ShareSettings, StoreError> {
        Ok(in_tx!(self, |tx| {
            jobs::engine_exists(&tx, engine).await?;
            claim::share_settings(&tx, engine).await?
        }))
    }

    async fn create_schedule(&self, schedule: Schedule) -> Result<ScheduleOutcome, StoreError> {
        Ok(in_tx!(self, |tx| {
            lock_engine(&tx, &schedule.engine).await?;
            schedules::create(&tx, &schedule).await?
        }))
    }

    async fn list_schedules(&self, user: &str) -> Result<Vec<Schedule>, StoreError> {
        Ok(read!(self, |tx| schedules::list(tx, user).await?))
    }

    async fn delete_schedule(&self, user: &str, id: &str) -> Result<bool, StoreError> {
        Ok(in_tx!(self, |tx| schedules::delete(&tx, user, id).await?))
    }

    async fn fire_schedules(&self, misfire_grace_ms: u64) -> Result<u64, StoreError> {
        let now = self.clock.now_ms();
        let mut created = 0;
        for engine in self.list_engines().await? {
            let due = read!(self, |tx| schedules::any_due(tx, &engine.id, now).await?);
            if !due {
                continue;
            }
            let jobs = in_tx!(self, |tx| {
                lock_engine(&tx, &engine.id).await?;
                let jobs = schedules::fire_due(&tx, &engine.id, now, misfire_grace_ms, self.caps).await?;
                if !jobs.is_empty() {
                    notify_claimable(&tx, &engine.id).await?;
                }
                jobs
            });
            created += jobs.len() as u64;
            self.publish(jobs.into_iter().map(|job| (true, job)));
        }
        Ok(created)
    }
}

#[async_trait]
impl ControlStore for PgStore {
    async fn add_engine(&self, id: &str, owner: Option<&str>, token_hash: &str) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        in_tx!(self, |tx| control::insert_engine(&tx, id, owner, token_hash, now).await?);
        Ok(())
    }

    async fn list_engines(&self) -> Result<Vec<EngineRecord>, StoreError> {
        Ok(read!(self, |tx| control::engines(tx).await?))
    }

    async fn engine(&self, id: &str) -> Result<Option<EngineRecord>, StoreError> {
        Ok(read!(self, |tx| control::engine(tx, id).await?))
    }

    async fn engine_for_token_hash(&self, token_hash: &str) -> Result<Option<EngineRecord>, StoreError> {
        let now = self.clock.now_ms();
        Ok(read!(self, |tx| control::engine_for_token_hash(tx, token_hash, now).await?))
    }

    async fn set_engine_token(&self, id: &str, token_hash: &str, grace_ms: u64) -> Result<(), StoreError> {
        let until = (grace_ms > 0).then(|| self.clock.now_ms().saturating_add(grace_ms.min(i64::MAX as u64) as i64));
        in_tx!(self, |tx| control::set_engine_token(&tx, id, token_hash, until).await?);
        Ok(())
    }

    async fn revoke_engine(&self, id: &str) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        in_tx!(self, |tx| control::revoke_engine(&tx, id, now).await?);
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client.query_one("SELECT 1", &[]).await?;
        Ok(())
    }

    async fn append_audit(&self, entry: AuditEntry) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        in_tx!(self, |tx| control::append_audit(&tx, entry, now).await?);
        Ok(())
    }

    async fn verify_audit(&self) -> Result<AuditReport, StoreError> {
        Ok(in_tx!(self, |tx| control::verify_audit(&tx).await?))
    }

    /// The head moves with every append (in its transaction), so there is nothing left to checkpoint.
    async fn checkpoint_audit(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn list_audit(&self, query: AuditQuery) -> Result<AuditPage, StoreError> {
        Ok(read!(self, |client| control::list_audit(client, &query).await?))
    }

    async fn prune_audit(&self, before_ms: i64) -> Result<u64, StoreError> {
        Ok(in_tx!(self, |tx| control::prune_audit(&tx, before_ms).await?))
    }

    async fn insert_nonce(&self, nonce: &str, expires_at_ms: i64, max_kept: u64) -> Result<bool, StoreError> {
        let now = self.clock.now_ms();
        Ok(in_tx!(self, |tx| control::insert_nonce(&tx, nonce, now, expires_at_ms, max_kept).await?))
    }

    async fn consume_nonce(&self, nonce: &str) -> Result<NonceCheck, StoreError> {
        let now = self.clock.now_ms();
        Ok(in_tx!(self, |tx| control::consume_nonce(&tx, nonce, now).await?))
    }

    async fn insert_refresh_token(&self, token: RefreshTokenRecord) -> Result<(), StoreError> {
        in_tx!(self, |tx| control::insert_refresh_token(&tx, &token).await?);
        Ok(())
    }

    async fn rotate_refresh_token(
        &self,
        presented_hash: &str,
        next: RefreshTokenRecord,
    ) -> Result<RefreshCheck, StoreError> {
        let now = self.clock.now_ms();
        Ok(in_tx!(self, |tx| control::rotate_refresh_token(&tx, presented_hash, &next, now).await?))
    }

    async fn revoke_refresh_family(&self, presented_hash: &str) -> Result<Option<String>, StoreError> {
        let now = self.clock.now_ms();
        Ok(in_tx!(self, |tx| control::revoke_refresh_family(&tx, presented_hash, now).await?))
    }
}

/// The JWT signing keys shared by the fleet.
impl PgStore {
    /// Every signing key as `(kid, secret)`; the first gateway to start on an empty database creates one.
    pub async fn signing_keys(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let keys = self.read_signing_keys().await?;
        if !keys.is_empty() {
            return Ok(keys);
        }
        self.add_signing_key(None).await?;
        self.read_signing_keys().await
    }

    async fn read_signing_keys(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let client = self.client().await?;
        let rows = client.query("SELECT kid, secret FROM signing_keys ORDER BY kid", &[]).await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    /// Adds a new signing key whose id sorts after `newest`; returns its id.
    pub async fn add_signing_key(&self, newest: Option<&str>) -> Result<String, StoreError> {
        let (kid, secret) = crate::auth::jwt::new_key(newest);
        self.insert_signing_key(&kid, &secret).await?;
        Ok(kid)
    }

    /// Stores a signing key unless one with its id is there already.
    pub async fn insert_signing_key(&self, kid: &str, secret: &[u8]) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO signing_keys (kid, secret, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&kid, &secret, &self.clock.now_ms()],
            )
            .await?;
        Ok(())
    }

    /// Takes over the key of an audit log copied in by `migrate-store` and signs its newest row as the head.
    pub async fn adopt_audit_key(&self, key: &crate::audit::AuditKey) -> Result<(), StoreError> {
        in_tx!(self, |tx| control::adopt_audit_key(&tx, key).await?);
        Ok(())
    }

    /// A pooled connection, for bulk work outside the store's own statements (`migrate-store`).
    pub async fn raw_client(&self) -> Result<Object, StoreError> {
        self.client().await
    }
}

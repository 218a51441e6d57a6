//! The embedded store: one SQLite file per engine ("shard") plus a control database, under the data directory.
//!
//! Layout: `control.sqlite3`, `shards/<engine>.sqlite3`. Shards open lazily on first use (so start-up time does
//! not grow with the number of engines) and stay open.

pub mod audit_files;
pub mod breakers;
pub mod checkpoint;
pub mod claim_steps;
pub mod connection;
pub mod control;
pub mod counters;
mod error;
pub mod fair;
pub mod migrate;
pub mod operate;
pub mod ops;
pub mod parking;
pub mod position;
pub mod queries;
pub mod schedules;
pub mod shard;
pub mod stats;
pub mod tokens;
pub mod touched;
pub mod wake_file;
pub mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use flowork_common::clock::Clock;
use flowork_common::wire::{Job, JobAttempt, JobCounts, JobPage, JobStatus, Lease};
use tokio_util::sync::CancellationToken;

use self::control::ControlDb;
use self::ops::{act::Act, claim as claim_ops, enqueue, finish, schedules as schedule_ops, settings, upkeep};
use self::shard::Shard;
use crate::admission::AdmissionLimits;
use crate::audit::{AuditEntry, AuditReport};
use crate::secure_fs::create_private_dir;
use crate::store::changes::ChangeFeed;
use crate::store::core::operate::unchanged;
use crate::store::core::stats::StatRow;
use crate::store::core::wait::wait_for_work;
use crate::store::{
    ActOutcome, AllowedUser, AuditPage, AuditQuery, BreakerPolicy, ClaimParams, ControlStore, EngineRecord,
    EnqueueOutcome, Finish, FinishOutcome, JobAction, JobFilter, JobStore, KindBreaker, ListQuery, NewJob, NonceCheck,
    QueueCounts, RefreshCheck, RefreshTokenRecord, RetryPolicy, Schedule, ScheduleOutcome, ShareSettings, StoreError,
};

/// The SQLite-backed store.
pub struct SqliteStore {
    data_dir: PathBuf,
    control: Arc<ControlDb>,
    shards: RwLock<HashMap<String, Arc<Shard>>>,
    /// Engines whose shard was found damaged: engine → where its file was moved.
    quarantined: RwLock<HashMap<String, String>>,
    opening: tokio::sync::Mutex<()>,
    clock: Arc<dyn Clock>,
    retry: RetryPolicy,
    caps: AdmissionLimits,
    breaker: BreakerPolicy,
    changes: Arc<ChangeFeed>,
    /// Each open shard's claim wake-up, for the wake files other gateway processes touch.
    wakers: wake_file::Wakers,
    wake_watcher: Option<wake_file::WakeWatcher>,
}

/// Runs blocking SQLite work off the async executor.
async fn blocking<T, F>(work: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(work).await.map_err(|e| StoreError::Task(e.to_string()))?
}

impl SqliteStore {
    /// Opens (creating if needed) the data directory and the control database.
    pub async fn open(data_dir: &Path, clock: Arc<dyn Clock>, retry: RetryPolicy) -> Result<Self, StoreError> {
        let dir = data_dir.to_path_buf();
        let control = blocking(move || {
            for folder in [dir.clone(), dir.join("shards")] {
                create_private_dir(&folder)
                    .map_err(|source| StoreError::Io { path: folder.display().to_string(), source })?;
            }
            ControlDb::open(&dir.join("control.sqlite3"), &dir.join("keys"))
        })
        .await?;
        let wakers = wake_file::Wakers::default();
        let wake_watcher = match wake_file::WakeWatcher::start(wakers.clone()) {
            Ok(watcher) => Some(watcher),
            Err(error) => {
                tracing::warn!(%error, "cannot watch wake files: a second gateway's enqueues wake claims here only at their timeout");
                None
            }
        };
        Ok(Self {
            wakers,
            wake_watcher,
            data_dir: data_dir.to_path_buf(),
            control: Arc::new(control),
            shards: RwLock::new(HashMap::new()),
            quarantined: RwLock::new(HashMap::new()),
            opening: tokio::sync::Mutex::new(()),
            clock,
            retry,
            caps: AdmissionLimits::default(),
            breaker: BreakerPolicy::default(),
            changes: Arc::new(ChangeFeed::default()),
        })
    }

    /// Sets the admission caps the shard writers enforce (before any shard is opened).
    pub fn with_caps(mut self, caps: AdmissionLimits) -> Self {
        self.caps = caps;
        self
    }

    /// Sets the per-kind circuit breaker policy (before any shard is opened).
    pub fn with_breaker(mut self, breaker: BreakerPolicy) -> Self {
        self.breaker = breaker;
        self
    }

    fn open_shard_if_loaded(&self, engine: &str) -> Option<Arc<Shard>> {
        self.shards.read().ok()?.get(engine).cloned()
    }

    fn quarantine_of(&self, engine: &str) -> Option<StoreError> {
        let moved_to = self.quarantined.read().ok()?.get(engine).cloned()?;
        Some(StoreError::Quarantined { engine: engine.to_string(), moved_to })
    }

    /// The shard of a registered engine, opened on first use. A shard that turns out to be damaged is moved
    /// aside and its engine answers `Quarantined` from then on; the other shards keep serving.
    async fn shard(&self, engine: &str) -> Result<Arc<Shard>, StoreError> {
        if let Some(shard) = self.open_shard_if_loaded(engine) {
            return Ok(shard);
        }
        if let Some(quarantined) = self.quarantine_of(engine) {
            return Err(quarantined);
        }
        let _opening = self.opening.lock().await;
        if let Some(shard) = self.open_shard_if_loaded(engine) {
            return Ok(shard);
        }
        // Another task may have found it damaged while this one waited.
        if let Some(quarantined) = self.quarantine_of(engine) {
            return Err(quarantined);
        }
        if self.engine(engine).await?.is_none() {
            return Err(StoreError::EngineNotFound(engine.to_string()));
        }
        let (dir, name, clock, retry) = (self.data_dir.clone(), engine.to_string(), self.clock.clone(), self.retry);
        let policies = (self.caps, self.breaker, self.changes.clone());
        let opened = blocking(move || Shard::open(&dir, &name, clock, retry, policies)).await;
        let shard = match opened {
            Ok(shard) => Arc::new(shard),
            Err(error) if error.is_corruption() => return Err(self.quarantine(engine, &error.to_string()).await),
            Err(error) => return Err(error),
        };
        if let Ok(mut shards) = self.shards.write() {
            shards.insert(engine.to_string(), shard.clone());
        }
        if let Ok(mut wakers) = self.wakers.write() {
            wakers.insert(engine.to_string(), shard.wake.clone());
        }
        if let Some(watcher) = &self.wake_watcher
            && let Err(error) = watcher.watch(&wake_file::wake_path(&self.data_dir, engine))
        {
            tracing::warn!(engine, %error, "cannot watch the shard's wake file: a second gateway's enqueues wake claims here only at their timeout");
        }
        Ok(shard)
    }

    /// Moves a damaged shard file (and its WAL) to `quarantine/` and remembers it.
    async fn quarantine(&self, engine: &str, why: &str) -> StoreError {
        if let Ok(mut shards) = self.shards.write() {
            shards.remove(engine);
        }
        let path = shard::shard_path(&self.data_dir, engine);
        let folder = self.data_dir.join("quarantine");
        let target = folder.join(format!("{engine}-{}.sqlite3", self.clock.now_ms()));
        let (from, to) = (path.clone(), target.clone());
        let moved = blocking(move || {
            create_private_dir(&folder)
                .map_err(|source| StoreError::Io { path: folder.display().to_string(), source })?;
            for suffix in ["", "-wal", "-shm"] {
                let (source, dest) = (format!("{}{suffix}", from.display()), format!("{}{suffix}", to.display()));
                if std::path::Path::new(&source).exists() {
                    std::fs::rename(&source, &dest).map_err(|source| StoreError::Io { path: dest.clone(), source })?;
                }
            }
            Ok(())
        })
        .await;
        let moved_to = match moved {
            Ok(()) => target.display().to_string(),
            Err(error) => format!("nowhere (moving it failed: {error}; it stays at {})", path.display()),
        };
        tracing::error!(
            engine,
            why,
            moved_to,
            "a shard is damaged: its engine's jobs are unavailable until it is restored from a backup"
        );
        if let Ok(mut quarantined) = self.quarantined.write() {
            quarantined.insert(engine.to_string(), moved_to.clone());
        }
        StoreError::Quarantined { engine: engine.to_string(), moved_to }
    }

    /// Every usable shard of a registered engine (for reads across engines); quarantined ones are left out.
    async fn all_shards(&self) -> Result<Vec<Arc<Shard>>, StoreError> {
        let mut shards = Vec::new();
        for engine in self.list_engines().await? {
            match self.shard(&engine.id).await {
                Ok(shard) => shards.push(shard),
                Err(StoreError::Quarantined { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(shards)
    }

    /// Opens every registered shard now (migrating them) and runs `PRAGMA quick_check` on each, so damage
    /// surfaces at start-up: a damaged shard is quarantined, the others serve on.
    pub async fn open_all_shards(&self) -> Result<usize, StoreError> {
        let mut healthy = 0;
        for shard in self.all_shards().await? {
            let check = self
                .read(&shard, |conn, _| Ok(conn.query_row("PRAGMA quick_check(1)", [], |r| r.get::<_, String>(0))?));
            match check.await {
                Ok(answer) if answer == "ok" => healthy += 1,
                Ok(answer) => {
                    self.quarantine(&shard.engine, &answer).await;
                }
                Err(error) if error.is_corruption() => {
                    self.quarantine(&shard.engine, &error.to_string()).await;
                }
                Err(error) => return Err(error),
            }
        }
        Ok(healthy)
    }

    /// The shards a filter looks at: its engine's (none if it is not registered), or every one.
    async fn shards_of(&self, filter: &JobFilter) -> Result<Vec<Arc<Shard>>, StoreError> {
        match &filter.engine {
            Some(engine) => match self.shard(engine).await {
                Ok(shard) => Ok(vec![shard]),
                Err(StoreError::EngineNotFound(_)) => Ok(Vec::new()),
                Err(e) => Err(e),
            },
            None => self.all_shards().await,
        }
    }

    /// The shard holding one of `user`'s jobs, and the job's state.
    async fn find_job(&self, user: &str, id: &str) -> Result<Option<(Arc<Shard>, JobStatus)>, StoreError> {
        for shard in self.all_shards().await? {
            let (user, id) = (user.to_string(), id.to_string());
            if let Some(status) = self.read(&shard, move |conn, _| operate::status_of(conn, &user, &id)).await? {
                return Ok(Some((shard, status)));
            }
        }
        Ok(None)
    }

    /// Applies an action to jobs of one shard, through its writer.
    async fn act_on_shard(
        &self,
        shard: &Shard,
        user: &str,
        ids: Vec<String>,
        action: JobAction,
    ) -> Result<operate::Acted, StoreError> {
        shard.writer.write(Act { user: user.to_string(), ids, action }).await
    }

    async fn read<T, F>(&self, shard: &Arc<Shard>, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection, &str) -> Result<T, StoreError> + Send + 'static,
    {
        let shard = shard.clone();
        blocking(move || {
            let conn = shard.reads.get()?;
            work(&conn, &shard.engine)
        })
        .await
    }
}

#[async_trait]
impl JobStore for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn changes(&self) -> &Arc<ChangeFeed> {
        &self.changes
    }

    async fn enqueue(&self, job: NewJob) -> Result<EnqueueOutcome, StoreError> {
        let shard = self.shard(&job.engine).await?;
        shard.writer.write(enqueue::Enqueue(job)).await
    }

    async fn enqueue_many(&self, engine: &str, jobs: Vec<NewJob>) -> Result<Vec<EnqueueOutcome>, StoreError> {
        let shard = self.shard(engine).await?;
        shard.writer.write(enqueue::EnqueueMany(jobs)).await
    }

    async fn replay(&self, job: &NewJob) -> Result<Option<EnqueueOutcome>, StoreError> {
        let shard = self.shard(&job.engine).await?;
        let job = job.clone();
        self.read(&shard, move |conn, _| queries::existing_for_key(conn, &job)).await
    }

    async fn get_job(&self, user: &str, id: &str) -> Result<Option<Job>, StoreError> {
        for shard in self.all_shards().await? {
            let (user, id) = (user.to_string(), id.to_string());
            let found = self
                .read(&shard, move |conn, engine| {
                    let Some(mut job) = queries::get(conn, engine, &user, &id)? else { return Ok(None) };
                    position::place_in_queue(conn, std::slice::from_mut(&mut job))?;
                    Ok(Some(job))
                })
                .await?;
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    async fn list_jobs(&self, user: &str, query: ListQuery) -> Result<JobPage, StoreError> {
        // Each shard returns its newest `limit + 1`; UUIDv7 ids sort by time, so a merge by id gives the
        // newest across shards and tells whether another page exists.
        let mut jobs = Vec::new();
        for shard in self.shards_of(&query.filter).await? {
            let (user, filter, before, limit) =
                (user.to_string(), query.filter.clone(), query.before_id.clone(), query.limit + 1);
            jobs.extend(
                self.read(&shard, move |conn, engine| {
                    let mut jobs = operate::list(conn, engine, &user, &filter, before.as_deref(), limit)?;
                    position::place_in_queue(conn, &mut jobs)?;
                    Ok(jobs)
                })
                .await?,
            );
        }
        jobs.sort_by(|a, b| b.id.cmp(&a.id));
        let more = jobs.len() > query.limit;
        jobs.truncate(query.limit);
        let next_cursor = if more { jobs.last().map(|j| j.id.clone()) } else { None };
        Ok(JobPage { jobs, next_cursor })
    }

    async fn act(&self, user: &str, id: &str, action: JobAction) -> Result<ActOutcome, StoreError> {
        let Some((shard, status)) = self.find_job(user, id).await? else { return Ok(ActOutcome::NotFound) };
        if !action.applies_to().contains(&status) {
            return Ok(ActOutcome::NotApplicable(status));
        }
        let acted = self.act_on_shard(&shard, user, vec![id.to_string()], action).await?;
        if let Some(job) = acted.done.into_iter().next() {
            return Ok(ActOutcome::Done(Box::new(job)));
        }
        if let Some(job) = acted.requested.into_iter().next() {
            return Ok(ActOutcome::Requested(Box::new(job)));
        }
        Ok(unchanged(action, self.find_job(user, id).await?.map(|(_, status)| status)))
    }

    async fn act_on_many(
        &self,
        engine: &str,
        user: &str,
        ids: &[String],
        action: JobAction,
    ) -> Result<u64, StoreError> {
        let shard = self.shard(engine).await?;
        let acted = self.act_on_shard(&shard, user, ids.to_vec(), action).await?;
        Ok((acted.done.len() + acted.requested.len()) as u64)
    }

    async fn job_ids(
        &self,
        user: &str,
        filter: &JobFilter,
        before_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let mut found = Vec::new();
        for shard in self.shards_of(filter).await? {
            let (user, filter, before) = (user.to_string(), filter.clone(), before_id.map(str::to_string));
            found.extend(
                self.read(&shard, move |conn, engine| {
                    let ids = operate::ids(conn, &user, &filter, before.as_deref(), limit)?;
                    Ok(ids.into_iter().map(|id| (engine.to_string(), id)).collect::<Vec<_>>())
                })
                .await?,
            );
        }
        found.sort_by(|a, b| b.1.cmp(&a.1));
        found.truncate(limit);
        Ok(found)
    }

    async fn attempts(&self, user: &str, id: &str) -> Result<Option<Vec<JobAttempt>>, StoreError> {
        for shard in self.all_shards().await? {
            let (user, id) = (user.to_string(), id.to_string());
            let found = self.read(&shard, move |conn, _| operate::attempts(conn, &user, &id)).await?;
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    async fn count_jobs(&self, user: &str, engine: Option<&str>) -> Result<JobCounts, StoreError> {
        let filter = JobFilter { engine: engine.map(str::to_string), ..JobFilter::default() };
        let mut total = JobCounts::default();
        for shard in self.shards_of(&filter).await? {
            let user = user.to_string();
            let counts = self.read(&shard, move |conn, _| operate::counts(conn, &user)).await?;
            for status in JobStatus::ALL {
                total.add(status, counts.of(status));
            }
        }
        Ok(total)
    }

    async fn job_stats(&self, user: &str, engine: Option<&str>, from_ms: i64) -> Result<Vec<StatRow>, StoreError> {
        let filter = JobFilter { engine: engine.map(str::to_string), ..JobFilter::default() };
        let mut rows = Vec::new();
        for shard in self.shards_of(&filter).await? {
            let user = user.to_string();
            rows.extend(self.read(&shard, move |conn, _| stats::read(conn, &user, from_ms)).await?);
        }
        Ok(rows)
    }

    async fn claim(
        &self,
        engine: &str,
        params: ClaimParams,
        stop: CancellationToken,
    ) -> Result<Vec<Lease>, StoreError> {
        let shard = self.shard(engine).await?;
        wait_for_work(&shard.wake, self.clock.as_ref(), params.wait_ms, &stop, || async {
            let op = claim_ops::Claim { max: params.max, lease_ms: params.lease_ms, worker: params.worker.clone() };
            let claimed = shard.writer.write(op).await?;
            Ok((claimed.leases, claimed.next_due_ms))
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
        let shard = self.shard(engine).await?;
        let op = claim_ops::Heartbeat {
            job_id: job_id.to_string(),
            lease_token: lease_token.to_string(),
            lease_ms,
            progress,
        };
        shard.writer.write(op).await
    }

    async fn finish(
        &self,
        engine: &str,
        job_id: &str,
        lease_token: &str,
        finish: Finish,
    ) -> Result<FinishOutcome, StoreError> {
        let shard = self.shard(engine).await?;
        let op = finish::Finish { job_id: job_id.to_string(), lease_token: lease_token.to_string(), finish };
        shard.writer.write(op).await
    }

    async fn finish_many(
        &self,
        engine: &str,
        items: Vec<(String, String, Finish)>,
    ) -> Result<Vec<Result<FinishOutcome, StoreError>>, StoreError> {
        let shard = self.shard(engine).await?;
        shard.writer.write(finish::FinishMany(items)).await
    }

    async fn prune_finished(&self, before_ms: i64, batch: u32) -> Result<u64, StoreError> {
        let mut pruned = 0;
        for shard in self.all_shards().await? {
            pruned += shard.writer.write(upkeep::Prune { before_ms, limit: batch }).await?;
        }
        Ok(pruned)
    }

    async fn reap_expired_leases(&self) -> Result<u64, StoreError> {
        let shards: Vec<Arc<Shard>> = match self.shards.read() {
            Ok(shards) => shards.values().cloned().collect(),
            Err(_) => Vec::new(),
        };
        let mut reaped = 0;
        for shard in shards {
            reaped += shard.writer.write(upkeep::ReapExpired).await?;
        }
        Ok(reaped)
    }

    async fn queue_counts(&self, engine: &str) -> Result<QueueCounts, StoreError> {
        let shard = self.shard(engine).await?;
        let mut counts = self.read(&shard, |conn, _| queries::counts(conn)).await?;
        counts.window = shard.metrics.window(self.clock.now_ms());
        Ok(counts)
    }

    async fn allow_user(&self, engine: &str, user: &str, is_owner: bool) -> Result<bool, StoreError> {
        self.write_changed(engine, settings::AllowUser { user: user.to_string(), is_owner }).await
    }

    async fn disallow_user(&self, engine: &str, user: &str) -> Result<bool, StoreError> {
        self.write_changed(engine, settings::DisallowUser(user.to_string())).await
    }

    async fn set_paused(&self, engine: &str, paused: bool) -> Result<bool, StoreError> {
        self.write_changed(engine, settings::SetPaused(paused)).await
    }

    async fn is_paused(&self, engine: &str) -> Result<bool, StoreError> {
        let shard = self.shard(engine).await?;
        self.read(&shard, |conn, _| queries::is_paused(conn)).await
    }

    fn quarantined(&self) -> Vec<(String, String)> {
        let mut list: Vec<(String, String)> = match self.quarantined.read() {
            Ok(map) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Err(_) => Vec::new(),
        };
        list.sort();
        list
    }

    async fn breakers(&self, engine: &str) -> Result<Vec<KindBreaker>, StoreError> {
        let shard = self.shard(engine).await?;
        self.read(&shard, |conn, _| breakers::tripped(conn)).await
    }

    async fn allowed_users(&self, engine: &str) -> Result<Vec<AllowedUser>, StoreError> {
        let shard = self.shard(engine).await?;
        self.read(&shard, |conn, _| queries::allowed_users(conn)).await
    }

    async fn set_weight(&self, engine: &str, user: &str, weight: i64) -> Result<bool, StoreError> {
        self.write_changed(engine, settings::SetWeight { user: user.to_string(), weight }).await
    }

    async fn set_key_limit(&self, engine: &str, key: &str, limit: Option<i64>) -> Result<bool, StoreError> {
        self.write_changed(engine, settings::SetKeyLimit { key: key.to_string(), limit }).await
    }

    async fn set_default_key_limit(&self, engine: &str, limit: Option<i64>) -> Result<bool, StoreError> {
        self.write_changed(engine, settings::SetDefaultKeyLimit(limit)).await
    }

    async fn share_settings(&self, engine: &str) -> Result<ShareSettings, StoreError> {
        let shard = self.shard(engine).await?;
        self.read(&shard, |conn, _| fair::share_settings(conn)).await
    }

    async fn create_schedule(&self, schedule: Schedule) -> Result<ScheduleOutcome, StoreError> {
        let shard = self.shard(&schedule.engine).await?;
        shard.writer.write(schedule_ops::CreateSchedule(Box::new(schedule))).await
    }

    async fn list_schedules(&self, user: &str) -> Result<Vec<Schedule>, StoreError> {
        let mut all = Vec::new();
        for shard in self.all_shards().await? {
            let user = user.to_string();
            all.extend(self.read(&shard, move |conn, engine| schedules::list(conn, engine, &user)).await?);
        }
        all.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(all)
    }

    async fn delete_schedule(&self, user: &str, id: &str) -> Result<bool, StoreError> {
        for shard in self.all_shards().await? {
            let op = schedule_ops::DeleteSchedule { user: user.to_string(), id: id.to_string() };
            if shard.writer.write(op).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn fire_schedules(&self, misfire_grace_ms: u64) -> Result<u64, StoreError> {
        let mut created = 0;
        let now = self.clock.now_ms();
        for shard in self.all_shards().await? {
            // A read first, so shards with nothing due cost no write transaction.
            if !self.read(&shard, move |conn, _| schedules::any_due(conn, now)).await? {
                continue;
            }
            created += shard.writer.write(schedule_ops::FireSchedules { grace_ms: misfire_grace_ms }).await?;
        }
        Ok(created)
    }
}

impl SqliteStore {
    /// A settings write whose answer is whether anything changed.
    async fn write_changed(&self, engine: &str, op: impl ops::ShardOp<Output = bool>) -> Result<bool, StoreError> {
        let shard = self.shard(engine).await?;
        shard.writer.write(op).await
    }
}

#[async_trait]
impl ControlStore for SqliteStore {
    async fn add_engine(&self, id: &str, owner: Option<&str>, token_hash: &str) -> Result<(), StoreError> {
        let (control, id, owner, hash) =
            (self.control.clone(), id.to_string(), owner.map(str::to_string), token_hash.to_string());
        let path = shard::shard_path(&self.data_dir, &id);
        let now = self.clock.now_ms();
        blocking(move || {
            // The shard (with the owner allowed) exists before the engine is visible, so a registered engine
            // always has one.
            shard::create_or_migrate(&path, owner.as_deref(), now)?;
            control.insert_engine(&id, owner.as_deref(), &hash, now)
        })
        .await
    }

    async fn list_engines(&self) -> Result<Vec<EngineRecord>, StoreError> {
        let control = self.control.clone();
        blocking(move || control.engines()).await
    }

    async fn engine(&self, id: &str) -> Result<Option<EngineRecord>, StoreError> {
        let (control, id) = (self.control.clone(), id.to_string());
        blocking(move || control.engine(&id)).await
    }

    async fn engine_for_token_hash(&self, token_hash: &str) -> Result<Option<EngineRecord>, StoreError> {
        let (control, hash, now) = (self.control.clone(), token_hash.to_string(), self.clock.now_ms());
        blocking(move || control.engine_for_token_hash(&hash, now)).await
    }

    async fn set_engine_token(&self, id: &str, token_hash: &str, grace_ms: u64) -> Result<(), StoreError> {
        let (control, id, hash) = (self.control.clone(), id.to_string(), token_hash.to_string());
        let until = (grace_ms > 0).then(|| self.clock.now_ms().saturating_add(grace_ms as i64));
        blocking(move || control.set_engine_token(&id, &hash, until)).await
    }

    async fn revoke_engine(&self, id: &str) -> Result<(), StoreError> {
        let (control, id, now) = (self.control.clone(), id.to_string(), self.clock.now_ms());
        blocking(move || control.revoke_engine(&id, now)).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let control = self.control.clone();
        blocking(move || control.ping()).await
    }

    async fn append_audit(&self, entry: AuditEntry) -> Result<(), StoreError> {
        let (control, now) = (self.control.clone(), self.clock.now_ms());
        blocking(move || control.append_audit(entry, now)).await
    }

    async fn verify_audit(&self) -> Result<AuditReport, StoreError> {
        let control = self.control.clone();
        blocking(move || control.verify_audit()).await
    }

    async fn checkpoint_audit(&self) -> Result<(), StoreError> {
        let control = self.control.clone();
        blocking(move || control.checkpoint_audit()).await
    }

    async fn list_audit(&self, query: AuditQuery) -> Result<AuditPage, StoreError> {
        let control = self.control.clone();
        blocking(move || control.list_audit(&query)).await
    }

    async fn prune_audit(&self, before_ms: i64) -> Result<u64, StoreError> {
        let control = self.control.clone();
        blocking(move || control.prune_audit(before_ms)).await
    }

    async fn insert_nonce(&self, nonce: &str, expires_at_ms: i64, max_kept: u64) -> Result<bool, StoreError> {
        let (control, nonce, now) = (self.control.clone(), nonce.to_string(), self.clock.now_ms());
        blocking(move || control.insert_nonce(&nonce, now, expires_at_ms, max_kept)).await
    }

    async fn consume_nonce(&self, nonce: &str) -> Result<NonceCheck, StoreError> {
        let (control, nonce, now) = (self.control.clone(), nonce.to_string(), self.clock.now_ms());
        blocking(move || control.consume_nonce(&nonce, now)).await
    }

    async fn insert_refresh_token(&self, token: RefreshTokenRecord) -> Result<(), StoreError> {
        let control = self.control.clone();
        blocking(move || control.insert_refresh_token(&token)).await
    }

    async fn rotate_refresh_token(
        &self,
        presented_hash: &str,
        next: RefreshTokenRecord,
    ) -> Result<RefreshCheck, StoreError> {
        let (control, hash, now) = (self.control.clone(), presented_hash.to_string(), self.clock.now_ms());
        blocking(move || control.rotate_refresh_token(&hash, &next, now)).await
    }

    async fn revoke_refresh_family(&self, presented_hash: &str) -> Result<Option<String>, StoreError> {
        let (control, hash, now) = (self.control.clone(), presented_hash.to_string(), self.clock.now_ms());
        blocking(move || control.revoke_refresh_family(&hash, now)).await
    }
}

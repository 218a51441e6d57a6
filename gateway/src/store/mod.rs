//! The job store interface: everything the API needs from storage, behind two traits.
//!
//! `JobStore` holds jobs (sharded by engine id); `ControlStore` holds engines and users. The embedded SQLite
//! shards implement both today; a PostgreSQL backend for gateway fleets implements the same traits later.
//! Every correctness rule (idempotency, leases, fencing) is enforced inside the implementation's database so
//! that two gateway processes sharing one store stay correct.

pub mod breakers;
pub mod changes;
pub mod core;
pub mod open;
pub mod postgres;
pub mod sqlite;
pub mod tokens;

use async_trait::async_trait;
use flowork_common::wire::{Job, JobAttempt, JobCounts, JobPage, JobStatus, Lease};
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::audit::{AuditEntry, AuditReport, AuditRow};
use crate::observability::queue_metrics::QueueWindow;
use crate::store::core::stats::StatRow;

/// The newest schema version of each migration set this build carries, for `/status` and `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaVersions {
    /// The SQLite control database (engines, users, audit).
    pub control: u32,
    /// Each SQLite shard (one engine's jobs).
    pub shard: u32,
    /// The PostgreSQL store of a fleet.
    pub postgres: u32,
}

impl SchemaVersions {
    pub fn of_this_build() -> Self {
        use crate::store::core::migration::latest;
        Self {
            control: latest(sqlite::migrate::CONTROL),
            shard: latest(sqlite::migrate::SHARD),
            postgres: latest(postgres::migrate::POSTGRES),
        }
    }
}

/// A validated job ready to be written, with its id and idempotency data already decided.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: String,
    pub engine: String,
    pub user: String,
    pub kind: String,
    /// Canonical JSON text of the payload.
    pub payload: String,
    pub priority: i32,
    pub run_at_ms: i64,
    pub max_attempts: u32,
    pub timeout_ms: u64,
    pub idempotency_key: String,
    pub fingerprint: String,
    pub traceparent: Option<String>,
    pub concurrency_key: Option<String>,
}

/// What an enqueue did.
#[derive(Debug)]
pub enum EnqueueOutcome {
    /// A new job was stored.
    Created(Job),
    /// The key was used before with the same request: the original job, nothing new stored.
    Replayed(Job),
    /// The key was used before with a different request.
    KeyReused,
    /// The user is neither the engine's owner nor on its whitelist.
    NotAllowed,
    /// The engine's queue holds `depth` jobs, its cap.
    QueueFull { depth: u64 },
    /// The user has `inflight` queued and running jobs on this engine, their cap.
    UserLimit { inflight: u64 },
}

/// Which of a user's jobs a listing, a count or a bulk action looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Any of these states; empty = every state.
    pub statuses: Vec<JobStatus>,
    pub engine: Option<String>,
    pub kind: Option<String>,
    /// Enqueued at or after this time (Unix ms).
    pub enqueued_from_ms: Option<i64>,
    /// Enqueued before this time (Unix ms).
    pub enqueued_before_ms: Option<i64>,
    /// Ids that start with this (lowercase hex and `-`).
    pub id_prefix: Option<String>,
}

impl JobFilter {
    /// The statuses as their names, for a driver's `status = ANY(...)` / `IN (...)`.
    pub fn status_names(&self) -> Vec<&'static str> {
        self.statuses.iter().map(|s| s.as_str()).collect()
    }
}

/// A page of a job listing, newest first.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub filter: JobFilter,
    pub limit: usize,
    /// Only jobs older than this job id (the previous page's cursor).
    pub before_id: Option<String>,
}

/// What an operator action does to a job: retry a `dead` or `cancelled` one, cancel a queued or running one,
/// delete a final one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobAction {
    Retry,
    Cancel,
    Delete,
}

/// What an action on one job did.
#[derive(Debug)]
pub enum ActOutcome {
    /// Done: the job as it is now (as it was, for a deletion).
    Done(Box<Job>),
    /// A running job whose engine is asked to stop it (cancel only).
    Requested(Box<Job>),
    /// The job exists but the action does not apply to its state.
    NotApplicable(JobStatus),
    /// A retry by a user no longer on the engine's whitelist.
    NotAllowed,
    NotFound,
}

/// A claim: up to `max` jobs, leased for `lease_ms`, waiting up to `wait_ms` for work.
#[derive(Debug, Clone)]
pub struct ClaimParams {
    pub max: u32,
    pub wait_ms: u64,
    pub lease_ms: u64,
    pub worker: String,
}

/// The outcome an engine reports for one attempt.
#[derive(Debug, Clone)]
pub enum Finish {
    Succeeded {
        result: Option<String>,
    },
    Failed {
        error: String,
        retryable: bool,
    },
    /// The engine stopped the job after its cancellation was requested.
    Cancelled,
    /// The handler ran past the job's timeout: a retryable failure, recorded as a timeout in its attempt.
    TimedOut {
        error: String,
    },
}

impl Finish {
    /// The successes of a finish report as (job id, lease token, result): what one multi-row statement writes.
    pub fn successes(items: &[(String, String, Finish)]) -> Vec<(&str, &str, Option<&str>)> {
        items
            .iter()
            .filter_map(|(id, token, finish)| match finish {
                Finish::Succeeded { result } => Some((id.as_str(), token.as_str(), result.as_deref())),
                _ => None,
            })
            .collect()
    }
}

/// One attempt's report as its engine sends it: the job, the lease token it holds and how the attempt ended.
#[derive(Debug, Clone, Copy)]
pub struct AttemptReport<'a> {
    pub job_id: &'a str,
    pub lease_token: &'a str,
    pub finish: &'a Finish,
}

/// Where a finished attempt left the job.
#[derive(Debug, Clone)]
pub struct FinishOutcome {
    pub status: JobStatus,
    pub run_at_ms: Option<i64>,
    /// The job's kind (for per-kind metrics and breakers).
    pub kind: String,
}

/// When a failed attempt is retried: exponential backoff with full jitter between `base_ms` and `cap_ms`.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub base_ms: u64,
    pub cap_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { base_ms: 1_000, cap_ms: 3_600_000 }
    }
}

/// When a breaker opens: `failures` retryable failed attempts within `window_ms` (0 failures = never) of one user
/// and kind, or of a kind from several users (`breakers`); it half-opens after `cooldown_ms` to let one probe job
/// through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    pub failures: u32,
    pub window_ms: u64,
    pub cooldown_ms: u64,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self { failures: 0, window_ms: 30_000, cooldown_ms: 30_000 }
    }
}

/// A breaker that is open or half-open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindBreaker {
    pub kind: String,
    /// The user whose jobs of the kind it holds back; `None` for the kind's breaker, which holds everyone's.
    pub user: Option<String>,
    /// `open` or `half_open`.
    pub state: String,
    pub failures: u64,
    pub opened_at_ms: Option<i64>,
    pub last_error: Option<String>,
}

/// A registered engine (never its token).
#[derive(Debug, Clone)]
pub struct EngineRecord {
    pub id: String,
    pub owner: Option<String>,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
    /// Until when the token replaced by the last rotation still works (its grace), if that rotation had one.
    pub previous_token_valid_until_ms: Option<i64>,
}

impl EngineRecord {
    pub fn is_active(&self) -> bool {
        self.revoked_at_ms.is_none()
    }

    /// The end of a rotation's grace still running at `now`: while it runs, the engine may still be on the
    /// replaced token, which another rotation would stop at once.
    pub fn grace_running(&self, now_ms: i64) -> Option<i64> {
        self.previous_token_valid_until_ms.filter(|until| *until > now_ms)
    }
}

/// Queue depth of one engine, and how it has been moving lately.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueueCounts {
    pub queued: u64,
    pub running: u64,
    pub window: QueueWindow,
}

/// Which audit rows to read: after the cursor (a row id), from a time on, at most `limit`.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuditQuery {
    pub since_ms: Option<i64>,
    pub after_id: Option<i64>,
    pub limit: usize,
}

/// Audit rows, oldest first, and the cursor of the next page if there is more.
#[derive(Debug, Clone, Default)]
pub struct AuditPage {
    pub rows: Vec<AuditRow>,
    pub next_after_id: Option<i64>,
}

impl AuditPage {
    /// The page of `limit` rows from up to `limit + 1` read (the extra one says whether there is more).
    pub fn from_rows(mut rows: Vec<AuditRow>, limit: usize) -> Self {
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next_after_id = if more { rows.last().map(|r| r.id) } else { None };
        Self { rows, next_after_id }
    }
}

/// How long an expired or used nonce is kept (while there is room) so its reuse is refused as such, not as unknown.
pub const NONCE_KEPT_AFTER_EXPIRY_MS: i64 = 3_600_000;

/// Whether a sign-in nonce could be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    Consumed,
    Unknown,
    Reused,
    Expired,
}

/// A refresh token to store (its hash only).
#[derive(Debug, Clone)]
pub struct RefreshTokenRecord {
    pub token_hash: String,
    pub family_id: String,
    pub user_id: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// What presenting a refresh token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshCheck {
    /// It was live; the next token of the family was stored.
    Rotated {
        user: String,
    },
    /// It had already been rotated: the family is now revoked.
    Reused {
        user: String,
    },
    Revoked,
    Expired,
    Unknown,
}

/// What happens to cron ticks that passed while no gateway was running (older than the misfire grace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissedTicks {
    /// They are dropped; the schedule goes on from the next tick.
    Skip,
    /// One job is enqueued for the latest of them.
    CatchUpOne,
}

impl MissedTicks {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::CatchUpOne => "catch_up_one",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Skip, Self::CatchUpOne].into_iter().find(|m| m.as_str() == text)
    }
}

/// A cron schedule: each tick enqueues one job like `template` under the schedule's user.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub id: String,
    pub engine: String,
    pub user: String,
    pub kind: String,
    /// Canonical JSON text of the payload.
    pub payload: String,
    pub cron: String,
    pub timezone: String,
    pub missed: MissedTicks,
    pub priority: i32,
    pub max_attempts: u32,
    pub timeout_ms: u64,
    pub concurrency_key: Option<String>,
    pub next_run_at_ms: i64,
    pub last_run_at_ms: Option<i64>,
    pub last_job_id: Option<String>,
    pub last_error: Option<String>,
    pub created_at_ms: i64,
}

/// What creating a schedule did.
#[derive(Debug)]
pub enum ScheduleOutcome {
    Created(Box<Schedule>),
    /// The user may not submit jobs to the engine.
    NotAllowed,
    /// The user already has this many schedules on the engine, the cap.
    TooMany(u64),
}

/// Fair-share and concurrency settings of an engine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShareSettings {
    /// Users whose weight is not 1.
    pub weights: Vec<(String, i64)>,
    /// The limit of keys without their own; `None` = unlimited.
    pub default_key_limit: Option<i64>,
    /// Keys with their own limit: (key, limit, running now).
    pub key_limits: Vec<(String, i64, i64)>,
}

/// A user allowed to submit to an engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedUser {
    pub user: String,
    pub is_owner: bool,
    pub added_at_ms: i64,
}

/// Storage failures, and the store-level refusals the API turns into 404/409.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("engine {0:?} is not registered")]
    EngineNotFound(String),
    #[error("engine {0:?} is already registered")]
    EngineExists(String),
    #[error("job {0} not found")]
    JobNotFound(String),
    #[error("the lease on job {0} is not held by this token or has expired")]
    LeaseLost(String),
    #[error(
        "{path} has schema version {found}, but this build knows only up to {supported} and the newer steps are not \
         all additive: it was written by a newer Flowork; the oldest build that can run on it is {oldest} (or \
         restore a backup)"
    )]
    NewerSchema { path: String, found: u32, supported: u32, oldest: String },
    /// The disk under the database is full.
    #[error("storage full: {0}")]
    StorageFull(String),
    /// The database (or the directory holding it) cannot be written.
    #[error("storage read-only: {0}")]
    ReadOnly(String),
    /// The operating system failed to read or write the database.
    #[error("storage I/O failure: {0}")]
    StorageIo(String),
    /// The database's contents are damaged (not a database, a corrupt page or index, a key of the wrong size).
    #[error("database damaged: {0}")]
    Corrupt(String),
    /// The database cannot be reached now (no connection, pool exhausted, server shutting down).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A `--store` setting that names no store this build can open, or a store that cannot be adopted.
    #[error("{0}")]
    Config(String),
    /// Any other failure the database reported, with the driver's message (for the log).
    #[error("database error: {0}")]
    Database(String),
    #[error("I/O error on {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("the shard writer for engine {0:?} has stopped")]
    WriterStopped(String),
    #[error("a blocking store task failed: {0}")]
    Task(String),
    #[error("the shard of engine {engine:?} was found corrupt and moved to {moved_to}")]
    Quarantined { engine: String, moved_to: String },
}

impl Clone for StoreError {
    /// The same error for another waiter of a failed group commit (an I/O error keeps its kind and message).
    fn clone(&self) -> Self {
        match self {
            Self::EngineNotFound(e) => Self::EngineNotFound(e.clone()),
            Self::EngineExists(e) => Self::EngineExists(e.clone()),
            Self::JobNotFound(j) => Self::JobNotFound(j.clone()),
            Self::LeaseLost(j) => Self::LeaseLost(j.clone()),
            Self::NewerSchema { path, found, supported, oldest } => {
                Self::NewerSchema { path: path.clone(), found: *found, supported: *supported, oldest: oldest.clone() }
            }
            Self::StorageFull(d) => Self::StorageFull(d.clone()),
            Self::ReadOnly(d) => Self::ReadOnly(d.clone()),
            Self::StorageIo(d) => Self::StorageIo(d.clone()),
            Self::Corrupt(d) => Self::Corrupt(d.clone()),
            Self::Unavailable(d) => Self::Unavailable(d.clone()),
            Self::Config(d) => Self::Config(d.clone()),
            Self::Database(d) => Self::Database(d.clone()),
            Self::Io { path, source } => {
                Self::Io { path: path.clone(), source: std::io::Error::new(source.kind(), source.to_string()) }
            }
            Self::WriterStopped(e) => Self::WriterStopped(e.clone()),
            Self::Task(d) => Self::Task(d.clone()),
            Self::Quarantined { engine, moved_to } => {
                Self::Quarantined { engine: engine.clone(), moved_to: moved_to.clone() }
            }
        }
    }
}

impl StoreError {
    /// A storage condition the client may be told about (no paths, no internal detail), with its error code.
    pub fn storage_condition(&self) -> Option<(&'static str, String)> {
        if let Self::Quarantined { engine, .. } = self {
            return Some((
                "shard_quarantined",
                format!(
                    "the jobs of engine {engine:?} are unavailable: its database was found damaged and set aside; \
                     an operator must restore it from a backup"
                ),
            ));
        }
        match self {
            Self::StorageFull(_) => {
                Some(("storage_full", "the gateway's disk is full; jobs are safe, retry once space is freed".into()))
            }
            Self::ReadOnly(_) => {
                Some(("storage_read_only", "the gateway's storage is read-only; retry once it is writable".into()))
            }
            Self::StorageIo(_) => {
                Some(("storage_io_error", "the gateway could not read or write its data; retry shortly".into()))
            }
            _ => None,
        }
    }

    /// The database file is damaged (not a database, or corrupt).
    pub fn is_corruption(&self) -> bool {
        matches!(self, Self::Corrupt(_))
    }

    /// A failure of the database itself, which breaks the transaction it happened in (where a refusal, such as a
    /// lost lease, concerns one item of a batch only).
    pub fn breaks_transaction(&self) -> bool {
        matches!(
            self,
            Self::StorageFull(_)
                | Self::ReadOnly(_)
                | Self::StorageIo(_)
                | Self::Corrupt(_)
                | Self::Unavailable(_)
                | Self::Database(_)
        )
    }
}

/// Jobs: enqueue, read, cancel, and the engine side (claim, heartbeat, finish).
#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Which backend this is (`sqlite` or `postgres`), for `/status`.
    fn backend(&self) -> &'static str;
    /// Where committed job changes are published, for live events.
    fn changes(&self) -> &std::sync::Arc<changes::ChangeFeed>;
    async fn enqueue(&self, job: NewJob) -> Result<EnqueueOutcome, StoreError>;
    /// Enqueues jobs of one engine in one transaction; one outcome per job, in order.
    async fn enqueue_many(&self, engine: &str, jobs: Vec<NewJob>) -> Result<Vec<EnqueueOutcome>, StoreError>;
    /// Without writing: the answer for a job whose (user, key) was already used (`Replayed` or `KeyReused`).
    async fn replay(&self, job: &NewJob) -> Result<Option<EnqueueOutcome>, StoreError>;
    async fn get_job(&self, user: &str, id: &str) -> Result<Option<Job>, StoreError>;
    async fn list_jobs(&self, user: &str, query: ListQuery) -> Result<JobPage, StoreError>;
    /// Retries, cancels or deletes one of `user`'s jobs, when the action applies to its state.
    async fn act(&self, user: &str, id: &str, action: JobAction) -> Result<ActOutcome, StoreError>;
    /// Applies an action to those of `ids` (at most a few hundred, all on `engine`) that belong to `user` and are in
    /// a state it applies to, in one short transaction; returns how many changed.
    async fn act_on_many(&self, engine: &str, user: &str, ids: &[String], action: JobAction)
    -> Result<u64, StoreError>;
    /// Up to `limit` of `user`'s jobs matching `filter` (its engine, or every engine), newest first, older than
    /// `before_id`: as (engine, id), the pages a bulk action walks.
    async fn job_ids(
        &self,
        user: &str,
        filter: &JobFilter,
        before_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError>;
    /// Every attempt of one of `user`'s jobs, oldest first (the running one last); `None` if there is no such job.
    async fn attempts(&self, user: &str, id: &str) -> Result<Option<Vec<JobAttempt>>, StoreError>;
    /// How many of `user`'s jobs are in each state, on one engine or on all.
    async fn count_jobs(&self, user: &str, engine: Option<&str>) -> Result<JobCounts, StoreError>;
    /// `user`'s per-minute counters (on `engine`, or on every engine) from the minute starting at `from_ms` on.
    async fn job_stats(&self, user: &str, engine: Option<&str>, from_ms: i64) -> Result<Vec<StatRow>, StoreError>;
    /// Leases runnable jobs, waiting up to `wait_ms` (woken by enqueues, not by polling) unless `stop` fires.
    async fn claim(&self, engine: &str, params: ClaimParams, stop: CancellationToken)
    -> Result<Vec<Lease>, StoreError>;
    /// Extends a lease; returns the new expiry (Unix ms).
    /// Extends a lease (recording progress, if any); returns the new expiry (Unix ms) and whether the job's
    /// cancellation was requested.
    async fn heartbeat(
        &self,
        engine: &str,
        job_id: &str,
        lease_token: &str,
        lease_ms: u64,
        progress: Option<String>,
    ) -> Result<(i64, bool), StoreError>;
    async fn finish(
        &self,
        engine: &str,
        job_id: &str,
        lease_token: &str,
        finish: Finish,
    ) -> Result<FinishOutcome, StoreError>;
    /// Records several outcomes in one transaction; one result per item, in order (a lost lease fails only its
    /// own item).
    async fn finish_many(
        &self,
        engine: &str,
        items: Vec<(String, String, Finish)>,
    ) -> Result<Vec<Result<FinishOutcome, StoreError>>, StoreError>;
    /// Deletes jobs that finished before `before_ms` on every engine (at most `batch` per engine per call);
    /// returns how many.
    async fn prune_finished(&self, before_ms: i64, batch: u32) -> Result<u64, StoreError>;
    /// Puts jobs whose lease expired back in the queue (or to `dead` when out of attempts), on every open shard.
    async fn reap_expired_leases(&self) -> Result<u64, StoreError>;
    async fn queue_counts(&self, engine: &str) -> Result<QueueCounts, StoreError>;
    /// Adds a user to an engine's whitelist (or marks its owner); returns false if already there.
    async fn allow_user(&self, engine: &str, user: &str, is_owner: bool) -> Result<bool, StoreError>;
    /// Removes a user from an engine's whitelist; returns false if they were not on it. The owner stays.
    async fn disallow_user(&self, engine: &str, user: &str) -> Result<bool, StoreError>;
    async fn allowed_users(&self, engine: &str) -> Result<Vec<AllowedUser>, StoreError>;
    /// Pauses (claims hand out nothing) or resumes an engine; returns whether anything changed.
    async fn set_paused(&self, engine: &str, paused: bool) -> Result<bool, StoreError>;
    async fn is_paused(&self, engine: &str) -> Result<bool, StoreError>;
    /// Engines whose shard was found damaged and set aside: (engine, where the file went).
    fn quarantined(&self) -> Vec<(String, String)>;
    /// The job kinds held back by their circuit breaker on this engine.
    async fn breakers(&self, engine: &str) -> Result<Vec<KindBreaker>, StoreError>;
    /// Sets a user's fair-share weight on an engine (1-1000); returns whether anything changed.
    async fn set_weight(&self, engine: &str, user: &str, weight: i64) -> Result<bool, StoreError>;
    /// Sets (`Some`) or removes (`None`) the running-job limit of a concurrency key on an engine.
    async fn set_key_limit(&self, engine: &str, key: &str, limit: Option<i64>) -> Result<bool, StoreError>;
    /// Sets the limit of keys without their own (`None` = unlimited).
    async fn set_default_key_limit(&self, engine: &str, limit: Option<i64>) -> Result<bool, StoreError>;
    async fn share_settings(&self, engine: &str) -> Result<ShareSettings, StoreError>;
    async fn create_schedule(&self, schedule: Schedule) -> Result<ScheduleOutcome, StoreError>;
    /// The user's schedules on every engine.
    async fn list_schedules(&self, user: &str) -> Result<Vec<Schedule>, StoreError>;
    /// Deletes one of the user's schedules; false if there is none with that id.
    async fn delete_schedule(&self, user: &str, id: &str) -> Result<bool, StoreError>;
    /// Enqueues the jobs of every due cron tick on every engine; returns how many jobs were created.
    async fn fire_schedules(&self, misfire_grace_ms: u64) -> Result<u64, StoreError>;
}

/// Engines and users.
#[async_trait]
pub trait ControlStore: Send + Sync + 'static {
    /// Registers an engine and creates its shard.
    async fn add_engine(&self, id: &str, owner: Option<&str>, token_hash: &str) -> Result<(), StoreError>;
    async fn list_engines(&self) -> Result<Vec<EngineRecord>, StoreError>;
    async fn engine(&self, id: &str) -> Result<Option<EngineRecord>, StoreError>;
    /// The active engine whose token (or previous token, within its grace period) has this hash.
    async fn engine_for_token_hash(&self, token_hash: &str) -> Result<Option<EngineRecord>, StoreError>;
    /// Replaces an engine's token (and un-revokes it); the old token keeps working for `grace_ms`.
    async fn set_engine_token(&self, id: &str, token_hash: &str, grace_ms: u64) -> Result<(), StoreError>;
    async fn revoke_engine(&self, id: &str) -> Result<(), StoreError>;
    /// A cheap check that the databases answer, for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Appends to the tamper-evident audit log (every field cut to its bound, the row signed).
    async fn append_audit(&self, entry: AuditEntry) -> Result<(), StoreError>;
    /// Checks the audit log: the chain, the signatures and the head; what is wrong, row by row.
    async fn verify_audit(&self) -> Result<AuditReport, StoreError>;
    /// Records the newest row, signed, as the head of the log (at shutdown and after operator commands; the
    /// stores also do it as rows are appended).
    async fn checkpoint_audit(&self) -> Result<(), StoreError>;
    /// A page of the audit log, oldest first.
    async fn list_audit(&self, query: AuditQuery) -> Result<AuditPage, StoreError>;
    /// Deletes audit rows older than `before_ms`, keeping the rest verifiable.
    async fn prune_audit(&self, before_ms: i64) -> Result<u64, StoreError>;
    /// Stores a sign-in nonce, unless `max_kept` are kept already once expired and used ones are pruned: then
    /// `false`, so a flood of `GET /auth/nonce` cannot grow the table without bound.
    async fn insert_nonce(&self, nonce: &str, expires_at_ms: i64, max_kept: u64) -> Result<bool, StoreError>;
    async fn consume_nonce(&self, nonce: &str) -> Result<NonceCheck, StoreError>;
    async fn insert_refresh_token(&self, token: RefreshTokenRecord) -> Result<(), StoreError>;
    async fn rotate_refresh_token(
        &self,
        presented_hash: &str,
        next: RefreshTokenRecord,
    ) -> Result<RefreshCheck, StoreError>;
    /// Revokes the family of a refresh token; the user it belonged to, if known.
    async fn revoke_refresh_family(&self, presented_hash: &str) -> Result<Option<String>, StoreError>;
}

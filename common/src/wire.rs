//! The JSON bodies of the public and the engine (internal) HTTP API.
//!
//! Payloads and results stay raw JSON text (`RawValue`) on the hot path: the gateway stores and forwards them
//! without building a tree for every job.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The lifecycle of a job. `succeeded`, `dead` and `cancelled` are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Dead,
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 5] = [Self::Queued, Self::Running, Self::Succeeded, Self::Dead, Self::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Dead => "dead",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Dead | Self::Cancelled)
    }
}

/// `POST /jobs` body. Only `engine` and `kind` are required.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnqueueRequest {
    /// The engine's id: 1-63 lowercase letters, digits and `-`, not starting with `-`.
    #[schema(pattern = "^[a-z0-9][a-z0-9-]{0,62}$", min_length = 1, max_length = 63, example = "local")]
    pub engine: String,
    /// What the engine runs: 1-64 lowercase letters, digits and `-`, `_`, `.`.
    #[schema(pattern = "^[a-z0-9._-]{1,64}$", min_length = 1, max_length = 64, example = "echo")]
    pub kind: String,
    /// Any JSON value, handed to the engine as it is (`null` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
    /// Higher runs first among the caller's jobs (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Not before this time (RFC 3339); now when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub run_at: Option<String>,
    /// Attempts before the job is `dead` (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100)]
    pub max_attempts: Option<u32>,
    /// How long one attempt may run, in milliseconds (default 30000, at most 24 hours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 86_400_000)]
    pub timeout_ms: Option<u64>,
    /// Jobs sharing a key run at most the key's limit at once on the engine (set by its owner): 1-200 visible
    /// ASCII characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[!-~]{1,200}$", min_length = 1, max_length = 200)]
    pub concurrency_key: Option<String>,
}

/// A job as every endpoint returns it. Times are RFC 3339 with milliseconds, in UTC.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Job {
    #[schema(format = "uuid")]
    pub id: String,
    pub engine: String,
    /// The user who submitted it: a lowercase `0x` address for wallet users.
    pub user: String,
    pub kind: String,
    pub status: JobStatus,
    /// The payload as submitted (any JSON value).
    #[schema(value_type = Value)]
    pub payload: Box<RawValue>,
    /// Attempts started so far.
    pub attempts: u32,
    pub max_attempts: u32,
    pub priority: i32,
    pub timeout_ms: u64,
    #[schema(format = DateTime)]
    pub run_at: String,
    #[schema(format = DateTime)]
    pub enqueued_at: String,
    /// When the latest attempt started.
    #[schema(format = DateTime)]
    pub claimed_at: Option<String>,
    #[schema(format = DateTime)]
    pub finished_at: Option<String>,
    /// The result of a succeeded job (any JSON value).
    #[schema(value_type = Option<Value>)]
    pub result: Option<Box<RawValue>>,
    /// What went wrong in the latest failed attempt.
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
    /// For a queued job, in `GET /jobs` and `GET /jobs/{id}`: how many jobs on its engine will be claimed before it
    /// under the fair order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<u64>,
    /// For a queued job that cannot be claimed yet: `paused` (the engine), `run_at` (not due yet),
    /// `concurrency_key` (its key is at its limit) or `breaker` (its kind, or its user's jobs of the kind, are held
    /// back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_on: Option<String>,
    /// A running job whose cancellation was asked for; the engine stops it at its next heartbeat.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancel_requested: bool,
    /// The latest progress a running job reported: `{"percent", "message"}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Progress>)]
    pub progress: Option<Box<RawValue>>,
}

/// `GET /jobs` answer: newest first; `next_cursor` continues the listing.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[schema(format = "uuid")]
    pub next_cursor: Option<String>,
}

/// How one attempt of a job ended, in `GET /jobs/{id}/attempts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptEnd {
    Succeeded,
    /// The handler failed (retried while attempts are left and the failure is retryable).
    Failed,
    /// The handler ran past the job's `timeout_ms`.
    TimedOut,
    /// The engine stopped heartbeating and the lease lapsed.
    LeaseExpired,
    /// The engine stopped the job after its cancellation was asked.
    Cancelled,
}

impl AttemptEnd {
    pub const ALL: [AttemptEnd; 5] =
        [Self::Succeeded, Self::Failed, Self::TimedOut, Self::LeaseExpired, Self::Cancelled];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::LeaseExpired => "lease_expired",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|end| end.as_str() == text)
    }
}

/// One attempt of a job: who ran it, when, and how it ended (`outcome` and `finished_at` are `null` while it runs).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobAttempt {
    /// 1 for the first attempt; counts on across retries of the job.
    pub number: u32,
    /// The worker that claimed it, as its claim named itself (host and process for the Rust engine).
    pub worker: Option<String>,
    #[schema(format = DateTime)]
    pub started_at: Option<String>,
    #[schema(format = DateTime)]
    pub finished_at: Option<String>,
    pub outcome: Option<AttemptEnd>,
    pub error: Option<String>,
}

/// `GET /jobs/{id}/attempts` answer: every attempt, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobAttempts {
    pub attempts: Vec<JobAttempt>,
}

/// `GET /jobs/counts` answer: how many of the caller's jobs are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobCounts {
    pub queued: u64,
    pub running: u64,
    pub succeeded: u64,
    pub dead: u64,
    pub cancelled: u64,
}

/// Two percentiles of a duration, in milliseconds, estimated from a histogram; `null` when nothing was measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Percentiles {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
}

/// What happened to the caller's jobs in one span of time (a minute of `GET /jobs/stats`, or its whole window).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatsFigures {
    /// Jobs stored.
    pub enqueued: u64,
    /// Attempts that succeeded.
    pub succeeded: u64,
    /// Attempts that failed (errors, timeouts, lapsed leases), retried or not.
    pub failed: u64,
    /// Jobs that gave up (`dead`).
    pub dead: u64,
    /// From due to claimed, per claim.
    pub queue_ms: Percentiles,
    /// From claimed to finished, per finished attempt.
    pub run_ms: Percentiles,
}

/// One minute of `GET /jobs/stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatsBucket {
    /// The minute's start.
    #[schema(format = DateTime)]
    pub start: String,
    #[serde(flatten)]
    pub figures: StatsFigures,
}

/// `GET /jobs/stats` answer: per-minute figures of the caller's jobs over a window, oldest minute first, every
/// minute present; counted as jobs are stored, claimed and finished (kept 24 hours).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobStats {
    /// The engine asked for; `null` for all of the caller's engines.
    pub engine: Option<String>,
    pub window_seconds: u64,
    pub bucket_seconds: u64,
    pub buckets: Vec<StatsBucket>,
    /// The whole window.
    pub totals: StatsFigures,
}

impl JobCounts {
    /// How many jobs are in `status`.
    pub fn of(&self, status: JobStatus) -> u64 {
        match status {
            JobStatus::Queued => self.queued,
            JobStatus::Running => self.running,
            JobStatus::Succeeded => self.succeeded,
            JobStatus::Dead => self.dead,
            JobStatus::Cancelled => self.cancelled,
        }
    }

    /// Adds `n` jobs of `status`.
    pub fn add(&mut self, status: JobStatus, n: u64) {
        match status {
            JobStatus::Queued => self.queued += n,
            JobStatus::Running => self.running += n,
            JobStatus::Succeeded => self.succeeded += n,
            JobStatus::Dead => self.dead += n,
            JobStatus::Cancelled => self.cancelled += n,
        }
    }
}

/// The error body of every failed request.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A machine-readable code, e.g. `job_not_found`.
    #[schema(example = "job_not_found")]
    pub error: String,
    /// What went wrong, for humans.
    pub message: String,
}

/// The header an engine names the engine-protocol version it speaks with (`MAJOR` or `MAJOR.MINOR`), on every
/// `/internal/*` request; the gateway answers with the version it speaks. A request without it is taken as major
/// 1 (engines older than the header); an unknown major is refused with 400 `unsupported_protocol`.
pub const PROTOCOL_HEADER: &str = "flowork-protocol";

/// The engine-protocol version this build speaks. Minors add optional fields only; a new major may change or
/// remove what older engines rely on.
pub const PROTOCOL_VERSION: &str = "1.1";

/// The engine-protocol majors this build accepts.
pub const SUPPORTED_PROTOCOL_MAJORS: &[u32] = &[1];

/// `POST /internal/claim`: wait up to `wait_ms` for up to `max` runnable jobs and lease them for `lease_ms`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    /// The most jobs to lease: 1-1000.
    #[schema(minimum = 1, maximum = 1000)]
    pub max: u32,
    /// How long to wait for a runnable job, in milliseconds (at most 60000 is used).
    #[serde(default)]
    pub wait_ms: u64,
    /// How long each lease lasts unless extended: 100 ms to 1 hour.
    #[schema(minimum = 100, maximum = 3_600_000)]
    pub lease_ms: u64,
    /// Who holds the leases (host and process), for operators reading the store.
    pub worker: String,
    /// The engine's worker numbers, shown in `GET /status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<WorkerReport>,
}

/// What an engine reports about its workers with each claim.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkerReport {
    /// Workers now.
    pub workers: u32,
    pub min_workers: u32,
    pub max_workers: u32,
    /// Workers running a job right now.
    pub busy: u32,
    /// Fraction of worker time spent on jobs over the last autoscaling window (0-1).
    pub utilization: f64,
    /// Autoscaler resizes since the engine started.
    #[serde(default)]
    pub scale_ups: u64,
    #[serde(default)]
    pub scale_downs: u64,
}

/// One leased job: only the holder of `lease_token` may heartbeat or finish it, and only until it expires.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Lease {
    pub job: Job,
    pub lease_token: String,
    #[schema(format = DateTime)]
    pub lease_expires_at: String,
}

/// `POST /internal/claim` answer; empty when nothing became runnable within `wait_ms`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClaimResponse {
    pub leases: Vec<Lease>,
}

/// `POST /internal/jobs/{id}/heartbeat`: extend the lease by `lease_ms` from now.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    pub lease_token: String,
    /// The new lease, from now: 100 ms to 1 hour.
    #[schema(minimum = 100, maximum = 3_600_000)]
    pub lease_ms: u64,
    /// The job's progress, shown on `GET /jobs/{id}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
}

/// How far a running job has come.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Progress {
    /// 0-100.
    #[schema(minimum = 0, maximum = 100)]
    pub percent: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `POST /internal/jobs/{id}/heartbeat` answer.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HeartbeatResponse {
    #[schema(format = DateTime)]
    pub lease_expires_at: String,
    /// The user cancelled the job: stop it and finish with the `cancelled` outcome.
    #[serde(default)]
    pub cancel_requested: bool,
}

/// Whether an attempt worked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Succeeded,
    Failed,
    /// Stopped because the user cancelled it.
    Cancelled,
    /// The handler ran past the job's `timeout_ms`: a retryable failure (protocol 1.1; `error` says so).
    TimedOut,
}

/// `POST /internal/jobs/{id}/finish`: the outcome of one attempt. A flat struct rather than a tagged enum
/// because serde cannot buffer a `RawValue` inside an internally tagged enum.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FinishRequest {
    pub lease_token: String,
    pub outcome: AttemptOutcome,
    /// The result of a succeeded attempt (any JSON value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Value>)]
    pub result: Option<Box<RawValue>>,
    /// What went wrong in a failed attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether another attempt may succeed (a timeout, a 503); `false` for a request that can never work.
    #[serde(default)]
    pub retryable: bool,
}

/// `POST /internal/finish`: the outcomes of several attempts in one call (an engine sends what finished while its
/// previous call was in flight), each as for `POST /internal/jobs/{id}/finish`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FinishBatchRequest {
    /// 1-1000 outcomes.
    #[schema(min_items = 1, max_items = 1000)]
    pub finishes: Vec<FinishItem>,
}

/// One outcome of a `FinishBatchRequest`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FinishItem {
    pub job_id: String,
    pub report: FinishRequest,
}

/// `POST /internal/finish` answer: one result per item, in order.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FinishBatchResponse {
    pub results: Vec<FinishItemResult>,
}

/// Where one job went, or why its report was refused (`error` is the code a single finish would answer).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FinishItemResult {
    pub job_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<JobStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub run_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `POST /internal/jobs/{id}/finish` answer: where the job went.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FinishResponse {
    pub status: JobStatus,
    /// When a retried job becomes runnable again.
    #[schema(format = DateTime)]
    pub run_at: Option<String>,
}

/// `GET /internal/whoami` answer: the engine the token belongs to.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WhoAmI {
    pub engine_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finish_request_keeps_the_result_raw() {
        let ok: FinishRequest =
            serde_json::from_str(r#"{"outcome":"succeeded","lease_token":"t","result":{"a": 1}}"#).unwrap();
        assert_eq!(ok.outcome, AttemptOutcome::Succeeded);
        assert_eq!(ok.result.unwrap().get(), r#"{"a": 1}"#);
        let failed: FinishRequest =
            serde_json::from_str(r#"{"outcome":"failed","lease_token":"t","error":"boom","retryable":true}"#).unwrap();
        assert!(failed.retryable && failed.error.as_deref() == Some("boom"));
        assert!(serde_json::from_str::<FinishRequest>(r#"{"outcome":"maybe","lease_token":"t"}"#).is_err());
    }

    #[test]
    fn status_names_round_trip() {
        for s in JobStatus::ALL {
            assert_eq!(JobStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(JobStatus::parse("done"), None);
    }
}

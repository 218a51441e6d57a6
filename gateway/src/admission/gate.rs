//! The one door new jobs pass, for `POST /jobs` and `POST /jobs/batch` alike: drain, the gateway-wide cap, an
//! idempotency key already in flight, the store's per-engine caps, and the answer (with its `Retry-After`) for
//! each refusal. A replay of a job already created is answered whatever refuses new work.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use flowork_common::wire::{ErrorBody, Job};

use super::drain::{DRAIN_RETRY_AFTER_S, DrainState};
use super::inflight::InflightKeys;
use super::{AdmissionLimits, admit, retry_after_s, slots_needed};
use crate::http::error::ApiError;
use crate::store::{ControlStore, EnqueueOutcome, JobStore, NewJob, QueueCounts, StoreError};

/// How long a sum of every engine's queued jobs is used before it is read again (far from the cap).
const TOTAL_KEPT: Duration = Duration::from_millis(250);

/// An admitted job.
#[derive(Debug)]
pub enum Admitted {
    Created(Job),
    /// The job an earlier request with the same idempotency key created.
    Replayed(Job),
}

/// A refused job of a batch, as its item answers it (one refusal, copied to each job it refused).
#[derive(Debug, Clone)]
pub struct Refused {
    pub status: StatusCode,
    pub body: ErrorBody,
    /// For a 429 or 503: seconds to wait, as `Retry-After` would say.
    pub retry_after_s: Option<u64>,
}

impl From<&ApiError> for Refused {
    fn from(error: &ApiError) -> Self {
        let (status, body) = error.status_and_body();
        Self { status, body, retry_after_s: error.retry_after_s() }
    }
}

/// The admission of new jobs.
pub struct Admission {
    jobs: Arc<dyn JobStore>,
    control: Arc<dyn ControlStore>,
    pub caps: AdmissionLimits,
    pub drain: Arc<DrainState>,
    inflight: Arc<InflightKeys>,
    /// Queued jobs over all engines and their drain rate, and when they were read (`None`: never).
    total: tokio::sync::Mutex<Option<(Instant, u64, f64)>>,
    /// Jobs this process created since `total` was last read.
    created_since_total: AtomicU64,
}

impl Admission {
    pub fn new(jobs: Arc<dyn JobStore>, control: Arc<dyn ControlStore>, caps: AdmissionLimits) -> Self {
        Self {
            jobs,
            control,
            caps,
            drain: Arc::default(),
            inflight: Arc::default(),
            total: tokio::sync::Mutex::new(None),
            created_since_total: AtomicU64::new(0),
        }
    }

    /// Admits one job (`POST /jobs`).
    pub async fn admit_one(&self, job: NewJob) -> Result<Admitted, ApiError> {
        if let Some(refusal) = self.refuses_new_work(1).await?.1 {
            return self.replay_or(&job, refusal).await;
        }
        let Some(_in_progress) = self.inflight.begin(&job.user, &job.engine, &job.idempotency_key) else {
            return Err(ApiError::Conflict {
                code: "idempotency_key_in_progress",
                message: "a request with this Idempotency-Key is still being processed; retry shortly".into(),
                retry_after_s: Some(1),
            });
        };
        let engine = job.engine.clone();
        match self.jobs.enqueue(job).await? {
            EnqueueOutcome::QueueFull { depth } => Err(self.queue_full(&engine, depth, 1).await),
            EnqueueOutcome::UserLimit { inflight } => Err(self.user_limit(&engine, inflight, 1).await),
            outcome => self.answer(outcome, &engine),
        }
    }

    /// Admits the jobs of a batch (`POST /jobs/batch`), each with its index in the request; those of one engine
    /// go in one transaction. `Err` when nothing could be admitted or replayed, for the whole request.
    pub async fn admit_batch(
        &self,
        mut jobs: Vec<(usize, NewJob)>,
    ) -> Result<Vec<(usize, Result<Admitted, Refused>)>, ApiError> {
        let mut answers = Vec::with_capacity(jobs.len());
        // A refusal of new work takes the first jobs that fit (none while draining); the rest are refused, but a
        // replay of an accepted job is still answered. When nothing goes on, the whole batch is refused.
        let (admitted, refusal) = self.refuses_new_work(jobs.len() as u64).await?;
        let refused = jobs.split_off((admitted as usize).min(jobs.len()));
        if let Some(refusal) = refusal {
            let copy = Refused::from(&refusal);
            let mut replayed = false;
            for (index, job) in refused {
                let answer = match self.jobs.replay(&job).await? {
                    Some(outcome) => self.answer(outcome, &job.engine).map_err(|e| Refused::from(&e)),
                    None => Err(copy.clone()),
                };
                replayed |= answer.is_ok();
                answers.push((index, answer));
            }
            if jobs.is_empty() && !replayed {
                return Err(refusal);
            }
        }
        let mut by_engine: std::collections::BTreeMap<String, Vec<(usize, NewJob)>> = Default::default();
        for (index, job) in jobs {
            by_engine.entry(job.engine.clone()).or_default().push((index, job));
        }
        for (engine, items) in by_engine {
            let (indexes, jobs): (Vec<usize>, Vec<NewJob>) = items.into_iter().unzip();
            let outcomes = match self.jobs.enqueue_many(&engine, jobs).await {
                Ok(outcomes) => outcomes,
                Err(error) => {
                    let refused = Refused::from(&ApiError::from(error));
                    answers.extend(indexes.into_iter().map(|index| (index, Err(refused.clone()))));
                    continue;
                }
            };
            let (queue, user) = self.cap_refusals(&engine, &outcomes).await;
            for (index, outcome) in indexes.into_iter().zip(outcomes) {
                let answer = match (outcome, &queue, &user) {
                    (EnqueueOutcome::QueueFull { .. }, Some(refused), _)
                    | (EnqueueOutcome::UserLimit { .. }, _, Some(refused)) => Err(refused.clone()),
                    (outcome, _, _) => self.answer(outcome, &engine).map_err(|e| Refused::from(&e)),
                };
                answers.push((index, answer));
            }
        }
        Ok(answers)
    }

    /// Queued and running jobs, and the drain rate, summed over every engine.
    pub async fn queue_totals(&self) -> Result<QueueCounts, StoreError> {
        let mut totals = QueueCounts::default();
        for engine in self.control.list_engines().await? {
            let counts = match self.jobs.queue_counts(&engine.id).await {
                Ok(counts) => counts,
                // A quarantined shard holds nothing this gateway can serve.
                Err(StoreError::Quarantined { .. }) => continue,
                Err(error) => return Err(error),
            };
            totals.queued += counts.queued;
            totals.running += counts.running;
            totals.window.drain_rate_per_s += counts.window.drain_rate_per_s;
        }
        Ok(totals)
    }

    /// How many of `wanted` new jobs may go on now, and the refusal for the rest: the drain (none) or the
    /// gateway-wide cap (`--max-total-depth`, the first that fit).
    async fn refuses_new_work(&self, wanted: u64) -> Result<(u64, Option<ApiError>), ApiError> {
        if self.drain.is_draining() {
            let draining = ApiError::Unavailable {
                code: "draining",
                message: "this gateway is draining for maintenance and accepts no new jobs; retry shortly".into(),
                retry_after_s: DRAIN_RETRY_AFTER_S,
            };
            return Ok((0, Some(draining)));
        }
        let cap = self.caps.max_total_depth;
        if cap == 0 {
            return Ok((wanted, None));
        }
        let (total, rate) = self.total_depth().await?;
        let decision = admit(cap, total, wanted, rate);
        let refusal = decision.retry_after_s.map(|retry_after_s| ApiError::Overloaded {
            code: "total_queue_full",
            message: format!("the gateway holds {total} queued jobs and its cap is {cap}; retry later"),
            retry_after_s,
        });
        Ok((decision.admitted, refusal))
    }

    /// Queued jobs over all engines (and how fast they drain), for the total cap.
    async fn total_depth(&self) -> Result<(u64, f64), StoreError> {
        let mut cached = self.total.lock().await;
        if let Some((read_at, total, rate)) = *cached {
            // Near the cap every request looks again, so the cap holds exactly; far from it a 250 ms old sum will
            // do.
            let estimate = total + self.created_since_total.load(Ordering::Relaxed);
            let near_cap = estimate.saturating_add(estimate / 10 + 1) >= self.caps.max_total_depth;
            if !near_cap && read_at.elapsed() <= TOTAL_KEPT {
                return Ok((total, rate));
            }
        }
        let totals = self.queue_totals().await?;
        *cached = Some((Instant::now(), totals.queued, totals.window.drain_rate_per_s));
        self.created_since_total.store(0, Ordering::Relaxed);
        Ok((totals.queued, totals.window.drain_rate_per_s))
    }

    /// The job an earlier request with `job`'s key created, or `refusal`.
    async fn replay_or(&self, job: &NewJob, refusal: ApiError) -> Result<Admitted, ApiError> {
        match self.jobs.replay(job).await? {
            Some(outcome) => self.answer(outcome, &job.engine),
            None => Err(refusal),
        }
    }

    /// What an enqueue's outcome answers (a cap's refusal is answered by the caller, which knows how many jobs
    /// it refused).
    fn answer(&self, outcome: EnqueueOutcome, engine: &str) -> Result<Admitted, ApiError> {
        match outcome {
            EnqueueOutcome::Created(job) => {
                self.created_since_total.fetch_add(1, Ordering::Relaxed);
                Ok(Admitted::Created(job))
            }
            EnqueueOutcome::Replayed(job) => Ok(Admitted::Replayed(job)),
            EnqueueOutcome::NotAllowed => Err(ApiError::forbidden(
                "not_whitelisted",
                format!("you are not on the whitelist of engine {engine:?}; ask its owner to add you"),
            )),
            EnqueueOutcome::KeyReused => Err(ApiError::unprocessable(
                "idempotency_key_reused",
                "this Idempotency-Key was already used with a different request; use a new key for a new job",
            )),
            EnqueueOutcome::QueueFull { .. } | EnqueueOutcome::UserLimit { .. } => {
                Err(ApiError::Internal("a cap's refusal without its Retry-After".into()))
            }
        }
    }

    /// The 429s for the jobs of one engine's enqueue its caps refused (queue, user): each with the `Retry-After`
    /// of a retry of all the jobs refused that way.
    async fn cap_refusals(&self, engine: &str, outcomes: &[EnqueueOutcome]) -> (Option<Refused>, Option<Refused>) {
        let (mut full, mut depth, mut limited, mut inflight) = (0, 0, 0, 0);
        for outcome in outcomes {
            match outcome {
                EnqueueOutcome::QueueFull { depth: d } => (full, depth) = (full + 1, depth.max(*d)),
                EnqueueOutcome::UserLimit { inflight: i } => (limited, inflight) = (limited + 1, inflight.max(*i)),
                _ => {}
            }
        }
        let queue = if full > 0 { Some(Refused::from(&self.queue_full(engine, depth, full).await)) } else { None };
        let user =
            if limited > 0 { Some(Refused::from(&self.user_limit(engine, inflight, limited).await)) } else { None };
        (queue, user)
    }

    /// The 429 for an engine's full queue (`--max-queue-depth`) holding `depth` jobs; `refused` jobs of this
    /// request were refused with it, and a retry needs room for all of them.
    async fn queue_full(&self, engine: &str, depth: u64, refused: u64) -> ApiError {
        ApiError::Overloaded {
            code: "queue_full",
            message: format!("engine {engine:?} has {depth} queued jobs, its cap; retry later"),
            retry_after_s: self.engine_retry_after(engine, self.caps.max_queue_depth, depth, refused).await,
        }
    }

    /// The 429 for a user at their cap (`--max-user-inflight`) on an engine, as `queue_full`.
    async fn user_limit(&self, engine: &str, inflight: u64, refused: u64) -> ApiError {
        ApiError::Overloaded {
            code: "user_inflight_limit",
            message: format!("you have {inflight} queued or running jobs on engine {engine:?}, your cap"),
            retry_after_s: self.engine_retry_after(engine, self.caps.max_user_inflight, inflight, refused).await,
        }
    }

    /// When `refused` jobs fit under an engine's cap holding `current`, at the rate the engine drains (a user's
    /// jobs leave at most that fast, so it is the estimate for the per-user cap too). A rate that cannot be read
    /// counts as unknown: the refusal still answers (in a batch, after other jobs were stored).
    async fn engine_retry_after(&self, engine: &str, cap: u64, current: u64, refused: u64) -> u64 {
        let rate = match self.jobs.queue_counts(engine).await {
            Ok(counts) => counts.window.drain_rate_per_s,
            Err(error) => {
                tracing::warn!(engine, %error, "no drain rate for a Retry-After");
                0.0
            }
        };
        retry_after_s(slots_needed(cap, current, refused), rate)
    }
}

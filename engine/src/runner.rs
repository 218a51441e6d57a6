//! Running one leased job: the handler under the job's timeout, heartbeats while it runs, then `finish`.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use flowork_common::wire::{AttemptOutcome, FinishRequest, HeartbeatRequest, Lease};
use serde_json::value::RawValue;
use tracing::Instrument;

use crate::client::{ClientError, GatewayClient, JobRef};
use crate::finisher::Finisher;
use crate::handlers::{JobFailure, ProgressSink, Registry};
use crate::metrics::{EngineMetrics, KindLabels};
use crate::pool::WorkerPool;

/// The least time between two heartbeats sent for progress: a progress bar moves within a second of a report.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// How an attempt ended on this engine.
enum Attempt {
    Finished(Result<Box<RawValue>, JobFailure>),
    /// The handler ran past the job's timeout (the message says how long that was).
    TimedOut(String),
    Cancelled,
}

/// Why the lease keeper stopped.
enum LeaseEnd {
    Lost(ClientError),
    CancelRequested,
}

/// What a worker needs to run jobs.
pub struct JobRunner {
    pub client: GatewayClient,
    pub finisher: Finisher,
    pub handlers: Registry,
    pub lease_ms: u64,
    pub pool: Arc<WorkerPool>,
    pub metrics: Arc<EngineMetrics>,
}

impl JobRunner {
    /// Runs a job to its end and reports it. Returns early, without reporting, if the lease is lost: another
    /// engine may hold the job by then, and the gateway would refuse our report anyway. A job whose
    /// cancellation is requested is dropped at once and reported `cancelled`.
    pub async fn run(self: Arc<Self>, lease: Lease) {
        let job_id = lease.job.id.clone();
        let kind = lease.job.kind.clone();
        let started = std::time::Instant::now();
        let progress = ProgressSink::default();
        // The execution span is a child of the traceparent the job was submitted with.
        let span =
            tracing::info_span!("job.execute", otel.name = %format!("execute {kind}"), job_id = %job_id, kind = %kind);
        flowork_common::telemetry::set_parent(&span, lease.job.traceparent.as_deref());
        let outcome = tokio::select! {
            outcome = self.execute(&lease, &progress).instrument(span) => outcome,
            end = self.keep_lease(job_ref(&lease), &lease.lease_token, &progress) => match end {
                LeaseEnd::Lost(error) => {
                    tracing::warn!(job_id, kind, %error, "lease lost while running; abandoning the job");
                    return;
                }
                LeaseEnd::CancelRequested => Attempt::Cancelled,
            },
        };
        self.pool.finished(started.elapsed());
        let outcome_label = match &outcome {
            Attempt::Finished(Ok(_)) => "succeeded",
            Attempt::Finished(Err(_)) => "failed",
            Attempt::TimedOut(_) => "timed_out",
            Attempt::Cancelled => "cancelled",
        };
        // Users choose kinds: only those this engine has a handler for become labels, so its metrics stay bounded.
        let kind_label = if self.handlers.get(&kind).is_some() { kind.clone() } else { "other".into() };
        self.metrics
            .job_duration
            .get_or_create(&KindLabels { kind: kind_label, outcome: outcome_label.into() })
            .observe(started.elapsed().as_secs_f64());
        let ms = started.elapsed().as_millis() as u64;
        match &outcome {
            Attempt::Finished(Ok(_)) => tracing::info!(job_id, kind, ms, "job succeeded"),
            Attempt::Finished(Err(failure)) => {
                tracing::info!(job_id, kind, ms, error = %failure, retryable = failure.retryable, "job failed")
            }
            Attempt::TimedOut(error) => tracing::info!(job_id, kind, ms, %error, "job timed out"),
            Attempt::Cancelled => tracing::info!(job_id, kind, ms, "job cancelled"),
        }
        self.report(job_ref(&lease), &lease.lease_token, outcome).await;
    }

    async fn execute(&self, lease: &Lease, progress: &ProgressSink) -> Attempt {
        let job = &lease.job;
        let Some(handler) = self.handlers.get(&job.kind) else {
            let missing = format!("this engine has no handler for the kind {:?}", job.kind);
            return Attempt::Finished(Err(JobFailure::permanent(missing)));
        };
        let timeout = Duration::from_millis(job.timeout_ms);
        match tokio::time::timeout(timeout, handler.run(&job.payload, progress)).await {
            Ok(outcome) => Attempt::Finished(outcome),
            Err(_) => Attempt::TimedOut(format!("timed out after {} ms", job.timeout_ms)),
        }
    }

    /// Renews the lease every third of its length, and sooner when the handler reports progress (at most once per
    /// `PROGRESS_EVERY`), carrying the latest progress; returns only when the gateway says the lease is gone or the
    /// job was cancelled.
    async fn keep_lease(&self, job: JobRef<'_>, lease_token: &str, progress: &ProgressSink) -> LeaseEnd {
        let job_id = job.id;
        let every = Duration::from_millis((self.lease_ms / 3).max(50));
        let mut renew_at = Instant::now() + every;
        let mut sent_at: Option<Instant> = None;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(renew_at) => {}
                () = progress.reported() => {
                    // Progress goes out promptly, but a handler reporting in a tight loop costs one call a second.
                    if let Some(sent_at) = sent_at {
                        tokio::time::sleep_until((sent_at + PROGRESS_EVERY).min(renew_at)).await;
                    }
                }
            }
            let request = HeartbeatRequest {
                lease_token: lease_token.to_string(),
                lease_ms: self.lease_ms,
                progress: progress.take(),
            };
            sent_at = Some(Instant::now());
            renew_at = Instant::now() + every;
            match self.client.heartbeat(job, &request).await {
                Ok(answer) if answer.cancel_requested => return LeaseEnd::CancelRequested,
                Ok(_) => {}
                Err(error) if error.is_lease_lost() => return LeaseEnd::Lost(error),
                // A missed heartbeat is not fatal: the next one may pass before the lease ends.
                Err(error) => tracing::warn!(job_id, %error, "heartbeat failed"),
            }
        }
    }

    /// Sends the outcome (batched with others that finish meanwhile), retrying network trouble a few times.
    async fn report(&self, job: JobRef<'_>, lease_token: &str, outcome: Attempt) {
        let job_id = job.id;
        let request = match outcome {
            Attempt::Cancelled => FinishRequest {
                lease_token: lease_token.to_string(),
                outcome: AttemptOutcome::Cancelled,
                result: None,
                error: None,
                retryable: false,
            },
            Attempt::Finished(Ok(result)) => FinishRequest {
                lease_token: lease_token.to_string(),
                outcome: AttemptOutcome::Succeeded,
                result: Some(result),
                error: None,
                retryable: false,
            },
            Attempt::Finished(Err(failure)) => FinishRequest {
                lease_token: lease_token.to_string(),
                outcome: AttemptOutcome::Failed,
                result: None,
                error: Some(failure.message),
                retryable: failure.retryable,
            },
            Attempt::TimedOut(error) => FinishRequest {
                lease_token: lease_token.to_string(),
                outcome: AttemptOutcome::TimedOut,
                result: None,
                error: Some(error),
                retryable: true,
            },
        };
        if let Err(error) = self.finisher.report(job, request).await {
            tracing::warn!(job_id, %error, "could not report the outcome; the lease will lapse and the job run again");
        }
    }
}

/// The job of a lease, for the request log lines of its calls.
fn job_ref(lease: &Lease) -> JobRef<'_> {
    JobRef { id: &lease.job.id, traceparent: lease.job.traceparent.as_deref() }
}

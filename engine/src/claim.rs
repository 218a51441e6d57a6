//! The claim loop: keep every worker busy by long-polling the gateway for as many jobs as there are free
//! workers; on shutdown stop claiming and give running jobs a grace period.

use std::sync::Arc;
use std::time::Duration;

use flowork_common::backoff::full_jitter_delay_ms;
use flowork_common::wire::ClaimRequest;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::client::ClientError;
use crate::runner::JobRunner;

/// How the loop claims.
#[derive(Debug, Clone)]
pub struct ClaimSettings {
    pub wait_ms: u64,
    pub lease_ms: u64,
    pub grace: Duration,
    /// Identifies this process in the gateway's lease records.
    pub worker_name: String,
}

/// Why the loop stopped other than by shutdown.
#[derive(Debug, thiserror::Error)]
pub enum ClaimLoopError {
    #[error("the gateway refused this engine's token: {0}")]
    Unauthorized(ClientError),
}

/// Runs until `shutdown` fires, then waits up to `grace` for running jobs.
pub async fn run(
    runner: Arc<JobRunner>,
    settings: ClaimSettings,
    shutdown: CancellationToken,
) -> Result<(), ClaimLoopError> {
    let free = runner.pool.slots.clone();
    let mut running = JoinSet::new();
    let mut failures: u32 = 0;
    let result = loop {
        // Reap finished tasks so the set does not grow.
        while running.try_join_next().is_some() {}
        let first = tokio::select! {
            permit = free.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => break Ok(()) },
            _ = shutdown.cancelled() => break Ok(()),
        };
        let mut permits = vec![first];
        while let Ok(permit) = free.clone().try_acquire_owned() {
            permits.push(permit);
        }
        let request = ClaimRequest {
            max: permits.len() as u32,
            wait_ms: settings.wait_ms,
            lease_ms: settings.lease_ms,
            worker: settings.worker_name.clone(),
            report: Some(runner.pool.report()),
        };
        let sent = std::time::Instant::now();
        let response = tokio::select! {
            response = runner.client.claim(&request) => response,
            _ = shutdown.cancelled() => break Ok(()),
        };
        match response {
            Ok(response) => {
                runner.metrics.claim_round_trip.observe(sent.elapsed().as_secs_f64());
                failures = 0;
                runner.pool.claimed(&response.leases);
                for (lease, permit) in response.leases.into_iter().zip(permits) {
                    let runner = runner.clone();
                    running.spawn(async move {
                        runner.run(lease).await;
                        drop(permit);
                    });
                }
            }
            Err(error) if error.is_unauthorized() => {
                break Err(ClaimLoopError::Unauthorized(error));
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                let delay = full_jitter_delay_ms(failures, 200, 5_000, rand::random());
                tracing::warn!(%error, retry_in_ms = delay, "claim failed");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(delay)) => {}
                    _ = shutdown.cancelled() => break Ok(()),
                }
            }
        }
    };
    if !running.is_empty() {
        tracing::info!(
            running = running.len(),
            grace_ms = settings.grace.as_millis() as u64,
            "waiting for running jobs"
        );
        let drained =
            tokio::time::timeout(settings.grace, async { while running.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(
                abandoned = running.len(),
                "grace period over; their leases will lapse and the jobs run again"
            );
            running.abort_all();
        }
    }
    result
}

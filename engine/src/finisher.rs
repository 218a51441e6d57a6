//! Reporting outcomes in batches: what finishes while one report is in flight goes out together in the next
//! `POST /internal/finish`, so under load the engine makes one call per batch instead of one per job. A lone
//! outcome goes through `POST /internal/jobs/{id}/finish` with the job's `traceparent`, so at light load every
//! finish keeps its own log line and trace; a gateway too old for the batch call gets one call per job.

use std::time::Duration;

use flowork_common::wire::{FinishBatchRequest, FinishItem, FinishRequest};
use reqwest::StatusCode;
use tokio::sync::{mpsc, oneshot};

use crate::client::{ClientError, GatewayClient, JobRef};

/// The most outcomes in one call.
const MAX_BATCH: usize = 256;
/// Tries of one batch when the gateway is unreachable or briefly unavailable.
const ATTEMPTS: u32 = 5;

struct Pending {
    item: FinishItem,
    traceparent: Option<String>,
    reply: oneshot::Sender<Result<(), ClientError>>,
}

/// Handle to the reporting task; cheap to clone.
#[derive(Clone)]
pub struct Finisher {
    tx: mpsc::UnboundedSender<Pending>,
}

impl Finisher {
    /// Starts the reporting task.
    pub fn spawn(client: GatewayClient) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(client, rx));
        Self { tx }
    }

    /// Reports one attempt's outcome and waits until the gateway took it (or refused it, or could not be reached
    /// after a few tries).
    pub async fn report(&self, job: JobRef<'_>, report: FinishRequest) -> Result<(), ClientError> {
        let (reply, answer) = oneshot::channel();
        let item = FinishItem { job_id: job.id.to_string(), report };
        let traceparent = job.traceparent.map(str::to_string);
        self.tx.send(Pending { item, traceparent, reply }).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn stopped() -> ClientError {
    ClientError::Refused {
        status: StatusCode::SERVICE_UNAVAILABLE,
        code: "engine_stopping".into(),
        message: "the reporting task has stopped".into(),
    }
}

async fn run(client: GatewayClient, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let mut batches_supported = true;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(pending) => batch.push(pending),
                Err(_) => break,
            }
        }
        if batches_supported && batch.len() > 1 {
            match send_batch(&client, &batch).await {
                Err(error) if is_missing_route(&error) => {
                    tracing::info!("the gateway has no batch finish; reporting one job per call");
                    batches_supported = false;
                }
                Err(error) => {
                    tracing::warn!(%error, jobs = batch.len(), "could not report outcomes; their leases will lapse and the jobs run again");
                    for pending in batch {
                        let _ = pending.reply.send(Err(copy_error(&error)));
                    }
                    continue;
                }
                Ok(results) => {
                    for (pending, result) in batch.into_iter().zip(results) {
                        let _ = pending.reply.send(result);
                    }
                    continue;
                }
            }
        }
        for pending in batch {
            let result = send_one(&client, &pending.item, pending.traceparent.as_deref()).await;
            let _ = pending.reply.send(result);
        }
    }
}

/// An older gateway answers 404 or 405 for a route it does not know (not `job_not_found`).
fn is_missing_route(error: &ClientError) -> bool {
    matches!(error, ClientError::Refused { status, code, .. }
        if (*status == StatusCode::NOT_FOUND || *status == StatusCode::METHOD_NOT_ALLOWED) && code != "job_not_found")
}

fn copy_error(error: &ClientError) -> ClientError {
    match error {
        ClientError::Refused { status, code, message } => {
            ClientError::Refused { status: *status, code: code.clone(), message: message.clone() }
        }
        ClientError::Transport(e) => ClientError::Refused {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "unreachable".into(),
            message: e.to_string(),
        },
    }
}

/// Sends a batch, retrying transient trouble; one result per item.
async fn send_batch(client: &GatewayClient, batch: &[Pending]) -> Result<Vec<Result<(), ClientError>>, ClientError> {
    let request = FinishBatchRequest { finishes: batch.iter().map(|p| p.item.clone()).collect() };
    let mut delay = Duration::from_millis(100);
    let mut attempt = 1;
    let response = loop {
        match client.finish_many(&request).await {
            Ok(response) => break response,
            Err(error) if error.is_transient() && attempt < ATTEMPTS => {
                tracing::warn!(%error, attempt, "finish batch failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            Err(error) => return Err(error),
        }
    };
    Ok(batch
        .iter()
        .map(|pending| {
            let result = response.results.iter().find(|r| r.job_id == pending.item.job_id);
            match result {
                Some(r) if r.error.is_none() => Ok(()),
                Some(r) => Err(ClientError::Refused {
                    status: StatusCode::CONFLICT,
                    code: r.error.clone().unwrap_or_default(),
                    message: r.message.clone().unwrap_or_default(),
                }),
                None => Err(ClientError::Refused {
                    status: StatusCode::BAD_GATEWAY,
                    code: "missing_result".into(),
                    message: "the gateway's answer had no result for this job".into(),
                }),
            }
        })
        .collect())
}

/// One outcome through `POST /internal/jobs/{id}/finish`, retrying transient trouble.
async fn send_one(client: &GatewayClient, item: &FinishItem, traceparent: Option<&str>) -> Result<(), ClientError> {
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=ATTEMPTS {
        match client.finish(JobRef { id: &item.job_id, traceparent }, &item.report).await {
            Ok(_) => return Ok(()),
            Err(error) if error.is_transient() && attempt < ATTEMPTS => {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

//! Sending jobs: closed loop (each client sends its next job when the previous is answered) or open loop (jobs
//! leave at a fixed rate whatever the server does, and each latency counts from the moment its job was due, so a
//! slow server cannot hide its latency by slowing the load down: no coordinated omission).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::header::HeaderValue;
use http::{Method, Uri};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};

use crate::client::Lean;

/// How long one request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The one field of a created job the generator reads.
#[derive(Deserialize)]
struct Created {
    id: Option<String>,
}

/// A request with the generator's timeout.
async fn timed<T>(request: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::time::timeout(REQUEST_TIMEOUT, request).await.map_err(|_| anyhow::anyhow!("no answer in time"))?
}

/// One `POST /jobs`: when it was due (since the phase began), how long until it was answered, and the answer.
#[derive(Debug, Clone)]
pub struct Sent {
    pub due_s: f64,
    pub latency_ms: f64,
    /// HTTP status, or 0 when the request failed before an answer.
    pub status: u16,
    pub job_id: Option<String>,
}

/// Where and what to send.
#[derive(Clone)]
pub struct Target {
    pub client: Lean,
    pub url: Uri,
    pub batch_url: Uri,
    pub engine: String,
    /// Prefix of the idempotency keys, unique per phase.
    pub tag: String,
    /// Jobs per request: 1 sends `POST /jobs`, more send `POST /jobs/batch`.
    pub batch: usize,
}

impl Target {
    pub fn new(base: &str, token: &str, engine: &str, tag: &str, connections: usize) -> anyhow::Result<Self> {
        Ok(Self {
            client: Lean::new(Some(token), connections)?,
            url: format!("{base}/jobs").parse()?,
            batch_url: format!("{base}/jobs/batch").parse()?,
            engine: engine.to_string(),
            tag: tag.to_string(),
            batch: 1,
        })
    }

    /// The same target with another prefix for its idempotency keys.
    pub fn with_tag(mut self, tag: &str) -> Self {
        self.tag = tag.to_string();
        self
    }

    pub fn with_batch(mut self, batch: usize) -> Self {
        self.batch = batch.clamp(1, 1_000);
        self
    }

    /// Sends jobs `first..first + count` (one request); one `Sent` per job.
    async fn send(&self, first: usize, count: usize, due: Instant, phase_start: Instant) -> Vec<Sent> {
        if self.batch == 1 {
            return vec![self.post(first, due, phase_start).await];
        }
        let items: Vec<Value> = (first..first + count)
            .map(|i| {
                json!({"engine": self.engine, "kind": "echo", "payload": {"i": i},
                       "idempotency_key": format!("{}-{i}", self.tag)})
            })
            .collect();
        let body = serde_json::to_vec(&json!({ "jobs": items })).unwrap_or_default();
        let response = timed(self.client.send(Method::POST, &self.batch_url, None, Some(body))).await;
        let due_s = due.duration_since(phase_start).as_secs_f64();
        let answer: Option<Value> = match response {
            Ok((status, bytes)) if (200..300).contains(&status) => serde_json::from_slice(&bytes).ok(),
            _ => None,
        };
        let latency_ms = due.elapsed().as_secs_f64() * 1_000.0;
        let results = answer.as_ref().and_then(|a| a["results"].as_array());
        (0..count)
            .map(|k| {
                let result = results.and_then(|r| r.get(k));
                let status = result.and_then(|r| r["status"].as_u64()).unwrap_or(0) as u16;
                let job_id = result.and_then(|r| r["job"]["id"].as_str()).map(str::to_string);
                Sent { due_s, latency_ms, status, job_id }
            })
            .collect()
    }

    async fn post(&self, i: usize, due: Instant, phase_start: Instant) -> Sent {
        let body = serde_json::to_vec(&json!({"engine": self.engine, "kind": "echo", "payload": {"i": i}}))
            .unwrap_or_default();
        let key = HeaderValue::from_str(&format!("{}-{i}", self.tag)).ok().map(|v| ("idempotency-key", v));
        let (status, job_id) = match timed(self.client.send(Method::POST, &self.url, key, Some(body))).await {
            Ok((status, bytes)) => {
                let id = serde_json::from_slice::<Created>(&bytes).ok().and_then(|c| c.id);
                (status, id)
            }
            Err(_) => (0, None),
        };
        Sent {
            due_s: due.duration_since(phase_start).as_secs_f64(),
            latency_ms: due.elapsed().as_secs_f64() * 1_000.0,
            status,
            job_id,
        }
    }
}

/// Counters the progress line reads while a phase runs.
#[derive(Default)]
pub struct Progress {
    pub sent: AtomicUsize,
    pub answered: AtomicUsize,
    pub failed: AtomicUsize,
}

/// Sends `jobs` jobs from `clients` closed-loop clients.
pub async fn closed_loop(target: &Target, jobs: usize, clients: usize, progress: Arc<Progress>) -> Vec<Sent> {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let (tx, mut rx) = mpsc::unbounded_channel();
    for _ in 0..clients {
        let (target, next, progress, tx) = (target.clone(), next.clone(), progress.clone(), tx.clone());
        tokio::spawn(async move {
            loop {
                let first = next.fetch_add(target.batch, Ordering::Relaxed);
                if first >= jobs {
                    return;
                }
                let n = target.batch.min(jobs - first);
                progress.sent.fetch_add(n, Ordering::Relaxed);
                for sent in target.send(first, n, Instant::now(), start).await {
                    count(&progress, &sent);
                    if tx.send(sent).is_err() {
                        return;
                    }
                }
            }
        });
    }
    drop(tx);
    let mut all = Vec::with_capacity(jobs);
    while let Some(sent) = rx.recv().await {
        all.push(sent);
    }
    all
}

/// Sends jobs at `rate` per second for `duration`, each due at its time however many are still unanswered, over
/// at most `connections` connections at once (as wrk2 does). A job waiting for a free connection waits on the
/// clock: its latency counts from when it was due, so a slow server cannot hide behind the queue. Without the
/// bound, every stall of the server made the client open hundreds of new connections, and the handshakes cost
/// the shared cores more than the stall did.
pub async fn open_loop(
    target: &Target,
    rate: f64,
    duration: Duration,
    connections: usize,
    progress: Arc<Progress>,
) -> Vec<Sent> {
    let total = (rate * duration.as_secs_f64()).round() as usize;
    let start = Instant::now();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let free = Arc::new(Semaphore::new(connections.max(1)));
    let sender = {
        let (target, progress) = (target.clone(), progress.clone());
        tokio::spawn(async move {
            for first in (0..total).step_by(target.batch) {
                let due = start + Duration::from_secs_f64(first as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
                let n = target.batch.min(total - first);
                progress.sent.fetch_add(n, Ordering::Relaxed);
                let (target, progress, tx, free) = (target.clone(), progress.clone(), tx.clone(), free.clone());
                tokio::spawn(async move {
                    let Ok(_connection) = free.acquire_owned().await else { return };
                    for sent in target.send(first, n, due, start).await {
                        count(&progress, &sent);
                        let _ = tx.send(sent);
                    }
                });
            }
        })
    };
    let _ = sender.await;
    let mut all = Vec::with_capacity(total);
    while let Some(sent) = rx.recv().await {
        all.push(sent);
    }
    all
}

fn count(progress: &Progress, sent: &Sent) {
    if sent.status == 201 {
        progress.answered.fetch_add(1, Ordering::Relaxed);
    } else {
        progress.failed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Prints a progress line every second until the returned handle is aborted.
pub fn show_progress(label: String, progress: Arc<Progress>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let start = Instant::now();
        let mut last = 0;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tick.tick().await;
            let answered = progress.answered.load(Ordering::Relaxed);
            let sent = progress.sent.load(Ordering::Relaxed);
            eprintln!(
                "  {label} {:>4.0}s: sent {sent}, created {answered} ({}/s), failed {}, in flight {}",
                start.elapsed().as_secs_f64(),
                answered - last,
                progress.failed.load(Ordering::Relaxed),
                sent.saturating_sub(answered + progress.failed.load(Ordering::Relaxed)),
            );
            last = answered;
        }
    })
}

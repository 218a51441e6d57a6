//! Bulk mode: how long `POST /jobs/bulk` takes over a large backlog, and how much it holds up enqueues meanwhile.
//! It fills the queue with `--jobs` jobs (no engine runs them), measures `POST /jobs` one at a time alone, then
//! again while one bulk cancel walks the whole backlog; the difference is the stall the bulk action causes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use crate::Args;
use crate::sender::{Progress, Target, closed_loop};
use crate::spawn::{self, Stack};
use crate::stats::Summary;

/// What one bulk run measured.
#[derive(Debug, Clone, Serialize)]
pub struct BulkReport {
    pub backlog: usize,
    /// The bulk action's own answer.
    pub matched: u64,
    pub changed: u64,
    pub bulk_seconds: f64,
    pub changed_per_s: f64,
    /// `POST /jobs`, one at a time, before the bulk action.
    pub enqueue_alone: Summary,
    /// The same while the bulk action runs.
    pub enqueue_during_bulk: Summary,
}

/// Sends `POST /jobs` one after another until `stop` is set (or `for_at_most` passes); their latencies.
async fn probe(target: &Target, stop: Arc<AtomicBool>, for_at_most: Duration) -> Vec<f64> {
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) && started.elapsed() < for_at_most {
        let sent = closed_loop(&target.clone().with_tag(&format!("probe-{i}")), 1, 1, Arc::default()).await;
        latencies.extend(sent.iter().filter(|s| s.status == 201).map(|s| s.latency_ms));
        i += 1;
    }
    latencies
}

/// One run on a gateway of its own.
pub async fn run(args: &Args) -> anyhow::Result<BulkReport> {
    let stack = Stack::start(args).await?;
    let fill = Target::new(&stack.base, &stack.token, spawn::ENGINE, "fill", 4)?.with_batch(1_000);
    let filled = closed_loop(&fill, args.jobs, 2, Arc::new(Progress::default())).await;
    let backlog = filled.iter().filter(|s| s.status == 201).count();
    let probe_target = Target::new(&stack.base, &stack.token, spawn::ENGINE, "alone", 1)?;
    let alone = probe(&probe_target, Arc::default(), Duration::from_secs(3)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let during = {
        let (target, stop) = (Target::new(&stack.base, &stack.token, spawn::ENGINE, "during", 1)?, stop.clone());
        tokio::spawn(async move { probe(&target, stop, Duration::from_secs(600)).await })
    };
    let started = Instant::now();
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/jobs/bulk", stack.base))
        .bearer_auth(&stack.token)
        .json(&json!({"action": "cancel", "filter": {"engine": spawn::ENGINE, "status": "queued"}}))
        .timeout(Duration::from_secs(600))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let bulk_seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let during = during.await?;
    let changed = answer["changed"].as_u64().unwrap_or(0);
    Ok(BulkReport {
        backlog,
        matched: answer["matched"].as_u64().unwrap_or(0),
        changed,
        bulk_seconds,
        changed_per_s: changed as f64 / bulk_seconds.max(1e-9),
        enqueue_alone: Summary::of(alone),
        enqueue_during_bulk: Summary::of(during),
    })
}

//! What happened to each job after it was accepted: start delay (enqueue → claim) and end to end (enqueue →
//! finished), read from the jobs' own timestamps (milliseconds, the gateway's clock) once they are final.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

/// One finished job's timings, in milliseconds, and when it was enqueued (Unix ms).
#[derive(Debug, Clone, Copy)]
pub struct JobTimes {
    pub enqueued_ms: i64,
    pub start_delay_ms: f64,
    pub end_to_end_ms: f64,
    pub succeeded: bool,
}

fn parse_ms(text: Option<&str>) -> Option<i64> {
    let text = text?;
    let parsed = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    Some((parsed.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// How often `wait_drained` asks: `/status` costs the gateway about eight `/healthz` of processor time, and asked
/// every 5 ms it took a twentieth of a core from the drain it was timing.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// Waits until the engine has nothing queued or running, per `GET /status` (to within `DRAIN_POLL`).
pub async fn wait_drained(base: &str, engine: &str, within: Duration) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + within;
    loop {
        let status: Value = client.get(format!("{base}/status")).send().await?.json().await?;
        let entry = status["engines"].as_array().and_then(|es| es.iter().find(|e| e["id"] == engine)).cloned();
        let entry = entry.context("engine missing from /status")?;
        if entry["queued"] == 0 && entry["running"] == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("jobs did not drain within {within:?}: {entry}");
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

/// The timings of the jobs with these ids, read page by page from `GET /jobs?engine=`.
pub async fn fetch(base: &str, token: &str, engine: &str, ids: &HashSet<String>) -> anyhow::Result<Vec<JobTimes>> {
    let client = reqwest::Client::new();
    let mut cursor: Option<String> = None;
    let mut times = Vec::with_capacity(ids.len());
    loop {
        let mut url = format!("{base}/jobs?engine={engine}&limit=500");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = client.get(&url).bearer_auth(token).send().await?.error_for_status()?.json().await?;
        for job in page["jobs"].as_array().into_iter().flatten() {
            if !job["id"].as_str().is_some_and(|id| ids.contains(id)) {
                continue;
            }
            let enqueued = parse_ms(job["enqueued_at"].as_str()).context("job without enqueued_at")?;
            let claimed = parse_ms(job["claimed_at"].as_str()).unwrap_or(enqueued);
            let finished = parse_ms(job["finished_at"].as_str()).unwrap_or(claimed);
            times.push(JobTimes {
                enqueued_ms: enqueued,
                start_delay_ms: (claimed - enqueued) as f64,
                end_to_end_ms: (finished - enqueued) as f64,
                succeeded: job["status"] == "succeeded",
            });
        }
        match page["next_cursor"].as_str() {
            Some(next) if times.len() < ids.len() => cursor = Some(next.to_string()),
            _ => return Ok(times),
        }
    }
}

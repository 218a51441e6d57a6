//! Alerts: rules over the queue numbers that POST a JSON notification to webhooks when they start and stop
//! being true. The message has a Slack/Discord-compatible `text` field.
//!
//! Hysteresis: a rule fires once when its value goes above the threshold and resolves once when the value falls
//! to `RESOLVE_RATIO` × the threshold or below, so a value hovering at the threshold does not flap.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// A firing alert resolves at this fraction of its threshold.
pub const RESOLVE_RATIO: f64 = 0.8;

/// The configured rules (each off when `None`).
#[derive(Debug, Clone, Default)]
pub struct AlertRules {
    pub webhooks: Vec<String>,
    pub queue_latency_p95_ms: Option<f64>,
    pub queue_depth: Option<f64>,
    /// Failed attempts ÷ all attempts over `error_window`.
    pub error_rate: Option<f64>,
    pub error_window: Duration,
    pub interval: Duration,
}

/// What to do about a rule after a new observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Fire,
    Resolve,
    Stay,
}

/// The hysteresis rule.
pub fn transition(firing: bool, value: f64, threshold: f64) -> Transition {
    if !firing && value > threshold {
        Transition::Fire
    } else if firing && value <= threshold * RESOLVE_RATIO {
        Transition::Resolve
    } else {
        Transition::Stay
    }
}

/// Failed and total attempts per engine, sampled over time, for the error rate over a window.
#[derive(Default)]
struct OutcomeHistory(HashMap<String, VecDeque<(std::time::Instant, u64, u64)>>);

impl OutcomeHistory {
    fn rate(&mut self, engine: &str, failed: u64, total: u64, window: Duration) -> Option<f64> {
        let samples = self.0.entry(engine.to_string()).or_default();
        let now = std::time::Instant::now();
        samples.push_back((now, failed, total));
        while samples.front().is_some_and(|(t, _, _)| now.duration_since(*t) > window) {
            samples.pop_front();
        }
        let (_, failed0, total0) = *samples.front()?;
        let attempts = total.saturating_sub(total0);
        (attempts > 0).then(|| failed.saturating_sub(failed0) as f64 / attempts as f64)
    }
}

/// Evaluates the rules every `interval` until `stop`.
pub async fn run(state: AppState, rules: Arc<AlertRules>, stop: CancellationToken) {
    if rules.webhooks.is_empty() {
        return;
    }
    let http = match reqwest::Client::builder().timeout(Duration::from_secs(10)).build() {
        Ok(http) => http,
        Err(error) => {
            tracing::error!(%error, "alerts disabled: no HTTP client");
            return;
        }
    };
    let mut firing: HashMap<(String, &'static str), bool> = HashMap::new();
    let mut history = OutcomeHistory::default();
    let mut tick = tokio::time::interval(rules.interval.max(Duration::from_millis(100)));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let engines = match state.control.list_engines().await {
            Ok(engines) => engines,
            Err(error) => {
                tracing::warn!(%error, "alerts: cannot list engines");
                continue;
            }
        };
        for engine in engines {
            let Ok(counts) = state.jobs.queue_counts(&engine.id).await else { continue };
            let (failed, total) = state.metrics.attempts(&engine.id);
            let observations = [
                ("queue_latency_p95", rules.queue_latency_p95_ms, counts.window.latency_p95_ms.map(|v| v as f64)),
                ("queue_depth", rules.queue_depth, Some(counts.queued as f64)),
                ("error_rate", rules.error_rate, history.rate(&engine.id, failed, total, rules.error_window)),
            ];
            for (rule, threshold, value) in observations {
                let (Some(threshold), Some(value)) = (threshold, value) else { continue };
                let was = firing.get(&(engine.id.clone(), rule)).copied().unwrap_or(false);
                let status = match transition(was, value, threshold) {
                    Transition::Stay => continue,
                    Transition::Fire => "firing",
                    Transition::Resolve => "resolved",
                };
                firing.insert((engine.id.clone(), rule), status == "firing");
                let text =
                    format!("[{status}] Flowork {rule} on engine {}: {value:.3} (threshold {threshold})", engine.id);
                let body = json!({"text": text, "content": text, "status": status, "rule": rule,
                                  "engine": engine.id, "value": value, "threshold": threshold});
                for url in &rules.webhooks {
                    if let Err(error) = http.post(url).json(&body).send().await.and_then(|r| r.error_for_status()) {
                        tracing::warn!(%error, rule, "alert webhook failed");
                    }
                }
                tracing::info!(rule, engine = %engine.id, status, value, threshold, "alert");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_once_and_resolves_once_with_hysteresis() {
        let threshold = 100.0;
        let mut firing = false;
        let mut events = Vec::new();
        for value in [50.0, 101.0, 150.0, 99.0, 81.0, 80.0, 79.0, 101.0] {
            match transition(firing, value, threshold) {
                Transition::Fire => {
                    firing = true;
                    events.push(("fire", value));
                }
                Transition::Resolve => {
                    firing = false;
                    events.push(("resolve", value));
                }
                Transition::Stay => {}
            }
        }
        assert_eq!(events, vec![("fire", 101.0), ("resolve", 80.0), ("fire", 101.0)]);
        assert_eq!(transition(false, 100.0, 100.0), Transition::Stay, "at the threshold is not above it");
    }
}

//! Prometheus metrics of the gateway (`GET /metrics`, text format), with the prometheus-client crate.
//!
//! Counters and histograms are updated as requests pass; gauges that describe the queues (depth, workers) are
//! refreshed from the store and engine reports when scraped.
//!
//! `/metrics` needs no token, so every label value comes from a closed set: methods from `method_label`, routes
//! from the matched route template (or `UNMATCHED_ROUTE`), kinds from `KindLabels`, engines from the registered
//! engines, error codes from the gateway's own. Nothing a caller sends becomes a label as it is.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::observability::end_to_end::EndToEndClock;
use crate::observability::kind_labels::KindLabels;
use crate::store::FinishOutcome;

/// The `route` label of a request no route template matched (unknown paths, the GUI's files, Socket.IO).
pub const UNMATCHED_ROUTE: &str = "unmatched";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: String,
    pub method: &'static str,
    pub status: u16,
}

/// The `method` label: the standard methods by name, any other token `other`.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    const STANDARD: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE"];
    STANDARD.into_iter().find(|known| *known == method.as_str()).unwrap_or("other")
}

/// Labels of `flowork_build_info`: which build this gateway is (two builds serve one data directory in a canary).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
    pub schema_control: String,
    pub schema_shard: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EngineLabels {
    pub engine: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub engine: String,
    pub kind: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub status: u16,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub engine: String,
    pub direction: String,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to ~65 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

/// Bounds of the end-to-end histogram, with the latency SLO's 1.5 s among them (its ratio is read off that bucket).
const END_TO_END_BUCKETS: [f64; 16] =
    [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1_800.0, 3_600.0];

fn end_to_end_histogram() -> Histogram {
    Histogram::new(END_TO_END_BUCKETS)
}

/// Every metric of the gateway.
pub struct GatewayMetrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub refusals: Family<RefusalLabels, Counter>,
    pub claim_latency: Family<EngineLabels, Histogram, fn() -> Histogram>,
    pub job_outcomes: Family<OutcomeLabels, Counter>,
    /// Jobs (not attempts) by final outcome, with the time from enqueue (or `run_at`) to it.
    pub end_to_end: Family<OutcomeLabels, Histogram, fn() -> Histogram>,
    /// Where each job's end-to-end clock started.
    pub end_to_end_clock: EndToEndClock,
    /// 1 while this gateway would answer `/readyz` with 200 (the availability SLI's probe), refreshed per scrape.
    pub ready: Gauge,
    pub queue_depth: Family<EngineLabels, Gauge>,
    pub running_jobs: Family<EngineLabels, Gauge>,
    pub workers: Family<EngineLabels, Gauge>,
    pub busy_ratio: Family<EngineLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub autoscaler_decisions: Family<DecisionLabels, Gauge>,
    /// The kinds that may be labels (and named on `/status`).
    pub kinds: KindLabels,
    /// Failed and total finished attempts per engine, for the error-rate alert.
    attempts: std::sync::Mutex<std::collections::HashMap<String, (u64, u64)>>,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("flowork");
        let build_info = Family::<BuildLabels, Gauge>::default();
        let schema = crate::store::SchemaVersions::of_this_build();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").into(),
                schema_control: schema.control.to_string(),
                schema_shard: schema.shard.to_string(),
            })
            .set(1);
        registry.register(
            "build_info",
            "This gateway's build and the schema versions it writes (always 1)",
            build_info,
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests by route, method and status", http_requests.clone());
        let refusals = Family::<RefusalLabels, Counter>::default();
        registry.register("refusals", "Requests refused with 429 or 503, by error code", refusals.clone());
        let claim_latency =
            Family::<EngineLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register(
            "claim_latency_seconds",
            "Time from a job becoming runnable to its claim by an engine",
            claim_latency.clone(),
        );
        let job_outcomes = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "job_outcomes",
            "Finished attempts by engine, kind and where the job went",
            job_outcomes.clone(),
        );
        let end_to_end =
            Family::<OutcomeLabels, Histogram, fn() -> Histogram>::new_with_constructor(end_to_end_histogram);
        registry.register(
            "job_end_to_end_seconds",
            "Jobs by final outcome (succeeded, dead, cancelled), engine and kind, with the time from their enqueue \
             (or the run_at their user set) to that outcome",
            end_to_end.clone(),
        );
        let ready = Gauge::default();
        registry.register(
            "ready",
            "1 while this gateway is ready for work (/readyz answers 200), else 0",
            ready.clone(),
        );
        let queue_depth = Family::<EngineLabels, Gauge>::default();
        registry.register("queue_depth", "Queued jobs per engine", queue_depth.clone());
        let running_jobs = Family::<EngineLabels, Gauge>::default();
        registry.register("running_jobs", "Running jobs per engine", running_jobs.clone());
        let workers = Family::<EngineLabels, Gauge>::default();
        registry.register("engine_workers", "Workers an engine last reported", workers.clone());
        let busy_ratio = Family::<EngineLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register("engine_busy_ratio", "Fraction of an engine's workers running a job", busy_ratio.clone());
        let autoscaler_decisions = Family::<DecisionLabels, Gauge>::default();
        registry.register(
            "autoscaler_decisions",
            "Autoscaler resizes an engine reported since it started, by direction",
            autoscaler_decisions.clone(),
        );
        Self {
            registry,
            http_requests,
            refusals,
            claim_latency,
            job_outcomes,
            end_to_end,
            end_to_end_clock: EndToEndClock::default(),
            ready,
            queue_depth,
            running_jobs,
            workers,
            busy_ratio,
            autoscaler_decisions,
            kinds: KindLabels::default(),
            attempts: Default::default(),
        }
    }
}

impl GatewayMetrics {
    /// Counts a finished attempt (`outcome` is where the job went: succeeded, queued for a retry, dead); a
    /// success teaches `kinds` that the engine handles the kind.
    pub fn record_attempt(&self, engine: &str, kind: &str, outcome: &str) {
        if outcome == "succeeded" {
            self.kinds.learn(engine, kind);
        }
        let kind = self.kinds.label(engine, kind);
        let labels = OutcomeLabels { engine: engine.into(), kind: kind.into(), outcome: outcome.into() };
        self.job_outcomes.get_or_create(&labels).inc();
        if let Ok(mut attempts) = self.attempts.lock() {
            let entry = attempts.entry(engine.to_string()).or_default();
            entry.1 += 1;
            if outcome == "dead" || outcome == "queued" {
                entry.0 += 1;
            }
        }
    }

    /// Counts a finished attempt reported by an engine (see `record_attempt`), and when its outcome is final, the
    /// job, with its end-to-end time up to `now_ms`.
    pub fn record_finish(&self, engine: &str, job_id: &str, outcome: &FinishOutcome, now_ms: i64) {
        self.record_attempt(engine, &outcome.kind, outcome.status.as_str());
        let is_final = outcome.status.is_final();
        let started = self.end_to_end_clock.started_ms(job_id, is_final);
        if let (true, Some(started)) = (is_final, started) {
            let kind = self.kinds.label(engine, &outcome.kind);
            let labels =
                OutcomeLabels { engine: engine.into(), kind: kind.into(), outcome: outcome.status.as_str().into() };
            self.end_to_end.get_or_create(&labels).observe((now_ms - started).max(0) as f64 / 1_000.0);
        }
    }

    /// Failed and total attempts on an engine since start.
    pub fn attempts(&self, engine: &str) -> (u64, u64) {
        self.attempts.lock().ok().and_then(|a| a.get(engine).copied()).unwrap_or_default()
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    #[test]
    fn methods_outside_the_standard_ones_are_other() {
        assert_eq!(method_label(&Method::POST), "POST");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        for token in ["FOO", "get", "PROPFIND"] {
            let method = Method::from_bytes(token.as_bytes()).unwrap();
            assert_eq!(method_label(&method), "other", "{token}");
        }
    }

    #[test]
    fn outcome_kinds_are_builtin_learned_or_other() {
        let metrics = GatewayMetrics::default();
        metrics.record_attempt("e", "nope", "dead");
        metrics.record_attempt("e", "upper", "succeeded");
        metrics.record_attempt("e", "upper", "dead");
        let text = metrics.encode().unwrap();
        assert!(text.contains(r#"kind="other",outcome="dead"} 1"#), "{text}");
        assert!(text.contains(r#"kind="upper",outcome="dead"} 1"#), "{text}");
        assert!(!text.contains("nope"), "{text}");
    }
}

//! Prometheus metrics of the engine, served on `--metrics-listen` at `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::pool::WorkerPool;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: String,
}

fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

/// Every metric of the engine.
pub struct EngineMetrics {
    registry: Registry,
    pub workers: Gauge,
    pub busy: Gauge,
    pub job_duration: Family<KindLabels, Histogram, fn() -> Histogram>,
    pub claim_round_trip: Histogram,
    pub autoscale_decisions: Family<DirectionLabels, Counter>,
}

impl Default for EngineMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("flowork_engine");
        let workers = Gauge::default();
        registry.register("workers", "Workers in the pool", workers.clone());
        let busy = Gauge::default();
        registry.register("busy_workers", "Workers running a job", busy.clone());
        let job_duration = Family::<KindLabels, Histogram, fn() -> Histogram>::new_with_constructor(seconds_histogram);
        registry.register("job_duration_seconds", "Run time of attempts by kind and outcome", job_duration.clone());
        let claim_round_trip = seconds_histogram();
        registry.register(
            "claim_round_trip_seconds",
            "Time of claim calls to the gateway (long-poll included)",
            claim_round_trip.clone(),
        );
        let autoscale_decisions = Family::<DirectionLabels, Counter>::default();
        registry.register("autoscale_decisions", "Pool resizes by direction", autoscale_decisions.clone());
        // Both directions exist from the start, at 0, so rates and alerts work before the first resize.
        for direction in ["up", "down"] {
            let _ = autoscale_decisions.get_or_create(&DirectionLabels { direction: direction.into() });
        }
        Self { registry, workers, busy, job_duration, claim_round_trip, autoscale_decisions }
    }
}

impl EngineMetrics {
    pub fn encode(&self, pool: &WorkerPool) -> Result<String, std::fmt::Error> {
        let report = pool.report();
        self.workers.set(i64::from(report.workers));
        self.busy.set(i64::from(report.busy));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Serves `/metrics` on `addr` until the process ends; logs the bound address.
pub async fn serve(addr: SocketAddr, metrics: Arc<EngineMetrics>, pool: Arc<WorkerPool>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "metrics listening");
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let (metrics, pool) = (metrics.clone(), pool.clone());
            async move {
                match metrics.encode(&pool) {
                    Ok(text) => (
                        axum::http::StatusCode::OK,
                        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
                        text,
                    ),
                    Err(_) => (
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        [(header::CONTENT_TYPE, "text/plain")],
                        String::new(),
                    ),
                }
            }
        }),
    );
    axum::serve(listener, app).await
}

//! Liveness and readiness probes.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::admission::retry_after_s;
use crate::engine_presence::ONLINE_WITHIN_MS;
use crate::error::ApiError;
use crate::metrics::{DecisionLabels, EngineLabels};
use crate::server::AppState;
use crate::store::{EngineRecord, StoreError};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use flowork_common::timefmt::format_ms;

/// `GET /healthz`: the process is alive.
#[utoipa::path(get, path = "/healthz", tag = "status", security(()), responses((status = 200, description = "the process is alive", body = serde_json::Value)))]
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: the databases answer and the gateway accepts work.
#[utoipa::path(get, path = "/readyz", tag = "status", security(()), responses((status = 200, description = "ready for work", body = serde_json::Value)))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    if state.drain.is_draining() {
        return Err(ApiError::Unavailable {
            code: "draining",
            message: "this gateway is draining; send new work elsewhere".into(),
            retry_after_s: crate::drain::DRAIN_RETRY_AFTER_S,
        });
    }
    state.control.ping().await?;
    Ok(Json(json!({ "status": "ready" })))
}

/// `GET /status`: gateway state and, per engine, presence, workers, queue depth, queue latency and a capacity
/// hint. Holds no secrets and needs no token.
#[utoipa::path(get, path = "/status", tag = "status", security(()), responses((status = 200, description = "gateway and engine status", body = serde_json::Value)))]
pub async fn status(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let mut engines = Vec::new();
    for engine in state.control.list_engines().await? {
        engines.push(engine_status(&state, &engine).await?);
    }
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "store": state.jobs.backend(),
        "schema": {
            "control": crate::store::sqlite::migrate::latest(crate::store::sqlite::migrate::CONTROL),
            "shard": crate::store::sqlite::migrate::latest(crate::store::sqlite::migrate::SHARD),
            "postgres": crate::store::sqlite::migrate::latest(crate::store::postgres::migrate::POSTGRES),
        },
        "uptime_s": state.started.elapsed().as_secs(),
        "draining": state.drain.is_draining(),
        "engines": engines,
        // Damaged shards set aside at start (engine ids only; the paths are in the gateway's log).
        "quarantined": state.jobs.quarantined().into_iter().map(|(engine, _)| engine).collect::<Vec<_>>(),
    })))
}

/// One engine as `/status` and the live `engine.status` event show it: presence, workers, queue, capacity hint.
pub async fn engine_status(state: &AppState, engine: &EngineRecord) -> Result<Value, ApiError> {
    let now = state.clock.now_ms();
    let counts = match state.jobs.queue_counts(&engine.id).await {
        Ok(counts) => counts,
        Err(StoreError::Quarantined { .. }) => {
            return Ok(json!({"id": engine.id, "active": engine.is_active(), "quarantined": true}));
        }
        Err(error) => return Err(error.into()),
    };
    let presence = state.presence.get(&engine.id);
    let report = presence.as_ref().and_then(|p| p.report);
    let window = counts.window;
    let breakers: Vec<Value> = state
        .jobs
        .breakers(&engine.id)
        .await?
        .into_iter()
        .map(|b| {
            // `scope`: `kind` holds everyone's jobs of the kind, `user` one user's (who is not shown here).
            json!({"kind": b.kind, "scope": if b.user.is_some() { "user" } else { "kind" }, "state": b.state,
                   "failures": b.failures, "opened_at": b.opened_at_ms.map(format_ms), "last_error": b.last_error})
        })
        .collect();
    Ok(json!({
        "id": engine.id,
        "active": engine.is_active(),
        "paused": state.jobs.is_paused(&engine.id).await?,
        "online": presence.as_ref().is_some_and(|p| now - p.last_contact_ms < ONLINE_WITHIN_MS),
        "last_contact": presence.as_ref().map(|p| format_ms(p.last_contact_ms)),
        "workers": report.map(|r| json!({"current": r.workers, "min": r.min_workers, "max": r.max_workers, "busy": r.busy})),
        "busy_ratio": report.map(|r| if r.workers == 0 { 0.0 } else { f64::from(r.busy) / f64::from(r.workers) }),
        "utilization": report.map(|r| r.utilization),
        "queued": counts.queued,
        "running": counts.running,
        "breakers": breakers,
        "queue_latency_ms": {"p50": window.latency_p50_ms, "p95": window.latency_p95_ms},
        "capacity": {
            "sustainable_rate_per_s": window.drain_rate_per_s,
            "retry_after_s": retry_after_s(1, window.drain_rate_per_s),
            "max_queue_depth": state.caps.max_queue_depth,
        },
    }))
}

/// `GET /drain`: whether this gateway drains, and the work still queued and running.
#[utoipa::path(get, path = "/drain", tag = "status", security(()), responses((status = 200, description = "whether this gateway drains", body = serde_json::Value)))]
pub async fn drain(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let totals = state.queue_totals().await?;
    Ok(Json(json!({ "draining": state.drain.is_draining(), "queued": totals.queued, "running": totals.running })))
}

/// `GET /metrics`: Prometheus / OpenMetrics text. Queue gauges are refreshed from the store at each scrape.
#[utoipa::path(get, path = "/metrics", tag = "status", security(()), responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let m = &state.metrics;
    for engine in state.control.list_engines().await? {
        let labels = EngineLabels { engine: engine.id.clone() };
        let counts = match state.jobs.queue_counts(&engine.id).await {
            Ok(counts) => counts,
            Err(StoreError::Quarantined { .. }) => continue,
            Err(error) => return Err(error.into()),
        };
        m.queue_depth.get_or_create(&labels).set(counts.queued as i64);
        m.running_jobs.get_or_create(&labels).set(counts.running as i64);
        if let Some(report) = state.presence.get(&engine.id).and_then(|p| p.report) {
            m.workers.get_or_create(&labels).set(i64::from(report.workers));
            let busy = if report.workers == 0 { 0.0 } else { f64::from(report.busy) / f64::from(report.workers) };
            m.busy_ratio.get_or_create(&labels).set(busy);
            for (direction, count) in [("up", report.scale_ups), ("down", report.scale_downs)] {
                let labels = DecisionLabels { engine: engine.id.clone(), direction: direction.into() };
                m.autoscaler_decisions.get_or_create(&labels).set(count as i64);
            }
        }
    }
    let text = m.encode().map_err(|e| ApiError::Internal(format!("encoding metrics: {e}")))?;
    Ok(([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response())
}

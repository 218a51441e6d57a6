//! Liveness and readiness probes.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::server::AppState;

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: the databases answer and the gateway accepts work.
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.control.ping().await?;
    Ok(Json(json!({ "status": "ready" })))
}

/// `GET /status`: version, uptime and each engine's queue depth. Holds no secrets and needs no token.
pub async fn status(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let mut engines = Vec::new();
    for engine in state.control.list_engines().await? {
        let counts = state.jobs.queue_counts(&engine.id).await?;
        engines.push(json!({
            "id": engine.id,
            "active": engine.is_active(),
            "queued": counts.queued,
            "running": counts.running,
        }));
    }
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": state.started.elapsed().as_secs(),
        "engines": engines,
    })))
}

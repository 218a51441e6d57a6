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

//! Liveness and readiness probes.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::admission::retry_after_s;
use crate::http::error::ApiError;
use crate::observability::engine_presence::ONLINE_WITHIN_MS;
use crate::observability::kind_labels::KindLabels;
use crate::observability::metrics::{DecisionLabels, EngineLabels};
use crate::state::AppState;
use crate::store::{EngineRecord, KindBreaker, StoreError};
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
            retry_after_s: crate::admission::drain::DRAIN_RETRY_AFTER_S,
        });
    }
    state.control.ping().await?;
    Ok(Json(json!({ "status": "ready" })))
}

/// `GET /status`: gateway state and, per engine, presence, workers, queue depth, queue latency, a capacity hint
/// and open breakers. Needs no token, so it holds no secret and nothing derived from a job: see
/// `EngineStatus::public`.
#[utoipa::path(get, path = "/status", tag = "status", security(()), responses((status = 200, description = "gateway and engine status", body = serde_json::Value)))]
pub async fn status(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let mut engines = Vec::new();
    for engine in state.control.list_engines().await? {
        engines.push(engine_status(&state, &engine).await?.public);
    }
    let schema = crate::store::SchemaVersions::of_this_build();
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "store": state.jobs.backend(),
        "schema": {
            "control": schema.control,
            "shard": schema.shard,
            "postgres": schema.postgres,
        },
        "uptime_s": state.started.elapsed().as_secs(),
        "draining": state.drain.is_draining(),
        "engines": engines,
        // Damaged shards set aside at start (engine ids only; the paths are in the gateway's log).
        "quarantined": state.jobs.quarantined().into_iter().map(|(engine, _)| engine).collect::<Vec<_>>(),
    })))
}

/// One engine's status, as everyone may see it and as its operators (owner, admins) may.
pub struct EngineStatus {
    /// Presence, workers, queue, capacity hint, and breakers by kind as `public_breakers` shows them: no text
    /// from a job (a breaker's last error quotes the failing job's payload) and no kind outside the closed set
    /// of `KindLabels` (users choose kinds).
    pub public: Value,
    /// The engine's breakers as stored, last errors included: for its operators only.
    pub breakers: Vec<KindBreaker>,
}

impl EngineStatus {
    /// The operator's view: the public one with every breaker as stored.
    pub fn for_operators(&self) -> Value {
        let mut status = self.public.clone();
        if let Some(breakers) = status.get_mut("breakers") {
            *breakers = operator_breakers(&self.breakers);
        }
        status
    }
}

/// Breakers as their engine's operators see them: every kind, with the last error.
pub fn operator_breakers(breakers: &[KindBreaker]) -> Value {
    breakers
        .iter()
        .map(|b| {
            json!({"kind": b.kind, "scope": breaker_scope(b), "user": b.user, "state": b.state,
                   "failures": b.failures, "opened_at": b.opened_at_ms.map(format_ms), "last_error": b.last_error})
        })
        .collect()
}

/// Breakers as anyone may see them: that a breaker is open, for which kind, since when, how many failures; the
/// kinds outside `kinds`' closed set folded into one `other` entry (open if any is, the earliest opening, the
/// failures summed, `breakers` how many), and never the last error.
pub fn public_breakers(kinds: &KindLabels, engine: &str, breakers: &[KindBreaker]) -> Value {
    let mut shown: Vec<PublicBreaker> = Vec::new();
    for breaker in breakers {
        let kind = kinds.label(engine, &breaker.kind);
        let scope = breaker_scope(breaker);
        match shown.iter_mut().find(|b| b.kind == kind && b.scope == scope) {
            Some(folded) => {
                if breaker.state == "open" {
                    folded.state = "open";
                }
                folded.failures += breaker.failures;
                folded.opened_at_ms = [folded.opened_at_ms, breaker.opened_at_ms].into_iter().flatten().min();
                folded.count += 1;
            }
            None => shown.push(PublicBreaker {
                kind,
                scope,
                state: breaker.state.as_str(),
                failures: breaker.failures,
                opened_at_ms: breaker.opened_at_ms,
                count: 1,
            }),
        }
    }
    shown
        .into_iter()
        .map(|b| {
            json!({"kind": b.kind, "scope": b.scope, "state": b.state, "failures": b.failures,
                   "opened_at": b.opened_at_ms.map(format_ms), "breakers": b.count})
        })
        .collect()
}

/// One entry of the public view: breakers of one kind label and scope folded together.
struct PublicBreaker<'a> {
    kind: &'a str,
    scope: &'static str,
    state: &'a str,
    failures: u64,
    opened_at_ms: Option<i64>,
    /// How many breakers were folded in.
    count: u64,
}

/// `kind` for a breaker holding everyone's jobs of the kind, `user` for one holding one user's (who is named to
/// the engine's operators only).
fn breaker_scope(breaker: &KindBreaker) -> &'static str {
    if breaker.user.is_some() { "user" } else { "kind" }
}

/// One engine for `/status` and the live `engine.status` event, in both views: presence, workers, queue, capacity
/// hint, breakers.
pub async fn engine_status(state: &AppState, engine: &EngineRecord) -> Result<EngineStatus, ApiError> {
    let now = state.clock.now_ms();
    let counts = match state.jobs.queue_counts(&engine.id).await {
        Ok(counts) => counts,
        Err(StoreError::Quarantined { .. }) => {
            let public = json!({"id": engine.id, "active": engine.is_active(), "quarantined": true});
            return Ok(EngineStatus { public, breakers: Vec::new() });
        }
        Err(error) => return Err(error.into()),
    };
    let presence = state.presence.get(&engine.id);
    let report = presence.as_ref().and_then(|p| p.report);
    let window = counts.window;
    let breakers = state.jobs.breakers(&engine.id).await?;
    let public = json!({
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
        "breakers": public_breakers(&state.metrics.kinds, &engine.id, &breakers),
        "queue_latency_ms": {"p50": window.latency_p50_ms, "p95": window.latency_p95_ms},
        "capacity": {
            "sustainable_rate_per_s": window.drain_rate_per_s,
            "retry_after_s": retry_after_s(1, window.drain_rate_per_s),
            "max_queue_depth": state.caps.max_queue_depth,
        },
    });
    Ok(EngineStatus { public, breakers })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(kind: &str, state: &str, failures: u64, opened_at_ms: i64) -> KindBreaker {
        KindBreaker {
            kind: kind.into(),
            state: state.into(),
            failures,
            opened_at_ms: Some(opened_at_ms),
            last_error: Some(format!("invalid type: string \"secret of {kind}\"")),
            user: None,
        }
    }

    #[test]
    fn public_breakers_carry_no_error_and_fold_unknown_kinds() {
        let kinds = KindLabels::default();
        kinds.learn("e", "upper");
        let breakers = [
            breaker("echo", "open", 3, 5_000),
            breaker("upper", "half_open", 3, 4_000),
            breaker("x1", "half_open", 2, 3_000),
            breaker("x2", "open", 4, 2_000),
        ];
        let public = public_breakers(&kinds, "e", &breakers);
        let text = public.to_string();
        assert!(!text.contains("secret") && !text.contains("x1") && !text.contains("x2"), "{text}");
        let shown: Vec<(&str, &str, u64, u64)> = public
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                let field = |name: &str| b[name].as_u64().unwrap();
                (b["kind"].as_str().unwrap(), b["state"].as_str().unwrap(), field("failures"), field("breakers"))
            })
            .collect();
        assert_eq!(shown, [("echo", "open", 3, 1), ("upper", "half_open", 3, 1), ("other", "open", 6, 2)]);
        assert_eq!(public[2]["opened_at"], format_ms(2_000));
        assert!(operator_breakers(&breakers).to_string().contains("secret of x1"));
    }
}

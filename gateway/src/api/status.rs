//! Liveness and readiness probes, the gateway's status, its drain state and its metrics.

use axum::Json;
use axum::extract::State;
use flowork_common::wire::ErrorBody;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

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

/// A probe's answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Probe {
    /// `ok` (`/healthz`) or `ready` (`/readyz`).
    #[schema(example = "ok")]
    status: &'static str,
}

/// `GET /healthz`: the process is alive.
#[utoipa::path(get, path = "/healthz", tag = "status", operation_id = "check_health", security(()),
    responses((status = 200, description = "the process is alive: `{\"status\": \"ok\"}`", body = Probe)))]
pub async fn healthz() -> Json<Probe> {
    Json(Probe { status: "ok" })
}

/// `GET /readyz`: the databases answer and the gateway accepts work.
#[utoipa::path(get, path = "/readyz", tag = "status", operation_id = "check_ready", security(()),
    responses(
        (status = 200, description = "ready for work: `{\"status\": \"ready\"}`", body = Probe),
        (status = 503, description = "`draining`: this gateway takes no new work; send it elsewhere", body = ErrorBody),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Probe>, ApiError> {
    if state.admission.drain.is_draining() {
        return Err(ApiError::Unavailable {
            code: "draining",
            message: "this gateway is draining; send new work elsewhere".into(),
            retry_after_s: crate::admission::drain::DRAIN_RETRY_AFTER_S,
        });
    }
    state.control.ping().await?;
    Ok(Json(Probe { status: "ready" }))
}

/// `GET /status`: gateway state and, per engine, presence, workers, queue depth, queue latency, a capacity hint
/// and open breakers. Needs no token, so it holds no secret and nothing derived from a job: see
/// `EngineStatus::public`.
/// `GET /status` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct GatewayStatus {
    /// The gateway's version.
    version: &'static str,
    /// `sqlite` or `postgres`.
    store: &'static str,
    /// The schema versions this build writes.
    schema: SchemaVersions,
    uptime_s: u64,
    draining: bool,
    #[schema(value_type = Vec<EngineStatusView>)]
    engines: Vec<Value>,
    /// Damaged shards set aside at start (engine ids only; the paths are in the gateway's log).
    quarantined: Vec<String>,
}

/// The latest schema version of each database kind.
#[derive(Debug, Serialize, ToSchema)]
pub struct SchemaVersions {
    control: u32,
    shard: u32,
    postgres: u32,
}

/// `GET /status`: gateway state and, per engine, presence, workers, queue depth, queue latency, a capacity hint
/// and open breakers. Needs no token, so it holds no secret and nothing derived from a job: see
/// `EngineStatus::public`.
#[utoipa::path(get, path = "/status", tag = "status", operation_id = "get_status", security(()),
    responses((status = 200, description = "gateway and engine status", body = GatewayStatus)))]
pub async fn status(State(state): State<AppState>) -> Result<Json<GatewayStatus>, ApiError> {
    let mut engines = Vec::new();
    for engine in state.control.list_engines().await? {
        engines.push(engine_status(&state, &engine).await?.public);
    }
    let schema = crate::store::SchemaVersions::of_this_build();
    Ok(Json(GatewayStatus {
        version: env!("CARGO_PKG_VERSION"),
        store: state.jobs.backend(),
        schema: SchemaVersions { control: schema.control, shard: schema.shard, postgres: schema.postgres },
        uptime_s: state.started.elapsed().as_secs(),
        draining: state.admission.drain.is_draining(),
        engines,
        quarantined: state.jobs.quarantined().into_iter().map(|(engine, _)| engine).collect(),
    }))
}

/// One engine as `GET /status` and the live `engine.status` event show it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum EngineStatusView {
    Live(LiveEngineStatus),
    Quarantined(QuarantinedEngineStatus),
}

/// An engine whose shard is readable.
#[derive(Debug, Serialize, ToSchema)]
pub struct LiveEngineStatus {
    id: String,
    /// `false` once revoked.
    active: bool,
    /// Claims hand out nothing while paused.
    paused: bool,
    /// The engine called the gateway in the last few seconds.
    online: bool,
    /// Its latest call; `null` if none since this gateway started.
    #[schema(format = DateTime)]
    last_contact: Option<String>,
    /// What the engine reported with its latest claim; `null` before any.
    workers: Option<WorkerCounts>,
    /// Busy workers over workers, 0-1.
    busy_ratio: Option<f64>,
    /// Fraction of worker time spent on jobs over the engine's autoscaling window, 0-1.
    utilization: Option<f64>,
    queued: u64,
    running: u64,
    breakers: Vec<PublicBreaker>,
    queue_latency_ms: QueueLatency,
    capacity: Capacity,
}

/// An engine whose shard was set aside as damaged at start: nothing more is known of it.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuarantinedEngineStatus {
    id: String,
    active: bool,
    /// Always `true`.
    quarantined: bool,
}

/// An engine's workers, as it reported them.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkerCounts {
    current: u32,
    min: u32,
    max: u32,
    busy: u32,
}

/// How long jobs waited in the queue lately, in milliseconds; `null` without recent claims.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueLatency {
    p50: Option<i64>,
    p95: Option<i64>,
}

/// What the engine can take.
#[derive(Debug, Serialize, ToSchema)]
pub struct Capacity {
    /// Jobs per second the engine has been finishing lately.
    sustainable_rate_per_s: f64,
    /// Seconds a refused job should wait at this rate.
    retry_after_s: u64,
    /// The per-engine cap of queued jobs (`--max-queue-depth`; 0: none).
    max_queue_depth: u64,
}

/// One engine's status, as everyone may see it and as its operators (owner, admins) may.
pub struct EngineStatus {
    /// An `EngineStatusView`: presence, workers, queue, capacity hint, and breakers by kind as `public_breakers`
    /// shows them: no text from a job (a breaker's last error quotes the failing job's payload) and no kind
    /// outside the closed set of `KindLabels` (users choose kinds).
    pub public: Value,
    /// The engine's breakers as stored, last errors included: for its operators only.
    pub breakers: Vec<KindBreaker>,
}

impl EngineStatus {
    /// The operator's view: the public one with every breaker as stored.
    pub fn for_operators(&self) -> Value {
        let mut status = self.public.clone();
        if let Some(breakers) = status.get_mut("breakers") {
            *breakers = serde_json::to_value(operator_breakers(&self.breakers)).unwrap_or_default();
        }
        status
    }
}

/// Whether a breaker holds a kind for everyone or for one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BreakerScope {
    Kind,
    User,
}

/// A breaker as its engine's operators see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct OperatorBreaker {
    kind: String,
    scope: BreakerScope,
    /// The user whose jobs of the kind it holds back (`scope` `user`).
    user: Option<String>,
    /// `open` or `half_open`.
    state: String,
    failures: u64,
    #[schema(format = DateTime)]
    opened_at: Option<String>,
    /// The latest failure's error (it may quote the failing job).
    last_error: Option<String>,
}

/// Breakers as their engine's operators see them: every kind, with the last error.
pub fn operator_breakers(breakers: &[KindBreaker]) -> Vec<OperatorBreaker> {
    breakers
        .iter()
        .map(|b| OperatorBreaker {
            kind: b.kind.clone(),
            scope: breaker_scope(b),
            user: b.user.clone(),
            state: b.state.clone(),
            failures: b.failures,
            opened_at: b.opened_at_ms.map(format_ms),
            last_error: b.last_error.clone(),
        })
        .collect()
}

/// Breakers as anyone may see them: that a breaker is open, for which kind, since when, how many failures; the
/// kinds outside `kinds`' closed set folded into one `other` entry (open if any is, the earliest opening, the
/// failures summed, `breakers` how many), and never the last error.
pub fn public_breakers(kinds: &KindLabels, engine: &str, breakers: &[KindBreaker]) -> Vec<PublicBreaker> {
    let mut shown: Vec<FoldedBreaker> = Vec::new();
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
            None => shown.push(FoldedBreaker {
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
        .map(|b| PublicBreaker {
            kind: b.kind.to_string(),
            scope: b.scope,
            state: b.state.to_string(),
            failures: b.failures,
            opened_at: b.opened_at_ms.map(format_ms),
            breakers: b.count,
        })
        .collect()
}

/// Breakers of one kind label and scope, folded together, as anyone may see them.
#[derive(Debug, Serialize, ToSchema)]
pub struct PublicBreaker {
    /// The kind, or `other` for kinds outside the engine's known set.
    kind: String,
    scope: BreakerScope,
    /// `open` if any folded breaker is, else `half_open`.
    state: String,
    failures: u64,
    /// The earliest opening.
    #[schema(format = DateTime)]
    opened_at: Option<String>,
    /// How many breakers were folded in.
    breakers: u64,
}

/// One entry of the public view while it is built.
struct FoldedBreaker<'a> {
    kind: &'a str,
    scope: BreakerScope,
    state: &'a str,
    failures: u64,
    opened_at_ms: Option<i64>,
    /// How many breakers were folded in.
    count: u64,
}

/// `kind` for a breaker holding everyone's jobs of the kind, `user` for one holding one user's (who is named to
/// the engine's operators only).
fn breaker_scope(breaker: &KindBreaker) -> BreakerScope {
    if breaker.user.is_some() { BreakerScope::User } else { BreakerScope::Kind }
}

/// One engine for `/status` and the live `engine.status` event, in both views: presence, workers, queue, capacity
/// hint, breakers.
pub async fn engine_status(state: &AppState, engine: &EngineRecord) -> Result<EngineStatus, ApiError> {
    let now = state.clock.now_ms();
    let counts = match state.jobs.queue_counts(&engine.id).await {
        Ok(counts) => counts,
        Err(StoreError::Quarantined { .. }) => {
            let view = QuarantinedEngineStatus { id: engine.id.clone(), active: engine.is_active(), quarantined: true };
            return Ok(EngineStatus { public: to_json(EngineStatusView::Quarantined(view))?, breakers: Vec::new() });
        }
        Err(error) => return Err(error.into()),
    };
    let presence = state.presence.get(&engine.id);
    let report = presence.as_ref().and_then(|p| p.report);
    let window = counts.window;
    let breakers = state.jobs.breakers(&engine.id).await?;
    let view = LiveEngineStatus {
        id: engine.id.clone(),
        active: engine.is_active(),
        paused: state.jobs.is_paused(&engine.id).await?,
        online: presence.as_ref().is_some_and(|p| now - p.last_contact_ms < ONLINE_WITHIN_MS),
        last_contact: presence.as_ref().map(|p| format_ms(p.last_contact_ms)),
        workers: report.map(|r| WorkerCounts {
            current: r.workers,
            min: r.min_workers,
            max: r.max_workers,
            busy: r.busy,
        }),
        busy_ratio: report.map(|r| if r.workers == 0 { 0.0 } else { f64::from(r.busy) / f64::from(r.workers) }),
        utilization: report.map(|r| r.utilization),
        queued: counts.queued,
        running: counts.running,
        breakers: public_breakers(&state.metrics.kinds, &engine.id, &breakers),
        queue_latency_ms: QueueLatency { p50: window.latency_p50_ms, p95: window.latency_p95_ms },
        capacity: Capacity {
            sustainable_rate_per_s: window.drain_rate_per_s,
            retry_after_s: retry_after_s(1, window.drain_rate_per_s),
            max_queue_depth: state.admission.caps.max_queue_depth,
        },
    };
    Ok(EngineStatus { public: to_json(EngineStatusView::Live(view))?, breakers })
}

/// An answer as JSON, for the live events that add to it.
fn to_json(view: impl Serialize) -> Result<Value, ApiError> {
    serde_json::to_value(view).map_err(|e| ApiError::Internal(format!("encoding an engine status: {e}")))
}

/// `GET /drain` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct DrainState {
    /// This gateway accepts no new jobs.
    draining: bool,
    /// Jobs queued on every engine.
    queued: u64,
    /// Jobs running on every engine.
    running: u64,
}

/// `GET /drain`: whether this gateway drains, and the work still queued and running.
#[utoipa::path(get, path = "/drain", tag = "status", operation_id = "get_drain_state", security(()),
    responses((status = 200, description = "whether this gateway drains", body = DrainState)))]
pub async fn drain(State(state): State<AppState>) -> Result<Json<DrainState>, ApiError> {
    let totals = state.admission.queue_totals().await?;
    Ok(Json(DrainState {
        draining: state.admission.drain.is_draining(),
        queued: totals.queued,
        running: totals.running,
    }))
}

/// `GET /metrics`: Prometheus / OpenMetrics text. Queue gauges are refreshed from the store at each scrape.
#[utoipa::path(get, path = "/metrics", tag = "status", operation_id = "get_metrics", security(()), responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let m = &state.metrics;
    let ready = !state.admission.drain.is_draining() && state.control.ping().await.is_ok();
    m.ready.set(i64::from(ready));
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
        let public = serde_json::to_value(public_breakers(&kinds, "e", &breakers)).unwrap();
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
        assert!(serde_json::to_value(operator_breakers(&breakers)).unwrap().to_string().contains("secret of x1"));
    }
}

//! The engine (internal) API: claim with long-poll, heartbeat and finish, authenticated by `X-Engine-Token`.

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use flowork_common::timefmt::format_ms;
use flowork_common::wire::{
    AttemptOutcome, ClaimRequest, ClaimResponse, ErrorBody, FinishBatchRequest, FinishBatchResponse, FinishItemResult,
    FinishRequest, FinishResponse, HeartbeatRequest, HeartbeatResponse, PROTOCOL_HEADER, PROTOCOL_VERSION,
    SUPPORTED_PROTOCOL_MAJORS, WhoAmI,
};

use super::extract::JsonBody;
use crate::admission::enqueue::JobLimits;
use crate::auth::extract::AuthEngine;
use crate::http::error::ApiError;
use crate::http::request_log::{RequestLog, note_job};
use crate::observability::metrics::EngineLabels;
use crate::state::AppState;
use crate::store::{ClaimParams, Finish};
use axum::Extension;
use flowork_common::timefmt::parse_ms;
use tracing::Instrument;

/// Bounds of what an engine may ask for.
pub(crate) const MAX_CLAIM: u32 = 1_000;
const MAX_WAIT_MS: u64 = 60_000;
pub(crate) const LEASE_MS: std::ops::RangeInclusive<u64> = 100..=3_600_000;
const MAX_ERROR_CHARS: usize = 8_192;

/// Middleware of every `/internal/*` route: refuses an engine-protocol major this gateway does not speak (before
/// authentication, so an engine learns it is incompatible whatever its token) and names the gateway's own version
/// on every answer.
pub async fn check_protocol(request: Request, next: Next) -> Response {
    let asked = request.headers().get(PROTOCOL_HEADER).map(|v| v.to_str().unwrap_or("\u{fffd}"));
    let mut response = match check_protocol_version(asked) {
        Ok(()) => next.run(request).await,
        Err(error) => error.into_response(),
    };
    response.headers_mut().insert(PROTOCOL_HEADER, HeaderValue::from_static(PROTOCOL_VERSION));
    response
}

/// Accepts no header (engines from before it, which speak major 1) and `MAJOR` or `MAJOR.MINOR` with a major
/// this gateway speaks; a newer minor of a known major only adds optional fields, so it is accepted too.
pub fn check_protocol_version(asked: Option<&str>) -> Result<(), ApiError> {
    let Some(asked) = asked else { return Ok(()) };
    let major = asked.trim().split('.').next().and_then(|m| m.parse::<u32>().ok());
    if major.is_some_and(|m| SUPPORTED_PROTOCOL_MAJORS.contains(&m)) {
        return Ok(());
    }
    let supported: Vec<String> = SUPPORTED_PROTOCOL_MAJORS.iter().map(u32::to_string).collect();
    let shown: String = asked.chars().take(32).collect();
    Err(ApiError::bad_request(
        "unsupported_protocol",
        format!(
            "this gateway speaks engine protocol major {} (now {PROTOCOL_VERSION}); the request asked for {shown:?} \
             in its Flowork-Protocol header",
            supported.join(", ")
        ),
    ))
}

fn check_lease_ms(lease_ms: u64) -> Result<(), ApiError> {
    if LEASE_MS.contains(&lease_ms) {
        Ok(())
    } else {
        Err(ApiError::unprocessable(
            "invalid_lease",
            format!("lease_ms must be between {} and {}", LEASE_MS.start(), LEASE_MS.end()),
        ))
    }
}

/// `GET /internal/whoami`: which engine this token belongs to (engines check their `--engine-id` at start).
#[utoipa::path(get, path = "/internal/whoami", tag = "engine", operation_id = "engine_whoami", security(("engine" = [])), params(("Flowork-Protocol" = Option<String>, Header, description = "the engine protocol version the caller speaks, `MAJOR.MINOR`; an unknown major is refused with 400 `unsupported_protocol`")),
    responses((status = 200, description = "the engine this token belongs to", body = WhoAmI)))]
pub async fn whoami(engine: AuthEngine) -> Json<WhoAmI> {
    Json(WhoAmI { engine_id: engine.id })
}

/// `POST /internal/claim`: leases up to `max` jobs, waiting up to `wait_ms` for one to become runnable.
#[utoipa::path(post, path = "/internal/claim", tag = "engine", operation_id = "engine_claim", security(("engine" = [])), params(("Flowork-Protocol" = Option<String>, Header, description = "the engine protocol version the caller speaks, `MAJOR.MINOR`; an unknown major is refused with 400 `unsupported_protocol`")),
    request_body = ClaimRequest,
    responses(
        (status = 200, description = "the leased jobs; none when nothing became runnable within `wait_ms` (at most 60 s) or the gateway is stopping", body = ClaimResponse),
        (status = 422, description = "`invalid_max`, `invalid_lease`", body = ErrorBody),
    ))]
pub async fn claim(
    State(state): State<AppState>,
    engine: AuthEngine,
    JsonBody(request): JsonBody<ClaimRequest>,
) -> Result<Json<ClaimResponse>, ApiError> {
    let worker = check_claim(&request)?;
    state.presence.seen(&engine.id, state.clock.now_ms(), request.report);
    if state.admission.drain.is_stopping() {
        // The gateway is shutting down: running jobs may finish, new ones wait for the next start.
        return Ok(Json(ClaimResponse { leases: Vec::new() }));
    }
    let params =
        ClaimParams { max: request.max, wait_ms: request.wait_ms.min(MAX_WAIT_MS), lease_ms: request.lease_ms, worker };
    let span = tracing::info_span!("claim", engine = %engine.id, max = params.max);
    let leases = state.jobs.claim(&engine.id, params, state.shutdown.clone()).instrument(span).await?;
    let histogram = state.metrics.claim_latency.get_or_create(&EngineLabels { engine: engine.id.clone() });
    for lease in &leases {
        let job = &lease.job;
        state.metrics.end_to_end_clock.claimed(job);
        let runnable = [&job.enqueued_at, &job.run_at].into_iter().filter_map(|t| parse_ms(t)).max();
        if let (Some(runnable), Some(claimed)) = (runnable, job.claimed_at.as_deref().and_then(parse_ms)) {
            histogram.observe((claimed - runnable).max(0) as f64 / 1_000.0);
        }
    }
    Ok(Json(ClaimResponse { leases }))
}

/// Checks a claim request; returns the worker name as kept (at most 200 characters).
pub fn check_claim(request: &ClaimRequest) -> Result<String, ApiError> {
    if !(1..=MAX_CLAIM).contains(&request.max) {
        return Err(ApiError::unprocessable("invalid_max", format!("max must be between 1 and {MAX_CLAIM}")));
    }
    check_lease_ms(request.lease_ms)?;
    // A NUL cannot be stored in a PostgreSQL text column; the name is for operators' eyes only.
    Ok(request.worker.chars().take(200).map(|c| if c == '\0' { '\u{fffd}' } else { c }).collect())
}

/// Checks what names a lease before any store sees it: the job id is a UUID (else 404 `job_not_found`), and a
/// lease token with a NUL byte cannot be one the gateway issued (409 `lease_lost`).
fn check_lease_names(id: &str, lease_token: &str) -> Result<(), ApiError> {
    super::jobs::check_job_id(id)?;
    if lease_token.contains('\0') {
        return Err(ApiError::from(crate::store::StoreError::LeaseLost(id.to_string())));
    }
    Ok(())
}

/// Checks a heartbeat request; returns the progress to store (JSON text), if any.
pub fn check_heartbeat(request: &HeartbeatRequest) -> Result<Option<String>, ApiError> {
    check_lease_ms(request.lease_ms)?;
    match &request.progress {
        Some(p) if !(0.0..=100.0).contains(&p.percent) => {
            Err(ApiError::unprocessable("invalid_progress", "progress percent must be between 0 and 100"))
        }
        Some(p) => {
            let message = p.message.as_deref().map(|m| m.chars().take(500).collect::<String>());
            Ok(Some(serde_json::json!({"percent": p.percent, "message": message}).to_string()))
        }
        None => Ok(None),
    }
}

/// `POST /internal/jobs/{id}/heartbeat`: extends the lease; 409 `lease_lost` if it is no longer this holder's.
#[utoipa::path(post, path = "/internal/jobs/{id}/heartbeat", tag = "engine", operation_id = "engine_heartbeat", security(("engine" = [])),
    params(("id" = String, Path, format = "uuid", description = "the leased job's id"), ("Flowork-Protocol" = Option<String>, Header, description = "the engine protocol version the caller speaks, `MAJOR.MINOR`; an unknown major is refused with 400 `unsupported_protocol`")),
    request_body = HeartbeatRequest,
    responses(
        (status = 200, description = "the lease, extended; `cancel_requested` when the user cancelled the job", body = HeartbeatResponse),
        (status = 404, description = "`job_not_found`: no such job on this engine", body = ErrorBody),
        (status = 409, description = "`lease_lost`: the lease expired or is another worker's now", body = ErrorBody),
        (status = 422, description = "`invalid_lease`, `invalid_progress`", body = ErrorBody),
    ))]
pub async fn heartbeat(
    State(state): State<AppState>,
    log: Option<Extension<RequestLog>>,
    engine: AuthEngine,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<HeartbeatRequest>,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    check_lease_names(&id, &request.lease_token)?;
    let progress = check_heartbeat(&request)?;
    state.presence.seen(&engine.id, state.clock.now_ms(), None);
    note_job(log.as_ref().map(|l| &l.0), &id);
    let (expires, cancel_requested) =
        state.jobs.heartbeat(&engine.id, &id, &request.lease_token, request.lease_ms, progress).await?;
    Ok(Json(HeartbeatResponse { lease_expires_at: format_ms(expires), cancel_requested }))
}

/// `POST /internal/jobs/{id}/finish`: records the attempt's outcome; a stale lease token is refused (fencing).
#[utoipa::path(post, path = "/internal/jobs/{id}/finish", tag = "engine", operation_id = "engine_finish", security(("engine" = [])),
    params(("id" = String, Path, format = "uuid", description = "the leased job's id"), ("Flowork-Protocol" = Option<String>, Header, description = "the engine protocol version the caller speaks, `MAJOR.MINOR`; an unknown major is refused with 400 `unsupported_protocol`")),
    request_body = FinishRequest,
    responses(
        (status = 200, description = "where the job went: succeeded, queued again for a retry (with `run_at`), dead or cancelled", body = FinishResponse),
        (status = 404, description = "`job_not_found`: no such job on this engine", body = ErrorBody),
        (status = 409, description = "`lease_lost`: the lease expired or is another worker's now", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the result is larger than the gateway's limit", body = ErrorBody),
    ))]
pub async fn finish(
    State(state): State<AppState>,
    log: Option<Extension<RequestLog>>,
    engine: AuthEngine,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<FinishRequest>,
) -> Result<Json<FinishResponse>, ApiError> {
    state.presence.seen(&engine.id, state.clock.now_ms(), None);
    check_lease_names(&id, &request.lease_token)?;
    let lease_token = request.lease_token.clone();
    let finish = to_finish(&state.limits, request)?;
    note_job(log.as_ref().map(|l| &l.0), &id);
    let outcome = state.jobs.finish(&engine.id, &id, &lease_token, finish).await?;
    state.metrics.record_finish(&engine.id, &id, &outcome, state.clock.now_ms());
    Ok(Json(FinishResponse { status: outcome.status, run_at: outcome.run_at_ms.map(format_ms) }))
}

/// Checks an engine's report of one attempt and turns it into the store's outcome.
pub fn to_finish(limits: &JobLimits, request: FinishRequest) -> Result<Finish, ApiError> {
    Ok(match request.outcome {
        AttemptOutcome::Succeeded => {
            let result = request.result.map(|r| r.get().to_string());
            if result.as_ref().is_some_and(|r| r.len() > limits.max_result_bytes) {
                return Err(ApiError::PayloadTooLarge {
                    message: format!("a job result may be at most {} bytes", limits.max_result_bytes),
                });
            }
            Finish::Succeeded { result }
        }
        AttemptOutcome::Cancelled => Finish::Cancelled,
        AttemptOutcome::Failed => {
            let error = request.error.unwrap_or_else(|| "the engine reported a failure without a message".into());
            Finish::Failed { error: error.chars().take(MAX_ERROR_CHARS).collect(), retryable: request.retryable }
        }
        AttemptOutcome::TimedOut => {
            let error = request.error.unwrap_or_else(|| "the handler ran past the job's timeout".into());
            Finish::TimedOut { error: error.chars().take(MAX_ERROR_CHARS).collect() }
        }
    })
}

/// Most outcomes in one `POST /internal/finish`.
pub(crate) const MAX_FINISH_BATCH: usize = 1_000;

/// `POST /internal/finish`: several outcomes committed together; one result per item, in order, each what
/// `POST /internal/jobs/{id}/finish` would have answered (a lost lease refuses only its own item).
#[utoipa::path(post, path = "/internal/finish", tag = "engine", operation_id = "engine_finish_batch", security(("engine" = [])), params(("Flowork-Protocol" = Option<String>, Header, description = "the engine protocol version the caller speaks, `MAJOR.MINOR`; an unknown major is refused with 400 `unsupported_protocol`")),
    request_body = FinishBatchRequest,
    responses(
        (status = 200, description = "one result per outcome, in order; a refused item carries the error code a single finish would answer", body = FinishBatchResponse),
        (status = 422, description = "`invalid_batch`: not 1 to 1000 outcomes", body = ErrorBody),
    ))]
pub async fn finish_batch(
    State(state): State<AppState>,
    engine: AuthEngine,
    JsonBody(request): JsonBody<FinishBatchRequest>,
) -> Result<Json<FinishBatchResponse>, ApiError> {
    if request.finishes.is_empty() || request.finishes.len() > MAX_FINISH_BATCH {
        return Err(ApiError::unprocessable(
            "invalid_batch",
            format!("a finish batch holds 1 to {MAX_FINISH_BATCH} outcomes"),
        ));
    }
    state.presence.seen(&engine.id, state.clock.now_ms(), None);
    let refused = |job_id: String, error: ApiError| {
        let (_, body) = error.status_and_body();
        FinishItemResult { job_id, status: None, run_at: None, error: Some(body.error), message: Some(body.message) }
    };
    let mut results: Vec<Option<FinishItemResult>> = vec![None; request.finishes.len()];
    let (mut indexes, mut items) = (Vec::new(), Vec::new());
    for (index, item) in request.finishes.into_iter().enumerate() {
        let token = item.report.lease_token.clone();
        if let Err(error) = check_lease_names(&item.job_id, &token) {
            results[index] = Some(refused(item.job_id, error));
            continue;
        }
        match to_finish(&state.limits, item.report) {
            Ok(finish) => {
                indexes.push(index);
                items.push((item.job_id, token, finish));
            }
            Err(error) => results[index] = Some(refused(item.job_id, error)),
        }
    }
    let ids: Vec<String> = items.iter().map(|(id, ..)| id.clone()).collect();
    if !items.is_empty() {
        let outcomes = state.jobs.finish_many(&engine.id, items).await?;
        for ((index, job_id), outcome) in indexes.into_iter().zip(ids).zip(outcomes) {
            results[index] = Some(match outcome {
                Ok(outcome) => {
                    state.metrics.record_finish(&engine.id, &job_id, &outcome, state.clock.now_ms());
                    FinishItemResult {
                        job_id,
                        status: Some(outcome.status),
                        run_at: outcome.run_at_ms.map(format_ms),
                        error: None,
                        message: None,
                    }
                }
                Err(error) => refused(job_id, ApiError::from(error)),
            });
        }
    }
    Ok(Json(FinishBatchResponse { results: results.into_iter().flatten().collect() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_versions_are_checked_by_their_major() {
        for accepted in [None, Some("1"), Some("1.0"), Some("1.7"), Some(" 1 ")] {
            assert!(check_protocol_version(accepted).is_ok(), "{accepted:?}");
        }
        for refused in ["2", "2.0", "0", "", "one", "\u{fffd}"] {
            let (status, body) = check_protocol_version(Some(refused)).unwrap_err().status_and_body();
            assert_eq!((status.as_u16(), body.error.as_str()), (400, "unsupported_protocol"), "{refused:?}");
            assert!(body.message.contains("major 1"), "{}", body.message);
        }
    }
}

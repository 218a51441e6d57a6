//! Cron schedules: `POST /schedules`, `GET /schedules`, `DELETE /schedules/{id}`, each user's own.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use flowork_common::timefmt::format_ms;
use flowork_common::wire::EnqueueRequest;
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::JsonBody;
use super::jobs::require_active_engine;
use crate::admission::enqueue::build_new_job;
use crate::cron::CronSchedule;
use crate::http::error::ApiError;
use crate::state::AppState;
use crate::store::{MissedTicks, Schedule, ScheduleOutcome};
use crate::{auth::extract::AuthUser, store::core::schedule::MAX_PER_USER};

/// `POST /schedules` body: a job template (as for `POST /jobs`, without `run_at`) plus when to run it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRequest {
    engine: String,
    kind: String,
    #[serde(default)]
    payload: Option<Value>,
    /// Five fields (minute hour day-of-month month day-of-week), or six with seconds first.
    cron: String,
    /// An IANA zone name; `UTC` when absent.
    #[serde(default)]
    timezone: Option<String>,
    /// `skip` (default) or `catch_up_one`: what happens to ticks missed while no gateway ran.
    #[serde(default)]
    missed: Option<String>,
    #[serde(default)]
    priority: Option<i32>,
    #[serde(default)]
    max_attempts: Option<u32>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    concurrency_key: Option<String>,
}

/// The JSON of a schedule.
fn schedule_json(schedule: &Schedule) -> Value {
    let payload: Value = serde_json::from_str(&schedule.payload).unwrap_or(Value::Null);
    json!({
        "id": schedule.id,
        "engine": schedule.engine,
        "user": schedule.user,
        "kind": schedule.kind,
        "payload": payload,
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "missed": schedule.missed.as_str(),
        "priority": schedule.priority,
        "max_attempts": schedule.max_attempts,
        "timeout_ms": schedule.timeout_ms,
        "concurrency_key": schedule.concurrency_key,
        "next_run_at": (schedule.next_run_at_ms < i64::MAX).then(|| format_ms(schedule.next_run_at_ms)),
        "last_run_at": schedule.last_run_at_ms.map(format_ms),
        "last_job_id": schedule.last_job_id,
        "last_error": schedule.last_error,
        "created_at": format_ms(schedule.created_at_ms),
    })
}

/// `POST /schedules`: 201 with the schedule and its first tick; 422 says what is wrong with the expression,
/// the zone or the job template.
#[utoipa::path(post, path = "/schedules", tag = "schedules", request_body = ScheduleRequest, responses((status = 201, description = "the schedule", body = serde_json::Value)))]
pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(request): JsonBody<ScheduleRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let now = state.clock.now_ms();
    let timezone = request.timezone.clone().unwrap_or_else(|| "UTC".to_string());
    let cron = CronSchedule::parse(request.cron.trim(), &timezone).map_err(|e| match e {
        crate::cron::CronError::TimeZone(_) => ApiError::unprocessable("invalid_timezone", e.to_string()),
        _ => ApiError::unprocessable("invalid_cron", e.to_string()),
    })?;
    let first = cron.first_after(now).map_err(|e| ApiError::unprocessable("invalid_cron", e.to_string()))?;
    let missed = match request.missed.as_deref() {
        None => MissedTicks::Skip,
        Some(text) => MissedTicks::parse(text)
            .ok_or_else(|| ApiError::unprocessable("invalid_missed", "missed must be \"skip\" or \"catch_up_one\""))?,
    };
    // The template is checked exactly as `POST /jobs` checks a job.
    let template = EnqueueRequest {
        engine: request.engine,
        kind: request.kind,
        payload: request.payload,
        priority: request.priority,
        run_at: None,
        max_attempts: request.max_attempts,
        timeout_ms: request.timeout_ms,
        concurrency_key: request.concurrency_key,
    };
    let id = uuid::Uuid::now_v7().to_string();
    let job = build_new_job(&template, &user.id, "schedule".into(), None, id.clone(), now, &state.limits)?;
    require_active_engine(&state, &job.engine).await?;
    let schedule = Schedule {
        id,
        engine: job.engine,
        user: user.id,
        kind: job.kind,
        payload: job.payload,
        cron: request.cron.trim().to_string(),
        timezone,
        missed,
        priority: job.priority,
        max_attempts: job.max_attempts,
        timeout_ms: job.timeout_ms,
        concurrency_key: job.concurrency_key,
        next_run_at_ms: first,
        last_run_at_ms: None,
        last_job_id: None,
        last_error: None,
        created_at_ms: now,
    };
    match state.jobs.create_schedule(schedule).await? {
        ScheduleOutcome::Created(schedule) => Ok((StatusCode::CREATED, Json(schedule_json(&schedule)))),
        ScheduleOutcome::NotAllowed => Err(ApiError::forbidden(
            "not_whitelisted",
            "you are not on the whitelist of this engine; ask its owner to add you",
        )),
        ScheduleOutcome::TooMany(count) => Err(ApiError::unprocessable(
            "too_many_schedules",
            format!("you have {count} schedules on this engine, the most allowed is {MAX_PER_USER}"),
        )),
    }
}

/// `GET /schedules`: the caller's schedules on every engine.
#[utoipa::path(get, path = "/schedules", tag = "schedules", responses((status = 200, description = "the schedules of the caller", body = serde_json::Value)))]
pub async fn list(State(state): State<AppState>, user: AuthUser) -> Result<Json<Value>, ApiError> {
    let schedules = state.jobs.list_schedules(&user.id).await?;
    Ok(Json(json!({ "schedules": schedules.iter().map(schedule_json).collect::<Vec<_>>() })))
}

/// `DELETE /schedules/{id}`: 200, or 404 for an unknown id or another user's schedule.
#[utoipa::path(delete, path = "/schedules/{id}", tag = "schedules", params(("id" = String, Path, description = "the schedule id")), responses((status = 200, description = "deleted", body = serde_json::Value)))]
pub async fn delete(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let not_found = || ApiError::not_found("schedule_not_found", format!("no schedule with id {id:?}"));
    uuid::Uuid::parse_str(&id).map_err(|_| not_found())?;
    if state.jobs.delete_schedule(&user.id, &id).await? {
        Ok(Json(json!({ "id": id, "deleted": true })))
    } else {
        Err(not_found())
    }
}

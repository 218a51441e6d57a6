//! Cron schedules: `POST /schedules`, `GET /schedules`, `DELETE /schedules/{id}`, each user's own.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use flowork_common::timefmt::format_ms;
use flowork_common::wire::{EnqueueRequest, ErrorBody};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::extract::JsonBody;
use super::jobs::require_active_engine;
use crate::admission::enqueue::build_new_job;
use crate::cron::CronSchedule;
use crate::http::error::ApiError;
use crate::state::AppState;
use crate::store::{MissedTicks, Schedule, ScheduleOutcome};
use crate::{auth::extract::AuthUser, store::core::schedule::MAX_PER_USER};

/// `POST /schedules` body: a job template (as for `POST /jobs`, without `run_at`) plus when to run it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRequest {
    /// As for `POST /jobs`.
    #[schema(pattern = "^[a-z0-9][a-z0-9-]{0,62}$", min_length = 1, max_length = 63, example = "local")]
    engine: String,
    /// As for `POST /jobs`.
    #[schema(pattern = "^[a-z0-9._-]{1,64}$", min_length = 1, max_length = 64, example = "echo")]
    kind: String,
    #[serde(default)]
    payload: Option<Value>,
    /// Five fields (minute hour day-of-month month day-of-week), or six with seconds first.
    #[schema(example = "*/5 * * * *")]
    cron: String,
    /// An IANA zone name; `UTC` when absent.
    #[serde(default)]
    #[schema(example = "Europe/Berlin")]
    timezone: Option<String>,
    /// What happens to ticks missed while no gateway ran (default `skip`).
    #[serde(default)]
    #[schema(value_type = Option<MissedTicksName>)]
    missed: Option<String>,
    #[serde(default)]
    priority: Option<i32>,
    /// As for `POST /jobs`.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100)]
    max_attempts: Option<u32>,
    /// As for `POST /jobs`.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 86_400_000)]
    timeout_ms: Option<u64>,
    /// As for `POST /jobs`.
    #[serde(default)]
    #[schema(pattern = "^[!-~]{1,200}$", min_length = 1, max_length = 200)]
    concurrency_key: Option<String>,
}

/// What happens to ticks missed while no gateway ran: `skip` them, or run the latest one (`catch_up_one`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum MissedTicksName {
    Skip,
    CatchUpOne,
}

/// A schedule as every schedule endpoint returns it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleInfo {
    #[schema(format = "uuid")]
    id: String,
    engine: String,
    user: String,
    kind: String,
    /// The payload of each job (any JSON value).
    payload: Value,
    cron: String,
    timezone: String,
    #[schema(value_type = MissedTicksName)]
    missed: &'static str,
    priority: i32,
    max_attempts: u32,
    timeout_ms: u64,
    concurrency_key: Option<String>,
    /// The next tick; `null` when the expression has no more.
    #[schema(format = DateTime)]
    next_run_at: Option<String>,
    #[schema(format = DateTime)]
    last_run_at: Option<String>,
    /// The job the latest tick submitted.
    #[schema(format = "uuid")]
    last_job_id: Option<String>,
    /// Why the latest tick submitted no job.
    last_error: Option<String>,
    #[schema(format = DateTime)]
    created_at: String,
}

impl From<&Schedule> for ScheduleInfo {
    fn from(schedule: &Schedule) -> Self {
        Self {
            id: schedule.id.clone(),
            engine: schedule.engine.clone(),
            user: schedule.user.clone(),
            kind: schedule.kind.clone(),
            payload: serde_json::from_str(&schedule.payload).unwrap_or(Value::Null),
            cron: schedule.cron.clone(),
            timezone: schedule.timezone.clone(),
            missed: schedule.missed.as_str(),
            priority: schedule.priority,
            max_attempts: schedule.max_attempts,
            timeout_ms: schedule.timeout_ms,
            concurrency_key: schedule.concurrency_key.clone(),
            next_run_at: (schedule.next_run_at_ms < i64::MAX).then(|| format_ms(schedule.next_run_at_ms)),
            last_run_at: schedule.last_run_at_ms.map(format_ms),
            last_job_id: schedule.last_job_id.clone(),
            last_error: schedule.last_error.clone(),
            created_at: format_ms(schedule.created_at_ms),
        }
    }
}

/// `GET /schedules` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleList {
    schedules: Vec<ScheduleInfo>,
}

/// `DELETE /schedules/{id}` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeletedSchedule {
    #[schema(format = "uuid")]
    id: String,
    /// Always `true`.
    deleted: bool,
}

/// `POST /schedules`: 201 with the schedule and its first tick; 422 says what is wrong with the expression,
/// the zone or the job template.
#[utoipa::path(post, path = "/schedules", tag = "schedules", operation_id = "create_schedule", request_body = ScheduleRequest,
    responses(
        (status = 201, description = "the schedule", body = ScheduleInfo),
        (status = 403, description = "`not_whitelisted`: the caller is not on the engine's whitelist", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the payload is larger than the gateway's limit", body = ErrorBody),
        (status = 422, description = "`invalid_cron`, `invalid_timezone`, `invalid_missed`; `invalid_engine`, `invalid_kind`, \
            `invalid_max_attempts`, `invalid_timeout`, `invalid_concurrency_key`, `invalid_payload` as for `POST /jobs`; \
            `unknown_engine`, `engine_revoked`; `too_many_schedules`: 100 on this engine already", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(request): JsonBody<ScheduleRequest>,
) -> Result<(StatusCode, Json<ScheduleInfo>), ApiError> {
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
        ScheduleOutcome::Created(schedule) => Ok((StatusCode::CREATED, Json(ScheduleInfo::from(&*schedule)))),
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
#[utoipa::path(get, path = "/schedules", tag = "schedules", operation_id = "list_schedules",
    responses((status = 200, description = "the schedules of the caller", body = ScheduleList)))]
pub async fn list(State(state): State<AppState>, user: AuthUser) -> Result<Json<ScheduleList>, ApiError> {
    let schedules = state.jobs.list_schedules(&user.id).await?;
    Ok(Json(ScheduleList { schedules: schedules.iter().map(ScheduleInfo::from).collect() }))
}

/// `DELETE /schedules/{id}`: 200, or 404 for an unknown id or another user's schedule.
#[utoipa::path(delete, path = "/schedules/{id}", tag = "schedules", operation_id = "delete_schedule",
    params(("id" = String, Path, format = "uuid", description = "the schedule id")),
    responses(
        (status = 200, description = "deleted", body = DeletedSchedule),
        (status = 404, description = "`schedule_not_found`: no such schedule, or another user's", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<DeletedSchedule>, ApiError> {
    let not_found = || ApiError::not_found("schedule_not_found", format!("no schedule with id {id:?}"));
    uuid::Uuid::parse_str(&id).map_err(|_| not_found())?;
    if state.jobs.delete_schedule(&user.id, &id).await? {
        Ok(Json(DeletedSchedule { id, deleted: true }))
    } else {
        Err(not_found())
    }
}

//! Operating jobs: `POST /jobs/{id}/retry`, `DELETE /jobs/{id}`, `GET /jobs/{id}/attempts`, `POST /jobs/bulk` and
//! `GET /jobs/counts`. Only the caller's jobs: another user's job is 404, exactly like a missing one.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use flowork_common::wire::{ErrorBody, Job, JobAttempts, JobCounts};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{JsonBody, QueryParams};
use super::job_filter::FilterFields;
use super::jobs::check_job_id;
use crate::auth::extract::AuthUser;
use crate::http::error::ApiError;
use crate::state::AppState;
use crate::store::core::operate::act_on_filter;
use crate::store::{ActOutcome, JobAction};

/// Most ids in one `POST /jobs/bulk`.
pub const MAX_BULK_IDS: usize = 1_000;

fn no_such_job(id: &str) -> ApiError {
    ApiError::not_found("job_not_found", format!("no job with id {id:?}"))
}

fn not_whitelisted(job: &str) -> ApiError {
    ApiError::forbidden(
        "not_whitelisted",
        format!("you are no longer on the whitelist of job {job:?}'s engine; ask its owner to add you"),
    )
}

/// `POST /jobs/{id}/retry`: a `dead` or `cancelled` job goes back to `queued` now, with a fresh budget of
/// `max_attempts` attempts; same id, its attempt history kept.
#[utoipa::path(post, path = "/jobs/{id}/retry", tag = "jobs", operation_id = "retry_job",
    params(("id" = String, Path, format = "uuid", description = "the job's id")),
    responses(
        (status = 200, description = "the job, queued again", body = Job),
        (status = 403, description = "`not_whitelisted`: the caller is no longer on the engine's whitelist", body = ErrorBody),
        (status = 404, description = "`job_not_found`: no such job, or another user's", body = ErrorBody),
        (status = 409, description = "`not_retryable`: the job is not `dead` or `cancelled`", body = ErrorBody),
    ))]
pub async fn retry(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    check_job_id(&id)?;
    match state.jobs.act(&user.id, &id, JobAction::Retry).await? {
        ActOutcome::Done(job) | ActOutcome::Requested(job) => Ok(Json(*job)),
        ActOutcome::NotApplicable(status) => Err(ApiError::conflict(
            "not_retryable",
            format!("the job is {}; only dead or cancelled jobs can be retried", status.as_str()),
        )),
        ActOutcome::NotAllowed => Err(not_whitelisted(&id)),
        ActOutcome::NotFound => Err(no_such_job(&id)),
    }
}

/// `DELETE /jobs/{id}`: removes a final job with its history (its idempotency key can be used again).
#[utoipa::path(delete, path = "/jobs/{id}", tag = "jobs", operation_id = "delete_job",
    params(("id" = String, Path, format = "uuid", description = "the job's id")),
    responses(
        (status = 204, description = "the job is deleted"),
        (status = 404, description = "`job_not_found`: no such job, or another user's", body = ErrorBody),
        (status = 409, description = "`job_not_final`: the job is queued or running; cancel it first", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    check_job_id(&id)?;
    match state.jobs.act(&user.id, &id, JobAction::Delete).await? {
        ActOutcome::Done(_) | ActOutcome::Requested(_) => Ok(StatusCode::NO_CONTENT),
        ActOutcome::NotApplicable(status) => Err(ApiError::conflict(
            "job_not_final",
            format!("the job is {}; only a finished job can be deleted (cancel it first)", status.as_str()),
        )),
        ActOutcome::NotAllowed | ActOutcome::NotFound => Err(no_such_job(&id)),
    }
}

/// `GET /jobs/{id}/attempts`: every attempt, oldest first, numbered on across retries.
#[utoipa::path(get, path = "/jobs/{id}/attempts", tag = "jobs", operation_id = "list_job_attempts",
    params(("id" = String, Path, format = "uuid", description = "the job's id")),
    responses(
        (status = 200, description = "the job's attempts, oldest first; a running one last, without an outcome", body = JobAttempts),
        (status = 404, description = "`job_not_found`: no such job, or another user's", body = ErrorBody),
    ))]
pub async fn attempts(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<JobAttempts>, ApiError> {
    check_job_id(&id)?;
    let attempts = state.jobs.attempts(&user.id, &id).await?.ok_or_else(|| no_such_job(&id))?;
    Ok(Json(JobAttempts { attempts }))
}

/// `GET /jobs/counts` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CountParams {
    /// Only jobs of this engine.
    #[param(pattern = "^[a-z0-9][a-z0-9-]{0,62}$")]
    engine: Option<String>,
}

/// `GET /jobs/counts`: how many of the caller's jobs are in each state.
#[utoipa::path(get, path = "/jobs/counts", tag = "jobs", operation_id = "count_jobs", params(CountParams),
    responses(
        (status = 200, description = "the caller's jobs per state", body = JobCounts),
        (status = 400, description = "`invalid_engine`", body = ErrorBody),
    ))]
pub async fn counts(
    State(state): State<AppState>,
    user: AuthUser,
    QueryParams(params): QueryParams<CountParams>,
) -> Result<Json<JobCounts>, ApiError> {
    let filter = FilterFields { engine: params.engine, ..FilterFields::default() }.to_filter()?;
    Ok(Json(state.jobs.count_jobs(&user.id, filter.engine.as_deref()).await?))
}

/// `POST /jobs/bulk` body: an action and either a filter or a list of ids.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    /// `retry` (dead and cancelled jobs), `cancel` (queued and running ones) or `delete` (final ones).
    #[schema(pattern = "^(retry|cancel|delete)$", example = "retry")]
    action: String,
    /// Every job of the caller this selects (and the action applies to).
    filter: Option<FilterFields>,
    /// These jobs of the caller: 1 to 1000 ids.
    #[schema(min_items = 1, max_items = 1000)]
    ids: Option<Vec<String>>,
}

/// `POST /jobs/bulk` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkAnswer {
    /// Jobs selected in a state the action applies to.
    matched: u64,
    /// Jobs the action changed (one that moved on meanwhile is matched, not changed).
    changed: u64,
}

/// `POST /jobs/bulk`: retries, cancels or deletes many of the caller's jobs, a few hundred per transaction so
/// enqueues keep flowing while it runs.
#[utoipa::path(post, path = "/jobs/bulk", tag = "jobs", operation_id = "bulk_jobs", request_body = BulkRequest,
    responses(
        (status = 200, description = "what the action matched and changed", body = BulkAnswer),
        (status = 400, description = "`invalid_status`, `invalid_engine`, `invalid_kind`, `invalid_after`, `invalid_before`, `invalid_id_prefix`: a filter field", body = ErrorBody),
        (status = 422, description = "`invalid_action`, `invalid_bulk`: not exactly one of `filter` and 1-1000 `ids`", body = ErrorBody),
    ))]
pub async fn bulk(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(request): JsonBody<BulkRequest>,
) -> Result<Json<BulkAnswer>, ApiError> {
    let action = JobAction::parse(&request.action).ok_or_else(|| {
        ApiError::unprocessable("invalid_action", format!("action {:?} is not retry, cancel or delete", request.action))
    })?;
    let count = match (request.filter, request.ids) {
        (Some(fields), None) => act_on_filter(state.jobs.as_ref(), &user.id, &fields.to_filter()?, action).await?,
        (None, Some(ids)) if (1..=MAX_BULK_IDS).contains(&ids.len()) => {
            let mut count = crate::store::core::operate::BulkCount::default();
            for id in ids.iter().filter(|id| uuid::Uuid::parse_str(id).is_ok()) {
                match state.jobs.act(&user.id, id, action).await? {
                    ActOutcome::Done(_) | ActOutcome::Requested(_) => {
                        (count.matched, count.changed) = (count.matched + 1, count.changed + 1)
                    }
                    ActOutcome::NotAllowed => count.matched += 1,
                    ActOutcome::NotApplicable(_) | ActOutcome::NotFound => {}
                }
            }
            count
        }
        _ => {
            return Err(ApiError::unprocessable(
                "invalid_bulk",
                format!("give either a filter or 1 to {MAX_BULK_IDS} ids, not both"),
            ));
        }
    };
    Ok(Json(BulkAnswer { matched: count.matched, changed: count.changed }))
}

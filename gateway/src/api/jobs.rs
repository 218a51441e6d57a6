//! The jobs resource: `POST /jobs` (idempotent), `POST /jobs/batch`, `GET /jobs`, `GET /jobs/{id}`,
//! `POST /jobs/{id}/cancel` (operating jobs is in `job_ops`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flowork_common::wire::{EnqueueRequest, ErrorBody, Job, JobPage};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, Schema};
use utoipa::openapi::{RefOr, Type};
use utoipa::{PartialSchema, ToSchema};

use super::extract::{JsonBody, QueryParams};
use super::job_filter::FilterFields;
use crate::admission::enqueue::{build_new_job, parse_traceparent, validate_idempotency_key};
use crate::admission::gate::{Admitted, Refused};
use crate::auth::extract::AuthUser;
use crate::http::error::ApiError;
use crate::http::request_log::{RequestLog, note_job};
use crate::state::AppState;
use crate::store::{ActOutcome, JobAction, ListQuery, NewJob};
use axum::Extension;

pub(crate) const MAX_PAGE: usize = 500;
const DEFAULT_PAGE: usize = 100;

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    headers
        .get(name)
        .map(|v| v.to_str().map_err(|_| ApiError::bad_request("invalid_header", format!("{name} must be ASCII"))))
        .transpose()
}

/// `POST /jobs`: 201 for a new job, 200 with `Idempotent-Replayed: true` for a replay of the same request,
/// 422 when the key was used with a different request, 409 while the first request is still in progress.
#[utoipa::path(post, path = "/jobs", tag = "jobs", operation_id = "create_job", request_body = EnqueueRequest,
    params(
        ("Idempotency-Key" = String, Header, pattern = "^[!-~]{1,255}$", min_length = 1, max_length = 255,
            description = "1-255 visible ASCII characters; a retry with the same key returns the same job"),
        ("traceparent" = Option<String>, Header, description = "W3C trace context (ignored unless well-formed)"),
    ),
    responses(
        (status = 201, description = "the job was created", body = Job,
            headers(("Location" = String, description = "the job's URL, `/jobs/{id}`"))),
        (status = 200, description = "a replay of an earlier request with this key: the job it created", body = Job,
            headers(
                ("Location" = String, description = "the job's URL, `/jobs/{id}`"),
                ("Idempotent-Replayed" = String, description = "`true`: this answer replays an earlier one"),
            )),
        (status = 400, description = "`missing_idempotency_key`, `invalid_idempotency_key`, `invalid_header`", body = ErrorBody),
        (status = 403, description = "`not_whitelisted`: the caller is not on the engine's whitelist", body = ErrorBody),
        (status = 409, description = "`idempotency_key_in_progress`: a request with this key is still being processed; see `Retry-After`", body = ErrorBody,
            headers(("Retry-After" = u64, description = "seconds to wait before retrying"))),
        (status = 413, description = "`payload_too_large`: the payload is larger than the gateway's limit", body = ErrorBody),
        (status = 422, description = "`invalid_engine`, `invalid_kind`, `invalid_run_at`, `invalid_max_attempts`, `invalid_timeout`, \
            `invalid_concurrency_key`, `invalid_payload`: a field out of its range; `unknown_engine`, `engine_revoked`; \
            `idempotency_key_reused`: the key was used with a different request", body = ErrorBody),
        (status = 429, description = "`queue_full`, `user_inflight_limit`, `total_queue_full`: an admission cap; see `Retry-After`", body = ErrorBody),
        (status = 503, description = "`draining`: this gateway accepts no new jobs now", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    log: Option<Extension<RequestLog>>,
    user: AuthUser,
    headers: HeaderMap,
    JsonBody(request): JsonBody<EnqueueRequest>,
) -> Result<Response, ApiError> {
    let key = validate_idempotency_key(header_str(&headers, "idempotency-key")?)?;
    let traceparent = parse_traceparent(header_str(&headers, "traceparent").ok().flatten());
    let id = uuid::Uuid::now_v7().to_string();
    if let Some(Extension(log)) = &log {
        log.engine(&request.engine);
    }
    let job = build_new_job(&request, &user.id, key, traceparent, id, state.clock.now_ms(), &state.limits)?;
    require_active_engine(&state, &job.engine).await?;
    let admitted = state.admission.admit_one(job).await?;
    respond(log.as_ref().map(|l| &l.0), admitted)
}

/// The HTTP answer for an admitted job: 201 for a new one, 200 with `Idempotent-Replayed: true` for a replay.
fn respond(log: Option<&RequestLog>, admitted: Admitted) -> Result<Response, ApiError> {
    let (status, job) = match admitted {
        Admitted::Created(job) => (StatusCode::CREATED, job),
        Admitted::Replayed(job) => (StatusCode::OK, job),
    };
    note_job(log, &job.id);
    let location =
        HeaderValue::from_str(&format!("/jobs/{}", job.id)).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut response = (status, [(header::LOCATION, location)], Json(job)).into_response();
    if status == StatusCode::OK {
        response
            .headers_mut()
            .insert(header::HeaderName::from_static("idempotent-replayed"), HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// A job id is a UUID; anything else is a job that does not exist (checked before any store sees it).
pub(crate) fn check_job_id(id: &str) -> Result<(), ApiError> {
    uuid::Uuid::parse_str(id)
        .map(|_| ())
        .map_err(|_| ApiError::not_found("job_not_found", format!("no job with id {id:?}")))
}

/// `GET /jobs/{id}`: one of the caller's jobs; another user's job is 404, exactly like a missing one.
#[utoipa::path(get, path = "/jobs/{id}", tag = "jobs", operation_id = "get_job",
    params(("id" = String, Path, format = "uuid", description = "the job's id")),
    responses(
        (status = 200, description = "the job", body = Job),
        (status = 404, description = "`job_not_found`: no such job, or another user's", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    log: Option<Extension<RequestLog>>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    note_job(log.as_ref().map(|l| &l.0), &id);
    check_job_id(&id)?;
    state
        .jobs
        .get_job(&user.id, &id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("job_not_found", format!("no job with id {id:?}")))
}

/// `GET /jobs` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only jobs in these states, comma-separated: `dead,cancelled`.
    #[param(example = "dead,cancelled")]
    status: Option<String>,
    /// Only jobs of this engine.
    #[param(pattern = "^[a-z0-9][a-z0-9-]{0,62}$")]
    engine: Option<String>,
    /// Only jobs of this kind.
    #[param(pattern = "^[a-z0-9._-]{1,64}$")]
    kind: Option<String>,
    /// Only jobs enqueued at or after this time (RFC 3339).
    #[param(format = DateTime)]
    after: Option<String>,
    /// Only jobs enqueued before this time (RFC 3339).
    #[param(format = DateTime)]
    before: Option<String>,
    /// Only jobs whose id starts with this (1-36 characters of a UUID).
    #[param(pattern = "^[0-9a-f-]{1,36}$")]
    id_prefix: Option<String>,
    /// Jobs per page, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    #[param(format = "uuid")]
    cursor: Option<String>,
}

/// `GET /jobs`: the caller's jobs, newest first, filtered, with cursor pagination.
#[utoipa::path(get, path = "/jobs", tag = "jobs", operation_id = "list_jobs", params(ListParams),
    responses(
        (status = 200, description = "a page of the caller's jobs, newest first", body = JobPage),
        (status = 400, description = "`invalid_status`, `invalid_limit`, `invalid_cursor`, `invalid_engine`, `invalid_kind`, \
            `invalid_after`, `invalid_before`, `invalid_id_prefix`: the parameter named", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    QueryParams(params): QueryParams<ListParams>,
) -> Result<Json<JobPage>, ApiError> {
    let filter = FilterFields {
        status: params.status,
        engine: params.engine,
        kind: params.kind,
        after: params.after,
        before: params.before,
        id_prefix: params.id_prefix,
    }
    .to_filter()?;
    let limit = params.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request("invalid_limit", format!("limit must be between 1 and {MAX_PAGE}")));
    }
    if let Some(cursor) = &params.cursor {
        uuid::Uuid::parse_str(cursor)
            .map_err(|_| ApiError::bad_request("invalid_cursor", "cursor is not one this API returned"))?;
    }
    let query = ListQuery { filter, limit, before_id: params.cursor };
    Ok(Json(state.jobs.list_jobs(&user.id, query).await?))
}

/// `POST /jobs/{id}/cancel`: cancels a queued job at once (200); asks the engine to stop a running one (202,
/// `cancel_requested`); 409 once the job has finished.
#[utoipa::path(post, path = "/jobs/{id}/cancel", tag = "jobs", operation_id = "cancel_job",
    params(("id" = String, Path, format = "uuid", description = "the job's id")),
    responses(
        (status = 200, description = "a queued job, now cancelled", body = Job),
        (status = 202, description = "a running job; the engine stops it at its next heartbeat", body = Job),
        (status = 404, description = "`job_not_found`: no such job, or another user's", body = ErrorBody),
        (status = 409, description = "`not_cancellable`: the job has finished", body = ErrorBody),
    ))]
pub async fn cancel(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Job>), ApiError> {
    check_job_id(&id)?;
    match state.jobs.act(&user.id, &id, JobAction::Cancel).await? {
        ActOutcome::Done(job) => Ok((StatusCode::OK, Json(*job))),
        ActOutcome::Requested(job) => Ok((StatusCode::ACCEPTED, Json(*job))),
        ActOutcome::NotApplicable(status) => Err(ApiError::conflict(
            "not_cancellable",
            format!("the job is {} and can no longer be cancelled", status.as_str()),
        )),
        ActOutcome::NotAllowed | ActOutcome::NotFound => {
            Err(ApiError::not_found("job_not_found", format!("no job with id {id:?}")))
        }
    }
}

/// Most jobs in one `POST /jobs/batch`.
pub(crate) const MAX_BATCH: usize = 1_000;

/// `POST /jobs/batch` body: jobs as for `POST /jobs`, each with its own `idempotency_key`. Items are read one
/// by one, so a bad item is refused in its own result rather than failing the batch.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    /// 1 to 1000 jobs.
    #[schema(value_type = Vec<BatchJob>, min_items = 1, max_items = 1000)]
    jobs: Vec<serde_json::Value>,
}

/// A job of `POST /jobs/batch`: the body of `POST /jobs` and its `Idempotency-Key` (described only: items are
/// read as JSON values, one by one).
pub struct BatchJob;

impl PartialSchema for BatchJob {
    fn schema() -> RefOr<Schema> {
        let mut item = EnqueueRequest::schema();
        if let RefOr::T(Schema::Object(object)) = &mut item {
            let key = ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[!-~]{1,255}$"))
                .min_length(Some(1))
                .max_length(Some(255))
                .description(Some(
                    "as the `Idempotency-Key` header of `POST /jobs`: a retry with the same key returns the same job",
                ));
            object.properties.insert("idempotency_key".into(), key.into());
            object.required.push("idempotency_key".into());
            object.description = Some("a job as for `POST /jobs`, with its idempotency key".into());
        }
        item
    }
}

impl ToSchema for BatchJob {}

/// `POST /jobs/batch` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchAnswer {
    /// One per item, in order.
    results: Vec<BatchItemResult>,
}

/// One item's answer: its job, or why it was refused.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum BatchItemResult {
    Accepted(BatchItemAccepted),
    Refused(BatchItemRefused),
}

/// An item stored (201) or replayed (200), with the status `POST /jobs` would have given it.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchItemAccepted {
    /// 201: created; 200: a replay of an earlier request with this key.
    #[schema(minimum = 200, maximum = 201)]
    status: u16,
    /// `true` for a replay.
    #[serde(skip_serializing_if = "Option::is_none")]
    replayed: Option<bool>,
    job: Box<Job>,
}

/// A refused item: the status, code and message `POST /jobs` would have answered.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchItemRefused {
    #[schema(minimum = 400, maximum = 599)]
    status: u16,
    /// The error code, as in `ErrorBody`.
    error: String,
    message: String,
    /// For a cap's refusal (429) or a drain (503): seconds to wait, as the `Retry-After` header `POST /jobs` would
    /// have sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after: Option<u64>,
}

/// One item's answer, with the status `POST /jobs` would have given it.
fn item_result(answer: Result<Admitted, Refused>) -> BatchItemResult {
    match answer {
        Ok(Admitted::Created(job)) => {
            BatchItemResult::Accepted(BatchItemAccepted { status: 201, replayed: None, job: Box::new(job) })
        }
        Ok(Admitted::Replayed(job)) => {
            BatchItemResult::Accepted(BatchItemAccepted { status: 200, replayed: Some(true), job: Box::new(job) })
        }
        Err(refused) => BatchItemResult::Refused(BatchItemRefused {
            status: refused.status.as_u16(),
            error: refused.body.error,
            message: refused.body.message,
            retry_after: refused.retry_after_s,
        }),
    }
}

/// Validates one batch item into a job.
async fn batch_item(state: &AppState, user: &str, item: serde_json::Value) -> Result<NewJob, ApiError> {
    let serde_json::Value::Object(mut fields) = item else {
        return Err(ApiError::unprocessable("invalid_body", "each item must be a JSON object"));
    };
    let key = match fields.remove("idempotency_key") {
        Some(serde_json::Value::String(key)) => validate_idempotency_key(Some(&key))?,
        Some(_) => return Err(ApiError::bad_request("invalid_idempotency_key", "idempotency_key must be a string")),
        None => validate_idempotency_key(None)?,
    };
    let request: EnqueueRequest = crate::api::input_error::explain_value(serde_json::Value::Object(fields), "item")
        .map_err(|message| ApiError::unprocessable("invalid_body", message))?;
    let id = uuid::Uuid::now_v7().to_string();
    let job = build_new_job(&request, user, key, None, id, state.clock.now_ms(), &state.limits)?;
    require_active_engine(state, &job.engine).await?;
    Ok(job)
}

/// Refuses work for an engine that is not registered or has been revoked (422).
pub async fn require_active_engine(state: &AppState, engine: &str) -> Result<(), ApiError> {
    match state.engines.engine(engine).await? {
        Some(record) if record.is_active() => Ok(()),
        Some(_) => Err(ApiError::unprocessable("engine_revoked", format!("engine {engine:?} has been revoked"))),
        None => Err(ApiError::unprocessable("unknown_engine", format!("no engine named {engine:?} is registered"))),
    }
}

/// `POST /jobs/batch`: up to 1,000 jobs; those of one engine are committed in one transaction. The answer has
/// one result per item, in order, with the status `POST /jobs` would have given it.
#[utoipa::path(post, path = "/jobs/batch", tag = "jobs", operation_id = "create_job_batch", request_body = BatchBody,
    responses(
        (status = 200, description = "one result per item, in order", body = BatchAnswer),
        (status = 422, description = "`invalid_batch`: not 1 to 1000 jobs", body = ErrorBody),
        (status = 429, description = "`total_queue_full`: the gateway-wide cap admits none of the jobs; see `Retry-After`", body = ErrorBody),
        (status = 503, description = "`draining`: this gateway accepts no new jobs now (and none of the items replays an earlier job)", body = ErrorBody),
    ))]
pub async fn create_batch(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(body): JsonBody<BatchBody>,
) -> Result<Json<BatchAnswer>, ApiError> {
    if body.jobs.is_empty() || body.jobs.len() > MAX_BATCH {
        return Err(ApiError::unprocessable("invalid_batch", format!("a batch holds 1 to {MAX_BATCH} jobs")));
    }
    let mut results: Vec<Option<BatchItemResult>> = body.jobs.iter().map(|_| None).collect();
    let mut valid: Vec<(usize, NewJob)> = Vec::with_capacity(body.jobs.len());
    for (index, item) in body.jobs.into_iter().enumerate() {
        match batch_item(&state, &user.id, item).await {
            Ok(job) => valid.push((index, job)),
            Err(error) => results[index] = Some(item_result(Err(Refused::from(&error)))),
        }
    }
    for (index, answer) in state.admission.admit_batch(valid).await? {
        results[index] = Some(item_result(answer));
    }
    Ok(Json(BatchAnswer { results: results.into_iter().flatten().collect() }))
}

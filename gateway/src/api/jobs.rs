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
use crate::admission::drain::DRAIN_RETRY_AFTER_S;
use crate::admission::enqueue::{build_new_job, parse_traceparent, validate_idempotency_key};
use crate::admission::{admit, retry_after_s, slots_needed};
use crate::auth::extract::AuthUser;
use crate::http::error::ApiError;
use crate::http::request_log::{RequestLog, note_job};
use crate::state::AppState;
use crate::store::{ActOutcome, EnqueueOutcome, JobAction, ListQuery, NewJob};
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
    if state.drain.is_draining() {
        return match state.jobs.replay(&job).await? {
            Some(outcome) => respond(&state, log.as_ref().map(|l| &l.0), outcome, &job.engine).await,
            None => Err(ApiError::Unavailable {
                code: "draining",
                message: "this gateway is draining for maintenance and accepts no new jobs; retry shortly".into(),
                retry_after_s: DRAIN_RETRY_AFTER_S,
            }),
        };
    }
    if let (_, Some(refusal)) = total_cap(&state, 1).await? {
        return match state.jobs.replay(&job).await? {
            Some(outcome) => respond(&state, log.as_ref().map(|l| &l.0), outcome, &job.engine).await,
            None => Err(refusal),
        };
    }
    let Some(_in_progress) = state.inflight.begin(&job.user, &job.engine, &job.idempotency_key) else {
        return Err(ApiError::Conflict {
            code: "idempotency_key_in_progress",
            message: "a request with this Idempotency-Key is still being processed; retry shortly".into(),
            retry_after_s: Some(1),
        });
    };
    let engine = job.engine.clone();
    let outcome = state.jobs.enqueue(job).await?;
    respond(&state, log.as_ref().map(|l| &l.0), outcome, &engine).await
}

/// The HTTP answer for what an enqueue did.
async fn respond(
    state: &AppState,
    log: Option<&RequestLog>,
    outcome: EnqueueOutcome,
    engine: &str,
) -> Result<Response, ApiError> {
    let location =
        |job: &Job| HeaderValue::from_str(&format!("/jobs/{}", job.id)).map_err(|e| ApiError::Internal(e.to_string()));
    match outcome {
        EnqueueOutcome::Created(job) => {
            note_job(log, &job.id);
            state.created_since_total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok((StatusCode::CREATED, [(header::LOCATION, location(&job)?)], Json(job)).into_response())
        }
        EnqueueOutcome::Replayed(job) => {
            note_job(log, &job.id);
            let replayed = HeaderValue::from_static("true");
            Ok((
                StatusCode::OK,
                [
                    (header::LOCATION, location(&job)?),
                    (header::HeaderName::from_static("idempotent-replayed"), replayed),
                ],
                Json(job),
            )
                .into_response())
        }
        EnqueueOutcome::NotAllowed => Err(ApiError::forbidden(
            "not_whitelisted",
            format!("you are not on the whitelist of engine {engine:?}; ask its owner to add you"),
        )),
        EnqueueOutcome::KeyReused => Err(ApiError::unprocessable(
            "idempotency_key_reused",
            "this Idempotency-Key was already used with a different request; use a new key for a new job",
        )),
        EnqueueOutcome::QueueFull { depth } => Err(queue_full(state, engine, depth, 1).await),
        EnqueueOutcome::UserLimit { inflight } => Err(user_limit(state, engine, inflight, 1).await),
    }
}

/// How many of `wanted` new jobs the gateway-wide cap (`--max-total-depth`) admits, and the 429 for the rest.
async fn total_cap(state: &AppState, wanted: u64) -> Result<(u64, Option<ApiError>), ApiError> {
    let cap = state.caps.max_total_depth;
    if cap == 0 {
        return Ok((wanted, None));
    }
    let (total, rate) = state.total_depth().await?;
    let decision = admit(cap, total, wanted, rate);
    let refusal = decision.retry_after_s.map(|retry_after_s| ApiError::Overloaded {
        code: "total_queue_full",
        message: format!("the gateway holds {total} queued jobs and its cap is {cap}; retry later"),
        retry_after_s,
    });
    Ok((decision.admitted, refusal))
}

/// The 429 for an engine's full queue (`--max-queue-depth`) holding `depth` jobs; `refused` jobs of this request
/// were refused with it, and a retry needs room for all of them.
async fn queue_full(state: &AppState, engine: &str, depth: u64, refused: u64) -> ApiError {
    ApiError::Overloaded {
        code: "queue_full",
        message: format!("engine {engine:?} has {depth} queued jobs, its cap; retry later"),
        retry_after_s: engine_retry_after(state, engine, state.caps.max_queue_depth, depth, refused).await,
    }
}

/// The 429 for a user at their cap (`--max-user-inflight`) on an engine, as `queue_full`.
async fn user_limit(state: &AppState, engine: &str, inflight: u64, refused: u64) -> ApiError {
    ApiError::Overloaded {
        code: "user_inflight_limit",
        message: format!("you have {inflight} queued or running jobs on engine {engine:?}, your cap"),
        retry_after_s: engine_retry_after(state, engine, state.caps.max_user_inflight, inflight, refused).await,
    }
}

/// When `refused` jobs fit under an engine's cap holding `current`, at the rate the engine drains (a user's jobs
/// leave at most that fast, so it is the estimate for the per-user cap too). A rate that cannot be read counts as
/// unknown: the refusal still answers (in a batch, after other items were stored).
async fn engine_retry_after(state: &AppState, engine: &str, cap: u64, current: u64, refused: u64) -> u64 {
    let rate = match state.jobs.queue_counts(engine).await {
        Ok(counts) => counts.window.drain_rate_per_s,
        Err(error) => {
            tracing::warn!(engine, %error, "no drain rate for a Retry-After");
            0.0
        }
    };
    retry_after_s(slots_needed(cap, current, refused), rate)
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
    /// For a cap's refusal (429): seconds to wait, as the `Retry-After` header `POST /jobs` would have sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after: Option<u64>,
}

/// One item's answer, with the status `POST /jobs` would have given it; a cap's refusal (made by the caller,
/// which knows how many items it refused) comes as an error.
fn item_result(outcome: Result<EnqueueOutcome, ApiError>, engine: &str) -> BatchItemResult {
    let refusal = match outcome {
        Ok(EnqueueOutcome::Created(job)) => {
            return BatchItemResult::Accepted(BatchItemAccepted { status: 201, replayed: None, job: Box::new(job) });
        }
        Ok(EnqueueOutcome::Replayed(job)) => {
            return BatchItemResult::Accepted(BatchItemAccepted {
                status: 200,
                replayed: Some(true),
                job: Box::new(job),
            });
        }
        Ok(EnqueueOutcome::NotAllowed) => {
            ApiError::forbidden("not_whitelisted", format!("you are not on the whitelist of engine {engine:?}"))
        }
        Ok(EnqueueOutcome::KeyReused) => {
            ApiError::unprocessable("idempotency_key_reused", "this key was already used with a different request")
        }
        Ok(EnqueueOutcome::QueueFull { .. } | EnqueueOutcome::UserLimit { .. }) => {
            ApiError::Internal("a cap's refusal without its Retry-After".into())
        }
        Err(error) => error,
    };
    refused_item(&refusal)
}

/// A refused item: its status, code and message, and for a cap (429) `retry_after` in seconds, as the
/// `Retry-After` header `POST /jobs` would have sent.
fn refused_item(error: &ApiError) -> BatchItemResult {
    let (status, body) = error.status_and_body();
    let retry_after = match error {
        ApiError::Overloaded { retry_after_s, .. } => Some(*retry_after_s),
        _ => None,
    };
    BatchItemResult::Refused(BatchItemRefused {
        status: status.as_u16(),
        error: body.error,
        message: body.message,
        retry_after,
    })
}

/// The 429s for the items of one engine's enqueue its caps refused (queue, user): each with the `Retry-After` of
/// a retry of all the items refused that way.
async fn engine_cap_refusals(
    state: &AppState,
    engine: &str,
    outcomes: &[EnqueueOutcome],
) -> (Option<ApiError>, Option<ApiError>) {
    let (mut full, mut depth, mut limited, mut inflight) = (0, 0, 0, 0);
    for outcome in outcomes {
        match outcome {
            EnqueueOutcome::QueueFull { depth: d } => (full, depth) = (full + 1, depth.max(*d)),
            EnqueueOutcome::UserLimit { inflight: i } => (limited, inflight) = (limited + 1, inflight.max(*i)),
            _ => {}
        }
    }
    let queue = if full > 0 { Some(queue_full(state, engine, depth, full).await) } else { None };
    let user = if limited > 0 { Some(user_limit(state, engine, inflight, limited).await) } else { None };
    (queue, user)
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
        (status = 503, description = "`draining`: this gateway accepts no new jobs now", body = ErrorBody),
    ))]
pub async fn create_batch(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(body): JsonBody<BatchBody>,
) -> Result<Json<BatchAnswer>, ApiError> {
    if body.jobs.is_empty() || body.jobs.len() > MAX_BATCH {
        return Err(ApiError::unprocessable("invalid_batch", format!("a batch holds 1 to {MAX_BATCH} jobs")));
    }
    if state.drain.is_draining() {
        return Err(ApiError::Unavailable {
            code: "draining",
            message: "this gateway is draining and accepts no new jobs; retry shortly".into(),
            retry_after_s: DRAIN_RETRY_AFTER_S,
        });
    }
    let mut results: Vec<Option<BatchItemResult>> = body.jobs.iter().map(|_| None).collect();
    let mut valid: Vec<(usize, NewJob)> = Vec::with_capacity(body.jobs.len());
    for (index, item) in body.jobs.into_iter().enumerate() {
        match batch_item(&state, &user.id, item).await {
            Ok(job) => valid.push((index, job)),
            Err(error) => results[index] = Some(item_result(Err(error), "")),
        }
    }
    // The gateway-wide cap takes the same decision as for `POST /jobs`: the first jobs that fit go on, the rest
    // are refused (a replay of an accepted job is still answered); when none goes on, the whole batch is a 429.
    let (admitted, over_total) = total_cap(&state, valid.len() as u64).await?;
    let refused_by_total = valid.split_off((admitted as usize).min(valid.len()));
    if let Some(refusal) = over_total {
        let mut replayed = false;
        for (index, job) in refused_by_total {
            results[index] = Some(match state.jobs.replay(&job).await? {
                Some(outcome) => {
                    replayed = true;
                    item_result(Ok(outcome), &job.engine)
                }
                None => refused_item(&refusal),
            });
        }
        if valid.is_empty() && !replayed {
            return Err(refusal);
        }
    }
    let mut by_engine: std::collections::BTreeMap<String, Vec<(usize, NewJob)>> = Default::default();
    for (index, job) in valid {
        by_engine.entry(job.engine.clone()).or_default().push((index, job));
    }
    for (engine, items) in by_engine {
        let (indexes, jobs): (Vec<usize>, Vec<NewJob>) = items.into_iter().unzip();
        match state.jobs.enqueue_many(&engine, jobs).await {
            Ok(outcomes) => {
                let refusals = engine_cap_refusals(&state, &engine, &outcomes).await;
                for (index, outcome) in indexes.into_iter().zip(outcomes) {
                    results[index] = Some(match (outcome, &refusals) {
                        (EnqueueOutcome::QueueFull { .. }, (Some(refusal), _))
                        | (EnqueueOutcome::UserLimit { .. }, (_, Some(refusal))) => refused_item(refusal),
                        (outcome, _) => {
                            if matches!(outcome, EnqueueOutcome::Created(_)) {
                                state.created_since_total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            item_result(Ok(outcome), &engine)
                        }
                    });
                }
            }
            Err(error) => {
                let error = ApiError::from(error);
                for index in indexes {
                    results[index] = Some(refused_item(&error));
                }
                continue;
            }
        }
    }
    Ok(Json(BatchAnswer { results: results.into_iter().flatten().collect() }))
}

//! Engines as a resource of their owner: the whitelist of users allowed to submit jobs to an engine.
//!
//! Changes are written to the engine's shard, where every enqueue checks them in its own transaction, so they
//! apply to the very next request on every gateway process, without a restart.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use flowork_common::wire::ErrorBody;
use serde::Serialize;
use utoipa::ToSchema;

use super::extract::JsonBody;
use crate::audit::AuditEntry;
use crate::auth::extract::{AuthAdmin, AuthUser};
use crate::http::client_ip::ClientIp;
use crate::http::error::ApiError;
use crate::state::AppState;
use crate::store::AllowedUser;

/// An engine's whitelist: who may submit jobs to it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Whitelist {
    engine: String,
    users: Vec<WhitelistEntry>,
}

/// A user on a whitelist.
#[derive(Debug, Serialize, ToSchema)]
pub struct WhitelistEntry {
    user: String,
    /// The engine's owner (never removed).
    owner: bool,
    #[schema(format = DateTime)]
    added_at: String,
}

impl Whitelist {
    pub fn new(engine: &str, users: &[AllowedUser]) -> Self {
        let users = users
            .iter()
            .map(|u| WhitelistEntry {
                user: u.user.clone(),
                owner: u.is_owner,
                added_at: flowork_common::timefmt::format_ms(u.added_at_ms),
            })
            .collect();
        Self { engine: engine.to_string(), users }
    }
}

/// The 404 of an unknown engine.
const ENGINE_NOT_FOUND: &str = "`engine_not_found`: no engine with this id";
/// The 403 of a caller who neither owns the engine nor has an admin token with the scope.
const NOT_MANAGER: &str = "`not_owner`: only the engine's owner or an operator may do this";

/// Audits a successful change to an engine's settings (or an operator's read of its users' job text) by `actor`
/// from `ip`.
async fn audit_change(state: &AppState, actor: String, action: &str, target: String, ip: ClientIp) {
    state.audit(AuditEntry::new(actor, action, "ok").target(target).ip(Some(ip.0.to_string()))).await;
}

/// Refuses unless `user` owns the engine (404 for an unknown engine, 403 `not_owner` otherwise).
async fn require_owner(state: &AppState, engine: &str, user: &str) -> Result<(), ApiError> {
    let record = state
        .engines
        .engine(engine)
        .await?
        .ok_or_else(|| ApiError::not_found("engine_not_found", format!("no engine named {engine:?}")))?;
    if record.owner.as_deref() == Some(user) {
        Ok(())
    } else {
        Err(ApiError::forbidden("not_owner", format!("only the owner of engine {engine:?} may change its whitelist")))
    }
}

fn check_user_id(user: &str) -> Result<(), ApiError> {
    flowork_common::ids::validate_user_id(user).map_err(|e| ApiError::unprocessable("invalid_user", e.to_string()))
}

/// `GET /engines/{id}/users`: the owner sees the whitelist.
#[utoipa::path(get, path = "/engines/{id}/users", tag = "engines", operation_id = "engine_list_users",
    params(("id" = String, Path, pattern = "^[a-z0-9][a-z0-9-]{0,62}$", description = "the engine id")),
    responses(
        (status = 200, description = "the owner and whitelist of the engine", body = Whitelist),
        (status = 403, description = "`not_owner`: only the engine's owner sees its whitelist", body = ErrorBody),
        (status = 404, description = ENGINE_NOT_FOUND, body = ErrorBody),
    ))]
pub async fn list_users(
    State(state): State<AppState>,
    user: AuthUser,
    Path(engine): Path<String>,
) -> Result<Json<Whitelist>, ApiError> {
    require_owner(&state, &engine, &user.id).await?;
    Ok(Json(Whitelist::new(&engine, &state.jobs.allowed_users(&engine).await?)))
}

/// Adds (`allow`) or removes a user on an engine's whitelist, audits it as `actor`, and answers with the
/// whitelist. The owner's and the operator's endpoints both end here.
pub async fn edit_whitelist(
    state: &AppState,
    engine: &str,
    user: &str,
    allow: bool,
    actor: String,
    ip: ClientIp,
) -> Result<Json<Whitelist>, ApiError> {
    let user = user.to_string().to_lowercase_if_address();
    let action = if allow {
        check_user_id(&user)?;
        state.jobs.allow_user(engine, &user, false).await?;
        "engine.allow"
    } else {
        state.jobs.disallow_user(engine, &user).await?;
        "engine.disallow"
    };
    audit_change(state, actor, action, format!("{engine}/{user}"), ip).await;
    Ok(Json(Whitelist::new(engine, &state.jobs.allowed_users(engine).await?)))
}

/// `PUT /engines/{id}/users/{user}`: the owner allows a user.
#[utoipa::path(put, path = "/engines/{id}/users/{user}", tag = "engines", operation_id = "engine_allow_user",
    params(("id" = String, Path, pattern = "^[a-z0-9][a-z0-9-]{0,62}$", description = "the engine id"), ("user" = String, Path, pattern = "^[A-Za-z0-9._@-]{1,128}$", description = "a user id")),
    responses(
        (status = 200, description = "allowed: the whitelist", body = Whitelist),
        (status = 403, description = "`not_owner`: only the engine's owner edits its whitelist", body = ErrorBody),
        (status = 404, description = ENGINE_NOT_FOUND, body = ErrorBody),
        (status = 422, description = "`invalid_user`: not a user id", body = ErrorBody),
    ))]
pub async fn allow_user(
    State(state): State<AppState>,
    owner: AuthUser,
    ip: ClientIp,
    Path((engine, user)): Path<(String, String)>,
) -> Result<Json<Whitelist>, ApiError> {
    require_owner(&state, &engine, &owner.id).await?;
    edit_whitelist(&state, &engine, &user, true, owner.id, ip).await
}

/// `DELETE /engines/{id}/users/{user}`: the owner removes a user (never themselves).
#[utoipa::path(delete, path = "/engines/{id}/users/{user}", tag = "engines", operation_id = "engine_disallow_user",
    params(("id" = String, Path, pattern = "^[a-z0-9][a-z0-9-]{0,62}$", description = "the engine id"), ("user" = String, Path, description = "a user id")),
    responses(
        (status = 200, description = "removed from the whitelist (if it was on it): the whitelist", body = Whitelist),
        (status = 403, description = "`not_owner`: only the engine's owner edits its whitelist", body = ErrorBody),
        (status = 404, description = ENGINE_NOT_FOUND, body = ErrorBody),
    ))]
pub async fn disallow_user(
    State(state): State<AppState>,
    owner: AuthUser,
    ip: ClientIp,
    Path((engine, user)): Path<(String, String)>,
) -> Result<Json<Whitelist>, ApiError> {
    require_owner(&state, &engine, &owner.id).await?;
    edit_whitelist(&state, &engine, &user, false, owner.id, ip).await
}

/// Wallet users are identified by their lowercase `0x` address, whatever case the caller typed.
pub trait AddressCase {
    fn to_lowercase_if_address(&self) -> String;
}

impl AddressCase for String {
    fn to_lowercase_if_address(&self) -> String {
        if self.len() == 42 && self.starts_with("0x") { self.to_ascii_lowercase() } else { self.clone() }
    }
}

/// The engine's owner (user token) or an operator (admin token with `scope`); the audit actor.
fn manager(
    engine: &str,
    user: Result<AuthUser, ApiError>,
    admin: Result<AuthAdmin, ApiError>,
    owner: Option<&str>,
    scope: &str,
) -> Result<String, ApiError> {
    if let Ok(admin) = admin {
        admin.require(scope)?;
        return Ok(admin.actor());
    }
    let user = user?;
    if owner == Some(user.id.as_str()) {
        Ok(user.id)
    } else {
        Err(ApiError::forbidden("not_owner", format!("only the owner of engine {engine:?} or an operator may do this")))
    }
}

async fn set_paused(
    state: AppState,
    engine: String,
    user: Result<AuthUser, ApiError>,
    admin: Result<AuthAdmin, ApiError>,
    ip: ClientIp,
    paused: bool,
) -> Result<Json<PauseState>, ApiError> {
    let actor = authorize_manager(&state, &engine, user, admin).await?;
    state.jobs.set_paused(&engine, paused).await?;
    let action = if paused { "engine.pause" } else { "engine.resume" };
    audit_change(&state, actor, action, engine.clone(), ip).await;
    Ok(Json(PauseState { engine, paused }))
}

/// Whether an engine's claims hand out jobs.
#[derive(Debug, Serialize, ToSchema)]
pub struct PauseState {
    engine: String,
    paused: bool,
}

/// `POST /engines/{id}/pause`: claims hand out nothing until resumed; enqueues are still accepted.
#[utoipa::path(post, path = "/engines/{id}/pause", tag = "engines", operation_id = "pause_engine",
    security(("user" = []), ("admin" = [])), params(("id" = String, Path, pattern = "^[a-z0-9][a-z0-9-]{0,62}$", description = "the engine id")),
    responses(
        (status = 200, description = "paused", body = PauseState),
        (status = 403, description = NOT_MANAGER, body = ErrorBody),
        (status = 404, description = ENGINE_NOT_FOUND, body = ErrorBody),
    ))]
pub async fn pause(
    State(state): State<AppState>,
    ip: ClientIp,
    user: Result<AuthUser, ApiError>,
    admin: Result<AuthAdmin, ApiError>,
    Path(engine): Path<String>,
) -> Result<Json<PauseState>, ApiError> {
    set_paused(state, engine, user, admin, ip, true).await
}

/// `POST /engines/{id}/resume`.
#[utoipa::path(post, path = "/engines/{id}/resume", tag = "engines", operation_id = "resume_engine",
    security(("user" = []), ("admin" = [])), params(("id" = String, Path, pattern = "^[a-z0-9][a-z0-9-]{0,62}$", description = "the engine id")),
    responses(
        (status = 200, description = "resumed", body = PauseState),
        (status = 403, description = NOT_MANAGER, body = ErrorBody),
        (status = 404, description = ENGINE_NOT_FOUND, body = ErrorBody),
    ))]
pub async fn resume(
    State(state): State<AppState>,
    ip: ClientIp,
    user: Result<AuthUser, ApiError>,
    admin: Result<AuthAdmin, ApiError>,
    Path(engine): Path<String>,
) -> Result<Json<PauseState>, ApiError> {
    set_paused(state, engine, user, admin, ip, false).await
}

/// The audit actor, if the caller is the engine's owner or an operator (admin scope `engines:write`).
async fn authorize_manager(
    state: &AppState,
    engine: &str,
    user: Result<AuthUser, ApiError>,
    admin: Result<AuthAdmin, ApiError>,
) -> Result<String, ApiError> {
    authorize(state, engine, user, admin, "engines:write").await
}

/// The audit actor, if the caller is the engine's owner or an operator whose admin token has `scope`.
async fn authorize(
    state: &AppState,
    engine: &str,
    user: Result<AuthUser, ApiError>,
    admin: Result<AuthAdmin, ApiError>,
    scope: &str,
) -> Result<String, ApiError> {
    let record = state
        .engines
        .engine(engine)
        .await?
        .ok_or_else(|| ApiError::not_found("engine_not_found", format!("no engine named {engine:?}")))?;
    manager(engine, user, admin, record.owner.as_deref(), scope)
}

/// `GET /engines/{id}/breakers`: the engine's open and half-open breakers with the last error of each, which
/// quotes a failing job (owner or operator with `engines:read`, whose read of users' job text is audited;
/// `/status` shows the breakers without it).
#[utoipa::path(get, path = "/engines/{id}/breakers", tag = "engines", operation_id = "engine_breakers",
    security(("user" = []), ("admin" = [])), params(("id" = String, Path, pattern = "^[a-z0-9][a-z0-9-]{0,62}$", description = "the engine id")),
    responses(
        (status = 200, description = "the breakers with their last errors", body = EngineBreakers),
        (status = 403, description = NOT_MANAGER, body = ErrorBody),
        (status = 404, description = ENGINE_NOT_FOUND, body = ErrorBody),
    ))]
pub async fn breakers(
    State(state): State<AppState>,
    ip: ClientIp,
    user: Result<AuthUser, ApiError>,
    admin: Result<AuthAdmin, ApiError>,
    Path(engine): Path<String>,
) -> Result<Json<EngineBreakers>, ApiError> {
    let by_operator = admin.is_ok();
    let actor = authorize(&state, &engine, user, admin, "engines:read").await?;
    if by_operator {
        audit_change(&state, actor, "admin.engine_breakers", engine.clone(), ip).await;
    }
    let breakers = state.jobs.breakers(&engine).await?;
    Ok(Json(EngineBreakers { engine, breakers: super::status::operator_breakers(&breakers) }))
}

/// An engine's breakers as its operators see them.
#[derive(Debug, Serialize, ToSchema)]
pub struct EngineBreakers {
    engine: String,
    breakers: Vec<super::status::OperatorBreaker>,
}

/// An engine's scheduling settings.
#[derive(Debug, Serialize, ToSchema)]
pub struct Scheduling {
    engine: String,
    paused: bool,
    /// The weight of users without their own: 1.
    default_weight: i64,
    /// Users whose weight is not the default, by user id.
    weights: BTreeMap<String, i64>,
    /// The limit of concurrency keys without their own; `null`: unlimited.
    default_key_limit: Option<i64>,
    key_limits: Vec<KeyLimit>,
}

/// A concurrency key with its own limit.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyLimit {
    key: String,
    limit: i64,
    /// Jobs with this key running now.
    running: i64,
}

/// An engine's scheduling settings, as every scheduling endpoint answers.
async fn scheduling_json(state: &AppState, engine: &str) -> Result<Json<Scheduling>, ApiError> {
    let settings = state.jobs.share_settings(engine).await?;
    let key_limits =
        settings.key_limits.into_iter().map(|(key, limit, running)| KeyLimit { key, limit, running }).collect();
    Ok(Json(Scheduling {
        engine: engine.to_string(),
        paused: state.jobs.is_paused(engine).await?,
        default_weight: 1,
        weights: settings.weights.into_iter().collect(),
        default_key_limit: settings.default_key_limit,
        key_limits,
    }))
}

/// `GET /engines/{id}/scheduling`: pause state, user weights and concurrency-key limits (owner or operator).
#[utoipa::path(get, path = "/engines/{id}/scheduling", tag = "engines", operation_id = "engine_scheduling",
    security(("user" = []), ("admin" = [])), params(("id" = String, Path, pattern = "^[a-z0-9][a-z0-9-]{0,62}$", description = "the engine id")),
    responses(
        (status = 200, description = "weights and concurrency limits", body = Scheduling),
        (status = 403, description = NOT_MANAGER, body = ErrorBody),
        (status = 404, description = ENGINE_NOT_FOUND, body = ErrorBody),
    ))]
pub async fn scheduling(
    State(state): State<AppState>,
    user: Result<AuthUser, ApiError>,
    admin: Result<AuthAdmin, ApiError>,
    Path(engine): Path<String>,
) -> Result<Json<Scheduling>, ApiError> {
    authorize_manager(&state, &engine, user, admin).await?;
    scheduling_json(&state, &engine).await
}

/// `PUT /engines/{id}/weights/{user}` body.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WeightBody {
    /// 1-1000.
    #[schema(minimum = 1, maximum = 1000)]
    weight: i64,
}

/// `PUT /engines/{id}/weights/{user}`: a user's share of the engine relative to others (1-1000, default 1).
#[utoipa::path(put, path = "/engines/{id}/weights/{user}", tag = "engines", operation_id = "engine_set_weight",
    security(("user" = []), ("admin" = [])),
    params(("id" = String, Path, pattern = "^[a-z0-9][a-z0-9-]{0,62}$", description = "the engine id"), ("user" = String, Path, pattern = "^[A-Za-z0-9._@-]{1,128}$", description = "a user id")),
    request_body = WeightBody,
    responses(
        (status = 200, description = "the engine's scheduling settings", body = Scheduling),
        (status = 403, description = NOT_MANAGER, body = ErrorBody),
        (status = 404, description = ENGINE_NOT_FOUND, body = ErrorBody),
        (status = 422, description = "`invalid_user`, `invalid_weight`", body = ErrorBody),
    ))]
pub async fn set_weight(
    State(state): State<AppState>,
    ip: ClientIp,
    user: Result<AuthUser, ApiError>,
    admin: Result<AuthAdmin, ApiError>,
    Path((engine, target)): Path<(String, String)>,
    JsonBody(body): JsonBody<WeightBody>,
) -> Result<Json<Scheduling>, ApiError> {
    let actor = authorize_manager(&state, &engine, user, admin).await?;
    let target = target.to_lowercase_if_address();
    check_user_id(&target)?;
    if !(1..=1000).contains(&body.weight) {
        return Err(ApiError::unprocessable("invalid_weight", "weight must be between 1 and 1000"));
    }
    state.jobs.set_weight(&engine, &target, body.weight).await?;
    audit_change(&state, actor, "engine.weight", format!("{engine}/{target}={}", body.weight), ip).await;
    scheduling_json(&state, &engine).await
}

/// `PUT /engines/{id}/concurrency/{key}` body.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyLimitBody {
    /// Jobs with the key that may run at once: 0 (none) to 1000000.
    #[schema(minimum = 0, maximum = 1_000_000)]
    limit: i64,
}

fn check_limit(limit: i64) -> Result<(), ApiError> {
    if (0..=1_000_000).contains(&limit) {
        Ok(())
    } else {
        Err(ApiError::unprocessable("invalid_limit", "a concurrency limit must be between 0 and 1000000"))
    }
}

/// Sets or removes one key's limit, audited.
async fn edit_key_limit(
    state: &AppState,
    engine: &str,
    key: &str,
    limit: Option<i64>,
    actor: String,
    ip: ClientIp,
) -> Result<Json<Scheduling>, ApiError> {
    crate::admission::enqueue::validate_concurrency_key(key)?;
    if let Some(limit) = limit {
        check_limit(limit)?;
    }
    state.jobs.set_key_limit(engine, key, limit).await?;
    let shown = limit.map_or("default".to_string(), |l| l.to_string());
    audit_change(state, actor, "engine.key_limit", format!("{engine}/{key}={shown}"), ip).await;
    scheduling_json(state, engine).await
}

/// `PUT /engines/{id}/concurrency/{key}`: at most `limit` jobs with this key run at once on the engine.
#[utoipa::path(put, path = "/engines/{id}/concurrency/{key}", tag = "engines", operation_id = "engine_set_key_limit",
    security(("user" = []), ("admin" = [])),
    params(("id" = String, Path, pattern = "^[a-z0-9][a-z0-9-]{0,62}$", description = "the engine id"), ("key" = String, Path, pattern = "^[!-~]{1,200}$", description = "a concurrency key")),
    request_body = KeyLimitBody,
    responses(
        (status = 200, description = "the engine's scheduling settings", body = Scheduling),
        (status = 403, description = NOT_MANAGER, body = ErrorBody),
        (status = 404, description = ENGINE_NOT_FOUND, body = ErrorBody),
        (status = 422, description = "`invalid_concurrency_key`, `invalid_limit`", body = ErrorBody),
    ))]
pub async fn set_key_limit(
    State(state): State<AppState>,
    ip: ClientIp,
    user: Result<AuthUser, ApiError>,
    admin: Result<AuthAdmin, ApiError>,
    Path((engine, key)): Path<(String, String)>,
    JsonBody(body): JsonBody<KeyLimitBody>,
) -> Result<Json<Scheduling>, ApiError> {
    let actor = authorize_manager(&state, &engine, user, admin).await?;
    edit_key_limit(&state, &engine, &key, Some(body.limit), actor, ip).await
}

/// `DELETE /engines/{id}/concurrency/{key}`: the key falls back to the engine's default limit.
#[utoipa::path(delete, path = "/engines/{id}/concurrency/{key}", tag = "engines", operation_id = "engine_remove_key_limit",
    security(("user" = []), ("admin" = [])),
    params(("id" = String, Path, pattern = "^[a-z0-9][a-z0-9-]{0,62}$", description = "the engine id"), ("key" = String, Path, pattern = "^[!-~]{1,200}$", description = "a concurrency key")),
    responses(
        (status = 200, description = "the engine's scheduling settings", body = Scheduling),
        (status = 403, description = NOT_MANAGER, body = ErrorBody),
        (status = 404, description = ENGINE_NOT_FOUND, body = ErrorBody),
        (status = 422, description = "`invalid_concurrency_key`", body = ErrorBody),
    ))]
pub async fn remove_key_limit(
    State(state): State<AppState>,
    ip: ClientIp,
    user: Result<AuthUser, ApiError>,
    admin: Result<AuthAdmin, ApiError>,
    Path((engine, key)): Path<(String, String)>,
) -> Result<Json<Scheduling>, ApiError> {
    let actor = authorize_manager(&state, &engine, user, admin).await?;
    edit_key_limit(&state, &engine, &key, None, actor, ip).await
}

/// `PUT /engines/{id}/concurrency` body: the limit of keys without their own (`null` = unlimited).
#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DefaultLimitBody {
    /// 0 to 1000000, or `null`: unlimited.
    #[schema(minimum = 0, maximum = 1_000_000)]
    default_limit: Option<i64>,
}

/// `PUT /engines/{id}/concurrency`: the default limit of concurrency keys.
#[utoipa::path(put, path = "/engines/{id}/concurrency", tag = "engines", operation_id = "engine_set_default_key_limit",
    security(("user" = []), ("admin" = [])),
    params(("id" = String, Path, pattern = "^[a-z0-9][a-z0-9-]{0,62}$", description = "the engine id")),
    request_body = DefaultLimitBody,
    responses(
        (status = 200, description = "the engine's scheduling settings", body = Scheduling),
        (status = 403, description = NOT_MANAGER, body = ErrorBody),
        (status = 404, description = ENGINE_NOT_FOUND, body = ErrorBody),
        (status = 422, description = "`invalid_limit`", body = ErrorBody),
    ))]
pub async fn set_default_key_limit(
    State(state): State<AppState>,
    ip: ClientIp,
    user: Result<AuthUser, ApiError>,
    admin: Result<AuthAdmin, ApiError>,
    Path(engine): Path<String>,
    JsonBody(body): JsonBody<DefaultLimitBody>,
) -> Result<Json<Scheduling>, ApiError> {
    let actor = authorize_manager(&state, &engine, user, admin).await?;
    if let Some(limit) = body.default_limit {
        check_limit(limit)?;
    }
    state.jobs.set_default_key_limit(&engine, body.default_limit).await?;
    let shown = body.default_limit.map_or("unlimited".to_string(), |l| l.to_string());
    audit_change(&state, actor, "engine.default_key_limit", format!("{engine}={shown}"), ip).await;
    scheduling_json(&state, &engine).await
}

//! The operator's API, authorised by short-lived admin tokens whose scopes are checked per call and audited.

use axum::Json;
use axum::extract::{Path, State};
use flowork_common::wire::ErrorBody;
use serde::Serialize;
use utoipa::ToSchema;

use super::engines::{Whitelist, edit_whitelist};
use super::status::DrainState;
use crate::audit::{AuditEntry, ChainBreak};
use crate::auth::extract::AuthAdmin;
use crate::http::client_ip::ClientIp;
use crate::http::error::ApiError;
use crate::state::AppState;

async fn audited(state: &AppState, admin: &AuthAdmin, ip: ClientIp, action: &str, target: &str) {
    state.audit(AuditEntry::new(admin.actor(), action, "ok").target(target).ip(Some(ip.0.to_string()))).await;
}

/// `GET /admin/engines` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct EngineList {
    engines: Vec<EngineInfo>,
}

/// A registered engine (never its token).
#[derive(Debug, Serialize, ToSchema)]
pub struct EngineInfo {
    id: String,
    /// The user who owns it; `null` for an engine added without `--owner`.
    owner: Option<String>,
    /// `false` once revoked.
    active: bool,
}

/// `GET /admin/engines` (scope `engines:read`).
#[utoipa::path(get, path = "/admin/engines", tag = "admin", operation_id = "admin_list_engines", security(("admin" = [])),
    responses((status = 200, description = "every engine", body = EngineList)))]
pub async fn list_engines(
    State(state): State<AppState>,
    admin: AuthAdmin,
    ip: ClientIp,
) -> Result<Json<EngineList>, ApiError> {
    admin.require("engines:read")?;
    let engines = state
        .control
        .list_engines()
        .await?
        .into_iter()
        .map(|e| EngineInfo { active: e.is_active(), id: e.id, owner: e.owner })
        .collect();
    audited(&state, &admin, ip, "admin.list_engines", "*").await;
    Ok(Json(EngineList { engines }))
}

/// `PUT /admin/engines/{id}/users/{user}` (scope `engines:write`).
#[utoipa::path(put, path = "/admin/engines/{id}/users/{user}", tag = "admin", operation_id = "admin_allow_user", security(("admin" = [])),
    params(("id" = String, Path, pattern = "^[a-z0-9][a-z0-9-]{0,62}$", description = "the engine id"), ("user" = String, Path, pattern = "^[A-Za-z0-9._@-]{1,128}$", description = "a user id")),
    responses(
        (status = 200, description = "allowed: the whitelist", body = Whitelist),
        (status = 404, description = "`engine_not_found`: no engine with this id", body = ErrorBody),
        (status = 422, description = "`invalid_user`: not a user id", body = ErrorBody),
    ))]
pub async fn allow_user(
    State(state): State<AppState>,
    admin: AuthAdmin,
    ip: ClientIp,
    Path((engine, user)): Path<(String, String)>,
) -> Result<Json<Whitelist>, ApiError> {
    admin.require("engines:write")?;
    edit_whitelist(&state, &engine, &user, true, admin.actor(), ip).await
}

/// `DELETE /admin/engines/{id}/users/{user}` (scope `engines:write`).
#[utoipa::path(delete, path = "/admin/engines/{id}/users/{user}", tag = "admin", operation_id = "admin_disallow_user", security(("admin" = [])),
    params(("id" = String, Path, pattern = "^[a-z0-9][a-z0-9-]{0,62}$", description = "the engine id"), ("user" = String, Path, description = "a user id")),
    responses(
        (status = 200, description = "removed from the whitelist (if it was on it): the whitelist", body = Whitelist),
        (status = 404, description = "`engine_not_found`: no engine with this id", body = ErrorBody),
    ))]
pub async fn disallow_user(
    State(state): State<AppState>,
    admin: AuthAdmin,
    ip: ClientIp,
    Path((engine, user)): Path<(String, String)>,
) -> Result<Json<Whitelist>, ApiError> {
    admin.require("engines:write")?;
    edit_whitelist(&state, &engine, &user, false, admin.actor(), ip).await
}

/// `GET /admin/audit/verify` (scope `audit:read`): checks the audit log (chain, signatures, head).
#[utoipa::path(get, path = "/admin/audit/verify", tag = "admin", operation_id = "admin_verify_audit", security(("admin" = [])), responses((status = 200, description = "the audit log checked", body = AuditVerdict)))]
pub async fn verify_audit(
    State(state): State<AppState>,
    admin: AuthAdmin,
    ip: ClientIp,
) -> Result<Json<AuditVerdict>, ApiError> {
    admin.require("audit:read")?;
    let report = state.control.verify_audit().await?;
    audited(&state, &admin, ip, "admin.audit_verify", "*").await;
    let first = report.problems.first().cloned();
    Ok(Json(AuditVerdict {
        intact: report.is_intact(),
        rows: report.rows,
        signed: report.signed,
        head: report.head,
        broken_at: first.as_ref().map(|p| p.id),
        reason: first.map(|p| p.reason),
        problems: report.problems,
    }))
}

/// What `GET /admin/audit/verify` found.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditVerdict {
    pub intact: bool,
    /// Rows checked.
    pub rows: u64,
    /// Of them, rows carrying a signature.
    pub signed: u64,
    /// The row checkpointed as the head of the log.
    pub head: Option<i64>,
    /// The row of the first problem.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broken_at: Option<i64>,
    /// The first problem.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Every problem, in row order.
    pub problems: Vec<ChainBreak>,
}

/// `POST /admin/drain` (scope `drain`): stop accepting new jobs; engines keep finishing queued work.
#[utoipa::path(post, path = "/admin/drain", tag = "admin", operation_id = "admin_start_drain", security(("admin" = [])),
    responses((status = 200, description = "draining", body = DrainState)))]
pub async fn start_drain(
    State(state): State<AppState>,
    admin: AuthAdmin,
    ip: ClientIp,
) -> Result<Json<DrainState>, ApiError> {
    admin.require("drain")?;
    let already = state.admission.drain.start();
    audited(&state, &admin, ip, "gateway.drain", if already { "already" } else { "started" }).await;
    super::status::drain(State(state)).await
}

/// `DELETE /admin/drain` (scope `drain`): accept jobs again.
#[utoipa::path(delete, path = "/admin/drain", tag = "admin", operation_id = "admin_stop_drain", security(("admin" = [])),
    responses(
        (status = 200, description = "accepting jobs again", body = DrainState),
        (status = 409, description = "`stopping`: the gateway is shutting down and cannot resume", body = ErrorBody),
    ))]
pub async fn stop_drain(
    State(state): State<AppState>,
    admin: AuthAdmin,
    ip: ClientIp,
) -> Result<Json<DrainState>, ApiError> {
    admin.require("drain")?;
    if state.admission.drain.is_stopping() {
        return Err(ApiError::conflict("stopping", "the gateway is shutting down and cannot resume"));
    }
    state.admission.drain.resume();
    audited(&state, &admin, ip, "gateway.resume", "*").await;
    super::status::drain(State(state)).await
}

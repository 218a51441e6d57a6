//! `GET /admin/audit` (scope `audit:read`): the audit log read page by page, oldest first, and the JSON shape of
//! its rows (also printed by `flowork-gateway audit show --json`).

use axum::Json;
use axum::extract::State;
use flowork_common::timefmt::format_ms;
use serde::{Deserialize, Serialize};

use super::extract::QueryParams;
use crate::audit::{AuditEntry, AuditRow, parse_since};
use crate::auth::extract::AuthAdmin;
use crate::http::client_ip::ClientIp;
use crate::http::error::ApiError;
use crate::state::AppState;
use crate::store::{AuditPage, AuditQuery};

/// Rows per page unless `limit` says otherwise.
pub const DEFAULT_PAGE: usize = 100;
/// The largest page.
pub const MAX_PAGE: usize = 1_000;

/// One audit row as read by operators.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditRecord {
    /// Consecutive row number.
    pub id: i64,
    /// When it was recorded (RFC 3339, milliseconds).
    #[schema(format = DateTime)]
    pub at: String,
    /// Who: a user id, `admin:<token id>`, `engine:<id>`, `cli:<OS user>`, `signal` or `anonymous`.
    pub actor: String,
    /// What, e.g. `auth.verify`, `engine.rotate_token`, `admin.token`.
    pub action: String,
    pub target: Option<String>,
    pub ip: Option<String>,
    /// `ok`, or the error code of a refusal.
    pub outcome: String,
    /// More about it (values longer than 1 KiB are cut and end in `…[truncated]`).
    pub detail: Option<String>,
}

impl From<AuditRow> for AuditRecord {
    fn from(row: AuditRow) -> Self {
        let AuditEntry { actor, action, target, ip, outcome, detail } = row.entry;
        Self { id: row.id, at: format_ms(row.at_ms), actor, action, target, ip, outcome, detail }
    }
}

/// A page of the audit log.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditLogPage {
    /// Oldest first.
    pub entries: Vec<AuditRecord>,
    /// Pass as `cursor` for the next page; `null` when this page reaches the end of the log.
    pub next_cursor: Option<String>,
}

impl From<AuditPage> for AuditLogPage {
    fn from(page: AuditPage) -> Self {
        Self {
            entries: page.rows.into_iter().map(AuditRecord::from).collect(),
            next_cursor: page.next_after_id.map(|id| id.to_string()),
        }
    }
}

/// `GET /admin/audit` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Only rows recorded from this time on: RFC 3339, or a duration back from now (`1h`, `7d`).
    since: Option<String>,
    /// Rows per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    #[param(pattern = "^[0-9]{1,18}$")]
    cursor: Option<String>,
}

/// `GET /admin/audit` (scope `audit:read`): the audit log, oldest first, with cursor paging.
#[utoipa::path(get, path = "/admin/audit", tag = "admin", operation_id = "admin_list_audit", security(("admin" = [])), params(AuditParams),
    responses(
        (status = 200, description = "a page of the audit log, oldest first", body = AuditLogPage),
        (status = 400, description = "`invalid_limit`, `invalid_cursor`, `invalid_since`", body = flowork_common::wire::ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    admin: AuthAdmin,
    ip: ClientIp,
    QueryParams(params): QueryParams<AuditParams>,
) -> Result<Json<AuditLogPage>, ApiError> {
    admin.require("audit:read")?;
    let limit = params.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request("invalid_limit", format!("limit must be between 1 and {MAX_PAGE}")));
    }
    let after_id = params
        .cursor
        .as_deref()
        .map(|c| c.parse::<i64>().ok().filter(|id| *id >= 0))
        .map(|id| id.ok_or_else(|| ApiError::bad_request("invalid_cursor", "cursor is not one this API returned")))
        .transpose()?;
    let since_ms = params
        .since
        .as_deref()
        .map(|since| parse_since(since, state.clock.now_ms()))
        .transpose()
        .map_err(|message| ApiError::bad_request("invalid_since", message))?;
    let page = state.control.list_audit(AuditQuery { since_ms, after_id, limit }).await?;
    let read =
        format!("cursor={} since={}", params.cursor.as_deref().unwrap_or("-"), params.since.as_deref().unwrap_or("-"));
    state.audit(AuditEntry::new(admin.actor(), "admin.audit_read", "ok").target(read).ip(Some(ip.0.to_string()))).await;
    Ok(Json(page.into()))
}

//! Self-service API keys for scripts: `POST /auth/keys`, `GET /auth/keys`, `DELETE /auth/keys/{id}`, each user's
//! own. Only a signed-in user (an access JWT) manages keys: a key cannot make, list or delete keys, so a leaked
//! key cannot widen or prolong itself.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use flowork_common::timefmt::format_ms;
use flowork_common::wire::ErrorBody;
use serde::{Deserialize, Serialize};

use super::extract::JsonBody;
use crate::audit::AuditEntry;
use crate::auth::api_key;
use crate::auth::extract::AuthUser;
use crate::auth::scope::parse_key_scopes;
use crate::http::client_ip::ClientIp;
use crate::http::error::ApiError;
use crate::state::AppState;
use crate::store::tokens::{ApiKey, NewKeyOutcome};

/// The most keys a user may have at once.
pub const MAX_KEYS_PER_USER: u64 = 20;
/// The longest lifetime a key may be given (`ttl`); a key without one does not expire.
pub const MAX_KEY_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// The longest key name.
const MAX_NAME_LEN: usize = 64;

/// `POST /auth/keys` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// What the key is for: 1-64 letters, digits, spaces and `.`, `_`, `-`, not only spaces.
    #[schema(pattern = "^[A-Za-z0-9 ._-]*[A-Za-z0-9._-][A-Za-z0-9 ._-]*$", min_length = 1, max_length = 64)]
    name: String,
    /// What the key may do (at least one scope).
    #[schema(value_type = Vec<KeyScope>, min_items = 1)]
    scopes: Vec<String>,
    /// How long the key lives (`90d`, `12h`; from 1 second to 365 days); absent: it does not expire.
    #[serde(default)]
    #[schema(example = "90d")]
    ttl: Option<String>,
}

/// A scope of an API key: `<resource>:read` for `GET` on the resource's routes, `<resource>:write` for the others
/// (`crate::auth::scope::KEY_SCOPES`).
#[derive(Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub enum KeyScope {
    #[serde(rename = "jobs:read")]
    JobsRead,
    #[serde(rename = "jobs:write")]
    JobsWrite,
    #[serde(rename = "schedules:read")]
    SchedulesRead,
    #[serde(rename = "schedules:write")]
    SchedulesWrite,
    #[serde(rename = "engines:read")]
    EnginesRead,
    #[serde(rename = "engines:write")]
    EnginesWrite,
}

/// An API key as listed (never the key itself).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiKeyInfo {
    #[schema(format = "uuid")]
    id: String,
    name: String,
    #[schema(value_type = Vec<KeyScope>)]
    scopes: Vec<String>,
    #[schema(format = DateTime)]
    created_at: String,
    /// `null`: it does not expire.
    #[schema(format = DateTime)]
    expires_at: Option<String>,
}

/// A key just made: its description and the key, shown only this once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    info: ApiKeyInfo,
    /// `fwk_...`: send it as `Authorization: Bearer <key>`. Shown only now; the gateway keeps only its hash.
    key: String,
}

/// `GET /auth/keys` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiKeyList {
    keys: Vec<ApiKeyInfo>,
}

/// `DELETE /auth/keys/{id}` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeletedApiKey {
    #[schema(format = "uuid")]
    id: String,
    /// Always `true`.
    deleted: bool,
}

impl From<&ApiKey> for ApiKeyInfo {
    fn from(key: &ApiKey) -> Self {
        Self {
            id: key.id.clone(),
            name: key.name.clone(),
            scopes: key.scopes.clone(),
            created_at: format_ms(key.created_at_ms),
            expires_at: key.expires_at_ms.map(format_ms),
        }
    }
}

/// Refuses a key used where only a signed-in user may act.
fn signed_in(user: &AuthUser) -> Result<(), ApiError> {
    match user.key {
        Some(_) => Err(ApiError::forbidden("key_not_allowed", "API keys are managed with a signed-in access token")),
        None => Ok(()),
    }
}

fn invalid(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::unprocessable(code, message)
}

fn validate_name(name: &str) -> Result<(), ApiError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, ' ' | '.' | '_' | '-');
    if name.trim().is_empty() || name.len() > MAX_NAME_LEN || !name.chars().all(allowed) {
        return Err(invalid(
            "invalid_name",
            format!("name: 1-{MAX_NAME_LEN} letters, digits, spaces and `.`, `_`, `-`, not only spaces"),
        ));
    }
    Ok(())
}

fn parse_ttl(ttl: Option<&str>) -> Result<Option<Duration>, ApiError> {
    let Some(text) = ttl else { return Ok(None) };
    let ttl = humantime::parse_duration(text)
        .map_err(|e| invalid("invalid_ttl", format!("ttl: {e} (write it like `90d` or `12h`)")))?;
    if ttl < Duration::from_secs(1) || ttl > MAX_KEY_TTL {
        return Err(invalid("invalid_ttl", "ttl: from 1 second to 365 days"));
    }
    Ok(Some(ttl))
}

/// `POST /auth/keys`: 201 with the new key (shown only now); 422 names the field that is wrong; 409 when the
/// user already has the most keys allowed.
#[utoipa::path(post, path = "/auth/keys", tag = "auth", operation_id = "create_api_key", request_body = CreateKeyRequest,
    responses(
        (status = 201, description = "the key, shown only now", body = CreatedApiKey),
        (status = 409, description = "`too_many_keys`: the caller has 20 keys, the most allowed", body = ErrorBody),
        (status = 422, description = "`invalid_name`, `invalid_scopes`, `invalid_ttl`", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    ip: ClientIp,
    JsonBody(request): JsonBody<CreateKeyRequest>,
) -> Result<(StatusCode, Json<CreatedApiKey>), ApiError> {
    signed_in(&user)?;
    validate_name(&request.name)?;
    let scopes = parse_key_scopes(&request.scopes).map_err(|e| invalid("invalid_scopes", format!("scopes: {e}")))?;
    let ttl = parse_ttl(request.ttl.as_deref())?;
    let now = state.clock.now_ms();
    let secret = api_key::generate();
    let key = ApiKey {
        id: uuid::Uuid::new_v4().to_string(),
        user: user.id.clone(),
        name: request.name,
        scopes,
        created_at_ms: now,
        expires_at_ms: ttl.map(|ttl| now.saturating_add(ttl.as_millis() as i64)),
    };
    match state.tokens.create_api_key(key.clone(), &api_key::hash(&secret), MAX_KEYS_PER_USER).await? {
        NewKeyOutcome::Created => {}
        NewKeyOutcome::TooMany(count) => {
            return Err(ApiError::conflict(
                "too_many_keys",
                format!("you have {count} API keys, the most allowed; delete one first"),
            ));
        }
    }
    let entry = AuditEntry::new(&user.id, "auth.key_create", "ok").target(&key.id).ip(Some(ip.0.to_string()));
    state.audit(entry.detail(key.scopes.join(" "))).await;
    Ok((StatusCode::CREATED, Json(CreatedApiKey { info: ApiKeyInfo::from(&key), key: secret })))
}

/// `GET /auth/keys`: the caller's keys, newest first, without the keys themselves.
#[utoipa::path(get, path = "/auth/keys", tag = "auth", operation_id = "list_api_keys",
    responses((status = 200, description = "the caller's API keys, newest first", body = ApiKeyList)))]
pub async fn list(State(state): State<AppState>, user: AuthUser) -> Result<Json<ApiKeyList>, ApiError> {
    signed_in(&user)?;
    let keys = state.tokens.list_api_keys(&user.id).await?;
    Ok(Json(ApiKeyList { keys: keys.iter().map(ApiKeyInfo::from).collect() }))
}

/// `DELETE /auth/keys/{id}`: the key stops working at once; 404 for an unknown id or another user's key.
#[utoipa::path(delete, path = "/auth/keys/{id}", tag = "auth", operation_id = "delete_api_key",
    params(("id" = String, Path, format = "uuid", description = "the key id")),
    responses(
        (status = 200, description = "deleted", body = DeletedApiKey),
        (status = 404, description = "`key_not_found`: no such key, or another user's", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    user: AuthUser,
    ip: ClientIp,
    Path(id): Path<String>,
) -> Result<Json<DeletedApiKey>, ApiError> {
    signed_in(&user)?;
    let not_found = || ApiError::not_found("key_not_found", format!("no API key with id {id:?}"));
    uuid::Uuid::parse_str(&id).map_err(|_| not_found())?;
    if !state.tokens.delete_api_key(&user.id, &id).await? {
        return Err(not_found());
    }
    let entry = AuditEntry::new(&user.id, "auth.key_delete", "ok").target(&id).ip(Some(ip.0.to_string()));
    state.audit(entry).await;
    Ok(Json(DeletedApiKey { id, deleted: true }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_lifetimes_are_checked() {
        assert!(validate_name("nightly report").is_ok());
        for bad in ["", "   ", "a/b", "ключ", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_ttl(None).unwrap(), None);
        assert_eq!(parse_ttl(Some("90d")).unwrap(), Some(Duration::from_secs(90 * 86_400)));
        for bad in ["soon", "0s", "400d"] {
            assert!(parse_ttl(Some(bad)).is_err(), "{bad}");
        }
    }
}

//! axum extractors that authenticate a request: `AuthUser` (access JWT) and `AuthEngine` (engine token).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::jwt::ADMIN_AUDIENCE;
use super::scope::key_scope_for;
use super::{AuthError, api_key, engine_token};
use crate::http::error::ApiError;
use crate::http::request_log::RequestLog;
use crate::state::AppState;

/// The user making the request: signed in (an access JWT, which may do everything the user may), or by one of
/// their API keys (which may do only what its scopes name; checked here, by route).
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: String,
    /// The id of the API key used, if the request came with one.
    pub key: Option<String>,
}

/// The bearer of an admin token, with its capabilities.
#[derive(Debug, Clone)]
pub struct AuthAdmin {
    /// The token's id, recorded as the actor in the audit log.
    pub jti: String,
    pub scopes: Vec<String>,
}

impl AuthAdmin {
    /// Refuses with 403 `missing_scope` unless the token carries `scope`.
    pub fn require(&self, scope: &str) -> Result<(), ApiError> {
        if self.scopes.iter().any(|s| s == scope) {
            Ok(())
        } else {
            Err(ApiError::forbidden("missing_scope", format!("this admin token lacks the {scope:?} scope")))
        }
    }

    /// The actor name of this admin in the audit log.
    pub fn actor(&self) -> String {
        format!("admin:{}", self.jti)
    }
}

/// The engine making an internal call; its token opens only its own shard.
#[derive(Debug, Clone)]
pub struct AuthEngine {
    pub id: String,
}

/// The bearer token of the `Authorization` header.
fn bearer(parts: &Parts) -> Result<&str, AuthError> {
    let header = parts.headers.get(axum::http::header::AUTHORIZATION).ok_or(AuthError::MissingToken)?;
    let value = header.to_str().map_err(|_| AuthError::MalformedAuthorization)?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(AuthError::MalformedAuthorization)
}

impl FromRequestParts<AppState> for AuthAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let wrapped = bearer(parts)?;
        let token = flowork_common::secret::unwrap(wrapped, flowork_common::secret::ADMIN_PREFIX).ok_or_else(|| {
            AuthError::InvalidToken("an admin token is `fwa_<token>.<checksum>`, and this one is not".into())
        })?;
        let claims = state.keys.verify_for(token, ADMIN_AUDIENCE)?;
        Ok(Self { jti: claims.jti, scopes: claims.scope.split(' ').map(str::to_string).collect() })
    }
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)?;
        let (user, key) = if api_key::is_api_key(token) {
            let key = api_key::authenticate(state, token).await?;
            let Some(needed) = key_scope_for(&parts.method, parts.uri.path()) else {
                return Err(ApiError::forbidden(
                    "key_not_allowed",
                    "an API key cannot be used here; use a signed-in access token",
                ));
            };
            if !key.scopes.contains(&needed) {
                return Err(ApiError::forbidden("missing_scope", format!("this API key lacks the {needed:?} scope")));
            }
            (key.user, Some(key.id))
        } else {
            (state.keys.verify(token)?.sub, None)
        };
        if flowork_common::ids::validate_user_id(&user).is_err() {
            return Err(AuthError::InvalidToken("the token names an invalid user".into()).into());
        }
        if let Some(log) = parts.extensions.get::<RequestLog>() {
            log.user(&user);
        }
        if let Some(limit) = &state.rate_limits.per_user {
            limit.check(&user)?;
        }
        Ok(Self { id: user, key })
    }
}

impl FromRequestParts<AppState> for AuthEngine {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get("x-engine-token")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::MissingEngineToken)?;
        if !engine_token::plausible(token) {
            return Err(AuthError::InvalidEngineToken.into());
        }
        // Looking up by hash compares hashes, not the secret, so timing reveals nothing about the token.
        let engine = state
            .engines
            .engine_for_token_hash(&engine_token::hash(token))
            .await
            .map_err(AuthError::Store)?
            .ok_or(AuthError::InvalidEngineToken)?;
        if let Some(log) = parts.extensions.get::<RequestLog>() {
            log.engine(&engine.id);
        }
        Ok(Self { id: engine.id })
    }
}

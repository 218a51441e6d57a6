//! The one place where every failure becomes an HTTP status and a `{"error", "message"}` body.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flowork_common::wire::ErrorBody;
use thiserror::Error;

use crate::auth::AuthError;
use crate::store::StoreError;

/// A request that could not be served, by what the client should do about it.
#[derive(Debug, Error)]
pub enum ApiError {
    /// 400: the request is malformed.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// 401 (or 503 when the store behind authentication fails).
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// 403: authenticated, but not allowed to do this.
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    #[error("{message}")]
    MethodNotAllowed { message: String },
    #[error("{message}")]
    Conflict { code: &'static str, message: String, retry_after_s: Option<u64> },
    #[error("{message}")]
    PayloadTooLarge { message: String },
    #[error("{message}")]
    UnsupportedMediaType { message: String },
    /// 422: well-formed, but not acceptable.
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    /// 429: a queue cap is reached; come back after `retry_after_s`.
    #[error("{message}")]
    Overloaded { code: &'static str, message: String, retry_after_s: u64 },
    /// 503: not accepting this now (draining); come back after `retry_after_s`.
    #[error("{message}")]
    Unavailable { code: &'static str, message: String, retry_after_s: u64 },
    /// 429: a rate limit bucket is empty.
    #[error("too many requests ({policy} limit); retry after {retry_after_s} s")]
    RateLimited { policy: &'static str, limit: u32, window_s: u64, retry_after_s: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// 500: a bug (a panic caught by the panic layer).
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest { code, message: message.into() }
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::Forbidden { code, message: message.into() }
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::NotFound { code, message: message.into() }
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::Conflict { code, message: message.into(), retry_after_s: None }
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::Unprocessable { code, message: message.into() }
    }

    /// Status, machine code and Retry-After seconds of this error.
    fn parts(&self) -> (StatusCode, &'static str, Option<u64>) {
        match self {
            Self::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code, None),
            Self::Auth(error) => match error {
                AuthError::MissingToken => (StatusCode::UNAUTHORIZED, "missing_token", None),
                AuthError::MalformedAuthorization => (StatusCode::UNAUTHORIZED, "malformed_authorization", None),
                AuthError::ExpiredToken => (StatusCode::UNAUTHORIZED, "token_expired", None),
                AuthError::InvalidToken(_) => (StatusCode::UNAUTHORIZED, "invalid_token", None),
                AuthError::MissingEngineToken => (StatusCode::UNAUTHORIZED, "missing_engine_token", None),
                AuthError::InvalidEngineToken => (StatusCode::UNAUTHORIZED, "invalid_engine_token", None),
                AuthError::Refused { code, .. } => (StatusCode::UNAUTHORIZED, code, None),
                AuthError::Keys(_) | AuthError::Store(_) => {
                    (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", Some(1))
                }
            },
            Self::Forbidden { code, .. } => (StatusCode::FORBIDDEN, code, None),
            Self::NotFound { code, .. } => (StatusCode::NOT_FOUND, code, None),
            Self::MethodNotAllowed { .. } => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", None),
            Self::Conflict { code, retry_after_s, .. } => (StatusCode::CONFLICT, code, *retry_after_s),
            Self::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", None),
            Self::UnsupportedMediaType { .. } => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", None),
            Self::Unprocessable { code, .. } => (StatusCode::UNPROCESSABLE_ENTITY, code, None),
            Self::Overloaded { code, retry_after_s, .. } => (StatusCode::TOO_MANY_REQUESTS, code, Some(*retry_after_s)),
            Self::Unavailable { code, retry_after_s, .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, code, Some(*retry_after_s))
            }
            Self::RateLimited { retry_after_s, .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "rate_limited", Some(*retry_after_s))
            }
            Self::Store(error) => match error {
                StoreError::EngineNotFound(_) => (StatusCode::NOT_FOUND, "engine_not_found", None),
                StoreError::JobNotFound(_) => (StatusCode::NOT_FOUND, "job_not_found", None),
                StoreError::LeaseLost(_) => (StatusCode::CONFLICT, "lease_lost", None),
                StoreError::EngineExists(_) => (StatusCode::CONFLICT, "engine_exists", None),
                StoreError::Quarantined { .. } => (StatusCode::SERVICE_UNAVAILABLE, "shard_quarantined", None),
                StoreError::NewerSchema { .. } => (StatusCode::SERVICE_UNAVAILABLE, "schema_too_new", None),
                other => match other.storage_condition() {
                    Some((code, _)) => (StatusCode::SERVICE_UNAVAILABLE, code, Some(5)),
                    None => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", Some(1)),
                },
            },
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", None),
        }
    }
}

impl ApiError {
    /// The status and body this error answers with (for per-item results of a batch).
    /// The seconds a `Retry-After` header says, for the refusals that have one.
    pub fn retry_after_s(&self) -> Option<u64> {
        self.parts().2
    }

    pub fn status_and_body(&self) -> (StatusCode, ErrorBody) {
        let (status, code, _) = self.parts();
        let message = match self {
            Self::Store(store) if store.storage_condition().is_some() => {
                store.storage_condition().map(|(_, message)| message).unwrap_or_default()
            }
            _ if status.is_server_error() => "the job store is temporarily unavailable".into(),
            _ => self.to_string(),
        };
        (status, ErrorBody { error: code.to_string(), message })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, retry_after) = self.parts();
        let message = if let Self::Unavailable { message, .. } = &self {
            message.clone()
        } else if status.is_server_error() {
            // Internal detail goes to the log, not to the client.
            tracing::error!(error = %self, code, "request failed");
            match (status, &self) {
                (StatusCode::SERVICE_UNAVAILABLE, Self::Store(store)) if store.storage_condition().is_some() => {
                    store.storage_condition().map(|(_, message)| message).unwrap_or_default()
                }
                (StatusCode::SERVICE_UNAVAILABLE, _) => {
                    "the job store is temporarily unavailable; retry shortly".to_string()
                }
                _ => "internal error; the gateway log has the details".to_string(),
            }
        } else {
            self.to_string()
        };
        let body = ErrorBody { error: code.to_string(), message };
        let mut response = (status, Json(body.clone())).into_response();
        // The request log and metrics read the code from here.
        response.extensions_mut().insert(body);
        if let Self::RateLimited { policy, limit, window_s, retry_after_s } = &self {
            for (name, value) in crate::http::rate_limit::headers(policy, *limit, *window_s, *retry_after_s) {
                response.headers_mut().insert(name, value);
            }
        }
        if let Some(seconds) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let message = crate::api::input_error::explain(&rejection, "body");
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge { message: "the request body is too large".into() },
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::UnsupportedMediaType {
                message: "send the body as JSON with `Content-Type: application/json`".into(),
            },
            StatusCode::UNPROCESSABLE_ENTITY => Self::unprocessable("invalid_body", message),
            _ if matches!(rejection, JsonRejection::BytesRejection(_)) => {
                Self::bad_request("malformed_json", "the request body could not be read")
            }
            _ => Self::bad_request("malformed_json", message),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::bad_request("invalid_query", crate::api::input_error::explain(&rejection, "query string"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_faults_are_503s_that_say_what_is_wrong_without_detail() {
        let detail = || "SQLite: disk I/O error at /data/shards/e1.sqlite3".to_string();
        for (error, expected) in [
            (StoreError::StorageFull(detail()), "storage_full"),
            (StoreError::ReadOnly(detail()), "storage_read_only"),
            (StoreError::StorageIo(detail()), "storage_io_error"),
            (StoreError::Unavailable(detail()), "store_unavailable"),
            (StoreError::Database(detail()), "store_unavailable"),
        ] {
            let (status, body) = ApiError::Store(error).status_and_body();
            assert_eq!((status, body.error.as_str()), (StatusCode::SERVICE_UNAVAILABLE, expected));
            assert!(!body.message.contains("SQLite") && !body.message.contains("/data"), "{}", body.message);
        }
        let quarantined =
            ApiError::Store(StoreError::Quarantined { engine: "e1".into(), moved_to: "/data/quarantine/x".into() });
        let (status, body) = quarantined.status_and_body();
        assert_eq!((status, body.error.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "shard_quarantined"));
        assert!(!body.message.contains("/data"), "{}", body.message);
    }
}

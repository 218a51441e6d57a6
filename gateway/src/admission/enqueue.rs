//! Turning a `POST /jobs` request into a `NewJob`: validation, defaults and the idempotency fingerprint.
//!
//! Pure functions over plain data, so every rule here is unit-tested without HTTP or SQLite.

use flowork_common::ids::{validate_engine_id, validate_kind};
use flowork_common::timefmt::parse_ms;
use flowork_common::wire::EnqueueRequest;
use sha2::{Digest, Sha256};

use crate::http::error::ApiError;
use crate::store::NewJob;

/// Limits and defaults applied to new jobs.
#[derive(Debug, Clone)]
pub struct JobLimits {
    pub max_payload_bytes: usize,
    pub default_max_attempts: u32,
    pub max_attempts_limit: u32,
    pub default_timeout_ms: u64,
    pub max_timeout_ms: u64,
    /// Largest result an engine may report.
    pub max_result_bytes: usize,
}

impl Default for JobLimits {
    fn default() -> Self {
        Self {
            max_payload_bytes: 256 * 1024,
            default_max_attempts: 5,
            max_attempts_limit: 100,
            default_timeout_ms: 30_000,
            max_timeout_ms: 24 * 3_600_000,
            max_result_bytes: 1024 * 1024,
        }
    }
}

/// Checks an `Idempotency-Key` header value: 1-255 visible ASCII characters.
pub fn validate_idempotency_key(value: Option<&str>) -> Result<String, ApiError> {
    let key = value.ok_or_else(|| {
        ApiError::bad_request(
            "missing_idempotency_key",
            "POST /jobs needs an Idempotency-Key header (for example a UUID) so a retry cannot create a second job",
        )
    })?;
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(ApiError::bad_request(
            "invalid_idempotency_key",
            "the Idempotency-Key must be 1-255 visible ASCII characters without spaces",
        ));
    }
    Ok(key.to_string())
}

/// Checks a W3C `traceparent` header (`00-<32 hex>-<16 hex>-<2 hex>`); anything else is ignored, as the
/// Trace Context spec asks.
pub fn parse_traceparent(value: Option<&str>) -> Option<String> {
    let value = value?.trim();
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let ok = parts.len() == 4
        && hex(parts[0], 2)
        && parts[0] != "ff"
        && hex(parts[1], 32)
        && parts[1] != "0".repeat(32)
        && hex(parts[2], 16)
        && parts[2] != "0".repeat(16)
        && hex(parts[3], 2);
    ok.then(|| value.to_string())
}

/// The fingerprint of a request: equal for the same engine, kind, payload and options, whatever the key order
/// or whitespace of the JSON the client sent.
pub fn fingerprint(request: &EnqueueRequest) -> String {
    // serde_json's map is ordered by key, so re-serialising gives a canonical form.
    let canonical = serde_json::to_string(request).unwrap_or_default();
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

/// Validates a request and applies defaults. `id` and `now_ms` come from the caller.
pub fn build_new_job(
    request: &EnqueueRequest,
    user: &str,
    idempotency_key: String,
    traceparent: Option<String>,
    id: String,
    now_ms: i64,
    limits: &JobLimits,
) -> Result<NewJob, ApiError> {
    validate_engine_id(&request.engine).map_err(|e| ApiError::unprocessable("invalid_engine", e.to_string()))?;
    validate_kind(&request.kind).map_err(|e| ApiError::unprocessable("invalid_kind", e.to_string()))?;
    let payload = request.payload.as_ref().unwrap_or(&serde_json::Value::Null);
    let payload =
        serde_json::to_string(payload).map_err(|e| ApiError::unprocessable("invalid_payload", e.to_string()))?;
    if payload.len() > limits.max_payload_bytes {
        return Err(ApiError::PayloadTooLarge {
            message: format!("the payload is {} bytes; the limit is {} bytes", payload.len(), limits.max_payload_bytes),
        });
    }
    let run_at_ms = match &request.run_at {
        None => now_ms,
        Some(text) => parse_ms(text).ok_or_else(|| {
            ApiError::unprocessable("invalid_run_at", format!("run_at {text:?} is not an RFC 3339 timestamp"))
        })?,
    };
    let max_attempts = request.max_attempts.unwrap_or(limits.default_max_attempts);
    if !(1..=limits.max_attempts_limit).contains(&max_attempts) {
        return Err(ApiError::unprocessable(
            "invalid_max_attempts",
            format!("max_attempts must be between 1 and {}", limits.max_attempts_limit),
        ));
    }
    let timeout_ms = request.timeout_ms.unwrap_or(limits.default_timeout_ms);
    if !(1..=limits.max_timeout_ms).contains(&timeout_ms) {
        return Err(ApiError::unprocessable(
            "invalid_timeout",
            format!("timeout_ms must be between 1 and {}", limits.max_timeout_ms),
        ));
    }
    if let Some(key) = &request.concurrency_key {
        validate_concurrency_key(key)?;
    }
    Ok(NewJob {
        id,
        engine: request.engine.clone(),
        user: user.to_string(),
        kind: request.kind.clone(),
        payload,
        priority: request.priority.unwrap_or(0),
        run_at_ms,
        max_attempts,
        timeout_ms,
        idempotency_key,
        fingerprint: fingerprint(request),
        traceparent,
        concurrency_key: request.concurrency_key.clone(),
    })
}

/// Checks a concurrency key: 1-200 visible ASCII characters (say `repo:acme/api` or a customer id).
pub fn validate_concurrency_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.len() > 200 || !key.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(ApiError::unprocessable(
            "invalid_concurrency_key",
            "concurrency_key must be 1-200 visible ASCII characters without spaces",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: &str) -> EnqueueRequest {
        serde_json::from_str(json).unwrap()
    }

    fn build(json: &str) -> Result<NewJob, ApiError> {
        build_new_job(&request(json), "alice", "k".into(), None, "id".into(), 1_000, &JobLimits::default())
    }

    #[test]
    fn defaults_apply() {
        let job = build(r#"{"engine":"local","kind":"echo"}"#).unwrap();
        assert_eq!((job.max_attempts, job.timeout_ms, job.priority, job.run_at_ms), (5, 30_000, 0, 1_000));
        assert_eq!(job.payload, "null");
    }

    #[test]
    fn fingerprint_ignores_key_order_and_whitespace_but_not_values() {
        let a = request(r#"{"engine":"e","kind":"echo","payload":{"a":1,"b":[1,2]}}"#);
        let b = request(r#"{ "kind":"echo", "payload":{"b":[1, 2],"a":1}, "engine":"e" }"#);
        let c = request(r#"{"engine":"e","kind":"echo","payload":{"a":2,"b":[1,2]}}"#);
        let d = request(r#"{"engine":"e","kind":"echo","payload":{"a":1,"b":[1,2]},"priority":1}"#);
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&c));
        assert_ne!(fingerprint(&a), fingerprint(&d));
    }

    #[test]
    fn bad_fields_are_refused_with_their_own_codes() {
        let code = |json: &str| match build(json) {
            Err(ApiError::Unprocessable { code, .. }) => code,
            Err(ApiError::PayloadTooLarge { .. }) => "payload_too_large",
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert_eq!(code(r#"{"engine":"Bad Engine","kind":"echo"}"#), "invalid_engine");
        assert_eq!(code(r#"{"engine":"e","kind":""}"#), "invalid_kind");
        assert_eq!(code(r#"{"engine":"e","kind":"echo","run_at":"soon"}"#), "invalid_run_at");
        assert_eq!(code(r#"{"engine":"e","kind":"echo","max_attempts":0}"#), "invalid_max_attempts");
        assert_eq!(code(r#"{"engine":"e","kind":"echo","timeout_ms":0}"#), "invalid_timeout");
        let big = format!(r#"{{"engine":"e","kind":"echo","payload":"{}"}}"#, "x".repeat(300 * 1024));
        assert_eq!(code(&big), "payload_too_large");
    }

    #[test]
    fn idempotency_keys_and_traceparents() {
        assert!(validate_idempotency_key(None).is_err());
        assert!(validate_idempotency_key(Some("")).is_err());
        assert!(validate_idempotency_key(Some("has space")).is_err());
        assert!(validate_idempotency_key(Some(&"k".repeat(256))).is_err());
        assert_eq!(validate_idempotency_key(Some("order-42")).unwrap(), "order-42");
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(parse_traceparent(Some(good)).as_deref(), Some(good));
        assert_eq!(parse_traceparent(Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01")), None);
        assert_eq!(parse_traceparent(Some("garbage")), None);
    }
}

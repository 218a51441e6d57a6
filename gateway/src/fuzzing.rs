//! Fuzz entry points: what the gateway does with untrusted bytes before touching the store — the job request
//! (body, `Idempotency-Key`, `traceparent`), the engine protocol requests, the sign-in message — each checked
//! against what must hold for any input. Run by the cargo-fuzz targets in `fuzz/` (nightly) and over the kept
//! corpus by `gateway/tests/fuzz_corpus.rs` (stable). None of them may panic.

use flowork_common::siwe::SiweMessage;
use flowork_common::wire::{ClaimRequest, EnqueueRequest, FinishBatchRequest, FinishRequest, HeartbeatRequest};

use crate::admission::enqueue::{JobLimits, build_new_job, parse_traceparent, validate_idempotency_key};
use crate::api::internal::{check_claim, check_heartbeat, to_finish};
use crate::store::Finish;

/// One fuzz entry point.
pub type Target = fn(&[u8]);

/// The targets, by name (the names of `fuzz/fuzz_targets/*.rs` and of the corpus folders).
pub const TARGETS: &[(&str, Target)] = &[
    ("job_body", job_body),
    ("job_headers", job_headers),
    ("engine_claim", engine_claim),
    ("engine_heartbeat", engine_heartbeat),
    ("engine_finish", engine_finish),
    ("engine_finish_batch", engine_finish_batch),
    ("siwe_message", siwe_message),
];

/// A `POST /jobs` body: decoded as the handler does, then validated; an accepted job keeps its limits.
pub fn job_body(data: &[u8]) {
    let Ok(request) = serde_json::from_slice::<EnqueueRequest>(data) else { return };
    let limits = JobLimits::default();
    let built = build_new_job(&request, "fuzz-user", "key".into(), None, "id".into(), 1_800_000_000_000, &limits);
    if let Ok(job) = built {
        assert!(job.payload.len() <= limits.max_payload_bytes);
        assert!(serde_json::from_str::<serde_json::Value>(&job.payload).is_ok(), "the stored payload is JSON");
        assert!((1..=limits.max_attempts_limit).contains(&job.max_attempts));
        assert!((1..=limits.max_timeout_ms).contains(&job.timeout_ms));
        assert_eq!(job.fingerprint.len(), 64);
        assert!(job.fingerprint.bytes().all(|b| b.is_ascii_hexdigit()));
        // The same request gives the same fingerprint (idempotency depends on it).
        let again = serde_json::from_slice::<EnqueueRequest>(data).map(|r| crate::admission::enqueue::fingerprint(&r));
        assert_eq!(again.ok().as_deref(), Some(job.fingerprint.as_str()));
    }
}

/// The two header values of `POST /jobs`, split at the first newline: `Idempotency-Key`, then `traceparent`.
pub fn job_headers(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (key, traceparent) = text.split_once('\n').unwrap_or((&text, ""));
    if let Ok(accepted) = validate_idempotency_key(Some(key)) {
        assert!((1..=255).contains(&accepted.len()));
        assert!(accepted.bytes().all(|b| (0x21..=0x7e).contains(&b)));
    }
    if let Some(kept) = parse_traceparent(Some(traceparent)) {
        assert_eq!(kept.len(), 55, "version-trace-parent-flags");
        assert_eq!(parse_traceparent(Some(&kept)).as_deref(), Some(kept.as_str()), "a kept value parses again");
    }
}

/// `POST /internal/claim`.
pub fn engine_claim(data: &[u8]) {
    let Ok(request) = serde_json::from_slice::<ClaimRequest>(data) else { return };
    if let Ok(worker) = check_claim(&request) {
        assert!(worker.chars().count() <= 200);
        assert!(request.max >= 1);
    }
}

/// `POST /internal/jobs/{id}/heartbeat`.
pub fn engine_heartbeat(data: &[u8]) {
    let Ok(request) = serde_json::from_slice::<HeartbeatRequest>(data) else { return };
    if let Ok(Some(progress)) = check_heartbeat(&request) {
        let stored: serde_json::Value = serde_json::from_str(&progress).expect("progress is stored as JSON");
        let percent = stored["percent"].as_f64().unwrap_or(-1.0);
        assert!((0.0..=100.0).contains(&percent));
    }
}

/// `POST /internal/jobs/{id}/finish`.
pub fn engine_finish(data: &[u8]) {
    let Ok(request) = serde_json::from_slice::<FinishRequest>(data) else { return };
    check_finish(request);
}

/// `POST /internal/finish`.
pub fn engine_finish_batch(data: &[u8]) {
    let Ok(request) = serde_json::from_slice::<FinishBatchRequest>(data) else { return };
    for item in request.finishes {
        check_finish(item.report);
    }
}

fn check_finish(request: FinishRequest) {
    let limits = JobLimits::default();
    match to_finish(&limits, request) {
        Ok(Finish::Succeeded { result: Some(result) }) => {
            assert!(result.len() <= limits.max_result_bytes);
            assert!(serde_json::from_str::<serde_json::Value>(&result).is_ok(), "a stored result is JSON");
        }
        Ok(Finish::Failed { error, .. }) => assert!(!error.is_empty()),
        _ => {}
    }
}

/// The EIP-4361 message of `POST /auth/verify`: a parsed message parses again to the same fields.
pub fn siwe_message(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(message) = SiweMessage::parse(text) {
        let again = SiweMessage::parse(text).expect("parsing is deterministic");
        assert_eq!((message.domain, message.nonce, message.chain_id), (again.domain, again.nonce, again.chain_id));
        assert_eq!(message.address_bytes, again.address_bytes);
    }
}

//! What the store tests share: a job to enqueue on engine `e1`, which each test adjusts with `..`.

use flowork_gateway::store::NewJob;

/// A job of `user` with idempotency key `key` and JSON `payload`, runnable from `now`: kind `echo`, three
/// attempts, a 1 s timeout, its fingerprint derived from the payload.
pub fn new_job(user: &str, key: &str, payload: &str, now: i64) -> NewJob {
    NewJob {
        id: uuid::Uuid::now_v7().to_string(),
        engine: "e1".into(),
        user: user.into(),
        kind: "echo".into(),
        payload: payload.into(),
        priority: 0,
        run_at_ms: now,
        max_attempts: 3,
        timeout_ms: 1_000,
        idempotency_key: key.into(),
        fingerprint: format!("fp-{payload}"),
        traceparent: None,
        concurrency_key: None,
    }
}

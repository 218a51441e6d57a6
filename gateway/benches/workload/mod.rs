//! The sample job of the store's benchmarks and of `examples/store_cost.rs`, so both measure the same row.

use flowork_gateway::store::NewJob;

/// The benchmarks' clock reading (Unix ms).
pub const NOW: i64 = 1_800_000_000_000;
/// A small, typical payload.
pub const PAYLOAD: &str = r#"{"order":42,"customer":"c-1001","items":[1,2,3]}"#;

/// A runnable job of `user` on `engine` with idempotency key `key-<n>`.
pub fn sample_job(engine: &str, user: &str, n: u64) -> NewJob {
    NewJob {
        id: uuid::Uuid::now_v7().to_string(),
        engine: engine.into(),
        user: user.into(),
        kind: "echo".into(),
        payload: PAYLOAD.into(),
        priority: 0,
        run_at_ms: NOW,
        max_attempts: 3,
        timeout_ms: 30_000,
        idempotency_key: format!("key-{n}"),
        fingerprint: "0".repeat(64),
        traceparent: None,
        concurrency_key: None,
    }
}

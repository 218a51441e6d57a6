//! `sleep`: waits `{"ms": N}` milliseconds, then succeeds. Stands in for slow work in tests and demos.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use super::{JobFailure, JobHandler, parse_payload, to_result};

/// The longest sleep accepted (a day).
const MAX_MS: u64 = 86_400_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SleepPayload {
    ms: u64,
}

pub struct Sleep;

#[async_trait]
impl JobHandler for Sleep {
    async fn run(&self, payload: &RawValue) -> Result<Box<RawValue>, JobFailure> {
        let SleepPayload { ms } = parse_payload("sleep", payload)?;
        if ms > MAX_MS {
            return Err(JobFailure::permanent(format!("sleep ms must be at most {MAX_MS}")));
        }
        tokio::time::sleep(Duration::from_millis(ms)).await;
        to_result(&json!({ "slept_ms": ms }))
    }
}

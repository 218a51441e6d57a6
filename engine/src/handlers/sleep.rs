//! `sleep`: waits `{"ms": N}` milliseconds, then succeeds. Stands in for slow work in tests and demos.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use super::{JobFailure, JobHandler, ProgressSink, parse_payload, to_result};

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
    async fn run(&self, payload: &RawValue, progress: &ProgressSink) -> Result<Box<RawValue>, JobFailure> {
        let SleepPayload { ms } = parse_payload("sleep", payload)?;
        if ms > MAX_MS {
            return Err(JobFailure::permanent(format!("sleep ms must be at most {MAX_MS}")));
        }
        // Sleep in tenths, reporting progress after each.
        let step = Duration::from_millis(ms) / 10;
        for tenth in 1..=10u32 {
            tokio::time::sleep(step).await;
            progress.report(
                f64::from(tenth) * 10.0,
                Some(format!("slept {} of {ms} ms", step.as_millis() * u128::from(tenth))),
            );
        }
        to_result(&json!({ "slept_ms": ms }))
    }
}

//! `echo`: the result is the payload. Useful for trying the system out and for load tests.

use async_trait::async_trait;
use serde_json::value::RawValue;

use super::{JobFailure, JobHandler, ProgressSink};

pub struct Echo;

#[async_trait]
impl JobHandler for Echo {
    async fn run(&self, payload: &RawValue, _progress: &ProgressSink) -> Result<Box<RawValue>, JobFailure> {
        Ok(payload.to_owned())
    }
}

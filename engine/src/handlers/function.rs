//! A job handler made of an async function, so a custom kind is a closure: `Engine::handle("kind", |payload,
//! progress| async move { ... })`.

use std::future::Future;
use std::marker::PhantomData;

use async_trait::async_trait;
use serde_json::Value;
use serde_json::value::RawValue;

use super::{JobFailure, JobHandler, ProgressSink, parse_payload, to_result};

/// Runs `function` with the job's payload as a `serde_json::Value` and a progress sink; its `Value` is the
/// result.
pub struct FunctionHandler<F, Fut> {
    kind: String,
    function: F,
    output: PhantomData<fn() -> Fut>,
}

impl<F, Fut> FunctionHandler<F, Fut> {
    pub fn new(kind: &str, function: F) -> Self {
        Self { kind: kind.to_string(), function, output: PhantomData }
    }
}

#[async_trait]
impl<F, Fut> JobHandler for FunctionHandler<F, Fut>
where
    F: Fn(Value, ProgressSink) -> Fut + Send + Sync,
    Fut: Future<Output = Result<Value, JobFailure>> + Send,
{
    async fn run(&self, payload: &RawValue, progress: &ProgressSink) -> Result<Box<RawValue>, JobFailure> {
        let payload: Value = parse_payload(&self.kind, payload)?;
        let result = (self.function)(payload, progress.clone()).await?;
        to_result(&result)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn a_closure_gets_the_payload_and_progress_and_its_value_is_the_result() {
        let handler = FunctionHandler::new("upper", |payload: Value, progress: ProgressSink| async move {
            progress.report(50.0, Some("halfway".into()));
            let text = payload["text"].as_str().ok_or_else(|| JobFailure::permanent("no text"))?;
            Ok(json!({ "text": text.to_uppercase() }))
        });
        let progress = ProgressSink::default();
        let payload = RawValue::from_string(r#"{"text":"hi"}"#.into()).unwrap();
        let result = handler.run(&payload, &progress).await.unwrap();
        assert_eq!(result.get(), r#"{"text":"HI"}"#);
        assert_eq!(progress.take().map(|p| p.percent), Some(50.0));
        let empty = RawValue::from_string("{}".into()).unwrap();
        let failure = handler.run(&empty, &progress).await.unwrap_err();
        assert_eq!((failure.message.as_str(), failure.retryable), ("no text", false));
    }
}

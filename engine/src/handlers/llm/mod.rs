//! `llm`: a chat completion from the first provider of a fallback chain that answers.
//!
//! Each provider is tried up to `1 + retries` times on failures worth retrying, with exponential backoff and full
//! jitter and never sooner than its `Retry-After`; then the next provider. A request the provider refuses as
//! malformed (a 4xx other than 408/429) fails the job at once, without retry. A provider whose breaker is open is
//! skipped. The result says which provider answered and lists every attempt.

pub mod breaker;
pub mod config;
pub mod provider;
pub mod sse;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use flowork_common::backoff::full_jitter_delay_ms;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use self::config::LlmConfig;
use self::provider::{CallError, ChatRequest, MAX_RETRY_AFTER, Provider};
use super::{JobFailure, JobHandler, ProgressSink, parse_payload, to_result};
use crate::config::ConfigError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LlmPayload {
    messages: Value,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    stream: Option<bool>,
}

/// One call made for a job, as the result lists it.
#[derive(Debug, Clone, Serialize)]
struct AttemptRecord {
    provider: String,
    /// The HTTP status, or `timeout`, `connect_error`, `breaker_open`, ...
    status: String,
    ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub struct Llm {
    providers: Vec<Arc<Provider>>,
}

impl Llm {
    pub fn new(config: &LlmConfig) -> Result<Self, ConfigError> {
        let mut providers = Vec::new();
        for provider in config.ordered() {
            let key = provider.api_key()?;
            let name = provider.name.clone();
            providers.push(Arc::new(
                Provider::new(provider, key)
                    .map_err(|e| ConfigError::Invalid(format!("provider {name:?}: http client: {e}")))?,
            ));
        }
        if providers.is_empty() {
            return Err(ConfigError::Invalid("[llm] lists no providers".into()));
        }
        Ok(Self { providers })
    }

    /// Tries one provider (with its retries); `Ok(Some)` is an answer, `Ok(None)` means fall through.
    async fn try_provider(
        &self,
        provider: &Provider,
        request: &ChatRequest,
        attempts: &mut Vec<AttemptRecord>,
    ) -> Result<Option<provider::Answer>, JobFailure> {
        let name = &provider.config.name;
        for try_number in 0..=provider.config.retries {
            if !provider.breaker.allow(Instant::now()) {
                attempts.push(AttemptRecord {
                    provider: name.clone(),
                    status: "breaker_open".into(),
                    ms: 0,
                    error: None,
                });
                return Ok(None);
            }
            let started = Instant::now();
            let outcome = {
                let _slot = provider.slots.acquire().await.map_err(|_| JobFailure::retryable("engine stopping"))?;
                provider.call(request).await
            };
            let ms = started.elapsed().as_millis() as u64;
            match outcome {
                Ok(answer) => {
                    provider.breaker.succeeded();
                    attempts.push(AttemptRecord { provider: name.clone(), status: "200".into(), ms, error: None });
                    return Ok(Some(answer));
                }
                Err(CallError::Rejected { status, message }) => {
                    attempts.push(AttemptRecord {
                        provider: name.clone(),
                        status: status.clone(),
                        ms,
                        error: Some(message.clone()),
                    });
                    return Err(JobFailure::permanent(format!(
                        "provider {name} refused the request ({status}): {message}; attempts: {}",
                        summary(attempts)
                    )));
                }
                Err(CallError::Retryable { status, retry_after, message }) => {
                    provider.breaker.failed(Instant::now());
                    attempts.push(AttemptRecord { provider: name.clone(), status, ms, error: Some(message) });
                    if try_number == provider.config.retries || retry_after.is_some_and(|r| r > MAX_RETRY_AFTER) {
                        return Ok(None);
                    }
                    let backoff = full_jitter_delay_ms(
                        try_number + 1,
                        provider.config.retry_base_ms,
                        provider.config.retry_cap_ms,
                        rand::random(),
                    );
                    let wait = Duration::from_millis(backoff).max(retry_after.unwrap_or_default());
                    tokio::time::sleep(wait).await;
                }
            }
        }
        Ok(None)
    }
}

/// `provider status, ...` for error messages.
fn summary(attempts: &[AttemptRecord]) -> String {
    attempts.iter().map(|a| format!("{} {}", a.provider, a.status)).collect::<Vec<_>>().join(", ")
}

#[async_trait]
impl JobHandler for Llm {
    async fn run(&self, payload: &RawValue, progress: &ProgressSink) -> Result<Box<RawValue>, JobFailure> {
        let payload: LlmPayload = parse_payload("llm", payload)?;
        if payload.messages.as_array().is_none_or(|m| m.is_empty()) {
            return Err(JobFailure::permanent("invalid llm payload: messages must be a non-empty array"));
        }
        let request = ChatRequest {
            messages: payload.messages,
            model: payload.model,
            temperature: payload.temperature,
            max_tokens: payload.max_tokens,
            stream: payload.stream.unwrap_or(false),
        };
        let mut attempts = Vec::new();
        for (index, provider) in self.providers.iter().enumerate() {
            progress.report(0.0, Some(format!("asking {}", provider.config.name)));
            if let Some(answer) = self.try_provider(provider, &request, &mut attempts).await? {
                return to_result(&json!({
                    "text": answer.text,
                    "provider": provider.config.name,
                    "model": answer.model,
                    "usage": answer.usage,
                    "fallbacks": index,
                    "attempts": attempts,
                }));
            }
        }
        Err(JobFailure::retryable(format!("no provider answered; attempts: {}", summary(&attempts))))
    }
}

//! One OpenAI-compatible provider: `POST {base_url}/chat/completions`, as JSON or as a server-sent-event stream,
//! with its own concurrency limit and breaker. Errors are sorted into worth retrying (connect errors, timeouts,
//! 408, 429, 5xx, a garbled answer) and the request's own fault (other 4xx).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::breaker::Breaker;
use super::config::{ApiKey, ProviderConfig};
use super::sse::Assembler;

/// What a job asks of a model.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub messages: Value,
    pub model: Option<String>,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u64>,
    pub stream: bool,
}

/// A provider's answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub text: String,
    pub model: String,
    pub usage: Value,
}

/// Why a call failed.
#[derive(Debug, Clone)]
pub enum CallError {
    /// Worth another try, after at least `retry_after` if the provider said so.
    Retryable { status: String, retry_after: Option<Duration>, message: String },
    /// The request's own fault: no provider would take it.
    Rejected { status: String, message: String },
}

/// The longest `Retry-After` honoured; a provider asking for more is left for the next one in the chain.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// Most characters of a provider's error text kept in a job's result or error.
const MAX_ERROR_CHARS: usize = 300;

pub struct Provider {
    pub config: ProviderConfig,
    key: Option<ApiKey>,
    client: reqwest::Client,
    pub slots: Semaphore,
    pub breaker: Breaker,
}

impl Provider {
    pub fn new(config: ProviderConfig, key: Option<ApiKey>) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).tcp_nodelay(true).build()?;
        let slots = Semaphore::new(config.max_concurrency.max(1));
        let breaker = Breaker::new(config.breaker_failures, Duration::from_millis(config.breaker_cooldown_ms));
        Ok(Self { config, key, client, slots, breaker })
    }

    /// The provider's name for the model a job asked for (or its default).
    pub fn model_for(&self, asked: Option<&str>) -> String {
        match asked {
            Some(name) => self.config.models.get(name).cloned().unwrap_or_else(|| name.to_string()),
            None => self.config.model.clone(),
        }
    }

    /// One call, under the provider's timeout: for a stream, the longest wait for the answer to start or for
    /// the next chunk; otherwise for the whole answer.
    pub async fn call(&self, request: &ChatRequest) -> Result<Answer, CallError> {
        let model = self.model_for(request.model.as_deref());
        let mut body = json!({"model": model, "messages": request.messages, "stream": request.stream});
        if let Some(t) = request.temperature {
            body["temperature"] = json!(t);
        }
        if let Some(n) = request.max_tokens {
            body["max_tokens"] = json!(n);
        }
        let url = format!("{}/chat/completions", self.config.base_url.trim_end_matches('/'));
        let mut call = self.client.post(url).json(&body);
        if let Some(key) = &self.key {
            call = call.bearer_auth(key.expose());
        }
        let timeout = Duration::from_millis(self.config.timeout_ms.max(1));
        let response = match tokio::time::timeout(timeout, call.send()).await {
            Err(_) => return Err(timed_out(timeout)),
            Ok(Err(error)) => return Err(transport(&error)),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if !status.is_success() {
            return Err(refusal(status, response).await);
        }
        if request.stream {
            stream_answer(response, timeout, model).await
        } else {
            match tokio::time::timeout(timeout, response.json::<Value>()).await {
                Err(_) => Err(timed_out(timeout)),
                Ok(Err(error)) => Err(garbled(format!("the answer is not JSON: {error}"))),
                Ok(Ok(answer)) => whole_answer(&answer, model),
            }
        }
    }
}

fn timed_out(timeout: Duration) -> CallError {
    CallError::Retryable {
        status: "timeout".into(),
        retry_after: None,
        message: format!("no answer within {} ms", timeout.as_millis()),
    }
}

/// A transport error, without the URL's query or anything from the request's headers.
fn transport(error: &reqwest::Error) -> CallError {
    let status = if error.is_connect() { "connect_error" } else { "transport_error" };
    CallError::Retryable { status: status.into(), retry_after: None, message: error.without_url_message() }
}

trait WithoutUrl {
    fn without_url_message(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_message(&self) -> String {
        let mut text = String::new();
        let mut source: Option<&dyn std::error::Error> = Some(self);
        while let Some(error) = source {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&error.to_string());
            source = error.source();
        }
        text.chars().take(MAX_ERROR_CHARS).collect()
    }
}

fn garbled(message: String) -> CallError {
    CallError::Retryable { status: "bad_answer".into(), retry_after: None, message }
}

/// Sorts an error status: 408, 429 and 5xx are worth retrying (with `Retry-After` in seconds, if sent).
async fn refusal(status: StatusCode, response: reqwest::Response) -> CallError {
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let text = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().or(v["error"].as_str()).map(str::to_string))
        .unwrap_or(text)
        .chars()
        .take(MAX_ERROR_CHARS)
        .collect();
    let code = status.as_u16().to_string();
    if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::REQUEST_TIMEOUT || status.is_server_error() {
        CallError::Retryable { status: code, retry_after, message }
    } else {
        CallError::Rejected { status: code, message }
    }
}

fn whole_answer(answer: &Value, model: String) -> Result<Answer, CallError> {
    let text = answer["choices"][0]["message"]["content"]
        .as_str()
        .ok_or_else(|| garbled("the answer has no choices[0].message.content".into()))?;
    Ok(Answer {
        text: text.to_string(),
        model: answer["model"].as_str().map(str::to_string).unwrap_or(model),
        usage: answer.get("usage").cloned().unwrap_or(Value::Null),
    })
}

/// Reads a server-sent-event stream chunk by chunk; each chunk must come within `idle`.
async fn stream_answer(mut response: reqwest::Response, idle: Duration, model: String) -> Result<Answer, CallError> {
    let mut assembler = Assembler::default();
    loop {
        match tokio::time::timeout(idle, response.chunk()).await {
            Err(_) => return Err(timed_out(idle)),
            Ok(Err(error)) => return Err(transport(&error)),
            Ok(Ok(None)) => break,
            Ok(Ok(Some(bytes))) => assembler.feed(&bytes).map_err(garbled)?,
        }
        if assembler.done {
            break;
        }
    }
    if !assembler.done && assembler.text.is_empty() {
        return Err(garbled("the stream ended before any answer".into()));
    }
    Ok(Answer {
        text: assembler.text,
        model: assembler.model.unwrap_or(model),
        usage: assembler.usage.unwrap_or(Value::Null),
    })
}

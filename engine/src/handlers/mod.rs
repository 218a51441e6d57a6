//! Job handlers: one trait, one file per built-in kind, and the registry that maps kinds to handlers.

pub mod echo;
pub mod exec;
pub mod function;
pub mod http;
pub mod llm;
pub mod sleep;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::value::RawValue;

use crate::config::FileConfig;
use flowork_common::wire::Progress;

/// Why an attempt failed, and whether another attempt could succeed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct JobFailure {
    pub message: String,
    pub retryable: bool,
}

impl JobFailure {
    /// A failure another attempt may not have (a timeout, a 503).
    pub fn retryable(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: true }
    }

    /// A failure that will happen again (bad payload, a forbidden URL).
    pub fn permanent(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: false }
    }
}

/// Where a handler reports how far it has come; a heartbeat carries it to the gateway within about a second.
#[derive(Debug, Clone, Default)]
pub struct ProgressSink(std::sync::Arc<ProgressSlot>);

/// The latest progress and the signal that some was reported.
#[derive(Debug, Default)]
pub struct ProgressSlot {
    latest: std::sync::Mutex<Option<Progress>>,
    reported: tokio::sync::Notify,
}

impl ProgressSink {
    /// Records progress (0-100) and an optional short message.
    pub fn report(&self, percent: f64, message: Option<String>) {
        if let Ok(mut slot) = self.0.latest.lock() {
            *slot = Some(Progress { percent: percent.clamp(0.0, 100.0), message });
        }
        self.0.reported.notify_one();
    }

    /// The progress reported since the last call, if any.
    pub fn take(&self) -> Option<Progress> {
        self.0.latest.lock().ok().and_then(|mut slot| slot.take())
    }

    /// Returns once progress has been reported (at once if some was since the last wait).
    pub async fn reported(&self) {
        self.0.reported.notified().await;
    }
}

/// Runs one kind of job. The payload is the job's JSON; the result becomes the job's result. A handler is
/// cancelled by being dropped (at its next `.await`), so it should not hold state that a drop would corrupt.
#[async_trait]
pub trait JobHandler: Send + Sync {
    async fn run(&self, payload: &RawValue, progress: &ProgressSink) -> Result<Box<RawValue>, JobFailure>;
}

/// Parses a payload into a handler's own type, failing the job (not retryable) on a mismatch.
pub fn parse_payload<T: serde::de::DeserializeOwned>(kind: &str, payload: &RawValue) -> Result<T, JobFailure> {
    serde_json::from_str(payload.get()).map_err(|e| JobFailure::permanent(format!("invalid {kind} payload: {e}")))
}

/// At most `max` bytes of `bytes` as text, cut at a character boundary (not through a multi-byte character,
/// which would end the message in U+FFFD).
pub fn text_prefix(bytes: &[u8], max: usize) -> String {
    let mut cut = bytes.len().min(max);
    // A UTF-8 character has at most 3 continuation bytes (0b10xx_xxxx) after its first byte.
    for _ in 0..3 {
        if cut == 0 || cut == bytes.len() || bytes[cut] & 0xC0 != 0x80 {
            break;
        }
        cut -= 1;
    }
    String::from_utf8_lossy(&bytes[..cut]).into_owned()
}

/// Turns any serialisable value into a result.
pub fn to_result<T: serde::Serialize>(value: &T) -> Result<Box<RawValue>, JobFailure> {
    serde_json::value::to_raw_value(value).map_err(|e| JobFailure::permanent(format!("unserialisable result: {e}")))
}

/// The handlers this engine runs, by kind.
#[derive(Clone, Default)]
pub struct Registry(HashMap<String, Arc<dyn JobHandler>>);

impl Registry {
    /// The built-in kinds, configured from the engine's config file.
    pub fn builtin(config: &FileConfig) -> Result<Self, crate::config::ConfigError> {
        let mut registry = Self::default();
        registry.insert("echo", Arc::new(echo::Echo));
        registry.insert("sleep", Arc::new(sleep::Sleep));
        registry.insert("http", Arc::new(http::HttpPost::new(&config.http)?));
        registry.insert("exec", Arc::new(exec::Exec::new(&config.exec)));
        if let Some(section) = &config.llm {
            registry.insert("llm", Arc::new(llm::Llm::new(&llm::config::LlmConfig::from_toml(section)?)?));
        }
        Ok(registry)
    }

    /// Adds (or replaces) the handler of `kind`.
    pub fn insert(&mut self, kind: &str, handler: Arc<dyn JobHandler>) {
        self.0.insert(kind.to_string(), handler);
    }

    /// The kinds this registry runs, sorted.
    pub fn kinds(&self) -> Vec<&str> {
        let mut kinds: Vec<&str> = self.0.keys().map(String::as_str).collect();
        kinds.sort_unstable();
        kinds
    }

    pub fn get(&self, kind: &str) -> Option<Arc<dyn JobHandler>> {
        self.0.get(kind).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::text_prefix;

    #[test]
    fn text_prefixes_never_cut_a_character_in_two() {
        let text = "héllo 世界 🎉";
        for max in 0..=text.len() + 1 {
            let prefix = text_prefix(text.as_bytes(), max);
            assert!(text.starts_with(&prefix) && !prefix.contains('\u{fffd}'), "{max}: {prefix:?}");
            assert!(prefix.len() <= max && prefix.len() + 3 >= max.min(text.len()), "{max}: {prefix:?}");
        }
    }
}

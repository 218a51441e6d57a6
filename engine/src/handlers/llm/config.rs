//! The `[llm]` section of the engine's config file: the providers, in fallback order, and their API keys.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::config::ConfigError;

/// `[llm]`: `chain` names providers in the order they are tried (default: the order they are listed).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    #[serde(default)]
    pub chain: Vec<String>,
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
}

/// One OpenAI-compatible endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub name: String,
    /// `POST {base_url}/chat/completions`.
    pub base_url: String,
    /// The model used when a job names none.
    pub model: String,
    /// Job model name → this provider's name for it (say `"fast" = "llama3:8b"`); other names pass as they are.
    #[serde(default)]
    pub models: BTreeMap<String, String>,
    /// The environment variable holding the API key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// A file holding the API key; refused unless only its owner can read it (0600).
    #[serde(default)]
    pub api_key_file: Option<PathBuf>,
    /// For a whole answer; a streamed answer may take longer as long as chunks keep coming within it.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Calls to this provider in flight at once, over all jobs of this engine.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    /// Further tries of a retryable failure before falling through to the next provider.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Backoff: full jitter over base × 2^attempt, capped.
    #[serde(default = "default_retry_base_ms")]
    pub retry_base_ms: u64,
    #[serde(default = "default_retry_cap_ms")]
    pub retry_cap_ms: u64,
    /// Consecutive retryable failures that open the provider's breaker (0 = never).
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    /// How long an open breaker skips the provider before one trial call.
    #[serde(default = "default_breaker_cooldown_ms")]
    pub breaker_cooldown_ms: u64,
}

fn default_timeout_ms() -> u64 {
    60_000
}
fn default_max_concurrency() -> usize {
    4
}
fn default_retries() -> u32 {
    2
}
fn default_retry_base_ms() -> u64 {
    500
}
fn default_retry_cap_ms() -> u64 {
    10_000
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_cooldown_ms() -> u64 {
    30_000
}

/// An API key; its `Debug` never shows it.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl ProviderConfig {
    /// Reads the provider's key from its environment variable or file (`None` for a provider without one, such
    /// as a local Ollama).
    pub fn api_key(&self) -> Result<Option<ApiKey>, ConfigError> {
        if let Some(var) = &self.api_key_env {
            let key = std::env::var(var).map_err(|_| {
                ConfigError::Invalid(format!("provider {:?}: the environment variable {var} is not set", self.name))
            })?;
            return Ok(Some(ApiKey(key.trim().to_string())));
        }
        let Some(path) = &self.api_key_file else { return Ok(None) };
        check_private(path).map_err(|why| ConfigError::Invalid(format!("provider {:?}: {why}", self.name)))?;
        let key = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::Invalid(format!("provider {:?}: cannot read {}: {e}", self.name, path.display()))
        })?;
        Ok(Some(ApiKey(key.trim().to_string())))
    }
}

/// A key file must not be readable by anyone but its owner.
#[cfg(unix)]
fn check_private(path: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(format!("{} is readable by others (mode {:o}); chmod 600 it", path.display(), mode & 0o777));
    }
    Ok(())
}

/// Elsewhere the file's ACLs are the operator's to set.
#[cfg(not(unix))]
fn check_private(_path: &std::path::Path) -> Result<(), String> {
    Ok(())
}

impl LlmConfig {
    /// Parses the `[llm]` table and checks that every name in the chain is a listed provider.
    pub fn from_toml(value: &toml::Value) -> Result<Self, ConfigError> {
        let config: Self =
            value.clone().try_into().map_err(|e: toml::de::Error| ConfigError::Invalid(format!("[llm]: {e}")))?;
        for name in &config.chain {
            if !config.providers.iter().any(|p| &p.name == name) {
                return Err(ConfigError::Invalid(format!("[llm] chain names {name:?}, which is not a provider")));
            }
        }
        Ok(config)
    }

    /// The providers in the order they are tried.
    pub fn ordered(&self) -> Vec<ProviderConfig> {
        if self.chain.is_empty() {
            return self.providers.clone();
        }
        self.chain.iter().filter_map(|name| self.providers.iter().find(|p| &p.name == name).cloned()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<LlmConfig, ConfigError> {
        let value: toml::Value = toml::from_str(text).unwrap();
        LlmConfig::from_toml(&value)
    }

    #[test]
    fn the_chain_orders_the_providers_and_must_name_real_ones() {
        let config = parse(
            r#"chain = ["b", "a"]
               [[providers]]
               name = "a"
               base_url = "http://127.0.0.1:1/v1"
               model = "m"
               [[providers]]
               name = "b"
               base_url = "http://127.0.0.1:2/v1"
               model = "m""#,
        )
        .unwrap();
        let names: Vec<String> = config.ordered().into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["b", "a"]);
        assert_eq!(config.providers[0].timeout_ms, 60_000);
        assert!(parse(r#"chain = ["ghost"]"#).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_readable_by_others_is_refused_and_the_key_never_prints() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "sk-secret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let provider = ProviderConfig {
            api_key_file: Some(path.clone()),
            ..parse("[[providers]]\nname = \"a\"\nbase_url = \"http://x\"\nmodel = \"m\"").unwrap().providers[0].clone()
        };
        assert!(provider.api_key().unwrap_err().to_string().contains("chmod 600"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let key = provider.api_key().unwrap().unwrap();
        assert_eq!(key.expose(), "sk-secret");
        assert!(!format!("{key:?}").contains("secret"));
    }
}

//! The engine's command line (clap, with `FLOWORK_*` environment fallbacks) and its TOML config file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Parser;
use flowork_common::logging::LogFormat;
use serde::Deserialize;

/// Flowork engine: claims jobs from a gateway and runs them with a pool of workers.
#[derive(Debug, Clone, Parser)]
#[command(name = "flowork-engine", version, about)]
pub struct EngineArgs {
    /// Base URL of the gateway.
    #[arg(long, env = "FLOWORK_GATEWAY", default_value = "http://127.0.0.1:8080")]
    pub gateway: String,
    /// This engine's id, as given to `flowork-gateway engine add`.
    #[arg(long, env = "FLOWORK_ENGINE_ID")]
    pub engine_id: String,
    /// File holding the engine token (keep it 0600).
    #[arg(long, env = "FLOWORK_TOKEN_FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// The engine token itself (for containers; prefer --token-file on shared hosts).
    #[arg(long, env = "FLOWORK_ENGINE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Trust the certificate authorities in this PEM file (besides the usual public ones) for an HTTPS gateway,
    /// e.g. one with a self-signed certificate.
    #[arg(long, env = "FLOWORK_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// Jobs run at once.
    #[arg(long, env = "FLOWORK_WORKERS", default_value_t = 4)]
    pub workers: u32,
    /// Fewest workers the autoscaler keeps (default: --workers, i.e. a fixed pool).
    #[arg(long, env = "CORE_MIN_WORKERS")]
    pub min_workers: Option<u32>,
    /// Most workers the autoscaler adds (default: --workers).
    #[arg(long, env = "CORE_MAX_WORKERS")]
    pub max_workers: Option<u32>,
    /// Target p95 queue latency (enqueue → claim) in ms that the autoscaler steers by.
    #[arg(long, env = "SLO_TARGET_LATENCY", default_value_t = 500)]
    pub slo_target_latency: u64,
    /// Keep workers ≥ this × the recent peak arrival rate × the mean service time (at least 1.3).
    #[arg(long, env = "HEADROOM_FACTOR", default_value_t = 1.3)]
    pub headroom_factor: f64,
    /// Length of one autoscaling window.
    #[arg(long, env = "FLOWORK_AUTOSCALE_WINDOW", default_value = "10s", value_parser = humantime::parse_duration)]
    pub autoscale_window: std::time::Duration,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464); off when absent.
    #[arg(long, env = "FLOWORK_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The TOML config file (handler allowlists); see the README.
    #[arg(long, env = "FLOWORK_CONFIG")]
    pub config: Option<PathBuf>,
    /// Lease length (ms) asked for each job; heartbeats renew it every third of that.
    #[arg(long, env = "FLOWORK_LEASE_MS", default_value_t = 30_000)]
    pub lease_ms: u64,
    /// How long one claim call waits at the gateway for work (ms).
    #[arg(long, env = "FLOWORK_WAIT_MS", default_value_t = 20_000)]
    pub wait_ms: u64,
    /// On SIGTERM/SIGINT, how long running jobs may take to finish before the engine exits anyway (ms).
    #[arg(long, env = "FLOWORK_GRACE_MS", default_value_t = 30_000)]
    pub grace_ms: u64,
    /// Log format: `json` or `pretty`; default: pretty on a terminal, json otherwise.
    #[arg(long, env = "FLOWORK_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
}

/// The engine's config file. Every section is optional; an absent section allows nothing.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub exec: ExecConfig,
    /// LLM providers of the `llm` kind (see `handlers::llm::config`).
    #[serde(default)]
    pub llm: Option<toml::Value>,
}

/// `[http]`: URL prefixes the `http` kind may POST to.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    #[serde(default)]
    pub allow: Vec<String>,
}

/// `[exec.commands]`: commands the `exec` kind may run, by name, as argv (no shell).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecConfig {
    #[serde(default)]
    pub commands: BTreeMap<String, Vec<String>>,
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} is not a valid engine config: {source}")]
    Parse { path: String, source: toml::de::Error },
    #[error("{0}")]
    Invalid(String),
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        let config: Self =
            toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.display().to_string(), source })?;
        for (name, argv) in &config.exec.commands {
            if argv.is_empty() {
                return Err(ConfigError::Invalid(format!("exec command {name:?} has an empty argv")));
            }
        }
        Ok(config)
    }
}

impl EngineArgs {
    /// The certificates of `--ca-file` (none without it); a file with none is refused.
    pub fn read_ca_file(&self) -> Result<Vec<reqwest::Certificate>, ConfigError> {
        let Some(path) = &self.ca_file else { return Ok(Vec::new()) };
        let pem =
            std::fs::read(path).map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| ConfigError::Invalid(format!("--ca-file {}: {e}", path.display())))?;
        if certificates.is_empty() {
            return Err(ConfigError::Invalid(format!("--ca-file {} holds no PEM certificate", path.display())));
        }
        Ok(certificates)
    }

    /// The engine token, from `--token` or the first line of `--token-file`.
    pub fn read_token(&self) -> Result<String, ConfigError> {
        let token = match (&self.token, &self.token_file) {
            (Some(token), _) => token.trim().to_string(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?
                .trim()
                .to_string(),
            (None, None) => {
                return Err(ConfigError::Invalid("give the engine token with --token-file or --token".into()));
            }
        };
        if token.is_empty() {
            return Err(ConfigError::Invalid("the engine token is empty".into()));
        }
        Ok(token)
    }
}

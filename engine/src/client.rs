//! The gateway's internal API as seen from an engine, over one pooled HTTP client (keep-alive connections).

use std::time::Duration;

use flowork_common::wire::{
    ClaimRequest, ClaimResponse, ErrorBody, FinishRequest, FinishResponse, HeartbeatRequest, HeartbeatResponse, WhoAmI,
};
use reqwest::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A failed call to the gateway.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the gateway: {0}")]
    Transport(#[from] reqwest::Error),
    #[error("the gateway refused the call ({status}): {code}: {message}")]
    Refused { status: StatusCode, code: String, message: String },
}

impl ClientError {
    /// The token is wrong or revoked: retrying cannot help.
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, Self::Refused { status, .. } if *status == StatusCode::UNAUTHORIZED)
    }

    /// The lease is gone (expired and requeued, or never ours): stop working on the job.
    pub fn is_lease_lost(&self) -> bool {
        matches!(self, Self::Refused { code, .. } if code == "lease_lost" || code == "job_not_found")
    }

    /// Worth another try: network trouble or a gateway that is briefly unavailable.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport(_) => true,
            Self::Refused { status, .. } => status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS,
        }
    }
}

/// Calls the gateway on behalf of one engine.
#[derive(Clone)]
pub struct GatewayClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl GatewayClient {
    pub fn new(base: &str, token: String) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()?;
        Ok(Self { http, base: base.trim_end_matches('/').to_string(), token })
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&B>,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let request = match body {
            Some(body) => self.http.post(url).json(body),
            None => self.http.get(url),
        };
        let response = request.header("x-engine-token", &self.token).timeout(timeout).send().await?;
        let status = response.status();
        if status.is_success() {
            return Ok(response.json().await?);
        }
        let body: Option<ErrorBody> = response.json().await.ok();
        let (code, message) = body.map(|b| (b.error, b.message)).unwrap_or_else(|| ("unknown".into(), String::new()));
        Err(ClientError::Refused { status, code, message })
    }

    pub async fn whoami(&self) -> Result<WhoAmI, ClientError> {
        self.call::<(), _>("/internal/whoami", None, Duration::from_secs(10)).await
    }

    pub async fn claim(&self, request: &ClaimRequest) -> Result<ClaimResponse, ClientError> {
        let timeout = Duration::from_millis(request.wait_ms) + Duration::from_secs(15);
        self.call("/internal/claim", Some(request), timeout).await
    }

    pub async fn heartbeat(&self, job_id: &str, request: &HeartbeatRequest) -> Result<HeartbeatResponse, ClientError> {
        self.call(&format!("/internal/jobs/{job_id}/heartbeat"), Some(request), Duration::from_secs(10)).await
    }

    pub async fn finish(&self, job_id: &str, request: &FinishRequest) -> Result<FinishResponse, ClientError> {
        self.call(&format!("/internal/jobs/{job_id}/finish"), Some(request), Duration::from_secs(15)).await
    }
}

//! The gateway's internal API as seen from an engine, over one pooled HTTP client (keep-alive connections).

use std::time::Duration;

use flowork_common::logging::REQUEST_TARGET;
use flowork_common::wire::{
    ClaimRequest, ClaimResponse, ErrorBody, FinishBatchRequest, FinishBatchResponse, FinishRequest, FinishResponse,
    HeartbeatRequest, HeartbeatResponse, PROTOCOL_HEADER, PROTOCOL_VERSION, WhoAmI,
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
    engine_id: String,
}

/// The job a call is about, for the request log line.
#[derive(Debug, Clone, Copy, Default)]
pub struct JobRef<'a> {
    pub id: &'a str,
    pub traceparent: Option<&'a str>,
}

impl GatewayClient {
    /// A client of the gateway at `base` that also trusts `extra_roots` (a self-signed gateway's authority).
    pub fn new(
        base: &str,
        token: String,
        engine_id: &str,
        extra_roots: Vec<reqwest::Certificate>,
    ) -> Result<Self, ClientError> {
        let mut http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true);
        for root in extra_roots {
            http = http.add_root_certificate(root);
        }
        let http = http.build()?;
        Ok(Self { http, base: base.trim_end_matches('/').to_string(), token, engine_id: engine_id.to_string() })
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        route: &str,
        path: &str,
        body: Option<&B>,
        timeout: Duration,
        job: Option<JobRef<'_>>,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let request = match body {
            Some(body) => self.http.post(url).json(body),
            None => self.http.get(url),
        };
        let mut request =
            request.header("x-engine-token", &self.token).header(PROTOCOL_HEADER, PROTOCOL_VERSION).timeout(timeout);
        if let Some(traceparent) = job.and_then(|j| j.traceparent) {
            request = request.header("traceparent", traceparent);
        }
        let started = std::time::Instant::now();
        let sent = request.send().await;
        let status = sent.as_ref().map(|r| r.status().as_u16()).ok();
        tracing::info!(
            target: REQUEST_TARGET,
            trace_id = job.and_then(|j| j.traceparent).and_then(|t| t.split('-').nth(1)),
            engine_id = %self.engine_id,
            job_id = job.map(|j| j.id),
            route,
            status,
            latency_ms = started.elapsed().as_secs_f64() * 1_000.0,
            "request"
        );
        let response = sent?;
        let status = response.status();
        if status.is_success() {
            return Ok(response.json().await?);
        }
        let body: Option<ErrorBody> = response.json().await.ok();
        let (code, message) = body.map(|b| (b.error, b.message)).unwrap_or_else(|| ("unknown".into(), String::new()));
        Err(ClientError::Refused { status, code, message })
    }

    pub async fn whoami(&self) -> Result<WhoAmI, ClientError> {
        self.call::<(), _>("/internal/whoami", "/internal/whoami", None, Duration::from_secs(10), None).await
    }

    pub async fn claim(&self, request: &ClaimRequest) -> Result<ClaimResponse, ClientError> {
        let timeout = Duration::from_millis(request.wait_ms) + Duration::from_secs(15);
        self.call("/internal/claim", "/internal/claim", Some(request), timeout, None).await
    }

    pub async fn heartbeat(
        &self,
        job: JobRef<'_>,
        request: &HeartbeatRequest,
    ) -> Result<HeartbeatResponse, ClientError> {
        let path = format!("/internal/jobs/{}/heartbeat", job.id);
        self.call("/internal/jobs/{id}/heartbeat", &path, Some(request), Duration::from_secs(10), Some(job)).await
    }

    /// Several outcomes in one call (`POST /internal/finish`).
    pub async fn finish_many(&self, request: &FinishBatchRequest) -> Result<FinishBatchResponse, ClientError> {
        self.call("/internal/finish", "/internal/finish", Some(request), Duration::from_secs(15), None).await
    }

    pub async fn finish(&self, job: JobRef<'_>, request: &FinishRequest) -> Result<FinishResponse, ClientError> {
        let path = format!("/internal/jobs/{}/finish", job.id);
        self.call("/internal/jobs/{id}/finish", &path, Some(request), Duration::from_secs(15), Some(job)).await
    }
}

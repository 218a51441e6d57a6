//! The state every handler and background task shares: the stores, policies, limits and process-wide counters.

use std::sync::Arc;
use std::time::Duration;

use flowork_common::clock::Clock;
use tokio_util::sync::CancellationToken;

use crate::admission::enqueue::JobLimits;
use crate::admission::gate::Admission;
use crate::audit::AuditEntry;
use crate::auth::engine_cache::EngineCache;
use crate::auth::jwt::KeyRing;
use crate::auth::signin::SignInPolicy;
use crate::http::network::NetworkPolicy;
use crate::http::rate_limit::RateLimits;
use crate::observability::engine_presence::EnginePresence;
use crate::observability::metrics::GatewayMetrics;
use crate::store::tokens::TokenStore;
use crate::store::{ControlStore, JobStore};

/// What every handler can reach.
/// Cheap to clone: every handler and middleware gets a copy, so the fields live behind one `Arc`.
#[derive(Clone)]
pub struct AppState(pub(crate) Arc<AppInner>);

impl std::ops::Deref for AppState {
    type Target = AppInner;

    fn deref(&self) -> &AppInner {
        &self.0
    }
}

/// The shared state itself.
pub struct AppInner {
    pub jobs: Arc<dyn JobStore>,
    pub control: Arc<dyn ControlStore>,
    /// Token revocations and API keys.
    pub tokens: Arc<dyn TokenStore>,
    pub engines: Arc<EngineCache>,
    pub keys: Arc<KeyRing>,
    pub limits: Arc<JobLimits>,
    /// The door every new job passes (drain, caps, idempotency keys in flight).
    pub admission: Arc<Admission>,
    pub clock: Arc<dyn Clock>,
    /// Cancelled when the gateway stops (SIGTERM): long-polling claims return at once, background tasks end.
    pub shutdown: CancellationToken,
    pub started: std::time::Instant,
    pub network: Arc<NetworkPolicy>,
    pub sign_in: Arc<SignInPolicy>,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub rate_limits: Arc<RateLimits>,
    pub presence: Arc<EnginePresence>,
    pub metrics: Arc<GatewayMetrics>,
}

impl AppInner {
    /// Records a security-relevant event; a failure to record is logged, not fatal to the request.
    pub async fn audit(&self, entry: AuditEntry) {
        if let Err(error) = self.control.append_audit(entry).await {
            tracing::error!(%error, "could not append to the audit log");
        }
    }
}

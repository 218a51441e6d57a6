//! The state every handler and background task shares: the stores, policies, limits and process-wide counters.

use std::sync::Arc;
use std::time::Duration;

use flowork_common::clock::Clock;
use tokio_util::sync::CancellationToken;

use crate::admission::AdmissionLimits;
use crate::admission::drain::DrainState;
use crate::admission::enqueue::JobLimits;
use crate::admission::inflight::InflightKeys;
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
    pub inflight: Arc<InflightKeys>,
    pub clock: Arc<dyn Clock>,
    /// Cancelled when the gateway stops (SIGTERM): long-polling claims return at once, background tasks end.
    pub shutdown: CancellationToken,
    pub started: std::time::Instant,
    pub network: Arc<NetworkPolicy>,
    pub sign_in: Arc<SignInPolicy>,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub rate_limits: Arc<RateLimits>,
    pub caps: AdmissionLimits,
    pub drain: Arc<DrainState>,
    pub presence: Arc<EnginePresence>,
    pub metrics: Arc<GatewayMetrics>,
    /// Queued jobs over all engines and their drain rate, recomputed at most every 250 ms.
    pub(crate) total_depth: Arc<tokio::sync::Mutex<(std::time::Instant, u64, f64)>>,
    /// Jobs this process created since `total_depth` was last computed.
    pub created_since_total: Arc<std::sync::atomic::AtomicU64>,
}

impl AppInner {
    /// Queued jobs over all engines (and how fast they drain), for the total cap.
    pub async fn total_depth(&self) -> Result<(u64, f64), crate::store::StoreError> {
        let mut cached = self.total_depth.lock().await;
        // Near the cap every request looks again, so the cap holds exactly; far from it a 250 ms old sum will do.
        let estimate = cached.1 + self.created_since_total.load(std::sync::atomic::Ordering::Relaxed);
        let near_cap = estimate.saturating_add(estimate / 10 + 1) >= self.caps.max_total_depth;
        if near_cap || cached.0.elapsed() > Duration::from_millis(250) || cached.0 == self.started {
            let totals = self.queue_totals().await?;
            *cached = (std::time::Instant::now(), totals.queued, totals.window.drain_rate_per_s);
            self.created_since_total.store(0, std::sync::atomic::Ordering::Relaxed);
        }
        Ok((cached.1, cached.2))
    }

    /// Queued and running jobs, and the drain rate, summed over every engine.
    pub async fn queue_totals(&self) -> Result<crate::store::QueueCounts, crate::store::StoreError> {
        let mut totals = crate::store::QueueCounts::default();
        for engine in self.control.list_engines().await? {
            let counts = match self.jobs.queue_counts(&engine.id).await {
                Ok(counts) => counts,
                // A quarantined shard holds nothing this gateway can serve.
                Err(crate::store::StoreError::Quarantined { .. }) => continue,
                Err(error) => return Err(error),
            };
            totals.queued += counts.queued;
            totals.running += counts.running;
            totals.window.drain_rate_per_s += counts.window.drain_rate_per_s;
        }
        Ok(totals)
    }

    /// Records a security-relevant event; a failure to record is logged, not fatal to the request.
    pub async fn audit(&self, entry: AuditEntry) {
        if let Err(error) = self.control.append_audit(entry).await {
            tracing::error!(%error, "could not append to the audit log");
        }
    }
}

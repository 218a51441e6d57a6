//! Running the gateway: shared state, the listener, the lease reaper and graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use flowork_common::clock::{Clock, SystemClock};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::audit::AuditEntry;
use crate::auth::jwt::KeyRing;
use crate::auth::signin::{SignInPolicy, normalize_origin};
use crate::config::ServeArgs;
use crate::engine_cache::EngineCache;
use crate::enqueue::JobLimits;
use crate::inflight::InflightKeys;
use crate::network::{CidrRules, NetworkPolicy};
use crate::rate_limit::{Limit, RateLimits};
use crate::store::sqlite::SqliteStore;
use crate::store::{ControlStore, JobStore, RetryPolicy};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub jobs: Arc<dyn JobStore>,
    pub control: Arc<dyn ControlStore>,
    pub engines: Arc<EngineCache>,
    pub keys: Arc<KeyRing>,
    pub limits: Arc<JobLimits>,
    pub inflight: Arc<InflightKeys>,
    pub clock: Arc<dyn Clock>,
    /// Cancelled on shutdown: long-polling claims return at once.
    pub shutdown: CancellationToken,
    pub started: std::time::Instant,
    pub network: Arc<NetworkPolicy>,
    pub sign_in: Arc<SignInPolicy>,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub rate_limits: Arc<RateLimits>,
}

impl AppState {
    /// Records a security-relevant event; a failure to record is logged, not fatal to the request.
    pub async fn audit(&self, entry: AuditEntry) {
        if let Err(error) = self.control.append_audit(entry).await {
            tracing::error!(%error, "could not append to the audit log");
        }
    }
}

/// Runs `flowork-gateway serve` until SIGINT/SIGTERM.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let retry = RetryPolicy { base_ms: args.retry_base_ms, cap_ms: args.retry_cap_ms };
    let store = Arc::new(SqliteStore::open(&args.data.data_dir, clock.clone(), retry).await?);
    let keys = Arc::new(KeyRing::load_or_create(&args.data.data_dir)?);
    let limits = JobLimits {
        max_payload_bytes: args.max_payload_bytes,
        default_max_attempts: args.default_max_attempts,
        default_timeout_ms: args.default_timeout_ms,
        ..JobLimits::default()
    };
    let listener = TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    // Answers are small and latency matters (a woken long-poll claim): do not let Nagle hold them back.
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
    });
    tracing::info!(addr = %addr, data_dir = %args.data.data_dir.display(), "listening");

    let shutdown = CancellationToken::new();
    let state = AppState {
        jobs: store.clone(),
        control: store.clone(),
        engines: Arc::new(EngineCache::new(store.clone(), Duration::from_secs(1))),
        keys,
        limits: Arc::new(limits),
        inflight: Arc::default(),
        clock,
        shutdown: shutdown.clone(),
        started: std::time::Instant::now(),
        network: Arc::new(NetworkPolicy {
            trusted_proxies: args.trusted_proxies.clone(),
            public: CidrRules { allow: args.allow_cidrs.clone(), deny: args.deny_cidrs.clone() },
            internal: CidrRules { allow: args.engine_allow_cidrs.clone(), deny: args.engine_deny_cidrs.clone() },
        }),
        sign_in: Arc::new(SignInPolicy {
            origins: allowed_origins(&args.allowed_origins, addr),
            chain_ids: args.chain_ids.clone(),
        }),
        access_ttl: args.access_ttl,
        refresh_ttl: args.refresh_ttl,
        rate_limits: Arc::new(RateLimits {
            per_ip: Limit::new("per-ip", args.rate_ip),
            per_user: Limit::new("per-user", args.rate_user),
        }),
    };
    tokio::spawn(forget_idle_buckets(state.rate_limits.clone(), shutdown.clone()));
    tokio::spawn(prune_audit_log(state.control.clone(), shutdown.clone()));

    // Open the known shards in the background: readiness does not wait for them.
    let warm = store.clone();
    tokio::spawn(async move {
        match warm.open_all_shards().await {
            Ok(count) => tracing::info!(shards = count, "shards open"),
            Err(error) => tracing::error!(%error, "could not open every shard"),
        }
    });
    tokio::spawn(reap_expired_leases(
        store.clone(),
        Duration::from_millis(args.reap_interval_ms.max(10)),
        shutdown.clone(),
    ));

    let signal = shutdown.clone();
    let app = crate::api::router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            flowork_common::signal::stop_requested().await;
            tracing::info!("shutting down");
            signal.cancel();
        })
        .await?;
    Ok(())
}

/// The GUI origins: as configured, or else the gateway's own origin (so the locally served GUI works).
fn allowed_origins(configured: &[String], addr: std::net::SocketAddr) -> Vec<String> {
    if !configured.is_empty() {
        return configured.iter().map(|o| normalize_origin(o)).collect();
    }
    let mut origins = vec![format!("http://{addr}")];
    if addr.ip().is_loopback() {
        origins.push(format!("http://localhost:{}", addr.port()));
    }
    origins
}

/// Drops idle rate-limit buckets once a minute.
async fn forget_idle_buckets(limits: Arc<RateLimits>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        if let Some(limit) = &limits.per_ip {
            limit.forget_idle();
        }
        if let Some(limit) = &limits.per_user {
            limit.forget_idle();
        }
    }
}

/// How long audit rows are kept.
const AUDIT_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

/// Prunes audit rows past their retention, hourly, keeping the rest of the chain verifiable.
async fn prune_audit_log(control: Arc<dyn ControlStore>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let before = flowork_common::clock::system_now_ms() - AUDIT_RETENTION.as_millis() as i64;
        match control.prune_audit(before).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "pruned old audit rows"),
            Err(error) => tracing::warn!(%error, "audit pruning failed"),
        }
    }
}

/// Periodically requeues jobs whose engine stopped heartbeating.
async fn reap_expired_leases(store: Arc<SqliteStore>, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        match store.reap_expired_leases().await {
            Ok(0) => {}
            Ok(reaped) => tracing::info!(reaped, "requeued jobs with expired leases"),
            Err(error) => tracing::warn!(%error, "lease reaper failed"),
        }
    }
}

//! Running the gateway: building the shared state, the listener, the background loops and graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use flowork_common::clock::{Clock, SystemClock};
use tokio_util::sync::CancellationToken;

use crate::background::periodic::Ticker;

use crate::admission::AdmissionLimits;
use crate::admission::enqueue::JobLimits;
use crate::audit::AuditEntry;
use crate::auth::engine_cache::EngineCache;
use crate::auth::signin::{SignInPolicy, normalize_origin};
use crate::background::alerts::AlertRules;
use crate::config::ServeArgs;
use crate::http::client_ip::ProxyTrust;
use crate::http::connections::ConnectionLimits;
use crate::http::network::{CidrRules, NetworkPolicy};
use crate::http::rate_limit::{Limit, RateLimits};
use crate::state::{AppInner, AppState};
use crate::store::open::{Backend, StorePolicies};
use crate::store::{BreakerPolicy, ControlStore, JobStore, RetryPolicy};

/// Runs `flowork-gateway serve` until SIGINT/SIGTERM.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // First, before the databases take descriptors.
    let open_files = crate::http::open_files::raise_open_file_limit();
    crate::background::retention::check(args.retention).map_err(anyhow::Error::msg)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let retry = RetryPolicy { base_ms: args.retry_base_ms, cap_ms: args.retry_cap_ms };
    let caps = AdmissionLimits {
        max_queue_depth: args.max_queue_depth,
        max_total_depth: args.max_total_depth,
        max_user_inflight: args.max_user_inflight,
    };
    let breaker = BreakerPolicy {
        failures: args.breaker_failures,
        window_ms: args.breaker_window.as_millis() as u64,
        cooldown_ms: args.breaker_cooldown.as_millis() as u64,
    };
    let policies = StorePolicies { retry, caps, breaker };
    let stores = crate::store::open::open(&args.data, clock.clone(), policies).await?;
    let store = stores.jobs.clone();
    let started = std::time::Instant::now();
    let keys = Arc::new(stores.key_ring(&args.data).await?);
    let limits = JobLimits {
        max_payload_bytes: args.max_payload_bytes,
        default_max_attempts: args.default_max_attempts,
        default_timeout_ms: args.default_timeout_ms,
        ..JobLimits::default()
    };
    let connection_limits = ConnectionLimits {
        header_read_timeout: args.header_read_timeout,
        idle_timeout: args.idle_timeout,
        max_connections: crate::http::open_files::connection_cap(args.max_connections, open_files.map(|(_, now)| now)),
    };
    match open_files {
        Some((before, now)) => {
            tracing::info!(
                before,
                open_files = now,
                max_connections = connection_limits.max_connections,
                "open-file limit"
            )
        }
        None => tracing::info!(max_connections = connection_limits.max_connections, "open-file limit"),
    }
    let listener = crate::http::listener::bind(args.listen, args.reuse_port)?;
    let addr = listener.local_addr()?;
    match &args.data.store {
        Some(url) => tracing::info!(addr = %addr, store = %crate::connection_string::redact(url), "listening"),
        None => tracing::info!(addr = %addr, data_dir = %args.data.data_dir.display(), "listening"),
    }

    let shutdown = CancellationToken::new();
    let state = AppState(Arc::new(AppInner {
        jobs: store.clone(),
        control: stores.control.clone(),
        tokens: stores.tokens.clone(),
        engines: Arc::new(EngineCache::new(stores.control.clone(), Duration::from_secs(1))),
        keys,
        limits: Arc::new(limits),
        inflight: Arc::default(),
        clock,
        shutdown: shutdown.clone(),
        started,
        caps,
        drain: Arc::default(),
        presence: Arc::default(),
        metrics: Arc::default(),
        total_depth: Arc::new(tokio::sync::Mutex::new((started, 0, 0.0))),
        created_since_total: Arc::default(),
        network: Arc::new(NetworkPolicy {
            proxy: ProxyTrust { proxies: args.trusted_proxies.clone(), header: args.client_ip_header },
            public: CidrRules { allow: args.allow_cidrs.clone(), deny: args.deny_cidrs.clone() },
            internal: CidrRules { allow: args.engine_allow_cidrs.clone(), deny: args.engine_deny_cidrs.clone() },
        }),
        sign_in: Arc::new(SignInPolicy {
            origins: allowed_origins(&args.allowed_origins, addr),
            chain_ids: args.chain_ids.clone(),
            nonce_ttl: args.nonce_ttl,
            max_nonces: args.max_nonces,
        }),
        access_ttl: args.access_ttl,
        refresh_ttl: args.refresh_ttl,
        rate_limits: Arc::new(RateLimits {
            per_ip: Limit::new("per-ip", args.rate_ip),
            ipv6_prefix: args.rate_ip_v6_prefix,
            per_user: Limit::new("per-user", args.rate_user),
            nonce_per_ip: Limit::new("nonce-per-ip", args.rate_nonce),
        }),
    }));
    tokio::spawn(forget_idle_buckets(state.rate_limits.clone(), shutdown.clone()));
    tokio::spawn(prune_audit_log(state.control.clone(), args.audit_retention, shutdown.clone()));
    let rules = AlertRules {
        webhooks: args.alert_webhooks.clone(),
        queue_latency_p95_ms: args.alert_queue_latency_p95_ms,
        queue_depth: args.alert_queue_depth,
        error_rate: args.alert_error_rate,
        error_window: args.alert_error_window,
        interval: args.alert_interval,
    };
    tokio::spawn(crate::background::alerts::run(state.clone(), Arc::new(rules), shutdown.clone()));

    stores.refresh_shared_keys(state.keys.clone(), shutdown.clone());
    stores.watch_revocations(state.keys.clone(), shutdown.clone()).await?;
    // Open the known shards in the background: readiness does not wait for them.
    if let Backend::Sqlite(warm) = &stores.backend {
        let warm = warm.clone();
        tokio::spawn(async move {
            match warm.open_all_shards().await {
                Ok(count) => tracing::info!(shards = count, "shards open"),
                Err(error) => tracing::error!(%error, "could not open every shard"),
            }
        });
    }
    tokio::spawn(reap_expired_leases(
        store.clone(),
        Duration::from_millis(args.reap_interval_ms.max(10)),
        shutdown.clone(),
    ));

    tokio::spawn(crate::background::retention::run(
        store.clone(),
        state.clock.clone(),
        args.retention,
        args.retention_interval.max(Duration::from_secs(1)),
        shutdown.clone(),
    ));
    tokio::spawn(crate::background::scheduler::run(
        store.clone(),
        state.drain.clone(),
        Duration::from_millis(args.schedule_interval_ms.max(10)),
        args.schedule_grace,
        shutdown.clone(),
    ));

    let gui = args.gui_dir.as_deref().map(crate::http::gui::service).transpose()?;
    let (socket_io, live) = crate::live::Live::start(&state, args.redis.as_deref()).await?;
    let stopping = state.clone();
    let grace = args.drain_grace;
    let control = state.control.clone();
    let app = crate::api::router(state, socket_io, gui);
    let served = crate::http::connections::serve(listener, app, connection_limits, async move {
        flowork_common::signal::stop_requested().await;
        drain_then_stop(&stopping, grace).await;
        // Open Socket.IO connections would hold the server open.
        live.close().await;
    })
    .await;
    // The head of the audit log covers every row up to the stop, so none of them can be cut unnoticed.
    if let Err(error) = control.checkpoint_audit().await {
        tracing::error!(%error, "could not checkpoint the head of the audit log");
    }
    served?;
    Ok(())
}

/// SIGTERM: refuse new jobs (503, `/readyz` failing), hand out no more work, let engines finish what runs, and
/// return when nothing runs or `grace` is over. Queued jobs stay in their shards for the next start.
async fn drain_then_stop(state: &AppState, grace: Duration) {
    state.drain.stop();
    state.shutdown.cancel();
    state.audit(AuditEntry::new("signal", "gateway.drain", "ok").detail("SIGTERM")).await;
    tracing::info!(grace_ms = grace.as_millis() as u64, "draining: waiting for running jobs");
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        let running = match state.queue_totals().await {
            Ok(totals) => totals.running,
            Err(error) => {
                tracing::warn!(%error, "could not count running jobs");
                0
            }
        };
        if running == 0 {
            tracing::info!("no job running; shutting down");
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(running, "grace period over; shutting down (their leases will lapse)");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
    let mut ticker = Ticker::new(Duration::from_secs(60), shutdown);
    while ticker.next().await {
        if let Some(limit) = &limits.per_ip {
            limit.forget_idle();
        }
        if let Some(limit) = &limits.per_user {
            limit.forget_idle();
        }
        if let Some(limit) = &limits.nonce_per_ip {
            limit.forget_idle();
        }
    }
}

/// Prunes audit rows past their retention (`--audit-retention`; zero keeps them), at start and hourly, keeping
/// the rest of the log verifiable.
async fn prune_audit_log(control: Arc<dyn ControlStore>, retention: Duration, shutdown: CancellationToken) {
    if retention.is_zero() {
        return;
    }
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let mut ticker = Ticker::new(Duration::from_secs(3600), shutdown);
    while ticker.next().await {
        let before = flowork_common::clock::system_now_ms().saturating_sub(retention_ms);
        match control.prune_audit(before).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "pruned old audit rows"),
            Err(error) => tracing::warn!(%error, "audit pruning failed"),
        }
    }
}

/// Periodically requeues jobs whose engine stopped heartbeating.
async fn reap_expired_leases(store: Arc<dyn JobStore>, every: Duration, shutdown: CancellationToken) {
    let mut ticker = Ticker::new(every, shutdown);
    while ticker.next().await {
        match store.reap_expired_leases().await {
            Ok(0) => {}
            Ok(reaped) => tracing::info!(reaped, "requeued jobs with expired leases"),
            Err(error) => tracing::warn!(%error, "lease reaper failed"),
        }
    }
}

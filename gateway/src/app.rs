//! The composition root: the stores, the shared state and the router built from the `serve` configuration, and
//! the background loops that go with them. `serve` puts it on a listener; tests can build it and call the router
//! in-process.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use flowork_common::clock::{Clock, SystemClock};
use tokio_util::sync::CancellationToken;

use crate::admission::AdmissionLimits;
use crate::admission::enqueue::JobLimits;
use crate::admission::gate::Admission;
use crate::auth::engine_cache::EngineCache;
use crate::auth::jwt::KeyRing;
use crate::auth::signin::{SignInPolicy, normalize_origin};
use crate::background::alerts::AlertRules;
use crate::background::periodic::Ticker;
use crate::config::ServeArgs;
use crate::http::client_ip::ProxyTrust;
use crate::http::network::{CidrRules, NetworkPolicy};
use crate::http::rate_limit::{Limit, RateLimits};
use crate::live::Live;
use crate::state::{AppInner, AppState};
use crate::store::open::{Backend, StorePolicies, Stores};
use crate::store::{BreakerPolicy, ControlStore, JobStore, RetryPolicy};

/// The store of a `serve` configuration, open and migrated, with its signing keys.
pub struct OpenedStores {
    stores: Stores,
    keys: KeyRing,
    clock: Arc<dyn Clock>,
    caps: AdmissionLimits,
}

impl OpenedStores {
    pub async fn open(args: &ServeArgs) -> anyhow::Result<Self> {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let retry = RetryPolicy { base_ms: args.jobs.retry_base_ms, cap_ms: args.jobs.retry_cap_ms };
        let caps = AdmissionLimits {
            max_queue_depth: args.admission.max_queue_depth,
            max_total_depth: args.admission.max_total_depth,
            max_user_inflight: args.admission.max_user_inflight,
        };
        let breaker = BreakerPolicy {
            failures: args.jobs.breaker_failures,
            window_ms: args.jobs.breaker_window.as_millis() as u64,
            cooldown_ms: args.jobs.breaker_cooldown.as_millis() as u64,
        };
        let stores =
            crate::store::open::open(&args.data, clock.clone(), StorePolicies { retry, caps, breaker }).await?;
        let keys = stores.key_ring(&args.data).await?;
        Ok(Self { stores, keys, clock, caps })
    }
}

/// A gateway ready to serve: its state, its router (every route, Socket.IO and the GUI) and its stores.
pub struct App {
    pub state: AppState,
    pub router: Router,
    pub live: Arc<Live>,
    pub stores: Stores,
}

impl App {
    /// Opens the store and builds the state and the router for a gateway listening on `addr` (its own origin is
    /// the default GUI origin). Nothing runs in the background until `start_background`.
    pub async fn build(args: &ServeArgs, addr: SocketAddr) -> anyhow::Result<Self> {
        Self::assemble(args, OpenedStores::open(args).await?, addr).await
    }

    /// Builds the state and the router on stores already open (`serve` opens them before it listens, so a store
    /// it cannot run on is refused before anything is served).
    pub async fn assemble(args: &ServeArgs, opened: OpenedStores, addr: SocketAddr) -> anyhow::Result<Self> {
        let OpenedStores { stores, keys, clock, caps } = opened;
        let started = std::time::Instant::now();
        let limits = JobLimits {
            max_payload_bytes: args.jobs.max_payload_bytes,
            default_max_attempts: args.jobs.default_max_attempts,
            default_timeout_ms: args.jobs.default_timeout_ms,
            ..JobLimits::default()
        };
        let state = AppState(Arc::new(AppInner {
            jobs: stores.jobs.clone(),
            control: stores.control.clone(),
            tokens: stores.tokens.clone(),
            engines: Arc::new(EngineCache::new(stores.control.clone(), Duration::from_secs(1))),
            keys: Arc::new(keys),
            limits: Arc::new(limits),
            admission: Arc::new(Admission::new(stores.jobs.clone(), stores.control.clone(), caps)),
            clock,
            shutdown: CancellationToken::new(),
            started,
            presence: Arc::default(),
            metrics: Arc::default(),
            network: Arc::new(NetworkPolicy {
                proxy: ProxyTrust {
                    proxies: args.network.trusted_proxies.clone(),
                    header: args.network.client_ip_header,
                },
                public: CidrRules { allow: args.network.allow_cidrs.clone(), deny: args.network.deny_cidrs.clone() },
                internal: CidrRules {
                    allow: args.network.engine_allow_cidrs.clone(),
                    deny: args.network.engine_deny_cidrs.clone(),
                },
            }),
            sign_in: Arc::new(SignInPolicy {
                origins: allowed_origins(&args.http.allowed_origins, addr, args.http.tls_cert.is_some()),
                chain_ids: args.auth.chain_ids.clone(),
                nonce_ttl: args.auth.nonce_ttl,
                max_nonces: args.auth.max_nonces,
            }),
            access_ttl: args.auth.access_ttl,
            refresh_ttl: args.auth.refresh_ttl,
            rate_limits: Arc::new(RateLimits {
                per_ip: Limit::new("per-ip", args.network.rate_ip),
                ipv6_prefix: args.network.rate_ip_v6_prefix,
                per_user: Limit::new("per-user", args.network.rate_user),
                nonce_per_ip: Limit::new("nonce-per-ip", args.auth.rate_nonce),
            }),
        }));
        stores.watch_revocations(state.keys.clone(), state.shutdown.clone()).await?;
        let gui = args.http.gui_dir.as_deref().map(crate::http::gui::service).transpose()?;
        let (socket_io, live) = Live::start(&state, args.http.redis.as_deref()).await?;
        let router = crate::api::router(state.clone(), socket_io, gui);
        Ok(Self { state, router, live, stores })
    }

    /// Starts the background loops: lease reaping, retention, cron ticks, alerts, audit pruning, key refresh,
    /// idle rate-limit buckets, and opening the known shards. They stop when the state's shutdown fires.
    pub fn start_background(&self, args: &ServeArgs) {
        let (state, shutdown) = (&self.state, self.state.shutdown.clone());
        let store = state.jobs.clone();
        tokio::spawn(forget_idle_buckets(state.rate_limits.clone(), shutdown.clone()));
        tokio::spawn(prune_audit_log(state.control.clone(), args.upkeep.audit_retention, shutdown.clone()));
        let rules = AlertRules {
            webhooks: args.alerts.alert_webhooks.clone(),
            queue_latency_p95_ms: args.alerts.alert_queue_latency_p95_ms,
            queue_depth: args.alerts.alert_queue_depth,
            error_rate: args.alerts.alert_error_rate,
            error_window: args.alerts.alert_error_window,
            interval: args.alerts.alert_interval,
        };
        tokio::spawn(crate::background::alerts::run(state.clone(), Arc::new(rules), shutdown.clone()));
        self.stores.refresh_shared_keys(state.keys.clone(), shutdown.clone());
        // Open the known shards in the background: readiness does not wait for them.
        if let Backend::Sqlite(warm) = &self.stores.backend {
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
            Duration::from_millis(args.upkeep.reap_interval_ms.max(10)),
            shutdown.clone(),
        ));
        tokio::spawn(crate::background::retention::run(
            store.clone(),
            state.clock.clone(),
            args.upkeep.retention,
            args.upkeep.retention_interval.max(Duration::from_secs(1)),
            shutdown.clone(),
        ));
        tokio::spawn(crate::background::scheduler::run(
            store,
            state.admission.drain.clone(),
            Duration::from_millis(args.upkeep.schedule_interval_ms.max(10)),
            args.upkeep.schedule_grace,
            shutdown,
        ));
    }
}

/// The GUI origins: as configured, or else the gateway's own origin (so the locally served GUI works).
fn allowed_origins(configured: &[String], addr: std::net::SocketAddr, tls: bool) -> Vec<String> {
    if !configured.is_empty() {
        return configured.iter().map(|o| normalize_origin(o)).collect();
    }
    let scheme = if tls { "https" } else { "http" };
    let mut origins = vec![format!("{scheme}://{addr}")];
    if addr.ip().is_loopback() {
        origins.push(format!("{scheme}://localhost:{}", addr.port()));
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

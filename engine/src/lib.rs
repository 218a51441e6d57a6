//! The Flowork engine as a library: claim jobs from a gateway and run them with built-in or custom handlers.

pub mod autoscale;
pub mod claim;
pub mod client;
pub mod config;
pub mod finisher;
pub mod handlers;
pub mod metrics;
pub mod pool;
pub mod runner;
pub mod shutdown;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::autoscale::{AutoscalePolicy, Autoscaler, Decision};
use crate::claim::ClaimSettings;
use crate::client::GatewayClient;
use crate::config::{EngineArgs, FileConfig};
use crate::handlers::Registry;
use crate::metrics::{DirectionLabels, EngineMetrics};
use crate::pool::WorkerPool;
use crate::runner::JobRunner;

/// Runs an engine until SIGTERM/SIGINT (then drains) or a fatal error.
pub async fn run(args: EngineArgs) -> anyhow::Result<()> {
    let token = args.read_token()?;
    let config = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let handlers = Registry::builtin(&config)?;
    let client = GatewayClient::new(&args.gateway, token, &args.engine_id)?;
    let who = client.whoami().await.with_context(|| format!("checking the engine token with {}", args.gateway))?;
    if who.engine_id != args.engine_id {
        bail!("the token belongs to engine {:?}, not {:?}", who.engine_id, args.engine_id);
    }
    let workers = args.workers.max(1);
    let min_workers = args.min_workers.unwrap_or(workers).clamp(1, workers);
    let max_workers = args.max_workers.unwrap_or(workers).max(workers);
    let pool = WorkerPool::new(workers, min_workers, max_workers);
    let settings = ClaimSettings {
        wait_ms: args.wait_ms,
        lease_ms: args.lease_ms,
        grace: Duration::from_millis(args.grace_ms),
        worker_name: format!("{}/pid-{}", args.engine_id, std::process::id()),
    };
    tracing::info!(engine_id = %args.engine_id, gateway = %args.gateway, workers = args.workers, "engine started");
    let metrics = Arc::new(EngineMetrics::default());
    if let Some(addr) = args.metrics_listen {
        let (metrics, pool) = (metrics.clone(), pool.clone());
        tokio::spawn(async move {
            if let Err(error) = metrics::serve(addr, metrics, pool).await {
                tracing::error!(%error, "metrics server stopped");
            }
        });
    }
    let finisher = finisher::Finisher::spawn(client.clone());
    let runner = Arc::new(JobRunner {
        client,
        finisher,
        handlers,
        lease_ms: args.lease_ms,
        pool: pool.clone(),
        metrics: metrics.clone(),
    });
    let shutdown = shutdown::on_signal();
    let policy = AutoscalePolicy {
        target_latency_ms: args.slo_target_latency as f64,
        min_workers,
        max_workers,
        headroom: args.headroom_factor.max(1.3),
    };
    tokio::spawn(autoscale(pool, metrics, policy, args.autoscale_window, shutdown.clone()));
    claim::run(runner, settings, shutdown).await?;
    tracing::info!("engine stopped");
    Ok(())
}

/// Every window, feeds the pool's numbers to the autoscaling policy and applies its decision.
async fn autoscale(
    pool: Arc<WorkerPool>,
    metrics: Arc<EngineMetrics>,
    policy: AutoscalePolicy,
    window: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut scaler = Autoscaler::new(policy, pool.size());
    let mut tick = tokio::time::interval(window.max(Duration::from_millis(100)));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let stats = pool.close_window();
        let decision = scaler.observe(stats);
        match decision {
            Decision::Hold => tracing::debug!(?stats, workers = pool.size(), "autoscaler holds"),
            Decision::Up { to } | Decision::Down { to } => {
                tracing::info!(?decision, ?stats, from = pool.size(), to, "autoscaler resizes the pool");
                pool.resize(to);
                let direction = if matches!(decision, Decision::Up { .. }) { "up" } else { "down" };
                metrics.autoscale_decisions.get_or_create(&DirectionLabels { direction: direction.into() }).inc();
            }
        }
    }
}

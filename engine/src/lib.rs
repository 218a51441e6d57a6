//! The Flowork engine as a library: claim jobs from a gateway and run them with built-in or custom handlers.
//!
//! ```no_run
//! use clap::Parser;
//! use flowork_engine::{Engine, JobFailure, config::EngineArgs};
//! use serde_json::{Value, json};
//!
//! # async fn example() -> anyhow::Result<()> {
//! Engine::new(EngineArgs::parse()) // the flags and environment of `flowork-engine`
//!     .handle("upper", |payload: Value, _progress| async move {
//!         let text = payload["text"].as_str().ok_or_else(|| JobFailure::permanent("no text"))?;
//!         Ok(json!({ "text": text.to_uppercase() }))
//!     })
//!     .run()
//!     .await
//! # }
//! ```

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

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::autoscale::{AutoscalePolicy, Autoscaler, Decision};
use crate::claim::ClaimSettings;
use crate::client::GatewayClient;
use crate::config::{EngineArgs, FileConfig};
use crate::handlers::Registry;
use crate::handlers::function::FunctionHandler;
pub use crate::handlers::{JobFailure, JobHandler, ProgressSink};
use crate::metrics::{DirectionLabels, EngineMetrics};
use crate::pool::WorkerPool;
use crate::runner::JobRunner;

/// Runs `flowork-engine`: the built-in kinds only, until SIGTERM/SIGINT (then drains) or a fatal error.
pub async fn run(args: EngineArgs) -> anyhow::Result<()> {
    Engine::new(args).run().await
}

/// An engine to run: its settings, the built-in kinds unless left out, and your own handlers, which take
/// precedence over a built-in kind of the same name.
pub struct Engine {
    args: EngineArgs,
    builtins: bool,
    custom: Registry,
}

impl Engine {
    /// An engine with the settings of `flowork-engine`'s command line (`EngineArgs::parse()` reads the same flags
    /// and environment variables) and the built-in kinds.
    pub fn new(args: EngineArgs) -> Self {
        Self { args, builtins: true, custom: Registry::default() }
    }

    /// Runs `handler` for jobs of `kind`.
    pub fn handler(mut self, kind: &str, handler: impl JobHandler + 'static) -> Self {
        self.custom.insert(kind, Arc::new(handler));
        self
    }

    /// Runs an async function for jobs of `kind`: it gets the payload and a progress sink; its value is the job's
    /// result, its `JobFailure` the job's error (retried unless permanent).
    pub fn handle<F, Fut>(self, kind: &str, function: F) -> Self
    where
        F: Fn(serde_json::Value, ProgressSink) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<serde_json::Value, JobFailure>> + Send + 'static,
    {
        self.handler(kind, FunctionHandler::new(kind, function))
    }

    /// Leaves the built-in kinds (`echo`, `sleep`, `http`, `exec`, `llm`) out: only your handlers run.
    pub fn without_builtins(mut self) -> Self {
        self.builtins = false;
        self
    }

    /// The kinds this engine will run (the built-in ones configured by its config file, and yours).
    fn registry(&self) -> anyhow::Result<Registry> {
        let mut handlers = if self.builtins {
            let config = match &self.args.config {
                Some(path) => FileConfig::load(path)?,
                None => FileConfig::default(),
            };
            Registry::builtin(&config)?
        } else {
            Registry::default()
        };
        for kind in self.custom.kinds() {
            if let Some(handler) = self.custom.get(kind) {
                handlers.insert(kind, handler);
            }
        }
        if handlers.kinds().is_empty() {
            bail!("this engine has no handlers: add one with Engine::handle or keep the built-in kinds");
        }
        Ok(handlers)
    }

    /// Runs until SIGTERM/SIGINT (then drains: running jobs finish within `--grace-ms`) or a fatal error.
    pub async fn run(self) -> anyhow::Result<()> {
        let handlers = self.registry()?;
        serve(self.args, handlers).await
    }
}

/// Claims and runs jobs of `args.engine_id` with `handlers`.
async fn serve(args: EngineArgs, handlers: Registry) -> anyhow::Result<()> {
    let token = args.read_token()?;
    let client = GatewayClient::new(&args.gateway, token, &args.engine_id, args.read_ca_file()?)?;
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
    tracing::info!(
        engine_id = %args.engine_id,
        gateway = %args.gateway,
        workers = args.workers,
        kinds = ?handlers.kinds(),
        "engine started"
    );
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
    // After the stop signals are listened for: a stop right after readiness drains.
    flowork_common::service::ready();
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

#[cfg(test)]
mod tests {
    use clap::Parser;
    use serde_json::json;

    use super::*;

    fn args() -> EngineArgs {
        EngineArgs::parse_from(["flowork-engine", "--engine-id", "mine", "--token", "fwe_x"])
    }

    #[test]
    fn your_handlers_join_the_built_in_kinds_and_replace_one_of_the_same_name() {
        let engine = Engine::new(args())
            .handle("echo", |_, _| async { Ok(json!("mine")) })
            .handle("upper", |v, _| async { Ok(v) });
        assert_eq!(engine.registry().unwrap().kinds(), ["echo", "exec", "http", "sleep", "upper"]);
        let only = Engine::new(args()).without_builtins().handle("upper", |v, _| async { Ok(v) });
        assert_eq!(only.registry().unwrap().kinds(), ["upper"]);
        let none = Engine::new(args()).without_builtins().registry().err().map(|e| e.to_string());
        assert!(none.is_some_and(|e| e.contains("no handlers")));
    }

    #[tokio::test]
    async fn a_replaced_built_in_kind_runs_your_handler() {
        let engine = Engine::new(args()).handle("echo", |_, _| async { Ok(json!("mine")) });
        let handler = engine.registry().unwrap().get("echo").unwrap();
        let payload = serde_json::value::RawValue::from_string("{}".into()).unwrap();
        let result = handler.run(&payload, &ProgressSink::default()).await.unwrap();
        assert_eq!(result.get(), r#""mine""#);
    }
}

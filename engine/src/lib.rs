//! The Flowork engine as a library: claim jobs from a gateway and run them with built-in or custom handlers.

pub mod claim;
pub mod client;
pub mod config;
pub mod handlers;
pub mod runner;
pub mod shutdown;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::claim::ClaimSettings;
use crate::client::GatewayClient;
use crate::config::{EngineArgs, FileConfig};
use crate::handlers::Registry;
use crate::runner::JobRunner;

/// Runs an engine until SIGTERM/SIGINT (then drains) or a fatal error.
pub async fn run(args: EngineArgs) -> anyhow::Result<()> {
    let token = args.read_token()?;
    let config = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let handlers = Registry::builtin(&config)?;
    let client = GatewayClient::new(&args.gateway, token)?;
    let who = client.whoami().await.with_context(|| format!("checking the engine token with {}", args.gateway))?;
    if who.engine_id != args.engine_id {
        bail!("the token belongs to engine {:?}, not {:?}", who.engine_id, args.engine_id);
    }
    let settings = ClaimSettings {
        workers: args.workers,
        wait_ms: args.wait_ms,
        lease_ms: args.lease_ms,
        grace: Duration::from_millis(args.grace_ms),
        worker_name: format!("{}/pid-{}", args.engine_id, std::process::id()),
    };
    tracing::info!(engine_id = %args.engine_id, gateway = %args.gateway, workers = args.workers, "engine started");
    let runner = Arc::new(JobRunner { client, handlers, lease_ms: args.lease_ms });
    let shutdown = shutdown::on_signal();
    claim::run(runner, settings, shutdown).await?;
    tracing::info!("engine stopped");
    Ok(())
}

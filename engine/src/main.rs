//! `flowork-engine`: parse the command line, run the engine.

use clap::Parser;
use flowork_common::logging;
use flowork_engine::config::EngineArgs;

/// mimalloc: the request path allocates a lot of small, short-lived objects, where glibc malloc was a third of
/// the gateway's CPU under load (perf).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = EngineArgs::parse();
    let telemetry = logging::init(args.log_format, "flowork-engine");
    let result = flowork_engine::run(args).await;
    if let Some(telemetry) = telemetry {
        let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    }
    result
}

//! `flowork-engine`: parse the command line, run the engine.

use clap::Parser;
use flowork_common::logging;
use flowork_engine::config::EngineArgs;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = EngineArgs::parse();
    logging::init(args.log_format);
    flowork_engine::run(args).await
}

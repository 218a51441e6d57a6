//! `flowork-gateway`: parse the command line, run the chosen command.

use clap::Parser;
use flowork_common::logging;
use flowork_gateway::config::{Cli, Command};
use flowork_gateway::ops::commands;
use flowork_gateway::server;

/// mimalloc: the request path allocates a lot of small, short-lived objects, where glibc malloc was a third of
/// the gateway's CPU under load (perf).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let telemetry = logging::init(cli.log_format, "flowork-gateway");
    let result = match cli.command {
        Command::Serve(args) => server::serve(*args).await,
        Command::Engine(command) => commands::engine(command).await,
        Command::Token(command) => commands::token(command).await,
        Command::Keys(command) => commands::keys(command).await,
        Command::Audit(command) => commands::audit(command).await,
        Command::Admin(command) => commands::admin(command).await,
        Command::Backup { data, to } => commands::backup(&data, &to).await,
        Command::Restore { data, from, force } => commands::restore(&data, &from, force).await,
        Command::MigrateStore { data_dir, to } => commands::migrate_store(&data_dir, &to).await,
    };
    if let Some(telemetry) = telemetry {
        let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    }
    result
}

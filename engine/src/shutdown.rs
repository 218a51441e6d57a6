//! Turning SIGTERM/SIGINT (Ctrl-C on every OS) into a cancellation token.

use tokio_util::sync::CancellationToken;

/// A token cancelled when the process is asked to stop.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let fire = token.clone();
    tokio::spawn(async move {
        flowork_common::signal::stop_requested().await;
        tracing::info!("stop requested: no new claims");
        flowork_common::service::stopping();
        fire.cancel();
    });
    token
}

//! Turning SIGTERM/SIGINT (Ctrl-C on every OS) into a cancellation token.

use tokio_util::sync::CancellationToken;

/// A token cancelled when the process is asked to stop.
/// The signals are listened for from the call on (not from the task's first run).
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let fire = token.clone();
    let stop = flowork_common::signal::StopRequests::new();
    tokio::spawn(async move {
        stop.wait().await;
        tracing::info!("stop requested: no new claims");
        flowork_common::service::stopping();
        fire.cancel();
    });
    token
}

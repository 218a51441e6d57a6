//! Waiting for the process to be asked to stop: Ctrl-C everywhere, SIGTERM too on Unix.

/// Resolves on Ctrl-C (SIGINT), or SIGTERM on Unix.
pub async fn stop_requested() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

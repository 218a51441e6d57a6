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

/// SIGHUP (`systemctl reload`) on Unix, as a stream of requests to read the configuration files again; once
/// created, SIGHUP no longer ends the process. Elsewhere it never fires.
pub struct ReloadRequests {
    #[cfg(unix)]
    hangups: Option<tokio::signal::unix::Signal>,
}

impl ReloadRequests {
    pub fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Self { hangups: signal(SignalKind::hangup()).ok() }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// Waits for the next request.
    pub async fn next(&mut self) {
        #[cfg(unix)]
        if let Some(hangups) = &mut self.hangups
            && hangups.recv().await.is_some()
        {
            return;
        }
        std::future::pending::<()>().await;
    }
}

impl Default for ReloadRequests {
    fn default() -> Self {
        Self::new()
    }
}

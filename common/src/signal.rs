//! Waiting for the process to be asked to stop (Ctrl-C everywhere, SIGTERM too on Unix) or to reload (SIGHUP).

/// Resolves on Ctrl-C (SIGINT), or SIGTERM on Unix.
pub async fn stop_requested() {
    StopRequests::new().wait().await;
}

/// SIGTERM and Ctrl-C, listened for from creation on: make it before telling a service manager the process is
/// ready, so a stop sent right after readiness drains instead of killing the process.
pub struct StopRequests {
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl StopRequests {
    /// Must run inside the tokio runtime.
    pub fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Self { terminate: signal(SignalKind::terminate()).ok(), interrupt: signal(SignalKind::interrupt()).ok() }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// Waits for the first stop request.
    pub async fn wait(self) {
        #[cfg(unix)]
        if let (Some(mut terminate), Some(mut interrupt)) = (self.terminate, self.interrupt) {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = interrupt.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

impl Default for StopRequests {
    fn default() -> Self {
        Self::new()
    }
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

//! Drain: the gateway stops accepting new jobs (so a load balancer moves traffic away) while engines keep
//! claiming and finishing work. On SIGTERM it also stops handing out new work, waits for running jobs, then exits.
//!
//! Per process: draining one gateway of a pair (a canary) leaves the other accepting.

use std::sync::atomic::{AtomicBool, Ordering};

/// How long a client is told to wait while the gateway drains.
pub const DRAIN_RETRY_AFTER_S: u64 = 5;

#[derive(Debug, Default)]
pub struct DrainState {
    draining: AtomicBool,
    stopping: AtomicBool,
    /// Woken whenever draining starts or ends (live `gateway.drain` events).
    changed: tokio::sync::Notify,
}

impl DrainState {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// True once shutdown has begun: claims return nothing so running jobs can finish.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Starts draining; returns whether it was already draining.
    pub fn start(&self) -> bool {
        let was = self.draining.swap(true, Ordering::SeqCst);
        self.changed.notify_waiters();
        was
    }

    /// Resumes accepting jobs (not after a stop has begun); returns whether it was draining.
    pub fn resume(&self) -> bool {
        let was = !self.is_stopping() && self.draining.swap(false, Ordering::SeqCst);
        self.changed.notify_waiters();
        was
    }

    /// Drains for good, before the process exits.
    pub fn stop(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.stopping.store(true, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Resolves at the next start, resume or stop.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_resume_and_stop() {
        let state = DrainState::default();
        assert!(!state.start());
        assert!(state.is_draining() && !state.is_stopping());
        assert!(state.resume());
        assert!(!state.is_draining());
        state.stop();
        assert!(!state.resume(), "a stopping gateway does not resume");
        assert!(state.is_draining() && state.is_stopping());
    }
}

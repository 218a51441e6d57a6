//! The loop of every background task: wait for the next tick unless the gateway is stopping.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Ticks every `every` (a late tick delays the next, never bursts) until `shutdown` fires.
pub struct Ticker {
    interval: tokio::time::Interval,
    shutdown: CancellationToken,
}

impl Ticker {
    pub fn new(every: Duration, shutdown: CancellationToken) -> Self {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self { interval, shutdown }
    }

    /// Waits for the next tick; false once the gateway is stopping.
    pub async fn next(&mut self) -> bool {
        tokio::select! {
            _ = self.interval.tick() => true,
            _ = self.shutdown.cancelled() => false,
        }
    }
}

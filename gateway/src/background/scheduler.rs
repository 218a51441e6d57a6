//! The cron ticker: fires due schedule ticks on every shard, as often as `--schedule-interval-ms` says.
//!
//! Exactly-once lives in the shards (each tick's job has the idempotency key `schedule:<id>:<tick>`), so any
//! number of gateway processes may tick the same data directory.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::background::periodic::Ticker;

use crate::admission::drain::DrainState;
use crate::store::JobStore;

/// Fires due ticks until `shutdown`; a draining gateway leaves them to the next one (they fire late, within the
/// misfire grace, or follow the schedule's missed-tick policy).
pub async fn run(
    store: Arc<dyn JobStore>,
    drain: Arc<DrainState>,
    every: Duration,
    grace: Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = Ticker::new(every, shutdown);
    while ticker.next().await {
        if drain.is_draining() {
            continue;
        }
        match store.fire_schedules(grace.as_millis() as u64).await {
            Ok(0) => {}
            Ok(created) => tracing::debug!(created, "scheduled jobs enqueued"),
            Err(error) => tracing::warn!(%error, "firing schedules failed"),
        }
    }
}

//! Retention: deletes finished jobs older than `--retention` on every shard, a batch at a time, so the data
//! directory stops growing under steady load (shards give freed pages back with incremental vacuum).

use std::sync::Arc;
use std::time::Duration;

use flowork_common::clock::Clock;
use tokio_util::sync::CancellationToken;

use crate::background::periodic::Ticker;

use crate::store::JobStore;

/// The shortest retention: idempotency keys live with their jobs and must answer retries for a day.
pub const MIN_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Jobs deleted per shard per transaction; more batches follow at once while there is more to delete.
const BATCH: u32 = 5_000;

/// Refuses a retention shorter than a day (zero means keep everything).
pub fn check(retention: Duration) -> Result<(), String> {
    if !retention.is_zero() && retention < MIN_RETENTION {
        return Err(format!(
            "--retention {} is shorter than 24h: idempotency keys must be kept at least a day (0s keeps jobs forever)",
            humantime::format_duration(retention)
        ));
    }
    Ok(())
}

/// Prunes every `every` until `shutdown`.
pub async fn run(
    store: Arc<dyn JobStore>,
    clock: Arc<dyn Clock>,
    retention: Duration,
    every: Duration,
    shutdown: CancellationToken,
) {
    if retention.is_zero() {
        return;
    }
    let mut ticker = Ticker::new(every, shutdown);
    while ticker.next().await {
        let before = clock.now_ms() - retention.as_millis() as i64;
        loop {
            match store.prune_finished(before, BATCH).await {
                Ok(0) => break,
                Ok(pruned) => {
                    tracing::info!(pruned, "deleted finished jobs past their retention");
                    if pruned < u64::from(BATCH) {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "retention failed; retrying at the next interval");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_keeps_idempotency_keys_for_a_day() {
        assert!(check(Duration::from_secs(3600)).is_err());
        assert!(check(Duration::ZERO).is_ok());
        assert!(check(MIN_RETENTION).is_ok());
    }
}

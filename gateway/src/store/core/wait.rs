//! The long-poll wait for work, one loop for both drivers: look for work; if there is none, sleep until an enqueue
//! wakes the engine's `Notify`, the next delayed job is due, the claim's wait is over, or the caller stops.

use std::future::Future;
use std::time::Duration;

use flowork_common::clock::Clock;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::store::StoreError;

/// Calls `look` until it finds something or `wait_ms` is over; `look` answers what it leased and when something
/// may next become claimable (Unix ms, by `clock`). Returns nothing at once when `stop` fires.
pub async fn wait_for_work<T, F, Fut>(
    wake: &Notify,
    clock: &dyn Clock,
    wait_ms: u64,
    stop: &CancellationToken,
    mut look: F,
) -> Result<Vec<T>, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(Vec<T>, Option<i64>), StoreError>>,
{
    let deadline = Instant::now() + Duration::from_millis(wait_ms);
    loop {
        // Registered before looking, so work committed in between is not missed.
        let woken = wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let (found, next_due_ms) = look().await?;
        if !found.is_empty() || Instant::now() >= deadline {
            return Ok(found);
        }
        let mut wake_at = deadline;
        if let Some(due) = next_due_ms {
            let in_ms = (due - clock.now_ms()).max(1) as u64;
            wake_at = wake_at.min(Instant::now() + Duration::from_millis(in_ms));
        }
        tokio::select! {
            _ = woken => {}
            _ = tokio::time::sleep_until(wake_at) => {}
            _ = stop.cancelled() => return Ok(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use flowork_common::clock::SystemClock;

    use super::*;

    const AN_HOUR_MS: u64 = 3_600_000;

    /// Guards against a hang (a missed wake-up would wait the whole hour), not a measure of speed.
    async fn within_a_minute<T>(work: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(60), work).await.expect("woken long before the claim's wait is over")
    }

    #[tokio::test]
    async fn work_committed_right_after_an_empty_look_wakes_the_wait() {
        let wake = Notify::new();
        let looks = Cell::new(0);
        let found = within_a_minute(wait_for_work(&wake, &SystemClock, AN_HOUR_MS, &CancellationToken::new(), || {
            looks.set(looks.get() + 1);
            let first = looks.get() == 1;
            // An enqueue commits (and notifies) between the look and the sleep.
            if first {
                wake.notify_waiters();
            }
            async move { Ok((if first { vec![] } else { vec![7] }, None)) }
        }))
        .await
        .expect("no store error");
        assert_eq!((found, looks.get()), (vec![7], 2));
    }

    #[tokio::test]
    async fn a_delayed_job_coming_due_ends_the_sleep_and_stop_ends_the_wait_empty() {
        let wake = Notify::new();
        let looks = Cell::new(0);
        let found = within_a_minute(wait_for_work(&wake, &SystemClock, AN_HOUR_MS, &CancellationToken::new(), || {
            looks.set(looks.get() + 1);
            let first = looks.get() == 1;
            let due = SystemClock.now_ms() + 5;
            async move { Ok(if first { (vec![], Some(due)) } else { (vec!["due"], None) }) }
        }))
        .await
        .expect("no store error");
        assert_eq!((found, looks.get()), (vec!["due"], 2));

        let stop = CancellationToken::new();
        stop.cancel();
        let found: Vec<u8> =
            within_a_minute(wait_for_work(&wake, &SystemClock, AN_HOUR_MS, &stop, || async { Ok((vec![], None)) }))
                .await
                .expect("no store error");
        assert!(found.is_empty());
    }
}

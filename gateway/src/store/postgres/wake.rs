//! Claim wake-ups across a fleet: every gateway LISTENs on `flowork_wake`; a commit that makes jobs of an engine
//! claimable sends `pg_notify('flowork_wake', <engine>)`, and the waiting claims of that engine wake at once on
//! whichever gateway they wait. If the listening connection drops, every waiting claim is woken (to look again)
//! and the listener reconnects.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::task::Poll;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

/// The channel every gateway listens on.
pub const CHANNEL: &str = "flowork_wake";

/// One wake-up per engine, shared by the claims waiting on it in this process.
#[derive(Default)]
pub struct Wakers(RwLock<HashMap<String, Arc<Notify>>>);

impl Wakers {
    /// The wake-up of `engine` (made on first use).
    pub fn of(&self, engine: &str) -> Arc<Notify> {
        if let Some(found) = self.0.read().ok().and_then(|map| map.get(engine).cloned()) {
            return found;
        }
        let mut map = match self.0.write() {
            Ok(map) => map,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry(engine.to_string()).or_default().clone()
    }

    /// Wakes the claims waiting on `engine`.
    pub fn wake(&self, engine: &str) {
        if let Some(found) = self.0.read().ok().and_then(|map| map.get(engine).cloned()) {
            found.notify_waiters();
        }
    }

    /// Wakes every waiting claim (after a lost listener connection, when notifications may have been missed).
    pub fn wake_all(&self) {
        if let Ok(map) = self.0.read() {
            map.values().for_each(|notify| notify.notify_waiters());
        }
    }
}

/// Listens until `stop`, reconnecting after a lost connection.
pub async fn listen(config: tokio_postgres::Config, wakers: Arc<Wakers>, stop: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    while !stop.is_cancelled() {
        match listen_once(&config, &wakers, &stop).await {
            Ok(()) if stop.is_cancelled() => return,
            Ok(()) => tracing::warn!("the PostgreSQL wake-up listener's connection closed; reconnecting"),
            Err(error) => tracing::warn!(%error, "the PostgreSQL wake-up listener lost its connection; reconnecting"),
        }
        wakers.wake_all();
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One connection's life: LISTEN, then forward notifications until it fails or `stop` fires.
async fn listen_once(
    config: &tokio_postgres::Config,
    wakers: &Arc<Wakers>,
    stop: &CancellationToken,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let forward = wakers.clone();
    let driver = tokio::spawn(async move {
        std::future::poll_fn(|cx| {
            loop {
                match connection.poll_message(cx) {
                    Poll::Ready(Some(Ok(AsyncMessage::Notification(note)))) => forward.wake(note.payload()),
                    Poll::Ready(Some(Ok(_))) => continue,
                    Poll::Ready(Some(Err(error))) => return Poll::Ready(Err(error)),
                    Poll::Ready(None) => return Poll::Ready(Ok(())),
                    Poll::Pending => return Poll::Pending,
                }
            }
        })
        .await
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    // Anything committed before LISTEN took effect would be missed: let the waiting claims look once.
    wakers.wake_all();
    tokio::select! {
        ended = driver => match ended {
            Ok(result) => result,
            Err(join) => {
                tracing::warn!(error = %join, "the wake-up listener task failed");
                Ok(())
            }
        },
        _ = stop.cancelled() => Ok(()),
    }
}

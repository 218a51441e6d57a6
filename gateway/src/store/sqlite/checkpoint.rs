//! WAL checkpoints off the write path: a shard's writer never checkpoints itself (its `wal_autocheckpoint` is
//! off), so no commit waits for the `fsync` a checkpoint does. A thread per shard runs a `PASSIVE` checkpoint on
//! its own connection every interval instead; PASSIVE never blocks the writer or readers, and a second gateway
//! process on the same data directory simply takes turns with this one.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use super::connection::open_existing_writer;
use crate::store::StoreError;

/// How often a shard's WAL is copied back into the database file.
pub const INTERVAL: Duration = Duration::from_millis(200);

/// Stops the checkpoint thread when dropped (with the shard).
pub struct Checkpointer {
    stop: Arc<AtomicBool>,
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Checkpointer {
    /// Starts the checkpoint thread of the shard at `path`.
    pub fn spawn(path: &Path, engine: &str) -> Result<Self, StoreError> {
        let conn = open_existing_writer(path)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let name = engine.to_string();
        thread::Builder::new()
            .name(format!("shard-ckpt-{engine}"))
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    thread::sleep(INTERVAL);
                    let result: rusqlite::Result<(i64, i64, i64)> =
                        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)));
                    if let Err(error) = result {
                        tracing::warn!(engine = %name, %error, "WAL checkpoint failed; retrying");
                    }
                }
            })
            .map_err(|source| StoreError::Io { path: format!("checkpoint thread for {engine}"), source })?;
        Ok(Self { stop })
    }
}

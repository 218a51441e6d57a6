//! WAL checkpoints off the write path: a shard's writer never checkpoints itself (its `wal_autocheckpoint` is
//! off), so no commit waits for the `fsync` a checkpoint does. A thread per shard runs a `PASSIVE` checkpoint on
//! its own connection every interval instead; PASSIVE never blocks the writer or readers, and a second gateway
//! process on the same data directory simply takes turns with this one.
//!
//! PASSIVE alone never lets the log start over under steady load: SQLite rewinds the WAL only when a write
//! begins with every frame copied back, and the writer keeps appending while a checkpoint copies. The WAL would
//! grow without bound (half a gigabyte in ten seconds of enqueues, with the cost of the file system allocating
//! every new page). So once the log passes `RESTART_FRAMES`, the thread runs a `RESTART` checkpoint: it copies
//! the few frames left, waits for the writer's current transaction and for readers of the old frames, and the
//! next commit writes from the start of the file again. Its wait is capped by `RESTART_WAIT`, so a long reader
//! (an online backup) costs the writer at most that, and restarts pause for `RESTART_BACKOFF` after one was held
//! up.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::connection::{BUSY_TIMEOUT, open_existing_writer};
use crate::store::StoreError;

/// How often a shard's WAL is copied back into the database file.
pub const INTERVAL: Duration = Duration::from_millis(200);
/// WAL frames (pages) past which a checkpoint also makes the log start over: 256 MiB of 4 KiB pages. Each restart
/// holds the writer up for an `fsync` (10-50 ms here), so under full load it comes every seven seconds or so.
const RESTART_FRAMES: i64 = 65_536;
/// Extra passes before a restart, at most, and the frames a pass may still find for the restart to go ahead.
const CATCH_UP_PASSES: usize = 3;
const FEW_FRAMES: i64 = 256;
/// How long a restarting checkpoint waits for the writer and for readers of old frames before it gives up.
const RESTART_WAIT: Duration = Duration::from_millis(25);
/// How long restarts pause after one a reader held up.
const RESTART_BACKOFF: Duration = Duration::from_secs(5);

/// What a checkpoint round did about the log's length.
#[derive(Debug, PartialEq, Eq)]
enum Restart {
    NotNeeded,
    Done,
    /// A reader (or the writer) kept it waiting past `RESTART_WAIT`; the log goes on growing for now.
    HeldUp,
}

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
        Self::spawn_with(path, engine, INTERVAL, RESTART_FRAMES, RESTART_BACKOFF)
    }

    /// `spawn`, with a checkpoint every `interval`, the log restarted past `restart_frames` frames and restarts
    /// paused for `backoff` after one was held up.
    fn spawn_with(
        path: &Path,
        engine: &str,
        interval: Duration,
        restart_frames: i64,
        backoff: Duration,
    ) -> Result<Self, StoreError> {
        let conn = open_existing_writer(path)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let name = engine.to_string();
        thread::Builder::new()
            .name(format!("shard-ckpt-{engine}"))
            .spawn(move || {
                // After a restart that a reader held up, the next ones wait a while (a long backup would
                // otherwise hold the writer up for `RESTART_WAIT` every round).
                let mut restarts_from = Instant::now();
                while !stopped.load(Ordering::Relaxed) {
                    thread::sleep(interval);
                    let threshold = if Instant::now() >= restarts_from { restart_frames } else { i64::MAX };
                    match round(&conn, threshold) {
                        Ok(Restart::HeldUp) => restarts_from = Instant::now() + backoff,
                        Ok(_) => {}
                        Err(error) => tracing::warn!(engine = %name, %error, "WAL checkpoint failed; retrying"),
                    }
                }
            })
            .map_err(|source| StoreError::Io { path: format!("checkpoint thread for {engine}"), source })?;
        Ok(Self { stop })
    }
}

/// One round: copy the log back into the database; once the log has grown past `restart_frames`, copy again
/// while each pass still finds many frames (each copies what the writer appended during the one before, so they
/// get shorter), then restart the log. The restart holds up the writer only for the last few frames and an
/// `fsync`.
fn round(conn: &Connection, restart_frames: i64) -> rusqlite::Result<Restart> {
    let (_, frames, mut copied) = checkpoint(conn, "PASSIVE")?;
    if frames < restart_frames {
        return Ok(Restart::NotNeeded);
    }
    for _ in 0..CATCH_UP_PASSES {
        let before = copied;
        copied = checkpoint(conn, "PASSIVE")?.2;
        if copied - before <= FEW_FRAMES {
            break;
        }
    }
    conn.busy_handler(Some(retry_for_a_restart))?;
    let restarted = checkpoint(conn, "RESTART");
    conn.busy_timeout(BUSY_TIMEOUT)?;
    restarted.map(|(blocked, _, _)| if blocked == 0 { Restart::Done } else { Restart::HeldUp })
}

/// The busy handler of a restart: another look every 200 µs (the writer's locks come and go between its
/// transactions) for up to `RESTART_WAIT`.
fn retry_for_a_restart(attempts: i32) -> bool {
    const RETRY: Duration = Duration::from_micros(200);
    if RETRY * u32::try_from(attempts).unwrap_or(u32::MAX) >= RESTART_WAIT {
        return false;
    }
    thread::sleep(RETRY);
    true
}

/// One checkpoint in `mode`: whether it was blocked, the frames in the log, and how many are copied back.
fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<(i64, i64, i64)> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::connection::{open_writer, retry_briefly};

    /// A writer's connection on a fresh shard-like file (autocheckpoint off, as the gateway's writer has it) and a
    /// checkpointer's connection to it.
    fn writer_and_checkpointer(dir: &Path) -> (Connection, Connection) {
        let path = dir.join("shard.sqlite3");
        let conn = open_writer(&path).unwrap();
        conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        conn.busy_handler(Some(retry_briefly)).unwrap();
        conn.execute_batch("CREATE TABLE pages (id INTEGER PRIMARY KEY, body BLOB NOT NULL)").unwrap();
        (conn, open_existing_writer(&path).unwrap())
    }

    /// Appends `count` rows of most of a page each, four to a transaction (many pages per checkpoint, as under
    /// load).
    fn write_rows(conn: &Connection, from: i64, count: i64) {
        let body = vec![7u8; 3_000];
        for start in (from..from + count).step_by(4) {
            let tx = conn.unchecked_transaction().unwrap();
            for id in start..start + 4 {
                tx.execute("INSERT INTO pages (id, body) VALUES (?1, ?2)", (id, &body)).unwrap();
            }
            tx.commit().unwrap();
        }
    }

    // Rounds run between the writer's transactions here, so the test is the same on a busy machine; how often a
    // restart gets the writer's lock under load is measured by the store benchmarks, not asserted.
    #[test]
    fn past_the_threshold_a_round_restarts_the_log_and_writes_start_over() {
        const RESTART_PAST: i64 = 1_024;
        let dir = tempfile::tempdir().unwrap();
        let (writer, checkpointer) = writer_and_checkpointer(dir.path());
        write_rows(&writer, 0, 64);
        assert_eq!(round(&checkpointer, RESTART_PAST).unwrap(), Restart::NotNeeded, "below the threshold");
        for lap in 1..=3 {
            write_rows(&writer, lap * 10_000, 2 * RESTART_PAST);
            assert_eq!(round(&checkpointer, RESTART_PAST).unwrap(), Restart::Done, "lap {lap}");
            // The next commit writes from the start of the log: a few frames, not thousands more.
            write_rows(&writer, lap * 10_000 + 5_000, 4);
            let (_, frames, _) = checkpoint(&checkpointer, "PASSIVE").unwrap();
            assert!(frames < 64, "lap {lap}: {frames} frames in the log after a restart");
        }
        let total: i64 = writer.query_row("SELECT count(*) FROM pages", [], |r| r.get(0)).unwrap();
        assert_eq!(total, 64 + 3 * (2 * RESTART_PAST + 4), "no row lost to a restart");
    }

    #[test]
    fn a_reader_of_old_frames_holds_a_restart_up_for_a_bounded_wait() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, checkpointer) = writer_and_checkpointer(dir.path());
        write_rows(&writer, 0, 64);
        // A reader (a backup, say) holding a snapshot of the log as it is now.
        let reader = open_existing_writer(&dir.path().join("shard.sqlite3")).unwrap();
        let snapshot = reader.unchecked_transaction().unwrap();
        let seen: i64 = snapshot.query_row("SELECT count(*) FROM pages", [], |r| r.get(0)).unwrap();
        assert_eq!(seen, 64);
        write_rows(&writer, 64, 64);
        let started = Instant::now();
        assert_eq!(round(&checkpointer, 1).unwrap(), Restart::HeldUp);
        // A liveness bound (the wait is capped at RESTART_WAIT), loose enough for any machine.
        assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
        drop(snapshot);
        assert_eq!(round(&checkpointer, 1).unwrap(), Restart::Done, "once the reader is gone");
    }
}

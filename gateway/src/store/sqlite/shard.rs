//! One engine's shard: its SQLite file, the read pool, the single writer and the wake-up signal for claims.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use flowork_common::clock::Clock;
use tokio::sync::Notify;

use super::checkpoint::Checkpointer;
use super::connection::{ReadPool, open_existing_writer, open_read_pool, open_writer};
use super::migrate;
use super::writer::{ShardWriter, WriterContext};
use crate::admission::AdmissionLimits;
use crate::observability::queue_metrics::QueueMetrics;
use crate::store::changes::ChangeFeed;
use crate::store::{BreakerPolicy, RetryPolicy, StoreError};

/// An open shard.
pub struct Shard {
    pub engine: Arc<str>,
    pub path: PathBuf,
    pub reads: ReadPool,
    pub writer: ShardWriter,
    /// Notified after commits that made jobs claimable.
    pub wake: Arc<Notify>,
    pub metrics: Arc<QueueMetrics>,
    _checkpointer: Checkpointer,
}

/// Where an engine's shard lives under the data directory.
pub fn shard_path(data_dir: &Path, engine: &str) -> PathBuf {
    data_dir.join("shards").join(format!("{engine}.sqlite3"))
}

/// Creates the shard file if needed, brings it to the current schema and records its owner (blocking).
pub fn create_or_migrate(path: &Path, owner: Option<&str>, now: i64) -> Result<(), StoreError> {
    let mut conn = open_writer(path)?;
    ensure_incremental_vacuum(&conn)?;
    migrate::apply(&mut conn, migrate::SHARD, &path.display().to_string())?;
    if let Some(owner) = owner {
        super::queries::allow_user(&conn, owner, true, now)?;
    }
    Ok(())
}

/// Shards return the pages of deleted jobs to the file system (`auto_vacuum=INCREMENTAL`, driven by retention).
/// A shard made before this setting existed is rebuilt once with `VACUUM`, which takes time in proportion to its
/// size.
fn ensure_incremental_vacuum(conn: &rusqlite::Connection) -> Result<(), StoreError> {
    let mode: i64 = conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?;
    if mode != 2 {
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        conn.execute_batch("VACUUM")?;
    }
    Ok(())
}

impl Shard {
    /// Opens a shard (blocking): migrates it, starts its writer thread and read pool.
    pub fn open(
        data_dir: &Path,
        engine: &str,
        clock: Arc<dyn Clock>,
        retry: RetryPolicy,
        (caps, breaker, changes): (AdmissionLimits, BreakerPolicy, Arc<ChangeFeed>),
    ) -> Result<Self, StoreError> {
        let path = shard_path(data_dir, engine);
        // A registered engine's shard exists (`engine add` creates it); if it is gone, say so instead of
        // starting an empty one.
        let mut conn = open_existing_writer(&path)?;
        ensure_incremental_vacuum(&conn)?;
        migrate::apply(&mut conn, migrate::SHARD, &path.display().to_string())?;
        // Checkpoints run on their own thread, never inside a commit of the writer.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.busy_handler(Some(super::connection::retry_briefly))?;
        let checkpointer = Checkpointer::spawn(&path, engine)?;
        // Jobs parked behind a breaker that is no longer held (breakers switched off since) run again.
        let held = super::breakers::held(&conn, breaker.failures > 0)?;
        super::parking::release_parked_kinds(&conn, &held.kinds)?;
        let engine: Arc<str> = Arc::from(engine);
        let wake = Arc::new(Notify::new());
        let metrics = Arc::new(QueueMetrics::default());
        let wake_file = super::wake_file::WakeFile::open(&super::wake_file::wake_path(data_dir, &engine))?;
        let writer = ShardWriter::spawn(
            conn,
            WriterContext {
                engine: engine.clone(),
                clock,
                retry,
                wake: wake.clone(),
                caps,
                breaker,
                metrics: metrics.clone(),
                changes,
                wake_file,
            },
        )?;
        let reads = open_read_pool(&path)?;
        Ok(Self { engine, path, reads, writer, wake, metrics, _checkpointer: checkpointer })
    }
}

//! Cross-process wake-ups for gateways sharing one data directory (a canary beside the old build).
//!
//! A writer whose commit made jobs claimable touches `shards/<engine>.wake`; every gateway process watches the
//! wake file of each shard it has open (the `notify` crate: inotify, FSEvents, ReadDirectoryChangesW) and wakes
//! its own claims waiting on that engine. The files are watched one by one, not the `shards` folder: a folder
//! watch would also report every write to the shards' WAL files, which cost the writer a kernel notification per
//! page written and the watcher thread a wake-up each. A process also hears its own touches: that costs a waiting
//! claim one extra look, never a missed job.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::Notify;

use crate::store::StoreError;

/// The wake file of an engine's shard.
pub fn wake_path(data_dir: &Path, engine: &str) -> PathBuf {
    data_dir.join("shards").join(format!("{engine}.wake"))
}

/// One shard's wake file, kept open by its writer.
pub struct WakeFile {
    file: Mutex<File>,
}

impl WakeFile {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|source| StoreError::Io { path: path.display().to_string(), source })?;
        Ok(Self { file: Mutex::new(file) })
    }

    /// Tells the other processes that jobs became claimable (a one-byte write, seen as a modification).
    pub fn touch(&self) {
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        let written = file.seek(SeekFrom::Start(0)).and_then(|_| file.write_all(b"w"));
        if let Err(error) = written {
            tracing::debug!(%error, "could not touch a wake file; other gateways fall back to their claim timeout");
        }
    }
}

/// The engines whose waiting claims this process can wake, by engine id.
pub type Wakers = Arc<RwLock<HashMap<String, Arc<Notify>>>>;

/// Watches the wake files of the open shards; dropping it stops watching.
pub struct WakeWatcher {
    watcher: Mutex<notify::RecommendedWatcher>,
}

impl WakeWatcher {
    pub fn start(wakers: Wakers) -> Result<Self, notify::Error> {
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            if !matches!(event.kind, EventKind::Modify(_) | EventKind::Create(_)) {
                return;
            }
            for path in &event.paths {
                if path.extension().is_some_and(|e| e == "wake")
                    && let Some(engine) = path.file_stem().and_then(|s| s.to_str())
                    && let Some(wake) = wakers.read().unwrap_or_else(PoisonError::into_inner).get(engine)
                {
                    wake.notify_waiters();
                }
            }
        })?;
        Ok(Self { watcher: Mutex::new(watcher) })
    }

    /// Starts watching one shard's wake file (it exists once the shard is open).
    pub fn watch(&self, wake_file: &Path) -> Result<(), notify::Error> {
        self.watcher.lock().unwrap_or_else(PoisonError::into_inner).watch(wake_file, RecursiveMode::NonRecursive)
    }
}

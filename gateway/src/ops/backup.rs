//! Online backup and restore of a data directory with SQLite's backup API.
//!
//! A backup copies the control database first, then the shard of every engine that copy lists, then the signing
//! keys. Each database is copied in one backup step, inside one read transaction: a consistent snapshot of that
//! file taken while the gateway keeps writing (WAL readers do not block the writer). Shards are snapshotted one
//! after another, so the backup as a whole is as of a span of moments, not one (each job is either in a shard's
//! snapshot or not, never half). A manifest records every file's size and SHA-256; restore checks them, copies the
//! databases back through the same API, runs `PRAGMA quick_check` on each and counts the jobs.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::secure_fs::{create_private_dir, write_private_file, write_private_file_new};

#[derive(Debug, Error)]
pub enum BackupError {
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{path}: {source}")]
    Sqlite { path: String, source: rusqlite::Error },
    #[error("{0}")]
    Refused(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BackupError + '_ {
    move |source| BackupError::Io { path: path.display().to_string(), source }
}

fn sql_err(path: &Path) -> impl FnOnce(rusqlite::Error) -> BackupError + '_ {
    move |source| BackupError::Sqlite { path: path.display().to_string(), source }
}

/// One file of a backup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Relative to the backup folder (and to the data directory).
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

/// `manifest.json` of a backup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub flowork_version: String,
    pub created_at: String,
    pub files: Vec<ManifestFile>,
    pub jobs: u64,
}

/// What a backup or restore did.
#[derive(Debug, Clone)]
pub struct Report {
    pub databases: usize,
    pub jobs: u64,
    pub bytes: u64,
    pub elapsed: Duration,
}

const MANIFEST: &str = "manifest.json";
const CONTROL: &str = "control.sqlite3";

/// Copies one database into a new 0600 file through the backup API, in a single step (one snapshot).
fn copy_database(from: &Path, to: &Path) -> Result<(), BackupError> {
    let source = Connection::open_with_flags(from, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(sql_err(from))?;
    source.busy_timeout(Duration::from_secs(30)).map_err(sql_err(from))?;
    write_private_file_new(to, b"").map_err(io_err(to))?;
    let mut target = Connection::open(to).map_err(sql_err(to))?;
    {
        let backup = Backup::new(&source, &mut target).map_err(sql_err(to))?;
        loop {
            match backup.step(-1).map_err(sql_err(from))? {
                StepResult::Done => break,
                // Busy or locked by another connection for a moment: try again.
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
    // The copy stands alone: fold any WAL into it.
    target.pragma_update(None, "journal_mode", "DELETE").map_err(sql_err(to))?;
    Ok(())
}

fn sha256_of(path: &Path) -> Result<(u64, String), BackupError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    Ok((bytes.len() as u64, hex::encode(Sha256::digest(&bytes))))
}

fn jobs_in(path: &Path) -> Result<u64, BackupError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(sql_err(path))?;
    let count: i64 = conn.query_row("SELECT count(*) FROM jobs", [], |r| r.get(0)).map_err(sql_err(path))?;
    Ok(count.max(0) as u64)
}

fn engines_in(control: &Path) -> Result<Vec<String>, BackupError> {
    let conn = Connection::open_with_flags(control, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(sql_err(control))?;
    let mut stmt = conn.prepare("SELECT id FROM engines ORDER BY id").map_err(sql_err(control))?;
    let ids = stmt.query_map([], |r| r.get(0)).map_err(sql_err(control))?;
    ids.collect::<rusqlite::Result<Vec<String>>>().map_err(sql_err(control))
}

/// Files of the `keys` folder.
fn key_files(dir: &Path) -> Result<Vec<PathBuf>, BackupError> {
    let keys = dir.join("keys");
    if !keys.exists() {
        return Ok(Vec::new());
    }
    let mut files = Vec::new();
    for entry in fs::read_dir(&keys).map_err(io_err(&keys))? {
        let entry = entry.map_err(io_err(&keys))?;
        // The audit head is left out: it may be newer than the databases just copied; a restored gateway
        // checkpoints its own.
        if entry.file_type().map_err(io_err(&keys))?.is_file()
            && entry.file_name() != crate::store::sqlite::audit_files::HEAD_FILE
        {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Takes an online backup of `data_dir` into the new folder `to`.
pub fn backup(data_dir: &Path, to: &Path) -> Result<Report, BackupError> {
    let started = Instant::now();
    if !data_dir.join(CONTROL).exists() {
        return Err(BackupError::Refused(format!("{} holds no Flowork data", data_dir.display())));
    }
    if to.exists() && fs::read_dir(to).map_err(io_err(to))?.next().is_some() {
        return Err(BackupError::Refused(format!(
            "{} exists and is not empty; back up into a new folder",
            to.display()
        )));
    }
    for folder in [to.to_path_buf(), to.join("shards"), to.join("keys")] {
        create_private_dir(&folder).map_err(io_err(&folder))?;
    }
    let mut relative = vec![CONTROL.to_string()];
    copy_database(&data_dir.join(CONTROL), &to.join(CONTROL))?;
    let mut jobs = 0;
    for engine in engines_in(&to.join(CONTROL))? {
        let name = format!("shards/{engine}.sqlite3");
        if data_dir.join(&name).exists() {
            copy_database(&data_dir.join(&name), &to.join(&name))?;
            jobs += jobs_in(&to.join(&name))?;
            relative.push(name);
        }
    }
    let databases = relative.len();
    for key in key_files(data_dir)? {
        let name = format!("keys/{}", key.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default());
        let contents = fs::read(&key).map_err(io_err(&key))?;
        write_private_file_new(&to.join(&name), &contents).map_err(io_err(&to.join(&name)))?;
        relative.push(name);
    }
    let mut files = Vec::new();
    for path in relative {
        let (bytes, sha256) = sha256_of(&to.join(&path))?;
        files.push(ManifestFile { path, bytes, sha256 });
    }
    let manifest = Manifest {
        format: 1,
        flowork_version: env!("CARGO_PKG_VERSION").to_string(),
        created_at: flowork_common::timefmt::format_ms(flowork_common::clock::system_now_ms()),
        files,
        jobs,
    };
    let text = serde_json::to_vec_pretty(&manifest).map_err(|e| BackupError::Refused(e.to_string()))?;
    write_private_file(&to.join(MANIFEST), &text).map_err(io_err(&to.join(MANIFEST)))?;
    let bytes = manifest.files.iter().map(|f| f.bytes).sum();
    Ok(Report { databases, jobs, bytes, elapsed: started.elapsed() })
}

/// Restores the backup in `from` into `data_dir`. An existing data directory is refused unless `force`, which
/// first moves it aside to `<data_dir>.before-restore-<ms>` (nothing is deleted).
pub fn restore(from: &Path, data_dir: &Path, force: bool) -> Result<(Report, Option<PathBuf>), BackupError> {
    let started = Instant::now();
    let manifest_path = from.join(MANIFEST);
    let text = fs::read(&manifest_path).map_err(io_err(&manifest_path))?;
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| {
        BackupError::Refused(format!("{} is not a Flowork backup manifest: {e}", manifest_path.display()))
    })?;
    for file in &manifest.files {
        if file.path.contains("..") || Path::new(&file.path).is_absolute() {
            return Err(BackupError::Refused(format!("the manifest names an unsafe path {:?}", file.path)));
        }
        let (bytes, sha256) = sha256_of(&from.join(&file.path))?;
        if bytes != file.bytes || sha256 != file.sha256 {
            return Err(BackupError::Refused(format!(
                "{} does not match the manifest: the backup is damaged",
                file.path
            )));
        }
    }
    let mut moved_aside = None;
    if data_dir.exists() && fs::read_dir(data_dir).map_err(io_err(data_dir))?.next().is_some() {
        if !force {
            return Err(BackupError::Refused(format!(
                "{} is not empty; stop the gateway and pass --force to move it aside and restore",
                data_dir.display()
            )));
        }
        let aside =
            PathBuf::from(format!("{}.before-restore-{}", data_dir.display(), flowork_common::clock::system_now_ms()));
        fs::rename(data_dir, &aside).map_err(io_err(data_dir))?;
        moved_aside = Some(aside);
    }
    for folder in [data_dir.to_path_buf(), data_dir.join("shards"), data_dir.join("keys")] {
        create_private_dir(&folder).map_err(io_err(&folder))?;
    }
    let (mut databases, mut jobs, mut bytes) = (0, 0, 0);
    for file in &manifest.files {
        let (source, target) = (from.join(&file.path), data_dir.join(&file.path));
        bytes += file.bytes;
        if file.path.ends_with(".sqlite3") {
            copy_database(&source, &target)?;
            let conn = Connection::open(&target).map_err(sql_err(&target))?;
            let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0)).map_err(sql_err(&target))?;
            if check != "ok" {
                return Err(BackupError::Refused(format!("{}: quick_check says {check}", file.path)));
            }
            conn.pragma_update(None, "journal_mode", "WAL").map_err(sql_err(&target))?;
            databases += 1;
            if file.path.starts_with("shards/") {
                jobs += jobs_in(&target)?;
            }
        } else {
            let contents = fs::read(&source).map_err(io_err(&source))?;
            write_private_file_new(&target, &contents).map_err(io_err(&target))?;
        }
    }
    Ok((Report { databases, jobs, bytes, elapsed: started.elapsed() }, moved_aside))
}

//! Jobs a shard transaction touched, recorded by SQLite's update hook and read back after the commit for the
//! change feed. The hook sees every write path (enqueue, claim, finish, reaper, cron, release), so none can be
//! forgotten; deletions (retention) are not changes anyone watches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::hooks::Action;
use rusqlite::{Connection, OptionalExtension};

use super::queries::{JOB_COLUMNS, job_from_row};
use crate::store::StoreError;
use crate::store::changes::JobChange;

/// A touched row of `jobs`: its rowid and whether it was inserted.
type Row = (i64, bool);

/// The rows of `jobs` touched since the last `take`.
#[derive(Clone, Default)]
pub struct Touched(Arc<Mutex<Vec<Row>>>);

impl Touched {
    /// Installs the update hook on the writer's connection.
    pub fn install(conn: &Connection) -> Result<Self, StoreError> {
        let touched = Self::default();
        let rows = touched.0.clone();
        conn.update_hook(Some(move |action: Action, _db: &str, table: &str, rowid: i64| {
            let inserted = match action {
                Action::SQLITE_INSERT => true,
                Action::SQLITE_UPDATE => false,
                _ => return,
            };
            if table == "jobs" {
                rows.lock().unwrap_or_else(PoisonError::into_inner).push((rowid, inserted));
            }
        }))?;
        Ok(touched)
    }

    fn rows(&self) -> std::sync::MutexGuard<'_, Vec<Row>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A point to come back to with `forget_since`.
    pub fn mark(&self) -> usize {
        self.rows().len()
    }

    /// Drops what was recorded after `mark` (a write nobody needs to hear about, such as a bare heartbeat).
    pub fn forget_since(&self, mark: usize) {
        self.rows().truncate(mark);
    }

    /// Drops everything recorded (before a transaction, whose predecessor may have rolled back).
    pub fn clear(&self) {
        self.rows().clear();
    }

    /// Everything recorded, leaving nothing behind.
    pub fn take(&self) -> Vec<Row> {
        std::mem::take(&mut *self.rows())
    }
}

/// Reads the touched jobs as they are now (after the commit): one change per job, in the order first touched.
pub fn read_changes(conn: &Connection, engine: &str, rows: &[Row]) -> Result<Vec<JobChange>, StoreError> {
    let mut order: Vec<Row> = Vec::new();
    let mut index: HashMap<i64, usize> = HashMap::new();
    for &(rowid, inserted) in rows {
        match index.get(&rowid) {
            Some(&at) => order[at].1 |= inserted,
            None => {
                index.insert(rowid, order.len());
                order.push((rowid, inserted));
            }
        }
    }
    let mut select = conn.prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE rowid = ?1"))?;
    let mut changes = Vec::with_capacity(order.len());
    for (rowid, created) in order {
        // A job deleted after it changed (retention in the same round) has nothing left to report.
        if let Some(job) = select.query_row([rowid], |row| job_from_row(row, engine)).optional()? {
            changes.push(if created { JobChange::created(job) } else { JobChange::changed(job) });
        }
    }
    Ok(changes)
}

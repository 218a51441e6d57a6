//! A shard's per-minute job counters (shard migration 0014): added once per transaction, read for
//! `GET /jobs/stats`, pruned after a day.

use rusqlite::{Connection, params};

use crate::store::StoreError;
use crate::store::core::stats::{StatRow, Tally};

/// Adds what one transaction tallied.
pub fn add(conn: &Connection, tally: &Tally) -> Result<(), StoreError> {
    if tally.is_empty() {
        return Ok(());
    }
    let mut stmt = conn.prepare_cached(
        "INSERT INTO job_stats (user_id, minute, series, bucket, count) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (user_id, minute, series, bucket) DO UPDATE SET count = count + excluded.count",
    )?;
    for row in tally.rows() {
        stmt.execute(params![row.user, row.minute_ms, row.series, row.bucket, row.count])?;
    }
    Ok(())
}

/// `user`'s counters from the minute starting at `from_ms` on.
pub fn read(conn: &Connection, user: &str, from_ms: i64) -> Result<Vec<StatRow>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT minute, series, bucket, count FROM job_stats WHERE user_id = ?1 AND minute >= ?2")?;
    let rows = stmt.query_map(params![user, from_ms], |row| {
        Ok(StatRow {
            user: user.to_string(),
            minute_ms: row.get(0)?,
            series: row.get(1)?,
            bucket: row.get(2)?,
            count: row.get(3)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Deletes the counters of minutes before `before_ms`; returns how many rows.
pub fn prune(conn: &Connection, before_ms: i64) -> Result<u64, StoreError> {
    Ok(conn.prepare_cached("DELETE FROM job_stats WHERE minute < ?1")?.execute([before_ms])? as u64)
}

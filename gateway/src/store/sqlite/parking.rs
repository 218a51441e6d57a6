//! Parking: queued jobs that cannot run now are set aside with a `hold` so claims never scan past them, and come
//! back through their own index when the reason goes away — delayed jobs when due, jobs of a full concurrency key
//! when it has room, jobs of a held-back kind when its breaker closes. Also the per-key limits themselves.

use std::collections::{HashMap, HashSet};

use rusqlite::{Connection, OptionalExtension, params};

use crate::store::StoreError;
pub use crate::store::core::hold::{HOLD_BREAKER, HOLD_KEY, HOLD_NONE, HOLD_RUN_AT, hold_for_run_at};

pub(super) const PROMOTE_DUE_SQL: &str =
    "UPDATE jobs SET hold = 0 WHERE status = 'queued' AND hold = 1 AND run_at <= ?1";

pub(super) const KEYS_WITH_PARKED_SQL: &str = "SELECT s.concurrency_key,
                                           coalesce(l.max_running, e.default_key_limit) - s.running - s.ready
                                    FROM key_state AS s CROSS JOIN engine_state AS e
                                    LEFT JOIN concurrency_limits AS l ON l.concurrency_key = s.concurrency_key
                                    WHERE s.parked > 0";

pub(super) const RELEASE_KEY_SQL: &str = "UPDATE jobs SET hold = 0 WHERE id IN (
                                   SELECT id FROM jobs WHERE concurrency_key = ?1 AND status = 'queued' AND hold = 2
                                   ORDER BY priority DESC, run_at, id LIMIT ?2)";

/// Makes delayed jobs whose `run_at` has come runnable.
pub fn promote_due(conn: &Connection, now: i64) -> Result<u64, StoreError> {
    let promoted = conn.prepare_cached(PROMOTE_DUE_SQL)?.execute([now])?;
    Ok(promoted as u64)
}

/// Sets a queued job aside with a hold, so claims stop reading it.
pub(super) fn park(conn: &Connection, id: &str, hold: i64) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE jobs SET hold = ?2 WHERE id = ?1 AND status = 'queued'")?.execute(params![id, hold])?;
    Ok(())
}

/// Free slots per concurrency key during one claim: read once per key, then counted down locally.
#[derive(Default)]
pub(super) struct KeyRooms(HashMap<String, Option<i64>>);

impl KeyRooms {
    /// Takes a slot of `key`; false if it is full.
    pub(super) fn take(&mut self, conn: &Connection, key: &str) -> Result<bool, StoreError> {
        if !self.0.contains_key(key) {
            let room = key_room(conn, key)?;
            self.0.insert(key.to_string(), room);
        }
        Ok(match self.0.get_mut(key) {
            Some(Some(room)) if *room > 0 => {
                *room -= 1;
                true
            }
            Some(Some(_)) => false,
            _ => true,
        })
    }
}

/// The limit of a key (its own, else the engine's default); `None` = unlimited.
pub fn key_limit(conn: &Connection, key: &str) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT coalesce((SELECT max_running FROM concurrency_limits WHERE concurrency_key = ?1),
                             (SELECT default_key_limit FROM engine_state))",
        )?
        .query_row([key], |r| r.get(0))?)
}

/// How many more jobs of `key` may run now; `None` = unlimited.
fn key_room(conn: &Connection, key: &str) -> Result<Option<i64>, StoreError> {
    let Some(limit) = key_limit(conn, key)? else { return Ok(None) };
    let running: i64 = conn
        .prepare_cached("SELECT running FROM key_state WHERE concurrency_key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?
        .unwrap_or(0);
    Ok(Some(limit - running))
}

/// Makes parked jobs of keys that have room runnable again, in claim order, as many as the room allows.
/// Runs once per write transaction; it reads only keys with parked jobs.
pub fn release_parked_keys(conn: &Connection) -> Result<u64, StoreError> {
    let keys: Vec<(String, Option<i64>)> = {
        let mut stmt = conn.prepare_cached(KEYS_WITH_PARKED_SQL)?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
    };
    let mut released = 0;
    for (key, room) in keys {
        let room = match room {
            None => i64::MAX,
            Some(room) if room > 0 => room,
            Some(_) => continue,
        };
        released += conn.prepare_cached(RELEASE_KEY_SQL)?.execute(params![key, room])? as u64;
    }
    Ok(released)
}

/// Makes the parked jobs of kinds that are not held back as a whole runnable (at start, when breakers may have
/// been switched off; jobs a user's breaker still holds are parked again by the next claim).
pub fn release_parked_kinds(conn: &Connection, held: &HashSet<String>) -> Result<u64, StoreError> {
    let kinds: Vec<String> = {
        let mut stmt = conn.prepare_cached("SELECT DISTINCT kind FROM jobs WHERE status = 'queued' AND hold = 3")?;
        stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<Vec<_>>>()?
    };
    let mut released = 0;
    for kind in kinds.iter().filter(|k| !held.contains(*k)) {
        released += release_parked_kind(conn, kind)?;
    }
    Ok(released)
}

/// Makes the parked jobs of one kind runnable.
pub fn release_parked_kind(conn: &Connection, kind: &str) -> Result<u64, StoreError> {
    let released = conn
        .prepare_cached("UPDATE jobs SET hold = 0 WHERE kind = ?1 AND status = 'queued' AND hold = 3")?
        .execute([kind])?;
    Ok(released as u64)
}

/// Makes the parked jobs of one user of one kind runnable (their breaker closed).
pub fn release_parked_kind_of_user(conn: &Connection, kind: &str, user: &str) -> Result<u64, StoreError> {
    let released = conn
        .prepare_cached("UPDATE jobs SET hold = 0 WHERE kind = ?1 AND user_id = ?2 AND status = 'queued' AND hold = 3")?
        .execute([kind, user])?;
    Ok(released as u64)
}

/// Sets (`Some`) or removes (`None`) a key's own limit; returns whether anything changed.
pub fn set_key_limit(conn: &Connection, key: &str, limit: Option<i64>) -> Result<bool, StoreError> {
    let changed = match limit {
        Some(limit) => conn
            .prepare_cached(
                "INSERT INTO concurrency_limits (concurrency_key, max_running) VALUES (?1, ?2)
                 ON CONFLICT (concurrency_key) DO UPDATE SET max_running = excluded.max_running
                 WHERE max_running <> excluded.max_running",
            )?
            .execute(params![key, limit])?,
        None => conn.prepare_cached("DELETE FROM concurrency_limits WHERE concurrency_key = ?1")?.execute([key])?,
    };
    Ok(changed > 0)
}

/// Sets the limit of keys without their own (`None` = unlimited); returns whether anything changed.
pub fn set_default_key_limit(conn: &Connection, limit: Option<i64>) -> Result<bool, StoreError> {
    let changed = conn
        .prepare_cached("UPDATE engine_state SET default_key_limit = ?1 WHERE default_key_limit IS NOT ?1")?
        .execute([limit])?;
    Ok(changed > 0)
}

//! The fair claim order of a shard: stride scheduling across users, per-key concurrency limits, and parking.
//!
//! Each user with runnable jobs has a `pass`; a claim serves the user with the lowest pass and advances it by
//! `1 / weight` per job, so users are served round-robin in proportion to their weights whatever their backlog.
//! Within a user, jobs go by priority, then `run_at`, then enqueue order. A queued job that cannot run now is
//! *parked* (`hold` > 0) instead of being scanned past on every claim: delayed jobs until their `run_at`, jobs
//! of a full concurrency key until the key has room, jobs of a held-back kind until its breaker closes. Every
//! step is an index seek, so a claim costs the same with 10 or 1,000,000 jobs queued.

use std::collections::{HashMap, HashSet};

use flowork_common::timefmt::format_ms;
use flowork_common::wire::Lease;
use rusqlite::{Connection, OptionalExtension, params};

use super::queries::{JOB_COLUMNS, job_from_row};
use crate::store::StoreError;

/// Why a queued job is not claimable now (the `hold` column).
pub const HOLD_NONE: i64 = 0;
pub const HOLD_RUN_AT: i64 = 1;
pub const HOLD_KEY: i64 = 2;
pub const HOLD_BREAKER: i64 = 3;

/// The most jobs one claim parks; the rest are parked by the next claims, so one transaction stays short.
const MAX_PARKS_PER_CLAIM: usize = 1_000;

const PROMOTE_DUE_SQL: &str = "UPDATE jobs SET hold = 0 WHERE status = 'queued' AND hold = 1 AND run_at <= ?1";
const NEXT_SHARES_SQL: &str =
    "SELECT user_id, pass, weight FROM user_share WHERE runnable > 0 ORDER BY pass, user_id LIMIT 2";
const READY_JOBS_SQL: &str = "SELECT id, kind, concurrency_key FROM jobs
                              WHERE user_id = ?1 AND status = 'queued' AND hold = 0
                              ORDER BY priority DESC, run_at, id LIMIT ?2";
const KEYS_WITH_PARKED_SQL: &str = "SELECT s.concurrency_key,
                                           coalesce(l.max_running, e.default_key_limit) - s.running - s.ready
                                    FROM key_state AS s CROSS JOIN engine_state AS e
                                    LEFT JOIN concurrency_limits AS l ON l.concurrency_key = s.concurrency_key
                                    WHERE s.parked > 0";
const RELEASE_KEY_SQL: &str = "UPDATE jobs SET hold = 0 WHERE id IN (
                                   SELECT id FROM jobs WHERE concurrency_key = ?1 AND status = 'queued' AND hold = 2
                                   ORDER BY priority DESC, run_at, id LIMIT ?2)";
const OWN_AHEAD_SQL: &str =
    "SELECT (SELECT count(*) FROM jobs WHERE user_id = ?1 AND status = 'queued' AND hold = 0 AND priority > ?2)
          + (SELECT count(*) FROM jobs WHERE user_id = ?1 AND status = 'queued' AND hold = 0
                 AND priority = ?2 AND run_at < ?3)
          + (SELECT count(*) FROM jobs WHERE user_id = ?1 AND status = 'queued' AND hold = 0
                 AND priority = ?2 AND run_at = ?3 AND id < ?4)";
/// Statements run on every claim or position lookup: each must seek an index, never scan the jobs.
pub const HOT_SQL: &[&str] =
    &[PROMOTE_DUE_SQL, NEXT_SHARES_SQL, READY_JOBS_SQL, KEYS_WITH_PARKED_SQL, RELEASE_KEY_SQL, OWN_AHEAD_SQL];

/// Passes are sums of 1/weight steps; this absorbs their rounding when two turns fall on the same pass.
const EPSILON: f64 = 1e-9;

/// A user's place in the fair order.
#[derive(Debug, Clone)]
struct Share {
    user: String,
    pass: f64,
    weight: i64,
}

/// One runnable job considered by a claim.
struct Candidate {
    id: String,
    kind: String,
    key: Option<String>,
}

/// Makes delayed jobs whose `run_at` has come runnable.
pub fn promote_due(conn: &Connection, now: i64) -> Result<u64, StoreError> {
    let promoted = conn.prepare_cached(PROMOTE_DUE_SQL)?.execute([now])?;
    Ok(promoted as u64)
}

/// The hold a job gets when it is (re)queued with this `run_at`.
pub fn hold_for_run_at(run_at: i64, now: i64) -> i64 {
    if run_at > now { HOLD_RUN_AT } else { HOLD_NONE }
}

/// The two users next in the fair order: the one to serve, and the one after (how long the first may go on).
fn next_shares(conn: &Connection) -> Result<Vec<Share>, StoreError> {
    let mut stmt = conn.prepare_cached(NEXT_SHARES_SQL)?;
    let rows = stmt.query_map([], |r| Ok(Share { user: r.get(0)?, pass: r.get(1)?, weight: r.get(2)? }))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// A user's first `limit` runnable jobs in their own claim order.
fn ready_jobs(conn: &Connection, user: &str, limit: usize) -> Result<Vec<Candidate>, StoreError> {
    let mut stmt = conn.prepare_cached(READY_JOBS_SQL)?;
    let rows = stmt
        .query_map(params![user, limit as i64], |r| Ok(Candidate { id: r.get(0)?, kind: r.get(1)?, key: r.get(2)? }))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Recounts a user's runnable jobs (only when the counter and the jobs disagree, which a bug would cause).
fn resync_runnable(conn: &Connection, user: &str) -> Result<(), StoreError> {
    tracing::warn!(user, "fair-share counter out of step with the jobs; recounting");
    conn.prepare_cached(
        "UPDATE user_share SET runnable = (SELECT count(*) FROM jobs
                                           WHERE user_id = ?1 AND status = 'queued' AND hold = 0)
         WHERE user_id = ?1",
    )?
    .execute([user])?;
    Ok(())
}

fn park(conn: &Connection, id: &str, hold: i64) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE jobs SET hold = ?2 WHERE id = ?1 AND status = 'queued'")?.execute(params![id, hold])?;
    Ok(())
}

/// Advances a user who was served `served` jobs starting at `pass`, and the shard's virtual time with it.
fn advance(conn: &Connection, share: &Share, served: usize) -> Result<(), StoreError> {
    let step = 1.0 / share.weight.max(1) as f64;
    conn.prepare_cached("UPDATE user_share SET pass = ?2 WHERE user_id = ?1")?
        .execute(params![share.user, share.pass + step * served as f64])?;
    conn.prepare_cached("UPDATE engine_state SET vtime = max(vtime, ?1)")?
        .execute([share.pass + step * (served.saturating_sub(1)) as f64])?;
    Ok(())
}

/// The kinds whose breaker holds their jobs back (none when breakers are off).
pub fn held_kinds(conn: &Connection, breakers_on: bool) -> Result<HashSet<String>, StoreError> {
    if !breakers_on {
        return Ok(HashSet::new());
    }
    let mut stmt = conn.prepare_cached("SELECT kind FROM kind_breakers WHERE state <> 'closed'")?;
    let kinds = stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<HashSet<String>>>()?;
    Ok(kinds)
}

/// Free slots per concurrency key during one claim: read once per key, then counted down locally.
#[derive(Default)]
struct KeyRooms(HashMap<String, Option<i64>>);

impl KeyRooms {
    /// Takes a slot of `key`; false if it is full.
    fn take(&mut self, conn: &Connection, key: &str) -> Result<bool, StoreError> {
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

/// Leases one queued job; also returns how long it waited since it became runnable.
fn lease_job(
    conn: &Connection,
    engine: &str,
    id: &str,
    worker: &str,
    expires: i64,
    now: i64,
) -> Result<Option<(Lease, i64)>, StoreError> {
    let sql = format!(
        "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = ?1,
                lease_token = lower(hex(randomblob(16))), lease_expires_at = ?2, claimed_at = ?3
         WHERE id = ?4 AND status = 'queued'
         RETURNING {JOB_COLUMNS}, lease_token"
    );
    let leased = conn
        .prepare_cached(&sql)?
        .query_row(params![worker, expires, now, id], |row| {
            let runnable_since = row.get::<_, i64>(9)?.max(row.get::<_, i64>(10)?);
            let token_column = JOB_COLUMN_COUNT;
            let lease = Lease {
                job: job_from_row(row, engine)?,
                lease_token: row.get(token_column)?,
                lease_expires_at: format_ms(expires),
            };
            Ok((lease, now - runnable_since))
        })
        .optional()?;
    Ok(leased)
}

/// How many columns `JOB_COLUMNS` names.
const JOB_COLUMN_COUNT: usize = super::queries::JOB_COLUMN_COUNT;

/// What a claim hands out: the leases in claim order, and how long each job waited since it became runnable.
#[derive(Debug, Default)]
pub struct Claimed {
    pub leases: Vec<Lease>,
    pub waited_ms: Vec<i64>,
}

/// Who claims, for how long, and how many.
pub struct ClaimBy<'a> {
    pub engine: &'a str,
    pub worker: &'a str,
    pub max: u32,
    pub lease_ms: u64,
    pub now: i64,
}

/// Leases up to `max` runnable jobs in the fair order.
pub fn claim(conn: &Connection, by: &ClaimBy<'_>, held: &HashSet<String>) -> Result<Claimed, StoreError> {
    promote_due(conn, by.now)?;
    let expires = by.now.saturating_add(by.lease_ms as i64);
    let max = by.max as usize;
    let mut claimed = Claimed::default();
    let mut rooms = KeyRooms::default();
    let mut parked = 0;
    while claimed.leases.len() < max && parked < MAX_PARKS_PER_CLAIM {
        let shares = next_shares(conn)?;
        let Some(first) = shares.first() else { break };
        let remaining = max - claimed.leases.len();
        // The first user may go on until their pass reaches the next user's.
        let take = match shares.get(1) {
            Some(second) => (((second.pass - first.pass) * first.weight as f64 - EPSILON).ceil().max(0.0) as usize)
                .clamp(1, remaining),
            None => remaining,
        };
        let candidates = ready_jobs(conn, &first.user, take)?;
        if candidates.is_empty() {
            resync_runnable(conn, &first.user)?;
            continue;
        }
        let mut served = 0;
        for candidate in candidates {
            if held.contains(&candidate.kind) {
                park(conn, &candidate.id, HOLD_BREAKER)?;
                parked += 1;
                continue;
            }
            if let Some(key) = &candidate.key
                && !rooms.take(conn, key)?
            {
                park(conn, &candidate.id, HOLD_KEY)?;
                parked += 1;
                continue;
            }
            if let Some((lease, waited)) = lease_job(conn, by.engine, &candidate.id, by.worker, expires, by.now)? {
                claimed.leases.push(lease);
                claimed.waited_ms.push(waited);
                served += 1;
            }
        }
        if served > 0 {
            advance(conn, first, served)?;
        }
    }
    Ok(claimed)
}

/// Leases one job of `kind` (a half-open breaker's probe): a parked one first, else a runnable one.
pub fn claim_probe(conn: &Connection, by: &ClaimBy<'_>, kind: &str) -> Result<Claimed, StoreError> {
    let parked: Option<(String, Option<String>)> = conn
        .prepare_cached(
            "SELECT id, concurrency_key FROM jobs WHERE kind = ?1 AND status = 'queued' AND hold = 3
             ORDER BY id LIMIT 1",
        )?
        .query_row([kind], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let candidate = match parked {
        Some(found) => Some(found),
        // Rare (a breaker half-opens with no parked job): a scan of the runnable jobs.
        None => conn
            .prepare_cached(
                "SELECT id, concurrency_key FROM jobs WHERE kind = ?1 AND status = 'queued' AND hold = 0
                 ORDER BY id LIMIT 1",
            )?
            .query_row([kind], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?,
    };
    let mut claimed = Claimed::default();
    let Some((id, key)) = candidate else { return Ok(claimed) };
    if let Some(key) = key
        && !KeyRooms::default().take(conn, &key)?
    {
        return Ok(claimed);
    }
    let expires = by.now.saturating_add(by.lease_ms as i64);
    if let Some((lease, waited)) = lease_job(conn, by.engine, &id, by.worker, expires, by.now)? {
        claimed.leases.push(lease);
        claimed.waited_ms.push(waited);
    }
    Ok(claimed)
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

/// Makes the parked jobs of kinds that are no longer held back runnable (after a breaker closes, or at start
/// when breakers were switched off).
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

/// Sets a user's weight on this engine (1-1000).
pub fn set_weight(conn: &Connection, user: &str, weight: i64) -> Result<bool, StoreError> {
    let changed = conn
        .prepare_cached(
            "INSERT INTO user_share (user_id, weight, pass) VALUES (?1, ?2, (SELECT vtime FROM engine_state))
             ON CONFLICT (user_id) DO UPDATE SET weight = excluded.weight WHERE weight <> excluded.weight",
        )?
        .execute(params![user, weight])?;
    Ok(changed > 0)
}

/// Users with a weight other than 1.
pub fn weights(conn: &Connection) -> Result<Vec<(String, i64)>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT user_id, weight FROM user_share WHERE weight <> 1 ORDER BY user_id")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Where a queued job stands: why it waits, if it is parked, else how many jobs will be claimed before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Runnable: this many jobs will be claimed before it, under the current fair order.
    Behind(u64),
    /// Parked with this hold (1 run_at, 2 concurrency key, 3 breaker).
    Held(i64),
}

/// The standing of a queued job, or `None` if it is not queued.
///
/// The count is exact for the jobs queued now: the job's own user's runnable jobs ahead of it, plus for every
/// other user with runnable jobs the number of their jobs whose turn (pass + i/weight) comes before this job's.
/// Jobs enqueued later by other users, retries and newly parked jobs can change it.
pub fn standing(conn: &Connection, job_id: &str) -> Result<Option<Standing>, StoreError> {
    let me: Option<(String, i32, i64, i64)> = conn
        .prepare_cached("SELECT user_id, priority, run_at, hold FROM jobs WHERE id = ?1 AND status = 'queued'")?
        .query_row([job_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?;
    let Some((user, priority, run_at, hold)) = me else { return Ok(None) };
    if hold != HOLD_NONE {
        return Ok(Some(Standing::Held(hold)));
    }
    let own_ahead: i64 =
        conn.prepare_cached(OWN_AHEAD_SQL)?.query_row(params![user, priority, run_at, job_id], |r| r.get(0))?;
    let shares: Vec<(String, f64, i64, i64)> = {
        let mut stmt =
            conn.prepare_cached("SELECT user_id, pass, weight, runnable FROM user_share WHERE runnable > 0")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
    };
    let Some((_, my_pass, my_weight, _)) = shares.iter().find(|s| s.0 == user) else {
        return Ok(Some(Standing::Behind(own_ahead.max(0) as u64)));
    };
    // This job's turn comes when its user's pass reaches `turn`; others' jobs whose turn is earlier go first
    // (on a tie, the lower user id, as the claim orders them).
    let turn = my_pass + own_ahead as f64 / (*my_weight).max(1) as f64;
    let others: i64 = shares
        .iter()
        .filter(|(other, ..)| *other != user)
        .map(|(other, pass, weight, runnable)| {
            let span = (turn - pass) * (*weight).max(1) as f64;
            let before =
                if other < &user { (span + EPSILON).floor() as i64 + 1 } else { (span - EPSILON).ceil() as i64 };
            before.clamp(0, *runnable)
        })
        .sum();
    Ok(Some(Standing::Behind((own_ahead + others).max(0) as u64)))
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

/// The engine's weights and key limits.
pub fn share_settings(conn: &Connection) -> Result<crate::store::ShareSettings, StoreError> {
    let default_key_limit =
        conn.prepare_cached("SELECT default_key_limit FROM engine_state")?.query_row([], |r| r.get(0))?;
    let key_limits = {
        let mut stmt = conn.prepare_cached(
            "SELECT l.concurrency_key, l.max_running, coalesce(s.running, 0)
             FROM concurrency_limits AS l LEFT JOIN key_state AS s ON s.concurrency_key = l.concurrency_key
             ORDER BY l.concurrency_key",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
    };
    Ok(crate::store::ShareSettings { weights: weights(conn)?, default_key_limit, key_limits })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `EXPLAIN QUERY PLAN` of every hot statement on a migrated shard: index seeks only.
    #[test]
    fn the_claim_path_never_scans_the_jobs_table() {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::migrate::apply(&mut conn, super::super::migrate::SHARD, "memory").unwrap();
        let mut statements: Vec<&str> = HOT_SQL.to_vec();
        let next_due = "SELECT min(run_at) FROM jobs WHERE status = 'queued' AND hold = 1";
        statements.push(next_due);
        for sql in statements {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let params = stmt.parameter_count();
            let plan: Vec<String> = stmt
                .query_map(rusqlite::params_from_iter(std::iter::repeat_n(0, params)), |r| r.get::<_, String>(3))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let text = plan.join(" | ");
            assert!(!text.contains("SCAN jobs"), "{sql}\nscans: {text}");
            // Walking a small partial index in order (runnable users, keys with parked jobs) is fine.
            // `engine_state` (alias `e`) is a one-row table; a constant row is no table.
            let singleton = |step: &str| matches!(step, "SCAN e" | "SCAN engine_state" | "SCAN CONSTANT ROW");
            let full_scan =
                plan.iter().any(|step| step.starts_with("SCAN") && !step.contains("USING") && !singleton(step));
            assert!(!full_scan, "{sql}\nscans a table: {text}");
            assert!(!text.contains("TEMP B-TREE"), "{sql}\nsorts: {text}");
            if sql.contains("FROM jobs") {
                assert!(text.contains("USING INDEX") || text.contains("USING COVERING INDEX"), "{sql}\n{text}");
            }
            println!("{text}");
        }
    }
}

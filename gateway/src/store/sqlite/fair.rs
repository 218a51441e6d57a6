//! The fair claim order of a shard: stride scheduling across users, within per-key concurrency limits.
//!
//! Each user with runnable jobs has a `pass`; a claim serves the user with the lowest pass and advances it by
//! `1 / weight` per job, so users are served round-robin in proportion to their weights whatever their backlog.
//! Within a user, jobs go by priority, then `run_at`, then enqueue order. A queued job that cannot run now is
//! *parked* (`hold` > 0) instead of being scanned past on every claim: delayed jobs until their `run_at`, jobs
//! of a full concurrency key until the key has room, jobs of a held-back kind until its breaker closes. Every
//! step is an index seek, so a claim costs the same with 10 or 1,000,000 jobs queued.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::OnceLock;

use flowork_common::timefmt::format_ms;
use flowork_common::wire::Lease;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params};

use super::counters;
use super::parking::{
    HOLD_BREAKER, HOLD_KEY, KEYS_WITH_PARKED_SQL, KeyRooms, PROMOTE_DUE_SQL, RELEASE_KEY_SQL, park, promote_due,
};
use super::queries::{JOB_COLUMNS, job_from_row};
use crate::store::StoreError;
use crate::store::breakers::HeldBack;
pub use crate::store::core::fair::{ClaimBy, Claimed};
use crate::store::core::fair::{Share, turn_length};

/// The most jobs one claim parks; the rest are parked by the next claims, so one transaction stays short.
const MAX_PARKS_PER_CLAIM: usize = 1_000;

const NEXT_SHARES_SQL: &str =
    "SELECT user_id, pass, weight FROM user_share WHERE runnable > 0 ORDER BY pass, user_id LIMIT 2";
const READY_JOBS_SQL: &str = "SELECT id, kind, concurrency_key FROM jobs
                              WHERE user_id = ?1 AND status = 'queued' AND hold = 0
                              ORDER BY priority DESC, run_at, id LIMIT ?2";
/// Statements run on every claim: each must seek an index, never scan the jobs.
pub const CLAIM_SQL: &[&str] =
    &[PROMOTE_DUE_SQL, NEXT_SHARES_SQL, READY_JOBS_SQL, KEYS_WITH_PARKED_SQL, RELEASE_KEY_SQL];

/// One runnable job considered by a claim.
struct Candidate {
    id: String,
    kind: String,
    key: Option<String>,
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

/// Advances a user who was served `served` jobs starting at `pass`, and the shard's virtual time with it.
fn advance(conn: &Connection, share: &Share, served: usize) -> Result<(), StoreError> {
    let step = 1.0 / share.weight.max(1) as f64;
    conn.prepare_cached("UPDATE user_share SET pass = ?2 WHERE user_id = ?1")?
        .execute(params![share.user, share.pass + step * served as f64])?;
    conn.prepare_cached("UPDATE engine_state SET vtime = max(vtime, ?1)")?
        .execute([share.pass + step * (served.saturating_sub(1)) as f64])?;
    Ok(())
}

/// The statement that leases a list of jobs (`?4`, an `rarray`) by primary key; its text is made once.
fn lease_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        format!(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = ?1,
                    lease_token = lower(hex(randomblob(16))), lease_expires_at = ?2, claimed_at = ?3,
                    counted = counted + 1
             WHERE id IN rarray(?4) AND status = 'queued'
             RETURNING {JOB_COLUMNS}, lease_token, hold"
        )
    })
}

/// Leases queued jobs in one statement (one statement journal for all of them, not one per job), in the order
/// of `ids`, and counts them; each comes with how long it waited since it became runnable. Ids no longer queued
/// are skipped.
fn lease_jobs(
    conn: &Connection,
    engine: &str,
    ids: &[String],
    worker: &str,
    expires: i64,
    now: i64,
) -> Result<Vec<(Lease, i64)>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let list = Rc::new(ids.iter().map(|id| Value::Text(id.clone())).collect::<Vec<_>>());
    let mut stmt = conn.prepare_cached(lease_sql())?;
    let mut holds = Vec::with_capacity(ids.len());
    let mut leased = Vec::with_capacity(ids.len());
    let mut rows = stmt.query(params![worker, expires, now, list])?;
    while let Some(row) = rows.next()? {
        let runnable_since = row.get::<_, i64>(9)?.max(row.get::<_, i64>(10)?);
        let job = job_from_row(row, engine)?;
        holds.push(row.get::<_, i64>(JOB_COLUMN_COUNT + 1)?);
        let lease = Lease { job, lease_token: row.get(JOB_COLUMN_COUNT)?, lease_expires_at: format_ms(expires) };
        leased.push((lease, now - runnable_since));
    }
    drop(rows);
    let moved = leased.iter().zip(&holds);
    counters::count_leased(
        conn,
        moved.map(|((l, _), hold)| (l.job.user.as_str(), l.job.concurrency_key.as_deref(), *hold)),
    )?;
    // RETURNING comes in the order SQLite visited the rows; the claim order is the order asked for.
    let order: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
    leased.sort_by_key(|(lease, _)| order.get(lease.job.id.as_str()).copied().unwrap_or(usize::MAX));
    Ok(leased)
}

/// How many columns `JOB_COLUMNS` names.
const JOB_COLUMN_COUNT: usize = super::queries::JOB_COLUMN_COUNT;

/// Leases up to `max` runnable jobs in the fair order.
pub fn claim(conn: &Connection, by: &ClaimBy<'_>, held: &HeldBack) -> Result<Claimed, StoreError> {
    promote_due(conn, by.now)?;
    let expires = by.now.saturating_add(by.lease_ms as i64);
    let max = by.max as usize;
    let mut claimed = Claimed::default();
    let mut rooms = KeyRooms::default();
    let mut parked = 0;
    // Every round leases or parks at least one job, or recounts a user; the bound is a guard against a bug
    // turning that into an endless transaction.
    let mut rounds = 0;
    while claimed.leases.len() < max && parked < MAX_PARKS_PER_CLAIM && rounds < max + MAX_PARKS_PER_CLAIM + 16 {
        rounds += 1;
        let shares = next_shares(conn)?;
        let Some(first) = shares.first() else { break };
        let remaining = max - claimed.leases.len();
        let take = turn_length(first, shares.get(1), remaining);
        let candidates = ready_jobs(conn, &first.user, take)?;
        if candidates.is_empty() {
            resync_runnable(conn, &first.user)?;
            continue;
        }
        let mut ready = Vec::with_capacity(candidates.len());
        for candidate in candidates {
            if held.holds(&candidate.kind, &first.user) {
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
            ready.push(candidate.id);
        }
        let leased = lease_jobs(conn, by.engine, &ready, by.worker, expires, by.now)?;
        let served = leased.len();
        for (lease, waited) in leased {
            claimed.leases.push(lease);
            claimed.waited_ms.push(waited);
        }
        if served > 0 {
            advance(conn, first, served)?;
        }
    }
    Ok(claimed)
}

/// Leases one job of `kind` (a half-open breaker's probe), of `user` for a user's breaker: a parked one first,
/// else a runnable one. A kind's probe is not a job of a user whose own breaker holds them back.
pub fn claim_probe(conn: &Connection, by: &ClaimBy<'_>, kind: &str, user: Option<&str>) -> Result<Claimed, StoreError> {
    let mut candidate = None;
    for hold in [HOLD_BREAKER, 0] {
        // At hold 0 a scan of the kind's runnable jobs, but rare: a breaker half-opens with no parked job.
        // The hold is written out, not bound, so that the parked jobs' partial index applies.
        candidate = conn
            .prepare_cached(&format!(
                "SELECT id, concurrency_key FROM jobs WHERE kind = ?1 AND status = 'queued' AND hold = {hold}
                   AND CASE WHEN ?2 IS NULL
                            THEN user_id NOT IN (SELECT user_id FROM user_breakers
                                                 WHERE kind = ?1 AND state <> 'closed')
                            ELSE user_id = ?2 END
                 ORDER BY id LIMIT 1"
            ))?
            .query_row(params![kind, user], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?)))
            .optional()?;
        if candidate.is_some() {
            break;
        }
    }
    let mut claimed = Claimed::default();
    let Some((id, key)) = candidate else { return Ok(claimed) };
    if let Some(key) = key
        && !KeyRooms::default().take(conn, &key)?
    {
        return Ok(claimed);
    }
    let expires = by.now.saturating_add(by.lease_ms as i64);
    for (lease, waited) in lease_jobs(conn, by.engine, &[id], by.worker, expires, by.now)? {
        claimed.leases.push(lease);
        claimed.waited_ms.push(waited);
    }
    Ok(claimed)
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
        rusqlite::vtab::array::load_module(&conn).unwrap();
        super::super::migrate::apply(&mut conn, super::super::migrate::SHARD, "memory").unwrap();
        let mut statements: Vec<&str> = CLAIM_SQL.to_vec();
        statements.push(lease_sql());
        statements.extend(super::super::position::POSITION_SQL);
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
            // The list of a batched lease (`rarray`) is read once, whole: it is the input, not a table.
            let singleton = |step: &str| {
                matches!(step, "SCAN e" | "SCAN engine_state" | "SCAN CONSTANT ROW")
                    || step.starts_with("SCAN rarray VIRTUAL TABLE")
            };
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

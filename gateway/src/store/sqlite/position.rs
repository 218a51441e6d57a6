//! Queue positions under the fair order: how many jobs will be claimed before a queued job, or why it waits.
//!
//! A position is the job's own user's runnable jobs ahead of it (an index range count), plus for every other user
//! with runnable jobs the number of theirs whose turn (pass + i/weight) comes first. It is exact for the jobs
//! queued now; later arrivals, retries and newly parked jobs can move it. A page of jobs costs one walk of its
//! user's backlog up to its deepest job, not one walk per job.

use std::collections::HashMap;

use flowork_common::wire::{Job, JobStatus};
use rusqlite::{Connection, OptionalExtension, params};

use super::parking::{HOLD_KEY, HOLD_NONE, HOLD_RUN_AT};
use crate::store::StoreError;
use crate::store::core::fair::Shares;

/// A user's runnable jobs before (priority, run_at, id) in their claim order.
pub(super) const OWN_AHEAD_SQL: &str =
    "SELECT (SELECT count(*) FROM jobs WHERE user_id = ?1 AND status = 'queued' AND hold = 0 AND priority > ?2)
          + (SELECT count(*) FROM jobs WHERE user_id = ?1 AND status = 'queued' AND hold = 0
                 AND priority = ?2 AND run_at < ?3)
          + (SELECT count(*) FROM jobs WHERE user_id = ?1 AND status = 'queued' AND hold = 0
                 AND priority = ?2 AND run_at = ?3 AND id < ?4)";
/// A user's runnable jobs of one priority strictly between two (run_at, id) points.
const BETWEEN_SAME_PRIORITY_SQL: &str = "SELECT count(*) FROM jobs
     WHERE user_id = ?1 AND status = 'queued' AND hold = 0 AND priority = ?2
       AND (run_at, id) > (?3, ?4) AND (run_at, id) < (?5, ?6)";
/// A user's runnable jobs from a point to the end of its priority, plus those of priorities strictly between.
const BETWEEN_PRIORITIES_SQL: &str = "SELECT
       (SELECT count(*) FROM jobs WHERE user_id = ?1 AND status = 'queued' AND hold = 0 AND priority = ?2
            AND (run_at, id) > (?3, ?4))
     + (SELECT count(*) FROM jobs WHERE user_id = ?1 AND status = 'queued' AND hold = 0
            AND priority < ?2 AND priority > ?5)
     + (SELECT count(*) FROM jobs WHERE user_id = ?1 AND status = 'queued' AND hold = 0 AND priority = ?5
            AND (run_at, id) < (?6, ?7))";
/// The statements of a position lookup, for the query-plan test.
#[cfg(test)]
pub(super) const POSITION_SQL: &[&str] = &[OWN_AHEAD_SQL, BETWEEN_SAME_PRIORITY_SQL, BETWEEN_PRIORITIES_SQL];

/// Where a queued job stands: why it waits, if it is parked, else how many jobs will be claimed before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Runnable: this many jobs will be claimed before it, under the current fair order.
    Behind(u64),
    /// Parked with this hold (1 run_at, 2 concurrency key, 3 breaker).
    Held(i64),
}

/// A queued job's place in its user's claim order.
#[derive(Debug, Clone)]
struct OrderKey {
    id: String,
    user: String,
    priority: i32,
    run_at: i64,
    hold: i64,
}

impl OrderKey {
    fn load(conn: &Connection, job_id: &str) -> Result<Option<Self>, StoreError> {
        Ok(conn
            .prepare_cached("SELECT user_id, priority, run_at, hold FROM jobs WHERE id = ?1 AND status = 'queued'")?
            .query_row([job_id], |r| {
                Ok(Self {
                    id: job_id.to_string(),
                    user: r.get(0)?,
                    priority: r.get(1)?,
                    run_at: r.get(2)?,
                    hold: r.get(3)?,
                })
            })
            .optional()?)
    }

    /// Claim order within a user: priority (high first), then run_at, then id.
    fn cmp_claim(&self, other: &Self) -> std::cmp::Ordering {
        other
            .priority
            .cmp(&self.priority)
            .then_with(|| self.run_at.cmp(&other.run_at))
            .then_with(|| self.id.cmp(&other.id))
    }
}

/// The runnable jobs of the user ahead of `key`.
fn own_ahead(conn: &Connection, key: &OrderKey) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached(OWN_AHEAD_SQL)?
        .query_row(params![key.user, key.priority, key.run_at, key.id], |r| r.get(0))?)
}

/// The runnable jobs of the user strictly between `a` and `b` (`a` first in claim order).
fn between(conn: &Connection, a: &OrderKey, b: &OrderKey) -> Result<i64, StoreError> {
    if a.priority == b.priority {
        return Ok(conn
            .prepare_cached(BETWEEN_SAME_PRIORITY_SQL)?
            .query_row(params![a.user, a.priority, a.run_at, a.id, b.run_at, b.id], |r| r.get(0))?);
    }
    Ok(conn
        .prepare_cached(BETWEEN_PRIORITIES_SQL)?
        .query_row(params![a.user, a.priority, a.run_at, a.id, b.priority, b.run_at, b.id], |r| r.get(0))?)
}

/// The users with runnable jobs in this shard.
fn load_shares(conn: &Connection) -> Result<Shares, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT user_id, pass, weight, runnable FROM user_share WHERE runnable > 0")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, (r.get(1)?, r.get(2)?, r.get(3)?))))?;
    Ok(Shares(rows.collect::<rusqlite::Result<HashMap<_, _>>>()?))
}

/// The standing of one queued job, or `None` if it is not queued.
pub fn standing(conn: &Connection, job_id: &str) -> Result<Option<Standing>, StoreError> {
    let Some(key) = OrderKey::load(conn, job_id)? else { return Ok(None) };
    if key.hold != HOLD_NONE {
        return Ok(Some(Standing::Held(key.hold)));
    }
    let ahead = own_ahead(conn, &key)?;
    Ok(Some(Standing::Behind((ahead + load_shares(conn)?.others_before(&key.user, ahead)).max(0) as u64)))
}

/// Fills in where each queued job of `jobs` stands: its `queue_position`, or what it is `waiting_on`.
pub fn place_in_queue(conn: &Connection, jobs: &mut [Job]) -> Result<(), StoreError> {
    let mut keys = Vec::new();
    for (index, job) in jobs.iter().enumerate().filter(|(_, j)| j.status == JobStatus::Queued) {
        if let Some(key) = OrderKey::load(conn, &job.id)? {
            keys.push((index, key));
        }
    }
    if keys.is_empty() {
        return Ok(());
    }
    let paused = super::queries::is_paused(conn)?;
    let shares = load_shares(conn)?;
    let (mut ready, held): (Vec<_>, Vec<_>) = keys.into_iter().partition(|(_, key)| key.hold == HOLD_NONE);
    for (index, key) in held {
        let reason = match key.hold {
            HOLD_RUN_AT => "run_at",
            HOLD_KEY => "concurrency_key",
            _ => "breaker",
        };
        jobs[index].waiting_on = Some(reason.to_string());
    }
    // Walk each user's jobs in claim order, counting only the gaps between them.
    ready.sort_by(|(_, a), (_, b)| a.user.cmp(&b.user).then_with(|| a.cmp_claim(b)));
    let mut previous: Option<(&OrderKey, i64)> = None;
    for (index, key) in &ready {
        let ahead = match previous {
            Some((before, its_ahead)) if before.user == key.user => its_ahead + 1 + between(conn, before, key)?,
            _ => own_ahead(conn, key)?,
        };
        previous = Some((key, ahead));
        let job = &mut jobs[*index];
        job.queue_position = Some((ahead + shares.others_before(&key.user, ahead)).max(0) as u64);
        job.waiting_on = paused.then(|| "paused".to_string());
    }
    Ok(())
}

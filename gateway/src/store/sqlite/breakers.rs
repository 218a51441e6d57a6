//! The SQL of circuit breakers in a shard: a kind's (`kind_breakers`) and a user's of a kind (`user_breakers`),
//! read and written as `store::breakers` decides. Kept in the shard so every gateway process sees the same
//! breakers.

use rusqlite::{Connection, OptionalExtension, params};

use crate::store::breakers::{
    BreakerRow, HeldBack, LAPSED, Signal, Tripped, kind_after_failure, user_after_failure, window_floor,
};
use crate::store::{BreakerPolicy, KindBreaker, StoreError};

/// Moves open breakers whose cool-down has passed to half-open, and frees the probe slot of a half-open breaker
/// whose probe is no longer running (its lease lapsed).
pub fn refresh(conn: &Connection, now: i64, policy: BreakerPolicy) -> Result<(), StoreError> {
    let cooled = now - policy.cooldown_ms.min(i64::MAX as u64) as i64;
    for (half_open, free_probe) in REFRESH_SQL {
        conn.prepare_cached(half_open)?.execute([cooled])?;
        conn.prepare_cached(free_probe)?.execute([])?;
    }
    Ok(())
}

/// `refresh`'s statements for each table of breakers: half-open the cooled, free the probes that stopped.
const REFRESH_SQL: [(&str, &str); 2] = [
    (
        "UPDATE kind_breakers SET state = 'half_open', probe_job_id = NULL WHERE state = 'open' AND opened_at <= ?1",
        "UPDATE kind_breakers SET probe_job_id = NULL
         WHERE state = 'half_open' AND probe_job_id IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.id = probe_job_id AND jobs.status = 'running')",
    ),
    (
        "UPDATE user_breakers SET state = 'half_open', probe_job_id = NULL WHERE state = 'open' AND opened_at <= ?1",
        "UPDATE user_breakers SET probe_job_id = NULL
         WHERE state = 'half_open' AND probe_job_id IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.id = probe_job_id AND jobs.status = 'running')",
    ),
];

/// What the breakers hold back (nothing when breakers are off).
pub fn held(conn: &Connection, breakers_on: bool) -> Result<HeldBack, StoreError> {
    let mut held = HeldBack::default();
    if !breakers_on {
        return Ok(held);
    }
    let mut stmt = conn.prepare_cached("SELECT kind FROM kind_breakers WHERE state <> 'closed'")?;
    held.kinds = stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
    let mut stmt = conn.prepare_cached("SELECT kind, user_id FROM user_breakers WHERE state <> 'closed'")?;
    held.users = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?;
    Ok(held)
}

/// Half-open breakers waiting for their probe to be claimed: (kind, `None`) for a kind's, (kind, user) for a
/// user's.
pub fn wanting_a_probe(conn: &Connection) -> Result<Vec<(String, Option<String>)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT kind, NULL FROM kind_breakers WHERE state = 'half_open' AND probe_job_id IS NULL
         UNION ALL
         SELECT kind, user_id FROM user_breakers WHERE state = 'half_open' AND probe_job_id IS NULL",
    )?;
    let wanting = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(wanting)
}

pub fn set_probe(conn: &Connection, kind: &str, user: Option<&str>, job_id: &str) -> Result<(), StoreError> {
    match user {
        None => conn
            .prepare_cached("UPDATE kind_breakers SET probe_job_id = ?2 WHERE kind = ?1")?
            .execute(params![kind, job_id])?,
        Some(user) => conn
            .prepare_cached("UPDATE user_breakers SET probe_job_id = ?3 WHERE kind = ?1 AND user_id = ?2")?
            .execute(params![kind, user, job_id])?,
    };
    Ok(())
}

/// Records what an attempt of `kind` told its breakers (see `Finish::breaker_signal`).
pub fn record(
    conn: &Connection,
    kind: &str,
    job_id: &str,
    signal: Signal<'_>,
    now: i64,
    policy: BreakerPolicy,
) -> Result<(), StoreError> {
    if policy.failures == 0 {
        return Ok(());
    }
    match signal {
        Signal::Worked => record_success(conn, kind, job_id),
        Signal::Failed(error) => record_failure(conn, kind, job_id, error, now, policy),
    }
}

/// Counts jobs whose lease lapsed, as (id, kind), as retryable failures of their kinds.
pub fn record_lapsed(
    conn: &Connection,
    lapsed: &[(String, String)],
    now: i64,
    policy: BreakerPolicy,
) -> Result<(), StoreError> {
    for (job_id, kind) in lapsed {
        record(conn, kind, job_id, LAPSED, now, policy)?;
    }
    Ok(())
}

/// A success closes a half-open breaker whose probe it was and clears the failure counts of the kind's closed
/// breakers (the kind works); the jobs a closed breaker held run again.
fn record_success(conn: &Connection, kind: &str, job_id: &str) -> Result<(), StoreError> {
    let kind_was: Option<String> = conn
        .prepare_cached("SELECT state FROM kind_breakers WHERE kind = ?1")?
        .query_row([kind], |r| r.get(0))
        .optional()?;
    if let Some(state) = kind_was {
        let closed = conn
            .prepare_cached(
                "UPDATE kind_breakers SET state = 'closed', failures = 0, probe_job_id = NULL, opened_at = NULL
                 WHERE kind = ?1 AND (state = 'closed' OR probe_job_id = ?2)",
            )?
            .execute(params![kind, job_id])?;
        if closed > 0 && state != "closed" {
            super::parking::release_parked_kind(conn, kind)?;
        }
    }
    conn.prepare_cached("UPDATE user_breakers SET failures = 0 WHERE kind = ?1 AND state = 'closed' AND failures > 0")?
        .execute([kind])?;
    let probed: Option<String> = conn
        .prepare_cached(
            "UPDATE user_breakers SET state = 'closed', failures = 0, probe_job_id = NULL, opened_at = NULL
             WHERE kind = ?1 AND probe_job_id = ?2 RETURNING user_id",
        )?
        .query_row(params![kind, job_id], |r| r.get(0))
        .optional()?;
    if let Some(user) = probed {
        super::parking::release_parked_kind_of_user(conn, kind, &user)?;
    }
    Ok(())
}

/// A retryable failure counts against its user's breaker of the kind, then the kind's (from the users' counts).
fn record_failure(
    conn: &Connection,
    kind: &str,
    job_id: &str,
    error: &str,
    now: i64,
    policy: BreakerPolicy,
) -> Result<(), StoreError> {
    let Some(user) = conn
        .prepare_cached("SELECT user_id FROM jobs WHERE id = ?1")?
        .query_row([job_id], |r| r.get::<_, String>(0))
        .optional()?
    else {
        return Ok(());
    };
    let row = read_row(
        conn,
        "SELECT state, failures, window_start, probe_job_id FROM user_breakers WHERE kind = ?1 AND user_id = ?2",
        params![kind, user],
        now,
    )?;
    if let Some(tripped) = user_after_failure(&row, job_id, now, policy) {
        conn.prepare_cached(
            "INSERT INTO user_breakers (kind, user_id, state, failures, window_start, opened_at, last_error)
             VALUES (?1, ?2, ?3, ?4, ?5, CASE WHEN ?6 THEN ?7 END, ?8)
             ON CONFLICT (kind, user_id) DO UPDATE SET state = excluded.state, failures = excluded.failures,
                 window_start = excluded.window_start, last_error = excluded.last_error, probe_job_id = NULL,
                 opened_at = CASE WHEN ?6 THEN ?7 ELSE user_breakers.opened_at END",
        )?
        .execute(params![
            kind,
            user,
            tripped.state,
            tripped.failures,
            tripped.window_start,
            tripped.opened,
            now,
            error
        ])?;
    }
    let per_user: Vec<i64> = conn
        .prepare_cached("SELECT failures FROM user_breakers WHERE kind = ?1 AND failures > 0 AND window_start >= ?2")?
        .query_map(params![kind, window_floor(now, policy)], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let row = read_row(
        conn,
        "SELECT state, failures, window_start, probe_job_id FROM kind_breakers WHERE kind = ?1",
        [kind],
        now,
    )?;
    let Some(Tripped { state, failures, window_start, opened }) =
        kind_after_failure(&row, &per_user, job_id, now, policy)
    else {
        return Ok(());
    };
    conn.prepare_cached(
        "INSERT INTO kind_breakers (kind, state, failures, window_start, opened_at, last_error, probe_job_id)
         VALUES (?1, ?2, ?3, ?4, CASE WHEN ?5 THEN ?6 END, ?7, NULL)
         ON CONFLICT (kind) DO UPDATE SET state = excluded.state, failures = excluded.failures,
             window_start = excluded.window_start, last_error = excluded.last_error, probe_job_id = NULL,
             opened_at = CASE WHEN ?5 THEN ?6 ELSE kind_breakers.opened_at END",
    )?
    .execute(params![kind, state, failures, window_start, opened, now, error])?;
    Ok(())
}

/// One breaker's row, or a fresh one when it has none yet.
fn read_row(conn: &Connection, sql: &str, key: impl rusqlite::Params, now: i64) -> Result<BreakerRow, StoreError> {
    let row = conn
        .prepare_cached(sql)?
        .query_row(key, |r| {
            Ok(BreakerRow { state: r.get(0)?, failures: r.get(1)?, window_start: r.get(2)?, probe: r.get(3)? })
        })
        .optional()?;
    Ok(row.unwrap_or_else(|| BreakerRow::new(now)))
}

/// Breakers that are not closed, for `/status`: the kinds', then the users'.
pub fn tripped(conn: &Connection) -> Result<Vec<KindBreaker>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT kind, NULL, state, failures, opened_at, last_error FROM kind_breakers WHERE state <> 'closed'
         UNION ALL
         SELECT kind, user_id, state, failures, opened_at, last_error FROM user_breakers WHERE state <> 'closed'
         ORDER BY 2 NULLS FIRST, 1",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(KindBreaker {
            kind: r.get(0)?,
            user: r.get(1)?,
            state: r.get(2)?,
            failures: r.get::<_, i64>(3)?.max(0) as u64,
            opened_at_ms: r.get(4)?,
            last_error: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

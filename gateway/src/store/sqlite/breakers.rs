//! The SQL of per-kind circuit breakers: counting failures, opening, half-opening after the cool-down, closing
//! on a successful probe. Kept in the shard so every gateway process sees the same breaker.

use rusqlite::{Connection, OptionalExtension, params};

use crate::store::{BreakerPolicy, KindBreaker, StoreError};

/// Moves open breakers whose cool-down has passed to half-open, and frees the probe slot of a half-open breaker
/// whose probe is no longer running (its lease lapsed).
pub fn refresh(conn: &Connection, now: i64, policy: BreakerPolicy) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE kind_breakers SET state = 'half_open', probe_job_id = NULL
         WHERE state = 'open' AND opened_at <= ?1",
    )?
    .execute([now - policy.cooldown_ms as i64])?;
    conn.prepare_cached(
        "UPDATE kind_breakers SET probe_job_id = NULL
         WHERE state = 'half_open' AND probe_job_id IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.id = probe_job_id AND jobs.status = 'running')",
    )?
    .execute([])?;
    Ok(())
}

/// Half-open kinds waiting for their probe to be claimed.
pub fn kinds_wanting_a_probe(conn: &Connection) -> Result<Vec<String>, StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT kind FROM kind_breakers WHERE state = 'half_open' AND probe_job_id IS NULL")?;
    let kinds = stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(kinds)
}

pub fn set_probe(conn: &Connection, kind: &str, job_id: &str) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE kind_breakers SET probe_job_id = ?2 WHERE kind = ?1")?
        .execute(params![kind, job_id])?;
    Ok(())
}

/// A breaker's state after a failed attempt of its kind.
pub struct Tripped {
    pub state: &'static str,
    pub failures: i64,
    pub window_start: i64,
    /// Whether it opened now.
    pub opened: bool,
}

/// The breaker rules (both stores): a failed probe reopens a half-open breaker; a closed one counts failures in
/// its window and opens at the policy's count; an open (or half-open, for another job) one does not change.
pub fn after_failure(
    state: &str,
    failures: i64,
    window_start: i64,
    probe: Option<&str>,
    job_id: &str,
    now: i64,
    policy: BreakerPolicy,
) -> Option<Tripped> {
    if state == "half_open" && probe == Some(job_id) {
        return Some(Tripped { state: "open", failures, window_start, opened: true });
    }
    if state != "closed" {
        return None;
    }
    let window = policy.window_ms.min(i64::MAX as u64) as i64;
    let (failures, window_start) = if now - window_start > window { (1, now) } else { (failures + 1, window_start) };
    let opened = failures >= i64::from(policy.failures);
    Some(Tripped { state: if opened { "open" } else { "closed" }, failures, window_start, opened })
}

/// Records an attempt's outcome for its kind.
pub fn record(
    conn: &Connection,
    kind: &str,
    job_id: &str,
    failed: Option<&str>,
    now: i64,
    policy: BreakerPolicy,
) -> Result<(), StoreError> {
    if policy.failures == 0 {
        return Ok(());
    }
    let current: Option<(String, i64, i64, Option<String>)> = conn
        .prepare_cached("SELECT state, failures, window_start, probe_job_id FROM kind_breakers WHERE kind = ?1")?
        .query_row([kind], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?;
    let Some(error) = failed else {
        // A success closes a half-open breaker (its probe worked) and clears the failure count.
        if let Some((state, ..)) = current {
            let closed = conn
                .prepare_cached(
                    "UPDATE kind_breakers SET state = 'closed', failures = 0, probe_job_id = NULL, opened_at = NULL
                     WHERE kind = ?1 AND (state = 'closed' OR probe_job_id = ?2)",
                )?
                .execute(params![kind, job_id])?;
            if closed > 0 && state != "closed" {
                // The jobs parked while the kind was held back may run again.
                super::parking::release_parked_kind(conn, kind)?;
            }
        }
        return Ok(());
    };
    let (state, failures, window_start, probe) = current.unwrap_or(("closed".into(), 0, now, None));
    let Some(Tripped { state, failures, window_start, opened }) =
        after_failure(&state, failures, window_start, probe.as_deref(), job_id, now, policy)
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

/// Breakers that are not closed, for `/status`.
pub fn tripped(conn: &Connection) -> Result<Vec<KindBreaker>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT kind, state, failures, opened_at, last_error FROM kind_breakers WHERE state <> 'closed' ORDER BY kind",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(KindBreaker {
            kind: r.get(0)?,
            state: r.get(1)?,
            failures: r.get::<_, i64>(2)?.max(0) as u64,
            opened_at_ms: r.get(3)?,
            last_error: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

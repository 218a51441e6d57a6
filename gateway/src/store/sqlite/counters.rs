//! The counters of the hot paths' rows, kept by the writer once per statement (shard migrations 0010 and 0011).
//!
//! Queue depth, each user's jobs in flight, each user's runnable jobs (the fair share) and each concurrency key's
//! counts move with every job stored, leased and finished. The shard's triggers skip rows inserted with
//! `counted = 1` and updates that change `counted`; for those, this adds up what a statement did and writes each
//! counter once, with the same arithmetic the triggers use, so both ways give the same numbers (an older build's
//! rows are still counted by the triggers). Every other change (retries, cancels, the reaper, parking, deletes)
//! is counted by the triggers as before.

use std::collections::BTreeMap;

use rusqlite::{Connection, params};

use super::parking::{HOLD_KEY, HOLD_NONE, hold_for_run_at};
use crate::store::{NewJob, StoreError};

/// Counts `jobs`, just inserted as queued at `now` with `counted = 1`.
pub fn count_inserted(conn: &Connection, jobs: &[&NewJob], now: i64) -> Result<(), StoreError> {
    if jobs.is_empty() {
        return Ok(());
    }
    // Per user: jobs in flight and jobs runnable now; per concurrency key: jobs runnable now.
    let mut users: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    let mut keys: BTreeMap<&str, i64> = BTreeMap::new();
    for job in jobs {
        let ready = i64::from(hold_for_run_at(job.run_at_ms, now) == HOLD_NONE);
        let user = users.entry(job.user.as_str()).or_default();
        user.0 += 1;
        user.1 += ready;
        if let Some(key) = &job.concurrency_key {
            *keys.entry(key.as_str()).or_default() += ready;
        }
    }
    conn.prepare_cached("UPDATE queue_stats SET queued = queued + ?1")?.execute([jobs.len() as i64])?;
    for (user, (inflight, ready)) in users {
        conn.prepare_cached(
            "INSERT INTO user_inflight (user_id, inflight) VALUES (?1, ?2)
             ON CONFLICT (user_id) DO UPDATE SET inflight = inflight + excluded.inflight",
        )?
        .execute(params![user, inflight])?;
        if ready > 0 {
            add_runnable(conn, user, ready)?;
        }
    }
    for (key, ready) in keys {
        conn.prepare_cached(
            "INSERT INTO key_state (concurrency_key, running, ready, parked) VALUES (?1, 0, ?2, 0)
             ON CONFLICT (concurrency_key) DO UPDATE SET ready = ready + excluded.ready",
        )?
        .execute(params![key, ready])?;
    }
    Ok(())
}

/// Counts rows one statement moved from `queued` to `running` with their `counted` bumped: each one's user,
/// concurrency key and hold (which the lease leaves as it was).
pub fn count_leased<'a>(
    conn: &Connection,
    rows: impl IntoIterator<Item = (&'a str, Option<&'a str>, i64)>,
) -> Result<(), StoreError> {
    // Per user: runnable jobs taken; per key: (ready taken, parked taken, leased).
    let mut total = 0;
    let mut users: BTreeMap<&str, i64> = BTreeMap::new();
    let mut keys: BTreeMap<&str, (i64, i64, i64)> = BTreeMap::new();
    for (user, key, hold) in rows {
        total += 1;
        let ready = i64::from(hold == HOLD_NONE);
        *users.entry(user).or_default() += ready;
        if let Some(key) = key {
            let counts = keys.entry(key).or_default();
            counts.0 += ready;
            counts.1 += i64::from(hold == HOLD_KEY);
            counts.2 += 1;
        }
    }
    if total == 0 {
        return Ok(());
    }
    conn.prepare_cached("UPDATE queue_stats SET queued = queued - ?1, running = running + ?1")?.execute([total])?;
    for (user, ready) in users {
        if ready > 0 {
            add_runnable(conn, user, -ready)?;
        }
    }
    for (key, (ready, parked, leased)) in keys {
        conn.prepare_cached(
            "UPDATE key_state SET running = running + ?4, ready = ready - ?2, parked = parked - ?3
             WHERE concurrency_key = ?1",
        )?
        .execute(params![key, ready, parked, leased])?;
    }
    Ok(())
}

/// Counts rows one statement moved from `running` to `succeeded` with their `counted` bumped: each one's user and
/// concurrency key.
pub fn count_succeeded<'a>(
    conn: &Connection,
    rows: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) -> Result<(), StoreError> {
    let mut total = 0;
    let mut users: BTreeMap<&str, i64> = BTreeMap::new();
    let mut keys: BTreeMap<&str, i64> = BTreeMap::new();
    for (user, key) in rows {
        total += 1;
        *users.entry(user).or_default() += 1;
        if let Some(key) = key {
            *keys.entry(key).or_default() += 1;
        }
    }
    if total == 0 {
        return Ok(());
    }
    conn.prepare_cached("UPDATE queue_stats SET running = running - ?1")?.execute([total])?;
    for (user, done) in users {
        conn.prepare_cached("UPDATE user_inflight SET inflight = inflight - ?2 WHERE user_id = ?1")?
            .execute(params![user, done])?;
    }
    for (key, done) in keys {
        conn.prepare_cached("UPDATE key_state SET running = running - ?2 WHERE concurrency_key = ?1")?
            .execute(params![key, done])?;
    }
    Ok(())
}

/// Moves a user's count of runnable jobs by `delta`; a user who becomes runnable starts at the shard's virtual
/// time at the earliest (the fair share's rule, as in the triggers).
fn add_runnable(conn: &Connection, user: &str, delta: i64) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO user_share (user_id, runnable, pass) VALUES (?1, ?2, (SELECT vtime FROM engine_state))
         ON CONFLICT (user_id) DO UPDATE SET
             pass = CASE WHEN runnable <= 0 AND excluded.runnable > 0 THEN max(pass, excluded.pass) ELSE pass END,
             runnable = runnable + excluded.runnable",
    )?
    .execute(params![user, delta])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::AdmissionLimits;
    use crate::store::EnqueueOutcome;
    use crate::store::sqlite::{connection::open_writer, fair, migrate, queries};

    fn job(key: &str) -> NewJob {
        NewJob {
            id: uuid::Uuid::now_v7().to_string(),
            engine: "e".into(),
            user: "alice".into(),
            kind: "echo".into(),
            payload: "null".into(),
            priority: 0,
            run_at_ms: 1_000,
            max_attempts: 1,
            timeout_ms: 1,
            idempotency_key: key.into(),
            fingerprint: "f".into(),
            traceparent: None,
            concurrency_key: Some("group".into()),
        }
    }

    #[test]
    fn rows_of_an_older_build_are_counted_by_the_triggers_and_this_builds_rows_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_writer(&dir.path().join("shard.sqlite3")).unwrap();
        migrate::apply(&mut conn, migrate::SHARD, "shard").unwrap();
        conn.execute("INSERT INTO allowed_users (user_id, is_owner, added_at) VALUES ('alice', 1, 0)", []).unwrap();
        // An older build's insert names no `counted` column: the triggers count it.
        conn.execute(
            "INSERT INTO jobs (id, user_id, kind, payload, run_at, max_attempts, timeout_ms, status, enqueued_at,
                               idempotency_key, request_fingerprint, concurrency_key, hold)
             VALUES ('old', 'alice', 'echo', 'null', 0, 1, 1, 'queued', 0, 'k0', 'f', 'group', 0)",
            [],
        )
        .unwrap();
        // This build's inserts, one alone and two in one statement, each counted once.
        let outcome = queries::enqueue(&conn, &job("k1"), 1_000, AdmissionLimits::default()).unwrap();
        assert!(matches!(outcome, EnqueueOutcome::Created(_)));
        let (a, b, again) = (job("k2"), job("k3"), job("k1"));
        let outcomes = queries::enqueue_many(&conn, &[&a, &b, &again], 1_000, AdmissionLimits::default()).unwrap();
        assert_eq!(outcomes.iter().filter(|o| matches!(o, Ok(EnqueueOutcome::Created(_)))).count(), 2);
        let counted = ints(
            &conn,
            [
                "SELECT queued FROM queue_stats",
                "SELECT inflight FROM user_inflight WHERE user_id = 'alice'",
                "SELECT runnable FROM user_share WHERE user_id = 'alice'",
                "SELECT ready FROM key_state WHERE concurrency_key = 'group'",
                "SELECT count(*) FROM jobs WHERE counted = 1",
            ],
        );
        assert_eq!(counted, [4, 4, 4, 4, 3]);
    }

    /// Each query's single integer.
    fn ints<const N: usize>(conn: &Connection, queries: [&str; N]) -> [i64; N] {
        queries.map(|sql| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap())
    }

    /// The counters as a recount of the jobs gives them: queued, running, alice's in flight and runnable, the
    /// key's running and ready.
    fn recount(conn: &Connection) -> [i64; 6] {
        ints(
            conn,
            [
                "SELECT count(*) FROM jobs WHERE status = 'queued'",
                "SELECT count(*) FROM jobs WHERE status = 'running'",
                "SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')",
                "SELECT count(*) FROM jobs WHERE status = 'queued' AND hold = 0",
                "SELECT count(*) FROM jobs WHERE status = 'running' AND concurrency_key = 'group'",
                "SELECT count(*) FROM jobs WHERE status = 'queued' AND hold = 0 AND concurrency_key = 'group'",
            ],
        )
    }

    /// The same six as the counter tables hold them.
    fn counters(conn: &Connection) -> [i64; 6] {
        ints(
            conn,
            [
                "SELECT queued FROM queue_stats",
                "SELECT running FROM queue_stats",
                "SELECT inflight FROM user_inflight WHERE user_id = 'alice'",
                "SELECT runnable FROM user_share WHERE user_id = 'alice'",
                "SELECT running FROM key_state WHERE concurrency_key = 'group'",
                "SELECT ready FROM key_state WHERE concurrency_key = 'group'",
            ],
        )
    }

    #[test]
    fn claims_and_successes_are_counted_once_whichever_build_moved_the_row() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = open_writer(&dir.path().join("shard.sqlite3")).unwrap();
        migrate::apply(&mut conn, migrate::SHARD, "shard").unwrap();
        conn.execute("INSERT INTO allowed_users (user_id, is_owner, added_at) VALUES ('alice', 1, 0)", []).unwrap();
        let jobs: Vec<NewJob> = (0..6).map(|n| job(&format!("k{n}"))).collect();
        let refs: Vec<&NewJob> = jobs.iter().collect();
        queries::enqueue_many(&conn, &refs, 1_000, AdmissionLimits::default()).unwrap();
        assert_eq!(counters(&conn), [6, 0, 6, 6, 0, 6]);
        // An older build's claim and success leave `counted` alone: the triggers count them.
        let old = &jobs[0].id;
        conn.execute(
            "UPDATE jobs SET status = 'running', attempts = 1, lease_token = 't', lease_expires_at = 9000
             WHERE id = ?1",
            [old],
        )
        .unwrap();
        assert_eq!(counters(&conn), recount(&conn));
        // This build's claim of three jobs and batched success of two, each counted once.
        let by = fair::ClaimBy { engine: "e", worker: "w", max: 3, lease_ms: 5_000, now: 1_000 };
        let claimed = fair::claim(&conn, &by, &Default::default()).unwrap();
        assert_eq!(claimed.leases.len(), 3);
        assert_eq!(counters(&conn), [2, 4, 6, 2, 4, 2]);
        assert_eq!(counters(&conn), recount(&conn));
        let items: Vec<(&str, &str, Option<&str>)> =
            claimed.leases[..2].iter().map(|l| (l.job.id.as_str(), l.lease_token.as_str(), None)).collect();
        let done = queries::finish_succeeded_many(&conn, &items, 1_500, &mut Default::default()).unwrap();
        assert_eq!(done.len(), 2);
        assert_eq!(counters(&conn), [2, 2, 4, 2, 2, 2]);
        conn.execute(
            "UPDATE jobs SET status = 'succeeded', finished_at = 1600, lease_token = NULL, lease_expires_at = NULL
             WHERE id = ?1",
            [old],
        )
        .unwrap();
        assert_eq!(counters(&conn), [2, 1, 3, 2, 1, 2]);
        assert_eq!(counters(&conn), recount(&conn));
    }
}

//! The counters of newly stored jobs, kept by the writer once per transaction (shard migration 0010).
//!
//! Queue depth, each user's jobs in flight, each user's runnable jobs (the fair share) and each concurrency key's
//! ready jobs move with every job stored. The shard's insert triggers skip rows marked `counted = 1`; for those,
//! this adds up the jobs a statement created and writes each counter once, with the same upserts the triggers
//! use, so both ways give the same numbers (rows inserted by an older build are still counted by the triggers).
//! Status changes and deletes are counted by their triggers as before.

use std::collections::BTreeMap;

use rusqlite::{Connection, params};

use super::parking::{HOLD_NONE, hold_for_run_at};
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
            conn.prepare_cached(
                "INSERT INTO user_share (user_id, runnable, pass) VALUES (?1, ?2, (SELECT vtime FROM engine_state))
                 ON CONFLICT (user_id) DO UPDATE SET
                     pass = CASE WHEN runnable <= 0 THEN max(pass, excluded.pass) ELSE pass END,
                     runnable = runnable + excluded.runnable",
            )?
            .execute(params![user, ready])?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::AdmissionLimits;
    use crate::store::EnqueueOutcome;
    use crate::store::sqlite::{connection::open_writer, migrate, queries};

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
        let one = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
        assert_eq!(one("SELECT queued FROM queue_stats"), 4);
        assert_eq!(one("SELECT inflight FROM user_inflight WHERE user_id = 'alice'"), 4);
        assert_eq!(one("SELECT runnable FROM user_share WHERE user_id = 'alice'"), 4);
        assert_eq!(one("SELECT ready FROM key_state WHERE concurrency_key = 'group'"), 4);
        assert_eq!(one("SELECT count(*) FROM jobs WHERE counted = 1"), 3);
    }
}

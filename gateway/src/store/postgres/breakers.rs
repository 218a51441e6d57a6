//! Circuit breakers in PostgreSQL: the rows of `sqlite/breakers.rs` per engine, read and written as
//! `store::breakers` decides.

use deadpool_postgres::GenericClient;

use super::claim::{release_parked_kind, release_parked_kind_of_user};
use super::jobs::{execute, query, query_opt};
use crate::store::breakers::{
    BreakerRow, HeldBack, LAPSED, Signal, Tripped, kind_after_failure, user_after_failure, window_floor,
};
use crate::store::{BreakerPolicy, KindBreaker, StoreError};

/// Moves open breakers whose cool-down has passed to half-open, and frees the probe slot of a half-open breaker
/// whose probe no longer runs.
pub async fn refresh(tx: &impl GenericClient, engine: &str, now: i64, policy: BreakerPolicy) -> Result<(), StoreError> {
    let cooled = now - policy.cooldown_ms.min(i64::MAX as u64) as i64;
    for (half_open, free_probe) in REFRESH_SQL {
        execute(tx, half_open, &[&engine, &cooled]).await?;
        execute(tx, free_probe, &[&engine]).await?;
    }
    Ok(())
}

/// `refresh`'s statements for each table of breakers: half-open the cooled, free the probes that stopped.
const REFRESH_SQL: [(&str, &str); 2] = [
    (
        "UPDATE kind_breakers SET state = 'half_open', probe_job_id = NULL
         WHERE engine_id = $1 AND state = 'open' AND opened_at <= $2",
        "UPDATE kind_breakers AS b SET probe_job_id = NULL
         WHERE b.engine_id = $1 AND b.state = 'half_open' AND b.probe_job_id IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.engine_id = $1 AND jobs.id = b.probe_job_id
                           AND jobs.status = 'running')",
    ),
    (
        "UPDATE user_breakers SET state = 'half_open', probe_job_id = NULL
         WHERE engine_id = $1 AND state = 'open' AND opened_at <= $2",
        "UPDATE user_breakers AS b SET probe_job_id = NULL
         WHERE b.engine_id = $1 AND b.state = 'half_open' AND b.probe_job_id IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.engine_id = $1 AND jobs.id = b.probe_job_id
                           AND jobs.status = 'running')",
    ),
];

/// What the engine's breakers hold back.
pub async fn held(tx: &impl GenericClient, engine: &str) -> Result<HeldBack, StoreError> {
    let kinds =
        query(tx, "SELECT kind FROM kind_breakers WHERE engine_id = $1 AND state <> 'closed'", &[&engine]).await?;
    let users =
        query(tx, "SELECT kind, user_id FROM user_breakers WHERE engine_id = $1 AND state <> 'closed'", &[&engine])
            .await?;
    Ok(HeldBack {
        kinds: kinds.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>()?,
        users: users
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, tokio_postgres::Error>>()?,
    })
}

/// Half-open breakers waiting for their probe to be claimed: (kind, `None`) for a kind's, (kind, user) for a
/// user's.
pub async fn wanting_a_probe(
    tx: &impl GenericClient,
    engine: &str,
) -> Result<Vec<(String, Option<String>)>, StoreError> {
    let rows = query(
        tx,
        "SELECT kind, NULL::TEXT FROM kind_breakers WHERE engine_id = $1 AND state = 'half_open' AND probe_job_id IS NULL
         UNION ALL
         SELECT kind, user_id FROM user_breakers WHERE engine_id = $1 AND state = 'half_open' AND probe_job_id IS NULL",
        &[&engine],
    )
    .await?;
    rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
}

pub async fn set_probe(
    tx: &impl GenericClient,
    engine: &str,
    kind: &str,
    user: Option<&str>,
    job_id: &str,
) -> Result<(), StoreError> {
    match user {
        None => {
            execute(
                tx,
                "UPDATE kind_breakers SET probe_job_id = $3 WHERE engine_id = $1 AND kind = $2",
                &[&engine, &kind, &job_id],
            )
            .await?
        }
        Some(user) => {
            execute(
                tx,
                "UPDATE user_breakers SET probe_job_id = $4 WHERE engine_id = $1 AND kind = $2 AND user_id = $3",
                &[&engine, &kind, &user, &job_id],
            )
            .await?
        }
    };
    Ok(())
}

/// Records what an attempt of `kind` by `user` told its breakers (see `Finish::breaker_signal`).
#[allow(clippy::too_many_arguments)]
pub async fn record(
    tx: &impl GenericClient,
    engine: &str,
    kind: &str,
    user: &str,
    job_id: &str,
    signal: Signal<'_>,
    now: i64,
    policy: BreakerPolicy,
) -> Result<(), StoreError> {
    if policy.failures == 0 {
        return Ok(());
    }
    match signal {
        Signal::Worked => record_success(tx, engine, kind, job_id).await,
        Signal::Failed(error) => record_failure(tx, engine, kind, user, job_id, error, now, policy).await,
    }
}

/// Counts jobs whose lease lapsed as retryable failures of their kinds.
pub async fn record_lapsed(
    tx: &impl GenericClient,
    engine: &str,
    lapsed: &[flowork_common::wire::Job],
    now: i64,
    policy: BreakerPolicy,
) -> Result<(), StoreError> {
    for job in lapsed {
        record(tx, engine, &job.kind, &job.user, &job.id, LAPSED, now, policy).await?;
    }
    Ok(())
}

/// A success closes a half-open breaker whose probe it was and clears the failure counts of the kind's closed
/// breakers (the kind works); the jobs a closed breaker held run again.
async fn record_success(tx: &impl GenericClient, engine: &str, kind: &str, job_id: &str) -> Result<(), StoreError> {
    let kind_was =
        query_opt(tx, "SELECT state FROM kind_breakers WHERE engine_id = $1 AND kind = $2", &[&engine, &kind])
            .await?
            .map(|r| r.try_get::<_, String>(0))
            .transpose()?;
    if let Some(state) = kind_was {
        let closed = execute(
            tx,
            "UPDATE kind_breakers SET state = 'closed', failures = 0, probe_job_id = NULL, opened_at = NULL
             WHERE engine_id = $1 AND kind = $2 AND (state = 'closed' OR probe_job_id = $3)",
            &[&engine, &kind, &job_id],
        )
        .await?;
        if closed > 0 && state != "closed" {
            release_parked_kind(tx, engine, kind).await?;
        }
    }
    execute(
        tx,
        "UPDATE user_breakers SET failures = 0
         WHERE engine_id = $1 AND kind = $2 AND state = 'closed' AND failures > 0",
        &[&engine, &kind],
    )
    .await?;
    let probed = query_opt(
        tx,
        "UPDATE user_breakers SET state = 'closed', failures = 0, probe_job_id = NULL, opened_at = NULL
         WHERE engine_id = $1 AND kind = $2 AND probe_job_id = $3 RETURNING user_id",
        &[&engine, &kind, &job_id],
    )
    .await?;
    if let Some(row) = probed {
        release_parked_kind_of_user(tx, engine, kind, &row.try_get::<_, String>(0)?).await?;
    }
    Ok(())
}

/// A retryable failure counts against its user's breaker of the kind, then the kind's (from the users' counts).
#[allow(clippy::too_many_arguments)]
async fn record_failure(
    tx: &impl GenericClient,
    engine: &str,
    kind: &str,
    user: &str,
    job_id: &str,
    error: &str,
    now: i64,
    policy: BreakerPolicy,
) -> Result<(), StoreError> {
    let row = read_row(
        tx,
        "SELECT state, failures, window_start, probe_job_id FROM user_breakers
         WHERE engine_id = $1 AND kind = $2 AND user_id = $3",
        &[&engine, &kind, &user],
        now,
    )
    .await?;
    if let Some(Tripped { state, failures, window_start, opened }) = user_after_failure(&row, job_id, now, policy) {
        execute(
            tx,
            "INSERT INTO user_breakers AS b (engine_id, kind, user_id, state, failures, window_start, opened_at,
                                             last_error)
             VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $7 THEN $8::BIGINT END, $9)
             ON CONFLICT (engine_id, kind, user_id) DO UPDATE SET state = excluded.state,
                 failures = excluded.failures, window_start = excluded.window_start,
                 last_error = excluded.last_error, probe_job_id = NULL,
                 opened_at = CASE WHEN $7 THEN $8::BIGINT ELSE b.opened_at END",
            &[&engine, &kind, &user, &state, &failures, &window_start, &opened, &now, &error],
        )
        .await?;
    }
    let per_user: Vec<i64> = query(
        tx,
        "SELECT failures FROM user_breakers
         WHERE engine_id = $1 AND kind = $2 AND failures > 0 AND window_start >= $3",
        &[&engine, &kind, &window_floor(now, policy)],
    )
    .await?
    .iter()
    .map(|r| r.try_get(0))
    .collect::<Result<_, _>>()?;
    let row = read_row(
        tx,
        "SELECT state, failures, window_start, probe_job_id FROM kind_breakers WHERE engine_id = $1 AND kind = $2",
        &[&engine, &kind],
        now,
    )
    .await?;
    let Some(Tripped { state, failures, window_start, opened }) =
        kind_after_failure(&row, &per_user, job_id, now, policy)
    else {
        return Ok(());
    };
    execute(
        tx,
        "INSERT INTO kind_breakers AS b (engine_id, kind, state, failures, window_start, opened_at, last_error,
                                         probe_job_id)
         VALUES ($1, $2, $3, $4, $5, CASE WHEN $6 THEN $7::BIGINT END, $8, NULL)
         ON CONFLICT (engine_id, kind) DO UPDATE SET state = excluded.state, failures = excluded.failures,
             window_start = excluded.window_start, last_error = excluded.last_error, probe_job_id = NULL,
             opened_at = CASE WHEN $6 THEN $7::BIGINT ELSE b.opened_at END",
        &[&engine, &kind, &state, &failures, &window_start, &opened, &now, &error],
    )
    .await?;
    Ok(())
}

/// One breaker's row, or a fresh one when it has none yet.
async fn read_row(
    tx: &impl GenericClient,
    sql: &str,
    key: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    now: i64,
) -> Result<BreakerRow, StoreError> {
    Ok(match query_opt(tx, sql, key).await? {
        Some(r) => BreakerRow {
            state: r.try_get(0)?,
            failures: r.try_get(1)?,
            window_start: r.try_get(2)?,
            probe: r.try_get(3)?,
        },
        None => BreakerRow::new(now),
    })
}

/// Breakers that are not closed, for `/status`: the kinds', then the users'.
pub async fn tripped(tx: &impl GenericClient, engine: &str) -> Result<Vec<KindBreaker>, StoreError> {
    let rows = query(
        tx,
        "SELECT kind, NULL::TEXT AS user_id, state, failures, opened_at, last_error FROM kind_breakers
         WHERE engine_id = $1 AND state <> 'closed'
         UNION ALL
         SELECT kind, user_id, state, failures, opened_at, last_error FROM user_breakers
         WHERE engine_id = $1 AND state <> 'closed'
         ORDER BY 2 NULLS FIRST, 1",
        &[&engine],
    )
    .await?;
    rows.iter()
        .map(|r| {
            Ok(KindBreaker {
                kind: r.try_get(0)?,
                user: r.try_get(1)?,
                state: r.try_get(2)?,
                failures: r.try_get::<_, i64>(3)?.max(0) as u64,
                opened_at_ms: r.try_get(4)?,
                last_error: r.try_get(5)?,
            })
        })
        .collect()
}

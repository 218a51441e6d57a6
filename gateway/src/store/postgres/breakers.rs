//! Per-kind circuit breakers in PostgreSQL: the rules of `sqlite/breakers.rs`, per engine.

use deadpool_postgres::GenericClient;

use super::claim::release_parked_kind;
use super::jobs::{execute, query, query_opt};
use crate::store::sqlite::breakers::{Tripped, after_failure};
use crate::store::{BreakerPolicy, KindBreaker, StoreError};

/// Moves open breakers whose cool-down has passed to half-open, and frees the probe slot of a half-open breaker
/// whose probe no longer runs.
pub async fn refresh(tx: &impl GenericClient, engine: &str, now: i64, policy: BreakerPolicy) -> Result<(), StoreError> {
    let cooled = now - policy.cooldown_ms.min(i64::MAX as u64) as i64;
    execute(
        tx,
        "UPDATE kind_breakers SET state = 'half_open', probe_job_id = NULL
         WHERE engine_id = $1 AND state = 'open' AND opened_at <= $2",
        &[&engine, &cooled],
    )
    .await?;
    execute(
        tx,
        "UPDATE kind_breakers AS b SET probe_job_id = NULL
         WHERE b.engine_id = $1 AND b.state = 'half_open' AND b.probe_job_id IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.engine_id = $1 AND jobs.id = b.probe_job_id
                           AND jobs.status = 'running')",
        &[&engine],
    )
    .await?;
    Ok(())
}

/// The kinds whose breaker holds their jobs back.
pub async fn held_kinds(
    tx: &impl GenericClient,
    engine: &str,
) -> Result<std::collections::HashSet<String>, StoreError> {
    let rows =
        query(tx, "SELECT kind FROM kind_breakers WHERE engine_id = $1 AND state <> 'closed'", &[&engine]).await?;
    rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
}

/// Half-open kinds waiting for their probe to be claimed.
pub async fn kinds_wanting_a_probe(tx: &impl GenericClient, engine: &str) -> Result<Vec<String>, StoreError> {
    let rows = query(
        tx,
        "SELECT kind FROM kind_breakers WHERE engine_id = $1 AND state = 'half_open' AND probe_job_id IS NULL",
        &[&engine],
    )
    .await?;
    rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
}

pub async fn set_probe(tx: &impl GenericClient, engine: &str, kind: &str, job_id: &str) -> Result<(), StoreError> {
    execute(
        tx,
        "UPDATE kind_breakers SET probe_job_id = $3 WHERE engine_id = $1 AND kind = $2",
        &[&engine, &kind, &job_id],
    )
    .await?;
    Ok(())
}

/// Records an attempt's outcome for its kind (`failed`: the error of a failure, `None` for a success).
pub async fn record(
    tx: &impl GenericClient,
    engine: &str,
    kind: &str,
    job_id: &str,
    failed: Option<&str>,
    now: i64,
    policy: BreakerPolicy,
) -> Result<(), StoreError> {
    if policy.failures == 0 {
        return Ok(());
    }
    let current = query_opt(
        tx,
        "SELECT state, failures, window_start, probe_job_id FROM kind_breakers WHERE engine_id = $1 AND kind = $2",
        &[&engine, &kind],
    )
    .await?;
    let current: Option<(String, i64, i64, Option<String>)> = match current {
        Some(r) => Some((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)),
        None => None,
    };
    let Some(error) = failed else {
        if let Some((state, ..)) = current {
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
        return Ok(());
    };
    let (state, failures, window_start, probe) = current.unwrap_or(("closed".into(), 0, now, None));
    let Some(Tripped { state, failures, window_start, opened }) =
        after_failure(&state, failures, window_start, probe.as_deref(), job_id, now, policy)
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

/// Breakers that are not closed, for `/status`.
pub async fn tripped(tx: &impl GenericClient, engine: &str) -> Result<Vec<KindBreaker>, StoreError> {
    let rows = query(
        tx,
        "SELECT kind, state, failures, opened_at, last_error FROM kind_breakers
         WHERE engine_id = $1 AND state <> 'closed' ORDER BY kind",
        &[&engine],
    )
    .await?;
    rows.iter()
        .map(|r| {
            Ok(KindBreaker {
                kind: r.try_get(0)?,
                state: r.try_get(1)?,
                failures: r.try_get::<_, i64>(2)?.max(0) as u64,
                opened_at_ms: r.try_get(3)?,
                last_error: r.try_get(4)?,
            })
        })
        .collect()
}

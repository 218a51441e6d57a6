//! Queue positions in PostgreSQL under the fair order, as `sqlite/position.rs` computes them: a queued job's own
//! user's runnable jobs ahead of it (one index range count), plus the other users' jobs whose turn comes first.

use std::collections::HashMap;

use deadpool_postgres::GenericClient;
use flowork_common::wire::{Job, JobStatus};

use super::jobs::{query, query_opt};
use crate::store::StoreError;
use crate::store::core::fair::Shares;
use crate::store::core::hold::{HOLD_KEY, HOLD_NONE, HOLD_RUN_AT};

/// Fills in where each queued job of `jobs` stands: its `queue_position`, or what it is `waiting_on`.
pub async fn place_in_queue(tx: &impl GenericClient, jobs: &mut [Job]) -> Result<(), StoreError> {
    let mut per_engine: HashMap<String, (bool, Shares)> = HashMap::new();
    for job in jobs.iter_mut().filter(|j| j.status == JobStatus::Queued) {
        let Some(row) = query_opt(
            tx,
            "SELECT priority, run_at, hold FROM jobs WHERE engine_id = $1 AND id = $2 AND status = 'queued'",
            &[&job.engine, &job.id],
        )
        .await?
        else {
            continue;
        };
        let (priority, run_at, hold): (i32, i64, i16) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        if i64::from(hold) != HOLD_NONE {
            let reason = match i64::from(hold) {
                HOLD_RUN_AT => "run_at",
                HOLD_KEY => "concurrency_key",
                _ => "breaker",
            };
            job.waiting_on = Some(reason.to_string());
            continue;
        }
        if !per_engine.contains_key(&job.engine) {
            per_engine.insert(job.engine.clone(), engine_order(tx, &job.engine).await?);
        }
        let Some((paused, shares)) = per_engine.get(&job.engine) else { continue };
        let ahead: i64 = query_opt(
            tx,
            "SELECT count(*) FROM jobs
             WHERE engine_id = $1 AND user_id = $2 AND status = 'queued' AND hold = 0
               AND (priority > $3 OR (priority = $3 AND (run_at, id) < ($4, $5)))",
            &[&job.engine, &job.user, &priority, &run_at, &job.id],
        )
        .await?
        .map(|r| r.get(0))
        .unwrap_or(0);
        job.queue_position = Some((ahead + shares.others_before(&job.user, ahead)).max(0) as u64);
        job.waiting_on = paused.then(|| "paused".to_string());
    }
    Ok(())
}

/// Whether the engine is paused, and its users' places in the fair order.
async fn engine_order(tx: &impl GenericClient, engine: &str) -> Result<(bool, Shares), StoreError> {
    let paused = query_opt(tx, "SELECT paused FROM engine_state WHERE engine_id = $1", &[&engine])
        .await?
        .map(|r| r.get(0))
        .unwrap_or(false);
    let rows = query(
        tx,
        "SELECT user_id, pass, weight, runnable FROM user_share WHERE engine_id = $1 AND runnable > 0",
        &[&engine],
    )
    .await?;
    let shares = rows
        .iter()
        .map(|r| Ok((r.try_get(0)?, (r.try_get(1)?, r.try_get(2)?, r.try_get(3)?))))
        .collect::<Result<HashMap<String, (f64, i64, i64)>, StoreError>>()?;
    Ok((paused, Shares(shares)))
}

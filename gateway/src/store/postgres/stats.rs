//! Each engine's per-minute job counters in PostgreSQL (migration 0006): added once per transaction, read for
//! `GET /jobs/stats`, pruned after a day.

use deadpool_postgres::GenericClient;

use super::jobs::{execute, query};
use crate::store::StoreError;
use crate::store::core::stats::{StatRow, Tally};

/// Adds what one transaction tallied on `engine`, in one statement (concurrent gateways add, never overwrite).
pub async fn add(tx: &impl GenericClient, engine: &str, tally: &Tally) -> Result<(), StoreError> {
    if tally.is_empty() {
        return Ok(());
    }
    let rows: Vec<StatRow> = tally.rows().collect();
    let users: Vec<&str> = rows.iter().map(|r| r.user.as_str()).collect();
    let minutes: Vec<i64> = rows.iter().map(|r| r.minute_ms).collect();
    let series: Vec<i16> = rows.iter().map(|r| r.series as i16).collect();
    let buckets: Vec<i16> = rows.iter().map(|r| r.bucket as i16).collect();
    let counts: Vec<i64> = rows.iter().map(|r| r.count).collect();
    execute(
        tx,
        "INSERT INTO job_stats (engine_id, user_id, minute, series, bucket, count)
         SELECT $1::TEXT, * FROM unnest($2::TEXT[], $3::BIGINT[], $4::SMALLINT[], $5::SMALLINT[], $6::BIGINT[])
         ON CONFLICT (user_id, engine_id, minute, series, bucket)
         DO UPDATE SET count = job_stats.count + excluded.count",
        &[&engine, &users, &minutes, &series, &buckets, &counts],
    )
    .await?;
    Ok(())
}

/// `user`'s counters (on `engine`, or every engine) from the minute starting at `from_ms` on.
pub async fn read(
    client: &impl GenericClient,
    user: &str,
    engine: Option<&str>,
    from_ms: i64,
) -> Result<Vec<StatRow>, StoreError> {
    let rows = query(
        client,
        "SELECT minute, series, bucket, count FROM job_stats
         WHERE user_id = $1 AND ($2::TEXT IS NULL OR engine_id = $2) AND minute >= $3",
        &[&user, &engine, &from_ms],
    )
    .await?;
    rows.iter()
        .map(|row| {
            Ok(StatRow {
                user: user.to_string(),
                minute_ms: row.try_get(0)?,
                series: i64::from(row.try_get::<_, i16>(1)?),
                bucket: i64::from(row.try_get::<_, i16>(2)?),
                count: row.try_get(3)?,
            })
        })
        .collect()
}

/// Deletes the counters of minutes before `before_ms`; returns how many rows.
pub async fn prune(client: &impl GenericClient, before_ms: i64) -> Result<u64, StoreError> {
    execute(client, "DELETE FROM job_stats WHERE minute < $1", &[&before_ms]).await
}

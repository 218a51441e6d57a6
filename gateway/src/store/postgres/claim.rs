//! The fair claim in PostgreSQL: the stride scheduling, parking and per-key limits of `sqlite/fair.rs` and
//! `sqlite/parking.rs`, over the same tables keyed by engine.
//!
//! A claim holds its engine's lock (`jobs::lock_engine`) and the engine's `engine_state` row: the users' passes
//! and the virtual time are one shared order, so claims of one engine take turns, as in the SQLite shard. The
//! jobs themselves are selected `FOR UPDATE SKIP LOCKED`, so a claim never waits on a row another transaction
//! holds (a heartbeat); claims of different engines never touch the same rows.

use std::collections::HashMap;

use deadpool_postgres::GenericClient;
use flowork_common::timefmt::format_ms;
use flowork_common::wire::Lease;

use super::jobs::{JOB_COLUMN_COUNT, JOB_COLUMNS, execute, job_from_row, query, query_opt};
use crate::store::breakers::HeldBack;
pub use crate::store::core::fair::{ClaimBy, Claimed};
use crate::store::core::fair::{Share, turn_length};
use crate::store::core::hold::{HOLD_BREAKER, HOLD_KEY};
use crate::store::{ShareSettings, StoreError};

/// The most jobs one claim parks; the rest are parked by the next claims.
const MAX_PARKS_PER_CLAIM: usize = 1_000;

/// Whether the engine is paused (and its state row locked for this claim).
pub async fn lock_state(tx: &impl GenericClient, engine: &str) -> Result<bool, StoreError> {
    let row = query_opt(tx, "SELECT paused FROM engine_state WHERE engine_id = $1 FOR UPDATE", &[&engine]).await?;
    Ok(row.map(|r| r.get(0)).unwrap_or(false))
}

/// Makes delayed jobs whose `run_at` has come runnable.
pub async fn promote_due(tx: &impl GenericClient, engine: &str, now: i64) -> Result<u64, StoreError> {
    execute(
        tx,
        "UPDATE jobs SET hold = 0 WHERE engine_id = $1 AND status = 'queued' AND hold = 1 AND run_at <= $2",
        &[&engine, &now],
    )
    .await
}

async fn park(tx: &impl GenericClient, engine: &str, id: &str, hold: i64) -> Result<(), StoreError> {
    execute(
        tx,
        "UPDATE jobs SET hold = $3 WHERE engine_id = $1 AND id = $2 AND status = 'queued'",
        &[&engine, &id, &(hold as i16)],
    )
    .await?;
    Ok(())
}

/// The limit of a key (its own, else the engine's default); `None` = unlimited.
async fn key_room(tx: &impl GenericClient, engine: &str, key: &str) -> Result<Option<i64>, StoreError> {
    let row = query_opt(
        tx,
        "SELECT coalesce((SELECT max_running FROM concurrency_limits WHERE engine_id = $1 AND concurrency_key = $2),
                         (SELECT default_key_limit FROM engine_state WHERE engine_id = $1)),
                coalesce((SELECT running FROM key_state WHERE engine_id = $1 AND concurrency_key = $2), 0)",
        &[&engine, &key],
    )
    .await?;
    Ok(row.and_then(|r| r.get::<_, Option<i64>>(0).map(|limit| limit - r.get::<_, i64>(1))))
}

/// Free slots per key during one claim: read once per key, then counted down.
#[derive(Default)]
struct KeyRooms(HashMap<String, Option<i64>>);

impl KeyRooms {
    async fn take(&mut self, tx: &impl GenericClient, engine: &str, key: &str) -> Result<bool, StoreError> {
        if !self.0.contains_key(key) {
            let room = key_room(tx, engine, key).await?;
            self.0.insert(key.to_string(), room);
        }
        Ok(match self.0.get_mut(key) {
            Some(Some(room)) if *room > 0 => {
                *room -= 1;
                true
            }
            Some(Some(_)) => false,
            _ => true,
        })
    }
}

/// Leases `ids` (queued jobs) in one statement, in the order given, with how long each waited.
async fn lease_jobs(
    tx: &impl GenericClient,
    by: &ClaimBy<'_>,
    ids: &[String],
    expires: i64,
) -> Result<Vec<(Lease, i64)>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = $2,
                lease_token = replace(gen_random_uuid()::text, '-', ''), lease_expires_at = $3,
                claimed_at = $4
         WHERE engine_id = $1 AND id = ANY($5) AND status = 'queued'
         RETURNING {JOB_COLUMNS}, lease_token"
    );
    let rows = query(tx, &sql, &[&by.engine, &by.worker, &expires, &by.now, &ids]).await?;
    let mut leased = Vec::with_capacity(rows.len());
    for row in &rows {
        let runnable_since = row.try_get::<_, i64>(9)?.max(row.try_get::<_, i64>(10)?);
        let lease = Lease {
            job: job_from_row(row, by.engine)?,
            lease_token: row.try_get(JOB_COLUMN_COUNT)?,
            lease_expires_at: format_ms(expires),
        };
        leased.push((lease, by.now - runnable_since));
    }
    let order: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
    leased.sort_by_key(|(lease, _)| order.get(lease.job.id.as_str()).copied().unwrap_or(usize::MAX));
    Ok(leased)
}

/// Leases up to `max` runnable jobs of the engine in the fair order; the caller holds the engine's lock and
/// state row.
pub async fn claim(tx: &impl GenericClient, by: &ClaimBy<'_>, held: &HeldBack) -> Result<Claimed, StoreError> {
    promote_due(tx, by.engine, by.now).await?;
    let expires = by.now.saturating_add(by.lease_ms.min(i64::MAX as u64) as i64);
    let max = by.max as usize;
    let mut claimed = Claimed::default();
    let mut rooms = KeyRooms::default();
    let mut parked = 0;
    let mut rounds = 0;
    while claimed.leases.len() < max && parked < MAX_PARKS_PER_CLAIM && rounds < max + MAX_PARKS_PER_CLAIM + 16 {
        rounds += 1;
        let shares: Vec<Share> = query(
            tx,
            "SELECT user_id, pass, weight FROM user_share WHERE engine_id = $1 AND runnable > 0
             ORDER BY pass, user_id LIMIT 2",
            &[&by.engine],
        )
        .await?
        .iter()
        .map(|r| Ok(Share { user: r.try_get(0)?, pass: r.try_get(1)?, weight: r.try_get(2)? }))
        .collect::<Result<_, StoreError>>()?;
        let Some(first) = shares.first() else { break };
        let remaining = max - claimed.leases.len();
        let take = turn_length(first, shares.get(1), remaining);
        let candidates = query(
            tx,
            "SELECT id, kind, concurrency_key FROM jobs
             WHERE engine_id = $1 AND user_id = $2 AND status = 'queued' AND hold = 0
             ORDER BY priority DESC, run_at, id LIMIT $3
             FOR UPDATE SKIP LOCKED",
            &[&by.engine, &first.user, &(take as i64)],
        )
        .await?;
        if candidates.is_empty() {
            tracing::warn!(engine = by.engine, user = first.user, "fair-share counter out of step; recounting");
            execute(
                tx,
                "UPDATE user_share SET runnable = (SELECT count(*) FROM jobs WHERE engine_id = $1 AND user_id = $2
                                                   AND status = 'queued' AND hold = 0)
                 WHERE engine_id = $1 AND user_id = $2",
                &[&by.engine, &first.user],
            )
            .await?;
            continue;
        }
        let mut ready = Vec::with_capacity(candidates.len());
        for row in &candidates {
            let (id, kind, key): (String, String, Option<String>) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            if held.holds(&kind, &first.user) {
                park(tx, by.engine, &id, HOLD_BREAKER).await?;
                parked += 1;
                continue;
            }
            if let Some(key) = &key
                && !rooms.take(tx, by.engine, key).await?
            {
                park(tx, by.engine, &id, HOLD_KEY).await?;
                parked += 1;
                continue;
            }
            ready.push(id);
        }
        let leased = lease_jobs(tx, by, &ready, expires).await?;
        let served = leased.len();
        for (lease, waited) in leased {
            claimed.leases.push(lease);
            claimed.waited_ms.push(waited);
        }
        if served > 0 {
            let step = 1.0 / first.weight.max(1) as f64;
            execute(
                tx,
                "UPDATE user_share SET pass = $3 WHERE engine_id = $1 AND user_id = $2",
                &[&by.engine, &first.user, &(first.pass + step * served as f64)],
            )
            .await?;
            execute(
                tx,
                "UPDATE engine_state SET vtime = greatest(vtime, $2) WHERE engine_id = $1",
                &[&by.engine, &(first.pass + step * served.saturating_sub(1) as f64)],
            )
            .await?;
        }
    }
    Ok(claimed)
}

/// Leases one job of `kind` (a half-open breaker's probe), of `user` for a user's breaker: a parked one first,
/// else a runnable one. A kind's probe is not a job of a user whose own breaker holds them back.
pub async fn claim_probe(
    tx: &impl GenericClient,
    by: &ClaimBy<'_>,
    kind: &str,
    user: Option<&str>,
) -> Result<Claimed, StoreError> {
    let mut candidate = None;
    for hold in [HOLD_BREAKER, 0] {
        let row = query_opt(
            tx,
            "SELECT id, concurrency_key FROM jobs WHERE engine_id = $1 AND kind = $2 AND status = 'queued'
               AND hold = $3
               AND CASE WHEN $4::TEXT IS NULL
                        THEN user_id NOT IN (SELECT user_id FROM user_breakers
                                             WHERE engine_id = $1 AND kind = $2 AND state <> 'closed')
                        ELSE user_id = $4 END
             ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
            &[&by.engine, &kind, &(hold as i16), &user],
        )
        .await?;
        if let Some(row) = row {
            candidate = Some((row.try_get::<_, String>(0)?, row.try_get::<_, Option<String>>(1)?));
            break;
        }
    }
    let mut claimed = Claimed::default();
    let Some((id, key)) = candidate else { return Ok(claimed) };
    if let Some(key) = key
        && !KeyRooms::default().take(tx, by.engine, &key).await?
    {
        return Ok(claimed);
    }
    let expires = by.now.saturating_add(by.lease_ms.min(i64::MAX as u64) as i64);
    for (lease, waited) in lease_jobs(tx, by, &[id], expires).await? {
        claimed.leases.push(lease);
        claimed.waited_ms.push(waited);
    }
    Ok(claimed)
}

/// Makes parked jobs of keys that have room runnable again, in claim order, as many as the room allows.
pub async fn release_parked_keys(tx: &impl GenericClient, engine: &str) -> Result<u64, StoreError> {
    let keys = query(
        tx,
        "SELECT s.concurrency_key, coalesce(l.max_running, e.default_key_limit) - s.running - s.ready
         FROM key_state AS s JOIN engine_state AS e ON e.engine_id = s.engine_id
         LEFT JOIN concurrency_limits AS l ON l.engine_id = s.engine_id AND l.concurrency_key = s.concurrency_key
         WHERE s.engine_id = $1 AND s.parked > 0",
        &[&engine],
    )
    .await?;
    let mut released = 0;
    for row in &keys {
        let (key, room): (String, Option<i64>) = (row.try_get(0)?, row.try_get(1)?);
        let room = match room {
            None => i64::MAX,
            Some(room) if room > 0 => room,
            Some(_) => continue,
        };
        released += execute(
            tx,
            "UPDATE jobs SET hold = 0 WHERE engine_id = $1 AND id IN (
                 SELECT id FROM jobs WHERE engine_id = $1 AND concurrency_key = $2 AND status = 'queued' AND hold = 2
                 ORDER BY priority DESC, run_at, id LIMIT $3)",
            &[&engine, &key, &room],
        )
        .await?;
    }
    Ok(released)
}

/// Makes the parked jobs of one kind runnable (its breaker closed).
pub async fn release_parked_kind(tx: &impl GenericClient, engine: &str, kind: &str) -> Result<u64, StoreError> {
    execute(
        tx,
        "UPDATE jobs SET hold = 0 WHERE engine_id = $1 AND kind = $2 AND status = 'queued' AND hold = 3",
        &[&engine, &kind],
    )
    .await
}

/// Makes the parked jobs of one user of one kind runnable (their breaker closed).
pub async fn release_parked_kind_of_user(
    tx: &impl GenericClient,
    engine: &str,
    kind: &str,
    user: &str,
) -> Result<u64, StoreError> {
    execute(
        tx,
        "UPDATE jobs SET hold = 0
         WHERE engine_id = $1 AND kind = $2 AND user_id = $3 AND status = 'queued' AND hold = 3",
        &[&engine, &kind, &user],
    )
    .await
}

/// The earliest moment something may become claimable: a delayed job, a lease's expiry, a breaker's cool-down.
pub async fn next_due(tx: &impl GenericClient, engine: &str, cooldown_ms: u64) -> Result<Option<i64>, StoreError> {
    let row = query_opt(
        tx,
        "SELECT least(
             (SELECT min(run_at) FROM jobs WHERE engine_id = $1 AND status = 'queued' AND hold = 1),
             (SELECT min(opened_at) + $2 FROM kind_breakers WHERE engine_id = $1 AND state = 'open'),
             (SELECT min(opened_at) + $2 FROM user_breakers WHERE engine_id = $1 AND state = 'open'),
             (SELECT min(lease_expires_at) FROM jobs WHERE engine_id = $1 AND status = 'running'))",
        &[&engine, &(cooldown_ms.min(i64::MAX as u64) as i64)],
    )
    .await?;
    Ok(row.and_then(|r| r.get(0)))
}

/// Sets a user's weight on the engine (1-1000).
pub async fn set_weight(tx: &impl GenericClient, engine: &str, user: &str, weight: i64) -> Result<bool, StoreError> {
    let changed = execute(
        tx,
        "INSERT INTO user_share AS u (engine_id, user_id, weight, pass)
         VALUES ($1, $2, $3, coalesce((SELECT vtime FROM engine_state WHERE engine_id = $1), 0))
         ON CONFLICT (engine_id, user_id) DO UPDATE SET weight = excluded.weight WHERE u.weight <> excluded.weight",
        &[&engine, &user, &weight],
    )
    .await?;
    Ok(changed > 0)
}

/// Sets (`Some`) or removes (`None`) a key's own limit.
pub async fn set_key_limit(
    tx: &impl GenericClient,
    engine: &str,
    key: &str,
    limit: Option<i64>,
) -> Result<bool, StoreError> {
    let changed = match limit {
        Some(limit) => {
            execute(
                tx,
                "INSERT INTO concurrency_limits AS l (engine_id, concurrency_key, max_running) VALUES ($1, $2, $3)
                 ON CONFLICT (engine_id, concurrency_key) DO UPDATE SET max_running = excluded.max_running
                 WHERE l.max_running <> excluded.max_running",
                &[&engine, &key, &limit],
            )
            .await?
        }
        None => {
            execute(
                tx,
                "DELETE FROM concurrency_limits WHERE engine_id = $1 AND concurrency_key = $2",
                &[&engine, &key],
            )
            .await?
        }
    };
    Ok(changed > 0)
}

/// Sets the limit of keys without their own.
pub async fn set_default_key_limit(
    tx: &impl GenericClient,
    engine: &str,
    limit: Option<i64>,
) -> Result<bool, StoreError> {
    let changed = execute(
        tx,
        "UPDATE engine_state SET default_key_limit = $2 WHERE engine_id = $1 AND default_key_limit IS DISTINCT FROM $2",
        &[&engine, &limit],
    )
    .await?;
    Ok(changed > 0)
}

/// The engine's weights and key limits.
pub async fn share_settings(tx: &impl GenericClient, engine: &str) -> Result<ShareSettings, StoreError> {
    let default_key_limit =
        query_opt(tx, "SELECT default_key_limit FROM engine_state WHERE engine_id = $1", &[&engine])
            .await?
            .and_then(|r| r.get(0));
    let weights = query(
        tx,
        "SELECT user_id, weight FROM user_share WHERE engine_id = $1 AND weight <> 1 ORDER BY user_id",
        &[&engine],
    )
    .await?
    .iter()
    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
    .collect::<Result<_, StoreError>>()?;
    let key_limits = query(
        tx,
        "SELECT l.concurrency_key, l.max_running, coalesce(s.running, 0)
         FROM concurrency_limits AS l
         LEFT JOIN key_state AS s ON s.engine_id = l.engine_id AND s.concurrency_key = l.concurrency_key
         WHERE l.engine_id = $1 ORDER BY l.concurrency_key",
        &[&engine],
    )
    .await?
    .iter()
    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
    .collect::<Result<_, StoreError>>()?;
    Ok(ShareSettings { weights, default_key_limit, key_limits })
}

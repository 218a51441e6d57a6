//! Engines, sign-in nonces, refresh tokens and the audit chain in PostgreSQL: the rules of `sqlite/control.rs`,
//! shared by every gateway of a fleet (a nonce is single-use and a refresh reuse is caught cluster-wide).

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::jobs::{execute, query, query_opt};
use crate::audit::{AuditEntry, AuditKey, AuditReport, AuditRow, Checkpoint, GENESIS, Signed, row_hash, verify_log};
use crate::store::{
    AuditPage, AuditQuery, EngineRecord, NONCE_KEPT_AFTER_EXPIRY_MS, NonceCheck, RefreshCheck, RefreshTokenRecord,
    StoreError,
};

/// Serialises audit appenders across gateways, so every row links to the one before it (the chain is in the
/// order the appends committed).
const AUDIT_LOCK: i64 = 0x0061_7564_6974;
/// The advisory lock under which a nonce is counted and stored ("nonce" in ASCII).
const NONCE_LOCK: i64 = 0x006e_6f6e_6365;

const ENGINE_COLUMNS: &str = "id, owner, created_at, revoked_at, previous_valid_until";

fn engine_from_row(row: &Row) -> Result<EngineRecord, StoreError> {
    Ok(EngineRecord {
        id: row.try_get(0)?,
        owner: row.try_get(1)?,
        created_at_ms: row.try_get(2)?,
        revoked_at_ms: row.try_get(3)?,
        previous_token_valid_until_ms: row.try_get(4)?,
    })
}

/// Registers an engine with its state and counter rows and its owner allowed, in one transaction.
pub async fn insert_engine(
    tx: &impl GenericClient,
    id: &str,
    owner: Option<&str>,
    token_hash: &str,
    now: i64,
) -> Result<(), StoreError> {
    let inserted = execute(
        tx,
        "INSERT INTO engines (id, owner, token_hash, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
        &[&id, &owner, &token_hash, &now],
    )
    .await?;
    if inserted == 0 {
        return Err(StoreError::EngineExists(id.to_string()));
    }
    execute(
        tx,
        "INSERT INTO engine_state (engine_id, changed_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        &[&id, &now],
    )
    .await?;
    execute(tx, "INSERT INTO queue_stats (engine_id) VALUES ($1) ON CONFLICT DO NOTHING", &[&id]).await?;
    if let Some(owner) = owner {
        super::jobs::allow_user(tx, id, owner, true, now).await?;
    }
    Ok(())
}

pub async fn engines(tx: &impl GenericClient) -> Result<Vec<EngineRecord>, StoreError> {
    let rows = query(tx, &format!("SELECT {ENGINE_COLUMNS} FROM engines ORDER BY id"), &[]).await?;
    rows.iter().map(engine_from_row).collect()
}

pub async fn engine(tx: &impl GenericClient, id: &str) -> Result<Option<EngineRecord>, StoreError> {
    let row = query_opt(tx, &format!("SELECT {ENGINE_COLUMNS} FROM engines WHERE id = $1"), &[&id]).await?;
    row.as_ref().map(engine_from_row).transpose()
}

/// The active engine whose current token, or previous token still in its grace period, has this hash.
pub async fn engine_for_token_hash(
    tx: &impl GenericClient,
    token_hash: &str,
    now: i64,
) -> Result<Option<EngineRecord>, StoreError> {
    let sql = format!(
        "SELECT {ENGINE_COLUMNS} FROM engines WHERE token_hash = $1 AND revoked_at IS NULL
         UNION ALL
         SELECT {ENGINE_COLUMNS} FROM engines
         WHERE previous_token_hash = $1 AND previous_valid_until > $2 AND revoked_at IS NULL
         LIMIT 1"
    );
    let row = query_opt(tx, &sql, &[&token_hash, &now]).await?;
    row.as_ref().map(engine_from_row).transpose()
}

/// Replaces an engine's token; the old one keeps working until `previous_valid_until` (if given).
pub async fn set_engine_token(
    tx: &impl GenericClient,
    id: &str,
    token_hash: &str,
    previous_valid_until: Option<i64>,
) -> Result<(), StoreError> {
    let updated = execute(
        tx,
        "UPDATE engines SET previous_token_hash = CASE WHEN $3::BIGINT IS NULL THEN NULL ELSE token_hash END,
                previous_valid_until = $3, token_hash = $1, revoked_at = NULL
         WHERE id = $2",
        &[&token_hash, &id, &previous_valid_until],
    )
    .await?;
    if updated == 0 { Err(StoreError::EngineNotFound(id.to_string())) } else { Ok(()) }
}

pub async fn revoke_engine(tx: &impl GenericClient, id: &str, now: i64) -> Result<(), StoreError> {
    let updated =
        execute(tx, "UPDATE engines SET revoked_at = coalesce(revoked_at, $1) WHERE id = $2", &[&now, &id]).await?;
    if updated == 0 { Err(StoreError::EngineNotFound(id.to_string())) } else { Ok(()) }
}

const AUDIT_COLUMNS: &str = "id, at, actor, action, target, ip, outcome, detail, prev_hash, hash, mac";

fn audit_row(r: &Row) -> Result<AuditRow, StoreError> {
    Ok(AuditRow {
        id: r.try_get(0)?,
        at_ms: r.try_get(1)?,
        entry: AuditEntry {
            actor: r.try_get(2)?,
            action: r.try_get(3)?,
            target: r.try_get(4)?,
            ip: r.try_get(5)?,
            outcome: r.try_get(6)?,
            detail: r.try_get(7)?,
        },
        prev_hash: r.try_get(8)?,
        hash: r.try_get(9)?,
        mac: r.try_get(10)?,
    })
}

/// Creates the audit key unless there is one.
pub async fn ensure_audit_key(client: &impl GenericClient) -> Result<(), StoreError> {
    execute(
        client,
        "INSERT INTO audit_key (singleton, secret) VALUES (1, $1) ON CONFLICT DO NOTHING",
        &[&AuditKey::generate().as_bytes()],
    )
    .await?;
    Ok(())
}

/// The audit key and the signed head, kept together in `audit_key` (made when the store is opened).
async fn audit_key(tx: &impl GenericClient) -> Result<(AuditKey, Option<Checkpoint>), StoreError> {
    let row = query(tx, "SELECT secret, head_id, head_hash, head_mac FROM audit_key", &[]).await?;
    let row = row.first().ok_or_else(|| StoreError::Database("the audit key could not be created".into()))?;
    let secret: Vec<u8> = row.try_get(0)?;
    let key = AuditKey::from_bytes(&secret)
        .ok_or_else(|| StoreError::Corrupt("the audit key in audit_key is not 32 bytes".into()))?;
    let head = match (row.try_get::<_, Option<i64>>(1)?, row.try_get::<_, Option<String>>(2)?) {
        (Some(id), Some(hash)) => Some(Checkpoint { id, hash, mac: row.try_get(3)? }),
        _ => None,
    };
    Ok((key, head))
}

async fn audit_anchor(tx: &impl GenericClient) -> Result<Option<Checkpoint>, StoreError> {
    match query_opt(tx, "SELECT last_id, last_hash, mac FROM audit_anchor", &[]).await? {
        Some(row) => Ok(Some(Checkpoint { id: row.try_get(0)?, hash: row.try_get(1)?, mac: row.try_get(2)? })),
        None => Ok(None),
    }
}

/// Appends a signed row to the audit chain under the fleet-wide audit lock, and moves the signed head to it in
/// the same transaction (so the head never runs ahead of the rows, whichever gateway appends).
pub async fn append_audit(tx: &impl GenericClient, entry: AuditEntry, now: i64) -> Result<(), StoreError> {
    let entry = entry.bounded();
    execute(tx, "SELECT pg_advisory_xact_lock($1)", &[&AUDIT_LOCK]).await?;
    let (key, head) = audit_key(tx).await?;
    let last = query_opt(tx, "SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1", &[]).await?;
    let last: (i64, String) = match last {
        Some(row) => (row.try_get(0)?, row.try_get(1)?),
        None => audit_anchor(tx).await?.map(|a| (a.id, a.hash)).unwrap_or((0, GENESIS.to_string())),
    };
    // Never behind the signed head: after a cut, the next row leaves the gap in place (and the head moves on
    // past it, never back over it).
    let head_id = head
        .filter(|h| h.mac.as_deref().is_some_and(|mac| key.verify(Signed::Head, h.id, &h.hash, mac)))
        .map_or(0, |h| h.id);
    let id = last.0.max(head_id) + 1;
    let hash = row_hash(&last.1, id, now, &entry);
    let mac = key.sign(Signed::Row, id, &hash);
    execute(
        tx,
        &format!("INSERT INTO audit_log ({AUDIT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"),
        &[
            &id,
            &now,
            &entry.actor,
            &entry.action,
            &entry.target,
            &entry.ip,
            &entry.outcome,
            &entry.detail,
            &last.1,
            &hash,
            &mac,
        ],
    )
    .await?;
    let head_mac = key.sign(Signed::Head, id, &hash);
    execute(tx, "UPDATE audit_key SET head_id = $1, head_hash = $2, head_mac = $3", &[&id, &hash, &head_mac]).await?;
    Ok(())
}

/// Checks the whole log: the chain from its anchor, every signature, and the head. It reads one snapshot (the
/// head moves in the same transaction as each append, the anchor in the same as each prune), so other gateways
/// appending and pruning meanwhile cause no false alarm, and are not held up.
pub async fn verify_audit(tx: &impl GenericClient) -> Result<AuditReport, StoreError> {
    execute(tx, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ", &[]).await?;
    let (key, head) = audit_key(tx).await?;
    let anchor = audit_anchor(tx).await?;
    let rows = query(tx, &format!("SELECT {AUDIT_COLUMNS} FROM audit_log ORDER BY id"), &[]).await?;
    let rows = rows.iter().map(audit_row).collect::<Result<Vec<_>, StoreError>>()?;
    Ok(verify_log(&key, anchor, head, rows))
}

/// A page of the log, oldest first.
pub async fn list_audit(tx: &impl GenericClient, query_: &AuditQuery) -> Result<AuditPage, StoreError> {
    let limit = query_.limit.max(1);
    let rows = query(
        tx,
        &format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE id > $1 AND at >= $2 ORDER BY id LIMIT $3"),
        &[&query_.after_id.unwrap_or(0), &query_.since_ms.unwrap_or(i64::MIN), &(limit as i64 + 1)],
    )
    .await?;
    let rows = rows.iter().map(audit_row).collect::<Result<Vec<_>, StoreError>>()?;
    Ok(AuditPage::from_rows(rows, limit))
}

/// Deletes rows older than `before_ms` (never the newest), moving the signed anchor to the last deleted row.
pub async fn prune_audit(tx: &impl GenericClient, before_ms: i64) -> Result<u64, StoreError> {
    execute(tx, "SELECT pg_advisory_xact_lock($1)", &[&AUDIT_LOCK]).await?;
    let last = query_opt(
        tx,
        "SELECT id, hash FROM audit_log WHERE at < $1 AND id < (SELECT max(id) FROM audit_log)
         ORDER BY id DESC LIMIT 1",
        &[&before_ms],
    )
    .await?;
    let Some(last) = last else { return Ok(0) };
    let (last_id, last_hash): (i64, String) = (last.try_get(0)?, last.try_get(1)?);
    let (key, _) = audit_key(tx).await?;
    let mac = key.sign(Signed::Anchor, last_id, &last_hash);
    let pruned = execute(tx, "DELETE FROM audit_log WHERE id <= $1", &[&last_id]).await?;
    execute(
        tx,
        "INSERT INTO audit_anchor (singleton, last_id, last_hash, mac) VALUES (1, $1, $2, $3)
         ON CONFLICT (singleton) DO UPDATE
         SET last_id = excluded.last_id, last_hash = excluded.last_hash, mac = excluded.mac",
        &[&last_id, &last_hash, &mac],
    )
    .await?;
    Ok(pruned)
}

/// Makes a log copied from elsewhere (`migrate-store`) verifiable here: takes over the key that signed it and
/// signs its newest row as the head. Refused when this database already holds rows signed with another key.
pub async fn adopt_audit_key(tx: &impl GenericClient, key: &AuditKey) -> Result<(), StoreError> {
    execute(tx, "SELECT pg_advisory_xact_lock($1)", &[&AUDIT_LOCK]).await?;
    let (current, _) = audit_key(tx).await?;
    let rows = query(tx, &format!("SELECT {AUDIT_COLUMNS} FROM audit_log ORDER BY id"), &[]).await?;
    let rows = rows.iter().map(audit_row).collect::<Result<Vec<_>, StoreError>>()?;
    if current.as_bytes() != key.as_bytes() {
        let signed_here =
            rows.iter().any(|r| r.mac.as_deref().is_some_and(|mac| current.verify(Signed::Row, r.id, &r.hash, mac)));
        if signed_here {
            return Err(StoreError::Config(
                "this PostgreSQL store already holds audit rows signed with a key of its own".into(),
            ));
        }
        execute(tx, "UPDATE audit_key SET secret = $1", &[&key.as_bytes()]).await?;
    }
    if let Some(tip) = rows.last() {
        let head_mac = key.sign(Signed::Head, tip.id, &tip.hash);
        execute(
            tx,
            "UPDATE audit_key SET head_id = $1, head_hash = $2, head_mac = $3",
            &[&tip.id, &tip.hash, &head_mac],
        )
        .await?;
    }
    Ok(())
}

/// See `ControlStore::insert_nonce`; under a transaction lock, so concurrent issues (on any gateway) cannot pass
/// the bound.
pub async fn insert_nonce(
    tx: &impl GenericClient,
    nonce: &str,
    now: i64,
    expires_at: i64,
    max_kept: u64,
) -> Result<bool, StoreError> {
    execute(tx, "SELECT pg_advisory_xact_lock($1)", &[&NONCE_LOCK]).await?;
    execute(tx, "DELETE FROM auth_nonces WHERE expires_at < $1", &[&(now - NONCE_KEPT_AFTER_EXPIRY_MS)]).await?;
    let max_kept = i64::try_from(max_kept).unwrap_or(i64::MAX);
    if count_nonces(tx).await? >= max_kept {
        // Full: the expired and used nonces go first, before a fresh one is refused.
        execute(tx, "DELETE FROM auth_nonces WHERE expires_at <= $1 OR used_at IS NOT NULL", &[&now]).await?;
        if count_nonces(tx).await? >= max_kept {
            return Ok(false);
        }
    }
    execute(
        tx,
        "INSERT INTO auth_nonces (nonce, created_at, expires_at) VALUES ($1, $2, $3)",
        &[&nonce, &now, &expires_at],
    )
    .await?;
    Ok(true)
}

async fn count_nonces(tx: &impl GenericClient) -> Result<i64, StoreError> {
    Ok(match query_opt(tx, "SELECT count(*) FROM auth_nonces", &[]).await? {
        Some(row) => row.try_get(0)?,
        None => 0,
    })
}

/// Marks a nonce used if it is unused and unexpired, in one statement: two gateways cannot both accept it.
pub async fn consume_nonce(tx: &impl GenericClient, nonce: &str, now: i64) -> Result<NonceCheck, StoreError> {
    let used = execute(
        tx,
        "UPDATE auth_nonces SET used_at = $1 WHERE nonce = $2 AND used_at IS NULL AND expires_at > $1",
        &[&now, &nonce],
    )
    .await?;
    if used == 1 {
        return Ok(NonceCheck::Consumed);
    }
    let row = query_opt(tx, "SELECT used_at FROM auth_nonces WHERE nonce = $1", &[&nonce]).await?;
    Ok(match row.map(|r| r.get::<_, Option<i64>>(0)) {
        None => NonceCheck::Unknown,
        Some(Some(_)) => NonceCheck::Reused,
        Some(None) => NonceCheck::Expired,
    })
}

pub async fn insert_refresh_token(tx: &impl GenericClient, token: &RefreshTokenRecord) -> Result<(), StoreError> {
    execute(
        tx,
        "INSERT INTO refresh_tokens (token_hash, family_id, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        &[&token.token_hash, &token.family_id, &token.user_id, &token.created_at, &token.expires_at],
    )
    .await?;
    Ok(())
}

/// Rotates a live refresh token; a rotated one presented again revokes its family. The presented row is locked,
/// so two gateways racing with the same token rotate it once and the second sees a reuse.
pub async fn rotate_refresh_token(
    tx: &impl GenericClient,
    presented_hash: &str,
    next: &RefreshTokenRecord,
    now: i64,
) -> Result<RefreshCheck, StoreError> {
    let row = query_opt(
        tx,
        "SELECT family_id, user_id, expires_at, rotated_at, revoked_at FROM refresh_tokens WHERE token_hash = $1
         FOR UPDATE",
        &[&presented_hash],
    )
    .await?;
    let Some(row) = row else { return Ok(RefreshCheck::Unknown) };
    let (family, user, expires_at, rotated_at, revoked_at): (String, String, i64, Option<i64>, Option<i64>) =
        (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?, row.try_get(4)?);
    Ok(if revoked_at.is_some() {
        RefreshCheck::Revoked
    } else if rotated_at.is_some() {
        execute(
            tx,
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL",
            &[&now, &family],
        )
        .await?;
        RefreshCheck::Reused { user }
    } else if expires_at <= now {
        RefreshCheck::Expired
    } else {
        execute(tx, "UPDATE refresh_tokens SET rotated_at = $1 WHERE token_hash = $2", &[&now, &presented_hash])
            .await?;
        execute(
            tx,
            "INSERT INTO refresh_tokens (token_hash, family_id, user_id, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5)",
            &[&next.token_hash, &family, &user, &next.created_at, &next.expires_at],
        )
        .await?;
        RefreshCheck::Rotated { user }
    })
}

/// Revokes the family of a refresh token (logout); returns the user if the token was known.
pub async fn revoke_refresh_family(
    tx: &impl GenericClient,
    presented_hash: &str,
    now: i64,
) -> Result<Option<String>, StoreError> {
    let row = query_opt(tx, "SELECT family_id, user_id FROM refresh_tokens WHERE token_hash = $1", &[&presented_hash])
        .await?;
    let Some(row) = row else { return Ok(None) };
    let (family, user): (String, String) = (row.try_get(0)?, row.try_get(1)?);
    execute(
        tx,
        "UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL",
        &[&now, &family],
    )
    .await?;
    Ok(Some(user))
}

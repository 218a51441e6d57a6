//! The control database: registered engines (token hashes only) and users.

use std::path::{Path, PathBuf};

use rusqlite::{OptionalExtension, Row, TransactionBehavior, params};

use super::audit_files;
use super::connection::{ReadPool, open_read_pool, open_writer};
use super::migrate;
use crate::audit::{AuditEntry, AuditKey, AuditReport, AuditRow, Checkpoint, GENESIS, Signed, row_hash, verify_log};
use crate::store::{
    AuditPage, AuditQuery, EngineRecord, NONCE_KEPT_AFTER_EXPIRY_MS, NonceCheck, RefreshCheck, RefreshTokenRecord,
    StoreError,
};

/// The control database's connection pool (reads and the rare writes alike), and the audit log's key.
pub struct ControlDb {
    pub pool: ReadPool,
    path: PathBuf,
    /// `<data-dir>/keys`: the audit key and the signed head of the log.
    keys_dir: PathBuf,
    audit_key: AuditKey,
}

/// family, user, expires_at, rotated_at, revoked_at of a refresh token.
type RefreshRow = (String, String, i64, Option<i64>, Option<i64>);

const ENGINE_COLUMNS: &str = "id, owner, created_at, revoked_at, previous_valid_until";

fn engine_from_row(row: &Row<'_>) -> rusqlite::Result<EngineRecord> {
    Ok(EngineRecord {
        id: row.get(0)?,
        owner: row.get(1)?,
        created_at_ms: row.get(2)?,
        revoked_at_ms: row.get(3)?,
        previous_token_valid_until_ms: row.get(4)?,
    })
}

impl ControlDb {
    /// Opens and migrates the control database (blocking), with the audit key kept in `keys_dir`. A log without
    /// a head (a new data directory, one restored from a backup, one written before the log was signed) gets
    /// its head now.
    pub fn open(path: &Path, keys_dir: &Path) -> Result<Self, StoreError> {
        let mut conn = open_writer(path)?;
        migrate::apply(&mut conn, migrate::CONTROL, &path.display().to_string())?;
        let audit_key = audit_files::load_or_create_key(keys_dir)?;
        let db =
            Self { pool: open_read_pool(path)?, path: path.to_path_buf(), keys_dir: keys_dir.to_path_buf(), audit_key };
        if audit_files::read_head(keys_dir)?.is_none() {
            db.checkpoint_audit()?;
        }
        Ok(db)
    }

    pub fn insert_engine(&self, id: &str, owner: Option<&str>, token_hash: &str, now: i64) -> Result<(), StoreError> {
        let conn = self.pool.get()?;
        let inserted = conn.execute(
            "INSERT INTO engines (id, owner, token_hash, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (id) DO NOTHING",
            params![id, owner, token_hash, now],
        )?;
        if inserted == 0 {
            return Err(StoreError::EngineExists(id.to_string()));
        }
        Ok(())
    }

    pub fn engines(&self) -> Result<Vec<EngineRecord>, StoreError> {
        let conn = self.pool.get()?;
        let mut stmt = conn.prepare_cached(&format!("SELECT {ENGINE_COLUMNS} FROM engines ORDER BY id"))?;
        let rows = stmt.query_map([], engine_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    pub fn engine(&self, id: &str) -> Result<Option<EngineRecord>, StoreError> {
        let conn = self.pool.get()?;
        let mut stmt = conn.prepare_cached(&format!("SELECT {ENGINE_COLUMNS} FROM engines WHERE id = ?1"))?;
        Ok(stmt.query_row([id], engine_from_row).optional()?)
    }

    /// The active engine whose current token, or previous token still in its grace period, has this hash.
    pub fn engine_for_token_hash(&self, token_hash: &str, now: i64) -> Result<Option<EngineRecord>, StoreError> {
        let conn = self.pool.get()?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {ENGINE_COLUMNS} FROM engines WHERE token_hash = ?1 AND revoked_at IS NULL
             UNION ALL
             SELECT {ENGINE_COLUMNS} FROM engines
             WHERE previous_token_hash = ?1 AND previous_valid_until > ?2 AND revoked_at IS NULL
             LIMIT 1"
        ))?;
        Ok(stmt.query_row(params![token_hash, now], engine_from_row).optional()?)
    }

    /// Replaces an engine's token; the old one keeps working until `previous_valid_until` (if given).
    pub fn set_engine_token(
        &self,
        id: &str,
        token_hash: &str,
        previous_valid_until: Option<i64>,
    ) -> Result<(), StoreError> {
        let conn = self.pool.get()?;
        let updated = conn.execute(
            "UPDATE engines SET previous_token_hash = CASE WHEN ?3 IS NULL THEN NULL ELSE token_hash END,
                    previous_valid_until = ?3, token_hash = ?1, revoked_at = NULL
             WHERE id = ?2",
            params![token_hash, id, previous_valid_until],
        )?;
        if updated == 0 { Err(StoreError::EngineNotFound(id.to_string())) } else { Ok(()) }
    }

    pub fn revoke_engine(&self, id: &str, now: i64) -> Result<(), StoreError> {
        let conn = self.pool.get()?;
        let updated =
            conn.execute("UPDATE engines SET revoked_at = coalesce(revoked_at, ?1) WHERE id = ?2", params![now, id])?;
        if updated == 0 { Err(StoreError::EngineNotFound(id.to_string())) } else { Ok(()) }
    }

    pub fn ping(&self) -> Result<(), StoreError> {
        let conn = self.pool.get()?;
        conn.query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }
}

/// How often (in rows) the SQLite store checkpoints the head of the audit log; it also does at shutdown and after
/// every operator command. At most this many of the newest rows can be cut without `audit verify` noticing.
pub const AUDIT_CHECKPOINT_EVERY: i64 = 64;

const AUDIT_COLUMNS: &str = "id, at, actor, action, target, ip, outcome, detail, prev_hash, hash, mac";

fn audit_row(r: &Row<'_>) -> rusqlite::Result<AuditRow> {
    Ok(AuditRow {
        id: r.get(0)?,
        at_ms: r.get(1)?,
        entry: AuditEntry {
            actor: r.get(2)?,
            action: r.get(3)?,
            target: r.get(4)?,
            ip: r.get(5)?,
            outcome: r.get(6)?,
            detail: r.get(7)?,
        },
        prev_hash: r.get(8)?,
        hash: r.get(9)?,
        mac: r.get(10)?,
    })
}

/// The prune anchor, if old rows were pruned.
fn audit_anchor(conn: &rusqlite::Connection) -> Result<Option<Checkpoint>, StoreError> {
    Ok(conn
        .query_row("SELECT last_id, last_hash, mac FROM audit_anchor", [], |r| {
            Ok(Checkpoint { id: r.get(0)?, hash: r.get(1)?, mac: r.get(2)? })
        })
        .optional()?)
}

/// The newest row's id and hash: the last row, else the anchor, else the genesis.
fn audit_tip(conn: &rusqlite::Connection) -> Result<(i64, String), StoreError> {
    let last: Option<(i64, String)> = conn
        .query_row("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(match last {
        Some(last) => last,
        None => audit_anchor(conn)?.map(|a| (a.id, a.hash)).unwrap_or((0, GENESIS.to_string())),
    })
}

/// Audit log, sign-in nonces and refresh tokens.
impl ControlDb {
    /// Appends a row to the audit chain, signed. `BEGIN IMMEDIATE` serialises appenders across processes, so
    /// every row links to the row before it. Every `AUDIT_CHECKPOINT_EVERY` rows the head is checkpointed.
    /// Ids never go back behind the head: after a cut, the next row leaves the gap in place.
    pub fn append_audit(&self, entry: AuditEntry, now: i64) -> Result<(), StoreError> {
        let entry = entry.bounded();
        let id = {
            let mut conn = self.pool.get()?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let (last_id, last_hash) = audit_tip(&tx)?;
            let id = last_id.max(self.signed_head_id()?) + 1;
            let hash = row_hash(&last_hash, id, now, &entry);
            let mac = self.audit_key.sign(Signed::Row, id, &hash);
            tx.execute(
                &format!(
                    "INSERT INTO audit_log ({AUDIT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
                ),
                params![
                    id,
                    now,
                    entry.actor,
                    entry.action,
                    entry.target,
                    entry.ip,
                    entry.outcome,
                    entry.detail,
                    last_hash,
                    hash,
                    mac
                ],
            )?;
            tx.commit()?;
            id
        };
        if id % AUDIT_CHECKPOINT_EVERY == 0
            && let Err(error) = self.checkpoint_audit()
        {
            // The row is stored; the next checkpoint covers it.
            tracing::warn!(%error, "could not checkpoint the head of the audit log");
        }
        Ok(())
    }

    /// The id of the signed head (0 without one). A new row's id is past it even when the rows up to it are gone,
    /// so a cut tail stays a gap in the ids however many rows come after it.
    fn signed_head_id(&self) -> Result<i64, StoreError> {
        Ok(audit_files::read_head(&self.keys_dir)?
            .filter(|h| h.mac.as_deref().is_some_and(|mac| self.audit_key.verify(Signed::Head, h.id, &h.hash, mac)))
            .map_or(0, |h| h.id))
    }

    /// Writes the newest row, signed, as the head of the log (beside the key), unless the head is already there
    /// or further. The row is first made durable (a commit with `synchronous=FULL` syncs the write-ahead log and
    /// every commit before it), so a power cut cannot leave a head pointing past the rows that survived; the head
    /// file is then replaced under the database's write lock, so two gateways never move it backwards.
    pub fn checkpoint_audit(&self) -> Result<(), StoreError> {
        let mut conn = open_writer(&self.path)?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (id, hash) = audit_tip(&tx)?;
        // A write, so the commit syncs: the newest row rewritten as it is.
        tx.execute("UPDATE audit_log SET mac = mac WHERE id = ?1", [id])?;
        tx.commit()?;
        let lock = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // A damaged head (no signature) is left for `audit verify` to report, not silently replaced.
        if audit_files::read_head(&self.keys_dir)?.is_none_or(|head| head.mac.is_some() && head.id < id) {
            audit_files::write_head(&self.keys_dir, &Checkpoint::signed(&self.audit_key, Signed::Head, id, &hash))?;
        }
        drop(lock);
        Ok(())
    }

    /// Checks the whole log: the chain from its anchor, every signature, and the head.
    pub fn verify_audit(&self) -> Result<AuditReport, StoreError> {
        let conn = self.pool.get()?;
        // One read transaction: the anchor and the rows of one moment, even while the gateway prunes.
        conn.execute_batch("BEGIN")?;
        let read = (|| {
            let head = audit_files::read_head(&self.keys_dir)?;
            let anchor = audit_anchor(&conn)?;
            let mut stmt = conn.prepare(&format!("SELECT {AUDIT_COLUMNS} FROM audit_log ORDER BY id"))?;
            let rows = stmt.query_map([], audit_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok::<_, StoreError>((anchor, head, rows))
        })();
        conn.execute_batch("COMMIT")?;
        let (anchor, head, rows) = read?;
        Ok(verify_log(&self.audit_key, anchor, head, rows))
    }

    /// A page of the log, oldest first.
    pub fn list_audit(&self, query: &AuditQuery) -> Result<AuditPage, StoreError> {
        let conn = self.pool.get()?;
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE id > ?1 AND at >= ?2 ORDER BY id LIMIT ?3"
        ))?;
        let limit = query.limit.max(1) as i64;
        let rows = stmt
            .query_map(params![query.after_id.unwrap_or(0), query.since_ms.unwrap_or(i64::MIN), limit + 1], audit_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(AuditPage::from_rows(rows, query.limit.max(1)))
    }

    /// Deletes rows older than `before_ms`, moving the signed anchor to the last deleted row in the same
    /// transaction.
    pub fn prune_audit(&self, before_ms: i64) -> Result<u64, StoreError> {
        let mut conn = self.pool.get()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Never prune the newest row: appends need something to link to.
        let last: Option<(i64, String)> = tx
            .query_row(
                "SELECT id, hash FROM audit_log WHERE at < ?1 AND id < (SELECT max(id) FROM audit_log)
                 ORDER BY id DESC LIMIT 1",
                [before_ms],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((last_id, last_hash)) = last else { return Ok(0) };
        let pruned = tx.execute("DELETE FROM audit_log WHERE id <= ?1", [last_id])?;
        let mac = self.audit_key.sign(Signed::Anchor, last_id, &last_hash);
        tx.execute(
            "INSERT INTO audit_anchor (singleton, last_id, last_hash, mac) VALUES (1, ?1, ?2, ?3)
             ON CONFLICT (singleton) DO UPDATE
             SET last_id = excluded.last_id, last_hash = excluded.last_hash, mac = excluded.mac",
            params![last_id, last_hash, mac],
        )?;
        tx.commit()?;
        Ok(pruned as u64)
    }

    /// See `ControlStore::insert_nonce`; one immediate transaction, so concurrent issues cannot pass the bound.
    pub fn insert_nonce(&self, nonce: &str, now: i64, expires_at: i64, max_kept: u64) -> Result<bool, StoreError> {
        let mut conn = self.pool.get()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute("DELETE FROM auth_nonces WHERE expires_at < ?1", [now - NONCE_KEPT_AFTER_EXPIRY_MS])?;
        let count = |tx: &rusqlite::Transaction<'_>| {
            tx.query_row("SELECT count(*) FROM auth_nonces", [], |r| r.get::<_, i64>(0))
        };
        let max_kept = i64::try_from(max_kept).unwrap_or(i64::MAX);
        if count(&tx)? >= max_kept {
            // Full: the expired and used nonces go first, before a fresh one is refused.
            tx.execute("DELETE FROM auth_nonces WHERE expires_at <= ?1 OR used_at IS NOT NULL", [now])?;
            if count(&tx)? >= max_kept {
                return Ok(false);
            }
        }
        tx.execute(
            "INSERT INTO auth_nonces (nonce, created_at, expires_at) VALUES (?1, ?2, ?3)",
            params![nonce, now, expires_at],
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// Marks a nonce used if it is ours, unused and unexpired, in one statement (so two requests with the same
    /// nonce cannot both succeed).
    pub fn consume_nonce(&self, nonce: &str, now: i64) -> Result<NonceCheck, StoreError> {
        let conn = self.pool.get()?;
        let used = conn.execute(
            "UPDATE auth_nonces SET used_at = ?1 WHERE nonce = ?2 AND used_at IS NULL AND expires_at > ?1",
            params![now, nonce],
        )?;
        if used == 1 {
            return Ok(NonceCheck::Consumed);
        }
        let row: Option<Option<i64>> =
            conn.query_row("SELECT used_at FROM auth_nonces WHERE nonce = ?1", [nonce], |r| r.get(0)).optional()?;
        Ok(match row {
            None => NonceCheck::Unknown,
            Some(Some(_)) => NonceCheck::Reused,
            Some(None) => NonceCheck::Expired,
        })
    }

    pub fn insert_refresh_token(&self, token: &RefreshTokenRecord) -> Result<(), StoreError> {
        let conn = self.pool.get()?;
        conn.execute(
            "INSERT INTO refresh_tokens (token_hash, family_id, user_id, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![token.token_hash, token.family_id, token.user_id, token.created_at, token.expires_at],
        )?;
        Ok(())
    }

    /// Rotates a refresh token: the presented one must be live; it is marked rotated and `next` joins its
    /// family. Presenting a rotated token revokes the family (someone kept a copy).
    pub fn rotate_refresh_token(
        &self,
        presented_hash: &str,
        next: &RefreshTokenRecord,
        now: i64,
    ) -> Result<RefreshCheck, StoreError> {
        let mut conn = self.pool.get()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let row: Option<RefreshRow> = tx
            .query_row(
                "SELECT family_id, user_id, expires_at, rotated_at, revoked_at FROM refresh_tokens WHERE token_hash = ?1",
                [presented_hash],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        let Some((family, user, expires_at, rotated_at, revoked_at)) = row else { return Ok(RefreshCheck::Unknown) };
        let check = if revoked_at.is_some() {
            RefreshCheck::Revoked
        } else if rotated_at.is_some() {
            tx.execute(
                "UPDATE refresh_tokens SET revoked_at = ?1 WHERE family_id = ?2 AND revoked_at IS NULL",
                params![now, family],
            )?;
            RefreshCheck::Reused { user }
        } else if expires_at <= now {
            RefreshCheck::Expired
        } else {
            tx.execute(
                "UPDATE refresh_tokens SET rotated_at = ?1 WHERE token_hash = ?2",
                params![now, presented_hash],
            )?;
            tx.execute(
                "INSERT INTO refresh_tokens (token_hash, family_id, user_id, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![next.token_hash, family, user, next.created_at, next.expires_at],
            )?;
            RefreshCheck::Rotated { user }
        };
        tx.commit()?;
        Ok(check)
    }

    /// Revokes the family of a refresh token (logout); returns the user if the token was known.
    pub fn revoke_refresh_family(&self, presented_hash: &str, now: i64) -> Result<Option<String>, StoreError> {
        let conn = self.pool.get()?;
        let row: Option<(String, String)> = conn
            .query_row("SELECT family_id, user_id FROM refresh_tokens WHERE token_hash = ?1", [presented_hash], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        let Some((family, user)) = row else { return Ok(None) };
        conn.execute(
            "UPDATE refresh_tokens SET revoked_at = ?1 WHERE family_id = ?2 AND revoked_at IS NULL",
            params![now, family],
        )?;
        Ok(Some(user))
    }
}

//! Revocations and API keys in the control database (`store::tokens`).

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use super::control::ControlDb;
use super::{SqliteStore, blocking};
use crate::store::StoreError;
use crate::store::tokens::{ApiKey, NewKeyOutcome, Revocations, TokenStore, UserRevocation, join_scopes, split_scopes};

const KEY_COLUMNS: &str = "id, user_id, name, scopes, created_at, expires_at";

fn key_from_row(row: &Row<'_>) -> rusqlite::Result<ApiKey> {
    Ok(ApiKey {
        id: row.get(0)?,
        user: row.get(1)?,
        name: row.get(2)?,
        scopes: split_scopes(&row.get::<_, String>(3)?),
        created_at_ms: row.get(4)?,
        expires_at_ms: row.get(5)?,
    })
}

/// Clears revocations of tokens that have expired anyway, and moves the generation.
fn after_revoking(conn: &Connection, now: i64) -> Result<(), StoreError> {
    conn.execute("DELETE FROM revoked_tokens WHERE keep_until < ?1", [now])?;
    conn.execute("DELETE FROM revoked_users WHERE keep_until < ?1", [now])?;
    conn.execute("UPDATE revocation_generation SET generation = generation + 1 WHERE singleton = 1", [])?;
    Ok(())
}

impl ControlDb {
    fn revocation_generation(&self) -> Result<i64, StoreError> {
        let conn = self.pool.get()?;
        Ok(conn.query_row("SELECT generation FROM revocation_generation WHERE singleton = 1", [], |r| r.get(0))?)
    }

    fn revocations(&self) -> Result<Revocations, StoreError> {
        let mut conn = self.pool.get()?;
        // One read transaction: the lists are the ones of the generation read with them.
        let tx = conn.transaction()?;
        let generation =
            tx.query_row("SELECT generation FROM revocation_generation WHERE singleton = 1", [], |r| r.get(0))?;
        let jtis =
            tx.prepare("SELECT jti FROM revoked_tokens")?.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
        let users = tx
            .prepare("SELECT user_id, revoked_through FROM revoked_users")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        Ok(Revocations { generation, jtis, users })
    }

    fn revoke_jti(&self, jti: &str, keep_until: i64, now: i64) -> Result<(), StoreError> {
        let mut conn = self.pool.get()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO revoked_tokens (jti, revoked_at, keep_until) VALUES (?1, ?2, ?3)
             ON CONFLICT (jti) DO UPDATE SET keep_until = max(keep_until, excluded.keep_until)",
            params![jti, now, keep_until],
        )?;
        after_revoking(&tx, now)?;
        tx.commit()?;
        Ok(())
    }

    fn revoke_user(&self, user: &str, keep_until: i64, now: i64) -> Result<UserRevocation, StoreError> {
        let mut conn = self.pool.get()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO revoked_users (user_id, revoked_through, keep_until) VALUES (?1, ?2, ?3)
             ON CONFLICT (user_id) DO UPDATE SET revoked_through = max(revoked_through, excluded.revoked_through),
                                                 keep_until = max(keep_until, excluded.keep_until)",
            params![user, now, keep_until],
        )?;
        let refresh_tokens = tx.execute(
            "UPDATE refresh_tokens SET revoked_at = ?1 WHERE user_id = ?2 AND revoked_at IS NULL AND expires_at > ?1",
            params![now, user],
        )?;
        let api_keys = tx.execute("DELETE FROM api_keys WHERE user_id = ?1", [user])?;
        after_revoking(&tx, now)?;
        tx.commit()?;
        Ok(UserRevocation { refresh_tokens: refresh_tokens as u64, api_keys: api_keys as u64 })
    }

    fn create_api_key(&self, key: &ApiKey, key_hash: &str, max_per_user: u64) -> Result<NewKeyOutcome, StoreError> {
        let mut conn = self.pool.get()?;
        // Immediate: two creations at once cannot both see room for one more key.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let count: i64 = tx.query_row("SELECT count(*) FROM api_keys WHERE user_id = ?1", [&key.user], |r| r.get(0))?;
        if count as u64 >= max_per_user {
            return Ok(NewKeyOutcome::TooMany(count as u64));
        }
        tx.execute(
            "INSERT INTO api_keys (id, user_id, name, key_hash, scopes, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                key.id,
                key.user,
                key.name,
                key_hash,
                join_scopes(&key.scopes),
                key.created_at_ms,
                key.expires_at_ms
            ],
        )?;
        tx.commit()?;
        Ok(NewKeyOutcome::Created)
    }

    fn list_api_keys(&self, user: &str) -> Result<Vec<ApiKey>, StoreError> {
        let conn = self.pool.get()?;
        let mut statement = conn.prepare(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE user_id = ?1 ORDER BY created_at DESC, id DESC"
        ))?;
        let keys = statement.query_map([user], key_from_row)?.collect::<Result<_, _>>()?;
        Ok(keys)
    }

    fn delete_api_key(&self, user: &str, id: &str) -> Result<bool, StoreError> {
        let conn = self.pool.get()?;
        Ok(conn.execute("DELETE FROM api_keys WHERE user_id = ?1 AND id = ?2", [user, id])? == 1)
    }

    fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKey>, StoreError> {
        let conn = self.pool.get()?;
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = ?1");
        Ok(conn.query_row(&sql, [key_hash], key_from_row).optional()?)
    }
}

#[async_trait]
impl TokenStore for SqliteStore {
    async fn revocation_generation(&self) -> Result<i64, StoreError> {
        let control = self.control.clone();
        blocking(move || control.revocation_generation()).await
    }

    async fn revocations(&self) -> Result<Revocations, StoreError> {
        let control = self.control.clone();
        blocking(move || control.revocations()).await
    }

    async fn revoke_jti(&self, jti: &str, keep_until_ms: i64) -> Result<(), StoreError> {
        let (control, jti, now) = (self.control.clone(), jti.to_string(), self.clock.now_ms());
        blocking(move || control.revoke_jti(&jti, keep_until_ms, now)).await
    }

    async fn revoke_user(&self, user: &str, keep_until_ms: i64) -> Result<UserRevocation, StoreError> {
        let (control, user, now) = (self.control.clone(), user.to_string(), self.clock.now_ms());
        blocking(move || control.revoke_user(&user, keep_until_ms, now)).await
    }

    async fn create_api_key(
        &self,
        key: ApiKey,
        key_hash: &str,
        max_per_user: u64,
    ) -> Result<NewKeyOutcome, StoreError> {
        let (control, hash) = (self.control.clone(), key_hash.to_string());
        blocking(move || control.create_api_key(&key, &hash, max_per_user)).await
    }

    async fn list_api_keys(&self, user: &str) -> Result<Vec<ApiKey>, StoreError> {
        let (control, user) = (self.control.clone(), user.to_string());
        blocking(move || control.list_api_keys(&user)).await
    }

    async fn delete_api_key(&self, user: &str, id: &str) -> Result<bool, StoreError> {
        let (control, user, id) = (self.control.clone(), user.to_string(), id.to_string());
        blocking(move || control.delete_api_key(&user, &id)).await
    }

    async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKey>, StoreError> {
        let (control, hash) = (self.control.clone(), key_hash.to_string());
        blocking(move || control.api_key_by_hash(&hash)).await
    }
}

//! Revocations and API keys in PostgreSQL: the rules of `sqlite/tokens.rs`, shared by every gateway of a fleet.

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::PgStore;
use super::jobs::{execute, query, query_opt};
use crate::store::StoreError;
use crate::store::tokens::{ApiKey, NewKeyOutcome, Revocations, TokenStore, UserRevocation, join_scopes, split_scopes};

const KEY_COLUMNS: &str = "id, user_id, name, scopes, created_at, expires_at";

/// Serialises key creations of one user across gateways (with the user's hash as the second key), so the count
/// checked is the count inserted against.
const KEY_LOCK: i32 = 0x6b65;

fn key_from_row(row: &Row) -> Result<ApiKey, StoreError> {
    Ok(ApiKey {
        id: row.try_get(0)?,
        user: row.try_get(1)?,
        name: row.try_get(2)?,
        scopes: split_scopes(&row.try_get::<_, String>(3)?),
        created_at_ms: row.try_get(4)?,
        expires_at_ms: row.try_get(5)?,
    })
}

/// Clears revocations of tokens that have expired anyway, and moves the generation.
async fn after_revoking(tx: &impl GenericClient, now: i64) -> Result<(), StoreError> {
    execute(tx, "DELETE FROM revoked_tokens WHERE keep_until < $1", &[&now]).await?;
    execute(tx, "DELETE FROM revoked_users WHERE keep_until < $1", &[&now]).await?;
    execute(tx, "UPDATE revocation_generation SET generation = generation + 1 WHERE singleton = 1", &[]).await?;
    Ok(())
}

#[async_trait]
impl TokenStore for PgStore {
    async fn revocation_generation(&self) -> Result<i64, StoreError> {
        let client = self.client().await?;
        let row = query_opt(&client, "SELECT generation FROM revocation_generation WHERE singleton = 1", &[]).await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?.unwrap_or(0))
    }

    async fn revocations(&self) -> Result<Revocations, StoreError> {
        let mut client = self.client().await?;
        // One snapshot: the lists are the ones of the generation read with them.
        let tx =
            client.build_transaction().isolation_level(tokio_postgres::IsolationLevel::RepeatableRead).start().await?;
        let generation = query_opt(&tx, "SELECT generation FROM revocation_generation WHERE singleton = 1", &[])
            .await?
            .map(|r| r.try_get(0))
            .transpose()?
            .unwrap_or(0);
        let jtis = query(&tx, "SELECT jti FROM revoked_tokens", &[])
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        let users = query(&tx, "SELECT user_id, revoked_through FROM revoked_users", &[])
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, tokio_postgres::Error>>()?;
        tx.commit().await?;
        Ok(Revocations { generation, jtis, users })
    }

    async fn revoke_jti(&self, jti: &str, keep_until_ms: i64) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        execute(
            &tx,
            "INSERT INTO revoked_tokens (jti, revoked_at, keep_until) VALUES ($1, $2, $3)
             ON CONFLICT (jti) DO UPDATE SET keep_until = greatest(revoked_tokens.keep_until, excluded.keep_until)",
            &[&jti, &now, &keep_until_ms],
        )
        .await?;
        after_revoking(&tx, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn revoke_user(&self, user: &str, keep_until_ms: i64) -> Result<UserRevocation, StoreError> {
        let now = self.clock.now_ms();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        execute(
            &tx,
            "INSERT INTO revoked_users (user_id, revoked_through, keep_until) VALUES ($1, $2, $3)
             ON CONFLICT (user_id) DO UPDATE
                 SET revoked_through = greatest(revoked_users.revoked_through, excluded.revoked_through),
                     keep_until = greatest(revoked_users.keep_until, excluded.keep_until)",
            &[&user, &now, &keep_until_ms],
        )
        .await?;
        let refresh_tokens = execute(
            &tx,
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL AND expires_at > $1",
            &[&now, &user],
        )
        .await?;
        let api_keys = execute(&tx, "DELETE FROM api_keys WHERE user_id = $1", &[&user]).await?;
        after_revoking(&tx, now).await?;
        tx.commit().await?;
        Ok(UserRevocation { refresh_tokens, api_keys })
    }

    async fn create_api_key(
        &self,
        key: ApiKey,
        key_hash: &str,
        max_per_user: u64,
    ) -> Result<NewKeyOutcome, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        execute(&tx, "SELECT pg_advisory_xact_lock($1, hashtext($2))", &[&KEY_LOCK, &key.user]).await?;
        let count: i64 = query_opt(&tx, "SELECT count(*) FROM api_keys WHERE user_id = $1", &[&key.user])
            .await?
            .map_or(Ok(0), |r| r.try_get(0))?;
        if count as u64 >= max_per_user {
            return Ok(NewKeyOutcome::TooMany(count as u64));
        }
        execute(
            &tx,
            "INSERT INTO api_keys (id, user_id, name, key_hash, scopes, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &key.id,
                &key.user,
                &key.name,
                &key_hash,
                &join_scopes(&key.scopes),
                &key.created_at_ms,
                &key.expires_at_ms,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(NewKeyOutcome::Created)
    }

    async fn list_api_keys(&self, user: &str) -> Result<Vec<ApiKey>, StoreError> {
        let client = self.client().await?;
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE user_id = $1 ORDER BY created_at DESC, id DESC");
        query(&client, &sql, &[&user]).await?.iter().map(key_from_row).collect()
    }

    async fn delete_api_key(&self, user: &str, id: &str) -> Result<bool, StoreError> {
        let client = self.client().await?;
        Ok(execute(&client, "DELETE FROM api_keys WHERE user_id = $1 AND id = $2", &[&user, &id]).await? == 1)
    }

    async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKey>, StoreError> {
        let client = self.client().await?;
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = $1");
        query_opt(&client, &sql, &[&key_hash]).await?.as_ref().map(key_from_row).transpose()
    }
}

//! User credentials beyond sign-in: revocations of user JWTs (`token revoke`) and self-service API keys
//! (`/auth/keys`). One trait, implemented by both drivers (`sqlite/tokens.rs`, `postgres/tokens.rs`).

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;

use super::StoreError;

/// Every revocation in force, as of one generation of the store's revocation counter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revocations {
    /// Moves on every revocation, so a gateway re-reads the lists only when they changed.
    pub generation: i64,
    /// Revoked token ids (`jti`).
    pub jtis: HashSet<String>,
    /// Per user: every token issued at or before this time (Unix ms) is revoked.
    pub users: HashMap<String, i64>,
}

/// What `revoke_user` revoked besides the user's JWTs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserRevocation {
    /// Refresh tokens of wallet sign-ins that were still usable.
    pub refresh_tokens: u64,
    /// API keys deleted.
    pub api_keys: u64,
}

/// A stored API key (the key's hash stays in the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: String,
    pub user: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_at_ms: i64,
    /// `None`: it does not expire.
    pub expires_at_ms: Option<i64>,
}

/// What creating an API key did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewKeyOutcome {
    Created,
    /// The user already has this many keys, the cap.
    TooMany(u64),
}

/// Scopes as stored: space-separated.
pub fn join_scopes(scopes: &[String]) -> String {
    scopes.join(" ")
}

/// Scopes as read back.
pub fn split_scopes(text: &str) -> Vec<String> {
    text.split(' ').filter(|s| !s.is_empty()).map(str::to_string).collect()
}

/// Revocations and API keys.
#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// The current revocation generation (one cheap read, polled by every gateway).
    async fn revocation_generation(&self) -> Result<i64, StoreError>;
    /// Every revocation in force, with the generation it belongs to.
    async fn revocations(&self) -> Result<Revocations, StoreError>;
    /// Denies the token `jti` until `keep_until_ms` (when it has expired anyway); clears lapsed revocations.
    async fn revoke_jti(&self, jti: &str, keep_until_ms: i64) -> Result<(), StoreError>;
    /// Revokes every token issued to `user` up to now (kept until `keep_until_ms`), their sign-ins' refresh
    /// tokens, and their API keys, in one transaction; clears lapsed revocations.
    async fn revoke_user(&self, user: &str, keep_until_ms: i64) -> Result<UserRevocation, StoreError>;
    /// Stores a key (by its hash) unless the user already has `max_per_user` keys.
    async fn create_api_key(&self, key: ApiKey, key_hash: &str, max_per_user: u64)
    -> Result<NewKeyOutcome, StoreError>;
    /// The user's keys, newest first.
    async fn list_api_keys(&self, user: &str) -> Result<Vec<ApiKey>, StoreError>;
    /// Deletes one of the user's keys; false if the user has none with that id.
    async fn delete_api_key(&self, user: &str, id: &str) -> Result<bool, StoreError>;
    /// The key with this hash, expired or not.
    async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKey>, StoreError>;
}

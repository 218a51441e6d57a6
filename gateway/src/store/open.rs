//! Opening the store a command names: the SQLite shards under `--data-dir` (the default), or the PostgreSQL store
//! of a fleet with `--store postgres://...`; and the JWT signing keys that go with it.

use std::sync::Arc;
use std::time::Duration;

use flowork_common::clock::Clock;
use tokio_util::sync::CancellationToken;

use super::postgres::PgStore;
use super::sqlite::SqliteStore;
use super::tokens::TokenStore;
use super::{ControlStore, JobStore, RetryPolicy, StoreError};
use crate::admission::AdmissionLimits;
use crate::auth::jwt::KeyRing;
use crate::config::DataArgs;
use crate::store::BreakerPolicy;

/// The backend behind the two store traits, for what only one of them has (shards to check, keys to share).
pub enum Backend {
    Sqlite(Arc<SqliteStore>),
    Postgres(Arc<PgStore>),
}

/// An open store.
pub struct Stores {
    pub jobs: Arc<dyn JobStore>,
    pub control: Arc<dyn ControlStore>,
    pub tokens: Arc<dyn TokenStore>,
    pub backend: Backend,
}

/// How the store enforces the gateway's policies.
#[derive(Debug, Clone, Copy, Default)]
pub struct StorePolicies {
    pub retry: RetryPolicy,
    pub caps: AdmissionLimits,
    pub breaker: BreakerPolicy,
}

/// Whether a `--store` value names PostgreSQL.
fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Opens the store of `data`: PostgreSQL when `--store` names it, else the SQLite shards under `--data-dir`.
pub async fn open(data: &DataArgs, clock: Arc<dyn Clock>, policies: StorePolicies) -> Result<Stores, StoreError> {
    match data.store.as_deref().filter(|s| !s.is_empty()) {
        Some(url) if is_postgres(url) => {
            let store = Arc::new(
                PgStore::open(url, clock, policies.retry)
                    .await?
                    .with_caps(policies.caps)
                    .with_breaker(policies.breaker),
            );
            Ok(Stores {
                jobs: store.clone(),
                control: store.clone(),
                tokens: store.clone(),
                backend: Backend::Postgres(store),
            })
        }
        Some(other) => Err(StoreError::Config(format!(
            "--store must be a PostgreSQL URL (postgres://USER@HOST:PORT/DB), not {:?}; leave it out for the \
             SQLite shards under --data-dir",
            crate::connection_string::redact(other)
        ))),
        None => {
            let store = Arc::new(
                SqliteStore::open(&data.data_dir, clock, policies.retry)
                    .await?
                    .with_caps(policies.caps)
                    .with_breaker(policies.breaker),
            );
            Ok(Stores {
                jobs: store.clone(),
                control: store.clone(),
                tokens: store.clone(),
                backend: Backend::Sqlite(store),
            })
        }
    }
}

impl Stores {
    /// The signing keys: files under `<data-dir>/keys` (0600) with SQLite, the shared table with PostgreSQL.
    pub async fn key_ring(&self, data: &DataArgs) -> anyhow::Result<KeyRing> {
        Ok(match &self.backend {
            Backend::Sqlite(_) => KeyRing::load_or_create(&data.data_dir)?,
            Backend::Postgres(store) => KeyRing::shared(store.signing_keys().await?)?,
        })
    }

    /// Adds a new signing key (new tokens are signed with it; old ones stay valid); returns its id.
    pub async fn rotate_key(&self, ring: &KeyRing) -> anyhow::Result<String> {
        Ok(match &self.backend {
            Backend::Sqlite(_) => ring.rotate()?,
            Backend::Postgres(store) => store.add_signing_key(ring.newest_kid().as_deref()).await?,
        })
    }

    /// Keeps a shared key ring current (keys rotated through any gateway), once a second, until `stop`.
    pub fn refresh_shared_keys(&self, ring: Arc<KeyRing>, stop: CancellationToken) {
        let Backend::Postgres(store) = &self.backend else { return };
        let store = store.clone();
        tokio::spawn(async move {
            let mut ticker = crate::background::periodic::Ticker::new(Duration::from_secs(1), stop);
            while ticker.next().await {
                match store.signing_keys().await {
                    Ok(keys) => {
                        if let Err(error) = ring.replace(keys) {
                            tracing::warn!(%error, "the shared signing keys are unusable");
                        }
                    }
                    Err(error) => tracing::warn!(%error, "could not read the shared signing keys"),
                }
            }
        });
    }

    /// Loads the revocations of user tokens into `ring`, then keeps them current until `stop`: once a second
    /// it reads the store's revocation generation (one cheap row) and re-reads the lists only when it moved. A
    /// revocation made through any process or gateway therefore takes effect everywhere within about a second
    /// (documented as "within 5 seconds", the bound the tests hold it to).
    pub async fn watch_revocations(&self, ring: Arc<KeyRing>, stop: CancellationToken) -> Result<(), StoreError> {
        ring.revocations().replace(self.tokens.revocations().await?);
        let tokens = self.tokens.clone();
        tokio::spawn(async move {
            let mut ticker = crate::background::periodic::Ticker::new(REVOCATION_POLL, stop);
            while ticker.next().await {
                let fresh = match tokens.revocation_generation().await {
                    Ok(generation) if Some(generation) == ring.revocations().generation() => continue,
                    Ok(_) => tokens.revocations().await,
                    Err(error) => Err(error),
                };
                match fresh {
                    Ok(revocations) => ring.revocations().replace(revocations),
                    Err(error) => tracing::warn!(%error, "could not read the token revocations"),
                }
            }
        });
        Ok(())
    }
}

/// How often a gateway checks for new token revocations.
pub const REVOCATION_POLL: Duration = Duration::from_secs(1);

//! A short-lived memory of engine records, so the hot paths (`POST /jobs`, every engine call) do not read the
//! control database each time.
//!
//! Entries live for `ttl` (one second by default): a token rotation or revocation made by another process (the
//! CLI, a second gateway) takes effect within that time. Nothing that decides correctness (idempotency, leases,
//! fencing) is cached.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::store::{ControlStore, EngineRecord, StoreError};

/// Most entries kept before the memory is cleared (bounds what junk tokens can make us hold).
const MAX_ENTRIES: usize = 10_000;

type Entries = RwLock<HashMap<String, (Option<EngineRecord>, Instant)>>;

/// Cached lookups of engines by id and by token hash.
pub struct EngineCache {
    control: Arc<dyn ControlStore>,
    ttl: Duration,
    by_id: Entries,
    by_token_hash: Entries,
}

fn cached(entries: &Entries, key: &str, ttl: Duration) -> Option<Option<EngineRecord>> {
    let map = entries.read().ok()?;
    let (record, at) = map.get(key)?;
    (at.elapsed() < ttl).then(|| record.clone())
}

fn remember(entries: &Entries, key: &str, record: Option<EngineRecord>) {
    if let Ok(mut map) = entries.write() {
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(key.to_string(), (record, Instant::now()));
    }
}

impl EngineCache {
    pub fn new(control: Arc<dyn ControlStore>, ttl: Duration) -> Self {
        Self { control, ttl, by_id: RwLock::default(), by_token_hash: RwLock::default() }
    }

    /// The engine named `id`, if registered (revoked ones included).
    pub async fn engine(&self, id: &str) -> Result<Option<EngineRecord>, StoreError> {
        if let Some(hit) = cached(&self.by_id, id, self.ttl) {
            return Ok(hit);
        }
        let record = self.control.engine(id).await?;
        remember(&self.by_id, id, record.clone());
        Ok(record)
    }

    /// The active engine whose token hashes to `token_hash`.
    pub async fn engine_for_token_hash(&self, token_hash: &str) -> Result<Option<EngineRecord>, StoreError> {
        if let Some(hit) = cached(&self.by_token_hash, token_hash, self.ttl) {
            return Ok(hit);
        }
        let record = self.control.engine_for_token_hash(token_hash).await?;
        remember(&self.by_token_hash, token_hash, record.clone());
        Ok(record)
    }
}

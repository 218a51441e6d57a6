//! Idempotency keys whose first request is still being processed in this process, to answer a concurrent
//! duplicate with 409 instead of making it wait.
//!
//! This is only a courtesy: uniqueness itself is enforced by the shard's unique index, so two gateway processes
//! still create one job; a duplicate arriving through the other process is answered as a replay.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

type Key = (String, String, String);

/// The set of (user, engine, key) being enqueued right now.
#[derive(Default)]
pub struct InflightKeys(Mutex<HashSet<Key>>);

/// Removes its key from the set when dropped (also when the request is cancelled mid-way).
pub struct InflightGuard {
    set: Arc<InflightKeys>,
    key: Key,
}

impl InflightKeys {
    /// Marks a key as in progress, or returns `None` if it already is.
    pub fn begin(self: &Arc<Self>, user: &str, engine: &str, key: &str) -> Option<InflightGuard> {
        let key = (user.to_string(), engine.to_string(), key.to_string());
        let mut set = self.0.lock().ok()?;
        set.insert(key.clone()).then(|| InflightGuard { set: self.clone(), key })
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        if let Ok(mut set) = self.set.0.lock() {
            set.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_busy_until_its_guard_drops() {
        let keys = Arc::new(InflightKeys::default());
        let guard = keys.begin("u", "e", "k").unwrap();
        assert!(keys.begin("u", "e", "k").is_none());
        assert!(keys.begin("other", "e", "k").is_some());
        drop(guard);
        assert!(keys.begin("u", "e", "k").is_some());
    }
}

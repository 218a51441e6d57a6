//! Access tokens already verified, so a client's next requests skip the signature check and the parsing of the
//! header and claims (a tenth of the gateway's CPU per `POST /jobs` under load). Keyed by the SHA-256 of the
//! token, so the cache holds no token; an entry serves only for the audience it was checked for, before the
//! token's `exp`, and while the key that signed it is still in the ring. Bounded: when full it starts over.

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use super::jwt::AccessClaims;

/// Entries kept at most (a few MiB).
const CAPACITY: usize = 10_000;

struct Entry {
    audience: String,
    kid: String,
    claims: AccessClaims,
}

/// The verified tokens of one key ring.
#[derive(Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

/// The cache key of a token.
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl TokenCache {
    /// The claims of a token verified before for `audience`, if it is still within its validity at `now_s` and
    /// `key_known` says its signing key is still there.
    pub fn get(
        &self,
        digest: &[u8; 32],
        audience: &str,
        now_s: i64,
        key_known: impl Fn(&str) -> bool,
    ) -> Option<AccessClaims> {
        let mut entries = self.entries.lock().ok()?;
        let entry = entries.get(digest)?;
        if entry.audience == audience && entry.claims.nbf <= now_s && now_s < entry.claims.exp && key_known(&entry.kid)
        {
            return Some(entry.claims.clone());
        }
        // Expired, not yet valid or its key is gone: the full check decides (and says why).
        entries.remove(digest);
        None
    }

    /// Remembers a token that passed the full check.
    pub fn put(&self, digest: [u8; 32], audience: &str, kid: &str, claims: &AccessClaims) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= CAPACITY {
                entries.clear();
            }
            let entry = Entry { audience: audience.to_string(), kid: kid.to_string(), claims: claims.clone() };
            entries.insert(digest, entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(nbf: i64, exp: i64) -> AccessClaims {
        AccessClaims {
            sub: "alice".into(),
            iat: nbf,
            nbf,
            exp,
            iss: "flowork".into(),
            aud: "flowork".into(),
            jti: "j".into(),
            scope: String::new(),
        }
    }

    #[test]
    fn serves_a_token_only_for_its_audience_within_its_validity_and_while_its_key_exists() {
        let cache = TokenCache::default();
        let key = digest("token");
        cache.put(key, "users", "k1", &claims(100, 200));
        assert!(cache.get(&key, "users", 150, |_| true).is_some());
        assert!(cache.get(&digest("other"), "users", 150, |_| true).is_none());
        assert!(cache.get(&key, "admins", 150, |_| true).is_none(), "another audience");
        cache.put(key, "users", "k1", &claims(100, 200));
        assert!(cache.get(&key, "users", 200, |_| true).is_none(), "expired");
        cache.put(key, "users", "k1", &claims(100, 200));
        assert!(cache.get(&key, "users", 99, |_| true).is_none(), "not yet valid");
        cache.put(key, "users", "k1", &claims(100, 200));
        assert!(cache.get(&key, "users", 150, |kid| kid != "k1").is_none(), "its key is gone");
        assert!(cache.get(&key, "users", 150, |_| true).is_none(), "a refused entry is dropped");
    }

    #[test]
    fn stays_bounded() {
        let cache = TokenCache::default();
        for i in 0..CAPACITY + 10 {
            cache.put(digest(&i.to_string()), "users", "k1", &claims(0, i64::MAX));
        }
        assert!(cache.entries.lock().unwrap().len() <= CAPACITY);
    }
}

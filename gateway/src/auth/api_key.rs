//! API keys of users (`fwk_`): 256 random bits with a checksum, shown once at `POST /auth/keys`, stored only as a
//! SHA-256 hash (like engine tokens: a random secret needs no password hashing), each allowing exactly its scopes.

use flowork_common::secret::{self, API_KEY_PREFIX, TokenShape};

use super::AuthError;
use super::engine_token;
use crate::state::AppState;
use crate::store::tokens::ApiKey;

/// A fresh API key: `fwk_`, 43 URL-safe characters, an 8-digit checksum.
pub fn generate() -> String {
    secret::mint(API_KEY_PREFIX)
}

/// The stored form of a key.
pub fn hash(key: &str) -> String {
    engine_token::hash(key)
}

/// Whether a bearer token is meant as an API key (rather than an access JWT).
pub fn is_api_key(token: &str) -> bool {
    token.starts_with(API_KEY_PREFIX)
}

fn refused(code: &'static str, message: &str) -> AuthError {
    AuthError::Refused { code, message: message.to_string() }
}

/// The stored key a presented one is; refused when malformed (before any lookup), unknown, deleted or expired.
pub async fn authenticate(state: &AppState, presented: &str) -> Result<ApiKey, AuthError> {
    let invalid = || refused("invalid_key", "this API key is not valid (unknown or deleted)");
    if secret::shape(presented, API_KEY_PREFIX) != TokenShape::Valid {
        return Err(invalid());
    }
    // Looking up by hash compares hashes, not the secret, so timing reveals nothing about the key.
    let key = state.tokens.api_key_by_hash(&hash(presented)).await?.ok_or_else(invalid)?;
    if key.expires_at_ms.is_some_and(|at| at <= state.clock.now_ms()) {
        return Err(refused("key_expired", "this API key has expired; make a new one"));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_their_own_prefix_and_checksum() {
        let key = generate();
        assert!(is_api_key(&key) && key.len() == 55, "{key}");
        assert_eq!(secret::shape(&key, API_KEY_PREFIX), TokenShape::Valid);
        assert_eq!(secret::shape(&key, secret::ENGINE_PREFIX), TokenShape::Invalid);
        assert_ne!(hash(&key), hash(&generate()));
    }
}

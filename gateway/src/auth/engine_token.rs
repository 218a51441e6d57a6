//! Engine tokens: 256 random bits, shown once at `engine add`, stored only as a SHA-256 hash.
//!
//! A fast hash is enough (no password hashing) because the token is random, not chosen by a person: there is
//! nothing to guess from the hash.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// A fresh engine token, `fwe_` followed by 43 URL-safe characters.
pub fn generate() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("fwe_{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// The stored form of a token.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_hash_stably() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert!(a.starts_with("fwe_") && a.len() == 47, "{a}");
        assert_eq!(hash(&a), hash(&a));
        assert_ne!(hash(&a), hash(&b));
        assert!(!hash(&a).contains(&a[4..]));
    }
}

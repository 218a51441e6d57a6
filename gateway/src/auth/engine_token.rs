//! Engine tokens: 256 random bits, shown once at `engine add`, stored only as a SHA-256 hash.
//!
//! A fast hash is enough (no password hashing) because the token is random, not chosen by a person: there is
//! nothing to guess from the hash.

use flowork_common::secret::{self, ENGINE_PREFIX, TokenShape};
use sha2::{Digest, Sha256};

/// A fresh engine token: `fwe_`, 43 URL-safe characters, an 8-digit checksum.
pub fn generate() -> String {
    secret::mint(ENGINE_PREFIX)
}

/// Whether a presented token may be an engine token (checksum right, or issued before checksums existed);
/// anything else is refused without a database lookup.
pub fn plausible(token: &str) -> bool {
    secret::shape(token, ENGINE_PREFIX) != TokenShape::Invalid
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
        assert!(a.starts_with("fwe_") && a.len() == 55, "{a}");
        assert!(plausible(&a));
        assert!(!plausible(&a.replace("fwe_", "fwr_")));
        assert_eq!(hash(&a), hash(&a));
        assert_ne!(hash(&a), hash(&b));
        assert!(!hash(&a).contains(&a[4..]));
    }
}

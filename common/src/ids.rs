//! Validation of the names that cross the API: engine ids (the shard key), user ids, job kinds.

use thiserror::Error;

/// Why a name was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum NameError {
    #[error("an engine id is 1-63 characters of lowercase letters, digits and '-', starting with a letter or digit")]
    EngineId,
    #[error("a user id is 1-128 characters of letters, digits and '-', '_', '.', '@'")]
    UserId,
    #[error("a job kind is 1-64 characters of lowercase letters, digits and '-', '_', '.'")]
    Kind,
}

/// Checks an engine id: it names a shard file, so it must be safe as a file name on every OS.
pub fn validate_engine_id(id: &str) -> Result<(), NameError> {
    let ok = (1..=63).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-');
    if ok { Ok(()) } else { Err(NameError::EngineId) }
}

/// Checks a user id (a wallet address in lowercase `0x` form, or an operator-chosen name).
pub fn validate_user_id(id: &str) -> Result<(), NameError> {
    let ok = (1..=128).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'));
    if ok { Ok(()) } else { Err(NameError::UserId) }
}

/// Checks a job kind name.
pub fn validate_kind(kind: &str) -> Result<(), NameError> {
    let ok = (1..=64).contains(&kind.len())
        && kind.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'));
    if ok { Ok(()) } else { Err(NameError::Kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_ids() {
        for good in ["local", "gpu-1", "a", "0x"] {
            assert_eq!(validate_engine_id(good), Ok(()), "{good}");
        }
        let long = "a".repeat(64);
        for bad in ["", "-x", "Local", "a/b", "..", "a_b", "a b", long.as_str()] {
            assert_eq!(validate_engine_id(bad), Err(NameError::EngineId), "{bad}");
        }
    }

    #[test]
    fn user_ids_and_kinds() {
        assert_eq!(validate_user_id("0xabc123"), Ok(()));
        assert_eq!(validate_user_id("alice@example.com"), Ok(()));
        assert!(validate_user_id("").is_err());
        assert!(validate_user_id("a b").is_err());
        assert_eq!(validate_kind("echo"), Ok(()));
        assert!(validate_kind("Echo").is_err());
        assert!(validate_kind("").is_err());
    }
}

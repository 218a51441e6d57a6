//! Secrets the gateway issues carry a recognisable prefix and a checksum, so a scanner finds a leaked one with no
//! false positives and the gateway refuses a mistyped or forged one before any database lookup.
//!
//! Random tokens: `<prefix>` + 43 URL-safe base64 characters (256 bits) + 8 hex digits of the CRC-32 of everything
//! before them. Wrapped tokens (admin JWTs): `<prefix>` + the JWT + `.` + the same 8-digit checksum.
//! `scripts/secret-scan.py` recognises exactly these shapes.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Engine tokens.
pub const ENGINE_PREFIX: &str = "fwe_";
/// Refresh tokens.
pub const REFRESH_PREFIX: &str = "fwr_";
/// API keys of users (`POST /auth/keys`).
pub const API_KEY_PREFIX: &str = "fwk_";
/// Admin tokens (a JWT inside).
pub const ADMIN_PREFIX: &str = "fwa_";

/// Characters of the random part of a token.
const BODY_LEN: usize = 43;
/// Hex digits of the checksum.
const CHECKSUM_LEN: usize = 8;

fn checksum(text: &str) -> String {
    format!("{:08x}", crc32fast::hash(text.as_bytes()))
}

/// What a presented token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenShape {
    /// The current format, checksum correct.
    Valid,
    /// Issued before tokens had a checksum (`<prefix>` + 43 characters): still looked up.
    Legacy,
    /// Anything else: refused without a lookup.
    Invalid,
}

/// A new random token with `prefix`.
pub fn mint(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::random();
    let unchecked = format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes));
    let sum = checksum(&unchecked);
    unchecked + &sum
}

/// The shape of a random token presented as `prefix`.
pub fn shape(token: &str, prefix: &str) -> TokenShape {
    let Some(rest) = token.strip_prefix(prefix) else { return TokenShape::Invalid };
    let url_safe = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if rest.len() == BODY_LEN && url_safe(rest) {
        return TokenShape::Legacy;
    }
    if rest.len() != BODY_LEN + CHECKSUM_LEN || !rest.is_char_boundary(BODY_LEN) {
        return TokenShape::Invalid;
    }
    let (body, sum) = rest.split_at(BODY_LEN);
    if url_safe(body) && sum == checksum(&token[..prefix.len() + BODY_LEN]) {
        TokenShape::Valid
    } else {
        TokenShape::Invalid
    }
}

/// Wraps an issued JWT: `<prefix><jwt>.<checksum>`.
pub fn wrap(prefix: &str, inner: &str) -> String {
    let unchecked = format!("{prefix}{inner}");
    let sum = checksum(&unchecked);
    format!("{unchecked}.{sum}")
}

/// The JWT inside a wrapped token, if its prefix and checksum are right.
pub fn unwrap<'a>(token: &'a str, prefix: &str) -> Option<&'a str> {
    let (unchecked, sum) = token.rsplit_once('.')?;
    let inner = unchecked.strip_prefix(prefix)?;
    (sum == checksum(unchecked)).then_some(inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_check_and_any_change_breaks_them() {
        let token = mint(ENGINE_PREFIX);
        assert_eq!(token.len(), 4 + 43 + 8);
        assert_eq!(shape(&token, ENGINE_PREFIX), TokenShape::Valid);
        assert_eq!(shape(&token, REFRESH_PREFIX), TokenShape::Invalid, "another kind of secret");
        for at in [4, 20, token.len() - 1] {
            let mut bytes = token.clone().into_bytes();
            bytes[at] = if bytes[at] == b'a' { b'b' } else { b'a' };
            let changed = String::from_utf8(bytes).unwrap();
            assert_eq!(shape(&changed, ENGINE_PREFIX), TokenShape::Invalid, "{changed}");
        }
        assert_eq!(shape(&token[..token.len() - 1], ENGINE_PREFIX), TokenShape::Invalid);
        assert_eq!(shape("fwe_é", ENGINE_PREFIX), TokenShape::Invalid);
    }

    #[test]
    fn tokens_from_before_checksums_are_recognised_as_legacy() {
        let legacy = format!("fwe_{}", URL_SAFE_NO_PAD.encode([7u8; 32]));
        assert_eq!(shape(&legacy, ENGINE_PREFIX), TokenShape::Legacy);
    }

    #[test]
    fn wrapped_tokens_unwrap_only_with_their_checksum() {
        let wrapped = wrap(ADMIN_PREFIX, "aaa.bbb.ccc");
        assert_eq!(unwrap(&wrapped, ADMIN_PREFIX), Some("aaa.bbb.ccc"));
        assert_eq!(unwrap(&wrapped.replace("bbb", "bbc"), ADMIN_PREFIX), None);
        assert_eq!(unwrap("aaa.bbb.ccc", ADMIN_PREFIX), None, "a bare JWT is not an admin token");
    }

    #[test]
    fn the_checksum_is_the_ieee_crc32_the_scanner_uses() {
        // The standard CRC-32 check value, as Python's zlib.crc32(b"123456789") gives it.
        assert_eq!(checksum("123456789"), "cbf43926");
    }
}

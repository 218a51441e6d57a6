//! Wallet sign-in checks (EIP-4361 message, EIP-191 signature) against the gateway's policy: allowed
//! origins (and so domains and URIs), chain ids, clock skew, validity window, and the signer.
//!
//! Pure: the nonce (the one stateful check) is consumed by the caller after everything here passed, so a
//! forged request cannot burn a real user's nonce.

use flowork_common::eth::{recover_personal_signer, to_checksum_address};
use flowork_common::siwe::{SiweMessage, SiweParseError};

/// How far in the future `Issued At` may be (clock skew between wallet and gateway).
pub const MAX_SKEW_MS: i64 = 60_000;

/// What sign-ins are accepted.
#[derive(Debug, Clone)]
pub struct SignInPolicy {
    /// Allowed GUI origins, normalised (`https://app.example.com`, no trailing slash).
    pub origins: Vec<String>,
    pub chain_ids: Vec<u64>,
    /// How long an issued nonce may be used.
    pub nonce_ttl: std::time::Duration,
    /// Unused, unexpired nonces kept at most, over all clients.
    pub max_nonces: u64,
}

/// Normalises an origin for comparison: lowercase, without a trailing slash.
pub fn normalize_origin(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// Checks a configured GUI origin (`--allowed-origin`): `http` or `https`, a host, an optional port, and nothing
/// else — a browser's `Origin` never has a path, a query or credentials, so such a value could never match.
/// Returns it normalised.
pub fn parse_origin(text: &str) -> Result<String, String> {
    let text = text.trim();
    let url = url::Url::parse(text).map_err(|e| {
        format!("{text:?} is not an origin ({e}); write the scheme, host and port, e.g. https://app.example.com")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{text:?}: an origin is http:// or https://, not {}://", url.scheme()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{text:?} names no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{text:?}: an origin has no user name or password"));
    }
    let after_authority = text.splitn(4, '/').nth(3).unwrap_or("");
    if !after_authority.is_empty() || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{text:?} has a path, query or fragment, which a browser's Origin never has: use {}",
            url.origin().ascii_serialization()
        ));
    }
    Ok(normalize_origin(text))
}

/// A refused sign-in: its machine code and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SignInRefusal {
    pub code: &'static str,
    pub message: String,
}

fn refuse(code: &'static str, message: impl Into<String>) -> SignInRefusal {
    SignInRefusal { code, message: message.into() }
}

/// Checks everything but the nonce; returns the parsed message.
pub fn check_sign_in(
    text: &str,
    signature: &str,
    request_origin: Option<&str>,
    policy: &SignInPolicy,
    now_ms: i64,
) -> Result<SiweMessage, SignInRefusal> {
    let message = SiweMessage::parse(text).map_err(|e| match e {
        SiweParseError::Address => refuse("invalid_address", e.to_string()),
        SiweParseError::Malformed(_) => refuse("malformed_message", e.to_string()),
    })?;
    let origin = request_origin
        .map(normalize_origin)
        .ok_or_else(|| refuse("origin_mismatch", "the request has no Origin header"))?;
    if !policy.origins.contains(&origin) {
        return Err(refuse("origin_mismatch", format!("origin {origin} is not an allowed GUI origin")));
    }
    let (origin_scheme, authority) = origin.split_once("://").unwrap_or(("", &origin));
    // EIP-4361: a scheme in the header must be the origin's, so a page on http:// cannot reuse a message its
    // wallet showed as being for the https:// site.
    if let Some(scheme) = &message.scheme
        && !scheme.eq_ignore_ascii_case(origin_scheme)
    {
        return Err(refuse("scheme_mismatch", format!("the message is for {scheme}://, not {origin_scheme}://")));
    }
    if !message.domain.eq_ignore_ascii_case(authority) {
        return Err(refuse("domain_mismatch", format!("the message is for {}, not {authority}", message.domain)));
    }
    let uri = normalize_origin(&message.uri);
    if uri != origin && !uri.starts_with(&format!("{origin}/")) {
        return Err(refuse("uri_mismatch", format!("the message URI {} is not under {origin}", message.uri)));
    }
    if !policy.chain_ids.contains(&message.chain_id) {
        return Err(refuse("chain_id_not_allowed", format!("chain id {} is not accepted here", message.chain_id)));
    }
    if message.issued_at_ms > now_ms + MAX_SKEW_MS {
        return Err(refuse("issued_in_future", "the message's Issued At is in the future"));
    }
    if message.expiration_ms.is_some_and(|t| t <= now_ms) {
        return Err(refuse("expired_message", "the message's Expiration Time has passed"));
    }
    if message.not_before_ms.is_some_and(|t| t > now_ms) {
        return Err(refuse("message_not_yet_valid", "the message's Not Before is still ahead"));
    }
    let signer =
        recover_personal_signer(text.as_bytes(), signature).map_err(|e| refuse("bad_signature", e.to_string()))?;
    if signer != message.address_bytes {
        return Err(refuse(
            "bad_signature",
            format!("the message was signed by {}, not by {}", to_checksum_address(&signer), message.address),
        ));
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowork_common::eth::{address_of, personal_sign};
    use flowork_common::timefmt::format_ms;
    use k256::ecdsa::SigningKey;

    const NOW: i64 = 1_795_600_000_000;

    #[test]
    fn an_allowed_origin_is_scheme_host_and_port_only() {
        assert_eq!(parse_origin("https://App.Example.com/").as_deref(), Ok("https://app.example.com"));
        assert_eq!(parse_origin("http://127.0.0.1:5173").as_deref(), Ok("http://127.0.0.1:5173"));
        for (bad, says) in [
            ("app.example.com", "not an origin"),
            ("ftp://app.example.com", "http:// or https://"),
            ("https://app.example.com/gui", "path, query or fragment"),
            ("https://app.example.com?x=1", "path, query or fragment"),
            ("https://user:pw@app.example.com", "no user name"),
            ("", "not an origin"),
        ] {
            let error = parse_origin(bad).expect_err(bad);
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    fn policy() -> SignInPolicy {
        SignInPolicy {
            origins: vec!["https://app.example.com".into()],
            chain_ids: vec![1, 10],
            nonce_ttl: std::time::Duration::from_secs(300),
            max_nonces: 10,
        }
    }

    fn message(key: &SigningKey, edit: impl Fn(String) -> String) -> String {
        let address = to_checksum_address(&address_of(key.verifying_key()));
        edit(format!(
            "app.example.com wants you to sign in with your Ethereum account:\n{address}\n\nSign in to Flowork.\n\n\
             URI: https://app.example.com/\nVersion: 1\nChain ID: 1\nNonce: abcdef0123456789\nIssued At: {}\n\
             Expiration Time: {}",
            format_ms(NOW - 1_000),
            format_ms(NOW + 300_000)
        ))
    }

    fn check(text: &str, key: &SigningKey, origin: Option<&str>) -> Result<SiweMessage, &'static str> {
        let signature = personal_sign(key, text.as_bytes()).unwrap();
        check_sign_in(text, &signature, origin, &policy(), NOW).map_err(|e| e.code)
    }

    #[test]
    fn a_good_sign_in_passes() {
        let key = SigningKey::from_slice(&[3u8; 32]).unwrap();
        let m = check(&message(&key, |m| m), &key, Some("https://app.example.com")).unwrap();
        assert_eq!(m.address_bytes, address_of(key.verifying_key()));
        let with_scheme = message(&key, |m| m.replace("app.example.com wants", "HTTPS://app.example.com wants"));
        assert_eq!(
            check(&with_scheme, &key, Some("https://app.example.com")).unwrap().scheme.as_deref(),
            Some("HTTPS")
        );
    }

    #[test]
    fn every_rule_has_its_refusal() {
        let key = SigningKey::from_slice(&[3u8; 32]).unwrap();
        let origin = Some("https://app.example.com");
        let cases: Vec<(String, Option<&str>, &str)> = vec![
            (message(&key, |m| m.replace("app.example.com wants", "evil.example wants")), origin, "domain_mismatch"),
            (message(&key, |m| m), Some("https://evil.example"), "origin_mismatch"),
            (message(&key, |m| m), None, "origin_mismatch"),
            (
                message(&key, |m| m.replace("URI: https://app.example.com/", "URI: https://evil.example/")),
                origin,
                "uri_mismatch",
            ),
            (message(&key, |m| m.replace("Chain ID: 1", "Chain ID: 5")), origin, "chain_id_not_allowed"),
            (
                message(&key, |m| m.replace(&format_ms(NOW - 1_000), &format_ms(NOW + 120_000))),
                origin,
                "issued_in_future",
            ),
            (message(&key, |m| m.replace(&format_ms(NOW + 300_000), &format_ms(NOW - 1))), origin, "expired_message"),
            (
                message(&key, |m| {
                    format!("{m}\nNot Before: {}", format_ms(NOW + 60_000))
                        .replace("Expiration Time", "Expiration Time")
                }),
                origin,
                "message_not_yet_valid",
            ),
            (message(&key, |m| m.replace("Version: 1", "Version: 9")), origin, "malformed_message"),
            (
                message(&key, |m| m.replace("app.example.com wants", "http://app.example.com wants")),
                origin,
                "scheme_mismatch",
            ),
        ];
        for (text, origin, code) in cases {
            assert_eq!(check(&text, &key, origin).unwrap_err(), code, "{text}");
        }
        // Signed by another key.
        let other = SigningKey::from_slice(&[4u8; 32]).unwrap();
        let text = message(&key, |m| m);
        let signature = personal_sign(&other, text.as_bytes()).unwrap();
        assert_eq!(check_sign_in(&text, &signature, origin, &policy(), NOW).unwrap_err().code, "bad_signature");
        // Signature over another text.
        let signature = personal_sign(&key, b"something else").unwrap();
        assert_eq!(check_sign_in(&text, &signature, origin, &policy(), NOW).unwrap_err().code, "bad_signature");
        assert_eq!(check_sign_in(&text, "0xdead", origin, &policy(), NOW).unwrap_err().code, "bad_signature");
    }
}

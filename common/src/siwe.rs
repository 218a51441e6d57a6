//! EIP-4361 (Sign-In with Ethereum) messages: a strict parser of the text a wallet signs.
//!
//! The format is line-based and fixed (see the ABNF in EIP-4361): a header naming the domain, the account
//! address, an optional statement, then tagged fields in a fixed order. Anything else is refused.

use thiserror::Error;

use crate::eth::parse_checksum_address;
use crate::timefmt::parse_ms;

const HEADER_SUFFIX: &str = " wants you to sign in with your Ethereum account:";

/// A parsed sign-in message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiweMessage {
    /// The URI scheme before the domain (`https` in `https://example.com wants you…`), when the message has one;
    /// it must then be the scheme of the origin asking (EIP-4361).
    pub scheme: Option<String>,
    /// `host[:port]` of the site asking for the sign-in.
    pub domain: String,
    /// The account, as written (EIP-55 checksummed).
    pub address: String,
    pub address_bytes: [u8; 20],
    pub statement: Option<String>,
    pub uri: String,
    pub version: String,
    pub chain_id: u64,
    pub nonce: String,
    pub issued_at_ms: i64,
    pub expiration_ms: Option<i64>,
    pub not_before_ms: Option<i64>,
    pub request_id: Option<String>,
    pub resources: Vec<String>,
}

/// Why a message is not a valid EIP-4361 message.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SiweParseError {
    #[error("not an EIP-4361 message: {0}")]
    Malformed(String),
    #[error("the address must be an EIP-55 checksummed Ethereum address")]
    Address,
}

fn malformed(what: impl Into<String>) -> SiweParseError {
    SiweParseError::Malformed(what.into())
}

fn tagged<'a>(line: Option<&'a str>, tag: &str) -> Result<&'a str, SiweParseError> {
    line.and_then(|l| l.strip_prefix(tag)).ok_or_else(|| malformed(format!("expected a line starting with {tag:?}")))
}

fn timestamp(text: &str, field: &str) -> Result<i64, SiweParseError> {
    parse_ms(text).ok_or_else(|| malformed(format!("{field} is not an RFC 3339 timestamp")))
}

impl SiweMessage {
    /// Parses the exact text that was signed.
    pub fn parse(text: &str) -> Result<Self, SiweParseError> {
        if text.contains('\r') {
            return Err(malformed("lines must end with LF only"));
        }
        let mut lines = text.split('\n').peekable();
        let header = lines.next().ok_or_else(|| malformed("empty"))?;
        let origin =
            header.strip_suffix(HEADER_SUFFIX).ok_or_else(|| malformed("the first line is not the sign-in header"))?;
        let (scheme, domain) = match origin.split_once("://") {
            Some((scheme, domain)) => (Some(scheme.to_string()), domain.to_string()),
            None => (None, origin.to_string()),
        };
        // RFC 3986: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
        if let Some(scheme) = &scheme
            && !(scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)))
        {
            return Err(malformed("invalid scheme"));
        }
        if domain.is_empty() || domain.contains(char::is_whitespace) || domain.contains('/') {
            return Err(malformed("invalid domain"));
        }
        let address = lines.next().ok_or_else(|| malformed("missing address"))?.to_string();
        let address_bytes = parse_checksum_address(&address).ok_or(SiweParseError::Address)?;
        if lines.next() != Some("") {
            return Err(malformed("expected an empty line after the address"));
        }
        // Either "<statement>", "" or just "" (writers differ on the blank line of an absent statement).
        let mut statement = None;
        match lines.peek().copied() {
            Some("") => {
                lines.next();
                if lines.peek() == Some(&"") {
                    lines.next();
                }
            }
            Some(line) if !line.starts_with("URI: ") => {
                statement = Some(line.to_string());
                lines.next();
                if lines.next() != Some("") {
                    return Err(malformed("expected an empty line after the statement"));
                }
            }
            _ => {}
        }
        let uri = tagged(lines.next(), "URI: ")?.to_string();
        let version = tagged(lines.next(), "Version: ")?.to_string();
        if version != "1" {
            return Err(malformed("only Version: 1 exists"));
        }
        let chain_id: u64 =
            tagged(lines.next(), "Chain ID: ")?.parse().map_err(|_| malformed("Chain ID must be a number"))?;
        let nonce = tagged(lines.next(), "Nonce: ")?.to_string();
        if nonce.len() < 8 || !nonce.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(malformed("the nonce must be at least 8 letters or digits"));
        }
        let issued_at_ms = timestamp(tagged(lines.next(), "Issued At: ")?, "Issued At")?;
        let mut message = Self {
            scheme,
            domain,
            address,
            address_bytes,
            statement,
            uri,
            version,
            chain_id,
            nonce,
            issued_at_ms,
            expiration_ms: None,
            not_before_ms: None,
            request_id: None,
            resources: Vec::new(),
        };
        let mut line = lines.next();
        if let Some(value) = line.and_then(|l| l.strip_prefix("Expiration Time: ")) {
            message.expiration_ms = Some(timestamp(value, "Expiration Time")?);
            line = lines.next();
        }
        if let Some(value) = line.and_then(|l| l.strip_prefix("Not Before: ")) {
            message.not_before_ms = Some(timestamp(value, "Not Before")?);
            line = lines.next();
        }
        if let Some(value) = line.and_then(|l| l.strip_prefix("Request ID: ")) {
            message.request_id = Some(value.to_string());
            line = lines.next();
        }
        if line == Some("Resources:") {
            line = lines.next();
            while let Some(resource) = line.and_then(|l| l.strip_prefix("- ")) {
                message.resources.push(resource.to_string());
                line = lines.next();
            }
        }
        match line {
            None => Ok(message),
            Some(extra) => Err(malformed(format!("unexpected line {extra:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = "example.com wants you to sign in with your Ethereum account:
0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed

Sign in to Flowork.

URI: https://example.com/login
Version: 1
Chain ID: 1
Nonce: 32891756abcdef00
Issued At: 2026-11-25T13:00:00.000Z
Expiration Time: 2026-11-25T13:10:00.000Z
Not Before: 2026-11-25T12:59:00Z
Request ID: req-1
Resources:
- https://example.com/a
- ipfs://bafy";

    #[test]
    fn parses_every_field() {
        let m = SiweMessage::parse(FULL).unwrap();
        assert_eq!(m.domain, "example.com");
        assert_eq!(m.statement.as_deref(), Some("Sign in to Flowork."));
        assert_eq!((m.chain_id, m.nonce.as_str(), m.version.as_str()), (1, "32891756abcdef00", "1"));
        assert_eq!(m.expiration_ms, parse_ms("2026-11-25T13:10:00Z"));
        assert_eq!(m.request_id.as_deref(), Some("req-1"));
        assert_eq!(m.resources, vec!["https://example.com/a", "ipfs://bafy"]);
    }

    #[test]
    fn accepts_a_message_without_statement_or_optional_fields() {
        for blank in ["\n\n", "\n\n\n"] {
            let text = format!(
                "http://127.0.0.1:8080 wants you to sign in with your Ethereum account:\n\
                 0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed{blank}URI: http://127.0.0.1:8080\nVersion: 1\n\
                 Chain ID: 5\nNonce: abcdefgh12\nIssued At: 2026-11-25T13:00:00Z"
            );
            let m = SiweMessage::parse(&text).unwrap();
            assert_eq!((m.scheme.as_deref(), m.domain.as_str()), (Some("http"), "127.0.0.1:8080"));
            assert_eq!(m.statement, None);
        }
    }

    #[test]
    fn refuses_anything_off_format() {
        let cases = [
            FULL.replace("wants you to sign in", "would like you to sign in"),
            FULL.replace("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed"),
            FULL.replace("Version: 1", "Version: 2"),
            FULL.replace("Chain ID: 1", "Chain ID: one"),
            FULL.replace("Nonce: 32891756abcdef00", "Nonce: short"),
            FULL.replace("Nonce: 32891756abcdef00", "Nonce: has-dashes-in-it"),
            FULL.replace("Issued At: 2026-11-25T13:00:00.000Z", "Issued At: yesterday"),
            FULL.replace('\n', "\r\n"),
            format!("{FULL}\ntrailing"),
            FULL.replace("URI: ", "Uri: "),
            FULL.replace("example.com wants", "://example.com wants"),
            FULL.replace("example.com wants", "1http://example.com wants"),
            FULL.replace("example.com wants", "ht tp://example.com wants"),
            String::new(),
        ];
        for case in cases {
            assert!(SiweMessage::parse(&case).is_err(), "accepted:\n{case}");
        }
    }
}

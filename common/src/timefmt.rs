//! RFC 3339 timestamps with millisecond precision in UTC, the one time format of the API.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

/// Formats Unix milliseconds as `2026-11-25T13:50:34.123Z`.
pub fn format_ms(ms: i64) -> String {
    let format = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".to_string())
}

/// Parses any RFC 3339 timestamp (any offset) into Unix milliseconds.
pub fn parse_ms(text: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(text, &Rfc3339).ok()?.to_offset(UtcOffset::UTC);
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let ms = 1_795_000_000_123;
        let text = format_ms(ms);
        assert!(text.ends_with(".123Z"), "{text}");
        assert_eq!(parse_ms(&text), Some(ms));
        assert_eq!(parse_ms("2026-01-01T01:00:00+01:00"), parse_ms("2026-01-01T00:00:00Z"));
        assert_eq!(parse_ms("yesterday"), None);
        assert_eq!(parse_ms("2026-13-01T00:00:00Z"), None);
    }
}

//! RFC 3339 timestamps with millisecond precision in UTC, the one time format of the API.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

/// Formats Unix milliseconds as `2026-11-25T13:50:34.123Z`.
///
/// The calendar comes from `time`; the digits are written here, because `time`'s general formatter costs about
/// 2,000 instructions a timestamp and every job the store hands out carries three or four of them.
pub fn format_ms(ms: i64) -> String {
    let Ok(t) = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) else {
        return EPOCH.to_string();
    };
    let year = t.year();
    if !(0..=9999).contains(&year) {
        // Outside four-digit years: the general formatter (a sign and more digits).
        let format = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
        return t.format(&format).unwrap_or_else(|_| EPOCH.to_string());
    }
    let mut out = String::with_capacity(24);
    let mut digits = |value: u32, width: u32, after: Option<char>| {
        for place in (0..width).rev() {
            out.push(char::from(b'0' + (value / 10u32.pow(place) % 10) as u8));
        }
        if let Some(separator) = after {
            out.push(separator);
        }
    };
    digits(year as u32, 4, Some('-'));
    digits(u32::from(u8::from(t.month())), 2, Some('-'));
    digits(u32::from(t.day()), 2, Some('T'));
    digits(u32::from(t.hour()), 2, Some(':'));
    digits(u32::from(t.minute()), 2, Some(':'));
    digits(u32::from(t.second()), 2, Some('.'));
    digits(u32::from(t.millisecond()), 3, Some('Z'));
    out
}

/// What an unrepresentable instant is written as.
const EPOCH: &str = "1970-01-01T00:00:00.000Z";

/// Parses any RFC 3339 timestamp (any offset) into Unix milliseconds.
pub fn parse_ms(text: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(text, &Rfc3339).ok()?.to_offset(UtcOffset::UTC);
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_the_general_formatter() {
        let format = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
        for ms in
            [0, 1, 999, 1_000, 59_999, 951_782_400_000, 1_795_000_000_123, 4_102_444_799_999, -1, -62_135_596_800_000]
        {
            let general =
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap().format(&format).unwrap();
            assert_eq!(format_ms(ms), general, "{ms}");
        }
        assert_eq!(format_ms(1_795_000_000_123), "2026-11-18T11:06:40.123Z");
        assert_eq!(format_ms(i64::MAX), EPOCH);
    }

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

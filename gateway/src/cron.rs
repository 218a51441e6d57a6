//! Cron expressions in a time zone: parsing (croner, with jiff's time-zone database) and the next tick.

use croner::parser::{CronParser, Seconds, Year};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use thiserror::Error;

/// Why a schedule's expression or zone was refused.
#[derive(Debug, Error)]
pub enum CronError {
    #[error("invalid cron expression {expr:?}: {reason}")]
    Expression { expr: String, reason: String },
    #[error("unknown time zone {0:?}: use an IANA name such as \"UTC\" or \"Europe/Berlin\"")]
    TimeZone(String),
    #[error("the cron expression {0:?} never fires")]
    Never(String),
}

/// A parsed cron expression in an IANA time zone: 5 fields (minute hour day-of-month month day-of-week), 6 with
/// seconds first, or a nickname (`@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly` / `@annually`). croner
/// would also take a 7th field (the year); it is refused so that what is accepted is what the README documents.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: croner::Cron,
    zone: TimeZone,
}

impl CronSchedule {
    /// Parses an expression and a zone.
    pub fn parse(expr: &str, zone: &str) -> Result<Self, CronError> {
        if expr.len() > 200 {
            return Err(CronError::Expression { expr: expr.chars().take(40).collect(), reason: "too long".into() });
        }
        let refuse = |reason: String| CronError::Expression { expr: expr.to_string(), reason };
        let fields = expr.split_whitespace().count();
        if !expr.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
            return Err(refuse(format!(
                "it has {fields} fields; use 5 (minute hour day-of-month month day-of-week), 6 with seconds first, or \
                 @hourly, @daily, @weekly, @monthly, @yearly"
            )));
        }
        let parser = CronParser::builder().seconds(Seconds::Optional).year(Year::Disallowed).build();
        let cron = parser.parse(expr).map_err(|e| refuse(e.to_string()))?;
        let zone = TimeZone::get(zone).map_err(|_| CronError::TimeZone(zone.to_string()))?;
        Ok(Self { cron, zone })
    }

    /// The first tick after `now_ms`, or why there is none.
    pub fn first_after(&self, now_ms: i64) -> Result<i64, CronError> {
        self.next_after(now_ms).ok_or_else(|| CronError::Never(self.cron.as_str().to_string()))
    }

    /// The first tick strictly after `ms` (Unix milliseconds), if any.
    pub fn next_after(&self, ms: i64) -> Option<i64> {
        let start = Timestamp::from_millisecond(ms).ok()?.to_zoned(self.zone.clone());
        let next = self.cron.find_next_occurrence(&start, false).ok()?;
        Some(next.timestamp().as_millisecond())
    }

    /// The last tick strictly before `ms`, if any.
    pub fn previous_before(&self, ms: i64) -> Option<i64> {
        let start = Timestamp::from_millisecond(ms).ok()?.to_zoned(self.zone.clone());
        let previous = self.cron.find_previous_occurrence(&start, false).ok()?;
        Some(previous.timestamp().as_millisecond())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JAN_1_2026: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    #[test]
    fn five_fields_tick_on_the_minute() {
        let every5 = CronSchedule::parse("*/5 * * * *", "UTC").unwrap();
        assert_eq!(every5.next_after(JAN_1_2026), Some(JAN_1_2026 + 5 * 60_000));
        assert_eq!(every5.next_after(JAN_1_2026 + 1), Some(JAN_1_2026 + 5 * 60_000));
    }

    #[test]
    fn what_is_accepted_is_what_the_readme_says() {
        for accepted in
            ["*/5 * * * *", "0 */5 * * * *", "@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually"]
        {
            assert!(CronSchedule::parse(accepted, "UTC").is_ok(), "{accepted}");
        }
        let hourly = CronSchedule::parse("@hourly", "UTC").unwrap();
        assert_eq!(hourly.next_after(JAN_1_2026), Some(JAN_1_2026 + 3_600_000));
        for refused in ["0 0 0 1 1 * 2030", "* * * *", "* * * * * * * *", "@reboot", "@every 5m", ""] {
            match CronSchedule::parse(refused, "UTC") {
                Err(CronError::Expression { reason, .. }) => assert!(!reason.is_empty(), "{refused}"),
                other => panic!("{refused:?} gave {other:?}"),
            }
        }
        let Err(seven) = CronSchedule::parse("0 0 0 1 1 * 2030", "UTC") else { panic!("a 7-field form passed") };
        assert!(seven.to_string().contains("7 fields") && seven.to_string().contains("6 with seconds"), "{seven}");
    }

    #[test]
    fn six_fields_tick_on_seconds() {
        let every_second = CronSchedule::parse("* * * * * *", "UTC").unwrap();
        assert_eq!(every_second.next_after(JAN_1_2026 + 10), Some(JAN_1_2026 + 1_000));
    }

    #[test]
    fn the_zone_moves_the_tick() {
        // 09:00 in Berlin on 1 January is 08:00 UTC.
        let nine = CronSchedule::parse("0 9 * * *", "Europe/Berlin").unwrap();
        assert_eq!(nine.next_after(JAN_1_2026), Some(JAN_1_2026 + 8 * 3_600_000));
    }

    #[test]
    fn bad_input_says_why() {
        let bad = CronSchedule::parse("61 * * * *", "UTC").unwrap_err();
        assert!(matches!(bad, CronError::Expression { .. }), "{bad}");
        let zone = CronSchedule::parse("* * * * *", "Mars/Olympus").unwrap_err();
        assert!(matches!(zone, CronError::TimeZone(_)), "{zone}");
        assert!(CronSchedule::parse("not cron", "UTC").is_err());
    }
}

//! Time helpers: milliseconds since the epoch (UTC) everywhere in storage, RFC 3339
//! on the wire, and Jesse's date convention for backtest ranges.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};

pub const MINUTE_MS: i64 = 60_000;
pub const DAY_MS: i64 = 86_400_000;

pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

pub fn to_rfc3339(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

/// Parses a backtest date (`YYYY-MM-DD`, or an RFC 3339 instant) and floors it to
/// 00:00 UTC of its day, as Jesse's own loader does for both ends of a range.
pub fn parse_day(value: &str) -> Result<i64, String> {
    let day = if let Ok(date) = NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        date
    } else if let Ok(instant) = DateTime::parse_from_rfc3339(value) {
        instant.with_timezone(&Utc).date_naive()
    } else {
        return Err(format!(
            "'{value}' is not a date; use YYYY-MM-DD (UTC), e.g. 2024-01-31"
        ));
    };
    // Crypto markets have no candles before 2009, and a far-future date would
    // size work (and buffers) by an absurd span: both are mistakes to name.
    let (first, last) = (
        NaiveDate::from_ymd_opt(1970, 1, 1).expect("a date"),
        NaiveDate::from_ymd_opt(2200, 12, 31).expect("a date"),
    );
    if day < first || day > last {
        return Err(format!(
            "'{value}' is outside the dates this service accepts (1970-01-01 to 2200-12-31)"
        ));
    }
    Ok(day
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
        .timestamp_millis())
}

/// Parses a candle timestamp: integer milliseconds since the epoch, or an ISO-8601
/// instant in UTC (`2024-01-01T00:00:00Z`, `2024-01-01 00:00:00`, `2024-01-01T00:00`).
pub fn parse_candle_timestamp(value: &str) -> Result<i64, String> {
    let value = value.trim();
    if let Ok(ms) = value.parse::<i64>() {
        return Ok(ms);
    }
    if let Ok(instant) = DateTime::parse_from_rfc3339(value) {
        return Ok(instant.timestamp_millis());
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(naive) = chrono::NaiveDateTime::parse_from_str(value, format) {
            return Ok(naive.and_utc().timestamp_millis());
        }
    }
    Err(format!(
        "timestamp '{value}' is neither milliseconds since the epoch nor an ISO-8601 UTC time"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_dates_are_refused() {
        assert!(parse_day("+262142-12-31").unwrap_err().contains("outside"));
        assert!(parse_day("1969-12-31").is_err());
        assert_eq!(parse_day("1970-01-01"), Ok(0));
        assert!(parse_day("2200-12-31").is_ok());
    }

    #[test]
    fn days_floor_to_midnight() {
        assert_eq!(parse_day("2024-01-02").unwrap(), 1_704_153_600_000);
        assert_eq!(
            parse_day("2024-01-02T13:45:00Z").unwrap(),
            1_704_153_600_000
        );
        assert!(parse_day("02/01/2024").is_err());
    }

    #[test]
    fn candle_timestamps() {
        assert_eq!(
            parse_candle_timestamp("1704153600000").unwrap(),
            1_704_153_600_000
        );
        assert_eq!(
            parse_candle_timestamp("2024-01-02T00:01:00Z").unwrap(),
            1_704_153_660_000
        );
        assert_eq!(
            parse_candle_timestamp("2024-01-02 00:01:00").unwrap(),
            1_704_153_660_000
        );
        assert!(parse_candle_timestamp("yesterday").is_err());
    }
}

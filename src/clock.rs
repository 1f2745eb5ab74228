//! Time, injectable so tests can move it. Timestamps are Unix milliseconds everywhere inside;
//! they are rendered as RFC 3339 only at the edges. Order never comes from timestamps (a
//! wall-clock jump must not reorder anything): the outbox orders by a SQLite sequence.

use std::sync::Arc;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
}

pub type SharedClock = Arc<dyn Clock>;

#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
    }
}

pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// RFC 3339 in UTC, e.g. `2026-11-23T09:32:08.123Z`.
pub fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// A Smaregi-style stamp, `YYYY-MM-DDThh:mm:ss+09:00` (whole seconds, as its
/// `updDateTime` and its date-window filters are written; DESIGN.md §4).
pub fn smaregi_stamp(ms: i64) -> String {
    let offset = time::UtcOffset::from_hms(9, 0, 0).expect("valid offset");
    OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| {
            t.to_offset(offset)
                .format(&time::macros::format_description!(
                    "[year]-[month]-[day]T[hour]:[minute]:[second]+09:00"
                ))
                .ok()
        })
        .unwrap_or_default()
}

/// Milliseconds since the epoch of an upstream stamp (RFC 3339 / ISO 8601 with an offset,
/// whole or fractional seconds); `None` if it is not one.
pub fn parse_stamp(s: &str) -> Option<i64> {
    OffsetDateTime::parse(s.trim(), &Rfc3339)
        .ok()
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// Smaregi is a Japanese service: its expiry dates are calendar dates in JST.
pub fn jst_date(ms: i64) -> String {
    let offset = time::UtcOffset::from_hms(9, 0, 0).expect("valid offset");
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .map(|t| t.to_offset(offset).date().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::jst_date(15 * 3600 * 1000), "1970-01-02");
        assert_eq!(super::smaregi_stamp(1_500), "1970-01-01T09:00:01+09:00");
        assert_eq!(super::parse_stamp("1970-01-01T09:00:01+09:00"), Some(1_000));
        assert_eq!(
            super::parse_stamp("2026-11-01T10:00:00.250Z"),
            Some(1_793_527_200_250)
        );
        assert_eq!(super::parse_stamp("2026-11-01 10:00:00"), None);
    }
}

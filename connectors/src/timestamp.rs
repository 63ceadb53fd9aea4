//! Parsing and formatting of UTC timestamps as microseconds since the Unix epoch.
//!
//! Hand-written so that the accepted syntax is exactly what the decoders document and does not
//! drift with dependency upgrades. Calendar math uses the proleptic Gregorian calendar.

use crate::schema::EpochUnit;
use std::fmt::Write as _;

const MICROS_PER_SECOND: i64 = 1_000_000;
const SECONDS_PER_DAY: i64 = 86_400;

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    // Shift the year so that it starts in March: the leap day is then the last day of the year.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let m = i64::from(month);
    let shifted_month = if m > 2 { m - 3 } else { m + 9 };
    let day_of_year = (153 * shifted_month + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Civil date (year, month, day) of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // Both casts are in range by construction (1..=12 and 1..=31).
    (year, month as u32, day as u32)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        _ => 28,
    }
}

/// A cursor over ASCII bytes with fixed-width digit readers.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn digits(&mut self, width: usize) -> Option<u32> {
        let end = self.pos.checked_add(width)?;
        let slice = self.bytes.get(self.pos..end)?;
        let mut value = 0u32;
        for &b in slice {
            if !b.is_ascii_digit() {
                return None;
            }
            value = value * 10 + u32::from(b - b'0');
        }
        self.pos = end;
        Some(value)
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Some(())
        } else {
            None
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }
}

/// Parses an RFC 3339 timestamp to microseconds since the epoch (UTC).
///
/// Accepted: `YYYY-MM-DD[T| ]hh:mm:ss[.f{1,9}][Z|±hh:mm|±hhmm|±hh]`; without an offset the time
/// is taken as UTC. Digits beyond microseconds are truncated. Returns `None` for anything else.
pub fn parse_rfc3339_micros(text: &str) -> Option<i64> {
    let mut c = Cursor {
        bytes: text.as_bytes(),
        pos: 0,
    };
    let year = c.digits(4)?;
    c.expect(b'-')?;
    let month = c.digits(2)?;
    c.expect(b'-')?;
    let day = c.digits(2)?;
    match c.peek() {
        Some(b'T' | b't' | b' ') => c.pos += 1,
        _ => return None,
    }
    let hour = c.digits(2)?;
    c.expect(b':')?;
    let minute = c.digits(2)?;
    c.expect(b':')?;
    let second = c.digits(2)?;
    let year = i64::from(year);
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }

    let mut micros = 0i64;
    if c.peek() == Some(b'.') {
        c.pos += 1;
        let mut count = 0;
        while let Some(b) = c.peek().filter(u8::is_ascii_digit) {
            if count < 6 {
                micros = micros * 10 + i64::from(b - b'0');
            }
            count += 1;
            c.pos += 1;
        }
        if count == 0 || count > 9 {
            return None;
        }
        for _ in count..6 {
            micros *= 10;
        }
    }

    let offset_seconds: i64 = match c.peek() {
        None => 0,
        Some(b'Z' | b'z') => {
            c.pos += 1;
            0
        }
        Some(sign @ (b'+' | b'-')) => {
            c.pos += 1;
            let oh = c.digits(2)?;
            let om = if c.peek() == Some(b':') {
                c.pos += 1;
                c.digits(2)?
            } else if c.peek().is_some() {
                c.digits(2)?
            } else {
                0
            };
            if oh > 23 || om > 59 {
                return None;
            }
            let magnitude = i64::from(oh * 3600 + om * 60);
            if sign == b'-' {
                -magnitude
            } else {
                magnitude
            }
        }
        Some(_) => return None,
    };
    if c.pos != c.bytes.len() {
        return None;
    }

    let days = days_from_civil(year, month, day);
    let seconds =
        days * SECONDS_PER_DAY + i64::from(hour * 3600 + minute * 60 + second) - offset_seconds;
    Some(seconds * MICROS_PER_SECOND + micros)
}

/// Parses a timestamp given as text: RFC 3339 (see [`parse_rfc3339_micros`]) or an integer
/// number of `unit`s since the epoch.
pub(crate) fn parse_text_micros(text: &str, unit: EpochUnit) -> Option<i64> {
    let trimmed = text.trim();
    if let Ok(value) = trimmed.parse::<i64>() {
        return unit.to_micros(value);
    }
    parse_rfc3339_micros(trimmed)
}

/// Formats epoch microseconds as RFC 3339 UTC with a `Z` suffix, e.g.
/// `2026-01-01T00:00:00Z`, `2026-01-01T00:00:00.120Z` or `2026-01-01T00:00:00.123456Z`:
/// milliseconds when the value is whole milliseconds, microseconds when needed.
pub(crate) fn format_micros(micros: i64, out: &mut String) {
    let seconds = micros.div_euclid(MICROS_PER_SECOND);
    let fraction = micros.rem_euclid(MICROS_PER_SECOND);
    let days = seconds.div_euclid(SECONDS_PER_DAY);
    let second_of_day = seconds.rem_euclid(SECONDS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        second_of_day / 3600,
        (second_of_day / 60) % 60,
        second_of_day % 60
    );
    if fraction != 0 {
        if fraction % 1000 == 0 {
            let _ = write!(out, ".{:03}", fraction / 1000);
        } else {
            let _ = write!(out, ".{fraction:06}");
        }
    }
    out.push('Z');
}

/// Convenience wrapper around [`format_micros`] returning a new string.
pub(crate) fn micros_to_string(micros: i64) -> String {
    let mut out = String::with_capacity(27);
    format_micros(micros, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const JAN_1_2026: i64 = 1_767_225_600 * MICROS_PER_SECOND;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(
            parse_rfc3339_micros("2026-01-01T00:00:00Z"),
            Some(JAN_1_2026)
        );
        assert_eq!(
            parse_rfc3339_micros("2026-01-01T00:00:00.123+02:00"),
            Some(JAN_1_2026 + 123_000 - 2 * 3600 * MICROS_PER_SECOND)
        );
        assert_eq!(
            parse_rfc3339_micros("2026-01-01 00:00:00.5"),
            Some(JAN_1_2026 + 500_000)
        );
        assert_eq!(
            parse_rfc3339_micros("2026-01-01 00:00:00"),
            Some(JAN_1_2026)
        );
        assert_eq!(
            parse_rfc3339_micros("2026-01-01T01:30:00-0130"),
            Some(JAN_1_2026 + 3 * 3600 * MICROS_PER_SECOND)
        );
        assert_eq!(
            parse_rfc3339_micros("2026-01-01T00:00:00.123456789Z"),
            Some(JAN_1_2026 + 123_456)
        );
        assert_eq!(parse_rfc3339_micros("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_micros("1969-12-31T23:59:59.999999Z"),
            Some(-1)
        );
        assert_eq!(
            parse_text_micros("1767225600000", EpochUnit::Ms),
            Some(JAN_1_2026)
        );
        assert_eq!(
            parse_text_micros("1767225600", EpochUnit::S),
            Some(JAN_1_2026)
        );
        assert_eq!(
            parse_text_micros("1767225600000000", EpochUnit::Us),
            Some(JAN_1_2026)
        );
        assert_eq!(
            parse_text_micros("1767225600000000999", EpochUnit::Ns),
            Some(JAN_1_2026)
        );
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in [
            "",
            "2026-01-01",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00:00Zjunk",
            "2026-01-01T00:00:00+25:00",
            "not a time",
            "2026-1-01T00:00:00Z",
        ] {
            assert_eq!(
                parse_rfc3339_micros(bad),
                None,
                "{bad:?} should be rejected"
            );
        }
        assert!(parse_rfc3339_micros("2024-02-29T00:00:00Z").is_some());
        assert_eq!(
            parse_text_micros("9223372036854775807", EpochUnit::Ms),
            None
        );
    }

    #[test]
    fn formats_and_roundtrips() {
        assert_eq!(micros_to_string(JAN_1_2026), "2026-01-01T00:00:00Z");
        assert_eq!(
            micros_to_string(JAN_1_2026 + 120_000),
            "2026-01-01T00:00:00.120Z"
        );
        assert_eq!(
            micros_to_string(JAN_1_2026 + 7),
            "2026-01-01T00:00:00.000007Z"
        );
        assert_eq!(micros_to_string(-1), "1969-12-31T23:59:59.999999Z");
        let mut t = -5_000_000_000_000_000i64;
        while t < 5_000_000_000_000_000 {
            let text = micros_to_string(t);
            assert_eq!(parse_rfc3339_micros(&text), Some(t), "{text}");
            t += 7_777_777_777_777;
        }
    }
}

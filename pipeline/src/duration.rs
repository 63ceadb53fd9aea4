//! Human-written durations in configs: `250ms`, `10s`, `5 minutes`, `1h`, `7 days`.

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;

/// A non-negative duration with microsecond resolution.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration {
    micros: i64,
}

impl Duration {
    /// From microseconds.
    pub fn from_micros(micros: i64) -> Self {
        Duration { micros }
    }

    /// Microseconds.
    pub fn as_micros(&self) -> i64 {
        self.micros
    }

    /// Parses `<number>[ ]<unit>`; a bare `0` is zero. Units: us, ms, s, m, h, d and their
    /// long forms (seconds, minutes, hours, days, singular or plural).
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (number, unit) = t.split_at(split);
        let value: f64 = number.parse().map_err(|_| {
            format!("`{text}` is not a duration: expected e.g. `30s`, `5 minutes`, `1h`")
        })?;
        let unit_micros: f64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" if value == 0.0 => 0.0,
            "us" | "µs" | "micros" | "microsecond" | "microseconds" => 1.0,
            "ms" | "millis" | "millisecond" | "milliseconds" => 1e3,
            "s" | "sec" | "secs" | "second" | "seconds" => 1e6,
            "m" | "min" | "mins" | "minute" | "minutes" => 60e6,
            "h" | "hr" | "hour" | "hours" => 3600e6,
            "d" | "day" | "days" => 86_400e6,
            other => {
                return Err(format!(
                    "`{text}` has unknown unit `{other}`: use us, ms, s, m, h or d (e.g. `30s`)"
                ))
            }
        };
        Ok(Duration {
            micros: (value * unit_micros).round() as i64,
        })
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.micros;
        if m != 0 && m % 1_000_000 == 0 {
            write!(f, "{}s", m / 1_000_000)
        } else if m % 1000 == 0 {
            write!(f, "{}ms", m / 1000)
        } else {
            write!(f, "{m}us")
        }
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as `30s`, `5 minutes` or `0`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                Duration::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                if v == 0 {
                    Ok(Duration::default())
                } else {
                    Err(E::custom(format!(
                        "`{v}` has no unit: write e.g. `{v}s` or `{v}ms`"
                    )))
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                self.visit_u64(v.max(0) as u64)
            }
        }
        deserializer.deserialize_any(DurationVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(Duration::parse("10s").unwrap().as_micros(), 10_000_000);
        assert_eq!(
            Duration::parse("5 minutes").unwrap().as_micros(),
            300_000_000
        );
        assert_eq!(Duration::parse("250ms").unwrap().as_micros(), 250_000);
        assert_eq!(Duration::parse("0").unwrap().as_micros(), 0);
        assert!(Duration::parse("10 fortnights")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(Duration::parse("ten s").is_err());
    }
}

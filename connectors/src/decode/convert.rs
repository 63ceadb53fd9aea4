//! Conversion of one JSON value or CSV text field to a typed cell, following the declared type.
//!
//! These are the per-field type rules of the text decoders; a rejection carries the dead-letter
//! reason and a detail naming the field, the expected type and what was found.

use serde_json::Value;

use crate::dead_letter::DeadLetterReason;
use crate::schema::{FieldSpec, FieldType};
use crate::timestamp::parse_text_micros;

/// A decoded field value, borrowing strings from the record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Cell<'a> {
    Null,
    Str(&'a str),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// Microseconds since the epoch, UTC.
    Timestamp(i64),
}

/// Why a record is rejected.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Reject {
    pub reason: DeadLetterReason,
    pub detail: String,
}

/// A present, non-null JSON value as the type rules see it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum JsonScalar<'a> {
    Bool(bool),
    /// An integer in the signed 64-bit range.
    Int(i64),
    /// A non-negative integer beyond `i64::MAX`.
    UInt(u64),
    Float(f64),
    Str(&'a str),
    /// An array or an object.
    Nested,
}

impl<'a> JsonScalar<'a> {
    /// The scalar of a non-null `serde_json` value (`Null` reads as `Nested`: callers check
    /// for null first).
    fn of(value: &'a Value) -> Self {
        match value {
            Value::Bool(b) => JsonScalar::Bool(*b),
            Value::Number(n) => match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => JsonScalar::Int(i),
                (None, Some(u)) => JsonScalar::UInt(u),
                (None, None) => JsonScalar::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => JsonScalar::Str(s),
            Value::Null | Value::Array(_) | Value::Object(_) => JsonScalar::Nested,
        }
    }
}

/// What the conversion needs to know about the target column.
#[derive(Debug, Clone, Copy)]
pub(super) struct Target<'s> {
    pub spec: &'s FieldSpec,
    pub is_event_time: bool,
}

const TIMESTAMP_HINT: &str =
    "an RFC 3339 timestamp like \"2026-01-01T00:00:00Z\" or an integer epoch in the field's `unit`";

impl Target<'_> {
    /// The rejection for an absent (`missing == true`) or null value, or `Ok(Null)` when allowed.
    pub fn null(&self, missing: bool) -> Result<Cell<'static>, Reject> {
        let what = if missing { "is missing" } else { "is null" };
        if self.is_event_time {
            Err(Reject {
                reason: DeadLetterReason::MissingEventTime,
                detail: format!("event-time field `{}` {what}", self.spec.name),
            })
        } else if !self.spec.nullable {
            Err(Reject {
                reason: DeadLetterReason::MissingField,
                detail: format!(
                    "non-nullable field `{}` {what}; declare it `nullable: true` to accept this",
                    self.spec.name
                ),
            })
        } else {
            Ok(Cell::Null)
        }
    }

    fn expected(&self) -> &'static str {
        match self.spec.field_type {
            FieldType::Timestamp => TIMESTAMP_HINT,
            other => other.as_str(),
        }
    }

    /// The rejection for a present value that does not fit the declared type.
    pub fn wrong(&self, found: &str) -> Reject {
        if self.is_event_time {
            Reject {
                reason: DeadLetterReason::InvalidEventTime,
                detail: format!(
                    "event-time field `{}`: expected {}, found {found}",
                    self.spec.name,
                    self.expected()
                ),
            }
        } else {
            Reject {
                reason: DeadLetterReason::WrongType,
                detail: format!(
                    "field `{}`: expected {}, found {found}",
                    self.spec.name,
                    self.expected()
                ),
            }
        }
    }

    /// Converts a JSON value (`None` when the key is absent).
    pub fn convert_json<'a>(&self, value: Option<&'a Value>) -> Result<Cell<'a>, Reject> {
        let value = match value {
            None => return self.null(true),
            Some(Value::Null) => return self.null(false),
            Some(v) => v,
        };
        self.convert_scalar(JsonScalar::of(value))
            .ok_or_else(|| self.wrong(&describe_json(value)))
    }

    /// The type rules of JSON values: the cell of a present, non-null value, `None` when it
    /// does not fit the declared type.
    pub fn convert_scalar<'a>(&self, value: JsonScalar<'a>) -> Option<Cell<'a>> {
        let unit = || self.spec.epoch_unit();
        match (self.spec.field_type, value) {
            (FieldType::String, JsonScalar::Str(s)) => Some(Cell::Str(s)),
            (FieldType::Int, JsonScalar::Int(i)) => Some(Cell::Int(i)),
            (FieldType::Float, JsonScalar::Int(i)) => Some(Cell::Float(i as f64)),
            (FieldType::Float, JsonScalar::UInt(u)) => Some(Cell::Float(u as f64)),
            (FieldType::Float, JsonScalar::Float(f)) => Some(Cell::Float(f)),
            (FieldType::Bool, JsonScalar::Bool(b)) => Some(Cell::Bool(b)),
            (FieldType::Timestamp, JsonScalar::Str(s)) => {
                parse_text_micros(s, unit()).map(Cell::Timestamp)
            }
            (FieldType::Timestamp, JsonScalar::Int(i)) => unit().to_micros(i).map(Cell::Timestamp),
            _ => None,
        }
    }

    /// Converts a CSV text field; the empty string is null.
    pub fn convert_text<'a>(&self, text: &'a str) -> Result<Cell<'a>, Reject> {
        if text.is_empty() {
            return self.null(false);
        }
        let trimmed = text.trim();
        let cell = match self.spec.field_type {
            FieldType::String => Some(Cell::Str(text)),
            FieldType::Int => trimmed.parse::<i64>().ok().map(Cell::Int),
            FieldType::Float => trimmed.parse::<f64>().ok().map(Cell::Float),
            FieldType::Bool => {
                if trimmed.eq_ignore_ascii_case("true") {
                    Some(Cell::Bool(true))
                } else if trimmed.eq_ignore_ascii_case("false") {
                    Some(Cell::Bool(false))
                } else {
                    None
                }
            }
            FieldType::Timestamp => {
                parse_text_micros(trimmed, self.spec.epoch_unit()).map(Cell::Timestamp)
            }
        };
        cell.ok_or_else(|| self.wrong(&quote(text)))
    }
}

/// Quotes a string for a message, shortening long values.
fn quote(text: &str) -> String {
    const MAX_CHARS: usize = 60;
    if text.chars().count() <= MAX_CHARS {
        format!("{text:?}")
    } else {
        let prefix: String = text.chars().take(MAX_CHARS).collect();
        format!("{prefix:?}...")
    }
}

/// Describes a JSON value for a message, e.g. `string "abc"` or `float 1.5`.
fn describe_json(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("bool {b}"),
        Value::Number(n) if n.is_i64() => format!("integer {n}"),
        Value::Number(n) if n.is_u64() => format!("integer {n} (outside the 64-bit signed range)"),
        Value::Number(n) => format!("float {n}"),
        Value::String(s) => format!("string {}", quote(s)),
        Value::Array(_) => "array".into(),
        Value::Object(_) => "object".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(field_type: FieldType, nullable: bool, is_event_time: bool) -> (FieldSpec, bool) {
        (FieldSpec::new("f", field_type, nullable), is_event_time)
    }

    #[test]
    fn json_rules() {
        let (spec, et) = target(FieldType::Int, true, false);
        let t = Target {
            spec: &spec,
            is_event_time: et,
        };
        assert_eq!(
            t.convert_json(Some(&serde_json::json!(3))),
            Ok(Cell::Int(3))
        );
        let err = t.convert_json(Some(&serde_json::json!(3.0))).unwrap_err();
        assert_eq!(err.reason, DeadLetterReason::WrongType);
        assert_eq!(err.detail, "field `f`: expected int, found float 3.0");
        assert_eq!(t.convert_json(None), Ok(Cell::Null));

        let (spec, _) = target(FieldType::Float, false, false);
        let t = Target {
            spec: &spec,
            is_event_time: false,
        };
        assert_eq!(
            t.convert_json(Some(&serde_json::json!(3))),
            Ok(Cell::Float(3.0))
        );
        let err = t.convert_json(Some(&serde_json::json!("abc"))).unwrap_err();
        assert_eq!(
            err.detail,
            "field `f`: expected float, found string \"abc\""
        );
        assert_eq!(
            t.convert_json(Some(&Value::Null)).unwrap_err().reason,
            DeadLetterReason::MissingField
        );

        let (spec, _) = target(FieldType::Timestamp, false, true);
        let t = Target {
            spec: &spec,
            is_event_time: true,
        };
        assert_eq!(
            t.convert_json(Some(&serde_json::json!(1000))),
            Ok(Cell::Timestamp(1_000_000))
        );
        assert_eq!(
            t.convert_json(Some(&serde_json::json!(true)))
                .unwrap_err()
                .reason,
            DeadLetterReason::InvalidEventTime
        );
        assert_eq!(
            t.convert_json(None).unwrap_err().reason,
            DeadLetterReason::MissingEventTime
        );
    }

    #[test]
    fn text_rules() {
        let (spec, _) = target(FieldType::Bool, true, false);
        let t = Target {
            spec: &spec,
            is_event_time: false,
        };
        assert_eq!(t.convert_text("TRUE"), Ok(Cell::Bool(true)));
        assert_eq!(t.convert_text(""), Ok(Cell::Null));
        assert_eq!(
            t.convert_text("yes").unwrap_err().reason,
            DeadLetterReason::WrongType
        );
        let (spec, _) = target(FieldType::String, true, false);
        let t = Target {
            spec: &spec,
            is_event_time: false,
        };
        assert_eq!(t.convert_text(" a "), Ok(Cell::Str(" a ")));
        let (spec, _) = target(FieldType::Int, true, false);
        let t = Target {
            spec: &spec,
            is_event_time: false,
        };
        assert_eq!(t.convert_text(" 42 "), Ok(Cell::Int(42)));
        assert_eq!(
            t.convert_text("4.2").unwrap_err().reason,
            DeadLetterReason::WrongType
        );
    }
}

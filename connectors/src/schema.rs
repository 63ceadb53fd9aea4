//! The declared input schema of a pipeline: column names, types and nullability.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::error::ConnectorError;

/// Declared column type in a pipeline config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    /// UTF-8 text (Arrow `Utf8`).
    String,
    /// 64-bit signed integer (Arrow `Int64`).
    Int,
    /// 64-bit float (Arrow `Float64`).
    Float,
    /// Boolean (Arrow `Boolean`).
    Bool,
    /// UTC timestamp with microsecond precision (Arrow `Timestamp(Microsecond, None)`).
    Timestamp,
}

impl FieldType {
    /// The Arrow type columns of this declared type are decoded to.
    pub fn arrow_type(&self) -> DataType {
        match self {
            FieldType::String => DataType::Utf8,
            FieldType::Int => DataType::Int64,
            FieldType::Float => DataType::Float64,
            FieldType::Bool => DataType::Boolean,
            FieldType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
        }
    }

    /// The config spelling of this type (`string`, `int`, ...), used in messages.
    pub fn as_str(&self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Int => "int",
            FieldType::Float => "float",
            FieldType::Bool => "bool",
            FieldType::Timestamp => "timestamp",
        }
    }
}

/// The unit of integer epoch timestamps (NDJSON numbers, CSV integers, Parquet integer
/// columns), declared per timestamp field; default milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EpochUnit {
    /// Seconds since the epoch.
    S,
    /// Milliseconds since the epoch (the default).
    #[default]
    Ms,
    /// Microseconds since the epoch.
    Us,
    /// Nanoseconds since the epoch (truncated to microseconds).
    Ns,
}

impl EpochUnit {
    /// An integer epoch value in this unit as microseconds, `None` on overflow.
    pub fn to_micros(self, value: i64) -> Option<i64> {
        match self {
            EpochUnit::S => value.checked_mul(1_000_000),
            EpochUnit::Ms => value.checked_mul(1_000),
            EpochUnit::Us => Some(value),
            EpochUnit::Ns => Some(value.div_euclid(1_000)),
        }
    }

    /// The Arrow time unit of the same name.
    pub fn arrow_unit(self) -> TimeUnit {
        match self {
            EpochUnit::S => TimeUnit::Second,
            EpochUnit::Ms => TimeUnit::Millisecond,
            EpochUnit::Us => TimeUnit::Microsecond,
            EpochUnit::Ns => TimeUnit::Nanosecond,
        }
    }

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            EpochUnit::S => "s",
            EpochUnit::Ms => "ms",
            EpochUnit::Us => "us",
            EpochUnit::Ns => "ns",
        }
    }
}

/// The column names of `schema`, quoted and comma-separated, for messages.
pub(crate) fn column_list(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| format!("`{}`", f.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn default_true() -> bool {
    true
}

/// One declared column: name, type and whether it may be null (default: nullable).
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// Column name, matched exactly (case-sensitive) against input field names.
    pub name: String,
    /// Declared type.
    #[serde(rename = "type")]
    pub field_type: FieldType,
    /// Whether the column may be null or missing; records violating a non-nullable column are
    /// dead-lettered.
    #[serde(default = "default_true")]
    pub nullable: bool,
    /// For `timestamp` fields: the unit of integer epoch values (`s`, `ms`, `us`, `ns`;
    /// default `ms`). Text timestamps (RFC 3339) carry their own precision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<EpochUnit>,
}

impl FieldSpec {
    /// Convenience constructor.
    pub fn new(name: impl Into<String>, field_type: FieldType, nullable: bool) -> Self {
        Self {
            name: name.into(),
            field_type,
            nullable,
            unit: None,
        }
    }

    /// The same field with integer epoch values in `unit`.
    pub fn with_unit(mut self, unit: EpochUnit) -> Self {
        self.unit = Some(unit);
        self
    }

    /// The unit of integer epoch values of this field.
    pub fn epoch_unit(&self) -> EpochUnit {
        self.unit.unwrap_or_default()
    }
}

/// Declared input schema; `event_time` names the required timestamp column (rows where it is
/// missing/unparseable are dead-lettered).
#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredSchema {
    /// Declared columns in output order.
    pub fields: Vec<FieldSpec>,
    /// Name of the event-time column; it must be declared with type `timestamp`.
    pub event_time: String,
}

impl DeclaredSchema {
    /// Validates and builds a schema.
    ///
    /// Fails when there are no fields, when two fields share a name, or when `event_time` does
    /// not name a declared `timestamp` field.
    pub fn new(
        fields: Vec<FieldSpec>,
        event_time: impl Into<String>,
    ) -> Result<Self, ConnectorError> {
        let event_time = event_time.into();
        if fields.is_empty() {
            return Err(ConnectorError::InvalidSchema {
                detail: "no fields are declared; declare at least the event-time column".into(),
            });
        }
        let mut seen = HashSet::new();
        for field in &fields {
            if field.name.is_empty() {
                return Err(ConnectorError::InvalidSchema {
                    detail: "a field has an empty name; give every field a name".into(),
                });
            }
            if field.unit.is_some() && field.field_type != FieldType::Timestamp {
                return Err(ConnectorError::InvalidSchema {
                    detail: format!(
                        "field `{}` has a `unit` but type {}; `unit` applies to timestamp fields only",
                        field.name,
                        field.field_type.as_str()
                    ),
                });
            }
            if !seen.insert(field.name.as_str()) {
                return Err(ConnectorError::InvalidSchema {
                    detail: format!(
                        "field `{}` is declared more than once; remove or rename the duplicate",
                        field.name
                    ),
                });
            }
        }
        match fields.iter().find(|f| f.name == event_time) {
            None => Err(ConnectorError::InvalidSchema {
                detail: format!(
                    "event-time column `{event_time}` is not declared; declared fields are: {}",
                    fields
                        .iter()
                        .map(|f| format!("`{}`", f.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
            Some(f) if f.field_type != FieldType::Timestamp => Err(ConnectorError::InvalidSchema {
                detail: format!(
                    "event-time column `{event_time}` has type {}; declare it as `type: timestamp`",
                    f.field_type.as_str()
                ),
            }),
            Some(_) => Ok(Self { fields, event_time }),
        }
    }

    /// Index of the event-time column in [`DeclaredSchema::fields`].
    pub fn event_time_index(&self) -> usize {
        // `new` guarantees presence; 0 is only reachable for hand-built, invalid values.
        self.fields
            .iter()
            .position(|f| f.name == self.event_time)
            .unwrap_or(0)
    }

    /// Whether field `index` may hold nulls in decoded batches (the event-time column never can).
    pub fn is_nullable(&self, index: usize) -> bool {
        self.fields
            .get(index)
            .is_some_and(|f| f.nullable && f.name != self.event_time)
    }

    /// The Arrow schema of decoded batches: the event-time column is non-nullable, the others
    /// follow their `nullable` flag.
    pub fn arrow_schema(&self) -> SchemaRef {
        let fields: Vec<Field> = self
            .fields
            .iter()
            .enumerate()
            .map(|(i, f)| Field::new(&f.name, f.field_type.arrow_type(), self.is_nullable(i)))
            .collect();
        Arc::new(Schema::new(fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(name: &str) -> FieldSpec {
        FieldSpec::new(name, FieldType::Timestamp, true)
    }

    #[test]
    fn builds_arrow_schema_with_non_nullable_event_time() {
        let schema = DeclaredSchema::new(
            vec![
                FieldSpec::new("id", FieldType::Int, false),
                FieldSpec::new("amount", FieldType::Float, true),
                ts("t"),
            ],
            "t",
        )
        .unwrap();
        let arrow = schema.arrow_schema();
        assert_eq!(arrow.field(0).data_type(), &DataType::Int64);
        assert!(!arrow.field(0).is_nullable());
        assert!(arrow.field(1).is_nullable());
        assert!(!arrow.field(2).is_nullable());
        assert_eq!(
            arrow.field(2).data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, None)
        );
        assert_eq!(schema.event_time_index(), 2);
    }

    #[test]
    fn rejects_invalid_schemas() {
        let err = DeclaredSchema::new(vec![], "t").unwrap_err().to_string();
        assert!(err.contains("no fields"), "{err}");
        let err = DeclaredSchema::new(vec![ts("t"), ts("t")], "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`t` is declared more than once"), "{err}");
        let err = DeclaredSchema::new(vec![ts("a")], "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`t` is not declared"), "{err}");
        let err = DeclaredSchema::new(vec![FieldSpec::new("t", FieldType::Int, false)], "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("type: timestamp"), "{err}");
    }

    #[test]
    fn deserializes_field_specs() {
        let spec: FieldSpec = serde_json::from_str(r#"{"name":"amount","type":"float"}"#).unwrap();
        assert_eq!(spec, FieldSpec::new("amount", FieldType::Float, true));
        assert!(serde_json::from_str::<FieldSpec>(r#"{"name":"a","type":"float","x":1}"#).is_err());
    }

    #[test]
    fn units_apply_to_timestamps_only_and_convert_exactly() {
        let bad = DeclaredSchema::new(
            vec![
                FieldSpec::new("n", FieldType::Int, true).with_unit(EpochUnit::S),
                ts("t"),
            ],
            "t",
        )
        .unwrap_err();
        assert!(bad.to_string().contains("`unit`"), "{bad}");
        assert_eq!(EpochUnit::S.to_micros(2), Some(2_000_000));
        assert_eq!(
            EpochUnit::Ns.to_micros(-1),
            Some(-1),
            "floor, not toward zero"
        );
        assert_eq!(EpochUnit::S.to_micros(i64::MAX), None);
        assert_eq!(ts("t").epoch_unit(), EpochUnit::Ms);
    }
}

//! Schemas of self-describing files: a Parquet file's columns as declared fields.

use arrow::datatypes::{DataType, Schema};

use crate::error::ConnectorError;
use crate::schema::{column_list, FieldSpec, FieldType};

/// The declared type a Parquet column of type `data_type` is read as, `None` for types Quiver's
/// streams do not carry (nested, binary, intervals, ...).
fn field_type(data_type: &DataType) -> Option<FieldType> {
    Some(match data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => FieldType::String,
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => FieldType::Int,
        DataType::Float16
        | DataType::Float32
        | DataType::Float64
        | DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => FieldType::Float,
        DataType::Boolean => FieldType::Bool,
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => FieldType::Timestamp,
        _ => return None,
    })
}

/// The fields of a file schema (as read from Parquet file `file`), ready to declare, and the
/// names of columns left out because their types are not supported.
///
/// The event-time column must be a timestamp or date column: integer epochs are refused, since
/// their unit is declared, never guessed.
pub fn infer_fields(
    file: &str,
    schema: &Schema,
    event_time: &str,
) -> Result<(Vec<FieldSpec>, Vec<String>), ConnectorError> {
    let mut fields = Vec::new();
    let mut skipped = Vec::new();
    for f in schema.fields() {
        match field_type(f.data_type()) {
            Some(t) => fields.push(FieldSpec::new(f.name(), t, f.is_nullable())),
            None => skipped.push(format!("`{}` ({})", f.name(), f.data_type())),
        }
    }
    let Some(time) = schema.fields().iter().find(|f| f.name() == event_time) else {
        return Err(ConnectorError::InvalidSchema {
            detail: format!(
                "the event-time column `{event_time}` is not in `{file}` (its columns: {}); fix \
                 event_time.column",
                column_list(schema)
            ),
        });
    };
    if field_type(time.data_type()) != Some(FieldType::Timestamp) {
        let hint = if time.data_type().is_integer() {
            format!(
                "; if it holds epoch integers, declare `schema:` with `{{name: {event_time}, \
                 type: timestamp, unit: ms}}` (s, ms, us or ns: the unit is never guessed)"
            )
        } else {
            String::new()
        };
        return Err(ConnectorError::InvalidSchema {
            detail: format!(
                "the event-time column `{event_time}` of `{file}` has type {}, not a \
                 timestamp{hint}",
                time.data_type()
            ),
        });
    }
    Ok((fields, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, TimeUnit};

    #[test]
    fn maps_types_skips_nested_and_refuses_integer_event_times() {
        let schema = Schema::new(vec![
            Field::new("card", DataType::Utf8View, false),
            Field::new("amount", DataType::Decimal128(12, 2), true),
            Field::new("n", DataType::Int32, true),
            Field::new(
                "at",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                false,
            ),
            Field::new(
                "tags",
                DataType::List(std::sync::Arc::new(Field::new("x", DataType::Utf8, true))),
                true,
            ),
            Field::new("epoch", DataType::Int64, false),
        ]);
        let (fields, skipped) = infer_fields("f.parquet", &schema, "at").unwrap();
        let types: Vec<_> = fields
            .iter()
            .map(|f| (f.name.as_str(), f.field_type))
            .collect();
        assert_eq!(
            types,
            vec![
                ("card", FieldType::String),
                ("amount", FieldType::Float),
                ("n", FieldType::Int),
                ("at", FieldType::Timestamp),
                ("epoch", FieldType::Int),
            ]
        );
        assert!(!fields[0].nullable && fields[1].nullable);
        assert_eq!(skipped.len(), 1);
        let err = infer_fields("f.parquet", &schema, "epoch").unwrap_err();
        assert!(err.to_string().contains("unit: ms"), "{err}");
        let err = infer_fields("f.parquet", &schema, "missing").unwrap_err();
        assert!(err.to_string().contains("`card`"), "{err}");
    }
}

//! Rendering of single Arrow values as JSON or CSV text (writer output and Parquet dead-letter
//! `raw` fields). Timestamps become RFC 3339 UTC strings with a `Z` suffix.

use arrow::array::{Array, AsArray};
use arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow::record_batch::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::Value;

use crate::timestamp::micros_to_string;

/// Epoch microseconds of a timestamp value of any unit (nanoseconds are floored).
fn timestamp_micros(array: &dyn Array, unit: TimeUnit, row: usize) -> Option<i64> {
    match unit {
        TimeUnit::Second => array
            .as_primitive_opt::<TimestampSecondType>()
            .and_then(|a| a.value(row).checked_mul(1_000_000)),
        TimeUnit::Millisecond => array
            .as_primitive_opt::<TimestampMillisecondType>()
            .and_then(|a| a.value(row).checked_mul(1_000)),
        TimeUnit::Microsecond => array
            .as_primitive_opt::<TimestampMicrosecondType>()
            .map(|a| a.value(row)),
        TimeUnit::Nanosecond => array
            .as_primitive_opt::<TimestampNanosecondType>()
            .map(|a| a.value(row).div_euclid(1_000)),
    }
}

/// Arrow's own textual rendering, for types without a dedicated JSON form.
fn formatted(array: &dyn Array, row: usize) -> String {
    match ArrayFormatter::try_new(array, &FormatOptions::default()) {
        Ok(formatter) => formatter.value(row).to_string(),
        Err(e) => format!("<unrenderable {}: {e}>", array.data_type()),
    }
}

fn float(value: f64) -> Value {
    serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number)
}

/// The JSON value of `array[row]`: numbers, bools and strings natively, timestamps as RFC 3339
/// strings, non-finite floats as null, anything else as Arrow's display string.
pub(crate) fn json_value(array: &dyn Array, row: usize) -> Value {
    if row >= array.len() || array.is_null(row) {
        return Value::Null;
    }
    macro_rules! int {
        ($t:ty) => {
            array
                .as_primitive_opt::<$t>()
                .map(|a| Value::from(a.value(row)))
        };
    }
    let value = match array.data_type() {
        DataType::Utf8 => array
            .as_string_opt::<i32>()
            .map(|a| Value::from(a.value(row))),
        DataType::LargeUtf8 => array
            .as_string_opt::<i64>()
            .map(|a| Value::from(a.value(row))),
        DataType::Utf8View => array
            .as_string_view_opt()
            .map(|a| Value::from(a.value(row))),
        DataType::Boolean => array.as_boolean_opt().map(|a| Value::from(a.value(row))),
        DataType::Int8 => int!(Int8Type),
        DataType::Int16 => int!(Int16Type),
        DataType::Int32 => int!(Int32Type),
        DataType::Int64 => int!(Int64Type),
        DataType::UInt8 => int!(UInt8Type),
        DataType::UInt16 => int!(UInt16Type),
        DataType::UInt32 => int!(UInt32Type),
        DataType::UInt64 => int!(UInt64Type),
        DataType::Float32 => array
            .as_primitive_opt::<Float32Type>()
            .map(|a| float(f64::from(a.value(row)))),
        DataType::Float64 => array
            .as_primitive_opt::<Float64Type>()
            .map(|a| float(a.value(row))),
        DataType::Timestamp(unit, _) => {
            timestamp_micros(array, *unit, row).map(|t| Value::from(micros_to_string(t)))
        }
        _ => None,
    };
    value.unwrap_or_else(|| Value::from(formatted(array, row)))
}

/// The CSV text of `array[row]`; `None` for null (written as an empty field).
pub(crate) fn text_value(array: &dyn Array, row: usize) -> Option<String> {
    if row >= array.len() || array.is_null(row) {
        return None;
    }
    Some(match json_value(array, row) {
        Value::String(s) => s,
        Value::Null => formatted(array, row),
        other => other.to_string(),
    })
}

/// Writes row `row` of `batch` as one JSON object, keys in column order.
pub(crate) fn write_json_row(batch: &RecordBatch, row: usize, out: &mut Vec<u8>) {
    out.push(b'{');
    for (i, (field, column)) in batch
        .schema()
        .fields()
        .iter()
        .zip(batch.columns())
        .enumerate()
    {
        if i > 0 {
            out.push(b',');
        }
        // Serializing a `str` or a `Value` into a Vec<u8> cannot fail.
        let _ = serde_json::to_writer(&mut *out, field.name().as_str());
        out.push(b':');
        let _ = serde_json::to_writer(&mut *out, &json_value(column.as_ref(), row));
    }
    out.push(b'}');
}

/// Row `row` of `batch` as a JSON object string.
pub fn json_row(batch: &RecordBatch, row: usize) -> String {
    let mut out = Vec::new();
    write_json_row(batch, row, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::{
        Date32Array, Float64Array, Int32Array, StringArray, TimestampMillisecondArray,
    };
    use arrow::datatypes::{Field, Schema};

    #[test]
    fn renders_rows_in_column_order() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("z", DataType::Int32, true),
            Field::new("a", DataType::Utf8, true),
            Field::new("f", DataType::Float64, true),
            Field::new("t", DataType::Timestamp(TimeUnit::Millisecond, None), true),
            Field::new("d", DataType::Date32, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int32Array::from(vec![Some(1), None])),
                Arc::new(StringArray::from(vec![Some("q\"x"), Some("b")])),
                Arc::new(Float64Array::from(vec![f64::NAN, 2.5])),
                Arc::new(TimestampMillisecondArray::from(vec![1_767_225_600_001, 0])),
                Arc::new(Date32Array::from(vec![0, 1])),
            ],
        )
        .unwrap();
        assert_eq!(
            json_row(&batch, 0),
            r#"{"z":1,"a":"q\"x","f":null,"t":"2026-01-01T00:00:00.001Z","d":"1970-01-01"}"#
        );
        assert_eq!(text_value(batch.column(0).as_ref(), 1), None);
        assert_eq!(
            text_value(batch.column(2).as_ref(), 1).as_deref(),
            Some("2.5")
        );
        assert_eq!(
            text_value(batch.column(3).as_ref(), 1).as_deref(),
            Some("1970-01-01T00:00:00Z")
        );
    }
}

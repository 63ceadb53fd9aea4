//! Read values as JSON, written straight from the Arrow columns (a server answers many reads:
//! building a `serde_json::Value` tree per answer first cost more than the read itself at 100
//! entities). The shape: `{at, committed_at, epoch, features: [{key..., feature...}], run,
//! shards?, version, view, watermark}`, keys in name order.

use super::read::OnlineValues;
use crate::lineage::format_micros;
use arrow::array::{Array, AsArray};
use arrow::datatypes::{self as t, DataType};
use quiver_sql::KeyShard;
use quiver_store::online::OnlineStamp;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

/// One value of an Arrow column: numbers as numbers (non-finite floats as null), decimals as
/// exact strings, times as RFC 3339, the rest as their text, nulls as null.
pub struct JsonCell<'a>(pub &'a dyn Array, pub usize);

impl Serialize for JsonCell<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let JsonCell(column, row) = *self;
        if column.is_null(row) {
            return s.serialize_none();
        }
        match column.data_type() {
            DataType::Int64 => s.serialize_i64(column.as_primitive::<t::Int64Type>().value(row)),
            DataType::Int32 => s.serialize_i32(column.as_primitive::<t::Int32Type>().value(row)),
            DataType::UInt64 => s.serialize_u64(column.as_primitive::<t::UInt64Type>().value(row)),
            DataType::Float64 => {
                let x = column.as_primitive::<t::Float64Type>().value(row);
                match x.is_finite() {
                    true => s.serialize_f64(x),
                    false => s.serialize_none(),
                }
            }
            DataType::Boolean => s.serialize_bool(column.as_boolean().value(row)),
            DataType::Utf8 => s.serialize_str(column.as_string::<i32>().value(row)),
            DataType::Timestamp(t::TimeUnit::Microsecond, _) => {
                let micros = column.as_primitive::<t::TimestampMicrosecondType>();
                s.serialize_str(&format_micros(micros.value(row)))
            }
            _ => match arrow::util::display::array_value_to_string(column, row) {
                Ok(text) => s.serialize_str(&text),
                Err(_) => s.serialize_none(),
            },
        }
    }
}

/// The rows: one object per entity, its columns in name order.
struct Rows<'a>(&'a OnlineValues);

impl Serialize for Rows<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let rows = &self.0.rows;
        let schema = rows.schema();
        let mut order: Vec<usize> = (0..schema.fields().len()).collect();
        order.sort_by(|&a, &b| schema.field(a).name().cmp(schema.field(b).name()));
        let mut seq = s.serialize_seq(Some(rows.num_rows()))?;
        for row in 0..rows.num_rows() {
            seq.serialize_element(&Row(rows, &order, row))?;
        }
        seq.end()
    }
}

/// One row of [`Rows`].
struct Row<'a>(&'a arrow::record_batch::RecordBatch, &'a [usize], usize);

impl Serialize for Row<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Row(rows, order, row) = *self;
        let schema = rows.schema();
        let mut map = s.serialize_map(Some(order.len()))?;
        for &c in order {
            map.serialize_entry(
                schema.field(c).name(),
                &JsonCell(rows.column(c).as_ref(), row),
            )?;
        }
        map.end()
    }
}

/// A shard's stamp in `shards`.
struct ShardStamp<'a>(&'a KeyShard, &'a OnlineStamp);

impl Serialize for ShardStamp<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let ShardStamp(shard, stamp) = *self;
        let mut map = s.serialize_map(Some(5))?;
        map.serialize_entry("committed_at", &committed_at(stamp))?;
        map.serialize_entry("epoch", &stamp.epoch)?;
        map.serialize_entry("run", &stamp.run)?;
        map.serialize_entry("shard", &shard.to_string())?;
        map.serialize_entry("watermark", &stamp.watermark.map(format_micros))?;
        map.end()
    }
}

fn committed_at(stamp: &OnlineStamp) -> String {
    format_micros(stamp.committed_unix_ms as i64 * 1000)
}

impl Serialize for OnlineValues {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("at", &format_micros(self.at))?;
        map.serialize_entry("committed_at", &committed_at(&self.stamp))?;
        map.serialize_entry("epoch", &self.stamp.epoch)?;
        map.serialize_entry("features", &Rows(self))?;
        map.serialize_entry("run", &self.stamp.run)?;
        if !self.shards.is_empty() {
            let shards: Vec<ShardStamp> = (self.shards.iter())
                .map(|(shard, stamp)| ShardStamp(shard, stamp))
                .collect();
            map.serialize_entry("shards", &shards)?;
        }
        map.serialize_entry("version", &self.version)?;
        map.serialize_entry("view", &self.view)?;
        map.serialize_entry("watermark", &self.stamp.watermark.map(format_micros))?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        ArrayRef, Decimal128Array, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray,
    };
    use serde_json::json;
    use std::sync::Arc;

    #[test]
    fn cells_are_numbers_strings_times_or_null() {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![Some(7), None])),
            Arc::new(Float64Array::from(vec![1.5, f64::NAN])),
            Arc::new(StringArray::from(vec!["a\"b", "c"])),
            Arc::new(TimestampMicrosecondArray::from(vec![
                1_767_225_600_000_000,
                0,
            ])),
            Arc::new(
                Decimal128Array::from(vec![12345, -5])
                    .with_precision_and_scale(10, 2)
                    .unwrap(),
            ),
        ];
        let cells = |row| -> Vec<serde_json::Value> {
            (columns.iter())
                .map(|c| serde_json::to_value(JsonCell(c.as_ref(), row)).unwrap())
                .collect()
        };
        assert_eq!(
            cells(0),
            vec![
                json!(7),
                json!(1.5),
                json!("a\"b"),
                json!("2026-01-01T00:00:00.000000Z"),
                json!("123.45")
            ]
        );
        assert_eq!(cells(1)[..2], [json!(null), json!(null)]);
        assert_eq!(cells(1)[4], json!("-0.05"));
    }
}

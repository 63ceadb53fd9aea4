//! Reading the event-time column of a batch.

use arrow::array::AsArray;
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimeUnit, TimestampMicrosecondType};
use arrow::record_batch::RecordBatch;

/// Event times of a batch in microseconds, with `None` for null times.
pub fn event_times(batch: &RecordBatch, column: &str) -> Result<Vec<Option<i64>>, String> {
    let array = batch
        .column_by_name(column)
        .ok_or_else(|| format!("event-time column `{column}` is missing from the stream"))?;
    let micros = cast(array, &DataType::Timestamp(TimeUnit::Microsecond, None))
        .map_err(|e| format!("event-time column `{column}` is not a timestamp: {e}"))?;
    Ok(micros
        .as_primitive::<TimestampMicrosecondType>()
        .iter()
        .collect())
}

/// Whether `data_type` can serve as event time.
pub fn is_timestamp(data_type: &DataType) -> bool {
    matches!(data_type, DataType::Timestamp(_, _))
}

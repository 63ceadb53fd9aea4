//! What Parquet footers tell without reading the data.

use crate::error::StoreError;
use arrow::datatypes::{DataType, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::statistics::Statistics;
use std::path::Path;

/// The newest value of the timestamp column `column` in a Parquet file, in microseconds, from
/// its statistics.
pub fn newest_timestamp(path: &Path, column: &str) -> Result<Option<i64>, StoreError> {
    let fail = |e: &dyn std::fmt::Display| StoreError::Parquet {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(|e| fail(&e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| fail(&e))?;
    let Ok(field) = builder.schema().field_with_name(column) else {
        return Ok(None);
    };
    let per_micro = match field.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => 1_000_000.0,
        DataType::Timestamp(TimeUnit::Millisecond, _) => 1_000.0,
        DataType::Timestamp(TimeUnit::Microsecond, _) => 1.0,
        DataType::Timestamp(TimeUnit::Nanosecond, _) => 1e-3,
        _ => return Ok(None),
    };
    let metadata = builder.metadata();
    let Some(index) = metadata
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.path().string() == column)
    else {
        return Ok(None);
    };
    let newest = metadata
        .row_groups()
        .iter()
        .filter_map(|rg| match rg.column(index).statistics() {
            Some(Statistics::Int64(s)) => s.max_opt().copied(),
            _ => None,
        })
        .max();
    Ok(newest.map(|t| (t as f64 * per_micro) as i64))
}

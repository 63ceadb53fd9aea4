//! What Parquet footers tell without reading the data.

use crate::delta::AddFile;
use crate::error::StoreError;
use arrow::datatypes::{DataType, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::statistics::Statistics;
use std::path::Path;

/// The Parquet file at `path` as a Delta table's `add` of `name` (its path relative to the
/// table: size and rows), and the newest value of its timestamp column `time_column` in
/// microseconds; all from one read of its footer.
pub fn table_file(
    path: &Path,
    name: String,
    time_column: &str,
) -> Result<(AddFile, Option<i64>), StoreError> {
    let fail = |e: &dyn std::fmt::Display| StoreError::Parquet {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(|e| fail(&e))?;
    let size = file.metadata().map_err(|e| fail(&e))?.len();
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| fail(&e))?;
    let metadata = builder.metadata();
    let add = AddFile {
        path: name,
        size,
        rows: metadata.file_metadata().num_rows() as u64,
    };
    // Microseconds from the column's unit.
    let to_micros = match builder
        .schema()
        .field_with_name(time_column)
        .map(|f| f.data_type())
    {
        Ok(DataType::Timestamp(TimeUnit::Second, _)) => |t: i64| t.saturating_mul(1_000_000),
        Ok(DataType::Timestamp(TimeUnit::Millisecond, _)) => |t: i64| t.saturating_mul(1_000),
        Ok(DataType::Timestamp(TimeUnit::Microsecond, _)) => |t: i64| t,
        Ok(DataType::Timestamp(TimeUnit::Nanosecond, _)) => |t: i64| t.div_euclid(1_000),
        _ => return Ok((add, None)),
    };
    let Some(index) = metadata
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.path().string() == time_column)
    else {
        return Ok((add, None));
    };
    let newest = metadata
        .row_groups()
        .iter()
        .filter_map(|rg| match rg.column(index).statistics() {
            Some(Statistics::Int64(s)) => s.max_opt().copied(),
            _ => None,
        })
        .max();
    Ok((add, newest.map(to_micros)))
}

/// The newest value of the timestamp column `column` in a Parquet file, in microseconds, from
/// its statistics.
pub fn newest_timestamp(path: &Path, column: &str) -> Result<Option<i64>, StoreError> {
    Ok(table_file(path, String::new(), column)?.1)
}

//! What Parquet footers tell without reading the data.

use crate::delta::AddFile;
use crate::error::StoreError;
use crate::location::StoreDir;
use arrow::datatypes::{DataType, Schema, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::metadata::ParquetMetaData;
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
    let newest = newest_in(metadata, builder.schema(), time_column);
    Ok((add, newest))
}

/// The newest value of the timestamp column `column` in microseconds, from the statistics of
/// a file's row groups.
fn newest_in(metadata: &ParquetMetaData, schema: &Schema, column: &str) -> Option<i64> {
    // Microseconds from the column's unit.
    let to_micros = match schema.field_with_name(column).map(|f| f.data_type()) {
        Ok(DataType::Timestamp(TimeUnit::Second, _)) => |t: i64| t.saturating_mul(1_000_000),
        Ok(DataType::Timestamp(TimeUnit::Millisecond, _)) => |t: i64| t.saturating_mul(1_000),
        Ok(DataType::Timestamp(TimeUnit::Microsecond, _)) => |t: i64| t,
        Ok(DataType::Timestamp(TimeUnit::Nanosecond, _)) => |t: i64| t.div_euclid(1_000),
        _ => return None,
    };
    let index = metadata
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.path().string() == column)?;
    metadata
        .row_groups()
        .iter()
        .filter_map(|rg| match rg.column(index).statistics() {
            Some(Statistics::Int64(s)) => s.max_opt().copied(),
            _ => None,
        })
        .max()
        .map(to_micros)
}

/// [`table_file`] for the Parquet file `name` of the store directory `dir` (on an object
/// store: its size from a HEAD request, the rest from ranged reads of its footer).
pub fn table_file_in(
    dir: &StoreDir,
    name: &str,
    time_column: &str,
) -> Result<(AddFile, Option<i64>), StoreError> {
    match crate::object_parquet::open(dir, name) {
        Some(builder) => {
            let builder = builder?;
            let size = dir.size(name)?.unwrap_or(0);
            let add = AddFile {
                path: name.to_string(),
                size,
                rows: builder.metadata().file_metadata().num_rows() as u64,
            };
            Ok((
                add,
                newest_in(builder.metadata(), builder.schema(), time_column),
            ))
        }
        None => {
            let path = dir.join(name);
            let path = path.local_path().unwrap_or(Path::new(""));
            table_file(path, name.to_string(), time_column)
        }
    }
}

/// The newest value of the timestamp column `column` in the Parquet file `name` of `dir`, in
/// microseconds, from its statistics (on an object store, ranged reads of its footer only).
pub fn newest_timestamp(
    dir: &StoreDir,
    name: &str,
    column: &str,
) -> Result<Option<i64>, StoreError> {
    match crate::object_parquet::open(dir, name) {
        // No HEAD request for the size: the footer is all it needs.
        Some(builder) => {
            let builder = builder?;
            Ok(newest_in(builder.metadata(), builder.schema(), column))
        }
        None => Ok(table_file_in(dir, name, column)?.1),
    }
}

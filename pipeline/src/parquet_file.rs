//! Reading whole local Parquet files (spines, event logs, outputs to compare).

use crate::error::JobError;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::path::Path;

/// Rows per batch read.
const BATCH_ROWS: usize = 64 * 1024;

/// Every batch of the Parquet file at `path`, and its schema; `what` names the file in errors
/// (e.g. "the spine").
pub fn read_parquet_file(
    path: &Path,
    what: &str,
) -> Result<(SchemaRef, Vec<RecordBatch>), JobError> {
    let fail = |e: &dyn std::fmt::Display| {
        JobError::Other(format!("cannot read {what} `{}`: {e}", path.display()))
    };
    let file = std::fs::File::open(path).map_err(|e| fail(&e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| fail(&e))?;
    let schema = builder.schema().clone();
    let batches = builder
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| fail(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(&e))?;
    Ok((schema, batches))
}

/// The schema of the Parquet file at `path`, from its footer.
pub fn parquet_file_schema(path: &Path, what: &str) -> Result<SchemaRef, JobError> {
    let file = std::fs::File::open(path)
        .map_err(|e| JobError::Other(format!("cannot read {what} `{}`: {e}", path.display())))?;
    ParquetRecordBatchReaderBuilder::try_new(file)
        .map(|b| b.schema().clone())
        .map_err(|e| JobError::Other(format!("cannot read {what} `{}`: {e}", path.display())))
}

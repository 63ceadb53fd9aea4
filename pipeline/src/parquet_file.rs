//! Reading whole local Parquet files (spines, event logs, outputs to compare).

use crate::error::JobError;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use std::path::Path;
use std::sync::Arc;

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

/// The batches of the Parquet file at `path` with only `columns` (indices into its schema)
/// decoded: the others are all NULL, so the batches keep the file's columns (all nullable).
pub fn read_parquet_columns(
    path: &Path,
    what: &str,
    columns: &[usize],
) -> Result<Vec<RecordBatch>, JobError> {
    let fail = |e: &dyn std::fmt::Display| {
        JobError::Other(format!("cannot read {what} `{}`: {e}", path.display()))
    };
    let file = std::fs::File::open(path).map_err(|e| fail(&e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| fail(&e))?;
    let full = builder.schema().clone();
    let nullable = Arc::new(arrow::datatypes::Schema::new(
        full.fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ));
    let mask = ProjectionMask::roots(builder.parquet_schema(), columns.iter().copied());
    let reader = builder
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| fail(&e))?;
    // One all-NULL column per skipped field, sliced for every batch: NULLs cost nothing more
    // than once, however many rows are read.
    let nulls: Vec<Option<arrow::array::ArrayRef>> = (0..full.fields().len())
        .map(|i| {
            (!columns.contains(&i))
                .then(|| arrow::array::new_null_array(full.field(i).data_type(), BATCH_ROWS))
        })
        .collect();
    let mut batches = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| fail(&e))?;
        let rows = batch.num_rows();
        let mut read = batch.columns().iter();
        let columns = (0..full.fields().len())
            .map(|i| match &nulls[i] {
                None => read.next().cloned().expect("a projected column"),
                Some(null) if rows <= BATCH_ROWS => null.slice(0, rows),
                Some(_) => arrow::array::new_null_array(full.field(i).data_type(), rows),
            })
            .collect();
        batches.push(RecordBatch::try_new(Arc::clone(&nullable), columns).map_err(|e| fail(&e))?);
    }
    Ok(batches)
}

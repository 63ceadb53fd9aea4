//! Reading local Parquet files (spines, event logs, outputs to compare): whole, or batch by
//! batch in bounded memory.

use crate::error::JobError;
use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::SchemaRef;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;
use std::path::Path;
use std::sync::Arc;

/// Rows per batch read.
const BATCH_ROWS: usize = 64 * 1024;

/// The batches of one Parquet file, decoded as they are read. With a projection only the
/// projected columns are decoded; the others are all NULL, so the batches keep the file's
/// columns (all nullable).
pub struct ParquetBatches {
    reader: ParquetRecordBatchReader,
    /// The file's schema (all nullable when projected).
    schema: SchemaRef,
    /// Per column of the file: a NULL column to slice for columns not decoded.
    nulls: Option<Vec<Option<ArrayRef>>>,
    /// Rows in the file.
    rows: usize,
    what: String,
}

impl ParquetBatches {
    /// Opens the Parquet file at `path`, decoding `columns` (indices into its schema; `None`:
    /// all); `what` names the file in errors (e.g. "the spine").
    pub fn open(path: &Path, what: &str, columns: Option<&[usize]>) -> Result<Self, JobError> {
        Self::open_selecting(path, what, |_| Ok(columns.map(<[usize]>::to_vec)))
    }

    /// [`ParquetBatches::open`] with the columns chosen from the file's schema by `select`
    /// (the footer is read once).
    pub fn open_selecting(
        path: &Path,
        what: &str,
        select: impl FnOnce(&SchemaRef) -> Result<Option<Vec<usize>>, JobError>,
    ) -> Result<Self, JobError> {
        let what = format!("{what} `{}`", path.display());
        let fail = |e: &dyn std::fmt::Display| JobError::Other(format!("cannot read {what}: {e}"));
        let file = std::fs::File::open(path).map_err(|e| fail(&e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| fail(&e))?;
        let full = builder.schema().clone();
        let rows = usize::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
        let (builder, schema, nulls) = match select(&full)?.as_deref() {
            None => (builder, full, None),
            Some(columns) => {
                let nullable = Arc::new(arrow::datatypes::Schema::new(
                    full.fields()
                        .iter()
                        .map(|f| f.as_ref().clone().with_nullable(true))
                        .collect::<Vec<_>>(),
                ));
                let mask = ProjectionMask::roots(builder.parquet_schema(), columns.iter().copied());
                // One all-NULL column per skipped field, sliced for every batch: NULLs cost
                // nothing more than once, however many rows are read.
                let nulls = (0..full.fields().len())
                    .map(|i| {
                        (!columns.contains(&i)).then(|| {
                            arrow::array::new_null_array(full.field(i).data_type(), BATCH_ROWS)
                        })
                    })
                    .collect();
                (builder.with_projection(mask), nullable, Some(nulls))
            }
        };
        let reader = builder
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(|e| fail(&e))?;
        Ok(ParquetBatches {
            reader,
            schema,
            nulls,
            rows,
            what,
        })
    }

    /// The schema of the batches.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Rows in the file (from its footer).
    pub fn rows(&self) -> usize {
        self.rows
    }

    fn widen(&self, batch: RecordBatch) -> Result<RecordBatch, JobError> {
        let Some(nulls) = &self.nulls else {
            return Ok(batch);
        };
        let rows = batch.num_rows();
        let mut read = batch.columns().iter();
        let columns = nulls
            .iter()
            .enumerate()
            .map(|(i, null)| match null {
                None => read.next().cloned().expect("a projected column"),
                Some(null) if rows <= BATCH_ROWS => null.slice(0, rows),
                Some(_) => arrow::array::new_null_array(self.schema.field(i).data_type(), rows),
            })
            .collect();
        RecordBatch::try_new(Arc::clone(&self.schema), columns)
            .map_err(|e| JobError::Other(format!("cannot read {}: {e}", self.what)))
    }
}

impl Iterator for ParquetBatches {
    type Item = Result<RecordBatch, JobError>;

    fn next(&mut self) -> Option<Self::Item> {
        let batch = self.reader.next()?;
        Some(
            batch
                .map_err(|e| JobError::Other(format!("cannot read {}: {e}", self.what)))
                .and_then(|b| self.widen(b)),
        )
    }
}

/// Every batch of the Parquet file at `path`, and its schema; `what` names the file in errors
/// (e.g. "the spine").
pub fn read_parquet_file(
    path: &Path,
    what: &str,
) -> Result<(SchemaRef, Vec<RecordBatch>), JobError> {
    let batches = ParquetBatches::open(path, what, None)?;
    let schema = Arc::clone(batches.schema());
    Ok((schema, batches.collect::<Result<Vec<_>, _>>()?))
}

/// The schema of the Parquet file at `path`, from its footer.
pub fn parquet_file_schema(path: &Path, what: &str) -> Result<SchemaRef, JobError> {
    let file = std::fs::File::open(path)
        .map_err(|e| JobError::Other(format!("cannot read {what} `{}`: {e}", path.display())))?;
    ParquetRecordBatchReaderBuilder::try_new(file)
        .map(|b| b.schema().clone())
        .map_err(|e| JobError::Other(format!("cannot read {what} `{}`: {e}", path.display())))
}

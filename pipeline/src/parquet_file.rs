//! Reading Parquet files (spines, event logs, outputs to compare), local or in an object-store
//! feature store: whole, or batch by batch in bounded memory.

use crate::error::JobError;
use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::SchemaRef;
use parquet::arrow::arrow_reader::{
    ArrowReaderBuilder, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::async_reader::ParquetRecordBatchStream;
use parquet::arrow::ProjectionMask;
use quiver_store::object_parquet::ObjectParquetReader;
use quiver_store::StoreDir;
use std::path::Path;
use std::sync::Arc;

/// Rows per batch read.
const BATCH_ROWS: usize = 64 * 1024;

/// The batches of one Parquet file, decoded as they are read. With a projection only the
/// projected columns are decoded; the others are all NULL, so the batches keep the file's
/// columns (all nullable).
pub struct ParquetBatches {
    reader: BatchReader,
    /// The file's schema (all nullable when projected).
    schema: SchemaRef,
    /// Per column of the file: a NULL column to slice for columns not decoded.
    nulls: Option<Vec<Option<ArrayRef>>>,
    /// Rows in the file.
    rows: usize,
    what: String,
}

/// Decodes a local file on this thread, or an object-store file with ranged requests.
enum BatchReader {
    Local(ParquetRecordBatchReader),
    Object(ParquetRecordBatchStream<ObjectParquetReader>),
}

impl Iterator for BatchReader {
    type Item = Result<RecordBatch, String>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            BatchReader::Local(reader) => Some(reader.next()?.map_err(|e| e.to_string())),
            BatchReader::Object(stream) => {
                use futures::StreamExt;
                let batch = futures::executor::block_on(stream.next())?;
                Some(batch.map_err(|e| e.to_string()))
            }
        }
    }
}

/// A reader builder set up for [`ParquetBatches`]: batch size and the projection `select`
/// chose, the batch schema (all nullable when projected), the NULL column of each field left
/// out, and the file's rows.
type Configured<T> = (
    ArrowReaderBuilder<T>,
    SchemaRef,
    Option<Vec<Option<ArrayRef>>>,
    usize,
);

fn configure<T>(
    builder: ArrowReaderBuilder<T>,
    select: impl FnOnce(&SchemaRef) -> Result<Option<Vec<usize>>, JobError>,
) -> Result<Configured<T>, JobError> {
    let rows = usize::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
    let full = builder.schema().clone();
    let builder = builder.with_batch_size(BATCH_ROWS);
    let Some(columns) = select(&full)? else {
        return Ok((builder, full, None, rows));
    };
    let nullable = Arc::new(arrow::datatypes::Schema::new(
        full.fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ));
    let mask = ProjectionMask::roots(builder.parquet_schema(), columns.iter().copied());
    // One all-NULL column per skipped field, sliced for every batch: NULLs cost nothing more
    // than once, however many rows are read.
    let nulls = (0..full.fields().len())
        .map(|i| {
            (!columns.contains(&i))
                .then(|| arrow::array::new_null_array(full.field(i).data_type(), BATCH_ROWS))
        })
        .collect();
    Ok((builder.with_projection(mask), nullable, Some(nulls), rows))
}

impl ParquetBatches {
    /// Opens the Parquet file `name` of the store directory `dir` (local, or read from an
    /// object store with ranged requests), as [`ParquetBatches::open_selecting`] does.
    pub fn open_in(
        dir: &StoreDir,
        name: &str,
        what: &str,
        select: impl FnOnce(&SchemaRef) -> Result<Option<Vec<usize>>, JobError>,
    ) -> Result<Self, JobError> {
        let Some(builder) = quiver_store::object_parquet::open(dir, name) else {
            let path = dir.join(name);
            return Self::open_selecting(path.local_path().unwrap_or(Path::new("")), what, select);
        };
        let what = format!("{what} `{}`", dir.join(name));
        let builder = builder.map_err(|e| JobError::Other(format!("cannot read {what}: {e}")))?;
        let (builder, schema, nulls, rows) = configure(builder, select)?;
        let stream = builder
            .build()
            .map_err(|e| JobError::Other(format!("cannot read {what}: {e}")))?;
        Ok(ParquetBatches {
            reader: BatchReader::Object(stream),
            schema,
            nulls,
            rows,
            what,
        })
    }

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
        let (builder, schema, nulls, rows) = configure(builder, select)?;
        let reader = builder.build().map_err(|e| fail(&e))?;
        Ok(ParquetBatches {
            reader: BatchReader::Local(reader),
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

/// Every batch of the Parquet file `name` of the store directory `dir`, and its schema.
pub fn read_store_file(
    dir: &StoreDir,
    name: &str,
    what: &str,
) -> Result<(SchemaRef, Vec<RecordBatch>), JobError> {
    let batches = ParquetBatches::open_in(dir, name, what, |_| Ok(None))?;
    let schema = Arc::clone(batches.schema());
    Ok((schema, batches.collect::<Result<Vec<_>, _>>()?))
}

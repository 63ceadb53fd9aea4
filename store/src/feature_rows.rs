//! Per-event feature rows as Parquet files: `<dir>/<view>/part-00000.parquet`, rolling files.

use crate::error::StoreError;
use crate::INTERNAL_COLUMN_PREFIX;
use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Rows per Parquet row group.
const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Writes one view's feature rows. Files are written as `*.parquet.tmp` and renamed when
/// complete, so a reader (or a crash) never sees a half-written file under the final name.
pub struct FeatureRowWriter {
    view: String,
    dir: PathBuf,
    schema: SchemaRef,
    keep: Vec<usize>,
    rows_per_file: usize,
    current: Option<(ArrowWriter<File>, PathBuf, usize)>,
    next_file: usize,
    rows: u64,
    files: Vec<PathBuf>,
}

impl FeatureRowWriter {
    /// A writer for view `view` with rows of `schema` under `root/<view>/`. Existing part files
    /// there are removed: a run replaces a view's output.
    pub fn new(
        root: &Path,
        view: &str,
        schema: SchemaRef,
        rows_per_file: usize,
    ) -> Result<Self, StoreError> {
        let dir = root.join(view);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { path, source }
        };
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let path = entry.map_err(io(&dir))?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name.starts_with("part-") {
                std::fs::remove_file(&path).map_err(io(&path))?;
            }
        }
        let keep: Vec<usize> = schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| !f.name().starts_with(INTERNAL_COLUMN_PREFIX))
            .map(|(i, _)| i)
            .collect();
        let schema = Arc::new(schema.project(&keep).map_err(|e| StoreError::Schema {
            view: view.to_string(),
            message: e.to_string(),
        })?);
        Ok(FeatureRowWriter {
            view: view.to_string(),
            dir,
            schema,
            keep,
            rows_per_file: rows_per_file.max(1),
            current: None,
            next_file: 0,
            rows: 0,
            files: Vec::new(),
        })
    }

    /// The schema written (internal columns removed).
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Directory of this view's files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends feature rows.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), StoreError> {
        let batch = batch
            .project(&self.keep)
            .map_err(|e| self.schema_error(e))?;
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), batch.columns().to_vec())
            .map_err(|e| self.schema_error(e))?;
        let mut offset = 0;
        while offset < batch.num_rows() {
            if self.current.is_none() {
                self.open()?;
            }
            let Some((writer, path, rows)) = self.current.as_mut() else {
                break;
            };
            let take = (self.rows_per_file - *rows).min(batch.num_rows() - offset);
            writer
                .write(&batch.slice(offset, take))
                .map_err(|e| StoreError::Parquet {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            *rows += take;
            offset += take;
            self.rows += take as u64;
            if *rows >= self.rows_per_file {
                self.close_current()?;
            }
        }
        Ok(())
    }

    fn schema_error(&self, e: impl ToString) -> StoreError {
        StoreError::Schema {
            view: self.view.clone(),
            message: e.to_string(),
        }
    }

    fn open(&mut self) -> Result<(), StoreError> {
        let path = self
            .dir
            .join(format!("part-{:05}.parquet.tmp", self.next_file));
        self.next_file += 1;
        let file = File::create(&path).map_err(|source| StoreError::Io {
            path: path.clone(),
            source,
        })?;
        // Row groups of 128k rows keep the writer's buffer small (it holds a whole row group
        // in memory); dictionaries only pay off for strings (keys), not for feature values.
        let mut props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .set_dictionary_enabled(false);
        for field in self.schema.fields() {
            if matches!(
                field.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            ) {
                props = props
                    .set_column_dictionary_enabled(ColumnPath::from(field.name().as_str()), true);
            }
        }
        let props = props.build();
        let writer =
            ArrowWriter::try_new(file, Arc::clone(&self.schema), Some(props)).map_err(|e| {
                StoreError::Parquet {
                    path: path.clone(),
                    message: e.to_string(),
                }
            })?;
        self.current = Some((writer, path, 0));
        Ok(())
    }

    fn close_current(&mut self) -> Result<(), StoreError> {
        if let Some((writer, tmp, _)) = self.current.take() {
            writer.close().map_err(|e| StoreError::Parquet {
                path: tmp.clone(),
                message: e.to_string(),
            })?;
            let done = tmp.with_extension("");
            std::fs::rename(&tmp, &done).map_err(|source| StoreError::Io {
                path: done.clone(),
                source,
            })?;
            self.files.push(done);
        }
        Ok(())
    }

    /// Finishes the last file and returns every file written.
    pub fn finish(mut self) -> Result<Vec<PathBuf>, StoreError> {
        self.close_current()?;
        Ok(self.files)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, UInt64Array};
    use arrow::datatypes::{DataType, Field};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    #[test]
    fn rolls_files_and_drops_internal_columns() {
        let dir = tempfile::tempdir().unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("x", DataType::Int64, false),
            Field::new("__quiver_offset", DataType::UInt64, false),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from_iter_values(0..25)),
                Arc::new(UInt64Array::from_iter_values(0..25)),
            ],
        )
        .unwrap();
        let mut w = FeatureRowWriter::new(dir.path(), "v", schema, 10).unwrap();
        w.write(&batch).unwrap();
        let files = w.finish().unwrap();
        assert_eq!(files.len(), 3);
        let mut total = 0;
        for f in files {
            let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(f).unwrap())
                .unwrap()
                .build()
                .unwrap();
            for b in reader {
                let b = b.unwrap();
                assert_eq!(b.num_columns(), 1);
                total += b.num_rows();
            }
        }
        assert_eq!(total, 25);
    }
}

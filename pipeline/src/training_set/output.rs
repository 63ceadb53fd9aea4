//! The training set's Parquet file, written batch by batch through a temporary file that is
//! renamed into place at the end, so a failed export leaves no partial file behind (and an
//! earlier file at the path stays until the new one is complete); encrypted (footer and
//! columns, AES-GCM) under a key when one is given.

use crate::error::JobError;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::{WriterProperties, WriterPropertiesBuilder};
use quiver_store::column_layout::lay_out_columns;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Rows of a training set's row group at most (parquet-rs's default).
pub(crate) const ROW_GROUP_ROWS: usize = 1 << 20;

/// About the bytes a row of a training set takes in its writer's row group: the spine's
/// columns (`spine`; strings and other variable widths counted as 32 bytes) and `features`
/// feature columns of up to 16 bytes.
pub(crate) fn row_bytes(spine: &arrow::datatypes::Schema, features: usize) -> usize {
    let spine_bytes: usize = (spine.fields().iter())
        .map(|f| f.data_type().primitive_width().unwrap_or(32) + 1)
        .sum();
    spine_bytes + features * 17
}

/// A training set being written.
pub(crate) struct TrainingSetWriter {
    /// `None` once a step failed.
    state: Option<State>,
    path: PathBuf,
    tmp: PathBuf,
    /// Moved into place: the temporary file is gone.
    finished: bool,
}

/// Where a [`TrainingSetWriter`] is: its Parquet writer starts with the first rows, whose
/// values decide how each column is laid out (`quiver_store::column_layout`).
enum State {
    /// The temporary file is created; nothing is written yet.
    Created {
        file: File,
        schema: SchemaRef,
        properties: WriterPropertiesBuilder,
    },
    Writing(ArrowWriter<File>),
}

impl TrainingSetWriter {
    fn fail(path: &Path, e: impl std::fmt::Display) -> JobError {
        JobError::Other(format!("cannot write `{}`: {e}", path.display()))
    }

    /// Starts the file at `path` with `schema`, in row groups of at most `row_group_rows`
    /// rows (the writer holds one in memory).
    pub fn create(
        path: &Path,
        schema: SchemaRef,
        key: Option<&[u8]>,
        row_group_rows: usize,
    ) -> Result<Self, JobError> {
        let fail = |e: &dyn std::fmt::Display| Self::fail(path, e);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
        }
        let mut properties =
            WriterProperties::builder().set_max_row_group_row_count(Some(row_group_rows.max(1)));
        if let Some(key) = key {
            let encryption =
                parquet::encryption::encrypt::FileEncryptionProperties::builder(key.to_vec())
                    .build()
                    .map_err(|e| fail(&e))?;
            properties = properties.with_file_encryption_properties(encryption);
        }
        let tmp = path.with_extension("parquet.tmp");
        let file = File::create(&tmp).map_err(|e| fail(&e))?;
        Ok(TrainingSetWriter {
            state: Some(State::Created {
                file,
                schema,
                properties,
            }),
            path: path.to_path_buf(),
            tmp,
            finished: false,
        })
    }

    /// The Parquet writer, started with its columns laid out for `sample` (the first rows)
    /// if it has not started yet, and the path errors name.
    fn writer(
        &mut self,
        sample: Option<&RecordBatch>,
    ) -> Result<(&mut ArrowWriter<File>, &Path), JobError> {
        self.state = match self.state.take() {
            Some(State::Created {
                file,
                schema,
                properties,
            }) => {
                let columns = sample.map(RecordBatch::columns);
                let properties = lay_out_columns(properties, &schema, columns).build();
                let writer = ArrowWriter::try_new(file, schema, Some(properties))
                    .map_err(|e| Self::fail(&self.path, e))?;
                Some(State::Writing(writer))
            }
            other => other,
        };
        match &mut self.state {
            Some(State::Writing(writer)) => Ok((writer, &self.path)),
            _ => Err(Self::fail(&self.path, "an earlier write failed")),
        }
    }

    /// Appends `batch`.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), JobError> {
        let (writer, path) = self.writer(Some(batch))?;
        writer.write(batch).map_err(|e| Self::fail(path, e))
    }

    /// Closes the file and moves it into place.
    pub fn finish(mut self) -> Result<(), JobError> {
        self.writer(None)?;
        let Some(State::Writing(writer)) = self.state.take() else {
            return Err(Self::fail(&self.path, "an earlier write failed"));
        };
        writer.close().map_err(|e| Self::fail(&self.path, e))?;
        std::fs::rename(&self.tmp, &self.path).map_err(|e| Self::fail(&self.path, e))?;
        self.finished = true;
        Ok(())
    }
}

impl Drop for TrainingSetWriter {
    fn drop(&mut self) {
        // Not finished: the partial file goes.
        if !self.finished {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

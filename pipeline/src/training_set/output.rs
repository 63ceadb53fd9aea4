//! The training set's Parquet file, written batch by batch through a temporary file that is
//! renamed into place at the end, so a failed export leaves no partial file behind (and an
//! earlier file at the path stays until the new one is complete); encrypted (footer and
//! columns, AES-GCM) under a key when one is given.

use crate::error::JobError;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use std::fs::File;
use std::path::{Path, PathBuf};

/// A training set being written.
pub(crate) struct TrainingSetWriter {
    writer: Option<ArrowWriter<File>>,
    path: PathBuf,
    tmp: PathBuf,
}

impl TrainingSetWriter {
    fn fail(path: &Path, e: impl std::fmt::Display) -> JobError {
        JobError::Other(format!("cannot write `{}`: {e}", path.display()))
    }

    /// Starts the file at `path` with `schema`.
    pub fn create(path: &Path, schema: SchemaRef, key: Option<&[u8]>) -> Result<Self, JobError> {
        let fail = |e: &dyn std::fmt::Display| Self::fail(path, e);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
        }
        let mut properties = parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY);
        if let Some(key) = key {
            let encryption =
                parquet::encryption::encrypt::FileEncryptionProperties::builder(key.to_vec())
                    .build()
                    .map_err(|e| fail(&e))?;
            properties = properties.with_file_encryption_properties(encryption);
        }
        let tmp = path.with_extension("parquet.tmp");
        let file = File::create(&tmp).map_err(|e| fail(&e))?;
        let writer = ArrowWriter::try_new(file, schema, Some(properties.build()));
        let writer = match writer {
            Ok(writer) => writer,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(fail(&e));
            }
        };
        Ok(TrainingSetWriter {
            writer: Some(writer),
            path: path.to_path_buf(),
            tmp,
        })
    }

    /// Appends `batch`.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), JobError> {
        let writer = self.writer.as_mut().expect("open until finished");
        writer.write(batch).map_err(|e| Self::fail(&self.path, e))
    }

    /// Closes the file and moves it into place.
    pub fn finish(mut self) -> Result<(), JobError> {
        let writer = self.writer.take().expect("open until finished");
        writer.close().map_err(|e| Self::fail(&self.path, e))?;
        std::fs::rename(&self.tmp, &self.path).map_err(|e| Self::fail(&self.path, e))
    }
}

impl Drop for TrainingSetWriter {
    fn drop(&mut self) {
        // Not finished: the partial file goes.
        if self.writer.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

//! File input: each resolved file is a partition, read by ranges and decoded on a blocking
//! thread as it is sent (Parquet row group by row group, NDJSON and CSV piece by piece).

use crate::error::JobError;
use crate::source::connector::{ReaderMessage, ReaderSender, SourceConnector};
use crate::source::PartitionProgress;
use quiver_connectors::{
    decode_parquet_object, decode_text_object, in_offset_order, DeclaredSchema, FileFormat,
    InputFiles,
};
use std::sync::Arc;

/// Files as a source: one partition per file, in name order.
pub struct FileConnector {
    files: Arc<InputFiles>,
    format: Option<FileFormat>,
    schema: DeclaredSchema,
    batch_size: usize,
    max_open: usize,
    fingerprint: String,
    /// The rows of every file, when all are Parquet (their footers say).
    rows: Option<u64>,
}

/// Parquet footers read at once while the files are resolved.
const FOOTERS_AT_ONCE: usize = 16;

/// The rows of every file of `files` (in `format`, else as its extension says) when all are
/// Parquet, from their footers alone (the input's size, known before it is read); `None`
/// otherwise, or when a footer cannot be read (reading the file then says why).
async fn parquet_rows(files: &InputFiles, format: Option<FileFormat>) -> Option<u64> {
    use futures::{StreamExt, TryStreamExt};
    let names = files.names();
    let all_parquet = (names.iter())
        .all(|name| format.or_else(|| FileFormat::from_path(name)) == Some(FileFormat::Parquet));
    if !all_parquet {
        return None;
    }
    futures::stream::iter(0..names.len())
        .map(|i| files.parquet_rows(i))
        .buffer_unordered(FOOTERS_AT_ONCE)
        .try_fold(0u64, |total, rows| async move { Ok(total + rows) })
        .await
        .ok()
}

impl FileConnector {
    /// Resolves `location` (path, directory, glob or URL; `options` for object stores).
    pub async fn resolve(
        location: &str,
        options: &std::collections::BTreeMap<String, String>,
        format: Option<FileFormat>,
        schema: DeclaredSchema,
        batch_size: usize,
        max_open: usize,
    ) -> Result<Self, JobError> {
        let files = InputFiles::resolve(location, options).await?;
        let rows = parquet_rows(&files, format).await;
        let fingerprint = serde_json::json!({
            "files": location,
            "format": format.map(|f| f.as_str()),
            "batch_size": batch_size,
            "max_open_files": max_open,
            "schema": format!("{schema:?}"),
        })
        .to_string();
        Ok(FileConnector {
            files: Arc::new(files),
            format,
            schema,
            batch_size,
            max_open: max_open.max(1),
            fingerprint,
            rows,
        })
    }
}

impl SourceConnector for FileConnector {
    fn partition_names(&self) -> Vec<String> {
        self.files.names()
    }

    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    fn max_open(&self) -> usize {
        self.max_open
    }

    fn expected_events(&self) -> Option<u64> {
        self.rows
    }

    fn counts_files(&self) -> bool {
        true
    }

    fn spawn_reader(&self, partition: usize, progress: PartitionProgress, tx: ReaderSender) {
        tokio::spawn(read_file(
            Arc::clone(&self.files),
            partition,
            progress,
            self.format,
            self.schema.clone(),
            self.batch_size,
            tx,
        ));
    }
}

/// Reads one file and sends its records after the resume position, decoding on a blocking
/// thread as it reads by ranges: Parquet row group by row group, batch by batch; NDJSON and
/// CSV by pieces of `TEXT_PIECE_BYTES`. Memory holds a row group's columns or a piece and what
/// was decoded of it, never the file.
async fn read_file(
    files: Arc<InputFiles>,
    index: usize,
    progress: PartitionProgress,
    format: Option<FileFormat>,
    schema: DeclaredSchema,
    batch_size: usize,
    tx: ReaderSender,
) {
    let name = progress.name.clone();
    let position = progress.position;
    let sender = tx.clone();
    let result = async {
        let format = format.or_else(|| FileFormat::from_path(&name)).ok_or_else(|| {
            JobError::Other(format!(
                "cannot tell the format of `{name}` from its extension: set `format: ndjson | csv | parquet` under source.files"
            ))
        })?;
        let object = files.ranges(index).await?;
        let partition = name.clone();
        let runtime = tokio::runtime::Handle::current();
        // Decoding and sending happen on a blocking thread; the channel's bound holds it back.
        tokio::task::spawn_blocking(move || {
            let send = |message| sender.blocking_send(Ok(message)).is_ok();
            let items = |chunk| {
                in_offset_order(chunk).into_iter().all(|item| {
                    item.after(position)
                        .is_none_or(|item| send(ReaderMessage::Item(item)))
                })
            };
            if send(ReaderMessage::Opened(object.size())) {
                match format {
                    FileFormat::Parquet => {
                        let object = (partition.as_str(), object);
                        decode_parquet_object(object, &schema, batch_size, &runtime, items)?
                    }
                    _ => {
                        let object = (partition.as_str(), &object);
                        decode_text_object(format, object, &schema, batch_size, &runtime, items)?
                    }
                }
            }
            Ok::<_, JobError>(())
        })
        .await
        .map_err(|e| JobError::Other(format!("decoding `{name}` stopped: {e}")))?
    }
    .await;
    let last = match result {
        Ok(()) => Ok(ReaderMessage::Done),
        Err(e) => Err(e),
    };
    let _ = tx.send(last).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, RecordBatch};
    use std::collections::BTreeMap;

    fn write_parquet(path: &std::path::Path, rows: i64) {
        let batch = RecordBatch::try_from_iter([(
            "x",
            Arc::new(Int64Array::from_iter_values(0..rows)) as _,
        )])
        .unwrap();
        let file = std::fs::File::create(path).unwrap();
        let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    }

    async fn rows_of(location: &std::path::Path, format: Option<FileFormat>) -> Option<u64> {
        let files = InputFiles::resolve(location.to_str().unwrap(), &BTreeMap::new())
            .await
            .unwrap();
        parquet_rows(&files, format).await
    }

    #[tokio::test]
    async fn parquet_inputs_know_their_rows_before_they_are_read() {
        let dir = tempfile::tempdir().unwrap();
        write_parquet(&dir.path().join("a.parquet"), 1_000);
        write_parquet(&dir.path().join("b.parquet"), 234);
        assert_eq!(rows_of(dir.path(), None).await, Some(1_234));
        assert_eq!(
            rows_of(&dir.path().join("b.parquet"), None).await,
            Some(234)
        );

        // A file of another format, or a footer that cannot be read: not known (reading the
        // files then says what is wrong with them).
        std::fs::write(dir.path().join("c.ndjson"), "{\"x\": 1}\n").unwrap();
        assert_eq!(rows_of(dir.path(), None).await, None);
        std::fs::remove_file(dir.path().join("c.ndjson")).unwrap();
        std::fs::write(dir.path().join("d.parquet"), b"not parquet at all").unwrap();
        assert_eq!(rows_of(dir.path(), None).await, None);
        let only = dir.path().join("a.parquet");
        assert_eq!(rows_of(&only, Some(FileFormat::Ndjson)).await, None);
    }
}

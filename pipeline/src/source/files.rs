//! File input: each resolved file is a partition, read whole and decoded on a blocking thread
//! (Parquet batch by batch as it is sent, the others whole).

use crate::error::JobError;
use crate::source::connector::{ReaderMessage, ReaderSender, SourceConnector};
use crate::source::PartitionProgress;
use quiver_connectors::{
    decode_file, decode_parquet_object, in_offset_order, DeclaredSchema, FileFormat, InputFiles,
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

/// What is read of a file before decoding.
enum Content {
    /// Parquet: the object, read by ranges as decoded.
    Ranged(quiver_connectors::object_ranges::ObjectRanges),
    /// NDJSON and CSV: the whole file.
    Whole(quiver_connectors::Bytes),
}

/// Reads one file and sends its records after the resume position, decoding on a blocking
/// thread: Parquet by ranged reads, row group by row group, batch by batch as decoded; NDJSON
/// and CSV read and decoded whole.
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
        let content = match format {
            FileFormat::Parquet => Content::Ranged(files.ranges(index).await?),
            _ => Content::Whole(files.read(index).await?),
        };
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
            match content {
                // Batch by batch as decoded: memory holds a row group's columns and a batch.
                Content::Ranged(object) => {
                    if send(ReaderMessage::Opened(object.size())) {
                        let object = (partition.as_str(), object);
                        decode_parquet_object(object, &schema, batch_size, &runtime, items)?;
                    }
                }
                Content::Whole(bytes) => {
                    let decoded = decode_file(format, &partition, &bytes, &schema, batch_size)?;
                    if send(ReaderMessage::Opened(bytes.len() as u64)) {
                        items(decoded);
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

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

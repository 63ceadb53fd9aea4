//! File input: each resolved file is a partition, read whole and decoded on a blocking thread
//! (Parquet batch by batch as it is sent, the others whole).

use crate::error::JobError;
use crate::source::connector::{ReaderMessage, ReaderSender, SourceConnector};
use crate::source::PartitionProgress;
use quiver_connectors::{decode_file, in_offset_order, DeclaredSchema, FileFormat, InputFiles};
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

/// Reads one file whole, decodes it on a blocking thread and sends its records after the
/// resume position: NDJSON and CSV once decoded, Parquet batch by batch as decoded.
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
    let result = async {
        let bytes = files.read(index).await?;
        let format = format.or_else(|| FileFormat::from_path(&name)).ok_or_else(|| {
            JobError::Other(format!(
                "cannot tell the format of `{name}` from its extension: set `format: ndjson | csv | parquet` under source.files"
            ))
        })?;
        let size = bytes.len() as u64;
        let partition = name.clone();
        if format == FileFormat::Parquet {
            // Parquet streams: each batch is sent as it is decoded (the channel's bound holds
            // the decoder back), so memory holds the file and a few batches, not its rows.
            if tx.send(Ok(ReaderMessage::Opened(size))).await.is_err() {
                return Ok(None);
            }
            let sender = tx.clone();
            let position = progress.position;
            tokio::task::spawn_blocking(move || {
                quiver_connectors::decode_parquet_chunks(
                    &partition,
                    bytes,
                    &schema,
                    batch_size,
                    |chunk| {
                        in_offset_order(chunk).into_iter().all(|item| match item.after(position) {
                            Some(item) => sender.blocking_send(Ok(ReaderMessage::Item(item))).is_ok(),
                            None => true,
                        })
                    },
                )
            })
            .await
            .map_err(|e| JobError::Other(format!("decoding `{name}` stopped: {e}")))??;
            return Ok(None);
        }
        let decoded = tokio::task::spawn_blocking(move || {
            decode_file(format, &partition, &bytes, &schema, batch_size)
        })
        .await
        .map_err(|e| JobError::Other(format!("decoding `{name}` stopped: {e}")))??;
        Ok::<_, JobError>(Some((size, decoded)))
    }
    .await;
    let (size, decoded) = match result {
        Ok(Some(x)) => x,
        Ok(None) => {
            // Streamed (Parquet): everything is sent.
            let _ = tx.send(Ok(ReaderMessage::Done)).await;
            return;
        }
        Err(e) => {
            let _ = tx.send(Err(e)).await;
            return;
        }
    };
    if tx.send(Ok(ReaderMessage::Opened(size))).await.is_err() {
        return;
    }
    for item in in_offset_order(decoded) {
        if let Some(item) = item.after(progress.position) {
            if tx.send(Ok(ReaderMessage::Item(item))).await.is_err() {
                return;
            }
        }
    }
    let _ = tx.send(Ok(ReaderMessage::Done)).await;
}

//! Starting the configured source: generated or file input, decoded on blocking threads and
//! handed to the job through a bounded channel (back-pressure instead of unbounded buffering).

use crate::compile::CompiledPipeline;
use crate::error::JobError;
use crate::outputs::Outputs;
use indicatif::ProgressBar;
use quiver_connectors::{decode_file, Datagen, DeadLetter, FileFormat, InputFiles, SourceBatch};
use tokio::sync::mpsc;

/// Something the source produced.
pub enum SourceItem {
    /// Decoded rows.
    Batch(SourceBatch),
    /// Records that could not be decoded.
    DeadLetters(Vec<DeadLetter>),
    /// A file was fully read.
    FileDone {
        /// Its name.
        name: String,
    },
}

/// Overrides of the configured source from the command line.
#[derive(Debug, Clone, Default)]
pub struct SourceOverrides {
    /// Number of generated events (datagen only).
    pub events: Option<u64>,
    /// Read these files instead of the configured source; needs `files.schema` or the datagen
    /// schema (files written by `quiver generate`).
    pub input: Option<String>,
}

/// A running source.
pub struct SourceHandle {
    /// Items in order; an `Err` ends the stream.
    pub items: mpsc::Receiver<Result<SourceItem, JobError>>,
    /// Total events when known in advance (generator).
    pub expected_events: Option<u64>,
    /// Number of files, for file input.
    pub files: Option<usize>,
    /// Records read so far (decoded rows and dead letters).
    pub events: u64,
    files_done: usize,
}

impl SourceHandle {
    /// The next batch of decoded rows, or `None` at the end of the input. On the way, decoding
    /// dead letters are written to `outputs`, and `bar` counts records and shows file progress.
    pub async fn next_batch(
        &mut self,
        outputs: &mut Outputs,
        bar: &ProgressBar,
    ) -> Result<Option<SourceBatch>, JobError> {
        while let Some(item) = self.items.recv().await {
            match item? {
                SourceItem::DeadLetters(records) => {
                    self.events += records.len() as u64;
                    bar.inc(records.len() as u64);
                    outputs.write_dead_letters(&records)?;
                }
                SourceItem::FileDone { name } => {
                    self.files_done += 1;
                    if let Some(total) = self.files {
                        bar.set_message(format!("file {}/{total} {name}", self.files_done));
                    }
                }
                SourceItem::Batch(batch) => {
                    let rows = batch.batch.num_rows() as u64;
                    self.events += rows;
                    bar.inc(rows);
                    return Ok(Some(batch));
                }
            }
        }
        Ok(None)
    }
}

/// Starts reading.
pub async fn start(
    pipeline: &CompiledPipeline,
    overrides: &SourceOverrides,
) -> Result<SourceHandle, JobError> {
    let (tx, items) = mpsc::channel(8);
    let source = &pipeline.loaded.config.source;
    let files = overrides.input.clone().map(|location| {
        let options = source
            .files
            .as_ref()
            .map(|f| f.options.clone())
            .unwrap_or_default();
        let format = source.files.as_ref().and_then(|f| f.format);
        let batch_size = source.files.as_ref().map_or(8192, |f| f.batch_size);
        (location, options, format, batch_size)
    });
    let files = files.or_else(|| {
        source.files.as_ref().map(|f| {
            (
                f.location.clone(),
                f.options.clone(),
                f.format,
                f.batch_size,
            )
        })
    });
    if let Some((location, options, format, batch_size)) = files {
        let input = InputFiles::resolve(&location, &options).await?;
        let count = input.len();
        let schema = pipeline.source_schema.clone();
        tokio::spawn(async move {
            for (index, name) in input.names().into_iter().enumerate() {
                let result = async {
                    let bytes = input.read(index).await?;
                    let format = format.or_else(|| FileFormat::from_path(&name)).ok_or_else(|| {
                        JobError::Other(format!(
                            "cannot tell the format of `{name}` from its extension: set `format: ndjson | csv | parquet` under source.files"
                        ))
                    })?;
                    let schema = schema.clone();
                    let partition = name.clone();
                    tokio::task::spawn_blocking(move || decode_file(format, &partition, &bytes, &schema, batch_size))
                        .await
                        .map_err(|e| JobError::Other(format!("decoding `{name}` stopped: {e}")))?
                        .map_err(JobError::from)
                }
                .await;
                match result {
                    Ok(decoded) => {
                        if !decoded.dead_letters.is_empty()
                            && tx
                                .send(Ok(SourceItem::DeadLetters(decoded.dead_letters)))
                                .await
                                .is_err()
                        {
                            return;
                        }
                        for batch in decoded.batches {
                            if tx.send(Ok(SourceItem::Batch(batch))).await.is_err() {
                                return;
                            }
                        }
                        if tx.send(Ok(SourceItem::FileDone { name })).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
        });
        return Ok(SourceHandle {
            items,
            expected_events: None,
            files: Some(count),
            events: 0,
            files_done: 0,
        });
    }
    let mut config = source.datagen.clone().unwrap_or_default();
    if let Some(events) = overrides.events {
        config.events = events;
    }
    let expected = config.events;
    let generator = Datagen::new(config)?;
    tokio::task::spawn_blocking(move || {
        for batch in generator {
            if tx.blocking_send(Ok(SourceItem::Batch(batch))).is_err() {
                return;
            }
        }
    });
    Ok(SourceHandle {
        items,
        expected_events: Some(expected),
        files: None,
        events: 0,
        files_done: 0,
    })
}

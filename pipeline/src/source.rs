//! The configured source as a set of partitions: every input file is one partition (the
//! generator is one), each read on its own task and handed over through a small bounded
//! channel (back-pressure instead of unbounded buffering).
//!
//! Partitions are read with watermark alignment: the next batch always comes from the open
//! partition with the lowest watermark, so partitions advance together in event time and the
//! order of arrival is a function of the data alone. That makes a resumed run replay exactly
//! the arrival order (and so the late events) of an uninterrupted one.

use crate::compile::CompiledPipeline;
use crate::error::JobError;
use crate::watermark::{PartitionStatus, Watermarks};
use quiver_connectors::{
    decode_file, in_offset_order, Datagen, DatagenConfig, DeclaredSchema, FileFormat, InputFiles,
    PartitionItem, DATAGEN_PARTITION,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Overrides of the configured source from the command line.
#[derive(Debug, Clone, Default)]
pub struct SourceOverrides {
    /// Number of generated events (datagen only).
    pub events: Option<u64>,
    /// Read these files instead of the configured source; needs `files.schema` or the datagen
    /// schema (files written by `quiver generate`).
    pub input: Option<String>,
}

/// Progress of one partition, as a checkpoint keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionProgress {
    /// Partition name: the file's path or URL, or `datagen`.
    pub name: String,
    /// Size in bytes of the file when it was first read (to detect a changed input on resume).
    pub size: Option<u64>,
    /// Every record at or before this offset has been consumed (`None`: nothing yet).
    pub position: Option<u64>,
}

/// What a partition reader sends.
enum ReaderMessage {
    /// The file was read; its size.
    Opened(u64),
    /// Records in offset order.
    Item(PartitionItem),
    /// The partition ended.
    Done,
}

type Reader = mpsc::Receiver<Result<ReaderMessage, JobError>>;

/// How the partitions are read.
#[derive(Clone)]
enum Input {
    Files {
        files: Arc<InputFiles>,
        format: Option<FileFormat>,
        schema: DeclaredSchema,
        batch_size: usize,
        max_open: usize,
    },
    Datagen(DatagenConfig),
}

/// A running source.
pub struct Source {
    input: Input,
    /// Per partition progress, in partition order (file name order).
    pub partitions: Vec<PartitionProgress>,
    readers: Vec<Option<Reader>>,
    /// What identifies this input: a resumed run must read the same one.
    pub fingerprint: String,
    /// Total events when known in advance (generator).
    pub expected_events: Option<u64>,
    /// Number of files, for file input.
    pub files: Option<usize>,
    /// Files fully read so far.
    pub files_done: usize,
    /// Records consumed so far (decoded rows and dead letters; restored on resume).
    pub events: u64,
    started: Instant,
}

/// Something the source produced.
pub enum SourceEvent {
    /// Records of partition `partition`.
    Item(usize, PartitionItem),
    /// Partition `partition` (a file) was fully read.
    Finished(usize),
}

impl Source {
    /// The partitions' names, in partition order (feature rows' `_source_partition`).
    pub fn partition_names(&self) -> Vec<String> {
        self.partitions.iter().map(|p| p.name.clone()).collect()
    }

    /// Resolves the configured input (or the override) into partitions, none of them open yet.
    pub async fn resolve(
        pipeline: &CompiledPipeline,
        overrides: &SourceOverrides,
    ) -> Result<Self, JobError> {
        let source = &pipeline.loaded.config.source;
        let files = source.files.as_ref();
        let location = overrides
            .input
            .clone()
            .or_else(|| files.map(|f| f.location.clone()));
        if let Some(location) = location {
            let options = files.map(|f| f.options.clone()).unwrap_or_default();
            let format = files.and_then(|f| f.format);
            let batch_size = files.map_or(8192, |f| f.batch_size);
            let max_open = files.map_or(16, |f| f.max_open_files).max(1);
            let input = InputFiles::resolve(&location, &options).await?;
            let names = input.names();
            let fingerprint = serde_json::json!({
                "files": location,
                "format": format.map(|f| f.as_str()),
                "batch_size": batch_size,
                "max_open_files": max_open,
                "schema": format!("{:?}", pipeline.source_schema),
            })
            .to_string();
            return Ok(Source {
                partitions: names
                    .iter()
                    .map(|name| PartitionProgress {
                        name: name.clone(),
                        size: None,
                        position: None,
                    })
                    .collect(),
                readers: names.iter().map(|_| None).collect(),
                files: Some(names.len()),
                input: Input::Files {
                    files: Arc::new(input),
                    format,
                    schema: pipeline.source_schema.clone(),
                    batch_size,
                    max_open,
                },
                fingerprint,
                expected_events: None,
                files_done: 0,
                events: 0,
                started: Instant::now(),
            });
        }
        let mut config = source.datagen.clone().unwrap_or_default();
        if let Some(events) = overrides.events {
            config.events = events;
        }
        config.validate()?;
        let fingerprint = serde_json::json!({ "datagen": &config }).to_string();
        Ok(Source {
            partitions: vec![PartitionProgress {
                name: DATAGEN_PARTITION.to_string(),
                size: None,
                position: None,
            }],
            readers: vec![None],
            expected_events: Some(config.events),
            files: None,
            input: Input::Datagen(config),
            fingerprint,
            files_done: 0,
            events: 0,
            started: Instant::now(),
        })
    }

    /// Wall-clock time since the source started (the clock of partition idleness).
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Whether partitions are live (can go idle). Files and the generator are not.
    pub fn is_live(&self) -> bool {
        false
    }

    /// Restores progress from a checkpoint: partitions must be the same, in the same order.
    pub fn restore(
        &mut self,
        partitions: Vec<PartitionProgress>,
        events: u64,
        files_done: usize,
    ) -> Result<(), JobError> {
        let now: Vec<&str> = self.partitions.iter().map(|p| p.name.as_str()).collect();
        let then: Vec<&str> = partitions.iter().map(|p| p.name.as_str()).collect();
        if now != then {
            let added: Vec<&&str> = now.iter().filter(|n| !then.contains(n)).collect();
            let removed: Vec<&&str> = then.iter().filter(|n| !now.contains(n)).collect();
            return Err(JobError::Checkpoint(format!(
                "the input changed since the checkpoint: new files {added:?}, missing files {removed:?}; \
                 run with --fresh to start over on the new input"
            )));
        }
        self.partitions = partitions;
        self.events = events;
        self.files_done = files_done;
        Ok(())
    }

    /// Opens the partitions that should be open, given their statuses in `watermarks`: every
    /// partition already open, then pending ones in name order up to the open-file limit.
    pub fn open_partitions(&mut self, watermarks: &mut Watermarks) {
        let max_open = match &self.input {
            Input::Files { max_open, .. } => *max_open,
            Input::Datagen(_) => 1,
        };
        let mut open = (0..self.partitions.len())
            .filter(|&q| watermarks.status(q) == Some(PartitionStatus::Open))
            .count();
        for p in 0..self.partitions.len() {
            match watermarks.status(p) {
                Some(PartitionStatus::Open) if self.readers[p].is_none() => self.spawn_reader(p),
                Some(PartitionStatus::Pending) if open < max_open => {
                    watermarks.open(p, self.now());
                    self.spawn_reader(p);
                    open += 1;
                }
                _ => {}
            }
        }
    }

    fn spawn_reader(&mut self, partition: usize) {
        let (tx, rx) = mpsc::channel(2);
        let progress = self.partitions[partition].clone();
        match self.input.clone() {
            Input::Files {
                files,
                format,
                schema,
                batch_size,
                ..
            } => {
                tokio::spawn(read_file(
                    files, partition, progress, format, schema, batch_size, tx,
                ));
            }
            Input::Datagen(config) => {
                tokio::task::spawn_blocking(move || generate(config, progress.position, tx));
            }
        }
        self.readers[partition] = Some(rx);
    }

    /// The next records, from the open partition with the lowest watermark; `None` when every
    /// partition has ended.
    pub async fn next(
        &mut self,
        watermarks: &mut Watermarks,
    ) -> Result<Option<SourceEvent>, JobError> {
        loop {
            let Some(p) = watermarks.next_to_read() else {
                return Ok(None);
            };
            let Some(reader) = self.readers[p].as_mut() else {
                self.spawn_reader(p);
                continue;
            };
            let message = reader.recv().await.ok_or_else(|| {
                JobError::Other(format!(
                    "the reader of `{}` stopped unexpectedly",
                    self.partitions[p].name
                ))
            })??;
            match message {
                ReaderMessage::Opened(size) => {
                    let progress = &mut self.partitions[p];
                    if progress.size.is_some_and(|s| s != size) {
                        return Err(JobError::Checkpoint(format!(
                            "input file `{}` changed since the checkpoint ({} bytes then, {size} now); \
                             run with --fresh to start over on the new input",
                            progress.name,
                            progress.size.unwrap_or_default()
                        )));
                    }
                    progress.size = Some(size);
                }
                ReaderMessage::Item(item) => {
                    let progress = &mut self.partitions[p];
                    progress.position = item.last_offset().max(progress.position);
                    self.events += item.len() as u64;
                    return Ok(Some(SourceEvent::Item(p, item)));
                }
                ReaderMessage::Done => {
                    self.readers[p] = None;
                    watermarks.finish(p);
                    if self.files.is_some() {
                        self.files_done += 1;
                    }
                    self.open_partitions(watermarks);
                    return Ok(Some(SourceEvent::Finished(p)));
                }
            }
        }
    }
}

/// Reads one file whole, decodes it on a blocking thread and sends its records after the
/// resume position.
async fn read_file(
    files: Arc<InputFiles>,
    index: usize,
    progress: PartitionProgress,
    format: Option<FileFormat>,
    schema: DeclaredSchema,
    batch_size: usize,
    tx: mpsc::Sender<Result<ReaderMessage, JobError>>,
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
        let decoded = tokio::task::spawn_blocking(move || {
            decode_file(format, &partition, &bytes, &schema, batch_size)
        })
        .await
        .map_err(|e| JobError::Other(format!("decoding `{name}` stopped: {e}")))??;
        Ok::<_, JobError>((size, decoded))
    }
    .await;
    let (size, decoded) = match result {
        Ok(x) => x,
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

/// Runs the generator (deterministic: a resumed run regenerates and skips what was consumed).
fn generate(
    config: DatagenConfig,
    position: Option<u64>,
    tx: mpsc::Sender<Result<ReaderMessage, JobError>>,
) {
    let generator = match Datagen::new(config) {
        Ok(g) => g,
        Err(e) => {
            let _ = tx.blocking_send(Err(e.into()));
            return;
        }
    };
    for batch in generator {
        if let Some(item) = PartitionItem::rows(batch).after(position) {
            if tx.blocking_send(Ok(ReaderMessage::Item(item))).is_err() {
                return;
            }
        }
    }
    let _ = tx.blocking_send(Ok(ReaderMessage::Done));
}

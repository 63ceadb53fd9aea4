//! The configured source as a set of partitions: every input file is one partition (the
//! generator is one), each read on its own task and handed over through a small bounded
//! channel (back-pressure instead of unbounded buffering).
//!
//! Partitions are read with watermark alignment: the next batch always comes from the open
//! partition with the lowest watermark, so partitions advance together in event time and the
//! order of arrival is a function of the data alone. That makes a resumed run replay exactly
//! the arrival order (and so the late events) of an uninterrupted one.

mod connector;
mod datagen;
mod files;

pub use connector::{ReaderMessage, ReaderSender, SourceConnector};
pub use datagen::DatagenConnector;
pub use files::FileConnector;

use crate::compile::CompiledPipeline;
use crate::error::JobError;
use crate::watermark::{PartitionStatus, Watermarks};
use quiver_connectors::PartitionItem;
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

type Reader = mpsc::Receiver<Result<ReaderMessage, JobError>>;

/// A running source.
pub struct Source {
    connector: Arc<dyn SourceConnector>,
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
        let connector: Arc<dyn SourceConnector> = match location {
            Some(location) => Arc::new(
                FileConnector::resolve(
                    &location,
                    &files.map(|f| f.options.clone()).unwrap_or_default(),
                    files.and_then(|f| f.format),
                    pipeline.source_schema.clone(),
                    files.map_or(8192, |f| f.batch_size),
                    files.map_or(16, |f| f.max_open_files),
                )
                .await?,
            ),
            None => {
                let mut config = source.datagen.clone().unwrap_or_default();
                if let Some(events) = overrides.events {
                    config.events = events;
                }
                Arc::new(DatagenConnector::new(config)?)
            }
        };
        Ok(Source::new(connector))
    }

    /// A source reading `connector`'s partitions from their beginnings.
    pub fn new(connector: Arc<dyn SourceConnector>) -> Self {
        let names = connector.partition_names();
        Source {
            partitions: names
                .iter()
                .map(|name| PartitionProgress {
                    name: name.clone(),
                    size: None,
                    position: None,
                })
                .collect(),
            readers: names.iter().map(|_| None).collect(),
            files: connector.counts_files().then_some(names.len()),
            fingerprint: connector.fingerprint(),
            expected_events: connector.expected_events(),
            connector,
            files_done: 0,
            events: 0,
            started: Instant::now(),
        }
    }

    /// Wall-clock time since the source started (the clock of partition idleness).
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Whether partitions are live (can go idle). Files and the generator are not.
    pub fn is_live(&self) -> bool {
        self.connector.is_live()
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
        let max_open = self.connector.max_open();
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
        self.connector.spawn_reader(partition, progress, tx);
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

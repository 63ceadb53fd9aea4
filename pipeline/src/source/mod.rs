//! The configured source as a set of partitions: every input file is one partition (the
//! generator is one), each read on its own task and handed over through a small bounded
//! channel (back-pressure instead of unbounded buffering).
//!
//! Partitions of files and the generator are read with watermark alignment: the next batch always comes from the open
//! partition with the lowest watermark, so partitions advance together in event time and the
//! order of arrival is a function of the data alone. That makes a resumed run replay exactly
//! the arrival order (and so the late events) of an uninterrupted one. Live partitions (Kafka)
//! are aligned the same way, except that a partition read to its current end, or idle, does
//! not hold the others back; the source reports [`SourceEvent::Quiet`] when nothing arrived
//! for a moment, so idleness and checkpoint timers still run. Which events are late then
//! depends on the data alone as long as no partition goes idle or catches up in between.

mod connector;
mod datagen;
mod files;
mod kafka;

pub use connector::{ReaderMessage, ReaderSender, SourceConnector};
pub use datagen::DatagenConnector;
pub use files::FileConnector;
pub use kafka::KafkaConnector;

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
    /// Read live partitions (Kafka) only to their current ends (`--until-caught-up`,
    /// backfill).
    pub stop_at_end: bool,
}

/// Where a live partition stands when a run stops (for the run summary).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionLag {
    /// Partition name (`topic/partition`).
    pub partition: String,
    /// The last offset consumed.
    pub position: Option<u64>,
    /// Records between it and the partition's end (`None`: the brokers did not say).
    pub lag: Option<u64>,
    /// The partition's watermark (event time, microseconds), if it has one.
    pub watermark: Option<i64>,
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

type ReaderResult = Result<ReaderMessage, JobError>;
type Reader = mpsc::Receiver<ReaderResult>;

/// A running source.
pub struct Source {
    connector: Arc<dyn SourceConnector>,
    /// Per partition progress, in partition order (file name order).
    pub partitions: Vec<PartitionProgress>,
    readers: Vec<Option<Reader>>,
    /// Per partition: read to its current end, nothing since (live sources).
    caught_up: Vec<bool>,
    /// Per partition: read to its end by a run that stops there (`--until-caught-up`); unlike
    /// a finished partition it still holds the watermark back, as more may come.
    done: Vec<bool>,
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
    /// No live partition had records for a while.
    Quiet,
}

/// How long a live source waits for records before reporting [`SourceEvent::Quiet`].
const QUIET_AFTER: Duration = Duration::from_millis(200);

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
        let connector: Arc<dyn SourceConnector> = match (location, &source.kafka) {
            (Some(location), _) => Arc::new(
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
            (None, Some(kafka)) => {
                let mut kafka = kafka.clone();
                // An Avro schema file is relative to the pipeline config, like SQL files.
                if let Some(dir) = pipeline.loaded.path.parent() {
                    for path in [&mut kafka.avro_schema, &mut kafka.schema_registry_ca] {
                        if let Some(p) = path.as_mut() {
                            *p = dir.join(&*p).display().to_string();
                        }
                    }
                }
                let schema = pipeline.source_schema.clone();
                let name = pipeline.loaded.config.name.clone();
                let until = overrides.stop_at_end;
                let connect = move || KafkaConnector::connect(&kafka, schema, &name, until);
                let connector = tokio::task::spawn_blocking(connect)
                    .await
                    .map_err(|e| JobError::Other(format!("connecting to Kafka stopped: {e}")))??;
                Arc::new(connector)
            }
            (None, None) => {
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
            caught_up: vec![false; names.len()],
            done: vec![false; names.len()],
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

    /// Whether the ends of the partitions are the end of the input (see
    /// [`SourceConnector::end_is_final`]).
    pub fn end_is_final(&self) -> bool {
        self.connector.end_is_final()
    }

    /// Whether partitions are live (can go idle). Files and the generator are not.
    pub fn is_live(&self) -> bool {
        self.connector.is_live()
    }

    /// Restores progress from a checkpoint: partitions must be the same, in the same order, except
    /// that a live source's partitions added since then (a topic that grew) follow the others.
    pub fn restore(
        &mut self,
        partitions: Vec<PartitionProgress>,
        events: u64,
        files_done: usize,
    ) -> Result<(), JobError> {
        let names: Vec<String> = partitions.iter().map(|p| p.name.clone()).collect();
        // Partitions added since (a topic grew): the checkpoint's keep their places (its state
        // refers to them by position), the new ones follow, read from the configured start.
        let grown = self.partitions.len() > names.len() && self.connector.arrange(&names);
        let current = self.connector.partition_names();
        let mut partitions = partitions;
        if grown {
            partitions.extend(current[names.len()..].iter().map(|name| PartitionProgress {
                name: name.clone(),
                size: None,
                position: None,
            }));
        }
        let now: Vec<&str> = current.iter().map(String::as_str).collect();
        let then: Vec<&str> = partitions.iter().map(|p| p.name.as_str()).collect();
        if now != then {
            let added: Vec<&&str> = now.iter().filter(|n| !then.contains(n)).collect();
            let removed: Vec<&&str> = then.iter().filter(|n| !now.contains(n)).collect();
            let what = if self.is_live() {
                "topic partitions"
            } else {
                "files"
            };
            return Err(JobError::Checkpoint(format!(
                "the input changed since the checkpoint: new {what} {added:?}, missing {what} {removed:?}; \
                 run with --fresh to start over on the new input"
            )));
        }
        self.partitions = partitions;
        self.events = events;
        self.files_done = files_done;
        Ok(())
    }

    /// Starts each partition named in `positions` after its position there (a new run over a
    /// live source continuing where an earlier one committed); others start as configured.
    pub fn continue_from(&mut self, positions: &[PartitionProgress]) {
        for progress in &mut self.partitions {
            if let Some(then) = positions.iter().find(|p| p.name == progress.name) {
                progress.position = then.position;
            }
        }
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
                Some(PartitionStatus::Open) if self.readers[p].is_none() && !self.done[p] => {
                    self.spawn_reader(p)
                }
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

    /// Per partition of a source with end offsets (Kafka): how far it is read, how far behind
    /// its end, and its watermark; `None` for other sources.
    pub async fn lags(&self, watermarks: &Watermarks) -> Option<Vec<PartitionLag>> {
        let connector = self.connector.clone();
        let ends = tokio::task::spawn_blocking(move || connector.end_offsets())
            .await
            .ok()??;
        Some(
            self.partitions
                .iter()
                .zip(ends)
                .enumerate()
                .map(|(p, (progress, end))| PartitionLag {
                    partition: progress.name.clone(),
                    position: progress.position,
                    lag: end.map(|end| end.saturating_sub(progress.position.map_or(0, |o| o + 1))),
                    watermark: Some(watermarks.partition(p)).filter(|w| *w != i64::MIN),
                })
                .collect(),
        )
    }

    /// Each partition's end offset as last heard (live sources), for the lag a checkpoint
    /// records.
    pub fn cached_end_offsets(&self) -> Option<Vec<Option<u64>>> {
        self.connector.cached_end_offsets()
    }

    /// A checkpoint holding `partitions` is durable (Kafka commits the offsets to its group);
    /// `last` when the run is about to stop.
    pub fn committed(&self, partitions: &[PartitionProgress], last: bool) {
        self.connector.committed(partitions, last);
    }

    /// The next records, from the open partition with the lowest watermark (live sources: the
    /// lowest one with records ready); `None` when every partition has ended. Cancel-safe:
    /// it only waits on its readers' channels, so a `select!` may drop it for another branch
    /// without losing a record.
    pub async fn next(
        &mut self,
        watermarks: &mut Watermarks,
    ) -> Result<Option<SourceEvent>, JobError> {
        loop {
            let (p, message) = if self.connector.is_live() {
                match self.next_live(watermarks).await? {
                    Some(Some(next)) => next,
                    Some(None) => return Ok(Some(SourceEvent::Quiet)),
                    None => return Ok(None),
                }
            } else {
                let Some(p) = watermarks.next_to_read() else {
                    return Ok(None);
                };
                let Some(reader) = self.readers[p].as_mut() else {
                    self.spawn_reader(p);
                    continue;
                };
                (p, reader.recv().await)
            };
            let message = message.ok_or_else(|| {
                JobError::Other(format!(
                    "the reader of `{}` stopped unexpectedly",
                    self.partitions[p].name
                ))
            })??;
            if let Some(event) = self.take(p, message, watermarks)? {
                return Ok(Some(event));
            }
        }
    }

    /// A live source's next message, aligned: open partitions are tried in the order of their
    /// watermarks up to the first that holds the others back (not idle, not caught up), and
    /// when none of those has a message ready, the first of them to get one within
    /// [`QUIET_AFTER`] is taken (`Some(None)`: none did); `None` when every partition ended.
    async fn next_live(
        &mut self,
        watermarks: &Watermarks,
    ) -> Result<Option<Option<(usize, Option<ReaderResult>)>>, JobError> {
        let mut open: Vec<usize> = (0..self.partitions.len())
            .filter(|&p| watermarks.status(p) == Some(PartitionStatus::Open) && !self.done[p])
            .collect();
        if open.is_empty() {
            return Ok(None);
        }
        // Every open partition reads from the start (its position, or `start:` resolved now
        // for all of them alike, not when the alignment first needs it); a reader whose
        // partition runs ahead waits on its full channel.
        for &p in &open {
            if self.readers[p].is_none() {
                self.spawn_reader(p);
            }
        }
        open.sort_by_key(|&p| (watermarks.partition(p), p));
        let holding = |p: &usize| !watermarks.is_idle(*p) && !self.caught_up[*p];
        if let Some(gate) = open.iter().position(holding) {
            open.truncate(gate + 1);
        }
        for &p in &open {
            if let Some(reader) = self.readers[p].as_mut() {
                match reader.try_recv() {
                    Ok(message) => return Ok(Some(Some((p, Some(message))))),
                    Err(mpsc::error::TryRecvError::Empty) => {}
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        return Ok(Some(Some((p, None))))
                    }
                }
            }
        }
        let waiting = self
            .readers
            .iter_mut()
            .enumerate()
            .filter(|(p, _)| open.contains(p))
            .filter_map(|(p, reader)| reader.as_mut().map(|r| (p, r)))
            .map(|(p, reader)| Box::pin(async move { (p, reader.recv().await) }));
        let any = futures::future::select_all(waiting);
        match tokio::time::timeout(QUIET_AFTER, any).await {
            Ok(((p, message), _, _)) => Ok(Some(Some((p, message)))),
            Err(_) => Ok(Some(None)),
        }
    }

    /// Takes a reader's message of partition `p`: records become an event, the end of a
    /// partition too; an opened file is checked against the checkpoint (`None`: read on).
    fn take(
        &mut self,
        p: usize,
        message: ReaderMessage,
        watermarks: &mut Watermarks,
    ) -> Result<Option<SourceEvent>, JobError> {
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
                Ok(None)
            }
            ReaderMessage::CaughtUp => {
                self.caught_up[p] = true;
                Ok(None)
            }
            ReaderMessage::Item(item) => {
                self.caught_up[p] = false;
                let progress = &mut self.partitions[p];
                progress.position = item.last_offset().max(progress.position);
                self.events += item.len() as u64;
                Ok(Some(SourceEvent::Item(p, item)))
            }
            ReaderMessage::Done if !self.end_is_final() => {
                self.readers[p] = None;
                self.done[p] = true;
                Ok(Some(SourceEvent::Finished(p)))
            }
            ReaderMessage::Done => {
                self.readers[p] = None;
                watermarks.finish(p);
                if self.files.is_some() {
                    self.files_done += 1;
                }
                self.open_partitions(watermarks);
                Ok(Some(SourceEvent::Finished(p)))
            }
        }
    }
}

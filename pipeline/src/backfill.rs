//! Backfill: the same views over a bounded input, as fast as the machine allows.
//!
//! The whole input is known, so there is no watermark and nothing is late: every event is
//! applied in event-time order and gets exactly the batch SQL answer. Views run in parallel.
//! The output is one epoch: it replaces the previous output only when the backfill commits,
//! so a failed or killed backfill leaves the previous output as it was.
//!
//! Each view sorts its input by key and time once and evaluates every window in one call to a
//! kernel backend: CUDA for large inputs when a GPU is used (`compute.device`), else the CPU.
//! An input larger than a quarter of the memory limit is split by a hash of each view's key
//! into partitions small enough to evaluate one at a time (a window only ever holds one key's
//! events), so memory stays bounded: as it is read, straight into the partitions' spill files,
//! when its size is known up front (Parquet footers, the generator, an event log); else it goes
//! to a spill file as it is read, and each view splits that.

use crate::batch_compute::BatchCompute;
use crate::batch_evaluator::{BatchEvaluator, Evaluated};
use crate::compile::CompiledPipeline;
use crate::coordinator::{Captured, Coordinator};
use crate::error::JobError;
use crate::evaluation_permits::{EvaluationPermit, EvaluationPermits};
use crate::ingest::ingest;
use crate::keyed_input::{KeyPartition, KeyedInput};
use crate::operator::Message;
use crate::outputs::{OutputPaths, Outputs};
use crate::progress::events_bar;
use crate::reading_split::ReadingSplit;
use crate::registry::event_log::EventLogReader;
use crate::reorder::ReorderBuffer;
use crate::resident::JobMemory;
use crate::run::{view_operators, RunOptions};
use crate::shared_input::SharedInput;
use crate::source::{Source, SourceEvent, SourceOverrides};
use crate::spill::{ScratchDir, Spill};
use crate::summary::{JobTotals, RunSummary};
use crate::view_task::{send_all, ViewTask};
use crate::watermark::Watermarks;
use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use indicatif::ProgressBar;
use quiver_sql::FeatureView;
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// The most key partitions of one view.
const MAX_PARTITIONS: usize = 4096;

/// A view's evaluation of a partition takes about this many times the partition's stream
/// bytes (its prepared inputs, their sorted copies, the feature rows), and one more partition
/// waits in the view's queue while another is being read back.
const PARTITION_BYTES_FACTOR: usize = 8;

/// A key partition is evaluated whole when its evaluation (by [`PARTITION_BYTES_FACTOR`])
/// takes at most this share of the budget (numerator, denominator), leaving the rest to the
/// ordinary partitions evaluated beside it; a larger one (a hot key's) is cut by time. 10M
/// demo events under the default limit: the hottest merchant's 1.92M rows are 1.06 of half
/// the budget; evaluated whole instead of cut (when the share was a half), a median of 13.06 s
/// against 13.24 s and 22.1 s of CPU against 23.7 (5 alternating runs), the same peak.
const WHOLE_SHARE: (usize, usize) = (3, 4);

/// Bytes a view's in-memory split keeps per row between counting its partitions' rows and
/// copying them (the row's index and its partition).
const ASSIGNED_ROW_BYTES: usize = std::mem::size_of::<u32>() + std::mem::size_of::<u16>();

/// A spilled input is split by key a chunk of rows at a time, each view's chunk taking about
/// this fraction of the budget (1 / this); each chunk's rows of a partition are one batch in
/// the partition's spill file. The 100M-event backfill used to split each 64k-row input batch
/// into 382 partitions: spill batches of ~170 rows, whose per-batch costs (an LZ4 frame per
/// buffer with its zeroed tables, small writes of partial pages) took 40% of the run's CPU
/// (chunks of up to 1M rows: 80 s and 139 s of CPU instead of 139 s and 232 s).
const SPLIT_CHUNK_SHARE: usize = 32;

/// Rows of a spilled input split at once, at most.
const MAX_CHUNK_ROWS: usize = 1 << 20;

/// The input is held in memory up to this fraction of the budget (1 / this); past it, it is
/// split by key as it is read when its size is known, else spilled as it is read.
const HELD_SHARE: usize = 4;

/// Inputs of at least this many rows are split by key even when they fit in memory.
const SPLIT_ROWS: usize = 256 * 1024;

/// Rows a key partition gets when a small input is split for speed rather than memory, up to
/// [`SPEED_PARTITIONS`] partitions.
const PARTITION_ROWS: usize = 1 << 17;

/// Key partitions an input split for speed gets before its partitions grow past
/// [`PARTITION_ROWS`] (enough to keep both cores busy).
const SPEED_PARTITIONS: usize = 8;

/// Rows a key partition of a large input split for speed gets at most: larger partitions
/// evaluate with fewer passes and less per-partition work, smaller ones sort in cache. 10M
/// events (best and median of 4 alternating runs): 20 partitions of 512k rows 4.90/5.18 s,
/// 39 of 256k 4.77/5.06 s, 77 of 128k 5.06/5.59 s. (When each partition gathered its rows
/// from the whole input, every partition more was a pass over it: 77 took 6.4-6.5 s, 20
/// 5.4-5.5 s.)
const LARGE_PARTITION_ROWS: usize = 1 << 18;

/// The key partitions an input of `rows` rows is split into for speed: one per
/// [`PARTITION_ROWS`] rows up to [`SPEED_PARTITIONS`], then one per [`LARGE_PARTITION_ROWS`].
fn speed_partitions(rows: usize) -> usize {
    (rows.div_ceil(PARTITION_ROWS).min(SPEED_PARTITIONS)).max(rows.div_ceil(LARGE_PARTITION_ROWS))
}

/// The memory evaluating an input of `bytes` bytes would take, `concurrency` partitions of it
/// at once.
fn evaluation_bytes(bytes: usize, concurrency: usize) -> usize {
    bytes
        .saturating_mul(PARTITION_BYTES_FACTOR)
        .saturating_mul(concurrency)
}

/// Key partitions for an input of `bytes` bytes in `rows` rows, `concurrency` of them
/// evaluated at once within `budget`.
fn key_partitions(bytes: usize, rows: usize, budget: usize, concurrency: usize) -> usize {
    (evaluation_bytes(bytes, concurrency).div_ceil((budget / 2).max(1)))
        .max(speed_partitions(rows))
        .clamp(2, MAX_PARTITIONS)
}

/// Rows of a spilled input split at once by each of `views` views within `budget`, rows
/// taking `row_bytes` bytes.
fn chunk_rows(budget: usize, views: usize, row_bytes: usize) -> usize {
    (budget / SPLIT_CHUNK_SHARE / views.max(1) / row_bytes.max(1)).clamp(1, MAX_CHUNK_ROWS)
}

/// A feature row written takes about this many times its event's stream bytes in a
/// writer's row group (the event's columns, the features, lineage).
const WRITTEN_ROW_FACTOR: usize = 2;

/// Rows per Parquet row group of each of `views` writers so that their row groups take at
/// most an eighth of `budget` with rows of `row_bytes` stream bytes (between 4k and the
/// writers' default).
fn row_group_rows(budget: usize, views: usize, row_bytes: usize) -> usize {
    let per_writer = budget / 8 / views.max(1);
    (per_writer / (WRITTEN_ROW_FACTOR * row_bytes).max(1))
        .clamp(4096, quiver_store::FeatureRowWriter::ROW_GROUP_ROWS)
}

/// Where a backfill's events come from.
enum Origin {
    /// The configured source, read through the transforms.
    Source(Box<Source>, Watermarks),
    /// A registered event log: the transformed events as an apply or a store run kept them.
    EventLog {
        reader: Box<EventLogReader>,
        fingerprint: String,
    },
}

impl Origin {
    /// What identifies the input (for the checkpoint).
    fn fingerprint(&self) -> &str {
        match self {
            Origin::Source(source, _) => &source.fingerprint,
            Origin::EventLog { fingerprint, .. } => fingerprint,
        }
    }

    /// Events to read, when known.
    fn expected_events(&self) -> Option<u64> {
        match self {
            Origin::Source(source, _) => source.expected_events,
            Origin::EventLog { reader, .. } => Some(reader.rows),
        }
    }

    /// The names of the source partitions the events' partition column indexes.
    fn partition_names(&self) -> Vec<String> {
        match self {
            Origin::Source(source, _) => source.partition_names(),
            Origin::EventLog { reader, .. } => reader.partitions.clone(),
        }
    }

    /// Records read (an event log's are all accepted events).
    fn records(&self, accepted: u64) -> u64 {
        match self {
            Origin::Source(source, _) => source.events,
            Origin::EventLog { .. } => accepted,
        }
    }
}

/// Computes every view over the whole source (or a registered event log) and writes the
/// feature rows.
pub async fn backfill(
    mut pipeline: CompiledPipeline,
    options: RunOptions,
) -> Result<RunSummary, JobError> {
    let started = Instant::now();
    let compute_config = &pipeline.loaded.config.compute;
    // Opened first: `device: cuda` without a GPU fails before any input is read.
    let compute = BatchCompute::open(
        options.device.unwrap_or(compute_config.device),
        compute_config.gpu_min_rows,
    )?;
    // Measured before anything is read, and a limit too small for it refused before any
    // output is touched.
    let (memory, mut budget) = JobMemory::start(options.memory_limit, options.data_budget)
        .map_err(|e| JobError::Other(e.to_string()))?;
    let paths = OutputPaths::of(&pipeline, options.output.clone());
    let mut origin = match &options.from_event_log {
        Some((registry, definition)) => Origin::EventLog {
            reader: Box::new(EventLogReader::open(registry, definition, None, true)?),
            fingerprint: format!("event-log:{}", definition.events),
        },
        None => {
            // A live source (Kafka) is read to its current ends.
            let overrides = SourceOverrides {
                stop_at_end: true,
                ..options.source.clone()
            };
            let source = Source::resolve(&pipeline, &overrides).await?;
            let watermarks = Watermarks::new(0, source.partitions.len(), false, None);
            Origin::Source(Box::new(source), watermarks)
        }
    };
    let (mut coordinator, _) = Coordinator::begin(
        &pipeline,
        paths.clone(),
        origin.fingerprint(),
        true,
        None,
        || Ok(None),
        None,
    )?;
    let scratch = ScratchDir::beside(&paths.root.join("backfill"));
    let mut outputs = Outputs::new(paths, coordinator.epoch, 0, BTreeMap::new());
    let read_bar = events_bar(origin.expected_events(), options.progress, "read");
    let mut engine = Duration::ZERO;
    let stream = Spill::in_memory_up_to(
        scratch.path(),
        budget / HELD_SHARE,
        "stream",
        pipeline.feature_stream_schema.clone(),
        1,
    );
    let limits = pipeline.loaded.config.output.clone();
    let schema = pipeline.feature_stream_schema.clone();
    // The views and their writers come first: an input known to be large is split by the
    // views' keys as it is read.
    let availability = vec![options.availability_column; pipeline.views.len()];
    let writers = outputs.feature_writers(&pipeline, &coordinator.run, &[], None, &availability)?;
    let operators = view_operators(&mut pipeline, options.expire_interval_micros, &[]);
    let views: Vec<Arc<FeatureView>> = operators.iter().map(|op| Arc::clone(op.view())).collect();
    // Key partitions evaluated at once, of all views: one per core, at least one per view.
    let concurrency = views.len().max(crate::batch_compute::cores());
    let mut input = ReadInput {
        stream,
        splitting: None,
        // An event log is written from the input held whole.
        expected: (options.event_log.is_none())
            .then(|| origin.expected_events())
            .flatten(),
        budget,
        concurrency,
        views: &views,
        dir: scratch.path(),
    };
    match &mut origin {
        Origin::Source(source, watermarks) => {
            source.open_partitions(watermarks);
            while let Some(event) = source.next(watermarks).await? {
                outputs.check_dead_letter_ratio(
                    source.events,
                    limits.max_dead_letter_ratio,
                    limits.dead_letter_min_records,
                )?;
                match event {
                    SourceEvent::Finished(_) | SourceEvent::Quiet => {}
                    SourceEvent::Item(partition, item) => {
                        read_bar.inc(item.len() as u64);
                        outputs.write_dead_letters(&item.dead_letters)?;
                        let Some(batch) = item.batch else {
                            continue;
                        };
                        let step = Instant::now();
                        let ingested = ingest(&pipeline, batch, partition).await?;
                        engine += step.elapsed();
                        outputs.write_dead_letters(&ingested.dead_letters)?;
                        input.push(ingested.batch).await?;
                    }
                }
            }
        }
        Origin::EventLog { reader, .. } => {
            // The log's events are the transformed stream already (lineage columns included).
            let mut available = Vec::new();
            while let Some(batch) = reader.next_batch(&mut available)? {
                available.clear();
                read_bar.inc(batch.num_rows() as u64);
                let batch = arrow::record_batch::RecordBatch::try_new(
                    schema.clone(),
                    batch.columns().to_vec(),
                )
                .map_err(|e| {
                    JobError::Other(format!(
                        "the event log does not fit this config's stream: {e}"
                    ))
                })?;
                input.push(batch).await?;
            }
        }
    }
    read_bar.finish_and_clear();
    let ReadInput {
        mut stream,
        splitting,
        ..
    } = input;
    stream.finish()?;
    let (accepted, input_bytes, presplit) = match splitting {
        Some(split) => (
            split.rows() as u64,
            split.bytes(),
            Some(split.finish().await?),
        ),
        None => (stream.rows(0) as u64, stream.bytes(0), None),
    };
    let split_as_read = presplit.is_some();
    let names = origin.partition_names();
    if let Some(dir) = &options.event_log {
        let info = serde_json::json!({"operation": "apply", "rows": accepted});
        crate::registry::event_log::write_event_log(dir, &schema, stream.read(0)?, &names, info)?;
    }
    // Whether the input is out of memory: split into spill files as it was read, or spilled.
    let spilled = split_as_read || stream.in_files_now();
    if let Some(limit) = memory.strict_limit() {
        let held_input = if spilled { 0 } else { input_bytes };
        budget = crate::resident::strict_budget_now(limit, budget, held_input);
    }
    let row_bytes = input_bytes / (accepted as usize).max(1);
    // Each writer holds a row group; under a small limit they get smaller ones, and the
    // partitions share what is left.
    let group_rows = row_group_rows(budget, views.len(), row_bytes);
    let writers: Vec<_> = (writers.into_iter())
        .map(|w| w.with_row_group_rows(group_rows))
        .collect();
    let budget = budget.saturating_sub(group_rows * WRITTEN_ROW_FACTOR * row_bytes * writers.len());
    let compute_bar = events_bar(
        Some(accepted * views.len() as u64),
        options.progress,
        "features",
    );
    let operators: Vec<_> = (operators.into_iter())
        .map(|op| {
            op.with_partitions(&names)
                .with_progress(compute_bar.clone())
                .with_batch_compute(compute.clone())
        })
        .collect();
    // A large input is split by each view's key into partitions small enough to evaluate
    // `concurrency` of them at once (and the views' tasks hold a few more); smaller sorts and
    // key tables also stay in cache, so this is faster than one sort of everything.
    let need = evaluation_bytes(input_bytes, concurrency);
    // Split in memory, each view copies the columns it reads out of the input (compact, even
    // where the input's batches are slices of larger buffers, which count whole in
    // `input_bytes`), after giving each row its partition (6 bytes a row: the row and its
    // partition); the input is let go only as the views finish with it.
    let copies = if spilled {
        0
    } else {
        (stream.values_bytes(0)? + accepted as usize * ASSIGNED_ROW_BYTES) * operators.len()
    };
    let split =
        spilled || need > budget.saturating_sub(copies) / 2 || accepted as usize >= SPLIT_ROWS;
    let budget = if split {
        budget.saturating_sub(copies)
    } else {
        budget
    };
    let partitions = match &presplit {
        Some(keyed) => keyed.first().map_or(1, KeyedInput::partitions),
        None if split => key_partitions(input_bytes, accepted as usize, budget, concurrency),
        None => 1,
    };
    // A partition's evaluation takes about this many bytes a row.
    let evaluated_row_bytes = evaluation_bytes(row_bytes.max(1), 1);
    // A hot key's partition of more than `whole_rows` is cut by time into slices of about
    // `slice_rows`, the size of ordinary partitions when `concurrency` are evaluated at once.
    let whole_rows = budget / WHOLE_SHARE.1 * WHOLE_SHARE.0 / evaluated_row_bytes;
    let slice_rows = budget / (2 * concurrency) / evaluated_row_bytes;
    // A spilled input is split this many rows at a time (a chunk, its copy by partition and
    // its prepared keys per view at once).
    let chunk_rows = chunk_rows(budget, operators.len(), row_bytes);
    let evaluators: Vec<_> = operators.iter().map(|op| op.batch_evaluator()).collect();
    // Each view writes on its own task: views are independent.
    let tasks: Vec<ViewTask> = operators
        .into_iter()
        .zip(writers)
        .map(|(op, writer)| {
            // One partition waits while one is evaluated or written: each is large.
            ViewTask::spawn_with_queue(op, writer, 1)
        })
        .collect();
    let (mut sliced, mut sliced_rows) = (0, 0);
    if split {
        let in_memory = if spilled {
            None
        } else {
            let batches = stream.take(0)?.collect::<Result<Vec<_>, _>>()?;
            Some(Arc::new(SharedInput::new(batches, views.len())))
        };
        let input = Arc::new(stream);
        // Rows split as they were read were counted then.
        let to_split = if split_as_read { 0 } else { accepted };
        let bar = events_bar(
            Some(to_split * views.len() as u64),
            options.progress,
            "by key",
        );
        let mut presplit = presplit.map(Vec::into_iter);
        let evaluations = EvaluationPermits::new(concurrency, budget);
        // Views split in parallel, and each evaluates its partitions as soon as its split is
        // done.
        let queues = tasks
            .iter()
            .zip(views)
            .zip(evaluators)
            .map(|((task, view), evaluator)| {
                let splitting = tokio::spawn(split_view(SplitJob {
                    view,
                    split: presplit.as_mut().and_then(Iterator::next),
                    input: Arc::clone(&input),
                    in_memory: in_memory.clone(),
                    partitions,
                    whole_rows,
                    slice_rows,
                    chunk_rows,
                    dir: scratch.path().to_path_buf(),
                    progress: bar.clone(),
                }));
                let evaluations = evaluations.clone();
                async move {
                    let split = splitting.await.map_err(|e| {
                        JobError::Other(format!("splitting the input by key stopped: {e}"))
                    })??;
                    let evaluator = evaluator.ok_or_else(|| {
                        JobError::Other("backfill's views evaluate whole partitions".into())
                    })?;
                    let row_bytes = evaluated_row_bytes;
                    send_partitions(task, split.keyed, evaluator, evaluations, row_bytes).await?;
                    Ok::<_, JobError>((split.sliced, split.sliced_rows))
                }
            });
        let queues: Vec<_> = queues.collect();
        drop((input, in_memory));
        for (view_sliced, view_sliced_rows) in futures::future::try_join_all(queues).await? {
            sliced += view_sliced;
            sliced_rows += view_sliced_rows;
        }
        bar.finish_and_clear();
    } else {
        let batches = stream.take(0)?.collect::<Result<Vec<_>, _>>()?;
        let all = concat_batches(&schema, &batches).map_err(|e| JobError::Other(e.to_string()))?;
        drop(batches);
        send_all(&tasks, || Message::Batch(all.clone())).await;
    }
    let nothing_buffered = ReorderBuffer::new(pipeline.feature_stream_schema.clone());
    let captured = match &origin {
        Origin::Source(source, watermarks) => {
            Captured::at_barrier(source, watermarks, &nothing_buffered, accepted, &outputs)?
        }
        Origin::EventLog { .. } => Captured::without_source(&nothing_buffered, accepted, &outputs)?,
    };
    let done = coordinator
        .finish(true, tasks, &mut outputs, captured)
        .await?;
    compute_bar.finish_and_clear();
    let mut summary = RunSummary::build(
        JobTotals {
            mode: "backfill",
            pipeline: pipeline.loaded.config.name.clone(),
            events: origin.records(accepted),
            accepted,
            started,
            engine,
            interrupted: false,
            caught_up: false,
        },
        &outputs,
        &done,
        coordinator.stats.clone(),
    );
    let mut report = compute.report();
    report.input = Some(crate::batch_compute::InputReport {
        bytes: input_bytes as u64,
        partitions,
        spilled,
        split_as_read,
        sliced,
        sliced_rows,
    });
    report.memory = Some(memory.report());
    summary.compute = Some(report);
    Ok(summary)
}

/// Backfill's input as it is read: held (in memory while it fits in a quarter of the budget,
/// else in a spill file), or, once it outgrows that and its size is known up front, split by
/// the views' keys as it comes ([`ReadingSplit`]).
struct ReadInput<'a> {
    stream: Spill,
    splitting: Option<ReadingSplit>,
    /// Events the input will have, when known up front and it may be split as it is read.
    expected: Option<u64>,
    budget: usize,
    /// Key partitions evaluated at once.
    concurrency: usize,
    views: &'a [Arc<FeatureView>],
    /// Where spill files go.
    dir: &'a Path,
}

impl ReadInput<'_> {
    /// Takes in `batch`, the next of the input.
    async fn push(&mut self, batch: RecordBatch) -> Result<(), JobError> {
        if let Some(split) = &mut self.splitting {
            return split.push(batch).await;
        }
        let bytes = self.stream.bytes(0) + batch.get_array_memory_size();
        let Some(expected) = self.expected.filter(|_| bytes > self.budget / HELD_SHARE) else {
            return self.stream.push(0, batch);
        };
        // Large, and its size is known: the partitions are sized for all of it (from the
        // bytes a row takes so far), and what is held is split first.
        let rows = self.stream.rows(0) + batch.num_rows();
        let row_bytes = bytes.div_ceil(rows.max(1));
        let all_rows = usize::try_from(expected).unwrap_or(usize::MAX).max(rows);
        let mut split = ReadingSplit::start(
            self.views,
            self.stream.schema(),
            key_partitions(
                all_rows.saturating_mul(row_bytes),
                all_rows,
                self.budget,
                self.concurrency,
            ),
            chunk_rows(self.budget, self.views.len(), row_bytes),
            self.dir,
        );
        for held in self.stream.take(0)? {
            split.push(held?).await?;
        }
        split.push(batch).await?;
        self.splitting = Some(split);
        Ok(())
    }
}

/// What [`split_view`] needs: everything owned, as it runs on its own task.
struct SplitJob {
    view: Arc<FeatureView>,
    /// The view's split when it was made as the input was read.
    split: Option<KeyedInput>,
    /// Backfill's input (one partition).
    input: Arc<Spill>,
    /// The input's batches when it is held in memory, shared with the other views' splits.
    in_memory: Option<Arc<SharedInput>>,
    partitions: usize,
    /// Rows of the largest partition evaluated whole; larger ones are cut by time.
    whole_rows: usize,
    /// About the rows of a hot key's time slice.
    slice_rows: usize,
    /// Rows of a spilled input split at once.
    chunk_rows: usize,
    /// Where spill files go.
    dir: PathBuf,
    /// Counts the rows split (and, for hot keys, read twice more to cut them by time).
    progress: ProgressBar,
}

/// One view's input split by its key, with its oversized partitions cut by time.
struct ViewSplit {
    keyed: KeyedInput,
    /// Partitions cut by time, and their rows.
    sliced: usize,
    sliced_rows: u64,
}

/// Splits the input by the job's view's key into partitions, and cuts those over
/// `whole_rows` by event time.
async fn split_view(job: SplitJob) -> Result<ViewSplit, JobError> {
    let mut keyed = match job.split {
        Some(keyed) => keyed,
        None => {
            KeyedInput::split(
                &job.view,
                &job.input,
                job.in_memory.as_deref(),
                job.partitions,
                job.chunk_rows,
                &job.dir,
                &job.progress,
            )
            .await?
        }
    };
    drop(job.input);
    let oversized = keyed.oversized_rows(job.whole_rows);
    job.progress.inc_length(2 * oversized as u64);
    let sliced = keyed
        .slice_oversized(
            &job.view,
            job.whole_rows,
            job.slice_rows,
            &job.dir,
            &job.progress,
        )
        .await?;
    Ok(ViewSplit {
        keyed,
        sliced,
        sliced_rows: oversized as u64,
    })
}

/// A partition's feature rows, evaluated while the permit was held; the permit goes when they
/// reach the view's task.
type InFlight = JoinHandle<Result<(Evaluated, EvaluationPermit), JobError>>;

/// Evaluates the view's key partitions of `keyed` with `evaluator`, several at once when
/// `evaluations` has permits to spare (one per partition evaluated or waiting for its turn to
/// be sent, weighing `row_bytes` a row), and sends their feature rows to the view's `task`
/// in partition order. Oversized partitions' time slices go to the task's operator, after
/// every partition before them.
async fn send_partitions(
    task: &ViewTask,
    mut keyed: KeyedInput,
    evaluator: BatchEvaluator,
    evaluations: EvaluationPermits,
    row_bytes: usize,
) -> Result<(), JobError> {
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    for p in 0..keyed.partitions() {
        let bytes = keyed.rows(p).saturating_mul(row_bytes);
        // A permit for the next partition, or the oldest one's rows sent to make room.
        let permit = loop {
            if let Some(permit) = evaluations.try_acquire(bytes) {
                break permit;
            }
            match in_flight.pop_front() {
                Some(oldest) => {
                    if !deliver(task, oldest).await? {
                        return Ok(()); // the task stopped: its error comes with `finish`
                    }
                }
                None => break evaluations.acquire(bytes).await?,
            }
        };
        match keyed.take(p)? {
            None => {}
            Some(KeyPartition::Whole(batch)) => {
                let evaluator = evaluator.clone();
                in_flight.push_back(tokio::spawn(async move {
                    Ok((evaluator.evaluate(batch).await?, permit))
                }));
            }
            Some(KeyPartition::Sliced(mut slices)) => {
                drop(permit);
                if !deliver_all(task, &mut in_flight).await? {
                    return Ok(());
                }
                if !send_slices(task, &mut slices).await? {
                    return Ok(());
                }
            }
        }
    }
    deliver_all(task, &mut in_flight).await?;
    Ok(())
}

/// [`deliver`]s every evaluation of `in_flight` in order; `false` if the task stopped.
async fn deliver_all(
    task: &ViewTask,
    in_flight: &mut VecDeque<InFlight>,
) -> Result<bool, JobError> {
    while let Some(oldest) = in_flight.pop_front() {
        if !deliver(task, oldest).await? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Waits for a partition's evaluation and sends its rows to `task`; `false` if the task
/// stopped.
async fn deliver(task: &ViewTask, evaluation: InFlight) -> Result<bool, JobError> {
    let (evaluated, permit) = evaluation
        .await
        .map_err(|e| JobError::Other(format!("a key partition's evaluation stopped: {e}")))??;
    let sent = task.send(Message::Evaluated(evaluated)).await;
    drop(permit);
    Ok(sent)
}

/// Sends a key partition's time `slices` to `task` in time order, each as one batch, then the
/// end of its slices; `false` if the task stopped.
async fn send_slices(task: &ViewTask, slices: &mut Spill) -> Result<bool, JobError> {
    for s in 0..slices.partitions() {
        let batches = slices.take(s)?.collect::<Result<Vec<_>, _>>()?;
        if batches.is_empty() {
            continue;
        }
        let slice = concat_batches(slices.schema(), &batches)
            .map_err(|e| JobError::Other(format!("a time slice: {e}")))?;
        drop(batches);
        if !task.send(Message::Slice(slice)).await {
            return Ok(false);
        }
    }
    Ok(task.send(Message::SlicesEnd).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_split_for_speed_get_a_few_partitions_then_large_ones() {
        // Up to 1M rows: one per 128k rows; beyond, 8 at least and one per 256k.
        let cases = [
            (300_000, 3),
            (1_000_000, 8),
            (2_000_000, 8),
            (3_000_000, 12),
            (10_000_000, 39),
            (100_000_000, 382),
        ];
        for (rows, partitions) in cases {
            assert_eq!(speed_partitions(rows), partitions, "{rows} rows");
        }
    }
}

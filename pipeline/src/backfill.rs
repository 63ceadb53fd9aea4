//! Backfill: the same views over a bounded input, as fast as the machine allows.
//!
//! The whole input is known, so there is no watermark and nothing is late: every event is
//! applied in event-time order and gets exactly the batch SQL answer. Views run in parallel.
//! The output is one epoch: it replaces the previous output only when the backfill commits,
//! so a failed or killed backfill leaves the previous output as it was.
//!
//! Each view sorts its input by key and time once and evaluates every window in one call to a
//! kernel backend: CUDA for large inputs when a GPU is used (`compute.device`), else the CPU.
//! An input larger than a quarter of the memory limit goes to a spill file as it is read; each
//! view then splits it by a hash of its key into partitions small enough to evaluate one at a
//! time (a window only ever holds one key's events), so memory stays bounded.

use crate::batch_compute::BatchCompute;
use crate::compile::CompiledPipeline;
use crate::coordinator::{Captured, Coordinator};
use crate::error::JobError;
use crate::ingest::ingest;
use crate::operator::Message;
use crate::outputs::{OutputPaths, Outputs};
use crate::progress::events_bar;
use crate::reorder::ReorderBuffer;
use crate::run::{view_operators, RunOptions};
use crate::source::{Source, SourceEvent, SourceOverrides};
use crate::spill::{ScratchDir, Spill};
use crate::summary::{JobTotals, RunSummary};
use crate::view_task::{send_all, ViewTask};
use crate::watermark::Watermarks;
use arrow::array::{RecordBatch, UInt32Array};
use arrow::compute::concat_batches;
use quiver_sql::FeatureView;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The memory a backfill may take by default (`--memory-limit`).
pub const DEFAULT_MEMORY_LIMIT: usize = 4 << 30;

/// The most key partitions of one view.
const MAX_PARTITIONS: usize = 4096;

/// A view's evaluation of a partition takes about this many times the partition's stream
/// bytes (its prepared inputs, their sorted copies, the feature rows), and a few partitions
/// wait in the view's queue.
const PARTITION_BYTES_FACTOR: usize = 8;

/// The rows of `stream` (one partition) that `view` keeps, split by a hash of their key into
/// `partitions` spill files under `dir`.
async fn key_partitions(
    view: &FeatureView,
    stream: &Spill,
    partitions: usize,
    dir: &Path,
) -> Result<Spill, JobError> {
    let fail = |e: &dyn std::fmt::Display| JobError::Other(format!("view `{}`: {e}", view.name()));
    let mut keyed = Spill::in_files(
        dir,
        &format!("{}-keyed", view.name()),
        Arc::clone(stream.schema()),
        partitions,
    );
    for batch in stream.read(0)? {
        let batch = batch?;
        let (prepared, kept) =
            crate::prepared_rows::prepare_tracking_rows(view, batch.clone()).await?;
        let partition: Vec<u16> = (0..prepared.keys.num_rows())
            .map(|i| crate::spill::partition_of(prepared.keys.row(i).data(), partitions) as u16)
            .collect();
        drop(prepared);
        // Only the kept rows: the others the view drops anyway.
        let rows = UInt32Array::from(kept);
        let columns = batch
            .columns()
            .iter()
            .map(|c| arrow::compute::take(c, &rows, None))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail(&e))?;
        let kept = RecordBatch::try_new(batch.schema(), columns).map_err(|e| fail(&e))?;
        crate::spill::push_partitioned(&mut keyed, &kept, &partition)?;
    }
    keyed.finish()?;
    Ok(keyed)
}

/// Computes every view over the whole source and writes the feature rows.
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
    let paths = OutputPaths::of(&pipeline, options.output.clone());
    // A live source (Kafka) is read to its current ends.
    let overrides = SourceOverrides {
        stop_at_end: true,
        ..options.source.clone()
    };
    let mut source = Source::resolve(&pipeline, &overrides).await?;
    let (mut coordinator, _) = Coordinator::begin(
        &pipeline,
        paths.clone(),
        &source.fingerprint,
        true,
        None,
        || Ok(None),
        None,
    )?;
    let mut watermarks = Watermarks::new(0, source.partitions.len(), false, None);
    source.open_partitions(&mut watermarks);
    let scratch = ScratchDir::beside(&paths.root.join("backfill"));
    let mut outputs = Outputs::new(paths, coordinator.epoch, 0, BTreeMap::new());
    let read_bar = events_bar(source.expected_events, options.progress, "read");
    let mut engine = Duration::ZERO;
    let memory_limit = options.memory_limit.unwrap_or(DEFAULT_MEMORY_LIMIT);
    let mut stream = Spill::in_memory_up_to(
        scratch.path(),
        memory_limit / 4,
        "stream",
        pipeline.feature_stream_schema.clone(),
        1,
    );
    let limits = pipeline.loaded.config.output.clone();
    while let Some(event) = source.next(&mut watermarks).await? {
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
                stream.push(0, ingested.batch)?;
            }
        }
    }
    read_bar.finish_and_clear();
    stream.finish()?;
    let accepted = stream.rows(0) as u64;
    let schema = pipeline.feature_stream_schema.clone();
    if let Some(dir) = &options.event_log {
        let info = serde_json::json!({"operation": "apply", "rows": accepted});
        let names = source.partition_names();
        crate::registry::event_log::write_event_log(dir, &schema, stream.read(0)?, &names, info)?;
    }
    let writers = outputs.feature_writers(&pipeline, &coordinator.run, &[], None)?;
    let operators = view_operators(&mut pipeline, options.expire_interval_micros, &source);
    let compute_bar = events_bar(
        Some(accepted * operators.len() as u64),
        options.progress,
        "features",
    );
    // Spilled: each view's rows split by its key, small enough to evaluate one at a time
    // (each view's task holds a few partitions, and the views run at once).
    let mut keyed = Vec::new();
    let mut spilled = None;
    if stream.in_files_now() {
        let partitions = (stream.bytes(0) * PARTITION_BYTES_FACTOR * operators.len())
            .div_ceil((memory_limit / 2).max(1))
            .clamp(2, MAX_PARTITIONS);
        spilled = Some(crate::batch_compute::SpillReport {
            bytes: stream.bytes(0) as u64,
            partitions,
        });
        for op in &operators {
            keyed.push(key_partitions(op.view(), &stream, partitions, scratch.path()).await?);
        }
    }
    // Each view computes and writes on its own task: views are independent.
    let tasks: Vec<ViewTask> = operators
        .into_iter()
        .zip(writers)
        .map(|(op, writer)| {
            let op = op
                .with_progress(compute_bar.clone())
                .with_batch_compute(compute.clone());
            ViewTask::spawn(op, writer)
        })
        .collect();
    if !keyed.is_empty() {
        drop(stream);
        let mut queues = Vec::new();
        for (task, mut keyed) in tasks.iter().zip(keyed) {
            queues.push(async move {
                for p in 0..keyed.partitions() {
                    let batches = keyed.take(p)?.collect::<Result<Vec<_>, _>>()?;
                    if batches.is_empty() {
                        continue;
                    }
                    let batch = concat_batches(keyed.schema(), &batches)
                        .map_err(|e| JobError::Other(e.to_string()))?;
                    drop(batches);
                    if !task.send(Message::Batch(batch)).await {
                        break; // its error comes with `finish`
                    }
                }
                Ok::<(), JobError>(())
            });
        }
        for result in futures::future::join_all(queues).await {
            result?;
        }
    } else {
        let batches = stream.take(0)?.collect::<Result<Vec<_>, _>>()?;
        let all = concat_batches(&schema, &batches).map_err(|e| JobError::Other(e.to_string()))?;
        drop(batches);
        send_all(&tasks, || Message::Batch(all.clone())).await;
    }
    let nothing_buffered = ReorderBuffer::new(pipeline.feature_stream_schema.clone());
    let captured =
        Captured::at_barrier(&source, &watermarks, &nothing_buffered, accepted, &outputs)?;
    let done = coordinator
        .finish(true, tasks, &mut outputs, captured)
        .await?;
    compute_bar.finish_and_clear();
    let mut summary = RunSummary::build(
        JobTotals {
            mode: "backfill",
            pipeline: pipeline.loaded.config.name.clone(),
            events: source.events,
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
    report.spilled = spilled;
    summary.compute = Some(report);
    Ok(summary)
}

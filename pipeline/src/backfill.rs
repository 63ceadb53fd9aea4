//! Backfill: the same views over a bounded input, as fast as the machine allows.
//!
//! The whole input is known, so there is no watermark and nothing is late: every event is
//! applied in event-time order and gets exactly the batch SQL answer. Views run in parallel.
//! The output is one epoch: it replaces the previous output only when the backfill commits,
//! so a failed or killed backfill leaves the previous output as it was.
//!
//! Each view sorts its input by key and time once and evaluates every window in one call to a
//! kernel backend: CUDA for large inputs when a GPU is used (`compute.device`), else the CPU.

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
use crate::summary::{JobTotals, RunSummary};
use crate::view_task::{send_all, ViewTask};
use crate::watermark::Watermarks;
use arrow::compute::concat_batches;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

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
    let mut outputs = Outputs::new(paths, coordinator.epoch, 0, BTreeMap::new());
    let read_bar = events_bar(source.expected_events, options.progress, "read");
    let mut engine = Duration::ZERO;
    let mut batches = Vec::new();
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
                batches.push(ingested.batch);
            }
        }
    }
    read_bar.finish_and_clear();
    let all = concat_batches(&pipeline.feature_stream_schema, &batches)
        .map_err(|e| JobError::Other(e.to_string()))?;
    drop(batches);
    let accepted = all.num_rows() as u64;
    if let Some(dir) = &options.event_log {
        let info = serde_json::json!({"operation": "apply", "rows": accepted});
        crate::registry::event_log::write_event_log(dir, &all, &source.partition_names(), info)?;
    }
    let writers = outputs.feature_writers(&pipeline, &coordinator.run, &[], None)?;
    let operators = view_operators(&mut pipeline, options.expire_interval_micros, &source);
    let compute_bar = events_bar(
        Some(accepted * operators.len() as u64),
        options.progress,
        "features",
    );
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
    send_all(&tasks, || Message::Batch(all.clone())).await;
    drop(all);
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
    summary.compute = Some(compute.report());
    Ok(summary)
}

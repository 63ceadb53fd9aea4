//! Backfill: the same views over a bounded input, as fast as the machine allows.
//!
//! The whole input is known, so there is no watermark and nothing is late: every event is
//! applied in event-time order and gets exactly the batch SQL answer. Views run in parallel.

use crate::compile::CompiledPipeline;
use crate::error::JobError;
use crate::ingest::ingest;
use crate::outputs::{JobTotals, Outputs};
use crate::progress::events_bar;
use crate::run::RunOptions;
use crate::source::start;
use crate::summary::RunSummary;
use crate::view_task::{finish_all, send_all, spawn_all, ViewMessage};
use arrow::compute::concat_batches;
use std::time::{Duration, Instant};

/// Computes every view over the whole source and writes the feature rows.
pub async fn backfill(
    mut pipeline: CompiledPipeline,
    options: RunOptions,
) -> Result<RunSummary, JobError> {
    let started = Instant::now();
    let mut source = start(&pipeline, &options.source).await?;
    let mut outputs = Outputs::open(&pipeline, options.output.clone())?;
    let read_bar = events_bar(source.expected_events, options.progress, "read");
    let mut engine = Duration::ZERO;
    let mut batches = Vec::new();
    while let Some(batch) = source.next_batch(&mut outputs, &read_bar).await? {
        let step = Instant::now();
        let ingested = ingest(&pipeline, batch).await?;
        engine += step.elapsed();
        outputs.write_dead_letters(&ingested.dead_letters)?;
        batches.push(ingested.batch);
    }
    read_bar.finish_and_clear();
    let all = concat_batches(&pipeline.feature_stream_schema, &batches)
        .map_err(|e| JobError::Other(e.to_string()))?;
    drop(batches);
    let accepted = all.num_rows() as u64;
    let views = std::mem::take(&mut pipeline.views);
    let compute_bar = events_bar(
        Some(accepted * views.len() as u64),
        options.progress,
        "features",
    );
    // Each view computes and writes on its own task: views are independent.
    let tasks = spawn_all(views, &mut outputs, &compute_bar);
    send_all(&tasks, || ViewMessage::Batch(all.clone())).await;
    drop(all);
    let (operators, views_busy) = finish_all(tasks, &mut outputs).await?;
    compute_bar.finish_and_clear();
    outputs.finish(
        JobTotals {
            mode: "backfill",
            pipeline: pipeline.loaded.config.name.clone(),
            events: source.events,
            accepted,
            started,
            engine: engine + views_busy,
        },
        &operators,
    )
}

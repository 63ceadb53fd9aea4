//! The streaming run: events flow through as they arrive; features are emitted once the
//! watermark guarantees they are final.

use crate::compile::CompiledPipeline;
use crate::dead_letters::row_dead_letter;
use crate::error::JobError;
use crate::ingest::ingest;
use crate::outputs::{JobTotals, Outputs};
use crate::progress::events_bar;
use crate::reorder::ReorderBuffer;
use crate::source::{start, SourceOverrides};
use crate::summary::RunSummary;
use crate::view_task::{finish_all, send_all, spawn_all, ViewMessage};
use crate::watermark::Watermark;
use arrow::array::BooleanArray;
use arrow::compute::filter_record_batch;
use indicatif::ProgressBar;
use quiver_connectors::DeadLetterReason;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Options of a run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Source overrides.
    pub source: SourceOverrides,
    /// Output directory override.
    pub output: Option<PathBuf>,
    /// Show a progress bar (on a terminal).
    pub progress: bool,
    /// Source events between sweeps of window state no future event can read (0: default,
    /// 262,144).
    pub expire_every_events: u64,
}

/// Default source events between sweeps of idle window state.
const EXPIRE_EVERY_EVENTS: u64 = 256 * 1024;

/// Runs the pipeline over its source until the source ends.
pub async fn run(
    mut pipeline: CompiledPipeline,
    options: RunOptions,
) -> Result<RunSummary, JobError> {
    let started = Instant::now();
    let mut source = start(&pipeline, &options.source).await?;
    let mut outputs = Outputs::open(&pipeline, options.output.clone())?;
    let lateness = pipeline.loaded.config.event_time.max_lateness.as_micros();
    let mut watermark = Watermark::new(lateness);
    let mut reorder = ReorderBuffer::new(pipeline.feature_stream_schema.clone());
    let bar = events_bar(source.expected_events, options.progress, "run");
    // The bar counts source events; the views' own progress is not shown separately.
    let tasks = spawn_all(
        std::mem::take(&mut pipeline.views),
        &mut outputs,
        &ProgressBar::hidden(),
    );
    let mut engine = Duration::ZERO;
    let (mut accepted, mut since_expire) = (0u64, 0u64);
    let expire_every = match options.expire_every_events {
        0 => EXPIRE_EVERY_EVENTS,
        n => n,
    };
    while let Some(batch) = source.next_batch(&mut outputs, &bar).await? {
        since_expire += batch.batch.num_rows() as u64;
        let step = Instant::now();
        let ingested = ingest(&pipeline, batch).await?;
        outputs.write_dead_letters(&ingested.dead_letters)?;
        let on_time = watermark.observe(&ingested.times);
        let mut batch = ingested.batch;
        let mut times = ingested.times;
        if on_time.iter().any(|ok| !ok) {
            let late: Vec<_> = on_time
                .iter()
                .enumerate()
                .filter(|(_, ok)| !**ok)
                .map(|(row, _)| {
                    row_dead_letter(
                        &batch,
                        row,
                        &ingested.partition,
                        DeadLetterReason::Late,
                        format!(
                            "event time is older than the watermark (max event time seen minus max_lateness {})",
                            pipeline.loaded.config.event_time.max_lateness
                        ),
                    )
                })
                .collect();
            outputs.write_dead_letters(&late)?;
            let keep: BooleanArray = on_time.iter().map(|&ok| Some(ok)).collect();
            batch =
                filter_record_batch(&batch, &keep).map_err(|e| JobError::Other(e.to_string()))?;
            times = times
                .into_iter()
                .zip(&on_time)
                .filter(|(_, ok)| **ok)
                .map(|(t, _)| t)
                .collect();
        }
        accepted += batch.num_rows() as u64;
        reorder.push(batch, times);
        let ready = reorder
            .release(watermark.current())
            .map_err(|e| JobError::Other(e.to_string()))?;
        engine += step.elapsed();
        if let Some(ready) = ready {
            if !send_all(&tasks, || ViewMessage::Batch(ready.clone())).await {
                break;
            }
        }
        if since_expire >= expire_every {
            since_expire = 0;
            let watermark = watermark.current();
            if !send_all(&tasks, || ViewMessage::Expire(watermark)).await {
                break;
            }
        }
    }
    // The source ended: every buffered event is final.
    if let Some(rest) = reorder
        .drain()
        .map_err(|e| JobError::Other(e.to_string()))?
    {
        send_all(&tasks, || ViewMessage::Batch(rest.clone())).await;
    }
    let (operators, views_busy) = finish_all(tasks, &mut outputs).await?;
    bar.finish_and_clear();
    outputs.finish(
        JobTotals {
            mode: "run",
            pipeline: pipeline.loaded.config.name.clone(),
            events: source.events,
            accepted,
            started,
            engine: engine + views_busy,
        },
        &operators,
    )
}

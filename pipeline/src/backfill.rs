//! Backfill: the same views over a bounded input, as fast as the machine allows.
//!
//! The whole input is known, so there is no watermark and nothing is late: every event is
//! applied in event-time order and gets exactly the batch SQL answer. Views run in parallel.

use crate::compile::CompiledPipeline;
use crate::error::JobError;
use crate::ingest::ingest;
use crate::outputs::Outputs;
use crate::progress::events_bar;
use crate::run::RunOptions;
use crate::source::start;
use crate::summary::RunSummary;
use crate::view_operator::ViewOperator;
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
    let tasks: Vec<_> = views
        .into_iter()
        .zip(outputs.take_feature_writers())
        .map(|(view, mut writer)| {
            let batch = all.clone();
            let bar = compute_bar.clone();
            tokio::spawn(async move {
                let mut op = ViewOperator::new(view);
                let result = match op.process(batch, |n| bar.inc(n as u64)).await {
                    Ok(features) => writer.write(&features).map_err(JobError::from),
                    Err(e) => Err(e),
                };
                (op, writer, result)
            })
        })
        .collect();
    let mut operators = Vec::new();
    let mut writers = Vec::new();
    for task in tasks {
        let (op, writer, result) = task
            .await
            .map_err(|e| JobError::Other(format!("a view task stopped: {e}")))?;
        result?;
        operators.push(op);
        writers.push(writer);
    }
    outputs.return_feature_writers(writers);
    // Views ran in parallel: the engine's share is the slowest view's compute time.
    engine += operators
        .iter()
        .map(ViewOperator::busy)
        .max()
        .unwrap_or_default();
    compute_bar.finish_and_clear();
    let dead_letters = outputs.dead_letter_counts();
    let dead_letter_path = outputs.dead_letter_path();
    let views = outputs.finish(&operators)?;
    Ok(RunSummary {
        mode: "backfill".into(),
        pipeline: pipeline.loaded.config.name.clone(),
        events: source.events,
        accepted,
        late: 0,
        dead_letters,
        dead_letter_path,
        views,
        elapsed_s: started.elapsed().as_secs_f64(),
        engine_s: engine.as_secs_f64(),
    })
}

//! From a source batch to rows of the feature stream: offsets attached, transforms applied,
//! rows without event time rejected. Shared by the streaming run and backfill.

use crate::compile::CompiledPipeline;
use crate::dead_letters::row_dead_letter;
use crate::error::JobError;
use crate::event_time::event_times;
use arrow::array::{ArrayRef, BooleanArray, UInt64Array};
use arrow::compute::filter_record_batch;
use arrow::record_batch::RecordBatch;
use quiver_connectors::{DeadLetter, DeadLetterReason, SourceBatch};
use std::sync::Arc;

/// Rows ready for the event-time stage.
pub struct Ingested {
    /// Source partition of the rows.
    pub partition: String,
    /// Feature-stream rows, each with an event time.
    pub batch: RecordBatch,
    /// Event time of each row (microseconds).
    pub times: Vec<i64>,
    /// Rows rejected on the way.
    pub dead_letters: Vec<DeadLetter>,
}

/// Runs the transforms over a source batch and checks event times.
pub async fn ingest(
    pipeline: &CompiledPipeline,
    source: SourceBatch,
) -> Result<Ingested, JobError> {
    let mut columns: Vec<ArrayRef> = source.batch.columns().to_vec();
    columns.push(Arc::new(UInt64Array::from(source.offsets)));
    let mut batch = RecordBatch::try_new(Arc::clone(&pipeline.source_stream_schema), columns)
        .map_err(|e| {
            JobError::Other(format!(
                "source batch from `{}` does not match the declared schema: {e}",
                source.partition
            ))
        })?;
    let mut dead_letters = Vec::new();
    for transform in &pipeline.transforms {
        let out = transform.apply(batch.clone()).await?;
        for (row, message) in out.failed {
            dead_letters.push(row_dead_letter(
                &batch,
                row,
                &source.partition,
                DeadLetterReason::TransformError,
                format!("transform `{}` failed: {message}", transform.name()),
            ));
        }
        batch = out.batch;
    }
    let column = pipeline.event_time();
    let times = event_times(&batch, column).map_err(JobError::Other)?;
    if times.iter().any(Option::is_none) {
        for (row, _) in times.iter().enumerate().filter(|(_, t)| t.is_none()) {
            dead_letters.push(row_dead_letter(
                &batch,
                row,
                &source.partition,
                DeadLetterReason::MissingEventTime,
                format!("event-time column `{column}` is null after the transforms"),
            ));
        }
        let keep: BooleanArray = times.iter().map(|t| Some(t.is_some())).collect();
        batch = filter_record_batch(&batch, &keep).map_err(|e| JobError::Other(e.to_string()))?;
    }
    Ok(Ingested {
        partition: source.partition,
        batch,
        times: times.into_iter().flatten().collect(),
        dead_letters,
    })
}

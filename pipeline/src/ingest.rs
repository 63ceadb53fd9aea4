//! From a source batch to rows of the feature stream: offsets attached, transforms applied,
//! rows without event time rejected. Shared by the streaming run and backfill.

use crate::compile::CompiledPipeline;
use crate::dead_letters::row_dead_letter;
use crate::error::JobError;
use crate::event_time::event_times;
use arrow::array::{ArrayRef, BooleanArray, UInt32Array, UInt64Array};
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

/// Runs the transforms over a source batch and checks event times: rows without one, or dated
/// further ahead of the wall clock than `event_time.max_future`, become dead letters.
/// `partition` is the index of the batch's partition in the source's partition list (it is
/// carried with every row, with the row's offset, for lineage).
pub async fn ingest(
    pipeline: &CompiledPipeline,
    source: SourceBatch,
    partition: usize,
) -> Result<Ingested, JobError> {
    let rows = source.batch.num_rows();
    let mut columns: Vec<ArrayRef> = source.batch.columns().to_vec();
    columns.push(Arc::new(UInt32Array::from(vec![partition as u32; rows])));
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
    let mut times = event_times(&batch, column).map_err(JobError::Other)?;
    let max_future = pipeline.loaded.config.event_time.max_future;
    let limit = (max_future.as_micros() > 0)
        .then(|| crate::clock::now_micros().saturating_add(max_future.as_micros()));
    let future = |t: &Option<i64>| matches!((t, limit), (Some(t), Some(limit)) if *t > limit);
    if times.iter().any(|t| t.is_none() || future(t)) {
        for (row, time) in times.iter().enumerate() {
            let (reason, detail) = match time {
                None => (
                    DeadLetterReason::MissingEventTime,
                    format!("event-time column `{column}` is null after the transforms"),
                ),
                t if future(t) => (
                    DeadLetterReason::FutureEventTime,
                    format!(
                        "event time is more than event_time.max_future ({max_future}) ahead of the wall clock; raise max_future (0 turns the check off) if such times are real"
                    ),
                ),
                _ => continue,
            };
            dead_letters.push(row_dead_letter(
                &batch,
                row,
                &source.partition,
                reason,
                detail,
            ));
        }
        let keep: Vec<bool> = times.iter().map(|t| t.is_some() && !future(t)).collect();
        let mask: BooleanArray = keep.iter().map(|&k| Some(k)).collect();
        batch = filter_record_batch(&batch, &mask).map_err(|e| JobError::Other(e.to_string()))?;
        times = times
            .into_iter()
            .zip(keep)
            .filter_map(|(t, k)| if k { t.map(Some) } else { None })
            .collect();
    }
    Ok(Ingested {
        partition: source.partition,
        batch,
        times: times.into_iter().flatten().collect(),
        dead_letters,
    })
}

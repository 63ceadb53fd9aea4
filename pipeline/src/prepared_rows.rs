//! A view's row-local part over a batch, telling which input row each prepared row came from
//! (the view's WHERE may drop rows): what lets work done per prepared row (an event's
//! availability, its key's partition) go back to the input rows.

use crate::error::JobError;
use arrow::array::{AsArray, RecordBatch, UInt64Array};
use arrow::datatypes::UInt64Type;
use arrow::row::Rows;
use quiver_sql::{FeatureView, ViewInputs, OFFSET_COLUMN};
use std::sync::Arc;

/// `view.prepare(batch)` and the input row index of every prepared row, in order. The hidden
/// offset column carries the indices through the view, so the prepared rows' offsets (their
/// lineage) are the indices, not the source's.
pub async fn prepare_tracking_rows(
    view: &FeatureView,
    batch: RecordBatch,
) -> Result<(ViewInputs, Vec<u32>), JobError> {
    let numbered = with_row_numbers(view, batch)?;
    let prepared = view
        .prepare(numbered)
        .await
        .map_err(|e| JobError::in_view(view.name(), e))?;
    let kept = row_numbers(view, &prepared.batch)?;
    Ok((prepared, kept))
}

/// The encoded keys of `view.prepare(batch)`'s rows (its row-local part, not its kernel
/// inputs) and the input row index of each, in order.
pub async fn prepare_tracking_keys(
    view: &FeatureView,
    batch: RecordBatch,
) -> Result<(Rows, Vec<u32>), JobError> {
    let numbered = with_row_numbers(view, batch)?;
    let (prepared, keys) = view
        .prepare_keys(numbered)
        .await
        .map_err(|e| JobError::in_view(view.name(), e))?;
    Ok((keys, row_numbers(view, &prepared)?))
}

/// `batch` with its offset column replaced by row indices.
fn with_row_numbers(view: &FeatureView, batch: RecordBatch) -> Result<RecordBatch, JobError> {
    let fail = |e: &dyn std::fmt::Display| JobError::in_view(view.name(), e);
    let offset = batch
        .schema()
        .index_of(OFFSET_COLUMN)
        .map_err(|_| fail(&"the stream has no offset column (internal error)"))?;
    let mut columns = batch.columns().to_vec();
    columns[offset] = Arc::new(UInt64Array::from_iter_values(0..batch.num_rows() as u64));
    RecordBatch::try_new(batch.schema(), columns).map_err(|e| fail(&e))
}

/// The row indices [`with_row_numbers`] put in, as they came through the view.
fn row_numbers(view: &FeatureView, prepared: &RecordBatch) -> Result<Vec<u32>, JobError> {
    let fail = |e: &dyn std::fmt::Display| JobError::in_view(view.name(), e);
    let numbers = prepared
        .column_by_name(OFFSET_COLUMN)
        .and_then(|c| c.as_primitive_opt::<UInt64Type>())
        .ok_or_else(|| fail(&"the offset column did not pass the view (internal error)"))?;
    Ok(numbers.values().iter().map(|&row| row as u32).collect())
}

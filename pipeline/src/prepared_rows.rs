//! A view's row-local part over a batch, telling which input row each prepared row came from
//! (the view's WHERE may drop rows): what lets work done per prepared row (an event's
//! availability, its key's partition) go back to the input rows.

use crate::error::JobError;
use arrow::array::{AsArray, RecordBatch, UInt64Array};
use arrow::datatypes::UInt64Type;
use quiver_sql::{FeatureView, ViewInputs, OFFSET_COLUMN};
use std::sync::Arc;

/// `view.prepare(batch)` and the input row index of every prepared row, in order. The hidden
/// offset column carries the indices through the view, so the prepared rows' offsets (their
/// lineage) are the indices, not the source's.
pub async fn prepare_tracking_rows(
    view: &FeatureView,
    batch: RecordBatch,
) -> Result<(ViewInputs, Vec<u32>), JobError> {
    let fail = |e: &dyn std::fmt::Display| JobError::in_view(view.name(), e);
    let offset = batch
        .schema()
        .index_of(OFFSET_COLUMN)
        .map_err(|_| fail(&"the stream has no offset column (internal error)"))?;
    let mut columns = batch.columns().to_vec();
    columns[offset] = Arc::new(UInt64Array::from_iter_values(0..batch.num_rows() as u64));
    let batch = RecordBatch::try_new(batch.schema(), columns).map_err(|e| fail(&e))?;
    let prepared = view.prepare(batch).await.map_err(|e| fail(&e))?;
    let kept = prepared
        .batch
        .column_by_name(OFFSET_COLUMN)
        .ok_or_else(|| fail(&"the offset column did not pass the view (internal error)"))?
        .as_primitive::<UInt64Type>()
        .values()
        .iter()
        .map(|&row| row as u32)
        .collect();
    Ok((prepared, kept))
}

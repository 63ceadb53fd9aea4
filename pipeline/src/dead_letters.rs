//! Dead letters for rows rejected after decoding (transform failures, missing or late event
//! times), with each row's exact source position.

use arrow::array::{Array, AsArray};
use arrow::datatypes::UInt64Type;
use arrow::record_batch::RecordBatch;
use quiver_connectors::render::json_row;
use quiver_connectors::{DeadLetter, DeadLetterReason};
use quiver_sql::lineage::is_hidden;
use quiver_sql::OFFSET_COLUMN;

/// Source offset of `row`, from the hidden offset column (0 if a transform dropped it).
pub fn row_offset(batch: &RecordBatch, row: usize) -> u64 {
    batch
        .column_by_name(OFFSET_COLUMN)
        .and_then(|c| c.as_primitive_opt::<UInt64Type>())
        .filter(|c| c.is_valid(row))
        .map_or(0, |c| c.value(row))
}

/// A dead letter for `row` of `batch`, rendered as JSON without internal columns.
pub fn row_dead_letter(
    batch: &RecordBatch,
    row: usize,
    partition: &str,
    reason: DeadLetterReason,
    detail: String,
) -> DeadLetter {
    let visible: Vec<usize> = batch
        .schema()
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| !is_hidden(f.name()))
        .map(|(i, _)| i)
        .collect();
    let raw = match batch.project(&visible) {
        Ok(b) => json_row(&b, row),
        Err(e) => format!("<row not renderable: {e}>"),
    };
    DeadLetter {
        reason,
        detail,
        partition: partition.to_string(),
        offset: row_offset(batch, row),
        raw,
    }
}

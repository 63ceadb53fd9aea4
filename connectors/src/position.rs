//! Source positions: which records of which partition a batch holds.

use arrow::record_batch::RecordBatch;

/// Where a batch came from: the source partition (file path/URL, or "datagen", later
/// "topic/partition") and the inclusive range of record offsets (line numbers for NDJSON/CSV
/// counted from 1 including the header line for CSV; row index for Parquet; sequence number for
/// datagen).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SourceRange {
    /// The source partition.
    pub partition: String,
    /// Smallest record offset in the batch.
    pub first_offset: u64,
    /// Largest record offset in the batch (inclusive).
    pub last_offset: u64,
}

/// An Arrow batch plus the source positions of its rows. `offsets[i]` is the source offset of
/// row i (same partition for the whole batch).
#[derive(Debug, Clone)]
pub struct SourceBatch {
    /// The decoded rows, in the declared schema.
    pub batch: RecordBatch,
    /// The source partition all rows come from.
    pub partition: String,
    /// Source offset per row; same length as the batch.
    pub offsets: Vec<u64>,
}

impl SourceBatch {
    /// The offset range covered by this batch, `None` for an empty batch.
    ///
    /// Uses the minimum and maximum offset, so it is correct even if rows are not in offset
    /// order.
    pub fn range(&self) -> Option<SourceRange> {
        let first_offset = self.offsets.iter().copied().min()?;
        let last_offset = self.offsets.iter().copied().max()?;
        Some(SourceRange {
            partition: self.partition.clone(),
            first_offset,
            last_offset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn range_spans_min_to_max() {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let batch =
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1, 2, 3]))]).unwrap();
        let sb = SourceBatch {
            batch: batch.clone(),
            partition: "p".into(),
            offsets: vec![5, 3, 9],
        };
        assert_eq!(
            sb.range(),
            Some(SourceRange {
                partition: "p".into(),
                first_offset: 3,
                last_offset: 9
            })
        );
        let empty = SourceBatch {
            batch: batch.slice(0, 0),
            partition: "p".into(),
            offsets: vec![],
        };
        assert_eq!(empty.range(), None);
    }
}

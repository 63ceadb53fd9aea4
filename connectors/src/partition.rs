//! What one source partition yields, in position order, and resuming it after a position.
//!
//! A partition is an ordered sequence of records, each with an offset (line, row or sequence
//! number). Good records arrive in batches, undecodable ones as dead letters; a reader emits
//! both in offset order, so "every record at or before offset P was consumed" is a complete
//! description of progress, and a checkpoint stores just P per partition.

use crate::dead_letter::DeadLetter;
use crate::decode::Decoded;
use crate::position::SourceBatch;
use arrow::array::BooleanArray;
use arrow::compute::filter_record_batch;

/// A run of consecutive records of one partition: the undecodable ones as dead letters, the
/// good ones as a batch. Successive items of a partition cover disjoint, increasing offset
/// ranges (the dead letters of records between a batch's rows travel with that batch), so a
/// checkpoint between two items is fully described by the last item's largest offset.
#[derive(Debug, Clone, Default)]
pub struct PartitionItem {
    /// Records that could not be decoded (handled before the batch).
    pub dead_letters: Vec<DeadLetter>,
    /// Decoded rows.
    pub batch: Option<SourceBatch>,
}

impl PartitionItem {
    /// An item of decoded rows only.
    pub fn rows(batch: SourceBatch) -> Self {
        PartitionItem {
            dead_letters: Vec::new(),
            batch: Some(batch),
        }
    }

    /// The largest offset in the item (`None` when empty).
    pub fn last_offset(&self) -> Option<u64> {
        let rows = self
            .batch
            .as_ref()
            .and_then(|b| b.offsets.iter().copied().max());
        let letters = self.dead_letters.iter().map(|d| d.offset).max();
        rows.max(letters)
    }

    /// Records in the item.
    pub fn len(&self) -> usize {
        self.dead_letters.len() + self.batch.as_ref().map_or(0, |b| b.offsets.len())
    }

    /// Whether the item holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The records after `position` (all of them for `None`), or `None` if nothing is left.
    /// Used when resuming: records at or before a checkpoint's position were consumed.
    pub fn after(mut self, position: Option<u64>) -> Option<PartitionItem> {
        if let Some(position) = position {
            self.dead_letters.retain(|d| d.offset > position);
            self.batch = self.batch.and_then(|b| batch_after(b, position));
        }
        (!self.is_empty()).then_some(self)
    }
}

/// The rows of `b` after `position`, `None` if none.
fn batch_after(b: SourceBatch, position: u64) -> Option<SourceBatch> {
    if b.offsets.iter().all(|&o| o > position) {
        return Some(b);
    }
    let keep: BooleanArray = b.offsets.iter().map(|&o| Some(o > position)).collect();
    // Cannot fail: the mask has the batch's length.
    let batch = filter_record_batch(&b.batch, &keep).ok()?;
    let offsets: Vec<u64> = b.offsets.into_iter().filter(|&o| o > position).collect();
    (!offsets.is_empty()).then_some(SourceBatch {
        batch,
        partition: b.partition,
        offsets,
    })
}

/// The output of decoding one file as items in offset order: each batch with the dead letters
/// of the records before its last row, then the remaining dead letters.
pub fn in_offset_order(decoded: Decoded) -> Vec<PartitionItem> {
    let mut letters = decoded.dead_letters;
    letters.sort_by_key(|d| d.offset);
    let mut letters = letters.into_iter().peekable();
    let mut items = Vec::new();
    for batch in decoded.batches {
        let last = batch.offsets.iter().copied().max().unwrap_or(0);
        let dead_letters = std::iter::from_fn(|| letters.next_if(|d| d.offset < last)).collect();
        items.push(PartitionItem {
            dead_letters,
            batch: Some(batch),
        });
    }
    let rest: Vec<DeadLetter> = letters.collect();
    if !rest.is_empty() {
        items.push(PartitionItem {
            dead_letters: rest,
            batch: None,
        });
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DeadLetterReason;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;
    use std::sync::Arc;

    fn batch(offsets: &[u64]) -> SourceBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let values = Int64Array::from_iter_values(offsets.iter().map(|&o| o as i64));
        SourceBatch {
            batch: RecordBatch::try_new(schema, vec![Arc::new(values)]).unwrap(),
            partition: "p".into(),
            offsets: offsets.to_vec(),
        }
    }

    fn letter(offset: u64) -> DeadLetter {
        DeadLetter {
            reason: DeadLetterReason::MalformedRecord,
            detail: String::new(),
            partition: "p".into(),
            offset,
            raw: String::new(),
        }
    }

    #[test]
    fn items_cover_disjoint_increasing_offset_ranges() {
        let items = in_offset_order(Decoded {
            batches: vec![batch(&[1, 2, 4]), batch(&[6, 7])],
            dead_letters: vec![letter(9), letter(5), letter(3), letter(0)],
        });
        let ranges: Vec<(u64, u64)> = items
            .iter()
            .map(|i| {
                let rows = i.batch.iter().flat_map(|b| b.offsets.iter().copied());
                let all: Vec<u64> = rows
                    .chain(i.dead_letters.iter().map(|d| d.offset))
                    .collect();
                (*all.iter().min().unwrap(), *all.iter().max().unwrap())
            })
            .collect();
        assert_eq!(ranges, vec![(0, 4), (5, 7), (9, 9)]);
        assert_eq!(
            items[0].dead_letters.len(),
            2,
            "0 before the batch, 3 inside it"
        );
    }

    #[test]
    fn resumes_after_a_position_even_inside_a_batch() {
        assert!(PartitionItem::rows(batch(&[1, 2])).after(Some(2)).is_none());
        let rest = PartitionItem::rows(batch(&[1, 2, 3]))
            .after(Some(1))
            .and_then(|i| i.batch)
            .expect("rows after the position remain");
        assert_eq!(rest.offsets, vec![2, 3]);
        assert_eq!(rest.batch.num_rows(), 2);
        let item = PartitionItem {
            dead_letters: vec![letter(3), letter(8)],
            batch: Some(batch(&[2, 4])),
        }
        .after(Some(3))
        .expect("left");
        assert_eq!(item.dead_letters.len(), 1);
        assert_eq!(item.batch.map(|b| b.offsets), Some(vec![4]));
        assert_eq!(
            PartitionItem::rows(batch(&[4]))
                .after(None)
                .map(|i| i.len()),
            Some(1)
        );
    }
}

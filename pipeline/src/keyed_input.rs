//! Backfill's input split by one view's key into partitions that are evaluated one at a time
//! (a window only ever holds one key's events): as row positions into the input while it is
//! in memory, or as the rows themselves in spill files when the input was spilled. Only the
//! rows the view keeps (its WHERE) are split; the others it would drop anyway.
//!
//! A partition far larger than the others (a hot key's events are never split by key) is cut
//! again by event time into slices of about the others' size ([`KeyedInput::slice_oversized`]),
//! evaluated in time order with window state carried from slice to slice, so memory holds a
//! slice and the state, not the hot key's events.

use crate::error::JobError;
use crate::prepared_rows::{prepare_tracking_keys, prepare_tracking_rows};
use crate::spill::{partitions_of, push_partitioned, Spill};
use crate::unread_columns::UnreadColumns;
use arrow::array::{RecordBatch, UInt32Array};
use quiver_sql::FeatureView;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// Where a view's key partitions of backfill's input are.
enum Parts {
    /// Positions into the input held in memory.
    Memory {
        /// The input's batches.
        input: Arc<Vec<RecordBatch>>,
        /// Per input batch, its kept rows by partition.
        groups: Vec<BatchGroups>,
        /// Rows per partition (0 once taken).
        rows: Vec<usize>,
    },
    /// The rows per partition, in spill files.
    Files(Spill),
}

/// One view's key partitions of backfill's input.
pub struct KeyedInput {
    parts: Parts,
    /// The columns the view never reads: blanked, not carried, when rows are gathered.
    unread: UnreadColumns,
    /// The partitions cut by event time: each one's slices in time order.
    sliced: BTreeMap<usize, Spill>,
}

/// One input batch's rows that a view keeps, grouped by key partition: 4 bytes a row, each
/// vector allocated once at its size (a vector of positions per partition, grown as rows
/// came, took 16 bytes a row and up to twice that while growing: at 10M events, hundreds of
/// MiB of pages the kernel had to fault in and zero).
struct BatchGroups {
    /// Row indices into the batch, partition 0's first, each partition's in row order.
    rows: Vec<u32>,
    /// Where each partition's rows start in `rows`, and where the last one ends.
    starts: Vec<u32>,
}

impl BatchGroups {
    /// Groups the `kept` rows of a batch by their `partition` (one per kept row).
    fn new(kept: &[u32], partition: &[u16], partitions: usize) -> Self {
        let slots: Vec<u32> = partition.iter().map(|&p| u32::from(p)).collect();
        let (order, starts) = quiver_gpu::group_rows(&slots, partitions, 0..slots.len() as u32);
        BatchGroups {
            rows: order.iter().map(|&i| kept[i as usize]).collect(),
            starts: starts.iter().map(|&s| s as u32).collect(),
        }
    }

    /// The batch's rows of partition `p`.
    fn rows_of(&self, p: usize) -> &[u32] {
        &self.rows[self.starts[p] as usize..self.starts[p + 1] as usize]
    }
}

/// The (batch, row) positions of partition `p`'s rows in `groups`, in input order.
fn positions_of(groups: &[BatchGroups], p: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
    (groups.iter().enumerate())
        .flat_map(move |(batch, g)| g.rows_of(p).iter().map(move |&row| (batch, row as usize)))
}

/// One key partition, as it is evaluated.
pub enum KeyPartition {
    /// Its rows, evaluated at once.
    Whole(RecordBatch),
    /// Its rows cut by event time: slice `i` holds the rows of times before every row of slice
    /// `i + 1`, so the slices are evaluated in order with window state carried between them.
    Sliced(Spill),
}

/// Rows per batch when a partition is read in pieces.
const PIECE_ROWS: usize = 64 * 1024;

impl KeyedInput {
    /// Splits `input` (the backfill's one-partition spill) by `view`'s key into `partitions`:
    /// positions when `in_memory` holds the input, else spill files under `dir`; `progress`
    /// counts the rows read.
    pub async fn split(
        view: &FeatureView,
        input: &Spill,
        in_memory: Option<&Arc<Vec<RecordBatch>>>,
        partitions: usize,
        dir: &Path,
        progress: &indicatif::ProgressBar,
    ) -> Result<Self, JobError> {
        let unread = UnreadColumns::of(view, input.schema());
        let mut keyed = match in_memory {
            Some(input) => Parts::Memory {
                input: Arc::clone(input),
                groups: Vec::with_capacity(input.len()),
                rows: vec![0; partitions],
            },
            None => Parts::Files(Spill::in_files(
                dir,
                &format!("{}-keyed", view.name()),
                Arc::clone(input.schema()),
                partitions,
            )),
        };
        let batches: Box<dyn Iterator<Item = Result<RecordBatch, JobError>> + Send> =
            match in_memory {
                Some(input) => Box::new(input.iter().cloned().map(Ok)),
                None => Box::new(input.read(0)?),
            };
        for (index, batch) in batches.enumerate() {
            let batch = batch?;
            progress.inc(batch.num_rows() as u64);
            let (keys, kept) = prepare_tracking_keys(view, batch.clone()).await?;
            let partition = partitions_of(keys.iter().map(|k| k.data()), partitions);
            drop(keys);
            match &mut keyed {
                Parts::Memory { groups, rows, .. } => {
                    debug_assert_eq!(groups.len(), index);
                    let grouped = BatchGroups::new(&kept, &partition, partitions);
                    for (p, rows) in rows.iter_mut().enumerate() {
                        *rows += grouped.rows_of(p).len();
                    }
                    groups.push(grouped);
                }
                Parts::Files(spill) => {
                    let kept = unread.blanked(&batch).and_then(|batch| {
                        arrow::compute::take_record_batch(&batch, &UInt32Array::from(kept))
                    });
                    let kept = kept.map_err(|e| JobError::in_view(view.name(), e))?;
                    push_partitioned(spill, &kept, &partition)?;
                }
            }
        }
        if let Parts::Files(spill) = &mut keyed {
            spill.finish()?;
        }
        Ok(KeyedInput {
            parts: keyed,
            unread,
            sliced: BTreeMap::new(),
        })
    }

    /// Rows of partition `p` (0 once taken).
    pub fn rows(&self, p: usize) -> usize {
        match &self.parts {
            Parts::Memory { rows, .. } => rows[p],
            Parts::Files(spill) => spill.rows(p),
        }
    }

    /// Whether partition `p` is cut by time under [`KeyedInput::slice_oversized`].
    fn is_oversized(&self, p: usize, slice_rows: usize) -> bool {
        self.rows(p) > slice_rows.max(1).saturating_mul(2)
    }

    /// Rows of the partitions [`KeyedInput::slice_oversized`] cuts with `slice_rows`.
    pub fn oversized_rows(&self, slice_rows: usize) -> usize {
        (0..self.partitions())
            .filter(|&p| self.is_oversized(p, slice_rows))
            .map(|p| self.rows(p))
            .sum()
    }

    /// Cuts every partition of more than `2 * slice_rows` rows by `view`'s event time into
    /// slices of about `slice_rows` rows (all rows of one time in one slice), in spill files
    /// under `dir`; how many partitions were cut. Each partition is read twice, a piece at a
    /// time: once for its event times (where to cut), once to cut it; `progress` counts the
    /// rows of both.
    pub async fn slice_oversized(
        &mut self,
        view: &FeatureView,
        slice_rows: usize,
        dir: &Path,
        progress: &indicatif::ProgressBar,
    ) -> Result<usize, JobError> {
        let slice_rows = slice_rows.max(1);
        for p in 0..self.partitions() {
            if !self.is_oversized(p, slice_rows) {
                continue;
            }
            let mut times = Vec::with_capacity(self.rows(p));
            for piece in self.pieces(p)? {
                let piece = piece?;
                progress.inc(piece.num_rows() as u64);
                let (prepared, _) = prepare_tracking_rows(view, piece).await?;
                times.extend_from_slice(&prepared.times);
            }
            let bounds = slice_bounds(times, self.rows(p).div_ceil(slice_rows));
            let name = format!("{}-slices-{p}", view.name());
            let schema = Arc::clone(self.schema());
            let mut slices = Spill::in_files(dir, &name, schema, bounds.len() + 1);
            for piece in self.pieces(p)? {
                let piece = piece?;
                progress.inc(piece.num_rows() as u64);
                let (prepared, kept) = prepare_tracking_rows(view, piece.clone()).await?;
                let slice: Vec<u16> = (prepared.times.iter())
                    .map(|t| bounds.partition_point(|b| b <= t) as u16)
                    .collect();
                let kept = arrow::compute::take_record_batch(&piece, &UInt32Array::from(kept))
                    .map_err(|e| JobError::in_view(view.name(), e))?;
                push_partitioned(&mut slices, &kept, &slice)?;
            }
            slices.finish()?;
            self.discard(p)?;
            self.sliced.insert(p, slices);
        }
        Ok(self.sliced.len())
    }

    /// The schema of the partitions' rows.
    fn schema(&self) -> &arrow::datatypes::SchemaRef {
        match &self.parts {
            Parts::Memory { input, .. } => input[0].schema_ref(),
            Parts::Files(spill) => spill.schema(),
        }
    }

    /// The rows of partition `p` in pieces of at most [`PIECE_ROWS`] rows, left in place.
    fn pieces(
        &self,
        p: usize,
    ) -> Result<Box<dyn Iterator<Item = Result<RecordBatch, JobError>> + Send + '_>, JobError> {
        match &self.parts {
            Parts::Memory { input, groups, .. } => {
                let batches: Vec<&RecordBatch> = input.iter().collect();
                let mut positions = positions_of(groups, p);
                Ok(Box::new(std::iter::from_fn(move || {
                    let piece: Vec<_> = positions.by_ref().take(PIECE_ROWS).collect();
                    (!piece.is_empty()).then(|| {
                        (self.unread.interleave(&batches, &piece))
                            .map_err(|e| JobError::Other(format!("a key partition: {e}")))
                    })
                })))
            }
            Parts::Files(spill) => Ok(Box::new(spill.read(p)?)),
        }
    }

    /// Drops partition `p`'s rows (its slices replace them).
    fn discard(&mut self, p: usize) -> Result<(), JobError> {
        match &mut self.parts {
            Parts::Memory { rows, .. } => rows[p] = 0,
            Parts::Files(spill) => drop(spill.take(p)?),
        }
        Ok(())
    }

    /// The number of partitions.
    pub fn partitions(&self) -> usize {
        match &self.parts {
            Parts::Memory { rows, .. } => rows.len(),
            Parts::Files(spill) => spill.partitions(),
        }
    }

    /// Partition `p` (taken out): its rows as one batch, or its time slices; `None` when it
    /// has no rows.
    pub fn take(&mut self, p: usize) -> Result<Option<KeyPartition>, JobError> {
        if let Some(slices) = self.sliced.remove(&p) {
            return Ok(Some(KeyPartition::Sliced(slices)));
        }
        let fail = |e: &dyn std::fmt::Display| JobError::Other(format!("a key partition: {e}"));
        let whole = match &mut self.parts {
            Parts::Memory {
                input,
                groups,
                rows,
            } => {
                if std::mem::take(&mut rows[p]) == 0 {
                    return Ok(None);
                }
                let positions: Vec<_> = positions_of(groups, p).collect();
                let batches: Vec<&RecordBatch> = input.iter().collect();
                (self.unread.interleave(&batches, &positions)).map_err(|e| fail(&e))?
            }
            Parts::Files(spill) => {
                let batches = spill.take(p)?.collect::<Result<Vec<_>, _>>()?;
                if batches.is_empty() {
                    return Ok(None);
                }
                arrow::compute::concat_batches(spill.schema(), &batches).map_err(|e| fail(&e))?
            }
        };
        Ok(Some(KeyPartition::Whole(whole)))
    }
}

/// Where to cut rows with event times `times` into about `slices` slices of equal row
/// counts: ascending times, a row of time `t` going to the slice of the bounds at or before
/// `t` (so all rows of one time share a slice, which may then hold more).
fn slice_bounds(mut times: Vec<i64>, slices: usize) -> Vec<i64> {
    if times.is_empty() {
        return Vec::new();
    }
    times.sort_unstable();
    let slices = slices.clamp(1, MAX_SLICES);
    let mut bounds: Vec<i64> = (1..slices)
        .map(|i| times[i * times.len() / slices])
        .collect();
    bounds.dedup();
    bounds
}

/// Slices of one partition at most (each is a file open while the partition is cut).
const MAX_SLICES: usize = 512;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_bounds_cut_equal_counts_and_keep_a_time_together() {
        let times: Vec<i64> = (0..100).map(|i| i / 2).collect(); // each time twice
        let bounds = slice_bounds(times.clone(), 4);
        assert_eq!(bounds, vec![12, 25, 37]);
        let slice = |t: &i64| bounds.partition_point(|b| b <= t);
        let mut sizes = [0; 4];
        for t in &times {
            sizes[slice(t)] += 1;
        }
        assert_eq!(sizes, [24, 26, 24, 26]);
        // One time for everything: one slice, whatever was asked.
        assert!(slice_bounds(vec![7; 50], 5).iter().all(|&b| b == 7));
        assert_eq!(slice_bounds(vec![7; 50], 5).len(), 1);
        assert!(slice_bounds(Vec::new(), 1).is_empty());
    }
}

//! Backfill's input split by one view's key into partitions that are evaluated one at a time
//! (a window only ever holds one key's events): the rows of each partition, copied out of the
//! input as it is read, in memory while the input is, else in spill files. Only the rows the
//! view keeps (its WHERE) are split, and only the columns it reads: the others are blanked
//! when a partition is taken.
//!
//! A partition too large to evaluate whole within its share of the memory budget (a hot key's
//! events are never split by key) is cut again by event time into slices of about the
//! others' size ([`KeyedInput::slice_oversized`]),
//! evaluated in time order with window state carried from slice to slice, so memory holds a
//! slice and the state, not the hot key's events.

use crate::error::JobError;
use crate::partition_copies::{variable_bytes, PartitionCopies};
use crate::prepared_rows::{prepare_tracking_keys, prepare_tracking_rows};
use crate::shared_input::SharedInput;
use crate::spill::{partitions_of, push_partitioned, rows_by_partition, RowCursor, Spill};
use crate::time_cuts::{slice_of, TimeCuts};
use crate::unread_columns::UnreadColumns;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use quiver_sql::FeatureView;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// One view's key partitions of backfill's input.
pub struct KeyedInput {
    /// The read columns of each partition's rows, in input order.
    parts: Spill,
    /// The stream's schema (the partitions' lacks the unread columns).
    schema: SchemaRef,
    /// The columns the view never reads: not carried, blanked when rows are taken.
    unread: UnreadColumns,
    /// The partitions cut by event time: each one's slices in time order.
    sliced: BTreeMap<usize, Spill>,
    /// Rows read from spill files at once to be split or cut (see [`KeyedInput::split`]).
    chunk_rows: usize,
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
    /// in memory when `in_memory` holds the input (each batch let go once split), else in
    /// spill files under `dir`, `chunk_rows` rows of the input at a time (each chunk's rows of
    /// a partition are one batch in its file: small batches cost more to compress, write and
    /// read back than their rows; hot partitions are cut by time in chunks of at least as
    /// many rows); `progress` counts the rows read.
    pub async fn split(
        view: &FeatureView,
        input: &Spill,
        in_memory: Option<&SharedInput>,
        partitions: usize,
        chunk_rows: usize,
        dir: &Path,
        progress: &indicatif::ProgressBar,
    ) -> Result<Self, JobError> {
        let Some(input_batches) = in_memory else {
            let mut keyed = KeyedInput::in_files(view, input.schema(), partitions, chunk_rows, dir);
            let mut chunks = Chunks::new(input.schema(), chunk_rows);
            for batch in input.read(0)? {
                if let Some(chunk) = chunks.push(batch?)? {
                    keyed.split_chunk(view, chunk, progress).await?;
                }
            }
            if let Some(chunk) = chunks.finish()? {
                keyed.split_chunk(view, chunk, progress).await?;
            }
            keyed.finish_split()?;
            return Ok(keyed);
        };
        let schema = Arc::clone(input.schema());
        let unread = UnreadColumns::of(view, &schema);
        let read_schema = unread.projected_schema(&schema);
        let name = format!("{}-keyed", view.name());
        let mut parts = Spill::in_memory(&name, read_schema, partitions);
        for (p, rows) in copy_split(view, &unread, input_batches, &parts, progress)
            .await?
            .into_iter()
            .enumerate()
        {
            if let Some(rows) = rows {
                parts.push(p, rows)?;
            }
        }
        Ok(KeyedInput {
            parts,
            schema,
            unread,
            sliced: BTreeMap::new(),
            chunk_rows,
        })
    }

    /// An empty split of input of `schema` by `view`'s key into `partitions` spill files under
    /// `dir`, to be filled a chunk (of about `chunk_rows` rows) at a time by
    /// [`KeyedInput::split_chunk`] and closed by [`KeyedInput::finish_split`].
    pub fn in_files(
        view: &FeatureView,
        schema: &SchemaRef,
        partitions: usize,
        chunk_rows: usize,
        dir: &Path,
    ) -> Self {
        let unread = UnreadColumns::of(view, schema);
        let read_schema = unread.projected_schema(schema);
        let name = format!("{}-keyed", view.name());
        KeyedInput {
            parts: Spill::in_files(dir, &name, read_schema, partitions),
            schema: Arc::clone(schema),
            unread,
            sliced: BTreeMap::new(),
            chunk_rows,
        }
    }

    /// Splits the rows of `chunk` (input rows, after those split before) that `view` keeps
    /// into their key's partitions, only the columns the view reads: each partition gets one
    /// batch; `progress` counts the chunk's rows.
    pub async fn split_chunk(
        &mut self,
        view: &FeatureView,
        chunk: RecordBatch,
        progress: &indicatif::ProgressBar,
    ) -> Result<(), JobError> {
        progress.inc(chunk.num_rows() as u64);
        let (keys, kept) = prepare_tracking_keys(view, chunk.clone()).await?;
        let partition = partitions_of(keys.iter().map(|k| k.data()), self.parts.partitions());
        drop(keys);
        let read = (self.unread.project(&chunk)).map_err(|e| JobError::in_view(view.name(), e))?;
        push_partitioned(&mut self.parts, &read, Some(&kept), &partition)
    }

    /// Ends a split made by [`KeyedInput::split_chunk`]: the spill files are closed.
    pub fn finish_split(&mut self) -> Result<(), JobError> {
        self.parts.finish()
    }

    /// Rows of partition `p` (0 once taken).
    pub fn rows(&self, p: usize) -> usize {
        self.parts.rows(p)
    }

    /// Whether partition `p` is cut by time under [`KeyedInput::slice_oversized`].
    fn is_oversized(&self, p: usize, whole_rows: usize) -> bool {
        self.rows(p) > whole_rows.max(1)
    }

    /// Rows of the partitions [`KeyedInput::slice_oversized`] cuts with `whole_rows`.
    pub fn oversized_rows(&self, whole_rows: usize) -> usize {
        (0..self.partitions())
            .filter(|&p| self.is_oversized(p, whole_rows))
            .map(|p| self.rows(p))
            .sum()
    }

    /// Cuts every partition of more than `whole_rows` rows by `view`'s event time into
    /// slices of about `slice_rows` rows (all rows of one time in one slice), in spill files
    /// under `dir`; how many partitions were cut. Each partition is read twice, a piece at a
    /// time: once for its event times (where to cut), once to cut it; `progress` counts the
    /// rows of both.
    pub async fn slice_oversized(
        &mut self,
        view: &FeatureView,
        whole_rows: usize,
        slice_rows: usize,
        dir: &Path,
        progress: &indicatif::ProgressBar,
    ) -> Result<usize, JobError> {
        let slice_rows = slice_rows.max(1);
        for p in 0..self.partitions() {
            if !self.is_oversized(p, whole_rows) {
                continue;
            }
            let mut cuts = TimeCuts::sampling(self.rows(p));
            for piece in self.pieces(p)? {
                let piece = piece?;
                progress.inc(piece.num_rows() as u64);
                let (prepared, _) = prepare_tracking_rows(view, piece).await?;
                cuts.add(prepared.times.len(), |r| prepared.times[r]);
            }
            let slices = self.rows(p).div_ceil(slice_rows).min(MAX_SLICES);
            let bounds = cuts.bounds(slices);
            let name = format!("{}-slices-{p}", view.name());
            let mut slices =
                Spill::in_files(dir, &name, Arc::clone(&self.schema), bounds.len() + 1);
            for piece in self.pieces(p)? {
                let piece = piece?;
                progress.inc(piece.num_rows() as u64);
                let (prepared, kept) = prepare_tracking_rows(view, piece.clone()).await?;
                let slice: Vec<u16> = (prepared.times.iter())
                    .map(|&t| slice_of(&bounds, t))
                    .collect();
                push_partitioned(&mut slices, &piece, Some(&kept), &slice)?;
            }
            slices.finish()?;
            drop(self.parts.take(p)?);
            self.sliced.insert(p, slices);
        }
        Ok(self.sliced.len())
    }

    /// The rows of partition `p` in pieces of at most [`PIECE_ROWS`] rows (or the split's
    /// chunks, when larger), left in place.
    fn pieces(
        &self,
        p: usize,
    ) -> Result<impl Iterator<Item = Result<RecordBatch, JobError>> + Send + '_, JobError> {
        let mut cursor = RowCursor::new(Arc::clone(self.parts.schema()), self.parts.read(p)?);
        let mut left = self.rows(p);
        Ok(std::iter::from_fn(move || {
            let rows = left.min(self.chunk_rows.max(PIECE_ROWS));
            left -= rows;
            (rows > 0).then(|| {
                let piece = cursor.next_rows(rows)?;
                (self.unread.widen(&self.schema, &piece))
                    .map_err(|e| JobError::Other(format!("a key partition: {e}")))
            })
        }))
    }

    /// The number of partitions.
    pub fn partitions(&self) -> usize {
        self.parts.partitions()
    }

    /// Partition `p` (taken out): its rows as one batch, or its time slices; `None` when it
    /// has no rows.
    pub fn take(&mut self, p: usize) -> Result<Option<KeyPartition>, JobError> {
        if let Some(slices) = self.sliced.remove(&p) {
            return Ok(Some(KeyPartition::Sliced(slices)));
        }
        let fail = |e: &dyn std::fmt::Display| JobError::Other(format!("a key partition: {e}"));
        let batches = self.parts.take(p)?.collect::<Result<Vec<_>, _>>()?;
        if batches.is_empty() {
            return Ok(None);
        }
        // One batch (an in-memory partition) is not copied: concatenating one array slices it.
        let read =
            arrow::compute::concat_batches(self.parts.schema(), &batches).map_err(|e| fail(&e))?;
        drop(batches);
        let whole = self
            .unread
            .widen(&self.schema, &read)
            .map_err(|e| fail(&e))?;
        Ok(Some(KeyPartition::Whole(whole)))
    }
}

/// The rows of the in-memory `input` that `view` keeps, only the columns it reads, copied
/// into one batch per partition of `parts` (`None` for a partition without rows): each
/// batch's rows are first given their key's partition, which sizes the partitions' arrays,
/// then copied into them (and the batch let go); `progress` counts the rows copied.
async fn copy_split(
    view: &FeatureView,
    unread: &UnreadColumns,
    input: &SharedInput,
    parts: &Spill,
    progress: &indicatif::ProgressBar,
) -> Result<Vec<Option<RecordBatch>>, JobError> {
    let batch_of = |i| {
        input.get(i).ok_or_else(|| {
            JobError::Other("an input batch was let go early (internal error)".into())
        })
    };
    let fail = |e: arrow::error::ArrowError| JobError::in_view(view.name(), e);
    let schema = parts.schema();
    let columns = schema.fields().len();
    let mut sizes = vec![0; parts.partitions()];
    let mut nullable = vec![false; columns];
    let mut value_bytes = vec![0; columns];
    let mut assigned = Vec::with_capacity(input.len());
    let mut rows = 0;
    for i in 0..input.len() {
        let batch = batch_of(i)?;
        let (keys, kept) = prepare_tracking_keys(view, batch.clone()).await?;
        let partition = partitions_of(keys.iter().map(|k| k.data()), parts.partitions());
        drop(keys);
        for &p in &partition {
            sizes[usize::from(p)] += 1;
        }
        let read = unread.project(&batch).map_err(fail)?;
        for (c, column) in read.columns().iter().enumerate() {
            nullable[c] |= column.null_count() > 0;
            value_bytes[c] += variable_bytes(column.as_ref());
        }
        rows += batch.num_rows();
        // The read columns share the input batch's buffers: it is let go after the copy.
        assigned.push((read, kept, partition));
    }
    let rows = rows.max(1);
    let row_bytes: Vec<usize> = value_bytes.iter().map(|b| b.div_ceil(rows)).collect();
    let mut copies = PartitionCopies::new(Arc::clone(schema), sizes, &nullable, &row_bytes);
    for (i, (read, kept, partition)) in assigned.into_iter().enumerate() {
        progress.inc(read.num_rows() as u64);
        let (order, starts) = rows_by_partition(&partition, parts.partitions(), Some(&kept));
        copies.push(&read, &order, &starts).map_err(fail)?;
        drop(read);
        input.let_go(i);
    }
    copies.finish().map_err(fail)
}

/// Input batches gathered into chunks of at least a number of rows, each joined into one batch
/// (a spilled input's split gets a batch of thousands of rows per partition and chunk).
pub struct Chunks {
    schema: SchemaRef,
    /// Rows a chunk gets before it is handed on.
    rows: usize,
    held: Vec<RecordBatch>,
    held_rows: usize,
}

impl Chunks {
    /// Chunks of batches of `schema`, of at least `rows` rows (the last one may have fewer).
    pub fn new(schema: &SchemaRef, rows: usize) -> Self {
        Chunks {
            schema: Arc::clone(schema),
            rows,
            held: Vec::new(),
            held_rows: 0,
        }
    }

    /// Adds `batch`, the next of the input: the chunk it fills, joined.
    pub fn push(&mut self, batch: RecordBatch) -> Result<Option<RecordBatch>, JobError> {
        self.held_rows += batch.num_rows();
        self.held.push(batch);
        if self.held_rows < self.rows {
            return Ok(None);
        }
        self.finish()
    }

    /// The batches held, joined into the last chunk (`None` when none are held).
    pub fn finish(&mut self) -> Result<Option<RecordBatch>, JobError> {
        if self.held.is_empty() {
            return Ok(None);
        }
        let held = std::mem::take(&mut self.held);
        self.held_rows = 0;
        // One batch is not copied: concatenating one array slices it.
        arrow::compute::concat_batches(&self.schema, &held)
            .map(Some)
            .map_err(|e| JobError::Other(format!("joining input batches to split: {e}")))
    }
}

/// Slices of one partition at most (each is a file open while the partition is cut).
const MAX_SLICES: usize = 512;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading_split::ReadingSplit;
    use arrow::array::{AsArray, Float64Array, StringArray, TimestampMicrosecondArray};
    use arrow::array::{UInt32Array, UInt64Array};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit, TimestampMicrosecondType};
    use quiver_sql::StreamSchema;

    fn stream() -> SchemaRef {
        let mut fields = vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("t", DataType::Timestamp(TimeUnit::Microsecond, None), false),
            Field::new("x", DataType::Float64, true),
        ];
        fields.extend(quiver_sql::lineage::hidden_fields());
        Arc::new(Schema::new(fields))
    }

    /// Rows `from..to`: 5 keys, a NULL `x` in every 4th row, one row in 9 filtered out by the
    /// view's WHERE (`x < 0`).
    fn rows(from: u64, to: u64) -> RecordBatch {
        let n = (to - from) as usize;
        let x = (from..to).map(|i| match i % 9 {
            4 => Some(-1.0),
            _ => (i % 4 != 0).then_some(i as f64),
        });
        RecordBatch::try_new(
            stream(),
            vec![
                Arc::new(StringArray::from_iter_values(
                    (from..to).map(|i| format!("key{}", i % 5)),
                )),
                Arc::new(TimestampMicrosecondArray::from_iter_values(
                    (from..to).map(|i| i as i64 * 1000),
                )),
                Arc::new(Float64Array::from_iter(x)),
                Arc::new(UInt32Array::from(vec![0; n])),
                Arc::new(UInt64Array::from_iter_values(from..to)),
            ],
        )
        .unwrap()
    }

    /// Each partition's rows, as (key, time) pairs in the order taken.
    fn taken(keyed: &mut KeyedInput) -> Vec<Vec<(String, i64)>> {
        (0..keyed.partitions())
            .map(|p| match keyed.take(p).unwrap() {
                None => Vec::new(),
                Some(KeyPartition::Whole(batch)) => {
                    let keys = batch.column(0).as_string::<i32>();
                    let times = batch.column(1).as_primitive::<TimestampMicrosecondType>();
                    (0..batch.num_rows())
                        .map(|r| (keys.value(r).to_string(), times.value(r)))
                        .collect()
                }
                Some(KeyPartition::Sliced(_)) => panic!("nothing here is cut by time"),
            })
            .collect()
    }

    /// A view named `name` counting `x` per key `k` over a minute, keeping the rows whose `x`
    /// is NULL or not negative.
    async fn counting_view(name: &str) -> FeatureView {
        let sql = "SELECT k, t, count(x) OVER (PARTITION BY k ORDER BY t RANGE BETWEEN \
                   INTERVAL '1 minute' PRECEDING AND CURRENT ROW) AS n FROM s WHERE x IS NULL OR x >= 0";
        let streams = [StreamSchema {
            name: "s".into(),
            schema: stream(),
        }];
        FeatureView::compile(name, "v.sql", sql, &streams, "t")
            .await
            .unwrap()
    }

    /// The input batches: rows 0..33 in five batches, one of them empty.
    fn input_batches() -> Vec<RecordBatch> {
        [(0, 7), (7, 14), (14, 14), (14, 30), (30, 33)]
            .into_iter()
            .map(|(from, to)| rows(from, to))
            .collect()
    }

    /// [`input_batches`] spilled to a file under `dir`.
    fn spilled_input(dir: &Path) -> Spill {
        let mut input = Spill::in_files(dir, "input", stream(), 1);
        for batch in input_batches() {
            input.push(0, batch).unwrap();
        }
        input.finish().unwrap();
        input
    }

    #[tokio::test]
    async fn a_spilled_input_split_in_chunks_gives_each_partition_the_same_rows_in_order() {
        let view = counting_view("v").await;
        let dir = tempfile::tempdir().unwrap();
        let input = spilled_input(dir.path());
        let progress = indicatif::ProgressBar::hidden();
        let mut expected = None;
        // One batch at a time, chunks that join batches and leave a remainder, everything.
        for chunk_rows in [1, 10, 14, 1000] {
            let mut keyed =
                KeyedInput::split(&view, &input, None, 3, chunk_rows, dir.path(), &progress)
                    .await
                    .unwrap();
            let parts = taken(&mut keyed);
            let rows: usize = parts.iter().map(Vec::len).sum();
            assert_eq!(
                rows,
                33 - 4,
                "chunks of {chunk_rows}: the rows the view keeps"
            );
            assert!(parts.iter().all(|p| p.windows(2).all(|w| w[0].1 < w[1].1)));
            match &expected {
                None => expected = Some(parts),
                Some(expected) => assert_eq!(&parts, expected, "chunks of {chunk_rows}"),
            }
        }
    }

    #[tokio::test]
    async fn a_split_as_the_input_is_read_gives_the_partitions_of_a_split_after() {
        let view = Arc::new(counting_view("v").await);
        let dir = tempfile::tempdir().unwrap();
        let input = spilled_input(dir.path());
        let batches = input_batches();
        let progress = indicatif::ProgressBar::hidden();
        let after = KeyedInput::split(&view, &input, None, 3, 10, dir.path(), &progress)
            .await
            .unwrap();
        let expected = taken(&mut { after });
        // A second view of another name (spill files are named after views).
        let twin = Arc::new(counting_view("w").await);
        for chunk_rows in [1, 10, 1000] {
            // Two views split the chunks in parallel, each into its own files.
            let views = [Arc::clone(&view), Arc::clone(&twin)];
            let at = tempfile::tempdir().unwrap();
            let mut split = ReadingSplit::start(&views, &stream(), 3, chunk_rows, at.path());
            for batch in &batches {
                split.push(batch.clone()).await.unwrap();
            }
            assert_eq!((split.rows(), split.bytes() > 0), (33, true));
            for mut keyed in split.finish().await.unwrap() {
                assert_eq!(taken(&mut keyed), expected, "chunks of {chunk_rows}");
            }
        }

        // A view that cannot split what it is given stops the split with its error.
        let other = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
        let wrong = RecordBatch::try_new(
            Arc::clone(&other),
            vec![Arc::new(arrow::array::Int64Array::from(vec![1, 2, 3]))],
        )
        .unwrap();
        let mut split = ReadingSplit::start(&[Arc::clone(&view)], &other, 3, 1, dir.path());
        let mut failed = None;
        for _ in 0..3 {
            if let Err(e) = split.push(wrong.clone()).await {
                failed = Some(e);
                break;
            }
        }
        let error = match failed {
            Some(e) => e,
            None => split.finish().await.err().expect("the split fails"),
        };
        // The view's own error, not that the split stopped.
        assert!(error.to_string().starts_with("view `v`"), "{error}");
    }
}

//! Holds on-time events until the watermark passes them, then releases them together.

use crate::checkpoint::state::ReorderState;
use arrow::array::BooleanArray;
use arrow::compute::{concat_batches, filter_record_batch};
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;

/// Buffered batches with their event times.
struct Pending {
    batch: RecordBatch,
    times: Vec<i64>,
    min: i64,
    max: i64,
}

/// A buffer that releases every event with time older than the watermark.
///
/// Because no event older than the watermark is accepted any more, a released set holds every
/// event that will ever exist with those times: tied events are released together and each
/// released set is not older than the previous one, which is what the window kernels need.
pub struct ReorderBuffer {
    schema: SchemaRef,
    pending: Vec<Pending>,
    rows: usize,
}

impl ReorderBuffer {
    /// An empty buffer for rows of `schema`.
    pub fn new(schema: SchemaRef) -> Self {
        ReorderBuffer {
            schema,
            pending: Vec::new(),
            rows: 0,
        }
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no row is held.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Adds on-time rows with their event times.
    pub fn push(&mut self, batch: RecordBatch, times: Vec<i64>) {
        if batch.num_rows() == 0 {
            return;
        }
        let min = times.iter().copied().min().unwrap_or(i64::MAX);
        let max = times.iter().copied().max().unwrap_or(i64::MIN);
        self.rows += batch.num_rows();
        self.pending.push(Pending {
            batch,
            times,
            min,
            max,
        });
    }

    /// Removes and returns every row with time older than `watermark`.
    pub fn release(&mut self, watermark: i64) -> Result<Option<RecordBatch>, ArrowError> {
        let mut out = Vec::new();
        let mut keep = Vec::with_capacity(self.pending.len());
        for p in self.pending.drain(..) {
            if p.max < watermark {
                out.push(p.batch);
            } else if p.min >= watermark {
                keep.push(p);
            } else {
                let ready: BooleanArray = p.times.iter().map(|&t| Some(t < watermark)).collect();
                let later: BooleanArray = p.times.iter().map(|&t| Some(t >= watermark)).collect();
                out.push(filter_record_batch(&p.batch, &ready)?);
                let times: Vec<i64> = p
                    .times
                    .iter()
                    .copied()
                    .filter(|&t| t >= watermark)
                    .collect();
                let batch = filter_record_batch(&p.batch, &later)?;
                let min = times.iter().copied().min().unwrap_or(i64::MAX);
                keep.push(Pending {
                    batch,
                    times,
                    min,
                    max: p.max,
                });
            }
        }
        self.pending = keep;
        self.finish(out)
    }

    /// Removes and returns everything (end of a bounded input).
    pub fn drain(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
        let out = self.pending.drain(..).map(|p| p.batch).collect();
        self.finish(out)
    }

    /// The buffered rows, for a checkpoint (the buffer keeps them).
    pub fn snapshot(&self) -> Result<ReorderState, ArrowError> {
        let mut state = ReorderState::default();
        if self.pending.is_empty() {
            return Ok(state);
        }
        let mut writer = StreamWriter::try_new(&mut state.ipc, &self.schema)?;
        for p in &self.pending {
            writer.write(&p.batch)?;
            state.times.extend_from_slice(&p.times);
        }
        writer.finish()?;
        drop(writer);
        Ok(state)
    }

    /// Restores rows saved by [`ReorderBuffer::snapshot`] (into an empty buffer).
    pub fn restore(&mut self, state: ReorderState) -> Result<(), ArrowError> {
        if state.ipc.is_empty() {
            return Ok(());
        }
        let reader = StreamReader::try_new(std::io::Cursor::new(state.ipc), None)?;
        let mut times = state.times.into_iter();
        for batch in reader {
            let batch = batch?;
            let batch_times: Vec<i64> = times.by_ref().take(batch.num_rows()).collect();
            if batch_times.len() != batch.num_rows() {
                return Err(ArrowError::InvalidArgumentError(
                    "buffered rows and their event times differ in number".into(),
                ));
            }
            self.push(batch, batch_times);
        }
        Ok(())
    }

    fn finish(&mut self, out: Vec<RecordBatch>) -> Result<Option<RecordBatch>, ArrowError> {
        if out.is_empty() {
            return Ok(None);
        }
        let batch = if out.len() == 1 {
            out.into_iter()
                .next()
                .unwrap_or_else(|| RecordBatch::new_empty(self.schema.clone()))
        } else {
            concat_batches(&self.schema, &out)?
        };
        self.rows -= batch.num_rows();
        Ok((batch.num_rows() > 0).then_some(batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn batch(times: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("t", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(times.to_vec()))]).unwrap()
    }

    #[test]
    fn releases_only_rows_older_than_the_watermark() {
        let b = batch(&[5, 1, 9, 3]);
        let mut r = ReorderBuffer::new(b.schema());
        r.push(b, vec![5, 1, 9, 3]);
        let out = r.release(5).unwrap().unwrap();
        assert_eq!(out.num_rows(), 2);
        assert_eq!(r.len(), 2);
        assert!(r.release(5).unwrap().is_none());
        assert_eq!(r.drain().unwrap().unwrap().num_rows(), 2);
        assert!(r.is_empty());
    }

    #[test]
    fn snapshot_restores_rows_and_times() {
        let mut r = ReorderBuffer::new(batch(&[]).schema());
        r.push(batch(&[5, 1]), vec![5, 1]);
        r.push(batch(&[9]), vec![9]);
        let state = r.snapshot().unwrap();
        let mut back = ReorderBuffer::new(batch(&[]).schema());
        back.restore(state).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back.release(6).unwrap().unwrap().num_rows(), 2);
        assert!(ReorderBuffer::new(batch(&[]).schema())
            .snapshot()
            .unwrap()
            .ipc
            .is_empty());
    }
}

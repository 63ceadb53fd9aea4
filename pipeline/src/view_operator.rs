//! One feature view at run time: its compiled SQL and its keyed window state.

use crate::error::JobError;
use arrow::record_batch::RecordBatch;
use quiver_gpu::{FeatureOutput, InputColumn, KeyedWindows, WindowSnapshot};
use quiver_sql::FeatureView;
use std::time::{Duration, Instant};

/// Rows applied to the kernels between progress callbacks during backfill.
const CHUNK_ROWS: usize = 64 * 1024;

/// Computes a view's features incrementally, batch after batch.
pub struct ViewOperator {
    view: FeatureView,
    windows: KeyedWindows,
    busy: Duration,
    rows_in: u64,
    rows_out: u64,
}

impl ViewOperator {
    /// An operator with empty state.
    pub fn new(view: FeatureView) -> Self {
        let windows = KeyedWindows::new(view.window_plan().clone());
        ViewOperator {
            view,
            windows,
            busy: Duration::ZERO,
            rows_in: 0,
            rows_out: 0,
        }
    }

    /// The view.
    pub fn view(&self) -> &FeatureView {
        &self.view
    }

    /// Time spent computing features (SQL evaluation + kernels), excluding I/O.
    pub fn busy(&self) -> Duration {
        self.busy
    }

    /// Rows received and feature rows produced.
    pub fn rows(&self) -> (u64, u64) {
        (self.rows_in, self.rows_out)
    }

    /// Keys with state and events retained in window state.
    pub fn state_size(&self) -> (usize, usize) {
        (self.windows.key_count(), self.windows.retained_events())
    }

    /// Computes the features of `batch`, whose events must not be older than any event applied
    /// before (the reorder buffer and backfill's sort guarantee it). `progress` is told how many
    /// rows were applied, chunk by chunk.
    pub async fn process(
        &mut self,
        batch: RecordBatch,
        mut progress: impl FnMut(usize),
    ) -> Result<RecordBatch, JobError> {
        let started = Instant::now();
        self.rows_in += batch.num_rows() as u64;
        let inputs = self.view.prepare(batch).await?;
        let rows = inputs.times.len();
        let slots = self.windows.slots(&inputs.key_bytes());
        let order = self.windows.key_time_order(&slots, &inputs.times);
        let columns: Vec<InputColumn<'_>> = inputs
            .values
            .iter()
            .zip(&inputs.validity)
            .map(|(values, validity)| InputColumn {
                values,
                validity: validity.as_deref(),
            })
            .collect();
        let mut out = FeatureOutput::new(self.view.window_plan().specs().len(), rows);
        let mut start = 0;
        while start < order.len() {
            // Never split a key's events with equal time: all are applied before any is read.
            let mut end = (start + CHUNK_ROWS).min(order.len());
            let same = |a: u32, b: u32| {
                slots[a as usize] == slots[b as usize]
                    && inputs.times[a as usize] == inputs.times[b as usize]
            };
            while end < order.len() && same(order[end], order[end - 1]) {
                end += 1;
            }
            self.windows.process(
                &slots,
                &inputs.times,
                &columns,
                &order[start..end],
                &mut out,
            )?;
            progress(end - start);
            start = end;
        }
        drop(columns);
        let features = self.view.finish(&inputs, out)?;
        self.rows_out += features.num_rows() as u64;
        self.busy += started.elapsed();
        Ok(features)
    }

    /// Releases state no event at or after `watermark` can read.
    pub fn expire(&mut self, watermark: i64) {
        let started = Instant::now();
        self.windows.expire(watermark);
        self.busy += started.elapsed();
    }

    /// Encodes the state of the keys accepted by `select` (e.g. one source partition's keys).
    pub fn snapshot(&self, select: impl Fn(&[u8]) -> bool) -> Result<Vec<u8>, JobError> {
        bincode::serialize(&self.windows.snapshot(select)).map_err(|e| {
            JobError::Other(format!(
                "cannot encode window state of `{}`: {e}",
                self.view.name()
            ))
        })
    }

    /// Restores state encoded by [`ViewOperator::snapshot`].
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), JobError> {
        let snapshot: WindowSnapshot = bincode::deserialize(bytes).map_err(|e| {
            JobError::Other(format!(
                "cannot decode window state of `{}`: {e}",
                self.view.name()
            ))
        })?;
        self.windows.restore(snapshot);
        Ok(())
    }
}

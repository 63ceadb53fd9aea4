//! Backfill's input split by one view's key into partitions that are evaluated one at a time
//! (a window only ever holds one key's events): as row positions into the input while it is
//! in memory, or as the rows themselves in spill files when the input was spilled. Only the
//! rows the view keeps (its WHERE) are split; the others it would drop anyway.

use crate::error::JobError;
use crate::prepared_rows::prepare_tracking_rows;
use crate::spill::{partitions_of, push_partitioned, Spill};
use arrow::array::{RecordBatch, UInt32Array};
use quiver_sql::FeatureView;
use std::path::Path;
use std::sync::Arc;

/// One view's key partitions of backfill's input.
pub enum KeyedInput {
    /// Per partition, (batch, row) positions into the input held in memory.
    Memory {
        /// The input's batches.
        input: Arc<Vec<RecordBatch>>,
        /// Positions per partition, in input order.
        parts: Vec<Vec<(usize, usize)>>,
    },
    /// The rows per partition, in spill files.
    Files(Spill),
}

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
        let mut keyed = match in_memory {
            Some(input) => KeyedInput::Memory {
                input: Arc::clone(input),
                parts: vec![Vec::new(); partitions],
            },
            None => KeyedInput::Files(Spill::in_files(
                dir,
                &format!("{}-keyed", view.name()),
                Arc::clone(input.schema()),
                partitions,
            )),
        };
        let batches: Box<dyn Iterator<Item = Result<RecordBatch, JobError>>> = match in_memory {
            Some(input) => Box::new(input.iter().cloned().map(Ok)),
            None => Box::new(input.read(0)?),
        };
        for (index, batch) in batches.enumerate() {
            let batch = batch?;
            progress.inc(batch.num_rows() as u64);
            let (prepared, kept) = prepare_tracking_rows(view, batch.clone()).await?;
            let partition = partitions_of(prepared.keys.iter().map(|k| k.data()), partitions);
            drop(prepared);
            match &mut keyed {
                KeyedInput::Memory { parts, .. } => {
                    for (&row, &p) in kept.iter().zip(&partition) {
                        parts[p as usize].push((index, row as usize));
                    }
                }
                KeyedInput::Files(spill) => {
                    let kept = arrow::compute::take_record_batch(&batch, &UInt32Array::from(kept))
                        .map_err(|e| JobError::in_view(view.name(), e))?;
                    push_partitioned(spill, &kept, &partition)?;
                }
            }
        }
        if let KeyedInput::Files(spill) = &mut keyed {
            spill.finish()?;
        }
        Ok(keyed)
    }

    /// The number of partitions.
    pub fn partitions(&self) -> usize {
        match self {
            KeyedInput::Memory { parts, .. } => parts.len(),
            KeyedInput::Files(spill) => spill.partitions(),
        }
    }

    /// The rows of partition `p` as one batch (taken out), `None` when it has none.
    pub fn take(&mut self, p: usize) -> Result<Option<RecordBatch>, JobError> {
        let fail = |e: &dyn std::fmt::Display| JobError::Other(format!("a key partition: {e}"));
        match self {
            KeyedInput::Memory { input, parts } => {
                let positions = std::mem::take(&mut parts[p]);
                if positions.is_empty() {
                    return Ok(None);
                }
                let batches: Vec<&RecordBatch> = input.iter().collect();
                arrow::compute::interleave_record_batch(&batches, &positions)
                    .map(Some)
                    .map_err(|e| fail(&e))
            }
            KeyedInput::Files(spill) => {
                let batches = spill.take(p)?.collect::<Result<Vec<_>, _>>()?;
                if batches.is_empty() {
                    return Ok(None);
                }
                arrow::compute::concat_batches(spill.schema(), &batches)
                    .map(Some)
                    .map_err(|e| fail(&e))
            }
        }
    }
}

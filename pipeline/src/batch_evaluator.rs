//! Backfill's evaluation of whole batches (one key partition each), apart from the view's
//! operator: several partitions of one view can then be evaluated at once, on as many cores as
//! the machine has, while the view's task writes the feature rows in partition order.

use crate::batch_compute::BatchCompute;
use crate::error::JobError;
use arrow::array::StringArray;
use arrow::record_batch::RecordBatch;
use indicatif::ProgressBar;
use quiver_sql::FeatureView;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Feature rows of a batch evaluated by a [`BatchEvaluator`], on their way to the view's task
/// ([`crate::operator::Message::Evaluated`]).
#[derive(Debug)]
pub struct Evaluated {
    /// Rows the batch held.
    pub rows_in: u64,
    /// The feature rows.
    pub features: RecordBatch,
    /// Time spent computing them (SQL and kernels).
    pub busy: Duration,
}

/// A view's sorted evaluation of batches that hold every event of their keys (see
/// [`crate::view_operator::ViewOperator::with_batch_compute`]); cheap to clone.
#[derive(Clone)]
pub struct BatchEvaluator {
    view: Arc<FeatureView>,
    compute: BatchCompute,
    /// Names of the source partitions, by index (feature rows' `_source_partition`).
    partitions: StringArray,
    /// Counts evaluated rows.
    progress: ProgressBar,
}

impl BatchEvaluator {
    /// An evaluator of `view` on `compute`'s backends.
    pub fn new(
        view: Arc<FeatureView>,
        compute: BatchCompute,
        partitions: StringArray,
        progress: ProgressBar,
    ) -> Self {
        BatchEvaluator {
            view,
            compute,
            partitions,
            progress,
        }
    }

    /// The feature rows of `batch`, in key and event-time order.
    pub async fn evaluate(&self, batch: RecordBatch) -> Result<Evaluated, JobError> {
        let started = Instant::now();
        let rows_in = batch.num_rows() as u64;
        let inputs = self.view.prepare(batch).await?;
        let ordered = self.view.columns_finish_reads(inputs.batch.schema_ref());
        let plan = self.view.window_plan();
        let evaluated = (self.compute).evaluate(plan, inputs, &ordered, &self.progress)?;
        let features = (self.view).finish(&evaluated.rows, evaluated.features, &self.partitions)?;
        Ok(Evaluated {
            rows_in,
            features,
            busy: started.elapsed(),
        })
    }
}

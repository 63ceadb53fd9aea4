//! A feature view running on its own task: it receives released events, computes their
//! features and writes them, in parallel with the other views and with ingestion.

use crate::error::JobError;
use crate::outputs::Outputs;
use crate::view_operator::ViewOperator;
use arrow::record_batch::RecordBatch;
use indicatif::ProgressBar;
use quiver_sql::FeatureView;
use quiver_store::FeatureRowWriter;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Work for a view task.
pub enum ViewMessage {
    /// Released events (not older than any sent before).
    Batch(RecordBatch),
    /// Release state no event at or after this watermark can read.
    Expire(i64),
}

/// Handle of a running view task.
pub struct ViewTask {
    tx: mpsc::Sender<ViewMessage>,
    handle: JoinHandle<Result<(ViewOperator, FeatureRowWriter), JobError>>,
}

impl ViewTask {
    /// Starts a task owning `operator` and its `writer`; `progress` counts applied events. A
    /// small queue bounds memory: a slow view slows ingestion instead of buffering without limit.
    pub fn spawn(
        mut operator: ViewOperator,
        mut writer: FeatureRowWriter,
        progress: ProgressBar,
    ) -> Self {
        let (tx, mut rx) = mpsc::channel::<ViewMessage>(4);
        let handle = tokio::spawn(async move {
            while let Some(message) = rx.recv().await {
                match message {
                    ViewMessage::Batch(batch) => {
                        let features = operator.process(batch, |n| progress.inc(n as u64)).await?;
                        writer.write(&features)?;
                    }
                    ViewMessage::Expire(watermark) => operator.expire(watermark),
                }
            }
            Ok((operator, writer))
        });
        ViewTask { tx, handle }
    }

    /// Queues work; `false` if the task has stopped (its error comes from [`ViewTask::finish`]).
    pub async fn send(&self, message: ViewMessage) -> bool {
        self.tx.send(message).await.is_ok()
    }

    /// Waits for the queued work to finish; returns the operator and writer, or the task's error.
    pub async fn finish(self) -> Result<(ViewOperator, FeatureRowWriter), JobError> {
        drop(self.tx);
        self.handle
            .await
            .map_err(|e| JobError::Other(format!("a view task stopped: {e}")))?
    }
}

/// Starts one task per view, each with its writer taken from `outputs`.
pub fn spawn_all(
    views: Vec<FeatureView>,
    outputs: &mut Outputs,
    progress: &ProgressBar,
) -> Vec<ViewTask> {
    views
        .into_iter()
        .zip(outputs.take_feature_writers())
        .map(|(view, writer)| ViewTask::spawn(ViewOperator::new(view), writer, progress.clone()))
        .collect()
}

/// Sends a message to every task; `false` if one has stopped (its error is reported by
/// [`finish_all`]).
pub async fn send_all(tasks: &[ViewTask], message: impl Fn() -> ViewMessage) -> bool {
    for task in tasks {
        if !task.send(message()).await {
            return false;
        }
    }
    true
}

/// Waits for every task, gives the writers back to `outputs`, and returns the operators with
/// the slowest view's compute time (views run in parallel, so that is their share of the
/// engine's time).
pub async fn finish_all(
    tasks: Vec<ViewTask>,
    outputs: &mut Outputs,
) -> Result<(Vec<ViewOperator>, Duration), JobError> {
    let mut operators = Vec::new();
    let mut writers = Vec::new();
    for task in tasks {
        let (op, writer) = task.finish().await?;
        operators.push(op);
        writers.push(writer);
    }
    outputs.return_feature_writers(writers);
    let slowest = operators
        .iter()
        .map(ViewOperator::busy)
        .max()
        .unwrap_or_default();
    Ok((operators, slowest))
}

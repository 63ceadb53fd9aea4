//! A feature view running on its own task: it receives released events, computes their
//! features and writes them, in parallel with the other views and with ingestion.

use crate::error::JobError;
use crate::view_operator::ViewOperator;
use arrow::record_batch::RecordBatch;
use quiver_store::FeatureRowWriter;
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
    /// Starts a task owning `operator` and its `writer`. A small queue bounds memory: a slow
    /// view slows ingestion instead of buffering without limit.
    pub fn spawn(mut operator: ViewOperator, mut writer: FeatureRowWriter) -> Self {
        let (tx, mut rx) = mpsc::channel::<ViewMessage>(4);
        let handle = tokio::spawn(async move {
            while let Some(message) = rx.recv().await {
                match message {
                    ViewMessage::Batch(batch) => {
                        let features = operator.process(batch, |_| {}).await?;
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

//! An operator and its sink running on their own task: it receives [`Message`]s, computes
//! features and writes them, in parallel with the other views and with ingestion.

use crate::error::JobError;
use crate::operator::{BarrierAck, Message, Operator};
use crate::view_operator::ViewOperator;
use quiver_store::{FeatureRowWriter, Sink};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Handle of a running view task.
pub struct ViewTask<O = ViewOperator, S = FeatureRowWriter> {
    tx: mpsc::Sender<Message>,
    handle: JoinHandle<Result<(O, S), JobError>>,
}

impl<O: Operator + 'static, S: Sink + 'static> ViewTask<O, S> {
    /// Starts a task owning `operator` and its `sink`. A small queue bounds memory: a slow
    /// view slows ingestion instead of buffering without limit.
    pub fn spawn(operator: O, sink: S) -> Self {
        Self::spawn_with_queue(operator, sink, 4)
    }

    /// [`ViewTask::spawn`] with a queue of `queue` messages (backfill sends large batches,
    /// of which one waiting is enough).
    pub fn spawn_with_queue(mut operator: O, mut sink: S, queue: usize) -> Self {
        let (tx, mut rx) = mpsc::channel::<Message>(queue.max(1));
        let handle = tokio::spawn(async move {
            while let Some(message) = rx.recv().await {
                match message {
                    Message::Batch(batch) => {
                        let rows = operator.on_batch(batch).await?;
                        sink.write(&rows)?;
                    }
                    Message::Slice(batch) => {
                        let rows = operator.on_slice(batch).await?;
                        sink.write(&rows)?;
                    }
                    Message::SlicesEnd => operator.on_slices_end(),
                    Message::Evaluated(evaluated) => {
                        let rows = operator.on_evaluated(evaluated);
                        sink.write(&rows)?;
                    }
                    Message::Watermark(watermark) => operator.on_watermark(watermark),
                    Message::Barrier(barrier) => {
                        let ack = operator.checkpoint(barrier.state).and_then(|state| {
                            let files = sink.prepare_commit(barrier.epoch)?;
                            Ok(BarrierAck {
                                epoch: barrier.epoch,
                                state,
                                files,
                                rows: sink.rows(),
                            })
                        });
                        let failed = ack.is_err();
                        let _ = barrier.reply.send(ack);
                        if failed {
                            return Err(JobError::Other(
                                "a view could not take its checkpoint (reported above)".into(),
                            ));
                        }
                    }
                    Message::End => break,
                }
            }
            Ok((operator, sink))
        });
        ViewTask { tx, handle }
    }

    /// Queues a message; `false` if the task has stopped (its error comes from
    /// [`ViewTask::finish`]).
    pub async fn send(&self, message: Message) -> bool {
        self.tx.send(message).await.is_ok()
    }

    /// Ends the stream and waits for the task; returns the operator and sink, or its error.
    pub async fn finish(self) -> Result<(O, S), JobError> {
        let _ = self.tx.send(Message::End).await;
        drop(self.tx);
        self.handle
            .await
            .map_err(|e| JobError::Other(format!("a view task stopped: {e}")))?
    }
}

/// Sends a message to every task; `false` if one has stopped (its error is reported by
/// [`finish_all`]).
pub async fn send_all<O: Operator + 'static, S: Sink + 'static>(
    tasks: &[ViewTask<O, S>],
    message: impl Fn() -> Message,
) -> bool {
    for task in tasks {
        if !task.send(message()).await {
            return false;
        }
    }
    true
}

/// Waits for every task; returns the operators and sinks in task order, or the first error.
pub async fn finish_all<O: Operator + 'static, S: Sink + 'static>(
    tasks: Vec<ViewTask<O, S>>,
) -> Result<Vec<(O, S)>, JobError> {
    let mut done = Vec::with_capacity(tasks.len());
    let mut first_error = None;
    for task in tasks {
        match task.finish().await {
            Ok(x) => done.push(x),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(done),
    }
}

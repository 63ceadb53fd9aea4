//! An operator and its sink running on their own task: it receives [`Message`]s, computes
//! features and writes them, in parallel with the other views and with ingestion. A streaming
//! view's sink runs on a task of its own, so the view computes the next batches while its
//! rows are encoded and written and while an epoch's files are synced at a checkpoint.

use crate::error::JobError;
use crate::operator::{BarrierAck, Message, Operator, OperatorState};
use crate::view_operator::ViewOperator;
use arrow::record_batch::RecordBatch;
use quiver_store::{FeatureRowWriter, Sink};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// What the operator hands its sink, in stream order.
enum SinkWork {
    /// Feature rows to write.
    Rows(RecordBatch),
    /// The end of an epoch: the rows before it are staged, and the checkpoint gets its answer
    /// with the operator's state taken at the barrier.
    Commit {
        epoch: u64,
        state: OperatorState,
        reply: oneshot::Sender<Result<BarrierAck, JobError>>,
    },
}

/// Where a view's operator sends its sink's work.
enum SinkAt<S> {
    /// Done on the operator's task, as it comes.
    Inline(S),
    /// Queued for the sink's own task.
    Task {
        work: mpsc::Sender<SinkWork>,
        writer: JoinHandle<Result<S, JobError>>,
    },
}

impl<S: Sink + 'static> SinkAt<S> {
    /// Hands the sink `work`: done now inline, else queued (waiting while the queue is full).
    async fn submit(&mut self, work: SinkWork) -> Result<(), JobError> {
        match self {
            SinkAt::Inline(sink) => apply(sink, work),
            SinkAt::Task { work: queue, .. } => match queue.send(work).await {
                Ok(()) => Ok(()),
                Err(mpsc::error::SendError(work)) => {
                    let stopped = || {
                        JobError::Other("a view's writer stopped (its error is reported)".into())
                    };
                    if let SinkWork::Commit { reply, .. } = work {
                        let _ = reply.send(Err(stopped()));
                    }
                    Err(stopped())
                }
            },
        }
    }

    /// The sink, once every piece of work handed to it is done.
    async fn finish(self) -> Result<S, JobError> {
        match self {
            SinkAt::Inline(sink) => Ok(sink),
            SinkAt::Task { work, writer } => {
                drop(work);
                (writer.await)
                    .map_err(|e| JobError::Other(format!("a view's writer stopped: {e}")))?
            }
        }
    }
}

/// Does one piece of the sink's work. A checkpoint's answer goes to its barrier, errors
/// included.
fn apply<S: Sink>(sink: &mut S, work: SinkWork) -> Result<(), JobError> {
    match work {
        SinkWork::Rows(rows) => Ok(sink.write(&rows)?),
        SinkWork::Commit {
            epoch,
            state,
            reply,
        } => {
            let ack = sink.prepare_commit(epoch).map(|files| BarrierAck {
                epoch,
                state,
                files,
                rows: sink.rows(),
            });
            let failed = ack.is_err();
            let _ = reply.send(ack.map_err(JobError::from));
            if failed {
                return Err(JobError::Other(
                    "a view could not stage its output for a checkpoint (reported above)".into(),
                ));
            }
            Ok(())
        }
    }
}

/// The sink's own task: does the work it is handed, in order.
async fn write_rows<S: Sink>(
    mut sink: S,
    mut work: mpsc::Receiver<SinkWork>,
) -> Result<S, JobError> {
    while let Some(next) = work.recv().await {
        apply(&mut sink, next)?;
    }
    Ok(sink)
}

/// Handle of a running view task.
pub struct ViewTask<O = ViewOperator, S = FeatureRowWriter> {
    tx: mpsc::Sender<Message>,
    handle: JoinHandle<(Result<O, JobError>, Result<S, JobError>)>,
}

impl<O: Operator + 'static, S: Sink + 'static> ViewTask<O, S> {
    /// Starts a task owning `operator` and a task owning its `sink`. Small queues bound
    /// memory: a slow view slows ingestion instead of buffering without limit.
    pub fn spawn(operator: O, sink: S) -> Self {
        const QUEUE: usize = 4;
        let (work, work_rx) = mpsc::channel::<SinkWork>(QUEUE);
        let writer = tokio::spawn(write_rows(sink, work_rx));
        Self::start(operator, SinkAt::Task { work, writer }, QUEUE)
    }

    /// A task owning `operator` and `sink`, writing as it goes, with a queue of `queue`
    /// messages (backfill: its operators only pass on rows evaluated elsewhere, large ones, of
    /// which one waiting is enough).
    pub fn spawn_with_queue(operator: O, sink: S, queue: usize) -> Self {
        Self::start(operator, SinkAt::Inline(sink), queue)
    }

    fn start(mut operator: O, mut sink: SinkAt<S>, queue: usize) -> Self {
        let (tx, mut rx) = mpsc::channel::<Message>(queue.max(1));
        let handle = tokio::spawn(async move {
            let run = async {
                while let Some(message) = rx.recv().await {
                    let rows = match message {
                        Message::Batch(batch) => operator.on_batch(batch).await?,
                        Message::Slice(batch) => operator.on_slice(batch).await?,
                        Message::SlicesEnd => {
                            operator.on_slices_end();
                            continue;
                        }
                        Message::Evaluated(evaluated) => operator.on_evaluated(evaluated),
                        Message::Watermark(watermark) => {
                            operator.on_watermark(watermark);
                            continue;
                        }
                        Message::Barrier(barrier) => {
                            let state = match operator.checkpoint(barrier.state) {
                                Ok(state) => state,
                                Err(e) => {
                                    let _ = barrier.reply.send(Err(e));
                                    return Err(JobError::Other(
                                        "a view could not take its checkpoint (reported above)"
                                            .into(),
                                    ));
                                }
                            };
                            let (epoch, reply) = (barrier.epoch, barrier.reply);
                            sink.submit(SinkWork::Commit {
                                epoch,
                                state,
                                reply,
                            })
                            .await?;
                            continue;
                        }
                        Message::End => break,
                    };
                    if rows.num_rows() > 0 {
                        sink.submit(SinkWork::Rows(rows)).await?;
                    }
                }
                Ok(())
            };
            let ran = run.await;
            // The sink finishes what it was handed, whatever stopped the operator.
            let sink = sink.finish().await;
            (ran.map(|()| operator), sink)
        });
        ViewTask { tx, handle }
    }

    /// Queues a message; `false` if the task has stopped (its error comes from
    /// [`ViewTask::finish`]).
    pub async fn send(&self, message: Message) -> bool {
        self.tx.send(message).await.is_ok()
    }

    /// Ends the stream and waits for the task; returns the operator and sink, or the error
    /// that stopped them (the sink's first: an operator stops when its sink has).
    pub async fn finish(self) -> Result<(O, S), JobError> {
        let _ = self.tx.send(Message::End).await;
        drop(self.tx);
        let (operator, sink) = (self.handle.await)
            .map_err(|e| JobError::Other(format!("a view task stopped: {e}")))?;
        let sink = sink?;
        Ok((operator?, sink))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::{Barrier, StateRequest};
    use arrow::array::Int64Array;
    use quiver_store::{StagedFile, StoreError};
    use std::sync::Arc;

    /// Passes batches on, and marks its state with the rows it saw.
    struct Passing(u64);

    #[async_trait::async_trait]
    impl Operator for Passing {
        async fn on_batch(&mut self, batch: RecordBatch) -> Result<RecordBatch, JobError> {
            self.0 += batch.num_rows() as u64;
            Ok(batch)
        }

        fn checkpoint(&mut self, _request: StateRequest) -> Result<OperatorState, JobError> {
            Ok(OperatorState {
                state: self.0.to_le_bytes().to_vec(),
                ..OperatorState::default()
            })
        }
    }

    /// Keeps the rows of each epoch; fails on a batch of `fail_at` rows.
    #[derive(Default)]
    struct Epochs {
        open: u64,
        staged: Vec<(u64, u64)>,
        rows: u64,
        fail_at: Option<usize>,
    }

    impl Sink for Epochs {
        fn write(&mut self, batch: &RecordBatch) -> Result<(), StoreError> {
            if Some(batch.num_rows()) == self.fail_at {
                return Err(StoreError::Schema {
                    view: "v".into(),
                    message: "disk full".into(),
                });
            }
            self.open += batch.num_rows() as u64;
            self.rows += batch.num_rows() as u64;
            Ok(())
        }

        fn prepare_commit(&mut self, epoch: u64) -> Result<Vec<StagedFile>, StoreError> {
            self.staged.push((epoch, std::mem::take(&mut self.open)));
            Ok(vec![StagedFile {
                staged: format!("staged-{epoch}").into(),
                committed: format!("committed-{epoch}").into(),
            }])
        }

        fn rows(&self) -> u64 {
            self.rows
        }
    }

    fn rows(n: i64) -> RecordBatch {
        RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from_iter_values(0..n)) as _)])
            .unwrap()
    }

    async fn barrier(task: &ViewTask<Passing, Epochs>, epoch: u64) -> BarrierAck {
        let (reply, answer) = oneshot::channel();
        let state = StateRequest::Whole;
        assert!(
            task.send(Message::Barrier(Barrier {
                epoch,
                state,
                reply
            }))
            .await
        );
        answer.await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn each_checkpoint_stages_the_rows_before_it_with_the_state_at_its_barrier() {
        for separate_writer in [true, false] {
            let task = match separate_writer {
                true => ViewTask::spawn(Passing(0), Epochs::default()),
                false => ViewTask::spawn_with_queue(Passing(0), Epochs::default(), 1),
            };
            for n in [3, 4] {
                assert!(task.send(Message::Batch(rows(n))).await);
            }
            let first = barrier(&task, 1).await;
            assert!(task.send(Message::Batch(rows(5))).await);
            let second = barrier(&task, 2).await;
            assert_eq!(
                (first.epoch, first.rows, first.state.state),
                (1, 7, 7u64.to_le_bytes().to_vec())
            );
            assert_eq!(first.files[0].staged, std::path::PathBuf::from("staged-1"));
            assert_eq!((second.epoch, second.rows), (2, 12));
            let (operator, sink) = task.finish().await.unwrap();
            assert_eq!(operator.0, 12);
            assert_eq!(
                sink.staged,
                vec![(1, 7), (2, 5)],
                "writer on its own task: {separate_writer}"
            );
        }
    }

    #[tokio::test]
    async fn a_failed_write_is_the_error_the_task_ends_with() {
        for separate_writer in [true, false] {
            let sink = Epochs {
                fail_at: Some(2),
                ..Epochs::default()
            };
            let task = match separate_writer {
                true => ViewTask::spawn(Passing(0), sink),
                false => ViewTask::spawn_with_queue(Passing(0), sink, 1),
            };
            for n in [1, 2, 3, 4] {
                // Later batches may find the task stopped.
                let _ = task.send(Message::Batch(rows(n))).await;
            }
            let error = task.finish().await.err().expect("the write failed");
            assert!(error.to_string().contains("disk full"), "{error}");
        }
    }
}

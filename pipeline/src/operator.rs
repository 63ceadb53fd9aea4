//! The operator contract: what flows from the coordinator to each operator, and the hooks an
//! operator implements. Only [`Operator::on_batch`] is required; the others default to a
//! stateless operator (in the style of Arroyo's operator trait).

use crate::batch_evaluator::Evaluated;
use crate::error::JobError;
use arrow::record_batch::RecordBatch;
use quiver_store::online::OnlineWrite;
use quiver_store::StagedFile;
use tokio::sync::oneshot;

/// A message to an operator, in stream order.
pub enum Message {
    /// Events released by the watermark (not older than any sent before).
    Batch(RecordBatch),
    /// Events of some keys cut by event time: every event of these keys after this slice's
    /// comes in later slices, so window state is carried from one slice to the next (backfill's
    /// key partitions too large to evaluate at once).
    Slice(RecordBatch),
    /// The keys of the slices sent since the last one have no more events: their state may go.
    SlicesEnd,
    /// Feature rows evaluated apart from the operator (backfill's key partitions, several at
    /// once): the task passes them on as if the operator had computed them.
    Evaluated(Evaluated),
    /// No event older than this will follow.
    Watermark(i64),
    /// Every message of the epoch came before: snapshot and stage now.
    Barrier(Barrier),
    /// The stream ended.
    End,
}

/// A checkpoint barrier with the channel its answer goes back on.
pub struct Barrier {
    /// The epoch that ends here.
    pub epoch: u64,
    /// Which state the checkpoint needs.
    pub state: StateRequest,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Result<BarrierAck, JobError>>,
}

/// Which state a checkpoint needs from an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateRequest {
    /// None: the final checkpoint of a finished input (a finished run is never resumed).
    Nothing,
    /// All of it.
    Whole,
    /// What changed since the previous barrier; an operator that does not track its changes,
    /// or whose state changed mostly, answers with all of it.
    Changes,
}

/// An operator's state at a barrier.
#[derive(Debug, Default)]
pub struct OperatorState {
    /// Encoded and versioned (empty for stateless operators or when nothing was asked).
    pub state: Vec<u8>,
    /// Whether `state` holds only what changed since the previous barrier.
    pub incremental: bool,
    /// The keys whose state changed in the epoch, for the online store (stamped by the
    /// coordinator), if the operator writes one.
    pub online: Option<OnlineWrite>,
}

/// An operator's answer to a barrier.
#[derive(Debug)]
pub struct BarrierAck {
    /// The epoch answered.
    pub epoch: u64,
    /// The operator's state at the barrier.
    pub state: OperatorState,
    /// Output files staged for the epoch.
    pub files: Vec<StagedFile>,
    /// Output rows so far.
    pub rows: u64,
}

/// A stream operator.
#[async_trait::async_trait]
pub trait Operator: Send {
    /// Processes released events; returns the rows to pass on.
    async fn on_batch(&mut self, batch: RecordBatch) -> Result<RecordBatch, JobError>;

    /// Processes one [`Message::Slice`]; returns the rows to pass on.
    async fn on_slice(&mut self, batch: RecordBatch) -> Result<RecordBatch, JobError> {
        self.on_batch(batch).await
    }

    /// The keys of the slices so far are done ([`Message::SlicesEnd`]).
    fn on_slices_end(&mut self) {}

    /// Rows evaluated apart from the operator ([`Message::Evaluated`]); returns the rows to
    /// pass on.
    fn on_evaluated(&mut self, evaluated: Evaluated) -> RecordBatch {
        evaluated.features
    }

    /// The watermark moved: release what no future event can need.
    fn on_watermark(&mut self, _watermark: i64) {}

    /// The state a barrier asks for, and what changed for the online store since the
    /// previous barrier (asked at every barrier).
    fn checkpoint(&mut self, _request: StateRequest) -> Result<OperatorState, JobError> {
        Ok(OperatorState::default())
    }

    /// Installs whole state written by [`Operator::checkpoint`].
    fn restore(&mut self, _state: &[u8]) -> Result<(), JobError> {
        Ok(())
    }
}

//! The operator contract: what flows from the coordinator to each operator, and the hooks an
//! operator implements. Only [`Operator::on_batch`] is required; the others default to a
//! stateless operator (in the style of Arroyo's operator trait).

use crate::error::JobError;
use arrow::record_batch::RecordBatch;
use quiver_store::online::OnlineWrite;
use quiver_store::StagedFile;
use tokio::sync::oneshot;

/// A message to an operator, in stream order.
pub enum Message {
    /// Events released by the watermark (not older than any sent before).
    Batch(RecordBatch),
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
    /// Whether the state is needed (not for the final checkpoint of a finished input: a
    /// finished run is never resumed).
    pub snapshot: bool,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Result<BarrierAck, JobError>>,
}

/// An operator's answer to a barrier.
#[derive(Debug)]
pub struct BarrierAck {
    /// The epoch answered.
    pub epoch: u64,
    /// The operator's state at the barrier (empty for stateless operators).
    pub state: Vec<u8>,
    /// Output files staged for the epoch.
    pub files: Vec<StagedFile>,
    /// Output rows so far.
    pub rows: u64,
    /// The keys whose state changed in the epoch, for the online store (stamped by the
    /// coordinator), if the operator writes one.
    pub online: Option<OnlineWrite>,
}

/// A stream operator.
#[async_trait::async_trait]
pub trait Operator: Send {
    /// Processes released events; returns the rows to pass on.
    async fn on_batch(&mut self, batch: RecordBatch) -> Result<RecordBatch, JobError>;

    /// The watermark moved: release what no future event can need.
    fn on_watermark(&mut self, _watermark: i64) {}

    /// The operator's state, encoded and versioned.
    fn snapshot(&self) -> Result<Vec<u8>, JobError> {
        Ok(Vec::new())
    }

    /// Installs state written by [`Operator::snapshot`].
    fn restore(&mut self, _state: &[u8]) -> Result<(), JobError> {
        Ok(())
    }

    /// What changed for the online store since the last call (asked at every barrier).
    fn online_write(&mut self) -> Result<Option<OnlineWrite>, JobError> {
        Ok(None)
    }
}
